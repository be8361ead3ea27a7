"""Rollouts on Azure ML run on mlshift's engine: traffic steps, Azure Monitor gates, rollback."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import mlshift
from mlshift.specs.rollout import Canary, HealthGate
from mlshift.testing.rollouts import canary_under_load, failing_predictor
from mlshift_azureml.testing import FakeAzureML

#: Short bakes: the fake shows metrics at once, and canary_under_load holds a bake until the
#: gate has its requests.
GATE = HealthGate(max_error_rate=0.05, min_requests=5)


def test_a_healthy_canary_promotes_under_load(
    deployed: mlshift.Client, azure: FakeAzureML, iris: dict[str, Any]
) -> None:
    outcome = canary_under_load(
        deployed, "iris-ep", "iris:2", Canary(percent=20, bake=1.5, gate=GATE), rows=iris["rows"]
    )
    assert outcome.failure is None, outcome.failure
    state, answers = outcome.state, outcome.answers
    assert state is not None
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
    folder = failing_predictor(tmp_path / "failing-predictor")
    deployed.models.register("iris", folder, framework="predictor")  # iris:3
    outcome = canary_under_load(
        deployed, "iris-ep", "iris:3", Canary(percent=20, bake=60, gate=GATE), rows=iris["rows"]
    )
    answers = outcome.answers
    assert outcome.failure is not None and "error rate" in str(outcome.failure)
    assert outcome.failure.measurements["elapsed_s"] < 60  # tripped early, not at the end of the bake
    assert answers["error ProviderError"] > 0  # the 424s of the broken container, counted as errors
    state = deployed.endpoints.get("iris-ep")
    assert [(v.name, v.model, v.weight) for v in state.variants] == [("iris-v1", "iris:1", 100)]
    assert deployed.endpoints.predict("iris-ep", iris["rows"]).predictions == iris["expected_v1"]
    assert deployed.endpoints.history("iris-ep")[0].phase == "rolled_back"
