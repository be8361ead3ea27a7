"""``client.pipelines.run`` on sagemaker://: the same code as on local://, steps run by the kit.

The testing kit runs every compiled step for real (the @step functions in child processes, the
register and deploy steps through mlshift), so these tests see what a user would see on
SageMaker: real metrics deciding the gate, a registered version, an endpoint answering.
"""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any

import pytest

import mlshift
from mlshift.errors import ConfigError, NotFound, UnsupportedOperation
from mlshift.pipelines import PipelineEvent
from mlshift_sagemaker.testing import FakeSageMaker
from sagemaker_helpers import ROOT, TARGET, run_under_kit, sagemaker


@pytest.fixture(scope="module")
def example(example_module: Any) -> Any:
    return example_module


def test_the_pipeline_example_runs_unchanged_against_the_fake(tmp_path: Path) -> None:
    result = run_under_kit(tmp_path, str(ROOT / "examples" / "train_gate_deploy.py"), "--target", TARGET)
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "target: sagemaker://us-east-1" in out
    first, second = (line for line in out.splitlines() if line.startswith(("first run", "second run")))
    assert first.endswith("succeeded: 5 ran, 0 from cache, 1 skipped")
    assert second.endswith("succeeded: nothing ran, all 5 steps came from the cache (1 skipped)")
    assert "iris:1 on endpoint iris-pipeline predicts [0, 2]" in out
    assert "deleted endpoint iris-pipeline" in out


def test_a_run_registers_and_deploys_with_the_metrics_it_measured(
    client: mlshift.Client, aws: FakeSageMaker, example: Any
) -> None:
    run = client.pipelines.run(example.train_gate_deploy, {"endpoint": "iris-run"}).wait(timeout=300)
    assert run.status == "succeeded", run.message
    assert run.pipeline == example.train_gate_deploy.name  # its mlshift name, as on local://
    assert [(s.name, s.kind, s.status) for s in run.steps] == [
        ("prepare", "python", "succeeded"),
        ("train", "python", "succeeded"),
        ("evaluate", "python", "succeeded"),
        ("register", "register_model", "succeeded"),
        ("deploy", "deploy", "succeeded"),
        ("fail", "fail", "skipped"),
    ]
    accuracy = run.step("evaluate").metrics["accuracy"]
    assert accuracy >= 0.9
    assert run.step("register").outputs == {"version": "iris:1"}
    assert run.step("train").outputs["model"]["uri"].startswith("s3://")
    version = client.models.get("iris@champion")
    assert version.version == "1" and version.metrics == {"accuracy": accuracy}
    # Lineage as on local://: the pipeline and the run that registered it (found again by its id).
    assert version.tags["mlshift:pipeline"] == example.train_gate_deploy.name
    assert version.tags["mlshift:run"] == run.id
    assert client.pipelines.get(version.tags["mlshift:run"]).step("register").outputs == {"version": "iris:1"}
    assert client.endpoints.predict("iris-run", [[6.7, 3.0, 5.2, 2.3]]).predictions == [2]
    assert run.params == {"c": 1.0, "label_noise": 0.0, "threshold": 0.9, "endpoint": "iris-run"}
    assert f'metrics: {{"accuracy": {accuracy}}}' in run.logs("evaluate")
    assert run.to_dict()["executed"] == ["prepare", "train", "evaluate", "register", "deploy"]


def test_the_gate_stops_a_bad_model_before_anything_is_registered(
    client: mlshift.Client, aws: FakeSageMaker, example: Any
) -> None:
    run = client.pipelines.run(example.train_gate_deploy, {"label_noise": 0.9}).wait(timeout=300)
    assert run.status == "failed"
    assert run.step("evaluate").metrics["accuracy"] < 0.9
    assert run.step("fail").status == "failed"
    assert "not accurate enough" in (run.message or "")
    assert {s.name: s.message for s in run.steps if s.status == "skipped"} == {
        "register": "quality-gate is false",
        "deploy": "quality-gate is false",
    }
    assert client.models.list() == [] and client.endpoints.list() == []


def test_a_failing_step_reports_its_own_error_and_log(
    client: mlshift.Client, aws: FakeSageMaker, example: Any
) -> None:
    run = client.pipelines.run(example.train_gate_deploy, {"c": -1.0}).wait(timeout=300)
    assert run.status == "failed"
    train = run.step("train")
    assert train.status == "failed" and "'C' parameter" in (train.message or "")
    assert "Traceback" in run.logs("train")
    assert run.message == f"step 'train' failed: {train.message}"
    assert [s.status for s in run.steps[2:]] == ["skipped"] * 4
    assert run.step("evaluate").message == "skipped because train failed"


