"""Vertex AI Pipelines in the testing kit: pipeline jobs that run for real, schedules, task logs.

The REST surface ``PipelineServiceClient`` and ``ScheduleServiceClient`` send (``POST
.../pipelineJobs?pipelineJobId=``, ``GET``, list with a label filter, ``:cancel``; schedules
created, listed by display name, patched with an update mask and deleted) plus Cloud Logging's
``entries:list`` for the tasks' logs. Requests Vertex would refuse are refused the same way: a
job id outside ``[a-z][-a-z0-9]{0,127}``, a spec without ``schemaVersion`` or root DAG, a
parameter the spec does not declare, a required one missing, no pipeline root, a malformed
cron expression.

A job runs in a thread of its own, one task at a time in DAG order (``dependentTasks``):

- a sub-DAG task runs its DAG when its ``triggerPolicy.condition`` (the CEL subset KFP's
  compiler writes) holds, else it is ``NOT_TRIGGERED`` and nothing below it runs;
- a task whose executor runs ``python -m mlshift.pipelines.kfp_step`` runs that module in a
  child process, as in its container, with KFP's executor input: parameters resolved from
  constants, the DAG's inputs and upstream outputs; input artifacts downloaded from the fake
  GCS into a folder (the container's ``/gcs`` mount), output artifacts uploaded back to
  ``PIPELINE_ROOT/PROJECT/JOB/TASK_ID/NAME`` afterwards. Register and deploy steps reach this
  fake through the environment it set. Retries follow ``retryPolicy.maxRetryCount``;
- a task with caching on, whose image, command, arguments and input values equal those of a
  task that succeeded before (in any job), is ``SKIPPED`` with an execution ``CACHED`` (and
  ``cached_execution_id``) and that task's outputs, without running;
- a task running another image is not run here: it succeeds without outputs (its log says so).

Tasks run through the executor ``FakeKubeflow`` uses too (:mod:`._executor`); this module adds
what Vertex records (task details, executions, custom job logs) and where artifacts live (the
fake GCS). Each task's output is its custom job's log in the fake Cloud Logging. After a failed
task nothing new starts and the job fails with Vertex's message; ``:cancel`` stops the running
task.
"""

from __future__ import annotations

import itertools
import json
import re
import shutil
import tempfile
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlshift_vertex.testing._executor import (
    StepProcess,
    TaskFailed,
    cache_key,
    dag_outputs,
    evaluate_condition,
    executor_input,
    read_output_parameters,
    resolve_inputs,
    runs_here,
    step_arguments,
)

if TYPE_CHECKING:
    from mlshift_vertex.testing._fake import FakeVertex

__all__ = ["FakePipelines", "TaskFailed", "evaluate_condition"]

_JOB_ID = re.compile(r"[a-z][-a-z0-9]{0,127}")


def _copy(data: Mapping[str, Any]) -> dict[str, Any]:
    """A deep copy of JSON data (what an HTTP answer would hold)."""
    copied: dict[str, Any] = json.loads(json.dumps(data))
    return copied


def _now() -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime()) + f".{int(time.time() * 1e6) % 10**6:06d}Z"


@dataclass
class _Job:
    name: str
    data: dict[str, Any]
    seq: int
    stop: threading.Event = field(default_factory=threading.Event)
    thread: threading.Thread | None = None
    failed: list[str] = field(default_factory=list)
    steps: StepProcess = field(init=False)

    def __post_init__(self) -> None:
        self.steps = StepProcess(self.stop)


