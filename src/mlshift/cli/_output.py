"""Output for every ``mlshift`` command: consoles, JSON, tables, progress, shared arguments.

The one place commands print from, so that ``--output json`` and errors look the same in every
command group. Only typer and the standard-library-only ``mlshift._progress`` are imported at
module level (``mlshift --help`` stays fast).
"""

from __future__ import annotations

import sys
import threading
from typing import TYPE_CHECKING, Any

import typer

from mlshift._progress import bake_text

if TYPE_CHECKING:
    from mlshift._client import Client
    from mlshift.pipelines import PipelineEvent
    from mlshift.plan import ApplyEvent

__all__ = [
    "ICONS",
    "ApplyProgress",
    "PipelineProgress",
    "State",
    "check_output",
    "client",
    "console",
    "live",
    "pairs",
    "print_json",
    "read_data",
    "table",
]


class State:
    """What the command being run prints: ``table`` or ``json`` (errors follow it)."""

    output = "table"


def console(stderr: bool = False) -> Any:
    """A rich console on stdout (or stderr), without highlighting or wrapping."""
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def live(out: Any) -> bool:
    """Whether ``out`` (a rich console) may redraw a line in place: a real, interactive terminal.

    rich takes ``FORCE_COLOR`` (set in many CI setups) to mean a terminal; colours are fine in a
    CI log, but a spinner's cursor movements leave control codes all over it.
    """
    if not out.is_interactive:
        return False
    isatty = getattr(out.file, "isatty", None)
    try:
        return bool(isatty and isatty())
    except ValueError:  # a closed stream
        return False


def check_output(output: str) -> str:
    """Check ``--output`` and remember it for error printing."""
    if output not in ("table", "json"):
        raise typer.BadParameter(f"expected one of json, table; got {output!r}", param_hint="--output")
    State.output = output
    return output


def client(target: str | None, project_file: str | None = None) -> Client:
    """Connect to ``--target`` (resolved like ``mlshift.connect``)."""
    from mlshift._client import connect

    return connect(target, project_file=project_file)


def print_json(data: Any) -> None:
    """Indented JSON on stdout."""
    import json

    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def pairs(values: list[str] | None, what: str, number: bool = False) -> dict[str, Any]:
    """``KEY=VALUE`` arguments as a dict (values as numbers with ``number``)."""
    from mlshift.errors import ConfigError

    out: dict[str, Any] = {}
    for item in values or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{what} {item!r} is not KEY=VALUE", field=what.lstrip("-"))
        if number:
            try:
                out[key] = float(value)
            except ValueError:
                raise ConfigError(
                    f"{what} {item!r}: {value!r} is not a number", field=what.lstrip("-")
                ) from None
        else:
            out[key] = value
    return out


