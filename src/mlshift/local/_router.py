"""The local endpoint router: one process per endpoint on a stable 127.0.0.1 port.

It splits prediction requests across variants by weight (smooth weighted round-robin), names
the variant that served each response in ``X-Mlshift-Variant`` (as SageMaker's
``InvokedProductionVariant`` does), and counts per-variant status codes and latencies. With a
shadow variant in the table, it mirrors a share of answered requests to it after the caller
has its answer, and compares the two answers (``GET /_mlshift/shadow``).

The routing table is a JSON file the local adapter replaces atomically; the router checks
its identity (inode, mtime) on each request, so a weight change applies to the very next
request with no admin API to secure.

Run as ``python -m mlshift.local._router --routes FILE --port N --port-file FILE``.
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import logging
import math
import os
import socket
import sys
import time
from collections import deque
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from pathlib import Path
from typing import Any

from mlshift._routing import (
    MirrorShare,
    ShadowSample,
    WeightedRoundRobin,
    summarize,
    summarize_shadow,
)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

PREDICT_PATHS = frozenset({"/invocations", "/predict", "/score"})
#: Request headers passed on to the replica (the Open Inference Protocol's binary framing too,
#: and the caller's request id, which capture records to join ground-truth labels by).
_FORWARDED = frozenset({b"content-type", b"accept", b"inference-header-content-length", b"x-request-id"})
TARGET_HEADER = b"x-mlshift-target-variant"
_SAMPLES = 50_000
#: Mirrored requests in flight at most; past it a request is not mirrored (and counted as
#: skipped): the shadow must never queue up work that slows the callers' requests.
_MAX_MIRRORS = 32
#: A replica that refused a connection is left out of its variant's rotation this long at
#: first, doubling on each new failure up to the maximum; one that answers is back at once.
_DOWN_SECONDS, _DOWN_MAX_SECONDS = 2.0, 30.0
_MB = 1024 * 1024
#: Bodies up to this size are read whole (and can be retried on another replica); larger ones
#: are streamed to the variant as they arrive, so the router never holds one in memory.
BUFFER_BYTES = _MB

logger = logging.getLogger("mlshift.router")


def max_body_bytes(environ: MutableMapping[str, str] | None = None) -> int:
    """The body limit, as the model server's: ``MLSHIFT_MAX_BODY_MB`` (default 100) MB."""
    text = (os.environ if environ is None else environ).get("MLSHIFT_MAX_BODY_MB", "").strip()
    return int(text) * _MB if text.isdigit() and int(text) > 0 else 100 * _MB


class _ClientGone(Exception):
    """The client disconnected before it had sent the whole body."""


class _TooLarge(Exception):
    """The body is over the limit."""


def _error(code: str, message: str, hint: str | None = None) -> dict[str, Any]:
    detail = {"code": code, "message": message}
    if hint:
        detail["hint"] = hint
    return {"error": detail}


class _UpstreamError(Exception):
    """A replica did not answer: ``refused`` when nothing took the connection."""

    def __init__(self, message: str, *, refused: bool = False) -> None:
        super().__init__(message)
        self.refused = refused


#: Response headers passed back to the caller besides Content-Type: the Open Inference
#: Protocol's binary framing, a replica's Retry-After on 503, and the request id a captured
#: answer was recorded under.
_PASSED_BACK = (b"inference-header-content-length", b"retry-after", b"x-request-id")


