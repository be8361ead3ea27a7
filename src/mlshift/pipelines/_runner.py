"""The local runner: executes a pipeline's IR on this machine.

One scheduler thread walks the graph: it decides each ready step (skip it, serve it from the
cache, fail the run, or execute it) and records every decision in ``pipelines.db``. Steps that
execute go to a thread pool as wide as the allowed parallelism; a ``python`` step runs in a
subprocess of its own (``mlshift.pipelines._worker``) in a fresh work folder, a ``container``
step in ``docker run`` (on ``local+docker://``: through the Docker target's runtime, with its
labels and limits), and the built-ins as API calls.

The cache key of a step is the digest of what determines its result: its code digest (or
image and command, or built-in settings), its inputs as resolved for this run (artifact
digests, parameter values, metrics) and its declared outputs. Retries, timeouts, resources
and conditions do not change what a step computes and are left out.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import operator
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlshift.errors import ConfigError, MlshiftError
from mlshift.pipelines import builtins as builtin_steps
from mlshift.pipelines._ir import ConditionIR, OperandIR, PipelineIR, StepIR, canonical_json
from mlshift.pipelines._run import PipelineEvent
from mlshift.pipelines._types import coerce_literal

if TYPE_CHECKING:
    from mlshift._client import Client
    from mlshift.local import DockerRuntime
    from mlshift.pipelines._run import LocalPipelineRun
    from mlshift.pipelines._service import PipelineService

__all__ = ["LocalRunner", "docker_runtime", "secret_env_name"]

#: Seconds a stopped step gets between SIGTERM and SIGKILL.
KILL_GRACE = 5.0


def secret_env_name(ref: str) -> str:
    """The environment variable the local runner reads secret ``ref`` from.

    ``prod/hf-token`` → ``PROD_HF_TOKEN``: every character that cannot be in a variable name
    becomes ``_``, letters are upper-cased.
    """
    return re.sub(r"[^A-Za-z0-9]", "_", ref).upper()


@dataclass
class Outcome:
    """How one execution of a step ended."""

    status: str  # succeeded | failed | cancelled
    outputs: dict[str, Any] | None = None
    message: str | None = None


class _StepFailed(Exception):
    """An attempt failed, with a message meant for the run's status."""


_COMPARE: dict[str, Callable[[Any, Any], Any]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
    "==": operator.eq,
    "!=": operator.ne,
}


def _fmt(value: Any) -> str:
    """A measured value as messages show it: ``0.9333`` rather than ``0.9333333333333333``."""
    if isinstance(value, float):
        return f"{value:.4g}"
    return repr(value) if isinstance(value, str) else str(value)


