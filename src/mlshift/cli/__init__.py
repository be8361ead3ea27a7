"""The ``mlshift`` command line.

Only typer is imported at module level: ``mlshift --help`` must stay fast, so every command
imports what it needs (pydantic, the adapters, numpy) when it runs.

Exit codes: 0 success; 1 an mlshift error (printed without a traceback); 2 a usage error, or
``plan --detailed-exitcode`` with changes; 3 a rollout that failed its gate and was rolled
back; 130 interrupted.
"""

from __future__ import annotations

import sys
from typing import TYPE_CHECKING, Annotated, Any

import typer

from mlshift import __version__
from mlshift.cli._options import OutputOpt, TargetOpt
from mlshift.cli._pipelines import pipelines_app

if TYPE_CHECKING:
    from mlshift._client import Client
    from mlshift.plan import ApplyEvent

__all__ = ["app", "main"]

app = typer.Typer(
    name="mlshift",
    help="Register models, deploy them safely and call them, on any target with the same commands.\n\n"
    "Targets: local:// (this machine, the default), memory://, sagemaker://REGION, "
    "azureml://..., vertex://..., or a name from mlshift.yaml.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    rich_markup_mode=None,
    context_settings={"help_option_names": ["-h", "--help"]},
)
models_app = typer.Typer(help="Register, list and label model versions.", no_args_is_help=True)
endpoints_app = typer.Typer(help="List, inspect, re-weight and delete endpoints.", no_args_is_help=True)
app.add_typer(models_app, name="models")
app.add_typer(endpoints_app, name="endpoints")
app.add_typer(pipelines_app, name="pipelines")


class _State:
    output = "table"


def _console(stderr: bool = False) -> Any:
    from rich.console import Console

    return Console(stderr=stderr, highlight=False, soft_wrap=True)


def _check_output(output: str) -> str:
    if output not in ("table", "json"):
        raise typer.BadParameter(f"expected one of json, table; got {output!r}", param_hint="--output")
    _State.output = output
    return output


def _client(target: str | None, project_file: str | None = None) -> Client:
    from mlshift._client import connect

    return connect(target, project_file=project_file)


def _print_json(data: Any) -> None:
    import json

    sys.stdout.write(json.dumps(data, indent=2, default=str) + "\n")


def _pairs(values: list[str] | None, what: str, number: bool = False) -> dict[str, Any]:
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


class _Progress:
    """Progress of an apply: one line per step; a live status line while a rollout bakes.

    In a terminal the bake is a single line updated in place; elsewhere (CI logs, notebooks)
    it is a line per second; with ``--output json``, JSON lines on stderr.
    """

    def __init__(self) -> None:
        self.status: Any = None
        self.last = 0.0

    @staticmethod
    def _bake_text(d: dict[str, Any]) -> str:
        p99 = f" · p99 {d['p99_ms']:.1f}ms" if d.get("p99_ms") is not None else ""
        left = max(0.0, d["bake_s"] - d["elapsed_s"])
        return (
            f"  {d['stage_percent']}% on the new version · {left:4.1f}s of {d['bake_s']:g}s left · "
            f"{d['requests']} requests · {d['errors']} errors ({d['error_rate']:.1%}){p99}"
        )

    def __call__(self, event: ApplyEvent) -> None:
        import time

        detail = event.detail or {}
        if _State.output == "json":
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
        console = _console(stderr=True)
        prefix = f"[{event.index}/{event.total}]"
        if event.phase == "progress":
            if "elapsed_s" in detail:
                text = self._bake_text(detail)
                if console.is_terminal:
                    if self.status is None:
                        self.status = console.status(text)
                        self.status.start()
                    else:
                        self.status.update(text)
                elif time.monotonic() - self.last >= 1.0:
                    self.last = time.monotonic()
                    console.print(text, markup=False)
                return
            self._stop()
            if "weights" in detail:
                split = ", ".join(f"{n} {w}%" for n, w in detail["weights"].items())
                console.print(f"  traffic: {split}", markup=False)
            elif "rollback" in detail:
                console.print("  [red]rolling back:[/red] ", end="")
                console.print(detail["rollback"], markup=False)
            return
        self._stop()
        if event.phase == "start":
            console.print(f"{prefix} {event.action.describe()} ...", markup=False)
        elif event.phase == "done":
            console.print(f"{prefix} [green]done[/green] in {event.elapsed:.1f}s")
        else:
            console.print(f"{prefix} [red]failed[/red] after {event.elapsed:.1f}s")

    def _stop(self) -> None:
        if self.status is not None:
            self.status.stop()
            self.status = None


