"""Pipelines on Vertex AI: the KFP ``PipelineSpec`` core compiles, run as a ``PipelineJob``.

- The IR is compiled by core (:func:`mlshift.pipelines.kfp.compile_kfp`) with the target's
  serving image as the step image, this target's URI for the built-in register and deploy
  steps (core's own semantics, run by ``python -m mlshift.pipelines.kfp_step``), and
  ``gs://BUCKET/PREFIX/pipelines/runs`` as the pipeline root. Step source files travel inside
  the spec, which is sent inline as the job's ``pipeline_spec`` (no template upload).
- A run is ``CreatePipelineJob`` (``PipelineServiceClient``, REST transport) with a job id
  made from the pipeline's name, labelled ``mlshift-managed`` and ``mlshift-pipeline``; its id
  for mlshift is the job's resource name. Status comes from the job's ``task_details``:
  ``SKIPPED`` with an execution ``CACHED`` is a cache hit, ``NOT_TRIGGERED`` a condition that
  said no. Output parameters are read from the task's execution metadata (``output:NAME``),
  artifacts from its outputs (``gs://`` URIs).
- Caching is Vertex's own (each task's ``cachingOptions``): a second run of an unchanged
  pipeline reuses every cached task. ``cache=False`` compiles every task with caching off.
- A failed task's message is its error and the last ``step failed:`` line of its log, read
  from Cloud Logging (the custom job the task ran as), with a Cloud console link to the logs.
- Schedules are Vertex ``Schedule`` resources (``ScheduleServiceClient``) named
  ``mlshift-<pipeline>``, whose ``create_pipeline_job_request`` holds the compiled job and
  whose ``cron`` carries the time zone (``TZ=Europe/Paris 0 3 * * *``). :meth:`sync_schedule`
  creates, updates or deletes one so that it matches the pipeline, making no call that
  changes anything when it already does.
"""

from __future__ import annotations

import builtins
import json
import logging
import re
import secrets
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import quote, urlencode

from mlshift.errors import ConfigError, MlshiftError, UnsupportedOperation
from mlshift_vertex._naming import LABEL_MANAGED
from mlshift_vertex.errors import PROVIDER, google_errors

if TYPE_CHECKING:
    from mlshift.adapter import ScheduleAction, ScheduleChange
    from mlshift.pipelines.ir import PipelineIR
    from mlshift.pipelines.runs import RemoteRunState, RunStatus, StepRun, StepStatus
    from mlshift_vertex._adapter import VertexAdapter

__all__ = ["VertexPipelineService", "job_id_prefix", "pipeline_slug"]

logger = logging.getLogger("mlshift.vertex")

LABEL_PIPELINE = "mlshift-pipeline"
#: What ``kfp_step`` runs: the four commands of mlshift's step module.
_STEP_COMMAND = ["python", "-m", "mlshift.pipelines.kfp_step"]
_KINDS = {"python": "python", "register": "register_model", "deploy": "deploy", "fail": "fail"}
_RUN_ID = re.compile(r"projects/[^/]+/locations/[^/]+/pipelineJobs/[a-z][-a-z0-9]{0,127}")
_RUN_STATUS: dict[str, RunStatus] = {
    "PIPELINE_STATE_QUEUED": "running",
    "PIPELINE_STATE_PENDING": "running",
    "PIPELINE_STATE_RUNNING": "running",
    "PIPELINE_STATE_CANCELLING": "running",
    "PIPELINE_STATE_PAUSED": "running",
    "PIPELINE_STATE_SUCCEEDED": "succeeded",
    "PIPELINE_STATE_FAILED": "failed",
    "PIPELINE_STATE_CANCELLED": "cancelled",
}
_STEP_STATUS: dict[str, StepStatus] = {
    "PENDING": "pending",
    "RUNNING": "running",
    "CANCEL_PENDING": "running",
    "CANCELLING": "running",
    "SUCCEEDED": "succeeded",
    "CANCELLED": "cancelled",
    "FAILED": "failed",
    "SKIPPED": "cached",
    "NOT_TRIGGERED": "skipped",
}
#: Lines of a failed task's log kept in its message.
LOG_TAIL = 5


