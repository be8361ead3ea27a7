"""Rollouts on Azure ML run on mlshift's engine: traffic steps, Azure Monitor gates, rollback."""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

import mlshift
from mlshift.errors import MlshiftError, RolloutFailed
from mlshift.specs.rollout import Canary, HealthGate
from mlshift_azureml.testing import FakeAzureML

#: Short bakes: the fake shows metrics at once, so a second of traffic is enough to judge.
GATE = HealthGate(max_error_rate=0.05, min_requests=5)
FAILING = (
    "class Predictor:\n"
    "    signature = {'inputs': [{'dtype': 'float64'}] * 4}\n"
    "    def load(self, path):\n"
    "        pass\n"
    "    def predict(self, batch):\n"
    "        raise RuntimeError('this version is broken')\n"
)


@pytest.fixture
def deployed(client: mlshift.Client, iris: dict[str, Any]) -> mlshift.Client:
    """iris:1 serving all of "iris-ep"; iris:2 registered."""
    client.models.register("iris", iris["v1"], framework="sklearn")
    client.models.register("iris", iris["v2"], framework="sklearn")
    client.endpoints.deploy("iris-ep", "iris:1")
    return client


@contextmanager
def traffic(client: mlshift.Client, rows: list[Any]) -> Iterator[Counter[str]]:
    """Predictions sent from another thread for the duration of the block, counted by answer."""
    seen: Counter[str] = Counter()
    stop, first = threading.Event(), threading.Event()

    def send() -> None:
        while not stop.is_set():
            try:
                answer = client.endpoints.predict("iris-ep", rows)
                seen[f"{answer.variant} {answer.predictions}"] += 1
            except MlshiftError as exc:
                seen[f"error {type(exc).__name__}"] += 1
            except Exception as exc:  # the fake itself broke: fail the test, not the thread
                seen[f"crash {exc!r}"] += 1
            first.set()
            stop.wait(0.002)

    thread = threading.Thread(target=send, name="traffic", daemon=True)
    thread.start()
    try:
        assert first.wait(60), "no prediction came back"
        yield seen
    finally:
        stop.set()
        thread.join(60)


def test_a_healthy_canary_promotes_under_load(
    deployed: mlshift.Client, azure: FakeAzureML, iris: dict[str, Any]
) -> None:
    with traffic(deployed, iris["rows"]) as answers:
        state = deployed.endpoints.deploy(
            "iris-ep", "iris:2", rollout=Canary(percent=20, bake=1.5, gate=GATE)
        )
    assert [(v.name, v.model, v.weight) for v in state.variants] == [("iris-v2", "iris:2", 100)]
    assert set(answers) <= {f"iris-v1 {iris['expected_v1']}", f"iris-v2 {iris['expected_v2']}"}
    assert answers[f"iris-v2 {iris['expected_v2']}"] > 0
    record = deployed.endpoints.history("iris-ep")[0]
    assert (record.strategy, record.phase) == ("canary", "succeeded")
    assert record.measurements["requests"] >= GATE.min_requests and record.measurements["errors"] == 0
    assert any("/providers/microsoft.insights/metrics" in c.url.lower() for c in azure.calls)


def test_a_failing_canary_trips_the_gate_and_traffic_returns(
    deployed: mlshift.Client, iris: dict[str, Any], tmp_path: Path
) -> None:
    folder = tmp_path / "failing-predictor"
    folder.mkdir()
    (folder / "predictor.py").write_text(FAILING)
    deployed.models.register("iris", folder, framework="predictor")  # iris:3
    with traffic(deployed, iris["rows"]) as answers, pytest.raises(RolloutFailed) as caught:
        deployed.endpoints.deploy("iris-ep", "iris:3", rollout=Canary(percent=20, bake=60, gate=GATE))
    assert "error rate" in str(caught.value)
    assert caught.value.measurements["elapsed_s"] < 60  # tripped early, not at the end of the bake
    assert answers["error ProviderError"] > 0  # the 424s of the broken container, counted as errors
    state = deployed.endpoints.get("iris-ep")
    assert [(v.name, v.model, v.weight) for v in state.variants] == [("iris-v1", "iris:1", 100)]
    assert deployed.endpoints.predict("iris-ep", iris["rows"]).predictions == iris["expected_v1"]
    assert deployed.endpoints.history("iris-ep")[0].phase == "rolled_back"
