"""Native safe rollouts: SageMaker's blue/green guardrails with alarms made from the health gate."""

from __future__ import annotations

import json
from typing import Any

import pytest

import mlshift
from mlshift.errors import RolloutFailed, UnsupportedOperation
from mlshift.plan import Plan, RecoverRollout, Rollout
from mlshift.specs import EndpointSpec
from mlshift.specs.rollout import BlueGreen, Canary, HealthGate, Linear, Probe
from mlshift_sagemaker.testing import FakeSageMaker


def update_request(aws: FakeSageMaker, since: int = 0) -> dict[str, Any]:
    calls = [c for c in aws.calls[since:] if c.operation == "UpdateEndpoint"]
    assert len(calls) == 1, [c.operation for c in aws.calls[since:]]
    assert calls[0].params is not None
    return dict(calls[0].params)


def test_a_canary_is_a_blue_green_update_guarded_by_alarms(
    main: mlshift.Client, aws: FakeSageMaker, iris: dict[str, Any]
) -> None:
    gate = HealthGate(max_error_rate=0.02, max_p99="300ms", min_requests=0)
    mark = len(aws.calls)
    state = main.endpoints.deploy(
        "iris-ep", "iris:2", variant="main", rollout=Canary(percent=20, bake="5m", gate=gate)
    )
    assert [(v.name, v.model, v.weight) for v in state.variants] == [("main", "iris:2", 100)]
    assert main.endpoints.predict("iris-ep", iris["rows"]).predictions == iris["expected_v2"]

    deployment = update_request(aws, mark)["DeploymentConfig"]
    policy = deployment["BlueGreenUpdatePolicy"]
    assert policy["TrafficRoutingConfiguration"] == {
        "Type": "CANARY",
        "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": 20},
        "WaitIntervalInSeconds": 300,
    }
    assert 600 <= policy["MaximumExecutionTimeoutInSeconds"] <= 28800
    alarms = [a["AlarmName"] for a in deployment["AutoRollbackConfiguration"]["Alarms"]]
    assert len(alarms) == 3 and alarms[0].endswith("-errors")
    assert alarms[1].endswith("-client-errors") and alarms[2].endswith("-p99")
    created = [c.params for c in aws.calls[mark:] if c.operation == "PutMetricAlarm"]
    assert len(created) == 3
    client_errors = next(c for c in created if c and c["AlarmName"].endswith("-client-errors"))
    assert client_errors["Threshold"] == 0.01  # nothing refused before the rollout, + 1 point
    assert aws.resources()["alarms"] == []  # removed once the rollout finished
    assert len(aws.resources()["endpoint_configs"]) == len(aws.resources()["models"]) == 1
    record = main.endpoints.history("iris-ep")[0]
    assert (record.strategy, record.phase) == ("canary", "succeeded")


def test_an_alarm_during_the_bake_rolls_back_and_leaves_nothing(
    main: mlshift.Client, aws: FakeSageMaker, iris: dict[str, Any]
) -> None:
    before = aws.resources()
    config = aws.backend().endpoints["iris-ep"].endpoint_config_name
    aws.fire_alarms("iris-ep")
    with pytest.raises(RolloutFailed) as caught:
        main.endpoints.deploy("iris-ep", "iris:2", variant="main", rollout=Canary(percent=10, bake="1m"))
    error = caught.value
    assert "SageMaker rolled back the canary rollout of 'iris-ep'" in str(error)
    assert "ALARM" in error.reason and "-errors" in error.reason
    assert "previous version serves all traffic again" in (error.hint or "")
    assert aws.backend().endpoints["iris-ep"].endpoint_config_name == config
    assert [(v.name, v.model) for v in main.endpoints.get("iris-ep").variants] == [("main", "iris:1")]
    assert main.endpoints.predict("iris-ep", iris["rows"]).predictions == iris["expected_v1"]
    assert aws.resources() == before  # no new model, config or alarm left behind
    record = main.endpoints.history("iris-ep")[0]
    assert (record.strategy, record.phase) == ("canary", "rolled_back") and "ALARM" in (record.reason or "")
    # and the next attempt, with the alarms quiet, goes through
    state = main.endpoints.deploy("iris-ep", "iris:2", variant="main", rollout=Canary(percent=10, bake="1m"))
    assert state.variants[0].model == "iris:2"


def test_a_new_fleet_that_never_turns_healthy_fails_the_rollout(
    main: mlshift.Client, aws: FakeSageMaker
) -> None:
    before = aws.resources()
    aws.never_healthy("iris-ep")
    with pytest.raises(RolloutFailed, match="ping health check"):
        main.endpoints.deploy("iris-ep", "iris:2", variant="main", rollout=BlueGreen(bake="2m"))
    assert aws.resources() == before
    assert main.endpoints.history("iris-ep")[0].phase == "rolled_back"


