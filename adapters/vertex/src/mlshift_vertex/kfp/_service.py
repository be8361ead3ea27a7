"""Pipelines on a self-hosted Kubeflow Pipelines: compile to KFP IR, upload a version, run, follow.

- A pipeline is a KFP pipeline of the same display name; each distinct compiled spec is one
  pipeline version named ``<pipeline>-<first 12 hex of the spec's sha256>``, so submitting an
  unchanged pipeline uploads nothing and a changed one adds a version.
- A run is created from that version (``pipeline_version_reference``) with the parameter values
  in ``runtime_config.parameters``; ``use_cache=False`` uploads the spec with caching turned off
  on every task (as ``kfp.Client(enable_caching=False)`` does on the root's).
- Step states come from the run's ``run_details.task_details``, by task name (the step's name
  in lower case). KFP skips a step's task when its cache has the outputs (``SKIPPED``), while
  a condition that says no skips the condition's sub-DAG task, and the steps inside it get no
  task at all: so a step task reported ``SKIPPED`` is ``cached``, and a step with no task when
  the run has ended was not reached: ``skipped``.
"""

from __future__ import annotations

import builtins
import hashlib
import json
from collections.abc import Mapping
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any

from mlshift.errors import ConfigError, NotFound
from mlshift.pipelines.runs import RemoteRunState, StepRun
from mlshift_vertex.kfp._client import PROVIDER, KubeflowClient, name_filter
from mlshift_vertex.kfp._options import KubeflowOptions

if TYPE_CHECKING:
    from mlshift.adapter import ScheduleAction, ScheduleChange
    from mlshift.pipelines.ir import PipelineIR

__all__ = ["KubeflowPipelineService", "step_order"]

_RUN_STATES = {
    "SUCCEEDED": "succeeded",
    "SKIPPED": "succeeded",
    "FAILED": "failed",
    "CANCELED": "cancelled",
}
_TASK_STATES = {
    "PENDING": "pending",
    "RUNNING": "running",
    "SUCCEEDED": "succeeded",
    "FAILED": "failed",
    "CANCELING": "running",
    "CANCELED": "cancelled",
    "PAUSED": "running",
}


def _kind(executor: Mapping[str, Any]) -> tuple[str, str | None]:
    """A step's kind and IR name from its executor (``python``/``register``/``deploy``/``fail``)."""
    container = executor.get("container") or {}
    command = list(container.get("command") or [])
    args = list(container.get("args") or [])
    if command[-1:] != ["mlshift.pipelines.kfp_step"] or not args:
        return "container", None
    kind = {"register": "register_model"}.get(args[0], args[0])
    if "--task" in args:
        try:
            task = json.loads(args[args.index("--task") + 1])
        except (ValueError, IndexError):
            return kind, None
        return kind, task.get("step")
    return kind, None


def step_order(spec: Mapping[str, Any]) -> list[tuple[str, str, str]]:
    """``(step name, KFP task name, kind)`` for every executor task of a compiled spec.

    Tasks come in dependency order, those of a condition's sub-DAG where its task would be.
    """
    from graphlib import TopologicalSorter

    components = spec.get("components") or {}
    executors = (spec.get("deploymentSpec") or {}).get("executors") or {}
    out: list[tuple[str, str, str]] = []

    def walk(dag: Mapping[str, Any]) -> None:
        tasks = dag.get("tasks") or {}
        graph = {n: set(t.get("dependentTasks") or []) & set(tasks) for n, t in tasks.items()}
        sorter = TopologicalSorter(graph)
        for name in sorter.static_order():
            component = components.get((tasks[name].get("componentRef") or {}).get("name", "")) or {}
            if "dag" in component:
                walk(component["dag"])
            elif component.get("executorLabel"):
                kind, step = _kind(executors.get(component["executorLabel"]) or {})
                out.append((step or name, name, kind))

    walk((spec.get("root") or {}).get("dag") or {})
    return out


def _no_cache(spec: dict[str, Any]) -> dict[str, Any]:
    """The spec with caching off on every task, root and sub-DAGs alike."""
    copy: dict[str, Any] = json.loads(json.dumps(spec))
    dags = [copy["root"]["dag"]] + [c["dag"] for c in copy.get("components", {}).values() if "dag" in c]
    for dag in dags:
        for task in dag.get("tasks", {}).values():
            task["cachingOptions"] = {"enableCache": False}
    return copy


