"""Pipelines on vertex://: the compiled spec, the PipelineJob sent, run ids, schedules, the fake's rules.

These tests use pipelines whose steps start no Python process (container steps in another
image, which the kit does not run), so they are quick; real steps are in test_pipelines_runs.py.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pytest

import mlshift
from mlshift.adapter import Capability
from mlshift.errors import ConfigError, NotFound, UnsupportedOperation
from mlshift.pipelines import ContainerStep, Pipeline
from mlshift.pipelines.ir import ScheduleIR
from mlshift_vertex import VertexAdapter
from mlshift_vertex.testing import FakeVertex
from mlshift_vertex.testing._pipelines import evaluate_condition

ROOT = Path(__file__).resolve().parents[3]
TARGET = "vertex://my-project/us-central1"
PARENT = "projects/my-project/locations/us-central1"


def _pipeline(name: str = "Nightly-Scores", schedule: str | None = None, tz: str = "UTC") -> Pipeline:
    score = ContainerStep(
        "score",
        image="europe-docker.pkg.dev/acme/tools/scorer:1",
        command=["score", "--rows", "{{inputs.rows}}"],
        inputs={"rows": 100},
    )
    return Pipeline(name, steps=[score], schedule=schedule, timezone=tz)


def train_gate_deploy() -> Pipeline:
    from mlshift.pipelines import load_pipeline

    return load_pipeline(f"{ROOT / 'examples' / 'train_gate_deploy.py'}:train_gate_deploy")


def _adapter(client: mlshift.Client) -> VertexAdapter:
    adapter = client.adapter
    assert isinstance(adapter, VertexAdapter)
    return adapter


def _wait_job(vertex: FakeVertex, name: str) -> dict[str, Any]:
    return vertex.pipelines.wait(name, timeout=120)


def test_the_target_declares_pipelines_conditions_and_schedules(client: mlshift.Client) -> None:
    assert {
        Capability.PIPELINES,
        Capability.PIPELINE_CONDITIONS,
        Capability.SCHEDULES,
    } <= client.adapter.capabilities
    assert client.adapter.pipelines is not None


def test_the_compiled_spec_runs_the_serving_image_against_this_target(client: mlshift.Client) -> None:
    from google.protobuf import json_format
    from kfp.pipeline_spec import pipeline_spec_pb2

    spec = client.pipelines.compile(train_gate_deploy())
    # Strictly a KFP PipelineSpec: an unknown field would be refused here.
    json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec())
    assert spec["defaultPipelineRoot"] == "gs://mlshift-kit/pipelines/runs"
    train = spec["deploymentSpec"]["executors"]["exec-train"]["container"]
    assert train["image"] == "us-central1-docker.pkg.dev/my-project/mlshift/serving:latest"
    register = spec["deploymentSpec"]["executors"]["exec-register"]["container"]
    assert (
        '"target": "vertex://my-project/us-central1?staging_bucket=gs://mlshift-kit"' in register["args"][-1]
    )
    gate = spec["root"]["dag"]["tasks"]["condition-quality-gate"]["triggerPolicy"]["condition"]
    assert ">=" in gate


def test_a_run_is_one_pipeline_job_with_the_spec_inline(client: mlshift.Client, vertex: FakeVertex) -> None:
    before = len(vertex.mutating_calls())
    run = client.pipelines.run(_pipeline())
    assert run.id.startswith(f"{PARENT}/pipelineJobs/nightly-scores-")
    calls = vertex.mutating_calls()[before:]
    assert [(c.method, c.path) for c in calls] == [("POST", f"/v1/{PARENT}/pipelineJobs")]
    job = _wait_job(vertex, run.id)
    assert job["displayName"] == "Nightly-Scores"
    assert job["labels"] == {"mlshift-managed": "true", "mlshift-pipeline": "nightly-scores"}
    assert job["pipelineSpec"]["schemaVersion"] == "2.1.0"
    assert job["runtimeConfig"]["gcsOutputDirectory"] == "gs://mlshift-kit/pipelines/runs"
    finished = run.wait(timeout=120)
    assert finished.status == "succeeded"
    step = finished.step("score")
    assert (step.kind, step.status) == ("container", "succeeded")
    assert "does not run image" in run.logs("score")  # the task's log, from Cloud Logging


def test_runs_are_listed_newest_first_by_pipeline(client: mlshift.Client, vertex: FakeVertex) -> None:
    first = client.pipelines.run(_pipeline()).wait(timeout=120)
    second = client.pipelines.run(_pipeline(), cache=False).wait(timeout=120)
    other = client.pipelines.run(_pipeline("other")).wait(timeout=120)
    assert [r.id for r in client.pipelines.list("Nightly-Scores")] == [second.id, first.id]
    assert [r.id for r in client.pipelines.list()] == [other.id, second.id, first.id]
    assert client.pipelines.get(first.id).status == "succeeded"
    # cache=False turns caching off in that job's spec only.
    jobs = vertex.pipelines.jobs()
    caching = [
        t["cachingOptions"]["enableCache"]
        for j in (first.id, second.id)
        for t in jobs[j]["pipelineSpec"]["root"]["dag"]["tasks"].values()
    ]
    assert caching == [True, False]
    assert second.step("score").status == "succeeded"


def test_parameters_are_checked_before_anything_is_sent(client: mlshift.Client, vertex: FakeVertex) -> None:
    before = len(vertex.calls)
    with pytest.raises(ConfigError, match="nope"):
        client.pipelines.run(train_gate_deploy(), {"nope": 1})
    with pytest.raises(UnsupportedOperation, match="max_parallel"):
        client.pipelines.run(_pipeline(), max_parallel=2)
    assert len(vertex.calls) == before


def test_run_ids_are_checked_and_unknown_jobs_are_not_found(
    client: mlshift.Client, vertex: FakeVertex
) -> None:
    before = len(vertex.calls)
    with pytest.raises(ConfigError, match="not a Vertex AI pipeline job name"):
        client.pipelines.get("arn:aws:sagemaker:us-east-1:1:pipeline/x/execution/y")
    assert len(vertex.calls) == before
    with pytest.raises(NotFound, match="pipelineJobs/nothing-here"):
        client.pipelines.get(f"{PARENT}/pipelineJobs/nothing-here")


def test_a_quota_error_on_submit_is_named(client: mlshift.Client, vertex: FakeVertex) -> None:
    from mlshift.errors import QuotaExceeded

    vertex.fail("POST .*/pipelineJobs$", 429, "Quota exceeded for aiplatform.googleapis.com/pipeline_jobs")
    with pytest.raises(QuotaExceeded, match="Quota exceeded") as caught:
        client.pipelines.run(_pipeline())
    assert "Quotas" in str(caught.value)
    assert vertex.pipelines.jobs() == {}


def test_the_fake_refuses_what_vertex_refuses(client: mlshift.Client) -> None:
    from google.api_core import exceptions

    service = _adapter(client).pipelines._client("pipeline")
    spec = client.pipelines.compile(_pipeline())
    job = {"display_name": "x", "pipeline_spec": spec, "runtime_config": {"gcs_output_directory": "gs://b/r"}}
    with pytest.raises(exceptions.BadRequest, match="pipeline job id"):
        service.create_pipeline_job(parent=PARENT, pipeline_job=job, pipeline_job_id="Bad_Id")
    unknown = {**job, "runtime_config": {"gcs_output_directory": "gs://b/r", "parameter_values": {"zz": 1}}}
    with pytest.raises(exceptions.BadRequest, match="parameter zz is not found"):
        service.create_pipeline_job(parent=PARENT, pipeline_job=unknown, pipeline_job_id="ok-1")
    created = service.create_pipeline_job(parent=PARENT, pipeline_job=job, pipeline_job_id="ok-2")
    with pytest.raises(exceptions.Conflict, match="already exists"):
        service.create_pipeline_job(parent=PARENT, pipeline_job=job, pipeline_job_id="ok-2")
    deadline = time.monotonic() + 60
    while service.get_pipeline_job(name=created.name).state.name == "PIPELINE_STATE_RUNNING":
        assert time.monotonic() < deadline
        time.sleep(0.05)
    with pytest.raises(exceptions.BadRequest, match="Cannot cancel"):
        service.cancel_pipeline_job(name=created.name)


@pytest.mark.parametrize(
    ("expression", "expected"),
    [
        ("inputs.parameter_values['pipelinechannel--a'] >= 0.9", True),
        ("!(inputs.parameter_values['pipelinechannel--a'] >= 0.9)", False),
        ("int(inputs.parameter_values['pipelinechannel--n']) == 3", True),
        ("double(inputs.parameter_values['pipelinechannel--n']) < 2.5", False),
        ("inputs.parameter_values['pipelinechannel--s'] != 'a\\'b'", True),
        ("inputs.parameter_values['pipelinechannel--b'] == true", True),
    ],
)
def test_the_fake_evaluates_kfp_trigger_conditions(expression: str, expected: bool) -> None:
    values = {
        "pipelinechannel--a": 0.93,
        "pipelinechannel--n": 3.0,
        "pipelinechannel--s": "x",
        "pipelinechannel--b": True,
    }
    assert evaluate_condition(expression, values) is expected


def test_the_fake_runs_no_code_from_a_condition() -> None:
    from mlshift_vertex.testing._pipelines import TaskFailed

    with pytest.raises(TaskFailed, match="unsupported"):
        evaluate_condition("__import__('os').getcwd() == ''", {})


# ---------------------------------------------------------------------- schedules


def test_a_schedule_is_created_once_and_then_left_alone(client: mlshift.Client, vertex: FakeVertex) -> None:
    pipelines = _adapter(client).pipelines
    pipeline = _pipeline(schedule="0 3 * * *", tz="Europe/Paris")
    assert pipelines.sync_schedule(pipeline.ir, dry_run=True).action == "created"
    assert vertex.pipelines.schedules() == {} and vertex.mutating_calls() == []
    assert pipelines.sync_schedule(pipeline.ir).action == "created"
    (schedule,) = vertex.pipelines.schedules().values()
    assert schedule["displayName"] == "mlshift-nightly-scores"
    assert schedule["cron"] == "TZ=Europe/Paris 0 3 * * *"
    request = schedule["createPipelineJobRequest"]
    assert request["parent"] == PARENT
    assert request["pipelineJob"]["labels"]["mlshift-pipeline"] == "nightly-scores"
    assert request["pipelineJob"]["pipelineSpec"] == client.pipelines.compile(pipeline)
    before = len(vertex.mutating_calls())
    assert pipelines.sync_schedule(pipeline.ir).action == "unchanged"
    assert vertex.mutating_calls()[before:] == []
    live = pipelines.schedule("Nightly-Scores")
    assert live is not None and live["cron"] == "TZ=Europe/Paris 0 3 * * *" and live["state"] == "ACTIVE"


def test_a_changed_schedule_is_updated_and_a_removed_one_deleted(
    client: mlshift.Client, vertex: FakeVertex
) -> None:
    pipelines = _adapter(client).pipelines
    pipelines.sync_schedule(_pipeline(schedule="0 3 * * *").ir)
    (name,) = vertex.pipelines.schedules()
    before = len(vertex.mutating_calls())
    assert pipelines.sync_schedule(_pipeline(schedule="30 4 * * 1").ir, dry_run=True).action == "updated"
    assert pipelines.sync_schedule(_pipeline().ir, dry_run=True).action == "deleted"
    assert vertex.mutating_calls()[before:] == []
    assert pipelines.sync_schedule(_pipeline(schedule="30 4 * * 1").ir).action == "updated"
    assert vertex.pipelines.schedules()[name]["cron"] == "30 4 * * 1"
    changed = Pipeline(
        "Nightly-Scores",
        steps=[
            ContainerStep(
                "score",
                image="europe-docker.pkg.dev/acme/tools/scorer:2",
                command=["score"],
                inputs={"rows": 1},
            )
        ],
        schedule="30 4 * * 1",
    )
    before = len(vertex.mutating_calls())
    assert pipelines.sync_schedule(changed.ir).action == "updated"
    (patch,) = vertex.mutating_calls()[before:]
    assert patch.method == "PATCH" and patch.path == f"/v1/{name}"
    spec = vertex.pipelines.schedules()[name]["createPipelineJobRequest"]["pipelineJob"]["pipelineSpec"]
    assert spec["deploymentSpec"]["executors"]["exec-score"]["container"]["image"].endswith("scorer:2")
    assert pipelines.sync_schedule(_pipeline().ir).action == "deleted"
    assert vertex.pipelines.schedules() == {}
    assert pipelines.sync_schedule(_pipeline().ir).action == "absent"


def test_a_scheduled_job_runs_the_compiled_pipeline(client: mlshift.Client, vertex: FakeVertex) -> None:
    pipelines = _adapter(client).pipelines
    pipelines.sync_schedule(_pipeline(schedule="0 3 * * *").ir)
    (name,) = vertex.pipelines.schedules()
    job = vertex.pipelines.trigger(name)
    assert vertex.pipelines.wait(job)["scheduleName"] == name
    run = client.pipelines.get(job).wait(timeout=120)
    assert run.status == "succeeded" and run.pipeline == "Nightly-Scores"
    assert [r.id for r in client.pipelines.list("Nightly-Scores")] == [job]


def test_client_pipelines_schedule_syncs_the_vertex_schedule(
    client: mlshift.Client, vertex: FakeVertex
) -> None:
    made = client.pipelines.schedule(_pipeline(schedule="0 3 * * *"))
    (name,) = vertex.pipelines.schedules()
    assert (made.action, made.schedule_id, made.cron) == ("created", name, "0 3 * * *")
    before = len(vertex.mutating_calls())
    assert client.pipelines.schedule(_pipeline(schedule="0 3 * * *")).action == "unchanged"
    assert vertex.mutating_calls()[before:] == []
    assert client.pipelines.schedule(_pipeline(schedule="30 4 * * 1")).action == "updated"
    assert vertex.pipelines.schedules()[name]["cron"] == "30 4 * * 1"
    assert client.pipelines.unschedule("Nightly-Scores", dry_run=True).action == "deleted"
    assert name in vertex.pipelines.schedules()
    assert client.pipelines.unschedule("Nightly-Scores").action == "deleted"
    assert vertex.pipelines.schedules() == {}
    assert client.pipelines.unschedule("Nightly-Scores").action == "absent"


def test_a_malformed_cron_is_refused_before_any_call(client: mlshift.Client, vertex: FakeVertex) -> None:
    before = len(vertex.calls)
    with pytest.raises(ConfigError):
        _adapter(client).pipelines.sync_schedule(
            _pipeline().ir.model_copy(update={"schedule": ScheduleIR(cron="61 * * * *", timezone="UTC")})
        )
    assert len(vertex.calls) == before
