"""Request capture: a sample of prediction requests and answers, written to JSON-lines files.

The model server wraps its prediction routes (and the Open Inference Protocol's ``/v2``
infer routes) with a :class:`CaptureWriter`. A sampled request costs the caller one random
draw, a scan of its headers and an append of references to the bytes the server already holds
(body, answer, headers, the time) to a deque; a background thread builds the records and
writes them, about 256 KB per system call (nothing is parsed again). When the queue is full
the record is dropped and counted: capture never slows or fails a prediction.

Layout under the capture folder of one endpoint (``<state>/capture/<endpoint>/`` on the local
target)::

    capture.json                          the settings (sample_rate, max_file_mb, queue_size)
    data/YYYY-MM-DD/HH/<variant>-<pid>-<n>.jsonl   one JSON object per captured request
    stats/<variant>-<pid>.json            captured, dropped and failed counts of one server

Each record: ``request_id``, ``endpoint``, ``variant``, ``model`` (``name:version``),
``timestamp`` (ISO 8601, UTC, microseconds), ``columns`` (the signature's names, when known),
``content_type``, ``request`` (the body as sent: embedded when JSON, else a string) and
``response`` (the answer, likewise). A ``/v2`` record adds ``"protocol": "v2"`` and, for binary
tensor data, ``request_binary`` / ``response_binary`` (base64). :func:`decode_record` turns
one into rows and predictions. Files roll over every hour and past ``max_file_mb``.
"""

from __future__ import annotations

import atexit
import base64
import json
import logging
import os
import random
import re
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
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
    "capture_writer",
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


# For an Open Inference Protocol request: the length of the JSON part of the body and of the
# answer (their ``Inference-Header-Content-Length``; ``None`` when all JSON).
_V2Parts = tuple[bytes | None, bytes | None]
# One answered request waiting to be written: (request id, epoch seconds, content type, body,
# answer, protocol parts). References to what the server already holds, nothing decoded.
_Pending = tuple[bytes, float, bytes, bytes, bytes, _V2Parts | None]

_SAFE_ID = re.compile(rb"[A-Za-z0-9._:/+=@-]*")
_JSON_START = re.compile(rb"[ \t\r\n]*[\[{]")
_HEADER_LENGTH = b"inference-header-content-length"


