"""``python -m mlshift_azureml.step``: what a compiled pipeline node runs inside its command job.

Azure ML mounts each input and output of a command job somewhere of its choosing and passes the
paths in the command line (``${{inputs.X}}`` / ``${{outputs.X}}``), so every path is an
argument here. Every node has an ``mlshift`` output folder, where the runner writes
``outputs.json`` (scalar outputs), ``metrics.json`` and, for a node that did not run because a
gate said no, ``skipped.json``. Later nodes read scalars and metrics from there.

Commands (options common to all: ``--mlshift DIR`` and any number of
``--when CONDITION true|false DIR``: the node runs only if each named gate node, whose
``mlshift`` folder is DIR, decided as required; otherwise it writes ``skipped.json`` and exits 0):

``python --task JSON [--code DIR] [--value NAME TEXT] [--from NAME DIR KIND KEY] [--input|--output ...]``
    Import the ``@step`` function (from its source file in the ``--code`` folder, or an installed
    module) and call it: scalar inputs from ``--value`` (literals and parameters) or ``--from``
    (another node's scalar output or metric, read from its ``mlshift`` folder; ``KIND`` is
    ``output``, ``metric`` or ``metrics``), artifacts as paths, outputs as paths inside their
    folder. A failing call is retried ``retries`` times, backing off as every runner does
    (:func:`mlshift.pipelines.builtins.call_with_retries`).

``register --target URI --settings JSON ...``
    The built-in ``RegisterModel`` (:func:`mlshift.pipelines.builtins.register_model`), with the
    lineage tags ``mlshift:pipeline`` and ``mlshift:run``: the pipeline job's name, which Azure
    gives every node as ``AZUREML_ROOT_RUN_ID`` (not an argument: a per-run argument would stop
    Azure from reusing the node).

``deploy --target URI --settings JSON ...``
    The built-in ``Deploy`` (:func:`mlshift.pipelines.builtins.deploy`).

``gate --condition JSON [--operand SIDE DIR KIND KEY] [--value SIDE TEXT]``
    Evaluate a condition (the lowering of a metric gate: Azure has no condition node for command
    jobs) and write ``{"holds": true|false}`` to its ``outputs.json``.

``fail --message TEXT``
    Fail with the message (when its gates let it run).

Exit codes: 0 on success (or skipped), 1 when the step failed; the reason is the last line,
``step failed: ...``, on stderr.
"""

from __future__ import annotations

import argparse
import json
import operator
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, TextIO

__all__ = ["main", "run"]

_OPS: dict[str, Callable[[Any, Any], bool]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}


class StepSkipped(Exception):
    """A gate this node sits under decided against it."""


def _convert(kind: str, text: str) -> Any:
    if kind == "int":
        return int(float(text))
    if kind == "float":
        return float(text)
    if kind == "bool":
        return text.strip().lower() in ("true", "1", "yes", "on")
    return text


def _read_json(folder: Path, name: str) -> dict[str, Any]:
    path = folder / name
    data: dict[str, Any] = json.loads(path.read_text()) if path.exists() else {}
    return data


def _from_node(folder: Path, kind: str, key: str) -> Any:
    """A scalar another node produced: its output ``key``, its metric ``key``, or all metrics."""
    if kind == "metrics":
        return _read_json(folder, "metrics.json")
    source = _read_json(folder, "metrics.json" if kind == "metric" else "outputs.json")
    if key not in source:
        what = "metric" if kind == "metric" else "output"
        raise KeyError(f"the node that feeds this step has no {what} {key!r} (it wrote {sorted(source)})")
    return source[key]


def _input_path(folder: Path) -> Path:
    """An artifact input: the single file or folder in the mounted folder, or the folder itself."""
    entries = list(folder.iterdir()) if folder.is_dir() else []
    return entries[0] if len(entries) == 1 else folder


def _plain(value: Any) -> Any:
    item = getattr(value, "item", None)  # numpy scalars
    return item() if callable(item) else value


