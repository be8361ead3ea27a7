"""``mlshift pipelines ...``: run, resume, inspect, compile and schedule pipelines.

Only typer is imported at module level (``mlshift --help`` stays fast); each command imports
what it needs when it runs. Exit codes follow the rest of the CLI: 0 success, 1 a failed run or
an mlshift error, 130 cancelled with Ctrl-C (the run is left resumable).
"""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mlshift.cli import _output as ui
from mlshift.cli._options import OutputOpt, TargetOpt

if TYPE_CHECKING:
    from mlshift.pipelines import PipelineRun

__all__ = ["pipelines_app"]

pipelines_app = typer.Typer(
    help="Run pipelines on this machine, follow their runs, compile them, run them on a schedule.",
    no_args_is_help=True,
)

PipelineArg = Annotated[
    str,
    typer.Argument(
        help="FILE.py:PIPELINE (or FILE.py when it defines one pipeline, or package.module:PIPELINE).",
        show_default=False,
    ),
]


def _sigterm_as_interrupt() -> None:
    """SIGTERM (systemd stop, ``kill``) cancels a run the way Ctrl-C does."""
    import signal

    def handler(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, handler)


def _report(run: PipelineRun, output: str) -> None:
    """The run's outcome on stdout (steps table, or JSON); exit 1 if it failed."""
    if output == "json":
        ui.print_json(run.to_dict())
    else:
        _steps_table(run)
        console = ui.console()
        colour = {"succeeded": "green", "failed": "red"}.get(run.status, "yellow")
        console.print(f"[{colour}]{run.summary()}[/{colour}]")
        message = run.message
        if message:
            console.print(message, markup=False)
    if run.status != "succeeded":
        stopped_by_gate = any(s.kind == "fail" and s.status == "failed" for s in run.steps)
        if output != "json" and not stopped_by_gate:
            logs = f"mlshift pipelines logs {run.id} STEP"
            ui.console(stderr=True).print(
                f"resume with: mlshift pipelines run --resume {run.id}   (logs: {logs})"
                if run.resumable
                else f"logs: {logs}",
                markup=False,
            )
        raise typer.Exit(1)


def _steps_table(run: PipelineRun) -> None:
    from rich.table import Table

    table = Table(title=f"{run.pipeline} · run {run.id}", title_justify="left")
    for col in ("step", "status", "attempts", "time", "detail"):
        table.add_column(col)
    for s in run.steps:
        detail = s.message or ""
        if s.status == "cached" and s.cached_from:
            detail = f"from run {s.cached_from}"
        elif not detail and s.metrics:
            detail = ", ".join(f"{k}={v:.4g}" for k, v in s.metrics.items())
        elif not detail:
            values = {k: v for k, v in s.outputs.items() if not isinstance(v, dict)}
            detail = ", ".join(f"{k}={v}" for k, v in values.items())
        took = f"{s.duration:.1f}s" if s.duration is not None and s.status in ("succeeded", "failed") else ""
        table.add_row(s.name, f"{ui.ICONS.get(s.status, '')} {s.status}", str(s.attempts or ""), took, detail)
    ui.console().print(table)


def _wait(run: PipelineRun, output: str) -> None:
    try:
        run.wait()
    except KeyboardInterrupt:
        # wait() has cancelled the run and stopped its steps; finished ones keep their outputs.
        if output == "json":
            ui.print_json(run.to_dict())
        resume = f"; resume with: mlshift pipelines run --resume {run.id}" if run.resumable else ""
        ui.console(stderr=True).print(f"cancelled run {run.id}{resume}", markup=False)
        raise typer.Exit(130) from None


