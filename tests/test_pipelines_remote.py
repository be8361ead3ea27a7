"""``client.pipelines`` on a target whose adapter runs pipelines itself (the neutral contract).

The cloud adapters implement :class:`~mlshift.pipelines._remote.RemotePipelineService`; this
stand-in scripts what a provider reports so the run handle's behaviour is pinned down without
any cloud: polling until the end, progress events from status changes, Ctrl-C stopping the
run, timeouts, and the same ``PipelineRun`` surface as local runs.
"""

from __future__ import annotations

import builtins
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import Any

import pytest

from mlshift._client import Client
from mlshift._registry import parse_target_uri
from mlshift.adapter import Capability
from mlshift.errors import ConfigError, ProviderTimeout, UnsupportedOperation
from mlshift.pipelines import PipelineEvent, PipelineRun, StepRun, pipeline, step
from mlshift.pipelines._ir import PipelineIR
from mlshift.pipelines._remote import RemotePipelineRun, RemoteRunState


@step
def double(x: int = 2) -> int:
    return x * 2


@pipeline
def tiny(x: int = 2) -> None:
    double(x=x)


def state(status: str, *steps: tuple[str, str], message: str | None = None) -> RemoteRunState:
    return RemoteRunState(
        id="run-1",
        pipeline="tiny",
        status=status,
        message=message,
        params={"x": 2},
        created_at=datetime(2026, 11, 27, tzinfo=timezone.utc),
        steps=tuple(
            StepRun(name=n, kind="python", status=s, executions=int(s in ("succeeded", "failed")))
            for n, s in steps
        ),
    )


class Scripted:
    """A provider whose runs go through the given states, one per status check."""

    poll_interval = 0.0

    def __init__(self, *states: RemoteRunState) -> None:
        self.states = list(states)
        self.describes = 0
        self.submitted: list[tuple[str, dict[str, Any], bool, int | None]] = []
        self.cancelled: list[str] = []

    def compile(self, ir: PipelineIR) -> dict[str, Any]:
        return {"steps": [s.name for s in ir.steps]}

    def submit(
        self,
        ir: PipelineIR,
        params: Mapping[str, Any] | None = None,
        *,
        use_cache: bool = True,
        max_parallel: int | None = None,
    ) -> str:
        self.submitted.append((ir.name, dict(params or {}), use_cache, max_parallel))
        return "run-1"

    def describe_run(self, run_id: str) -> RemoteRunState:
        self.describes += 1
        return self.states.pop(0) if len(self.states) > 1 else self.states[0]

    def cancel_run(self, run_id: str) -> None:
        self.cancelled.append(run_id)

    def list_runs(self, pipeline: str | None = None, limit: int = 50) -> builtins.list[str]:
        return ["run-1"]

    def run_logs(self, run_id: str, step: str) -> str:
        return f"log of {step}\n"


class CloudAdapter:
    name = "cloudy"
    uri = parse_target_uri("sagemaker://us-east-1")
    capabilities = frozenset({Capability.PIPELINES, Capability.PIPELINE_CONDITIONS})
    root = None

    def __init__(self, service: Scripted) -> None:
        self.pipelines = service

    def close(self) -> None:
        pass


def client_for(service: Scripted) -> Client:
    return Client(CloudAdapter(service))  # type: ignore[arg-type]


def test_run_submits_and_wait_follows_the_provider_to_the_end() -> None:
    service = Scripted(
        state("running", ("double", "pending")),
        state("running", ("double", "running")),
        state("succeeded", ("double", "succeeded")),
    )
    events: list[PipelineEvent] = []
    run = client_for(service).pipelines.run(
        tiny, {"x": 5}, cache=False, max_parallel=3, on_event=events.append
    )
    assert isinstance(run, PipelineRun) and isinstance(run, RemotePipelineRun)
    assert service.submitted == [("tiny", {"x": 5}, False, 3)]
    assert run.wait() is run
    assert run.status == "succeeded" and run.summary() == "succeeded: 1 ran, 0 from cache"
    assert [(e.kind, e.step, e.status) for e in events] == [
        ("step_started", "double", None),
        ("step_finished", "double", "succeeded"),
        ("run_finished", None, "succeeded"),
    ]
    checks = service.describes
    assert run.to_dict()["target"] == "cloudy" and run.step("double").status == "succeeded"
    assert service.describes == checks  # a finished run is not asked about again
    assert run.logs("double") == "log of double\n"


def test_a_failed_run_reports_the_provider_message_and_is_not_resumable() -> None:
    run = client_for(
        Scripted(state("failed", ("double", "failed"), message="step 'double' failed: boom"))
    ).pipelines.get("run-1")
    assert run.status == "failed" and run.message == "step 'double' failed: boom"
    assert not run.resumable and run.executed == ["double"]


def test_wait_times_out_and_the_run_goes_on() -> None:
    service = Scripted(state("running", ("double", "running")))
    run = client_for(service).pipelines.run(tiny)
    with pytest.raises(ProviderTimeout, match="did not finish within 0.01 s"):
        run.wait(timeout=0.01)
    assert service.cancelled == []


def test_ctrl_c_while_waiting_stops_the_run_on_the_provider(monkeypatch: pytest.MonkeyPatch) -> None:
    service = Scripted(state("running", ("double", "running")))
    run = client_for(service).pipelines.run(tiny)

    def interrupt(seconds: float) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr("mlshift.pipelines._remote.time.sleep", interrupt)
    with pytest.raises(KeyboardInterrupt):
        run.wait()
    assert service.cancelled == ["run-1"]


def test_local_only_calls_say_so_and_bad_input_fails_before_submitting() -> None:
    service = Scripted(state("running"))
    pipelines = client_for(service).pipelines
    with pytest.raises(UnsupportedOperation, match="resuming a run is done by the local runner"):
        pipelines.resume("run-1")
    with pytest.raises(UnsupportedOperation, match="schedules"):
        pipelines.run_schedules([tiny], once=True)
    with pytest.raises(UnsupportedOperation, match="needs SCHEDULES"):
        pipelines.schedule(tiny)
    with pytest.raises(ConfigError, match="has no parameter 'y'"):
        pipelines.run(tiny, {"y": 1})
    with pytest.raises(ConfigError, match="takes a Pipeline"):
        pipelines.run("tiny")  # type: ignore[arg-type]
    assert service.submitted == []
    assert [r.id for r in pipelines.list()] == ["run-1"]