def _progress() -> _Progress:
    return _Progress()


# ------------------------------------------------------------------------------------ models


def _version_row(v: Any) -> dict[str, Any]:
    return {
        "name": v.name,
        "version": v.version,
        "framework": v.framework,
        "aliases": ",".join(v.aliases),
        "metrics": ", ".join(f"{k}={val:g}" for k, val in v.metrics.items()),
        "digest": v.digest[7:19],
        "created": v.created_at.strftime("%Y-%m-%d %H:%M"),
    }


def _table(rows: list[dict[str, Any]], title: str, empty: str) -> None:
    from rich.table import Table

    console = _console()
    if not rows:
        console.print(empty)
        return
    table = Table(title=title, title_justify="left")
    for col in rows[0]:
        table.add_column(col)
    for row in rows:
        table.add_row(*(str(v) for v in row.values()))
    console.print(table)


class _HashProgress:
    """A progress bar on stderr while a big artifact (over 256 MB) is hashed."""

    def __init__(self) -> None:
        self._bar: Any = None
        self._task: Any = None

    def update(self, done: int, total: int) -> None:
        if total < 256 * 1024 * 1024:
            return
        if self._bar is None:
            from rich.progress import Progress

            self._bar = Progress(console=_console(stderr=True), transient=True)
            self._bar.start()
            self._task = self._bar.add_task("hashing the artifact", total=total)
        self._bar.update(self._task, completed=done)

    def __enter__(self) -> _HashProgress:
        return self

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.stop()


@models_app.command("register")
def models_register(
    name: Annotated[str, typer.Argument(help="Model name; versions are numbered per name.")],
    path: Annotated[str, typer.Argument(help="A .skops/.joblib/.onnx file or a predictor directory.")],
    framework: Annotated[
        str | None,
        typer.Option("--framework", "-f", help="sklearn, onnx or predictor (default: from PATH)."),
    ] = None,
    metric: Annotated[
        list[str] | None, typer.Option("--metric", "-m", help="KEY=NUMBER, repeatable.")
    ] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="KEY=VALUE, repeatable.")] = None,
    description: Annotated[str | None, typer.Option(help="Free text kept with the version.")] = None,
    skops_trust: Annotated[
        list[str] | None,
        typer.Option(
            "--skops-trust",
            help="A type name this .skops file may hold beyond the trusted set; repeatable. "
            "Only for files you made: such types can run code.",
        ),
    ] = None,
    target: TargetOpt = None,
    output: OutputOpt = "table",
) -> None:
    """Register a new version of NAME from PATH."""
    _check_output(output)
    client = _client(target)
    with _HashProgress() as progress:
        version = client.models.register(
            name,
            path,
            framework=framework,
            metrics=_pairs(metric, "--metric", number=True),
            tags=_pairs(tag, "--tag"),
            description=description,
            skops_trust=skops_trust or (),
            progress=progress.update,
        )
    if output == "json":
        _print_json(version.model_dump(mode="json"))
    else:
        _console().print(
            f"Registered [bold]{version.name}:{version.version}[/bold] "
            f"({version.framework}, {version.digest[:19]}…) on {client.label}"
        )


@models_app.command("list")
def models_list(
    name: Annotated[str | None, typer.Argument(help="Only this model's versions.")] = None,
    target: TargetOpt = None,
    output: OutputOpt = "table",
) -> None:
    """List model versions."""
    _check_output(output)
    versions = _client(target).models.list(name)
    if output == "json":
        _print_json([v.model_dump(mode="json") for v in versions])
    else:
        _table([_version_row(v) for v in versions], "Models", "No models registered yet.")


