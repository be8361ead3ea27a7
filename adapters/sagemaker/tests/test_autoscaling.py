"""Autoscaling: Application Auto Scaling targets and policies, read back, removed before deletes."""

from __future__ import annotations

from typing import Any

import pytest

import mlshift
from mlshift.errors import ConfigError, ProviderError, QuotaExceeded
from mlshift.specs import Autoscaling, EndpointSpec
from mlshift_sagemaker.testing import FakeSageMaker
from sagemaker_helpers import sagemaker

SCALING_OPS = {
    "RegisterScalableTarget",
    "PutScalingPolicy",
    "DeleteScalingPolicy",
    "DeregisterScalableTarget",
}


def spec(
    autoscaling: dict[str, Any] | None,
    *,
    replicas: int = 2,
    size: str = "cpu-small",
    variants: list[dict[str, Any]] | None = None,
) -> EndpointSpec:
    return EndpointSpec.model_validate(
        {
            "name": "iris-ep",
            "variants": variants or [{"name": "main", "model": "iris:1"}],
            "compute": {"size": size, "replicas": replicas},
            "autoscaling": autoscaling,
        }
    )


SCALING = {"min_replicas": 1, "max_replicas": 4, "target_requests_per_replica": 250}


def scaling_calls(aws: FakeSageMaker, since: int = 0) -> list[tuple[str, Any]]:
    return [
        (c.operation, (c.params or {}).get("ResourceId"))
        for c in aws.mutating_calls(since=since, service="application-auto-scaling")
    ]


def policies(aws: FakeSageMaker) -> dict[str, Any]:
    backend = aws.backend("applicationautoscaling")
    return {p.resource_id: p for p in backend.policies.values()}


def test_the_target_declares_autoscaling(client: mlshift.Client) -> None:
    assert mlshift.Capability.AUTOSCALING in client.adapter.capabilities


def test_an_endpoint_with_autoscaling_registers_each_variant_and_a_tracking_policy(
    registered: mlshift.Client, aws: FakeSageMaker, iris: dict[str, Any]
) -> None:
    mark = len(aws.calls)
    registered.apply(spec(SCALING))
    assert scaling_calls(aws, mark) == [
        ("RegisterScalableTarget", "endpoint/iris-ep/variant/main"),
        ("PutScalingPolicy", "endpoint/iris-ep/variant/main"),
    ]
    register = next(c for c in aws.calls[mark:] if c.operation == "RegisterScalableTarget")
    assert register.params is not None
    assert register.params["ScalableDimension"] == "sagemaker:variant:DesiredInstanceCount"
    assert (register.params["MinCapacity"], register.params["MaxCapacity"]) == (1, 4)
    assert aws.scalable_variants("iris-ep") == {"main": (1, 4)}
    policy = policies(aws)["endpoint/iris-ep/variant/main"]
    assert policy.policy_type == "TargetTrackingScaling"
    tracking = policy.target_tracking_scaling_policy_configuration
    assert tracking["TargetValue"] == 250
    assert tracking["PredefinedMetricSpecification"]["PredefinedMetricType"] == (
        "SageMakerVariantInvocationsPerInstance"
    )
    assert sagemaker(registered).endpoints.autoscaling("iris-ep") == {"main": Autoscaling(**SCALING)}
    assert registered.endpoints.predict("iris-ep", iris["rows"]).predictions == iris["expected_v1"]


def test_bounds_without_a_target_make_no_policy(registered: mlshift.Client, aws: FakeSageMaker) -> None:
    registered.apply(spec({"min_replicas": 2, "max_replicas": 3}))
    assert aws.scalable_variants("iris-ep") == {"main": (2, 3)}
    assert policies(aws) == {}


def test_reapplying_an_unchanged_spec_with_autoscaling_makes_no_call(
    registered: mlshift.Client, aws: FakeSageMaker
) -> None:
    registered.apply(spec(SCALING))
    mark = len(aws.calls)
    assert registered.plan(spec(SCALING)).is_empty
    assert not registered.apply(spec(SCALING)).changed
    assert aws.mutating_calls(since=mark) == []
    with mlshift.connect("sagemaker://us-east-1") as other:  # a fresh process reads it back too
        assert other.plan(spec(SCALING)).is_empty
    assert aws.mutating_calls(since=mark) == []


def test_the_autoscaler_moving_the_count_is_not_a_diff(
    registered: mlshift.Client, aws: FakeSageMaker
) -> None:
    registered.apply(spec(SCALING))
    sm = sagemaker(registered).clients.client("sagemaker")
    # what Application Auto Scaling does under load
    sm.update_endpoint_weights_and_capacities(
        EndpointName="iris-ep",
        DesiredWeightsAndCapacities=[{"VariantName": "main", "DesiredInstanceCount": 4}],
    )
    while sm.describe_endpoint(EndpointName="iris-ep")["EndpointStatus"] != "InService":
        pass
    mark = len(aws.calls)
    assert registered.plan(spec(SCALING)).is_empty
    assert aws.mutating_calls(since=mark) == []


