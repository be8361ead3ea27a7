"""The replica runtime seam of the local target: who starts, watches and stops model servers."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import time
from collections.abc import Collection, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import mlshift
from mlshift.local import LocalAdapter, ProcessRuntime, Replica, ReplicaRequest, ReplicaRuntime

pytestmark = pytest.mark.slow


class RecordingRuntime(ProcessRuntime):
    """Host processes, under another name, remembering every call the local target makes."""

    name = "recording"

    def __init__(self) -> None:
        self.requests: list[ReplicaRequest] = []
        self.stopped: list[str] = []
        self.reaped: list[Path] = []

    def start(self, request: ReplicaRequest) -> Replica:
        self.requests.append(request)
        return super().start(request)

    def stop(self, replica: Replica, timeout: float = 10.0) -> None:
        self.stopped.append(replica.id)
        super().stop(replica, timeout)

    def logs(self, replica: Replica, lines: int = 8) -> str:
        return "recording runtime: replica is gone"

    def reap(self, folder: Path, keep: Collection[str] = ()) -> list[str]:
        self.reaped.append(folder)
        return super().reap(folder, keep)


@pytest.fixture
def recording(state_dir: Path) -> Iterator[tuple[mlshift.Client, RecordingRuntime]]:
    runtime = RecordingRuntime()
    base = mlshift.connect(f"local://{state_dir}")
    assert isinstance(base.adapter, LocalAdapter)
    client = mlshift.Client(LocalAdapter(base.adapter.uri, base.adapter.root, runtime=runtime))
    try:
        yield client, runtime
    finally:
        for endpoint in client.endpoints.list():
            client.endpoints.delete(endpoint.name)
        client.close()
        base.close()


def _recorded(state_dir: Path, endpoint: str) -> dict[str, list[dict[str, Any]]]:
    with sqlite3.connect(state_dir / "state.db") as conn:
        rows = conn.execute("SELECT name, processes FROM variants WHERE endpoint = ?", (endpoint,)).fetchall()
    return {name: json.loads(processes) for name, processes in rows}


def test_process_runtime_is_a_replica_runtime() -> None:
    runtime: ReplicaRuntime = ProcessRuntime()
    assert isinstance(runtime, ReplicaRuntime)
    assert runtime.name == "process"


def test_replicas_are_started_and_stopped_through_the_runtime(
    recording: tuple[mlshift.Client, RecordingRuntime], state_dir: Path, iris: dict[str, Any]
) -> None:
    client, runtime = recording
    client.models.register("iris", iris["v1"], framework="sklearn")
    client.models.register("iris", iris["v2"], framework="sklearn")

    state = client.endpoints.deploy("iris", "iris:1", replicas=2)
    assert [(r.variant, r.index, r.model_ref) for r in runtime.requests] == [
        ("iris-v1", 0, "iris:1"),
        ("iris-v1", 1, "iris:1"),
    ]
    assert all(r.compute.replicas == 2 for r in runtime.requests)
    v1 = _recorded(state_dir, "iris")["iris-v1"]
    assert [r["runtime"] for r in v1] == ["recording", "recording"]
    assert state.url is not None
    resp = httpx.post(state.url, json={"instances": iris["rows"][:2]}, trust_env=False)
    assert resp.status_code == 200
    assert resp.json()["predictions"] == iris["expected_v1"][:2]

    client.endpoints.deploy("iris", "iris:2")
    assert sorted(runtime.stopped) == sorted(r["id"] for r in v1)  # the old replicas, and only them
    assert set(_recorded(state_dir, "iris")) == {"iris-v2"}
    for record in v1:  # really gone
        assert not ProcessRuntime().running(Replica.from_json(record))
    assert runtime.reaped, "orphans are looked for through the runtime"


def test_health_comes_from_the_runtime_and_its_log(
    recording: tuple[mlshift.Client, RecordingRuntime], state_dir: Path, iris: dict[str, Any]
) -> None:
    client, _ = recording
    client.models.register("iris", iris["v1"], framework="sklearn")
    client.endpoints.deploy("iris", "iris:1")
    (record,) = _recorded(state_dir, "iris")["iris-v1"]
    os.kill(int(record["id"]), signal.SIGKILL)
    replica = Replica.from_json(record)
    deadline = time.monotonic() + 30
    while ProcessRuntime().running(replica):  # the kill is delivered asynchronously
        assert time.monotonic() < deadline, "the killed server is still running after 30 s"
        time.sleep(0.02)

    (variant,) = client.endpoints.get("iris").variants
    assert variant.status == "failed"
    assert variant.detail is not None and "recording runtime: replica is gone" in variant.detail


def test_a_state_folder_opened_with_another_runtime_says_which_runtime_started_it(
    recording: tuple[mlshift.Client, RecordingRuntime], state_dir: Path, iris: dict[str, Any]
) -> None:
    client, _ = recording
    client.models.register("iris", iris["v1"], framework="sklearn")
    client.endpoints.deploy("iris", "iris:1")

    plain = mlshift.connect(f"local://{state_dir}")
    try:
        (variant,) = plain.endpoints.get("iris").variants
    finally:
        plain.close()
    assert variant.status == "unknown"
    assert variant.detail is not None and "'recording' runtime" in variant.detail


def test_records_written_before_runtimes_existed_read_as_processes() -> None:
    replica = Replica.from_json({"pid": 4242, "started": 12.5, "port": 8080})
    assert replica == Replica(runtime="process", id="4242", port=8080, started=12.5)
    assert Replica.from_json(replica.to_json()) == replica
    assert replica.to_json()["pid"] == 4242  # what `ps` and older readers look for


def test_a_variant_s_batching_reaches_its_replicas_and_survives_a_resize(
    recording: tuple[mlshift.Client, RecordingRuntime], state_dir: Path, iris: dict[str, Any]
) -> None:
    from mlshift.specs import Batching, EndpointSpec

    client, runtime = recording
    client.models.register("iris", iris["v1"], framework="sklearn")
    spec = EndpointSpec.model_validate(
        {
            "name": "iris",
            "variants": [
                {"name": "blue", "model": "iris:1", "batching": {"max_batch_size": 32, "max_latency_ms": 2}}
            ],
        }
    )
    plan = client.plan(spec)
    assert "blue=iris:1 100%, batching 32 rows / 2 ms" in plan.render()
    client.apply(plan)
    (request,) = runtime.requests
    assert request.batching == Batching(max_batch_size=32, max_latency_ms=2)
    args = request.server_args(port_file=Path("p"))
    at = args.index("--max-batch-size")
    assert args[at : at + 4] == ["--max-batch-size", "32", "--max-latency-ms", "2"]
    assert request.environment() == {"MLSHIFT_MAX_BATCH_SIZE": "32", "MLSHIFT_MAX_LATENCY_MS": "2"}

    def served_batching() -> list[Any]:
        out = []
        for record in _recorded(state_dir, "iris")["blue"]:
            meta = httpx.get(f"http://127.0.0.1:{record['port']}/v1/metadata", trust_env=False).json()
            out.append(meta["batching"])
        return out

    # The server itself says it batches, with the variant's settings.
    (stats,) = served_batching()
    assert stats is not None and stats["max_batch_size"] == 32 and stats["max_latency_ms"] == 2
    state = client.endpoints.get("iris")
    assert state.url is not None
    resp = httpx.post(state.url, json={"instances": iris["rows"][:2]}, trust_env=False)
    assert resp.json()["predictions"] == iris["expected_v1"][:2]

    # A resize starts new replicas: they batch as the old ones did.
    client.apply(spec.model_copy(update={"compute": mlshift.Compute(replicas=2)}))
    stats = served_batching()
    assert len(stats) == 2 and all(s is not None and s["max_batch_size"] == 32 for s in stats)


def test_a_change_of_batching_alone_is_planned_and_reaches_the_servers(
    recording: tuple[mlshift.Client, RecordingRuntime], state_dir: Path, iris: dict[str, Any]
) -> None:
    from mlshift.specs import EndpointSpec

    client, _ = recording
    client.models.register("iris", iris["v1"], framework="sklearn")

    def spec(batching: dict[str, Any] | None) -> EndpointSpec:
        variant: dict[str, Any] = {"name": "blue", "model": "iris:1"}
        if batching is not None:
            variant["batching"] = batching
        return EndpointSpec.model_validate({"name": "iris", "variants": [variant]})

    def served_batching() -> list[Any]:
        return [
            httpx.get(f"http://127.0.0.1:{r['port']}/v1/metadata", trust_env=False).json()["batching"]
            for r in _recorded(state_dir, "iris")["blue"]
        ]

    client.apply(spec(None))
    assert served_batching() == [None]
    assert client.endpoints.get("iris").variants[0].batching == mlshift.specs.Batching()

    on = spec({"max_batch_size": 16, "max_latency_ms": 3})
    plan = client.plan(on)
    assert "variant blue (iris:1): batching off -> batching 16 rows / 3 ms" in plan.render()
    client.apply(plan)
    (stats,) = served_batching()
    assert stats is not None and stats["max_batch_size"] == 16 and stats["max_latency_ms"] == 3
    assert client.plan(on).is_empty

    # A new latency is a change too; the same settings written otherwise are not.
    plan = client.plan(spec({"max_batch_size": 16, "max_latency_ms": 8}))
    assert "batching 16 rows / 3 ms -> batching 16 rows / 8 ms" in plan.render()
    assert client.plan(spec({"max_batch_size": 16, "max_latency_ms": 3.0})).is_empty

    # Off again: the spec without batching, or one row per call, which is the same.
    plan = client.plan(spec(None))
    assert "batching 16 rows / 3 ms -> batching off" in plan.render()
    client.apply(plan)
    assert served_batching() == [None]
    assert client.plan(spec({"max_batch_size": 1})).is_empty
    state = client.endpoints.get("iris")
    assert state.url is not None
    answer = httpx.post(state.url, json={"instances": iris["rows"][:2]}, trust_env=False)
    assert answer.json()["predictions"] == iris["expected_v1"][:2]
