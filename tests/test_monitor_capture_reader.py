"""The capture contract on local://: records read back through ``CaptureReader``, not file paths."""

from __future__ import annotations

import json
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

import mlshift
from mlshift.adapter import CapturedRequest, CaptureReader
from mlshift.monitoring import read_window
from mlshift.specs.monitor import CaptureSpec


def _write(folder: Path, when: datetime, lines: list[dict[str, object] | str]) -> None:
    hour = folder / "data" / when.strftime("%Y-%m-%d") / when.strftime("%H")
    hour.mkdir(parents=True, exist_ok=True)
    with (hour / "blue-1-1.jsonl").open("a") as f:
        for line in lines:
            f.write((line if isinstance(line, str) else json.dumps(line)) + "\n")


def _record(n: int, when: datetime, model: str = "churn:1", **extra: object) -> dict[str, object]:
    return {
        "request_id": f"r{n}",
        "endpoint": "churn",
        "variant": "blue",
        "model": model,
        "timestamp": when.isoformat(),
        "columns": ["a", "b"],
        "content_type": "application/json",
        "request": {"instances": [[n, n + 0.5]]},
        "response": {"predictions": [n % 2]},
        **extra,
    }


def test_local_endpoints_read_back_captured_requests(local: mlshift.Client) -> None:
    endpoints = local.adapter.endpoints
    assert isinstance(endpoints, CaptureReader)
    assert endpoints.capture_settings("churn") is None  # nothing captures yet

    folder = endpoints.capture_dir("churn")
    (folder).mkdir(parents=True)
    (folder / "capture.json").write_text(
        json.dumps({"sample_rate": 0.25, "max_file_mb": 16.0, "queue_size": 10})
    )
    assert endpoints.capture_settings("churn") == CaptureSpec(sample_rate=0.25, queue_size=10)

    now = datetime(2026, 12, 6, 10, 30, tzinfo=timezone.utc)
    csv = {**_record(3, now), "content_type": "text/csv", "request": "3,3.5"}
    _write(folder, now - timedelta(hours=2), [_record(0, now - timedelta(hours=2))])
    _write(folder, now, [_record(1, now - timedelta(minutes=1)), "{half a line", _record(2, now), csv])

    records = list(endpoints.read_capture("churn", since=now - timedelta(hours=1), until=now))
    assert [r.request_id for r in records] == ["r1", "r2", "r3"]
    first = records[0]
    assert isinstance(first, CapturedRequest)
    assert (first.endpoint, first.variant, first.model, first.columns) == (
        "churn",
        "blue",
        "churn:1",
        ("a", "b"),
    )
    assert json.loads(first.request or b"") == {"instances": [[1, 1.5]]}
    assert json.loads(first.response or b"") == {"predictions": [1]}
    assert records[2].request == b"3,3.5" and records[2].content_type == "text/csv"

    # The window a monitor judges, from the records: rows in order, one prediction each.
    columns, rows, outputs, requests = read_window(
        iter(records), since=now - timedelta(hours=1), until=now, model="churn:1"
    )
    assert columns == ["a", "b"] and requests == 3
    assert rows == [[1, 1.5], [2, 2.5], [3.0, 3.5]] and outputs == [1, 0, 1]


def test_records_without_a_version_count_for_the_variants_serving_it() -> None:
    now = datetime(2026, 12, 6, 10, 30, tzinfo=timezone.utc)

    def record(n: int, variant: str) -> CapturedRequest:
        return CapturedRequest(
            request_id=str(n),
            endpoint="churn",
            variant=variant,
            timestamp=now - timedelta(seconds=n),
            content_type="application/json",
            request=json.dumps({"instances": [[n, 0]]}).encode(),
            response=None,
        )

    records = [record(1, "blue"), record(2, "green"), record(3, "blue")]
    _, rows, outputs, requests = read_window(
        records, since=now - timedelta(minutes=1), until=now, model="churn:2", variants=["blue"]
    )
    assert rows == [[1, 0], [3, 0]] and outputs == [None, None] and requests == 2


def test_a_target_without_capture_has_nothing_to_monitor(memory: mlshift.Client) -> None:
    from mlshift.monitoring._store import capture_reader

    with pytest.raises(mlshift.UnsupportedOperation, match="no CAPTURE.*local"):
        capture_reader(memory.adapter)
