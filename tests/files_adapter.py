"""``files://``: a target written the way a third party would write one.

It imports only mlshift's public modules (``tests/test_third_party_adapter.py`` checks that),
keeps all of its state in an :class:`~mlshift.storage.ObjectStore` (a folder for
``files:///path``, memory for ``files://``) through core's shared machinery — the artifact
store, the rollout journal and the lease lock — and serves predictions with the mlshift model
server in-process. It is installed for the tests through an ``mlshift.adapters`` entry point,
exactly as a published adapter would be.
"""

from __future__ import annotations

import builtins
import json
import math
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mlshift.adapter import (
    Adapter,
    Artifact,
    BaseEndpointService,
    Capability,
    CompletedOperation,
    EndpointState,
    Invocation,
    NameRules,
    Operation,
    ResolvedVariant,
    RolloutRecord,
    TargetURI,
    VariantMetrics,
    VariantState,
)
from mlshift.errors import ConfigError, Conflict, NotFound
from mlshift.serving import InProcessCaller, create_app, load_model
from mlshift.specs.endpoint import Compute, EndpointSpec
from mlshift.specs.model import ModelRef, ModelSpec, ModelVersion
from mlshift.storage import (
    ArtifactStore,
    FolderObjectStore,
    LeaseLock,
    MemoryObjectStore,
    ObjectStore,
    PreconditionFailed,
    RolloutJournal,
    read_json,
)

__all__ = ["FilesAdapter"]

PROVIDER = "files"


def _dump(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True, default=str).encode()


class FilesRegistry:
    """Model versions as JSON documents; artifacts in core's content-addressed store."""

    def __init__(self, store: ObjectStore, artifacts: ArtifactStore, cache: Path) -> None:
        self._store = store
        self._artifacts = artifacts
        self._cache = cache
        self.served_by: Any = None  # set by the adapter: who serves a version (refuses deletes)

    def _versions(self, name: str) -> builtins.list[ModelVersion]:
        keys = self._store.list(f"models/{name}/versions/")
        versions = []
        for key in keys:
            found = self._store.get(key)
            if found is not None:
                versions.append(ModelVersion.model_validate_json(found.data))
        return sorted(versions, key=lambda v: int(v.version))

    def _aliases(self, name: str) -> tuple[dict[str, str], str | None]:
        found = read_json(self._store, f"models/{name}/aliases.json")
        return (dict(found[0]), found[1]) if found is not None else ({}, None)

    def _with_aliases(self, version: ModelVersion) -> ModelVersion:
        aliases, _ = self._aliases(version.name)
        held = tuple(sorted(a for a, v in aliases.items() if v == version.version))
        return version.model_copy(update={"aliases": held})

    def register(self, spec: ModelSpec, artifact: Artifact) -> ModelVersion:
        stored = self._artifacts.put(artifact)
        while True:  # the next number, claimed with a create-only write: two registrars never share one
            versions = self._versions(spec.name)
            number = int(versions[-1].version) + 1 if versions else 1
            version = ModelVersion(
                name=spec.name,
                version=str(number),
                artifact_uri=f"files:///{stored.files_prefix}{stored.entry}",
                digest=artifact.digest,
                framework=spec.framework,
                signature=spec.signature,
                metrics=spec.metrics,
                tags=spec.tags,
                description=spec.description,
                created_at=datetime.now(timezone.utc),
            )
            key = f"models/{spec.name}/versions/{number:08d}.json"
            written = self._store.put_if_absent(key, version.model_dump_json().encode())
            if not isinstance(written, PreconditionFailed):
                return version

    def get(self, ref: ModelRef) -> ModelVersion:
        versions = self._versions(ref.name)
        if not versions:
            raise NotFound(f"model {ref.name!r} does not exist", provider=PROVIDER)
        wanted = ref.version
        if ref.alias is not None:
            wanted = self._aliases(ref.name)[0].get(ref.alias)
            if wanted is None:
                raise NotFound(f"model {ref.name!r} has no alias {ref.alias!r}", provider=PROVIDER)
        if wanted is None:
            return self._with_aliases(versions[-1])
        for v in versions:
            if v.version == wanted:
                return self._with_aliases(v)
        raise NotFound(f"model {ref.name!r} has no version {wanted}", provider=PROVIDER)

    def list(self, name: str | None = None) -> builtins.list[ModelVersion]:
        if name is not None:
            names = [name]
        else:
            names = sorted({key.split("/")[1] for key in self._store.list("models/")})
        return [self._with_aliases(v) for n in names for v in self._versions(n)]

    def find_by_digest(self, name: str, digest: str) -> ModelVersion | None:
        matches = [v for v in self._versions(name) if v.digest == digest]
        return self._with_aliases(matches[-1]) if matches else None

    def _change_aliases(self, name: str, change: Any) -> None:
        while True:  # compare-and-swap: a concurrent alias move is never lost
            aliases, etag = self._aliases(name)
            change(aliases)
            key = f"models/{name}/aliases.json"
            written = (
                self._store.put_if_absent(key, _dump(aliases))
                if etag is None
                else self._store.put_if_match(key, _dump(aliases), etag)
            )
            if not isinstance(written, PreconditionFailed):
                return

    def set_alias(self, name: str, alias: str, version: str) -> ModelVersion:
        self.get(ModelRef(name=name, version=version))
        self._change_aliases(name, lambda aliases: aliases.__setitem__(alias, version))
        return self.get(ModelRef(name=name, version=version))

    def remove_alias(self, name: str, alias: str) -> None:
        if alias not in self._aliases(name)[0]:
            raise NotFound(f"model {name!r} has no alias {alias!r}", provider=PROVIDER)
        self._change_aliases(name, lambda aliases: aliases.pop(alias, None))

    def delete(self, name: str, version: str) -> None:
        found = self.get(ModelRef(name=name, version=version))
        users = self.served_by(found) if self.served_by is not None else []
        if users:
            raise Conflict(f"model {name}:{version} is served by {', '.join(users)}", provider=PROVIDER)
        self._store.delete([f"models/{name}/versions/{int(version):08d}.json"])
        self._change_aliases(
            name, lambda aliases: [aliases.pop(a) for a, v in list(aliases.items()) if v == version]
        )

    def artifact_path(self, version: ModelVersion) -> Path:
        return self._artifacts.fetch(version.digest, self._cache)


