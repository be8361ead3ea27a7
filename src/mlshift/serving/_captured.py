"""Capture files read back as neutral records, and records decoded into rows and predictions.

The model server writes capture files (:mod:`mlshift.serving._capture`); the local target reads
them back here as :class:`~mlshift.adapter.CapturedRequest` records for its
:class:`~mlshift.adapter.CaptureReader`. Monitors decode records of any target with
:func:`decode_captured`, which uses the model server's own parsers.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mlshift.adapter import CapturedRequest
from mlshift.specs.model import Signature

__all__ = ["decode_captured", "read_capture_folder"]


def _body(value: Any) -> bytes | None:
    """A body as the record embeds it (a JSON value, or the text as a string) back to bytes."""
    if value is None:
        return None
    if isinstance(value, str):
        return value.encode()
    return json.dumps(value).encode()


def _binary(value: Any) -> bytes | None:
    """Binary tensor data as the record embeds it (base64) back to bytes."""
    if not isinstance(value, str) or not value:
        return None
    try:
        return base64.b64decode(value)
    except ValueError:
        return None


def read_capture_folder(
    folder: Path, *, endpoint: str = "", since: datetime, until: datetime
) -> Iterator[CapturedRequest]:
    """The records under an endpoint's capture folder with ``since < timestamp <= until``.

    Hour folders before ``since`` are not opened; a line that is not a record (one being
    written as it is read) is skipped.
    """
    from mlshift.serving._capture import capture_files

    first_hour = since.astimezone(timezone.utc).strftime("%Y-%m-%d/%H")
    for path in capture_files(folder):
        hour = f"{path.parent.parent.name}/{path.parent.name}"
        if hour < first_hour:
            continue
        with path.open("rb") as lines:
            for line in lines:
                try:
                    record = json.loads(line)
                    stamp = datetime.fromisoformat(record["timestamp"])
                except (ValueError, KeyError, TypeError):
                    continue
                if not since < stamp <= until:
                    continue
                columns = record.get("columns")
                yield CapturedRequest(
                    request_id=str(record.get("request_id") or ""),
                    endpoint=str(record.get("endpoint") or endpoint),
                    variant=str(record.get("variant") or "default"),
                    timestamp=stamp,
                    content_type=str(record.get("content_type") or "application/json"),
                    request=_body(record.get("request")),
                    response=_body(record.get("response")),
                    model=record.get("model"),
                    columns=tuple(columns) if isinstance(columns, list) else None,
                    protocol=record.get("protocol"),
                    request_binary=_binary(record.get("request_binary")),
                    response_binary=_binary(record.get("response_binary")),
                )


def decode_captured(
    record: CapturedRequest, signature: Signature | None = None
) -> tuple[list[list[Any]], list[Any]]:
    """The input rows and predictions of one captured request (``None`` for each row whose
    prediction is not in the answer).

    Raises:
        InvalidPayload: a request the model server's parsers do not read, or none captured.
    """
    from mlshift.errors import InvalidPayload
    from mlshift.serving._capture import decode_record

    if record.request is None:
        raise InvalidPayload("the record holds no request (only the answer was captured)")
    try:
        response = json.loads(record.response) if record.response is not None else None
    except ValueError:
        response = None  # a CSV or binary answer: its predictions are not judged
    raw: dict[str, Any] = {
        "content_type": record.content_type,
        "request": record.request.decode("utf-8", "replace"),
        "response": response,
    }
    if record.protocol == "v2":
        try:
            raw["request"] = json.loads(record.request)
        except ValueError:
            raise InvalidPayload("a captured /v2 request is not JSON") from None
        raw["protocol"] = "v2"
        raw["columns"] = list(record.columns) if record.columns else None
        for part in ("request_binary", "response_binary"):
            data = getattr(record, part)
            raw[part] = base64.b64encode(data).decode() if data else None
    return decode_record(raw, signature)
