"""Azure ML data collector records: the layout and format payload logging writes, read back.

mlshift maps the neutral ``capture`` to a deployment's data collector with the two collections
Azure reserves for *payload logging*, ``request`` and ``response``: Azure's collector records
the HTTP bodies the scoring route receives and answers, so the mlshift model server (a custom
container) needs no collection code of its own. Azure writes them as JSON Lines to the
workspace's default blob datastore (``workspaceblobstore``)::

    modelDataCollector/{endpoint}/{deployment}/{request|response}/YYYY/MM/DD/HH/{instance}.jsonl

one CloudEvents object a request or answer::

    {"specversion": "1.0", "id": "...", "source": ".../onlineEndpoints/E/deployments/D",
     "type": "azureml.inference.request", "datacontenttype": "application/json",
     "time": "2026-12-06T08:00:05Z", "data": {...}, "path": "/score", "method": "POST",
     "contentrange": "bytes 0-59/*", "correlationid": "...", "xrequestid": "..."}

``data`` is the body, embedded when it is JSON, else as text. A request and its answer share a
``correlationid`` (the caller's ``x-request-id`` when it sent one). A body above 256 KB is
written to a blob of its own and the record points at it (``"datainblob": "true"``); mlshift
reads such a request as having no body. The testing kit writes records with
:func:`payload_record`, so the reader here is the one the adapter uses against Azure.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

__all__ = [
    "COLLECTIONS",
    "COLLECTOR_DATASTORE",
    "COLLECTOR_FOLDER",
    "PayloadRecord",
    "capture_key",
    "parse_payloads",
    "payload_record",
]

#: The datastore Azure's data collector writes to (the workspace's default blob datastore).
COLLECTOR_DATASTORE = "workspaceblobstore"
#: Where Azure's data collector writes in it.
COLLECTOR_FOLDER = "modelDataCollector"
#: The collections Azure reserves for payload logging, and the CloudEvents type of each.
COLLECTIONS = {"request": "azureml.inference.request", "response": "azureml.inference.response"}


@dataclass(frozen=True)
class PayloadRecord:
    """One logged request or answer.

    Attributes:
        kind: ``request`` or ``response``.
        correlation_id: What pairs a request with its answer.
        time: When it was logged (UTC).
        content_type: The body's media type.
        body: The body as bytes (``None``: Azure kept it in a blob of its own).
    """

    kind: str
    correlation_id: str
    time: datetime
    content_type: str
    body: bytes | None


def capture_key(endpoint: str, deployment: str, collection: str, when: datetime, instance: str) -> str:
    """The blob Azure's collector writes ``collection`` of ``endpoint/deployment`` to, for ``when``'s hour."""
    hour = when.astimezone(timezone.utc).strftime("%Y/%m/%d/%H")
    return f"{COLLECTOR_FOLDER}/{endpoint}/{deployment}/{collection}/{hour}/{instance}.jsonl"


def _is_json(content_type: str) -> bool:
    media = content_type.split(";", 1)[0].strip().lower()
    return media == "application/json" or media.endswith("+json")


def payload_record(
    collection: str,
    *,
    source: str,
    time: datetime,
    content_type: str,
    body: bytes,
    correlation_id: str,
    path: str = "/score",
) -> str:
    """One line as Azure's payload logging writes it (the testing kit's writer)."""
    data: Any
    text = body.decode("utf-8", errors="replace")
    data = text
    if _is_json(content_type):
        try:
            data = json.loads(text)
        except ValueError:
            data = text
    record: dict[str, Any] = {
        "specversion": "1.0",
        "id": str(uuid.uuid4()),
        "source": source,
        "type": COLLECTIONS[collection],
        "datacontenttype": content_type,
        "time": time.astimezone(timezone.utc).isoformat().replace("+00:00", "Z"),
        "data": data,
    }
    if collection == "request":
        record.update({"path": path, "method": "POST"})
    record.update(
        {
            "contentrange": f"bytes 0-{max(len(body) - 1, 0)}/{len(body)}",
            "correlationid": correlation_id,
            "xrequestid": correlation_id,
        }
    )
    return json.dumps(record, separators=(",", ":"))


def _time(text: Any) -> datetime | None:
    if not isinstance(text, str) or not text:
        return None
    try:
        stamp = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        return None
    return stamp.replace(tzinfo=timezone.utc) if stamp.tzinfo is None else stamp.astimezone(timezone.utc)


def parse_payloads(data: bytes) -> Iterator[PayloadRecord]:
    """The payload records in one collector file; lines that are not one are skipped."""
    kinds = {v: k for k, v in COLLECTIONS.items()}
    for line in data.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if not isinstance(record, dict):
            continue
        kind = kinds.get(str(record.get("type", "")))
        when = _time(record.get("time"))
        correlation = record.get("correlationid") or record.get("xrequestid")
        if kind is None or when is None or not isinstance(correlation, str):
            continue
        value = record.get("data")
        body: bytes | None
        if str(record.get("datainblob", "")).lower() == "true" or value is None:
            body = None
        elif isinstance(value, str):
            body = value.encode()
        else:
            body = json.dumps(value).encode()
        yield PayloadRecord(
            kind=kind,
            correlation_id=correlation,
            time=when,
            content_type=str(record.get("datacontenttype") or "application/json"),
            body=body,
        )
