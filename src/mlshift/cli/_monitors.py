"""``mlshift monitors ...``: save, list, show, run, report and schedule monitors; post labels.

Only typer is imported at module level. Exit codes: 0 success (also when drift was found: a
monitor that did its job succeeded), 1 an mlshift error or a retraining run that failed.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated, Any

import typer

from mlshift.cli import _output as ui
from mlshift.cli._options import OutputOpt, TargetOpt
from mlshift.cli._project import FileOpt, _project

if TYPE_CHECKING:
    from mlshift.monitoring import MonitorRun

__all__ = ["monitors_app"]

monitors_app = typer.Typer(
    help="Watch endpoints' captured traffic for drift: save monitors, run them, read their reports.",
    no_args_is_help=True,
)

NameArg = Annotated[str, typer.Argument(help="The monitor's name.", show_default=False)]


def _run_line(run: MonitorRun) -> str:
    if not run.judged:
        verdict = f"not judged: {run.note}"
    elif run.drifted or run.quality:
        verdict = "drift in " + ", ".join(run.drifted) if run.drifted else "data quality"
        if run.quality:
            verdict += " · " + "; ".join(run.quality)
    else:
        verdict = "no drift"
    quality = run.model_quality
    if quality is not None:
        if not quality.judged:
            verdict += f" · {quality.metric}: {quality.note}"
        else:
            state = "DEGRADED" if quality.degraded else "ok"
            verdict += (
                f" · {quality.metric} {quality.value:.4g} on {quality.labelled_rows} labelled rows ({state})"
            )
    acts = []
    if run.episode_started:
        acts.append("episode started")
    elif run.in_episode:
        acts.append("same episode")
    if run.alerted:
        acts.append("alert sent")
    if run.alert_error:
        acts.append(f"alert failed: {run.alert_error}")
    if run.retrain_run:
        acts.append(f"retrain run {run.retrain_run}")
    tail = f" ({', '.join(acts)})" if acts else ""
    return f"{run.monitor} · {run.model} · {run.requests} requests · {verdict}{tail}"


def _print_run(run: MonitorRun, output: str) -> None:
    if output == "json":
        ui.print_json(run.model_dump(mode="json"))
        return
    out = ui.console()
    out.print(_run_line(run), markup=False)
    if run.report is not None:
        rows = [
            {
                "feature": f.feature,
                "statistic": f.statistic,
                "value": "n/a" if f.value is None else f"{f.value:.4g}",
                "threshold": f"{f.threshold:g}",
                "verdict": "drifted" if f.drifted else ("not judged" if f.value is None else "ok"),
            }
            for f in run.report.features
        ]
        ui.table(rows, f"run {run.id}", "")
    out.print(f"report: {run.html_path}", markup=False)


@monitors_app.command("apply")
def monitors_apply(file: FileOpt = None, target: TargetOpt = None, output: OutputOpt = "table") -> None:
    """Check the `monitors:` of mlshift.yaml against the target and save them."""
    ui.check_output(output)
    project, path = _project(file)
    client = ui.client(target, path)
    saved = [client.monitors.plan(m) for m in project.monitors]  # all checked before any is saved
    for spec in saved:
        client.monitors.apply(spec)
    if output == "json":
        ui.print_json([m.model_dump(mode="json") for m in saved])
    else:
        names = ", ".join(m.name for m in saved) or "none (the file has no monitors:)"
        ui.console().print(f"Saved monitors: {names}", markup=False)


@monitors_app.command("list")
def monitors_list(target: TargetOpt = None, output: OutputOpt = "table") -> None:
    """Saved monitors."""
    ui.check_output(output)
    client = ui.client(target)
    monitors = client.monitors.list()
    if output == "json":
        ui.print_json([m.model_dump(mode="json") for m in monitors])
        return
    rows = []
    for m in monitors:
        runs = client.monitors.runs(m.name)
        rows.append(
            {
                "monitor": m.name,
                "endpoint": m.endpoint,
                "schedule": m.schedule or "-",
                "last run": _run_line(runs[-1]).split(" · ", 1)[1] if runs else "never",
            }
        )
    ui.table(rows, "Monitors", "No monitors saved yet (mlshift monitors apply).")


@monitors_app.command("show")
def monitors_show(name: NameArg, target: TargetOpt = None, output: OutputOpt = "table") -> None:
    """A monitor's spec and its recent runs."""
    ui.check_output(output)
    client = ui.client(target)
    spec = client.monitors.get(name)
    runs = client.monitors.runs(name)[-10:]
    if output == "json":
        ui.print_json({"monitor": spec.model_dump(mode="json"), "runs": [r.summary() for r in runs]})
        return
    import yaml

    out = ui.console()
    out.print(
        yaml.safe_dump(spec.model_dump(mode="json", exclude_defaults=True), sort_keys=False), markup=False
    )
    for run in runs:
        out.print(f"{run.id}  {_run_line(run)}", markup=False)


