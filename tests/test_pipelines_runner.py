"""The local runner as users see it: what runs, what comes from the cache, what a failure, a
kill or Ctrl-C leaves behind, and how a run resumes. Steps here are tiny (no model
framework) so each one costs only a Python start-up."""

from __future__ import annotations

import itertools
import json
import os
import signal
import stat
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import psutil
import pytest

import mlshift
from mlshift.errors import ConfigError, Conflict, NotFound, UnsupportedOperation
from mlshift.pipelines import Pipeline, load_pipeline

STEPS = """
from __future__ import annotations

import os
import time
from pathlib import Path

from mlshift.pipelines import Fail, InputPath, Metrics, OutputPath, pipeline, step, when


def trace(event: str) -> None:
    with open(os.environ["TRACE"], "a") as fh:
        fh.write(f"{event} {time.time():.6f}\\n")


def wait_for(name: str, seconds: float) -> None:
    deadline = time.time() + seconds
    while not (Path(os.environ["TRACE"]).parent / name).exists() and time.time() < deadline:
        time.sleep(0.05)


@step
def source(data: OutputPath, rows: int = 3) -> None:
    trace("source")
    data.write_text("x" * rows)


@step
def double(data: InputPath, out: OutputPath) -> None:
    trace("double")
    out.with_suffix(".txt").write_text(data.read_text() * 2)


@step
def size(data: InputPath) -> int:
    trace("size")
    return len(data.read_text())


@step(metrics=["score"])
def score(data: InputPath, weight: float = 1.0) -> Metrics:
    trace("score")
    return {"score": weight * len(data.read_text()) / 10}


@step
def slow(data: InputPath, out: OutputPath) -> None:
    trace("slow-start")
    wait_for("release", 60)
    out.write_text("done")
    trace("slow-end")


@pipeline
def chain(rows: int = 3, weight: float = 1.0, threshold: float = 0.5) -> None:
    raw = source(rows=rows)
    doubled = double(data=raw.outputs["data"])
    size(data=raw.outputs["data"])
    scores = score(data=doubled.outputs["out"], weight=weight)
    with when(scores.metrics["score"] >= threshold) as gate:
        size.options(name="final-size")(data=doubled.outputs["out"])
    with gate.otherwise():
        Fail("score too low")


@pipeline
def gate_only(threshold: float = 0.5) -> None:
    raw = source()
    scores = score(data=raw.outputs["data"])
    with when(scores.metrics["score"] >= threshold, name="bar"):
        doubled = double(data=raw.outputs["data"])
        size(data=doubled.outputs["out"])


@pipeline
def stoppable() -> None:
    raw = source()
    slow(data=raw.outputs["data"])
"""


class Steps:
    """The step module in a file of the test's own, loaded as the CLI would load it."""

    def __init__(self, folder: Path, name: str) -> None:
        self.path = folder / f"{name}.py"
        self.path.write_text(STEPS)
        self.trace = folder / "trace.txt"
        self.trace.touch()

    def pipeline(self, name: str = "chain") -> Pipeline:
        return load_pipeline(f"{self.path}:{name}")

    def edit(self, old: str, new: str) -> None:
        text = self.path.read_text()
        assert old in text
        self.path.write_text(text.replace(old, new))

    def calls(self) -> Counter[str]:
        return Counter(line.split()[0] for line in self.trace.read_text().splitlines())

    def times(self, event: str) -> list[float]:
        lines = [line.split() for line in self.trace.read_text().splitlines()]
        return [float(stamp) for name, stamp in lines if name == event]


