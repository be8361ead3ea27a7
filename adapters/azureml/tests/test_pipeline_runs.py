"""``client.pipelines.run`` on azureml://: the same code as on local://, nodes run by the kit.

The testing kit runs every node of the submitted pipeline job for real (the @step functions in
child processes, the gate, register and deploy nodes through mlshift), so these tests see what
a user would see on Azure ML: real metrics deciding the gate, a registered version, an endpoint
answering, Azure's reuse serving an unchanged run from cache. One fake serves the whole module
(the runs build on each other's cache, as they would in one workspace).
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import mlshift
from conftest import ROOT, TARGET
from mlshift_azureml.testing import FakeAzureML

TIMEOUT = 600


@pytest.fixture(scope="module")
def workspace() -> Iterator[FakeAzureML]:
    with FakeAzureML() as fake:
        yield fake


@pytest.fixture(scope="module")
def ml(workspace: FakeAzureML) -> Iterator[mlshift.Client]:
    with mlshift.connect(TARGET) as client:
        yield client


@pytest.fixture(scope="module")
def first(ml: mlshift.Client, example: Any) -> Any:
    """A successful run of the example, deploying to ``iris-run``."""
    return ml.pipelines.run(example, {"endpoint": "iris-run"}).wait(timeout=TIMEOUT)


def test_the_pipeline_example_runs_unchanged_against_the_kit(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AZURE_", "MLSHIFT_"))}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlshift_azureml.testing",
            "run",
            str(ROOT / "examples" / "train_gate_deploy.py"),
            "--target",
            "azureml://SUB/RG/WS",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=TIMEOUT * 2,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "target: azureml://SUB/RG/WS" in out
    first, second = (line for line in out.splitlines() if line.startswith(("first run", "second run")))
    assert first.endswith("succeeded: 5 ran, 0 from cache, 1 skipped")
    assert second.endswith("succeeded: nothing ran, all 5 steps came from the cache (1 skipped)")
    assert "iris:1 on endpoint iris-pipeline predicts [0, 2]" in out
    assert "deleted endpoint iris-pipeline" in out
    # What the nodes said went to their job logs, not to the script's output.
    assert "registered iris:1" not in out


def test_a_run_registers_and_deploys_with_the_metrics_it_measured(
    ml: mlshift.Client, first: Any, example: Any
) -> None:
    run = first
    assert run.status == "succeeded", run.message
    assert run.pipeline == example.name
    assert [(s.name, s.kind, s.status) for s in run.steps] == [
        ("prepare", "python", "succeeded"),
        ("train", "python", "succeeded"),
        ("evaluate", "python", "succeeded"),
        ("register", "register_model", "succeeded"),
        ("fail", "fail", "skipped"),
        ("deploy", "deploy", "succeeded"),
    ]
    accuracy = run.step("evaluate").metrics["accuracy"]
    assert accuracy >= 0.9
    assert run.step("register").outputs == {"version": "iris:1"}
    assert (
        run.step("train").outputs["model"]["uri"].startswith("azureml://datastores/workspaceblobstore/paths/")
    )
    version = ml.models.get("iris@champion")
    assert version.version == "1" and version.metrics == {"accuracy": accuracy}
    # Lineage as on local://: the pipeline and the run (the pipeline job) that registered it.
    assert version.tags["mlshift:pipeline"] == example.name
    assert version.tags["mlshift:run"] == run.id
    assert ml.pipelines.get(run.id).step("register").outputs == {"version": "iris:1"}
    assert ml.endpoints.predict("iris-run", [[6.7, 3.0, 5.2, 2.3]]).predictions == [2]
    assert run.params == {"c": 1.0, "label_noise": 0.0, "threshold": 0.9, "endpoint": "iris-run"}
    assert f'metrics: {{"accuracy": {accuracy}}}' in run.logs("evaluate")
    assert "registered iris:1" in run.logs("register")


def test_an_unchanged_run_is_served_from_azures_cache(
    ml: mlshift.Client, workspace: FakeAzureML, first: Any, example: Any
) -> None:
    again = ml.pipelines.run(example, {"endpoint": "iris-run"}).wait(timeout=TIMEOUT)
    assert again.status == "succeeded" and again.executed == []
    assert [s.name for s in again.steps if s.status == "cached"] == [
        "prepare",
        "train",
        "evaluate",
        "register",
        "deploy",
    ]
    assert {s.cached_from for s in again.steps if s.status == "cached"} == {first.id}
    assert again.step("register").outputs == {"version": "iris:1"}
    assert [v.version for v in ml.models.list()] == ["1"]


def test_the_gate_stops_a_bad_model_before_anything_is_registered(
    ml: mlshift.Client, first: Any, example: Any
) -> None:
    run = ml.pipelines.run(example, {"label_noise": 0.9, "endpoint": "iris-bad"}).wait(timeout=TIMEOUT)
    assert run.status == "failed"
    assert run.step("evaluate").metrics["accuracy"] < 0.9
    assert run.step("fail").status == "failed"
    assert "not accurate enough" in (run.message or "")
    assert {s.name: s.message for s in run.steps if s.status == "skipped"} == {
        "register": "quality-gate is false",
        "deploy": "quality-gate is false",
    }
    assert [v.version for v in ml.models.list()] == ["1"]
    assert "iris-bad" not in {e.name for e in ml.endpoints.list()}


def test_a_failing_step_reports_its_log_tail(
    ml: mlshift.Client, workspace: FakeAzureML, first: Any, example: Any
) -> None:
    workspace.jobs.fail_step(
        "train", logs="loading data\nKilled: the process ran out of memory (exit code 137)\n"
    )
    run = ml.pipelines.run(example, {"c": 0.5}).wait(timeout=TIMEOUT)
    assert run.status == "failed"
    assert run.step("prepare").status == "cached"
    train = run.step("train")
    assert train.status == "failed" and "ran out of memory (exit code 137)" in (train.message or "")
    assert run.message == f"step 'train' failed: {train.message}"
    assert "loading data" in run.logs("train")
    assert [s.status for s in run.steps[2:]] == ["skipped"] * 4
    assert run.step("evaluate").message == "skipped because train failed"


def test_a_failing_step_function_reports_its_own_error(ml: mlshift.Client, first: Any, example: Any) -> None:
    run = ml.pipelines.run(example, {"c": -1.0}).wait(timeout=TIMEOUT)
    assert run.status == "failed"
    train = run.step("train")
    assert train.status == "failed" and "'C' parameter" in (train.message or "")
    assert "Traceback" in run.logs("train")


def test_cancel_stops_the_run(ml: mlshift.Client, first: Any, example: Any) -> None:
    run = ml.pipelines.run(example, {"c": 3.0})
    run.cancel()
    done = run.wait(timeout=TIMEOUT)
    assert done.status == "cancelled" and done.message == "stopped"
    assert "register" not in {s.name for s in done.steps if s.status in ("succeeded", "cached")}
    assert [v.version for v in ml.models.list()] == ["1"]


def test_runs_are_found_again_from_another_client(ml: mlshift.Client, first: Any) -> None:
    with mlshift.connect(TARGET) as other:
        again = other.pipelines.get(first.id)
        assert again.status == "succeeded" and again.summary() == first.summary()
        assert first.id in [r.id for r in other.pipelines.list(first.pipeline)]
        assert other.pipelines.list("no-such-pipeline") == []
