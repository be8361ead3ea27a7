"""Pipelines on a target whose runs happen on this machine: a target that declares
``Capability.PIPELINES`` and has no pipeline service of its own (``local://``, ``memory://``).

(Targets with a service run pipelines themselves: see :mod:`mlshift.pipelines._remote`.)

:class:`PipelineService` is what ``client.pipelines`` delegates to: it checks a run before
anything happens (parameters, secrets, docker, targets), records it, and starts the
:class:`~mlshift.pipelines._runner.LocalRunner` in a thread of its own. It also resumes runs,
lists them and compiles pipelines to IR.
"""

from __future__ import annotations

import contextlib
import json
import os
import secrets
import shutil
import signal
import tempfile
import threading
import weakref
from collections.abc import Callable, Iterator, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from mlshift.adapter import Capability
from mlshift.errors import ConfigError, UnsupportedOperation
from mlshift.pipelines._run import LocalPipelineRun, PipelineEvent, StepRun, pid_alive
from mlshift.pipelines._store import RunDB, StepArtifacts

if TYPE_CHECKING:
    # Type-only: the client facade is the layer above; it hands this module a client and a
    # way to connect to other targets (see Connect).
    from mlshift._client import Client
    from mlshift.pipelines._ir import PipelineIR

#: How the service reaches another target (a built-in step's ``target=``): ``mlshift.connect``,
#: passed in by the client facade so this layer does not import the layer above it.
Connect: TypeAlias = "Callable[[str], Client]"

__all__ = ["Connect", "PipelineService", "require_capabilities"]


def require_capabilities(
    capabilities: frozenset[Capability], target: str, ir: PipelineIR | None = None
) -> None:
    """Refuse a pipeline a target cannot run, before anything is sent or recorded.

    ``PIPELINES`` is needed to run any pipeline; ``PIPELINE_CONDITIONS`` for one that branches
    on step outputs (``when``, ``Gate``). The error names the installed targets that can.

    Raises:
        UnsupportedOperation: naming the missing capability and the targets that have it.
    """
    needs = [(Capability.PIPELINES, "running pipelines")]
    if ir is not None and ir.conditions:
        needs.append((Capability.PIPELINE_CONDITIONS, f"pipeline {ir.name!r}'s conditions"))
    for capability, what in needs:
        if capability not in capabilities:
            from mlshift._registry import targets_with

            others = ", ".join(targets_with(capability)) or "none installed"
            raise UnsupportedOperation(
                f"{what} needs {capability.name}, which {target} does not declare; targets that do: {others}",
                hint="run it with --target local://, or write its IR with `mlshift pipelines compile`",
            )


def _process_start() -> tuple[int, float]:
    import psutil

    return os.getpid(), psutil.Process(os.getpid()).create_time()


def _new_run_id() -> str:
    return datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S-") + secrets.token_hex(3)