def pipeline_slug(name: str) -> str:
    """A pipeline's name as Vertex ids and label values take it (``[a-z][-a-z0-9]*``, ≤ 63).

    Raises:
        ConfigError: when nothing usable is left.
    """
    slug = re.sub(r"[^a-z0-9-]+", "-", name.lower()).strip("-")
    if slug and not slug[0].isalpha():
        slug = f"p-{slug}"
    slug = slug[:63].rstrip("-")
    if not slug:
        raise ConfigError(
            f"pipeline name {name!r} has no letter or digit to name a Vertex pipeline job after",
            field="name",
        )
    return slug


def job_id_prefix(name: str) -> str:
    """The start of every job id of pipeline ``name`` (the rest is the time and a random part)."""
    return pipeline_slug(name)[:90]


def _time(value: Any) -> datetime | None:
    if not value:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    text = str(value).replace("Z", "+00:00")
    # Python 3.10 reads at most 6 fraction digits; RFC 3339 from Google may carry 9.
    text = re.sub(r"(\.\d{6})\d+", r"\1", text)
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _check_run_id(run_id: str) -> str:
    if not _RUN_ID.fullmatch(run_id):
        raise ConfigError(
            f"{run_id!r} is not a Vertex AI pipeline job name "
            "(projects/PROJECT/locations/LOCATION/pipelineJobs/ID)",
            field="run_id",
            hint="`mlshift pipelines list --target vertex://PROJECT/LOCATION` shows the runs' ids",
        )
    return run_id


def _executor_kind(executor: Mapping[str, Any]) -> str:
    container = executor.get("container") or {}
    if list(container.get("command") or []) == _STEP_COMMAND:
        return _KINDS.get(str((container.get("args") or [""])[0]), "container")
    return "container"


class _SpecIndex:
    """The step tasks of a compiled spec, in pipeline order, with the sub-DAG each sits in."""

    def __init__(self, spec: Mapping[str, Any]) -> None:
        self.components: Mapping[str, Any] = spec.get("components") or {}
        self.executors: Mapping[str, Any] = (spec.get("deploymentSpec") or {}).get("executors") or {}
        self.steps: list[str] = []  # taskInfo names of executor tasks, in order
        self.kinds: dict[str, str] = {}
        self.gate: dict[str, str] = {}  # step → the innermost sub-DAG task it sits in
        self.parents: dict[str, str | None] = {}  # sub-DAG task → its parent sub-DAG task
        self._walk((spec.get("root") or {}).get("dag") or {}, None)

    def _walk(self, dag: Mapping[str, Any], gate: str | None) -> None:
        tasks: Mapping[str, Any] = dag.get("tasks") or {}
        deps = {k: set(t.get("dependentTasks") or []) & set(tasks) for k, t in tasks.items()}
        done: list[str] = []
        # Kahn's order, ties by name: the order the tasks can run in.
        while len(done) < len(tasks):
            ready = sorted(k for k in tasks if k not in done and deps[k] <= set(done))
            if not ready:  # a cycle: the rest in name order (Vertex would refuse the spec)
                ready = sorted(k for k in tasks if k not in done)
            key = ready[0]
            done.append(key)
            task = tasks[key]
            name = str((task.get("taskInfo") or {}).get("name") or key)
            component = self.components.get(str((task.get("componentRef") or {}).get("name"))) or {}
            if "dag" in component:
                self.parents[name] = gate
                self._walk(component["dag"], name)
                continue
            executor = self.executors.get(str(component.get("executorLabel"))) or {}
            self.steps.append(name)
            self.kinds[name] = _executor_kind(executor)
            if gate is not None:
                self.gate[name] = gate


def _condition_text(dag_task: str, triggered: bool) -> str:
    """``condition-quality-gate-else`` → ``quality-gate is true`` (the reason its tasks did not run)."""
    name = dag_task.removeprefix("condition-")
    other = name.endswith("-else")
    name = name.removesuffix("-else")
    holds = (not other) if triggered else other
    return f"condition {name!r} is {'true' if holds else 'false'}"


