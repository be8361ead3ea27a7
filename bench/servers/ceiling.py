"""The ceiling: the least a Python server can do to answer the same request, and no more.

    python bench/servers/ceiling.py MODEL.skops PORT

Starlette + orjson on uvicorn with uvloop and httptools, no access log, no middleware, and
no input validation at all: parse the ``dataframe_split`` body, one ``np.asarray``, one
``predict``, encode. This is what REFERENCE.md calls the tuned Starlette app; a real server
(which must check its input) can approach it but not beat it.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import orjson
import skops.io as sio
import uvicorn
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

# Fitted on a DataFrame, predicting from an array: sklearn would warn on every request.
warnings.filterwarnings("ignore", message="X does not have valid feature names")


def build(path: str) -> Starlette:
    model = sio.load(path, trusted=sio.get_untrusted_types(file=path))
    predict = model.predict

    async def invocations(request: Request) -> Response:
        doc = orjson.loads(await request.body())
        x = np.asarray(doc["dataframe_split"]["data"], dtype=np.float64)
        body = orjson.dumps({"predictions": predict(x)}, option=orjson.OPT_SERIALIZE_NUMPY)
        return Response(body, media_type="application/json")

    async def ping(request: Request) -> Response:
        return Response(b"{}", media_type="application/json")

    return Starlette(routes=[Route("/invocations", invocations, methods=["POST"]), Route("/ping", ping)])


if __name__ == "__main__":
    uvicorn.run(
        build(sys.argv[1]),
        host="127.0.0.1",
        port=int(sys.argv[2]),
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        lifespan="off",
    )
