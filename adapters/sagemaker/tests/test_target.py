"""The target: URI and options, lazy imports, the standard AWS chain, retries, error mapping."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import mlshift
from mlshift._registry import load_adapter
from mlshift.errors import AuthError, ConfigError, Conflict, NotFound, ProviderError, QuotaExceeded
from mlshift_sagemaker import AwsValidationError, SageMakerAdapter
from mlshift_sagemaker.errors import translate
from mlshift_sagemaker.testing import FakeSageMaker

ROLE = "arn:aws:iam::123456789012:role/deploy"


def modules_after(code: str) -> set[str]:
    probe = f"{code}\nimport sys, json\nprint(json.dumps(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    return set(json.loads(out.strip().splitlines()[-1]))


def test_importing_mlshift_and_the_adapter_loads_no_aws_sdk() -> None:
    heavy = {"boto3", "botocore", "moto", "s3transfer"}
    for code in (
        "import mlshift",
        "import mlshift_sagemaker",
        # what `mlshift` does to list targets with a capability, and connect() without a call
        "import mlshift\nfrom mlshift._registry import targets_with\nfrom mlshift.adapter import Capability\n"
        "targets_with(Capability.NATIVE_ROLLOUT)\nmlshift.connect('sagemaker://us-east-1')",
    ):
        loaded = {m.split(".")[0] for m in modules_after(code)}
        assert not loaded & heavy, (code, sorted(loaded & heavy))


def test_the_entry_point_makes_the_scheme_known() -> None:
    from mlshift._registry import available_adapters

    assert available_adapters()["sagemaker"] == "mlshift_sagemaker:SageMakerAdapter"
    adapter = load_adapter(f"sagemaker://eu-west-1?role_arn={ROLE}&bucket=my-models&prefix=team/a")
    assert isinstance(adapter, SageMakerAdapter)
    assert (adapter.region, adapter.options.role_arn) == ("eu-west-1", ROLE)
    assert (adapter.options.bucket, adapter.options.prefix) == ("my-models", "team/a")


def test_options_from_the_project_file_env_and_query_in_that_order(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MLSHIFT_SAGEMAKER_BUCKET", "from-env")
    monkeypatch.setenv("MLSHIFT_SAGEMAKER_MAX_ATTEMPTS", "7")
    adapter = load_adapter(
        "sagemaker://us-east-1?bucket=from-uri",
        {
            "bucket": "from-file",
            "tags": {"team": "ml"},
            "vpc_config": {"subnets": ["subnet-1"], "security_group_ids": ["sg-1"]},
        },
    )
    assert isinstance(adapter, SageMakerAdapter)
    assert adapter.options.bucket == "from-uri"
    assert adapter.options.max_attempts == 7
    assert adapter.options.tags == {"team": "ml"}
    assert adapter.options.vpc_config is not None and adapter.options.vpc_config.subnets == ("subnet-1",)


@pytest.mark.parametrize(
    ("uri", "options", "field", "words"),
    [
        ("sagemaker://us-east-1?rol_arn=x", {}, "target.options.rol_arn", "unknown field"),
        (
            "sagemaker://us-east-1",
            {"role_arn": "deploy-role"},
            "target.options.role_arn",
            "not an IAM role ARN",
        ),
        ("sagemaker://us-east-1?bucket=Bad_Bucket", {}, "target.options.bucket", "not a valid S3 bucket"),
        (
            "sagemaker://us-east-1?max_attempts=0",
            {},
            "target.options.max_attempts",
            "greater than or equal to 1",
        ),
        ("sagemaker://us-east-1", {"tags": {"mlshift:owner": "x"}}, "target.options.tags", "reserved prefix"),
        ("sagemaker://us-east-1", {"image_uri": "docker.io/me/server:1"}, "target.options.image_uri", "ECR"),
        ("sagemaker://us-east-1?tags=a", {}, "target.options.tags", "cannot be given in the URI query"),
        (
            "sagemaker://us-east-1",
            {"aws_secret_access_key": "x"},
            "target.options.aws_secret_access_key",
            "never",
        ),
        ("sagemaker://nowhere", {}, "target", "not an AWS region"),
        ("sagemaker://us-east-1/path", {}, "target", "no path"),
    ],
)
def test_bad_target_options_name_the_field(uri: str, options: dict[str, Any], field: str, words: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_adapter(uri, options)
    assert caught.value.field == field
    assert words in str(caught.value)


def test_unknown_option_lists_the_known_ones() -> None:
    with pytest.raises(ConfigError) as caught:
        load_adapter("sagemaker://us-east-1", {"rolearn": ROLE})
    assert "role_arn" in (caught.value.hint or "") and "bucket" in (caught.value.hint or "")


def test_region_comes_from_the_standard_variables_when_the_uri_has_none(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AWS_REGION", "ap-southeast-2")
    adapter = load_adapter("sagemaker://")
    assert isinstance(adapter, SageMakerAdapter) and adapter.region == "ap-southeast-2"


def test_clients_use_bounded_standard_retries(aws: FakeSageMaker) -> None:
    adapter = load_adapter("sagemaker://us-east-1?max_attempts=4")
    assert isinstance(adapter, SageMakerAdapter)
    config = adapter.clients.client("sagemaker").meta.config
    assert config.retries == {"mode": "standard", "total_max_attempts": 4}


def test_the_standard_credential_chain_and_profiles(
    aws: FakeSageMaker, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "credentials").write_text("[team]\naws_access_key_id = AKIDTEAM\naws_secret_access_key = s\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "credentials"))
    adapter = load_adapter("sagemaker://us-east-1", {"profile": "team"})
    assert isinstance(adapter, SageMakerAdapter)
    assert adapter.clients.session.get_credentials().access_key == "AKIDTEAM"
    assert "AKIDTEAM" not in repr(adapter.options.model_dump())  # never stored by mlshift


def test_missing_credentials_are_an_auth_error(
    aws: FakeSageMaker, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    with mlshift.connect("sagemaker://us-east-1") as client, pytest.raises(AuthError) as caught:
        client.models.list()
    assert "no AWS credentials" in str(caught.value) and "AWS_PROFILE" in (caught.value.hint or "")


def test_aws_endpoint_url_is_honoured(tmp_path: Path, iris: dict[str, Any]) -> None:
    """The adapter talks to whatever AWS_ENDPOINT_URL points at: here moto_server on loopback."""
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    env = {
        **os.environ,
        "AWS_ENDPOINT_URL": f"http://{host}:{port}",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
    }
    code = (
        "import mlshift\n"
        "c = mlshift.connect('sagemaker://us-east-1')\n"
        f"v = c.models.register('iris', {str(iris['v1'])!r}, framework='sklearn')\n"
        "print(v.version, v.artifact_uri)\n"
    )
    try:
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120, check=False
        )
    finally:
        server.stop()
    assert out.returncode == 0, out.stderr
    version, uri = out.stdout.split()
    assert version == "1" and uri.startswith("s3://sagemaker-us-east-1-")


# ------------------------------------------------------------------------------------------------
# Errors


def client_error(code: str, message: str, status: int = 400) -> Exception:
    from botocore.exceptions import ClientError

    return ClientError(
        {"Error": {"Code": code, "Message": message}, "ResponseMetadata": {"HTTPStatusCode": status}},
        "CreateEndpoint",
    )


@pytest.mark.parametrize(
    ("code", "message", "expected"),
    [
        ("ThrottlingException", "Rate exceeded", QuotaExceeded),
        (
            "ResourceLimitExceeded",
            "The account-level service limit 'ml.g5.xlarge for endpoint usage' is 0",
            QuotaExceeded,
        ),
        ("ValidationException", "Could not find endpoint 'x'.", NotFound),
        ("ValidationException", "Cannot create already existing endpoint 'x'.", Conflict),
        (
            "ValidationException",
            "1 validation error detected: Value 'ml.x' at 'instanceType'",
            AwsValidationError,
        ),
        ("AccessDeniedException", "User is not authorized to perform sagemaker:CreateEndpoint", AuthError),
        ("ExpiredTokenException", "The security token included in the request is expired", AuthError),
        ("ResourceInUse", "Resource in use", Conflict),
        ("NoSuchKey", "The specified key does not exist.", NotFound),
        ("InternalFailure", "We encountered an internal error.", ProviderError),
    ],
)
def test_aws_errors_map_onto_the_tree_keeping_code_and_original(
    code: str, message: str, expected: type
) -> None:
    original = client_error(code, message)
    mapped = translate(original, "create endpoint 'fraud'")
    assert type(mapped) is expected
    assert getattr(mapped, "provider_code", None) == code
    assert getattr(mapped, "orig", None) is original
    assert str(mapped).startswith(f"create endpoint 'fraud': {message} (AWS {code})")


def test_requests_botocore_refuses_are_config_errors() -> None:
    from botocore.exceptions import ParamValidationError

    mapped = translate(ParamValidationError(report="Invalid length for parameter EndpointName"), "x")
    assert isinstance(mapped, AwsValidationError) and "Invalid length" in str(mapped)


def test_validation_errors_are_config_errors() -> None:
    mapped = translate(client_error("ValidationException", "bad"), "x")
    assert isinstance(mapped, ConfigError) and isinstance(mapped, ValueError)
    assert mapped.to_dict()["provider_code"] == "ValidationException"
