"""The mlshift model server, run in-process, answering the fake's ``InvokeEndpoint`` calls.

Each SageMaker model of the fake gets the real model server app (``mlshift.serving``) loaded
from the artifact in moto's S3, so ``predict`` against the fake returns real predictions, and a
bad payload gets the server's real 400 answer. The apps run on one event loop in a daemon
thread, so invoking works the same from scripts, tests and notebooks (which already run a loop).
"""

from __future__ import annotations

import asyncio
import shutil
import tempfile
import threading
import weakref
from pathlib import Path
from typing import Any

__all__ = ["InProcessServer"]


class InProcessServer:
    """Model server apps by key, and one event loop to call them on."""

    def __init__(self) -> None:
        self._apps: dict[str, Any] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._lock = threading.Lock()
        self.folder = Path(tempfile.mkdtemp(prefix="mlshift-fake-sagemaker-"))
        weakref.finalize(self, shutil.rmtree, self.folder, True)

    def app(self, key: str, build: Any) -> Any:
        """The app for ``key``, built by ``build(folder)`` on first use."""
        with self._lock:
            found = self._apps.get(key)
            if found is None:
                folder = self.folder / key
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir(parents=True)
                found = build(folder)
                self._apps[key] = found
            return found

    def _event_loop(self) -> asyncio.AbstractEventLoop:
        with self._lock:
            if self._loop is None:
                loop = asyncio.new_event_loop()
                threading.Thread(target=loop.run_forever, name="mlshift-fake-sagemaker", daemon=True).start()
                self._loop = loop
            return self._loop

    def call(
        self, app: Any, body: bytes, content_type: str, accept: str
    ) -> tuple[int, dict[str, str], bytes]:
        """``POST /invocations`` on ``app``: status, headers, body."""

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
                ],
                "client": ("127.0.0.1", 0),
                "server": ("sagemaker", 8080),
            }
            await app(scope, receive, send)
            return status, headers, b"".join(chunks)

        return asyncio.run_coroutine_threadsafe(run(), self._event_loop()).result(timeout=60)

    def close(self) -> None:
        """Stop the loop and forget the apps (and their temporary folder)."""
        with self._lock:
            self._apps.clear()
            if self._loop is not None:
                self._loop.call_soon_threadsafe(self._loop.stop)
                self._loop = None
        shutil.rmtree(self.folder, ignore_errors=True)