def test_a_changed_count_under_autoscaling_is_applied_once(
    registered: mlshift.Client, aws: FakeSageMaker
) -> None:
    registered.apply(spec(SCALING))
    mark = len(aws.calls)
    registered.apply(spec(SCALING, replicas=3))
    assert "UpdateEndpointWeightsAndCapacities" in aws.operations(since=mark)
    assert registered.endpoints.get("iris-ep").variants[0].compute.replicas == 3
    mark = len(aws.calls)
    assert registered.plan(spec(SCALING, replicas=3)).is_empty
    assert aws.mutating_calls(since=mark) == []


def test_changed_bounds_and_target_are_updated_with_the_next_change(
    registered: mlshift.Client, aws: FakeSageMaker
) -> None:
    registered.apply(spec(SCALING))
    mark = len(aws.calls)
    wider = {"min_replicas": 1, "max_replicas": 8}
    registered.apply(spec(wider, replicas=3))
    assert scaling_calls(aws, mark) == [
        ("RegisterScalableTarget", "endpoint/iris-ep/variant/main"),
        ("DeleteScalingPolicy", "endpoint/iris-ep/variant/main"),
    ]
    assert aws.scalable_variants("iris-ep") == {"main": (1, 8)}
    assert policies(aws) == {}


def test_set_autoscaling_changes_only_what_differs_and_none_stops_it(
    registered: mlshift.Client, aws: FakeSageMaker
) -> None:
    registered.apply(spec(None))
    endpoints = sagemaker(registered).endpoints
    assert endpoints.autoscaling("iris-ep") == {}
    mark = len(aws.calls)
    assert endpoints.set_autoscaling("iris-ep", Autoscaling(**SCALING)).wait().autoscaling == Autoscaling(
        **SCALING
    )
    assert [op for op, _ in scaling_calls(aws, mark)] == ["RegisterScalableTarget", "PutScalingPolicy"]
    mark = len(aws.calls)
    endpoints.set_autoscaling("iris-ep", Autoscaling(**{**SCALING, "target_requests_per_replica": 90}))
    assert [op for op, _ in scaling_calls(aws, mark)] == ["PutScalingPolicy"]
    assert (
        policies(aws)["endpoint/iris-ep/variant/main"].target_tracking_scaling_policy_configuration[
            "TargetValue"
        ]
        == 90
    )
    mark = len(aws.calls)
    assert endpoints.set_autoscaling("iris-ep", None).wait().autoscaling is None
    assert endpoints.autoscaling("iris-ep") == {}
    assert [op for op, _ in scaling_calls(aws, mark)] == ["DeleteScalingPolicy", "DeregisterScalableTarget"]
    assert aws.scalable_variants("iris-ep") == {}


def test_a_spec_without_autoscaling_leaves_existing_scaling_alone(
    registered: mlshift.Client, aws: FakeSageMaker
) -> None:
    registered.apply(spec(SCALING))
    mark = len(aws.calls)
    registered.endpoints.set_traffic("iris-ep", {"main": 100})
    registered.apply(spec(None, replicas=2))
    assert scaling_calls(aws, mark) == []
    assert aws.scalable_variants("iris-ep") == {"main": (1, 4)}


def test_every_variant_scales_and_a_new_one_is_registered(
    registered: mlshift.Client, aws: FakeSageMaker
) -> None:
    two = [
        {"name": "main", "model": "iris:1", "weight": 80},
        {"name": "next", "model": "iris:2", "weight": 20},
    ]
    registered.apply(spec(SCALING, variants=[{"name": "main", "model": "iris:1"}]))
    registered.apply(spec(SCALING, variants=two))
    assert aws.scalable_variants("iris-ep") == {"main": (1, 4), "next": (1, 4)}
    assert set(policies(aws)) == {"endpoint/iris-ep/variant/main", "endpoint/iris-ep/variant/next"}


def test_a_removed_variant_is_deregistered_before_the_update(
    registered: mlshift.Client, aws: FakeSageMaker
) -> None:
    two = [
        {"name": "main", "model": "iris:1", "weight": 80},
        {"name": "next", "model": "iris:2", "weight": 20},
    ]
    registered.apply(spec(SCALING, variants=two))
    mark = len(aws.calls)
    registered.apply(spec(SCALING, variants=[{"name": "main", "model": "iris:1"}]))
    ops = aws.operations(since=mark)
    deregister = ops.index("DeregisterScalableTarget")
    assert ops.index("DeleteScalingPolicy") < deregister < ops.index("UpdateEndpoint")
    assert ("DeregisterScalableTarget", "endpoint/iris-ep/variant/next") in scaling_calls(aws, mark)
    assert aws.scalable_variants("iris-ep") == {"main": (1, 4)}
    assert "endpoint/iris-ep/variant/next" not in policies(aws)


