"""FakeKubeflow: the Kubeflow Pipelines v2beta1 REST API mlshift uses, on 127.0.0.1, running the steps.

::

    from mlshift_vertex.kfp.testing import FakeKubeflow

    with FakeKubeflow() as kfp:
        client = mlshift.connect(kfp.target)           # kfp://127.0.0.1:PORT
        run = client.pipelines.run(my_pipeline).wait()
        kfp.fail_task("train", "out of memory")         # the next run's train task fails

It keeps pipelines, versions and runs, and answers with the API server's JSON (snake_case
fields, ``RuntimeState`` names, ``run_details.task_details``). A created run is executed on
this machine, in a thread, the way KFP's driver and launcher would: the DAG in dependency order,
a condition's sub-DAG only when its ``triggerPolicy.condition`` holds, parameters and artifacts
passed between tasks (artifacts as folders under a temporary pipeline root), retries from
``retryPolicy``, and the cache (a task whose executor, inputs and caching option match an
earlier successful one is ``SKIPPED`` with that one's outputs). Each step in the mlshift image
runs as ``python -m mlshift.pipelines.kfp_step`` with its executor input, in a subprocess;
a container step with another image cannot run here and fails, saying so. How a task is run
(inputs, conditions, cache keys, the executor input, the step process) is the one executor
both this fake and ``FakeVertex`` use (``mlshift_vertex.testing._executor``); what differs is
only what each API records.

Faults: :meth:`FakeKubeflow.fail` answers matching requests with an HTTP error;
:meth:`FakeKubeflow.fail_task` makes a task's next execution fail with a message. With
``token=...`` every request must carry ``Authorization: Bearer <token>`` (else 401).
"""

from __future__ import annotations

import contextlib
import email.parser
import email.policy
import hashlib
import itertools
import json
import os
import re
import shutil
import tempfile
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from graphlib import TopologicalSorter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from mlshift_vertex.testing._executor import (
    StepProcess,
    cache_key,
    dag_outputs,
    evaluate_condition,
    executor_input,
    read_output_parameters,
    resolve_inputs,
    runs_here,
    step_arguments,
)

__all__ = ["FakeKubeflow", "KubeflowCall", "evaluate_condition"]

_API = "/apis/v2beta1"
_FINISHED = ("SUCCEEDED", "FAILED", "CANCELED")
_PARAM_TYPES = {
    "STRING": (str,),
    "NUMBER_INTEGER": (int,),
    "NUMBER_DOUBLE": (int, float),
    "BOOLEAN": (bool,),
    "STRUCT": (dict,),
    "LIST": (list,),
}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds").replace("+00:00", "Z")


class _ApiError(Exception):
    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class _Terminated(Exception):
    """The run was terminated while a task ran."""


@dataclass(frozen=True)
class KubeflowCall:
    """One request the fake answered: ``method``, ``path`` (without the query) and ``status``."""

    method: str
    path: str
    status: int


@dataclass
class _Fault:
    pattern: str
    code: int
    message: str
    times: int


@dataclass
class _Run:
    data: dict[str, Any]
    spec: dict[str, Any]
    tasks: list[dict[str, Any]] = field(default_factory=list)
    terminate: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    steps: StepProcess = field(init=False)

    def __post_init__(self) -> None:
        self.steps = StepProcess(self.terminate)


# ---------------------------------------------------------------------------------------------