@pipelines_app.command("run")
def run_cmd(
    pipeline: Annotated[
        str | None,
        typer.Argument(help="FILE.py:PIPELINE to run (optional with --resume).", show_default=False),
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="KEY=VALUE for a pipeline parameter, repeatable."),
    ] = None,
    resume: Annotated[
        str | None, typer.Option("--resume", help="Resume this failed, cancelled or interrupted run.")
    ] = None,
    no_cache: Annotated[
        bool, typer.Option("--no-cache", help="Run every step, even unchanged ones.")
    ] = False,
    max_parallel: Annotated[
        int | None, typer.Option("--max-parallel", "-j", help="Steps at once (default: CPU cores).")
    ] = None,
    target: TargetOpt = None,
    output: OutputOpt = "table",
) -> None:
    """Run a pipeline on the target, or resume a local run where it stopped.

    On local:// the steps run on this machine. On a cloud target (sagemaker://REGION) the
    pipeline is compiled, created or updated there and started; this command follows it
    until it ends (Ctrl-C stops it).
    """
    from mlshift.errors import ConfigError

    ui.check_output(output)
    _sigterm_as_interrupt()
    client = ui.client(target)
    values = ui.pairs(param, "--param")
    progress = ui.PipelineProgress(output)
    if resume is not None:
        if values:
            raise ConfigError("a resumed run keeps its parameters; drop --param", field="param")
        if pipeline is not None:
            from mlshift.pipelines import load_pipeline

            loaded = load_pipeline(pipeline)
            recorded = client.pipelines.get(resume).pipeline
            if loaded.name != recorded:
                raise ConfigError(
                    f"run {resume} is a run of pipeline {recorded!r}, not {loaded.name!r}", field="pipeline"
                )
        with progress:
            run = client.pipelines.resume(resume, max_parallel=max_parallel, on_event=progress)
            _wait(run, output)
    else:
        if pipeline is None:
            raise ConfigError(
                "name the pipeline to run as FILE.py:PIPELINE, or resume a run with --resume RUN_ID",
                field="pipeline",
            )
        from mlshift.pipelines import load_pipeline

        loaded = load_pipeline(pipeline)
        params = loaded.ir.resolve_params(values, from_text=True)
        with progress:
            run = client.pipelines.run(
                loaded, params, cache=not no_cache, max_parallel=max_parallel, on_event=progress
            )
            _wait(run, output)
    _report(run, output)


@pipelines_app.command("list")
def list_cmd(
    pipeline: Annotated[str | None, typer.Option("--pipeline", help="Only runs of this pipeline.")] = None,
    limit: Annotated[int, typer.Option(help="At most this many runs, newest first.")] = 20,
    target: TargetOpt = None,
    output: OutputOpt = "table",
) -> None:
    """List pipeline runs, newest first."""
    ui.check_output(output)
    runs = ui.client(target).pipelines.list(pipeline, limit=limit)
    if output == "json":
        ui.print_json([r.to_dict() for r in runs])
        return
    if not runs:
        ui.console().print("No pipeline runs yet.")
        return
    from rich.table import Table

    table = Table(title="Pipeline runs", title_justify="left")
    for col in ("run", "pipeline", "status", "trigger", "started", "steps"):
        table.add_column(col)
    for r in runs:
        table.add_row(
            r.id,
            r.pipeline,
            r.status,
            r.trigger,
            r.created_at.strftime("%Y-%m-%d %H:%M:%S") if r.created_at else "",
            r.summary(),
        )
    ui.console().print(table)


@pipelines_app.command("status")
def status_cmd(
    run_id: Annotated[str, typer.Argument(help="The run id (see `mlshift pipelines list`).")],
    target: TargetOpt = None,
    output: OutputOpt = "table",
) -> None:
    """Show a run: its status and every step's."""
    ui.check_output(output)
    run = ui.client(target).pipelines.get(run_id)
    if output == "json":
        ui.print_json(run.to_dict())
        return
    _steps_table(run)
    console = ui.console()
    console.print(run.summary())
    if run.message:
        console.print(run.message, markup=False)


