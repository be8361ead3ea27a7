"""``mlshift deploy``, ``mlshift predict`` and ``mlshift endpoints ...``."""

from __future__ import annotations

import sys
from typing import Annotated, Any

import typer

from mlshift.cli import _output as ui
from mlshift.cli._options import OutputOpt, TargetOpt

__all__ = ["deploy", "endpoint_json", "endpoints_app", "predict", "provider_options"]

endpoints_app = typer.Typer(help="List, inspect, re-weight and delete endpoints.", no_args_is_help=True)


def endpoint_json(state: Any) -> dict[str, Any]:
    """An endpoint as JSON, with its invocation URL."""
    data: dict[str, Any] = state.model_dump(mode="json")
    data["invocation_url"] = state.url
    return data


def _show_endpoint(state: Any) -> None:
    from rich.table import Table

    console = ui.console()
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
    option: Annotated[
        list[str] | None,
        typer.Option(
            "--option",
            help="A provider option, TARGET.KEY=VALUE (repeatable), e.g. local.port=8081 or "
            "sagemaker.data_capture.sampling_percent=50; VALUE is read as JSON where it is JSON.",
        ),
    ] = None,
    port: Annotated[int | None, typer.Option(hidden=True, help="Same as --option local.port=PORT.")] = None,
    strategy: Annotated[
        str, typer.Option(help="all-at-once | canary | linear | blue-green | shadow")
    ] = "all-at-once",
    percent: Annotated[
        int | None, typer.Option(help="canary: its share of traffic while baking; shadow: share mirrored.")
    ] = None,
    step_percent: Annotated[int | None, typer.Option(help="linear: traffic moved per step.")] = None,
    bake: Annotated[
        str | None,
        typer.Option(help="canary/blue-green bake, linear step interval, shadow duration: 30s, 5m."),
    ] = None,
    min_agreement: Annotated[
        float | None, typer.Option(help="shadow: lowest share of rows both versions agree on, e.g. 0.99.")
    ] = None,
    max_error_rate: Annotated[float | None, typer.Option(help="gate: highest 5xx share, e.g. 0.01.")] = None,
    max_p99: Annotated[str | None, typer.Option(help="gate: highest p99 latency, e.g. 250ms.")] = None,
    max_client_error_increase: Annotated[
        float | None, typer.Option(help="gate: highest rise of the 4xx share over the baseline's, e.g. 0.01.")
    ] = None,
    max_p99_ratio: Annotated[
        float | None, typer.Option(help="gate: highest p99 as a multiple of the baseline's.")
    ] = None,
    min_requests: Annotated[int | None, typer.Option(help="gate: fewest requests to judge on.")] = None,
    probe: Annotated[
        str | None, typer.Option(help="gate: a sample payload (JSON or @FILE) sent to the new version.")
    ] = None,
    probe_rate: Annotated[float | None, typer.Option(help="gate: probes per second.")] = None,
    allow_schema_change: Annotated[
        bool, typer.Option(help="Deploy a version whose inputs differ from the serving one's.")
    ] = False,
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
    ui.check_output(output)
    rollout = _rollout_options(
        strategy, percent, step_percent, bake, max_error_rate, max_p99, min_requests, probe, probe_rate,
        {"max_client_error_increase": max_client_error_increase, "max_p99_ratio": max_p99_ratio},
    )  # fmt: skip
    if min_agreement is not None:
        if rollout is None or rollout["strategy"] != "shadow":
            raise typer.BadParameter("--min-agreement needs --strategy shadow", param_hint="--min-agreement")
        rollout["min_agreement"] = min_agreement
    options = provider_options(option)
    client = ui.client(target)
    if port is not None:
        options.setdefault("local", {})["port"] = port
    state = client.endpoints.deploy(
        endpoint,
        model,
        traffic=traffic,
        size=size,
        replicas=replicas,
        variant=variant,
        provider_options=options or None,
        rollout=rollout,
        lock_timeout=lock_timeout,
        on_event=ui.ApplyProgress(),
        allow_schema_change=allow_schema_change,
    )
    if output == "json":
        ui.print_json(endpoint_json(state))
    else:
        _show_endpoint(state)


def provider_options(values: list[str] | None) -> dict[str, dict[str, Any]]:
    """``--option TARGET.KEY=VALUE`` arguments as ``provider_options`` (dotted keys nest).

    Raises:
        ConfigError: for an argument that is not TARGET.KEY=VALUE.
    """
    import json

    from mlshift.errors import ConfigError

    options: dict[str, dict[str, Any]] = {}
    for item in values or []:
        key, sep, text = item.partition("=")
        path = key.split(".")
        if not sep or len(path) < 2 or not all(path):
            raise ConfigError(
                f"--option {item!r} is not TARGET.KEY=VALUE",
                field="option",
                hint="e.g. --option local.port=8081 or --option sagemaker.volume_size_gb=30",
            )
        try:
            value: Any = json.loads(text)
        except json.JSONDecodeError:
            value = text  # plain text: an instance type, an image URI, ...
        node = options.setdefault(path[0], {})
        for part in path[1:-1]:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(
                    f"--option {item!r}: {'.'.join(path[:-1])} is already a value", field="option"
                )
            node = child
        node[path[-1]] = value
    return options


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
    more_gate: dict[str, float | None] | None = None,
) -> dict[str, Any] | None:
    """The --strategy flags as a rollout spec (validated later, with the rest of the spec)."""
    import json

    from mlshift.errors import ConfigError

    known = ("all-at-once", "canary", "linear", "blue-green", "shadow")
    if strategy not in known:
        raise typer.BadParameter(
            f"expected one of {', '.join(known)}; got {strategy!r}", param_hint="--strategy"
        )
    given = {"--percent": percent, "--step-percent": step_percent, "--bake": bake}
    allowed = {
        "canary": {"--percent", "--bake"},
        "linear": {"--step-percent", "--bake"},
        "blue-green": {"--bake"},
        "shadow": {"--percent", "--bake"},
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
        *(more_gate or {}).items(),
    ):
        if value is not None:
            gate[key] = value
    if probe is not None:
        try:
            gate["probe"] = {"payload": json.loads(ui.read_data(probe))}
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
        spec[{"linear": "interval", "shadow": "duration"}.get(strategy, "bake")] = bake
    return spec


