"""A target written by a third party against the public contract only, installed through an
entry point, passes the same conformance suite and rollouts as the targets mlshift ships."""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import mlshift
from mlshift.specs.rollout import Canary, HealthGate
from mlshift.testing.conformance import EndpointConformance, JournalConformance, RegistryConformance
from mlshift.testing.rollouts import canary_under_load
from rollout_models import predictor

ADAPTER = Path(__file__).with_name("files_adapter.py")


@pytest.fixture(autouse=True)
def installed(tmp_path_factory: pytest.TempPathFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    """``files`` in the ``mlshift.adapters`` entry-point group, as ``pip install`` would put it."""
    site = tmp_path_factory.mktemp("site")
    dist = site / "mlshift_files-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: mlshift-files\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[mlshift.adapters]\nfiles = files_adapter:FilesAdapter\n")
    monkeypatch.syspath_prepend(str(site))
    monkeypatch.syspath_prepend(str(ADAPTER.parent))


def test_the_adapter_imports_only_public_mlshift_modules() -> None:
    tree = ast.parse(ADAPTER.read_text())
    modules = [
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("mlshift")
    ] + [
        alias.name
        for node in ast.walk(tree)
        if isinstance(node, ast.Import)
        for alias in node.names
        if alias.name.startswith("mlshift")
    ]
    assert modules, "the adapter is built on mlshift's modules"
    private = [m for m in modules if any(part.startswith("_") for part in m.split("."))]
    assert private == []
    assert "type: ignore" not in ADAPTER.read_text()


def test_it_is_found_by_scheme_like_any_installed_adapter() -> None:
    from mlshift.adapter import Adapter

    with mlshift.connect("files://") as client:
        assert isinstance(client.adapter, Adapter)
        assert client.adapter.name == "files"


class TestFilesRegistry(RegistryConformance):
    @pytest.fixture
    def client(self) -> Iterator[mlshift.Client]:
        with mlshift.connect("files://") as client:
            yield client


class TestFilesEndpoints(EndpointConformance):
    @pytest.fixture
    def client(self) -> Iterator[mlshift.Client]:
        with mlshift.connect("files://") as client:
            yield client


class TestFilesJournal(JournalConformance):
    @pytest.fixture
    def client(self, tmp_path: Path) -> Iterator[mlshift.Client]:
        # A folder store: the lease lock must hold across clients, as it would across processes.
        with mlshift.connect(f"files://{tmp_path / 'state'}") as client:
            yield client


def _gated(percent: int = 50) -> Canary:
    return Canary(percent=percent, bake="1s", gate=HealthGate(max_error_rate=0.0, min_requests=20))


def test_a_canary_on_it_promotes_a_good_version(tmp_path: Path, iris: dict[str, Any]) -> None:
    with mlshift.connect(f"files://{tmp_path / 'state'}") as client:
        client.models.register("iris", iris["v1"], framework="sklearn")
        client.models.register("iris", iris["v2"], framework="sklearn")
        client.endpoints.deploy("iris", "iris:1")

        # Callers keep calling while the canary bakes; the bake ends once the gate has its 20.
        outcome = canary_under_load(client, "iris", "iris:2", _gated(), rows=iris["rows"][:1])
        assert outcome.failure is None, outcome.failure
        assert outcome.state is not None
        assert [(v.model, v.weight) for v in outcome.state.variants] == [("iris:2", 100)]
        assert client.endpoints.predict("iris", iris["rows"]).predictions == iris["expected_v2"]
        assert outcome.served("iris-v2") > 0 and not outcome.errors
        record = client.endpoints.history("iris")[0]
        assert record.phase == "succeeded"
        assert record.measurements["requests"] >= 20, "the gate read the target's metrics"

    # The state is in the folder: a new client (as a new process would) sees the same endpoint.
    with mlshift.connect(f"files://{tmp_path / 'state'}") as again:
        assert [(v.model, v.weight) for v in again.endpoints.get("iris").variants] == [("iris:2", 100)]


def test_a_canary_on_it_rolls_back_a_failing_version(tmp_path: Path, iris: dict[str, Any]) -> None:
    broken = predictor(tmp_path, "failing")
    with mlshift.connect(f"files://{tmp_path / 'state'}") as client:
        client.models.register("iris", iris["v1"], framework="sklearn")
        client.models.register("iris", str(broken), framework="predictor")
        client.endpoints.deploy("iris", "iris:1")

        outcome = canary_under_load(client, "iris", "iris:2", _gated(), rows=iris["rows"][:1])
        assert outcome.failure is not None and "error rate" in str(outcome.failure), outcome.failure
        assert outcome.errors  # callers sent to the broken version saw it fail
        state = client.endpoints.get("iris")
        assert [(v.model, v.weight) for v in state.variants] == [("iris:1", 100)]
        assert client.endpoints.predict("iris", iris["rows"]).predictions == iris["expected_v1"]
        assert [r.phase for r in client.endpoints.history("iris")][:1] == ["rolled_back"]
