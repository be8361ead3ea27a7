"""``mlshift models ...``: register, list, show, label and delete model versions."""

from __future__ import annotations

from typing import Annotated, Any

import typer

from mlshift.cli import _output as ui
from mlshift.cli._options import OutputOpt, TargetOpt

__all__ = ["models_app"]

models_app = typer.Typer(help="Register, list and label model versions.", no_args_is_help=True)


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


class _HashProgress:
    """A progress bar on stderr while a big artifact (over 256 MB) is hashed.

    Elsewhere than on an interactive terminal (CI logs, notebooks) it is one line instead.
    """

    def __init__(self) -> None:
        self._bar: Any = None
        self._task: Any = None
        self._said = False

    def update(self, done: int, total: int) -> None:
        if total < 256 * 1024 * 1024 or self._said:
            return
        if self._bar is None:
            console = ui.console(stderr=True)
            if not ui.live(console):
                self._said = True
                console.print(f"hashing the artifact ({total / 1024**3:.1f} GB)", markup=False)
                return
            from rich.progress import Progress

            self._bar = Progress(console=console, transient=True)
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
    path: Annotated[
        str,
        typer.Argument(
            help="A model file (.skops/.joblib/.onnx, XGBoost .json/.ubj, LightGBM text), a predictor "
            "or MLflow model folder, or an MLflow URI (models:/NAME/VERSION, models:/NAME@ALIAS, "
            "runs:/RUN_ID/PATH; from $MLFLOW_TRACKING_URI)."
        ),
    ],
    framework: Annotated[
        str | None,
        typer.Option(
            "--framework",
            "-f",
            help="sklearn, onnx, xgboost, lightgbm, mlflow or predictor (default: from PATH).",
        ),
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
    baseline: Annotated[
        str | None,
        typer.Option(
            help="Training features to keep statistics of, for monitors: .csv (with a header), "
            ".npy, .jsonl or .parquet."
        ),
    ] = None,
    categorical: Annotated[
        list[str] | None, typer.Option(help="A baseline column holding categories; repeatable.")
    ] = None,
    label_column: Annotated[
        str | None,
        typer.Option(
            help="The baseline column holding the ground truth: left out of the features, it gives "
            "the version's accuracy/F1 (or MAE/RMSE) there, the reference of model_quality.max_drop."
        ),
    ] = None,
    target: TargetOpt = None,
    output: OutputOpt = "table",
) -> None:
    """Register a new version of NAME from PATH."""
    ui.check_output(output)
    from mlshift.errors import ConfigError

    data = labels = None
    if label_column is not None and baseline is None:
        raise ConfigError("--label-column names a column of --baseline FILE; give both", field="baseline")
    if baseline is not None:
        from mlshift.monitoring._api import load_table

        columns, rows = load_table(baseline)
        if label_column is not None:
            if columns is None or label_column not in columns:
                raise ConfigError(
                    f"--label-column {label_column}: {baseline} has no such column "
                    f"(columns: {', '.join(columns) if columns else 'unnamed'})",
                    field="baseline",
                )
            at = columns.index(label_column)
            labels = [r[at] for r in rows]
            rows = [r[:at] + r[at + 1 :] for r in rows]
            columns = columns[:at] + columns[at + 1 :]
        data = rows if columns is None else {c: [r[i] for r in rows] for i, c in enumerate(columns)}
    client = ui.client(target)
    with _HashProgress() as progress:
        version = client.models.register(
            name,
            path,
            framework=framework,
            metrics=ui.pairs(metric, "--metric", number=True),
            tags=ui.pairs(tag, "--tag"),
            description=description,
            skops_trust=skops_trust or (),
            progress=progress.update,
            baseline=data,
            categorical=categorical or (),
            baseline_labels=labels,
        )
    if output == "json":
        ui.print_json(version.model_dump(mode="json"))
    else:
        ui.console().print(
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
    ui.check_output(output)
    versions = ui.client(target).models.list(name)
    if output == "json":
        ui.print_json([v.model_dump(mode="json") for v in versions])
    else:
        ui.table([_version_row(v) for v in versions], "Models", "No models registered yet.")


@models_app.command("show")
def models_show(
    ref: Annotated[str, typer.Argument(help="NAME:VERSION, NAME@ALIAS or NAME (latest).")],
    target: TargetOpt = None,
    output: OutputOpt = "table",
) -> None:
    """Show one model version."""
    ui.check_output(output)
    version = ui.client(target).models.get(ref)
    if output == "json":
        ui.print_json(version.model_dump(mode="json"))
        return
    console = ui.console()
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
    output: OutputOpt = "table",
) -> None:
    """Point NAME@ALIAS at VERSION (moving it if set)."""
    ui.check_output(output)
    v = ui.client(target).models.set_alias(name, alias, version)
    if output == "json":
        ui.print_json(v.model_dump(mode="json"))
    else:
        ui.console().print(f"{name}@{alias} -> {v.name}:{v.version}", markup=False)


@models_app.command("unalias")
def models_unalias(
    name: Annotated[str, typer.Argument(help="Model name.")],
    alias: Annotated[str, typer.Argument(help="Alias to remove.")],
    target: TargetOpt = None,
    output: OutputOpt = "table",
) -> None:
    """Remove NAME@ALIAS."""
    ui.check_output(output)
    ui.client(target).models.remove_alias(name, alias)
    if output == "json":
        ui.print_json({"removed": f"{name}@{alias}", "name": name, "alias": alias})
    else:
        ui.console().print(f"removed {name}@{alias}", markup=False)


@models_app.command("delete")
def models_delete(
    ref: Annotated[str, typer.Argument(help="NAME:VERSION to delete.")],
    target: TargetOpt = None,
    output: OutputOpt = "table",
) -> None:
    """Delete one model version (refused while an endpoint serves it)."""
    ui.check_output(output)
    client = ui.client(target)
    client.models.delete(ref)
    if output == "json":
        ui.print_json({"deleted": ref})
    else:
        ui.console().print(f"deleted {ref}", markup=False)
