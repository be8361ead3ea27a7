"""Running a compiled KFP pipeline spec's tasks, shared by both fakes that run them.

``FakeVertex`` (Vertex AI Pipelines) and ``FakeKubeflow`` (the ``kfp://`` API server) run the
same pipeline spec the same way KFP's driver and launcher would; what differs between them is
only what they record and where artifacts live, which each fake passes in:

- :func:`evaluate_condition`: a ``triggerPolicy.condition``, the CEL subset KFP's compiler
  writes;
- :func:`resolve_inputs`: a task's parameters and artifacts from constants, the DAG's inputs and
  upstream outputs; :func:`dag_outputs`: what a sub-DAG hands back;
- :func:`cache_key`: what makes two executions the same (a cached task is not run again);
- :func:`executor_input` and :func:`step_arguments`: KFP's executor input and the container's
  arguments with their placeholders filled;
- :class:`StepProcess`: ``python -m mlshift.pipelines.kfp_step`` in a child process with
  ``retryPolicy``'s attempts, stoppable from another thread; :func:`read_output_parameters`:
  what the step wrote.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "STEP_COMMAND",
    "StepProcess",
    "TaskFailed",
    "cache_key",
    "dag_outputs",
    "evaluate_condition",
    "executor_input",
    "read_output_parameters",
    "resolve_inputs",
    "runs_here",
    "step_arguments",
]

#: The command of a task that runs in the mlshift image (the only kind the fakes run).
STEP_COMMAND = ["python", "-m", "mlshift.pipelines.kfp_step"]

_PLACEHOLDER = re.compile(
    r"\{\{\$\.(inputs|outputs)\.(parameters|artifacts)\['([^']+)'\](?:\.(path|output_file|uri))?\}\}"
)
_CEL_TOKEN = re.compile(r"'(?:[^'\\]|\\.)*'|!=|!|&&|\|\||\btrue\b|\bfalse\b|\bdouble\(|[^'!&|]+?", re.S)
_VALUES = "_values"  # what ``inputs.parameter_values`` reads as once translated
_COMPARE: dict[type, Callable[[Any, Any], bool]] = {
    ast.Eq: lambda a, b: a == b,
    ast.NotEq: lambda a, b: a != b,
    ast.Lt: lambda a, b: a < b,
    ast.LtE: lambda a, b: a <= b,
    ast.Gt: lambda a, b: a > b,
    ast.GtE: lambda a, b: a >= b,
}


class TaskFailed(ValueError):
    """A task cannot run as defined (the provider would fail it with this message)."""


# ---------------------------------------------------------------------------------------------
# CEL, as far as KFP conditions use it


def _cel_to_python(expression: str) -> str:
    python: list[str] = []
    for token in _CEL_TOKEN.findall(expression):
        if token.startswith("'") or token == "!=":
            python.append(token)
        elif token == "!":
            python.append(" not ")
        elif token == "&&":
            python.append(" and ")
        elif token == "||":
            python.append(" or ")
        elif token in ("true", "false"):
            python.append(token.capitalize())
        elif token == "double(":
            python.append("float(")
        else:
            python.append(token)
    return "".join(python).replace("inputs.parameter_values", _VALUES).strip()


def evaluate_condition(expression: str, values: Mapping[str, Any]) -> bool:
    """A ``triggerPolicy.condition`` as KFP writes it (comparisons of ``inputs.parameter_values``
    entries and literals, ``int()``/``double()``, ``!``, ``&&``, ``||``), on ``values``.

    The expression is parsed, never run: only those forms are evaluated.

    Raises:
        TaskFailed: an expression outside that subset, or a value it names that is missing
            (a ``ValueError``).
    """
    try:
        tree = ast.parse(_cel_to_python(expression), mode="eval")
    except SyntaxError:
        raise TaskFailed(f"unsupported trigger condition: {expression}") from None

    def value(node: ast.AST) -> Any:
        if isinstance(node, ast.Constant):
            return node.value
        if isinstance(node, ast.Subscript) and isinstance(node.value, ast.Name) and node.value.id == _VALUES:
            key = value(node.slice)
            if key not in values:
                raise TaskFailed(f"the trigger condition {expression!r} names a missing input {key!r}")
            return values[key]
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and len(node.args) == 1:
            cast = {"int": int, "float": float}.get(node.func.id)
            if cast is not None:
                return cast(value(node.args[0]))
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            return not value(node.operand)
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
            return -value(node.operand)
        if isinstance(node, ast.BoolOp):
            results = [bool(value(v)) for v in node.values]
            return all(results) if isinstance(node.op, ast.And) else any(results)
        if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _COMPARE:
            return _COMPARE[type(node.ops[0])](value(node.left), value(node.comparators[0]))
        raise TaskFailed(f"unsupported trigger condition: {expression}")

    try:
        return bool(value(tree.body))
    except TaskFailed:
        raise
    except Exception as exc:  # int('x'), comparing a str with a float, ...
        raise TaskFailed(f"cannot evaluate the trigger condition {expression!r}: {exc}") from None


# ---------------------------------------------------------------------------------------------
# inputs and outputs of tasks and DAGs


def resolve_inputs(
    task: Mapping[str, Any], scope: Mapping[str, Any], results: Mapping[str, Mapping[str, Any]]
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """A task's parameter values and input artifacts, as KFP's driver resolves them.

    Args:
        task: The task in its DAG (``inputs.parameters`` / ``inputs.artifacts``).
        scope: The enclosing DAG's inputs: ``{"parameters": {...}, "artifacts": {...}}``.
        results: What the DAG's finished tasks produced, by task key, each with
            ``parameters`` and ``artifacts``.

    Raises:
        TaskFailed: an input that nothing provides.
    """
    inputs = task.get("inputs") or {}
    params: dict[str, Any] = {}
    for key, source in (inputs.get("parameters") or {}).items():
        if "runtimeValue" in source:
            params[key] = source["runtimeValue"].get("constant")
        elif "componentInputParameter" in source:
            name = source["componentInputParameter"]
            if name not in scope["parameters"]:
                raise TaskFailed(f"input parameter {key!r}: the DAG has no input {name!r}")
            params[key] = scope["parameters"][name]
        elif "taskOutputParameter" in source:
            ref = source["taskOutputParameter"]
            produced = results.get(ref["producerTask"], {}).get("parameters", {})
            if ref["outputParameterKey"] not in produced:
                raise TaskFailed(
                    f"input parameter {key!r}: task {ref['producerTask']!r} did not output "
                    f"{ref['outputParameterKey']!r}"
                )
            params[key] = produced[ref["outputParameterKey"]]
        else:
            raise TaskFailed(f"input parameter {key!r} has no source the testing kit knows")
    artifacts: dict[str, dict[str, Any]] = {}
    for key, source in (inputs.get("artifacts") or {}).items():
        if "taskOutputArtifact" in source:
            ref = source["taskOutputArtifact"]
            found = results.get(ref["producerTask"], {}).get("artifacts", {}).get(ref["outputArtifactKey"])
        elif "componentInputArtifact" in source:
            found = scope["artifacts"].get(source["componentInputArtifact"])
        else:
            found = None
        if found is None:
            raise TaskFailed(f"input artifact {key!r} has no producer that made it")
        artifacts[key] = found
    return params, artifacts


def dag_outputs(dag: Mapping[str, Any], inner: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """What a sub-DAG hands back (``dag.outputs``), from what its tasks produced (``inner``);
    an output whose producer made nothing is ``None``."""
    outputs = dag.get("outputs") or {}
    params = {}
    for key, source in (outputs.get("parameters") or {}).items():
        ref = source["valueFromParameter"]
        produced = inner.get(ref["producerSubtask"], {}).get("parameters", {})
        params[key] = produced.get(ref["outputParameterKey"])
    artifacts = {}
    for key, source in (outputs.get("artifacts") or {}).items():
        ref = source["artifactSelectors"][0]
        made = inner.get(ref["producerSubtask"], {}).get("artifacts", {})
        artifacts[key] = made.get(ref["outputArtifactKey"])
    return {"parameters": params, "artifacts": artifacts}


def cache_key(
    container: Mapping[str, Any],
    params: Mapping[str, Any],
    artifacts: Mapping[str, Mapping[str, Any]],
    outputs: Mapping[str, Any],
) -> str:
    """What makes two executions the same: the container, the input values and artifact URIs,
    and the declared outputs."""
    return hashlib.sha256(
        json.dumps(
            {
                "container": container,
                "parameters": params,
                "artifacts": {k: a.get("uri") for k, a in artifacts.items()},
                "outputs": outputs,
            },
            sort_keys=True,
            default=str,
        ).encode()
    ).hexdigest()


def executor_input(
    params: Mapping[str, Any],
    inputs: Mapping[str, Mapping[str, Any]],
    outputs: Mapping[str, Mapping[str, Any]],
    output_parameters: Mapping[str, Any],
    work: Path,
) -> dict[str, Any]:
    """KFP's executor input for a task run in folder ``work``.

    Args:
        params: The task's parameter values.
        inputs: Its input artifacts, each as the step should see it (a local ``uri``).
        outputs: Its output artifacts, likewise.
        output_parameters: Its declared output parameters (each gets a file in ``work``).
        work: The task's working folder (the executor output is written there).
    """
    return {
        "inputs": {
            "parameterValues": dict(params),
            "artifacts": {k: {"artifacts": [dict(a)]} for k, a in inputs.items()},
        },
        "outputs": {
            "parameters": {name: {"outputFile": str(work / "outputs" / name)} for name in output_parameters},
            "artifacts": {k: {"artifacts": [dict(a)]} for k, a in outputs.items()},
            "outputFile": str(work / "executor_output.json"),
        },
    }


def runs_here(container: Mapping[str, Any]) -> bool:
    """Whether a task's container runs the mlshift step runner (the only one the fakes run)."""
    return list(container.get("command") or []) == STEP_COMMAND


