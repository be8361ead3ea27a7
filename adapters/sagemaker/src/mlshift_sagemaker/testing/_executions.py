"""Pipeline executions in the testing kit: each step runs for real, wired as SageMaker wires it.

An execution runs in a thread of its own, one step at a time in dependency order:

- a ``Processing`` step running ``python -m mlshift_sagemaker.step`` gets a folder in place of
  ``/opt/ml/processing``: its ``ProcessingInputs`` are downloaded there from moto's S3, the step
  runs (a ``@step`` function in a child process, as in its container; a register or deploy step
  in this process, so its AWS calls reach the fake), and its ``ProcessingOutputConfig`` outputs
  are uploaded back to moto's S3 where later steps and property files find them. Its output goes
  to moto's CloudWatch Logs under ``/aws/sagemaker/ProcessingJobs``, as a processing job's does;
- a ``Condition`` step evaluates its comparisons on the property files the steps wrote (unless a
  test chose its outcome with :meth:`FakeSageMaker.condition_outcome`);
- a ``Fail`` step fails the execution with its message;
- a step with ``CacheConfig`` is served from an earlier successful execution of the same pipeline
  whose step had the same resolved arguments and inputs (``CacheHitResult``), as SageMaker does;
- a step made to fail with :meth:`FakeSageMaker.fail_pipeline_step` fails without running;
- a processing step running another image cannot run here: it succeeds with empty outputs.

Nothing new starts after a step fails; ``StopPipelineExecution`` stops the running step.
"""

from __future__ import annotations

import json
import operator
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlshift_sagemaker.testing._fake import FakeSageMaker

__all__ = ["Execution", "ExecutionRunner"]

PROCESSING = "/opt/ml/processing"
LOG_GROUP = "/aws/sagemaker/ProcessingJobs"
_MLSHIFT_STEP = ["python", "-m", "mlshift_sagemaker.step"]
_OUTPUT = re.compile(
    r"Steps\.([A-Za-z0-9_-]+)\.ProcessingOutputConfig\.Outputs\['([^']+)'\]\.S3Output\.S3Uri"
)
_COMPARISONS: dict[str, Callable[[Any, Any], bool]] = {
    "GreaterThanOrEqualTo": operator.ge,
    "GreaterThan": operator.gt,
    "LessThanOrEqualTo": operator.le,
    "LessThan": operator.lt,
    "Equals": operator.eq,
}


class _StepError(Exception):
    """A step cannot run as defined (SageMaker would fail it with this reason)."""


@dataclass
class Execution:
    """A pipeline execution the fake runs."""

    arn: str
    pipeline: str
    definition: dict[str, Any]
    parameters: dict[str, Any]
    failing: dict[str, str]
    outcomes: dict[str, bool]
    status: str = "Executing"
    failure_reason: str | None = None
    #: ``ListPipelineExecutionSteps`` entries, in the order the steps started.
    steps: list[dict[str, Any]] = field(default_factory=list)
    #: Step → output name → its S3 URI.
    outputs: dict[str, dict[str, str]] = field(default_factory=dict)
    created: float = field(default_factory=time.time)
    finished: float | None = None
    stop_requested: threading.Event = field(default_factory=threading.Event)

    @property
    def id(self) -> str:
        return self.arn.rsplit("/", 1)[-1]


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return json.dumps(value)
    return str(value)


def _json_path(data: Any, path: str) -> Any:
    """A value from a property file by a simple JSON path (``a.b``, ``a[0]``, ``$.a``)."""
    for part in re.findall(r"[^.\[\]$]+|\[\d+\]", path):
        data = data[int(part[1:-1])] if part.startswith("[") else data[part]
    return data


