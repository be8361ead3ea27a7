"""The conformance suite every adapter passes: each behaviour is specified once, here.

Subclass the classes below in your adapter's tests and provide a ``client`` fixture that
yields a :class:`mlshift.Client` on a fresh, empty target::

    import pytest
    from mlshift.testing.conformance import EndpointConformance, RegistryConformance

    class TestMyAdapterRegistry(RegistryConformance):
        @pytest.fixture
        def client(self, tmp_path):
            with mlshift.connect(f"mytarget://...") as c:
                yield c

Tests that need a capability the adapter does not declare are skipped, naming it. The suite
needs scikit-learn and skops (``pip install "mlshift[sklearn]"``) to build its test model.
"""

from __future__ import annotations

import contextlib
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from mlshift._client import Client
from mlshift.adapter import (
    Adapter,
    Capability,
    EndpointService,
    ModelRegistry,
    PipelineService,
    ResolvedVariant,
)
from mlshift.errors import Conflict, IntegrityError, InvalidPayload, MlshiftError, NotFound
from mlshift.specs.endpoint import EndpointSpec

__all__ = [
    "AdapterConformance",
    "EndpointConformance",
    "JournalConformance",
    "ObjectStoreConformance",
    "RegistryConformance",
    "iris_models",
]


def iris_models(folder: Path) -> dict[str, Any]:
    """Train two small, different iris classifiers and save them as skops files.

    Returns:
        ``{"v1": path, "v2": path, "rows": sample rows, "expected_v1": labels, "expected_v2": labels}``
    """
    pytest.importorskip("sklearn")
    skops_io = pytest.importorskip("skops.io")
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    x, y = load_iris(return_X_y=True)
    first = LogisticRegression(max_iter=500).fit(x, y)
    second = DecisionTreeClassifier(max_depth=1, random_state=0).fit(x, y)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, model in (("v1", first), ("v2", second)):
        path = folder / f"iris-{key}.skops"
        skops_io.dump(model, path)
        paths[key] = path
    rows = x[[0, 60, 120, 149]].tolist()
    return {
        **paths,
        "rows": rows,
        "expected_v1": first.predict(x[[0, 60, 120, 149]]).tolist(),
        "expected_v2": second.predict(x[[0, 60, 120, 149]]).tolist(),
    }