class FilesEndpoints(BaseEndpointService):
    """Endpoints as JSON documents, changed with compare-and-swap; served in-process.

    It has no in-place update (no ``IN_PLACE_UPDATE``): a new version or size arrives by add,
    shift and remove, which the planner and the rollout engine do for it.
    """

    target_name = "the files target"

    def __init__(self, store: ObjectStore, registry: FilesRegistry) -> None:
        self._store = store
        self._registry = registry
        self._locks = LeaseLock(store, provider=PROVIDER, ttl=30.0)
        # A process that lost its lease stops journaling, so an apply never goes on unlocked.
        self._journal = RolloutJournal(store, before_write=self._locks.check)
        self._caller: InProcessCaller | None = None
        self._apps: dict[str, Any] = {}
        self._samples: dict[tuple[str, str], builtins.list[tuple[float, int, float]]] = {}
        self._turns: dict[str, int] = {}
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ documents

    @staticmethod
    def _key(name: str) -> str:
        return f"endpoints/{name}.json"

    def _read(self, name: str) -> tuple[dict[str, Any], str] | None:
        found = read_json(self._store, self._key(name))
        return (dict(found[0]), found[1]) if found is not None else None

    def _require(self, name: str) -> tuple[dict[str, Any], str]:
        found = self._read(name)
        if found is None:
            raise NotFound(f"endpoint {name!r} does not exist", provider=PROVIDER)
        return found

    def _change(self, name: str, what: str, change: Any) -> CompletedOperation[EndpointState]:
        while True:
            doc, etag = self._require(name)
            change(doc)
            if not isinstance(
                self._store.put_if_match(self._key(name), _dump(doc), etag), PreconditionFailed
            ):
                state = self.observe(name)
                assert state is not None
                return CompletedOperation(state, what)

    @staticmethod
    def _variant(doc: dict[str, Any], name: str, endpoint: str) -> dict[str, Any]:
        for v in doc["variants"]:
            if v["name"] == name:
                return dict(v)
        raise NotFound(f"endpoint {endpoint!r} has no variant {name!r}", provider=PROVIDER)

    @staticmethod
    def _entry(variant: ResolvedVariant, weight: int) -> dict[str, Any]:
        return {
            "name": variant.name,
            "model": variant.model.model_dump(mode="json"),
            "weight": weight,
            "compute": variant.compute.model_dump(mode="json"),
        }

    # ------------------------------------------------------------------ reads

    def observe(self, name: str) -> EndpointState | None:
        found = self._read(name)
        if found is None:
            return None
        doc = found[0]
        return EndpointState(
            name=name,
            url=f"files://{name}/invocations",
            status="healthy",
            variants=tuple(
                VariantState(
                    name=v["name"],
                    model=f"{v['model']['name']}:{v['model']['version']}",
                    digest=v["model"]["digest"],
                    weight=v["weight"],
                    compute=Compute.model_validate(v["compute"]),
                    status="healthy",
                )
                for v in doc["variants"]
            ),
            tags=doc["tags"],
            created_at=datetime.fromisoformat(doc["created_at"]),
        )

    def list(self) -> builtins.list[EndpointState]:
        names = sorted(
            k.removeprefix("endpoints/").removesuffix(".json") for k in self._store.list("endpoints/")
        )
        return [s for s in (self.observe(n) for n in names) if s is not None]

    def validate(self, spec: EndpointSpec) -> None:
        if spec.provider_options.get(PROVIDER):
            raise ConfigError(
                f"endpoint {spec.name!r}: the files target takes no options",
                field=f"provider_options.{PROVIDER}",
            )

    def served_by(self, version: ModelVersion) -> builtins.list[str]:
        """``endpoint/variant`` of every variant serving ``version``."""
        return [
            f"{s.name}/{v.name}"
            for s in self.list()
            for v in s.variants
            if v.model == f"{version.name}:{version.version}"
        ]

    # ------------------------------------------------------------------ changes

    def create(self, spec: EndpointSpec, variants: Sequence[ResolvedVariant]) -> Operation[EndpointState]:
        doc = {
            "variants": [self._entry(v, v.weight) for v in variants],
            "tags": dict(spec.tags),
            "created_at": datetime.now(timezone.utc).isoformat(),
        }
        if isinstance(self._store.put_if_absent(self._key(spec.name), _dump(doc)), PreconditionFailed):
            raise Conflict(f"endpoint {spec.name!r} already exists", provider=PROVIDER)
        state = self.observe(spec.name)
        assert state is not None
        return CompletedOperation(state, f"create endpoint {spec.name}")

    def add_variant(self, name: str, variant: ResolvedVariant) -> Operation[EndpointState]:
        def change(doc: dict[str, Any]) -> None:
            if any(v["name"] == variant.name for v in doc["variants"]):
                raise Conflict(f"endpoint {name!r} already has a variant {variant.name!r}", provider=PROVIDER)
            doc["variants"].append(self._entry(variant, 0))

        return self._change(name, f"add variant {variant.name}", change)

    def remove_variant(self, name: str, variant_name: str) -> Operation[EndpointState]:
        def change(doc: dict[str, Any]) -> None:
            if self._variant(doc, variant_name, name)["weight"] > 0:
                raise Conflict(f"variant {variant_name!r} still carries traffic", provider=PROVIDER)
            doc["variants"] = [v for v in doc["variants"] if v["name"] != variant_name]

        return self._change(name, f"remove variant {variant_name}", change)

    def set_weights(self, name: str, weights: Mapping[str, int]) -> Operation[EndpointState]:
        def change(doc: dict[str, Any]) -> None:
            names = {v["name"] for v in doc["variants"]}
            full = {n: int(weights.get(n, 0)) for n in names}
            if set(weights) - names or sum(full.values()) != 100:
                raise ConfigError(f"invalid weights {dict(weights)} for endpoint {name!r}", field="weights")
            for v in doc["variants"]:
                v["weight"] = full[v["name"]]

        return self._change(name, "set weights", change)

    def update_tags(self, name: str, tags: Mapping[str, str]) -> Operation[EndpointState]:
        return self._change(name, "update tags", lambda doc: doc.__setitem__("tags", dict(tags)))

    def delete(self, name: str) -> Operation[None]:
        self._require(name)
        self._store.delete([self._key(name)])
        self._journal.clear(name)
        return CompletedOperation(None, f"delete endpoint {name}")

    # ------------------------------------------------------------------ traffic

    def _pick(self, name: str, doc: dict[str, Any]) -> str:
        """Deterministic weighted choice: request n goes to the variant owning slot n % 100."""
        with self._lock:
            turn = self._turns.get(name, 0)
            self._turns[name] = turn + 1
        slot = (turn * 37) % 100  # 37 is coprime with 100: every slot once per 100 requests
        for v in doc["variants"]:
            if slot < v["weight"]:
                return str(v["name"])
            slot -= v["weight"]
        raise Conflict(f"endpoint {name!r} has no variant with traffic", provider=PROVIDER)

    def _app(self, entry: dict[str, Any]) -> Any:
        version = ModelVersion.model_validate(entry["model"])
        key = f"{entry['name']}@{version.digest}"
        if key not in self._apps:
            path = self._registry.artifact_path(version)
            model = load_model(path, version.framework, signature=version.signature)
            self._apps[key] = create_app(
                model, variant=entry["name"], model_ref=f"{version.name}:{version.version}"
            )
        return self._apps[key]

    def invoke(
        self,
        name: str,
        body: bytes,
        content_type: str = "application/json",
        *,
        variant: str | None = None,
        timeout: float = 60.0,
    ) -> Invocation:
        doc, _ = self._require(name)
        chosen = variant if variant is not None else self._pick(name, doc)
        entry = self._variant(doc, chosen, name)
        if self._caller is None:
            self._caller = InProcessCaller(name="files-target", server=("files", 80))
        start = time.perf_counter()
        status, headers, content = self._caller.call(self._app(entry), body, content_type)
        latency = (time.perf_counter() - start) * 1000
        with self._lock:
            self._samples.setdefault((name, chosen), []).append((time.monotonic(), status, latency))
        return Invocation(
            status_code=status,
            body=content,
            content_type=headers.get("content-type", "application/json"),
            variant=chosen,
            latency_ms=latency,
        )

    def read_metrics(self, name: str, variant: str, window: float) -> VariantMetrics | None:
        since = time.monotonic() - window
        with self._lock:
            recent = [s for s in self._samples.get((name, variant), []) if s[0] >= since]
        latencies = sorted(s[2] for s in recent)

        def quantile(q: float) -> float | None:
            return (
                latencies[min(len(latencies) - 1, math.ceil(q * len(latencies)) - 1)] if latencies else None
            )

        return VariantMetrics(
            variant=variant,
            window_seconds=window,
            requests=len(recent),
            errors=sum(1 for s in recent if s[1] >= 500),
            client_errors=sum(1 for s in recent if 400 <= s[1] < 500),
            p50_ms=quantile(0.5),
            p99_ms=quantile(0.99),
        )

    # ------------------------------------------------------------------ journal and lock

    def record_rollout(self, record: RolloutRecord) -> None:
        self._journal.record(record)

    def rollouts(self, name: str, limit: int = 20) -> builtins.list[RolloutRecord]:
        return self._journal.records(name, limit)

    @contextmanager
    def lock(self, name: str, *, owner: str, timeout: float) -> Iterator[None]:
        with self._locks.hold(name, owner=owner, timeout=timeout):
            yield

    def close(self) -> None:
        self._apps.clear()
        if self._caller is not None:
            self._caller.close()
            self._caller = None


