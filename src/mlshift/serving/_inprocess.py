"""Calling the model server in-process: no socket, no port, the real ASGI app."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Mapping
from typing import Any

__all__ = ["InProcessCaller"]


class InProcessCaller:
    """Sends ``POST /invocations`` to ASGI apps on an event loop of its own, in a daemon thread.

    Fake targets (``memory://``, the SageMaker testing kit) answer predictions with the real
    model server this way. The loop lives in its own thread so calls work the same from scripts
    and from notebooks, which already run a loop in the main thread.
    """

    def __init__(self, name: str = "mlshift-inprocess", server: tuple[str, int] = ("inprocess", 80)) -> None:
        self._name = name
        self._server = server
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name=self._name, daemon=True).start()
                self._loop = loop
            return self._loop

    def call(
        self,
        app: Any,
        body: bytes,
        content_type: str = "application/json",
        accept: str = "application/json",
        timeout: float = 60.0,
        request_headers: Mapping[str, str] | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        """``POST /invocations`` on ``app``: the status, headers (lower-case) and body.

        ``request_headers`` are more headers to send (``x-request-id``).
        """
        sent = [
            (k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in (request_headers or {}).items()
        ]

        async def run() -> tuple[int, dict[str, str], bytes]:
            incoming = [{"type": "http.request", "body": body, "more_body": False}]
            status, headers, chunks = 500, {}, []

            async def receive() -> dict[str, Any]:
                return incoming.pop(0) if incoming else {"type": "http.disconnect"}

            async def send(message: dict[str, Any]) -> None:
                nonlocal status
                if message["type"] == "http.response.start":
                    status = message["status"]
                    headers.update({k.decode(): v.decode() for k, v in message.get("headers", [])})
                elif message["type"] == "http.response.body":
                    chunks.append(message.get("body", b""))

            scope = {
                "type": "http",
                "asgi": {"version": "3.0"},
                "http_version": "1.1",
                "method": "POST",
                "scheme": "http",
                "path": "/invocations",
                "raw_path": b"/invocations",
                "query_string": b"",
                "root_path": "",
                "headers": [
                    (b"content-type", content_type.encode()),
                    (b"accept", accept.encode()),
                    (b"content-length", str(len(body)).encode()),
                    *sent,
                ],
                "client": ("127.0.0.1", 0),
                "server": self._server,
            }
            await app(scope, receive, send)
            return status, headers, b"".join(chunks)

        return asyncio.run_coroutine_threadsafe(run(), self._event_loop()).result(timeout=timeout)

    def close(self) -> None:
        """Stop the loop (a later call starts a new one)."""
        with self._lock:
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._loop = None
