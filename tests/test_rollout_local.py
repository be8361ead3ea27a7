"""Rollouts on the local target under load: real router, real model servers, real kills."""

from __future__ import annotations

import json
import os
import re
import sqlite3
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import psutil
import pytest

import mlshift
from mlshift.specs.rollout import Canary, HealthGate
from mlshift.testing.rollouts import canary_under_load, hold_bake_for_requests
from rollout_models import predictor

pytestmark = pytest.mark.slow
HERE = Path(__file__).resolve().parent


@contextmanager
def load(url: str, folder: Path, min_requests: int = 0, body: str | None = None) -> Iterator[dict[str, Any]]:
    """Traffic from another process for the duration of the block; yields its counts after."""
    out, stop = folder / "load.json", folder / "load.stop"
    stop.unlink(missing_ok=True)
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "loadgen.py"), url, str(out), "--stop-file", str(stop),
         "--min-requests", str(min_requests), "--max-seconds", "600", *(["--body", body] if body else [])]
    )  # fmt: skip
    result: dict[str, Any] = {}
    ready = folder / "load.json.ready"
    ready.unlink(missing_ok=True)
    try:
        # The change starts once traffic flows: the generator writes the file on its first answer.
        wait_until(
            lambda: ready.exists() or proc.poll() is not None,
            timeout=120,
            what="the load generator's first answer",
        )
        assert proc.poll() is None, f"the load generator exited with {proc.returncode} before any answer"
        yield result
    finally:
        stop.write_text("stop")
        proc.wait(660)  # it sends what min_requests still asks for, within its own 600 s cap
    result.update(json.loads(out.read_text()))