@models_app.command("show")
def models_show(
    ref: Annotated[str, typer.Argument(help="NAME:VERSION, NAME@ALIAS or NAME (latest).")],
    target: TargetOpt = None,
    output: OutputOpt = "table",
) -> None:
    """Show one model version."""
    _check_output(output)
    version = _client(target).models.get(ref)
    if output == "json":
        _print_json(version.model_dump(mode="json"))
        return
    console = _console()
    console.print(f"[bold]{version.name}:{version.version}[/bold]")
    data = version.model_dump(mode="json")
    for key in (
        "framework",
        "digest",
        "artifact_uri",
        "aliases",
        "metrics",
        "tags",
        "description",
        "created_at",
    ):
        if data.get(key) not in (None, {}, []):
            console.print(f"  {key}: {data[key]}")
    if version.signature is not None:
        cols = ", ".join(f"{c.name or '?'}:{c.dtype}" for c in version.signature.inputs)
        console.print(f"  signature: {cols}")


@models_app.command("alias")
def models_alias(
    name: Annotated[str, typer.Argument(help="Model name.")],
    alias: Annotated[str, typer.Argument(help="Alias to set, e.g. champion.")],
    version: Annotated[str, typer.Argument(help="Version it points to.")],
    target: TargetOpt = None,
) -> None:
    """Point NAME@ALIAS at VERSION (moving it if set)."""
    v = _client(target).models.set_alias(name, alias, version)
    _console().print(f"{name}@{alias} -> {v.name}:{v.version}")


@models_app.command("unalias")
def models_unalias(
    name: Annotated[str, typer.Argument(help="Model name.")],
    alias: Annotated[str, typer.Argument(help="Alias to remove.")],
    target: TargetOpt = None,
) -> None:
    """Remove NAME@ALIAS."""
    _client(target).models.remove_alias(name, alias)
    _console().print(f"removed {name}@{alias}")


@models_app.command("delete")
def models_delete(
    ref: Annotated[str, typer.Argument(help="NAME:VERSION to delete.")],
    target: TargetOpt = None,
) -> None:
    """Delete one model version (refused while an endpoint serves it)."""
    _client(target).models.delete(ref)
    _console().print(f"deleted {ref}")


# ------------------------------------------------------------------------------------ endpoints


def _endpoint_json(state: Any) -> dict[str, Any]:
    data: dict[str, Any] = state.model_dump(mode="json")
    data["invocation_url"] = state.url
    return data


def _show_endpoint(state: Any) -> None:
    from rich.table import Table

    console = _console()
    colour = {"healthy": "green", "failed": "red", "unhealthy": "yellow"}.get(state.status, "white")
    console.print(f"[bold]{state.name}[/bold]  [{colour}]{state.status}[/{colour}]  {state.url or ''}")
    table = Table(show_header=True, box=None, pad_edge=False)
    for col in ("variant", "model", "weight", "compute", "status", "detail"):
        table.add_column(col)
    for v in state.variants:
        c = {"healthy": "green", "failed": "red", "unhealthy": "yellow"}.get(v.status, "white")
        table.add_row(
            v.name,
            v.model,
            f"{v.weight}%",
            f"{v.compute.size} x{v.compute.replicas}",
            f"[{c}]{v.status}[/{c}]",
            v.detail or "",
        )
    console.print(table)


