"""Adaptive micro-batching and worker processes, against real server processes on 127.0.0.1.

No test depends on timing: requests are held concurrently in flight by a predictor that
blocks until the test opens a gate, and every wait is on a condition with a deadline.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression

import mlshift
from mlshift.errors import ConfigError
from mlshift.serving import load_model
from mlshift.serving._batching import Batching

SRC = Path(mlshift.__file__).resolve().parents[1]
DEADLINE = 60.0
SERVER = [sys.executable, "-m", "mlshift.serving"]

# Blocks its first call until the test opens the gate, so that the requests sent meanwhile
# are all in flight at once; records the size of every call it gets.
GATED_PREDICTOR = """
import time
from pathlib import Path
from typing import Any

from mlshift.errors import InvalidPayload


class Predictor:
    signature = {"inputs": [{"name": "a"}, {"name": "b"}]}

    def load(self, path: Path) -> None:
        self.gate = Path((path / "gate.txt").read_text())
        self.first = True

    def predict(self, batch: list[list[Any]]) -> list[Any]:
        with open(self.gate / "calls", "a") as calls:
            calls.write(f"{len(batch)}\\n")
        if self.first:
            self.first = False
            (self.gate / "started").touch()
            deadline = time.monotonic() + 60
            while not (self.gate / "open").exists() and time.monotonic() < deadline:
                time.sleep(0.01)
        if any(row[0] < 0 for row in batch):
            raise InvalidPayload("a must not be negative")
        if any(row[0] == 999 for row in batch):
            raise RuntimeError("boom")
        return [row[0] * 10 + row[1] for row in batch]