class AdapterConformance:
    """Base: provides the ``models`` fixture; subclasses provide ``client``."""

    @pytest.fixture
    def client(self) -> Iterator[Client]:  # pragma: no cover - subclasses override
        raise NotImplementedError("provide a `client` fixture yielding a Client on an empty target")

    @pytest.fixture(scope="class")
    @classmethod
    def models(cls, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
        return iris_models(tmp_path_factory.mktemp("conformance-models"))

    @staticmethod
    def require(client: Client, capability: Capability) -> None:
        if capability not in client.adapter.capabilities:
            pytest.skip(f"{client.target} does not declare {capability.name}")


class RegistryConformance(AdapterConformance):
    """Model registry behaviour (and the declared contract every adapter has)."""

    def test_declares_the_adapter_contract(self, client: Client) -> None:
        adapter = client.adapter
        assert isinstance(adapter, Adapter)
        assert isinstance(adapter.models, ModelRegistry)
        assert isinstance(adapter.endpoints, EndpointService)
        assert adapter.endpoints.target_name
        # An optional service is an attribute that is None when absent, plus its capability.
        if adapter.pipelines is not None:
            assert isinstance(adapter.pipelines, PipelineService)
            assert Capability.PIPELINES in adapter.capabilities
        assert adapter.root is None or adapter.root.is_dir()

    def test_versions_count_up_per_name(self, client: Client, models: dict[str, Any]) -> None:
        first = client.models.register("iris", models["v1"], framework="sklearn", metrics={"accuracy": 0.97})
        second = client.models.register("iris", models["v2"], framework="sklearn")
        other = client.models.register("other", models["v1"], framework="sklearn")
        assert (first.version, second.version, other.version) == ("1", "2", "1")
        assert first.metrics == {"accuracy": 0.97}
        assert first.digest.startswith("sha256:") and first.digest != second.digest
        assert client.models.get("iris").version == "2"
        assert client.models.get("iris:1").digest == first.digest
        assert [v.version for v in client.models.list("iris")] == ["1", "2"]

    def test_signature_is_inferred(self, client: Client, models: dict[str, Any]) -> None:
        version = client.models.register("iris", models["v1"], framework="sklearn")
        assert version.signature is not None and version.signature.n_features == 4

    def test_same_bytes_share_a_digest(self, client: Client, models: dict[str, Any]) -> None:
        a = client.models.register("iris", models["v1"], framework="sklearn")
        b = client.models.register("iris", models["v1"], framework="sklearn")
        assert a.version != b.version and a.digest == b.digest
        assert client.adapter.models.find_by_digest("iris", a.digest) is not None

    def test_aliases_move(self, client: Client, models: dict[str, Any]) -> None:
        client.models.register("iris", models["v1"], framework="sklearn")
        client.models.register("iris", models["v2"], framework="sklearn")
        client.models.set_alias("iris", "champion", "1")
        assert client.models.get("iris@champion").version == "1"
        client.models.set_alias("iris", "champion", "2")
        assert client.models.get("iris@champion").version == "2"
        assert "champion" in client.models.get("iris:2").aliases
        client.models.remove_alias("iris", "champion")
        with pytest.raises(NotFound):
            client.models.get("iris@champion")

    def test_missing_things_are_not_found(self, client: Client, models: dict[str, Any]) -> None:
        with pytest.raises(NotFound):
            client.models.get("nope")
        client.models.register("iris", models["v1"], framework="sklearn")
        with pytest.raises(NotFound):
            client.models.get("iris:9")
        with pytest.raises(NotFound):
            client.models.set_alias("iris", "champion", "9")

    def test_delete_version(self, client: Client, models: dict[str, Any]) -> None:
        client.models.register("iris", models["v1"], framework="sklearn")
        client.models.register("iris", models["v2"], framework="sklearn")
        client.models.delete("iris:1")
        assert [v.version for v in client.models.list("iris")] == ["2"]

    def test_stored_artifact_is_verified(self, client: Client, models: dict[str, Any]) -> None:
        version = client.models.register("iris", models["v1"], framework="sklearn")
        path = client.adapter.models.artifact_path(version)
        assert path.exists()
        if path.is_file():
            path.chmod(0o644)
            path.write_bytes(path.read_bytes() + b"tampered")
            with pytest.raises(IntegrityError):
                client.adapter.models.artifact_path(version)


class EndpointConformance(AdapterConformance):
    """Endpoint behaviour: deploy, predict, split, converge, clean up."""

    @pytest.fixture
    def deployed(self, client: Client, models: dict[str, Any]) -> Iterator[Client]:
        client.models.register("iris", models["v1"], framework="sklearn")
        client.models.register("iris", models["v2"], framework="sklearn")
        client.endpoints.deploy("iris-ep", "iris:1")
        try:
            yield client
        finally:
            with contextlib.suppress(MlshiftError):
                client.endpoints.delete("iris-ep")

    def test_deploy_and_predict(self, deployed: Client, models: dict[str, Any]) -> None:
        state = deployed.endpoints.get("iris-ep")
        assert [(v.model, v.weight) for v in state.variants] == [("iris:1", 100)]
        result = deployed.endpoints.predict("iris-ep", models["rows"])
        assert result.predictions == models["expected_v1"]
        assert result.variant == state.variants[0].name

    def test_traffic_split(self, deployed: Client, models: dict[str, Any]) -> None:
        self.require(deployed, Capability.TRAFFIC_SPLIT)
        state = deployed.endpoints.deploy("iris-ep", "iris:2", traffic=20)
        assert sorted(v.weight for v in state.variants) == [20, 80]
        new = next(v.name for v in state.variants if v.model == "iris:2")
        seen = Counter(deployed.endpoints.predict("iris-ep", models["rows"][:1]).variant for _ in range(400))
        assert abs(seen[new] / 400 - 0.20) <= 0.05, seen

    def test_reapply_is_a_no_op(self, deployed: Client) -> None:
        state = deployed.endpoints.get("iris-ep")
        spec = EndpointSpec(
            name="iris-ep",
            variants=tuple(
                {"name": v.name, "model": v.model, "weight": v.weight, "compute": v.compute}
                for v in state.variants
            ),
            tags=state.tags,
        )
        plan = deployed.plan(spec)
        assert plan.is_empty, plan.render()

    def test_weight_change_plans_exactly_that(self, deployed: Client) -> None:
        self.require(deployed, Capability.TRAFFIC_SPLIT)
        deployed.endpoints.deploy("iris-ep", "iris:2", traffic=20)
        state = deployed.endpoints.get("iris-ep")
        spec = EndpointSpec.model_validate(
            {
                "name": "iris-ep",
                "variants": [
                    {"name": v.name, "model": v.model, "weight": 50, "compute": v.compute.model_dump()}
                    for v in state.variants
                ],
            }
        )
        plan = deployed.plan(spec)
        assert [a.kind for a in plan.actions] == ["set_weights"]
        deployed.apply(plan)
        assert sorted(deployed.endpoints.get("iris-ep").weights.values()) == [50, 50]
        assert deployed.plan(spec).is_empty

    def test_full_replacement_keeps_serving(self, deployed: Client, models: dict[str, Any]) -> None:
        state = deployed.endpoints.deploy("iris-ep", "iris:2")
        assert [(v.model, v.weight) for v in state.variants] == [("iris:2", 100)]
        assert deployed.endpoints.predict("iris-ep", models["rows"]).predictions == models["expected_v2"]

    def test_missing_model_changes_nothing(self, deployed: Client) -> None:
        before = deployed.endpoints.get("iris-ep")
        with pytest.raises(NotFound):
            deployed.endpoints.deploy("iris-ep", "iris:42", traffic=10)
        with pytest.raises(NotFound):
            deployed.endpoints.deploy("brand-new", "ghost:1")
        assert deployed.endpoints.get("iris-ep").variants == before.variants
        assert deployed.adapter.endpoints.observe("brand-new") is None

    def test_bad_payload_is_rejected_and_endpoint_keeps_serving(
        self, deployed: Client, models: dict[str, Any]
    ) -> None:
        with pytest.raises(InvalidPayload):
            deployed.endpoints.predict("iris-ep", [[1.0, 2.0]])
        assert deployed.endpoints.predict("iris-ep", models["rows"]).predictions == models["expected_v1"]

    def test_cannot_remove_variant_with_traffic(self, deployed: Client) -> None:
        name = deployed.endpoints.get("iris-ep").variants[0].name
        with pytest.raises(Conflict):
            deployed.adapter.endpoints.remove_variant("iris-ep", name)

    def test_targeted_invoke(self, deployed: Client, models: dict[str, Any]) -> None:
        self.require(deployed, Capability.TARGETED_INVOKE)
        state = deployed.endpoints.deploy("iris-ep", "iris:2", traffic=10)
        new = next(v.name for v in state.variants if v.model == "iris:2")
        for _ in range(5):
            result = deployed.endpoints.predict("iris-ep", models["rows"], variant=new)
            assert result.variant == new and result.predictions == models["expected_v2"]

    def test_metrics_count_client_errors_apart(self, deployed: Client, models: dict[str, Any]) -> None:
        self.require(deployed, Capability.METRICS)
        name = deployed.endpoints.get("iris-ep").variants[0].name
        for _ in range(3):
            deployed.endpoints.predict("iris-ep", models["rows"])
        for _ in range(2):
            with pytest.raises(InvalidPayload):
                deployed.endpoints.predict("iris-ep", [[1.0, 2.0]])  # the caller's error: a 4xx
        m = deployed.adapter.endpoints.read_metrics("iris-ep", name, 300)
        assert m is not None
        assert (m.requests, m.errors, m.client_errors) == (5, 0, 2)

    def test_shadow_traffic_is_compared_never_returned(
        self, deployed: Client, models: dict[str, Any]
    ) -> None:
        self.require(deployed, Capability.SHADOW_TRAFFIC)
        endpoints = deployed.adapter.endpoints
        shadow = ResolvedVariant(name="shadow", model=deployed.models.get("iris:2"), weight=0)
        endpoints.add_variant("iris-ep", shadow).wait(600)
        # A mirror-only target (Azure ML) mirrors at most half of the traffic and compares nothing.
        paired = endpoints.shadow_mode == "paired"
        sent = 10 if paired else 20
        endpoints.set_shadow("iris-ep", "shadow", 100 if paired else 50).wait(600)
        for _ in range(sent):
            answer = deployed.endpoints.predict("iris-ep", models["rows"])
            assert answer.variant != "shadow" and answer.predictions == models["expected_v1"]
        deadline = time.monotonic() + 60
        while True:
            m = endpoints.read_shadow("iris-ep", "shadow", 300)
            if (m is not None and m.requests >= 10) or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        same = sum(a == b for a, b in zip(models["expected_v1"], models["expected_v2"], strict=True))
        assert m is not None and (m.requests, m.errors) == (10, 0)
        if paired:
            assert (m.rows, m.agreed_rows) == (10 * len(models["rows"]), 10 * same)
        else:
            assert (m.rows, m.baseline_requests) == (0, sent)
        endpoints.set_shadow("iris-ep", "shadow", 0).wait(600)

    def test_delete(self, deployed: Client) -> None:
        deployed.endpoints.delete("iris-ep")
        assert deployed.adapter.endpoints.observe("iris-ep") is None
        with pytest.raises(NotFound):
            deployed.endpoints.get("iris-ep")


class JournalConformance(AdapterConformance):
    """The rollout journal and the per-endpoint lock, which the rollout engine relies on."""

    def test_records_round_trip_newest_first(self, client: Client, models: dict[str, Any]) -> None:
        from datetime import datetime, timezone

        from mlshift.adapter import RolloutRecord

        client.models.register("iris", models["v1"], framework="sklearn")
        client.endpoints.deploy("journal-ep", "iris:1")
        try:
            first = RolloutRecord(
                id="20990101T000000.000001-aaaaaa",
                endpoint="journal-ep",
                strategy="canary",
                started_at=datetime.now(timezone.utc),
            )
            client.adapter.endpoints.record_rollout(first)
            updated = first.model_copy(update={"phase": "rolled_back", "steps": ("a", "b"), "reason": "gate"})
            client.adapter.endpoints.record_rollout(updated)
            records = client.adapter.endpoints.rollouts("journal-ep")
            assert records[0] == updated  # replaced by id, newest first
            assert [r.strategy for r in records[1:]] == ["create"]  # the deploy was journaled too
        finally:
            client.endpoints.delete("journal-ep")

    def test_lock_excludes_a_second_holder_and_names_the_first(self, client: Client) -> None:
        import threading

        held, release = threading.Event(), threading.Event()

        def holder() -> None:
            with client.adapter.endpoints.lock("locked-ep", owner="pid 1 on elsewhere", timeout=5):
                held.set()
                release.wait(10)

        thread = threading.Thread(target=holder)
        thread.start()
        try:
            assert held.wait(10)
            second = client.adapter.endpoints.lock("locked-ep", owner="me", timeout=0.3)
            with pytest.raises(Conflict, match="locked-ep"), second:
                pass
        finally:
            release.set()
            thread.join()
        with client.adapter.endpoints.lock("locked-ep", owner="me", timeout=1):
            pass  # free again once the holder let go


# --------------------------------------------------------------------------------------------
# Shared storage machinery over any ObjectStore


class _CountingStore:
    """An ObjectStore that counts the writes passed through to ``inner``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.writes = 0

    def get(self, key: str) -> Any:
        return self.inner.get(key)

    def put(self, key: str, data: bytes) -> Any:
        self.writes += 1
        return self.inner.put(key, data)

    def put_if_absent(self, key: str, data: bytes) -> Any:
        self.writes += 1
        return self.inner.put_if_absent(key, data)

    def put_if_match(self, key: str, data: bytes, etag: str) -> Any:
        self.writes += 1
        return self.inner.put_if_match(key, data, etag)

    def list(self, prefix: str) -> Any:
        return self.inner.list(prefix)

    def delete(self, keys: Any) -> None:
        self.inner.delete(keys)


class _CountingTransferStore(_CountingStore):
    """The same, for a store that moves big files itself (``FileTransfer``)."""

    def upload_file(self, key: str, path: Path) -> None:
        self.writes += 1
        self.inner.upload_file(key, path)

    def download_file(self, key: str, path: Path) -> None:
        self.inner.download_file(key, path)


def _wait_for(condition: Any, what: str, timeout: float = 30.0) -> None:
    """Poll ``condition`` until true; fail naming ``what`` after ``timeout`` seconds."""
    import time

    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within {timeout:g} s")
        time.sleep(0.02)


class ObjectStoreConformance:
    """An :class:`~mlshift.storage.ObjectStore` and core's journal, lease lock and artifact store
    on it. Subclasses provide an ``object_store`` fixture yielding an empty store."""

    @pytest.fixture
    def object_store(self) -> Iterator[Any]:  # pragma: no cover - subclasses override
        raise NotImplementedError("provide an `object_store` fixture yielding an empty ObjectStore")

    # ------------------------------------------------------------------ the store itself

    def test_conditional_writes(self, object_store: Any) -> None:
        from mlshift.storage import PreconditionFailed, Written

        assert object_store.get("a/one") is None
        first = object_store.put_if_absent("a/one", b"1")
        assert isinstance(first, Written)
        assert isinstance(object_store.put_if_absent("a/one", b"2"), PreconditionFailed)
        found = object_store.get("a/one")
        assert (found.data, found.etag) == (b"1", first.etag)
        second = object_store.put_if_match("a/one", b"2", first.etag)
        assert isinstance(second, Written) and second.etag != first.etag
        assert isinstance(object_store.put_if_match("a/one", b"3", first.etag), PreconditionFailed)
        assert isinstance(object_store.put_if_match("a/none", b"3", first.etag), PreconditionFailed)
        assert object_store.get("a/one").data == b"2"
        replaced = object_store.put("a/one", b"4")
        assert object_store.get("a/one").etag == replaced.etag

    def test_only_one_of_many_concurrent_creators_wins(self, object_store: Any) -> None:
        from concurrent.futures import ThreadPoolExecutor

        from mlshift.storage import Written

        with ThreadPoolExecutor(8) as pool:
            outcomes = list(pool.map(lambda i: object_store.put_if_absent("race", str(i).encode()), range(8)))
        winners = [o for o in outcomes if isinstance(o, Written)]
        assert len(winners) == 1
        assert object_store.get("race").etag == winners[0].etag

    def test_list_and_delete(self, object_store: Any) -> None:
        for key in ("p/b", "p/a", "p/c/d", "q/a"):
            object_store.put(key, key.encode())
        assert object_store.list("p/") == ["p/a", "p/b", "p/c/d"]
        object_store.delete(["p/a", "p/missing"])
        assert object_store.list("p/") == ["p/b", "p/c/d"]
        assert object_store.get("p/a") is None
        assert object_store.list("nothing/") == []

    # ------------------------------------------------------------------ the journal

    def test_journal(self, object_store: Any) -> None:
        from datetime import datetime, timezone

        from mlshift.adapter import RolloutRecord
        from mlshift.storage import RolloutJournal

        journal = RolloutJournal(object_store, "j")
        now = datetime.now(timezone.utc)
        for n in range(3):
            journal.record(
                RolloutRecord(id=f"2026010{n}-x", endpoint="ep", strategy="canary", started_at=now)
            )
        journal.record(
            RolloutRecord(
                id="20260102-x", endpoint="ep", strategy="canary", started_at=now, phase="succeeded"
            )
        )
        journal.record(RolloutRecord(id="20260101-y", endpoint="other", strategy="create", started_at=now))
        records = journal.records("ep")
        assert [(r.id, r.phase) for r in records] == [
            ("20260102-x", "succeeded"),
            ("20260101-x", "running"),
            ("20260100-x", "running"),
        ]
        assert [r.id for r in journal.records("ep", limit=1)] == ["20260102-x"]
        assert object_store.list("j/ep/") == [f"j/ep/2026010{n}-x.json" for n in range(3)]
        journal.clear("ep")
        assert journal.records("ep") == [] and len(journal.records("other")) == 1

    # ------------------------------------------------------------------ the lease lock

    def test_a_lease_is_exclusive_and_released(self, object_store: Any) -> None:
        from mlshift.storage import LeaseLock

        mine, theirs = LeaseLock(object_store, ttl=30), LeaseLock(object_store, ttl=30)
        with mine.hold("ep", owner="pid 1 on a", timeout=1):
            with (
                pytest.raises(Conflict, match="being changed by pid 1 on a"),
                theirs.hold("ep", owner="pid 2 on b", timeout=0.3),
            ):
                pass  # pragma: no cover
            with theirs.hold("other", owner="pid 2 on b", timeout=1):
                pass
        assert object_store.get(mine.key("ep")) is None
        with theirs.hold("ep", owner="pid 2 on b", timeout=1):
            assert b"pid 2 on b" in object_store.get(theirs.key("ep")).data

    def test_an_expired_lease_is_taken_over(self, object_store: Any) -> None:
        import json
        import time

        from mlshift.storage import LeaseLock

        lock = LeaseLock(object_store, ttl=30)
        dead = {"endpoint": "ep", "owner": "pid 1 on gone", "token": "x", "expires_at": time.time() - 1}
        object_store.put(lock.key("ep"), json.dumps(dead).encode())
        with lock.hold("ep", owner="me", timeout=1):
            assert json.loads(object_store.get(lock.key("ep")).data)["owner"] == "me"
        assert object_store.get(lock.key("ep")) is None

    def test_a_held_lease_is_renewed(self, object_store: Any) -> None:
        import json

        from mlshift.storage import LeaseLock

        lock = LeaseLock(object_store, ttl=1.5)

        def expiry() -> float:
            return float(json.loads(object_store.get(lock.key("ep")).data)["expires_at"])

        with lock.hold("ep", owner="me", timeout=1):
            first = expiry()
            _wait_for(lambda: expiry() > first, "renewing the held lease")
            lock.check("ep")  # still ours

    def test_a_lost_lease_stops_the_holder(self, object_store: Any) -> None:
        import json
        import time

        from mlshift.errors import LeaseLost
        from mlshift.storage import LeaseLock, RolloutJournal

        lock = LeaseLock(object_store, ttl=1.5, provider="test")
        journal = RolloutJournal(object_store, before_write=lock.check)
        from datetime import datetime, timezone

        from mlshift.adapter import RolloutRecord

        record = RolloutRecord(
            id="1", endpoint="ep", strategy="canary", started_at=datetime.now(timezone.utc)
        )
        other = {"endpoint": "ep", "owner": "pid 9 on b", "token": "y", "expires_at": time.time() + 60}

        def lost() -> bool:
            try:
                lock.check("ep")
            except LeaseLost:
                return True
            return False

        with (
            pytest.raises(LeaseLost, match=r"lost the lock of endpoint 'ep'.*pid 9 on b"),
            lock.hold("ep", owner="me", timeout=1),
        ):
            journal.record(record)
            object_store.put(lock.key("ep"), json.dumps(other).encode())  # someone took it over
            _wait_for(lost, "noticing the lost lease")
            with pytest.raises(LeaseLost):
                journal.record(record.model_copy(update={"phase": "succeeded"}))
            # Leaving the block without an error still raises LeaseLost.
        assert [r.phase for r in journal.records("ep")] == ["running"]
        assert json.loads(object_store.get(lock.key("ep")).data)["owner"] == "pid 9 on b"  # not ours to free

    # ------------------------------------------------------------------ artifacts and cards

    @staticmethod
    def _counting(store: Any) -> _CountingStore:
        from mlshift.storage import FileTransfer

        return _CountingTransferStore(store) if isinstance(store, FileTransfer) else _CountingStore(store)

    def test_artifacts_are_stored_once_and_fetched_verified(self, object_store: Any, tmp_path: Path) -> None:
        from mlshift._artifacts import digest_path
        from mlshift.adapter import Artifact
        from mlshift.storage import ArtifactStore

        counting = self._counting(object_store)
        artifacts = ArtifactStore(counting, "t")
        model = tmp_path / "model.bin"
        model.write_bytes(b"weights" * 100)
        tree = tmp_path / "tree"
        (tree / "sub").mkdir(parents=True)
        (tree / "a.txt").write_text("a")
        (tree / "sub" / "b.txt").write_text("b")
        for path in (model, tree):
            digest = digest_path(path)
            artifact = Artifact(path=path, digest=digest, size=0)
            assert artifacts.stored(digest) is None
            stored = artifacts.put(artifact)
            assert stored.files_prefix == f"t/artifacts/sha256/{digest.split(':')[1]}/files/"
            assert stored.entry == ("model.bin" if path == model else "")
            writes = counting.writes
            assert artifacts.put(artifact) == stored and counting.writes == writes  # nothing sent again
            fetched = artifacts.fetch(digest, tmp_path / "cache")
            assert digest_path(fetched) == digest and fetched.name == (path.name if path == model else "tree")
        with pytest.raises(NotFound):
            artifacts.fetch("sha256:" + "0" * 64, tmp_path / "cache")

    def test_corrupted_artifacts_are_refused(self, object_store: Any, tmp_path: Path) -> None:
        from mlshift._artifacts import digest_path
        from mlshift.adapter import Artifact
        from mlshift.storage import ArtifactStore

        artifacts = ArtifactStore(object_store)
        model = tmp_path / "model.bin"
        model.write_bytes(b"weights")
        digest = digest_path(model)
        stored = artifacts.put(Artifact(path=model, digest=digest, size=7))
        object_store.put(stored.files_prefix + "model.bin", b"tampered")
        with pytest.raises(IntegrityError):
            artifacts.fetch(digest, tmp_path / "cache")

    def test_cards_are_content_addressed(self, object_store: Any) -> None:
        from mlshift.storage import ArtifactStore

        counting = self._counting(object_store)
        artifacts = ArtifactStore(counting, "t")
        card = {"metrics": {"accuracy": 0.9}, "tags": {"team": "a"}}
        key = artifacts.put_card(card)
        writes = counting.writes
        assert artifacts.put_card(dict(reversed(card.items()))) == key and counting.writes == writes
        assert artifacts.get_card(key) == card
        assert artifacts.put_card({**card, "tags": {}}) != key
        assert artifacts.get_card("t/cards/missing.json") == {}
