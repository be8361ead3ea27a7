"""The ASGI app: every cloud's container contract, answered by one Starlette app.

Deliberately plain: Starlette ``Route``s, no middleware, responses built from bytes. The
predict path is parse (orjson) → one array → one model call → encode (orjson), in a bare
ASGI endpoint (:class:`_PredictEndpoint`) that Starlette routes to.
"""

from __future__ import annotations

import logging
import os
import threading
from collections.abc import Mapping
from typing import Any

import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from mlshift._artifacts import digest_path
from mlshift.errors import InvalidPayload
from mlshift.serving._loaders import LoadedModel
from mlshift.serving._payload import Batch, dumps, encode_csv, parse_csv, parse_json

__all__ = ["MAX_BODY_BYTES", "create_app", "routes_for"]

logger = logging.getLogger("mlshift.serving")

#: Request bodies larger than this are refused with 413 before they are read.
MAX_BODY_BYTES = 100 * 1024 * 1024

# Batches up to this many rows are predicted inline on the event loop. A scikit-learn or
# onnxruntime call on a few hundred rows takes tens to hundreds of microseconds, less than
# handing it to a worker thread and back; bigger batches go to a thread so that health
# checks and small requests keep being answered while they run.
INLINE_MAX_ROWS = 1000

_JSON = "application/json"
_CSV = "text/csv"
_JSON_BYTES = b"application/json"
# As Starlette's Response would send it: text types get a charset.
_CSV_BYTES = b"text/csv; charset=utf-8"
_OK = b'{"status":"ok"}'
_CSV_TYPES = frozenset({"text/csv", "application/csv"})


def routes_for(environ: Mapping[str, str] | None = None) -> dict[str, list[tuple[str, str]]]:
    """The routes each cloud's contract uses, after environment overrides.

    Returns:
        ``{"sagemaker" | "vertex" | "azure": [(method, path), ...]}``.
    """
    env = os.environ if environ is None else environ
    return {
        "sagemaker": [("GET", "/ping"), ("POST", "/invocations")],
        "vertex": [
            ("GET", _route(env.get("AIP_HEALTH_ROUTE"), "/health")),
            ("POST", _route(env.get("AIP_PREDICT_ROUTE"), "/predict")),
        ],
        "azure": [
            ("GET", "/"),
            ("GET", "/ready"),
            ("POST", _route(env.get("MLSHIFT_AZURE_SCORE_ROUTE"), "/score")),
        ],
    }


def _route(value: str | None, default: str) -> str:
    if not value or not value.strip():
        return default
    value = value.strip()
    return value if value.startswith("/") else "/" + value


def create_app(model: LoadedModel, *, variant: str | None = None, model_ref: str | None = None) -> Starlette:
    """Build the model server's ASGI app for one loaded model.

    Routes (all in one app): SageMaker ``GET /ping`` and ``POST /invocations``; Vertex AI
    ``AIP_HEALTH_ROUTE`` and ``AIP_PREDICT_ROUTE`` (default ``/health`` and ``/predict``);
    Azure ML ``GET /``, ``GET /ready`` and ``POST /score`` (``MLSHIFT_AZURE_SCORE_ROUTE``);
    and ``GET /v1/metadata``. Environment variables are read when the app is built.

    Args:
        model: The model to serve.
        variant: Sent back in an ``X-Mlshift-Variant`` header on every response.
        model_ref: ``name:version``, sent back in an ``X-Mlshift-Model`` header.

    Returns:
        A Starlette app; run it with uvicorn, or use :func:`mlshift.serving.serve`.
    """
    headers: dict[str, str] = {}
    if variant:
        headers["x-mlshift-variant"] = variant
    if model_ref:
        headers["x-mlshift-model"] = model_ref
    signature = model.signature
    digest_cache: list[str] = [model.digest] if model.digest else []
    routes = routes_for()
    predict_paths = [p for routes_ in routes.values() for m, p in routes_ if m == "POST"]

    # None rather than {}: Starlette then skips copying headers into every response.
    extra_headers = headers or None

    def respond(body: bytes, status: int = 200, media_type: str = _JSON) -> Response:
        return Response(body, status_code=status, media_type=media_type, headers=extra_headers)

    def error(status: int, code: str, message: str, hint: str | None = None) -> Response:
        return respond(_error_body(code, message, hint), status)

    predict = _PredictEndpoint(model, headers)

    async def healthy(request: Request) -> Response:
        # The model is loaded before the app exists, so live means ready.
        return respond(_OK)

    async def metadata(request: Request) -> Response:
        if not digest_cache:
            digest_cache.append(await anyio.to_thread.run_sync(digest_path, model.path))
        import mlshift

        return respond(
            dumps(
                {
                    "framework": model.framework,
                    "signature": (signature.model_dump(mode="json") if signature is not None else None),
                    "model_ref": model_ref,
                    "variant": variant,
                    "digest": digest_cache[0],
                    "routes": {k: [f"{m} {p}" for m, p in v] for k, v in routes.items()},
                    "server": f"mlshift {mlshift.__version__}",
                }
            )
        )

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        if exc.status_code == 404:
            response = error(
                404,
                "not_found",
                f"no route {request.method} {request.url.path}",
                hint=f"predictions go to POST {', '.join(predict_paths)}",
            )
        elif exc.status_code == 405:
            response = error(
                405, "method_not_allowed", f"{request.method} is not allowed on {request.url.path}"
            )
        else:
            response = error(exc.status_code, "http_error", exc.detail)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    table: dict[tuple[str, str], Any] = {}
    # Prediction routes first: Starlette tries routes in order, and they carry the load.
    for method, path in sorted((r for c in routes.values() for r in c), key=lambda r: r[0] != "POST"):
        table.setdefault((method, path), predict if method == "POST" else healthy)
    table.setdefault(("GET", "/v1/metadata"), metadata)
    return Starlette(
        routes=[Route(path, endpoint, methods=[method]) for (method, path), endpoint in table.items()],
        exception_handlers={HTTPException: http_error},
    )