def wait_until(condition: Any, *, timeout: float, what: str) -> None:
    """Return once ``condition()`` holds; fail the test naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"waited {timeout:g}s for {what}")
        time.sleep(0.02)


def by_variant(counts: dict[str, int]) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = {}
    for key, n in counts.items():
        variant, status = key.split(" ", 1)
        out.setdefault(variant, {})[status] = out.setdefault(variant, {}).get(status, 0) + n
    return out


def non_2xx(counts: dict[str, int]) -> int:
    return sum(n for key, n in counts.items() if not key.split(" ", 1)[1].startswith("2"))


def server_processes(root: Path) -> list[str]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = proc.info["cmdline"] or []
        if any(str(root) in part for part in cmdline) and "mlshift.serving" in cmdline:
            found.append(" ".join(cmdline))
    return found


@pytest.fixture
def endpoint(local: mlshift.Client, iris: dict[str, Any], tmp_path: Path) -> mlshift.Client:
    local.models.register("iris", iris["v1"])  # iris:1 serves first
    local.models.register("iris", iris["v2"])  # iris:2, a good new version
    local.models.register("iris", predictor(tmp_path, "failing"))  # iris:3 answers 500
    local.models.register("iris", predictor(tmp_path, "slow"))  # iris:4 takes 60 ms
    local.models.register("iris", predictor(tmp_path, "very-slow"))  # iris:5 takes 500 ms
    local.endpoints.deploy("iris", "iris:1")
    return local


def test_good_canary_under_load_has_no_errors(endpoint: mlshift.Client, tmp_path: Path) -> None:
    url = endpoint.endpoints.get("iris").url
    assert url is not None
    # The gate needs 50 requests on the canary: the bake is held until the router counted them,
    # however slowly a loaded machine serves (the load runs for its 10 000 requests anyway).
    outcome = canary_under_load(
        endpoint,
        "iris",
        "iris:2",
        Canary(percent=20, bake=5, gate=HealthGate(min_requests=50)),
        load=load(url, tmp_path, min_requests=10_000),
    )
    seen = outcome.load
    assert outcome.failure is None, outcome.failure
    assert outcome.state is not None and outcome.state.weights == {"iris-v2": 100}
    assert seen["total"] >= 10_000
    assert non_2xx(seen["counts"]) == 0, seen["failures"]
    served = by_variant(seen["counts"])
    assert served["iris-v2"]["200"] > 0 and served["iris-v1"]["200"] > 0
    record = endpoint.endpoints.history("iris")[0]
    assert record.phase == "succeeded" and record.measurements["requests"] >= 50
    root = endpoint.adapter.root
    assert root is not None
    # The replaced variant's server is stopped; its process may take a moment to go.
    wait_until(lambda: len(server_processes(root)) == 1, timeout=60, what="one server process left")


@pytest.mark.parametrize(
    ("version", "gate", "expected"),
    [
        (
            "iris:3",
            HealthGate(min_requests=20),
            r"gate failed at 20% traffic: error rate 100.0% > 1.0% \(\d+ of \d+",
        ),
        (
            "iris:4",
            HealthGate(min_requests=20, max_p99="30ms"),
            r"gate failed at 20% traffic: p99 latency \d+ms > 30ms",
        ),
        (
            # A loaded machine's queueing can make the baseline's p99 tens of milliseconds, as
            # much as iris:4's 60 ms sleep: the ratio is judged on a version far slower.
            "iris:5",
            HealthGate(min_requests=20, max_p99_ratio=2),
            r"gate failed at 20% traffic: p99 latency \d+ms is [\d.]+x the baseline's \d+ms > 2x",
        ),
    ],
    ids=["failing", "slow", "slower-than-baseline"],
)
def test_bad_version_is_rolled_back_within_one_bake(
    endpoint: mlshift.Client, tmp_path: Path, version: str, gate: HealthGate, expected: str
) -> None:
    url = endpoint.endpoints.get("iris").url
    assert url is not None
    # A bake far longer than 20 requests take even on a loaded machine: the gate must trip as
    # soon as it has them, not at the bake's end.
    bake = 120.0
    outcome = canary_under_load(
        endpoint,
        "iris",
        version,
        Canary(percent=20, bake=bake, gate=gate),
        load=load(url, tmp_path, min_requests=2_000),
    )
    seen = outcome.load
    assert outcome.failure is not None and re.search(expected, str(outcome.failure)), outcome.failure
    assert outcome.traffic_back_after is not None
    assert outcome.traffic_back_after < bake  # traffic back on the old version within one bake
    assert outcome.failure.measurements["requests"] >= 20
    state = endpoint.endpoints.get("iris")
    assert [(v.name, v.weight) for v in state.variants] == [("iris-v1", 100)]  # the bad variant is gone
    served = by_variant(seen["counts"])
    assert set(served["iris-v1"]) == {"200"}, seen["failures"]  # nothing failed on the old version
    root = endpoint.adapter.root
    assert root is not None
    assert len(server_processes(root)) == 1


DEPLOY = """
import mlshift
from mlshift.specs.rollout import Canary, HealthGate
from mlshift.testing.rollouts import hold_bake_for_requests
client = mlshift.connect("local://{root}")
rollout = Canary(percent=20, bake=3, gate=HealthGate(min_requests=20))
# The bake lasts until the gate has its 20 requests, however slowly they come.
hold = hold_bake_for_requests(client, "iris", 20)
client.endpoints.deploy("iris", "iris:2", rollout=rollout, checks=[hold])
"""


def journal_steps(root: Path) -> int:
    with sqlite3.connect(root / "state.db") as conn:
        rows = conn.execute(
            "SELECT record FROM rollouts WHERE endpoint = 'iris' ORDER BY id DESC LIMIT 1"
        ).fetchall()
    if not rows:
        return 0
    record = json.loads(rows[0][0])
    return len(record["steps"]) if record["strategy"] == "canary" else 0


@pytest.mark.parametrize("kill_at_step", [1, 2, 4, 5])
def test_sigkill_mid_rollout_then_the_same_apply_converges(
    endpoint: mlshift.Client, tmp_path: Path, kill_at_step: int
) -> None:
    """Steps: 1 add iris-v2, 2 weights 80/20, 3 bake, 4 weights 0/100, 5 remove iris-v1."""
    root = endpoint.adapter.root
    assert root is not None
    url = endpoint.endpoints.get("iris").url
    assert url is not None
    with load(url, tmp_path) as seen:
        deployer = subprocess.Popen([sys.executable, "-c", textwrap.dedent(DEPLOY.format(root=root))])
        # Only a bound on a hang: the deployer gets there at whatever speed the machine allows.
        wait_until(
            lambda: journal_steps(root) >= kill_at_step or deployer.poll() is not None,
            timeout=600,
            what=f"the deployer to reach step {kill_at_step}",
        )
        reached = journal_steps(root)
        deployer.kill()  # SIGKILL; nothing if it has already exited
        deployer.wait(60)
        assert reached >= kill_at_step, f"the deployer exited with {deployer.returncode} at step {reached}"
        # the same apply again, from another process's point of view
        state = endpoint.endpoints.deploy(
            "iris",
            "iris:2",
            rollout=Canary(percent=20, bake=3, gate=HealthGate(min_requests=20)),
            checks=[hold_bake_for_requests(endpoint, "iris", 20)],
        )
    assert [(v.name, v.model, v.weight) for v in state.variants] == [("iris-v2", "iris:2", 100)]
    assert len(server_processes(root)) == 1  # exactly one copy of the one variant
    assert non_2xx(seen["counts"]) == 0, seen["failures"]  # the old version never stopped answering
    outcomes = [r.phase for r in endpoint.endpoints.history("iris")]
    assert outcomes[0] == "succeeded" and "running" not in outcomes and "promoting" not in outcomes


HELD_DEPLOY = """
import time
from pathlib import Path

