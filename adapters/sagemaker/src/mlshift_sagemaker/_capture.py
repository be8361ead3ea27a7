"""SageMaker data capture records: reading them, pairing a shadow's with production's, writing them.

SageMaker writes what an endpoint answered to ``DestinationS3Uri`` as JSON Lines, one object per
request, under ``{destination}/{endpoint}/{variant}/YYYY/MM/DD/HH/{file}.jsonl``::

    {"captureData": {"endpointInput": {"observedContentType": "application/json",
                                       "mode": "INPUT", "data": "...", "encoding": "JSON"},
                     "endpointOutput": {"observedContentType": "application/json",
                                        "mode": "OUTPUT", "data": "...", "encoding": "JSON"}},
     "eventMetadata": {"eventId": "...", "inferenceTime": "2026-12-06T08:00:00Z"},
     "eventVersion": "0"}

``encoding`` is ``JSON`` or ``CSV`` (the text as it was) or ``BASE64``. Shadow variants get
records of their own, under their variant name. The testing kit writes records with
:func:`capture_record`, so the reader here is the one the adapter uses against AWS.
"""

from __future__ import annotations

import base64
import contextlib
import json
import uuid
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

__all__ = ["CaptureRecord", "capture_key", "capture_record", "pair_records", "parse_capture"]


@dataclass(frozen=True)
class CaptureRecord:
    """One captured request: its event id, when, and the input and output bytes.

    Attributes:
        inference_id: The caller's ``InferenceId`` of ``InvokeEndpoint``, when it gave one.
        input_type: The request's observed content type.
        output_type: The answer's observed content type.
    """

    event_id: str
    time: datetime
    input: bytes | None
    output: bytes | None
    inference_id: str | None = None
    input_type: str = ""
    output_type: str = ""


def _decode(part: Any) -> bytes | None:
    if not isinstance(part, dict) or not isinstance(part.get("data"), str):
        return None
    data: str = part["data"]
    if str(part.get("encoding", "")).upper() == "BASE64":
        try:
            return base64.b64decode(data)
        except ValueError:
            return None
    return data.encode()


def parse_capture(body: bytes) -> Iterator[CaptureRecord]:
    """The records of one capture file (lines that are not capture records are skipped)."""
    for line in body.splitlines():
        try:
            raw = json.loads(line)
            meta = raw["eventMetadata"]
            stamp = str(meta["inferenceTime"])
            # SageMaker writes UTC with a "Z", which fromisoformat reads only from Python 3.11 on.
            when = datetime.fromisoformat(stamp[:-1] + "+00:00" if stamp.endswith("Z") else stamp)
        except (ValueError, KeyError, TypeError):
            continue
        data = raw.get("captureData") or {}
        inputs, outputs = data.get("endpointInput"), data.get("endpointOutput")
        yield CaptureRecord(
            event_id=str(meta.get("eventId", "")),
            time=when if when.tzinfo else when.replace(tzinfo=timezone.utc),
            input=_decode(inputs),
            output=_decode(outputs),
            inference_id=str(meta["inferenceId"]) if meta.get("inferenceId") else None,
            input_type=_content_type(inputs),
            output_type=_content_type(outputs),
        )


def _content_type(part: Any) -> str:
    return str(part.get("observedContentType") or "") if isinstance(part, dict) else ""


def pair_records(
    production: Sequence[CaptureRecord], shadow: Sequence[CaptureRecord]
) -> Iterator[tuple[bytes, bytes]]:
    """``(production output, shadow output)`` for each shadow record whose request production answered.

    A shadow record is paired with the production record of the same ``eventId``; failing that,
    with the unpaired production record of identical input closest in time. Records without an
    output (capture of inputs only) cannot be compared and are left out.
    """
    by_id = {r.event_id: r for r in production if r.event_id and r.output is not None}
    used: set[int] = set()
    for record in shadow:
        if record.output is None:
            continue
        match = by_id.get(record.event_id)
        if match is None and record.input is not None:
            candidates = [
                p
                for p in production
                if id(p) not in used and p.output is not None and p.input == record.input
            ]
            match = min(candidates, key=lambda p: abs((p.time - record.time).total_seconds()), default=None)
        if match is None or match.output is None:
            continue
        used.add(id(match))
        yield match.output, record.output


def _media(content_type: str) -> str:
    return content_type.split(";", 1)[0].strip().lower()


def _part(
    mode: str, data: bytes, content_type: str, text_types: Mapping[str, Sequence[str]] | None
) -> dict[str, str]:
    if text_types is not None:
        # What SageMaker does with a CaptureContentTypeHeader: the listed types as text, the
        # rest in base64.
        media = _media(content_type)
        for encoding in ("JSON", "CSV"):
            if media in (_media(t) for t in text_types.get(encoding, ())):
                with contextlib.suppress(UnicodeDecodeError):
                    return {
                        "observedContentType": content_type,
                        "mode": mode,
                        "data": data.decode(),
                        "encoding": encoding,
                    }
        return {
            "observedContentType": content_type,
            "mode": mode,
            "data": base64.b64encode(data).decode(),
            "encoding": "BASE64",
        }
    if any(t in content_type for t in ("json", "csv", "text")):
        try:
            encoding = "CSV" if "csv" in content_type else "JSON"
            return {
                "observedContentType": content_type,
                "mode": mode,
                "data": data.decode(),
                "encoding": encoding,
            }
        except UnicodeDecodeError:
            pass
    return {
        "observedContentType": content_type,
        "mode": mode,
        "data": base64.b64encode(data).decode(),
        "encoding": "BASE64",
    }


def capture_record(
    *,
    event_id: str,
    time: datetime,
    request: bytes | None,
    request_type: str,
    response: bytes | None,
    response_type: str,
    text_types: Mapping[str, Sequence[str]] | None = None,
    inference_id: str | None = None,
) -> str:
    """One capture record as a JSON line (``request``/``response``: ``None`` when not captured).

    Args:
        text_types: The configuration's ``CaptureContentTypeHeader`` as ``{"JSON": [...],
            "CSV": [...]}``: bodies of those types are kept as text, others in base64. Without
            one, JSON, CSV and text bodies are kept as text.
        inference_id: The caller's ``InferenceId``, recorded as ``eventMetadata.inferenceId``.
    """
    data: dict[str, Any] = {}
    if request is not None:
        data["endpointInput"] = _part("INPUT", request, request_type, text_types)
    if response is not None:
        data["endpointOutput"] = _part("OUTPUT", response, response_type, text_types)
    meta = {
        "eventId": event_id,
        "inferenceTime": time.astimezone(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
    }
    if inference_id:
        meta["inferenceId"] = inference_id
    record = {"captureData": data, "eventMetadata": meta, "eventVersion": "0"}
    return json.dumps(record, separators=(",", ":"))


def capture_key(prefix: str, endpoint: str, variant: str, time: datetime) -> str:
    """Where SageMaker puts a capture file of ``endpoint``/``variant`` written at ``time``."""
    stamp = time.astimezone(timezone.utc)
    folder = "/".join(p for p in (prefix.strip("/"), endpoint, variant) if p)
    return f"{folder}/{stamp:%Y/%m/%d/%H}/{stamp:%M-%S-%f}-{uuid.uuid4()}.jsonl"
