"""``python -m mlshift_sagemaker.step``: what a compiled pipeline step runs inside its container.

SageMaker Processing mounts each input under ``/opt/ml/processing/input/<name>``, uploads
``/opt/ml/processing/output/<name>`` when the job ends, and reads ``metrics.json`` and
``outputs.json`` from the ``mlshift`` output as property files (for conditions and scalar
inputs of later steps). Three commands:

``python --task JSON [--value NAME VALUE ...]``
    Import the ``@step`` function (from ``/opt/ml/processing/code/<file>`` or an installed
    module) and call it: scalar inputs from ``--value`` (converted to their declared type),
    artifacts as paths, metrics as dicts, outputs as paths that do not exist yet. A failing call
    is retried ``retries`` times, ``retry_delay`` seconds apart.

``register --target URI --value model NAME --settings JSON``
    Register the ``artifact`` input as a new version (with the ``metrics`` input), through
    mlshift, so the version has its digest and card; ``outputs.json`` gets ``version``.

``deploy --target URI --value model REF --value endpoint NAME --settings JSON``
    Deploy a version through mlshift; ``outputs.json`` gets ``url``.

``MLSHIFT_SAGEMAKER_PROCESSING_ROOT`` moves ``/opt/ml/processing`` elsewhere; the testing kit
runs steps in folders of its own that way (:func:`run` takes the folder directly, for steps it
runs in its own process). Exit codes: 0 on success, 1 when the step failed (the reason is the
last line on stderr).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from contextvars import ContextVar
from pathlib import Path
from typing import Any, TextIO

__all__ = ["main", "run"]

_ROOT: ContextVar[Path | None] = ContextVar("mlshift_sagemaker_processing_root", default=None)


def _root() -> Path:
    return _ROOT.get() or Path(os.environ.get("MLSHIFT_SAGEMAKER_PROCESSING_ROOT", "/opt/ml/processing"))


def _convert(kind: str, text: str) -> Any:
    if kind == "int":
        return int(text)
    if kind == "float":
        return float(text)
    if kind == "bool":
        return text.strip().lower() in ("true", "1", "yes", "on")
    return text


def _input_path(name: str) -> Path:
    """An artifact input: the single file or folder SageMaker downloaded, or the folder itself."""
    folder = _root() / "input" / name
    entries = list(folder.iterdir()) if folder.is_dir() else []
    return entries[0] if len(entries) == 1 else folder


def _metrics_input(name: str) -> dict[str, float]:
    path = _root() / "input" / name / "metrics.json"
    data: dict[str, float] = json.loads(path.read_text()) if path.exists() else {}
    return data


def _write(metrics: dict[str, Any] | None, outputs: dict[str, Any]) -> None:
    folder = _root() / "output" / "mlshift"
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


def _run_python(task: dict[str, Any], values: dict[str, str]) -> None:
    from mlshift.pipelines.code import load_callable

    if "file" in task:
        code = _root() / "code"
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
            kwargs[name] = _input_path(name)
        elif kind == "metrics":
            kwargs[name] = _metrics_input(name)
        else:
            kwargs[name] = _convert(kind, values[name])
    for name, kind in task["outputs"].items():
        if kind == "artifact":
            folder = _root() / "output" / name
            folder.mkdir(parents=True, exist_ok=True)
            kwargs[name] = folder / name
    attempts = int(task.get("retries", 0)) + 1
    for attempt in range(1, attempts + 1):
        try:
            result = fn(**kwargs)
            break
        except Exception as exc:
            if attempt == attempts:
                raise
            print(f"attempt {attempt} failed: {type(exc).__name__}: {exc}; retrying", file=sys.stderr)
            time.sleep(float(task.get("retry_delay", 1.0)))
    if task.get("metrics"):
        metrics = {k: _plain(v) for k, v in dict(result or {}).items()}
        _write(metrics, {})
    else:
        _write(None, {} if result is None else {"output": _plain(result)})


def _register(target: str, values: dict[str, str], settings: dict[str, Any]) -> None:
    import mlshift

    with mlshift.connect(target) as client:
        version = client.models.register(
            values["model"],
            _input_path("artifact"),
            framework=settings.get("framework"),
            metrics=_metrics_input("metrics"),
            tags=settings.get("tags") or {},
            description=settings.get("description"),
        )
        if settings.get("alias"):
            client.models.set_alias(version.name, settings["alias"], version.version)
    _write(None, {"version": f"{version.name}:{version.version}"})


def _deploy(target: str, values: dict[str, str], settings: dict[str, Any]) -> None:
    import mlshift

    with mlshift.connect(target) as client:
        state = client.endpoints.deploy(
            values["endpoint"],
            values["model"],
            traffic=settings.get("traffic"),
            size=settings.get("size", "cpu-small"),
            replicas=int(settings.get("replicas", 1)),
        )
    _write(None, {"url": state.url or ""})


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mlshift_sagemaker.step")
    parser.add_argument("command", choices=("python", "register", "deploy"))
    parser.add_argument("--task", help="the python step, as JSON")
    parser.add_argument("--target", help="the sagemaker:// target to register or deploy on")
    parser.add_argument("--settings", default="{}", help="the step's settings, as JSON")
    parser.add_argument("--value", nargs=2, action="append", default=[], metavar=("NAME", "VALUE"))
    return parser


def _execute(args: argparse.Namespace) -> None:
    values = dict(args.value)
    if args.command == "python":
        _run_python(json.loads(args.task), values)
    elif args.command == "register":
        _register(args.target, values, json.loads(args.settings))
    else:
        _deploy(args.target, values, json.loads(args.settings))


def run(argv: Sequence[str], root: Path, log: TextIO | None = None) -> str | None:
    """Run one step with ``root`` in place of ``/opt/ml/processing``, in this process.

    Returns:
        ``None`` on success, else why the step failed (the traceback goes to ``log``, default
        stderr).
    """
    token = _ROOT.set(root)
    try:
        _execute(_parser().parse_args(argv))
    except (Exception, SystemExit) as exc:  # SystemExit: arguments argparse refused
        import traceback

        traceback.print_exc(file=log or sys.stderr)
        return f"{type(exc).__name__}: {exc}"
    finally:
        _ROOT.reset(token)
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