import mlshift
from mlshift.specs.rollout import Canary, HealthGate

release = Path({release!r})


def held(reading):
    # Keeps the bake, and so the endpoint's lock, until the test has seen the other deploy
    # (the deadline only bounds a hang: the other deploy's Python may start slowly).
    deadline = time.monotonic() + 600
    while not release.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    return True


client = mlshift.connect("local://{root}")
rollout = Canary(percent=20, bake=1, gate=HealthGate(min_requests=0))
client.endpoints.deploy("iris", "iris:2", rollout=rollout, checks=[held])
"""


def test_a_deploy_while_another_is_under_way_gives_up_and_the_first_wins(
    endpoint: mlshift.Client, tmp_path: Path
) -> None:
    # The first deploy is held in its bake (by a gate check waiting for a file) for as long as
    # the test needs, so the second one surely arrives while the first holds the endpoint, on
    # any machine: no timing is assumed.
    root = endpoint.adapter.root
    assert root is not None
    release = tmp_path / "release"
    first = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(HELD_DEPLOY.format(root=root, release=str(release)))],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 600  # bounds a hang only
        while journal_steps(root) < 3 and first.poll() is None and time.monotonic() < deadline:
            time.sleep(0.05)  # until the first deploy is baking (step 3), holding the lock
        assert first.poll() is None and journal_steps(root) >= 3, "the first deploy never reached its bake"
        env = {**os.environ, "MLSHIFT_TARGET": f"local://{root}", "NO_COLOR": "1"}
        args = ["--strategy", "canary", "--bake", "1s", "--min-requests", "0", "--lock-timeout", "1"]
        second = subprocess.run(
            [sys.executable, "-m", "mlshift", "deploy", "iris", "--model", "iris:4", *args],
            env=env,
            capture_output=True,
            text=True,
            timeout=600,  # bounds a hang only: Python starts slowly on a loaded machine
            check=False,
        )
    finally:
        release.touch()
    assert first.wait(600) == 0, first.stderr.read() if first.stderr else ""
    assert second.returncode == 1, second.stderr
    assert "is being changed by pid" in second.stderr or "changed since this plan was made" in second.stderr
    state = endpoint.endpoints.get("iris")
    assert [(v.model, v.weight) for v in state.variants] == [("iris:2", 100)]
    assert len(server_processes(root)) == 1