"""


def _wait(condition: Callable[[], Any], what: str, proc: subprocess.Popen[bytes] | None = None) -> Any:
    deadline = time.monotonic() + DEADLINE
    while True:
        value = condition()
        if value:
            return value
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the server exited ({proc.returncode}) while waiting for {what}")
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


class Server:
    def __init__(self, proc: subprocess.Popen[bytes], port_file: Path) -> None:
        self.proc = proc
        self.port_file = port_file
        port = int(_wait(lambda: port_file.exists() and port_file.read_text().strip(), "the port file", proc))
        self.base = f"http://127.0.0.1:{port}"

    def post(self, path: str, **kwargs: Any) -> httpx.Response:
        return httpx.post(self.base + path, timeout=DEADLINE, **kwargs)

    def batching(self) -> dict[str, Any]:
        stats: dict[str, Any] = httpx.get(self.base + "/v1/metadata", timeout=DEADLINE).json()["batching"]
        return stats


@pytest.fixture
def start(tmp_path: Path) -> Iterator[Callable[..., Server]]:
    procs: list[subprocess.Popen[bytes]] = []

    def run(artifact: Path, *args: str) -> Server:
        port_file = tmp_path / f"port-{len(procs)}"
        proc = subprocess.Popen(
            [*SERVER, "--artifact", str(artifact), "--port", "0", "--port-file", str(port_file), *args],
            env={**os.environ, "PYTHONPATH": str(SRC)},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        procs.append(proc)
        return Server(proc, port_file)

    yield run
    for proc in procs:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=DEADLINE)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()


@pytest.fixture(scope="module")
def iris_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Any, Any]:
    import skops.io as sio

    data = load_iris()
    model = LogisticRegression(max_iter=500).fit(data.data, data.target)
    path = tmp_path_factory.mktemp("batching") / "iris.skops"
    sio.dump(model, path)
    return path, model, data.data


@pytest.fixture
def gated(tmp_path: Path) -> tuple[Path, Path]:
    """A gated predictor directory, and its gate directory."""
    artifact = tmp_path / "gated"
    artifact.mkdir()
    gate = tmp_path / "gate"
    gate.mkdir()
    (artifact / "predictor.py").write_text(GATED_PREDICTOR)
    (artifact / "gate.txt").write_text(str(gate))
    return artifact, gate


def _calls(gate: Path) -> list[int]:
    return [int(n) for n in (gate / "calls").read_text().split()]


# -------------------------------------------------------------------------- batching


def test_concurrent_mixed_size_requests_each_get_their_own_rows(
    start: Callable[..., Server], iris_model: tuple[Path, Any, Any]
) -> None:
    path, model, X = iris_model
    server = start(path, "--max-batch-size", "64", "--max-latency-ms", "20")
    # 48 requests of 1 to 7 rows, every one different, on both protocols, all released at once.
    slices = [X[(i * 3) % 140 : (i * 3) % 140 + 1 + i % 7] for i in range(48)]
    barrier = threading.Barrier(len(slices), timeout=DEADLINE)

    def send(i: int) -> tuple[int, list[Any]]:
        rows = slices[i].tolist()
        barrier.wait()
        if i % 4 == 3:
            body = {"inputs": [{"name": "input", "shape": [len(rows), 4], "datatype": "FP64", "data": rows}]}
            response = server.post("/v2/models/iris/infer", json=body)
            return response.status_code, response.json()["outputs"][0]["data"]
        response = server.post("/invocations", json={"instances": rows})
        return response.status_code, response.json()["predictions"]

    with ThreadPoolExecutor(len(slices)) as pool:
        answers = list(pool.map(send, range(len(slices))))
    for rows, (status, predictions) in zip(slices, answers, strict=True):
        assert status == 200
        assert predictions == model.predict(rows).tolist()
    stats = server.batching()
    # Every request went through the batcher, in fewer or as many model calls as requests.
    assert stats["requests"] == len(slices)
    assert stats["rows"] == sum(len(s) for s in slices)
    assert 1 <= stats["batches"] <= len(slices)
    assert stats["queued"] == 0


def test_requests_in_flight_together_share_one_predict_call(
    start: Callable[..., Server], gated: tuple[Path, Path]
) -> None:
    artifact, gate = gated
    server = start(artifact, "--max-batch-size", "100", "--max-latency-ms", "1")
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(server.post, "/invocations", json={"instances": [[1, 2]]})
        _wait(lambda: (gate / "started").exists(), "the first predict call", server.proc)
        # While the model is busy, these queue up; rows of different sizes, in a known order.
        bodies = [[[i, j] for j in range(i)] for i in range(1, 6)]
        pending = [pool.submit(server.post, "/invocations", json={"instances": b}) for b in bodies]
        # A malformed request is answered at once, while its would-be batch-mates still wait.
        malformed = server.post("/invocations", json={"instances": [[1, "two"]]})
        assert malformed.status_code == 400
        assert "two" in malformed.json()["error"]["message"]
        _wait(lambda: server.batching()["queued"] == len(bodies), "the requests to queue", server.proc)
        (gate / "open").touch()
        assert first.result(DEADLINE).json() == {"predictions": [12]}
        for body, future in zip(bodies, pending, strict=True):
            response = future.result(DEADLINE)
            assert response.status_code == 200
            assert response.json() == {"predictions": [row[0] * 10 + row[1] for row in body]}
    # Two model calls in all: the first request, then every request that waited, merged.
    assert _calls(gate) == [1, sum(len(b) for b in bodies)]
    stats = server.batching()
    assert (stats["batches"], stats["requests"], stats["split_batches"]) == (2, 1 + len(bodies), 0)


def test_an_error_in_a_batch_stays_with_the_request_that_caused_it(
    start: Callable[..., Server], gated: tuple[Path, Path]
) -> None:
    artifact, gate = gated
    server = start(artifact, "--max-batch-size", "100")
    with ThreadPoolExecutor(8) as pool:
        first = pool.submit(server.post, "/invocations", json={"instances": [[1, 2]]})
        _wait(lambda: (gate / "started").exists(), "the first predict call", server.proc)
        bodies = [[[3, 4]], [[-1, 0]], [[5, 6], [7, 8]], [[999, 0]], [[9, 9]]]
        pending = [pool.submit(server.post, "/invocations", json={"instances": b}) for b in bodies]
        _wait(lambda: server.batching()["queued"] == len(bodies), "the requests to queue", server.proc)
        (gate / "open").touch()
        assert first.result(DEADLINE).status_code == 200
        answers = [f.result(DEADLINE) for f in pending]
    assert [a.status_code for a in answers] == [200, 400, 200, 500, 200]
    assert answers[0].json() == {"predictions": [34]}
    assert "a must not be negative" in answers[1].json()["error"]["message"]
    assert answers[2].json() == {"predictions": [56, 78]}
    # The 500 says nothing about the model, and nobody else's answer mentions the failures.
    assert "boom" not in answers[3].text
    assert answers[4].json() == {"predictions": [99]}
    # The merged call failed, then each request was predicted on its own (in the order
    # they reached the server, which the threads do not fix).
    calls = _calls(gate)
    assert calls[:2] == [1, 6] and sorted(calls[2:]) == [1, 1, 1, 1, 2]
    assert server.batching()["split_batches"] == 1


def test_batching_is_off_by_default(start: Callable[..., Server], iris_model: tuple[Path, Any, Any]) -> None:
    path, model, X = iris_model
    server = start(path)
    assert server.batching() is None
    response = server.post("/invocations", json={"instances": X[:3].tolist()})
    assert response.json() == {"predictions": model.predict(X[:3]).tolist()}


def test_merged_predictions_equal_one_call_per_request(iris_model: tuple[Path, Any, Any]) -> None:
    from mlshift.serving._payload import Batch

    path, model, X = iris_model
    loaded = load_model(path, "sklearn")
    requests = [X[0:1], X[10:13], X[50:52]]
    prepared = [loaded.prepare(Batch.of_rows(r.tolist())) for r in requests]
    assert [n for _, n in prepared] == [1, 3, 2]
    merged = loaded.predict_prepared([p for p, _ in prepared])
    assert merged == [model.predict(r).tolist() for r in requests]


def test_batching_settings_are_checked(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="max_batch_size"):
        Batching(max_batch_size=0)
    with pytest.raises(ConfigError, match="max_latency_ms"):
        Batching(max_batch_size=8, max_latency_ms=0)
    assert not Batching.from_env({}).enabled
    assert Batching.from_env({"MLSHIFT_MAX_BATCH_SIZE": "32", "MLSHIFT_MAX_LATENCY_MS": "2.5"}) == Batching(
        32, 2.5
    )
    with pytest.raises(ConfigError, match="MLSHIFT_MAX_BATCH_SIZE"):
        Batching.from_env({"MLSHIFT_MAX_BATCH_SIZE": "many"})
    with pytest.raises(ConfigError, match="MLSHIFT_MAX_LATENCY_MS"):
        Batching.from_env({"MLSHIFT_MAX_BATCH_SIZE": "8", "MLSHIFT_MAX_LATENCY_MS": "soon"})


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--max-latency-ms", "3"], "--max-latency-ms needs --max-batch-size"),
        (["--max-batch-size", "0"], "max_batch_size 0 is out of range"),
        (["--workers", "0"], "workers 0 is out of range"),
    ],
)
def test_bad_settings_fail_before_starting(
    iris_model: tuple[Path, Any, Any], args: list[str], message: str
) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mlshift.serving", "--artifact", str(iris_model[0]), "--port", "0", *args],
        env={**os.environ, "PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert result.returncode == 2
    assert message in result.stderr and "Traceback" not in result.stderr


# --------------------------------------------------------------------------- workers


def _children(pid: int) -> list[int]:
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The parent pid is the 2nd field after the command name, which may hold spaces.
        fields = stat.rsplit(")", 1)[1].split()
        if int(fields[1]) == pid and fields[0] != "Z":
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def _workers(pid: int) -> list[int]:
    return [c for c in _children(pid) if b"multiprocessing.spawn" in Path(f"/proc/{c}/cmdline").read_bytes()]


pytestmark_linux = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")


@pytestmark_linux
def test_workers_serve_correct_predictions_and_all_exit_on_shutdown(
    start: Callable[..., Server], iris_model: tuple[Path, Any, Any]
) -> None:
    path, model, X = iris_model
    server = start(path, "--workers", "2", "--max-batch-size", "16")
    workers = _workers(server.proc.pid)
    assert len(workers) == 2
    with ThreadPoolExecutor(8) as pool:
        answers = list(
            pool.map(
                lambda i: server.post("/invocations", json={"instances": X[i : i + 3].tolist()}), range(40)
            )
        )
    for i, response in enumerate(answers):
        assert response.status_code == 200
        assert response.json() == {"predictions": model.predict(X[i : i + 3]).tolist()}
    server.proc.send_signal(signal.SIGTERM)
    assert server.proc.wait(timeout=DEADLINE) == 0
    assert not server.port_file.exists()
    _wait(lambda: not any(_alive(w) for w in workers), "the workers to exit")
    assert server.proc.stderr is not None
    assert b"Traceback" not in server.proc.stderr.read()


@pytestmark_linux
def test_workers_exit_when_the_supervisor_is_killed(
    start: Callable[..., Server], iris_model: tuple[Path, Any, Any]
) -> None:
    server = start(iris_model[0], "--workers", "2")
    workers = _workers(server.proc.pid)
    assert len(workers) == 2
    server.proc.kill()
    server.proc.wait(timeout=DEADLINE)
    _wait(lambda: not any(_alive(w) for w in workers), "orphaned workers to exit")


def test_a_worker_that_cannot_load_fails_the_server_with_its_error(iris_model: tuple[Path, Any, Any]) -> None:
    result = subprocess.run(
        [
            *SERVER,
            "--artifact",
            str(iris_model[0]),
            "--port",
            "0",
            "--workers",
            "2",
            "--digest",
            "sha256:" + "1" * 64,
        ],
        env={**os.environ, "PYTHONPATH": str(SRC)},
        capture_output=True,
        text=True,
        timeout=DEADLINE,
    )
    assert result.returncode == 3
    assert "does not match its registered digest" in result.stderr
    assert "Traceback" not in result.stderr


def test_merged_predictions_are_split_by_request() -> None:
    from mlshift.serving._loaders import _split

    assert _split(list(range(6)), [1, 3, 2]) == [[0], [1, 2, 3], [4, 5]]
    with pytest.raises(TypeError, match="5 predictions for 6 rows"):
        _split(list(range(5)), [1, 3, 2])


def test_accepted_connections_get_tcp_nodelay_on_the_plain_asyncio_loop() -> None:
    # Without it, every small response on a connection waits ~40 ms for the client's
    # delayed ACK (the uvicorn multi-worker cliff); asyncio sets it only for TCP sockets.
    import asyncio
    import socket

    from mlshift.serving._server import _bind

    async def check() -> int:
        nodelay: asyncio.Future[int] = asyncio.get_running_loop().create_future()

        async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            accepted = writer.get_extra_info("socket")
            nodelay.set_result(accepted.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY))
            writer.close()

        sock = _bind("127.0.0.1", 0)
        server = await asyncio.start_server(handle, sock=sock)
        async with server:
            _, writer = await asyncio.open_connection(*sock.getsockname()[:2])
            value = await asyncio.wait_for(nodelay, DEADLINE)
            writer.close()
        return value

    assert asyncio.new_event_loop().run_until_complete(check()) != 0


def test_big_requests_and_requests_with_parameters_are_predicted_on_their_own(
    iris_model: tuple[Path, Any, Any],
) -> None:
    import warnings

    from mlshift.serving import create_app

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from starlette.testclient import TestClient

    path, model, X = iris_model
    client = TestClient(create_app(load_model(path, "sklearn"), batching=Batching(max_batch_size=5000)))
    big = np.tile(X, (8, 1))[:1001]
    response = client.post("/invocations", json={"instances": big.tolist()})
    assert response.json() == {"predictions": model.predict(big).tolist()}
    with_params = client.post("/invocations", json={"instances": X[:2].tolist(), "parameters": {"k": 1}})
    assert with_params.status_code == 400 and "parameters" in with_params.json()["error"]["message"]
    small = client.post("/invocations", json={"instances": X[:2].tolist()})
    assert small.json() == {"predictions": model.predict(X[:2]).tolist()}
    # Only the small request went through the batcher.
    stats = client.get("/v1/metadata").json()["batching"]
    assert (stats["requests"], stats["rows"]) == (1, 2)


# The first worker to load returns at once; any other waits until the test opens the gate.
SLOW_SECOND_LOAD = """
import os, time
from pathlib import Path
from typing import Any