@pipelines_app.command("logs")
def logs_cmd(
    run_id: Annotated[str, typer.Argument(help="The run id.")],
    step: Annotated[str, typer.Argument(help="The step's name.")],
    target: TargetOpt = None,
    output: OutputOpt = "table",
) -> None:
    """Print one step's log: its output and each attempt's traceback."""
    ui.check_output(output)
    text = ui.client(target).pipelines.get(run_id).logs(step)
    if output == "json":
        ui.print_json({"run_id": run_id, "step": step, "log": text})
    else:
        sys.stdout.write(text)


@pipelines_app.command("compile")
def compile_cmd(
    pipeline: PipelineArg,
    target: TargetOpt = None,
    out: Annotated[
        str | None, typer.Option("--out", "-o", help="Write to this file (default: stdout).")
    ] = None,
    format: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="kfp: a Kubeflow Pipelines PipelineSpec (YAML; JSON when --out ends in .json), "
            "whatever the target. Default: the document TARGET runs.",
        ),
    ] = None,
    image: Annotated[
        str | None,
        typer.Option(
            "--image", help="With --format kfp: the mlshift image steps run in.", show_default=False
        ),
    ] = None,
    # Long form only: -o is --out here (it was first), unlike in every other command.
    output: Annotated[
        str,
        typer.Option(
            "--output",
            help="table or json: with --out, what was written as JSON; without, a KFP spec as "
            "JSON instead of YAML.",
        ),
    ] = "table",
) -> None:
    """Write the document TARGET runs the pipeline from (the portable IR for local), or a KFP spec."""
    import json
    from pathlib import Path

    from mlshift._client import compile_pipeline
    from mlshift._config import resolve_target
    from mlshift.errors import ConfigError
    from mlshift.pipelines import load_pipeline

    ui.check_output(output)
    if out in ("json", "table"):
        # Every other command reads `-o json` as --output json; here -o is --out.
        raise ConfigError(
            f"--out {out!r} would write a file named {out!r}",
            field="out",
            hint=f"-o is --out in `pipelines compile`; for that output use --output {out}",
        )
    if format not in (None, "kfp"):
        raise ConfigError(f"unknown --format {format!r}; the one format is kfp", field="format")
    if image is not None and format is None:
        raise ConfigError("--image goes with --format kfp", field="image")
    loaded = load_pipeline(pipeline)
    if format == "kfp":
        from mlshift.pipelines._kfp import DEFAULT_IMAGE, compile_kfp, to_yaml

        # Register and deploy steps act on --target from inside the cluster: only an explicit one.
        acts_on = resolve_target(target).uri if target else None
        document = compile_kfp(loaded.ir, image=image or DEFAULT_IMAGE, target=acts_on)
        as_json = bool(out and out.endswith(".json")) or (output == "json" and not out)
        text = json.dumps(document, indent=2) + "\n" if as_json else to_yaml(document)
    else:
        document = compile_pipeline(loaded, target or resolve_target(None).uri)
        text = json.dumps(document, indent=2) + "\n"
    if out:
        Path(out).write_text(text, encoding="utf-8")
        if output == "json":
            ui.print_json(
                {
                    "wrote": out,
                    "pipeline": loaded.name,
                    "steps": len(loaded.steps),
                    "hash": loaded.ir.hash,
                    "format": format or "ir",
                }
            )
        else:
            ui.console(stderr=True).print(
                f"wrote {loaded.name} ({len(loaded.steps)} steps, {loaded.ir.hash[:19]}…) to {out}"
            )
    else:
        sys.stdout.write(text)


def _print_changes(changes: list[Any], output: str) -> None:
    """Provider-side schedule changes on stdout: one line each, or a JSON list."""
    if output == "json":
        ui.print_json([c.to_dict() for c in changes])
        return
    console = ui.console()
    for c in changes:
        verb = f"would be {c.action}" if c.dry_run and c.changed else c.action
        where = f" as {c.schedule_id}" if c.schedule_id else ""
        when = f" ({c.cron} {c.timezone})" if c.cron else ""
        upcoming = f"; next run {c.next_run.isoformat(timespec='minutes')}" if c.next_run else ""
        console.print(f"{c.pipeline}: schedule {verb}{where}{when}{upcoming}", markup=False)


