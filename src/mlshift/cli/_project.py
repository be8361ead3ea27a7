"""``mlshift plan`` and ``mlshift apply``: converge a target to mlshift.yaml."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from mlshift.cli import _output as ui
from mlshift.cli._endpoints import endpoint_json
from mlshift.cli._options import OutputOpt, TargetOpt

__all__ = ["apply_cmd", "plan_cmd"]

FileOpt = Annotated[
    str | None, typer.Option("--file", "-f", help="mlshift.yaml (default: searched upward from here).")
]


def _project(file: str | None) -> tuple[Any, str]:
    from pathlib import Path

    from mlshift._config import find_project_file, load_project
    from mlshift.errors import ConfigError

    path = Path(file) if file else find_project_file()
    if path is None:
        raise ConfigError("no mlshift.yaml here or in any parent folder", hint="pass -f PATH")
    return load_project(path), str(path)


def plan_cmd(
    file: FileOpt = None,
    detailed_exitcode: Annotated[
        bool, typer.Option("--detailed-exitcode", help="Exit 0 with no changes, 2 with changes, 1 on error.")
    ] = False,
    target: TargetOpt = None,
    output: OutputOpt = "table",
) -> None:
    """Show what `apply` would change. Reads only."""
    ui.check_output(output)
    project, path = _project(file)
    plan = ui.client(target, path).plan(project)
    if output == "json":
        ui.print_json(plan.to_json())
    else:
        ui.console().print(plan.render(), markup=False)
    if detailed_exitcode and not plan.is_empty:
        raise typer.Exit(2)


def _saved_plan(plan_file: str, file: str | None) -> tuple[Any, str | None]:
    """The plan in ``plan_file`` (from ``mlshift plan -o json``), and the mlshift.yaml in use.

    The project file is read only when it is needed: when given with ``-f``, or when the plan
    hides secret values that only it holds.
    """
    import json
    from pathlib import Path

    from mlshift._config import find_project_file
    from mlshift.errors import ConfigError
    from mlshift.plan import Plan

    source = Path(plan_file)
    try:
        text = sys.stdin.read() if plan_file == "-" else source.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read the plan file {plan_file!r}: {exc.strerror}", field="plan") from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"the plan file {plan_file!r} is not JSON: {exc.msg} (line {exc.lineno})",
            field="plan",
            hint="save a plan with `mlshift plan -o json > plan.json`",
        ) from None
    found = Path(file) if file else find_project_file()
    specs: Any = ()
    if file or '"(hidden)"' in text:
        project, _ = _project(file)
        specs = project.endpoints
    return Plan.from_json(data, specs), str(found) if found else None


def apply_cmd(
    file: FileOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Apply without asking.")] = False,
    target: TargetOpt = None,
    output: OutputOpt = "table",
    plan_file: Annotated[
        str | None,
        typer.Option(
            "--plan",
            help="Apply this saved plan (`mlshift plan -o json > FILE`; - for stdin) instead of planning "
            "again. Refused if the target changed since.",
        ),
    ] = None,
) -> None:
    """Converge the target to mlshift.yaml: plan, confirm, apply."""
    from mlshift.errors import ConfigError

    ui.check_output(output)
    if plan_file is not None:
        plan, path = _saved_plan(plan_file, file)
        client = ui.client(target, path)
    else:
        project, path = _project(file)
        client = ui.client(target, path)
        plan = client.plan(project)
    if plan.is_empty:
        if output == "json":
            ui.print_json({"applied": 0, "plan": plan.to_json()})
        else:
            ui.console().print(plan.render(), markup=False)
        return
    if output != "json":
        ui.console().print(plan.render(), markup=False)
    if not yes:
        if not sys.stdin.isatty():
            raise ConfigError(
                "refusing to apply without confirmation in a non-interactive session", hint="add --yes"
            )
        if not typer.confirm("Apply these changes?"):
            raise typer.Exit(1)
    result = client.apply(plan, on_event=ui.ApplyProgress())
    if output == "json":
        ui.print_json(
            {
                "applied": plan.changes,
                "plan": plan.to_json(),
                "models": [m.model_dump(mode="json") for m in result.models],
                "endpoints": {k: endpoint_json(v) for k, v in result.endpoints.items()},
            }
        )
    else:
        ui.console().print(f"[green]Applied {plan.changes} change(s).[/green]")
