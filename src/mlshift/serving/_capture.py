"""Request capture: a sample of prediction requests and answers, written to JSON-lines files.

The model server wraps its prediction route with :func:`capture_predictions`. A sampled
request costs the caller one random draw, two list appends and a non-blocking queue put; a
background thread writes the body and the answer as they were sent (nothing is parsed
again). When the queue is full the record is dropped and counted: capture never slows or
fails a prediction.

Layout under the capture folder of one endpoint (``<state>/capture/<endpoint>/`` on the local
target)::

    capture.json                          the settings (sample_rate, max_file_mb, queue_size)
    data/YYYY-MM-DD/HH/<variant>-<pid>-<n>.jsonl   one JSON object per captured request
    stats/<variant>-<pid>.json            captured, dropped and failed counts of one server

Each record: ``request_id``, ``endpoint``, ``variant``, ``model`` (``name:version``),
``timestamp`` (ISO 8601, UTC), ``columns`` (the signature's names, when known),
``content_type``, ``request`` (the body as sent: embedded when JSON, else a string) and
``response`` (the answer, likewise); :func:`decode_record` turns one into rows and predictions.
Files roll over every hour and past ``max_file_mb``.
"""

from __future__ import annotations

import atexit
import json
import logging
import os
import queue
import random
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar, cast

from mlshift.specs.model import Signature

__all__ = [
    "CAPTURE_DIR_ENV",
    "CONFIG_FILE",
    "ENDPOINT_ENV",
    "REQUEST_ID_HEADER",
    "CaptureWriter",
    "capture_files",
    "capture_predictions",
    "write_capture_config",
]

logger = logging.getLogger("mlshift.serving.capture")

#: The capture folder of the endpoint this server belongs to (set by ``--capture-dir``).
CAPTURE_DIR_ENV = "MLSHIFT_CAPTURE_DIR"
#: The endpoint's name, written into every record.
ENDPOINT_ENV = "MLSHIFT_ENDPOINT"
CONFIG_FILE = "capture.json"
#: A caller's own request id is kept (to join ground-truth labels later); a captured answer
#: carries the id it was recorded under in this header.
REQUEST_ID_HEADER = "x-request-id"
_ID_HEADER_BYTES = REQUEST_ID_HEADER.encode("latin-1")
#: Bodies larger than this are not captured (counted as dropped): capture is for monitoring
#: traffic, not for archiving bulk batch jobs.
MAX_CAPTURED_BODY = 4 * 1024 * 1024
#: How often the writer thread re-reads the settings and writes its counts.
_TICK = 0.5
#: How often it writes what was queued.
_DRAIN = 0.05

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def write_capture_config(folder: Path, settings: dict[str, Any] | None) -> None:
    """Write (or, with ``None``, remove) the capture settings servers read from ``folder``.

    Servers notice the change within a second, without a restart.
    """
    path = folder / CONFIG_FILE
    if settings is None:
        path.unlink(missing_ok=True)
        return
    folder.mkdir(parents=True, exist_ok=True)
    tmp = folder / (CONFIG_FILE + ".tmp")
    tmp.write_text(json.dumps(settings, sort_keys=True))
    os.replace(tmp, path)


