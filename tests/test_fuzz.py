"""Fuzzing the model server and the local router with what any client could send.

Whatever the body, headers, path or query string: never a 5xx, and every error is a JSON
body that names no file of the server and holds no traceback.
"""

from __future__ import annotations

import asyncio
import json
import string
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import mlshift
from mlshift.serving import create_app, load_model

SRC = str(Path(mlshift.__file__).resolve().parent)
FUZZ = settings(
    max_examples=80,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
    derandomize=True,
)

PREDICTOR = """
class Predictor:
    signature = {"inputs": [{"name": "a"}, {"name": "b", "dtype": "string"}]}

    def load(self, path):
        pass

    def predict(self, batch):
        return [len(row[1]) + row[0] for row in batch]
"""

PATHS = [
    "/invocations",
    "/predict",
    "/score",
    "/ping",
    "/health",
    "/",
    "/ready",
    "/v1/metadata",
    "/invocations/",
    "/_mlshift/metrics",
    "/_mlshift/routes",
    "//invocations",
    "/%ff",
    "/nope",
]
CONTENT_TYPES = [
    "application/json",
    "text/csv",
    "application/csv",
    "text/csv; charset=utf-8",
    "application/x-www-form-urlencoded",
    "",
    "text/csv;;;",
    "\u00e9/\u00e9",
]

json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=30,
)
envelopes = st.fixed_dictionaries(
    {},
    optional={
        "instances": json_values,
        "inputs": json_values,
        "dataframe_split": json_values,
        "dataframe_records": json_values,
        "parameters": json_values,
    },
)
bodies = st.one_of(
    st.binary(max_size=600),
    envelopes.map(lambda v: json.dumps(v).encode()),
    json_values.map(lambda v: json.dumps(v).encode()),
    st.lists(
        st.lists(st.sampled_from(["1", "2.5", "x", "", '"', "nan", "1e999", "\u00e9"]), max_size=4),
        max_size=5,
    ).map(lambda rows: "\n".join(",".join(r) for r in rows).encode()),
)
header_values = st.one_of(st.binary(max_size=40), st.sampled_from(CONTENT_TYPES).map(str.encode))
headers = st.lists(
    st.tuples(
        st.sampled_from(
            [b"content-type", b"accept", b"x-mlshift-target-variant", b"x-anything", b"content-length"]
        ),
        header_values,
    ),
    max_size=4,
)
queries = st.one_of(
    st.binary(max_size=40),
    st.sampled_from(
        [b"window=abc", b"window=%ff", b"window=nan", b"window=inf", b"window=-1", b"window=1e308"]
    ),
    st.text(string.printable, max_size=30).map(lambda t: b"window=" + t.encode()),
)
paths = st.one_of(st.sampled_from(PATHS), st.text(max_size=20).map(lambda t: "/" + t))
methods = st.sampled_from(["GET", "POST", "PUT", "DELETE", "HEAD", "OPTIONS", "PATCH"])


@pytest.fixture(scope="module")
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    event_loop = asyncio.new_event_loop()
    yield event_loop
    event_loop.close()


@pytest.fixture(scope="module")
def apps(tmp_path_factory: pytest.TempPathFactory, iris: dict[str, Any]) -> dict[str, Any]:
    folder = tmp_path_factory.mktemp("fuzz") / "predictor"
    folder.mkdir()
    (folder / "predictor.py").write_text(PREDICTOR)
    return {
        "sklearn": create_app(load_model(iris["v1"], "sklearn"), variant="blue", model_ref="iris:1"),
        "predictor": create_app(load_model(folder, "predictor")),
        "secret_paths": [str(folder), str(Path(iris["v1"]).parent), SRC],
    }


async def _call(
    app: Any, method: str, path: str, body: bytes, hdrs: list[tuple[bytes, bytes]], query: bytes
) -> tuple[int, bytes]:
    pending = [{"type": "http.request", "body": body, "more_body": False}]
    out: dict[str, Any] = {"status": 0, "body": b""}

    async def receive() -> dict[str, Any]:
        if pending:
            return pending.pop(0)
        return {"type": "http.disconnect"}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            out["status"] = message["status"]
        elif message["type"] == "http.response.body":
            out["body"] += message.get("body", b"")

    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode("utf-8", "surrogateescape"),
        "query_string": query,
        "root_path": "",
        "headers": [(k.lower(), v) for k, v in hdrs],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 80),
    }
    try:
        await asyncio.wait_for(app(scope, receive, send), 60)
    except Exception:
        # Starlette re-raises for the server's log after it has answered; what the client saw
        # is what is checked.
        if not out["status"]:
            raise
    return out["status"], out["body"]


def _check(status: int, body: bytes, secret_paths: list[str]) -> None:
    assert 200 <= status < 500, (status, body[:300])
    if status >= 400:
        error = json.loads(body)["error"]
        assert isinstance(error["message"], str) and error["code"]
    text = body.decode("utf-8", "replace")
    assert "Traceback" not in text
    for secret in secret_paths:
        assert secret not in text, secret


@FUZZ
@given(
    method=methods,
    path=paths,
    body=bodies,
    hdrs=headers,
    query=queries,
    which=st.sampled_from(["sklearn", "predictor"]),
)
def test_fuzz_model_server(
    apps: dict[str, Any], loop: asyncio.AbstractEventLoop, method: str, path: str, body: bytes,
    hdrs: list[tuple[bytes, bytes]], query: bytes, which: str,
) -> None:  # fmt: skip
    hdrs = [h for h in hdrs if h[0] != b"content-length"]  # a server checks it against the body
    status, out = loop.run_until_complete(_call(apps[which], method, path, body, hdrs, query))
    _check(status, out, apps["secret_paths"])


@pytest.fixture(scope="module")
def router(
    apps: dict[str, Any], tmp_path_factory: pytest.TempPathFactory, loop: asyncio.AbstractEventLoop
) -> Any:
    import httpx

    from mlshift.local._router import Router

    routes = tmp_path_factory.mktemp("router") / "routes.json"
    routes.write_text(
        json.dumps(
            {
                "variants": [
                    {"name": "blue", "weight": 50, "backends": ["http://blue"], "model": "iris:1"},
                    {"name": "green", "weight": 50, "backends": ["http://green"], "model": "p:1"},
                    {"name": "idle", "weight": 0, "backends": [], "model": "p:2"},
                ]
            }
        )
    )
    instance = Router(routes, max_body=4000)
    blue, green = httpx.ASGITransport(app=apps["sklearn"]), httpx.ASGITransport(app=apps["predictor"])
    instance._client = httpx.AsyncClient(mounts={"http://blue": blue, "http://green": green})
    return instance


@FUZZ
@given(method=methods, path=paths, body=bodies, hdrs=headers, query=queries)
def test_fuzz_router(
    router: Any, apps: dict[str, Any], loop: asyncio.AbstractEventLoop, method: str, path: str, body: bytes,
    hdrs: list[tuple[bytes, bytes]], query: bytes,
) -> None:  # fmt: skip
    status, out = loop.run_until_complete(_call(router, method, path, body, hdrs, query))
    _check(status, out, apps["secret_paths"])
