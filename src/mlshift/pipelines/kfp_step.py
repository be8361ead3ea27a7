"""``python -m mlshift.pipelines.kfp_step``: what a KFP-compiled pipeline step runs in its container.

KFP replaces ``{{$}}`` with the task's executor input (JSON): input parameter values, input
and output artifacts (each with a ``uri``), the file each output parameter goes to, and the
file for the executor output. Artifacts are read and written at the local path KFP mounts or
downloads each ``uri`` to (``gs://b/x`` → ``/gcs/b/x``, ``s3://`` → ``/s3/``, ``minio://`` →
``/minio/``), the convention of KFP's own executor. Four commands:

``python --executor-input JSON --task JSON``
    Import the ``@step`` function (from the source carried in the task, read from its
    ``uri``, or an installed module) and call it: scalar inputs converted to their declared
    type, artifacts as paths, metrics as dicts, outputs as paths that do not exist yet (inside
    the output artifact's folder, so ``model.with_suffix(".skops")`` is uploaded too). A step
    returning metrics writes each as ``metric-<name>``, all of them as ``all-metrics`` and as
    the ``metrics-report`` artifact's metadata (what KFP's UI shows).

``register --executor-input JSON --task JSON``
    Register the ``artifact`` input as a new version of model ``model`` (with the ``metrics``
    input) on the task's target, through mlshift; output ``version``.

``deploy --executor-input JSON --task JSON``
    Deploy version ``model`` to endpoint ``endpoint`` on the task's target; output ``url``.

``fail --message TEXT [--executor-input JSON --gates JSON]``
    Print the message and exit 1 (a ``Fail`` step); with its gates, the message says what they
    measured, as on the local runner (``...: evaluate.metrics['auc'] = 0.71, needs >= 0.8
    (threshold)``).

Retries are KFP's (``retryPolicy``); a ``timeout`` in the task is enforced here. Exit codes: 0
on success, 1 when the step failed (the reason is the last line on stderr).
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import tempfile
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["local_path", "main", "run"]

ALL_METRICS = "all-metrics"
METRICS_REPORT = "metrics-report"
_MOUNTS = {"gs://": "/gcs/", "s3://": "/s3/", "minio://": "/minio/", "oci://": "/oci/"}


class StepFailed(Exception):
    """A ``fail`` step, or a step that cannot run as compiled."""


def local_path(uri: str) -> Path:
    """Where KFP puts the artifact (or file) at ``uri`` inside the container."""
    for prefix, mount in _MOUNTS.items():
        if uri.startswith(prefix):
            return Path(mount + uri[len(prefix) :])
    if uri.startswith("file://"):
        return Path(uri[len("file://") :])
    return Path(uri)


def _convert(kind: str, value: Any) -> Any:
    if kind == "int":
        return int(value)
    if kind == "float":
        return float(value)
    if kind == "bool":
        if isinstance(value, str):
            return value.strip().lower() in ("true", "1", "yes", "on")
        return bool(value)
    if kind == "metrics":
        return json.loads(value) if isinstance(value, str) else dict(value or {})
    return value if isinstance(value, str) else json.dumps(value)


def _plain(value: Any) -> Any:
    item = getattr(value, "item", None)  # numpy scalars
    return item() if callable(item) else value


class _Executor:
    """The executor input of one task, and the executor output it builds."""

    def __init__(self, executor_input: dict[str, Any]) -> None:
        self.data = executor_input
        self.inputs = executor_input.get("inputs") or {}
        self.outputs = executor_input.get("outputs") or {}
        self.parameters: dict[str, Any] = {}
        self.artifact_metadata: dict[str, dict[str, Any]] = {}

    def value(self, name: str, kind: str) -> Any:
        values = self.inputs.get("parameterValues") or {}
        if name not in values:
            raise StepFailed(f"the executor input has no value for input {name!r}")
        return _convert(kind, values[name])

    def _artifact(self, side: dict[str, Any], name: str) -> dict[str, Any]:
        found = ((side.get("artifacts") or {}).get(name) or {}).get("artifacts") or []
        if not found:
            raise StepFailed(f"the executor input has no artifact {name!r}")
        artifact: dict[str, Any] = found[0]
        return artifact

    def input_path(self, name: str) -> Path:
        """An artifact input: the single file or folder its producer wrote, or the folder."""
        folder = local_path(self._artifact(self.inputs, name)["uri"])
        entries = list(folder.iterdir()) if folder.is_dir() else []
        return entries[0] if len(entries) == 1 else folder

    def output_path(self, name: str) -> Path:
        """Where an artifact output is written: inside the folder KFP uploads."""
        folder = local_path(self._artifact(self.outputs, name)["uri"])
        folder.mkdir(parents=True, exist_ok=True)
        return folder / name

    def write(self) -> None:
        """Each output parameter to its file, and the executor output KFP reads."""
        declared = self.outputs.get("parameters") or {}
        for name, value in self.parameters.items():
            spec = declared.get(name) or {}
            if spec.get("outputFile"):
                path = Path(spec["outputFile"])
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(value if isinstance(value, str) else json.dumps(value))
        artifacts: dict[str, Any] = {}
        for name, metadata in self.artifact_metadata.items():
            artifact = dict(self._artifact(self.outputs, name))
            artifact["metadata"] = {**(artifact.get("metadata") or {}), **metadata}
            artifacts[name] = {"artifacts": [artifact]}
        output_file = self.outputs.get("outputFile")
        if output_file:
            path = Path(output_file)
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(json.dumps({"parameterValues": self.parameters, "artifacts": artifacts}))
        if self.parameters:
            print(f"outputs: {json.dumps(self.parameters, sort_keys=True)}", flush=True)


@contextmanager
def _deadline(seconds: float | None) -> Iterator[None]:
    """Raise ``TimeoutError`` in this (main) thread after ``seconds``."""
    usable = (
        seconds and hasattr(signal, "setitimer") and threading.current_thread() is threading.main_thread()
    )
    if not usable:
        yield
        return

    def expired(signum: int, frame: Any) -> None:
        raise TimeoutError(f"the step ran longer than its timeout of {seconds:g} s")

    previous = signal.signal(signal.SIGALRM, expired)
    signal.setitimer(signal.ITIMER_REAL, float(seconds or 0))
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def _read_uri(uri: str) -> bytes:
    if uri.startswith(("http://", "https://")):
        from urllib.request import urlopen

        with urlopen(uri, timeout=60) as response:
            data: bytes = response.read()
            return data
    return local_path(uri).read_bytes()


def _load(task: dict[str, Any], workdir: Path) -> Any:
    from mlshift.pipelines._code import load_callable

    source = task.get("source")
    if source is None:
        location = {
            "module": task["module"],
            "file": "",
            "root": str(Path.cwd()),
            "qualname": task["qualname"],
        }
    else:
        code = workdir / "code"
        code.mkdir(parents=True, exist_ok=True)
        file = code / Path(source["file"]).name
        if "text" in source:
            file.write_text(source["text"], encoding="utf-8")
        else:
            file.write_bytes(_read_uri(source["uri"]))
        location = {
            "module": task["module"],
            "file": str(file),
            "root": str(code),
            "qualname": task["qualname"],
        }
    target = load_callable(location)
    return getattr(target, "fn", target)


def _run_python(ex: _Executor, task: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory(prefix="mlshift-kfp-") as tmp:
        fn = _load(task, Path(tmp))
        kwargs: dict[str, Any] = {}
        for name, kind in task["inputs"].items():
            kwargs[name] = ex.input_path(name) if kind == "artifact" else ex.value(name, kind)
        for name, kind in task["outputs"].items():
            if kind == "artifact":
                kwargs[name] = ex.output_path(name)
        with _deadline(task.get("timeout")):
            result = fn(**kwargs)
    if task.get("metrics") is not None:
        metrics = {str(k): float(_plain(v)) for k, v in dict(result or {}).items()}
        missing = [m for m in task["metrics"] if m not in metrics]
        if missing:
            raise StepFailed(f"the step declares metric {missing[0]!r} but did not return it")
        ex.parameters[ALL_METRICS] = metrics
        for m in task["metrics"]:
            ex.parameters[f"metric-{m}"] = metrics[m]
        ex.artifact_metadata[METRICS_REPORT] = metrics
        print(f"metrics: {json.dumps(metrics, sort_keys=True)}", flush=True)
    else:
        scalars = [k for k, kind in task["outputs"].items() if kind != "artifact"]
        for name in scalars:
            ex.parameters[name] = _convert(task["outputs"][name], _plain(result))
    ex.write()


def _register(ex: _Executor, task: dict[str, Any]) -> None:
    import mlshift

    settings = task.get("settings") or {}
    metrics = ex.value("metrics", "metrics") if "metrics" in task["inputs"] else {}
    with _deadline(task.get("timeout")), mlshift.connect(task["target"]) as client:
        version = client.models.register(
            ex.value("model", "str"),
            ex.input_path("artifact"),
            framework=settings.get("framework"),
            metrics=metrics,
            tags=settings.get("tags") or {},
            description=settings.get("description"),
        )
        if settings.get("alias"):
            client.models.set_alias(version.name, settings["alias"], version.version)
    print(f"registered {version.name}:{version.version}", flush=True)
    ex.parameters["version"] = f"{version.name}:{version.version}"
    ex.write()


def _deploy(ex: _Executor, task: dict[str, Any]) -> None:
    import mlshift

    settings = task.get("settings") or {}
    with _deadline(task.get("timeout")), mlshift.connect(task["target"]) as client:
        state = client.endpoints.deploy(
            ex.value("endpoint", "str"),
            ex.value("model", "str"),
            traffic=settings.get("traffic"),
            size=settings.get("size", "cpu-small"),
            replicas=int(settings.get("replicas", 1)),
            allow_schema_change=bool(settings.get("allow_schema_change", False)),
        )
    ex.parameters["url"] = state.url or ""
    ex.write()


def _fmt(value: Any) -> str:
    """A measured value as the local runner shows it: ``0.9333`` rather than ``0.9333333333333333``."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return repr(value) if isinstance(value, str) else str(value)