def step_arguments(container: Mapping[str, Any], executor: Mapping[str, Any]) -> list[str]:
    """The container's arguments with KFP's placeholders filled from ``executor`` (its input)."""

    def placeholder(match: re.Match[str]) -> str:
        side, kind, name, attr = match.groups()
        block = executor[side]
        if kind == "parameters":
            if side == "outputs":
                return str(block["parameters"][name]["outputFile"])
            value = block["parameterValues"].get(name)
            return value if isinstance(value, str) else json.dumps(value)
        uri = str(block["artifacts"][name]["artifacts"][0]["uri"])
        return uri.removeprefix("file://") if attr == "path" else uri

    return [
        json.dumps(executor) if a == "{{$}}" else _PLACEHOLDER.sub(placeholder, a)
        for a in container.get("args") or []
    ]


def read_output_parameters(executor: Mapping[str, Any], outputs_def: Mapping[str, Any]) -> dict[str, Any]:
    """The output parameters the step wrote: its executor output, else each output file (JSON
    unless the parameter is a ``STRING``)."""
    out: dict[str, Any] = {}
    path = Path(executor["outputs"]["outputFile"])
    if path.exists():
        out.update(json.loads(path.read_text() or "{}").get("parameterValues") or {})
    for name, spec in (executor["outputs"]["parameters"] or {}).items():
        if name in out:
            continue
        file = Path(spec["outputFile"])
        if file.exists():
            text = file.read_text()
            kind = ((outputs_def.get("parameters") or {}).get(name) or {}).get("parameterType")
            out[name] = text if kind == "STRING" else json.loads(text)
    return out