class _Pool:
    """Keep-alive HTTP/1.1 connections to the replicas, reused from one request to the next.

    The hop's cost is what the router adds to every prediction, so the path is bare: one write
    of a request head built from bytes, one read of the answer's head, one read of its body;
    no client object, request or response object per request. Idle connections are kept per
    replica; one the replica closed meanwhile (its keep-alive timeout) fails on first use and
    the request is sent once more on a new connection, which is safe because it never reached
    a model. Bodies over :data:`BUFFER_BYTES` are streamed by httpx instead (see
    :meth:`Router._forward`).
    """

    def __init__(self, *, timeout: float = 60.0, connect_timeout: float = 5.0, max_idle: int = 64) -> None:
        self.timeout = timeout
        self.connect_timeout = connect_timeout
        self.max_idle = max_idle
        self.idle: dict[str, list[tuple[asyncio.StreamReader, asyncio.StreamWriter]]] = {}
        self._hosts: dict[str, tuple[str, int, bytes]] = {}

    def _address(self, backend: str) -> tuple[str, int, bytes]:
        known = self._hosts.get(backend)
        if known is None:
            from urllib.parse import urlsplit

            parts = urlsplit(backend)
            host, port = parts.hostname or "127.0.0.1", parts.port or 80
            known = self._hosts[backend] = (host, port, f"{host}:{port}".encode())
        return known

    async def request(
        self, backend: str, method: str, target: bytes, body: bytes, headers: list[tuple[bytes, bytes]]
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """Send one request to ``backend``; returns (status, headers to pass back, body).

        Raises:
            _UpstreamError: the replica refused the connection, closed it, or did not answer
                within the timeout.
        """
        host, port, host_header = self._address(backend)
        head = b"".join(
            [
                method.encode("latin-1"), b" ", target, b" HTTP/1.1\r\nhost: ", host_header,
                b"\r\ncontent-length: ", str(len(body)).encode(), b"\r\n",
                *(name + b": " + value + b"\r\n" for name, value in headers),
                b"\r\n",
            ]
        )  # fmt: skip
        for attempt in range(2):
            idle = self.idle.get(backend)
            reused = bool(idle)
            if idle:
                reader, writer = idle.pop()
            else:
                try:
                    reader, writer = await asyncio.wait_for(
                        asyncio.open_connection(host, port), self.connect_timeout
                    )
                except (OSError, asyncio.TimeoutError) as exc:
                    raise _UpstreamError(
                        f"cannot connect: {exc!r}", refused=isinstance(exc, OSError)
                    ) from exc
            # A timer, not wait_for: no task per request. It aborts the connection, which ends
            # the reads below with an error.
            timer = asyncio.get_running_loop().call_later(self.timeout, writer.transport.abort)
            try:
                writer.write(head + body if len(body) < 65536 else head)
                if len(body) >= 65536:
                    writer.write(body)
                status, passed, content, keep = await _read_response(reader, method)
            except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
                writer.close()
                if reused and attempt == 0 and not _expired(timer):
                    continue  # a kept connection the replica had closed: once more on a new one
                raise _UpstreamError(f"no answer: {exc!r}") from exc
            except BaseException:
                writer.close()
                raise
            finally:
                timer.cancel()
            if keep and len(self.idle.setdefault(backend, [])) < self.max_idle:
                self.idle[backend].append((reader, writer))
            else:
                writer.close()
            return status, passed, content
        raise AssertionError("unreachable")  # pragma: no cover

    def forget(self, backend: str) -> None:
        """Close the idle connections to a replica that left the table."""
        for _, writer in self.idle.pop(backend, []):
            writer.close()

    def close(self) -> None:
        for backend in list(self.idle):
            self.forget(backend)


def _expired(timer: asyncio.TimerHandle) -> bool:
    return timer.when() <= asyncio.get_running_loop().time()


async def _read_response(
    reader: asyncio.StreamReader, method: str
) -> tuple[int, list[tuple[bytes, bytes]], bytes, bool]:
    """One HTTP/1.1 answer: status, headers to pass back, body, whether the connection stays open."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head[:-4].split(b"\r\n")
    version, _, rest = lines[0].partition(b" ")
    status = int(rest[:3])
    keep = version == b"HTTP/1.1"
    length: int | None = None
    chunked = False
    passed: list[tuple[bytes, bytes]] = []
    for line in lines[1:]:
        name, _, value = line.partition(b":")
        name = name.strip().lower()
        value = value.strip()
        if name == b"content-length":
            length = int(value)
        elif name == b"content-type":
            passed.insert(0, (b"content-type", value))
        elif name == b"transfer-encoding":
            chunked = b"chunked" in value.lower()
        elif name == b"connection":
            token = value.lower()
            keep = b"close" not in token and (keep or b"keep-alive" in token)
        elif name in _PASSED_BACK:
            passed.append((name, value))
    if method == "HEAD" or status in (204, 304) or 100 <= status < 200:
        return status, passed, b"", keep
    if chunked:
        parts = []
        while True:
            size = int((await reader.readuntil(b"\r\n")).split(b";", 1)[0], 16)
            if size == 0:
                await reader.readuntil(b"\r\n")  # no trailers from a model server
                break
            parts.append(await reader.readexactly(size))
            await reader.readexactly(2)
        return status, passed, b"".join(parts), keep
    if length is None:  # framed by the end of the connection (HTTP/1.0 servers)
        return status, passed, await reader.read(), False
    return status, passed, await reader.readexactly(length), keep


class RoutingTable:
    """The routing file, reloaded when it is replaced."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._key: tuple[int, int] | None = None
        self.variants: dict[str, dict[str, Any]] = {}
        self.rr = WeightedRoundRobin({})
        self._replicas: dict[str, itertools.cycle[str]] = {}
        self.shadow: dict[str, Any] | None = None
        #: backend URL -> (monotonic time it may be tried again, current back-off in seconds)
        self.down: dict[str, tuple[float, float]] = {}
        self.live: set[str] = set()
        self.gone: set[str] = set()
        self.refresh()

    def refresh(self) -> None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return
        key = (st.st_ino, st.st_mtime_ns)
        if key == self._key:
            return
        data = json.loads(self.path.read_text())
        self.variants = {v["name"]: v for v in data["variants"]}
        self.rr = WeightedRoundRobin({n: v["weight"] for n, v in self.variants.items() if v["backends"]})
        self._replicas = {
            n: itertools.cycle(v["backends"]) for n, v in self.variants.items() if v["backends"]
        }
        self.shadow = _shadow_route(data, self.variants)
        live = {b for v in self.variants.values() for b in v["backends"]}
        self.down = {b: d for b, d in self.down.items() if b in live}
        #: Replicas that left the table in this reload: their kept connections are closed.
        self.gone = self.live - live
        self.live = live
        self._key = key

    def backend(self, variant: str) -> str:
        """The variant's next replica in turn, skipping replicas that are down (unless all are)."""
        replicas = self._replicas[variant]
        count = len(self.variants[variant]["backends"])
        now = time.monotonic()
        first = next(replicas)
        candidate = first
        for _ in range(count):
            until = self.down.get(candidate)
            if until is None or until[0] <= now:
                return candidate
            candidate = next(replicas)
        return first

    def mark_down(self, backend: str) -> None:
        """``backend`` did not take a connection: leave it out of rotation for a while."""
        previous = self.down.get(backend)
        pause = min(previous[1] * 2, _DOWN_MAX_SECONDS) if previous else _DOWN_SECONDS
        self.down[backend] = (time.monotonic() + pause, pause)

    def mark_up(self, backend: str) -> None:
        """``backend`` answered."""
        self.down.pop(backend, None)


class Router:
    """The ASGI app."""

    def __init__(self, routes: Path, *, max_body: int | None = None) -> None:
        self.table = RoutingTable(routes)
        self.samples: dict[str, deque[tuple[float, int, float]]] = {}
        #: httpx, for bodies streamed to a replica; a client set here by a test (ASGI apps
        #: mounted as replicas) carries every request instead of the pool.
        self._client: Any = None
        self._client_owned = False
        self._pool = _Pool()
        self.max_body = max_body_bytes() if max_body is None else max_body
        self.shadow_samples: dict[str, deque[ShadowSample]] = {}
        self.shadow_skipped: dict[str, deque[float]] = {}
        self._mirror_share: MirrorShare | None = None
        self._mirrors: set[asyncio.Task[None]] = set()

    async def _http(self) -> Any:
        if self._client is None:
            import httpx

            self._client = httpx.AsyncClient(
                timeout=httpx.Timeout(60.0, connect=5.0),
                limits=httpx.Limits(max_connections=256, max_keepalive_connections=64),
                trust_env=False,
            )
            self._client_owned = True
        return self._client

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    self._pool.close()
                    if self._client is not None:
                        await self._client.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        if scope["type"] != "http":
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            started = True
            await send(message)

        try:
            await self._http_request(scope, receive, tracked)
        except _ClientGone:
            return
        except Exception:
            # Whatever went wrong, the client gets JSON and no traceback; the log gets both.
            logger.exception("router: request %s %s failed", scope.get("method"), scope.get("path"))
            if not started:
                await _respond(send, 500, _error("router_error", "the router failed on this request"))

    async def _http_request(self, scope: Scope, receive: Receive, send: Send) -> None:
        self.table.refresh()
        if self.table.gone:
            for backend in self.table.gone:
                self._pool.forget(backend)
            self.table.gone = set()
        path, method = scope["path"], scope["method"]
        if path in PREDICT_PATHS and method == "POST":
            await self._forward(scope, receive, send)
        elif (path.startswith("/v2") and method in ("GET", "POST")) or (
            path == "/version" and method == "GET"
        ):
            # The Open Inference Protocol's routes and MLflow's /version, answered by a variant
            # as its own URL answers them; infer requests are split and counted as predictions.
            await self._forward(scope, receive, send, counted=method == "POST")
        elif path in ("/ping", "/health", "/") and method == "GET":
            await self._health(send)
        elif path == "/_mlshift/metrics" and method == "GET":
            await self._metrics(scope, send)
        elif path == "/_mlshift/shadow" and method == "GET":
            await self._shadow_metrics(scope, send)
        elif path == "/_mlshift/routes" and method == "GET":
            now = time.monotonic()
            down = sorted(b for b, (until, _) in self.table.down.items() if until > now)
            await _respond(send, 200, {"variants": list(self.table.variants.values()), "down": down})
        else:
            await _respond(send, 404, _error("not_found", f"no route {method} {path}; POST /invocations"))

    async def _health(self, send: Send) -> None:
        serving = [n for n, w in self.table.rr.weights.items() if w > 0]
        status = 200 if serving else 503
        await _respond(
            send, status, {"status": "ok" if serving else "no variant carries traffic", "serving": serving}
        )

    async def _window(self, scope: Scope, send: Send) -> float | None:
        """The ``window`` query parameter in seconds, or ``None`` after answering 400."""
        from urllib.parse import parse_qs

        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        text = query.get("window", ["60"])[0]
        try:
            window = float(text)
        except ValueError:
            window = math.nan
        if not math.isfinite(window) or window <= 0:
            await _respond(
                send,
                400,
                _error("invalid_window", f"window={text!r} is not a number of seconds", "e.g. ?window=60"),
            )
            return None
        return window

    async def _metrics(self, scope: Scope, send: Send) -> None:
        window = await self._window(scope, send)
        if window is None:
            return
        since = time.monotonic() - window
        out = {name: summarize(samples, since) for name, samples in self.samples.items()}
        await _respond(send, 200, {"window_seconds": window, "variants": out})

    async def _forward(self, scope: Scope, receive: Receive, send: Send, *, counted: bool = True) -> None:
        target: bytes | None = None
        forward: list[tuple[bytes, bytes]] = []
        for key, value in scope["headers"]:
            if key in _FORWARDED:
                forward.append((key, value))
            elif key == TARGET_HEADER and target is None:
                target = value
        if target is not None:
            try:
                name = target.decode()
            except UnicodeDecodeError:
                await _respond(
                    send, 400, _error("invalid_header", "X-Mlshift-Target-Variant is not UTF-8 text")
                )
                return
            if name not in self.table.variants or not self.table.variants[name]["backends"]:
                await _respond(send, 404, _error("unknown_variant", f"no variant {name!r}"))
                return
        else:
            if not self.table.rr:
                await _respond(
                    send, 503, {"error": {"code": "no_traffic", "message": "no variant carries traffic"}}
                )
                return
            # Reads (V2 metadata, /version) go to the variant with the most traffic and leave
            # the split's rotation alone.
            name = self.table.rr.pick() if counted else _heaviest(self.table.rr.weights)
        try:
            body = await self._body(scope, receive)
        except _TooLarge:
            await self._too_large(send)
            return
        streamed = not isinstance(body, bytes)
        method: str = scope["method"]
        path: str = scope["path"]
        if path in PREDICT_PATHS:
            upstream = b"/invocations"  # every model server answers it, whatever the cloud
        else:
            upstream = scope.get("raw_path") or path.encode()
            if scope.get("query_string"):
                upstream += b"?" + scope["query_string"]
        pooled = not streamed and (self._client is None or self._client_owned)
        for attempt in range(3):
            route = self.table.variants[name]
            backend = self.table.backend(name)
            start = time.perf_counter()
            try:
                if pooled:
                    assert isinstance(body, bytes)
                    status, passed, content = await self._pool.request(
                        backend, method, upstream, body, forward
                    )
                else:
                    status, passed, content = await self._httpx(backend, method, upstream, body, forward)
                failed = False
                self.table.mark_up(backend)
            except Exception as exc:  # any transport failure is this backend's failure
                if streamed and body.too_large:  # type: ignore[union-attr]
                    await self._too_large(send)
                    return
                if streamed and body.client_gone:  # type: ignore[union-attr]
                    return  # the client left: not the variant's failure, nobody to answer
                if _refused(exc):  # nothing listens there (a replica died)
                    self.table.mark_down(backend)
                    self._pool.forget(backend)
                logger.warning("router: %s (variant %s) did not answer: %r", backend, name, exc)
                status, passed, failed = 502, [(b"content-type", b"application/json")], True
                text = f"variant {name!r} did not answer"
                content = json.dumps({"error": {"code": "variant_unavailable", "message": text}}).encode()
            latency = (time.perf_counter() - start) * 1000
            if counted:
                self.samples.setdefault(name, deque(maxlen=_SAMPLES)).append(
                    (time.monotonic(), status, latency)
                )
            if not failed or target is not None or attempt == 2 or (streamed and body.started):  # type: ignore[union-attr]
                break
            # The request never reached a model (connection refused or reset while a variant was
            # being replaced): predictions are pure, so another try is safe. Re-read the table
            # first; the variant may have just been taken out of it.
            self.table.refresh()
            if not self.table.rr:
                break
            name = self.table.rr.pick() if counted else _heaviest(self.table.rr.weights)
        if not passed or passed[0][0] != b"content-type":
            passed = [(b"content-type", b"application/json"), *passed]
        await send(
            {
                "type": "http.response.start",
                "status": status,
                # Content-Length, not chunked: every answer is whole before it is sent, and
                # HTTP/1.1 clients that frame by length (load generators, keep-alive pools)
                # can then read it without parsing chunks.
                "headers": [
                    *passed,
                    (b"content-length", str(len(content)).encode()),
                    (b"x-mlshift-variant", name.encode()),
                    (b"x-mlshift-model", str(route.get("model", "")).encode()),
                ],
            }
        )
        await send({"type": "http.response.body", "body": content})
        if counted and target is None and isinstance(body, bytes):  # a streamed body was never held
            self._maybe_mirror(name, upstream, body, forward, status, content, latency)

    async def _httpx(
        self,
        backend: str,
        method: str,
        target: bytes,
        body: bytes | _Stream,
        headers: list[tuple[bytes, bytes]],
    ) -> tuple[int, list[tuple[bytes, bytes]], bytes]:
        """One request through httpx: for streamed bodies (and ASGI replicas in tests)."""
        client = await self._http()
        resp = await client.request(
            method,
            backend + target.decode("latin-1"),
            content=body,
            headers={k.decode("latin-1"): v.decode("latin-1") for k, v in headers},
        )
        passed = [(b"content-type", resp.headers.get("content-type", "application/json").encode("latin-1"))]
        for name in _PASSED_BACK:
            value = resp.headers.get(name.decode())
            if value is not None:
                passed.append((name, value.encode("latin-1")))
        return resp.status_code, passed, resp.content

    # ---------------------------------------------------------------- shadow traffic

    def _maybe_mirror(
        self,
        served_by: str,
        path: bytes,
        body: bytes,
        headers: list[tuple[bytes, bytes]],
        status: int,
        answer: bytes,
        latency: float,
    ) -> None:
        """Copy an answered request to the shadow variant, in the background (the caller has
        its answer already, so nothing here can slow or fail it)."""
        shadow = self.table.shadow
        if shadow is None or served_by == shadow["variant"] or status >= 500:
            return
        if self._mirror_share is None or self._mirror_share.percent != shadow["percent"]:
            self._mirror_share = MirrorShare(shadow["percent"])
        if not self._mirror_share.pick():
            return
        name = shadow["variant"]
        if len(self._mirrors) >= _MAX_MIRRORS:
            self.shadow_skipped.setdefault(name, deque(maxlen=_SAMPLES)).append(time.monotonic())
            return
        task = asyncio.ensure_future(
            self._mirror(
                name, float(shadow.get("tolerance", 0.01)), path, body, headers, status, answer, latency
            )
        )
        self._mirrors.add(task)
        task.add_done_callback(self._mirrors.discard)

    async def _mirror(
        self,
        name: str,
        tolerance: float,
        path: bytes,
        body: bytes,
        headers: list[tuple[bytes, bytes]],
        served_status: int,
        served_answer: bytes,
        served_latency: float,
    ) -> None:
        begun = time.monotonic()
        start = time.perf_counter()
        try:
            # The same keep-alive pool as the callers' requests: a mirror through httpx cost
            # the router several times a forwarded request's CPU, which the callers paid for
            # on a busy machine (bench/shadow.py).
            if self._client is None or self._client_owned:
                status, _, content = await self._pool.request(
                    self.table.backend(name), "POST", path, body, headers
                )
            else:
                status, _, content = await self._httpx(self.table.backend(name), "POST", path, body, headers)
        except Exception:  # a shadow that cannot answer is a failed shadow request, nothing more
            status, content = 599, b""
        latency = (time.perf_counter() - start) * 1000
        sample = ShadowSample.compared(
            begun, status, latency, content, served_status, served_latency, served_answer, tolerance
        )
        self.shadow_samples.setdefault(name, deque(maxlen=_SAMPLES)).append(sample)

    async def _shadow_metrics(self, scope: Scope, send: Send) -> None:
        window = await self._window(scope, send)
        if window is None:
            return
        since = time.monotonic() - window
        names = set(self.shadow_samples) | set(self.shadow_skipped)
        out = {
            n: summarize_shadow(self.shadow_samples.get(n, ()), self.shadow_skipped.get(n, ()), since)
            for n in names
        }
        await _respond(send, 200, {"window_seconds": window, "variants": out})

    async def _too_large(self, send: Send) -> None:
        await _respond(
            send,
            413,
            _error(
                "payload_too_large",
                f"the request body is larger than {self.max_body // _MB} MB",
                "split the batch into smaller requests",
            ),
        )

    async def _body(self, scope: Scope, receive: Receive) -> bytes | _Stream:
        """The whole body when it is small, else a stream of it; never more than the limit.

        Raises:
            _TooLarge: when Content-Length, or what was read, is over the limit.
            _ClientGone: if the client disconnects first.
        """
        for name, value in scope["headers"]:
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body:
                raise _TooLarge
        buffered = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                raise _ClientGone
            buffered += message.get("body", b"")
            if len(buffered) > self.max_body:
                raise _TooLarge
            if not message.get("more_body"):
                return bytes(buffered)
            if len(buffered) > BUFFER_BYTES:
                return _Stream(bytes(buffered), receive, self.max_body)


class _Stream:
    """The rest of a large request body, passed on to the variant chunk by chunk."""

    def __init__(self, first: bytes, receive: Receive, limit: int) -> None:
        self.first = first
        self.receive = receive
        self.limit = limit
        self.started = False
        self.too_large = False
        self.client_gone = False

    def __aiter__(self) -> AsyncIterator[bytes]:
        return self._chunks()

    async def _chunks(self) -> AsyncIterator[bytes]:
        self.started = True
        size = len(self.first)
        first, self.first = self.first, b""
        yield first
        while True:
            message = await self.receive()
            if message["type"] == "http.disconnect":
                self.client_gone = True
                raise _ClientGone
            chunk: bytes = message.get("body", b"")
            size += len(chunk)
            if size > self.limit:
                self.too_large = True
                raise _TooLarge
            yield chunk
            if not message.get("more_body"):
                return


def _heaviest(weights: dict[str, int]) -> str:
    """The variant with the most traffic (the first of equals)."""
    return max(weights, key=lambda n: weights[n])


def _refused(exc: BaseException) -> bool:
    """Whether nothing took the connection (the replica is gone), as opposed to a failed answer."""
    if isinstance(exc, _UpstreamError):
        return exc.refused
    import httpx

    return isinstance(exc, httpx.ConnectError)


def _shadow_route(data: dict[str, Any], variants: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The routing file's ``shadow`` entry, when it names a variant that has servers."""
    shadow = data.get("shadow")
    if not isinstance(shadow, dict) or not shadow.get("percent"):
        return None
    variant = variants.get(shadow.get("variant", ""))
    return shadow if variant is not None and variant["backends"] else None


async def _respond(send: Send, status: int, payload: Any) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def main(argv: list[str] | None = None) -> int:
    import uvicorn

    parser = argparse.ArgumentParser(prog="python -m mlshift.local._router")
    parser.add_argument("--routes", required=True, type=Path)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--port-file", type=Path, required=True)
    args = parser.parse_args(argv)

    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((args.host, args.port))
    except OSError as exc:
        print(f"mlshift router: cannot bind {args.host}:{args.port}: {exc.strerror}", file=sys.stderr)
        return 2
    sock.listen(1024)
    port = sock.getsockname()[1]

    try:
        import uvloop

        loop = "uvloop"
    except ImportError:
        loop = "asyncio"
    config = uvicorn.Config(
        Router(args.routes), loop=loop, access_log=False, log_level="warning", lifespan="on"
    )
    server = uvicorn.Server(config)

    async def announce() -> None:
        while not server.started:
            await asyncio.sleep(0.005)
        tmp = args.port_file.with_suffix(".tmp")
        tmp.write_text(str(port))
        os.replace(tmp, args.port_file)

    async def run() -> None:
        task = asyncio.ensure_future(announce())
        await server.serve(sockets=[sock])
        task.cancel()

    if loop == "uvloop":
        import uvloop

        uvloop.run(run())
    else:
        asyncio.run(run())
    return 0


if __name__ == "__main__":
    sys.exit(main())