@app.command("deploy")
def deploy(
    endpoint: Annotated[str, typer.Argument(help="Endpoint name (created if it does not exist).")],
    model: Annotated[str, typer.Option("--model", "-m", help="NAME:VERSION, NAME@ALIAS or NAME (latest).")],
    traffic: Annotated[
        int | None,
        typer.Option(help="Percent for the new version as an extra variant; the rest stays where it is."),
    ] = None,
    size: Annotated[
        str, typer.Option(help="cpu-small|cpu-medium|cpu-large|gpu-small|gpu-medium|gpu-large")
    ] = "cpu-small",
    replicas: Annotated[int, typer.Option(help="Copies of the model server.")] = 1,
    variant: Annotated[str | None, typer.Option(help="Variant name (default: MODEL-vVERSION).")] = None,
    port: Annotated[
        int | None, typer.Option(help="local target: the endpoint's port (new endpoints).")
    ] = None,
    strategy: Annotated[str, typer.Option(help="all-at-once | canary | linear | blue-green")] = "all-at-once",
    percent: Annotated[int | None, typer.Option(help="canary: its share of traffic while baking.")] = None,
    step_percent: Annotated[int | None, typer.Option(help="linear: traffic moved per step.")] = None,
    bake: Annotated[
        str | None, typer.Option(help="canary/blue-green bake, or linear step interval: 30s, 5m.")
    ] = None,
    max_error_rate: Annotated[float | None, typer.Option(help="gate: highest 5xx share, e.g. 0.01.")] = None,
    max_p99: Annotated[str | None, typer.Option(help="gate: highest p99 latency, e.g. 250ms.")] = None,
    min_requests: Annotated[int | None, typer.Option(help="gate: fewest requests to judge on.")] = None,
    probe: Annotated[
        str | None, typer.Option(help="gate: a sample payload (JSON or @FILE) sent to the new version.")
    ] = None,
    probe_rate: Annotated[float | None, typer.Option(help="gate: probes per second.")] = None,
    lock_timeout: Annotated[
        float, typer.Option(help="Seconds to wait while another deploy changes this endpoint.")
    ] = 60.0,
    target: TargetOpt = None,
    output: OutputOpt = "table",
) -> None:
    """Deploy a model version to ENDPOINT; with --traffic, alongside what serves now.

    With --strategy canary|linear|blue-green, traffic moves in stages while a health gate
    watches the new version; if the gate fails, traffic goes back and the exit code is 3.
    """
    _check_output(output)
    rollout = _rollout_options(
        strategy, percent, step_percent, bake, max_error_rate, max_p99, min_requests, probe, probe_rate
    )
    client = _client(target)
    options = {"local": {"port": port}} if port is not None else None
    state = client.endpoints.deploy(
        endpoint,
        model,
        traffic=traffic,
        size=size,
        replicas=replicas,
        variant=variant,
        provider_options=options,
        rollout=rollout,
        lock_timeout=lock_timeout,
        on_event=_progress(),
    )
    if output == "json":
        _print_json(_endpoint_json(state))
    else:
        _show_endpoint(state)


def _rollout_options(
    strategy: str,
    percent: int | None,
    step_percent: int | None,
    bake: str | None,
    max_error_rate: float | None,
    max_p99: str | None,
    min_requests: int | None,
    probe: str | None,
    probe_rate: float | None,
) -> dict[str, Any] | None:
    """The --strategy flags as a rollout spec (validated later, with the rest of the spec)."""
    import json

    from mlshift.errors import ConfigError

    known = ("all-at-once", "canary", "linear", "blue-green")
    if strategy not in known:
        raise typer.BadParameter(
            f"expected one of {', '.join(known)}; got {strategy!r}", param_hint="--strategy"
        )
    given = {"--percent": percent, "--step-percent": step_percent, "--bake": bake}
    allowed = {
        "canary": {"--percent", "--bake"},
        "linear": {"--step-percent", "--bake"},
        "blue-green": {"--bake"},
    }
    wrong = [
        flag
        for flag, value in given.items()
        if value is not None and flag not in allowed.get(strategy, set())
    ]
    if wrong:
        raise typer.BadParameter(
            f"{', '.join(wrong)} does not apply to --strategy {strategy}", param_hint=wrong[0]
        )
    gate: dict[str, Any] = {}
    for key, value in (
        ("max_error_rate", max_error_rate),
        ("max_p99", max_p99),
        ("min_requests", min_requests),
    ):
        if value is not None:
            gate[key] = value
    if probe is not None:
        try:
            gate["probe"] = {"payload": json.loads(_read_data(probe))}
        except json.JSONDecodeError as exc:
            raise ConfigError(f"--probe is not valid JSON: {exc.msg}", field="probe") from None
        if probe_rate is not None:
            gate["probe"]["rate"] = probe_rate
    if strategy == "all-at-once":
        if gate:
            raise typer.BadParameter("gate options need --strategy canary, linear or blue-green")
        return None
    spec: dict[str, Any] = {"strategy": strategy, "gate": gate}
    if percent is not None:
        spec["percent"] = percent
    if step_percent is not None:
        spec["step_percent"] = step_percent
    if bake is not None:
        spec["interval" if strategy == "linear" else "bake"] = bake
    return spec