class PipelineService:
    """Runs, run records and logs of one target's pipelines.

    Attributes:
        client: The client whose target built-in steps act on by default.
        root: The state folder (``pipelines.db``, ``pipelines/``).
    """

    def __init__(self, client: Client, root: Path, *, connect: Connect) -> None:
        self.client = client
        self.root = root
        self._connect = connect
        self.db = RunDB(root / "pipelines.db")
        self.store = StepArtifacts(root / "pipelines" / "artifacts")

    @classmethod
    def for_client(cls, client: Client, *, connect: Connect) -> PipelineService:
        """The local runner's service for a client's target (one without a pipeline service).

        Raises:
            UnsupportedOperation: for a target that does not declare ``PIPELINES``.
        """
        adapter = client.adapter
        require_capabilities(adapter.capabilities, adapter.uri.raw)
        root = adapter.root
        if root is None:
            # memory:// keeps nothing on disk; its pipelines state lives as long as the adapter.
            tmp = Path(tempfile.mkdtemp(prefix="mlshift-pipelines-"))
            weakref.finalize(adapter, shutil.rmtree, tmp, True)
            root = tmp
        return cls(client, Path(root), connect=connect)

    @property
    def target_identity(self) -> str:
        """What "this target" means in a built-in step's cache key."""
        root = self.client.adapter.root
        return f"local://{root}" if root is not None else f"{self.client.target}#{id(self.client.adapter)}"

    @contextlib.contextmanager
    def client_for(self, target: str | None) -> Iterator[Client]:
        """The pipeline's own client for ``None``, else a fresh connection to ``target``."""
        if target is None:
            yield self.client
            return
        with self._connect(target) as client:
            yield client

    def run_dir(self, run_id: str) -> Path:
        """The run's folder: logs and step work folders."""
        return self.root / "pipelines" / "runs" / run_id

    def log_path(self, run_id: str, step: str) -> Path:
        """The log file of one step of a run."""
        return self.run_dir(run_id) / "logs" / f"{step}.log"

    # ---------------------------------------------------------------------------- checks

    def preflight(self, ir: PipelineIR) -> None:
        """What would fail a run later, checked before it starts.

        Raises:
            ConfigError: a secret that is not set, a target name that is not defined.
            UnsupportedOperation: a container step without docker, or one with a GPU size on
                ``local+docker://``.
            DockerUnavailable: a container step on ``local+docker://`` with no engine answering.
        """
        from mlshift.local import COMPUTE_LIMITS
        from mlshift.pipelines._runner import docker_runtime, secret_env_name

        docker = docker_runtime(self.client)

        for step in ir.steps:
            for var, ref in step.secrets.items():
                env_name = secret_env_name(ref)
                if env_name not in os.environ:
                    raise ConfigError(
                        f"step {step.name!r}: secret {ref!r} (for ${var}) is not set; the local runner reads "
                        f"it from the environment variable {env_name}",
                        field=f"steps.{step.name}.secrets.{var}",
                        hint=f"export {env_name}=... in the shell that runs the pipeline",
                    )
            if step.kind == "container" and docker is not None:
                if step.resources.size not in COMPUTE_LIMITS:
                    raise UnsupportedOperation(
                        f"step {step.name!r} asks for size {step.resources.size!r}; "
                        f"{self.client.target} attaches no GPU to a container",
                        hint=f"use one of {', '.join(COMPUTE_LIMITS)}",
                    )
                docker.client  # noqa: B018  (no engine: DockerUnavailable, with how to start one)
            elif step.kind == "container" and shutil.which("docker") is None:
                raise UnsupportedOperation(
                    f"step {step.name!r} is a ContainerStep; the local runner runs it with docker, "
                    "which is not on PATH",
                    hint="install docker, or write the step as a @step function",
                )
            block = step.register_model or step.deploy
            target = getattr(block, "target", None)
            if target is not None and "://" not in target:
                from mlshift._config import resolve_target

                resolve_target(target)

    # ---------------------------------------------------------------------------- runs

    def start(
        self,
        ir: PipelineIR,
        params: Mapping[str, Any] | None,
        *,
        from_text: bool = False,
        use_cache: bool = True,
        max_parallel: int | None = None,
        on_event: Callable[[PipelineEvent], None] | None = None,
        trigger: str = "manual",
    ) -> LocalPipelineRun:
        """Check, record and start a run; returns at once (``.wait()`` on the result).

        Raises:
            ConfigError, UnsupportedOperation: before anything is recorded or run.
        """
        values = ir.resolve_params(params, from_text=from_text)
        self.preflight(ir)
        parallel = _parallelism(max_parallel)
        run_id = _new_run_id()
        self.db.create_run(
            run_id=run_id,
            pipeline=ir.name,
            ir_json=ir.model_dump_json(exclude_none=True),
            ir_hash=ir.hash,
            params=values,
            target=self.target_identity,
            trigger=trigger,
            use_cache=use_cache,
            steps=[(s.name, s.kind) for s in ir.steps],
            runner=_process_start(),
        )
        return self._launch(run_id, ir, values, use_cache=use_cache, max_parallel=parallel, on_event=on_event)

    def resume(
        self,
        run_id: str,
        *,
        max_parallel: int | None = None,
        on_event: Callable[[PipelineEvent], None] | None = None,
    ) -> LocalPipelineRun:
        """Resume a failed, cancelled or interrupted run from where it stopped.

        Steps that finished keep their outputs and do not run again. The others run with the
        code as it is now (fix the failing step, then resume), with the run's parameters.

        Raises:
            NotFound: for an unknown run.
            ConfigError: for a run that succeeded, or a step whose code cannot be imported.
            Conflict: if another live process is running it.
        """
        from mlshift.pipelines._ir import PipelineIR

        row = self.db.run(run_id)
        if row["status"] == "succeeded":
            raise ConfigError(
                f"pipeline run {run_id} succeeded; there is nothing to resume",
                hint="start a new run: steps whose inputs did not change come from the cache",
            )
        ir = PipelineIR.model_validate_json(row["ir"])
        rows = self.db.steps(run_id)
        finished = {r["name"] for r in rows if r["status"] in ("succeeded", "cached")}
        ir = _refresh_code(ir, skip=finished)
        self.preflight(ir)
        leftovers = [(r["pid"], r["pid_started"]) for r in rows if r["status"] == "running" and r["pid"]]
        self.db.claim_run(run_id, _process_start(), alive=pid_alive)
        for pid, started in leftovers:
            # A step of the dead runner; its watchdog normally took it down already.
            if pid_alive(pid, started):
                with contextlib.suppress(ProcessLookupError, PermissionError):
                    os.killpg(pid, signal.SIGKILL)
        self.db.update_run(run_id, ir=ir.model_dump_json(exclude_none=True), ir_hash=ir.hash)
        return self._launch(
            run_id,
            ir,
            json.loads(row["params"]),
            use_cache=bool(row["use_cache"]),
            max_parallel=_parallelism(max_parallel),
            on_event=on_event,
        )

    def _launch(
        self,
        run_id: str,
        ir: PipelineIR,
        params: Mapping[str, Any],
        *,
        use_cache: bool,
        max_parallel: int,
        on_event: Callable[[PipelineEvent], None] | None,
    ) -> LocalPipelineRun:
        from mlshift.pipelines._runner import LocalRunner

        run = LocalPipelineRun(self, run_id)
        runner = LocalRunner(
            self, run, ir, params, use_cache=use_cache, max_parallel=max_parallel, on_event=on_event
        )
        # Not a daemon: a script that ends without wait() still lets its pipeline finish.
        thread = threading.Thread(target=runner.run, name=f"mlshift-pipeline-{run_id}")
        run._thread = thread
        thread.start()
        return run

    def get(self, run_id: str) -> LocalPipelineRun:
        """A run by id.

        Raises:
            NotFound: for an unknown id.
        """
        return LocalPipelineRun(self, run_id)

    def list(self, pipeline: str | None = None, limit: int = 50) -> list[LocalPipelineRun]:
        """Runs, newest first."""
        return [LocalPipelineRun(self, row["id"]) for row in self.db.runs(pipeline, limit)]

    def step_run(self, run_id: str, row: Mapping[str, Any]) -> StepRun:
        """A step's row as a :class:`StepRun`, artifact outputs with their stored path."""
        raw = json.loads(row["outputs"] or "{}")
        outputs: dict[str, Any] = dict(raw.get("values", {}))
        for name, ref in raw.get("artifacts", {}).items():
            outputs[name] = {**ref, "path": str(self.store.path(ref))}
        return StepRun(
            name=row["name"],
            kind=row["kind"],
            status=row["status"],
            attempts=row["attempts"],
            executions=row["executions"],
            cached_from=row["cached_from"],
            outputs=outputs,
            metrics=raw.get("metrics", {}),
            message=row["message"],
            started_at=row["started_at"],
            finished_at=row["finished_at"],
            log=str(self.log_path(run_id, row["name"])),
        )


