"""The testing kit: the runner, the fixture, the rules the fake enforces under the real SDK."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import mlshift
from mlshift.errors import ConfigError, Conflict, NotFound
from mlshift_vertex.testing import FakeVertex

ROOT = Path(__file__).resolve().parents[3]
TARGET = "vertex://my-project/us-central1"
PARENT = "projects/my-project/locations/us-central1"


def run_under_kit(cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``python -m mlshift_vertex.testing run ARGS`` as a user runs it: a fresh process, no
    Google or mlshift settings inherited from this one."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "MLSHIFT_"))}
    return subprocess.run(
        [sys.executable, "-m", "mlshift_vertex.testing", "run", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


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
    assert f"target: {TARGET}" in out
    assert "(served by iris-v1)" in out
    split = {
        line.split()[1]: line.split()[4] for line in out.splitlines() if line.strip().startswith("variant")
    }
    assert split == {"iris-v1": "80%", "iris-v2": "20%"}
    assert "deleted endpoint iris-quickstart" in out


def test_the_cli_runs_against_the_fake(tmp_path: Path, iris: dict[str, Any]) -> None:
    args = ("-m", "mlshift.cli", "models", "register", "iris", str(iris["v1"]), "--target", TARGET)
    result = run_under_kit(tmp_path, *args, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "iris:1" in result.stdout


def test_the_pytest_fixture_is_installed(fake_vertex: FakeVertex, iris: dict[str, Any]) -> None:
    with mlshift.connect("vertex://other-project/europe-west4") as client:
        version = client.models.register("iris", iris["v1"], framework="sklearn")
    assert version.version == "1"
    assert "projects/other-project/locations/europe-west4/models/iris@1" in fake_vertex.models()


def test_state_lives_and_dies_with_the_fake(iris: dict[str, Any]) -> None:
    with FakeVertex(), mlshift.connect(TARGET) as client:
        client.models.register("iris", iris["v1"], framework="sklearn")
    with FakeVertex(), mlshift.connect(TARGET) as client:
        assert client.models.list() == []


# --------------------------------------------------------------------------------------------
# Vertex's rules, enforced on requests the real SDK sends


def _sdk(kind: str) -> Any:
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import aiplatform_v1

    options = ClientOptions(api_endpoint=os.environ["MLSHIFT_VERTEX_API_ENDPOINT"])
    make = {"model": aiplatform_v1.ModelServiceClient, "endpoint": aiplatform_v1.EndpointServiceClient}[kind]
    return make(credentials=AnonymousCredentials(), transport="rest", client_options=options)


def test_aliases_follow_vertex_rules(deployed: mlshift.Client, vertex: FakeVertex) -> None:
    from google.api_core import exceptions

    models = _sdk("model")
    name = f"{PARENT}/models/iris"
    with pytest.raises(exceptions.BadRequest, match="Invalid version alias"):
        models.merge_version_aliases(name=f"{name}@1", version_aliases=["2024"])
    with pytest.raises(exceptions.BadRequest, match="default alias cannot be removed"):
        models.merge_version_aliases(name=f"{name}@1", version_aliases=["-default"])
    models.merge_version_aliases(name=f"{name}@2", version_aliases=["champion"])
    with pytest.raises(exceptions.BadRequest, match="already used by version 2"):
        models.merge_version_aliases(name=f"{name}@1", version_aliases=["champion"])
    models.merge_version_aliases(name=f"{name}@2", version_aliases=["default"])  # default moves
    held = {v["versionId"]: v["versionAliases"] for v in vertex.models().values()}
    assert held == {"1": [], "2": ["champion", "default"]}


def test_traffic_split_rules(deployed: mlshift.Client, vertex: FakeVertex) -> None:
    from google.api_core import exceptions
    from google.cloud.aiplatform_v1 import types
    from google.protobuf import field_mask_pb2

    endpoints = _sdk("endpoint")
    name = f"{PARENT}/endpoints/iris-ep"
    live = endpoints.get_endpoint(name=name)
    only = live.deployed_models[0].id
    assert only.isdigit() and dict(live.traffic_split) == {only: 100}
    mask = field_mask_pb2.FieldMask(paths=["traffic_split"])
    bad = types.Endpoint(name=name, etag=live.etag, traffic_split={only: 90})
    with pytest.raises(exceptions.BadRequest, match="must sum to 100"):
        endpoints.update_endpoint(endpoint=bad, update_mask=mask)
    stale = types.Endpoint(name=name, etag="stale", traffic_split={only: 100})
    with pytest.raises(exceptions.Conflict, match="etag"):
        endpoints.update_endpoint(endpoint=stale, update_mask=mask)
    deployed.endpoints.deploy("iris-ep", "iris:2", traffic=10)
    live = endpoints.get_endpoint(name=name)
    assert sorted(live.traffic_split.values()) == [10, 90]
    with pytest.raises(exceptions.BadRequest, match="move it to other deployed models"):
        endpoints.undeploy_model(endpoint=name, deployed_model_id=only).result()
    with pytest.raises(exceptions.BadRequest, match="has deployed models"):
        endpoints.delete_endpoint(name=name).result()


def test_ids_are_checked_at_plan_time_before_any_call(
    client: mlshift.Client, vertex: FakeVertex, iris: dict[str, Any]
) -> None:
    with pytest.raises(ConfigError, match="Vertex AI model ids"):
        client.models.register("Iris.Model", iris["v1"], framework="sklearn")
    assert vertex.calls == []
    client.models.register("iris", iris["v1"], framework="sklearn")
    before = len(vertex.mutating_calls())
    with pytest.raises(ConfigError, match="Vertex AI endpoint ids"):
        client.endpoints.deploy("1-endpoint", "iris:1")
    assert len(vertex.mutating_calls()) == before


def test_slow_operations_are_polled_by_mlshift(
    client: mlshift.Client, vertex: FakeVertex, iris: dict[str, Any]
) -> None:
    vertex.slow_operations(3)
    client.models.register("iris", iris["v1"], framework="sklearn")
    client.endpoints.deploy("iris-ep", "iris:1")
    polls = [c for c in vertex.calls if "/operations/" in c.path]
    assert len(polls) == 3 * 3  # upload, create endpoint, deploy: 3 polls each
    assert {c.method for c in polls} == {"GET"}


def test_slow_operation_times_out_with_mlshifts_own_deadline(
    vertex: FakeVertex, iris: dict[str, Any]
) -> None:
    from mlshift.errors import ProviderTimeout

    with mlshift.connect(TARGET, options={"wait_timeout": 0.3, "poll_interval": 0.05}) as client:
        vertex.slow_operations(10**6)
        with pytest.raises(ProviderTimeout, match="upload a version of model 'iris'"):
            client.models.register("iris", iris["v1"], framework="sklearn")


def test_missing_things_are_not_found(client: mlshift.Client) -> None:
    with pytest.raises(NotFound):
        client.endpoints.get("nope")
    with pytest.raises(NotFound):
        client.models.get("nope@champion")


def test_remove_last_variant_is_refused(deployed: mlshift.Client) -> None:
    with pytest.raises(Conflict, match="last one"):
        deployed.adapter.endpoints.remove_variant("iris-ep", "iris-v1")