class Predictor:
    def load(self, path: Path) -> None:
        gate = Path((path / "gate.txt").read_text())
        try:
            os.close(os.open(gate / "first", os.O_CREAT | os.O_EXCL))
            return
        except FileExistsError:
            (gate / "waiting").touch()
        deadline = time.monotonic() + 60
        while not (gate / "open").exists() and time.monotonic() < deadline:
            time.sleep(0.01)

    def predict(self, batch: list[list[Any]]) -> list[Any]:
        return [os.getpid() for _ in batch]
"""


def _listening(pid: int) -> bool:
    """Whether a TCP socket of process ``pid`` listens (one only bound is not in the table)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if fields[9] in inodes:
            return fields[3] == "0A"  # TCP_LISTEN
    return False


@pytestmark_linux
def test_no_worker_answers_before_every_worker_has_loaded(tmp_path: Path) -> None:
    # Otherwise the first keep-alive connections (a load balancer's, a benchmark's) would all
    # go to the first worker up and stay there while the others idle.
    artifact, gate = tmp_path / "slow", tmp_path / "gate"
    artifact.mkdir()
    gate.mkdir()
    (artifact / "predictor.py").write_text(SLOW_SECOND_LOAD)
    (artifact / "gate.txt").write_text(str(gate))
    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [
            *SERVER,
            "--artifact",
            str(artifact),
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--workers",
            "2",
        ],
        env={**os.environ, "PYTHONPATH": str(SRC)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        _wait(lambda: (gate / "waiting").exists(), "the second worker to wait", proc)
        assert not _listening(proc.pid)  # bound, and nobody listens on it
        # The first worker has loaded; give it time it would take to start listening.
        deadline = time.monotonic() + 2.0
        while time.monotonic() < deadline:
            assert not _listening(proc.pid)
            time.sleep(0.05)
        (gate / "open").touch()
        port = int(_wait(lambda: port_file.exists() and port_file.read_text().strip(), "the port file", proc))
        answer = httpx.post(
            f"http://127.0.0.1:{port}/invocations", json={"instances": [[1]]}, timeout=DEADLINE
        )
        assert answer.status_code == 200
        assert answer.json()["predictions"][0] in _workers(proc.pid)
    finally:
        proc.terminate()
        proc.wait(timeout=DEADLINE)