@pytest.mark.parametrize(
    ("strategy", "routing"),
    [
        (
            Linear(step_percent=25, interval="90s"),
            {
                "Type": "LINEAR",
                "LinearStepSize": {"Type": "CAPACITY_PERCENT", "Value": 25},
                "WaitIntervalInSeconds": 90,
            },
        ),
        (BlueGreen(bake="10m"), {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": 600}),
    ],
)
def test_linear_and_blue_green_map_to_traffic_routing(
    main: mlshift.Client, aws: FakeSageMaker, strategy: Any, routing: dict[str, Any]
) -> None:
    mark = len(aws.calls)
    main.endpoints.deploy("iris-ep", "iris:2", variant="main", rollout=strategy)
    policy = update_request(aws, mark)["DeploymentConfig"]["BlueGreenUpdatePolicy"]
    assert policy["TrafficRoutingConfiguration"] == routing


def test_weights_and_models_change_together_across_two_variants(
    client: mlshift.Client, aws: FakeSageMaker, iris: dict[str, Any]
) -> None:
    client.models.register("iris", iris["v1"], framework="sklearn")
    client.models.register("iris", iris["v2"], framework="sklearn")

    def spec(a: str, b: str, weights: tuple[int, int], rollout: Any = None) -> EndpointSpec:
        return EndpointSpec.model_validate(
            {
                "name": "iris-ep",
                "variants": [
                    {"name": "a", "model": a, "weight": weights[0]},
                    {"name": "b", "model": b, "weight": weights[1]},
                ],
                "rollout": rollout,
            }
        )

    client.apply(spec("iris:1", "iris:1", (50, 50)))
    client.apply(spec("iris:1", "iris:2", (70, 30), {"strategy": "canary", "percent": 50, "bake": "30s"}))
    state = client.endpoints.get("iris-ep")
    assert [(v.name, v.model, v.weight) for v in state.variants] == [("a", "iris:1", 70), ("b", "iris:2", 30)]


def planned(client: mlshift.Client, variant: str, rollout: Any) -> tuple[Plan, Rollout]:
    """The plan that serves iris:2 from ``variant`` alone (as deploy() would), and its rollout."""
    variants = [{"name": variant, "model": "iris:2"}]
    spec = EndpointSpec.model_validate(
        {"name": "iris-ep", "variants": variants, "rollout": rollout.model_dump()}
    )
    plan = client.plan(spec)
    return plan, next(a for a in plan.actions if isinstance(a, Rollout))


@pytest.mark.parametrize(
    ("variant", "rollout", "words"),
    [
        ("iris-v2", Canary(percent=10), "the variants change (main -> iris-v2)"),
        ("main", Canary(percent=60), "at most 50% of the new fleet, got 60%"),
        ("main", Linear(step_percent=5), "linear steps are 10-50% of the new fleet, got 5%"),
        ("main", Canary(bake="2h"), "at most 3600 s per step, the bake is 7200 s"),
        ("main", Canary(gate=HealthGate(probe=Probe(payload=[[1, 2, 3, 4]]))), "sends probe requests"),
    ],
)
def test_rollouts_sagemaker_cannot_run_go_to_the_engine_at_plan_time(
    main: mlshift.Client, aws: FakeSageMaker, variant: str, rollout: Any, words: str
) -> None:
    mark = len(aws.calls)
    plan, action = planned(main, variant, rollout)
    assert action.native is False and words in (action.engine_reason or "")
    assert f"; mlshift runs it: {action.engine_reason}" in plan.render()
    assert aws.mutating_calls(since=mark) == []
    # The decision survives the plan's JSON form.
    again = Plan.model_validate_json(json.dumps(plan.model_dump(mode="json")))
    assert again == plan


def test_rollouts_within_sagemaker_limits_are_planned_native(main: mlshift.Client) -> None:
    _, action = planned(main, "main", Canary(percent=50, bake="1h"))
    assert (action.native, action.runner, action.engine_reason) == (True, "the sagemaker target", None)
    assert action.describe().endswith("; the sagemaker target runs it natively")


def test_a_hand_made_native_rollout_sagemaker_cannot_run_is_refused() -> None:
    from mlshift_sagemaker._rollout import check_native_rollout

    with pytest.raises(UnsupportedOperation, match="cannot run this canary rollout natively: the variants"):
        check_native_rollout("iris-ep", Canary(percent=10), ["iris-v2"], ["main"])


def test_a_hand_made_native_plan_refused_at_apply_time_closes_its_journal_record(
    deployed: mlshift.Client, aws: FakeSageMaker
) -> None:
    spec = EndpointSpec.model_validate(
        {
            "name": "iris-ep",
            "variants": [{"name": "iris-v2", "model": "iris:2"}],
            "rollout": {"strategy": "canary"},
        }
    )
    plan = deployed.plan(spec)
    forced = plan.model_copy(
        update={
            "actions": tuple(
                a.model_copy(update={"native": True, "engine_reason": None}) if isinstance(a, Rollout) else a
                for a in plan.actions
            )
        }
    )
    with pytest.raises(UnsupportedOperation, match="SageMaker cannot run this canary rollout natively"):
        deployed.apply(forced)
    record = deployed.endpoints.history("iris-ep")[0]
    assert (record.strategy, record.phase) == ("canary", "failed")
    assert record.reason is not None and "cannot run this canary rollout natively" in record.reason
    # Nothing is left open for the next plan to "recover".
    assert not any(isinstance(a, RecoverRollout) for a in deployed.plan(spec).actions)