def _time(value: Any) -> datetime | None:
    """A KFP timestamp; the zero time (``1970-01-01T00:00:00Z``) it sends for "not yet" is ``None``."""
    if not value:
        return None
    try:
        parsed = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return None if parsed.year <= 1970 else parsed


class KubeflowPipelineService:
    """``PipelineService`` on a Kubeflow Pipelines API server (v2beta1).

    Args:
        client: The REST client.
        options: The target's options.
        target: The target's URI, for messages.
    """

    def __init__(self, client: KubeflowClient, options: KubeflowOptions, target: str) -> None:
        self._api = client
        self.options = options
        self.target = target
        # Run id -> its steps, for runs this process submitted (others are read from their spec).
        self._steps: dict[str, list[tuple[str, str, str]]] = {}
        self._specs: dict[str, dict[str, Any]] = {}

    @property
    def poll_interval(self) -> float:
        return self.options.poll_interval

    # ------------------------------------------------------------------ compile and upload

    def compile(self, ir: PipelineIR) -> dict[str, Any]:
        """The KFP ``PipelineSpec`` for ``ir``, in the target's image, acting on ``step_target``.

        Raises:
            ConfigError: a step KFP IR cannot express, or a register/deploy step with no target
                (set the target's ``step_target`` option or the step's own ``target``).
        """
        from mlshift.pipelines.kfp import DEFAULT_IMAGE, compile_kfp

        try:
            return compile_kfp(
                ir,
                image=self.options.image or DEFAULT_IMAGE,
                target=self.options.step_target,
                pipeline_root=self.options.pipeline_root,
            )
        except ConfigError as exc:
            if not (exc.field or "").endswith(".target"):
                raise
            # The compiler's hint names its own argument; on this target it is an option.
            raise ConfigError(
                exc.message,
                field=exc.field,
                hint="Kubeflow has no models or endpoints: set the kfp target's step_target option to "
                "the target the step registers or deploys on (kfp://HOST?step_target=vertex://PROJECT/"
                "LOCATION, or targets.NAME.options.step_target in mlshift.yaml), or target= on the step",
            ) from None

    def _pipeline_id(self, name: str) -> str | None:
        found = self._api.request(
            "GET",
            "/pipelines",
            f"find pipeline {name!r}",
            params={"filter": name_filter("display_name", name), "namespace": self.options.namespace},
        )
        pipelines = found.get("pipelines") or []
        return str(pipelines[0]["pipeline_id"]) if pipelines else None

    def _version_id(self, pipeline_id: str, version: str) -> str | None:
        found = self._api.request(
            "GET",
            f"/pipelines/{pipeline_id}/versions",
            f"find pipeline version {version!r}",
            params={"filter": name_filter("display_name", version)},
        )
        versions = found.get("pipeline_versions") or []
        return str(versions[0]["pipeline_version_id"]) if versions else None

    def upload(self, ir: PipelineIR, spec: Mapping[str, Any]) -> tuple[str, str]:
        """The pipeline and version ids for ``spec``, uploading what the server lacks.

        Raises:
            ProviderError: the API refused (translated: ``AuthError``, ``Conflict``, ...).
        """
        from mlshift.pipelines.kfp import to_yaml

        text = to_yaml(spec)
        version = f"{ir.name.lower()}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
        files = {"uploadfile": (f"{version}.yaml", text.encode(), "application/x-yaml")}
        pipeline_id = self._pipeline_id(ir.name)
        if pipeline_id is None:
            made = self._api.request(
                "POST",
                "/pipelines/upload",
                f"upload pipeline {ir.name!r}",
                params={
                    "name": ir.name,
                    "display_name": ir.name,
                    "description": ir.description,
                    "namespace": self.options.namespace,
                },
                files=files,
            )
            pipeline_id = str(made["pipeline_id"])
        version_id = self._version_id(pipeline_id, version)
        if version_id is None:
            made = self._api.request(
                "POST",
                "/pipelines/upload_version",
                f"upload version {version!r} of pipeline {ir.name!r}",
                params={"pipelineid": pipeline_id, "name": version, "display_name": version},
                files=files,
            )
            version_id = str(made["pipeline_version_id"])
        return pipeline_id, version_id

    # ------------------------------------------------------------------ runs

    def submit(
        self,
        ir: PipelineIR,
        params: Mapping[str, Any] | None = None,
        *,
        use_cache: bool = True,
        max_parallel: int | None = None,
    ) -> str:
        """Upload the pipeline version (if new) and create a run of it; returns the run id.

        ``max_parallel`` is not sent: Kubeflow runs as many tasks at once as the cluster allows.

        Raises:
            ConfigError: an unknown, missing or mistyped parameter; a spec KFP cannot express.
        """
        values = ir.resolve_params(params)
        spec = self.compile(ir)
        if not use_cache:
            spec = _no_cache(spec)
        pipeline_id, version_id = self.upload(ir, spec)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d-%H%M%S")
        body: dict[str, Any] = {
            "display_name": f"{ir.name}-{stamp}",
            "pipeline_version_reference": {"pipeline_id": pipeline_id, "pipeline_version_id": version_id},
            "runtime_config": {"parameters": dict(values)},
        }
        if self.options.pipeline_root:
            body["runtime_config"]["pipeline_root"] = self.options.pipeline_root
        if self.options.experiment_id:
            body["experiment_id"] = self.options.experiment_id
        if self.options.service_account:
            body["service_account"] = self.options.service_account
        run = self._api.request("POST", "/runs", f"start a run of pipeline {ir.name!r}", body=body)
        run_id = str(run["run_id"])
        self._steps[run_id] = [(s.name, s.name.lower(), s.kind) for s in ir.steps]
        return run_id

    def _run(self, run_id: str) -> dict[str, Any]:
        if not run_id or "/" in run_id:
            raise NotFound(f"no pipeline run {run_id!r} on {self.target}", provider=PROVIDER)
        run: dict[str, Any] = self._api.request("GET", f"/runs/{run_id}", f"read run {run_id}")
        return run

    def _spec_of(self, run: Mapping[str, Any]) -> dict[str, Any]:
        ref = run.get("pipeline_version_reference") or {}
        version_id = ref.get("pipeline_version_id") or run.get("pipeline_version_id")
        if run.get("pipeline_spec"):
            return dict(run["pipeline_spec"])
        if not version_id:
            return {}
        spec = self._specs.get(version_id)
        if spec is None:
            version = self._api.request(
                "GET",
                f"/pipelines/{ref.get('pipeline_id', '-')}/versions/{version_id}",
                f"read pipeline version {version_id}",
            )
            spec = dict(version.get("pipeline_spec") or {})
            # A version stores the YAML's documents: the PipelineSpec, maybe a PlatformSpec.
            spec = dict(spec.get("pipeline_spec", spec))
            self._specs[version_id] = spec
        return spec

    def describe_run(self, run_id: str) -> RemoteRunState:
        """The run and each step's state, from ``GET /runs/{id}``.

        Raises:
            NotFound: no such run.
        """
        run = self._run(run_id)
        state = str(run.get("state") or "PENDING")
        status = _RUN_STATES.get(state, "running")
        spec: dict[str, Any] = {}
        steps = self._steps.get(run_id)
        if steps is None:
            spec = self._spec_of(run)
            steps = step_order(spec)
            self._steps[run_id] = steps
        details: dict[str, Mapping[str, Any]] = {}
        for task in (run.get("run_details") or {}).get("task_details") or []:
            details[str(task.get("display_name", ""))] = task
        out = []
        failed_message: str | None = None
        for name, task_name, kind in steps:
            task = details.get(task_name)
            message = None
            if task is None:
                step_status = "skipped" if status != "running" else "pending"
            else:
                raw = str(task.get("state") or "PENDING")
                if raw == "SKIPPED":
                    step_status = "cached"
                else:
                    step_status = _TASK_STATES.get(raw, "pending")
                    if step_status in ("pending", "running") and status != "running":
                        step_status = "cancelled" if status == "cancelled" else "failed"
                message = ((task.get("error") or {}).get("message")) or None
                if step_status == "failed" and failed_message is None:
                    failed_message = f"step {name!r} failed" + (f": {message}" if message else "")
            out.append(
                StepRun(
                    name=name,
                    kind=kind,
                    status=step_status,
                    attempts=1 if step_status in ("succeeded", "failed") else 0,
                    executions=1 if step_status in ("succeeded", "failed", "running") else 0,
                    message=message,
                    started_at=_time(task.get("start_time")) if task else None,
                    finished_at=_time(task.get("end_time")) if task else None,
                    log=task.get("pod_name") if task else None,
                )
            )
        run_error = (run.get("error") or {}).get("message")
        params = (run.get("runtime_config") or {}).get("parameters") or {}
        display = str(run.get("display_name") or "")
        pipeline = (spec.get("pipelineInfo") or {}).get("displayName") or display.rsplit("-", 2)[0]
        return RemoteRunState(
            id=run_id,
            pipeline=pipeline,
            status=status,
            message=(failed_message or run_error) if status == "failed" else run_error,
            params=dict(params),
            created_at=_time(run.get("created_at")),
            finished_at=_time(run.get("finished_at")),
            steps=tuple(out),
        )

    def cancel_run(self, run_id: str) -> None:
        """``POST /runs/{id}:terminate`` (a finished run is left as it is)."""
        run = self._run(run_id)
        if str(run.get("state")) in ("SUCCEEDED", "FAILED", "CANCELED", "SKIPPED"):
            return
        self._api.request("POST", f"/runs/{run_id}:terminate", f"terminate run {run_id}")

    def list_runs(self, pipeline: str | None = None, limit: int = 50) -> builtins.list[str]:
        """Run ids, newest first (of the pipeline called ``pipeline``, when given)."""
        pipeline_id = None
        if pipeline is not None:
            pipeline_id = self._pipeline_id(pipeline)
            if pipeline_id is None:
                return []
        ids: list[str] = []
        token: str | None = None
        while len(ids) < limit:
            page = self._api.request(
                "GET",
                "/runs",
                "list runs",
                params={
                    "sort_by": "created_at desc",
                    "page_size": 100,
                    "page_token": token,
                    "experiment_id": self.options.experiment_id,
                    "namespace": self.options.namespace,
                },
            )
            for run in page.get("runs") or []:
                ref = run.get("pipeline_version_reference") or {}
                if pipeline_id is None or ref.get("pipeline_id") == pipeline_id:
                    ids.append(str(run["run_id"]))
            token = page.get("next_page_token") or None
            if not token:
                break
        return ids[:limit]

    # ------------------------------------------------------------------ recurring runs

    def _recurring(self, name: str) -> list[dict[str, Any]]:
        found = self._api.request(
            "GET",
            "/recurringruns",
            f"find recurring run {name!r}",
            params={
                "filter": name_filter("display_name", name),
                "namespace": self.options.namespace,
                "experiment_id": self.options.experiment_id,
            },
        )
        return list(found.get("recurringRuns") or found.get("recurring_runs") or [])

    @staticmethod
    def _schedule_name(pipeline: str) -> str:
        return f"{pipeline}-schedule"

    def _uploaded_version(self, ir: PipelineIR, spec: Mapping[str, Any]) -> str | None:
        """The version id :meth:`upload` would return for ``spec``, if already there (reads only)."""
        from mlshift.pipelines.kfp import to_yaml

        text = to_yaml(spec)
        pipeline_id = self._pipeline_id(ir.name)
        if pipeline_id is None:
            return None
        return self._version_id(
            pipeline_id, f"{ir.name.lower()}-{hashlib.sha256(text.encode()).hexdigest()[:12]}"
        )

    def sync_schedule(
        self, ir: PipelineIR, params: Mapping[str, Any] | None = None, *, dry_run: bool = False
    ) -> ScheduleChange:
        """Make ``ir.schedule`` a KFP recurring run named ``<pipeline>-schedule``.

        The pipeline version is uploaded as for a run. An unchanged schedule (same version,
        parameters and cron) makes no change; a changed one replaces the recurring run (so its
        id changes); a pipeline without a schedule loses it. KFP's cron has a seconds field:
        ``0 3 * * *`` becomes ``0 0 3 * * *``. Runs do not catch up on missed ticks and do not
        overlap (``no_catchup``, ``max_concurrency`` 1), as on the local scheduler. With
        ``dry_run`` only reads are made.

        Raises:
            ConfigError: a time zone other than UTC (KFP fires in its controller's time zone,
                UTC on a standard install), bad parameters, before any call.
        """
        from mlshift.adapter import ScheduleChange

        if ir.schedule is None:
            return self.delete_schedule(ir.name, dry_run=dry_run)
        if ir.schedule.timezone not in ("UTC", "Etc/UTC"):
            raise ConfigError(
                f"pipeline {ir.name!r}: schedule time zone {ir.schedule.timezone!r}: Kubeflow recurring "
                "runs fire in the controller's time zone (UTC on a standard install)",
                field="schedule.timezone",
                hint="write the cron in UTC and drop the time zone",
            )
        values = dict(ir.resolve_params(params))
        spec = self.compile(ir)
        name = self._schedule_name(ir.name)
        cron = f"0 {ir.schedule.cron}"
        existing_runs = self._recurring(name)

        def change(action: ScheduleAction, schedule_id: str | None) -> ScheduleChange:
            assert ir.schedule is not None
            return ScheduleChange(
                pipeline=ir.name,
                action=action,
                schedule_id=schedule_id,
                cron=ir.schedule.cron,
                timezone=ir.schedule.timezone,
                dry_run=dry_run,
            )

        pipeline_id: str | None = None
        if dry_run:
            version_id = self._uploaded_version(ir, spec)
        else:
            pipeline_id, version_id = self.upload(ir, spec)
        for existing in existing_runs:
            same = (
                version_id is not None
                and (existing.get("pipeline_version_reference") or {}).get("pipeline_version_id")
                == version_id
                and ((existing.get("runtime_config") or {}).get("parameters") or {}) == values
                and ((existing.get("trigger") or {}).get("cron_schedule") or {}).get("cron") == cron
                and existing.get("mode", "ENABLE") == "ENABLE"
            )
            if same:
                return change("unchanged", str(existing["recurring_run_id"]))
        action: ScheduleAction = "updated" if existing_runs else "created"
        if dry_run:
            return change(action, None)
        body: dict[str, Any] = {
            "display_name": name,
            "description": f"mlshift schedule of pipeline {ir.name}",
            "pipeline_version_reference": {"pipeline_id": pipeline_id, "pipeline_version_id": version_id},
            "runtime_config": {"parameters": values},
            "trigger": {"cron_schedule": {"cron": cron}},
            "mode": "ENABLE",
            "max_concurrency": 1,
            "no_catchup": True,
        }
        if self.options.pipeline_root:
            body["runtime_config"]["pipeline_root"] = self.options.pipeline_root
        if self.options.experiment_id:
            body["experiment_id"] = self.options.experiment_id
        if self.options.service_account:
            body["service_account"] = self.options.service_account
        for existing in existing_runs:
            self._api.request(
                "DELETE",
                f"/recurringruns/{existing['recurring_run_id']}",
                f"replace recurring run {name!r}",
            )
        made = self._api.request("POST", "/recurringruns", f"create recurring run {name!r}", body=body)
        return change(action, str(made["recurring_run_id"]))

    def delete_schedule(self, pipeline_name: str, *, dry_run: bool = False) -> ScheduleChange:
        """Delete the recurring run :meth:`sync_schedule` made for ``pipeline_name`` (``absent``: none)."""
        from mlshift.adapter import ScheduleChange

        found = self._recurring(self._schedule_name(pipeline_name))
        if not dry_run:
            for existing in found:
                self._api.request(
                    "DELETE",
                    f"/recurringruns/{existing['recurring_run_id']}",
                    f"delete recurring run of {pipeline_name!r}",
                )
        return ScheduleChange(
            pipeline=pipeline_name, action="deleted" if found else "absent", dry_run=dry_run
        )

    def run_logs(self, run_id: str, step: str) -> str:
        """Where the step's log is: KFP keeps logs in the task's pod, not in its API.

        Raises:
            NotFound: no such run or step.
        """
        state = self.describe_run(run_id)
        found = next((s for s in state.steps if s.name == step), None)
        if found is None:
            raise NotFound(f"run {run_id} has no step {step!r}", provider=PROVIDER)
        if not found.log:
            return ""
        namespace = self.options.namespace or "kubeflow"
        return (
            f"step {step!r} ran in pod {found.log}; its log: "
            f"kubectl logs -n {namespace} {found.log} -c main (or the run's page in the Kubeflow UI)\n"
        )
