"""The example pipeline on the kit: every step runs for real, the gate decides, the cache serves reruns.

One fake for the module, as one project would be: later tests find earlier runs' tasks in
Vertex's cache, as they would on Vertex.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import mlshift
from mlshift.pipelines import Pipeline, load_pipeline
from mlshift_vertex.testing import FakeVertex

ROOT = Path(__file__).resolve().parents[3]
TARGET = "vertex://my-project/us-central1"


def example() -> Pipeline:
    return load_pipeline(f"{ROOT / 'examples' / 'train_gate_deploy.py'}:train_gate_deploy")


@pytest.fixture(scope="module")
def vertex() -> Iterator[FakeVertex]:
    with FakeVertex(seed=7) as fake:
        yield fake


def test_the_example_runs_registers_deploys_and_reruns_from_the_cache(
    client: mlshift.Client, vertex: FakeVertex
) -> None:
    pipeline = example()
    first = client.pipelines.run(pipeline, {"endpoint": "iris-run"}).wait(timeout=600)
    assert first.status == "succeeded", first.message
    assert first.pipeline == "train-gate-deploy"
    statuses = {s.name: s.status for s in first.steps}
    assert statuses == {
        "prepare": "succeeded",
        "train": "succeeded",
        "evaluate": "succeeded",
        "register": "succeeded",
        "deploy": "succeeded",
        "fail": "skipped",
    }
    assert first.step("fail").message == "condition 'quality-gate' is true"
    assert first.step("evaluate").metrics["accuracy"] >= 0.9
    assert first.step("register").outputs["version"] == "iris:1"
    assert str(first.step("train").outputs["model"]["uri"]).startswith("gs://mlshift-kit/pipelines/runs/")
    assert first.params["endpoint"] == "iris-run"
    # Core's built-in steps did the work, on this target.
    version = client.models.get("iris@champion")
    assert version.version == "1"
    assert version.metrics["accuracy"] == first.step("evaluate").metrics["accuracy"]
    assert client.endpoints.predict("iris-run", [[5.1, 3.5, 1.4, 0.2]]).predictions == [0]

    second = client.pipelines.run(pipeline, {"endpoint": "iris-run"}).wait(timeout=600)
    assert second.status == "succeeded"
    assert {s.name: s.status for s in second.steps if s.name != "fail"} == dict.fromkeys(
        ("prepare", "train", "evaluate", "register", "deploy"), "cached"
    )
    assert all(s.executions == 0 and s.cached_from for s in second.steps if s.status == "cached")
    assert second.step("register").outputs["version"] == "iris:1"
    assert [v.version for v in client.models.list("iris")] == ["1"]  # nothing registered again
    assert [r.id for r in client.pipelines.list("train-gate-deploy")][:2] == [second.id, first.id]


def test_the_gate_stops_a_bad_model_and_says_what_it_measured(client: mlshift.Client) -> None:
    run = client.pipelines.run(example(), {"label_noise": 0.9, "endpoint": "iris-bad"}).wait(timeout=600)
    assert run.status == "failed"
    steps = {s.name: s for s in run.steps}
    assert steps["register"].status == steps["deploy"].status == "skipped"
    assert steps["register"].message == "condition 'quality-gate' is false"
    assert steps["fail"].status == "failed"
    assert "the model is not accurate enough" in (steps["fail"].message or "")
    assert "needs >= 0.9 (threshold)" in (steps["fail"].message or "")
    assert run.message is not None and run.message.startswith("step 'fail' failed:")
    assert "iris-bad" not in {e.name for e in client.endpoints.list()}


def test_a_failing_step_is_named_with_its_log_and_where_to_read_more(client: mlshift.Client) -> None:
    run = client.pipelines.run(example(), {"c": -1.0, "endpoint": "iris-never"}).wait(timeout=600)
    assert run.status == "failed"
    train = run.step("train")
    assert train.status == "failed"
    assert "InvalidParameterError" in (train.message or "") or "ValueError" in (train.message or "")
    assert "https://console.cloud.google.com/logs/query" in (train.message or "")
    assert run.message is not None and run.message.startswith("step 'train' failed:")
    assert "Traceback" in run.logs("train")
    assert (train.log or "").startswith("https://console.cloud.google.com/logs/query;query=")
    assert {s.name: s.status for s in run.steps if s.name in ("evaluate", "register")} == {
        "evaluate": "skipped",
        "register": "skipped",
    }
    assert run.step("evaluate").message == "skipped because train failed"


def test_a_running_job_is_cancelled(client: mlshift.Client, vertex: FakeVertex, tmp_path: Path) -> None:
    source = tmp_path / "slow_pipeline.py"
    source.write_text(
        textwrap.dedent(
            """
            import time
            from mlshift.pipelines import pipeline, step

            @step(cache=False)
            def wait_a_while(seconds: float = 600.0) -> None:
                time.sleep(seconds)

            @pipeline
            def slow() -> None:
                wait_a_while()
            """
        )
    )
    run = client.pipelines.run(load_pipeline(f"{source}:slow"))
    deadline = time.monotonic() + 120
    while run.step("wait-a-while").status != "running":
        assert time.monotonic() < deadline, run.steps
        time.sleep(0.1)
    run.cancel()
    assert run.wait(timeout=120).status == "cancelled"
    assert run.step("wait-a-while").status == "cancelled"


def test_the_example_runs_unchanged_under_the_kit_from_a_shell(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GOOGLE_", "MLSHIFT_"))}
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlshift_vertex.testing",
            "run",
            str(ROOT / "examples" / "train_gate_deploy.py"),
            "--target",
            TARGET,
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        check=False,
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "first run projects/my-project/locations/us-central1/pipelineJobs/train-gate-deploy-" in out
    assert "succeeded: 5 ran, 0 from cache, 1 skipped" in out
    assert "succeeded: nothing ran, all 5 steps came from the cache (1 skipped)" in out
    assert "iris:1 on endpoint iris-pipeline predicts" in out
    assert "deleted endpoint iris-pipeline" in out