def _parallelism(requested: int | None) -> int:
    if requested is None:
        return os.cpu_count() or 1
    if isinstance(requested, bool) or not isinstance(requested, int) or requested < 1:
        raise ConfigError(
            f"max_parallel must be a positive whole number, got {requested!r}", field="max_parallel"
        )
    return requested


def _refresh_code(ir: PipelineIR, *, skip: set[str]) -> PipelineIR:
    """Re-read the code digests of the steps about to run, so a fixed step is not served the
    cached outputs of its broken version (and its new outputs are cached under its new code).

    Raises:
        ConfigError: if a step's function can no longer be imported.
    """
    from mlshift.pipelines._code import code_digest, load_callable

    steps = []
    changed = False
    for step in ir.steps:
        if step.python is None or step.name in skip:
            steps.append(step)
            continue
        location = {k: v for k, v in step.python.model_dump().items() if k != "code_digest"}
        try:
            target = load_callable(location)
        except Exception as exc:
            raise ConfigError(
                f"step {step.name!r}: cannot import {step.python.qualname} from {step.python.file}: "
                f"{type(exc).__name__}: {exc}",
                field=f"steps.{step.name}.python",
            ) from None
        if hasattr(target, "code_digest"):
            digest = target.code_digest
        else:
            digest = code_digest(target, field=f"steps.{step.name}")
        if digest != step.python.code_digest:
            python = step.python.model_copy(update={"code_digest": digest})
            step = step.model_copy(update={"python": python})
            step = step.model_copy(update={"hash": step.content_hash()})
            changed = True
        steps.append(step)
    if not changed:
        return ir
    ir = ir.model_copy(update={"steps": tuple(steps)})
    return ir.model_copy(update={"hash": ir.content_hash()})