@endpoints_app.command("history")
def endpoints_history(
    endpoint: Annotated[str, typer.Argument(help="Endpoint name.")],
    limit: Annotated[int, typer.Option(help="How many, newest first.")] = 20,
    target: TargetOpt = None,
    output: OutputOpt = "table",
) -> None:
    """Past changes to ENDPOINT's variants: strategy, outcome, reason, gate numbers."""
    ui.check_output(output)
    records = ui.client(target).endpoints.history(endpoint, limit=limit)
    if output == "json":
        ui.print_json([r.model_dump(mode="json") for r in records])
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
    ui.table(rows, f"History of {endpoint}", f"No changes recorded for {endpoint}.")


@endpoints_app.command("rollback")
def endpoints_rollback(
    endpoint: Annotated[str, typer.Argument(help="Endpoint name.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    target: TargetOpt = None,
    output: OutputOpt = "table",
) -> None:
    """Return ENDPOINT to the variants it had before its last successful change."""
    ui.check_output(output)
    client = ui.client(target)
    if not yes and sys.stdin.isatty() and not typer.confirm(f"Roll back endpoint {endpoint!r}?"):
        raise typer.Exit(1)
    state = client.endpoints.rollback(endpoint, on_event=ui.ApplyProgress())
    if output == "json":
        ui.print_json(endpoint_json(state))
    else:
        _show_endpoint(state)


@endpoints_app.command("list")
def endpoints_list(target: TargetOpt = None, output: OutputOpt = "table") -> None:
    """List endpoints with their variants and health."""
    ui.check_output(output)
    states = ui.client(target).endpoints.list()
    if output == "json":
        ui.print_json([endpoint_json(s) for s in states])
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
    ui.table(rows, "Endpoints", "No endpoints.")


@endpoints_app.command("show")
def endpoints_show(
    endpoint: Annotated[str, typer.Argument(help="Endpoint name.")],
    target: TargetOpt = None,
    output: OutputOpt = "table",
) -> None:
    """Show an endpoint: URL, variants, weights, health (a crashed variant shows as failed)."""
    ui.check_output(output)
    state = ui.client(target).endpoints.get(endpoint)
    if output == "json":
        ui.print_json(endpoint_json(state))
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

    ui.check_output(output)
    parsed = ui.pairs(weights, "weight", number=True)
    if any(not float(v).is_integer() for v in parsed.values()):
        raise ConfigError("weights are whole percents", field="weights")
    state = ui.client(target).endpoints.set_traffic(endpoint, {k: int(v) for k, v in parsed.items()})
    if output == "json":
        ui.print_json(endpoint_json(state))
    else:
        _show_endpoint(state)


@endpoints_app.command("delete")
def endpoints_delete(
    endpoint: Annotated[str, typer.Argument(help="Endpoint name.")],
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation.")] = False,
    target: TargetOpt = None,
    output: OutputOpt = "table",
) -> None:
    """Delete an endpoint and stop everything it runs."""
    ui.check_output(output)
    client = ui.client(target)
    state = client.endpoints.get(endpoint)
    # With --output json the question goes to stderr, so stdout stays one JSON document.
    if (
        not yes
        and sys.stdin.isatty()
        and not typer.confirm(f"Delete endpoint {endpoint!r}?", err=output == "json")
    ):
        raise typer.Exit(1)
    client.endpoints.delete(endpoint)
    if output == "json":
        ui.print_json({"deleted": endpoint, "endpoint": endpoint_json(state)})
    else:
        ui.console().print(f"deleted endpoint {endpoint}", markup=False)


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
    request_id: Annotated[
        str | None,
        typer.Option(
            "--request-id",
            help="The request's id (default: a new one); captured under it, so labels posted "
            "for it with `mlshift monitors labels` join it.",
        ),
    ] = None,
    target: TargetOpt = None,
    output: OutputOpt = "json",
) -> None:
    """Ask ENDPOINT for predictions; prints them with the variant and the request id."""
    import json

    from mlshift.errors import InvalidPayload

    ui.check_output(output)
    text = ui.read_data(data).strip()
    payload: Any = text
    if text.startswith(("{", "[")):
        try:
            payload = json.loads(text)
        except json.JSONDecodeError as exc:
            raise InvalidPayload(f"--data is not valid JSON: {exc.msg} at position {exc.pos}") from None
    result = ui.client(target).endpoints.predict(endpoint, payload, variant=variant, request_id=request_id)
    if output == "json":
        ui.print_json(
            {"predictions": result.predictions, "variant": result.variant, "request_id": result.request_id}
        )
    else:
        ui.console().print(f"variant {result.variant}: {result.predictions}")
