"""The ASGI app: every cloud's container contract, answered by one Starlette app.

Deliberately plain: Starlette ``Route``s, no middleware, responses built from bytes. The
predict path is parse (orjson) → one array → one model call → encode (orjson), in a bare
ASGI endpoint (:class:`_PredictEndpoint`) that Starlette routes to.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

import anyio.to_thread
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import Receive, Scope, Send

from mlshift._artifacts import digest_path
from mlshift.errors import ConfigError, InvalidPayload
from mlshift.serving._batching import Batcher, Batching
from mlshift.serving._capture import ASGIApp, capture_writer
from mlshift.serving._loaders import LoadedModel
from mlshift.serving._payload import (
    Batch,
    TooManyRows,
    dumps,
    encode_csv,
    estimate_rows,
    loads,
    parse_csv,
    parse_json,
    parse_json_records,
)
from mlshift.serving._v2 import HEADER_LENGTH, InferRequest, V2Error, V2Model, encode_infer, parse_infer

__all__ = ["MAX_BODY_BYTES", "Limits", "create_app", "routes_for"]

logger = logging.getLogger("mlshift.serving")

#: Request bodies larger than this are refused with 413 (by default; see :class:`Limits`).
MAX_BODY_BYTES = 100 * 1024 * 1024

_MB = 1024 * 1024


@dataclass(frozen=True)
class Limits:
    """What one server process takes on at once; see ``docs/security.md`` for the memory bound.

    Attributes:
        max_body_bytes: Bodies larger than this are refused with 413, before they are read
            when ``Content-Length`` says so (``MLSHIFT_MAX_BODY_MB``, default 100).
        max_rows: Batches with more rows are refused with 413 (``MLSHIFT_MAX_ROWS``, default
            1,000,000); large bodies are counted before they are parsed.
        max_inflight: Prediction requests being read or answered at once; more get 503 with
            ``Retry-After`` (``MLSHIFT_MAX_INFLIGHT``, default 64).
        max_large_inflight: Of those, how many may have a body over ``large_body_bytes``
            (``MLSHIFT_MAX_LARGE_INFLIGHT``, default 2). This is what bounds memory: a large
            body is parsed, predicted and encoded in a worker thread, costing a few times its
            size while it runs.
        large_body_bytes: What counts as a large body (1 MB).
    """

    max_body_bytes: int = MAX_BODY_BYTES
    max_rows: int = 1_000_000
    max_inflight: int = 64
    max_large_inflight: int = 2
    large_body_bytes: int = _MB

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Limits:
        """The defaults, overridden by ``MLSHIFT_MAX_*`` environment variables.

        Raises:
            ConfigError: for a value that is not a positive whole number.
        """
        env = os.environ if environ is None else environ

        def number(name: str, default: int) -> int:
            text = env.get(name, "").strip()
            if not text:
                return default
            if not text.isdigit() or int(text) <= 0:
                raise ConfigError(
                    f"{name}={text!r} is not a positive whole number",
                    field=name,
                    hint="unset it for the default",
                )
            return int(text)

        return cls(
            max_body_bytes=number("MLSHIFT_MAX_BODY_MB", MAX_BODY_BYTES // _MB) * _MB,
            max_rows=number("MLSHIFT_MAX_ROWS", cls.max_rows),
            max_inflight=number("MLSHIFT_MAX_INFLIGHT", cls.max_inflight),
            max_large_inflight=number("MLSHIFT_MAX_LARGE_INFLIGHT", cls.max_large_inflight),
        )


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
_NPY_TYPES = frozenset({"application/x-npy", "application/npy"})
# Binary encodings other servers take that this one does not; anything else unknown is read
# as JSON (curl -d sends application/x-www-form-urlencoded).
_REFUSED_TYPES = frozenset(
    {
        "application/x-recordio-protobuf",
        "application/x-recordio",
        "application/x-protobuf",
        "application/protobuf",
        "application/x-npz",
        "application/x-parquet",
        "application/vnd.apache.parquet",
        "application/x-image",
        "application/jsonlines",
        "application/x-jsonlines",
    }
)
_REFUSED_KINDS = ("image/", "audio/", "video/")


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


def create_app(
    model: LoadedModel,
    *,
    variant: str | None = None,
    model_ref: str | None = None,
    limits: Limits | None = None,
    batching: Batching | None = None,
) -> Starlette:
    """Build the model server's ASGI app for one loaded model.

    Routes (all in one app): SageMaker ``GET /ping`` and ``POST /invocations``; Vertex AI
    ``AIP_HEALTH_ROUTE`` and ``AIP_PREDICT_ROUTE`` (default ``/health`` and ``/predict``);
    Azure ML ``GET /``, ``GET /ready`` and ``POST /score`` (``MLSHIFT_AZURE_SCORE_ROUTE``);
    ``GET /v1/metadata``; ``GET /version`` (as MLflow's scoring server); and the Open
    Inference Protocol's ``/v2`` routes (KServe, Triton, MLServer). Environment variables are
    read when the app is built.

    Args:
        model: The model to serve.
        variant: Sent back in an ``X-Mlshift-Variant`` header on every response.
        model_ref: ``name:version``, sent back in an ``X-Mlshift-Model`` header.
        limits: Body, batch and concurrency limits; from ``MLSHIFT_MAX_*`` when omitted.
        batching: Adaptive micro-batching (off by default); from ``MLSHIFT_MAX_BATCH_SIZE``
            and ``MLSHIFT_MAX_LATENCY_MS`` when omitted. Models that cannot merge requests
            are served unbatched.

    Returns:
        A Starlette app; run it with uvicorn, or use :func:`mlshift.serving.serve`.

    Raises:
        ConfigError: for a malformed ``MLSHIFT_MAX_*`` variable.
    """
    limits = Limits.from_env() if limits is None else limits
    batching = Batching.from_env() if batching is None else batching
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

    # One lock for every route: user predictors are never called concurrently.
    lock = threading.Lock()
    batcher = (
        Batcher(model, batching, lock=lock, inline_max_rows=INLINE_MAX_ROWS)
        if batching.enabled and model.batchable
        else None
    )
    # One intake for every prediction route (/invocations and the others, /v2 infer): one
    # in-flight counter and one pool of large-body slots, so the limits hold for the server.
    intake = _Intake(limits, batcher)
    predict = _PredictEndpoint(model, headers, intake, lock=lock)
    # Request capture for monitoring (serving/_capture.py): unchanged unless MLSHIFT_CAPTURE_DIR is set.
    capture = capture_writer(variant=variant, model_ref=model_ref, signature=signature)
    routed: Any = capture.wrap(cast(ASGIApp, predict)) if capture is not None else predict

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
                    "batching": batcher.stats() if batcher is not None else None,
                    "server": f"mlshift {mlshift.__version__}",
                }
            )
        )

    async def version(request: Request) -> Response:
        return respond(_version().encode(), media_type="text/plain")

    v2 = V2Model.of(model, model_ref)
    infer: Any = _InferEndpoint(model, headers, intake, v2, lock=lock)
    if capture is not None:
        # The protocol's infer routes share the writer (one file series per server).
        infer = capture.wrap(cast(ASGIApp, infer), protocol="v2")
    v2_server = dumps({"name": "mlshift", "version": _version(), "extensions": ["binary_tensor_data"]})

    async def v2_metadata(request: Request) -> Response:
        return respond(v2_server)

    async def v2_model(request: Request) -> Response:
        try:
            v2.check(request.path_params)
        except V2Error as exc:
            return respond(exc.body, exc.status)
        return respond(dumps(v2.metadata()))

    async def v2_model_ready(request: Request) -> Response:
        try:
            v2.check(request.path_params)
        except V2Error as exc:
            return respond(exc.body, exc.status)
        return respond(b"")

    async def v2_health(request: Request) -> Response:
        # The protocol's health answers are a status code with an empty body.
        return respond(b"")

    async def http_error(request: Request, exc: Exception) -> Response:
        assert isinstance(exc, HTTPException)
        path = request.scope["path"]
        if path.startswith("/v2"):
            # The protocol's error shape, which tritonclient and KServe clients read.
            if exc.status_code == 404:
                message = f"no route {request.method} {path}"
            elif exc.status_code == 405:
                message = f"{request.method} is not allowed on {path}"
            else:
                message = str(exc.detail)
            response = respond(V2Error(exc.status_code, message).body, exc.status_code)
        elif exc.status_code == 404:
            response = error(
                404,
                "not_found",
                f"no route {request.method} {request.scope['path']}",
                hint=f"predictions go to POST {', '.join(predict_paths)}",
            )
        elif exc.status_code == 405:
            response = error(
                405, "method_not_allowed", f"{request.method} is not allowed on {request.scope['path']}"
            )
        else:
            response = error(exc.status_code, "http_error", exc.detail)
        if exc.headers:
            response.headers.update(exc.headers)
        return response

    async def server_error(request: Request, exc: Exception) -> Response:
        # Starlette's own 500 is plain text; this one is JSON, generic, with a request id.
        status, body, _ = _failed("request failed", "the server failed on this request", exc)
        return respond(body, status)

    table: dict[tuple[str, str], Any] = {}
    # Prediction routes first: Starlette tries routes in order, and they carry the load.
    for method, path in sorted((r for c in routes.values() for r in c), key=lambda r: r[0] != "POST"):
        table.setdefault((method, path), routed if method == "POST" else healthy)
    table.setdefault(("GET", "/v1/metadata"), metadata)
    table.setdefault(("GET", "/version"), version)
    # After every other route: Starlette stops at the first match, so these cost the
    # existing routes nothing.
    table.setdefault(("POST", "/v2/models/{model_name}/infer"), infer)
    table.setdefault(("POST", "/v2/models/{model_name}/versions/{model_version}/infer"), infer)
    table.setdefault(("GET", "/v2"), v2_metadata)
    table.setdefault(("GET", "/v2/health/live"), v2_health)
    table.setdefault(("GET", "/v2/health/ready"), v2_health)
    table.setdefault(("GET", "/v2/models/{model_name}"), v2_model)
    table.setdefault(("GET", "/v2/models/{model_name}/versions/{model_version}"), v2_model)
    table.setdefault(("GET", "/v2/models/{model_name}/ready"), v2_model_ready)
    table.setdefault(("GET", "/v2/models/{model_name}/versions/{model_version}/ready"), v2_model_ready)
    app = Starlette(
        routes=[Route(path, endpoint, methods=[method]) for (method, path), endpoint in table.items()],
        exception_handlers={HTTPException: http_error, Exception: server_error},
    )
    # No 307 from /invocations/ to /invocations: its Location would be built from the
    # client's Host header, and clients of a model server do not follow redirects of a POST.
    app.router.redirect_slashes = False
    return app


def _error_body(code: str, message: str, hint: str | None = None, request_id: str | None = None) -> bytes:
    detail: dict[str, str] = {"code": code, "message": message}
    if hint:
        detail["hint"] = hint
    if request_id:
        detail["request_id"] = request_id
    return dumps({"error": detail})


class _ClientGone(Exception):
    """The client disconnected before it had sent the whole body."""


class _Refused(Exception):
    """A request refused before its work starts (413, 503): status, body, extra headers."""

    def __init__(self, status: int, body: bytes, headers: list[tuple[bytes, bytes]] | None = None) -> None:
        self.status = status
        self.body = body
        self.headers = headers or []


# Refused before the body is read: the connection is closed after the answer, so that the
# unread body is never taken for the client's next request on a keep-alive connection.
_CLOSE = (b"connection", b"close")
_BUSY_HEADERS = [(b"retry-after", b"1"), _CLOSE]


def _busy(what: str) -> _Refused:
    return _Refused(
        503,
        _error_body(
            "overloaded",
            f"the server is already answering {what}",
            hint="retry after a second (Retry-After), or add replicas",
        ),
        _BUSY_HEADERS,
    )


class _Intake:
    """How every prediction route admits a request and reads its body: one place, one count.

    ``/invocations`` (and the other clouds' prediction routes) and ``/v2/.../infer`` share one
    intake, so ``MLSHIFT_MAX_INFLIGHT`` and ``MLSHIFT_MAX_LARGE_INFLIGHT`` bound the server,
    not each route. Limits cost two integer counters on the event loop's thread, never a lock
    around a prediction: ``inflight`` counts requests being read or answered, ``large`` those
    with a body over :attr:`Limits.large_body_bytes`, whose parsing, prediction and encoding
    run in a worker thread so that health checks keep being answered meanwhile.
    """

    def __init__(self, limits: Limits, batcher: Batcher | None) -> None:
        self.limits = limits
        self.batcher = batcher
        self.inflight = 0
        self.large = 0
        self.busy = _busy(f"{limits.max_inflight} requests")
        self.too_large = _Refused(
            413,
            _error_body(
                "payload_too_large",
                f"the request body is larger than {_size(limits.max_body_bytes)}",
                hint="split the batch into smaller requests",
            ),
            [_CLOSE],
        )

    async def read(self, length: str | None, receive: Receive, slot: list[bool]) -> bytes | list[bytes]:
        """The body (its chunks when it is large), within the size limit and the large-body slots.

        ``slot[0]`` is set when the request takes a large-body slot; the caller gives it back.
        While the body is read, the request counts as one that may still join a batch.

        Raises:
            _ClientGone: if the client disconnects first.
            _Refused: over the size limit, or no large-body slot is free.
        """
        declared = int(length) if length is not None and length.isdigit() else None
        if declared is not None:
            if declared > self.limits.max_body_bytes:
                raise self.too_large
            if declared > self.limits.large_body_bytes:
                self._take_large(slot)
        if self.batcher is None:
            return await self._read_body(receive, slot)
        return await self.batcher.read(self._read_body(receive, slot))

    def _take_large(self, slot: list[bool]) -> None:
        if self.large >= self.limits.max_large_inflight:
            raise _busy(f"{self.limits.max_large_inflight} large requests")
        self.large += 1
        slot[0] = True

    async def _read_body(self, receive: Receive, slot: list[bool]) -> bytes | list[bytes]:
        # One sent without Content-Length takes a large-body slot once it is large.
        size = 0
        chunks: list[bytes] = []
        limit = self.limits.max_body_bytes
        large = self.limits.large_body_bytes
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > limit:
                raise self.too_large
            if size > large and not slot[0]:
                self._take_large(slot)
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        if slot[0]:
            return chunks
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)


#: An answer: status, body, content type, extra headers.
_Answer = tuple[int, bytes, bytes, list[tuple[bytes, bytes]]]
_NO_HEADERS: list[tuple[bytes, bytes]] = []


class _PredictEndpoint:
    """The prediction routes, as a bare ASGI app mounted on Starlette routes.

    Not a ``request -> Response`` function: Starlette's Request and Response objects and their
    exception wrapping cost about 20 µs per request, which profiles of a single-row request
    (about 300 µs of server CPU in all) showed as the largest overhead left outside the model.
    Routing, 404/405 answers and every other route stay with Starlette.

    Every prediction route goes through :meth:`__call__`: admission and the body read (by the
    shared :class:`_Intake`), then :meth:`_answer`, the one place an answer is produced.
    """

    def __init__(
        self,
        model: LoadedModel,
        headers: Mapping[str, str],
        intake: _Intake,
        *,
        lock: threading.Lock | None = None,
    ) -> None:
        self.model = model
        self.signature = model.signature
        self.predict_batch = model.predict_batch
        self.intake = intake
        self.limits = intake.limits
        self.batcher = intake.batcher
        # User predictors run in a thread; one at a time, so they need not be thread-safe.
        self.lock = threading.Lock() if lock is None else lock
        self.headers = [(k.encode("latin-1"), v.encode("latin-1")) for k, v in headers.items()]

    def _run_locked(self, batch: Batch) -> list[Any]:
        with self.lock:
            return self.predict_batch(batch)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        intake = self.intake
        if intake.inflight >= intake.limits.max_inflight:
            status, body, content_type, extra = self._refused(intake.busy)
        else:
            intake.inflight += 1
            # slot[0]: whether this request holds one of the large-body slots.
            slot = [False]
            try:
                length, content_type_in, accept = _predict_headers(scope["headers"])
                self._admit(scope)
                data = await intake.read(length, receive, slot)
                status, body, content_type, extra = await self._answer(scope, data, content_type_in, accept)
            except _ClientGone:
                return
            except _Refused as refused:
                status, body, content_type, extra = self._refused(refused)
            except V2Error as exc:
                status, body, content_type, extra = exc.status, exc.body, _JSON_BYTES, _NO_HEADERS
            finally:
                intake.inflight -= 1
                if slot[0]:
                    intake.large -= 1
        headers = [
            (b"content-type", content_type),
            (b"content-length", str(len(body)).encode("latin-1")),
            *self.headers,
            *extra,
        ]
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})

    def _admit(self, scope: Scope) -> None:
        """Checks on the request line, before its body is read (none here)."""

    def _refused(self, refused: _Refused) -> _Answer:
        return refused.status, refused.body, _JSON_BYTES, refused.headers

    async def _answer(
        self, scope: Scope, body: bytes | list[bytes], content_type: str, accept: str
    ) -> _Answer:
        if isinstance(body, list):
            # Parsing a large body takes long and costs memory: off the event loop.
            return _plain(await anyio.to_thread.run_sync(self._work_large, body, content_type, accept))
        batch = self._parse(body, content_type)
        if not isinstance(batch, Batch):
            return _plain(batch)
        if self.batcher is not None and self.batcher.accepts(batch, _rows(batch)):
            return _plain(await self._batched(self.batcher, batch, accept))
        if self.model.blocking or len(batch.rows) > INLINE_MAX_ROWS:
            runner = self._run_locked if self.model.blocking else self.predict_batch
            return _plain(await anyio.to_thread.run_sync(self._predict_encode, runner, batch, accept))
        return _plain(self._predict_encode(self.predict_batch, batch, accept))

    async def _batched(self, batcher: Batcher, batch: Batch, accept: str) -> tuple[int, bytes, bytes]:
        """Predict in a batch shared with other requests; encode this request's answer."""
        try:
            predictions = await batcher.predict(batch)
        except InvalidPayload as exc:
            return 400, _error_body(exc.code, exc.message, exc.hint), _JSON_BYTES
        except Exception:
            return _failed("prediction failed", "the model failed on this request")
        try:
            if _CSV in accept and _JSON not in accept:
                return 200, encode_csv(predictions), _CSV_BYTES
            return 200, dumps({"predictions": predictions}), _JSON_BYTES
        except Exception:
            return _failed("encoding the predictions failed", "the model's predictions could not be encoded")

    def _parse(self, body: bytes | bytearray, content_type: str) -> Batch | tuple[int, bytes, bytes]:
        """The batch, or the 400/413/415 answer for a body that is not one."""
        try:
            if not content_type or content_type == _JSON:
                batch = parse_json(body, self.signature)
            else:
                media = content_type.split(";", 1)[0].strip().lower()
                if media in _CSV_TYPES:
                    batch = parse_csv(body, self.signature)
                elif media in _NPY_TYPES:
                    from mlshift.serving._arrays import parse_npy

                    batch = parse_npy(body, self.signature, self.model.array_dtype)
                elif media in _REFUSED_TYPES or media.startswith(_REFUSED_KINDS):
                    return _unsupported_type(media)
                else:
                    # Anything else is read as JSON: curl -d sends form-urlencoded by default.
                    batch = parse_json(body, self.signature)
        except InvalidPayload as exc:
            return 400, _error_body(exc.code, exc.message, exc.hint), _JSON_BYTES
        rows = batch.array.shape[0] if batch.array is not None else len(batch.rows)
        if rows > self.limits.max_rows:
            return self._too_many_rows(rows)
        return batch

    def _too_many_rows(self, rows: int | None) -> tuple[int, bytes, bytes]:
        counted = f"has {rows:,} rows" if rows is not None else "has too many rows"
        return (
            413,
            _error_body(
                "too_many_rows",
                f"the batch {counted}; this server takes at most {self.limits.max_rows:,} per request",
                hint="split the batch into smaller requests",
            ),
            _JSON_BYTES,
        )

    def _work_large(self, chunks: list[bytes], content_type: str, accept: str) -> tuple[int, bytes, bytes]:
        """Parse, predict and encode a large body, in a worker thread.

        Every step over the whole body is done a piece at a time, so that the event loop gets
        the GIL back every few milliseconds and health checks are answered meanwhile.
        """
        body = bytearray(sum(len(c) for c in chunks))
        pos = 0
        for i, chunk in enumerate(chunks):
            body[pos : pos + len(chunk)] = chunk
            pos += len(chunk)
            chunks[i] = b""  # freed as it is copied: never two copies of the body
            if i % 64 == 63:
                time.sleep(0)  # let the event loop have the GIL: health checks wait on it
        media = content_type.split(";", 1)[0].strip().lower()
        if media in _NPY_TYPES or media in _REFUSED_TYPES or media.startswith(_REFUSED_KINDS):
            # Not text: counting brackets says nothing; a .npy header says its row count.
            parsed = self._parse(body, content_type)
            if not isinstance(parsed, Batch):
                return parsed
            return self._predict_encode(
                self._run_locked if self.model.blocking else self.predict_batch, parsed, accept
            )
        is_csv = media in _CSV_TYPES
        # Counted before parsing: a parsed row costs far more memory than its bytes.
        if estimate_rows(body, is_csv) > self.limits.max_rows:
            return self._too_many_rows(None)
        batch: Batch | None = None
        if not is_csv and self.model.array_dtype is not None:
            try:
                from mlshift.serving._arrays import parse_json_array

                batch = parse_json_array(body, self.signature, self.model.array_dtype, self.limits.max_rows)
            except TooManyRows as exc:
                return self._too_many_rows(exc.rows)
            except InvalidPayload as exc:
                return 400, _error_body(exc.code, exc.message, exc.hint), _JSON_BYTES
        if batch is None and not is_csv:
            try:
                batch = parse_json_records(body, self.signature)
            except InvalidPayload as exc:
                return 400, _error_body(exc.code, exc.message, exc.hint), _JSON_BYTES
            if batch is not None and len(batch.rows) > self.limits.max_rows:
                return self._too_many_rows(len(batch.rows))
        if batch is None:
            parsed = self._parse(body, content_type)
            if not isinstance(parsed, Batch):
                return parsed
            batch = parsed
        del body
        return self._predict_encode(
            self._run_locked if self.model.blocking else self.predict_batch, batch, accept
        )

    def _predict_encode(self, run: Any, batch: Batch, accept: str) -> tuple[int, bytes, bytes]:
        try:
            predictions = run(batch)
        except InvalidPayload as exc:
            return 400, _error_body(exc.code, exc.message, exc.hint), _JSON_BYTES
        except Exception:
            return _failed("prediction failed", "the model failed on this request")
        try:
            if _CSV in accept and _JSON not in accept:
                return 200, encode_csv(predictions), _CSV_BYTES
            return 200, dumps({"predictions": predictions}), _JSON_BYTES
        except Exception:
            return _failed("encoding the predictions failed", "the model's predictions could not be encoded")


def _version() -> str:
    import mlshift

    return mlshift.__version__


class _InferEndpoint(_PredictEndpoint):
    """``POST /v2/models/NAME[/versions/V]/infer``: the protocol's inference, under the same
    limits as the other prediction routes, answering errors in the protocol's shape."""

    def __init__(
        self,
        model: LoadedModel,
        headers: Mapping[str, str],
        intake: _Intake,
        v2: V2Model,
        *,
        lock: threading.Lock | None = None,
    ) -> None:
        super().__init__(model, headers, intake, lock=lock)
        self.v2 = v2

    def _admit(self, scope: Scope) -> None:
        # An unknown model name is a 404 before its body is read.
        self.v2.check(scope.get("path_params", {}))

    def _refused(self, refused: _Refused) -> _Answer:
        return refused.status, _v2_error(refused.body).body, _JSON_BYTES, refused.headers

    async def _answer(
        self, scope: Scope, body: bytes | list[bytes], content_type: str, accept: str
    ) -> _Answer:
        """The answer; raises V2Error or _Refused for a request refused."""
        header_length = next((v.decode("latin-1") for k, v in scope["headers"] if k == _HEADER_LENGTH), None)
        if isinstance(body, list):
            # Joined, parsed and predicted off the event loop, as other large bodies are.
            return await anyio.to_thread.run_sync(self._infer_chunks, body, header_length)
        batch, request = self._parse_tensors(body, header_length)
        if self.batcher is not None and self.batcher.accepts(batch, _rows(batch)):
            return await self._infer_batched(self.batcher, batch, request)
        if self.model.blocking or _rows(batch) > INLINE_MAX_ROWS:
            return await anyio.to_thread.run_sync(self._predict_tensor, batch, request)
        return self._predict_tensor(batch, request)

    async def _infer_batched(self, batcher: Batcher, batch: Batch, request: InferRequest) -> _Answer:
        try:
            predictions = await batcher.predict(batch)
        except InvalidPayload as exc:
            raise V2Error.of(exc) from None
        except Exception:
            raise _v2_error(
                _failed("prediction failed", "the model failed on this request")[1], 500
            ) from None
        return self._encode_tensor(predictions, request)

    def _encode_tensor(self, predictions: list[Any], request: InferRequest) -> _Answer:
        try:
            body, json_length = encode_infer(predictions, self.v2, request)
        except Exception:
            failed = _failed(
                "encoding the predictions failed", "the model's predictions could not be encoded"
            )
            raise _v2_error(failed[1], 500) from None
        if json_length is None:
            return 200, body, _JSON_BYTES, []
        return 200, body, b"application/octet-stream", [(_HEADER_LENGTH, str(json_length).encode())]

    def _infer_chunks(self, chunks: list[bytes], header_length: str | None) -> _Answer:
        batch, request = self._parse_tensors(b"".join(chunks), header_length)
        return self._predict_tensor(batch, request)

    def _parse_tensors(self, body: bytes, header_length: str | None) -> tuple[Batch, InferRequest]:
        batch, request = parse_infer(body, header_length, self.v2, self.model)
        rows = _rows(batch)
        if rows > self.limits.max_rows:
            raise _v2_error(self._too_many_rows(rows)[1], 413)
        return batch, request

    def _predict_tensor(self, batch: Batch, request: InferRequest) -> _Answer:
        try:
            predictions = (self._run_locked if self.model.blocking else self.predict_batch)(batch)
        except InvalidPayload as exc:
            raise V2Error.of(exc) from None
        except Exception:
            raise _v2_error(
                _failed("prediction failed", "the model failed on this request")[1], 500
            ) from None
        try:
            body, json_length = encode_infer(predictions, self.v2, request)
        except Exception:
            failed = _failed(
                "encoding the predictions failed", "the model's predictions could not be encoded"
            )
            raise _v2_error(failed[1], 500) from None
        if json_length is None:
            return 200, body, _JSON_BYTES, []
        return 200, body, b"application/octet-stream", [(_HEADER_LENGTH, str(json_length).encode())]


_HEADER_LENGTH = HEADER_LENGTH.encode()


def _plain(answer: tuple[int, bytes, bytes]) -> _Answer:
    return answer[0], answer[1], answer[2], _NO_HEADERS


def _rows(batch: Batch) -> int:
    return int(batch.array.shape[0]) if batch.array is not None else len(batch.rows)


def _v2_error(body: bytes, status: int = 400) -> V2Error:
    """An mlshift error body, as the protocol's ``{"error": "message (hint: ...)"}``."""
    detail = loads(body)["error"]
    return V2Error(status, detail["message"] + (f" (hint: {detail['hint']})" if detail.get("hint") else ""))


def _unsupported_type(media: str) -> tuple[int, bytes, bytes]:
    return (
        415,
        _error_body(
            "unsupported_media_type",
            f"this server does not read {media} bodies",
            hint="send application/json, text/csv or application/x-npy (see docs/serving.md)",
        ),
        _JSON_BYTES,
    )


def _failed(what: str, message: str, exc: BaseException | None = None) -> tuple[int, bytes, bytes]:
    """A 500 that says nothing about the model or its files: the detail goes to the log."""
    request_id = uuid.uuid4().hex[:16]
    logger.error("%s (request %s)", what, request_id, exc_info=exc or True)
    body = _error_body(
        "prediction_failed",
        f"{message}; the server log has the details under request id {request_id}",
        request_id=request_id,
    )
    return 500, body, _JSON_BYTES


def _size(n: int) -> str:
    return f"{n // _MB} MB" if n >= _MB and n % _MB == 0 else f"{n:,} bytes"


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