def _write(
    args: argparse.Namespace, metrics: dict[str, Any] | None, outputs: dict[str, Any], **extra: Any
) -> None:
    folder: Path = args.mlshift
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "metrics.json").write_text(json.dumps(metrics or {}))
    (folder / "outputs.json").write_text(json.dumps(outputs))
    for name, data in extra.items():
        (folder / f"{name}.json").write_text(json.dumps(data))
    # In the job's log, for whoever reads it: what the step measured and produced.
    if metrics:
        args.say(f"metrics: {json.dumps(metrics, sort_keys=True)}")
    if outputs:
        args.say(f"outputs: {json.dumps(outputs, sort_keys=True)}")


def _check_gates(gates: Sequence[Sequence[str]]) -> None:
    for condition, branch, folder in gates:
        decided = _read_json(Path(folder), "outputs.json")
        skipped = _read_json(Path(folder), "skipped.json")
        if skipped:
            raise StepSkipped(str(skipped.get("reason") or f"{condition} was not evaluated"))
        holds = bool(decided.get("holds"))
        if holds != (branch == "true"):
            raise StepSkipped(f"{condition} is {'true' if holds else 'false'}")


def _run_python(args: argparse.Namespace, task: dict[str, Any]) -> None:
    from mlshift.pipelines.builtins import call_with_retries
    from mlshift.pipelines.code import load_callable

    if "file" in task:
        code = Path(args.code)
        location = {"module": task["module"], "file": str(code / task["file"]), "root": str(code)}
    else:
        location = {"module": task["module"], "file": "", "root": str(Path.cwd())}
    target = load_callable({**location, "qualname": task["qualname"]})
    fn = getattr(target, "fn", target)
    kinds: dict[str, str] = task["inputs"]
    kwargs: dict[str, Any] = {}
    for name, text in args.value:
        kwargs[name] = _convert(kinds[name], text)
    for name, folder, kind, key in args.from_node:
        value = _from_node(Path(folder), kind, key)
        kwargs[name] = value if kind == "metrics" else _convert(kinds[name], str(value))
    for name, folder in args.input:
        kwargs[name] = _input_path(Path(folder))
    for name, folder in args.output:
        Path(folder).mkdir(parents=True, exist_ok=True)
        kwargs[name] = Path(folder) / name
    result = call_with_retries(
        lambda: fn(**kwargs),
        retries=int(task.get("retries", 0)),
        delay=float(task.get("retry_delay", 1.0)),
    )
    if task.get("metrics"):
        _write(args, {k: _plain(v) for k, v in dict(result or {}).items()}, {})
    else:
        _write(args, None, {} if result is None else {"output": _plain(result)})


def _scalars(args: argparse.Namespace) -> dict[str, Any]:
    values: dict[str, Any] = dict(args.value)
    for name, folder, kind, key in args.from_node:
        values[name] = _from_node(Path(folder), kind, key)
    return values


def _register(args: argparse.Namespace, settings: dict[str, Any]) -> None:
    import mlshift
    from mlshift.pipelines.builtins import lineage_tags, register_model

    values = _scalars(args)
    inputs = dict(args.input)
    with mlshift.connect(args.target) as client:
        lineage: dict[str, str] = {}
        if "pipeline" in settings:
            run = args.environ.get("AZUREML_ROOT_RUN_ID", "")
            lineage = {k: v for k, v in lineage_tags(settings["pipeline"], run).items() if v}
        metrics = values.get("metrics") or {}
        version = register_model(
            client,
            str(values["model"]),
            _input_path(Path(inputs["artifact"])),
            framework=settings.get("framework"),
            metrics={k: float(v) for k, v in dict(metrics).items()},
            tags=settings.get("tags") or {},
            description=settings.get("description"),
            alias=settings.get("alias"),
            lineage=lineage,
            log=args.say,
        )
    _write(args, None, {"version": f"{version.name}:{version.version}"})


def _deploy(args: argparse.Namespace, settings: dict[str, Any]) -> None:
    import mlshift
    from mlshift.pipelines.builtins import deploy

    values = _scalars(args)
    with mlshift.connect(args.target) as client:
        state = deploy(
            client,
            str(values["endpoint"]),
            str(values["model"]),
            traffic=settings.get("traffic"),
            size=settings.get("size", "cpu-small"),
            replicas=int(settings.get("replicas", 1)),
            allow_schema_change=bool(settings.get("allow_schema_change", False)),
            log=args.say,
        )
    _write(args, None, {"url": state.url or ""})