@endpoints_app.command("history")
def endpoints_history(
    endpoint: Annotated[str, typer.Argument(help="Endpoint name.")],
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    target: TargetOpt = None,
    output: OutputOpt = "table",
) -> None:
    """Past changes to ENDPOINT's variants: strategy, outcome, reason, gate numbers."""
    _check_output(output)
    records = _client(target).endpoints.history(endpoint, limit=limit)
    if output == "json":
        _print_json([r.model_dump(mode="json") for r in records])
        return
    rows = [
        {
            "id": r.id,
            "strategy": r.strategy,
            "outcome": r.phase,
            "from": ", ".join(f"{v.model} {v.weight}%" for v in r.baseline) or "-",
            "to": ", ".join(f"{v.model} {v.weight}%" for v in r.target) or "-",
            "reason": r.reason or "",
        }
        for r in records
    ]
    _table(rows, f"History of {endpoint}", f"No changes recorded for {endpoint}.")


@endpoints_app.command("rollback")
def endpoints_rollback(
    endpoint: Annotated[str, typer.Argument(help="Endpoint name.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    target: TargetOpt = None,
    output: OutputOpt = "table",
) -> None:
    """Return ENDPOINT to the variants it had before its last successful change."""
    _check_output(output)
    client = _client(target)
    if not yes and sys.stdin.isatty() and not typer.confirm(f"Roll back endpoint {endpoint!r}?"):
        raise typer.Exit(1)
    state = client.endpoints.rollback(endpoint, on_event=_progress())
    if output == "json":
        _print_json(_endpoint_json(state))
    else:
        _show_endpoint(state)


@endpoints_app.command("list")
def endpoints_list(target: TargetOpt = None, output: OutputOpt = "table") -> None:
    """List endpoints with their variants and health."""
    _check_output(output)
    states = _client(target).endpoints.list()
    if output == "json":
        _print_json([_endpoint_json(s) for s in states])
        return
    rows = [
        {
            "endpoint": s.name,
            "status": s.status,
            "variants": ", ".join(f"{v.name}={v.model} {v.weight}%" for v in s.variants),
            "url": s.url or "",
        }
        for s in states
    ]
    _table(rows, "Endpoints", "No endpoints.")


@endpoints_app.command("show")
def endpoints_show(
    endpoint: Annotated[str, typer.Argument(help="Endpoint name.")],
    target: TargetOpt = None,
    output: OutputOpt = "table",
) -> None:
    """Show an endpoint: URL, variants, weights, health (a crashed variant shows as failed)."""
    _check_output(output)
    state = _client(target).endpoints.get(endpoint)
    if output == "json":
        _print_json(_endpoint_json(state))
    else:
        _show_endpoint(state)


@endpoints_app.command("traffic")
def endpoints_traffic(
    endpoint: Annotated[str, typer.Argument(help="Endpoint name.")],
    weights: Annotated[list[str], typer.Argument(help="VARIANT=PERCENT for each variant; sum 100.")],
    target: TargetOpt = None,
    output: OutputOpt = "table",
) -> None:
    """Set every variant's share of traffic, e.g. `traffic iris blue=50 green=50`."""
    from mlshift.errors import ConfigError

    _check_output(output)
    parsed = _pairs(weights, "weight", number=True)
    if any(not float(v).is_integer() for v in parsed.values()):
        raise ConfigError("weights are whole percents", field="weights")
    state = _client(target).endpoints.set_traffic(endpoint, {k: int(v) for k, v in parsed.items()})
    if output == "json":
        _print_json(_endpoint_json(state))
    else:
        _show_endpoint(state)


@endpoints_app.command("delete")
def endpoints_delete(
    endpoint: Annotated[str, typer.Argument(help="Endpoint name.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    target: TargetOpt = None,
) -> None:
    """Delete an endpoint and stop everything it runs."""
    client = _client(target)
    client.endpoints.get(endpoint)
    if not yes and sys.stdin.isatty() and not typer.confirm(f"Delete endpoint {endpoint!r}?"):
        raise typer.Exit(1)
    client.endpoints.delete(endpoint)
    _console().print(f"deleted endpoint {endpoint}")


# ------------------------------------------------------------------------------------ predict


def _read_data(data: str) -> str:
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


@app.command("predict")
def predict(
    endpoint: Annotated[str, typer.Argument(help="Endpoint name.")],
    data: Annotated[
        str,
        typer.Option(
            "--data",
            "-d",
            help="JSON ('[[5.1,3.5,1.4,0.2]]' or '{\"instances\": ...}'), CSV text, @FILE, or - for stdin.",
        ),
    ],
    variant: Annotated[str | None, typer.Option(help="Send to this variant only.")] = None,
    target: TargetOpt = None,
    output: OutputOpt = "json",
) -> None:
    """Ask ENDPOINT for predictions."""
    import json

    from mlshift.errors import InvalidPayload

    _check_output(output)
    text = _read_data(data).strip()
    payload: Any = text
    if text.startswith(("{", "[")):
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidPayload(f"--data is not valid JSON: {exc.msg} at position {exc.pos}") from None
    result = _client(target).endpoints.predict(endpoint, payload, variant=variant)
    if output == "json":
        _print_json({"predictions": result.predictions, "variant": result.variant})
    else:
        _console().print(f"variant {result.variant}: {result.predictions}")


# ------------------------------------------------------------------------------------ plan/apply

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


@app.command("plan")
def plan_cmd(
    file: FileOpt = None,
    detailed_exitcode: Annotated[
        bool, typer.Option("--detailed-exitcode", help="Exit 0 with no changes, 2 with changes, 1 on error.")
    ] = False,
    target: TargetOpt = None,
    output: OutputOpt = "table",
) -> None:
    """Show what `apply` would change. Reads only."""
    _check_output(output)
    project, path = _project(file)
    plan = _client(target, path).plan(project)
    if output == "json":
        _print_json(plan.to_json())
    else:
        _console().print(plan.render(), markup=False)
    if detailed_exitcode and not plan.is_empty:
        raise typer.Exit(2)


@app.command("apply")
def apply_cmd(
    file: FileOpt = None,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Apply without asking.")] = False,
    target: TargetOpt = None,
    output: OutputOpt = "table",
) -> None:
    """Converge the target to mlshift.yaml: plan, confirm, apply."""
    from mlshift.errors import ConfigError

    _check_output(output)
    project, path = _project(file)
    client = _client(target, path)
    plan = client.plan(project)
    if plan.is_empty:
        if output == "json":
            _print_json({"applied": 0, "plan": plan.to_json()})
        else:
            _console().print(plan.render(), markup=False)
        return
    if output != "json":
        _console().print(plan.render(), markup=False)
    if not yes:
        if not sys.stdin.isatty():
            raise ConfigError(
                "refusing to apply without confirmation in a non-interactive session", hint="add --yes"
            )
        if not typer.confirm("Apply these changes?"):
            raise typer.Exit(1)
    result = client.apply(plan, on_event=_progress())
    if output == "json":
        _print_json(
            {
                "applied": plan.changes,
                "plan": plan.to_json(),
                "models": [m.model_dump(mode="json") for m in result.models],
                "endpoints": {k: _endpoint_json(v) for k, v in result.endpoints.items()},
            }
        )
    else:
        _console().print(f"[green]Applied {plan.changes} change(s).[/green]")


# ------------------------------------------------------------------------------------ misc


@app.command("serve")
def serve_cmd(
    path: Annotated[str, typer.Argument(help="A model file or predictor directory.")],
    port: Annotated[int, typer.Option(help="Port on the host.")] = 8080,
    host: Annotated[
        str, typer.Option(help="Address to bind; 0.0.0.0 exposes it to the network.")
    ] = "127.0.0.1",
    framework: Annotated[
        str | None, typer.Option(help="sklearn, onnx or predictor (default: from PATH).")
    ] = None,
) -> None:
    """Run the model server in the foreground, for debugging a model (Ctrl-C stops it)."""
    from pathlib import Path

    from mlshift.serving import serve

    _console(stderr=True).print(f"serving {path} on http://{host}:{port} (POST /invocations, GET /ping)")
    serve(Path(path), framework=framework, host=host, port=port)


@app.command("schema")
def schema_cmd(
    out: Annotated[str | None, typer.Option("--out", help="Write to this file instead of stdout.")] = None,
) -> None:
    """Print the JSON Schema of mlshift.yaml (point your editor's YAML plugin at it)."""
    import json
    from pathlib import Path

    from mlshift.specs.project import ProjectFile

    schema = ProjectFile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "mlshift.yaml"
    text = json.dumps(schema, indent=2)
    if out:
        Path(out).write_text(text + "\n", encoding="utf-8")
        _console(stderr=True).print(f"wrote {out}")
    else:
        sys.stdout.write(text + "\n")


@app.command("targets")
def targets_cmd(output: OutputOpt = "table") -> None:
    """List the installed adapters and the first-party ones you can install."""
    from mlshift._registry import KNOWN_ADAPTERS, available_adapters

    _check_output(output)
    installed = available_adapters()
    rows = [
        {
            "scheme": s,
            "installed": "yes" if s in installed else "no",
            "package": KNOWN_ADAPTERS.get(s, ("", "?"))[1],
        }
        for s in sorted(set(installed) | set(KNOWN_ADAPTERS))
    ]
    if output == "json":
        _print_json(rows)
    else:
        _table(rows, "Targets", "")


def _version_callback(value: bool) -> None:
    if value:
        sys.stdout.write(f"mlshift {__version__}\n")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool, typer.Option("--version", callback=_version_callback, is_eager=True, help="Print the version.")
    ] = False,
) -> None:
    """Register models, deploy them safely and call them, on any target."""


def main() -> None:
    """Entry point: run the app, turning mlshift errors into a message and exit code 1."""
    from mlshift.errors import MlshiftError

    try:
        # standalone_mode=False lets mlshift errors through to be printed here; click then
        # returns the code of a typer.Exit instead of exiting itself.
        code = app(standalone_mode=False)
        sys.exit(code if isinstance(code, int) else 0)
    except MlshiftError as exc:
        from mlshift.errors import RolloutFailed

        if _State.output == "json":
            data = exc.to_dict()
            if isinstance(exc, RolloutFailed):
                data["reason"], data["measurements"] = exc.reason, exc.measurements
            _print_json({"error": data})
        console = _console(stderr=True)
        console.print("[red]error:[/red] ", end="")
        console.print(exc.message, markup=False)
        if exc.hint:
            console.print(f"  hint: {exc.hint}", markup=False)
        sys.exit(3 if isinstance(exc, RolloutFailed) else 1)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except typer.Abort:
        sys.stderr.write("aborted\n")
        sys.exit(1)
    except Exception as exc:
        # Usage errors (typer vendors click, so match the click exception by shape).
        show, code = getattr(exc, "show", None), getattr(exc, "exit_code", None)
        if callable(show) and isinstance(code, int):
            show()
            sys.exit(code)
        raise
