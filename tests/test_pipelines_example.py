"""The acceptance story of issue 3, on examples/train_gate_deploy.py and the local target.

The example script runs once for the module (it trains, registers and deploys for real, then
runs again from the cache); each test then changes one thing and checks what a user would see:
the registry, the endpoint, the run's steps and messages.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest

import mlshift
from mlshift.pipelines import Pipeline, load_pipeline

pytest.importorskip("sklearn")
pytest.importorskip("skops")

ROOT = Path(__file__).resolve().parents[1]
EXAMPLE = ROOT / "examples" / "train_gate_deploy.py"
ENDPOINT = "iris-pipeline"

pytestmark = pytest.mark.slow


class Example:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.state = root / "state"
        self.env = {**os.environ, "MLSHIFT_TARGET": f"local://{self.state}", "NO_COLOR": "1"}
        self.script: subprocess.CompletedProcess[str] | None = None

    def client(self) -> mlshift.Client:
        return mlshift.connect(f"local://{self.state}")

    def pipeline(self) -> Pipeline:
        return load_pipeline(f"{EXAMPLE}:train_gate_deploy")

    def cli(self, *args: str, code: int = 0, extra_env: dict[str, str] | None = None) -> Any:
        result = subprocess.run(
            [sys.executable, "-m", "mlshift", "pipelines", *args, "-o", "json"],
            cwd=self.root,
            env={**self.env, **(extra_env or {})},
            capture_output=True,
            text=True,
            timeout=600,
            check=False,
        )
        assert result.returncode == code, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
        return json.loads(result.stdout) if result.stdout.strip() else None


def _leftovers(state: Path) -> list[int]:
    pids = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(state) in cmdline and "mlshift" in cmdline:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.info["pid"], signal.SIGKILL)
            pids.append(proc.info["pid"])
    return pids


@pytest.fixture(scope="module")
def example(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Example]:
    ex = Example(tmp_path_factory.mktemp("train-gate-deploy"))
    ex.script = subprocess.run(
        [sys.executable, str(EXAMPLE), "--keep"],
        cwd=ex.root,
        env=ex.env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    yield ex
    with ex.client() as client:
        for endpoint in client.endpoints.list():
            with contextlib.suppress(mlshift.MlshiftError):
                client.endpoints.delete(endpoint.name)
    assert _leftovers(ex.state) == [], "processes left running after the example tests"


def serving(client: mlshift.Client) -> list[str]:
    return [f"{v.model} {v.weight}% {v.status}" for v in client.endpoints.get(ENDPOINT).variants]


def test_the_example_runs_end_to_end_and_its_second_run_is_served_from_cache(example: Example) -> None:
    assert example.script is not None
    out = example.script.stdout
    assert example.script.returncode == 0, out + example.script.stderr
    first, second = (line for line in out.splitlines() if line.startswith(("first run ", "second run ")))
    assert first.endswith("succeeded: 5 ran, 0 from cache, 1 skipped")
    assert second.endswith("succeeded: nothing ran, all 5 steps came from the cache (1 skipped)")
    assert "iris:1 on endpoint iris-pipeline predicts [0, 2]" in out
    with example.client() as client:
        (version,) = client.models.list("iris")
        assert version.aliases == ("champion",)
        assert version.metrics["accuracy"] >= 0.9
        assert version.tags["mlshift:pipeline"] == "train-gate-deploy"
        assert serving(client) == ["iris:1 100% healthy"]


def test_changing_one_parameter_reruns_only_the_steps_downstream_of_it(example: Example) -> None:
    with example.client() as client:
        before = {v.version for v in client.models.list("iris")}
        run = client.pipelines.run(example.pipeline(), params={"c": 0.5}).wait()
        assert run.status == "succeeded", run.message
        assert run.cached == ["prepare"]
        assert run.executed == ["train", "evaluate", "register", "deploy"]
        new = run.step("register").outputs["version"]
        assert new.split(":")[1] not in before
        assert serving(client) == [f"{new} 100% healthy"]
        again = client.pipelines.run(example.pipeline(), params={"c": 0.5}).wait()
        assert again.executed == []


def test_a_model_below_the_gate_stops_before_register_and_deploy(example: Example) -> None:
    with example.client() as client:
        versions = [v.version for v in client.models.list("iris")]
        live = serving(client)
        run = client.pipelines.run(example.pipeline(), params={"label_noise": 0.9}).wait()
        assert run.status == "failed"
        message = run.message or ""
        assert message.startswith("the model is not accurate enough; nothing was registered or deployed: ")
        assert "evaluate.metrics['accuracy'] = 0.5" in message and "needs >= 0.9 (threshold)" in message
        assert {s.name: s.status for s in run.steps if s.kind != "python"} == {
            "register": "skipped",
            "deploy": "skipped",
            "fail": "failed",
        }
        assert [v.version for v in client.models.list("iris")] == versions
        assert serving(client) == live  # the endpoint keeps serving the previous version
        answer = client.endpoints.predict(ENDPOINT, [[5.1, 3.5, 1.4, 0.2]])
        assert answer.predictions == [0]
        assert answer.variant == client.endpoints.get(ENDPOINT).variants[0].name


#: Loaded by the CLI process below (and only there) as ``sitecustomize``: it makes the runner
#: SIGKILL itself once the named step's work is done, before the step is recorded.
CRASH_BEFORE_RECORD = """
import os