@pytest.fixture
def steps(tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Steps:
    module = "steps_" + request.node.name.replace("[", "_").replace("]", "").replace("-", "_")[:40]
    s = Steps(tmp_path, module)
    monkeypatch.setenv("TRACE", str(s.trace))
    return s


@pytest.fixture
def client(state_dir: Path) -> Iterator[mlshift.Client]:
    c = mlshift.connect(f"local://{state_dir}")
    yield c
    c.close()


def workers(root: Path) -> list[psutil.Process]:
    """Step processes started from this state folder that are still alive."""
    found = []
    for proc in psutil.process_iter(["cmdline", "status"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        alive = proc.info["status"] != psutil.STATUS_ZOMBIE
        if alive and "mlshift.pipelines._worker" in cmdline and str(root) in cmdline:
            found.append(proc)
    return found


def wait_until(predicate: Any, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.05)


class CLI:
    def __init__(self, cwd: Path, state: Path, trace: Path) -> None:
        self.cwd = cwd
        self.env = {
            **os.environ,
            "MLSHIFT_TARGET": f"local://{state}",
            "TRACE": str(trace),
            "NO_COLOR": "1",
            "COLUMNS": "200",
        }

    def argv(self, *args: str) -> list[str]:
        return [sys.executable, "-m", "mlshift", "pipelines", *args]

    def __call__(self, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            self.argv(*args), cwd=self.cwd, env=self.env, capture_output=True, text=True, timeout=180
        )
        assert result.returncode == code, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
        assert "Traceback" not in result.stderr, result.stderr
        return result

    def json(self, *args: str, code: int = 0) -> Any:
        return json.loads(self(*args, "--output", "json", code=code).stdout)

    def start(self, *args: str) -> subprocess.Popen[str]:
        pipe = subprocess.PIPE
        return subprocess.Popen(
            self.argv(*args),
            cwd=self.cwd,
            env=self.env,
            stdout=pipe,
            stderr=pipe,
            text=True,
            # Ctrl-C as a terminal delivers it: a suite run in the background (`nohup ... &`)
            # ignores SIGINT, its children inherit that, and Python then never raises
            # KeyboardInterrupt for the test's SIGINT.
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )


@pytest.fixture
def cli(tmp_path: Path, state_dir: Path, steps: Steps) -> CLI:
    return CLI(tmp_path, state_dir, steps.trace)


def step_status(run: Any) -> dict[str, str]:
    return {s.name: s.status for s in run.steps}


# ------------------------------------------------------------------------------ caching


def test_a_second_run_executes_nothing_and_says_so(client: mlshift.Client, steps: Steps) -> None:
    first = client.pipelines.run(steps.pipeline()).wait()
    assert first.status == "succeeded", first.message
    assert step_status(first) == {
        "source": "succeeded",
        "double": "succeeded",
        "size": "succeeded",
        "score": "succeeded",
        "final-size": "succeeded",
        "fail": "skipped",
    }
    assert first.step("size").outputs["output"] == 3
    assert first.step("score").metrics == {"score": 0.6}
    calls = steps.calls()

    second = client.pipelines.run(steps.pipeline()).wait()
    assert second.status == "succeeded"
    assert second.executed == []
    assert set(second.cached) == {"source", "double", "size", "score", "final-size"}
    assert all(s.cached_from == first.id for s in second.steps if s.status == "cached")
    assert second.summary() == "succeeded: nothing ran, all 5 steps came from the cache (1 skipped)"
    assert steps.calls() == calls  # no step process ran at all


def test_changing_a_parameter_reruns_only_what_depends_on_it(client: mlshift.Client, steps: Steps) -> None:
    client.pipelines.run(steps.pipeline()).wait()
    before = steps.calls()
    run = client.pipelines.run(steps.pipeline(), params={"weight": 2.0}).wait()
    assert run.status == "succeeded", run.message
    assert run.executed == ["score"]
    assert set(run.cached) == {"source", "double", "size", "final-size"}
    assert steps.calls() - before == Counter({"score": 1})


def test_editing_a_step_reruns_it_and_only_its_downstream(client: mlshift.Client, steps: Steps) -> None:
    client.pipelines.run(steps.pipeline()).wait()
    steps.edit("data.read_text() * 2)", "data.read_text() * 3)")
    before = steps.calls()
    run = client.pipelines.run(steps.pipeline()).wait()
    assert run.status == "succeeded", run.message
    assert run.executed == ["double", "score", "final-size"]
    assert set(run.cached) == {"source", "size"}
    assert run.step("final-size").outputs["output"] == 9
    assert steps.calls() - before == Counter({"double": 1, "score": 1, "size": 1})  # size runs as final-size


def test_no_cache_runs_everything_again(client: mlshift.Client, steps: Steps) -> None:
    client.pipelines.run(steps.pipeline()).wait()
    run = client.pipelines.run(steps.pipeline(), cache=False).wait()
    assert run.cached == [] and len(run.executed) == 5


def test_a_gate_runs_the_else_branch_with_the_measurement_in_the_message(
    client: mlshift.Client, steps: Steps
) -> None:
    run = client.pipelines.run(steps.pipeline(), params={"threshold": 0.9}).wait()
    assert run.status == "failed"
    assert run.message == "score too low: score.metrics['score'] = 0.6, needs >= 0.9 (threshold)"
    assert run.step("final-size").status == "skipped"
    assert "condition-1 is false" in (run.step("final-size").message or "")


def test_a_gate_without_an_else_branch_stops_quietly(client: mlshift.Client, steps: Steps) -> None:
    run = client.pipelines.run(steps.pipeline("gate_only"), params={"threshold": 1.0}).wait()
    assert run.status == "succeeded"
    assert run.message == "stopped at bar is false: score.metrics['score'] = 0.3, needs >= 1 (threshold)"
    assert run.skipped == ["double", "size"]
    assert run.step("size").message == "skipped because double did not run"
    assert steps.calls() == Counter({"source": 1, "score": 1})


def test_parameters_are_checked_before_anything_runs(client: mlshift.Client, steps: Steps) -> None:
    with pytest.raises(ConfigError) as exc:
        client.pipelines.run(steps.pipeline(), params={"rows": "many"})
    assert exc.value.field == "params.rows"
    with pytest.raises(ConfigError, match="no parameter 'colour'"):
        client.pipelines.run(steps.pipeline(), params={"colour": "red"})
    assert client.pipelines.list() == []
    assert steps.calls() == Counter()


# ------------------------------------------------------------------------------ execution


def test_independent_steps_run_in_parallel(client: mlshift.Client, steps: Steps) -> None:
    # Each of size and double waits (up to a minute) until the other has started: they can only
    # both end quickly if they run at the same time, whatever the machine's load.
    meet = (
        '    (Path(os.environ["TRACE"]).parent / "{me}-started").touch()\n'
        '    wait_for("{other}-started", 60)\n'
    )
    steps.edit(
        '    trace("size")\n',
        '    trace("size")\n' + meet.format(me="size", other="double") + '    trace("size-end")\n',
    )
    steps.edit(
        '    trace("double")\n',
        '    trace("double")\n' + meet.format(me="double", other="size") + '    trace("double-end")\n',
    )

    def spans() -> list[tuple[float, float]]:
        """(start, end) of each sleeping step execution, by start; then forget them."""
        starts = steps.times("size") + steps.times("double")
        ends = steps.times("size-end") + steps.times("double-end")
        steps.trace.write_text("")
        return sorted(zip(starts, ends, strict=True))

    run = client.pipelines.run(steps.pipeline(), max_parallel=2).wait()
    assert run.status == "succeeded", run.message
    first, second, _final_size = spans()  # size and double both follow source only
    assert second[0] <= first[1]  # they overlapped (the second started before the first ended)

    # One at a time: without the meeting (each would wait a minute for the other in vain).
    for name in ("size", "double"):
        other = "double" if name == "size" else "size"
        steps.edit(meet.format(me=name, other=other), "")
    serial = client.pipelines.run(steps.pipeline(), cache=False, max_parallel=1).wait()
    assert serial.status == "succeeded"
    ordered = spans()
    assert len(ordered) == 3
    assert all(earlier[1] <= later[0] for earlier, later in itertools.pairwise(ordered))


def test_retries_and_logs(client: mlshift.Client, steps: Steps) -> None:
    steps.edit(
        '@step\ndef source(data: OutputPath, rows: int = 3) -> None:\n    trace("source")\n',
        "@step(retries=2, retry_delay=0)\ndef source(data: OutputPath, rows: int = 3) -> None:\n"
        '    trace("source")\n    print("hello from source")\n'
        '    if sum(1 for _ in open(os.environ["TRACE"])) < 2:\n        raise RuntimeError("flaky disk")\n',
    )
    run = client.pipelines.run(steps.pipeline()).wait()
    assert run.status == "succeeded", run.message
    assert run.step("source").attempts == 2
    log = run.logs("source")
    assert "attempt 1 of 3" in log and "attempt 2 of 3" in log
    assert "RuntimeError: flaky disk" in log and "hello from source" in log
    with pytest.raises(NotFound, match="no step 'nope'"):
        run.logs("nope")


def test_a_step_over_its_timeout_is_stopped(client: mlshift.Client, steps: Steps, state_dir: Path) -> None:
    steps.edit("@step\ndef slow(", "@step(timeout=1)\ndef slow(")
    run = client.pipelines.run(steps.pipeline("stoppable")).wait()
    assert run.status == "failed"
    assert run.message == "step 'slow' failed: timed out after 1 s"
    assert workers(state_dir) == []


def test_artifacts_keep_their_names_and_are_read_only(client: mlshift.Client, steps: Steps) -> None:
    run = client.pipelines.run(steps.pipeline()).wait()
    out = run.step("double").outputs["out"]
    assert out["name"] == "out.txt"
    path = run.artifact_path("double", "out")
    assert path.name == "out.txt" and path.read_text() == "xxxxxx"
    assert not path.stat().st_mode & stat.S_IWUSR


def test_secrets_are_passed_by_reference(
    client: mlshift.Client, steps: Steps, monkeypatch: pytest.MonkeyPatch
) -> None:
    steps.edit(
        "@step\ndef size(data: InputPath) -> int:\n",
        '@step(secrets={"API_TOKEN": "prod/api-token"})\ndef size(data: InputPath) -> int:\n'
        '    assert os.environ["API_TOKEN"] == "s3cr3t", "secret not passed"\n',
    )
    with pytest.raises(ConfigError) as exc:
        client.pipelines.run(steps.pipeline())
    assert exc.value.field == "steps.size.secrets.API_TOKEN"
    assert "PROD_API_TOKEN" in str(exc.value)
    assert client.pipelines.list() == []  # refused before anything was recorded

    monkeypatch.setenv("PROD_API_TOKEN", "s3cr3t")
    run = client.pipelines.run(steps.pipeline()).wait()
    assert run.status == "succeeded", run.message
    assert "s3cr3t" not in run.ir.model_dump_json()


def test_container_steps_run_with_docker(
    client: mlshift.Client, steps: Steps, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # A stand-in for docker that runs the command on the host: the runner mounts every path at the
    # same place inside the container, so only the docker arguments need stripping.
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "docker"
    fake.write_text(
        f"#!{sys.executable}\n"
        "import json, os, subprocess, sys\n"
        "args = sys.argv[2:]\n"
        "with open(os.environ['DOCKER_LOG'], 'w') as fh: json.dump(sys.argv[1:], fh)\n"
        "cwd, i = None, 0\n"
        "while args[i].startswith('-'):\n"
        "    if args[i] == '-w': cwd = args[i + 1]\n"
        "    i += 1 if args[i] == '--rm' else 2\n"
        "sys.exit(subprocess.call(args[i + 1:], cwd=cwd))\n"
    )
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("DOCKER_LOG", str(tmp_path / "docker.json"))
    script = (
        "import json, sys, pathlib; a = dict(zip(sys.argv[1::2], sys.argv[2::2]));"
        "text = pathlib.Path(a['--data']).read_text();"
        "pathlib.Path(a['--out']).write_text(text.upper());"
        "pathlib.Path(a['--n']).write_text(json.dumps(len(text)));"
        "pathlib.Path(a['--metrics']).write_text(json.dumps({'chars': len(text) * float(a['--scale'])}))"
    )
    code = steps.path.read_text() + (
        "\nfrom mlshift.pipelines import ContainerStep\n\n"
        "@pipeline\n"
        "def boxed(scale: float = 2.0) -> None:\n"
        "    raw = source()\n"
        "    ContainerStep('shout', 'python:3.11-slim', ['python', '-c', " + repr(script) + "],\n"
        "        ['--data', '{{inputs.data}}', '--scale', '{{inputs.scale}}', '--out', '{{outputs.loud}}',\n"
        "         '--n', '{{outputs.n}}', '--metrics', '{{metrics}}'],\n"
        "        inputs={'data': raw.outputs['data'], 'scale': scale},\n"
        "        outputs={'loud': 'artifact', 'n': int}, metrics=['chars'], env={'MODE': 'fast'})\n"
    )
    steps.path.write_text(code.replace("'python', '-c'", f"{sys.executable!r}, '-c'"))
    run = client.pipelines.run(steps.pipeline("boxed")).wait()
    assert run.status == "succeeded", run.message + run.logs("shout")
    shout = run.step("shout")
    assert shout.outputs["n"] == 3 and shout.metrics == {"chars": 6.0}
    assert run.artifact_path("shout", "loud").read_text() == "XXX"
    argv = json.loads((tmp_path / "docker.json").read_text())
    image = argv.index("python:3.11-slim")
    assert argv[:2] == ["run", "--rm"] and "-e" in argv[:image] and "MODE" in argv[:image]
    data_path = str(run.artifact_path("source", "data"))
    assert f"{data_path}:{data_path}:ro" in argv[:image]
    assert "fast" not in argv  # env values travel in the environment, not on the command line


def test_a_gpu_container_step_on_the_docker_target_is_refused_before_the_run(
    state_dir: Path, steps: Steps
) -> None:
    steps.path.write_text(
        steps.path.read_text() + "\nfrom mlshift.pipelines import ContainerStep, Resources\n\n"
        "@pipeline\ndef gpu() -> None:\n"
        "    ContainerStep('train', 'trainer:1', ['train'], resources=Resources(size='gpu-small'))\n"
    )
    with mlshift.connect(f"local+docker://{state_dir}") as client:
        with pytest.raises(UnsupportedOperation, match="size 'gpu-small'.*attaches no GPU") as info:
            client.pipelines.run(steps.pipeline("gpu"))
        assert info.value.hint is not None and "cpu-small" in info.value.hint
        assert client.pipelines.list() == []  # refused before anything was recorded


def test_pipelines_on_the_memory_target_register_and_deploy(iris: dict[str, Any], tmp_path: Path) -> None:
    module = tmp_path / "mem_steps.py"
    module.write_text(
        "from __future__ import annotations\nimport shutil\n"
        "from mlshift.pipelines import Deploy, OutputPath, RegisterModel, pipeline, step\n\n"
        "@step\ndef fit(model: OutputPath, source: str) -> None:\n"
        "    shutil.copy(source, model.with_suffix('.skops'))\n\n"
        "@pipeline\ndef ship(source: str) -> None:\n"
        "    version = RegisterModel(fit(source=source), model='iris')\n"
        "    Deploy(version, endpoint='iris-mem')\n"
    )
    with mlshift.connect("memory://") as client:
        ship = load_pipeline(f"{module}:ship")
        run = client.pipelines.run(ship, params={"source": str(iris["v1"])}).wait()
        assert run.status == "succeeded", run.message
        assert run.step("register").outputs["version"] == "iris:1"
        answer = client.endpoints.predict("iris-mem", iris["rows"])
        assert answer.predictions == iris["expected_v1"]
        again = client.pipelines.run(ship, params={"source": str(iris["v1"])}).wait()
        assert again.executed == []
        assert [v.version for v in client.models.list("iris")] == ["1"]
        client.endpoints.delete("iris-mem")


def test_pipelines_go_by_capability_not_by_target_name(steps: Steps) -> None:
    # memory:// runs pipelines with the local runner only while it declares PIPELINES.
    with mlshift.connect("memory://?capabilities=traffic_split") as client:
        with pytest.raises(UnsupportedOperation) as exc:
            client.pipelines.run(steps.pipeline("stoppable"))
        assert "needs PIPELINES, which memory://?capabilities=traffic_split does not declare" in str(
            exc.value
        )
        # Every installed target that declares it (the cloud adapters too, when installed).
        listed = str(exc.value).split("targets that do: ")[1].splitlines()[0].split(", ")
        assert {"local", "memory"} <= set(listed) and listed == sorted(listed)
        with pytest.raises(UnsupportedOperation, match="PIPELINES"):
            client.pipelines.list()
    gated = steps.pipeline("chain")
    assert gated.ir.conditions, "chain branches on a condition"
    with mlshift.connect("memory://?capabilities=pipelines") as client:
        with pytest.raises(UnsupportedOperation, match="conditions needs PIPELINE_CONDITIONS"):
            client.pipelines.run(gated)
        with pytest.raises(UnsupportedOperation, match="needs SCHEDULES"):
            client.pipelines.run_schedules([gated], once=True)
        assert client.pipelines.list() == []


# ------------------------------------------------------------------------------ failure and resume


def test_a_failed_run_resumes_from_the_failed_step(client: mlshift.Client, steps: Steps) -> None:
    steps.edit('    trace("double")\n', '    trace("double")\n    raise ValueError("bad column 7")\n')
    failed = client.pipelines.run(steps.pipeline()).wait()
    assert failed.status == "failed"
    assert failed.message == "step 'double' failed: ValueError: bad column 7"
    assert step_status(failed)["source"] == "succeeded" and step_status(failed)["score"] == "pending"

    steps.edit('    raise ValueError("bad column 7")\n', "")  # the fix
    before = steps.calls()
    resumed = client.pipelines.resume(failed.id).wait()
    assert resumed.id == failed.id
    assert resumed.status == "succeeded", resumed.message
    assert steps.calls() - before == Counter({"double": 1, "score": 1, "size": 1})  # size as final-size
    assert resumed.step("source").executions == 1  # not run again
    assert resumed.step("double").executions == 2
    with pytest.raises(ConfigError, match="succeeded; there is nothing to resume"):
        client.pipelines.resume(failed.id)


def test_sigkill_mid_run_then_resume_completes_without_rerunning(
    cli: CLI, steps: Steps, state_dir: Path
) -> None:
    runner = cli.start("run", f"{steps.path}:stoppable", "-o", "json")
    wait_until(lambda: "slow-start" in steps.calls())
    run_id = cli.json("list")[0]["id"]
    assert workers(state_dir)  # the slow step is running
    runner.send_signal(signal.SIGKILL)
    runner.wait(timeout=30)
    # The step must not outlive its runner (it would race the resumed run).
    wait_until(lambda: workers(state_dir) == [], timeout=15)
    status = cli.json("status", run_id)
    assert status["status"] == "interrupted"
    assert {s["name"]: s["status"] for s in status["steps"]} == {"source": "succeeded", "slow": "running"}

    (steps.trace.parent / "release").touch()
    result = cli.json("run", "--resume", run_id)
    assert result["id"] == run_id and result["status"] == "succeeded"
    assert steps.calls() == Counter({"source": 1, "slow-start": 2, "slow-end": 1})
    executions = {s["name"]: s["executions"] for s in result["steps"]}
    assert executions == {"source": 1, "slow": 2}


def test_ctrl_c_cancels_cleanly_and_the_run_resumes(cli: CLI, steps: Steps, state_dir: Path) -> None:
    runner = cli.start("run", f"{steps.path}:stoppable")
    wait_until(lambda: "slow-start" in steps.calls())
    runner.send_signal(signal.SIGINT)
    _out, err = runner.communicate(timeout=60)
    assert runner.returncode == 130, err
    assert "Traceback" not in err
    run_id = cli.json("list")[0]["id"]
    assert f"resume with: mlshift pipelines run --resume {run_id}" in err
    assert workers(state_dir) == []
    status = cli.json("status", run_id)
    assert status["status"] == "cancelled"
    assert {s["name"]: s["status"] for s in status["steps"]} == {"source": "succeeded", "slow": "cancelled"}

    (steps.trace.parent / "release").touch()
    done = cli.json("run", "--resume", run_id)
    assert done["status"] == "succeeded"
    assert steps.calls()["source"] == 1


def test_a_live_run_is_not_resumed_twice_and_can_be_cancelled_from_elsewhere(
    client: mlshift.Client, steps: Steps, state_dir: Path
) -> None:
    run = client.pipelines.run(steps.pipeline("stoppable"))
    wait_until(lambda: "slow-start" in steps.calls())
    with mlshift.connect(client.target) as other:
        seen = other.pipelines.get(run.id)
        assert seen.status == "running"
        with pytest.raises(Conflict, match="still running"):
            other.pipelines.resume(run.id)
        seen.cancel()  # through the run's record: the runner is not our process to signal
        run.wait(timeout=30)
        assert seen.status == "cancelled"
    assert step_status(run) == {"source": "succeeded", "slow": "cancelled"}
    assert workers(state_dir) == []


# ------------------------------------------------------------------------------ the command line


def test_cli_run_status_logs_list(cli: CLI, steps: Steps) -> None:
    first = cli("run", f"{steps.path}:chain", "--param", "rows=4")
    assert "succeeded: 5 ran, 0 from cache, 1 skipped" in first.stdout
    assert "source" in first.stderr and "succeeded" in first.stderr  # progress, on stderr
    again = cli("run", f"{steps.path}:chain", "-p", "rows=4")
    assert "nothing ran, all 5 steps came from the cache" in again.stdout

    runs = cli.json("list")
    assert [r["status"] for r in runs] == ["succeeded", "succeeded"]
    latest = runs[0]["id"]
    status = cli.json("status", latest)
    assert status["executed"] == [] and status["params"] == {"rows": 4, "weight": 1.0, "threshold": 0.5}
    logs = cli("logs", runs[1]["id"], "source").stdout
    assert "attempt 1 of 1" in logs

    bad = cli("run", f"{steps.path}:chain", "-p", "rows=many", code=1)
    assert "expects int, got 'many'" in bad.stderr
    gated = cli("run", f"{steps.path}:chain", "-p", "threshold=5", code=1)
    assert "score too low: score.metrics['score'] = 0.6, needs >= 5 (threshold)" in gated.stdout
    assert "--resume" not in gated.stderr  # a gate that said no is an answer, not an accident
    error = cli.json("status", "no-such-run", code=1)
    assert error["error"]["code"] == "not_found"


def test_cli_help_lists_the_pipeline_commands(cli: CLI) -> None:
    out = cli("--help").stdout
    for command in ("run", "list", "status", "logs", "compile", "schedule", "unschedule"):
        assert command in out
    assert "--resume" in cli("run", "--help").stdout


# ------------------------------------------------------------------------------ schedules


def test_the_scheduler_runs_each_tick_once(client: mlshift.Client, steps: Steps) -> None:
    from mlshift.pipelines._schedule import run_schedules
    from mlshift.pipelines._service import PipelineService

    steps.edit("@pipeline\ndef stoppable", '@pipeline(schedule="*/10 * * * *")\ndef stoppable')
    (steps.trace.parent / "release").touch()
    service = PipelineService.for_client(client, connect=mlshift.connect)
    clock = [datetime(2024, 5, 1, 12, 4, tzinfo=timezone.utc)]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        clock[0] += timedelta(seconds=seconds)

    pipe = steps.pipeline("stoppable")
    # First sight: runs at once for the latest tick (12:00), then waits for 12:10 and 12:20.
    runs = run_schedules(service, [pipe], max_runs=3, now=lambda: clock[0], sleep=sleep)
    assert [r.status for r in runs] == ["succeeded"] * 3
    assert [r.trigger for r in runs] == ["schedule"] * 3
    assert [round(s) for s in slept] == [360, 600]
    assert clock[0].strftime("%H:%M") == "12:20"
    # Same tick again: nothing is due.
    assert run_schedules(service, [pipe], once=True, now=lambda: clock[0], sleep=sleep) == []


def test_schedule_command_once(cli: CLI, steps: Steps) -> None:
    steps.edit("@pipeline\ndef chain", '@pipeline(schedule="@daily")\ndef chain')
    first = cli("schedule", f"{steps.path}:chain", "--once")
    assert "chain: @daily (UTC); next tick" in first.stderr
    assert "succeeded: 5 ran" in first.stdout
    second = cli("schedule", f"{steps.path}:chain", "--once")
    assert "nothing was due" in second.stdout
    assert [r["trigger"] for r in cli.json("list")] == ["schedule"]
    refused = cli("schedule", f"{steps.path}:stoppable", "--once", code=1)
    assert "has no schedule" in refused.stderr
