"""``client.pipelines.schedule`` / ``unschedule`` and ``mlshift pipelines schedule|unschedule`` on a
target whose pipeline service keeps schedules on the provider (the declared ScheduleService)."""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

import mlshift
from mlshift.adapter import Capability, ScheduleChange, ScheduleService
from mlshift.errors import ConfigError, UnsupportedOperation
from mlshift.pipelines import ContainerStep, Pipeline
from mlshift.pipelines.ir import PipelineIR


class FakeScheduler:
    """A provider scheduler: schedules by pipeline name; records every call, mutating or not."""

    def __init__(self) -> None:
        self.schedules: dict[str, tuple[str, str, dict[str, Any]]] = {}
        self.calls: list[tuple[str, str]] = []

    def mutating(self) -> list[tuple[str, str]]:
        return [c for c in self.calls if c[0] != "get"]

    def sync_schedule(
        self, ir: PipelineIR, params: Mapping[str, Any] | None = None, *, dry_run: bool = False
    ) -> ScheduleChange:
        values = dict(ir.resolve_params(params))
        self.calls.append(("get", ir.name))
        live = self.schedules.get(ir.name)
        if ir.schedule is None:
            return self.delete_schedule(ir.name, dry_run=dry_run)
        wanted = (ir.schedule.cron, ir.schedule.timezone, values)
        action = "created" if live is None else ("unchanged" if live == wanted else "updated")
        if action != "unchanged" and not dry_run:
            self.calls.append(("put", ir.name))
            self.schedules[ir.name] = wanted
        return ScheduleChange(
            pipeline=ir.name,
            action=action,  # type: ignore[arg-type]
            schedule_id=f"sched-{ir.name}",
            cron=ir.schedule.cron,
            timezone=ir.schedule.timezone,
            dry_run=dry_run,
        )

    def delete_schedule(self, pipeline_name: str, *, dry_run: bool = False) -> ScheduleChange:
        self.calls.append(("get", pipeline_name))
        found = pipeline_name in self.schedules
        if found and not dry_run:
            self.calls.append(("delete", pipeline_name))
            del self.schedules[pipeline_name]
        return ScheduleChange(pipeline_name, "deleted" if found else "absent", dry_run=dry_run)


class ScheduledTarget:
    """memory://, with a provider pipeline service that keeps schedules (or, without
    ``SCHEDULES``, one that declares none)."""

    def __init__(self, inner: Any, service: FakeScheduler, *, schedules: bool = True) -> None:
        self._inner = inner
        self.pipelines = service
        extra = {Capability.SCHEDULES} if schedules else set()
        self.capabilities = frozenset(set(inner.capabilities) - {Capability.SCHEDULES} | extra)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


def nightly(cron: str = "0 3 * * *") -> Pipeline:
    return Pipeline("nightly", steps=[ContainerStep("tick", "busybox", ["true"])], schedule=cron)


@pytest.fixture
def scheduler() -> FakeScheduler:
    return FakeScheduler()


@pytest.fixture
def client(scheduler: FakeScheduler) -> Iterator[mlshift.Client]:
    with mlshift.connect("memory://") as local:
        yield mlshift.Client(ScheduledTarget(local.adapter, scheduler))  # type: ignore[arg-type]


def test_the_fake_is_a_schedule_service(scheduler: FakeScheduler) -> None:
    assert isinstance(scheduler, ScheduleService)


def test_a_schedule_is_created_left_alone_updated_and_deleted(
    client: mlshift.Client, scheduler: FakeScheduler
) -> None:
    assert client.pipelines.schedule(nightly(), dry_run=True).action == "created"
    assert scheduler.mutating() == []
    made = client.pipelines.schedule(nightly())
    assert (made.action, made.schedule_id, made.cron, made.timezone) == (
        "created",
        "sched-nightly",
        "0 3 * * *",
        "UTC",
    )
    before = len(scheduler.mutating())
    assert client.pipelines.schedule(nightly()).action == "unchanged"
    assert len(scheduler.mutating()) == before
    assert client.pipelines.schedule(nightly("30 4 * * 1")).action == "updated"
    assert scheduler.schedules["nightly"][0] == "30 4 * * 1"
    assert client.pipelines.unschedule("nightly").to_dict()["action"] == "deleted"
    assert scheduler.schedules == {}
    assert client.pipelines.unschedule("nightly").action == "absent"


def test_a_target_without_schedules_refuses_before_any_call(scheduler: FakeScheduler) -> None:
    with mlshift.connect("memory://") as local:
        client = mlshift.Client(ScheduledTarget(local.adapter, scheduler, schedules=False))  # type: ignore[arg-type]
        with pytest.raises(UnsupportedOperation, match="needs SCHEDULES"):
            client.pipelines.schedule(nightly())
        with pytest.raises(UnsupportedOperation, match="needs SCHEDULES"):
            client.pipelines.unschedule("nightly")
    assert scheduler.calls == []


def test_a_local_target_points_at_the_foreground_scheduler(tmp_path: Path) -> None:
    with mlshift.connect(f"local://{tmp_path}") as local:
        assert Capability.SCHEDULES in local.adapter.capabilities
        with pytest.raises(UnsupportedOperation) as caught:
            local.pipelines.schedule(nightly())
    assert "only while" in caught.value.message
    assert caught.value.hint is not None and "mlshift pipelines schedule" in caught.value.hint


@pytest.fixture
def cli(client: mlshift.Client, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    from mlshift.cli import _output, app

    monkeypatch.setattr(_output, "client", lambda target, project_file=None: client)
    (tmp_path / "flows.py").write_text(
        "from mlshift.pipelines import ContainerStep, Pipeline\n"
        "nightly = Pipeline('nightly', steps=[ContainerStep('tick', 'busybox', ['true'])],"
        " schedule='0 3 * * *')\n"
    )

    def run(*args: str, code: int = 0) -> Any:
        result = CliRunner().invoke(app, ["pipelines", *args], catch_exceptions=True)
        assert result.exit_code == code, (result.output, result.exception)
        return result

    run.flows = f"{tmp_path / 'flows.py'}:nightly"  # type: ignore[attr-defined]
    return run


def test_the_cli_syncs_the_provider_schedule_and_says_what_changed(
    cli: Any, scheduler: FakeScheduler
) -> None:
    planned = json.loads(cli("schedule", cli.flows, "--dry-run", "--output", "json").stdout)
    assert [(c["pipeline"], c["action"], c["dry_run"]) for c in planned] == [("nightly", "created", True)]
    assert scheduler.mutating() == []
    assert "nightly: schedule created as sched-nightly (0 3 * * * UTC)" in cli("schedule", cli.flows).stdout
    assert "schedule unchanged" in cli("schedule", cli.flows).stdout
    assert "schedule deleted" in cli("unschedule", "nightly").stdout
    assert scheduler.schedules == {}


def test_the_cli_refuses_local_only_flags_on_a_provider_scheduler(cli: Any, scheduler: FakeScheduler) -> None:
    result = cli("schedule", cli.flows, "--once", code=1)
    assert isinstance(result.exception, ConfigError) and "--once" in result.exception.message
    assert scheduler.calls == []
