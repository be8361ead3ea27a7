"""Serverless endpoints: ServerlessConfig instead of instances, and what SageMaker refuses with it."""

from __future__ import annotations

from typing import Any

import pytest

import mlshift
from mlshift.errors import ConfigError
from mlshift.specs import EndpointSpec
from mlshift_sagemaker.testing import FakeSageMaker

SERVERLESS = {"memory_mb": 2048, "max_concurrency": 5}


def spec(serverless: dict[str, Any] | None = None, **extra: Any) -> EndpointSpec:
    options: dict[str, Any] = {"serverless": SERVERLESS if serverless is None else serverless}
    options.update(extra.pop("sagemaker", {}))
    return EndpointSpec.model_validate(
        {
            "name": "iris-ep",
            "variants": [{"name": "main", "model": "iris:1"}],
            "provider_options": {"sagemaker": options},
            **extra,
        }
    )


def live_variants(aws: FakeSageMaker) -> list[dict[str, Any]]:
    backend = aws.backend()
    config = backend.endpoint_configs[backend.endpoints["iris-ep"].endpoint_config_name]
    return list(config.production_variants)


def test_the_target_declares_serverless(client: mlshift.Client) -> None:
    assert mlshift.Capability.SERVERLESS in client.adapter.capabilities


def test_a_serverless_endpoint_has_a_serverless_config_and_no_instances(
    registered: mlshift.Client, aws: FakeSageMaker, iris: dict[str, Any]
) -> None:
    state = registered.apply(spec()).endpoints["iris-ep"]
    (variant,) = live_variants(aws)
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 2048, "MaxConcurrency": 5}
    assert "InstanceType" not in variant and "InitialInstanceCount" not in variant
    assert state.variants[0].compute.replicas == 1
    assert registered.endpoints.predict("iris-ep", iris["rows"]).predictions == iris["expected_v1"]


def test_reapplying_an_unchanged_serverless_spec_makes_no_call(
    registered: mlshift.Client, aws: FakeSageMaker
) -> None:
    registered.apply(spec())
    mark = len(aws.calls)
    assert registered.plan(spec()).is_empty
    assert not registered.apply(spec()).changed
    assert aws.mutating_calls(since=mark) == []


def test_a_new_version_deployed_later_stays_serverless(
    registered: mlshift.Client, aws: FakeSageMaker, iris: dict[str, Any]
) -> None:
    registered.apply(spec())
    registered.endpoints.deploy("iris-ep", "iris:2", variant="main")
    (variant,) = live_variants(aws)
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 2048, "MaxConcurrency": 5}
    assert registered.endpoints.predict("iris-ep", iris["rows"]).predictions == iris["expected_v2"]


@pytest.mark.parametrize(
    ("serverless", "field"),
    [
        ({"memory_mb": 1500, "max_concurrency": 5}, "provider_options.sagemaker.serverless.memory_mb"),
        ({"memory_mb": 512, "max_concurrency": 5}, "provider_options.sagemaker.serverless.memory_mb"),
        ({"memory_mb": 7168, "max_concurrency": 5}, "provider_options.sagemaker.serverless.memory_mb"),
        ({"memory_mb": 1024, "max_concurrency": 0}, "provider_options.sagemaker.serverless.max_concurrency"),
        (
            {"memory_mb": 1024, "max_concurrency": 201},
            "provider_options.sagemaker.serverless.max_concurrency",
        ),
        ({"memory_mb": 1024}, "provider_options.sagemaker.serverless.max_concurrency"),
        ({"memory_mb": 1024, "max_concurrency": 1, "cpu": 2}, "provider_options.sagemaker.serverless.cpu"),
    ],
)
def test_serverless_settings_are_validated_naming_the_field(
    registered: mlshift.Client, aws: FakeSageMaker, serverless: dict[str, Any], field: str
) -> None:
    mark = len(aws.calls)
    with pytest.raises(ConfigError) as caught:
        registered.plan(spec(serverless))
    assert caught.value.field == field
    assert aws.mutating_calls(since=mark) == []


@pytest.mark.parametrize(
    ("extra", "field"),
    [
        ({"autoscaling": {"min_replicas": 1, "max_replicas": 3}}, "autoscaling"),
        ({"compute": {"size": "gpu-small"}}, "compute.size"),
        ({"compute": {"replicas": 2}}, "compute.replicas"),
        ({"sagemaker": {"instance_type": "ml.c5.xlarge"}}, "provider_options.sagemaker.instance_type"),
        ({"sagemaker": {"volume_size_gb": 30}}, "provider_options.sagemaker.volume_size_gb"),
        (
            {
                "variants": [
                    {"name": "a", "model": "iris:1", "weight": 50},
                    {"name": "b", "model": "iris:2", "weight": 50},
                ]
            },
            "variants",
        ),
        ({"rollout": {"strategy": "canary", "percent": 10, "bake": 60}}, "rollout"),
    ],
)
def test_what_sagemaker_refuses_with_serverless_fails_at_plan_time(
    registered: mlshift.Client, aws: FakeSageMaker, extra: dict[str, Any], field: str
) -> None:
    mark = len(aws.calls)
    with pytest.raises(ConfigError) as caught:
        registered.plan(spec(**extra))
    assert caught.value.field == field
    assert "serverless" in str(caught.value)
    assert aws.mutating_calls(since=mark) == []
    assert aws.resources()["endpoints"] == []


def test_the_neutral_serverless_field_needs_the_sagemaker_settings(
    registered: mlshift.Client, aws: FakeSageMaker
) -> None:
    bare = EndpointSpec.model_validate(
        {"name": "iris-ep", "variants": [{"name": "main", "model": "iris:1"}], "serverless": True}
    )
    mark = len(aws.calls)
    with pytest.raises(ConfigError, match="needs the memory and concurrency") as refused:
        registered.plan(bare)
    assert refused.value.field == "provider_options.sagemaker.serverless"
    assert aws.mutating_calls(since=mark) == []
    registered.apply(spec().model_copy(update={"serverless": True}))
    (variant,) = live_variants(aws)
    assert variant["ServerlessConfig"] == {"MemorySizeInMB": 2048, "MaxConcurrency": 5}