class CaptureWriter:
    """Samples requests on the event loop and writes them from a background thread.

    Attributes:
        captured: Records written.
        dropped: Records not written because the queue was full or the body too large.
        failed: Records whose body could not be decoded or written.
        limit: The most records waiting to be written (``queue_size``); more are dropped.
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
        # A deque, not a queue.Queue: append and popleft are atomic in CPython, so the caller's
        # path takes no lock and wakes no thread.
        self._pending: deque[_Pending] = deque()
        self.limit = 10_000
        self.captured = self.dropped = self.failed = 0
        # Every record's fields that do not change, encoded once.
        endpoint_, variant_, model_ = (json.dumps(v) for v in (self.endpoint, self.variant, model_ref))
        self._after_id = (
            f', "endpoint": {endpoint_}, "variant": {variant_}, "model": {model_}, "timestamp": "'
        ).encode()
        self._after_time = f'", "columns": {json.dumps(self.columns)}, "content_type": '.encode()
        self._media: dict[bytes, tuple[bytes, bool]] = {}
        self._second = -1
        self._second_text = b""
        self._second_hour = ""
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

    @property
    def pending(self) -> int:
        """Records waiting to be written."""
        return len(self._pending)

    # ------------------------------------------------------------------ on the event loop

    def wrap(self, app: ASGIApp, *, protocol: str | None = None) -> ASGIApp:
        """``app`` with a sample of its requests recorded.

        Args:
            protocol: ``"v2"`` for the Open Inference Protocol's infer routes (their records
                say so, and keep binary tensor data).
        """
        return _CapturedApp(app, self, v2=protocol == "v2")

    def offer(
        self,
        request_id: bytes,
        content_type: bytes,
        body: bytes,
        response: bytes,
        v2: _V2Parts | None = None,
    ) -> None:
        """Queue one answered request for writing, or count it dropped (never blocks)."""
        if len(body) > MAX_CAPTURED_BODY or len(self._pending) >= self.limit:
            self.dropped += 1
            return
        self._pending.append((request_id, time.time(), content_type, body, response, v2))

    # ------------------------------------------------------------------ in the writer thread

    def _reload(self) -> bool:
        """Re-read the settings when their file changed; whether it had."""
        try:
            mtime = (self.folder / CONFIG_FILE).stat().st_mtime
        except OSError:
            mtime = None
        if mtime == self._config_mtime:
            return False
        self._config_mtime = mtime
        settings = read_capture_config(self.folder) or {}
        self.rate = float(settings.get("sample_rate", 0.0)) if settings else 0.0
        self.max_bytes = int(float(settings.get("max_file_mb", 16.0)) * 1024 * 1024)
        self.limit = int(settings.get("queue_size", 10_000))
        return True

    def _run(self) -> None:
        self._write_stats(force=True)
        next_tick = time.monotonic() + _TICK
        while not self._stop.wait(_DRAIN):
            self._drain()
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + _TICK
                # The stats say which rate is in force, as soon as it is (benchmarks wait on it).
                self._write_stats(force=self._reload())
        self._drain()

    def _drain(self) -> None:
        # Woken on a timer, not by each request: a thread woken per request would take the GIL
        # from the event loop once per request, which costs serving more than the writing.
        # Records are written a few at a time with writev (no copy into one buffer): about
        # 256 KB per call, which costs the kernel less per byte than one call per record or
        # than megabytes at once (measured: bench/capture.py).
        pending = self._pending
        count = len(pending)
        if not count:
            return
        parts: list[bytes] = []
        size = 0
        for _ in range(count):
            item = pending.popleft()
            try:
                pieces, hour = self._record(item)
            except Exception:
                self.failed += 1
                logger.warning("a request could not be captured", exc_info=True)
                continue
            length = sum(map(len, pieces)) + 1
            if self._file is None or hour != self._file_hour or self._file_size >= self.max_bytes:
                self._write(parts)
                parts, size = [], 0
                try:
                    self._open(hour)
                except OSError:
                    self.failed += 1
                    logger.warning("a capture file could not be opened", exc_info=True)
                    continue
            parts += pieces
            parts.append(b"\n")
            size += length
            self._file_size += length
            self.captured += 1
            if size >= _WRITE_BYTES or len(parts) >= _IOV_MAX - _MAX_PIECES:
                self._write(parts)
                parts, size = [], 0
        self._write(parts)

    def _write(self, parts: list[bytes]) -> None:
        """Append ``parts`` (whole records, at most ``_IOV_MAX``) to the open file."""
        if not parts or self._file is None:
            return
        fd = self._file.fileno()
        try:
            done = _writev(fd, parts) if _writev is not None else 0
            if done < sum(map(len, parts)):  # no writev, or a short write: the rest in one go
                rest = b"".join(parts)[done:]
                while rest:
                    rest = rest[os.write(fd, rest) :]
        except OSError:
            lost = parts.count(b"\n")
            self.failed += lost
            self.captured -= lost
            logger.warning("captured requests could not be written", exc_info=True)

    def _timestamp(self, stamp: float) -> tuple[bytes, str]:
        """ISO 8601 (UTC, microseconds) and the ``YYYY-MM-DD/HH`` folder of ``stamp``.

        The calendar part is formatted once per second, not once per record.
        """
        second = int(stamp)
        if second != self._second:
            moment = time.gmtime(second)
            self._second = second
            self._second_text = time.strftime("%Y-%m-%dT%H:%M:%S", moment).encode()
            self._second_hour = time.strftime("%Y-%m-%d/%H", moment)
        micros = min(int((stamp - second) * 1_000_000), 999_999)
        return b"%s.%06d+00:00" % (self._second_text, micros), self._second_hour

    def _content_type(self, raw: bytes) -> tuple[bytes, bool]:
        """The content type as a JSON string, and whether the body may be JSON."""
        known = self._media.get(raw)
        if known is None:
            text = raw.decode("latin-1") or "application/json"
            media = text.split(";", 1)[0].strip().lower()
            known = (json.dumps(text).encode(), media in ("", "application/json"))
            if len(self._media) < 64:  # a bound: clients choose these strings
                self._media[raw] = known
        return known

    def _record(self, item: _Pending) -> tuple[list[bytes], str]:
        """One record as pieces of a JSON line (without its line break), and its hour folder.

        The request and answer are embedded as they were sent (JSON) or as text: nothing is
        parsed here, the server already checked the body; readers decode records when a
        monitor runs.
        """
        request_id, stamp, content_type, body, response, v2 = item
        if _SAFE_ID.fullmatch(request_id):
            quoted_id = b'"' + request_id + b'"'
        else:
            quoted_id = json.dumps(request_id.decode("latin-1")).encode()
        when, hour = self._timestamp(stamp)
        media, maybe_json = self._content_type(content_type)
        pieces = [b'{"request_id": ', quoted_id, self._after_id, when, self._after_time, media]
        if v2 is None:
            pieces += [
                b', "request": ',
                _embedded(body, maybe_json),
                b', "response": ',
                _embedded(response, True),
                b"}",
            ]
            return pieces, hour
        request_part, request_binary = _split(body, v2[0])
        response_part, response_binary = _split(response, v2[1])
        pieces += [b', "protocol": "v2", "request": ', _embedded(request_part, True)]
        if request_binary:
            pieces += [b', "request_binary": "', base64.b64encode(request_binary), b'"']
        pieces += [b', "response": ', _embedded(response_part, True)]
        if response_binary:
            pieces += [b', "response_binary": "', base64.b64encode(response_binary), b'"']
        pieces.append(b"}")
        return pieces, hour

    def _open(self, hour: str) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None
        folder = self.folder / "data" / hour
        folder.mkdir(parents=True, exist_ok=True)
        self._sequence += 1
        path = folder / f"{self.variant}-{os.getpid()}-{self._sequence}.jsonl"
        # Unbuffered: each batch is one writev of the records' pieces, without a copy.
        self._file = open(path, "ab", buffering=0)  # noqa: SIM115 - kept open across records
        self._file_hour, self._file_size = hour, 0

    def _write_stats(self, *, force: bool = False) -> None:
        if not (force or self.captured or self.dropped or self.failed):
            return
        stats = self.folder / "stats"
        try:
            stats.mkdir(parents=True, exist_ok=True)
            path = stats / f"{self.variant}-{os.getpid()}.json"
            tmp = path.with_suffix(".tmp")
            tmp.write_text(
                json.dumps(
                    {
                        "captured": self.captured,
                        "dropped": self.dropped,
                        "failed": self.failed,
                        "sample_rate": self.rate,
                    }
                )
            )
            os.replace(tmp, path)
        except OSError:
            pass

    def close(self, timeout: float = 5.0) -> None:
        """Write what is queued (for at most ``timeout`` seconds) and stop the thread."""
        deadline = time.monotonic() + timeout
        while self._pending and time.monotonic() < deadline and self._thread.is_alive():
            time.sleep(0.01)
        self._stop.set()
        self._thread.join(timeout=max(0.0, deadline - time.monotonic()) + _TICK)
        self._write_stats()


_writev = getattr(os, "writev", None)
#: At most this many buffers per writev (Linux has 1024).
_IOV_MAX = min(os.sysconf("SC_IOV_MAX"), 1024) if hasattr(os, "sysconf") else 1024
#: The most pieces one record is made of (a /v2 record with binary data both ways).
_MAX_PIECES = 32
#: Records are written once this many bytes are gathered.
_WRITE_BYTES = 256 * 1024


def _split(body: bytes, header_length: bytes | None) -> tuple[bytes, bytes]:
    """A protocol body's JSON part and its binary tensor data."""
    if header_length is None or not header_length.isdigit():
        return body, b""
    split = int(header_length)
    return body[:split], body[split:]


