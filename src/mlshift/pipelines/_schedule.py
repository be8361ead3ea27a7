"""The local scheduler: run pipelines when their cron schedule says, in the foreground.

``mlshift pipelines schedule FILE:PIPELINE ...`` is this loop; put it under systemd, a
container or a CI cron job. The clouds' own schedulers come with their adapters.

A pipeline is due when its most recent tick is later than the last tick it ran for (kept in
``pipelines.db``). So a schedule seen for the first time runs once right away, for its most
recent tick, and ticks missed while the scheduler was stopped are covered by one run, not
replayed one by one (Airflow's ``catchup=False``). Pipelines due together run one after the
other.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from datetime import datetime, timezone
from typing import TYPE_CHECKING

from mlshift.errors import ConfigError

if TYPE_CHECKING:
    from mlshift.pipelines._pipeline import Pipeline
    from mlshift.pipelines._run import PipelineEvent, PipelineRun
    from mlshift.pipelines._service import PipelineService

__all__ = ["run_schedules"]


def _utcnow() -> datetime:
    return datetime.now(timezone.utc)


def run_schedules(
    service: PipelineService,
    pipelines: Sequence[Pipeline],
    *,
    once: bool = False,
    max_runs: int | None = None,
    sources: Sequence[str | None] | None = None,
    on_event: Callable[[PipelineEvent], None] | None = None,
    on_run: Callable[[PipelineRun], None] | None = None,
    now: Callable[[], datetime] = _utcnow,
    sleep: Callable[[float], None] = time.sleep,
) -> list[PipelineRun]:
    """Run each pipeline whenever its schedule comes due; return the runs made.

    Args:
        once: Run what is due now, then return instead of waiting for the next tick.
        max_runs: Return after this many runs.
        sources: Where each pipeline was loaded from (``FILE:PIPELINE``), kept for ``list``.
        on_run: Called with each run as it starts.
        now, sleep: The clock (tests pass their own).

    Raises:
        ConfigError: a pipeline without a schedule, or two pipelines with one name.
    """
    if max_runs is not None and max_runs < 1:
        raise ConfigError(f"max_runs must be at least 1, got {max_runs}", field="max_runs")
    if not pipelines:
        raise ConfigError("no pipelines to schedule", field="pipelines")
    seen: set[str] = set()
    for p in pipelines:
        if p.cron is None:
            raise ConfigError(
                f"pipeline {p.name!r} has no schedule",
                field="schedule",
                hint='give it one: @pipeline(schedule="0 3 * * *") or Pipeline(..., schedule=...)',
            )
        if p.name in seen:
            raise ConfigError(f"pipeline {p.name!r} is listed twice", field="pipelines")
        seen.add(p.name)
    for p, source in zip(pipelines, sources or [None] * len(pipelines), strict=True):
        assert p.schedule is not None
        service.db.save_schedule(p.name, p.schedule, p.timezone, source, None)
    runs: list[PipelineRun] = []
    while True:
        moment = now()
        for p in pipelines:
            assert p.cron is not None
            tick = p.cron.latest_at_or_before(moment)
            row = service.db.schedule(p.name)
            last = row["last_tick"] if row else None
            if last is not None and datetime.fromisoformat(last) >= tick:
                continue
            # Recorded before running: a run that fails (or a scheduler that dies) does not make
            # the same tick fire again in a loop.
            assert p.schedule is not None
            service.db.save_schedule(p.name, p.schedule, p.timezone, None, tick.isoformat())
            run = service.start(p.ir, None, trigger="schedule", on_event=on_event)
            if on_run is not None:
                on_run(run)
            run.wait()
            runs.append(run)
            if max_runs is not None and len(runs) >= max_runs:
                return runs
        if once:
            return runs
        moment = now()
        upcoming = min(p.cron.next_after(moment) for p in pipelines if p.cron is not None)
        sleep(max(0.0, (upcoming - moment).total_seconds()) + 0.05)
