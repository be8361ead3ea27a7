"""The monitoring loop on local://: capture → drift → report → one retrain → canary → serves.

This is issue 15's first acceptance point, with the real model server capturing: requests go
through the endpoint's router as a caller sends them, ten rows per request to keep the test
short (the monitor judges rows; how they were batched makes no difference to it).
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

import mlshift
from capture_helpers import captured_rows, wait_for

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def webhook() -> Iterator[tuple[str, list[dict[str, Any]]]]:
    """A webhook receiver on 127.0.0.1 (port from the OS); yields its URL and what it got."""
    received: list[dict[str, Any]] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            received.append(json.loads(self.rfile.read(int(self.headers["Content-Length"]))))
            self.send_response(204)
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook", received
    finally:
        server.shutdown()
        server.server_close()


def _deploy(client: mlshift.Client, example: Any, tmp_path: Path) -> None:
    x_train = example.make_data(5000, seed=1)
    path = example.train_model(x_train, tmp_path / "churn.skops")
    client.models.register("churn", path, baseline=x_train)
    client.endpoints.deploy("churn", "churn:1", capture={"sample_rate": 1.0})


def test_drift_starts_one_retrain_that_rolls_out_by_canary(
    local: mlshift.Client, example: Any, tmp_path: Path, webhook: tuple[str, list[dict[str, Any]]]
) -> None:
    client = local
    _deploy(client, example, tmp_path)
    baseline = client.models.baseline("churn:1")
    assert baseline is not None and baseline.inputs.columns == ("x0", "x1", "x2", "x3")
    assert (
        baseline.predictions is not None and baseline.predictions.features["prediction"].kind == "categorical"
    )
    url, alerts = webhook
    spec = example.monitor_spec(client.target).model_copy(
        update={
            "actions": {**example.monitor_spec(client.target).actions.model_dump(), "alert": {"webhook": url}}
        }
    )
    spec = client.monitors.apply(mlshift.MonitorSpec.model_validate(spec.model_dump()))
    assert [m.name for m in client.monitors.list()] == ["churn-drift"]

    # 2,000 requests drawn like the training data: no drift, nothing done.
    began = time.monotonic()
    example.send(client, example.make_data(2000, seed=10), batch=10)
    wait_for(lambda: captured_rows(client, "churn") == 2000, "2,000 captured rows")
    print(f"2,000 rows in 200 requests sent and captured in {time.monotonic() - began:.1f} s")
    first = client.monitors.run("churn-drift")
    assert first.judged and first.requests == 200 and first.report.rows == 2000
    assert first.drifted == () and first.quality == ()
    assert first.retrain_run is None and not first.alerted and alerts == []

    # x2 moves by one standard deviation for the next 2,000 (and 500 more after them).
    shifted = example.make_data(2500, seed=11, shift=1.0)
    example.send(client, shifted[:2000], batch=10)
    wait_for(lambda: captured_rows(client, "churn") == 4000, "4,000 captured rows")
    middle = datetime.now(timezone.utc)
    example.send(client, shifted[2000:], batch=10)
    wait_for(lambda: captured_rows(client, "churn") == 4500, "4,500 captured rows")

    started: list[Any] = []
    second = client.monitors.run("churn-drift", now=middle, on_retrain=started.append)
    assert second.requests == 200 and second.report.rows == 2000
    # That feature and only it; the answers moved with it (x2 weighs in the churn rule).
    assert second.drifted == ("x2", "(prediction)")
    x2 = second.report["x2"]
    assert x2.statistic == "psi" and x2.value is not None and x2.value > x2.threshold == 0.2
    assert all(not second.report[f].drifted for f in ("x0", "x1", "x3"))
    assert second.episode_started and second.alerted and len(alerts) == 1
    assert alerts[0]["drifted"] == ["x2", "(prediction)"] and alerts[0]["monitor"] == "churn-drift"
    page = Path(second.html_path).read_text()
    assert "x2" in page and "<svg" in page and "<script" not in page
    assert json.loads(Path(second.report_path).read_text())["retrain_run"] == second.retrain_run
    assert second.retrain_run is not None and [r.id for r in started] == [second.retrain_run]

    # Same episode (churn:1 still takes most traffic while the pipeline trains): no second retrain.
    third = client.monitors.run("churn-drift")
    assert client.endpoints.get("churn").variants[0].model == "churn:1" or third.model == "churn:1"
    assert third.report.rows == 500 and third.drifted == ("x2", "(prediction)")
    assert third.in_episode and not third.episode_started
    assert third.retrain_run is None and len(alerts) == 1

    retrain = started[0].wait(timeout=600)
    assert retrain.status == "succeeded", retrain.message
    steps = {s.name: s.status for s in retrain.steps}
    assert steps["release"] == "succeeded"  # the gate passed
    assert retrain.step("evaluate").metrics["accuracy"] >= 0.9
    # Rolled out by canary, and the endpoint serves the new version.
    state = client.endpoints.get("churn")
    assert [(v.model, v.weight) for v in state.variants] == [("churn:2", 100)]
    history = client.endpoints.history("churn")
    assert history[0].strategy == "canary" and history[0].phase == "succeeded"
    answer = client.endpoints.predict("churn", shifted[:3].tolist())
    assert answer.predictions == example.label(shifted[:3]).tolist()
    assert client.models.baseline("churn:2") is not None

    # The new version's baseline is the moved data: the same traffic is no drift for it.
    example.send(client, example.make_data(300, seed=12, shift=1.0), batch=10)
    wait_for(lambda: captured_rows(client, "churn") >= 4800, "300 more captured rows")
    fourth = client.monitors.run("churn-drift")
    assert fourth.model == "churn:2" and fourth.judged and fourth.drifted == ()
    assert not fourth.in_episode and len(alerts) == 1
    assert [r.id for r in client.monitors.runs("churn-drift")] == [first.id, second.id, third.id, fourth.id]


def _write_window(folder: Path, rows: list[list[float]], when: datetime, n: int) -> None:
    """Capture files as the model server writes them (its own path is tested above)."""
    hour = folder / "data" / when.strftime("%Y-%m-%d") / when.strftime("%H")
    hour.mkdir(parents=True, exist_ok=True)
    with (hour / f"blue-1-{n}.jsonl").open("w") as f:
        for i, row in enumerate(rows):
            record = {
                "request_id": f"{n}-{i}",
                "endpoint": "churn",
                "variant": "blue",
                "model": "churn:1",
                "timestamp": (when - timedelta(milliseconds=len(rows) - i)).isoformat(),
                "columns": None,
                "content_type": "application/json",
                "request": {"instances": [row]},
                "response": {"predictions": [int(row[0] > 0)]},
            }
            f.write(json.dumps(record) + "\n")


def test_twenty_undrifted_windows_raise_at_most_one_alert(
    local: mlshift.Client, example: Any, tmp_path: Path
) -> None:
    _deploy(local, example, tmp_path)
    local.monitors.apply({"name": "quiet", "endpoint": "churn", "min_rows": 100})
    folder = local.adapter.endpoints.capture_dir("churn")
    start = datetime.now(timezone.utc) - timedelta(hours=2)
    runs = []
    for n in range(20):
        when = start + timedelta(minutes=5 * (n + 1))
        rows = example.make_data(2000, seed=100 + n)
        _write_window(folder, rows.tolist(), when, n)
        runs.append(local.monitors.run("quiet", now=when))
    assert all(r.judged and r.requests == 2000 for r in runs)
    assert sum(r.alerting for r in runs) <= 1


def test_bad_monitors_are_refused_before_anything_is_written(
    local: mlshift.Client, memory: mlshift.Client, example: Any, tmp_path: Path
) -> None:
    x_train = example.make_data(500, seed=1)
    path = example.train_model(x_train, tmp_path / "churn.skops")
    # A baseline whose columns do not match the model's signature.
    with pytest.raises(mlshift.ConfigError, match="4 inputs|column") as err:
        local.models.register("churn", path, baseline=x_train[:, :3])
    assert local.models.list() == []
    local.models.register("churn", path, baseline=x_train)
    local.endpoints.deploy("churn", "churn:1")
    # An endpoint that does not capture.
    with pytest.raises(mlshift.ConfigError, match="does not capture") as err:
        local.monitors.apply({"name": "m", "endpoint": "churn"})
    assert err.value.field == "endpoint"
    local.endpoints.deploy("churn", "churn:1", capture={"sample_rate": 0.5})
    # An unknown statistic; one that does not fit the feature's kind; an unknown feature.
    with pytest.raises(mlshift.ConfigError, match="features.statistics.x2"):
        mlshift.MonitorSpec(name="m", endpoint="churn", features={"statistics": {"x2": "kl"}})
    with pytest.raises(mlshift.ConfigError, match="does not compare numeric") as err:
        local.monitors.apply({"name": "m", "endpoint": "churn", "features": {"statistics": {"x2": "chi2"}}})
    assert err.value.field == "features.statistics.x2"
    with pytest.raises(mlshift.ConfigError, match="not a feature"):
        local.monitors.apply({"name": "m", "endpoint": "churn", "features": {"statistics": {"age": "ks"}}})
    with pytest.raises(mlshift.ConfigError, match="minute"):
        local.monitors.apply({"name": "m", "endpoint": "churn", "schedule": "61 * * * *"})
    with pytest.raises(mlshift.ConfigError, match="no parameter 'report'"):
        local.monitors.apply(
            {
                "name": "m",
                "endpoint": "churn",
                "actions": {
                    "retrain": {
                        "pipeline": f"{ROOT}/examples/monitor_retrain.py:retrain",
                        "report_param": "report",
                    }
                },
            }
        )
    assert local.monitors.list() == []
    with pytest.raises(mlshift.UnsupportedOperation, match="local"):
        memory.monitors.list()