class ExecutionRunner:
    """Runs one execution in a thread (:meth:`start`); the fake reads :class:`Execution` for status."""

    def __init__(self, fake: FakeSageMaker, execution: Execution, region: str, cache: dict[str, Any]) -> None:
        self._fake = fake
        self.execution = execution
        self._region = region
        self._cache = cache
        self._work = Path(tempfile.mkdtemp(prefix=f"mlshift-fake-execution-{execution.id}-"))
        self._process: subprocess.Popen[bytes] | None = None
        # Held while a step process starts, so stop() either prevents it or sees it.
        self._popen_lock = threading.Lock()
        self._conditions: dict[str, bool] = {}
        self.thread = threading.Thread(target=self._main, name=f"fake-execution-{execution.id}", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        """Ask the execution to stop (the running step is terminated)."""
        with self._popen_lock:
            self.execution.stop_requested.set()
            process = self._process
        if process is not None and process.poll() is None:
            process.terminate()

    def join(self, timeout: float) -> None:
        self.stop()
        self.thread.join(timeout)
        if not self.thread.is_alive():
            shutil.rmtree(self._work, ignore_errors=True)

    # ---------------------------------------------------------------- the loop

    def _main(self) -> None:
        execution = self.execution
        try:
            self._loop()
        except BaseException as exc:  # a defect in the fake: fail the execution, never hang it
            with self._fake._lock:
                execution.status = "Failed"
                execution.failure_reason = f"InternalError: the testing kit could not run it: {exc!r}"
                for entry in execution.steps:
                    if entry["StepStatus"] in ("Executing", "Stopping"):
                        entry["StepStatus"] = "Failed"
                        entry["FailureReason"] = "InternalError: the testing kit could not run it"
            if not isinstance(exc, Exception):
                raise

    def _loop(self) -> None:
        from mlshift_sagemaker._pipelines import step_graph

        execution = self.execution
        steps, deps = step_graph(execution.definition)
        branch_of: dict[str, tuple[str, bool]] = {}
        for name, step in steps.items():
            if step.get("Type") == "Condition":
                args = step.get("Arguments", {})
                for nested in args.get("IfSteps", []):
                    branch_of[nested["Name"]] = (name, True)
                for nested in args.get("ElseSteps", []):
                    branch_of[nested["Name"]] = (name, False)
        done: dict[str, str] = {}
        failed: dict[str, Any] | None = None
        while not execution.stop_requested.is_set():
            ready = [n for n in steps if n not in done and deps[n] <= set(done)]
            if not ready:
                break
            name = ready[0]
            gate = branch_of.get(name)
            if (
                failed is not None
                or any(done[d] != "Succeeded" for d in deps[name])
                or (gate is not None and self._conditions.get(gate[0]) != gate[1])
            ):
                done[name] = "NotRun"
                continue
            entry: dict[str, Any] = {"StepName": name, "StepStatus": "Executing", "StartTime": time.time()}
            with self._fake._lock:
                execution.steps.append(entry)
            self._run_step(name, steps[name], entry)
            with self._fake._lock:
                entry["EndTime"] = time.time()
            done[name] = entry["StepStatus"]
            if entry["StepStatus"] == "Failed":
                failed = entry
        with self._fake._lock:
            if execution.stop_requested.is_set():
                execution.status = "Stopped"
                for entry in execution.steps:
                    if entry["StepStatus"] in ("Executing", "Stopping"):
                        entry["StepStatus"] = "Stopped"
            elif failed is not None:
                execution.status = "Failed"
                execution.failure_reason = (
                    f"Step failure: One or multiple steps failed. ({failed['StepName']}: "
                    f"{failed.get('FailureReason', '')})"
                )
            else:
                execution.status = "Succeeded"
            execution.finished = time.time()

    def _settle(self, entry: dict[str, Any], status: str, reason: str | None = None, **extra: Any) -> None:
        with self._fake._lock:
            entry["StepStatus"] = status
            if reason:
                entry["FailureReason"] = reason
            entry.update(extra)

    def _run_step(self, name: str, step: Mapping[str, Any], entry: dict[str, Any]) -> None:
        kind = step.get("Type")
        args = step.get("Arguments", {})
        if name in self.execution.failing:
            self._settle(entry, "Failed", self.execution.failing[name])
            return
        try:
            if kind == "Condition":
                holds = self.execution.outcomes.get(name)
                if holds is None:
                    holds = all(self._holds(c) for c in args.get("Conditions", []))
                self._conditions[name] = holds
                outcome = {"Condition": {"Outcome": "True" if holds else "False"}}
                self._settle(entry, "Succeeded", Metadata=outcome)
            elif kind == "Fail":
                self._settle(entry, "Failed", _text(self._value(args.get("ErrorMessage", ""))))
            elif kind == "Processing":
                self._processing(name, step, entry)
            else:
                self._settle(entry, "Succeeded")
        except _StepError as exc:
            self._settle(entry, "Failed", f"ClientError: {exc}")

    # ---------------------------------------------------------------- values

    def _value(self, expr: Any) -> Any:
        """An argument with every ``Get``, ``Std:Join`` and ``Std:JsonGet`` resolved."""
        if isinstance(expr, list):
            return [self._value(e) for e in expr]
        if not isinstance(expr, dict):
            return expr
        execution = self.execution
        if "Get" in expr:
            path = str(expr["Get"])
            if path.startswith("Parameters."):
                name = path.removeprefix("Parameters.")
                if name not in execution.parameters:
                    raise _StepError(f"parameter {name!r} has no value")
                return execution.parameters[name]
            if path == "Execution.PipelineExecutionId":
                return execution.id
            if path == "Execution.PipelineName":
                return execution.pipeline
            if path == "Execution.PipelineExecutionArn":
                return execution.arn
            match = _OUTPUT.fullmatch(path)
            if match and match[2] in execution.outputs.get(match[1], {}):
                return execution.outputs[match[1]][match[2]]
            raise _StepError(f"cannot resolve {path}")
        if "Std:Join" in expr:
            join = expr["Std:Join"]
            return str(join.get("On", "")).join(_text(self._value(v)) for v in join.get("Values", []))
        if "Std:JsonGet" in expr:
            spec = expr["Std:JsonGet"]
            source = str(spec["PropertyFile"]["Get"]).split(".")  # Steps.X.PropertyFiles.F
            data = self._property_file(source[1], source[3])
            try:
                return _json_path(data, str(spec["Path"]))
            except (KeyError, IndexError, TypeError):
                raise _StepError(
                    f"property file {source[3]!r} of step {source[1]!r} has no {spec['Path']!r}"
                ) from None
        return {k: self._value(v) for k, v in expr.items()}

    def _property_file(self, step: str, file: str) -> Any:
        from mlshift_sagemaker._pipelines import step_graph

        definition = step_graph(self.execution.definition)[0][step]
        declared = next(f for f in definition.get("PropertyFiles", []) if f["PropertyFileName"] == file)
        uri = self.execution.outputs.get(step, {}).get(declared["OutputName"])
        if uri is None:
            raise _StepError(f"step {step!r} has no output {declared['OutputName']!r}")
        data = self._read(uri.rstrip("/") + "/" + declared["FilePath"])
        if data is None:
            raise _StepError(f"property file {file!r} of step {step!r} was not written")
        return json.loads(data)

    def _holds(self, condition: Mapping[str, Any]) -> bool:
        kind = condition.get("Type")
        if kind == "Not":
            return not self._holds(condition["Expression"])
        if kind == "Or":
            return any(self._holds(c) for c in condition.get("Conditions", []))
        if kind not in _COMPARISONS:
            raise _StepError(f"condition type {kind!r} is not supported by the testing kit")
        left, right = self._value(condition["LeftValue"]), self._value(condition["RightValue"])
        return _COMPARISONS[kind](left, right)

    # ---------------------------------------------------------------- S3 and logs (moto's backends)

    def _split(self, uri: str) -> tuple[str, str]:
        bucket, _, key = str(uri).removeprefix("s3://").partition("/")
        return bucket, key

    def _read(self, uri: str) -> bytes | None:
        bucket, key = self._split(uri)
        s3 = self._fake.backend("s3")
        try:
            return bytes(s3.get_object(bucket, key).value)
        except Exception:
            return None

    def _download(self, uri: str, dest: Path) -> None:
        bucket, prefix = self._split(uri)
        s3 = self._fake.backend("s3")
        try:
            keys = list(s3.get_bucket(bucket).keys.keys())
        except Exception:
            raise _StepError(f"input {uri} does not exist") from None
        dest.mkdir(parents=True, exist_ok=True)
        folder = prefix.rstrip("/") + "/"
        for key in keys:
            if (key != prefix and not key.startswith(folder)) or key.endswith("/"):
                continue
            rest = key[len(prefix) :].lstrip("/") or Path(key).name
            target = dest / rest
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(s3.get_object(bucket, key).value)

    def _upload(self, folder: Path, uri: str) -> None:
        bucket, prefix = self._split(uri)
        s3 = self._fake.backend("s3")
        for path in sorted(folder.rglob("*")):
            if path.is_file():
                key = prefix.rstrip("/") + "/" + path.relative_to(folder).as_posix()
                s3.put_object(bucket, key, path.read_bytes())

    def _log(self, job: str, text: str) -> None:
        logs = self._fake.backend("logs", self._region)
        if LOG_GROUP not in logs.groups:
            logs.create_log_group(LOG_GROUP, {})
        stream = f"{job}/algo-1-{int(time.time())}"
        logs.create_log_stream(LOG_GROUP, stream)
        now = int(time.time() * 1000)
        lines = text.splitlines() or [""]
        logs.put_log_events(LOG_GROUP, stream, [{"timestamp": now, "message": line} for line in lines])

    # ---------------------------------------------------------------- processing steps

    def _local(self, root: Path, container_path: str) -> Path:
        if not container_path.startswith(PROCESSING):
            raise _StepError(f"local path {container_path!r} is outside {PROCESSING}")
        return root / Path(container_path).relative_to(PROCESSING)

    def _processing(self, name: str, step: Mapping[str, Any], entry: dict[str, Any]) -> None:
        execution = self.execution
        args = step.get("Arguments", {})
        app = args.get("AppSpecification", {})
        inputs = [
            (i["InputName"], self._value(i["S3Input"]["S3Uri"]), i["S3Input"]["LocalPath"])
            for i in args.get("ProcessingInputs", [])
        ]
        outputs = [
            (o["OutputName"], self._value(o["S3Output"]["S3Uri"]), o["S3Output"]["LocalPath"])
            for o in args.get("ProcessingOutputConfig", {}).get("Outputs", [])
        ]
        resolved_app = self._value(app)
        environment = {k: _text(self._value(v)) for k, v in (args.get("Environment") or {}).items()}
        key = json.dumps(
            [execution.pipeline, name, resolved_app, environment, [(n, u) for n, u, _ in inputs]],
            sort_keys=True,
            default=str,
        )
        cache = step.get("CacheConfig") or {}
        if cache.get("Enabled") and key in self._cache:
            source_arn, source_outputs, source_job = self._cache[key]
            execution.outputs[name] = dict(source_outputs)
            self._settle(
                entry,
                "Succeeded",
                CacheHitResult={"SourcePipelineExecutionArn": source_arn},
                Metadata={"ProcessingJob": {"Arn": source_job}},
            )
            return
        job = f"pipelines-{execution.id}-{name}"[:63].lower()
        job_arn = f"arn:aws:sagemaker:{self._region}:{self._fake.account_id}:processing-job/{job}"
        with self._fake._lock:
            entry["Metadata"] = {"ProcessingJob": {"Arn": job_arn}}
        root = self._work / name / "processing"  # /opt/ml/processing; the job's config beside it
        for input_name, uri, local in inputs:
            self._download(str(uri), self._local(root, local))
            if not any(self._local(root, local).iterdir()):
                raise _StepError(f"input {input_name!r}: nothing at {uri}")
        for _, _, local in outputs:
            self._local(root, local).mkdir(parents=True, exist_ok=True)
        # What SageMaker writes to /opt/ml/config/processingjobconfig.json (beside the root).
        job_config = {
            "ProcessingJobArn": job_arn,
            "ProcessingJobName": job,
            "ProcessingOutputConfig": {
                "Outputs": [
                    {
                        "OutputName": n,
                        "S3Output": {"S3Uri": str(u), "LocalPath": local, "S3UploadMode": "EndOfJob"},
                    }
                    for n, u, local in outputs
                ]
            },
        }
        (root.parent / "config").mkdir(parents=True, exist_ok=True)
        (root.parent / "config" / "processingjobconfig.json").write_text(json.dumps(job_config))
        arguments = [_text(a) for a in resolved_app.get("ContainerArguments", [])]
        command = [*app.get("ContainerEntrypoint", []), *arguments]
        if list(app.get("ContainerEntrypoint", [])) == _MLSHIFT_STEP:
            reason, log = self._mlshift_step(command[len(_MLSHIFT_STEP) :], root, environment, args)
        else:
            reason, log = (
                None,
                (
                    f"the testing kit does not run image {app.get('ImageUri')!r}; "
                    f"step {name!r} succeeded without running: {' '.join(command)}\n"
                ),
            )
        self._log(job, log)
        if execution.stop_requested.is_set():
            self._settle(entry, "Stopped")
            return
        if reason is not None:
            self._settle(entry, "Failed", "AlgorithmError: See job logs for more information")
            return
        resolved_outputs = {}
        for output_name, uri, local in outputs:
            self._upload(self._local(root, local), str(uri))
            resolved_outputs[output_name] = str(uri)
        execution.outputs[name] = resolved_outputs
        if cache.get("Enabled"):
            self._cache[key] = (execution.arn, resolved_outputs, job_arn)
        self._settle(entry, "Succeeded")

    def _mlshift_step(
        self, argv: list[str], root: Path, environment: Mapping[str, str], args: Mapping[str, Any]
    ) -> tuple[str | None, str]:
        """Run ``python -m mlshift_sagemaker.step ARGV``; returns (why it failed or None, its log)."""
        if argv and argv[0] == "python":
            # A @step function: in a child process, as in its container.
            env = {**os.environ, **environment}
            limit = (args.get("StoppingCondition") or {}).get("MaxRuntimeInSeconds")
            log_path = root / "job.log"
            with log_path.open("wb") as log:
                with self._popen_lock:
                    if self.execution.stop_requested.is_set():
                        return "stopped before it started", ""
                    self._process = subprocess.Popen(
                        [sys.executable, "-m", "mlshift_sagemaker.step", "--root", str(root), *argv],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=env,
                    )
                try:
                    code = self._process.wait(timeout=limit)
                except subprocess.TimeoutExpired:
                    self._process.kill()
                    self._process.wait()
                    code = -1
                finally:
                    self._process = None
            text = log_path.read_text(errors="replace")
            if code == -1 and limit is not None:
                text += f"\nstep failed: the job ran longer than MaxRuntimeInSeconds ({limit})\n"
            lines = [line for line in text.splitlines() if line.strip()]
            reason = (lines[-1] if lines else f"exit code {code}") if code != 0 else None
            return reason, text
        # register / deploy: in this process, so their AWS calls reach the fake.
        import io

        from mlshift_sagemaker.step import run

        buffer = io.StringIO()
        reason = run(argv, root, log=buffer)
        text = buffer.getvalue()
        if reason is not None:
            text += f"step failed: {reason}\n"
        return reason, text
