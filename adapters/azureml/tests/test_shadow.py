"""Shadow rollouts on Azure ML: ``mirror_traffic``, judged on Azure Monitor (shadow mode mirror-only)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import mlshift
from conftest import TARGET, azureml
from mlshift.adapter import Capability
from mlshift.errors import ConfigError, RolloutFailed
from mlshift.specs.endpoint import EndpointSpec
from mlshift.specs.rollout import HealthGate, Shadow
from mlshift.testing.rollouts import failing_predictor, hold_bake_for_requests, send_traffic
from mlshift_azureml.testing import FakeAzureML

GATE = HealthGate(max_error_rate=0.05, min_requests=5)
#: iris:1 serving, iris:2 up without live traffic (what a mirror may target).
BOTH = EndpointSpec.model_validate(
    {
        "name": "iris-ep",
        "variants": [
            {"name": "iris-v1", "model": "iris:1", "weight": 100},
            {"name": "iris-v2", "model": "iris:2", "weight": 0},
        ],
    }
)


def test_the_target_mirrors_traffic_and_judges_shadows_on_metrics(client: mlshift.Client) -> None:
    assert Capability.SHADOW_TRAFFIC in client.adapter.capabilities
    assert client.adapter.endpoints.shadow_mode == "mirror-only"


def test_only_untargeted_requests_are_mirrored_and_the_mirror_never_answers(
    deployed: mlshift.Client, azure: FakeAzureML, iris: dict[str, Any]
) -> None:
    endpoints = azureml(deployed).endpoints
    deployed.apply(BOTH)
    endpoints.set_shadow("iris-ep", "iris-v2", 50)
    raw = azure.endpoint_state("sub-0000", "ml-rg", "ml-ws", "iris-ep")
    assert raw is not None and raw["properties"]["mirrorTraffic"] == {"iris-v2": 50}
    answers = [deployed.endpoints.predict("iris-ep", iris["rows"]) for _ in range(10)]
    assert {(a.variant, str(a.predictions)) for a in answers} == {("iris-v1", str(iris["expected_v1"]))}
    for _ in range(4):  # sent to a deployment by name: Azure does not mirror these
        deployed.endpoints.predict("iris-ep", iris["rows"], variant="iris-v1")
    azure.wait_mirrored()
    assert azure.mirrored == [("iris-ep", "iris-v2", 200)] * 5
    shadow = endpoints.read_shadow("iris-ep", "iris-v2", 300)
    assert shadow is not None
    assert (shadow.requests, shadow.errors, shadow.baseline_requests, shadow.rows) == (5, 0, 14, 0)
    endpoints.set_shadow("iris-ep", "iris-v2", 0)
    assert endpoints.read_shadow("iris-ep", "iris-v2", 300) is None
    deployed.endpoints.predict("iris-ep", iris["rows"])
    azure.wait_mirrored()
    assert len(azure.mirrored) == 5


def test_azures_mirror_rules_are_refused_before_any_call(
    deployed: mlshift.Client, azure: FakeAzureML
) -> None:
    endpoints = azureml(deployed).endpoints
    mark = len(azure.calls)
    with pytest.raises(ConfigError, match="at most 50%"):
        endpoints.set_shadow("iris-ep", "iris-v1", 60)
    with pytest.raises(ConfigError, match="live traffic"):
        endpoints.set_shadow("iris-ep", "iris-v1", 10)
    assert azure.mutating_calls(since=mark) == []


def test_removing_a_mirrored_variant_stops_its_mirror_first(
    deployed: mlshift.Client, azure: FakeAzureML
) -> None:
    endpoints = azureml(deployed).endpoints
    deployed.apply(BOTH)
    endpoints.set_shadow("iris-ep", "iris-v2", 20)
    endpoints.remove_variant("iris-ep", "iris-v2")
    raw = azure.endpoint_state("sub-0000", "ml-rg", "ml-ws", "iris-ep")
    assert raw is not None and raw["properties"]["mirrorTraffic"] == {}
    assert [v.name for v in deployed.endpoints.get("iris-ep").variants] == ["iris-v1"]


def test_a_healthy_shadow_is_mirrored_then_promoted(
    deployed: mlshift.Client, azure: FakeAzureML, iris: dict[str, Any]
) -> None:
    with send_traffic(deployed, "iris-ep", iris["rows"]) as answers:
        state = deployed.endpoints.deploy(
            "iris-ep",
            "iris:2",
            rollout=Shadow(percent=50, duration=1.5, gate=GATE),
            # The phase ends with the gate's mirrored requests counted, however slow the machine.
            checks=[hold_bake_for_requests(deployed, "iris-ep", GATE.min_requests)],
        )
    assert [(v.name, v.model, v.weight) for v in state.variants] == [("iris-v2", "iris:2", 100)]
    azure.wait_mirrored()
    mirrored = [status for _, deployment, status in azure.mirrored if deployment == "iris-v2"]
    assert len(mirrored) >= GATE.min_requests and set(mirrored) == {200}
    assert set(answers) <= {f"iris-v1 {iris['expected_v1']}", f"iris-v2 {iris['expected_v2']}"}
    record = deployed.endpoints.history("iris-ep")[0]
    assert (record.strategy, record.phase) == ("shadow", "succeeded")
    assert record.measurements["requests"] >= GATE.min_requests
    assert any("mirror 50% of traffic to iris-v2" in step for step in record.steps)


def test_a_failing_shadow_fails_the_gate_and_no_caller_ever_sees_it(
    deployed: mlshift.Client, azure: FakeAzureML, iris: dict[str, Any], tmp_path: Path
) -> None:
    folder = failing_predictor(tmp_path / "failing-predictor")
    deployed.models.register("iris", folder, framework="predictor")  # iris:3
    with send_traffic(deployed, "iris-ep", iris["rows"]) as answers, pytest.raises(RolloutFailed) as caught:
        deployed.endpoints.deploy("iris-ep", "iris:3", rollout=Shadow(percent=50, duration=60, gate=GATE))
    assert "error rate" in str(caught.value)
    assert caught.value.measurements["elapsed_s"] < 60  # tripped early
    azure.wait_mirrored()
    assert [d for _, d, status in azure.mirrored if status == 424] != []  # the candidate did fail
    # ...on mirrored copies only: every caller was answered by iris:1.
    assert set(answers) == {f"iris-v1 {iris['expected_v1']}"}
    state = deployed.endpoints.get("iris-ep")
    assert [(v.name, v.model, v.weight) for v in state.variants] == [("iris-v1", "iris:1", 100)]
    raw = azure.endpoint_state("sub-0000", "ml-rg", "ml-ws", "iris-ep")
    assert raw is not None and raw["properties"]["mirrorTraffic"] == {}
    assert deployed.endpoints.history("iris-ep")[0].phase == "rolled_back"


@pytest.mark.parametrize(
    ("shadow", "target", "field"),
    [
        (Shadow(percent=10, min_agreement=0.95), TARGET, "rollout.min_agreement"),
        (Shadow(percent=10, max_relative_error=0.1), TARGET, "rollout.max_relative_error"),
        (Shadow(percent=60), TARGET, "rollout.percent"),
        (Shadow(percent=10, duration=30), TARGET + "?metric_lag=120", "rollout.duration"),
    ],
)
def test_what_a_mirror_only_shadow_cannot_do_is_refused_at_plan_time(
    azure: FakeAzureML, iris: dict[str, Any], shadow: Shadow, target: str, field: str
) -> None:
    with mlshift.connect(target) as client:
        client.models.register("iris", iris["v1"], framework="sklearn")
        client.models.register("iris", iris["v2"], framework="sklearn")
        client.endpoints.deploy("iris-ep", "iris:1")
        mark = len(azure.calls)
        spec = EndpointSpec.model_validate(
            {
                "name": "iris-ep",
                "variants": [{"name": "iris-v2", "model": "iris:2"}],
                "rollout": json.loads(shadow.model_dump_json(exclude_unset=True)) | {"strategy": "shadow"},
            }
        )
        with pytest.raises(ConfigError) as caught:
            client.plan(spec)
        assert caught.value.field == field, str(caught.value)
        assert azure.mutating_calls(since=mark) == []
