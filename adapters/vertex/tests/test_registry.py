"""The registry on Vertex Model Registry: one model per name, native aliases, artifacts by digest."""

from __future__ import annotations

from typing import Any

import pytest

import mlshift
from mlshift.errors import ConfigError, Conflict
from mlshift_vertex.testing import FakeVertex

MODEL = "projects/my-project/locations/us-central1/models/iris"


def test_versions_live_under_one_model_with_labels(
    client: mlshift.Client, vertex: FakeVertex, iris: dict[str, Any]
) -> None:
    first = client.models.register("iris", iris["v1"], framework="sklearn", metrics={"accuracy": 0.97})
    client.models.register("iris", iris["v2"], framework="sklearn", tags={"Owner": "Team A"})
    models = vertex.models()
    assert sorted(models) == [f"{MODEL}@1", f"{MODEL}@2"]
    one = models[f"{MODEL}@1"]
    assert one["labels"]["mlshift-managed"] == "true"
    assert one["labels"]["mlshift-digest"] + one["labels"]["mlshift-digest2"] == first.digest.removeprefix(
        "sha256:"
    )
    assert (
        one["artifactUri"]
        == f"gs://mlshift-kit/artifacts/sha256/{first.digest.removeprefix('sha256:')}/files/"
    )
    assert one["versionAliases"] == ["default"]  # Vertex's: the first version holds it
    # Tags that are no valid labels live in the version card, not in labels.
    assert client.models.get("iris:2").tags == {"Owner": "Team A"}
    upload = [c for c in vertex.calls if c.path.endswith("models:upload")]
    assert len(upload) == 2


def test_aliases_are_native_version_aliases(
    client: mlshift.Client, vertex: FakeVertex, iris: dict[str, Any]
) -> None:
    client.models.register("iris", iris["v1"], framework="sklearn")
    client.models.register("iris", iris["v2"], framework="sklearn")
    client.models.set_alias("iris", "champion", "1")
    client.models.set_alias("iris", "champion", "2")
    held = {v["versionId"]: v["versionAliases"] for v in vertex.models().values()}
    assert held == {"1": ["default"], "2": ["champion"]}
    client.models.set_alias("iris", "default", "2")
    assert client.models.get("iris@default").version == "2"
    with pytest.raises(Conflict, match="cannot be removed"):
        client.models.remove_alias("iris", "default")


@pytest.mark.parametrize("alias", ["Champion", "a", "ends-with-", "with_underscore"])
def test_aliases_vertex_refuses_are_refused_before_any_call(
    client: mlshift.Client, vertex: FakeVertex, iris: dict[str, Any], alias: str
) -> None:
    client.models.register("iris", iris["v1"], framework="sklearn")
    before = len(vertex.calls)
    with pytest.raises(ConfigError, match="Vertex AI version aliases"):
        client.models.set_alias("iris", alias, "1")
    assert len(vertex.calls) == before


def test_deleting_the_default_version_moves_default(
    client: mlshift.Client, vertex: FakeVertex, iris: dict[str, Any]
) -> None:
    client.models.register("iris", iris["v1"], framework="sklearn")
    client.models.register("iris", iris["v2"], framework="sklearn")
    client.models.delete("iris:1")
    assert client.models.get("iris@default").version == "2"
    client.models.delete("iris:2")
    assert vertex.models() == {}
    assert client.models.list() == []


def test_a_served_version_cannot_be_deleted(deployed: mlshift.Client) -> None:
    with pytest.raises(Conflict, match="served by iris-ep"):
        deployed.models.delete("iris:1")


def test_list_every_model(client: mlshift.Client, iris: dict[str, Any]) -> None:
    client.models.register("iris", iris["v1"], framework="sklearn")
    client.models.register("other", iris["v2"], framework="sklearn")
    assert [str(v.ref) for v in client.models.list()] == ["iris:1", "other:1"]
