"""Pipeline jobs in the testing kit: components, pipeline jobs, their child jobs and logs, schedules.

The ``azure-ai-ml`` SDK submits a pipeline job as ``PUT .../components/azureml_anonymous/versions/<hash>``
per distinct component, then ``PUT .../jobs/<name>``; it follows it with ``GET .../jobs/<name>``
and run history's ``.../runs/<name>/children``, cancels it with ``POST .../jobs/<name>/cancel``
and reads a child's log through run history's ``.../runs/<child>/details`` (``logFiles``: a blob
URL). :class:`FakeJobs` answers all of those and runs each submitted pipeline job for real, in a
thread, one node at a time in dependency order:

- a node's inputs are bound as Azure binds them (``${{parent.inputs.X}}``,
  ``${{parent.jobs.N.outputs.O}}``, literals, datastore paths); ``uri_folder`` inputs are
  downloaded from the fake's datastore into a folder, outputs get empty folders, and the
  command's ``${{inputs.X}}`` / ``${{outputs.O}}`` become those paths or values;
- ``python -m mlshift_azureml.step python ...`` runs in a child process (as in its container);
  the other mlshift commands (register, deploy, gate, fail) run in this process, so their Azure
  calls reach the fake; any other command (a container step's own image) is not run: the node
  succeeds with empty outputs;
- outputs go to the datastore at Azure's default place, ``azureml/<child job>/<output>/``, and
  the node's log to ``ExperimentRun/dcid.<child job>/user_logs/std_log.txt``;
- a node whose component is deterministic and whose resolved inputs match an earlier
  successful node of the workspace is **reused** (Azure's cache: ``azureml.isreused``), unless
  the job sets ``force_rerun``;
- after a node fails nothing new starts (``continue_on_step_failure: false``); cancelling stops
  the running node.

A schedule (``PUT .../schedules/<name>``) is stored as sent; :meth:`FakeJobs.trigger` starts its
job once, as its cron trigger would.
"""

from __future__ import annotations

import copy
import hashlib
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlshift_azureml.testing._http import Reply

if TYPE_CHECKING:
    from mlshift_azureml.testing._fake import FakeAzureML, _Workspace

__all__ = ["FakeJobs", "StepFault"]

_MLSHIFT_STEP = ["python", "-m", "mlshift_azureml.step"]
_BINDING = re.compile(r"^\$\{\{parent\.(inputs|jobs)\.([A-Za-z0-9_]+)(?:\.outputs\.([A-Za-z0-9_]+))?\}\}$")
_COMMAND_REF = re.compile(r"\$\{\{(inputs|outputs)\.([A-Za-z0-9_]+)\}\}")
_HISTORY = re.compile(
    r"/history/v1\.0/subscriptions/([^/]+)/resourceGroups/([^/]+)/providers/[^/]+/workspaces/([^/]+)/(.*)$",
    re.I,
)
_CONTAINER = "azureml-blobstore"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat()


def _error(status: int, code: str, message: str) -> Reply:
    return Reply(status, {"error": {"code": code, "message": message}})


@dataclass
class StepFault:
    """A node made to fail (:meth:`FakeJobs.fail_step`)."""

    step: str
    logs: str
    times: int | None = 1
    hits: int = 0


@dataclass
class _Child:
    name: str
    node: str
    display: str
    tags: dict[str, str]
    status: str = "Running"
    created: str = field(default_factory=_now)
    modified: str = field(default_factory=_now)
    properties: dict[str, str] = field(default_factory=dict)
    outputs: dict[str, str] = field(default_factory=dict)
    error: str | None = None


@dataclass
class _PipelineJob:
    ws: _Workspace
    name: str
    body: dict[str, Any]
    status: str = "Running"
    children: dict[str, _Child] = field(default_factory=dict)  # node → child
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    process: subprocess.Popen[bytes] | None = None
    work: Path | None = None