class FilesAdapter:
    """``files://`` (state in memory) or ``files:///path`` (state in a folder)."""

    name = PROVIDER
    capabilities = frozenset({Capability.TRAFFIC_SPLIT, Capability.TARGETED_INVOKE, Capability.METRICS})
    name_rules = NameRules()
    pipelines = None
    root = None

    def __init__(self, uri: TargetURI, store: ObjectStore) -> None:
        self.uri = uri
        self._cache = Path(tempfile.mkdtemp(prefix="mlshift-files-"))
        weakref.finalize(self, shutil.rmtree, self._cache, True)
        self._models = FilesRegistry(store, ArtifactStore(store), self._cache)
        self._endpoints = FilesEndpoints(store, self._models)
        self._models.served_by = self._endpoints.served_by

    @classmethod
    def from_uri(cls, uri: TargetURI, options: Mapping[str, Any], *, base_dir: Path) -> FilesAdapter:
        """Build from ``files://`` or ``files:///path`` (relative paths are under ``base_dir``).

        Raises:
            ConfigError: for any option (the target takes none).
        """
        if options or uri.query:
            raise ConfigError("the files target takes no options", field="target")
        location = uri.location + uri.path
        store: ObjectStore = MemoryObjectStore()
        if location:
            folder = Path(location)
            store = FolderObjectStore(folder if folder.is_absolute() else base_dir / folder)
        return cls(uri, store)

    @property
    def models(self) -> FilesRegistry:
        return self._models

    @property
    def endpoints(self) -> FilesEndpoints:
        return self._endpoints

    def close(self) -> None:
        self._endpoints.close()


def _check(adapter: FilesAdapter) -> Adapter:
    return adapter  # mypy: FilesAdapter satisfies the declared contract
