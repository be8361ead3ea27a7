"""The testing kit as users see it: scripts run unchanged, the fixture, faults, moto's gaps."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import mlshift
from mlshift.errors import AuthError, InvalidPayload, QuotaExceeded
from mlshift.specs.rollout import Canary
from mlshift_sagemaker.testing import FakeSageMaker
from sagemaker_helpers import ROOT, TARGET, run_under_kit, sagemaker


def test_the_quickstart_runs_unchanged_against_the_fake(tmp_path: Path) -> None:
    result = run_under_kit(
        tmp_path,
        str(ROOT / "examples" / "quickstart.py"),
        "--target",
        TARGET,
        "--requests",
        "100",
        timeout=300,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "target: sagemaker://us-east-1" in out
    assert "predictions [2, 1, 0] (served by iris-v1)" in out
    split = {line.split()[0]: line.split()[1] for line in out.splitlines() if "%)" in line}
    assert split == {"iris-v1": "80", "iris-v2": "20"}
    assert "deleted endpoint iris-quickstart" in out


def test_the_cli_runs_against_the_fake(tmp_path: Path, iris: dict[str, Any]) -> None:
    result = run_under_kit(
        tmp_path,
        *("-m", "mlshift.cli", "models", "register", "iris", str(iris["v1"]), "--target", TARGET),
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "iris:1" in result.stdout


def test_the_pytest_fixture_is_installed(fake_sagemaker: FakeSageMaker, iris: dict[str, Any]) -> None:
    with mlshift.connect("sagemaker://eu-west-1") as client:
        version = client.models.register("iris", iris["v1"], framework="sklearn")
    assert version.version == "1"
    assert "CreateModelPackage" in fake_sagemaker.operations(service="sagemaker")


def test_state_lives_and_dies_with_the_fake(iris: dict[str, Any]) -> None:
    with FakeSageMaker(), mlshift.connect("sagemaker://us-east-1") as client:
        client.models.register("iris", iris["v1"], framework="sklearn")
        with pytest.raises(RuntimeError, match="one at a time"), FakeSageMaker():
            pass
    with FakeSageMaker(), mlshift.connect("sagemaker://us-east-1") as client:
        assert client.models.list() == []


def test_model_errors_come_back_as_the_servers_answer(deployed: mlshift.Client, iris: dict[str, Any]) -> None:
    with pytest.raises(InvalidPayload, match="the model takes 4"):
        deployed.endpoints.predict("iris-ep", [[1.0, 2.0]])
    raw = deployed.endpoints.invoke("iris-ep", b"{not json")
    assert raw.status_code == 400 and b"error" in raw.body


def test_faults_on_s3_are_parsed_by_botocore(
    client: mlshift.Client, aws: FakeSageMaker, iris: dict[str, Any]
) -> None:
    aws.fail("PutObject", "AccessDenied", "Access Denied", status=403, service="s3")
    with pytest.raises(AuthError, match="Access Denied") as caught:
        client.models.register("iris", iris["v1"], framework="sklearn")
    assert caught.value.provider_code == "AccessDenied"
    assert aws.resources()["models"] == []


def test_faults_on_cloudwatch_stop_a_rollout_before_it_starts(
    client: mlshift.Client, aws: FakeSageMaker, iris: dict[str, Any]
) -> None:
    client.models.register("iris", iris["v1"], framework="sklearn")
    client.models.register("iris", iris["v2"], framework="sklearn")
    client.endpoints.deploy("iris-ep", "iris:1", variant="main")
    before = aws.resources()
    aws.fail(
        "PutMetricAlarm",
        "LimitExceeded",
        "The maximum number of alarms has been reached.",
        service="cloudwatch",
    )
    with pytest.raises(QuotaExceeded, match="maximum number of alarms"):
        client.endpoints.deploy("iris-ep", "iris:2", variant="main", rollout=Canary(bake="1m"))
    assert aws.resources() == before
    assert "UpdateEndpoint" not in aws.operations()


def test_creating_what_exists_fails_as_on_aws(client: mlshift.Client, aws: FakeSageMaker) -> None:
    from botocore.exceptions import ClientError

    sm = sagemaker(client).clients.client("sagemaker")
    container = {"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/x:1"}
    sm.create_model(ModelName="m", PrimaryContainer=container, ExecutionRoleArn=aws.role_arn)
    with pytest.raises(ClientError, match="already existing model"):
        sm.create_model(ModelName="m", PrimaryContainer=container, ExecutionRoleArn=aws.role_arn)


def test_update_endpoint_moves_through_updating(deployed: mlshift.Client, aws: FakeSageMaker) -> None:
    from botocore.exceptions import ClientError

    sm = sagemaker(deployed).clients.client("sagemaker")
    backend = aws.backend()
    live = backend.endpoint_configs[backend.endpoints["iris-ep"].endpoint_config_name]
    sm.create_endpoint_config(EndpointConfigName="by-hand", ProductionVariants=live.production_variants)
    sm.update_endpoint(EndpointName="iris-ep", EndpointConfigName="by-hand")
    assert sm.describe_endpoint(EndpointName="iris-ep")["EndpointStatus"] == "Updating"
    with pytest.raises(ClientError, match="in-progress"):
        sm.update_endpoint(EndpointName="iris-ep", EndpointConfigName="by-hand")
    sm.get_waiter("endpoint_in_service").wait(EndpointName="iris-ep", WaiterConfig={"Delay": 0})
    assert sm.describe_endpoint(EndpointName="iris-ep")["EndpointConfigName"] == "by-hand"


def test_binary_bodies_reach_the_model_server(deployed: mlshift.Client) -> None:
    import io

    import boto3
    import numpy as np
    from botocore.exceptions import ClientError

    runtime = boto3.client("sagemaker-runtime", region_name="us-east-1")
    npy = io.BytesIO()
    np.save(npy, np.asarray([[5.1, 3.5, 1.4, 0.2]]))
    ok = runtime.invoke_endpoint(EndpointName="iris-ep", Body=npy.getvalue(), ContentType="application/x-npy")
    assert ok["Body"].read() == b'{"predictions":[0]}'
    # A body the container refuses comes back as SageMaker's ModelError, carrying the
    # container's status and message, instead of failing in the caller.
    for content_type, status, message in (
        ("application/x-recordio-protobuf", 415, "does not read application/x-recordio-protobuf"),
        ("application/x-npy", 400, "not a .npy array"),
        ("application/json", 400, "not valid JSON"),
    ):
        with pytest.raises(ClientError) as caught:
            runtime.invoke_endpoint(
                EndpointName="iris-ep", Body=b"\x00\xff\xfe binary", ContentType=content_type
            )
        error = caught.value.response
        assert error["Error"]["Code"] == "ModelError"
        assert error["ResponseMetadata"]["HTTPStatusCode"] == 424
        assert error["OriginalStatusCode"] == status
        assert message in error["OriginalMessage"]
        assert f"Received client error ({status}) from primary" in error["Error"]["Message"]