def test_progress_events_and_cache_off(client: mlshift.Client, aws: FakeSageMaker, example: Any) -> None:
    events: list[PipelineEvent] = []
    client.pipelines.run(example.train_gate_deploy, {"endpoint": "iris-ev"}).wait(timeout=300)
    again = client.pipelines.run(
        example.train_gate_deploy, {"endpoint": "iris-ev"}, cache=False, on_event=events.append
    ).wait(timeout=300)
    assert again.status == "succeeded" and again.cached == []
    assert again.executed == ["prepare", "train", "evaluate", "register", "deploy"]
    finished = [(e.step, e.status) for e in events if e.kind == "step_finished"]
    assert ("train", "succeeded") in finished and ("fail", "skipped") in finished
    assert events[-1].kind == "run_finished" and events[-1].status == "succeeded"
    # nothing came from the cache: the model was trained, registered and deployed again
    assert again.step("register").outputs == {"version": "iris:2"}
    assert [v.model for v in client.endpoints.get("iris-ev").variants] == ["iris:2"]


def test_cancel_stops_the_run(client: mlshift.Client, aws: FakeSageMaker, example: Any) -> None:
    run = client.pipelines.run(example.train_gate_deploy)
    assert run.status == "running"
    run.cancel()
    done = run.wait(timeout=120)
    assert done.status == "cancelled" and done.message == "stopped"
    # prepare (a second or more of work) was running or about to: it was stopped, nothing after it ran
    assert [s.status for s in done.steps] == ["cancelled"] * 6
    assert client.models.list() == [] and client.endpoints.list() == []


def test_runs_are_found_again_from_another_client(
    client: mlshift.Client, aws: FakeSageMaker, example: Any
) -> None:
    first = client.pipelines.run(example.train_gate_deploy, {"label_noise": 0.9}).wait(timeout=300)
    # A pipeline someone else made in the account (with a step type mlshift does not compile).
    import boto3

    sm = boto3.client("sagemaker", region_name="us-east-1")
    foreign = {"Version": "2020-12-01", "Steps": [{"Name": "t", "Type": "Transform", "Arguments": {}}]}
    sm.create_pipeline(PipelineName="theirs", PipelineDefinition=json.dumps(foreign), RoleArn=aws.role_arn)
    sm.start_pipeline_execution(PipelineName="theirs")
    with mlshift.connect("sagemaker://us-east-1") as other:
        again = other.pipelines.get(first.id)
        assert again.status == "failed" and again.summary() == first.summary()
        assert [r.id for r in other.pipelines.list("train_gate_deploy")] == [first.id]
        assert [r.id for r in other.pipelines.list()] == [first.id]


def test_what_a_cloud_run_cannot_do_is_an_error_before_any_call(
    client: mlshift.Client, aws: FakeSageMaker, example: Any
) -> None:
    with pytest.raises(ConfigError, match="not a SageMaker pipeline execution ARN"):
        client.pipelines.get("20261127-120000-abcdef")
    with pytest.raises(UnsupportedOperation, match="resuming a run"):
        client.pipelines.resume("arn:aws:sagemaker:us-east-1:123456789012:pipeline/p/execution/abc")
    with pytest.raises(ConfigError, match="has no parameter 'k'"):
        client.pipelines.run(example.train_gate_deploy, {"k": 1})
    assert aws.calls == []


def test_the_cli_runs_a_pipeline_on_the_fake(tmp_path: Path) -> None:
    result = run_under_kit(
        tmp_path,
        "-m",
        "mlshift.cli",
        "pipelines",
        "run",
        f"{ROOT / 'examples' / 'train_gate_deploy.py'}:train_gate_deploy",
        "-p",
        "label_noise=0.9",
        "--target",
        TARGET,
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "failed: 3 ran, 0 from cache, 2 skipped" in result.stdout
    assert "not accurate enough" in result.stdout
    assert "--resume" not in result.stderr


def test_a_run_followed_from_another_thread_sees_it_finish(
    client: mlshift.Client, aws: FakeSageMaker, example: Any
) -> None:
    run = client.pipelines.run(example.train_gate_deploy, {"label_noise": 0.9})
    seen: list[str] = []
    watcher = threading.Thread(target=lambda: seen.append(client.pipelines.get(run.id).wait(300).status))
    watcher.start()
    watcher.join(300)
    assert seen == ["failed"]


def test_without_the_serving_image_in_ecr_nothing_is_uploaded_or_created(example: Any) -> None:
    with FakeSageMaker(serving_image=False) as aws, mlshift.connect(TARGET) as client:
        with pytest.raises(NotFound, match="mlshift_sagemaker.image push") as caught:
            client.pipelines.run(example.train_gate_deploy)
        assert "is not in ECR" in str(caught.value)
        assert aws.mutating_calls() == []
        aws.push_serving_image()
        run = client.pipelines.run(example.train_gate_deploy, {"label_noise": 0.9}).wait(timeout=300)
        assert run.status == "failed" and run.step("fail").status == "failed"


def test_a_run_reports_the_pipeline_by_its_mlshift_name(
    client: mlshift.Client, aws: FakeSageMaker, example: Any
) -> None:
    ir = example.train_gate_deploy.ir.model_copy(update={"name": "gate_v2"})  # SageMaker: gate-v2
    service = sagemaker(client).pipelines
    run_id = service.submit(ir, {"label_noise": 0.9})
    assert ":pipeline/gate-v2/execution/" in run_id
    assert client.pipelines.get(run_id).wait(timeout=300).pipeline == "gate_v2"
    assert [r.id for r in client.pipelines.list("gate_v2")] == [run_id]
