"""``memory://``: a complete target inside the Python process, for tests and notebooks.

Models are stored in a temporary folder owned by the adapter instance; endpoints serve real
predictions by running the mlshift model server in-process. Every mutating call is recorded
in :attr:`MemoryAdapter.calls`, so tests can assert that a re-apply changed nothing.

``memory://?capabilities=traffic_split,metrics`` limits what the target declares, to test how
code behaves against a less capable target; ``memory://?capabilities=-in_place_update`` drops
names from the defaults instead. ``?metric_lag=180&metric_resolution=60`` declares metrics as
late and as coarse as CloudWatch's (the numbers themselves stay exact), to test plan-time checks.
"""

from __future__ import annotations

import builtins
import shutil
import tempfile
import threading
import time
import weakref
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlshift._routing import (
    MirrorShare,
    ShadowSample,
    WeightedRoundRobin,
    summarize,
    summarize_shadow,
)
from mlshift.adapter import (
    Artifact,
    BaseEndpointService,
    Capability,
    CompletedOperation,
    EndpointState,
    Invocation,
    MetricsTiming,
    NameRules,
    NativeRollout,
    Operation,
    ResolvedVariant,
    RolloutRecord,
    ShadowMetrics,
    TargetURI,
    VariantMetrics,
    VariantState,
)
from mlshift.errors import ConfigError, Conflict, NotFound
from mlshift.specs.endpoint import Autoscaling, Batching, Compute, EndpointSpec
from mlshift.specs.model import ModelRef, ModelSpec, ModelVersion

if TYPE_CHECKING:
    from mlshift._client import Client

__all__ = ["MemoryAdapter"]

DEFAULT_CAPABILITIES = frozenset(
    {
        Capability.TRAFFIC_SPLIT,
        Capability.TARGETED_INVOKE,
        Capability.IN_PLACE_UPDATE,
        Capability.METRICS,
        Capability.SHADOW_TRAFFIC,
        Capability.AUTOSCALING,
        Capability.GPU,
        Capability.SERVERLESS,
        Capability.PIPELINES,
        Capability.PIPELINE_CONDITIONS,
    }
)


class _MemoryRegistry:
    def __init__(self, adapter: MemoryAdapter) -> None:
        self._adapter = adapter
        self._versions: dict[str, builtins.list[ModelVersion]] = {}
        self._aliases: dict[tuple[str, str], str] = {}
        self._lock = threading.Lock()

    def _with_aliases(self, v: ModelVersion) -> ModelVersion:
        aliases = tuple(
            sorted(a for (n, a), ver in self._aliases.items() if n == v.name and ver == v.version)
        )
        return v.model_copy(update={"aliases": aliases})

    def register(self, spec: ModelSpec, artifact: Artifact) -> ModelVersion:
        self._adapter.record("register_model", spec.name)
        stored = self._adapter.store(artifact)
        with self._lock:
            versions = self._versions.setdefault(spec.name, [])
            version = ModelVersion(
                name=spec.name,
                version=str(len(versions) + 1 if not versions else int(versions[-1].version) + 1),
                artifact_uri=stored.as_uri(),
                digest=artifact.digest,
                framework=spec.framework,
                signature=spec.signature,
                metrics=spec.metrics,
                tags=spec.tags,
                description=spec.description,
                created_at=datetime.now(timezone.utc),
            )
            versions.append(version)
        return version

    def get(self, ref: ModelRef) -> ModelVersion:
        versions = self._versions.get(ref.name)
        if not versions:
            raise NotFound(f"model {ref.name!r} does not exist", provider="memory")
        if ref.alias is not None:
            ver = self._aliases.get((ref.name, ref.alias))
            if ver is None:
                raise NotFound(f"model {ref.name!r} has no alias {ref.alias!r}", provider="memory")
            ref = ModelRef(name=ref.name, version=ver)
        if ref.version is None:
            return self._with_aliases(versions[-1])
        for v in versions:
            if v.version == ref.version:
                return self._with_aliases(v)
        raise NotFound(f"model {ref.name!r} has no version {ref.version}", provider="memory")

    def list(self, name: str | None = None) -> builtins.list[ModelVersion]:
        names = [name] if name is not None else sorted(self._versions)
        return [self._with_aliases(v) for n in names for v in self._versions.get(n, [])]

    def find_by_digest(self, name: str, digest: str) -> ModelVersion | None:
        matches = [v for v in self._versions.get(name, []) if v.digest == digest]
        return self._with_aliases(matches[-1]) if matches else None

    def set_alias(self, name: str, alias: str, version: str) -> ModelVersion:
        self.get(ModelRef(name=name, version=version))
        self._adapter.record("set_alias", name, alias, version)
        self._aliases[(name, alias)] = version
        return self.get(ModelRef(name=name, version=version))

    def remove_alias(self, name: str, alias: str) -> None:
        if (name, alias) not in self._aliases:
            raise NotFound(f"model {name!r} has no alias {alias!r}", provider="memory")
        self._adapter.record("remove_alias", name, alias)
        del self._aliases[(name, alias)]

    def delete(self, name: str, version: str) -> None:
        self.get(ModelRef(name=name, version=version))
        users = [
            f"{e}/{v.name}"
            for e, ep in self._adapter._endpoints.items.items()
            for v in ep["variants"].values()
            if (v.model.name, v.model.version) == (name, version)
        ]
        if users:
            raise Conflict(f"model {name}:{version} is served by {', '.join(users)}", provider="memory")
        self._adapter.record("delete_model", name, version)
        self._versions[name] = [v for v in self._versions[name] if v.version != version]
        for key in [k for k, v in self._aliases.items() if k[0] == name and v == version]:
            del self._aliases[key]

    def artifact_path(self, version: ModelVersion) -> Path:
        from mlshift._artifacts import verify_digest

        path = Path(version.artifact_uri.removeprefix("file://"))
        verify_digest(path, version.digest)
        return path


