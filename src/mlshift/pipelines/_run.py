"""What a user holds while a pipeline runs: :class:`PipelineRun`, its :class:`StepRun` records and
the :class:`PipelineEvent` stream progress displays are drawn from."""

from __future__ import annotations

import abc
import json
import threading
import time
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import Field

from mlshift.errors import NotFound, ProviderTimeout
from mlshift.specs._base import SpecModel

if TYPE_CHECKING:
    from mlshift.pipelines._ir import PipelineIR
    from mlshift.pipelines._service import PipelineService

__all__ = ["LocalPipelineRun", "PipelineEvent", "PipelineRun", "RunStatus", "StepRun", "StepStatus"]

RunStatus = Literal["running", "succeeded", "failed", "cancelled", "interrupted"]
StepStatus = Literal["pending", "running", "succeeded", "cached", "skipped", "failed", "cancelled"]
FINISHED: frozenset[str] = frozenset({"succeeded", "failed", "cancelled", "interrupted"})


@dataclass(frozen=True)
class PipelineEvent:
    """One thing that happened in a run, for progress output.

    Attributes:
        kind: ``run_started``, ``step_started``, ``step_retrying``, ``step_finished`` or
            ``run_finished``.
        status: The step's or run's status, for ``*_finished``.
        elapsed: Seconds the step (or run) took, for ``*_finished``.
    """

    kind: Literal["run_started", "step_started", "step_retrying", "step_finished", "run_finished"]
    run_id: str
    pipeline: str = ""
    step: str | None = None
    status: str | None = None
    message: str | None = None
    elapsed: float = 0.0
    attempt: int = 0

    def to_json(self) -> dict[str, Any]:
        """The event as a JSON-ready dict (``--output json`` prints one per line)."""
        data: dict[str, Any] = {"event": self.kind, "run": self.run_id, "pipeline": self.pipeline}
        for key in ("step", "status", "message"):
            if getattr(self, key) is not None:
                data[key] = getattr(self, key)
        if self.kind.endswith("finished"):
            data["elapsed_s"] = round(self.elapsed, 3)
        if self.attempt:
            data["attempt"] = self.attempt
        return data


class StepRun(SpecModel):
    """One step of a run, as recorded.

    Attributes:
        status: ``pending``, ``running``, ``succeeded`` (it ran), ``cached`` (an earlier
            identical execution's outputs were reused), ``skipped`` (a condition said no),
            ``failed`` or ``cancelled``.
        attempts: Tries in its last execution (retries count).
        executions: How many times this run started the step (a resumed run does not re-run
            finished steps, so this stays at 1 for them).
        cached_from: The run whose outputs were reused, for ``cached``.
        outputs: Output name → value, or ``{"digest", "name", "path"}`` for an artifact.
        metrics: The metrics it produced.
        message: Why it failed or was skipped.
        log: The step's log file.
    """

    name: str
    kind: str
    status: StepStatus
    attempts: int = 0
    executions: int = 0
    cached_from: str | None = None
    outputs: dict[str, Any] = Field(default_factory=dict)
    metrics: dict[str, float] = Field(default_factory=dict)
    message: str | None = None
    started_at: datetime | None = None
    finished_at: datetime | None = None
    log: str | None = None

    @property
    def duration(self) -> float | None:
        """Seconds from start to end, when both are known."""
        if self.started_at is None or self.finished_at is None:
            return None
        return (self.finished_at - self.started_at).total_seconds()


def pid_alive(pid: int | None, started: float | None) -> bool:
    """Whether process ``pid`` still runs and is the one started at ``started`` (not a reused pid)."""
    if not pid:
        return False
    import psutil

    try:
        proc = psutil.Process(pid)
        if started is not None and abs(proc.create_time() - started) > 1.0:
            return False
        return bool(proc.status() != psutil.STATUS_ZOMBIE)
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return False


