"""Local endpoints: a router process per endpoint, model-server processes per variant replica."""

from __future__ import annotations

import builtins
import contextlib
import errno
import json
import os
import shutil
import socket
import time
from collections.abc import Collection, Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pydantic import Field

from mlshift._artifacts import SKOPS_TRUST_TAG
from mlshift.adapter import (
    BaseEndpointService,
    CapturedRequest,
    CompletedOperation,
    EndpointState,
    Invocation,
    Operation,
    OptionChange,
    ResolvedVariant,
    RolloutRecord,
    ShadowMetrics,
    VariantMetrics,
    VariantState,
    VariantStatus,
    validate_own_options,
)
from mlshift.errors import ConfigError, Conflict, NotFound, ProviderError
from mlshift.local._process import ProcessHandle, reap_processes, spawn_server
from mlshift.local._runtime import ProcessRuntime, Replica, ReplicaRequest, ReplicaRuntime
from mlshift.local._state import StateDB
from mlshift.local._store import ArtifactStore
from mlshift.serving._capture import read_capture_config, write_capture_config
from mlshift.specs._base import SpecModel
from mlshift.specs.endpoint import Batching, Compute, EndpointSpec
from mlshift.specs.model import ModelRef, ModelVersion
from mlshift.specs.monitor import CaptureSpec

__all__ = ["LocalEndpointOptions", "LocalEndpointService"]

TARGET_HEADER = "X-Mlshift-Target-Variant"
#: After the router stops sending a variant traffic, how long its servers keep running before
#: SIGTERM, so requests the router had already dispatched to them finish normally.
DRAIN_SECONDS = 0.25


class LocalEndpointOptions(SpecModel):
    """``provider_options.local`` of an endpoint.

    Attributes:
        port: The router's port on 127.0.0.1 (default: a free one, kept for the endpoint's life).
        startup_timeout: Seconds a model server may take to load its model.
    """

    port: int | None = Field(default=None, ge=1024, le=65535)
    startup_timeout: float = Field(default=60.0, gt=0, le=3600)


def _port_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