def _error_body(code: str, message: str, hint: str | None = None) -> bytes:
    detail: dict[str, str] = {"code": code, "message": message}
    if hint:
        detail["hint"] = hint
    return dumps({"error": detail})


class _ClientGone(Exception):
    """The client disconnected before it had sent the whole body."""


class _PredictEndpoint:
    """The prediction routes, as a bare ASGI app mounted on Starlette routes.

    Not a ``request -> Response`` function: Starlette's Request and Response objects and their
    exception wrapping cost about 20 µs per request, which profiles of a single-row request
    (about 300 µs of server CPU in all) showed as the largest overhead left outside the model.
    Routing, 404/405 answers and every other route stay with Starlette.
    """

    def __init__(self, model: LoadedModel, headers: Mapping[str, str]) -> None:
        self.model = model
        self.signature = model.signature
        self.predict_batch = model.predict_batch
        # User predictors run in a thread; one at a time, so they need not be thread-safe.
        self.lock = threading.Lock()
        self.headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]

    def _run_locked(self, batch: Batch) -> list[Any]:
        with self.lock:
            return self.predict_batch(batch)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        try:
            status, body, content_type = await self._answer(scope, receive)
        except _ClientGone:
            return
        headers = [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode("latin-1")),
            *self.headers,
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    async def _answer(self, scope: Scope, receive: Receive) -> tuple[int, bytes, bytes]:
        length, content_type, accept = _predict_headers(scope["headers"])
        body = await _read_body(receive, length)
        if body is None:
            return (
                413,
                _error_body(
                    "payload_too_large",
                    f"the request body is larger than {MAX_BODY_BYTES // (1024 * 1024)} MB",
                    hint="split the batch into smaller requests",
                ),
                _JSON_BYTES,
            )
        try:
            if content_type and content_type.split(";", 1)[0].strip().lower() in _CSV_TYPES:
                batch = parse_csv(body, self.signature)
            else:
                # Anything else is read as JSON: curl -d sends form-urlencoded by default.
                batch = parse_json(body, self.signature)
            if self.model.blocking or len(batch.rows) > INLINE_MAX_ROWS:
                predictions = await anyio.to_thread.run_sync(self._run_locked, batch)
            else:
                predictions = self.predict_batch(batch)
        except InvalidPayload as exc:
            return 400, _error_body(exc.code, exc.message, exc.hint), _JSON_BYTES
        except Exception as exc:
            logger.exception("prediction failed")
            message = f"the model failed: {type(exc).__name__}: {exc}"
            return 500, _error_body("prediction_failed", message), _JSON_BYTES
        if _CSV in accept and _JSON not in accept:
            return 200, encode_csv(predictions), _CSV_BYTES
        return 200, dumps({"predictions": predictions}), _JSON_BYTES


def _predict_headers(raw: list[tuple[bytes, bytes]]) -> tuple[str | None, str, str]:
    """Content-Length (if sent), Content-Type and Accept, in one pass over the raw headers.

    ASGI servers send header names in lower case; the first of repeated headers wins, as
    with Starlette's ``request.headers.get``.
    """
    length: str | None = None
    content_type: str | None = None
    accept: str | None = None
    for name, value in raw:
        if name == b"content-length":
            if length is None:
                length = value.decode("latin-1")
        elif name == b"content-type":
            if content_type is None:
                content_type = value.decode("latin-1")
        elif name == b"accept" and accept is None:
            accept = value.decode("latin-1")
    return length, content_type or "", accept or ""


async def _read_body(receive: Receive, length: str | None) -> bytes | None:
    """The body, or ``None`` when it is over :data:`MAX_BODY_BYTES`.

    Raises:
        _ClientGone: if the client disconnects first.
    """
    if length is not None and length.isdigit() and int(length) > MAX_BODY_BYTES:
        return None
    size = 0
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _ClientGone
        chunk: bytes = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY_BYTES:
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            break
    return chunks[0] if len(chunks) == 1 else b"".join(chunks)