class _MemoryEndpoints(BaseEndpointService):
    target_name = "the memory target"

    def __init__(self, adapter: MemoryAdapter) -> None:
        self._adapter = adapter
        self.items: dict[str, dict[str, Any]] = {}
        self._locks: dict[str, threading.Lock] = {}
        self._apps: dict[str, Any] = {}
        self._apps_lock = threading.Lock()
        # The model server runs in-process, on an event loop of its own (started on first use).
        self._caller: Any = None
        self._samples: dict[tuple[str, str], builtins.list[tuple[float, int, float]]] = {}
        self._journal: dict[str, RolloutRecord] = {}
        # Shadow traffic: endpoint -> (variant, share, tolerance); mirrored calls run on a pool
        # of their own so the caller never waits for them.
        self._shadows: dict[str, tuple[str, MirrorShare, float]] = {}
        self._shadow_samples: dict[tuple[str, str], builtins.list[ShadowSample]] = {}
        self._shadow_skipped: dict[tuple[str, str], builtins.list[float]] = {}
        self._mirror_pool: Any = None
        self._mirrors_in_flight = 0
        self._mirror_lock = threading.Lock()

    def _state(self, name: str) -> EndpointState:
        ep = self.items[name]
        return EndpointState(
            name=name,
            url=f"memory://{name}/invocations",
            status="healthy",
            variants=tuple(
                VariantState(
                    name=v.name,
                    model=f"{v.model.name}:{v.model.version}",
                    digest=v.model.digest,
                    weight=ep["weights"][v.name],
                    compute=v.compute,
                    status="healthy",
                    batching=v.batching or Batching(),
                )
                for v in ep["variants"].values()
            ),
            tags=ep["tags"],
            created_at=ep["created_at"],
            autoscaling=ep.get("autoscaling"),
        )

    def _require(self, name: str) -> dict[str, Any]:
        if name not in self.items:
            raise NotFound(f"endpoint {name!r} does not exist", provider="memory")
        return self.items[name]

    def _done(self, name: str, what: str) -> CompletedOperation[EndpointState]:
        self.items[name]["rr"] = WeightedRoundRobin(self.items[name]["weights"])
        return CompletedOperation(self._state(name), what)

    def list(self) -> builtins.list[EndpointState]:
        return [self._state(n) for n in sorted(self.items)]

    def observe(self, name: str) -> EndpointState | None:
        return self._state(name) if name in self.items else None

    def validate(self, spec: EndpointSpec) -> None:
        options = spec.provider_options.get("memory", {})
        if options:
            raise ConfigError(
                f"endpoint {spec.name!r}: provider_options.memory: the memory target takes no options "
                f"(got {', '.join(sorted(options))})",
                field="provider_options.memory",
            )

    def create(self, spec: EndpointSpec, variants: Sequence[ResolvedVariant]) -> Operation[EndpointState]:
        if spec.name in self.items:
            raise Conflict(f"endpoint {spec.name!r} already exists", provider="memory")
        self._adapter.record("create_endpoint", spec.name)
        self.items[spec.name] = {
            "autoscaling": spec.autoscaling,
            "variants": {v.name: v for v in variants},
            "weights": {v.name: v.weight for v in variants},
            "tags": dict(spec.tags),
            "created_at": datetime.now(timezone.utc),
        }
        return self._done(spec.name, f"create endpoint {spec.name}")

    def add_variant(self, name: str, variant: ResolvedVariant) -> Operation[EndpointState]:
        ep = self._require(name)
        if variant.name in ep["variants"]:
            raise Conflict(f"endpoint {name!r} already has a variant {variant.name!r}", provider="memory")
        self._adapter.record("add_variant", name, variant.name)
        ep["variants"][variant.name] = variant
        ep["weights"][variant.name] = 0
        return self._done(name, f"add variant {variant.name}")

    def replace_variant(self, name: str, variant: ResolvedVariant) -> Operation[EndpointState]:
        ep = self._require(name)
        if variant.name not in ep["variants"]:
            raise NotFound(f"endpoint {name!r} has no variant {variant.name!r}", provider="memory")
        self._adapter.record("replace_variant", name, variant.name)
        ep["variants"][variant.name] = variant
        return self._done(name, f"replace variant {variant.name}")

    def remove_variant(self, name: str, variant_name: str) -> Operation[EndpointState]:
        ep = self._require(name)
        if variant_name not in ep["variants"]:
            raise NotFound(f"endpoint {name!r} has no variant {variant_name!r}", provider="memory")
        if ep["weights"][variant_name] > 0:
            raise Conflict(f"variant {variant_name!r} still carries traffic", provider="memory")
        self._adapter.record("remove_variant", name, variant_name)
        del ep["variants"][variant_name]
        del ep["weights"][variant_name]
        if self._shadows.get(name, ("",))[0] == variant_name:
            del self._shadows[name]
        return self._done(name, f"remove variant {variant_name}")

    def set_weights(self, name: str, weights: Mapping[str, int]) -> Operation[EndpointState]:
        ep = self._require(name)
        unknown = sorted(set(weights) - set(ep["variants"]))
        full = {n: int(weights.get(n, 0)) for n in ep["variants"]}
        if unknown or sum(full.values()) != 100:
            raise ConfigError(f"invalid weights {dict(weights)} for endpoint {name!r}", field="weights")
        self._adapter.record("set_weights", name, dict(full))
        ep["weights"] = full
        return self._done(name, "set weights")

    def update_compute(self, name: str, variant_name: str, compute: Compute) -> Operation[EndpointState]:
        ep = self._require(name)
        self._adapter.record("update_compute", name, variant_name)
        ep["variants"][variant_name] = ep["variants"][variant_name].model_copy(update={"compute": compute})
        return self._done(name, f"resize variant {variant_name}")

    def update_tags(self, name: str, tags: Mapping[str, str]) -> Operation[EndpointState]:
        ep = self._require(name)
        self._adapter.record("update_tags", name)
        ep["tags"] = dict(tags)
        return self._done(name, "update tags")

    def set_autoscaling(self, name: str, autoscaling: Autoscaling | None) -> Operation[EndpointState]:
        ep = self._require(name)
        self._adapter.record("set_autoscaling", name)
        ep["autoscaling"] = autoscaling
        return self._done(name, "set autoscaling")

    def delete(self, name: str) -> Operation[None]:
        self._require(name)
        self._adapter.record("delete_endpoint", name)
        del self.items[name]
        self._journal = {k: r for k, r in self._journal.items() if r.endpoint != name}
        return CompletedOperation(None, f"delete endpoint {name}")

    def _app_for(self, variant: ResolvedVariant) -> Any:
        key = variant.model.digest + variant.name
        with self._apps_lock:  # callers and the shadow pool may ask for a new variant at once
            if key not in self._apps:
                from mlshift.serving import create_app, load_model

                path = self._adapter.models.artifact_path(variant.model)
                model = load_model(path, variant.model.framework, signature=variant.model.signature)
                ref = f"{variant.model.name}:{variant.model.version}"
                self._apps[key] = create_app(model, variant=variant.name, model_ref=ref)
            return self._apps[key]

    def _in_process(self) -> Any:
        # Made once under the lock: two first callers at once (a prober and the test's traffic)
        # would each start an event loop thread, and one of them would never be closed.
        with self._apps_lock:
            if self._caller is None:
                from mlshift.serving._inprocess import InProcessCaller

                self._caller = InProcessCaller(name="mlshift-memory", server=("memory", 80))
            return self._caller

    def invoke(
        self,
        name: str,
        body: bytes,
        content_type: str = "application/json",
        *,
        variant: str | None = None,
        timeout: float = 60.0,
        request_id: str | None = None,
    ) -> Invocation:
        ep = self._require(name)
        targeted = variant
        if variant is None:
            rr: WeightedRoundRobin = ep["rr"]
            variant = rr.pick()
        elif variant not in ep["variants"]:
            raise NotFound(f"endpoint {name!r} has no variant {variant!r}", provider="memory")
        app = self._app_for(ep["variants"][variant])
        start = time.perf_counter()
        extra = {"x-request-id": request_id} if request_id is not None else None
        status, headers, content = self._in_process().call(app, body, content_type, request_headers=extra)
        latency = (time.perf_counter() - start) * 1000
        self._samples.setdefault((name, variant), []).append((time.monotonic(), status, latency))
        if targeted is None:
            self._maybe_mirror(name, variant, body, content_type, status, content, latency)
        return Invocation(
            status_code=status,
            body=content,
            content_type=headers.get("content-type", "application/json"),
            variant=headers.get("x-mlshift-variant", variant),
            latency_ms=(time.perf_counter() - start) * 1000,
            request_id=headers.get("x-request-id") or request_id,
        )

    @property
    def metrics_timing(self) -> MetricsTiming:
        """Counted per call, so no lag; ``?metric_lag=`` / ``?metric_resolution=`` declare others."""
        return self._adapter.metrics_timing

    def read_metrics(self, name: str, variant: str, window: float) -> VariantMetrics | None:
        since = time.monotonic() - window
        summary = summarize(self._samples.get((name, variant), []), since)
        return VariantMetrics(variant=variant, window_seconds=window, **summary)

    # ---------------------------------------------------------------- shadow traffic

    def set_shadow(
        self, name: str, variant: str, percent: int, *, tolerance: float = 0.01
    ) -> Operation[EndpointState]:
        ep = self._require(name)
        if percent and variant not in ep["variants"]:
            raise NotFound(f"endpoint {name!r} has no variant {variant!r}", provider="memory")
        self._adapter.record("set_shadow", name, variant, percent)
        if percent:
            self._shadows[name] = (variant, MirrorShare(percent), tolerance)
        elif self._shadows.get(name, ("",))[0] == variant:
            del self._shadows[name]
        return self._done(name, f"mirror {percent}% to {variant}")

    def read_shadow(self, name: str, variant: str, window: float) -> ShadowMetrics | None:
        since = time.monotonic() - window
        with self._mirror_lock:
            samples = list(self._shadow_samples.get((name, variant), []))
            skipped = list(self._shadow_skipped.get((name, variant), []))
        return ShadowMetrics(
            variant=variant, window_seconds=window, **summarize_shadow(samples, skipped, since)
        )

    def _maybe_mirror(
        self,
        name: str,
        served_by: str,
        body: bytes,
        content_type: str,
        status: int,
        answer: bytes,
        latency: float,
    ) -> None:
        shadow = self._shadows.get(name)
        if shadow is None or served_by == shadow[0] or status >= 500 or not shadow[1].pick():
            return
        with self._mirror_lock:
            if self._mirrors_in_flight >= 32:  # never queue up work behind the callers' requests
                self._shadow_skipped.setdefault((name, shadow[0]), []).append(time.monotonic())
                return
            self._mirrors_in_flight += 1
            if self._mirror_pool is None:
                from concurrent.futures import ThreadPoolExecutor

                self._mirror_pool = ThreadPoolExecutor(max_workers=2, thread_name_prefix="mlshift-shadow")
        self._mirror_pool.submit(
            self._mirror, name, shadow[0], shadow[2], body, content_type, status, answer, latency
        )

    def _mirror(
        self,
        name: str,
        variant: str,
        tolerance: float,
        body: bytes,
        content_type: str,
        served_status: int,
        served_answer: bytes,
        served_latency: float,
    ) -> None:
        begun = time.monotonic()
        start = time.perf_counter()
        try:
            target = self.items[name]["variants"][variant]
            status, _, content = self._in_process().call(self._app_for(target), body, content_type)
        except Exception:  # a shadow that cannot answer is a failed shadow request, nothing more
            status, content = 599, b""
        finally:
            with self._mirror_lock:
                self._mirrors_in_flight -= 1
        latency = (time.perf_counter() - start) * 1000
        sample = ShadowSample.compared(
            begun, status, latency, content, served_status, served_latency, served_answer, tolerance
        )
        with self._mirror_lock:
            self._shadow_samples.setdefault((name, variant), []).append(sample)

    def record_rollout(self, record: RolloutRecord) -> None:
        self._journal[record.id] = record

    def rollouts(self, name: str, limit: int = 20) -> builtins.list[RolloutRecord]:
        records = sorted(
            (r for r in self._journal.values() if r.endpoint == name), key=lambda r: r.id, reverse=True
        )
        return records[:limit]

    def native_rollout(self, name: str, rollout: NativeRollout) -> Operation[EndpointState]:
        """A stand-in for a provider's own rollout: it converges at once (or fails if told to)."""
        if Capability.NATIVE_ROLLOUT not in self._adapter.capabilities:
            raise self._unsupported("run rollouts natively")
        self._adapter.record("native_rollout", name, rollout.strategy["strategy"])
        if self._adapter.fail_native_rollout is not None:
            from mlshift.errors import RolloutFailed

            raise RolloutFailed(
                f"the target rolled back {name!r}: {self._adapter.fail_native_rollout}",
                reason=self._adapter.fail_native_rollout,
            )
        ep = self._require(name)
        for v in rollout.candidates:
            ep["variants"][v.name] = v
        ep["weights"] = {n: rollout.final_weights.get(n, 0) for n in ep["variants"]}
        for old in rollout.remove:
            ep["variants"].pop(old, None)
            ep["weights"].pop(old, None)
        return self._done(name, "native rollout")

    @contextmanager
    def lock(self, name: str, *, owner: str, timeout: float) -> Iterator[None]:
        lock = self._locks.setdefault(name, threading.Lock())
        if not lock.acquire(timeout=timeout):
            raise Conflict(f"endpoint {name!r} is being changed by another thread", provider="memory")
        try:
            yield
        finally:
            lock.release()

    def close(self) -> None:
        if self._mirror_pool is not None:
            self._mirror_pool.shutdown(wait=True, cancel_futures=True)
        self._apps.clear()
        if self._caller is not None:
            self._caller.close()