class ApplyProgress:
    """Progress of an apply: one line per step; a live status line while a rollout bakes.

    In a terminal the bake is a single line updated in place; elsewhere (CI logs, notebooks,
    a pipe, even with ``FORCE_COLOR`` set) it is a line per second with no cursor movement;
    with ``--output json``, JSON lines on stderr.
    """

    #: The bake line (shared with :class:`mlshift.ProgressPrinter`).
    _bake_text = staticmethod(bake_text)

    def __init__(self) -> None:
        self.status: Any = None
        self.last = 0.0

    def __call__(self, event: ApplyEvent) -> None:
        import time

        detail = event.detail or {}
        if State.output == "json":
            import json

            now = time.monotonic()
            if event.phase == "progress" and "elapsed_s" in detail and now - self.last < 1.0:
                return
            self.last = now
            record = {
                "event": f"action_{event.phase}",
                "index": event.index,
                "total": event.total,
                "action": event.action.describe(),
                "elapsed_s": round(event.elapsed, 3),
                **({"error": event.error} if event.error else {}),
                **({"detail": detail} if detail else {}),
            }
            sys.stderr.write(json.dumps(record) + "\n")
            return
        out = console(stderr=True)
        prefix = f"[{event.index}/{event.total}]"
        if event.phase == "progress":
            if "elapsed_s" in detail:
                text = bake_text(detail)
                if live(out):
                    if self.status is None:
                        self.status = out.status(text)
                        self.status.start()
                    else:
                        self.status.update(text)
                elif time.monotonic() - self.last >= 1.0:
                    self.last = time.monotonic()
                    out.print(text, markup=False)
                return
            self._stop()
            if "weights" in detail:
                split = ", ".join(f"{n} {w}%" for n, w in detail["weights"].items())
                out.print(f"  traffic: {split}", markup=False)
            elif "shadow" in detail:
                out.print(
                    f"  shadow: {detail['shadow_percent']}% of traffic copied to {detail['shadow']}",
                    markup=False,
                )
            elif "rollback" in detail:
                out.print("  [red]rolling back:[/red] ", end="")
                out.print(detail["rollback"], markup=False)
            return
        self._stop()
        if event.phase == "start":
            out.print(f"{prefix} {event.action.describe()} ...", markup=False)
        elif event.phase == "done":
            out.print(f"{prefix} [green]done[/green] in {event.elapsed:.1f}s")
        else:
            out.print(f"{prefix} [red]failed[/red] after {event.elapsed:.1f}s")

    def _stop(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None


def table(rows: list[dict[str, Any]], title: str, empty: str) -> None:
    """Rows as a table with a title, or ``empty`` when there are none."""
    from rich.table import Table

    out = console()
    if not rows:
        out.print(empty)
        return
    grid = Table(title=title, title_justify="left")
    for col in rows[0]:
        grid.add_column(col)
    for row in rows:
        grid.add_row(*(str(v) for v in row.values()))
    out.print(grid)


def read_data(data: str) -> str:
    """``--data`` text: as given, ``-`` for stdin, ``@FILE`` for a file."""
    from pathlib import Path

    from mlshift.errors import ConfigError

    if data == "-":
        return sys.stdin.read()
    if data.startswith("@"):
        path = Path(data[1:])
        try:
            return path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"cannot read --data file {str(path)!r}: {exc.strerror}", field="data"
            ) from None
    return data


ICONS = {
    "succeeded": "[green]✓[/green]",
    "cached": "[cyan]≡[/cyan]",
    "skipped": "[yellow]-[/yellow]",
    "failed": "[red]✗[/red]",
    "cancelled": "[red]■[/red]",
}


class PipelineProgress:
    """Prints each step's start and end as the runner reports them (from its thread).

    On a terminal a spinner lists the steps running right now; with ``--output json`` each
    event is a JSON line on stderr.
    """

    def __init__(self, output: str) -> None:
        self.json = output == "json"
        self.console = console(stderr=True)
        self.running: list[str] = []
        self.status: Any = None
        self._lock = threading.Lock()

    def __enter__(self) -> PipelineProgress:
        if not self.json and live(self.console):
            self.status = self.console.status("starting", spinner="dots")
            self.status.start()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.status is not None:
            self.status.stop()

    def __call__(self, event: PipelineEvent) -> None:
        if self.json:
            import json

            sys.stderr.write(json.dumps(event.to_json()) + "\n")
            sys.stderr.flush()
            return
        with self._lock:
            self._show(event)

    def _show(self, event: PipelineEvent) -> None:
        out = self.console
        if event.kind == "run_started":
            out.print(f"run [bold]{event.run_id}[/bold] of {event.pipeline}")
        elif event.kind == "step_started" and event.step:
            self.running.append(event.step)
            if self.status is None:
                out.print(f"  [blue]▶[/blue] {event.step}")
        elif event.kind == "step_retrying":
            out.print(
                f"  [yellow]↻[/yellow] {event.step}: retrying (attempt {event.attempt}) after: ", end=""
            )
            out.print(event.message or "", markup=False)
        elif event.kind == "step_finished" and event.step:
            if event.step in self.running:
                self.running.remove(event.step)
            icon = ICONS.get(event.status or "", "?")
            took = f" in {event.elapsed:.1f}s" if event.status in ("succeeded", "failed") else ""
            out.print(f"  {icon} {event.step} [dim]{event.status}{took}[/dim]", end="")
            out.print(f"  {event.message}" if event.message else "", markup=False)
        if self.status is not None:
            self.status.update("running: " + ", ".join(self.running) if self.running else "…")
