"""Data capture: DataCaptureConfig on the endpoint configuration, validated at plan time."""

from __future__ import annotations

import json
from typing import Any

import pytest

import mlshift
from mlshift.errors import ConfigError
from mlshift.specs import EndpointSpec
from mlshift_sagemaker.testing import FakeSageMaker
from sagemaker_helpers import sagemaker


def spec(capture: dict[str, Any] | None, model: str = "iris:1", **sagemaker: Any) -> EndpointSpec:
    options = {**sagemaker, **({"data_capture": capture} if capture is not None else {})}
    return EndpointSpec.model_validate(
        {
            "name": "iris-ep",
            "variants": [{"name": "main", "model": model}],
            "provider_options": {"sagemaker": options},
        }
    )


def live_capture(aws: FakeSageMaker) -> dict[str, Any]:
    backend = aws.backend()
    config = backend.endpoint_configs[backend.endpoints["iris-ep"].endpoint_config_name]
    return dict(config.data_capture_config)


def test_data_capture_defaults_to_the_targets_bucket_and_prefix(
    registered: mlshift.Client, aws: FakeSageMaker, iris: dict[str, Any]
) -> None:
    registered.apply(spec({"sampling_percent": 20}))
    assert live_capture(aws) == {
        "EnableCapture": True,
        "InitialSamplingPercentage": 20,
        "DestinationS3Uri": f"s3://sagemaker-us-east-1-{aws.account_id}/mlshift/data-capture/iris-ep",
        "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
    }
    assert registered.endpoints.predict("iris-ep", iris["rows"]).predictions == iris["expected_v1"]


def test_an_explicit_destination_and_one_mode(registered: mlshift.Client, aws: FakeSageMaker) -> None:
    registered.apply(
        spec({"s3_uri": "s3://acme-capture/fraud", "sampling_percent": 100, "capture": ["output"]})
    )
    capture = live_capture(aws)
    assert capture["DestinationS3Uri"] == "s3://acme-capture/fraud"
    assert capture["CaptureOptions"] == [{"CaptureMode": "Output"}]
    assert capture["InitialSamplingPercentage"] == 100


def test_reapplying_an_unchanged_spec_with_data_capture_makes_no_call(
    registered: mlshift.Client, aws: FakeSageMaker
) -> None:
    registered.apply(spec({"sampling_percent": 20}))
    mark = len(aws.calls)
    assert registered.plan(spec({"sampling_percent": 20})).is_empty
    assert not registered.apply(spec({"sampling_percent": 20})).changed
    assert aws.mutating_calls(since=mark) == []
    assert aws.bytes_uploaded(since=mark) == 0


def test_a_new_configuration_keeps_capturing(registered: mlshift.Client, aws: FakeSageMaker) -> None:
    registered.apply(spec({"sampling_percent": 20}))
    first = aws.backend().endpoints["iris-ep"].endpoint_config_name
    registered.apply(spec({"sampling_percent": 20}, model="iris:2"))
    assert aws.backend().endpoints["iris-ep"].endpoint_config_name != first
    assert live_capture(aws)["InitialSamplingPercentage"] == 20
    registered.endpoints.deploy("iris-ep", "iris:1", variant="main")  # a spec without options
    assert live_capture(aws)["InitialSamplingPercentage"] == 20


def test_without_data_capture_the_configuration_has_none(
    registered: mlshift.Client, aws: FakeSageMaker
) -> None:
    registered.apply(spec(None))
    assert live_capture(aws) == {}


@pytest.mark.parametrize(
    ("capture", "field"),
    [
        ({"sampling_percent": 101}, "provider_options.sagemaker.data_capture.sampling_percent"),
        ({}, "provider_options.sagemaker.data_capture.sampling_percent"),
        ({"sampling_percent": 5, "capture": []}, "provider_options.sagemaker.data_capture.capture"),
        ({"sampling_percent": 5, "capture": ["headers"]}, "provider_options.sagemaker.data_capture.capture"),
        (
            {"sampling_percent": 5, "capture": ["input", "input"]},
            "provider_options.sagemaker.data_capture.capture",
        ),
        (
            {"sampling_percent": 5, "s3_uri": "https://bucket/x"},
            "provider_options.sagemaker.data_capture.s3_uri",
        ),
    ],
)
def test_bad_data_capture_fails_at_plan_time_naming_the_field(
    registered: mlshift.Client, aws: FakeSageMaker, capture: dict[str, Any], field: str
) -> None:
    mark = len(aws.calls)
    with pytest.raises(ConfigError) as caught:
        registered.plan(spec(capture))
    assert caught.value.field is not None and caught.value.field.startswith(field)
    assert aws.mutating_calls(since=mark) == []