class FakePipelines:
    """The pipeline jobs, schedules and task logs of one :class:`FakeVertex` (``vertex.pipelines``)."""

    def __init__(self, fake: FakeVertex) -> None:
        self._fake = fake
        self._lock = fake._lock
        self._jobs: dict[str, _Job] = {}
        self._schedules: dict[str, dict[str, Any]] = {}
        self._cache: dict[str, dict[str, Any]] = {}
        self._logs: dict[str, list[tuple[str, str]]] = {}
        self._ids = itertools.count(1)
        self._task_ids = itertools.count(3_000_000_000_001)
        self._seq = itertools.count(1)
        self._work = Path(tempfile.mkdtemp(prefix="mlshift-fake-vertex-pipelines-"))

    # ---------------------------------------------------------------- test controls

    def jobs(self) -> dict[str, dict[str, Any]]:
        """Every pipeline job by resource name, as ``GET`` answers it (a copy)."""
        with self._lock:
            return {name: json.loads(json.dumps(job.data)) for name, job in self._jobs.items()}

    def schedules(self) -> dict[str, dict[str, Any]]:
        """Every schedule by resource name (a copy)."""
        with self._lock:
            return _copy(self._schedules)

    def trigger(self, schedule: str) -> str:
        """Start the job schedule ``schedule`` (its resource name) would start now; its name."""
        with self._lock:
            found = self._schedules.get(schedule)
            if found is None:
                raise KeyError(schedule)
            request = json.loads(json.dumps(found["createPipelineJobRequest"]))
            found["startedRunCount"] = str(int(found.get("startedRunCount", "0")) + 1)
            job_id = f"{found['displayName']}-{time.strftime('%Y%m%d%H%M%S')}-{next(self._ids)}"[:128]
            body = {**request["pipelineJob"], "scheduleName": schedule}
            return str(self._create_job(request["parent"], job_id, body)["name"])

    def wait(self, name: str, timeout: float = 300.0) -> dict[str, Any]:
        """Wait until job ``name`` has finished; its state as ``GET`` answers it."""
        job = self._jobs[name]
        if job.thread is not None:
            job.thread.join(timeout)
        return self.jobs()[name]

    def close(self) -> None:
        """Stop every running job and remove the working folders."""
        for job in list(self._jobs.values()):
            job.steps.stop()
        for job in list(self._jobs.values()):
            if job.thread is not None:
                job.thread.join(30)
        shutil.rmtree(self._work, ignore_errors=True)

    # ---------------------------------------------------------------- REST

    def api(self, method: str, parent: str, rest: str, query: Mapping[str, str], data: dict[str, Any]) -> Any:
        """Answer ``METHOD /v1/PARENT/REST`` for ``pipelineJobs`` and ``schedules`` (lock held)."""
        from mlshift_vertex.testing._fake import ApiError

        if rest == "pipelineJobs" and method == "POST":
            return self._create_job(parent, query.get("pipelineJobId") or "", data)
        if rest == "pipelineJobs" and method == "GET":
            return {"pipelineJobs": self._list([j.data for j in self._sorted_jobs(parent)], query)}
        if rest.startswith("pipelineJobs/"):
            name = f"{parent}/{rest.removesuffix(':cancel')}"
            job = self._jobs.get(name)
            if job is None:
                raise ApiError(404, f"PipelineJob {name} is not found.")
            if rest.endswith(":cancel") and method == "POST":
                state = job.data["state"]
                if state not in ("PIPELINE_STATE_QUEUED", "PIPELINE_STATE_PENDING", "PIPELINE_STATE_RUNNING"):
                    raise ApiError(
                        400, f"Cannot cancel pipeline job {name} in state {state}.", "FAILED_PRECONDITION"
                    )
                job.data["state"] = "PIPELINE_STATE_CANCELLING"
                job.steps.stop()
                return {}
            if method == "GET":
                return json.loads(json.dumps(job.data))
        if rest == "schedules" and method == "POST":
            return self._create_schedule(parent, data)
        if rest == "schedules" and method == "GET":
            items = [s for n, s in sorted(self._schedules.items()) if n.startswith(parent + "/")]
            return {"schedules": self._list(items, query)}
        if rest.startswith("schedules/"):
            name = f"{parent}/{rest}"
            schedule = self._schedules.get(name)
            if schedule is None:
                raise ApiError(404, f"Schedule {name} is not found.")
            if method == "GET":
                return json.loads(json.dumps(schedule))
            if method == "PATCH":
                return self._update_schedule(schedule, query, data)
            if method == "DELETE":
                del self._schedules[name]
                return self._fake._operation(parent, "google.protobuf.Empty", {})
        raise ApiError(404, f"unsupported: {method} {rest}")

    def entries(self, data: Mapping[str, Any]) -> dict[str, Any]:
        """Cloud Logging ``entries:list``: the log of the custom job named in the filter."""
        from mlshift_vertex.testing._fake import ApiError

        match = re.search(r'resource\.labels\.job_id\s*=\s*"([^"]+)"', str(data.get("filter", "")))
        if not match:
            raise ApiError(400, 'filter must name resource.labels.job_id="..."')
        with self._lock:
            lines = list(self._logs.get(match[1], []))
        start = int(data.get("pageToken") or 0)
        size = int(data.get("pageSize") or 50)
        page = lines[start : start + size]
        out: dict[str, Any] = {
            "entries": [
                {
                    "textPayload": text,
                    "timestamp": at,
                    "resource": {"type": "ml_job", "labels": {"job_id": match[1]}},
                }
                for at, text in page
            ]
        }
        if start + size < len(lines):
            out["nextPageToken"] = str(start + size)
        return out

    # ---------------------------------------------------------------- listing

    def _sorted_jobs(self, parent: str) -> list[_Job]:
        jobs = [j for n, j in self._jobs.items() if n.startswith(parent + "/")]
        return sorted(jobs, key=lambda j: j.seq, reverse=True)

    @staticmethod
    def _list(items: list[dict[str, Any]], query: Mapping[str, str]) -> list[dict[str, Any]]:
        text = query.get("filter", "")
        labels = dict(re.findall(r'labels\.([a-z0-9_-]+)\s*=\s*"([^"]*)"', text))
        display = re.search(r'display_name\s*=\s*"([^"]*)"', text)
        out = [
            json.loads(json.dumps(i))
            for i in items
            if all((i.get("labels") or {}).get(k) == v for k, v in labels.items())
            and (display is None or i.get("displayName") == display[1])
        ]
        return out

    # ---------------------------------------------------------------- jobs

    def _check_job(self, body: Mapping[str, Any]) -> None:
        from mlshift_vertex.testing._fake import ApiError

        spec = body.get("pipelineSpec")
        if (
            not isinstance(spec, dict)
            or not spec.get("schemaVersion")
            or "dag" not in (spec.get("root") or {})
        ):
            raise ApiError(400, "pipeline_spec must be a PipelineSpec with schemaVersion and a root DAG.")
        if len(str(body.get("displayName", ""))) > 128:
            raise ApiError(400, "display_name is longer than 128 characters.")
        self._fake._check_labels(body.get("labels") or {})
        runtime = body.get("runtimeConfig") or {}
        if not runtime.get("gcsOutputDirectory") and not spec.get("defaultPipelineRoot"):
            raise ApiError(400, "runtime_config.gcs_output_directory is required: the pipeline has no root.")
        declared = ((spec["root"].get("inputDefinitions") or {}).get("parameters")) or {}
        values = runtime.get("parameterValues") or {}
        for key in values:
            if key not in declared:
                raise ApiError(
                    400, f"The pipeline parameter {key} is not found in the pipeline job input definitions."
                )
        for key, spec_ in declared.items():
            if key not in values and "defaultValue" not in spec_ and not spec_.get("isOptional"):
                raise ApiError(400, f"The pipeline parameter {key} is required but has no value.")

    def _create_job(self, parent: str, job_id: str, body: dict[str, Any]) -> dict[str, Any]:
        from mlshift_vertex.testing._fake import ApiError

        if not _JOB_ID.fullmatch(job_id):
            raise ApiError(400, f"Invalid pipeline job id {job_id!r}: it must match [a-z][-a-z0-9]{{0,127}}.")
        name = f"{parent}/pipelineJobs/{job_id}"
        if name in self._jobs:
            raise ApiError(409, f"PipelineJob {name} already exists.")
        self._check_job(body)
        now = _now()
        data = {
            **json.loads(json.dumps(body)),
            "name": name,
            "state": "PIPELINE_STATE_RUNNING",
            "createTime": now,
            "startTime": now,
            "updateTime": now,
            "jobDetail": {"taskDetails": []},
        }
        job = _Job(name, data, next(self._seq))
        self._jobs[name] = job
        job.thread = threading.Thread(
            target=self._main, args=(job,), name=f"fake-vertex-{job_id}", daemon=True
        )
        job.thread.start()
        return _copy(data)

    def _main(self, job: _Job) -> None:
        try:
            self._execute(job)
        except BaseException as exc:  # a defect in the fake: fail the job, never hang it
            with self._lock:
                job.data["state"] = "PIPELINE_STATE_FAILED"
                job.data["error"] = {"code": 13, "message": f"the testing kit could not run it: {exc!r}"}
                job.data["endTime"] = _now()
            if not isinstance(exc, Exception):
                raise

    def _execute(self, job: _Job) -> None:
        spec = job.data["pipelineSpec"]
        root = spec["root"]
        declared = (root.get("inputDefinitions") or {}).get("parameters") or {}
        params = {k: v["defaultValue"] for k, v in declared.items() if "defaultValue" in v}
        params.update((job.data.get("runtimeConfig") or {}).get("parameterValues") or {})
        root_detail = self._detail(job, str((spec.get("pipelineInfo") or {}).get("name", "root")), None)
        ok, _ = self._dag(job, root["dag"], {"parameters": params, "artifacts": {}}, root_detail)
        with self._lock:
            if job.stop.is_set():
                state = "PIPELINE_STATE_CANCELLED"
                job.data["error"] = {"code": 1, "message": "CANCELLED"}
            elif not ok:
                state = "PIPELINE_STATE_FAILED"
                job.data["error"] = {
                    "code": 9,
                    "message": "The DAG failed because some tasks failed. The failed tasks are: "
                    f"[{', '.join(job.failed)}].",
                }
            else:
                state = "PIPELINE_STATE_SUCCEEDED"
            root_detail["state"] = {
                "PIPELINE_STATE_SUCCEEDED": "SUCCEEDED",
                "PIPELINE_STATE_FAILED": "FAILED",
            }.get(state, "CANCELLED")
            root_detail["endTime"] = _now()
            for detail in job.data["jobDetail"]["taskDetails"]:
                if detail["state"] in ("RUNNING", "PENDING"):
                    detail["state"] = "CANCELLED"
            job.data["state"] = state
            job.data["endTime"] = job.data["updateTime"] = _now()

    def _detail(self, job: _Job, task_name: str, parent: dict[str, Any] | None) -> dict[str, Any]:
        detail: dict[str, Any] = {
            "taskId": str(next(self._task_ids)),
            "taskName": task_name,
            "createTime": _now(),
            "startTime": _now(),
            "state": "RUNNING",
        }
        if parent is not None:
            detail["parentTaskId"] = parent["taskId"]
        with self._lock:
            job.data["jobDetail"]["taskDetails"].append(detail)
        return detail

    def _settle(self, detail: dict[str, Any], state: str, **extra: Any) -> None:
        with self._lock:
            detail["state"] = state
            detail["endTime"] = _now()
            detail.update(extra)

    def _dag(
        self, job: _Job, dag: Mapping[str, Any], scope: Mapping[str, Any], parent: dict[str, Any]
    ) -> tuple[bool, dict[str, dict[str, Any]]]:
        """Run a DAG's tasks; (no task failed, each task's outputs and state)."""
        tasks: Mapping[str, Any] = dag.get("tasks") or {}
        results: dict[str, dict[str, Any]] = {}
        ok = True
        while ok and not job.stop.is_set():
            ready = sorted(
                k
                for k, t in tasks.items()
                if k not in results and set(t.get("dependentTasks") or []) <= set(results)
            )
            if not ready:
                break
            key = ready[0]
            task = tasks[key]
            if any(
                results[d]["state"] not in ("SUCCEEDED", "SKIPPED") for d in task.get("dependentTasks") or []
            ):
                results[key] = {"state": "NOT_RUN", "parameters": {}, "artifacts": {}}
                continue
            results[key] = self._task(job, key, task, scope, results, parent)
            if results[key]["state"] == "FAILED":
                ok = False
        return ok and not job.stop.is_set(), results

    def _task(
        self,
        job: _Job,
        key: str,
        task: Mapping[str, Any],
        scope: Mapping[str, Any],
        results: Mapping[str, dict[str, Any]],
        parent: dict[str, Any],
    ) -> dict[str, Any]:
        spec = job.data["pipelineSpec"]
        name = str((task.get("taskInfo") or {}).get("name") or key)
        detail = self._detail(job, name, parent)
        component = (spec.get("components") or {}).get((task.get("componentRef") or {}).get("name")) or {}
        try:
            params, artifacts = resolve_inputs(task, scope, results)
            condition = (task.get("triggerPolicy") or {}).get("condition")
            if condition and not evaluate_condition(condition, params):
                self._settle(detail, "NOT_TRIGGERED")
                return {"state": "NOT_TRIGGERED", "parameters": {}, "artifacts": {}}
            if "dag" in component:
                ok, inner = self._dag(
                    job, component["dag"], {"parameters": params, "artifacts": artifacts}, detail
                )
                if not ok:
                    self._settle(detail, "CANCELLED" if job.stop.is_set() else "FAILED")
                    return {"state": "FAILED", "parameters": {}, "artifacts": {}}
                self._settle(detail, "SUCCEEDED")
                return {"state": "SUCCEEDED", **dag_outputs(component["dag"], inner)}
            return self._container(job, key, task, component, detail, params, artifacts)
        except TaskFailed as exc:
            job.failed.append(name)
            self._settle(detail, "FAILED", error={"code": 9, "message": str(exc)})
            return {"state": "FAILED", "parameters": {}, "artifacts": {}}

    # ---------------------------------------------------------------- executors

    def _local(self, uri: str) -> Path:
        return self._work / "gcs" / uri.removeprefix("gs://")

    def _download(self, uri: str) -> Path:
        bucket, _, prefix = uri.removeprefix("gs://").partition("/")
        dest = self._local(uri)
        shutil.rmtree(dest, ignore_errors=True)
        dest.mkdir(parents=True, exist_ok=True)
        with self._lock:
            files = {
                k: v[0]
                for (b, k), v in self._fake._state.objects.items()
                if b == bucket and k.startswith(prefix.rstrip("/") + "/")
            }
        for k, data in files.items():
            target = dest / k[len(prefix.rstrip("/")) + 1 :]
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_bytes(data)
        return dest

    def _upload(self, folder: Path, uri: str) -> None:
        bucket, _, prefix = uri.removeprefix("gs://").partition("/")
        with self._lock:
            if bucket not in self._fake._state.buckets:
                raise TaskFailed(f"the pipeline root's bucket {bucket!r} does not exist")
            for path in sorted(folder.rglob("*")):
                if path.is_file():
                    key = f"{prefix.rstrip('/')}/{path.relative_to(folder).as_posix()}"
                    self._fake._state.objects[(bucket, key)] = (
                        path.read_bytes(),
                        next(self._fake._generation),
                    )

    def _container(
        self,
        job: _Job,
        key: str,
        task: Mapping[str, Any],
        component: Mapping[str, Any],
        detail: dict[str, Any],
        params: dict[str, Any],
        artifacts: dict[str, dict[str, Any]],
    ) -> dict[str, Any]:
        spec = job.data["pipelineSpec"]
        executor = ((spec.get("deploymentSpec") or {}).get("executors") or {}).get(
            component.get("executorLabel")
        )
        container = (executor or {}).get("container")
        if not container:
            raise TaskFailed(f"component of task {key!r} has no container executor")
        outputs_def = component.get("outputDefinitions") or {}
        key_of_execution = cache_key(container, params, artifacts, outputs_def)
        parent = job.name.split("/pipelineJobs/")[0]
        execution_name = f"{parent}/metadataStores/default/executions/{next(self._ids)}"
        input_meta = {f"input:{k}": v for k, v in params.items()}
        caching = bool((task.get("cachingOptions") or {}).get("enableCache"))
        with self._lock:
            hit = self._cache.get(key_of_execution) if caching else None
        if hit is not None:
            execution = {
                "name": execution_name,
                "state": "CACHED",
                "schemaTitle": "system.ContainerExecution",
                "metadata": {**hit["metadata"], "cached_execution_id": hit["execution"]},
            }
            self._settle(detail, "SKIPPED", execution=execution, outputs=hit["outputs"])
            return {"state": "SKIPPED", "parameters": hit["parameters"], "artifacts": hit["artifacts"]}
        custom_job = str(next(self._ids) + 10**18)
        detail["executorDetail"] = {"containerDetail": {"mainJob": f"{parent}/customJobs/{custom_job}"}}
        root = (job.data.get("runtimeConfig") or {}).get("gcsOutputDirectory") or spec.get(
            "defaultPipelineRoot"
        )
        project = parent.split("/")[1]
        base = f"{str(root).rstrip('/')}/{project}/{job.name.rsplit('/', 1)[-1]}/{key}_{detail['taskId']}"
        work = self._work / "tasks" / detail["taskId"]
        work.mkdir(parents=True, exist_ok=True)
        out_artifacts = {
            name: {
                "name": name,
                "schemaTitle": d["artifactType"]["schemaTitle"],
                "schemaVersion": d["artifactType"].get("schemaVersion", "0.0.1"),
                "uri": f"{base}/{name}",
                "metadata": {},
            }
            for name, d in (outputs_def.get("artifacts") or {}).items()
        }
        executor = executor_input(
            params,
            {k: {**a, "uri": f"file://{self._download(str(a['uri']))}"} for k, a in artifacts.items()},
            {name: {**a, "uri": f"file://{self._local(a['uri'])}"} for name, a in out_artifacts.items()},
            outputs_def.get("parameters") or {},
            work,
        )
        for a in out_artifacts.values():
            shutil.rmtree(self._local(a["uri"]), ignore_errors=True)
        attempts = 1 + int((task.get("retryPolicy") or {}).get("maxRetryCount") or 0)
        log: list[str] = []
        code = 0
        if not runs_here(container):
            log.append(
                f"the testing kit does not run image {container.get('image')!r}; task {key!r} succeeded "
                "without running"
            )
        else:
            code, text = job.steps.run(
                container, step_arguments(container, executor), work, attempts=attempts, log=log.append
            )
            log += text.splitlines()
        stamp = _now()
        with self._lock:
            self._logs[custom_job] = [(stamp, line) for line in log]
        if job.stop.is_set():
            self._settle(detail, "CANCELLED")
            return {"state": "CANCELLED", "parameters": {}, "artifacts": {}}
        if code != 0:
            job.failed.append(str((task.get("taskInfo") or {}).get("name") or key))
            self._settle(
                detail,
                "FAILED",
                error={
                    "code": 9,
                    "message": f"The replica workerpool0-0 exited with a non-zero status of {code}. "
                    "To find out more about why your job exited please check the logs.",
                },
                execution={"name": execution_name, "state": "FAILED", "metadata": input_meta},
            )
            return {"state": "FAILED", "parameters": {}, "artifacts": {}}
        produced = read_output_parameters(executor, outputs_def)
        executor_output = Path(str(executor["outputs"]["outputFile"]))
        if executor_output.exists():
            written = json.loads(executor_output.read_text() or "{}")
            for name, found in (written.get("artifacts") or {}).items():
                if name in out_artifacts and found.get("artifacts"):
                    out_artifacts[name]["metadata"] = found["artifacts"][0].get("metadata") or {}
        for a in out_artifacts.values():
            folder = self._local(a["uri"])
            folder.mkdir(parents=True, exist_ok=True)
            self._upload(folder, a["uri"])
        metadata = {**input_meta, **{f"output:{k}": v for k, v in produced.items()}}
        task_outputs = {name: {"artifacts": [a]} for name, a in out_artifacts.items()}
        execution = {
            "name": execution_name,
            "state": "COMPLETE",
            "schemaTitle": "system.ContainerExecution",
            "metadata": metadata,
        }
        self._settle(detail, "SUCCEEDED", execution=execution, outputs=task_outputs)
        if caching:
            with self._lock:
                self._cache[key_of_execution] = {
                    "execution": execution_name,
                    "metadata": metadata,
                    "outputs": task_outputs,
                    "parameters": produced,
                    "artifacts": out_artifacts,
                }
        return {"state": "SUCCEEDED", "parameters": produced, "artifacts": out_artifacts}

    # ---------------------------------------------------------------- schedules

    def _check_cron(self, cron: str) -> None:
        from mlshift.errors import ConfigError
        from mlshift.pipelines import parse_cron
        from mlshift_vertex.testing._fake import ApiError

        zone = "UTC"
        text = cron.strip()
        match = re.fullmatch(r"(?:TZ|CRON_TZ)=(\S+)\s+(.*)", text)
        if match:
            zone, text = match[1], match[2]
        try:
            parse_cron(text, zone)
        except ConfigError as exc:
            raise ApiError(400, f"Invalid cron expression {cron!r}: {exc}") from None

    def _next_run(self, cron: str) -> str:
        from mlshift.pipelines import parse_cron

        match = re.fullmatch(r"(?:TZ|CRON_TZ)=(\S+)\s+(.*)", cron.strip())
        zone, text = (match[1], match[2]) if match else ("UTC", cron.strip())
        from datetime import datetime, timezone

        schedule = parse_cron(text, zone)
        upcoming = schedule.next_after(datetime.now(timezone.utc)).astimezone(timezone.utc)
        return upcoming.strftime("%Y-%m-%dT%H:%M:%SZ")

    def _create_schedule(self, parent: str, data: dict[str, Any]) -> dict[str, Any]:
        from mlshift_vertex.testing._fake import ApiError

        if not data.get("displayName"):
            raise ApiError(400, "Schedule display_name is required.")
        if not data.get("cron"):
            raise ApiError(400, "Schedule cron is required.")
        self._check_cron(str(data["cron"]))
        if int(data.get("maxConcurrentRunCount") or 0) < 1:
            raise ApiError(400, "max_concurrent_run_count must be greater than 0.")
        request = data.get("createPipelineJobRequest") or {}
        if request.get("parent") != parent:
            raise ApiError(400, "create_pipeline_job_request.parent must be the schedule's location.")
        self._check_job(request.get("pipelineJob") or {})
        name = f"{parent}/schedules/{next(self._ids) + 7 * 10**18}"
        now = _now()
        schedule = {
            **json.loads(json.dumps(data)),
            "name": name,
            "state": "ACTIVE",
            "createTime": now,
            "updateTime": now,
            "startedRunCount": "0",
            "nextRunTime": self._next_run(str(data["cron"])),
        }
        self._schedules[name] = schedule
        return _copy(schedule)

    def _update_schedule(
        self, schedule: dict[str, Any], query: Mapping[str, str], data: dict[str, Any]
    ) -> Any:
        from mlshift_vertex.testing._fake import ApiError

        mask = [m.strip() for m in query.get("updateMask", "").split(",") if m.strip()]
        if not mask:
            raise ApiError(400, "update_mask is required.")
        camel = {
            "cron": "cron",
            "display_name": "displayName",
            "displayName": "displayName",
            "max_concurrent_run_count": "maxConcurrentRunCount",
            "maxConcurrentRunCount": "maxConcurrentRunCount",
            "create_pipeline_job_request": "createPipelineJobRequest",
            "createPipelineJobRequest": "createPipelineJobRequest",
        }
        for path in mask:
            key = camel.get(path)
            if key is None:
                raise ApiError(400, f"update_mask path {path!r} cannot be updated.")
            if key == "cron":
                self._check_cron(str(data.get("cron", "")))
            if key == "createPipelineJobRequest":
                self._check_job((data.get(key) or {}).get("pipelineJob") or {})
            schedule[key] = json.loads(json.dumps(data.get(key)))
        schedule["updateTime"] = _now()
        schedule["nextRunTime"] = self._next_run(str(schedule["cron"]))
        return json.loads(json.dumps(schedule))
