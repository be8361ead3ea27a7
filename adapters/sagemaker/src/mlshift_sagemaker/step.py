"""``python -m mlshift_sagemaker.step``: what a compiled pipeline step runs inside its container.

SageMaker Processing mounts each input under ``/opt/ml/processing/input/<name>``, uploads
``/opt/ml/processing/output/<name>`` when the job ends, and reads ``metrics.json`` and
``outputs.json`` from the ``mlshift`` output as property files (for conditions and scalar
inputs of later steps). Three commands:

``python --task JSON [--value NAME VALUE ...]``
    Import the ``@step`` function (from ``/opt/ml/processing/code/<file>`` or an installed
    module) and call it: scalar inputs from ``--value`` (converted to their declared type),
    artifacts as paths, metrics as dicts, outputs as paths that do not exist yet. A failing call
    is retried ``retries`` times, backing off as every runner does
    (:func:`mlshift.pipelines.builtins.call_with_retries`: doubling from ``retry_delay``).

``register --target URI --value model NAME [--value run ID] --settings JSON``
    The built-in ``RegisterModel`` (:func:`mlshift.pipelines.builtins.register_model`): the
    ``artifact`` input becomes a version (with the ``metrics`` input) unless a version with those
    bytes exists, which is reused; a new version carries the lineage tags ``mlshift:pipeline``
    (from the settings) and ``mlshift:run``: the pipeline execution's ARN, the run id
    ``client.pipelines.run`` returns, as a local run's id is. Compiled pipelines do not pass it
    (a per-execution argument would defeat SageMaker's step cache): the step reads its
    execution from the job's own configuration (``/opt/ml/config/processingjobconfig.json``,
    whose ``mlshift`` output is compiled as ``.../runs/<execution id>/<step>/mlshift``); a
    ``--value run ID`` wins. ``outputs.json`` gets ``version``.

``deploy --target URI --value model REF --value endpoint NAME --settings JSON``
    The built-in ``Deploy`` (:func:`mlshift.pipelines.builtins.deploy`); ``outputs.json`` gets
    ``url``.

``--root DIR`` (before the command) reads and writes DIR instead of ``/opt/ml/processing``;
the testing kit runs steps in folders of its own that way (:func:`run` takes the folder
directly, for steps it runs in its own process). Exit codes: 0 on success, 1 when the step
failed (the reason is the last line on stderr).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TextIO

__all__ = ["PROCESSING_ROOT", "main", "run"]

#: Where SageMaker Processing mounts a step's code, inputs and outputs.
PROCESSING_ROOT = Path("/opt/ml/processing")


def _convert(kind: str, text: str) -> Any:
    if kind == "int":
        return int(text)
    if kind == "float":
        return float(text)
    if kind == "bool":
        return text.strip().lower() in ("true", "1", "yes", "on")
    return text


def _input_path(root: Path, name: str) -> Path:
    """An artifact input: the single file or folder SageMaker downloaded, or the folder itself."""
    folder = root / "input" / name
    entries = list(folder.iterdir()) if folder.is_dir() else []
    return entries[0] if len(entries) == 1 else folder


def _metrics_input(root: Path, name: str) -> dict[str, float]:
    path = root / "input" / name / "metrics.json"
    data: dict[str, float] = json.loads(path.read_text()) if path.exists() else {}
    return data


def _write(root: Path, metrics: dict[str, Any] | None, outputs: dict[str, Any]) -> None:
    folder = root / "output" / "mlshift"
    folder.mkdir(parents=True, exist_ok=True)
    # Both files always exist: SageMaker fails a step whose declared property file is missing.
    (folder / "metrics.json").write_text(json.dumps(metrics or {}))
    (folder / "outputs.json").write_text(json.dumps(outputs))
    # In the job's log, for whoever reads it: what the step measured and produced.
    if metrics:
        print(f"metrics: {json.dumps(metrics, sort_keys=True)}", flush=True)
    if outputs:
        print(f"outputs: {json.dumps(outputs, sort_keys=True)}", flush=True)


def _plain(value: Any) -> Any:
    item = getattr(value, "item", None)  # numpy scalars
    return item() if callable(item) else value


def _run_python(root: Path, task: dict[str, Any], values: dict[str, str]) -> None:
    from mlshift.pipelines.builtins import call_with_retries
    from mlshift.pipelines.code import load_callable

    if "file" in task:
        code = root / "code"
        location = {
            "module": task["module"],
            "file": str(code / task["file"]),
            "root": str(code),
            "qualname": task["qualname"],
        }
    else:
        location = {
            "module": task["module"],
            "file": "",
            "root": str(Path.cwd()),
            "qualname": task["qualname"],
        }
    target = load_callable(location)
    fn = getattr(target, "fn", target)
    kwargs: dict[str, Any] = {}
    for name, kind in task["inputs"].items():
        if kind == "artifact":
            kwargs[name] = _input_path(root, name)
        elif kind == "metrics":
            kwargs[name] = _metrics_input(root, name)
        else:
            kwargs[name] = _convert(kind, values[name])
    for name, kind in task["outputs"].items():
        if kind == "artifact":
            folder = root / "output" / name
            folder.mkdir(parents=True, exist_ok=True)
            kwargs[name] = folder / name
    result = call_with_retries(
        lambda: fn(**kwargs),
        retries=int(task.get("retries", 0)),
        delay=float(task.get("retry_delay", 1.0)),
    )
    if task.get("metrics"):
        metrics = {k: _plain(v) for k, v in dict(result or {}).items()}
        _write(root, metrics, {})
    else:
        _write(root, None, {} if result is None else {"output": _plain(result)})


def _execution_id(root: Path) -> str | None:
    """The id of the pipeline execution this processing job runs in, if it can be told.

    SageMaker writes the job's configuration to ``/opt/ml/config/processingjobconfig.json``
    (beside ``root``), with the resolved ``S3Uri`` of each output; the ``mlshift`` output is
    compiled as ``.../runs/<execution id>/<step>/mlshift``.
    """
    try:
        config = json.loads((root.parent / "config" / "processingjobconfig.json").read_text())
        outputs = config["ProcessingOutputConfig"]["Outputs"]
        uri = next(str(o["S3Output"]["S3Uri"]) for o in outputs if o.get("OutputName") == "mlshift")
    except (OSError, ValueError, KeyError, TypeError, StopIteration):
        return None
    parts = uri.rstrip("/").split("/")
    return parts[-3] if len(parts) >= 4 and parts[-4] == "runs" and parts[-3] else None


def _run_id(client: Any, root: Path, pipeline: str) -> str | None:
    """This execution's ARN (``client.pipelines.run``'s run id), or ``None`` when unknown."""
    from mlshift.errors import MlshiftError
    from mlshift_sagemaker._pipelines import pipeline_name
    from mlshift_sagemaker.errors import aws_errors

    execution = _execution_id(root)
    if execution is None:
        return None
    name = pipeline_name(pipeline)
    try:
        with aws_errors(f"describe pipeline {name!r}"):
            arn = str(
                client.adapter.clients.client("sagemaker").describe_pipeline(PipelineName=name)["PipelineArn"]
            )
    except MlshiftError as exc:
        print(f"no mlshift:run tag: {exc}", file=sys.stderr)
        return None
    return f"{arn}/execution/{execution}"


def _register(root: Path, target: str, values: dict[str, str], settings: dict[str, Any]) -> None:
    import mlshift
    from mlshift.pipelines.builtins import lineage_tags, register_model

    with mlshift.connect(target) as client:
        lineage: dict[str, str] = {}
        if "pipeline" in settings:
            run = values.get("run") or _run_id(client, root, settings["pipeline"]) or ""
            lineage = lineage_tags(settings["pipeline"], run)
            lineage = {k: v for k, v in lineage.items() if v}
        version = register_model(
            client,
            values["model"],
            _input_path(root, "artifact"),
            framework=settings.get("framework"),
            metrics=_metrics_input(root, "metrics"),
            tags=settings.get("tags") or {},
            description=settings.get("description"),
            alias=settings.get("alias"),
            lineage=lineage,
            log=print,
        )
    _write(root, None, {"version": f"{version.name}:{version.version}"})


def _deploy(root: Path, target: str, values: dict[str, str], settings: dict[str, Any]) -> None:
    import mlshift
    from mlshift.pipelines.builtins import deploy

    with mlshift.connect(target) as client:
        state = deploy(
            client,
            values["endpoint"],
            values["model"],
            traffic=settings.get("traffic"),
            size=settings.get("size", "cpu-small"),
            replicas=int(settings.get("replicas", 1)),
            allow_schema_change=bool(settings.get("allow_schema_change", False)),
            log=print,
        )
    _write(root, None, {"url": state.url or ""})


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mlshift_sagemaker.step")
    parser.add_argument(
        "--root",
        type=Path,
        default=PROCESSING_ROOT,
        help="the folder holding code/, input/ and output/ (default: /opt/ml/processing)",
    )
    parser.add_argument("command", choices=("python", "register", "deploy"))
    parser.add_argument("--task", help="the python step, as JSON")
    parser.add_argument("--target", help="the sagemaker:// target to register or deploy on")
    parser.add_argument("--settings", default="{}", help="the step's settings, as JSON")
    parser.add_argument("--value", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    return parser


def _execute(args: argparse.Namespace, root: Path | None = None) -> None:
    values = dict(args.value)
    root = root or args.root
    if args.command == "python":
        _run_python(root, json.loads(args.task), values)
    elif args.command == "register":
        _register(root, args.target, values, json.loads(args.settings))
    else:
        _deploy(root, args.target, values, json.loads(args.settings))


def run(argv: Sequence[str], root: Path, log: TextIO | None = None) -> str | None:
    """Run one step with ``root`` in place of ``/opt/ml/processing``, in this process.

    Returns:
        ``None`` on success, else why the step failed (the traceback goes to ``log``, default
        stderr).
    """
    try:
        _execute(_parser().parse_args(argv), root)
    except (Exception, SystemExit) as exc:  # SystemExit: arguments argparse refused
        import traceback

        traceback.print_exc(file=log or sys.stderr)
        return f"{type(exc).__name__}: {exc}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run one step; returns the exit code."""
    args = _parser().parse_args(argv)
    try:
        _execute(args)
    except Exception as exc:
        import traceback

        traceback.print_exc()
        print(f"step failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
