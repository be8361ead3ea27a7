"""The registry: model package groups and packages, S3 artifacts, aliases and approval."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import mlshift
from mlshift.errors import ConfigError, Conflict, NotFound
from mlshift_sagemaker.testing import FakeSageMaker
from sagemaker_helpers import sagemaker


def model_file(folder: Path, name: str, size: int) -> Path:
    """A file of ``size`` bytes (not a loadable model: for upload tests)."""
    path = folder / name
    path.write_bytes(bytes(range(256)) * (size // 256) + b"x" * (size % 256))
    return path


def test_a_version_is_a_model_package_with_its_metrics_and_metadata(
    client: mlshift.Client, aws: FakeSageMaker, iris: dict[str, Any]
) -> None:
    version = client.models.register(
        "iris", iris["v1"], framework="sklearn", metrics={"accuracy": 0.97}, tags={"team": "ml"}
    )
    sm = sagemaker(client).clients.client("sagemaker")
    package = sm.describe_model_package(
        ModelPackageName="arn:aws:sagemaker:us-east-1:123456789012:model-package/iris/1"
    )
    assert package["ModelApprovalStatus"] == "PendingManualApproval"
    assert package["CustomerMetadataProperties"]["mlshift:digest"] == version.digest
    statistics = package["ModelMetrics"]["ModelQuality"]["Statistics"]["S3Uri"]
    assert statistics.startswith("s3://sagemaker-us-east-1-123456789012/mlshift/cards/")
    container = package["InferenceSpecification"]["Containers"][0]
    assert (
        container["Image"]
        == "123456789012.dkr.ecr.us-east-1.amazonaws.com/mlshift-serving:" + mlshift.__version__
    )
    assert container["ModelDataSource"]["S3DataSource"]["CompressionType"] == "None"
    again = client.models.get("iris:1")
    assert (again.metrics, again.tags, again.signature) == (
        {"accuracy": 0.97},
        {"team": "ml"},
        version.signature,
    )


def test_artifacts_are_content_addressed_and_uploaded_once(
    client: mlshift.Client, aws: FakeSageMaker, iris: dict[str, Any]
) -> None:
    first = client.models.register("iris", iris["v1"], framework="sklearn")
    assert aws.bytes_uploaded() >= Path(iris["v1"]).stat().st_size
    digest_hex = first.digest.split(":")[1]
    assert f"/mlshift/artifacts/sha256/{digest_hex}/files/" in first.artifact_uri
    mark = len(aws.calls)
    second = client.models.register("iris", iris["v1"], framework="sklearn")
    other = client.models.register("copy", iris["v1"], framework="sklearn")
    assert second.version == "2" and other.artifact_uri == first.artifact_uri
    assert aws.bytes_uploaded(since=mark) == 0
    uploads = [
        c for c in aws.calls[mark:] if c.operation in ("PutObject", "UploadPart") and "/artifacts/" in str(c)
    ]
    assert uploads == []


def test_big_artifacts_go_up_in_parts(tmp_path: Path) -> None:
    with FakeSageMaker() as aws, mlshift.connect("sagemaker://us-east-1?multipart_threshold_mb=5") as client:
        path = model_file(tmp_path, "big.onnx", 12 * 1024 * 1024)
        from mlshift._artifacts import digest_path
        from mlshift.adapter import Artifact
        from mlshift.specs.model import ModelSpec

        spec = ModelSpec(name="big", path=str(path), framework="onnx")
        version = client.adapter.models.register(
            spec, Artifact(path=path, digest=digest_path(path), size=path.stat().st_size)
        )
        operations = aws.operations(service="s3")
        assert "CreateMultipartUpload" in operations and operations.count("UploadPart") >= 2
        assert "CompleteMultipartUpload" in operations
        assert aws.bytes_uploaded() >= path.stat().st_size
        local = client.adapter.models.artifact_path(version)
        assert local.read_bytes() == path.read_bytes()


def test_directory_artifacts_round_trip_and_serve(client: mlshift.Client, tmp_path: Path) -> None:
    folder = tmp_path / "predictor"
    (folder / "weights").mkdir(parents=True)
    (folder / "predictor.py").write_text(
        "class Predictor:\n"
        "    signature = {'inputs': [{'name': 'a'}, {'name': 'b'}]}\n"
        "    def load(self, path):\n"
        "        self.offset = float((path / 'weights' / 'offset.txt').read_text())\n"
        "    def predict(self, batch):\n"
        "        return [row[0] * 10 + row[1] + self.offset for row in batch]\n"
    )
    (folder / "weights" / "offset.txt").write_text("0.5")
    version = client.models.register("summer", folder, framework="predictor")
    assert version.artifact_uri.endswith("/files/")
    local = client.adapter.models.artifact_path(version)
    assert (local / "weights" / "offset.txt").read_text() == "0.5"
    client.endpoints.deploy("summer", "summer:1")
    assert client.endpoints.predict("summer", [[1, 2], [3, 4]]).predictions == [12.5, 34.5]


def test_aliases_are_group_tags_and_approved_is_the_approval_status(
    client: mlshift.Client, iris: dict[str, Any]
) -> None:
    client.models.register("iris", iris["v1"], framework="sklearn")
    second = client.models.register("iris", iris["v2"], framework="sklearn")
    sm = sagemaker(client).clients.client("sagemaker")
    group = "arn:aws:sagemaker:us-east-1:123456789012:model-package-group/iris"
    package = "arn:aws:sagemaker:us-east-1:123456789012:model-package/iris/"

    client.models.set_alias("iris", "champion", "2")
    assert {"Key": "mlshift:alias:champion", "Value": "2"} in sm.list_tags(ResourceArn=group)["Tags"]

    client.models.set_alias("iris", "approved", "1")
    assert sm.describe_model_package(ModelPackageName=package + "1")["ModelApprovalStatus"] == "Approved"
    client.models.set_alias("iris", "approved", "2")
    statuses = [sm.describe_model_package(ModelPackageName=package + v)["ModelApprovalStatus"] for v in "12"]
    assert statuses == ["PendingManualApproval", "Approved"]
    assert client.models.get("iris@approved").version == "2"
    assert client.models.get("iris:2").aliases == ("approved", "champion")
    # moto (and older SageMaker) drop CustomerMetadataProperties on approval updates: the digest
    # must survive, or the version could no longer be verified or deployed.
    assert client.models.get("iris:2").digest == second.digest
    assert client.adapter.models.find_by_digest("iris", second.digest) is not None

    client.models.remove_alias("iris", "approved")
    with pytest.raises(NotFound, match="no approved version"):
        client.models.get("iris@approved")


def test_a_version_approved_outside_mlshift_is_the_approved_alias(
    client: mlshift.Client, iris: dict[str, Any]
) -> None:
    client.models.register("iris", iris["v1"], framework="sklearn")
    sm = sagemaker(client).clients.client("sagemaker")
    sm.update_model_package(
        ModelPackageArn="arn:aws:sagemaker:us-east-1:123456789012:model-package/iris/1",
        ModelApprovalStatus="Approved",
    )  # as a reviewer in SageMaker Studio would
    assert client.models.get("iris@approved").version == "1"


def test_names_sagemaker_cannot_take_are_refused_before_any_call(
    client: mlshift.Client, aws: FakeSageMaker, iris: dict[str, Any]
) -> None:
    for name in ("iris_v2", "iris.v2", "x" * 64):
        with pytest.raises(ConfigError, match="SageMaker names use letters, digits and '-'") as caught:
            client.models.register(name, iris["v1"], framework="sklearn")
        assert caught.value.field == "name"
    assert aws.calls == []


def test_a_served_version_cannot_be_deleted(deployed: mlshift.Client) -> None:
    with pytest.raises(Conflict, match="iris-ep/iris-v1"):
        deployed.models.delete("iris:1")
    deployed.models.delete("iris:2")
    assert [v.version for v in deployed.models.list("iris")] == ["1"]


def test_packages_made_outside_mlshift_are_not_listed(client: mlshift.Client, iris: dict[str, Any]) -> None:
    client.models.register("iris", iris["v1"], framework="sklearn")
    sm = sagemaker(client).clients.client("sagemaker")
    sm.create_model_package(
        ModelPackageGroupName="iris",
        InferenceSpecification={
            "Containers": [{"Image": "123456789012.dkr.ecr.us-east-1.amazonaws.com/other:1"}],
            "SupportedContentTypes": ["text/csv"],
            "SupportedResponseMIMETypes": ["text/csv"],
        },
    )
    assert [v.version for v in client.models.list("iris")] == ["1"]
    assert client.models.get("iris").version == "1"
