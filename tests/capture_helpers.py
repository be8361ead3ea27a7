"""Helpers for the tests of request capture and of the monitors that read it: waiting on a
condition, reading what an endpoint on local:// has captured."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from typing import Any

import mlshift
from mlshift.monitoring import read_window


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.05)


def captured_window(
    client: mlshift.Client, endpoint: str, ids: list[str] | None = None
) -> tuple[list[str] | None, list[list[Any]], list[Any], int]:
    """Everything ``endpoint`` has captured so far, as :func:`~mlshift.monitoring.read_window`
    reads it (columns, rows, outputs, requests); ``ids`` is extended with each row's request id."""
    folder = client.adapter.endpoints.capture_dir(endpoint)
    epoch = datetime(2000, 1, 1, tzinfo=timezone.utc)
    return read_window(folder, since=epoch, until=datetime.now(timezone.utc) + timedelta(seconds=1), ids=ids)


def captured_rows(client: mlshift.Client, endpoint: str) -> int:
    """How many rows ``endpoint`` has captured so far."""
    return len(captured_window(client, endpoint)[1])