def _gate(args: argparse.Namespace, condition: dict[str, Any]) -> None:
    sides: dict[str, Any] = {}
    for side, text in args.value:
        sides[side] = text
    for side, folder, kind, key in args.from_node:
        sides[side] = _from_node(Path(folder), kind, key)
    operands = []
    for side in ("left", "right"):
        spec = condition[side]
        value = sides[side] if side in sides else spec.get("value")
        kind = spec.get("type")
        operands.append(_convert(kind, str(value)) if kind in ("int", "float", "bool", "str") else value)
    left, right = operands
    if isinstance(left, str) != isinstance(right, str):
        left, right = str(left), str(right)
    holds = bool(_OPS[condition["op"]](left, right))
    args.say(f"{condition['id']}: {left!r} {condition['op']} {right!r} is {'true' if holds else 'false'}")
    _write(args, None, {"holds": holds})


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mlshift_azureml.step")
    parser.add_argument("command", choices=("python", "register", "deploy", "gate", "fail"))
    parser.add_argument("--mlshift", type=Path, required=True, help="this node's mlshift output folder")
    parser.add_argument("--task", help="the python step, as JSON")
    parser.add_argument("--code", help="the folder holding the step's source file")
    parser.add_argument("--target", help="the azureml:// target to register or deploy on")
    parser.add_argument("--settings", default="{}", help="the step's settings, as JSON")
    parser.add_argument("--condition", help="the gate's condition, as JSON")
    parser.add_argument("--message", help="a fail step's message")
    parser.add_argument("--value", nargs=2, action="append", default=[], metavar=("NAME", "TEXT"))
    parser.add_argument(
        "--from",
        dest="from_node",
        nargs=4,
        action="append",
        default=[],
        metavar=("NAME", "DIR", "KIND", "KEY"),
    )
    parser.add_argument("--input", nargs=2, action="append", default=[], metavar=("NAME", "DIR"))
    parser.add_argument("--output", nargs=2, action="append", default=[], metavar=("NAME", "DIR"))
    parser.add_argument(
        "--when", nargs=3, action="append", default=[], metavar=("CONDITION", "BRANCH", "DIR")
    )
    return parser


def _execute(args: argparse.Namespace) -> None:
    try:
        _check_gates(args.when)
    except StepSkipped as skipped:
        args.say(f"skipped: {skipped}")
        _write(args, None, {}, skipped={"reason": str(skipped)})
        return
    if args.command == "python":
        _run_python(args, json.loads(args.task))
    elif args.command == "register":
        _register(args, json.loads(args.settings))
    elif args.command == "deploy":
        _deploy(args, json.loads(args.settings))
    elif args.command == "gate":
        _gate(args, json.loads(args.condition))
    else:
        raise RuntimeError(args.message or "the pipeline reached a fail step")


def run(
    argv: Sequence[str], log: TextIO | None = None, environ: Mapping[str, str] | None = None
) -> str | None:
    """Run one node in this process (the testing kit runs register and deploy nodes this way).

    What the node says goes to ``log`` (default stderr), not to this process's stdout;
    ``environ`` stands in for the job's environment variables (``AZUREML_ROOT_RUN_ID``).

    Returns:
        ``None`` on success, else why the step failed (the traceback goes to ``log``).
    """
    out = log or sys.stderr
    try:
        args = _parser().parse_args(argv)
        args.environ = dict(os.environ if environ is None else environ)
        args.say = lambda line: print(line, file=out, flush=True)
        _execute(args)
    except (Exception, SystemExit) as exc:  # SystemExit: arguments argparse refused
        import traceback

        if not (isinstance(exc, RuntimeError) and "fail" in argv[:1]):
            traceback.print_exc(file=out)
        return str(exc) if argv[:1] == ["fail"] else f"{type(exc).__name__}: {exc}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run one node; returns the exit code."""
    args = _parser().parse_args(argv)
    args.environ = dict(os.environ)
    args.say = lambda line: print(line, flush=True)
    try:
        _execute(args)
    except Exception as exc:
        if args.command == "fail":
            print(f"step failed: {exc}", file=sys.stderr)
            return 1
        import traceback

        traceback.print_exc()
        print(f"step failed: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