class PipelineRun(abc.ABC):
    """A pipeline run on any target: status, steps, logs; ``wait()`` for the end, ``cancel()``.

    ``client.pipelines.run()`` returns one: a :class:`LocalPipelineRun` on ``local://`` and
    ``memory://`` (steps run on this machine), or a cloud target's run (steps run there, and this
    object reads their status from the provider). Code written against this class works on both.

    Attributes:
        id: The run id (``mlshift pipelines status ID`` takes it).
        pipeline: The pipeline's name.
        params: The parameter values the run was started with.
        resumable: Whether ``mlshift pipelines run --resume ID`` can resume it.
    """

    id: str
    pipeline: str
    params: dict[str, Any]
    trigger: str = "manual"
    resumable: bool = False
    #: Who runs the steps, for error messages: ``local`` or the cloud adapter's name.
    provider: str = "local"

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.id} of {self.pipeline!r}: {self.status}>"

    @property
    @abc.abstractmethod
    def status(self) -> RunStatus:
        """``running``, ``succeeded``, ``failed``, ``cancelled`` or ``interrupted``."""

    @property
    @abc.abstractmethod
    def message(self) -> str | None:
        """Why the run failed, or what a gate stopped."""

    @property
    @abc.abstractmethod
    def steps(self) -> list[StepRun]:
        """Every step, in pipeline order."""

    @property
    def created_at(self) -> datetime | None:
        """When the run was started, where known."""
        return None

    @property
    def finished_at(self) -> datetime | None:
        """When the run ended, where known."""
        return None

    @abc.abstractmethod
    def wait(self, timeout: float | None = None) -> PipelineRun:
        """Block until the run ends; returns the run (check :attr:`status`).

        Raises:
            ProviderTimeout: if ``timeout`` seconds pass first (the run goes on).
        """

    @abc.abstractmethod
    def cancel(self) -> None:
        """Stop the run: running steps are stopped, pending ones never start."""

    @abc.abstractmethod
    def logs(self, step: str) -> str:
        """The output of ``step``.

        Raises:
            NotFound: if the pipeline has no such step.
        """

    def step(self, name: str) -> StepRun:
        """One step.

        Raises:
            NotFound: if the pipeline has no such step.
        """
        steps = self.steps
        for s in steps:
            if s.name == name:
                return s
        known = ", ".join(s.name for s in steps)
        raise NotFound(f"run {self.id} has no step {name!r} (its steps: {known})", provider=self.provider)

    @property
    def executed(self) -> list[str]:
        """Steps this run executed (not reused from the cache, not skipped)."""
        return [s.name for s in self.steps if s.status in ("succeeded", "failed") and s.executions]

    @property
    def cached(self) -> list[str]:
        """Steps whose outputs came from the cache."""
        return [s.name for s in self.steps if s.status == "cached"]

    @property
    def skipped(self) -> list[str]:
        """Steps a condition (or a skipped input) kept from running."""
        return [s.name for s in self.steps if s.status == "skipped"]

    def summary(self) -> str:
        """One line: the outcome, and how many steps ran, came from the cache, were skipped."""
        return _summary(self.status, self.steps)

    def to_dict(self) -> dict[str, Any]:
        """The run as JSON-ready data (``--output json``)."""
        return self._as_dict(self.status, self.message, self.steps)

    def _as_dict(self, status: RunStatus, message: str | None, steps: list[StepRun]) -> dict[str, Any]:
        created, finished = self.created_at, self.finished_at
        return {
            "id": self.id,
            "pipeline": self.pipeline,
            "status": status,
            "message": message,
            "trigger": self.trigger,
            "params": self.params,
            "created_at": created.isoformat() if created else None,
            "finished_at": finished.isoformat() if finished else None,
            "executed": [s.name for s in steps if s.status in ("succeeded", "failed") and s.executions],
            "cached": [s.name for s in steps if s.status == "cached"],
            "skipped": [s.name for s in steps if s.status == "skipped"],
            "summary": _summary(status, steps),
            "steps": [s.model_dump(mode="json") for s in steps],
        }


def _summary(status: RunStatus, steps: list[StepRun]) -> str:
    ran = [s for s in steps if s.status in ("succeeded", "failed") and s.executions]
    cached = [s for s in steps if s.status == "cached"]
    skipped = [s for s in steps if s.status == "skipped"]
    if status == "succeeded" and not ran and cached:
        extra = f" ({len(skipped)} skipped)" if skipped else ""
        return f"succeeded: nothing ran, all {len(cached)} steps came from the cache{extra}"
    parts = [f"{len(ran)} ran", f"{len(cached)} from cache"]
    if skipped:
        parts.append(f"{len(skipped)} skipped")
    return f"{status}: " + ", ".join(parts)


