"""Pipelines on azureml://: the IR compiled to a pipeline job, what is refused before any call,
and schedules as ``JobSchedule``s kept in step with the pipeline."""

from __future__ import annotations

from typing import Any

import pytest

import mlshift
from conftest import azureml
from mlshift.adapter import Capability
from mlshift.errors import ConfigError, UnsupportedOperation
from mlshift.pipelines import ContainerStep, pipeline, when
from mlshift.pipelines.ir import ScheduleIR
from mlshift_azureml.testing import FakeAzureML
from pipeline_steps import consume, produce, tiny


def test_the_target_declares_pipelines_conditions_and_schedules(client: mlshift.Client) -> None:
    assert {
        Capability.PIPELINES,
        Capability.PIPELINE_CONDITIONS,
        Capability.SCHEDULES,
    } <= client.adapter.capabilities


def test_mlshift_pipelines_compile_routes_to_the_adapter(
    client: mlshift.Client, azure: FakeAzureML, example: Any
) -> None:
    from mlshift._client import compile_pipeline

    document = compile_pipeline(example, client.target)  # what `mlshift pipelines compile -t URI` runs
    assert document == azureml(client).pipelines.compile(example.ir)
    assert document["type"] == "pipeline" and document["settings"]["default_compute"] == "serverless"
    assert list(document["jobs"]) == [
        "prepare",
        "train",
        "evaluate",
        "quality_gate",
        "register",
        "fail",
        "deploy",
    ]
    gate = document["jobs"]["quality_gate"]
    assert gate["display_name"] == "quality-gate" and gate["tags"]["mlshift:kind"] == "gate"
    assert gate["inputs"] == {
        "left": "${{parent.jobs.evaluate.outputs.mlshift}}",
        "right": "${{parent.inputs.threshold}}",
    }
    assert document["jobs"]["deploy"]["resources"] == {"instance_type": "Standard_DS3_v2"}
    # Compiling sends nothing but reads (the serving environment is made once, as for endpoints).
    made = azure.mutating_calls()
    assert made and all("/environments/mlshift-serve/versions/" in c.url for c in made)


def test_what_azure_cannot_run_is_refused_before_any_call(
    client: mlshift.Client, azure: FakeAzureML, example: Any
) -> None:
    service = azureml(client).pipelines
    with pytest.raises(ConfigError, match="not an Azure ML job name"):
        client.pipelines.get("arn:aws:sagemaker:us-east-1:1:pipeline/p/execution/x")
    with pytest.raises(UnsupportedOperation, match="resuming a run"):
        client.pipelines.resume("train-gate-deploy-20261206-abc")
    with pytest.raises(ConfigError, match="has no parameter 'k'"):
        client.pipelines.run(example, {"k": 1})

    @pipeline
    def clash() -> None:
        produce.options(name="Fit")()
        produce.options(name="fit")()

    with pytest.raises(ConfigError, match="would both be node .fit."):
        service.submit(clash.ir)

    @pipeline
    def gated_container(threshold: float = 0.5) -> None:
        with when(consume(data=produce().outputs["out"]).output > threshold, name="big"):
            ContainerStep("shout", "busybox", ["echo", "hi"])

    with pytest.raises(UnsupportedOperation, match="container step 'shout' sits under a condition"):
        service.submit(gated_container.ir)
    assert azure.mutating_calls() == []


def test_a_schedule_is_created_kept_updated_and_deleted_with_the_pipeline(
    client: mlshift.Client, azure: FakeAzureML
) -> None:
    service = azureml(client).pipelines
    assert service.sync_schedule(tiny.ir, dry_run=True).action == "created"
    assert azure.mutating_calls() == []
    made = service.sync_schedule(tiny.ir)
    assert (made.action, made.schedule_id, made.cron, made.timezone) == (
        "created",
        "mlshift-tiny",
        "0 3 * * *",
        "UTC",
    )
    stored = azure.jobs.schedules()["mlshift-tiny"]["properties"]
    assert stored["trigger"]["expression"] == "0 3 * * *" and stored["trigger"]["timeZone"] == "UTC"
    assert stored["action"]["jobDefinition"]["jobType"] == "Pipeline"
    assert set(stored["action"]["jobDefinition"]["jobs"]) == {"produce", "consume"}

    mark = len(azure.calls)
    assert service.sync_schedule(tiny.ir).action == "unchanged"  # reads only
    assert azure.mutating_calls(since=mark) == []

    later = tiny.ir.model_copy(update={"schedule": ScheduleIR(cron="30 4 * * 1", timezone="Europe/Paris")})
    assert service.sync_schedule(later).action == "updated"
    stored = azure.jobs.schedules()["mlshift-tiny"]["properties"]
    assert stored["trigger"]["expression"] == "30 4 * * 1" and stored["trigger"]["timeZone"] == "Europe/Paris"

    unscheduled = tiny.ir.model_copy(update={"schedule": None})
    assert service.sync_schedule(unscheduled).action == "deleted"
    assert azure.jobs.schedules() == {}
    mark = len(azure.calls)
    assert service.sync_schedule(unscheduled).action == "absent"
    assert azure.mutating_calls(since=mark) == []

    service.sync_schedule(tiny.ir)
    assert service.delete_schedule("tiny", dry_run=True).action == "deleted"
    assert "mlshift-tiny" in azure.jobs.schedules()
    assert service.delete_schedule("tiny").action == "deleted" and azure.jobs.schedules() == {}
    assert service.delete_schedule("tiny").action == "absent"


def test_client_pipelines_schedule_syncs_the_job_schedule(client: mlshift.Client, azure: FakeAzureML) -> None:
    assert client.pipelines.schedule(tiny).action == "created"
    mark = len(azure.calls)
    assert client.pipelines.schedule(tiny).action == "unchanged"
    assert azure.mutating_calls(since=mark) == []

    @pipeline(name="tiny", schedule="30 4 * * 1")
    def weekly() -> None:
        consume(data=produce().outputs["out"])

    moved = client.pipelines.schedule(weekly)
    assert (moved.action, moved.cron) == ("updated", "30 4 * * 1")
    assert azure.jobs.schedules()["mlshift-tiny"]["properties"]["trigger"]["expression"] == "30 4 * * 1"
    assert client.pipelines.unschedule("tiny").action == "deleted" and azure.jobs.schedules() == {}


def test_a_scheduled_run_runs_the_pipeline(client: mlshift.Client, azure: FakeAzureML) -> None:
    azureml(client).pipelines.sync_schedule(tiny.ir)
    name = azure.jobs.trigger("mlshift-tiny")  # what the cron trigger does at 03:00
    assert azure.jobs.wait(name) == "Completed"
    run = client.pipelines.get(name)
    assert run.pipeline == "tiny" and run.status == "succeeded"
    assert run.step("consume").outputs == {"output": 4}
    assert [r.id for r in client.pipelines.list("tiny")] == [name]