@monitors_app.command("run")
def monitors_run(
    name: NameArg,
    wait: Annotated[
        bool, typer.Option("--wait/--no-wait", help="Wait for a retraining run it starts (runs here).")
    ] = True,
    target: TargetOpt = None,
    output: OutputOpt = "table",
) -> None:
    """Run a saved monitor once over what was captured since its previous run."""
    ui.check_output(output)
    client = ui.client(target)
    started: list[Any] = []
    run = client.monitors.run(name, on_retrain=started.append)
    _print_run(run, output)
    for pipeline_run in started:
        if not wait:
            ui.console(stderr=True).print(
                f"retraining run {pipeline_run.id} was started; this command leaves it unfinished",
                markup=False,
            )
            continue
        finished = pipeline_run.wait()
        if output != "json":
            ui.console().print(f"retraining run {finished.id}: {finished.summary()}", markup=False)
        if finished.status != "succeeded":
            raise typer.Exit(1)


@monitors_app.command("report")
def monitors_report(
    name: NameArg,
    run_id: Annotated[str | None, typer.Option("--run", help="A run id (default: the latest).")] = None,
    html: Annotated[str | None, typer.Option(help="Write the HTML report to this file.")] = None,
    target: TargetOpt = None,
    output: OutputOpt = "table",
) -> None:
    """A run's drift report: a table (or JSON with -o json), and the HTML page with --html."""
    ui.check_output(output)
    client = ui.client(target)
    run = client.monitors.report(name, run_id)
    if html is not None:
        from pathlib import Path

        Path(html).write_text(client.monitors.html(name, run.id))
    _print_run(run, output)


@monitors_app.command("labels")
def monitors_labels(
    endpoint: Annotated[str, typer.Argument(help="The endpoint whose requests the labels are for.")],
    file: Annotated[
        str,
        typer.Argument(
            help="Ground truth by request id: a CSV with a `request_id,label` header, or JSON lines "
            'of {"request_id": ..., "label": ...}.'
        ),
    ],
    target: TargetOpt = None,
    output: OutputOpt = "table",
) -> None:
    """Post ground-truth labels for requests an endpoint answered, joined by request id.

    The ids are the X-Request-Id headers the requests were sent with (the endpoint answers
    with the id it recorded). Monitors with `model_quality` score the answers of labelled
    requests in their window; a later label for the same id replaces the earlier one.
    """
    ui.check_output(output)
    from mlshift.monitoring._quality import load_labels

    labels = load_labels(file)  # read and checked before the target is touched
    client = ui.client(target)
    stored = client.monitors.labels(endpoint, labels)
    if output == "json":
        ui.print_json({"endpoint": endpoint, "labels": stored})
    else:
        ui.console().print(f"Stored {stored} labels for endpoint {endpoint}", markup=False)


@monitors_app.command("schedule")
def monitors_schedule(
    names: Annotated[
        list[str] | None, typer.Argument(help="Monitors to run (default: every saved one).")
    ] = None,
    once: Annotated[bool, typer.Option("--once", help="Run what is due now, then exit.")] = False,
    max_runs: Annotated[int | None, typer.Option(help="Exit after this many runs.")] = None,
    target: TargetOpt = None,
    output: OutputOpt = "table",
) -> None:
    """Run monitors when their cron schedule says, in the foreground (as `pipelines schedule`).

    With `-o json` each run is printed when it ends, as one JSON object per line.
    """
    ui.check_output(output)
    client = ui.client(target)

    def on_run(run: MonitorRun) -> None:
        if output == "json":
            # One line per run, so a consumer can follow a long-running scheduler.
            ui.console().print(run.model_dump_json(), markup=False, highlight=False, soft_wrap=True)
        else:
            ui.console().print(_run_line(run), markup=False)

    client.monitors.run_schedules(names or (), once=once, max_runs=max_runs, on_run=on_run)