class LocalPipelineRun(PipelineRun):
    """A run of the local runner (``local://``, ``memory://``): steps run on this machine.

    Everything is read from the run's records, so a run started by another process (the
    CLI, a scheduler) can be watched the same way.
    """

    resumable = True

    def __init__(
        self, service: PipelineService, run_id: str, *, thread: threading.Thread | None = None
    ) -> None:
        self._service = service
        self.id = run_id
        self._thread = thread
        self._cancel = threading.Event()
        # Set by the runner thread when it has recorded the run's end. Waiting on this rather
        # than on Thread.join(): a join interrupted by Ctrl-C can wrongly report the thread
        # finished on Python < 3.13, and the cancelled run would never be recorded.
        self.finished = threading.Event()
        self.error: BaseException | None = None
        row = service.db.run(run_id)
        self.pipeline = row["pipeline"]
        self.params = json.loads(row["params"])
        self.trigger = row["trigger"]

    # ---------------------------------------------------------------------------- state

    @property
    def status(self) -> RunStatus:
        """``running``, ``succeeded``, ``failed``, ``cancelled``, or ``interrupted`` (its runner
        process died without finishing it: resume it)."""
        row = self._service.db.run(self.id)
        status: RunStatus = row["status"]
        if status == "running":
            if self._thread is not None:
                return "interrupted" if self.finished.is_set() else "running"
            if not pid_alive(row["runner_pid"], row["runner_started"]):
                return "interrupted"
        return status

    @property
    def message(self) -> str | None:
        """Why the run failed, or what a gate stopped."""
        return self._service.db.run(self.id)["message"]  # type: ignore[no-any-return]

    @property
    def created_at(self) -> datetime:
        """When the run was started."""
        return datetime.fromisoformat(self._service.db.run(self.id)["created_at"])

    @property
    def ir(self) -> PipelineIR:
        """The IR the run executes."""
        from mlshift.pipelines._ir import PipelineIR

        return PipelineIR.model_validate_json(
            self._service.db.run(self.id)["ir"], context={"prevalidated": True}
        )

    @property
    def steps(self) -> list[StepRun]:
        """Every step, in pipeline order."""
        return [self._service.step_run(self.id, row) for row in self._service.db.steps(self.id)]

    def logs(self, step: str) -> str:
        """The log of ``step`` (its output, and each attempt's traceback).

        Raises:
            NotFound: if the pipeline has no such step.
        """
        self.step(step)
        path = self._service.log_path(self.id, step)
        try:
            return path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    @property
    def finished_at(self) -> datetime | None:
        """When the run ended."""
        value = self._service.db.run(self.id)["finished_at"]
        return datetime.fromisoformat(value) if value else None

    # ---------------------------------------------------------------------------- control

    def wait(self, timeout: float | None = None) -> LocalPipelineRun:
        """Block until the run ends; returns the run (check :attr:`status`).

        Ctrl-C while waiting cancels the run cleanly — running steps are stopped, finished
        ones keep their outputs — and then raises ``KeyboardInterrupt``.

        Raises:
            ProviderTimeout: if ``timeout`` seconds pass first (the run goes on).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                if self._thread is not None:
                    if self.finished.wait(0.1):
                        break
                elif self.status in FINISHED:
                    break
                else:
                    time.sleep(0.2)
                if deadline is not None and time.monotonic() > deadline:
                    raise ProviderTimeout(
                        f"pipeline run {self.id} did not finish within {timeout:g} s",
                        provider="local",
                        hint="it keeps running; wait again or cancel it",
                    )
        except KeyboardInterrupt:
            self.cancel()
            if self._thread is not None:
                self.finished.wait()
            raise
        if self.error is not None:
            raise self.error
        return self

    def cancel(self) -> None:
        """Stop the run: running steps are terminated, pending ones never start.

        A run executing in another process (the CLI, a notebook) is asked through its record,
        which its runner checks twice a second; no signal is sent to a process we do not own.
        """
        if self._thread is not None:
            self._cancel.set()
            return
        self._service.db.update_run(self.id, cancel_requested=1)

    @property
    def cancel_requested(self) -> threading.Event:
        """Set when :meth:`cancel` was called (the runner polls it)."""
        return self._cancel

    def artifact_path(self, step: str, output: str) -> Path:
        """Where an artifact output of ``step`` is stored (read it, do not change it).

        Raises:
            NotFound: if the step has no such artifact (yet).
        """
        value = self.step(step).outputs.get(output)
        if not isinstance(value, dict) or "path" not in value:
            raise NotFound(
                f"step {step!r} of run {self.id} has no stored artifact {output!r}", provider="local"
            )
        return Path(value["path"])
