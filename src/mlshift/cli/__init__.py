"""The ``mlshift`` command line.

Only typer is imported at module level: ``mlshift --help`` must stay fast, so every command
imports what it needs (pydantic, the adapters, numpy) when it runs.

Exit codes: 0 success; 1 an mlshift error (printed without a traceback); 2 a usage error, or
``plan --detailed-exitcode`` with changes; 3 a rollout that failed its gate and was rolled
back; 130 interrupted.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Annotated

import typer

from mlshift import __version__
from mlshift.cli import _output as ui
from mlshift.cli._endpoints import deploy, endpoints_app, predict
from mlshift.cli._image import image_app
from mlshift.cli._models import models_app
from mlshift.cli._monitors import monitors_app
from mlshift.cli._options import OutputOpt
from mlshift.cli._pipelines import pipelines_app
from mlshift.cli._project import apply_cmd, plan_cmd

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
# One module per command group (cli/_models.py, _endpoints.py, _project.py, _pipelines.py);
# output and progress helpers for all of them live in cli/_output.py.
app.add_typer(models_app, name="models")
app.add_typer(endpoints_app, name="endpoints")
app.add_typer(pipelines_app, name="pipelines")
app.add_typer(monitors_app, name="monitors")
app.add_typer(image_app, name="image")
app.command("deploy")(deploy)
app.command("predict")(predict)
app.command("plan")(plan_cmd)
app.command("apply")(apply_cmd)


# ------------------------------------------------------------------------------------ misc


@app.command("serve")
def serve_cmd(
    path: Annotated[str, typer.Argument(help="A model file, or a predictor or MLflow model folder.")],
    port: Annotated[int, typer.Option(help="Port on the host (0: a free one).")] = 8080,
    host: Annotated[
        str, typer.Option(help="Address to bind; 0.0.0.0 exposes it to the network.")
    ] = "127.0.0.1",
    framework: Annotated[
        str | None,
        typer.Option(help="sklearn, onnx, xgboost, lightgbm, mlflow or predictor (default: from PATH)."),
    ] = None,
    port_file: Annotated[
        str | None, typer.Option(help="Write the bound port to this file once the server answers.")
    ] = None,
    output: OutputOpt = "table",
    workers: Annotated[int, typer.Option(help="Server processes sharing the port (about one per core).")] = 1,
    max_batch_size: Annotated[
        int | None,
        typer.Option(help="Batch concurrent requests into model calls of up to N rows (off by default)."),
    ] = None,
    max_latency_ms: Annotated[
        float | None,
        typer.Option(help="The longest a request waits for others to join its batch (default 5)."),
    ] = None,
) -> None:
    """Run the model server in the foreground, for debugging a model (Ctrl-C stops it).

    With --output json, one JSON line on stdout says where it listens once it answers.
    """
    from pathlib import Path

    from mlshift.serving import serve
    from mlshift.serving.__main__ import batching_options
    from mlshift.serving._server import _resolve_port

    # Checked before the banner: a bad setting is an error, not a server that half starts.
    batching = batching_options(max_batch_size, max_latency_ms)

    # $AIP_HTTP_PORT (Vertex AI) replaces the default port, in the banner as in the server.
    port = _resolve_port(port)
    ui.check_output(output)
    if output == "json":
        on_ready = _print_listening(path)
    else:
        on_ready = None
        where = f"http://{host}:{port}" if port else f"{host}, on a free port"
        # Plain text, not rich: loading rich is time to the first answer, and a path may hold
        # [brackets] that rich would take for markup.
        sys.stderr.write(f"serving {path} on {where} (POST /invocations, GET /ping)\n")
        sys.stderr.flush()
    serve(
        Path(path),
        framework=framework,
        host=host,
        port=port,
        port_file=Path(port_file) if port_file else None,
        on_ready=on_ready,
        workers=workers,
        batching=batching,
    )


def _print_listening(path: str) -> Callable[[str, int], None]:
    """What ``serve --output json`` prints once the server accepts connections."""

    def on_ready(host: str, port: int) -> None:
        import json

        shown = f"[{host}]" if ":" in host else host
        record = {
            "event": "listening",
            "url": f"http://{shown}:{port}",
            "host": host,
            "port": port,
            "model": path,
        }
        sys.stdout.write(json.dumps(record) + "\n")
        sys.stdout.flush()

    return on_ready


@app.command("schema")
def schema_cmd(
    out: Annotated[str | None, typer.Option("--out", help="Write to this file instead of stdout.")] = None,
    output: OutputOpt = "json",
) -> None:
    """Print the JSON Schema of mlshift.yaml (point your editor's YAML plugin at it).

    The schema is JSON whatever --output says; with --out and --output json, what was written
    is reported as JSON on stdout.
    """
    import json
    from pathlib import Path

    from mlshift.specs.project import ProjectFile

    ui.check_output(output)
    schema = ProjectFile.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "mlshift.yaml"
    text = json.dumps(schema, indent=2)
    if out:
        Path(out).write_text(text + "\n", encoding="utf-8")
        if output == "json":
            ui.print_json({"wrote": out, "title": schema["title"], "$schema": schema["$schema"]})
        else:
            ui.console(stderr=True).print(f"wrote {out}")
    else:
        sys.stdout.write(text + "\n")


@app.command("targets")
def targets_cmd(output: OutputOpt = "table") -> None:
    """List the installed adapters and the first-party ones you can install."""
    from mlshift._registry import KNOWN_ADAPTERS, available_adapters

    ui.check_output(output)
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
        ui.print_json(rows)
    else:
        ui.table(rows, "Targets", "")


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

        if ui.State.output == "json":
            data = exc.to_dict()
            if isinstance(exc, RolloutFailed):
                data["reason"], data["measurements"] = exc.reason, exc.measurements
            ui.print_json({"error": data})
        console = ui.console(stderr=True)
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