@pipelines_app.command("schedule")
def schedule_cmd(
    pipelines: Annotated[
        list[str], typer.Argument(help="FILE.py:PIPELINE for each pipeline with a schedule.")
    ],
    once: Annotated[bool, typer.Option("--once", help="Run what is due now, then exit (local).")] = False,
    max_runs: Annotated[
        int | None, typer.Option("--max-runs", help="Exit after this many runs (local).")
    ] = None,
    param: Annotated[
        list[str] | None,
        typer.Option("--param", "-p", help="KEY=VALUE for the scheduled runs (cloud), repeatable."),
    ] = None,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="Say what would change on the provider's scheduler (cloud).")
    ] = False,
    target: TargetOpt = None,
    output: OutputOpt = "table",
) -> None:
    """Schedule pipelines by their cron ``schedule``.

    On a target with its own scheduler (Azure ML, Vertex AI, kfp://) the provider's schedule is
    created, updated or left alone, and what changed is printed. On a local target this runs
    the pipelines when due, in the foreground (Ctrl-C stops): they fire only while it runs.
    """
    from datetime import datetime, timezone

    from mlshift.errors import ConfigError
    from mlshift.pipelines import load_pipeline

    ui.check_output(output)
    client = ui.client(target)
    loaded = [load_pipeline(ref) for ref in pipelines]
    if client.adapter.pipelines is not None:
        # The provider runs the pipelines: sync its scheduler (refused, naming why, when it has none).
        if once or max_runs is not None:
            raise ConfigError(
                "--once and --max-runs drive the local scheduler; the provider's scheduler fires on its own",
                field="once" if once else "max_runs",
                hint="drop them",
            )
        values = ui.pairs(param, "--param")
        params = [p.ir.resolve_params(values, from_text=True) if values else None for p in loaded]
        changes = [
            client.pipelines.schedule(p, v, dry_run=dry_run) for p, v in zip(loaded, params, strict=True)
        ]
        _print_changes(changes, output)
        return
    if dry_run or param:
        raise ConfigError(
            f"--dry-run and --param apply to a provider's scheduler; {client.target} schedules run "
            "in the foreground here",
            field="dry_run" if dry_run else "param",
            hint="drop them",
        )
    _sigterm_as_interrupt()
    if output != "json":
        console = ui.console(stderr=True)
        now = datetime.now(timezone.utc)
        for p in loaded:
            upcoming = p.cron.next_after(now).isoformat(timespec="minutes") if p.cron else "never"
            console.print(f"{p.name}: {p.schedule or 'no schedule'} ({p.timezone}); next tick {upcoming}")
    progress = ui.PipelineProgress(output)
    try:
        runs = client.pipelines.run_schedules(loaded, once=once, max_runs=max_runs, on_event=progress)
    except KeyboardInterrupt:
        ui.console(stderr=True).print("scheduler stopped")
        raise typer.Exit(130) from None
    if output == "json":
        ui.print_json([r.to_dict() for r in runs])
    else:
        console = ui.console()
        if not runs:
            console.print("nothing was due")
        for r in runs:
            console.print(f"{r.id} {r.pipeline}: {r.summary()}", markup=False)
            if r.message:
                console.print(f"  {r.message}", markup=False)
    if any(r.status != "succeeded" for r in runs):
        raise typer.Exit(1)


@pipelines_app.command("unschedule")
def unschedule_cmd(
    names: Annotated[list[str], typer.Argument(help="Name of each pipeline whose schedule to delete.")],
    dry_run: Annotated[bool, typer.Option("--dry-run", help="Say what would be deleted.")] = False,
    target: TargetOpt = None,
    output: OutputOpt = "table",
) -> None:
    """Delete pipelines' schedules from the provider's scheduler (Azure ML, Vertex AI, kfp://)."""
    ui.check_output(output)
    client = ui.client(target)
    _print_changes([client.pipelines.unschedule(n, dry_run=dry_run) for n in names], output)