class FakeKubeflow:
    """A fake Kubeflow Pipelines API server for tests and offline scripts.

    Args:
        token: A bearer token every request must carry (``None``: no authentication).

    Attributes:
        calls: Every request answered, in order.
    """

    def __init__(self, *, token: str | None = None) -> None:
        self.calls: list[KubeflowCall] = []
        self._token = token
        self._pipelines: dict[str, dict[str, Any]] = {}
        self._versions: dict[str, dict[str, Any]] = {}
        self._runs: dict[str, _Run] = {}
        self._recurring: dict[str, dict[str, Any]] = {}
        self._cache: dict[str, dict[str, Any]] = {}
        self._faults: list[_Fault] = []
        self._task_faults: dict[str, str] = {}
        self._lock = threading.RLock()
        self._ids = itertools.count(1)
        self._server: ThreadingHTTPServer | None = None
        self._root: Path | None = None
        self._stack = contextlib.ExitStack()

    # ------------------------------------------------------------------ lifecycle

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``."""
        if self._server is None:
            raise RuntimeError("the fake is not started (use `with FakeKubeflow() as kfp:`)")
        return f"http://127.0.0.1:{self._server.server_address[1]}"

    @property
    def target(self) -> str:
        """``kfp://127.0.0.1:PORT``: the target URI that talks to this fake."""
        return "kfp://" + self.url.removeprefix("http://")

    def start(self) -> FakeKubeflow:
        """Start the server on a port the OS picks."""
        fake = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def _handle(self) -> None:
                fake._serve(self)

            do_GET = do_POST = do_DELETE = _handle

            def log_message(self, format: str, *args: Any) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        server.daemon_threads = True
        self._server = server
        threading.Thread(target=server.serve_forever, name="mlshift-fake-kfp", daemon=True).start()
        self._root = Path(tempfile.mkdtemp(prefix="mlshift-fake-kfp-"))
        self._stack.callback(shutil.rmtree, self._root, True)
        self._stack.callback(self._stop_runs)
        self._stack.callback(server.server_close)
        self._stack.callback(server.shutdown)
        return self

    def _stop_runs(self) -> None:
        with self._lock:
            runs = list(self._runs.values())
        for run in runs:
            run.steps.stop(kill=True)
        for run in runs:
            if run.thread is not None:
                run.thread.join(timeout=30)

    def stop(self) -> None:
        """Terminate running runs, stop the server and remove the pipeline root."""
        self._stack.close()
        self._server = None

    def __enter__(self) -> FakeKubeflow:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ------------------------------------------------------------------ test controls

    def fail(self, pattern: str, code: int, message: str = "injected fault", *, times: int = 1) -> None:
        """Answer the next ``times`` requests matching ``pattern`` (searched in ``METHOD PATH``)
        with HTTP ``code`` (``fail("POST .*/runs$", 500)``)."""
        with self._lock:
            self._faults.append(_Fault(pattern, code, message, times))

    def fail_task(self, task: str, message: str = "injected failure") -> None:
        """Make the next execution of the task called ``task`` fail with ``message`` (its pod's
        last log line), without running it."""
        with self._lock:
            self._task_faults[task] = message

    def run(self, run_id: str) -> dict[str, Any]:
        """A run as the API returns it (a copy)."""
        with self._lock:
            copy: dict[str, Any] = json.loads(json.dumps(self._run_json(self._runs[run_id])))
            return copy

    def versions(self) -> list[dict[str, Any]]:
        """Every pipeline version (without its spec), oldest first."""
        with self._lock:
            return [{k: v for k, v in p.items() if k != "pipeline_spec"} for p in self._versions.values()]

    def log(self, run_id: str, task: str) -> str:
        """What the task's process wrote (stdout and stderr), or ``""``."""
        assert self._root is not None
        path = self._root / run_id / task / "log.txt"
        return path.read_text(errors="replace") if path.exists() else ""

    def wait_for(self, run_id: str, timeout: float = 120.0) -> str:
        """Block until the run has finished; returns its state."""
        with self._lock:
            thread = self._runs[run_id].thread
        if thread is not None:
            thread.join(timeout)
        return str(self.run(run_id)["state"])

    # ------------------------------------------------------------------ HTTP

    def _serve(self, handler: BaseHTTPRequestHandler) -> None:
        parts = urlsplit(handler.path)
        path = unquote(parts.path)
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        length = int(handler.headers.get("content-length") or 0)
        raw = handler.rfile.read(length) if length else b""
        status, body = 200, b""
        try:
            with self._lock:
                for fault in self._faults:
                    if fault.times > 0 and re.search(fault.pattern, f"{handler.command} {path}"):
                        fault.times -= 1
                        raise _ApiError(fault.code, fault.message)
            if self._token is not None and handler.headers.get("authorization") != f"Bearer {self._token}":
                raise _ApiError(401, "Unauthenticated: a valid bearer token is required")
            if not path.startswith(_API + "/"):
                raise _ApiError(404, f"Not Found: {path}")
            result = self._route(
                handler.command, path[len(_API) :], query, raw, handler.headers.get("content-type", "")
            )
            body = json.dumps(result).encode()
        except _ApiError as exc:
            status = exc.code
            body = json.dumps({"error": exc.message, "code": exc.code, "message": exc.message}).encode()
        except Exception as exc:  # the fake's own bug: answer it, so the caller fails at once
            status = 500
            body = json.dumps(
                {"error": repr(exc), "code": 13, "message": f"the fake failed: {exc!r}"}
            ).encode()
        with self._lock:
            self.calls.append(KubeflowCall(handler.command, path, status))
        handler.send_response(status)
        handler.send_header("content-type", "application/json")
        handler.send_header("content-length", str(len(body)))
        handler.end_headers()
        handler.wfile.write(body)

    def _route(self, method: str, path: str, query: Mapping[str, str], raw: bytes, ctype: str) -> Any:
        with self._lock:
            if method == "POST" and path == "/pipelines/upload":
                return self._upload(query, self._uploaded(raw, ctype), version_of=None)
            if method == "POST" and path == "/pipelines/upload_version":
                pipeline_id = query.get("pipelineid", "")
                if not pipeline_id:
                    raise _ApiError(
                        400, "Failed to create a pipeline version due to error reading pipeline id"
                    )
                return self._upload(query, self._uploaded(raw, ctype), version_of=pipeline_id)
            if method == "GET" and path == "/pipelines":
                items = self._filtered(list(self._pipelines.values()), query)
                return {"pipelines": items, "total_size": len(items)} if items else {}
            match = re.fullmatch(r"/pipelines/([^/]+)(/versions(?:/([^/]+))?)?", path)
            if method == "GET" and match:
                pipeline = self._pipelines.get(match[1])
                if pipeline is None:
                    raise _ApiError(404, f"Pipeline {match[1]} not found")
                if not match[2]:
                    return pipeline
                if match[3]:
                    version = self._versions.get(match[3])
                    if version is None or version["pipeline_id"] != match[1]:
                        raise _ApiError(404, f"Pipeline version {match[3]} not found")
                    return version
                mine = [
                    {k: v for k, v in p.items() if k != "pipeline_spec"}
                    for p in self._versions.values()
                    if p["pipeline_id"] == match[1]
                ]
                items = self._filtered(mine, query)
                return {"pipeline_versions": items, "total_size": len(items)} if items else {}
            if path == "/recurringruns" and method == "POST":
                return self._create_recurring(json.loads(raw or b"{}"))
            if path == "/recurringruns" and method == "GET":
                items = self._filtered(list(self._recurring.values()), query)
                return {"recurringRuns": items, "total_size": len(items)} if items else {}
            match = re.fullmatch(r"/recurringruns/([^/:]+)", path)
            if match and method in ("GET", "DELETE"):
                found = self._recurring.get(match[1])
                if found is None:
                    raise _ApiError(404, f"Recurring run {match[1]} not found")
                if method == "DELETE":
                    del self._recurring[match[1]]
                    return {}
                return found
            if method == "POST" and path == "/runs":
                return self._create_run(json.loads(raw or b"{}"))
            if method == "GET" and path == "/runs":
                return self._list_runs(query)
            match = re.fullmatch(r"/runs/([^/:]+)(:terminate)?", path)
            if match:
                run = self._runs.get(match[1])
                if run is None:
                    raise _ApiError(404, f"Run {match[1]} not found")
                if method == "GET" and not match[2]:
                    return self._run_json(run)
                if method == "POST" and match[2]:
                    if run.data["state"] not in _FINISHED:
                        run.data["state"] = "CANCELING"
                        run.steps.stop()
                    return {}
        raise _ApiError(404, f"Not Found: {method} {_API}{path}")

    @staticmethod
    def _filtered(items: list[dict[str, Any]], query: Mapping[str, str]) -> list[dict[str, Any]]:
        text = query.get("filter")
        if not text:
            return items
        try:
            predicates = json.loads(text).get("predicates") or []
        except (ValueError, AttributeError):
            raise _ApiError(400, f"Invalid filter: {text}") from None
        for p in predicates:
            if p.get("operation") not in ("EQUALS", 1):
                raise _ApiError(400, f"the fake supports EQUALS filters only, not {p.get('operation')!r}")
            wanted = p.get("string_value", p.get("stringValue"))
            items = [i for i in items if i.get(p.get("key")) == wanted]
        return items

    @staticmethod
    def _uploaded(raw: bytes, ctype: str) -> dict[str, Any]:
        if not ctype.startswith("multipart/form-data"):
            raise _ApiError(400, "Failed to create a pipeline: the request is not multipart/form-data")
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            b"content-type: " + ctype.encode() + b"\r\n\r\n" + raw
        )
        for part in message.iter_parts():
            if part.get_param("name", header="content-disposition") == "uploadfile":
                import yaml

                text: Any = part.get_payload(decode=True)
                try:
                    docs = [d for d in yaml.safe_load_all(text) if d is not None]
                except yaml.YAMLError as exc:
                    raise _ApiError(400, f"Failed to parse the pipeline spec: {exc}") from None
                spec = docs[0] if docs else None
                if not isinstance(spec, dict) or not {"pipelineInfo", "root", "schemaVersion"} <= set(spec):
                    raise _ApiError(
                        400, "Invalid pipeline spec: pipelineInfo, root and schemaVersion are required"
                    )
                return spec
        raise _ApiError(400, "Failed to create a pipeline due to error parsing pipeline spec filename")

    def _upload(self, query: Mapping[str, str], spec: dict[str, Any], version_of: str | None) -> Any:
        now = _now()
        name = query.get("name") or query.get("display_name") or spec["pipelineInfo"]["name"]
        display = query.get("display_name") or name
        if version_of is None:
            if any(p["display_name"] == display for p in self._pipelines.values()):
                raise _ApiError(
                    409,
                    "Failed to create a pipeline and a pipeline version. "
                    f"The pipeline already exists: {display}",
                )
            pipeline_id = f"p-{next(self._ids)}"
            self._pipelines[pipeline_id] = {
                "pipeline_id": pipeline_id,
                "name": name,
                "display_name": display,
                "description": query.get("description", ""),
                "created_at": now,
                **({"namespace": query["namespace"]} if query.get("namespace") else {}),
            }
        else:
            pipeline_id = version_of
            if pipeline_id not in self._pipelines:
                raise _ApiError(404, f"Pipeline {pipeline_id} not found")
            if any(
                v["pipeline_id"] == pipeline_id and v["display_name"] == display
                for v in self._versions.values()
            ):
                raise _ApiError(
                    409, f"Failed to create a pipeline version. The pipeline already exists: {display}"
                )
        version_id = f"v-{next(self._ids)}"
        self._versions[version_id] = {
            "pipeline_id": pipeline_id,
            "pipeline_version_id": version_id,
            "name": name,
            "display_name": display,
            "created_at": now,
            "pipeline_spec": spec,
        }
        if version_of is None:
            return self._pipelines[pipeline_id]
        return {k: v for k, v in self._versions[version_id].items() if k != "pipeline_spec"}

    # ------------------------------------------------------------------ runs

    def _create_run(self, body: dict[str, Any]) -> Any:
        if not body.get("display_name"):
            raise _ApiError(400, "Invalid input error: run display_name is required")
        ref = body.get("pipeline_version_reference") or {}
        if body.get("pipeline_spec"):
            spec = body["pipeline_spec"]
        elif ref.get("pipeline_version_id"):
            version = self._versions.get(ref["pipeline_version_id"])
            if version is None or (ref.get("pipeline_id") and version["pipeline_id"] != ref["pipeline_id"]):
                raise _ApiError(404, f"Pipeline version {ref['pipeline_version_id']} not found")
            spec = version["pipeline_spec"]
        else:
            raise _ApiError(
                400, "Invalid input error: a run needs a pipeline_spec or a pipeline_version_reference"
            )
        params = dict((body.get("runtime_config") or {}).get("parameters") or {})
        declared = ((spec.get("root") or {}).get("inputDefinitions") or {}).get("parameters") or {}
        for key, value in params.items():
            if key not in declared:
                raise _ApiError(
                    400, f"Invalid input error: parameter {key!r} is not an input of the pipeline"
                )
            allowed = _PARAM_TYPES.get(declared[key].get("parameterType", ""), (object,))
            if not isinstance(value, allowed) or (isinstance(value, bool) and bool not in allowed):
                raise _ApiError(
                    400,
                    f"Invalid input error: parameter {key!r}: {value!r} is not a "
                    f"{declared[key].get('parameterType')}",
                )
        for key, definition in declared.items():
            if key not in params:
                if "defaultValue" in definition:
                    params[key] = definition["defaultValue"]
                elif not definition.get("isOptional"):
                    raise _ApiError(400, f"Invalid input error: parameter {key!r} is required")
        run_id = f"{next(self._ids):04d}-" + hashlib.sha256(os.urandom(8)).hexdigest()[:8]
        data = {
            **body,
            "run_id": run_id,
            "experiment_id": body.get("experiment_id") or "default",
            "storage_state": "AVAILABLE",
            "state": "PENDING",
            "created_at": _now(),
            "scheduled_at": _now(),
            "finished_at": "1970-01-01T00:00:00Z",
            "runtime_config": {**(body.get("runtime_config") or {}), "parameters": params},
        }
        run = _Run(data=data, spec=json.loads(json.dumps(spec)))
        self._runs[run_id] = run
        run.thread = threading.Thread(
            target=self._execute, args=(run,), name=f"fake-kfp-{run_id}", daemon=True
        )
        run.thread.start()
        return self._run_json(run)

    def _create_recurring(self, body: dict[str, Any]) -> Any:
        if not body.get("display_name"):
            raise _ApiError(400, "Invalid input error: recurring run display_name is required")
        trigger = body.get("trigger") or {}
        cron = (trigger.get("cron_schedule") or {}).get("cron")
        periodic = (trigger.get("periodic_schedule") or {}).get("interval_second")
        if bool(cron) == bool(periodic):
            raise _ApiError(
                400, "Invalid input error: a trigger needs a cron_schedule or a periodic_schedule"
            )
        if cron and len(str(cron).split()) != 6:
            raise _ApiError(
                400,
                f"Invalid input error: cron {cron!r} must have 6 fields (seconds first), e.g. '0 0 3 * * *'",
            )
        ref = body.get("pipeline_version_reference") or {}
        if not body.get("pipeline_spec") and ref.get("pipeline_version_id") not in self._versions:
            raise _ApiError(404, f"Pipeline version {ref.get('pipeline_version_id')} not found")
        recurring_id = f"r-{next(self._ids)}"
        self._recurring[recurring_id] = {
            **body,
            "recurring_run_id": recurring_id,
            "mode": body.get("mode") or "ENABLE",
            "status": "ENABLED" if body.get("mode", "ENABLE") == "ENABLE" else "DISABLED",
            "created_at": _now(),
            "updated_at": _now(),
            "experiment_id": body.get("experiment_id") or "default",
        }
        return self._recurring[recurring_id]

    def recurring_runs(self) -> list[dict[str, Any]]:
        """Every recurring run (a copy); the fake records them but never fires them by itself."""
        with self._lock:
            copy: list[dict[str, Any]] = json.loads(json.dumps(list(self._recurring.values())))
            return copy

    def fire(self, recurring_run_id: str) -> str:
        """Start the run a recurring run's trigger would start now; returns the run id."""
        with self._lock:
            recurring = self._recurring[recurring_run_id]
            keys = ("pipeline_version_reference", "pipeline_spec", "runtime_config", "service_account")
            body: dict[str, Any] = {k: recurring[k] for k in keys if k in recurring}
            body["display_name"] = f"{recurring['display_name']}-{_now()}"
            run = self._create_run(body)
            self._runs[run["run_id"]].data["recurring_run_id"] = recurring_run_id
            return str(run["run_id"])

    def _run_json(self, run: _Run) -> dict[str, Any]:
        out = dict(run.data)
        out["run_details"] = {"task_details": [dict(t) for t in run.tasks]}
        return out

    def _list_runs(self, query: Mapping[str, str]) -> Any:
        runs = [self._run_json(r) for r in self._runs.values()]
        if query.get("experiment_id"):
            runs = [r for r in runs if r["experiment_id"] == query["experiment_id"]]
        if "desc" in query.get("sort_by", ""):
            runs.reverse()
        start = int(query.get("page_token") or 0)
        size = int(query.get("page_size") or 20)
        page = runs[start : start + size]
        out: dict[str, Any] = {"runs": page, "total_size": len(runs)} if page else {}
        if start + size < len(runs):
            out["next_page_token"] = str(start + size)
        return out

    # ------------------------------------------------------------------ execution

    def _task(self, run: _Run, name: str, parent: str | None) -> dict[str, Any]:
        task = {
            "run_id": run.data["run_id"],
            "task_id": f"t-{next(self._ids)}",
            "display_name": name,
            "create_time": _now(),
            "start_time": _now(),
            "end_time": "1970-01-01T00:00:00Z",
            "state": "RUNNING",
            "inputs": {},
            "outputs": {},
        }
        if parent:
            task["parent_task_id"] = parent
        with self._lock:
            run.tasks.append(task)
        return task

    def _finish(self, task: dict[str, Any], state: str, error: str | None = None) -> None:
        with self._lock:
            task["state"] = state
            task["end_time"] = _now()
            if error:
                task["error"] = {"code": 2, "message": error}

    def _execute(self, run: _Run) -> None:
        with self._lock:
            run.data["state"] = "RUNNING"
        try:
            inputs = {"parameters": dict(run.data["runtime_config"]["parameters"]), "artifacts": {}}
            self._dag(run, run.spec["root"]["dag"], inputs, None)
            state, error = "SUCCEEDED", None
        except _Terminated:
            state, error = "CANCELED", None
        except Exception as exc:
            state, error = "FAILED", str(exc)
        with self._lock:
            if run.terminate.is_set() and state != "SUCCEEDED":
                state, error = "CANCELED", None
            run.data["state"] = state
            run.data["finished_at"] = _now()
            if error:
                run.data["error"] = {"code": 2, "message": error}

    def _dag(
        self, run: _Run, dag: Mapping[str, Any], inputs: Mapping[str, Any], parent: str | None
    ) -> dict[str, dict[str, Any]]:
        tasks = dag.get("tasks") or {}
        graph = {n: set(t.get("dependentTasks") or []) & set(tasks) for n, t in tasks.items()}
        done: dict[str, dict[str, Any]] = {}
        for name in TopologicalSorter(graph).static_order():
            if run.terminate.is_set():
                raise _Terminated
            spec = tasks[name]
            if any(d not in done for d in graph[name]):
                continue  # an upstream task did not run (its condition said no)
            values, artifacts = resolve_inputs(spec, inputs, done)
            component = run.spec["components"][spec["componentRef"]["name"]]
            condition = (spec.get("triggerPolicy") or {}).get("condition")
            if "dag" in component:
                task = self._task(run, name, parent)
                if condition and not evaluate_condition(condition, values):
                    self._finish(task, "SKIPPED")
                    continue
                inner = self._dag(
                    run, component["dag"], {"parameters": values, "artifacts": artifacts}, task["task_id"]
                )
                self._finish(task, "SUCCEEDED")
                done[name] = dag_outputs(component["dag"], inner)
            else:
                done[name] = self._executor(run, name, spec, component, values, artifacts, parent)
        return done

    def _executor(
        self,
        run: _Run,
        name: str,
        spec: Mapping[str, Any],
        component: Mapping[str, Any],
        values: Mapping[str, Any],
        artifacts: Mapping[str, Any],
        parent: str | None,
    ) -> dict[str, Any]:
        container = run.spec["deploymentSpec"]["executors"][component["executorLabel"]]["container"]
        cached = bool((spec.get("cachingOptions") or {}).get("enableCache"))
        declared = component.get("outputDefinitions") or {}
        key = cache_key(container, values, artifacts, declared)
        task = self._task(run, name, parent)
        with self._lock:
            hit = self._cache.get(key) if cached else None
        if hit is not None:
            with self._lock:
                task["outputs"] = {k: {"artifact_ids": [i]} for i, k in enumerate(hit["artifacts"], 1)}
            self._finish(task, "SKIPPED")
            return hit
        assert self._root is not None
        work = self._root / run.data["run_id"] / name
        work.mkdir(parents=True, exist_ok=True)
        root = str((run.data["runtime_config"].get("pipeline_root") or "").removeprefix("file://")) or str(
            self._root / "artifacts"
        )
        out_artifacts = {
            k: {
                "name": k,
                "type": d.get("artifactType", {}),
                "uri": f"{root}/{run.data['run_id']}/{name}/{k}",
                "metadata": {},
            }
            for k, d in (declared.get("artifacts") or {}).items()
        }
        executor = executor_input(values, artifacts, out_artifacts, declared.get("parameters") or {}, work)
        attempts = 1 + int((spec.get("retryPolicy") or {}).get("maxRetryCount") or 0)
        error = None
        for _ in range(attempts):
            error = self._launch(run, name, container, executor, work)
            if error is None:
                break
        if error is not None:
            self._finish(task, "FAILED", error)
            raise RuntimeError(f"task {name!r} failed: {error}")
        outputs = {"parameters": read_output_parameters(executor, declared), "artifacts": out_artifacts}
        with self._lock:
            task["pod_name"] = f"{run.data['run_id']}-{name}-pod"
            task["outputs"] = {k: {"artifact_ids": [i]} for i, k in enumerate(out_artifacts, 1)}
            if cached:
                self._cache[key] = outputs
        self._finish(task, "SUCCEEDED")
        return outputs

    def _launch(
        self,
        run: _Run,
        name: str,
        container: Mapping[str, Any],
        executor_input: Mapping[str, Any],
        work: Path,
    ) -> str | None:
        with self._lock:
            injected = self._task_faults.pop(name, None)
        if injected is not None:
            (work / "log.txt").write_text(injected + "\n")
            return injected
        if not runs_here(container):
            return (
                "the fake Kubeflow runs steps in the mlshift image only "
                "(python -m mlshift.pipelines.kfp_step); "
                f"this task runs {container.get('image')!r}"
            )
        # One attempt here: the caller retries, so an injected fault fails only one attempt.
        code, text = run.steps.run(container, step_arguments(container, executor_input), work, attempts=1)
        if run.terminate.is_set():
            raise _Terminated
        if code == 0:
            return None
        lines = [line for line in text.splitlines() if line.strip()]
        last = lines[-1] if lines else f"exit code {code}"
        return last.removeprefix("step failed: ").removeprefix("StepFailed: ")
