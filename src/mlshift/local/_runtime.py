"""Where a variant replica runs: the seam between local endpoints and what hosts their servers.

The local target decides which replicas an endpoint has, routes traffic to them and records
them in its database; a :class:`ReplicaRuntime` only starts one model server, tells whether it
still runs, shows its log and stops it. Host processes (:class:`ProcessRuntime`) are the first
runtime; a container runtime plugs in the same way.
"""

from __future__ import annotations

import time
from collections.abc import Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from mlshift.local._process import ProcessHandle, log_tail, reap_processes, spawn_server
from mlshift.specs.endpoint import Batching, Compute

__all__ = ["ProcessRuntime", "Replica", "ReplicaRequest", "ReplicaRuntime"]


@dataclass(frozen=True)
class ReplicaRequest:
    """One model server to start: replica ``index`` of ``variant`` on ``endpoint``.

    Attributes:
        endpoint: The endpoint's name.
        variant: The variant's name.
        index: The replica's number within the variant, from 0.
        artifact: The verified model artifact (file or folder) in the local store.
        framework: The model's framework (``sklearn``, ``onnx``, ``predictor``...).
        digest: The artifact's content digest, checked again by the server at load.
        model_ref: ``name:version`` of the model, reported by the server.
        compute: The variant's neutral compute (runtimes that can limit resources honour it).
        folder: The variant's folder in the state directory: logs and port files go here.
        timeout: Seconds the server may take to load its model and answer.
        signature_json: The model's input signature as JSON, when it has one.
        skops_trust: Extra types the model's version was registered to trust (skops files).
        batching: The variant's micro-batching, when it sets one.
        capture_dir: The endpoint's capture folder; its ``capture.json`` turns capture on.
    """

    endpoint: str
    variant: str
    index: int
    artifact: Path
    framework: str
    digest: str
    model_ref: str
    compute: Compute
    folder: Path
    timeout: float
    signature_json: str | None = None
    skops_trust: str | None = None
    batching: Batching | None = None
    capture_dir: Path | None = None

    @property
    def what(self) -> str:
        """How errors name this replica."""
        return f"model server for {self.endpoint}/{self.variant} ({self.model_ref})"

    @property
    def log(self) -> Path:
        """The replica's log file."""
        return self.folder / f"replica-{self.index}.log"

    def server_args(self, *, port_file: Path, host: str = "127.0.0.1", port: int = 0) -> list[str]:
        """The ``python -m mlshift.serving`` arguments that serve this replica."""
        args = [
            "--artifact", str(self.artifact),
            "--framework", self.framework,
            "--digest", self.digest,
            "--host", host,
            "--port", str(port),
            "--port-file", str(port_file),
            "--variant", self.variant,
            "--model-ref", self.model_ref,
        ]  # fmt: skip
        if self.signature_json is not None:
            args += ["--signature-json", self.signature_json]
        if self.skops_trust:
            args += ["--skops-trust", self.skops_trust]
        if self.batching is not None:
            args += [
                "--max-batch-size", str(self.batching.max_batch_size),
                "--max-latency-ms", f"{self.batching.max_latency_ms:g}",
            ]  # fmt: skip
        if self.capture_dir is not None:
            args += ["--capture-dir", str(self.capture_dir), "--endpoint", self.endpoint]
        return args

    def environment(self) -> dict[str, str]:
        """What a server that reads its settings from the environment (a container) needs
        beyond the model itself: the variant's batching."""
        return self.batching.environment() if self.batching is not None else {}