class _CapturedApp:
    """An ASGI app that tees a sample of requests and answers into a :class:`CaptureWriter`.

    A class, not a function: Starlette treats a plain function as a request handler.
    """

    def __init__(self, app: ASGIApp, writer: CaptureWriter, *, v2: bool = False) -> None:
        self.app = app
        self.writer = writer
        self.v2 = v2

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        rate = self.writer.rate
        if rate <= 0.0 or (rate < 1.0 and random.random() >= rate):
            await self.app(scope, receive, send)
            return
        # What the caller's path does: keep references to the bytes the server has anyway.
        # Decoding, quoting, timestamps and JSON are the writer thread's work.
        chunks: list[bytes] = []
        answer: list[bytes] = []
        status = 0
        answer_length: bytes | None = None
        request_id = b""
        content_type = b""
        header_length = None
        for key, value in scope["headers"]:
            if key == _ID_HEADER_BYTES:
                request_id = value[:128]
            elif key == b"content-type":
                content_type = value
            elif key == _HEADER_LENGTH:
                header_length = value
        request_id = request_id or _new_id()
        v2 = self.v2

        async def tee_receive() -> Message:
            message = await receive()
            if message["type"] == "http.request":
                chunks.append(message.get("body", b""))
            return message

        async def tee_send(message: Message) -> None:
            nonlocal status, answer_length
            if message["type"] == "http.response.start":
                status = message["status"]
                headers = message.get("headers", ())
                if v2:
                    answer_length = next((v for k, v in headers if k == _HEADER_LENGTH), None)
                message["headers"] = [*headers, (_ID_HEADER_BYTES, request_id)]
            elif message["type"] == "http.response.body":
                answer.append(message.get("body", b""))
            await send(message)

        await self.app(scope, tee_receive, tee_send)
        if status == 200:  # refused or failed requests are not answers the model gave
            self.writer.offer(
                request_id,
                content_type,
                chunks[0] if len(chunks) == 1 else b"".join(chunks),
                answer[0] if len(answer) == 1 else b"".join(answer),
                (header_length, answer_length) if v2 else None,
            )