# Popped, so that the processes the runner starts (steps, model servers) leave things alone.
CRASH_STEP = os.environ.pop("CRASH_STEP", None)
if CRASH_STEP:
    import signal

    from mlshift.pipelines import _runner

    record = _runner.LocalRunner._record

    def crash_before_record(self, step, outcome, key):
        if outcome.status == "succeeded" and step.name == CRASH_STEP:
            os.kill(os.getpid(), signal.SIGKILL)
        return record(self, step, outcome, key)

    _runner.LocalRunner._record = crash_before_record
"""


def test_a_runner_killed_after_registering_resumes_without_registering_twice(example: Example) -> None:
    with example.client() as client:
        versions = {v.version for v in client.models.list("iris")}
    # The worst moment: the model is registered, and the runner dies (SIGKILL) before it can
    # record that the step finished. The fault is injected into that one CLI process.
    plugin = example.root / "crash-plugin"
    plugin.mkdir(exist_ok=True)
    (plugin / "sitecustomize.py").write_text(CRASH_BEFORE_RECORD)
    path = os.pathsep.join(p for p in (str(plugin), os.environ.get("PYTHONPATH", "")) if p)
    example.cli(
        "run",
        f"{EXAMPLE}:train_gate_deploy",
        "-p",
        "c=0.25",
        code=-signal.SIGKILL,
        extra_env={"PYTHONPATH": path, "CRASH_STEP": "register"},
    )
    (latest, *_) = example.cli("list")
    assert latest["status"] == "interrupted"
    assert {s["name"]: s["status"] for s in latest["steps"]}["register"] == "running"
    with example.client() as client:
        registered = {v.version for v in client.models.list("iris")} - versions
        assert len(registered) == 1  # it did register before dying

    resumed = example.cli("run", "--resume", latest["id"])
    assert resumed["id"] == latest["id"] and resumed["status"] == "succeeded"
    executions = {s["name"]: s["executions"] for s in resumed["steps"]}
    assert executions == {"prepare": 0, "train": 1, "evaluate": 1, "register": 2, "fail": 0, "deploy": 1}
    assert resumed["cached"] == ["prepare"]
    with example.client() as client:
        assert {v.version for v in client.models.list("iris")} - versions == registered  # no duplicate
        (number,) = registered
        assert serving(client) == [f"iris:{number} 100% healthy"]
    step = next(s for s in resumed["steps"] if s["name"] == "register")
    assert step["outputs"]["version"] == f"iris:{number}"
    # The resumed attempt says it reused the version rather than registering it again.
    text = subprocess.run(
        [sys.executable, "-m", "mlshift", "pipelines", "logs", latest["id"], "register"],
        cwd=example.root,
        env=example.env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert f"iris:{number} already holds these bytes" in text and "reusing it" in text
