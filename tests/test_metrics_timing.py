"""Metric resolution and lag: the engine polls at the target's grain; too-short bakes are refused."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import mlshift
from mlshift.adapter import MetricsTiming
from mlshift.errors import ConfigError
from mlshift.plan import GateReading
from mlshift.plan._rollout import poll_interval
from mlshift.specs.rollout import BlueGreen, Canary, HealthGate, Linear, Probe, Shadow
from mlshift.testing.memory import MemoryAdapter

ROWS = [[5.1, 3.5, 1.4, 0.2]]
LAGGING = "memory://?metric_lag=120&metric_resolution=60"


@pytest.fixture
def lagging(iris: dict[str, Any]) -> Iterator[mlshift.Client]:
    """A memory target declaring CloudWatch-like metrics: one point a minute, up to 2 min late."""
    with mlshift.connect(LAGGING) as client:
        client.models.register("iris", iris["v1"])
        client.models.register("iris", iris["v2"])
        client.endpoints.deploy("iris", "iris:1")
        yield client


def test_targets_declare_their_metrics_timing(tmp_path: Path) -> None:
    with mlshift.connect("memory://") as memory, mlshift.connect(LAGGING) as lagging:
        assert memory.adapter.endpoints.metrics_timing == MetricsTiming(resolution=1.0, lag=0.0)
        assert lagging.adapter.endpoints.metrics_timing == MetricsTiming(resolution=60.0, lag=120.0)
    with mlshift.connect(f"local://{tmp_path / 'state'}") as local:
        assert local.adapter.endpoints.metrics_timing == MetricsTiming(resolution=1.0, lag=0.0)
    for bad in ("metric_lag=-1", "metric_lag=soon", "metric_resolution=0"):
        with pytest.raises(ConfigError, match="is not a number of seconds"):
            mlshift.connect(f"memory://?{bad}")


@pytest.mark.parametrize(
    ("rollout", "field", "numbers"),
    [
        (Canary(percent=10, bake=30), "rollout.bake", "rollout.bake is 30 s"),
        (Linear(step_percent=25, interval=10), "rollout.interval", "rollout.interval is 10 s"),
        (BlueGreen(bake=60), "rollout.bake", "rollout.bake is 60 s"),
        (Shadow(duration=300, then=Canary(bake=5)), "rollout.bake", "rollout.bake is 5 s"),
    ],
    ids=["canary", "linear", "blue-green", "shadow-then-canary"],
)
def test_a_bake_shorter_than_the_metric_lag_is_refused_at_plan_time(
    lagging: mlshift.Client, rollout: Any, field: str, numbers: str
) -> None:
    adapter = MemoryAdapter.of(lagging)
    mark = len(adapter.calls)
    with pytest.raises(ConfigError) as caught:
        lagging.endpoints.deploy("iris", "iris:2", rollout=rollout)
    message = str(caught.value)
    assert f"{numbers}, but memory's metrics arrive up to 120 s late" in message
    assert "at least 120 s" in message
    assert caught.value.field == field
    assert adapter.calls[mark:] == []  # refused before any change
    assert lagging.endpoints.get("iris").weights == {"iris-v1": 100}


def test_a_bake_as_long_as_the_lag_is_planned(lagging: mlshift.Client) -> None:
    spec = mlshift.EndpointSpec.model_validate(
        {
            "name": "iris",
            "variants": [{"name": "iris-v2", "model": "iris:2"}],
            "rollout": Canary(percent=10, bake=120).model_dump(),
        }
    )
    assert [a.kind for a in lagging.plan(spec).actions] == ["rollout"]


def hold_for_probe_answers(client: mlshift.Client, variant: str, count: int) -> Callable[[GateReading], bool]:
    """A check holding the first reading until ``variant`` answered ``count`` requests.

    ``hold_bake_for_requests`` cannot hold a bake judged on probes (it reads the target's
    metrics, which a lagging target is not judged on); the memory target counts every call
    at once whatever lag it declares, so the probes' answers are counted here. One more than
    the gate needs: the prober records an answer just after the target counted it.
    """
    held: list[bool] = []

    def hold_for_probe_answers(reading: GateReading) -> bool:
        if held:
            return True
        held.append(True)
        deadline = time.monotonic() + 300  # bounds a hang only
        while time.monotonic() < deadline:
            metrics = client.adapter.endpoints.read_metrics("iris", variant, reading.elapsed + 600)
            if metrics is not None and metrics.requests >= count + 1:
                return True
            time.sleep(0.05)
        return False

    return hold_for_probe_answers


def test_a_probe_gate_is_judged_on_its_own_answers_and_may_bake_shorter(lagging: mlshift.Client) -> None:
    gate = HealthGate(min_requests=5, probe=Probe(payload={"instances": ROWS}, rate=100))
    # The 0.5 s bake ends with the gate's 5 probe answers in, however slow the machine.
    hold = hold_for_probe_answers(lagging, "iris-v2", gate.min_requests)
    state = lagging.endpoints.deploy(
        "iris", "iris:2", rollout=Canary(percent=10, bake=0.5, gate=gate), checks=[hold]
    )
    assert state.weights == {"iris-v2": 100}
    record = lagging.endpoints.history("iris")[0]
    assert record.phase == "succeeded" and record.measurements["requests"] >= 5
    assert "window_s" not in record.measurements  # probes, not the target's metrics


def test_a_target_that_runs_the_rollout_itself_is_not_held_to_the_lag(iris: dict[str, Any]) -> None:
    with mlshift.connect(
        "memory://?capabilities=traffic_split,metrics,native_rollout&metric_lag=120"
    ) as native:
        native.models.register("iris", iris["v1"])
        native.models.register("iris", iris["v2"])
        native.endpoints.deploy("iris", "iris:1")
        state = native.endpoints.deploy("iris", "iris:2", rollout=Canary(bake=30))
        assert state.weights == {"iris-v2": 100}
        assert ("native_rollout", "iris", "canary") in MemoryAdapter.of(native).calls


def test_the_engine_reads_at_the_grain_and_reports_the_window(iris: dict[str, Any]) -> None:
    # CloudWatch's one-minute points: a 5-minute bake reads every 15 s (was every second), an
    # hour's every minute; short bakes (and fine-grained targets) still get 20 readings.
    assert poll_interval(300, 60) == 15
    assert poll_interval(3600, 60) == 60
    assert poll_interval(2, 60) == pytest.approx(0.1)
    assert poll_interval(300, 1.0) == 1.0
    with mlshift.connect("memory://") as client:
        client.models.register("iris", iris["v1"])
        client.models.register("iris", iris["v2"])
        client.endpoints.deploy("iris", "iris:1")
        with pytest.raises(mlshift.errors.RolloutFailed, match=r"only 0 requests in \d+s, the gate needs"):
            client.endpoints.deploy("iris", "iris:2", rollout=Canary(percent=10, bake=0.3))
        measurements = client.endpoints.history("iris")[0].measurements
        assert measurements["window_s"] == pytest.approx(measurements["elapsed_s"], abs=0.01)