class LocalEndpointService(BaseEndpointService):
    """Endpoints on this machine: a router process each, replicas run by a :class:`ReplicaRuntime`.

    State is listed from SQLite and health-checked on observe.
    """

    target_name = "the local target"

    def __init__(
        self, root: Path, db: StateDB, store: ArtifactStore, runtime: ReplicaRuntime | None = None
    ) -> None:
        self.root = root
        self.runtime: ReplicaRuntime = runtime if runtime is not None else ProcessRuntime()
        self._db = db
        self._store = store
        self._http: Any = None

    # ---------------------------------------------------------------- paths and helpers

    def _dir(self, name: str) -> Path:
        return self.root / "endpoints" / name

    def capture_dir(self, name: str) -> Path:
        """Where ``name``'s captured requests go (kept after the endpoint is deleted)."""
        return self.root / "capture" / name

    def _client(self) -> Any:
        if self._http is None:
            import httpx

            self._http = httpx.Client(timeout=httpx.Timeout(60.0, connect=5.0), trust_env=False)
        return self._http

    def close(self) -> None:
        if self._http is not None:
            self._http.close()
            self._http = None

    def _row(self, name: str) -> dict[str, Any] | None:
        with self._db.read() as conn:
            row = conn.execute("SELECT * FROM endpoints WHERE name = ?", (name,)).fetchone()
            if row is None:
                return None
            data = dict(row)
            data["variants"] = [
                dict(v)
                for v in conn.execute(
                    "SELECT * FROM variants WHERE endpoint = ? ORDER BY rowid", (name,)
                ).fetchall()
            ]
            return data

    def _require(self, name: str) -> dict[str, Any]:
        row = self._row(name)
        if row is None:
            raise NotFound(f"endpoint {name!r} does not exist on the local target", provider="local")
        return row

    def _write_routes(self, name: str) -> None:
        """Replace the router's routing file atomically from the database."""
        row = self._require(name)
        variants = [
            {
                "name": v["name"],
                "weight": v["weight"],
                "model": f"{v['model_name']}:{v['model_version']}",
                "backends": [f"http://127.0.0.1:{r.port}" for r in _replicas(v["processes"])],
            }
            for v in row["variants"]
        ]
        folder = self._dir(name)
        folder.mkdir(parents=True, exist_ok=True)
        tmp = folder / "routes.json.tmp"
        table: dict[str, Any] = {"endpoint": name, "variants": variants}
        shadow = self._shadow_config(name)
        if shadow is not None:
            table["shadow"] = shadow
        tmp.write_text(json.dumps(table))
        os.replace(tmp, folder / "routes.json")

    def _reap_orphans(self, folder: Path, keep: Collection[str] = ()) -> builtins.list[str]:
        """Stop replicas and routers started for ``folder`` that the database does not know.

        A process killed between starting a server and recording it leaves that server running
        unrecorded; the next change to the same endpoint or variant stops it, so there is never
        a second copy of a variant.
        """
        found = self.runtime.reap(folder, keep)
        pids = {int(k) for k in keep if k.isdigit()}
        found += [str(pid) for pid in reap_processes(folder, "mlshift.local._router", keep=pids)]
        return found

    def _recorded_ids(self, name: str) -> set[str]:
        """The router's pid and the runtime ids of every replica recorded for ``name``."""
        row = self._row(name)
        if row is None:
            return set()
        ids = {str(row["router_pid"])}
        for v in row["variants"]:
            ids.update(r.id for r in _replicas(v["processes"]))
        return ids

    def _request(
        self, endpoint: str, variant: ResolvedVariant, index: int, artifact: Path, timeout: float
    ) -> ReplicaRequest:
        model = variant.model
        return ReplicaRequest(
            endpoint=endpoint,
            variant=variant.name,
            index=index,
            artifact=artifact,
            framework=model.framework,
            digest=model.digest,
            model_ref=f"{model.name}:{model.version}",
            compute=variant.compute,
            folder=self._dir(endpoint) / "variants" / variant.name,
            timeout=timeout,
            signature_json=model.signature.model_dump_json() if model.signature is not None else None,
            skops_trust=model.tags.get(SKOPS_TRUST_TAG) or None,
            batching=variant.batching,
            capture_dir=self.capture_dir(endpoint),
        )

    def _start_replicas(
        self, endpoint: str, variant: ResolvedVariant, timeout: float
    ) -> list[dict[str, Any]]:
        """Start every replica of ``variant``; on any failure stop the ones already started."""
        artifact = self._store.verified(variant.model.digest)  # refuse tampered bytes before starting
        row = self._row(endpoint)
        recorded = {
            r.id
            for v in (row["variants"] if row else [])
            if v["name"] == variant.name
            for r in _replicas(v["processes"])
        }
        self._reap_orphans(self._dir(endpoint) / "variants" / variant.name, recorded)
        started: list[Replica] = []
        try:
            for i in range(variant.compute.replicas):
                started.append(self.runtime.start(self._request(endpoint, variant, i, artifact, timeout)))
        except BaseException:
            for replica in started:
                self.runtime.stop(replica)
            raise
        return [_record(r, variant.batching) for r in started]

    def _stop(self, processes: str | list[dict[str, Any]]) -> None:
        for replica in _replicas(processes):
            self._runtime_for(replica).stop(replica)

    def _runtime_for(self, replica: Replica) -> ReplicaRuntime:
        if replica.runtime == self.runtime.name:
            return self.runtime
        if replica.runtime == ProcessRuntime.name:
            return ProcessRuntime()
        raise ProviderError(
            f"a replica was started by the {replica.runtime!r} runtime, which this target does not use",
            provider="local",
            hint="open the state folder with the target that created it (e.g. local+docker://)",
        )

    def _timeout(self, name: str) -> float:
        row = self._row(name)
        return float(row["startup_timeout"]) if row is not None else 60.0

    # ---------------------------------------------------------------- contract: reads

    def validate(self, spec: EndpointSpec) -> None:
        options = validate_own_options(spec, "local", LocalEndpointOptions)
        assert isinstance(options, LocalEndpointOptions)
        if options.port is not None:
            row = self._row(spec.name)
            if row is not None and row["port"] == options.port:
                return
            if row is not None:
                raise ConfigError(
                    f"endpoint {spec.name!r} already listens on port {row['port']}; its port cannot change",
                    field="provider_options.local.port",
                    hint="delete and re-create the endpoint to move it",
                )
            with self._db.read() as conn:
                other = conn.execute("SELECT name FROM endpoints WHERE port = ?", (options.port,)).fetchone()
            if other is not None or not _port_free(options.port):
                who = f"endpoint {other['name']!r}" if other is not None else "another program"
                raise ConfigError(
                    f"port {options.port} on 127.0.0.1 is already taken by {who}",
                    field="provider_options.local.port",
                    hint="choose another port, or leave port out to get a free one",
                )

    def _replica_problem(self, index: int, replica: Replica) -> tuple[VariantStatus, str] | None:
        """What is wrong with one replica (``None``: it runs and answers ``/ping``)."""
        try:
            runtime = self._runtime_for(replica)
        except ProviderError as exc:
            return "unknown", exc.message
        if not runtime.running(replica):
            tail = runtime.logs(replica, 3)
            # The first line is the summary a plan shows; the log follows for `endpoints show`.
            return "failed", f"replica {index}: {runtime.exit_reason(replica)}" + (
                f"\n{tail}" if tail else ""
            )
        try:
            resp = self._client().get(f"http://127.0.0.1:{replica.port}/ping", timeout=2.0)
        except Exception as exc:
            return "unhealthy", f"replica {index} on port {replica.port} does not answer: {exc}"
        if resp.status_code != 200:
            return "unhealthy", f"replica {index} answered /ping with HTTP {resp.status_code}"
        return None

    def _health(
        self, processes: list[dict[str, Any]], wanted: int
    ) -> tuple[VariantStatus, str | None, int | None]:
        """The variant's status, why it is not healthy, and how many replicas are ready."""
        replicas = _replicas(processes)
        if not replicas:
            return "stopped", "no process", 0
        problems = [p for i, r in enumerate(replicas) if (p := self._replica_problem(i, r)) is not None]
        ready = len(replicas) - len(problems)
        if len(replicas) < wanted:
            problems.append(("failed", f"{wanted - len(replicas)} of {wanted} replicas were never recorded"))
        if not problems:
            return "healthy", None, ready
        statuses = {status for status, _ in problems}
        if "unknown" in statuses:  # replicas of another runtime: not ours to count or restart
            return "unknown", next(d for s, d in problems if s == "unknown"), None
        status: VariantStatus = "failed" if "failed" in statuses else "unhealthy"
        detail = problems[0][1]
        if len(problems) > 1:
            first, _, rest = detail.partition("\n")
            detail = f"{first} (and {len(problems) - 1} more)" + (f"\n{rest}" if rest else "")
        return status, detail, ready

    def observe(self, name: str) -> EndpointState | None:
        row = self._row(name)
        if row is None:
            return None
        variants = []
        for v in row["variants"]:
            processes = json.loads(v["processes"])
            status, detail, ready = self._health(processes, v["replicas"])
            variants.append(
                VariantState(
                    name=v["name"],
                    model=f"{v['model_name']}:{v['model_version']}",
                    digest=v["digest"],
                    weight=v["weight"],
                    compute=Compute(size=v["size"], replicas=v["replicas"]),
                    status=status,
                    detail=detail,
                    url=f"http://127.0.0.1:{processes[0]['port']}" if processes else None,
                    ready_replicas=ready,
                    batching=_batching(processes) or Batching(),
                )
            )
        router = ProcessHandle(pid=row["router_pid"], started=row["router_started"])
        overall: VariantStatus = "healthy"
        if not router.alive():
            overall = "failed"
        elif any(v.status != "healthy" for v in variants if v.weight > 0):
            overall = "unhealthy"
        return EndpointState(
            name=name,
            url=f"http://127.0.0.1:{row['port']}/invocations",
            status=overall,
            variants=tuple(variants),
            tags=json.loads(row["tags"]),
            created_at=datetime.fromisoformat(row["created_at"]),
        )

    def list(self) -> builtins.list[EndpointState]:
        with self._db.read() as conn:
            names = [r[0] for r in conn.execute("SELECT name FROM endpoints ORDER BY name")]
        states = [self.observe(n) for n in names]
        return [s for s in states if s is not None]

    # ---------------------------------------------------------------- contract: changes

    def create(self, spec: EndpointSpec, variants: Sequence[ResolvedVariant]) -> Operation[EndpointState]:
        if self._row(spec.name) is not None:
            raise Conflict(f"endpoint {spec.name!r} already exists", provider="local")
        options = validate_own_options(spec, "local", LocalEndpointOptions)
        assert isinstance(options, LocalEndpointOptions)
        import sqlite3

        folder = self._dir(spec.name)
        self._reap_orphans(folder)  # left by a create that died half-way
        if spec.capture is not None:  # before the servers start, so they capture from the first request
            write_capture_config(self.capture_dir(spec.name), _capture_settings(spec))
        started: list[list[dict[str, Any]]] = []
        router: ProcessHandle | None = None
        inserted = False
        try:
            for v in variants:
                started.append(self._start_replicas(spec.name, v, options.startup_timeout))
            with self._db.write() as conn:
                conn.execute(
                    "INSERT INTO endpoints (name, port, router_pid, router_started, startup_timeout, tags,"
                    " created_at) VALUES (?,?,?,?,?,?,?)",
                    (spec.name, options.port or 0, 0, 0.0, options.startup_timeout, json.dumps(spec.tags),
                     datetime.now(timezone.utc).isoformat()),
                )  # fmt: skip
                for v, procs in zip(variants, started, strict=True):
                    conn.execute(
                        "INSERT INTO variants (endpoint, name, model_name, model_version, digest, size,"
                        " replicas, weight, processes) VALUES (?,?,?,?,?,?,?,?,?)",
                        (spec.name, v.name, v.model.name, int(v.model.version), v.model.digest,
                         v.compute.size, v.compute.replicas, v.weight, json.dumps(procs)),
                    )  # fmt: skip
            inserted = True
            self._write_routes(spec.name)
            router, port = spawn_server(
                "mlshift.local._router",
                ["--routes", str(folder / "routes.json"), "--port", str(options.port or 0),
                 "--port-file", str(folder / "router.port")],
                log=folder / "router.log",
                port_file=folder / "router.port",
                timeout=30.0,
                what=f"router for endpoint {spec.name}",
            )  # fmt: skip
            with self._db.write() as conn:
                conn.execute(
                    "UPDATE endpoints SET port = ?, router_pid = ?, router_started = ? WHERE name = ?",
                    (port, router.pid, router.started, spec.name),
                )
        except BaseException as exc:
            # Nothing half-created: stop what started, forget what was recorded.
            for procs in started:
                self._stop(procs)
            if router is not None:
                router.terminate()
            if inserted:
                with self._db.write() as conn:
                    conn.execute("DELETE FROM variants WHERE endpoint = ?", (spec.name,))
                    conn.execute("DELETE FROM endpoints WHERE name = ?", (spec.name,))
            if inserted or not isinstance(exc, sqlite3.IntegrityError):
                shutil.rmtree(folder, ignore_errors=True)
            if isinstance(exc, sqlite3.IntegrityError):
                raise Conflict(f"endpoint {spec.name!r} already exists", provider="local") from None
            raise
        state = self.observe(spec.name)
        assert state is not None
        return CompletedOperation(state, f"create endpoint {spec.name}")

    def _done(self, name: str, what: str) -> CompletedOperation[EndpointState]:
        state = self.observe(name)
        assert state is not None
        return CompletedOperation(state, what)

    def add_variant(self, name: str, variant: ResolvedVariant) -> Operation[EndpointState]:
        row = self._require(name)
        if any(v["name"] == variant.name for v in row["variants"]):
            raise Conflict(f"endpoint {name!r} already has a variant {variant.name!r}", provider="local")
        procs = self._start_replicas(name, variant, self._timeout(name))
        try:
            with self._db.write() as conn:
                conn.execute(
                    "INSERT INTO variants (endpoint, name, model_name, model_version, digest, size,"
                    " replicas, weight, processes) VALUES (?,?,?,?,?,?,?,?,?)",
                    (name, variant.name, variant.model.name, int(variant.model.version), variant.model.digest,
                     variant.compute.size, variant.compute.replicas, 0, json.dumps(procs)),
                )  # fmt: skip
        except BaseException:
            self._stop(procs)
            raise
        self._write_routes(name)
        return self._done(name, f"add variant {variant.name}")

    def replace_variant(self, name: str, variant: ResolvedVariant) -> Operation[EndpointState]:
        row = self._require(name)
        old = next((v for v in row["variants"] if v["name"] == variant.name), None)
        if old is None:
            raise NotFound(f"endpoint {name!r} has no variant {variant.name!r}", provider="local")
        procs = self._start_replicas(name, variant, self._timeout(name))
        try:
            with self._db.write() as conn:
                conn.execute(
                    "UPDATE variants SET model_name = ?, model_version = ?, digest = ?, size = ?,"
                    " replicas = ?, processes = ? WHERE endpoint = ? AND name = ?",
                    (variant.model.name, int(variant.model.version), variant.model.digest,
                     variant.compute.size, variant.compute.replicas, json.dumps(procs), name, variant.name),
                )  # fmt: skip
        except BaseException:
            self._stop(procs)
            raise
        # The router reads the new table on its next request; only then stop the old servers,
        # which finish the requests they already have (SIGTERM is graceful).
        self._write_routes(name)
        time.sleep(DRAIN_SECONDS)
        self._stop(old["processes"])
        return self._done(name, f"replace variant {variant.name}")

    def remove_variant(self, name: str, variant_name: str) -> Operation[EndpointState]:
        row = self._require(name)
        old = next((v for v in row["variants"] if v["name"] == variant_name), None)
        if old is None:
            raise NotFound(f"endpoint {name!r} has no variant {variant_name!r}", provider="local")
        if old["weight"] > 0:
            raise Conflict(
                f"variant {variant_name!r} of {name!r} still carries {old['weight']}% of traffic",
                provider="local",
                hint="move its traffic to other variants first",
            )
        with self._db.write() as conn:
            conn.execute("DELETE FROM variants WHERE endpoint = ? AND name = ?", (name, variant_name))
        if (self._shadow_config(name) or {}).get("variant") == variant_name:
            (self._dir(name) / "shadow.json").unlink(missing_ok=True)
        self._write_routes(name)
        time.sleep(DRAIN_SECONDS)
        self._stop(old["processes"])
        shutil.rmtree(self._dir(name) / "variants" / variant_name, ignore_errors=True)
        return self._done(name, f"remove variant {variant_name}")

    def set_weights(self, name: str, weights: Mapping[str, int]) -> Operation[EndpointState]:
        row = self._require(name)
        names = {v["name"] for v in row["variants"]}
        unknown = sorted(set(weights) - names)
        if unknown:
            raise ConfigError(f"endpoint {name!r} has no variant {', '.join(unknown)}", field="weights")
        full = {n: int(weights.get(n, 0)) for n in names}
        if sum(full.values()) != 100:
            raise ConfigError(f"weights must sum to 100, got {sum(full.values())}", field="weights")
        with self._db.write() as conn:
            conn.executemany(
                "UPDATE variants SET weight = ? WHERE endpoint = ? AND name = ?",
                [(w, name, n) for n, w in full.items()],
            )
        self._write_routes(name)
        return self._done(name, "set weights")

    def update_compute(self, name: str, variant_name: str, compute: Compute) -> Operation[EndpointState]:
        row = self._require(name)
        old = next((v for v in row["variants"] if v["name"] == variant_name), None)
        if old is None:
            raise NotFound(f"endpoint {name!r} has no variant {variant_name!r}", provider="local")
        if compute.replicas == old["replicas"]:
            # Sizes are labels on the local target: every process runs on this machine.
            with self._db.write() as conn:
                conn.execute(
                    "UPDATE variants SET size = ? WHERE endpoint = ? AND name = ?",
                    (compute.size, name, variant_name),
                )
            return self._done(name, f"resize variant {variant_name}")
        variant = ResolvedVariant(
            name=variant_name,
            model=self._model(old),
            weight=old["weight"],
            compute=compute,
            batching=_batching(old["processes"]),
        )
        return self.replace_variant(name, variant)

    def restore_replicas(self, name: str, variant_name: str) -> Operation[EndpointState]:
        row = self._require(name)
        old = next((v for v in row["variants"] if v["name"] == variant_name), None)
        if old is None:
            raise NotFound(f"endpoint {name!r} has no variant {variant_name!r}", provider="local")
        recorded = _replicas(old["processes"])
        wanted = int(old["replicas"])
        ready = {i: r for i, r in enumerate(recorded[:wanted]) if self._replica_problem(i, r) is None}
        if len(ready) == wanted:
            return self._done(name, f"variant {variant_name}: every replica is ready")
        variant = ResolvedVariant(
            name=variant_name,
            model=self._model(old),
            weight=old["weight"],
            compute=Compute(size=old["size"], replicas=wanted),
            batching=_batching(old["processes"]),
        )
        artifact = self._store.verified(variant.model.digest)
        started: dict[int, Replica] = {}
        try:
            for i in range(wanted):
                if i not in ready:
                    request = self._request(name, variant, i, artifact, self._timeout(name))
                    started[i] = self.runtime.start(request)
            replicas = [ready.get(i) or started[i] for i in range(wanted)]
            with self._db.write() as conn:
                conn.execute(
                    "UPDATE variants SET processes = ? WHERE endpoint = ? AND name = ?",
                    (json.dumps([_record(r, variant.batching) for r in replicas]), name, variant_name),
                )
        except BaseException:
            for replica in started.values():
                self.runtime.stop(replica)
            raise
        self._write_routes(name)
        # Exited ones are only removed (a container stays until then); a replica that runs but
        # does not answer stops once the router has the new table.
        for replica in recorded:
            if replica.id not in {r.id for r in ready.values()}:
                self._runtime_for(replica).stop(replica)
        return self._done(name, f"restore {len(started)} replica(s) of variant {variant_name}")

    def _model(self, variant_row: Mapping[str, Any]) -> ModelVersion:
        """The model version a variant row serves."""
        from mlshift.local._models import LocalModelRegistry

        return LocalModelRegistry(self._db, self._store).get(
            ModelRef(name=variant_row["model_name"], version=str(variant_row["model_version"]))
        )

    def update_tags(self, name: str, tags: Mapping[str, str]) -> Operation[EndpointState]:
        self._require(name)
        with self._db.write() as conn:
            conn.execute("UPDATE endpoints SET tags = ? WHERE name = ?", (json.dumps(dict(tags)), name))
        return self._done(name, "update tags")

    def delete(self, name: str) -> Operation[None]:
        row = self._require(name)
        ProcessHandle(pid=row["router_pid"], started=row["router_started"]).terminate()
        for v in row["variants"]:
            self._stop(v["processes"])
        self._reap_orphans(self._dir(name))
        with self._db.write() as conn:
            conn.execute("DELETE FROM variants WHERE endpoint = ?", (name,))
            conn.execute("DELETE FROM endpoints WHERE name = ?", (name,))
            conn.execute("DELETE FROM rollouts WHERE endpoint = ?", (name,))
        shutil.rmtree(self._dir(name), ignore_errors=True)
        write_capture_config(self.capture_dir(name), None)  # the captured files stay
        return CompletedOperation(None, f"delete endpoint {name}")

    # ---------------------------------------------------------------- contract: options (capture)

    def option_changes(self, spec: EndpointSpec) -> builtins.list[OptionChange]:
        if spec.capture is None or self._row(spec.name) is None:
            return []
        live = read_capture_config(self.capture_dir(spec.name))
        wanted = _capture_settings(spec)
        if live == wanted:
            return []
        return [
            OptionChange(
                field="capture",
                old=json.dumps(live, sort_keys=True) if live else None,
                new=json.dumps(wanted, sort_keys=True) if wanted else None,
            )
        ]

    def update_options(self, name: str, spec: EndpointSpec) -> Operation[EndpointState]:
        self._require(name)
        if spec.capture is not None:
            # Servers re-read the file within a second; none restarts.
            write_capture_config(self.capture_dir(name), _capture_settings(spec))
        return self._done(name, "update capture")

    # ---------------------------------------------------------------- contract: reading capture

    def capture_settings(self, name: str) -> CaptureSpec | None:
        """The settings in ``name``'s ``capture.json`` (``None``: capture is off)."""
        settings = read_capture_config(self.capture_dir(name))
        if settings is None:
            return None
        try:
            return CaptureSpec.model_validate(settings)
        except ConfigError:
            return None  # written by another version of mlshift: not ours to judge

    def read_capture(self, name: str, *, since: datetime, until: datetime) -> Iterator[CapturedRequest]:
        """Records under ``<state>/capture/<name>/data/`` in the window (see ``docs/monitoring.md``)."""
        from mlshift.serving._captured import read_capture_folder

        return read_capture_folder(self.capture_dir(name), endpoint=name, since=since, until=until)

    # ---------------------------------------------------------------- contract: traffic

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
        row = self._require(name)
        headers = {"Content-Type": content_type}
        if variant is not None:
            headers[TARGET_HEADER] = variant
        if request_id is not None:
            # The router passes it on; a capturing server records the request under it.
            headers["X-Request-Id"] = request_id
        url = f"http://127.0.0.1:{row['port']}/invocations"
        start = time.perf_counter()
        try:
            resp = self._client().post(url, content=body, headers=headers, timeout=timeout)
        except Exception as exc:
            raise ProviderError(
                f"endpoint {name!r} did not answer at {url}: {exc}",
                provider="local",
                orig=exc,
                hint=f"check `mlshift endpoints show {name}`; router log: {self._dir(name) / 'router.log'}",
            ) from exc
        return Invocation(
            status_code=resp.status_code,
            body=resp.content,
            content_type=resp.headers.get("content-type", "application/json"),
            variant=resp.headers.get("x-mlshift-variant"),
            latency_ms=(time.perf_counter() - start) * 1000,
            request_id=resp.headers.get("x-request-id") or request_id,
        )

    def read_metrics(self, name: str, variant: str, window: float) -> VariantMetrics | None:
        row = self._require(name)
        # The client's read timeout (60 s), not a short one: a router busy with the very load
        # being judged may take seconds to answer, and a timeout here would end the rollout.
        resp = self._client().get(
            f"http://127.0.0.1:{row['port']}/_mlshift/metrics", params={"window": window}
        )
        data = resp.json()["variants"].get(variant)
        if data is None:
            return VariantMetrics(variant=variant, window_seconds=window, requests=0, errors=0)
        return VariantMetrics(variant=variant, window_seconds=window, **data)

    # ---------------------------------------------------------------- contract: shadow traffic

    def _shadow_config(self, name: str) -> dict[str, Any] | None:
        # Kept beside the routing file (not in SQLite): it lives exactly as long as the rollout
        # that set it, and the router reads it from the table it already reloads.
        path = self._dir(name) / "shadow.json"
        try:
            data: dict[str, Any] = json.loads(path.read_text())
        except (FileNotFoundError, ValueError):
            return None
        return data

    def set_shadow(
        self, name: str, variant: str, percent: int, *, tolerance: float = 0.01
    ) -> Operation[EndpointState]:
        row = self._require(name)
        if percent and variant not in {v["name"] for v in row["variants"]}:
            raise NotFound(f"endpoint {name!r} has no variant {variant!r}", provider="local")
        path = self._dir(name) / "shadow.json"
        if percent:
            path.write_text(json.dumps({"variant": variant, "percent": int(percent), "tolerance": tolerance}))
        elif (self._shadow_config(name) or {}).get("variant") == variant:
            path.unlink(missing_ok=True)
        self._write_routes(name)
        return self._done(name, f"mirror {percent}% to {variant}")

    def read_shadow(self, name: str, variant: str, window: float) -> ShadowMetrics | None:
        row = self._require(name)
        resp = self._client().get(
            f"http://127.0.0.1:{row['port']}/_mlshift/shadow", params={"window": window}
        )
        data = resp.json()["variants"].get(variant)
        if data is None:
            return ShadowMetrics(variant=variant, window_seconds=window, requests=0, errors=0)
        return ShadowMetrics(variant=variant, window_seconds=window, **data)

    # ---------------------------------------------------------------- contract: journal

    def record_rollout(self, record: RolloutRecord) -> None:
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO rollouts (id, endpoint, phase, record) VALUES (?,?,?,?)"
                " ON CONFLICT (id) DO UPDATE SET phase = excluded.phase, record = excluded.record",
                (record.id, record.endpoint, record.phase, record.model_dump_json()),
            )

    def rollouts(self, name: str, limit: int = 20) -> builtins.list[RolloutRecord]:
        with self._db.read() as conn:
            rows = conn.execute(
                "SELECT record FROM rollouts WHERE endpoint = ? ORDER BY id DESC LIMIT ?", (name, limit)
            ).fetchall()
        return [RolloutRecord.model_validate_json(r[0]) for r in rows]

    # ---------------------------------------------------------------- contract: locking

    @contextlib.contextmanager
    def lock(self, name: str, *, owner: str, timeout: float) -> Iterator[None]:
        import fcntl

        folder = self.root / "locks"
        folder.mkdir(parents=True, exist_ok=True)
        path = folder / f"{name}.lock"
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            deadline = time.monotonic() + timeout
            while True:
                try:
                    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                    break
                except OSError as exc:
                    if exc.errno not in (errno.EAGAIN, errno.EACCES):
                        raise
                    if time.monotonic() >= deadline:
                        holder = path.read_text(errors="replace").strip() or "another process"
                        raise Conflict(
                            f"endpoint {name!r} is being changed by {holder}; waited {timeout:g} s",
                            provider="local",
                            hint="wait for that change to finish, then run the command again",
                        ) from None
                    time.sleep(0.05)
            os.ftruncate(fd, 0)
            os.pwrite(fd, f"{owner} since {datetime.now(timezone.utc):%Y-%m-%d %H:%M:%S} UTC".encode(), 0)
            # Whoever held the lock before may have died between starting a process and
            # recording it. Holding the lock, nothing else starts processes for this endpoint,
            # so anything running from its folder that the database does not list is left over.
            self._reap_orphans(self._dir(name), self._recorded_ids(name))
            try:
                yield
            finally:
                os.ftruncate(fd, 0)
                fcntl.flock(fd, fcntl.LOCK_UN)
        finally:
            os.close(fd)


def _capture_settings(spec: EndpointSpec) -> dict[str, Any] | None:
    """What the capture folder's ``capture.json`` holds for ``spec`` (``None``: capture off)."""
    if spec.capture is None or not spec.capture.enabled:
        return None
    return spec.capture.model_dump(mode="json", exclude={"enabled"})


def _replicas(processes: str | list[dict[str, Any]]) -> list[Replica]:
    """The replicas recorded in a variant row's ``processes`` column."""
    items = json.loads(processes) if isinstance(processes, str) else processes
    return [Replica.from_json(item) for item in items]


def _record(replica: Replica, batching: Batching | None) -> dict[str, Any]:
    """A replica's record in the ``processes`` column, with the batching its server runs with
    (so that a resize or a restore starts new replicas with the same settings)."""
    data = replica.to_json()
    if batching is not None:
        data["batching"] = batching.model_dump()
    return data


def _batching(processes: str | list[dict[str, Any]]) -> Batching | None:
    """The batching a variant's recorded replicas run with (``None``: off)."""
    items = json.loads(processes) if isinstance(processes, str) else processes
    recorded = next((item["batching"] for item in items if item.get("batching")), None)
    return Batching.model_validate(recorded) if recorded is not None else None