def test_serverless_endpoints_refuse_data_capture(registered: mlshift.Client, aws: FakeSageMaker) -> None:
    with pytest.raises(ConfigError) as caught:
        registered.plan(spec({"sampling_percent": 5}, serverless={"memory_mb": 1024, "max_concurrency": 1}))
    assert caught.value.field == "provider_options.sagemaker.data_capture"


# ------------------------------------------------------------------ changing options of a live endpoint


def sagemaker_ops(aws: FakeSageMaker, since: int) -> list[str]:
    return [c.operation for c in aws.mutating_calls(since=since, service="sagemaker")]


def described_capture(client: mlshift.Client) -> dict[str, Any]:
    """``DataCaptureConfig`` as SageMaker's own API describes the endpoint's configuration."""
    sm = sagemaker(client).clients.client("sagemaker")
    config = sm.describe_endpoint(EndpointName="iris-ep")["EndpointConfigName"]
    return dict(sm.describe_endpoint_config(EndpointConfigName=config).get("DataCaptureConfig") or {})


def test_a_data_capture_only_change_is_planned_applied_and_then_settled(
    registered: mlshift.Client, aws: FakeSageMaker, iris: dict[str, Any]
) -> None:
    registered.apply(spec({"sampling_percent": 20}))
    first = aws.backend().endpoints["iris-ep"].endpoint_config_name
    mark = len(aws.calls)
    plan = registered.plan(spec({"sampling_percent": 50}))
    assert aws.mutating_calls(since=mark) == []
    assert [a.kind for a in plan.actions] == ["update_options"]
    assert "provider_options.sagemaker.data_capture.sampling_percent 20 -> 50" in plan.render()
    assert plan.to_json()["actions"][0]["changes"] == [
        {"field": "provider_options.sagemaker.data_capture.sampling_percent", "old": "20", "new": "50"}
    ]

    mark = len(aws.calls)
    registered.apply(plan)
    # same models, one new configuration, the old one retired
    assert sagemaker_ops(aws, mark) == ["CreateEndpointConfig", "UpdateEndpoint", "DeleteEndpointConfig"]
    assert described_capture(registered)["InitialSamplingPercentage"] == 50
    assert first not in aws.backend().endpoint_configs
    assert registered.endpoints.predict("iris-ep", iris["rows"]).predictions == iris["expected_v1"]
    assert registered.endpoints.get("iris-ep").weights == {"main": 100}

    mark = len(aws.calls)
    assert registered.plan(spec({"sampling_percent": 50})).is_empty
    assert not registered.apply(spec({"sampling_percent": 50})).changed
    assert aws.mutating_calls(since=mark) == []


def test_data_capture_is_turned_on_and_off_on_a_live_endpoint(
    registered: mlshift.Client, aws: FakeSageMaker, iris: dict[str, Any]
) -> None:
    registered.apply(spec(None))
    plan = registered.plan(spec({"sampling_percent": 10, "capture": ["input"]}))
    default = f"s3://sagemaker-us-east-1-{aws.account_id}/mlshift/data-capture/iris-ep"
    assert [(c.field.rsplit(".", 1)[1], c.old, c.new) for c in plan.actions[0].changes] == [  # type: ignore[union-attr]
        ("sampling_percent", None, "10"),
        ("s3_uri", None, default),
        ("capture", None, "[input]"),
    ]
    assert "data_capture.sampling_percent (unset) -> 10" in plan.render()
    registered.apply(plan)
    assert described_capture(registered)["CaptureOptions"] == [{"CaptureMode": "Input"}]

    off = registered.plan(spec(None))  # provider_options: {sagemaker: {}} drops it
    assert [a.kind for a in off.actions] == ["update_options"]
    registered.apply(off)
    assert described_capture(registered) == {}
    assert registered.plan(spec(None)).is_empty
    assert registered.endpoints.predict("iris-ep", iris["rows"]).predictions == iris["expected_v1"]


