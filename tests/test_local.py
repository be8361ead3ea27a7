"""The local target as a user meets it: real processes on 127.0.0.1, state in SQLite."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections import Counter
from pathlib import Path
from typing import Any

import httpx
import pytest

import mlshift
from mlshift.errors import ConfigError, IntegrityError

pytestmark = pytest.mark.slow


def run_python(code: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


@pytest.fixture
def deployed(local: mlshift.Client, iris: dict[str, Any]) -> mlshift.Client:
    local.models.register("iris", iris["v1"], framework="sklearn")
    local.models.register("iris", iris["v2"], framework="sklearn")
    local.endpoints.deploy("iris", "iris:1")
    return local


def test_split_80_20_over_1000_requests_and_header_names_variant(
    deployed: mlshift.Client, iris: dict[str, Any]
) -> None:
    state = deployed.endpoints.deploy("iris", "iris:2", traffic=20)
    assert state.url is not None and state.url.startswith("http://127.0.0.1:")
    body = {"instances": iris["rows"][:1]}
    seen: Counter[str] = Counter()
    with httpx.Client(trust_env=False) as http:
        for _ in range(1000):
            resp = http.post(state.url, json=body)
            assert resp.status_code == 200
            seen[resp.headers["X-Mlshift-Variant"]] += 1
    assert set(seen) == {"iris-v1", "iris-v2"}
    assert abs(seen["iris-v2"] / 1000 - 0.20) <= 0.04, seen


def test_url_is_stable_across_changes(deployed: mlshift.Client) -> None:
    url = deployed.endpoints.get("iris").url
    deployed.endpoints.deploy("iris", "iris:2", traffic=50)
    deployed.endpoints.deploy("iris", "iris:2")
    assert deployed.endpoints.get("iris").url == url


def test_bad_payload_is_a_json_400_and_the_server_keeps_serving(
    deployed: mlshift.Client, iris: dict[str, Any]
) -> None:
    url = deployed.endpoints.get("iris").url
    assert url is not None
    with httpx.Client(trust_env=False) as http:
        bad = http.post(url, json={"instances": [[1.0, 2.0]]})
        assert bad.status_code == 400
        assert bad.json()["error"]["code"] == "invalid_payload"
        assert "4" in bad.json()["error"]["message"]
        garbage = http.post(url, content=b"{not json", headers={"Content-Type": "application/json"})
        assert garbage.status_code == 400
        good = http.post(url, json={"instances": iris["rows"]})
        assert good.status_code == 200 and good.json()["predictions"] == iris["expected_v1"]


def test_endpoints_outlive_the_session_that_made_them(state_dir: Path, iris: dict[str, Any]) -> None:
    result = run_python(
        f"""
        import mlshift
        c = mlshift.connect("local://{state_dir}")
        c.models.register("iris", {str(iris["v1"])!r}, framework="sklearn")
        print(c.endpoints.deploy("iris", "iris:1").url)
        """
    )
    assert result.returncode == 0, result.stderr
    with mlshift.connect(f"local://{state_dir}") as client:
        try:
            state = client.endpoints.get("iris")
            assert state.status == "healthy" and state.url == result.stdout.strip()
            assert client.endpoints.predict("iris", iris["rows"]).predictions == iris["expected_v1"]
        finally:
            client.endpoints.delete("iris")


def test_a_dead_replica_leaves_the_rotation_and_callers_see_no_error(
    local: mlshift.Client, iris: dict[str, Any]
) -> None:
    local.models.register("iris", iris["v1"], framework="sklearn")
    state = local.endpoints.deploy("iris", "iris:1", replicas=2)
    assert state.url is not None
    root = local.adapter.root
    assert root is not None
    import sqlite3

    with sqlite3.connect(root / "state.db") as conn:
        (processes,) = conn.execute("SELECT processes FROM variants WHERE endpoint = 'iris'").fetchone()
    dead, _ = json.loads(processes)
    os.kill(dead["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 120  # the kill is delivered asynchronously; a bound only
    while local.endpoints.get("iris").variants[0].status != "failed":
        assert time.monotonic() < deadline, "the killed replica is not reported"
        time.sleep(0.05)

    routes = state.url.replace("/invocations", "/_mlshift/routes")
    body = {"instances": iris["rows"][:1]}
    with httpx.Client(trust_env=False, timeout=30) as http:
        answers = [http.post(state.url, json=body).status_code for _ in range(20)]
        down = http.get(routes).json()["down"]
        assert down == [f"http://127.0.0.1:{dead['port']}"]  # out of rotation after one refusal
        answers += [http.post(state.url, json=body).status_code for _ in range(200)]
        assert http.get(routes).json()["down"] == down  # still out: it never came back
    assert answers == [200] * 220  # the refused request was retried on the live replica


def _wait_until_failed(client: mlshift.Client, name: str) -> None:
    deadline = time.monotonic() + 120  # the kill is delivered asynchronously; a bound only
    while client.endpoints.get(name).variants[0].status != "failed":
        assert time.monotonic() < deadline, "the killed replica is not reported"
        time.sleep(0.05)


def test_the_next_apply_restores_a_killed_replica(local: mlshift.Client, iris: dict[str, Any]) -> None:
    from mlshift.specs.endpoint import EndpointSpec

    local.models.register("iris", iris["v1"], framework="sklearn")
    local.endpoints.deploy("iris", "iris:1", replicas=2)
    root = local.adapter.root
    assert root is not None
    import sqlite3

    def recorded() -> list[dict[str, Any]]:
        with sqlite3.connect(root / "state.db") as conn:
            (processes,) = conn.execute("SELECT processes FROM variants WHERE endpoint = 'iris'").fetchone()
        return list(json.loads(processes))

    alive, dead = recorded()
    os.kill(dead["pid"], signal.SIGKILL)
    _wait_until_failed(local, "iris")
    (variant,) = local.endpoints.get("iris").variants
    assert variant.ready_replicas == 1

    spec = EndpointSpec.model_validate(
        {
            "name": "iris",
            "variants": [{"name": "iris-v1", "model": "iris:1", "weight": 100}],
            "compute": {"size": "cpu-small", "replicas": 2},
        }
    )
    plan = local.plan(spec)
    assert [a.describe() for a in plan.actions] == [
        f"restore 1 replica of iris-v1 (iris:1): replica 1: process {dead['pid']} exited"
    ]
    assert "! restore 1 replica of iris-v1" in plan.render()
    local.apply(plan)

    state = local.endpoints.get("iris")
    assert [(v.status, v.ready_replicas) for v in state.variants] == [("healthy", 2)]
    kept, restored = recorded()
    assert kept["pid"] == alive["pid"]  # the live replica was left alone
    assert restored["pid"] != dead["pid"]
    with httpx.Client(trust_env=False, timeout=30) as http:
        # The new replica answers on its own port, and callers through the router.
        direct = http.post(
            f"http://127.0.0.1:{restored['port']}/invocations", json={"instances": iris["rows"]}
        )
        assert direct.json()["predictions"] == iris["expected_v1"]
        assert state.url is not None
        assert all(
            http.post(state.url, json={"instances": iris["rows"][:1]}).status_code == 200 for _ in range(20)
        )
    assert local.plan(spec).is_empty


def test_crashed_variant_is_reported(deployed: mlshift.Client) -> None:
    root = deployed.adapter.root
    assert root is not None
    with (root / "state.db").open("rb"):
        pass
    import sqlite3

    with sqlite3.connect(root / "state.db") as conn:
        (processes,) = conn.execute("SELECT processes FROM variants WHERE endpoint = 'iris'").fetchone()
    pid = json.loads(processes)[0]["pid"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 120  # the kill is delivered asynchronously; a bound only
    while (state := deployed.endpoints.get("iris")).variants[0].status != "failed":
        if time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert state.variants[0].status == "failed"
    assert f"process {pid} exited" in (state.variants[0].detail or "")
    assert state.status == "unhealthy"


def test_delete_stops_every_process(deployed: mlshift.Client) -> None:
    import psutil

    root = deployed.adapter.root
    assert root is not None
    deployed.endpoints.deploy("iris", "iris:2", traffic=30)

    def ours() -> list[int]:
        return [
            p.pid for p in psutil.process_iter(["cmdline"]) if str(root) in " ".join(p.info["cmdline"] or [])
        ]

    assert len(ours()) == 3  # a router and two model servers
    deployed.endpoints.delete("iris")
    assert ours() == []
    assert deployed.endpoints.list() == []


def test_taken_port_fails_before_anything_starts(local: mlshift.Client, iris: dict[str, Any]) -> None:
    local.models.register("iris", iris["v1"], framework="sklearn")
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        with pytest.raises(ConfigError, match=f"port {port} on 127.0.0.1 is already taken") as info:
            local.endpoints.deploy("iris", "iris:1", provider_options={"local": {"port": port}})
        assert info.value.field == "provider_options.local.port"
    assert local.endpoints.list() == []


def test_fixed_port_is_used(local: mlshift.Client, iris: dict[str, Any], fixed_port: int) -> None:
    local.models.register("iris", iris["v1"], framework="sklearn")
    state = local.endpoints.deploy("iris", "iris:1", provider_options={"local": {"port": fixed_port}})
    assert state.url == f"http://127.0.0.1:{fixed_port}/invocations"


def test_unknown_local_option_names_the_field(local: mlshift.Client, iris: dict[str, Any]) -> None:
    local.models.register("iris", iris["v1"], framework="sklearn")
    with pytest.raises(ConfigError, match=r"provider_options.local.prot") as info:
        local.endpoints.deploy("iris", "iris:1", provider_options={"local": {"prot": 8080}})
    assert "port" in (info.value.hint or "")


def test_tampered_artifact_is_refused_at_load(local: mlshift.Client, iris: dict[str, Any]) -> None:
    version = local.models.register("iris", iris["v1"], framework="sklearn")
    stored = Path(version.artifact_uri.removeprefix("file://"))
    stored.write_bytes(stored.read_bytes()[:-10] + b"0123456789")
    with pytest.raises(IntegrityError, match="does not match its registered digest"):
        local.endpoints.deploy("iris", "iris:1")
    assert local.endpoints.list() == []


def test_identical_bytes_are_stored_once(local: mlshift.Client, iris: dict[str, Any]) -> None:
    a = local.models.register("iris", iris["v1"], framework="sklearn")
    b = local.models.register("iris-copy", iris["v1"], framework="sklearn")
    assert a.artifact_uri == b.artifact_uri
    root = local.adapter.root
    assert root is not None
    assert len(list((root / "artifacts" / "sha256").iterdir())) == 1


@pytest.mark.parametrize("problem", ["missing", "unreadable", "empty-dir"])
def test_bad_artifact_path_changes_nothing(local: mlshift.Client, tmp_path: Path, problem: str) -> None:
    path = tmp_path / "model.skops"
    if problem == "unreadable":
        if os.geteuid() == 0:
            pytest.skip("root can read any file")
        path.write_bytes(b"x")
        path.chmod(0)
    elif problem == "empty-dir":
        path = tmp_path / "empty"
        path.mkdir()
    with pytest.raises(ConfigError):
        local.models.register("iris", path, framework="sklearn")
    assert local.models.list() == []


def test_wrong_framework_for_the_file_changes_nothing(local: mlshift.Client, iris: dict[str, Any]) -> None:
    with pytest.raises(ConfigError):
        local.models.register("iris", iris["v1"], framework="onnx")
    with pytest.raises(
        ConfigError, match="'sklearn', 'onnx', 'xgboost', 'lightgbm', 'mlflow' or 'predictor'"
    ):
        local.models.register("iris", iris["v1"], framework="tensorflow")
    assert local.models.list() == []


def test_two_processes_registering_at_once_do_not_collide(state_dir: Path, iris: dict[str, Any]) -> None:
    code = f"""
        import mlshift
        c = mlshift.connect("local://{state_dir}")
        for _ in range(6):
            c.models.register("iris", {str(iris["v1"])!r}, framework="sklearn")
        """
    procs = [subprocess.Popen([sys.executable, "-c", textwrap.dedent(code)]) for _ in range(2)]
    assert [p.wait(120) for p in procs] == [0, 0]
    with mlshift.connect(f"local://{state_dir}") as client:
        versions = [int(v.version) for v in client.models.list("iris")]
    assert versions == list(range(1, 13))