def _new_id() -> bytes:
    # 24 hex digits from the OS's random source: unique across processes without a uuid's cost.
    return os.urandom(12).hex().encode()


def _embedded(body: bytes, maybe_json: bool) -> bytes:
    """``body`` as a JSON value on one line: itself when it is JSON, else a JSON string."""
    if maybe_json and _JSON_START.match(body):
        # Valid JSON (the server parsed it) has no raw line breaks inside strings, so line
        # breaks between tokens can become spaces: one record stays one line. Most bodies have
        # none, and a search is cheaper than a copy.
        if b"\n" in body or b"\r" in body:
            return body.replace(b"\r", b" ").replace(b"\n", b" ")
        return body
    return json.dumps(body.decode("utf-8", "replace")).encode()


def decode_record(
    record: dict[str, Any], signature: Signature | None = None
) -> tuple[list[list[Any]], list[Any]]:
    """The input rows and the predictions of one captured record.

    Raises:
        InvalidPayload: a request body the model server's parsers do not read.
    """
    from mlshift.serving._payload import parse_csv, parse_json

    if record.get("protocol") == "v2":
        return _decode_v2(record, signature)
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


def _decode_v2(record: dict[str, Any], signature: Signature | None) -> tuple[list[list[Any]], list[Any]]:
    """Rows and predictions of an Open Inference Protocol record: one ``[rows, features]``
    tensor, or one ``[rows]`` tensor per column (in the signature's order when it has one)."""
    import math

    from mlshift.errors import InvalidPayload
    from mlshift.serving._v2 import INPUT, OUTPUT, V2Error, _tensor_header, _Tensors

    request, response = record.get("request"), record.get("response")
    try:
        if not isinstance(request, dict) or not isinstance(request.get("inputs"), list):
            raise V2Error(400, 'the request has no "inputs"')
        tensors = _Tensors(request["inputs"], base64.b64decode(record.get("request_binary") or ""))
        names = list(tensors.inputs)
        if names == [INPUT]:
            datatype, shape = _tensor_header(tensors.inputs[INPUT])
            shape = [shape[0], 1] if len(shape) == 1 else shape
            rows = tensors.read(INPUT, datatype, math.prod(shape)).reshape(shape).tolist()
        else:
            order = list(record.get("columns") or (signature.column_names if signature else None) or ())
            names = order if sorted(order) == sorted(names) else names
            columns = []
            for name in names:
                datatype, shape = _tensor_header(tensors.inputs[name])
                columns.append(tensors.read(name, datatype, math.prod(shape)).tolist())
            rows = [list(r) for r in zip(*columns, strict=True)]
        outputs = _v2_outputs(response, record.get("response_binary"), OUTPUT, len(rows))
    except (V2Error, KeyError, TypeError, ValueError) as exc:
        raise InvalidPayload(f"a captured /v2 request could not be read: {exc}") from None
    return rows, outputs