class VertexPipelineService:
    """Pipelines on Vertex AI Pipelines: ``adapter.pipelines`` of a ``vertex://`` target."""

    def __init__(self, adapter: VertexAdapter) -> None:
        self._adapter = adapter
        # What never changes once a task has finished: its outputs, and a finished run's state.
        self._finished: dict[str, RemoteRunState] = {}

    # ------------------------------------------------------------------ clients

    def _client(self, kind: Literal["pipeline", "schedule"]) -> Any:
        return self._adapter.clients.client(kind)

    # ------------------------------------------------------------------ compiling

    @property
    def poll_interval(self) -> float:
        """Seconds between status checks while a run is followed (the ``poll_interval`` option)."""
        return self._adapter.options.poll_interval

    def step_target(self) -> str:
        """The target URI the register and deploy steps act on: this one, with its staging
        bucket (and serving image, when set) in the query so the step finds the same registry."""
        options = self._adapter.options
        query = {"staging_bucket": options.staging_bucket}
        if options.image_uri:
            query["image_uri"] = options.image_uri
        return f"vertex://{self._adapter.project}/{self._adapter.location}?{urlencode(query, safe=':/')}"

    def pipeline_root(self) -> str:
        """``gs://BUCKET/PREFIX/pipelines/runs``: where Vertex writes the runs' artifacts."""
        return self._adapter.store.uri(self._adapter.store.key("pipelines", "runs"))

    def compile(self, ir: PipelineIR) -> dict[str, Any]:
        """The KFP ``PipelineSpec`` this target runs ``ir`` from (nothing is sent).

        Raises:
            ConfigError: what a PipelineSpec cannot express, naming the step (see
                :func:`mlshift.pipelines.kfp.compile_kfp`).
        """
        from mlshift.pipelines.kfp import compile_kfp

        return compile_kfp(
            ir,
            image=self._adapter.image_uri(),
            target=self.step_target(),
            pipeline_root=self.pipeline_root(),
        )

    def _labels(self, ir: PipelineIR) -> dict[str, str]:
        return {**self._adapter.options.labels, LABEL_MANAGED: "true", LABEL_PIPELINE: pipeline_slug(ir.name)}

    def _job(self, ir: PipelineIR, params: Mapping[str, Any], spec: Mapping[str, Any]) -> dict[str, Any]:
        """The ``PipelineJob`` body (as a dict of its fields) for one run."""
        options = self._adapter.options
        job: dict[str, Any] = {
            "display_name": ir.name[:128],
            "pipeline_spec": dict(spec),
            "labels": self._labels(ir),
            "runtime_config": {
                "gcs_output_directory": self.pipeline_root(),
                "parameter_values": {k: v for k, v in params.items() if v is not None},
            },
        }
        if options.service_account:
            job["service_account"] = options.service_account
        if options.network:
            job["network"] = options.network
        if options.encryption_key:
            job["encryption_spec"] = {"kms_key_name": options.encryption_key}
        return job

    # ------------------------------------------------------------------ runs

    def submit(
        self,
        ir: PipelineIR,
        params: Mapping[str, Any] | None = None,
        *,
        use_cache: bool = True,
        max_parallel: int | None = None,
    ) -> str:
        """Start a pipeline job; returns its resource name (the run id).

        Nothing is created before the run: Vertex keeps no pipeline object, the job carries
        its spec. ``use_cache=False`` turns caching off in this job's spec only.

        Raises:
            ConfigError: an unknown, missing or mistyped parameter (before anything is sent).
            UnsupportedOperation: ``max_parallel`` (a Vertex pipeline job has no run-wide limit).
        """
        if max_parallel is not None:
            raise UnsupportedOperation(
                "Vertex AI Pipelines has no limit on the steps a run runs at once (max_parallel)",
                hint="leave max_parallel unset on vertex:// targets",
            )
        values = ir.resolve_params(params)
        if not use_cache:
            ir = ir.model_copy(
                update={"steps": tuple(s.model_copy(update={"cache": False}) for s in ir.steps)}
            )
        spec = self.compile(ir)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S")
        job_id = f"{job_id_prefix(ir.name)}-{stamp}-{secrets.token_hex(3)}"
        client = self._client("pipeline")
        with google_errors(f"start pipeline {ir.name!r}"):
            job = client.create_pipeline_job(
                parent=self._adapter.parent, pipeline_job=self._job(ir, values, spec), pipeline_job_id=job_id
            )
        return str(job.name)

    def _get(self, run_id: str) -> dict[str, Any]:
        client = self._client("pipeline")
        with google_errors(f"read pipeline job {run_id}"):
            job = client.get_pipeline_job(name=run_id)
        data: dict[str, Any] = type(job).to_dict(job, use_integers_for_enums=False)
        return data

    def describe_run(self, run_id: str) -> RemoteRunState:
        """The job in neutral terms: every step of the pipeline, with outputs and metrics.

        Raises:
            NotFound: for an unknown job.
        """
        from mlshift.pipelines.runs import RemoteRunState

        _check_run_id(run_id)
        if run_id in self._finished:
            return self._finished[run_id]
        job = self._get(run_id)
        status = _RUN_STATUS.get(str(job.get("state")), "running")
        spec = job.get("pipeline_spec") or {}
        index = _SpecIndex(spec)
        details: dict[str, dict[str, Any]] = {}
        for task in (job.get("job_detail") or {}).get("task_details") or []:
            details[str(task.get("task_name"))] = task
        steps = [self._step(run_id, name, index, details, status) for name in index.steps]
        failed_names = [s.name for s in steps if s.status == "failed"]
        if failed_names:
            # Steps the run ended without because a step failed first (Vertex starts nothing after).
            because = f"skipped because {', '.join(failed_names)} failed"
            steps = [
                s.model_copy(update={"message": because})
                if s.status == "skipped" and s.message == "not run"
                else s
                for s in steps
            ]
        message = (job.get("error") or {}).get("message") or None
        failed = next((s for s in steps if s.status == "failed"), None)
        if failed is not None:
            message = f"step {failed.name!r} failed: {failed.message or 'see its log'}"
        elif status == "cancelled":
            message = "cancelled"
        params = dict((job.get("runtime_config") or {}).get("parameter_values") or {})
        declared = ((spec.get("root") or {}).get("inputDefinitions") or {}).get("parameters") or {}
        for key, value in list(params.items()):
            if (declared.get(key) or {}).get("parameterType") == "NUMBER_INTEGER" and isinstance(
                value, float
            ):
                params[key] = int(value)
        state = RemoteRunState(
            id=run_id,
            pipeline=str(job.get("display_name") or run_id.rsplit("/", 1)[-1]),
            status=status,
            message=message,
            params=params,
            created_at=_time(job.get("create_time")),
            finished_at=_time(job.get("end_time"))
            if status in ("succeeded", "failed", "cancelled")
            else None,
            steps=tuple(steps),
        )
        if status in ("succeeded", "failed", "cancelled"):
            self._finished[run_id] = state
        return state

    def _step(
        self,
        run_id: str,
        name: str,
        index: _SpecIndex,
        details: Mapping[str, dict[str, Any]],
        run_status: RunStatus,
    ) -> StepRun:
        from mlshift.pipelines.runs import StepRun

        kind = index.kinds[name]
        task = details.get(name)
        if task is None:
            # Not started: below a condition that said no, after a failure, or not yet.
            gate = index.gate.get(name)
            while gate is not None:
                dag = details.get(gate)
                if dag is not None and dag.get("state") == "NOT_TRIGGERED":
                    return StepRun(
                        name=name, kind=kind, status="skipped", message=_condition_text(gate, False)
                    )
                gate = index.parents.get(gate)
            if run_status == "running":
                return StepRun(name=name, kind=kind, status="pending")
            if run_status == "cancelled":
                return StepRun(
                    name=name, kind=kind, status="cancelled", message="the run was cancelled first"
                )
            return StepRun(name=name, kind=kind, status="skipped", message="not run")
        raw = str(task.get("state") or "PENDING")
        execution = task.get("execution") or {}
        status = _STEP_STATUS.get(raw, "running")
        if raw == "SKIPPED" and execution.get("state") != "CACHED":
            status = "skipped"
        metadata: Mapping[str, Any] = execution.get("metadata") or {}
        cached_from = None
        if status == "cached":
            cached_from = str(metadata.get("cached_execution_id") or "") or None
        outputs: dict[str, Any] = {}
        metrics: dict[str, float] = {}
        if status in ("succeeded", "cached"):
            for key, value in metadata.items():
                if not str(key).startswith("output:"):
                    continue
                out = str(key).removeprefix("output:")
                if out == "all-metrics" and isinstance(value, Mapping):
                    metrics = {str(k): float(v) for k, v in value.items()}
                elif not out.startswith("metric-"):
                    outputs[out] = value
            for out, artifacts in (task.get("outputs") or {}).items():
                found = (artifacts or {}).get("artifacts") or []
                if found and out != "metrics-report":
                    outputs[out] = {"uri": found[0].get("uri")}
        message = None
        if status == "failed":
            message = self._failure(run_id, name, task)
        return StepRun(
            name=name,
            kind=kind,
            status=status,
            attempts=1
            + len([s for s in task.get("pipeline_task_status") or [] if s.get("state") == "FAILED"])
            if status == "failed"
            else 1,
            executions=0 if status == "cached" or kind == "fail" else 1,
            cached_from=cached_from,
            outputs=outputs,
            metrics=metrics,
            message=message,
            started_at=_time(task.get("start_time")),
            finished_at=_time(task.get("end_time")),
            log=self.logs_link(task),
        )

    def _failure(self, run_id: str, step: str, task: Mapping[str, Any]) -> str:
        """Why a task failed: the ``step failed:`` line of its log (else Vertex's error), with
        the last lines of the log when there is no such line, and where to read the rest."""
        error = str((task.get("error") or {}).get("message") or "").strip()
        try:
            text = self.run_logs(run_id, step)
        except MlshiftError as exc:  # e.g. no logging.viewer role: the status is still reported
            logger.warning("cannot read the log of step %r: %s", step, exc)
            text = ""
        lines = [line for line in text.splitlines() if line.strip()]
        reason = next(
            (
                line.removeprefix("step failed: ")
                for line in reversed(lines)
                if line.startswith("step failed: ")
            ),
            None,
        )
        if reason is None and lines:
            reason = f"{error or 'the task failed'}; its log ends with: " + " | ".join(lines[-LOG_TAIL:])
        link = self.logs_link(task)
        return (
            f"{reason or error or 'the task failed'} (logs: {link})" if link else reason or error or "failed"
        )

    def logs_link(self, task: Mapping[str, Any]) -> str | None:
        """The Cloud console page showing a task's log (Cloud Logging, its custom job)."""
        job = self._task_job(task)
        if job is None:
            return None
        query = f'resource.type="ml_job"\nresource.labels.job_id="{job.rsplit("/", 1)[-1]}"'
        return (
            "https://console.cloud.google.com/logs/query;query="
            f"{quote(query, safe='')}?project={self._adapter.project}"
        )

    @staticmethod
    def _task_job(task: Mapping[str, Any]) -> str | None:
        container = (task.get("executor_detail") or {}).get("container_detail") or {}
        job = container.get("main_job")
        return str(job) if job else None

    def cancel_run(self, run_id: str) -> None:
        """Ask Vertex to cancel the job (running tasks stop, finished ones stay)."""
        _check_run_id(run_id)
        client = self._client("pipeline")
        with google_errors(f"cancel pipeline job {run_id}"):
            client.cancel_pipeline_job(name=run_id)

    def list_runs(self, pipeline: str | None = None, limit: int = 50) -> builtins.list[str]:
        """Job names, newest first: of one pipeline (by its mlshift name), or of every pipeline
        mlshift ran in this project and location (labelled ``mlshift-managed``)."""
        if limit < 1:
            raise ConfigError(f"limit must be at least 1, got {limit}", field="limit")
        wanted = f'labels.{LABEL_MANAGED}="true"'
        if pipeline is not None:
            wanted += f' AND labels.{LABEL_PIPELINE}="{pipeline_slug(pipeline)}"'
        client = self._client("pipeline")
        out: list[str] = []
        with google_errors("list pipeline jobs"):
            for job in client.list_pipeline_jobs(
                request={
                    "parent": self._adapter.parent,
                    "filter": wanted,
                    "order_by": "create_time desc",
                    "page_size": min(limit, 100),
                }
            ):
                if pipeline is None or job.display_name == pipeline[:128]:
                    out.append(str(job.name))
                if len(out) >= limit:
                    break
        return out

    def run_logs(self, run_id: str, step: str) -> str:
        """What ``step``'s container wrote, from Cloud Logging (``""`` before it started)."""
        _check_run_id(run_id)
        job = self._get(run_id)
        task = next(
            (
                t
                for t in (job.get("job_detail") or {}).get("task_details") or []
                if t.get("task_name") == step
            ),
            None,
        )
        if task is None:
            return ""
        main_job = self._task_job(task)
        if main_job is None:
            return str((task.get("error") or {}).get("message") or "")
        endpoint = self._adapter.options.api_endpoint or "https://logging.googleapis.com"
        body: dict[str, Any] = {
            "resourceNames": [f"projects/{self._adapter.project}"],
            "filter": f'resource.type="ml_job" AND resource.labels.job_id="{main_job.rsplit("/", 1)[-1]}"',
            "orderBy": "timestamp asc",
            "pageSize": 1000,
        }
        session = self._adapter.clients.client("session")
        lines: list[str] = []
        while True:
            response = session.post(f"{endpoint}/v2/entries:list", json=body, timeout=60)
            if response.status_code >= 400:
                if response.status_code == 404:
                    return ""
                from mlshift_vertex.errors import VertexApiError

                raise VertexApiError(
                    f"Cloud Logging refused to list the log of step {step!r}: HTTP {response.status_code} "
                    f"{response.text[:300]}",
                    provider=PROVIDER,
                    hint="the account needs roles/logging.viewer to read step logs",
                )
            page = response.json()
            for entry in page.get("entries") or []:
                text = entry.get("textPayload")
                if text is None:
                    text = json.dumps(entry.get("jsonPayload") or {})
                lines.append(str(text))
            token = page.get("nextPageToken")
            if not token:
                break
            body["pageToken"] = token
        return "\n".join(lines) + ("\n" if lines else "")

    # ------------------------------------------------------------------ schedules

    @staticmethod
    def schedule_name(pipeline: str) -> str:
        """The display name of the schedule of pipeline ``pipeline`` (``mlshift-<slug>``)."""
        return f"mlshift-{pipeline_slug(pipeline)}"

    def _find_schedule(self, pipeline: str) -> Any:
        client = self._client("schedule")
        display = self.schedule_name(pipeline)
        with google_errors(f"list the schedules of pipeline {pipeline!r}"):
            found = [
                s
                for s in client.list_schedules(
                    request={"parent": self._adapter.parent, "filter": f'display_name="{display}"'}
                )
                if s.display_name == display
            ]
        if len(found) > 1:
            logger.warning("%d schedules are named %s; mlshift keeps %s", len(found), display, found[0].name)
        return found[0] if found else None

    def _schedule_body(
        self, ir: PipelineIR, cron: str, time_zone: str, params: Mapping[str, Any] | None
    ) -> dict[str, Any]:
        values = ir.resolve_params(params)
        spec = self.compile(ir)
        return {
            "display_name": self.schedule_name(ir.name),
            "cron": cron if time_zone == "UTC" else f"TZ={time_zone} {cron}",
            "max_concurrent_run_count": 1,
            "create_pipeline_job_request": {
                "parent": self._adapter.parent,
                "pipeline_job": self._job(ir, values, spec),
            },
        }

    def schedule(self, pipeline: str) -> dict[str, Any] | None:
        """The live schedule of pipeline ``pipeline`` (``name``, ``cron``, ``state``,
        ``next_run_time``), or ``None``."""
        found = self._find_schedule(pipeline)
        if found is None:
            return None
        data: dict[str, Any] = type(found).to_dict(found, use_integers_for_enums=False)
        return {k: data.get(k) for k in ("name", "display_name", "cron", "state", "next_run_time")}

    def sync_schedule(
        self, ir: PipelineIR, params: Mapping[str, Any] | None = None, *, dry_run: bool = False
    ) -> ScheduleChange:
        """Make the pipeline's Vertex schedule match the pipeline's own ``schedule``, or none.

        Creates it, updates its cron and job when either changed, deletes it when the pipeline
        has no schedule any more; an unchanged schedule makes no mutating call. Returns what
        was done, or with ``dry_run`` what would be done (only reads are made).

        Raises:
            ConfigError: a malformed cron expression or time zone, or bad ``params``, before
                any call.
        """
        from mlshift.pipelines import parse_cron

        cron = time_zone = None
        body = None
        if ir.schedule is not None:
            cron, time_zone = ir.schedule.cron, ir.schedule.timezone
            parse_cron(cron, time_zone)  # refused here, with the field named, before any call
            body = self._schedule_body(ir, cron, time_zone, params)
        live = self._find_schedule(ir.name)
        client = self._client("schedule")

        def change(action: ScheduleAction, found: Any = None) -> ScheduleChange:
            from mlshift.adapter import ScheduleChange

            kept = action not in ("deleted", "absent")
            return ScheduleChange(
                pipeline=ir.name,
                action=action,
                schedule_id=str(found.name) if found is not None and kept else None,
                cron=cron if kept else None,
                timezone=time_zone if kept else None,
                next_run=_next_run(found) if kept and action != "updated" else None,
                dry_run=dry_run,
            )

        if body is None:
            if live is None or dry_run:
                return change("absent" if live is None else "deleted")
            with google_errors(f"delete schedule {live.name}"):
                operation = client.delete_schedule(name=live.name)
            self._adapter.wait(operation, f"delete schedule {live.name}")
            return change("deleted")
        if live is None:
            if dry_run:
                return change("created")
            with google_errors(f"create the schedule of pipeline {ir.name!r}"):
                made = client.create_schedule(parent=self._adapter.parent, schedule=body)
            return change("created", made)
        current: dict[str, Any] = type(live).to_dict(live, use_integers_for_enums=False)
        changed = [
            key
            for key in ("cron", "max_concurrent_run_count")
            if current.get(key) != body[key] and str(current.get(key)) != str(body[key])
        ]
        if self._job_differs(current.get("create_pipeline_job_request") or {}, body):
            changed.append("create_pipeline_job_request")
        if not changed or dry_run:
            return change("updated" if changed else "unchanged", live)
        from google.protobuf import field_mask_pb2

        with google_errors(f"update schedule {live.name}"):
            client.update_schedule(
                schedule={**body, "name": live.name},
                update_mask=field_mask_pb2.FieldMask(paths=changed),
            )
        return change("updated", live)

    def delete_schedule(self, pipeline_name: str, *, dry_run: bool = False) -> ScheduleChange:
        """Delete the Vertex schedule of the pipeline called ``pipeline_name`` (``absent``: none)."""
        from mlshift.adapter import ScheduleChange

        live = self._find_schedule(pipeline_name)
        if live is not None and not dry_run:
            with google_errors(f"delete schedule {live.name}"):
                operation = self._client("schedule").delete_schedule(name=live.name)
            self._adapter.wait(operation, f"delete schedule {live.name}")
        return ScheduleChange(
            pipeline=pipeline_name,
            action="absent" if live is None else "deleted",
            dry_run=dry_run,
        )

    def _job_differs(self, live: Mapping[str, Any], body: Mapping[str, Any]) -> bool:
        """Whether the schedule's job is not the one ``body`` would create (its spec, parameter
        values, labels, service account, network or key)."""
        from google.cloud.aiplatform_v1.types import Schedule

        # Both through the same proto round trip, so numbers and defaults compare alike.
        wanted = Schedule.to_dict(Schedule(body), use_integers_for_enums=False)["create_pipeline_job_request"]
        keys = ("pipeline_spec", "runtime_config", "labels", "service_account", "network", "encryption_spec")
        mine = wanted.get("pipeline_job") or {}
        theirs = live.get("pipeline_job") or {}
        return any(_canonical(mine.get(k)) != _canonical(theirs.get(k)) for k in keys)

    def close(self) -> None:
        """Nothing of its own: the clients are the adapter's."""


def _canonical(value: Any) -> str:
    return json.dumps(value or None, sort_keys=True, default=str)


def _next_run(schedule: Any) -> datetime | None:
    """When a Vertex schedule fires next, if it says (a proto timestamp, or nothing yet)."""
    value = getattr(schedule, "next_run_time", None) if schedule is not None else None
    if not value:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
