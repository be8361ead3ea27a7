"""The registry on workspace models: versions, tags, aliases, artifacts stored once."""

from __future__ import annotations

from typing import Any

import pytest

import mlshift
from conftest import azureml
from mlshift.errors import ConfigError, Conflict
from mlshift_azureml._models import ALIAS_TAG, DIGEST
from mlshift_azureml.testing import FakeAzureML


def test_model_names_are_checked_before_any_call(
    client: mlshift.Client, azure: FakeAzureML, iris: Any
) -> None:
    with pytest.raises(ConfigError, match="Azure ML model names"):
        client.models.register("iris.v2", iris["v1"], framework="sklearn")
    assert azure.mutating_calls() == []


def test_an_unchanged_artifact_is_uploaded_once(
    client: mlshift.Client, azure: FakeAzureML, iris: Any
) -> None:
    first = client.models.register("iris", iris["v1"], framework="sklearn")
    uploaded = azure.uploaded_bytes()
    assert uploaded >= iris["v1"].stat().st_size
    mark = len(azure.calls)
    second = client.models.register("iris", iris["v1"], framework="sklearn", metrics={"accuracy": 0.9})
    assert azure.uploaded_bytes(since=mark) < 1000  # only the new version card, not the model
    assert first.digest == second.digest and first.artifact_uri == second.artifact_uri
    assert (
        second.artifact_uri.startswith("azureml://")
        and "/paths/mlshift/artifacts/sha256/" in second.artifact_uri
    )


def test_versions_are_azure_models_with_mlshift_tags(client: mlshift.Client, iris: Any) -> None:
    client.models.register("iris", iris["v1"], framework="sklearn", tags={"team": "fraud"})
    model = azureml(client).clients.ml().models.get("iris", version="1")
    assert model.tags[DIGEST].startswith("sha256:") and model.tags["team"] == "fraud"
    assert model.type == "custom_model"


def test_moving_an_alias_never_shows_two_or_none(client: mlshift.Client, iris: Any) -> None:
    client.models.register("iris", iris["v1"], framework="sklearn")
    client.models.register("iris", iris["v2"], framework="sklearn")
    client.models.set_alias("iris", "champion", "1")
    registry = azureml(client).models
    seen: list[tuple[str, list[str]]] = []
    retag = registry._retag

    def watching(model: Any, tags: dict[str, str]) -> None:
        retag(model, tags)
        # A second reader, between the writes Azure sees one at a time.
        with mlshift.connect(client.target) as reader:
            holders = [v.version for v in reader.models.list("iris") if "champion" in v.aliases]
            seen.append((reader.models.get("iris@champion").version, holders))

    registry._retag = watching  # type: ignore[method-assign]
    client.models.set_alias("iris", "champion", "2")
    assert seen == [("2", ["2"]), ("2", ["2"])]
    assert client.models.get("iris@champion").version == "2"
    raw = azureml(client).clients.ml().models.get("iris", version="1")
    assert ALIAS_TAG + "champion" not in raw.tags


def test_deleting_archives_and_numbers_go_on(client: mlshift.Client, iris: Any) -> None:
    client.models.register("iris", iris["v1"], framework="sklearn")
    client.models.register("iris", iris["v2"], framework="sklearn")
    client.models.delete("iris:2")
    assert [v.version for v in client.models.list("iris")] == ["1"]
    # Azure keeps archived versions, so the next number is 3, not 2 again.
    assert client.models.register("iris", iris["v2"], framework="sklearn").version == "3"


def test_a_served_version_cannot_be_deleted(client: mlshift.Client, iris: Any) -> None:
    client.models.register("iris", iris["v1"], framework="sklearn")
    client.endpoints.deploy("iris-ep", "iris:1")
    with pytest.raises(Conflict, match="served by iris-ep/iris-v1"):
        client.models.delete("iris:1")