class LocalRunner:
    """Runs (or resumes) one pipeline run; :meth:`run` is the body of the run's thread."""

    def __init__(
        self,
        service: PipelineService,
        run: LocalPipelineRun,
        ir: PipelineIR,
        params: Mapping[str, Any],
        *,
        use_cache: bool,
        max_parallel: int,
        on_event: Callable[[PipelineEvent], None] | None,
    ) -> None:
        self.service = service
        self.db = service.db
        self.store = service.store
        self.run_obj = run
        self.run_id = run.id
        self.ir = ir
        self.params = dict(params)
        self.use_cache = use_cache
        self.max_parallel = max(1, max_parallel)
        self.on_event = on_event
        self.cancel = run.cancel_requested
        self.steps = {s.name: s for s in ir.steps}
        self.deps: dict[str, set[str]] = {s.name: set() for s in ir.steps}
        self.needs: dict[str, set[str]] = {s.name: set() for s in ir.steps}  # data and condition sources
        for edge in ir.edges:
            self.deps[edge.target].add(edge.source)
            if edge.kind != "order":
                self.needs[edge.target].add(edge.source)
        self.status: dict[str, str] = {}
        self.outputs: dict[str, dict[str, Any]] = {}
        self.gate_notes: dict[str, str] = {}
        self.failure: str | None = None
        self.launched: dict[str, float] = {}
        self.started = time.monotonic()
        self.run_dir = service.run_dir(self.run_id)
        self._log_lock = threading.Lock()

    # ---------------------------------------------------------------------------- plumbing

    def _emit(self, kind: Any, **fields: Any) -> None:
        if self.on_event is None:
            return
        with contextlib.suppress(Exception):  # a broken progress display must not break the run
            self.on_event(PipelineEvent(kind=kind, run_id=self.run_id, pipeline=self.ir.name, **fields))

    def _log(self, step: str, text: str) -> None:
        path = self.service.log_path(self.run_id, step)
        path.parent.mkdir(parents=True, exist_ok=True)
        with self._log_lock, path.open("a", encoding="utf-8") as fh:
            fh.write(text.rstrip("\n") + "\n")

    # ---------------------------------------------------------------------------- the walk

    def run(self) -> None:
        """Execute every step that is not finished yet, then record how the run ended."""
        try:
            self._walk()
        except BaseException as exc:  # a bug or a broken database: say so, and leave the run resumable
            self.run_obj.error = exc
            self.db.update_run(
                self.run_id, status="failed", message=f"the runner failed: {exc}", finished_at=_now()
            )
            self._emit(
                "run_finished", status="failed", message=str(exc), elapsed=time.monotonic() - self.started
            )
        finally:
            self.run_obj.finished.set()

    def _walk(self) -> None:
        for row in self.db.steps(self.run_id):
            if row["status"] in ("succeeded", "cached"):
                self.status[row["name"]] = row["status"]
                self.outputs[row["name"]] = json.loads(row["outputs"] or "{}")
        self._emit("run_started")
        pending = [s.name for s in self.ir.steps if s.name not in self.status]
        waiting = {n: sum(1 for d in self.deps[n] if d not in self.status) for n in pending}
        dependents: dict[str, list[str]] = {n: [] for n in self.steps}
        for n in pending:
            for d in self.deps[n]:
                dependents[d].append(n)
        ready: deque[str] = deque(n for n in pending if waiting[n] == 0)
        running: dict[Future[Outcome], tuple[str, str]] = {}
        to_execute: dict[str, tuple[dict[str, Any], str]] = {}  # decided, waiting for a free slot
        stopping = False

        def settle(name: str) -> None:
            for nxt in dependents[name]:
                waiting[nxt] -= 1
                if waiting[nxt] == 0:
                    ready.append(nxt)

        polled = time.monotonic()
        with ThreadPoolExecutor(
            max_workers=self.max_parallel, thread_name_prefix=f"step-{self.run_id}"
        ) as pool:
            while True:
                if time.monotonic() - polled > 0.5:
                    polled = time.monotonic()
                    if self.db.run(self.run_id)["cancel_requested"]:  # cancel() from another process
                        self.cancel.set()
                if self.cancel.is_set() or self.failure is not None:
                    stopping = True
                if not stopping:
                    held: deque[str] = deque()
                    while ready:
                        name = ready.popleft()
                        decided = to_execute.pop(name, None) or self._decide(name)
                        if isinstance(decided, str):  # skipped, cached or failed: settled already
                            settle(name)
                            if self.failure is not None:
                                stopping = True
                                break
                            continue
                        if len(running) >= self.max_parallel:
                            to_execute[name] = decided
                            held.append(name)
                            continue
                        inputs, key = decided
                        self.db.update_step(self.run_id, name, status="running", cache_key=key)
                        self._emit("step_started", step=name)
                        self.launched[name] = time.monotonic()
                        running[pool.submit(self._execute, self.steps[name], inputs)] = (name, key)
                    ready.extendleft(reversed(held))
                if stopping:
                    # Nothing new starts, but steps a condition rules out are still marked
                    # skipped, so the run shows which branch was not taken.
                    progressed = True
                    while progressed:
                        progressed = False
                        for name in list(ready):
                            reason, _ = self._skip(name)
                            if reason is not None:
                                ready.remove(name)
                                self._settle(self.steps[name], "skipped", message=reason)
                                settle(name)
                                progressed = True
                if not running:
                    if stopping or not ready:
                        break
                    continue
                done, _ = wait(running, timeout=0.2, return_when=FIRST_COMPLETED)
                for future in done:
                    name, key = running.pop(future)
                    outcome = future.result()
                    self._record(self.steps[name], outcome, key)
                    if outcome.status == "succeeded":
                        settle(name)
        self._finish_run()

    def _finish_run(self) -> None:
        elapsed = time.monotonic() - self.started
        message: str | None
        if self.cancel.is_set() and self.failure is None:
            status, message = (
                "cancelled",
                f"cancelled; resume with `mlshift pipelines run --resume {self.run_id}`",
            )
        elif self.failure is not None:
            status, message = "failed", self.failure
        elif any(s not in self.status for s in self.steps):
            status, message = "failed", "some steps could not run"
        else:
            status, message = "succeeded", "; ".join(self.gate_notes.values()) or None
        self.db.update_run(self.run_id, status=status, message=message, finished_at=_now())
        self._emit("run_finished", status=status, message=message, elapsed=elapsed)

    # ---------------------------------------------------------------------------- decisions

    def _skip(self, name: str) -> tuple[str | None, list[str]]:
        """Why ``name`` must not run (an input that did not run, a condition that says no), if it
        must not; and what its conditions measured."""
        step = self.steps[name]
        skipped = sorted(d for d in self.needs[name] if self.status.get(d) == "skipped")
        if skipped:
            return f"skipped because {', '.join(skipped)} did not run", []
        readings: list[str] = []
        for when in step.when:
            cond = self.ir.condition(when.condition)
            holds, reading = self._evaluate(cond)
            readings.append(reading)
            if holds != when.branch:
                message = f"{cond.id} is {'false' if when.branch else 'true'}: {reading}"
                if when.branch:
                    self.gate_notes[cond.id] = f"stopped at {message}"
                return message, readings
        return None, readings

    def _decide(self, name: str) -> str | tuple[dict[str, Any], str]:
        """Skip, fail or serve ``name`` from the cache and return that status, or return its
        resolved inputs and cache key when it must execute."""
        step = self.steps[name]
        reason, readings = self._skip(name)
        if reason is not None:
            return self._settle(step, "skipped", message=reason)
        if step.kind == "fail":
            assert step.fail is not None
            text = step.fail.message + (f": {'; '.join(readings)}" if readings else "")
            self._log(name, text)
            self.failure = text
            return self._settle(step, "failed", message=text)
        inputs = self._resolve(step)
        key = self._cache_key(step, inputs)
        if not (self.use_cache and step.cache):
            return inputs, key
        hit = self.db.cached(key)
        if hit is None or not self._still_valid(step, inputs, hit["outputs"]):
            return inputs, key
        self._log(name, f"served from the cache: outputs of step {hit['step']!r} in run {hit['run_id']}")
        self.outputs[name] = hit["outputs"]
        return self._settle(
            step,
            "cached",
            outputs=hit["outputs"],
            key=key,
            cached_from=hit["run_id"],
            note=f"from run {hit['run_id']}",
        )

    def _settle(
        self,
        step: StepIR,
        status: str,
        *,
        message: str | None = None,
        outputs: dict[str, Any] | None = None,
        key: str | None = None,
        cached_from: str | None = None,
        note: str | None = None,
    ) -> str:
        self.status[step.name] = status
        self.db.finish_step(
            self.run_id,
            step.name,
            status=status,
            outputs=outputs,
            message=message,
            cache_key=key,
            cached_from=cached_from,
        )
        self._emit("step_finished", step=step.name, status=status, message=message or note)
        return status

    def _operand(self, op: OperandIR) -> tuple[Any, str]:
        """An operand's value, and how it reads (``evaluate.metrics['auc'] = 0.91``)."""
        if op.param is not None:
            value = self.params[op.param]
            return value, f"{op.param} = {_fmt(value)}"
        if op.step is not None:
            out = self.outputs.get(op.step, {})
            value = (
                out.get("metrics", {}).get(op.metric)
                if op.metric is not None
                else out.get("values", {}).get(op.output)
            )
            return value, f"{op.describe()} = {_fmt(value)}"
        return op.value, _fmt(op.value)

    def _evaluate(self, cond: ConditionIR) -> tuple[bool, str]:
        left, left_text = self._operand(cond.left)
        right, right_text = self._operand(cond.right)
        holds = left is not None and right is not None and bool(_COMPARE[cond.op](left, right))
        threshold = f"{_fmt(right)} ({cond.right.param})" if cond.right.param is not None else right_text
        return holds, f"{left_text}, needs {cond.op} {threshold}"

    def _resolve(self, step: StepIR) -> dict[str, Any]:
        """Input name → value for this run: a literal, a parameter, an upstream output or metric."""
        out: dict[str, Any] = {}
        for key, inp in step.inputs.items():
            if inp.param is not None:
                out[key] = self.params[inp.param]
            elif inp.step is not None:
                produced = self.outputs[inp.step]
                if inp.type == "metrics":
                    out[key] = produced.get("metrics", {})
                elif inp.metric is not None:
                    out[key] = produced["metrics"][inp.metric]
                elif inp.type == "artifact":
                    out[key] = produced["artifacts"][inp.output]
                else:
                    out[key] = produced["values"][inp.output]
            else:
                out[key] = inp.value
            if inp.type == "float" and isinstance(out[key], int) and not isinstance(out[key], bool):
                out[key] = float(out[key])
        return out

    def _cache_key(self, step: StepIR, inputs: Mapping[str, Any]) -> str:
        what: dict[str, Any] = {
            "kind": step.kind,
            "inputs": inputs,
            "outputs": {k: v.type for k, v in step.outputs.items()},
            "metrics": step.metrics,
            "env": step.env,
            "secrets": step.secrets,
        }
        if step.python is not None:
            what["code"] = [step.python.qualname, step.python.code_digest]
        if step.container is not None:
            what["container"] = step.container.model_dump(mode="json")
        for block in (step.register_model, step.deploy):
            if block is not None:
                what["config"] = block.model_dump(mode="json")
                what["target"] = block.target or self.service.target_identity
        return "sha256:" + hashlib.sha256(canonical_json(what)).hexdigest()

    def _still_valid(self, step: StepIR, inputs: Mapping[str, Any], outputs: Mapping[str, Any]) -> bool:
        """Whether a cache hit can be used: its artifacts are stored, its live resources exist."""
        for ref in outputs.get("artifacts", {}).values():
            if not self.store.exists(ref):
                return False
        block = step.register_model or step.deploy
        if block is not None:
            # Live state is the state: a cached registration or deployment counts only while
            # what it made still exists on the target.
            from mlshift.pipelines import _builtins

            check = _builtins.register_still_valid if step.register_model else _builtins.deploy_still_valid
            with self.service.client_for(block.target) as client:
                return check(client, step, inputs)
        return True

    # ---------------------------------------------------------------------------- execution

    def _execute(self, step: StepIR, inputs: dict[str, Any]) -> Outcome:
        """All attempts of one step (in a pool thread)."""
        attempts = step.retries + 1
        message = ""
        for attempt in range(1, attempts + 1):
            if self.cancel.is_set():
                return Outcome("cancelled", message="cancelled before it started")
            self.db.start_attempt(self.run_id, step.name, attempt)
            self._log(step.name, f"--- attempt {attempt} of {attempts} ({_now()}) ---")
            try:
                if step.kind == "python":
                    outputs = self._run_python(step, inputs)
                elif step.kind == "container":
                    outputs = self._run_container(step, inputs)
                else:
                    outputs = self._run_builtin(step, inputs)
                return Outcome("succeeded", outputs=outputs)
            except _Cancelled:
                return Outcome("cancelled", message="cancelled while running")
            except _StepFailed as exc:
                message = str(exc)
            except MlshiftError as exc:
                message = exc.message
            except Exception as exc:
                message = f"{type(exc).__name__}: {exc}"
            self._log(step.name, f"attempt {attempt} failed: {message}")
            if attempt < attempts:
                delay = builtin_steps.retry_delay(step.retry_delay, attempt)
                self._emit("step_retrying", step=step.name, message=message, attempt=attempt + 1)
                if self.cancel.wait(delay):
                    return Outcome("cancelled", message="cancelled while waiting to retry")
        suffix = f" (after {attempts} attempts)" if attempts > 1 else ""
        return Outcome("failed", message=message + suffix)

    def _record(self, step: StepIR, outcome: Outcome, key: str) -> None:
        """Record an execution's end; a success and its cache entry in one transaction."""
        if outcome.status == "succeeded":
            assert outcome.outputs is not None
            self.outputs[step.name] = outcome.outputs
            self.db.finish_step(
                self.run_id,
                step.name,
                status="succeeded",
                outputs=outcome.outputs,
                cache_key=key,
                write_cache=step.cache,
            )
            self.status[step.name] = "succeeded"
            work = self.run_dir / "work" / step.name
            shutil.rmtree(work, ignore_errors=True)
        else:
            self.db.finish_step(self.run_id, step.name, status=outcome.status, message=outcome.message)
            if outcome.status == "failed" and self.failure is None:
                self.failure = f"step {step.name!r} failed: {outcome.message}"
        elapsed = time.monotonic() - self.launched.get(step.name, time.monotonic())
        self._emit(
            "step_finished", step=step.name, status=outcome.status, message=outcome.message, elapsed=elapsed
        )

    def _env(self, step: StepIR) -> dict[str, str]:
        env = dict(os.environ)
        env.update(step.env)
        for var, ref in step.secrets.items():
            env[var] = os.environ.get(secret_env_name(ref), "")
        env.update(
            PYTHONUNBUFFERED="1",
            PYTHONDONTWRITEBYTECODE="1",
            MLSHIFT_PIPELINE=self.ir.name,
            MLSHIFT_PIPELINE_RUN=self.run_id,
            MLSHIFT_PIPELINE_STEP=step.name,
        )
        return env

    def _work_dir(self, step: StepIR) -> Path:
        work = self.run_dir / "work" / step.name
        shutil.rmtree(work, ignore_errors=True)
        (work / "outputs").mkdir(parents=True)
        return work

    def _run_process(
        self, step: StepIR, cmd: list[str], work: Path, env: dict[str, str], *, watch: bool
    ) -> int:
        import psutil

        log = self.service.log_path(self.run_id, step.name)
        with log.open("ab") as fh:
            proc = subprocess.Popen(
                cmd,
                cwd=work,
                env=env,
                stdin=subprocess.PIPE if watch else subprocess.DEVNULL,
                stdout=fh,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # Ctrl-C reaches the runner only; it stops steps itself
            )
        try:
            with contextlib.suppress(psutil.Error):
                self.db.update_step(
                    self.run_id, step.name, pid=proc.pid, pid_started=psutil.Process(proc.pid).create_time()
                )
            deadline = None if step.timeout is None else time.monotonic() + step.timeout
            while True:
                try:
                    return proc.wait(timeout=0.1)
                except subprocess.TimeoutExpired:
                    pass
                if self.cancel.is_set():
                    _stop(proc)
                    raise _Cancelled
                if deadline is not None and time.monotonic() > deadline:
                    _stop(proc)
                    raise _StepFailed(f"timed out after {step.timeout:g} s")
        finally:
            if proc.stdin is not None:
                with contextlib.suppress(OSError):
                    proc.stdin.close()
            if proc.poll() is None:
                _stop(proc)

    def _run_python(self, step: StepIR, inputs: Mapping[str, Any]) -> dict[str, Any]:
        assert step.python is not None
        work = self._work_dir(step)
        args: dict[str, Any] = {}
        paths: list[str] = []
        for key, value in inputs.items():
            if step.inputs[key].type == "artifact":
                args[key] = str(self.store.path(value))
                paths.append(key)
            else:
                args[key] = value
        for out, spec in step.outputs.items():
            if spec.type == "artifact":
                args[out] = str(work / "outputs" / out)
                paths.append(out)
        task = {
            "code": {k: v for k, v in step.python.model_dump().items() if k != "code_digest"},
            "args": args,
            "paths": paths,
        }
        (work / "task.json").write_text(json.dumps(task), encoding="utf-8")
        cmd = [sys.executable, "-m", "mlshift.pipelines._worker", str(work / "task.json")]
        code = self._run_process(step, cmd, work, self._env(step), watch=True)
        if code != 0:
            raise _StepFailed(self._failure_text(step, work, code))
        try:
            returned = json.loads((work / "result.json").read_text(encoding="utf-8"))["value"]
        except (OSError, ValueError, KeyError):
            raise _StepFailed("the step process exited without writing its result") from None
        values: dict[str, Any] = {}
        metrics: dict[str, float] = {}
        if step.metrics is not None:
            metrics = self._check_metrics(step, returned)
        elif "output" in step.outputs and step.outputs["output"].type != "artifact":
            values["output"] = self._check_value(step, "output", returned)
        return {"artifacts": self._store_outputs(step, work), "values": values, "metrics": metrics}

    def _failure_text(self, step: StepIR, work: Path, code: int) -> str:
        try:
            err = json.loads((work / "error.json").read_text(encoding="utf-8"))
            return f"{err['type']}: {err['message']}"
        except (OSError, ValueError, KeyError):
            pass
        how = f"was killed by signal {-code}" if code < 0 else f"exited with code {code}"
        return f"the step process {how}; see `mlshift pipelines logs {self.run_id} {step.name}`"

    def _check_metrics(self, step: StepIR, returned: Any) -> dict[str, float]:
        if not isinstance(returned, dict) or not all(
            isinstance(k, str) and isinstance(v, (int, float)) and not isinstance(v, bool)
            for k, v in returned.items()
        ):
            raise _StepFailed(f"returned {type(returned).__name__}, not Metrics (a dict of names to numbers)")
        missing = [m for m in step.metrics or () if m not in returned]
        if missing:
            raise _StepFailed(
                f"declares metric {missing[0]!r} but did not return it "
                f"(returned: {', '.join(returned) or 'none'})"
            )
        return {k: float(v) for k, v in returned.items()}

    def _check_value(self, step: StepIR, name: str, value: Any) -> Any:
        kind = step.outputs[name].type
        try:
            return coerce_literal(kind, value, field=name, where=f"output {name!r}")
        except ConfigError as exc:
            raise _StepFailed(exc.message) from None

    def _store_outputs(self, step: StepIR, work: Path) -> dict[str, dict[str, str]]:
        folder = work / "outputs"
        stored: dict[str, dict[str, str]] = {}
        present = list(folder.iterdir())
        for out, spec in step.outputs.items():
            if spec.type != "artifact":
                continue
            found = [p for p in present if p.name == out or p.name.startswith(out + ".")]
            if not found:
                raise _StepFailed(
                    f"did not write its output {out!r} (a file or folder at {folder / out}, "
                    f"or with a suffix such as {out}.skops)"
                )
            if len(found) > 1:
                names = ", ".join(sorted(p.name for p in found))
                raise _StepFailed(f"wrote more than one candidate for output {out!r}: {names}")
            try:
                stored[out] = self.store.put(found[0])
            except ConfigError as exc:
                raise _StepFailed(f"output {out!r}: {exc.message}") from None
        return stored

    def _run_container(self, step: StepIR, inputs: Mapping[str, Any]) -> dict[str, Any]:
        assert step.container is not None
        runtime = docker_runtime(self.service.client)
        docker = shutil.which("docker")
        if runtime is None and docker is None:
            raise _StepFailed("docker is not on PATH; the local runner runs container steps with docker")
        work = self._work_dir(step)
        mounts = [(str(work), "rw")]
        values: dict[str, str] = {}
        for key, value in inputs.items():
            kind = step.inputs[key].type
            if kind == "artifact":
                path = self.store.path(value)
                mounts.append((str(path), "ro"))
                values[f"inputs.{key}"] = str(path)
            elif kind == "metrics":
                values[f"inputs.{key}"] = json.dumps(value)
            elif kind == "bool":
                values[f"inputs.{key}"] = "true" if value else "false"
            else:
                values[f"inputs.{key}"] = str(value)
        for out in step.outputs:
            values[f"outputs.{out}"] = str(work / "outputs" / out)
        values["metrics"] = str(work / "metrics.json")

        def fill(text: str) -> str:
            return re.sub(r"\{\{\s*([^{}]*?)\s*\}\}", lambda m: values[m.group(1)], text)

        env = self._env(step)
        names = [
            *step.env,
            *step.secrets,
            "MLSHIFT_PIPELINE",
            "MLSHIFT_PIPELINE_RUN",
            "MLSHIFT_PIPELINE_STEP",
        ]
        command = [*(fill(c) for c in step.container.command), *(fill(a) for a in step.container.args)]
        name = f"mlshift-{self.run_id}-{step.name}"
        if runtime is not None:
            code = self._run_task(step, runtime, name, command, work, mounts, {n: env[n] for n in names})
        else:
            assert docker is not None
            cmd = [docker, "run", "--rm", "--name", name, "-w", str(work)]
            for mount, mode in mounts:
                cmd += ["-v", f"{mount}:{mount}" + (":ro" if mode == "ro" else "")]
            for var in names:
                cmd += ["-e", var]  # by name: values come from the environment, never the command line
            if step.resources.gpus:
                cmd += ["--gpus", str(step.resources.gpus)]
            cmd += [step.container.image, *command]
            code = self._run_process(step, cmd, work, env, watch=False)
        if code != 0:
            raise _StepFailed(self._failure_text(step, work, code))
        out_values: dict[str, Any] = {}
        for out, spec in step.outputs.items():
            if spec.type == "artifact":
                continue
            path = work / "outputs" / out
            try:
                text = path.read_text(encoding="utf-8").strip()
            except OSError:
                raise _StepFailed(f"did not write its output {out!r} to {path}") from None
            try:
                value = json.loads(text)
            except ValueError:
                value = text
            if spec.type == "str" and not isinstance(value, str):
                value = text
            out_values[out] = self._check_value(step, out, value)
            path.unlink()
        metrics: dict[str, float] = {}
        if step.metrics is not None:
            try:
                raw = json.loads((work / "metrics.json").read_text(encoding="utf-8"))
            except (OSError, ValueError):
                raise _StepFailed(
                    f"did not write its metrics as a JSON object to {work / 'metrics.json'}"
                ) from None
            metrics = self._check_metrics(step, raw)
        return {"artifacts": self._store_outputs(step, work), "values": out_values, "metrics": metrics}

    def _run_task(
        self,
        step: StepIR,
        runtime: DockerRuntime,
        name: str,
        command: list[str],
        work: Path,
        mounts: list[tuple[str, str]],
        environment: dict[str, str],
    ) -> int:
        """Run a container step through the Docker target's runtime (labelled, limited, removed)."""
        from mlshift.local import ContainerTask

        assert step.container is not None
        task = ContainerTask(
            name=name,
            image=step.container.image,
            command=command,
            workdir=str(work),
            mounts=mounts,
            log=self.service.log_path(self.run_id, step.name),
            environment=environment,
            labels={
                "mlshift.pipeline": self.ir.name,
                "mlshift.run": self.run_id,
                "mlshift.step": step.name,
                "mlshift.folder": str(self.run_dir),
            },
            size=step.resources.size,
        )
        deadline = None if step.timeout is None else time.monotonic() + step.timeout

        def should_stop() -> str | None:
            if self.cancel.is_set():
                return "cancelled"
            if deadline is not None and time.monotonic() > deadline:
                return f"timed out after {step.timeout:g} s"
            return None

        try:
            return runtime.run_task(task, should_stop=should_stop)
        except MlshiftError as exc:
            if self.cancel.is_set():
                raise _Cancelled from None
            reason = should_stop()
            raise _StepFailed(reason if reason is not None else exc.message) from None

    def _run_builtin(self, step: StepIR, inputs: Mapping[str, Any]) -> dict[str, Any]:
        from mlshift.pipelines import _builtins

        def log(text: str) -> None:
            self._log(step.name, text)

        if step.kind == "register_model":
            assert step.register_model is not None
            artifact = self.store.path(inputs["artifact"])
            lineage = {"mlshift:pipeline": self.ir.name, "mlshift:run": self.run_id}
            with self.service.client_for(step.register_model.target) as client:
                return _builtins.register_model(client, step, inputs, artifact, lineage=lineage, log=log)
        assert step.deploy is not None
        with self.service.client_for(step.deploy.target) as client:
            return _builtins.deploy(client, step, inputs, log=log)


class _Cancelled(Exception):
    """The run was cancelled while this step ran."""


def _stop(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the step's process group, then SIGKILL it after a grace period."""
    for sig, grace in ((signal.SIGTERM, KILL_GRACE), (signal.SIGKILL, KILL_GRACE)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


def docker_runtime(client: Client) -> DockerRuntime | None:
    """The Docker runtime of a ``local+docker://`` client (container steps run on it), else ``None``."""
    from mlshift.local import DockerRuntime, LocalAdapter

    adapter = client.adapter
    if isinstance(adapter, LocalAdapter) and isinstance(adapter.runtime, DockerRuntime):
        return adapter.runtime
    return None


def _now() -> str:
    from mlshift.pipelines._store import now_iso

    return now_iso()