def _seconds(uri: TargetURI, key: str, default: float, *, positive: bool = False) -> float:
    """A number of seconds from the URI query (``default`` when absent).

    Raises:
        ConfigError: not a number, negative, or zero where it must be positive.
    """
    text = uri.query.get(key)
    if text is None:
        return default
    try:
        value = float(text)
    except ValueError:
        value = float("nan")
    if not (value > 0 if positive else value >= 0) or value == float("inf"):
        raise ConfigError(
            f"{key}={text} in {uri.raw!r} is not a number of seconds"
            + (" above 0" if positive else " (0 or more)"),
            field="target",
        )
    return value


class MemoryAdapter:
    """Adapter for ``memory://``. State lives on the instance and disappears with it.

    Attributes:
        calls: Every mutating primitive called, as ``(operation, *arguments)``.
        pipelines: ``None``: with ``PIPELINES`` declared, pipelines run in this process's local
            runner; their state lives in a temporary folder as long as the adapter.
        root: ``None``: nothing is kept on disk.
    """

    name = "memory"
    name_rules = NameRules()
    pipelines: None = None
    root: None = None
    capabilities: frozenset[Capability] = DEFAULT_CAPABILITIES

    def __init__(
        self,
        uri: TargetURI,
        capabilities: frozenset[Capability] = DEFAULT_CAPABILITIES,
        metrics_timing: MetricsTiming | None = None,
    ) -> None:
        self.uri = uri
        self.capabilities = capabilities
        #: What the target declares about its metrics (its own are exact and at once).
        self.metrics_timing = metrics_timing or MetricsTiming()
        self.calls: list[tuple[Any, ...]] = []
        #: Set to a reason to make the next native rollouts fail (with NATIVE_ROLLOUT declared).
        self.fail_native_rollout: str | None = None
        self._tmp = Path(tempfile.mkdtemp(prefix="mlshift-memory-"))
        weakref.finalize(self, shutil.rmtree, self._tmp, True)
        self._models = _MemoryRegistry(self)
        self._endpoints = _MemoryEndpoints(self)

    @classmethod
    def from_uri(cls, uri: TargetURI, options: Mapping[str, Any], *, base_dir: Path) -> MemoryAdapter:
        """Build from ``memory://`` (optionally ``?capabilities=a,b`` or ``?capabilities=-a,-b``).

        ``capabilities=a,b`` declares exactly those; ``capabilities=-a`` declares the defaults
        without ``a``. ``base_dir`` is not used.

        Raises:
            ConfigError: for an unknown capability name or any option (memory:// takes none).
        """
        if options:
            raise ConfigError(
                f"the memory target takes no options; got {', '.join(sorted(options))}",
                field="target",
                hint="capabilities go in the URI: memory://?capabilities=traffic_split,metrics",
            )
        caps = DEFAULT_CAPABILITIES
        if "capabilities" in uri.query:
            names = [c.strip() for c in uri.query["capabilities"].split(",") if c.strip()]
            dropped = [n.removeprefix("-") for n in names if n.startswith("-")]
            if dropped and len(dropped) != len(names):
                raise ConfigError(
                    f"capabilities={uri.query['capabilities']} mixes names to keep and '-names' to drop",
                    field="target",
                    hint="list what the target declares (capabilities=traffic_split,metrics), or only "
                    "what to drop from the defaults (capabilities=-in_place_update)",
                )
            known = {c.value: c for c in Capability}
            bad = [n for n in (dropped or names) if n not in known]
            if bad:
                raise ConfigError(
                    f"unknown capabilities {', '.join(bad)}; known: {', '.join(sorted(known))}",
                    field="target",
                )
            if dropped:
                caps = DEFAULT_CAPABILITIES - {known[n] for n in dropped}
            else:
                caps = frozenset(known[n] for n in names)
        timing = MetricsTiming(
            resolution=_seconds(uri, "metric_resolution", 1.0, positive=True),
            lag=_seconds(uri, "metric_lag", 0.0),
        )
        return cls(uri, caps, timing)

    @classmethod
    def of(cls, client: Client) -> MemoryAdapter:
        """The memory adapter behind ``client``, typed as one (for :attr:`calls` and the switches).

        Raises:
            TypeError: if ``client`` is not connected to ``memory://``.
        """
        adapter = client.adapter
        if not isinstance(adapter, cls):
            raise TypeError(f"{client.target} is not a memory:// target")
        return adapter

    def record(self, *call: Any) -> None:
        self.calls.append(call)

    def store(self, artifact: Artifact) -> Path:
        dest = self._tmp / artifact.digest.split(":")[1]
        if not dest.exists():
            if artifact.path.is_dir():
                shutil.copytree(artifact.path, dest / "tree")
            else:
                (dest / "file").mkdir(parents=True)
                shutil.copy2(artifact.path, dest / "file" / artifact.path.name)
        files = list((dest / "file").iterdir()) if (dest / "file").exists() else []
        return files[0] if files else dest / "tree"

    @property
    def models(self) -> _MemoryRegistry:
        return self._models

    @property
    def endpoints(self) -> _MemoryEndpoints:
        return self._endpoints

    def close(self) -> None:
        self._endpoints.close()
