"""Data capture: DataCaptureConfig on the endpoint configuration, validated at plan time."""

from __future__ import annotations

from typing import Any

import pytest

import mlshift
from mlshift.errors import ConfigError
from mlshift.specs import EndpointSpec
from mlshift_sagemaker.testing import FakeSageMaker


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


@pytest.fixture
def registered(client: mlshift.Client, iris: dict[str, Any]) -> mlshift.Client:
    client.models.register("iris", iris["v1"], framework="sklearn")
    client.models.register("iris", iris["v2"], framework="sklearn")
    return client


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
