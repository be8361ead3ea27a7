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


def apply_cmd(
    file: FileOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Apply without asking.")] = False,
    target: TargetOpt = None,
    output: OutputOpt = "table",
) -> None:
    """Converge the target to mlshift.yaml: plan, confirm, apply."""
    from mlshift.errors import ConfigError

    ui.check_output(output)
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
