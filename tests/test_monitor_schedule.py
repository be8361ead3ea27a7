"""Monitors on the local scheduler, and command alerts: when runs happen and what they tell."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import pytest

import mlshift


def _capture(folder: Path, rows: list[list[float]], when: datetime, n: int) -> None:
    """Records in the layout and format the model server writes (tested in test_capture.py)."""
    hour = folder / "data" / when.strftime("%Y-%m-%d") / when.strftime("%H")
    hour.mkdir(parents=True, exist_ok=True)
    lines = [
        json.dumps(
            {
                "request_id": f"{n}-{i}",
                "endpoint": "churn",
                "variant": "blue",
                "model": "churn:1",
                "timestamp": (when - timedelta(seconds=1)).isoformat(),
                "columns": None,
                "content_type": "application/json",
                "request": {"instances": [row]},
                "response": {"predictions": [1 if i % 2 else 0]},
            }
        )
        for i, row in enumerate(rows)
    ]
    (hour / f"blue-1-{n}.jsonl").write_text("\n".join(lines) + "\n")


def test_schedule_runs_when_due_and_a_command_alerts_once_per_episode(
    local: mlshift.Client, example: Any, tmp_path: Path
) -> None:
    x = example.make_data(3000, seed=1)
    local.models.register("churn", example.train_model(x, tmp_path / "churn.skops"), baseline=x)
    local.endpoints.deploy("churn", "churn:1", capture={"sample_rate": 1.0})
    alerts = tmp_path / "alerts.jsonl"
    script = "import sys; open(sys.argv[1], 'a').write(sys.stdin.read() + '\\n')"
    local.monitors.apply(
        {
            "name": "quarter",
            "endpoint": "churn",
            "schedule": "*/15 * * * *",
            "features": {"enabled": True},
            "predictions": {"enabled": False},
            "actions": {"alert": {"command": [sys.executable, "-c", script, str(alerts)]}},
        }
    )
    folder = local.adapter.endpoints.capture_dir("churn")
    clock = [datetime.now(timezone.utc).replace(minute=1, second=0, microsecond=0) - timedelta(hours=3)]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += timedelta(seconds=seconds)

    from mlshift.monitoring._monitor import run_monitor_schedules

    def schedules(**kwargs: Any) -> list[Any]:
        return run_monitor_schedules(
            local, local.monitors.list(), now=lambda: clock[0], sleep=sleep, **kwargs
        )

    # Seen for the first time: runs at once, for the latest tick (:00); drifted data.
    _capture(folder, example.make_data(300, seed=2, shift=1.0).tolist(), clock[0], 1)
    first = schedules(once=True)
    assert len(first) == 1 and first[0].drifted == ("x2",) and first[0].alerted
    # Nothing is due again before :15.
    assert schedules(once=True) == []
    # The loop sleeps until :15, runs (still drifting: same episode, no second alert), then
    # sleeps until :30 and runs on undrifted data (the episode ends).
    _capture(folder, example.make_data(300, seed=3, shift=1.0).tolist(), clock[0] + timedelta(minutes=14), 2)
    _capture(folder, example.make_data(300, seed=4).tolist(), clock[0] + timedelta(minutes=29), 3)
    later = schedules(max_runs=2)
    assert [r.until.minute for r in later] == [15, 30]
    assert slept and abs(slept[0] - 14 * 60) < 1
    assert later[0].drifted == ("x2",) and later[0].in_episode and not later[0].alerted
    assert later[1].drifted == () and not later[1].in_episode
    sent = [json.loads(line) for line in alerts.read_text().splitlines()]
    assert len(sent) == 1 and sent[0]["drifted"] == ["x2"] and sent[0]["endpoint"] == "churn"


def test_a_monitor_without_a_schedule_is_not_scheduled(
    local: mlshift.Client, example: Any, tmp_path: Path
) -> None:
    x = example.make_data(500, seed=1)
    local.models.register("churn", example.train_model(x, tmp_path / "churn.skops"), baseline=x)
    local.endpoints.deploy("churn", "churn:1", capture={"sample_rate": 1.0})
    local.monitors.apply({"name": "adhoc", "endpoint": "churn"})
    with pytest.raises(mlshift.ConfigError, match="monitor 'adhoc' has no schedule"):
        local.monitors.run_schedules(once=True)