class FakeJobs:
    """The job side of :class:`~mlshift_azureml.testing.FakeAzureML` (``fake.jobs``).

    Attributes:
        step_faults: Nodes made to fail, by step (display) name.
    """

    def __init__(self, fake: FakeAzureML) -> None:
        self._fake = fake
        self._components: dict[str, dict[str, Any]] = {}
        self._jobs: dict[str, _PipelineJob] = {}
        self._schedules: dict[str, dict[str, Any]] = {}
        # Reuse (Azure's step cache): key → (child job, pipeline job, output name → path).
        self._reuse: dict[str, tuple[str, str, dict[str, str]]] = {}
        self.step_faults: list[StepFault] = []

    # ------------------------------------------------------------------ for tests

    def fail_step(self, step: str, logs: str = "", times: int | None = 1) -> StepFault:
        """Make the next ``times`` runs of the node called ``step`` fail without running, with
        ``logs`` as the job's log (Azure's "user process exited with status code 1")."""
        text = logs or (
            'Traceback (most recent call last):\n  File "/mnt/azureml/cr/j/exe/wd/step.py", line 1\n'
            "MemoryError: the node ran out of memory\n"
        )
        fault = StepFault(step, text, times)
        with self._fake._lock:
            self.step_faults.append(fault)
        return fault

    def wait(self, name: str, timeout: float = 300.0) -> str:
        """Wait for pipeline job ``name`` to finish; returns its status."""
        job = self._jobs[name]
        if job.thread is not None:
            job.thread.join(timeout)
        return job.status

    def schedules(self) -> dict[str, dict[str, Any]]:
        """The schedules as stored (name → REST body)."""
        with self._fake._lock:
            return copy.deepcopy(self._schedules)

    def trigger(self, schedule: str) -> str:
        """Start the schedule's job once, as its trigger would; returns the new job's name."""
        with self._fake._lock:
            body = self._schedules[schedule]
            ws = self._fake._workspace(*body["_ws"])
            action = copy.deepcopy(body["properties"]["action"]["jobDefinition"])
            name = f"{schedule}-{time.strftime('%Y%m%d%H%M%S')}-{uuid.uuid4().hex[:4]}"
            self._create_job(ws, name, {"properties": action})
        return name

    def close(self) -> None:
        """Stop every running pipeline job (the fake is closing)."""
        for job in list(self._jobs.values()):
            self._cancel(job)
            if job.thread is not None:
                job.thread.join(30)
            if job.work is not None:
                shutil.rmtree(job.work, ignore_errors=True)

    # ------------------------------------------------------------------ ARM routes

    def arm(
        self,
        ws: _Workspace,
        head: str,
        method: str,
        rest: list[str],
        query: Mapping[str, str],
        data: dict[str, Any],
    ) -> Reply:
        """``components/...``, ``jobs/...`` and ``schedules/...`` of a workspace."""
        if head == "components":
            return self._component(ws, method, rest, data)
        if head == "schedules":
            return self._schedule(ws, method, rest, data)
        if not rest:
            value = [self._job_body(j) for j in self._jobs.values() if j.ws is ws]
            return Reply(200, {"value": value})
        name = rest[0]
        job = self._jobs.get(name)
        if len(rest) > 1 and rest[1].lower() == "cancel" and method == "POST":
            if job is None:
                return _error(404, "UserError", f"job {name!r} not found")
            self._cancel(job)
            # As Azure: accepted, with where to poll (the SDK's poller follows Location).
            location = f"https://management.azure.com{ws.arm_id}/jobs/{name}/operationResults/cancel"
            return Reply(202, None, {"Location": location, "Retry-After": "0"})
        if len(rest) > 1 and rest[1].lower() == "operationresults" and method == "GET":
            return Reply(
                200 if job is not None and job.status != "Running" else 202, None, {"Retry-After": "0"}
            )
        if method == "GET":
            child = self._child_by_name(name)
            if child is not None:
                return _error(
                    400, "UserError", f"job {name!r} is a pipeline child job; read it through run history"
                )
            if job is None or job.ws is not ws:
                return _error(404, "UserError", f"job {name!r} not found")
            return Reply(200, self._job_body(job))
        if method == "PUT":
            if job is not None:
                return _error(409, "UserError", f"job {name!r} exists; job names are unique in a workspace")
            props = data.get("properties") or {}
            if props.get("jobType") != "Pipeline":
                return _error(400, "UserError", "the testing kit runs pipeline jobs only")
            problem = self._check_job(props)
            if problem:
                return _error(400, "UserError", problem)
            created = self._create_job(ws, name, data)
            return Reply(201, self._job_body(created))
        return _error(405, "MethodNotAllowed", method)

    def _component(self, ws: _Workspace, method: str, rest: list[str], data: dict[str, Any]) -> Reply:
        if len(rest) < 3:
            return Reply(200, {"value": []})
        ident = f"{ws.arm_id}/components/{rest[0]}/versions/{rest[2]}"
        if method == "PUT":
            props = dict(data.get("properties") or {})
            spec = props.get("componentSpec") or {}
            if not spec.get("command"):
                return _error(400, "UserError", "a command component needs a command")
            self._components[ident.lower()] = props
            return Reply(201, {"id": ident, "name": rest[2], "properties": props, "systemData": _system()})
        found = self._components.get(ident.lower())
        if found is None:
            return _error(404, "UserError", f"component {rest[0]}:{rest[2]} not found")
        return Reply(200, {"id": ident, "name": rest[2], "properties": found, "systemData": _system()})

    def _schedule(self, ws: _Workspace, method: str, rest: list[str], data: dict[str, Any]) -> Reply:
        if not rest:
            value = [
                self._schedule_body(b)
                for b in self._schedules.values()
                if b["_ws"] == (ws.sub, ws.rg, ws.name)
            ]
            return Reply(200, {"value": value})
        name = rest[0]
        found = self._schedules.get(name)
        if method == "GET":
            if found is None:
                return _error(404, "UserError", f"schedule {name!r} not found")
            return Reply(200, self._schedule_body(found))
        if method == "DELETE":
            if found is None:
                return Reply(204)
            del self._schedules[name]
            return Reply(200)
        if method == "PUT":
            props = dict(data.get("properties") or {})
            trigger = props.get("trigger") or {}
            if trigger.get("triggerType") == "Cron" and len(str(trigger.get("expression", "")).split()) != 5:
                return _error(400, "UserError", f"cron expression {trigger.get('expression')!r} is invalid")
            action = props.get("action") or {}
            problem = self._check_job(action.get("jobDefinition") or {})
            if problem:
                return _error(400, "UserError", problem)
            props["provisioningState"] = "Succeeded"
            props.setdefault("isEnabled", True)
            body = {
                "_ws": (ws.sub, ws.rg, ws.name),
                "id": f"{ws.arm_id}/schedules/{name}",
                "name": name,
                "properties": props,
                "systemData": _system(),
            }
            self._schedules[name] = body
            return Reply(200 if found else 201, self._schedule_body(body))
        return _error(405, "MethodNotAllowed", method)

    @staticmethod
    def _schedule_body(body: Mapping[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in body.items() if k != "_ws"}

    def _check_job(self, props: Mapping[str, Any]) -> str | None:
        """What Azure refuses in a pipeline job definition (unknown components, bad bindings)."""
        nodes = props.get("jobs") or {}
        if not nodes:
            return "a pipeline job needs at least one node"
        for node_name, node in nodes.items():
            component = str(node.get("componentId") or "")
            if component.lower() not in self._components:
                return f"node {node_name!r}: component {component!r} not found"
            spec = self._components[component.lower()].get("componentSpec") or {}
            for key, binding in (node.get("inputs") or {}).items():
                if key not in (spec.get("inputs") or {}):
                    return f"node {node_name!r}: the component has no input {key!r}"
                value = binding.get("value") or binding.get("uri") or ""
                match = _BINDING.match(str(value))
                if match and match[1] == "jobs" and match[2] not in nodes:
                    return f"node {node_name!r}: input {key!r} binds to unknown node {match[2]!r}"
                if match and match[1] == "inputs" and match[2] not in (props.get("inputs") or {}):
                    return f"node {node_name!r}: input {key!r} binds to unknown pipeline input {match[2]!r}"
        return None

    # ------------------------------------------------------------------ run history

    def history(self, method: str, host: str, path: str, query: Mapping[str, str], body: bytes) -> Reply:
        """Workspace discovery and run history: a run's children and details."""
        if path.rstrip("/") == "/discovery":
            base = f"https://{host}"
            return Reply(
                200,
                {
                    "api": base,
                    "catalog": base,
                    "experimentation": base,
                    "history": base,
                    "modelmanagement": base,
                    "pipelines": base,
                    "studiometadata": base,
                },
            )
        match = _HISTORY.search(path)
        if match is None:
            return _error(404, "NotFound", f"the fake has no route for {method} {path}")
        parts = match[4].split("/")
        if len(parts) >= 3 and parts[0] == "runs" and parts[2] == "children":
            job = self._jobs.get(parts[1])
            if job is None:
                return _error(404, "UserError", f"run {parts[1]!r} not found")
            return Reply(200, {"value": [self._run_body(job, c) for c in job.children.values()]})
        if len(parts) >= 3 and parts[0] == "runs" and parts[2] == "details":
            child = self._child_by_name(parts[1])
            if child is None:
                return _error(404, "UserError", f"run {parts[1]!r} not found")
            job = self._parent_of(child)
            assert job is not None
            url = (
                f"https://{job.ws.account}.blob.core.windows.net/{_CONTAINER}/"
                f"{_log_key(self._source(child))}?sv=2021-08-06&sr=b&sig=fake"
            )
            return Reply(
                200,
                {
                    "runId": child.name,
                    "status": child.status,
                    "target": "serverless",
                    "logFiles": {"user_logs/std_log.txt": url},
                    "properties": child.properties,
                },
            )
        return _error(404, "NotFound", f"the fake has no route for {method} {path}")

    @staticmethod
    def _source(child: _Child) -> str:
        return child.properties.get("azureml.reusedrunid") or child.name

    def _child_by_name(self, name: str) -> _Child | None:
        for job in self._jobs.values():
            for child in job.children.values():
                if child.name == name:
                    return child
        return None

    def _parent_of(self, child: _Child) -> _PipelineJob | None:
        return next((j for j in self._jobs.values() if child in j.children.values()), None)

    def _run_body(self, job: _PipelineJob, child: _Child) -> dict[str, Any]:
        body: dict[str, Any] = {
            "runId": child.name,
            "rootRunId": job.name,
            "parentRunId": job.name,
            "experimentId": job.body["properties"].get("experimentName", "Default"),
            "status": child.status,
            "displayName": child.display,
            "runType": "azureml.StepRun",
            "createdUtc": child.created,
            "lastModifiedUtc": child.modified,
            "startTimeUtc": child.created,
            "tags": dict(child.tags),
            "properties": {"azureml.nodeid": child.node, **child.properties},
        }
        if child.status in ("Completed", "Failed", "Canceled"):
            body["endTimeUtc"] = child.modified
        if child.error:
            body["error"] = {"error": {"code": "UserError", "message": child.error}}
        return body

    def _job_body(self, job: _PipelineJob) -> dict[str, Any]:
        body = copy.deepcopy(job.body)
        body["properties"]["status"] = job.status
        return body

    # ------------------------------------------------------------------ running a pipeline job

    def _create_job(self, ws: _Workspace, name: str, data: Mapping[str, Any]) -> _PipelineJob:
        props = copy.deepcopy(dict(data.get("properties") or {}))
        props.setdefault("experimentName", "Default")
        props["services"] = {"Studio": {"endpoint": f"https://ml.azure.com/runs/{name}"}}
        body = {
            "id": f"{ws.arm_id}/jobs/{name}",
            "name": name,
            "type": "Microsoft.MachineLearningServices/workspaces/jobs",
            "systemData": _system(),
            "properties": props,
        }
        job = _PipelineJob(ws, name, body)
        job.work = Path(tempfile.mkdtemp(prefix=f"mlshift-fake-job-{name[:40]}-"))
        job.thread = threading.Thread(target=self._main, args=(job,), name=f"fake-job-{name}", daemon=True)
        self._jobs[name] = job
        job.thread.start()
        return job

    def _cancel(self, job: _PipelineJob) -> None:
        job.stop.set()
        process = job.process
        if process is not None and process.poll() is None:
            process.terminate()

    def _main(self, job: _PipelineJob) -> None:
        try:
            self._loop(job)
        except BaseException as exc:  # a defect in the fake: fail the job, never hang it
            with self._fake._lock:
                job.status = "Failed"
                for child in job.children.values():
                    if child.status == "Running":
                        child.status, child.error = "Failed", f"the testing kit could not run it: {exc!r}"
            if not isinstance(exc, Exception):
                raise

    @staticmethod
    def _deps(nodes: Mapping[str, Any]) -> dict[str, set[str]]:
        deps: dict[str, set[str]] = {n: set() for n in nodes}
        for name, node in nodes.items():
            for binding in (node.get("inputs") or {}).values():
                match = _BINDING.match(str(binding.get("value") or binding.get("uri") or ""))
                if match and match[1] == "jobs":
                    deps[name].add(match[2])
        return deps

    def _loop(self, job: _PipelineJob) -> None:
        props = job.body["properties"]
        nodes: dict[str, Any] = props.get("jobs") or {}
        deps = self._deps(nodes)
        done: dict[str, str] = {}
        failed = False
        while not job.stop.is_set() and not failed:
            ready = [n for n in nodes if n not in done and deps[n] <= set(done)]
            if not ready:
                break
            name = ready[0]
            done[name] = self._run_node(job, name, nodes[name])
            failed = done[name] == "Failed"
        with self._fake._lock:
            if job.stop.is_set():
                job.status = "Canceled"
                for child in job.children.values():
                    if child.status == "Running":
                        child.status, child.modified = "Canceled", _now()
            else:
                job.status = "Failed" if failed else "Completed"
            job.body["systemData"]["lastModifiedAt"] = _now()

    def _value(self, job: _PipelineJob, binding: Mapping[str, Any]) -> tuple[str, str]:
        """An input as ``("value", text)`` or ``("uri", datastore path)``."""
        props = job.body["properties"]
        raw = str(binding.get("value") if binding.get("value") is not None else binding.get("uri") or "")
        match = _BINDING.match(raw)
        if match is None:
            if _get(binding, "job_input_type") in ("uri_folder", "uri_file"):
                return "uri", raw
            return "value", raw
        if match[1] == "inputs":
            pipeline_input = (props.get("inputs") or {}).get(match[2]) or {}
            return "value", str(pipeline_input.get("value", ""))
        source = job.children.get(match[2])
        if source is None or match[3] not in source.outputs:
            raise RuntimeError(f"node output {raw} is not available")
        return "uri", source.outputs[match[3]]

    def _run_node(self, job: _PipelineJob, node_name: str, node: Mapping[str, Any]) -> str:
        component = self._components[str(node["componentId"]).lower()]
        spec = component.get("componentSpec") or {}
        resolved = {k: self._value(job, b) for k, b in (node.get("inputs") or {}).items()}
        display = str(_get(node, "display_name") or node_name)
        child = _Child(
            name=str(uuid.uuid4()),
            node=node_name,
            display=display,
            tags={str(k): str(v) for k, v in (node.get("tags") or {}).items()},
        )
        settings = job.body["properties"].get("settings") or {}
        key = hashlib.sha256(
            json.dumps([str(node["componentId"]).lower(), sorted(resolved.items())], sort_keys=True).encode()
        ).hexdigest()
        outputs = list((spec.get("outputs") or {}).keys())
        with self._fake._lock:
            job.children[node_name] = child
            reusable = spec.get("isDeterministic", True) and not settings.get("force_rerun")
            earlier = self._reuse.get(key) if reusable else None
            if earlier is not None:
                source, source_job, source_outputs = earlier
                child.properties.update(
                    {
                        "azureml.isreused": "true",
                        "azureml.reusedrunid": source,
                        "azureml.reusedpipelinerunid": source_job,
                    }
                )
                child.outputs = dict(source_outputs)
                child.status, child.modified = "Completed", _now()
                return child.status
            child.outputs = {o: f"azureml/{child.name}/{o}/" for o in outputs}
            fault = next(
                (f for f in self.step_faults if f.step == display and (f.times is None or f.hits < f.times)),
                None,
            )
            if fault is not None:
                fault.hits += 1
        if fault is not None:
            status, log = "Failed", fault.logs
        else:
            status, log = self._execute(job, child, node, spec, resolved)
        with self._fake._lock:
            self._put_blob(job.ws, _log_key(child.name), log.encode())
            if job.stop.is_set():
                status = "Canceled"
            child.status, child.modified = status, _now()
            if status == "Failed":
                child.error = (
                    "Execution failed. User process 'python' exited with status code 1. "
                    "Please check log file 'user_logs/std_log.txt' for more information."
                )
            if status == "Completed" and reusable:
                self._reuse[key] = (child.name, job.name, dict(child.outputs))
        return status

    def _execute(
        self,
        job: _PipelineJob,
        child: _Child,
        node: Mapping[str, Any],
        spec: Mapping[str, Any],
        resolved: Mapping[str, tuple[str, str]],
    ) -> tuple[str, str]:
        assert job.work is not None
        root = job.work / child.node
        paths: dict[tuple[str, str], str] = {}
        for name, (kind, value) in resolved.items():
            if kind == "uri":
                folder = root / "inputs" / name
                folder.mkdir(parents=True, exist_ok=True)
                self._download(job.ws, value, folder)
                paths[("inputs", name)] = str(folder)
            else:
                paths[("inputs", name)] = value
        for name in child.outputs:
            folder = root / "outputs" / name
            folder.mkdir(parents=True, exist_ok=True)
            paths[("outputs", name)] = str(folder)

        def substitute(match: re.Match[str]) -> str:
            return paths.get((match[1], match[2]), "")

        command = _COMMAND_REF.sub(substitute, str(spec.get("command") or ""))
        argv = shlex.split(command)
        timeout = (node.get("limits") or {}).get("timeout")
        if isinstance(timeout, str) and timeout.startswith("PT"):  # ISO 8601 durations on the wire
            timeout = _seconds(timeout)
        environ = {
            **{str(k): str(v) for k, v in (_get(node, "environment_variables") or {}).items()},
            "AZUREML_ROOT_RUN_ID": job.name,
            "AZUREML_RUN_ID": child.name,
        }
        if argv[: len(_MLSHIFT_STEP)] != _MLSHIFT_STEP:
            log = (
                f"the testing kit does not run {spec.get('environment')!r}; "
                f"node {child.node!r} succeeded without running: {command}\n"
            )
            status = "Completed"
        elif argv[len(_MLSHIFT_STEP)] == "python":
            status, log = self._subprocess(job, root, argv[len(_MLSHIFT_STEP) :], environ, timeout)
        else:
            from mlshift_azureml.step import run

            buffer = io.StringIO()
            reason = run(argv[len(_MLSHIFT_STEP) :], log=buffer, environ=environ)
            log = buffer.getvalue()
            if reason is not None:
                log += f"step failed: {reason}\n"
            status = "Completed" if reason is None else "Failed"
        # Outputs are mounted read-write on Azure: what a node wrote stays, even if it failed.
        for name in child.outputs:
            self._upload(job.ws, Path(paths[("outputs", name)]), child.outputs[name])
        return status, log

    def _subprocess(
        self, job: _PipelineJob, root: Path, argv: list[str], environ: Mapping[str, str], timeout: Any
    ) -> tuple[str, str]:
        log_path = root / "std_log.txt"
        with log_path.open("wb") as log:
            with self._fake._lock:
                if job.stop.is_set():
                    return "Canceled", ""
                job.process = subprocess.Popen(
                    [sys.executable, "-m", "mlshift_azureml.step", *argv],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **environ},
                    cwd=root,
                )
            process = job.process
            try:
                code = process.wait(timeout=float(timeout) if timeout else None)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
                code = -1
            finally:
                job.process = None
        text = log_path.read_text(errors="replace")
        if code == -1:
            text += f"\nstep failed: the job ran longer than its limits.timeout ({timeout} s)\n"
        return ("Completed" if code == 0 else "Failed"), text

    # ------------------------------------------------------------------ the datastore

    def _blobs(self, ws: _Workspace) -> dict[str, tuple[bytes, str]]:
        return self._fake._blobs.setdefault((ws.account, _CONTAINER), {})

    def _put_blob(self, ws: _Workspace, key: str, data: bytes) -> None:
        self._blobs(ws)[key] = (data, f'"0x{next(self._fake._etags):016X}"')

    def _download(self, ws: _Workspace, uri: str, dest: Path) -> None:
        prefix = uri.split("/paths/", 1)[1] if "/paths/" in uri else uri
        with self._fake._lock:
            blobs = dict(self._blobs(ws))
        for key, (data, _) in blobs.items():
            if key == prefix or key.startswith(prefix.rstrip("/") + "/"):
                rel = key[len(prefix) :].lstrip("/") or Path(key).name
                target = dest / rel
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(data)

    def _upload(self, ws: _Workspace, folder: Path, prefix: str) -> None:
        with self._fake._lock:
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    self._put_blob(
                        ws, prefix.rstrip("/") + "/" + path.relative_to(folder).as_posix(), path.read_bytes()
                    )


def _get(data: Mapping[str, Any], snake: str) -> Any:
    """A key of a REST body, which the SDK writes in snake_case inside pipeline nodes and in
    camelCase elsewhere."""
    if snake in data:
        return data[snake]
    head, *rest = snake.split("_")
    return data.get(head + "".join(p.title() for p in rest))


def _seconds(duration: str) -> float:
    match = re.fullmatch(r"PT(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?", duration)
    if match is None:
        return 0.0
    hours, minutes, seconds = (float(g) if g else 0.0 for g in match.groups())
    return hours * 3600 + minutes * 60 + seconds


def _log_key(child: str) -> str:
    return f"ExperimentRun/dcid.{child}/user_logs/std_log.txt"


def _system() -> dict[str, str]:
    at = _now()
    return {
        "createdAt": at,
        "createdBy": "fake@mlshift.test",
        "createdByType": "User",
        "lastModifiedAt": at,
        "lastModifiedBy": "fake@mlshift.test",
        "lastModifiedByType": "User",
    }