@dataclass(frozen=True)
class Replica:
    """A started replica, as the local target records it.

    Attributes:
        runtime: The name of the runtime that started it.
        id: The runtime's id for it (a pid for processes, a container id for containers).
        port: The port on 127.0.0.1 its model server answers on.
        started: When it started (seconds since the epoch): with ``id`` it tells a reused pid
            from the process we started.
        log: Where its log is, when the runtime keeps one in a file.
        extra: Anything else the runtime needs to find it again.
    """

    runtime: str
    id: str
    port: int
    started: float
    log: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        """The record stored in the local state database."""
        data: dict[str, Any] = {
            "runtime": self.runtime,
            "id": self.id,
            "port": self.port,
            "started": self.started,
        }
        if self.runtime == ProcessRuntime.name:
            data["pid"] = int(self.id)  # what `ps` shows; older records only have this
        if self.log is not None:
            data["log"] = self.log
        if self.extra:
            data["extra"] = dict(self.extra)
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Replica:
        """Read a record written by :meth:`to_json` (or by versions that only kept a pid)."""
        return cls(
            runtime=str(data.get("runtime", ProcessRuntime.name)),
            id=str(data.get("id", data.get("pid"))),
            port=int(data["port"]),
            started=float(data["started"]),
            log=data.get("log"),
            extra=dict(data.get("extra") or {}),
        )


@runtime_checkable
class ReplicaRuntime(Protocol):
    """Starts, watches and stops the model server of one variant replica.

    Every method is called with the endpoint's lock held, so a runtime needs no locking of
    its own. Servers must listen on 127.0.0.1 only.
    """

    name: str

    def start(self, request: ReplicaRequest) -> Replica:
        """Start the replica and return once its server accepts connections.

        Raises:
            ProviderError: if it stops before it is ready (with the end of its log).
            ProviderTimeout: if it is not ready within ``request.timeout`` seconds; nothing is
                left running.
        """
        ...

    def running(self, replica: Replica) -> bool:
        """True while the replica's server runs (not whether it is healthy: that is ``/ping``)."""
        ...

    def exit_reason(self, replica: Replica) -> str:
        """How a replica that no longer runs ended, in a few words (``exited (code 137)``)."""
        ...

    def stop(self, replica: Replica, timeout: float = 10.0) -> None:
        """Stop it gracefully (in-flight requests finish), forcibly after ``timeout`` seconds."""
        ...

    def logs(self, replica: Replica, lines: int = 8) -> str:
        """The last ``lines`` lines of its log, for error messages."""
        ...

    def reap(self, folder: Path, keep: Collection[str] = ()) -> list[str]:
        """Stop replicas started for ``folder`` whose ids are not in ``keep``; return their ids.

        A deployer killed between starting a replica and recording it leaves it running
        unrecorded; the local target calls this with the recorded ids so there is never a
        second copy of a variant.
        """
        ...


class ProcessRuntime:
    """Each replica is a ``python -m mlshift.serving`` process on this machine.

    Compute sizes are labels here: every process shares this machine's CPUs and memory.
    """

    name = "process"

    def start(self, request: ReplicaRequest) -> Replica:
        request.folder.mkdir(parents=True, exist_ok=True)
        # A fresh port file per start: a stale one from an earlier server is never read.
        port_file = request.folder / f"replica-{request.index}-{time.time_ns()}.port"
        handle, port = spawn_server(
            "mlshift.serving",
            request.server_args(port_file=port_file),
            log=request.log,
            port_file=port_file,
            timeout=request.timeout,
            what=request.what,
        )
        port_file.unlink(missing_ok=True)
        return Replica(
            runtime=self.name, id=str(handle.pid), port=port, started=handle.started, log=str(request.log)
        )

    @staticmethod
    def _handle(replica: Replica) -> ProcessHandle:
        return ProcessHandle(pid=int(replica.id), started=replica.started)

    def running(self, replica: Replica) -> bool:
        return self._handle(replica).alive()

    def exit_reason(self, replica: Replica) -> str:
        # Only a parent learns a process's exit status, and the deployer rarely is one.
        return f"process {replica.id} exited"

    def stop(self, replica: Replica, timeout: float = 10.0) -> None:
        self._handle(replica).terminate(timeout=timeout)

    def logs(self, replica: Replica, lines: int = 8) -> str:
        return log_tail(Path(replica.log), lines) if replica.log else ""

    def reap(self, folder: Path, keep: Collection[str] = ()) -> list[str]:
        pids = {int(k) for k in keep if k.isdigit()}
        return [str(pid) for pid in reap_processes(folder, "mlshift.serving", keep=pids)]