def test_a_new_instance_type_deregisters_then_scales_the_new_fleet(
    registered: mlshift.Client, aws: FakeSageMaker
) -> None:
    registered.apply(spec(SCALING))
    mark = len(aws.calls)
    registered.apply(spec(SCALING, size="cpu-large"))
    ops = aws.operations(since=mark)
    assert (
        ops.index("DeregisterScalableTarget")
        < ops.index("UpdateEndpoint")
        < ops.index("RegisterScalableTarget")
    )
    assert registered.endpoints.get("iris-ep").variants[0].compute.size == "cpu-large"
    assert aws.scalable_variants("iris-ep") == {"main": (1, 4)}
    assert "endpoint/iris-ep/variant/main" in policies(aws)


def test_the_fake_refuses_to_drop_a_variant_that_still_scales(
    registered: mlshift.Client, aws: FakeSageMaker
) -> None:
    registered.apply(spec(SCALING, size="cpu-small"))
    sm = sagemaker(registered).clients.client("sagemaker")
    live = aws.backend().endpoint_configs[aws.backend().endpoints["iris-ep"].endpoint_config_name]
    variants = [{**v, "InstanceType": "ml.m5.xlarge"} for v in live.production_variants]
    sm.create_endpoint_config(EndpointConfigName="bigger", ProductionVariants=variants)
    with pytest.raises(Exception, match="must be deregistered as scalable targets"):
        sm.update_endpoint(EndpointName="iris-ep", EndpointConfigName="bigger")


def test_delete_deregisters_before_the_endpoint_goes(registered: mlshift.Client, aws: FakeSageMaker) -> None:
    registered.apply(spec(SCALING))
    mark = len(aws.calls)
    registered.endpoints.delete("iris-ep")
    # (S3 writes around it are the endpoint lock, which delete takes like any change)
    ops = [
        c.operation
        for c in aws.mutating_calls(since=mark)
        if c.operation not in ("PutObject", "DeleteObject")
    ]
    assert ops[:3] == ["DeleteScalingPolicy", "DeregisterScalableTarget", "DeleteEndpoint"]
    assert aws.scalable_variants("iris-ep") == {} and policies(aws) == {}
    assert aws.resources()["endpoints"] == []


@pytest.mark.parametrize(
    ("autoscaling", "replicas", "field"),
    [
        ({"min_replicas": 0, "max_replicas": 2}, 1, "autoscaling.min_replicas"),
        ({"min_replicas": 2, "max_replicas": 4}, 1, "compute.replicas"),
        ({"min_replicas": 1, "max_replicas": 2}, 3, "compute.replicas"),
    ],
)
def test_bounds_sagemaker_refuses_fail_at_plan_time_naming_the_field(
    registered: mlshift.Client, aws: FakeSageMaker, autoscaling: dict[str, Any], replicas: int, field: str
) -> None:
    mark = len(aws.calls)
    with pytest.raises(ConfigError) as caught:
        registered.plan(spec(autoscaling, replicas=replicas))
    assert caught.value.field == field
    assert aws.mutating_calls(since=mark) == []


def test_a_failed_update_registers_the_old_scaling_again(
    registered: mlshift.Client, aws: FakeSageMaker
) -> None:
    registered.apply(spec(SCALING))
    aws.fail("UpdateEndpoint", "ResourceLimitExceeded", "no ml.m5.4xlarge left")
    with pytest.raises(QuotaExceeded):
        registered.apply(spec(SCALING, size="cpu-large"))
    assert registered.endpoints.get("iris-ep").variants[0].compute.size == "cpu-small"
    assert aws.scalable_variants("iris-ep") == {"main": (1, 4)}
    assert "endpoint/iris-ep/variant/main" in policies(aws)


def test_an_update_sagemaker_rolls_back_registers_the_old_scaling_again(
    registered: mlshift.Client, aws: FakeSageMaker
) -> None:
    registered.apply(spec(SCALING))
    aws.never_healthy("iris-ep")
    with pytest.raises(ProviderError):
        registered.apply(spec(SCALING, size="cpu-large"))
    assert registered.endpoints.get("iris-ep").variants[0].compute.size == "cpu-small"
    assert aws.scalable_variants("iris-ep") == {"main": (1, 4)}