def _fail_message(message: str, ex: _Executor, gates: list[dict[str, Any]]) -> str:
    values = ex.inputs.get("parameterValues") or {}
    readings = []
    for gate in gates:
        texts = []
        for side in (gate["left"], gate["right"]):
            value = values.get(side["input"]) if "input" in side else side["value"]
            if "param" in side:
                texts.append((value, f"{side['param']} = {_fmt(value)}", f"{_fmt(value)} ({side['param']})"))
            elif "of" in side:
                text = f"{side['of']} = {_fmt(value)}"
                texts.append((value, text, text))
            else:
                texts.append((value, _fmt(value), _fmt(value)))
        readings.append(f"{texts[0][1]}, needs {gate['op']} {texts[1][2]}")
    return message + (f": {'; '.join(readings)}" if readings else "")


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m mlshift.pipelines.kfp_step")
    parser.add_argument("command", choices=("python", "register", "deploy", "fail"))
    parser.add_argument("--executor-input", help="KFP's executor input ({{$}}), as JSON")
    parser.add_argument("--task", default="{}", help="the step, as JSON")
    parser.add_argument("--message", default="", help="a fail step's message")
    parser.add_argument("--gates", default="[]", help="a fail step's gates, as JSON")
    return parser


def _execute(args: argparse.Namespace) -> None:
    ex = _Executor(json.loads(args.executor_input or "{}"))
    if args.command == "fail":
        raise StepFailed(_fail_message(args.message, ex, json.loads(args.gates)))
    task = json.loads(args.task)
    {"python": _run_python, "register": _register, "deploy": _deploy}[args.command](ex, task)


def run(argv: Sequence[str]) -> str | None:
    """Run one step in this process.

    Returns:
        ``None`` on success, else why the step failed (the traceback goes to stderr).
    """
    try:
        _execute(_parser().parse_args(argv))
    except (Exception, SystemExit) as exc:  # SystemExit: arguments argparse refused
        if not isinstance(exc, StepFailed):
            import traceback

            traceback.print_exc()
        return f"{type(exc).__name__}: {exc}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run one step; returns the exit code."""
    failure = run(sys.argv[1:] if argv is None else argv)
    if failure is not None:
        print(f"step failed: {failure}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
