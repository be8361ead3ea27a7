"""Pipelines that run on a cloud target: the contract its adapter implements, and the run handle.

A cloud adapter's ``pipelines`` attribute implements :class:`mlshift.adapter.PipelineService`
(``RemotePipelineService`` here, its earlier name): it compiles
the IR to the provider's own pipeline document, creates or updates the pipeline, starts a run
and reports it in neutral terms (:class:`RemoteRunState`, made of the same :class:`StepRun`
records the local runner writes). :class:`RemotePipelineRun` turns that into the
:class:`~mlshift.pipelines.PipelineRun` users already know from ``local://``: ``wait()``,
``status``, ``steps``, ``step(name).outputs``, ``summary()``, ``logs()``, ``cancel()``.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import datetime
from typing import Any

from pydantic import Field

from mlshift.adapter import PipelineService as RemotePipelineService
from mlshift.errors import ProviderTimeout
from mlshift.pipelines._run import FINISHED, PipelineEvent, PipelineRun, RunStatus, StepRun, _summary
from mlshift.specs._base import SpecModel

__all__ = ["RemotePipelineRun", "RemotePipelineService", "RemoteRunState"]


class RemoteRunState(SpecModel):
    """A cloud run as its provider reports it, in neutral terms.

    Attributes:
        status: ``running`` (also while a cancel is in progress), ``succeeded``, ``failed`` or
            ``cancelled``.
        steps: Every step of the pipeline, in pipeline order: ``pending`` until it starts,
            ``skipped`` if the run ended without it (a condition said no, or an earlier step
            failed), ``cached`` if the provider reused an earlier run's outputs.
    """

    id: str
    pipeline: str
    status: RunStatus
    message: str | None = None
    params: dict[str, Any] = Field(default_factory=dict)
    created_at: datetime | None = None
    finished_at: datetime | None = None
    steps: tuple[StepRun, ...] = ()


class RemotePipelineRun(PipelineRun):
    """A run on a cloud target: its steps run there; this object reads their status.

    Each property asks the provider (until the run has finished: then the last answer is kept).
    Progress events (``on_event``) are produced while :meth:`wait` polls, from the changes
    between two status checks.
    """

    def __init__(
        self,
        service: RemotePipelineService,
        run_id: str,
        *,
        provider: str,
        on_event: Callable[[PipelineEvent], None] | None = None,
        state: RemoteRunState | None = None,
    ) -> None:
        self._service = service
        self.id = run_id
        self.provider = provider
        self._on_event = on_event
        self._final: RemoteRunState | None = None
        first = state or service.describe_run(run_id)
        self._remember(first)
        self.pipeline = first.pipeline
        self.params = dict(first.params)
        self._seen: dict[str, str] = {}
        self._reported_end = False
        self._started = time.monotonic()

    def _remember(self, state: RemoteRunState) -> RemoteRunState:
        if state.status in FINISHED:
            self._final = state
        return state

    def state(self) -> RemoteRunState:
        """The run as the provider reports it now (one status check, unless it has finished)."""
        if self._final is not None:
            return self._final
        return self._remember(self._service.describe_run(self.id))

    @property
    def status(self) -> RunStatus:
        return self.state().status

    @property
    def message(self) -> str | None:
        return self.state().message

    @property
    def steps(self) -> list[StepRun]:
        return list(self.state().steps)

    @property
    def created_at(self) -> datetime | None:
        return self.state().created_at

    @property
    def finished_at(self) -> datetime | None:
        return self.state().finished_at

    def summary(self) -> str:
        state = self.state()  # one status check for the whole line
        return _summary(state.status, list(state.steps))

    def to_dict(self) -> dict[str, Any]:
        state = self.state()
        return {**self._as_dict(state.status, state.message, list(state.steps)), "target": self.provider}

    def logs(self, step: str) -> str:
        self.step(step)
        return self._service.run_logs(self.id, step)

    def cancel(self) -> None:
        self._service.cancel_run(self.id)

    def _emit(self, state: RemoteRunState) -> None:
        if self._on_event is None:
            return
        for s in state.steps:
            before = self._seen.get(s.name, "pending")
            if s.status == before:
                continue
            if before == "pending" and s.status in ("running", "succeeded", "failed"):
                self._on_event(PipelineEvent("step_started", self.id, self.pipeline, step=s.name))
            if s.status not in ("pending", "running"):
                self._on_event(
                    PipelineEvent(
                        "step_finished",
                        self.id,
                        self.pipeline,
                        step=s.name,
                        status=s.status,
                        message=s.message,
                        elapsed=s.duration or 0.0,
                    )
                )
            self._seen[s.name] = s.status
        if state.status in FINISHED and not self._reported_end:
            self._reported_end = True
            self._on_event(
                PipelineEvent(
                    "run_finished",
                    self.id,
                    self.pipeline,
                    status=state.status,
                    message=state.message,
                    elapsed=time.monotonic() - self._started,
                )
            )

    def wait(self, timeout: float | None = None) -> RemotePipelineRun:
        """Poll the provider until the run ends; returns the run (check :attr:`status`).

        Ctrl-C while waiting asks the provider to stop the run, then raises ``KeyboardInterrupt``.

        Raises:
            ProviderTimeout: if ``timeout`` seconds pass first (the run goes on).
        """
        deadline = None if timeout is None else time.monotonic() + timeout
        try:
            while True:
                state = self.state()
                self._emit(state)
                if state.status in FINISHED:
                    return self
                if deadline is not None and time.monotonic() > deadline:
                    raise ProviderTimeout(
                        f"pipeline run {self.id} did not finish within {timeout:g} s",
                        provider=self.provider,
                        hint="it keeps running there; wait again, or cancel it",
                    )
                time.sleep(max(0.05, self._service.poll_interval))
        except KeyboardInterrupt:
            self.cancel()
            raise