# ---------------------------------------------------------------------------------------------
# the step process


class StepProcess:
    """Runs a task's step in a child process, as its container would, and stops it on demand.

    One per pipeline run: :meth:`stop` (from any thread) ends the running attempt and keeps any
    later one from starting.
    """

    def __init__(self, stopped: threading.Event | None = None) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        #: Set once the run is stopped (pass the run's own event to share it).
        self.stopped = stopped if stopped is not None else threading.Event()

    def stop(self, *, kill: bool = False) -> None:
        """Stop the running attempt (SIGTERM, or SIGKILL with ``kill``), if any; no attempt
        starts after this."""
        self.stopped.set()
        with self._lock:
            process = self._process
        if process is not None and process.poll() is None:
            if kill:
                process.kill()
            else:
                process.terminate()

    def run(
        self,
        container: Mapping[str, Any],
        args: list[str],
        work: Path,
        *,
        attempts: int,
        log: Callable[[str], None] = lambda _: None,
    ) -> tuple[int, str]:
        """Run ``python -m mlshift.pipelines.kfp_step ARGS`` in ``work`` until an attempt
        succeeds, at most ``attempts`` times, with the container's environment on top of this
        process's.

        Each attempt's output goes to ``work/log.txt`` (replaced per attempt). Before each
        retry, ``log`` gets the failed attempt's output, line by line, and ``attempt N failed
        with exit code C; retrying``.

        Returns:
            The last attempt's exit code (``-1`` when stopped before it started) and its output.
        """
        env = {**os.environ, **{e["name"]: str(e.get("value", "")) for e in container.get("env") or []}}
        code, text = 0, ""
        for attempt in range(1, max(1, attempts) + 1):
            code, text = self._attempt([sys.executable, "-m", "mlshift.pipelines.kfp_step", *args], env, work)
            if code == 0 or self.stopped.is_set():
                break
            if attempt < attempts:
                for line in text.splitlines():
                    log(line)
                log(f"attempt {attempt} failed with exit code {code}; retrying")
        return code, text

    def _attempt(self, argv: list[str], env: Mapping[str, str], work: Path) -> tuple[int, str]:
        log_path = work / "log.txt"
        with log_path.open("wb") as out:
            with self._lock:
                if self.stopped.is_set():
                    return -1, "cancelled before it started"
                process = self._process = subprocess.Popen(
                    argv, stdout=out, stderr=subprocess.STDOUT, env=dict(env), cwd=str(work)
                )
            try:
                code = process.wait()
            finally:
                with self._lock:
                    self._process = None
        return code, log_path.read_text(errors="replace")