def test_a_new_version_and_new_options_make_one_configuration(
    registered: mlshift.Client, aws: FakeSageMaker, iris: dict[str, Any]
) -> None:
    registered.apply(spec({"sampling_percent": 20}))
    plan = registered.plan(spec({"sampling_percent": 50}, model="iris:2"))
    assert [a.kind for a in plan.actions] == ["replace_variant", "update_options"]
    mark = len(aws.calls)
    registered.apply(plan)
    # the variant's new configuration carries the options: the option step finds nothing left to do
    assert sagemaker_ops(aws, mark).count("UpdateEndpoint") == 1
    assert described_capture(registered)["InitialSamplingPercentage"] == 50
    assert registered.endpoints.predict("iris-ep", iris["rows"]).predictions == iris["expected_v2"]
    assert registered.plan(spec({"sampling_percent": 50}, model="iris:2")).is_empty


def test_an_option_change_sagemaker_rolled_back_is_still_planned(
    registered: mlshift.Client, aws: FakeSageMaker, iris: dict[str, Any]
) -> None:
    registered.apply(spec({"sampling_percent": 20}))
    config = aws.backend().endpoints["iris-ep"].endpoint_config_name
    aws.never_healthy("iris-ep")
    with pytest.raises(mlshift.MlshiftError):
        registered.apply(spec({"sampling_percent": 50}))
    aws.healthy_again()
    assert aws.backend().endpoints["iris-ep"].endpoint_config_name == config
    assert registered.endpoints.predict("iris-ep", iris["rows"]).predictions == iris["expected_v1"]
    # live state is the truth: the change that did not happen is still in the plan
    assert [a.kind for a in registered.plan(spec({"sampling_percent": 50})).actions] == ["update_options"]


def test_environment_changes_are_applied_without_showing_their_values(
    registered: mlshift.Client, aws: FakeSageMaker, iris: dict[str, Any]
) -> None:
    registered.apply(spec(None, environment={"API_TOKEN": "old-secret"}))
    models = aws.resources()["models"]
    mark = len(aws.calls)
    plan = registered.plan(spec(None, environment={"API_TOKEN": "new-secret", "LOG_LEVEL": "debug"}))
    assert aws.mutating_calls(since=mark) == []  # planning prepares no model
    text = plan.render() + json.dumps(plan.to_json())
    assert "secret" not in text and "debug" not in text
    assert "provider_options.sagemaker.environment.API_TOKEN (hidden) -> (hidden)" in text
    assert "provider_options.sagemaker.environment.LOG_LEVEL (unset) -> (hidden)" in text
    registered.apply(plan)
    (model,) = aws.resources()["models"]
    assert [model] != models  # a new model of the same version; the old one is deleted
    environment = aws.backend()._models[model].primary_container["Environment"]
    assert (environment["API_TOKEN"], environment["MLSHIFT_MODEL_REF"]) == ("new-secret", "iris:1")
    assert registered.endpoints.predict("iris-ep", iris["rows"]).predictions == iris["expected_v1"]
    assert registered.plan(spec(None, environment={"API_TOKEN": "new-secret", "LOG_LEVEL": "debug"})).is_empty


def test_a_volume_size_change_is_applied_to_every_variant(
    registered: mlshift.Client, aws: FakeSageMaker
) -> None:
    registered.apply(spec(None))
    plan = registered.plan(spec(None, volume_size_gb=30))
    assert "provider_options.sagemaker.volume_size_gb (unset) -> 30" in plan.render()
    registered.apply(plan)
    backend = aws.backend()
    config = backend.endpoint_configs[backend.endpoints["iris-ep"].endpoint_config_name]
    assert [v.get("VolumeSizeInGB") for v in config.production_variants] == [30]
    assert registered.plan(spec(None, volume_size_gb=30)).is_empty


def test_serverless_memory_and_concurrency_change_on_a_live_endpoint(
    registered: mlshift.Client, aws: FakeSageMaker, iris: dict[str, Any]
) -> None:
    registered.apply(spec(None, serverless={"memory_mb": 2048, "max_concurrency": 5}))
    plan = registered.plan(spec(None, serverless={"memory_mb": 4096, "max_concurrency": 5}))
    assert [c.describe() for c in plan.actions[0].changes] == [  # type: ignore[union-attr]
        "provider_options.sagemaker.serverless.memory_mb 2048 -> 4096"
    ]
    registered.apply(plan)
    backend = aws.backend()
    config = backend.endpoint_configs[backend.endpoints["iris-ep"].endpoint_config_name]
    assert config.production_variants[0]["ServerlessConfig"] == {"MemorySizeInMB": 4096, "MaxConcurrency": 5}
    assert registered.endpoints.predict("iris-ep", iris["rows"]).predictions == iris["expected_v1"]
    assert registered.plan(spec(None, serverless={"memory_mb": 4096, "max_concurrency": 5})).is_empty