def read_capture_config(folder: Path) -> dict[str, Any] | None:
    """The settings in ``folder`` (``None``: capture is off)."""
    try:
        data = json.loads((folder / CONFIG_FILE).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


def capture_files(folder: Path) -> Iterator[Path]:
    """Every capture file under ``folder``, oldest hour first."""
    data = folder / "data"
    if not data.is_dir():
        return
    for day in sorted(p for p in data.iterdir() if p.is_dir()):
        for hour in sorted(p for p in day.iterdir() if p.is_dir()):
            yield from sorted(hour.glob("*.jsonl"))


@dataclass
class _Pending:
    request_id: str
    timestamp: float
    content_type: str
    body: bytes
    response: bytes


class CaptureWriter:
    """Samples requests on the event loop and writes them from a background thread.

    Attributes:
        captured: Records written.
        dropped: Records not written because the queue was full or the body too large.
        failed: Records whose body could not be decoded or written.
    """

    def __init__(
        self,
        folder: Path,
        *,
        endpoint: str,
        variant: str | None,
        model_ref: str | None,
        signature: Signature | None,
    ) -> None:
        self.folder = folder
        self.endpoint = endpoint
        self.variant = variant or "default"
        self.model_ref = model_ref
        self.signature = signature
        self.columns = list(signature.column_names) if signature and signature.column_names else None
        self.rate = 0.0
        self.max_bytes = 16 * 1024 * 1024
        self.queue: queue.Queue[_Pending] = queue.Queue(maxsize=10_000)
        self.captured = self.dropped = self.failed = 0
        self._config_mtime: float | None = None
        self._file: Any = None
        self._file_hour = ""
        self._file_size = 0
        self._sequence = 0
        self._stop = threading.Event()
        self._reload()
        self._thread = threading.Thread(target=self._run, name="mlshift-capture", daemon=True)
        self._thread.start()
        atexit.register(self.close)

    # ------------------------------------------------------------------ on the event loop

    def wrap(self, app: ASGIApp) -> ASGIApp:
        """``app`` with a sample of its requests recorded."""
        return _CapturedApp(app, self)

    def offer(self, request_id: str, content_type: str, body: bytes, response: bytes) -> None:
        """Queue one answered request for writing, or count it dropped (never blocks)."""
        if len(body) > MAX_CAPTURED_BODY:
            self.dropped += 1
            return
        try:
            self.queue.put_nowait(_Pending(request_id, time.time(), content_type, body, response))
        except queue.Full:
            self.dropped += 1

    # ------------------------------------------------------------------ in the writer thread

    def _reload(self) -> None:
        try:
            mtime = (self.folder / CONFIG_FILE).stat().st_mtime
        except OSError:
            mtime = None
        if mtime == self._config_mtime:
            return
        self._config_mtime = mtime
        settings = read_capture_config(self.folder) or {}
        self.rate = float(settings.get("sample_rate", 0.0)) if settings else 0.0
        self.max_bytes = int(float(settings.get("max_file_mb", 16.0)) * 1024 * 1024)
        size = int(settings.get("queue_size", 10_000))
        if size != self.queue.maxsize:
            self.queue.maxsize = size  # queue.Queue reads maxsize on each put

    def _run(self) -> None:
        next_tick = time.monotonic() + _TICK
        while not self._stop.wait(_DRAIN):
            self._drain()
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + _TICK
                self._reload()
                self._write_stats()
        self._drain()

    def _drain(self) -> None:
        # Woken on a timer, not by each put: a thread woken per request would take the GIL
        # from the event loop once per request, which costs serving more than the writing.
        wrote = False
        while True:
            try:
                item = self.queue.get_nowait()
            except queue.Empty:
                break
            self._write(item)
            wrote = True
        if wrote:
            self._flush()

    def _record(self, item: _Pending) -> bytes:
        """One JSON line, the request and answer embedded as they were sent (JSON) or as text.

        Nothing is parsed here: the server already checked the body, and decoding it again
        would cost the serving process CPU; readers decode records when a monitor runs.
        """
        header = {
            "request_id": item.request_id,
            "endpoint": self.endpoint,
            "variant": self.variant,
            "model": self.model_ref,
            "timestamp": datetime.fromtimestamp(item.timestamp, timezone.utc).isoformat(),
            "columns": self.columns,
            "content_type": item.content_type or "application/json",
        }
        return b"".join(
            (
                json.dumps(header)[:-1].encode(),
                b', "request": ',
                _embedded(item.body, item.content_type),
                b', "response": ',
                _embedded(item.response, "application/json"),
                b"}\n",
            )
        )

    def _write(self, item: _Pending) -> None:
        try:
            line = self._record(item)
            hour = datetime.fromtimestamp(item.timestamp, timezone.utc).strftime("%Y-%m-%d/%H")
            if self._file is None or hour != self._file_hour or self._file_size >= self.max_bytes:
                self._open(hour)
            self._file.write(line)
            self._file_size += len(line)
            self.captured += 1
        except Exception:
            self.failed += 1
            logger.warning("a request could not be captured", exc_info=True)

    def _open(self, hour: str) -> None:
        if self._file is not None:
            self._file.close()
        folder = self.folder / "data" / hour
        folder.mkdir(parents=True, exist_ok=True)
        self._sequence += 1
        path = folder / f"{self.variant}-{os.getpid()}-{self._sequence}.jsonl"
        self._file = open(path, "ab")  # noqa: SIM115 - kept open across records
        self._file_hour, self._file_size = hour, 0

    def _flush(self) -> None:
        if self._file is not None:
            self._file.flush()

    def _write_stats(self) -> None:
        if not (self.captured or self.dropped or self.failed):
            return
        stats = self.folder / "stats"
        try:
            stats.mkdir(parents=True, exist_ok=True)
            path = stats / f"{self.variant}-{os.getpid()}.json"
            tmp = path.with_suffix(".tmp")
            tmp.write_text(
                json.dumps({"captured": self.captured, "dropped": self.dropped, "failed": self.failed})
            )
            os.replace(tmp, path)
        except OSError:
            pass

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (for at most ``timeout`` seconds) and stop the thread."""
        deadline = time.monotonic() + timeout
        while not self.queue.empty() and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.01)
        self._stop.set()
        self._thread.join(timeout=max(0.0, deadline - time.monotonic()) + _TICK)
        self._flush()
        self._write_stats()


class _CapturedApp:
    """An ASGI app that tees a sample of requests and answers into a :class:`CaptureWriter`.

    A class, not a function: Starlette treats a plain function as a request handler.
    """

    def __init__(self, app: ASGIApp, writer: CaptureWriter) -> None:
        self.app = app
        self.writer = writer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rate = self.writer.rate
        if rate <= 0.0 or (rate < 1.0 and random.random() >= rate):
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        answer: list[bytes] = []
        status = [0]
        request_id = ""
        content_type = ""
        for key, value in scope["headers"]:
            if key == _ID_HEADER_BYTES:
                request_id = value.decode("latin-1")[:128]
            elif key == b"content-type":
                content_type = value.decode("latin-1")
        request_id = request_id or uuid.uuid4().hex

        async def tee_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
            return message

        async def tee_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                status[0] = message["status"]
                message["headers"] = [
                    *message.get("headers", ()),
                    (_ID_HEADER_BYTES, request_id.encode("latin-1")),
                ]
            elif message["type"] == "http.response.body":
                answer.append(message.get("body", b""))
            await send(message)

        await self.app(scope, tee_receive, tee_send)
        if status[0] == 200:  # refused or failed requests are not answers the model gave
            body = chunks[0] if len(chunks) == 1 else b"".join(chunks)
            self.writer.offer(
                request_id, content_type, body, answer[0] if len(answer) == 1 else b"".join(answer)
            )


def _embedded(body: bytes, content_type: str) -> bytes:
    """``body`` as a JSON value on one line: itself when it is JSON, else a JSON string."""
    media = content_type.split(";", 1)[0].strip().lower()
    stripped = body.strip()
    if (not media or media == "application/json") and stripped[:1] in (b"{", b"["):
        # Valid JSON (the server parsed it) has no raw line breaks inside strings, so line
        # breaks between tokens can become spaces: one record stays one line.
        return stripped.replace(b"\r", b" ").replace(b"\n", b" ")
    return json.dumps(body.decode("utf-8", "replace")).encode()


def decode_record(
    record: dict[str, Any], signature: Signature | None = None
) -> tuple[list[list[Any]], list[Any]]:
    """The input rows and the predictions of one captured record.

    Raises:
        InvalidPayload: a request body the model server's parsers do not read.
    """
    from mlshift.serving._payload import parse_csv, parse_json

    request = record.get("request")
    media = str(record.get("content_type", "")).split(";", 1)[0].strip().lower()
    if media in ("text/csv", "application/csv") and isinstance(request, str):
        batch = parse_csv(request.encode(), signature)
        rows = [[_number(v) for v in row] for row in batch.rows]
    else:
        text = request if isinstance(request, str) else json.dumps(request)
        batch = parse_json(text.encode(), signature)
        rows = batch.array.tolist() if batch.array is not None else [list(r) for r in batch.rows]
    response = record.get("response")
    outputs = response.get("predictions") if isinstance(response, dict) else None
    if not isinstance(outputs, list) or len(outputs) != len(rows):
        outputs = [None] * len(rows)
    return rows, outputs


def _number(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


_App = TypeVar("_App")


def capture_predictions(
    app: _App,
    *,
    variant: str | None,
    model_ref: str | None,
    signature: Signature | None,
    environ: MutableMapping[str, str] | None = None,
) -> _App:
    """``app`` with capture, when ``MLSHIFT_CAPTURE_DIR`` names a capture folder; else ``app``.

    The folder's ``capture.json`` turns capture on, off or changes its rate while the server
    runs; without the variable nothing is wrapped and predictions cost nothing more.
    """
    env = os.environ if environ is None else environ
    folder = env.get(CAPTURE_DIR_ENV, "").strip()
    if not folder:
        return app
    writer = CaptureWriter(
        Path(folder),
        endpoint=env.get(ENDPOINT_ENV, "") or "default",
        variant=variant,
        model_ref=model_ref,
        signature=signature,
    )
    # The same ASGI interface as ``app``: what the caller routes to is unchanged.
    return cast("_App", writer.wrap(cast(ASGIApp, app)))
