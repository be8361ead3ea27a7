"""Options every command that talks to a target shares (only typer is imported here)."""

from __future__ import annotations

from typing import Annotated

import typer

__all__ = ["OutputOpt", "TargetOpt"]

TargetOpt = Annotated[
    str | None,
    typer.Option(
        "--target",
        "-t",
        help="Target URI or mlshift.yaml name (default: $MLSHIFT_TARGET, default_target, local://).",
        show_default=False,
    ),
]
OutputOpt = Annotated[
    str, typer.Option("--output", "-o", help="table (for people) or json (for scripts and CI).")
]