def _v2_outputs(response: Any, binary: str | None, name: str, count: int) -> list[Any]:
    """The predictions of a protocol answer, one per row (``None`` each when unreadable)."""
    import math

    from mlshift.serving._v2 import _tensor_header, _Tensors

    outputs = response.get("outputs") if isinstance(response, dict) else None
    if not isinstance(outputs, list) or not outputs or not all(isinstance(o, dict) for o in outputs):
        return [None] * count
    tensor = next((o for o in outputs if o.get("name") == name), outputs[0])
    try:
        datatype, shape = _tensor_header(tensor)
        values = _Tensors([tensor], base64.b64decode(binary or "")).read(
            str(tensor.get("name")), datatype, math.prod(shape)
        )
        answers = values.reshape(shape).tolist()
    except Exception:
        return [None] * count
    return answers if isinstance(answers, list) and len(answers) == count else [None] * count


def _number(value: Any) -> Any:
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


_App = TypeVar("_App")


def capture_writer(
    *,
    variant: str | None,
    model_ref: str | None,
    signature: Signature | None,
    environ: MutableMapping[str, str] | None = None,
) -> CaptureWriter | None:
    """The server's capture writer, when ``MLSHIFT_CAPTURE_DIR`` names a capture folder.

    The folder's ``capture.json`` turns capture on, off or changes its rate while the server
    runs; without the variable there is no writer and predictions cost nothing more.
    """
    env = os.environ if environ is None else environ
    folder = env.get(CAPTURE_DIR_ENV, "").strip()
    if not folder:
        return None
    return CaptureWriter(
        Path(folder),
        endpoint=env.get(ENDPOINT_ENV, "") or "default",
        variant=variant,
        model_ref=model_ref,
        signature=signature,
    )


def capture_predictions(
    app: _App,
    *,
    variant: str | None,
    model_ref: str | None,
    signature: Signature | None,
    environ: MutableMapping[str, str] | None = None,
) -> _App:
    """``app`` with capture, when ``MLSHIFT_CAPTURE_DIR`` names a capture folder; else ``app``."""
    writer = capture_writer(variant=variant, model_ref=model_ref, signature=signature, environ=environ)
    if writer is None:
        return app
    # The same ASGI interface as ``app``: what the caller routes to is unchanged.
    return cast("_App", writer.wrap(cast(ASGIApp, app)))
