"""Peers: `mlshift serve` vs MLServer and BentoML on the same model, same harness, same pinning.

The model and 1-row bodies are bench/serving.py's (LogisticRegression on 20 features). Each
peer runs from a venv of its own (``--mlserver-python``, ``--bentoml-python``; `nox -s bench`
makes them from bench/requirements/mlserver.txt and bentoml.txt), with the same scikit-learn
as mlshift's venv, loading the same fitted estimator:

- **MLServer** (``mlserver start``, the ``mlserver_sklearn.SKLearnModel`` runtime, Open
  Inference Protocol V2 JSON tensors on ``POST /v2/models/model/infer``), in its default
  settings and in its best documented configuration for one small model: inference in the
  server process (``parallel_workers: 0``) with adaptive batching (``max_batch_size`` 64,
  ``max_batch_time`` 5 ms);
- **BentoML** (``bentoml serve``; a minimal service whose ``predict`` API takes a NumPy array,
  one worker), with adaptive batching (``batchable=True``, ``max_batch_size`` 64) and without;
- **mlshift** on its own payload (``dataframe_split`` on ``/invocations``, as in Serving) and on
  the V2 route with the same tensor body MLServer gets.

Per round, each server in turn (the order rotates): launch → first 200 (cold start), check its
predictions against the model's, a warm-up and a measured run of 16 keep-alive connections
with 1-row bodies, then stop it. Only 200 answers count.
"""

from __future__ import annotations

import json
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import (
    PATH,
    AsyncClient,
    Server,
    cpu_plan,
    free_port,
    measure,
    median,
    mlshift_cmd,
    pick_load_generator,
    post,
    ratio,
    run_medians,
)
from serving import Workload, make_workload

CONNECTIONS = 16
MODEL_NAME = "model"
V2_PATH = f"/v2/models/{MODEL_NAME}/infer"
#: MLServer's and BentoML's batching, as close to mlshift's batching benchmark as they allow.
MAX_BATCH_SIZE = 64
MAX_BATCH_TIME_S = 0.005

#: What each peer configuration is, in the report's words.
DESCRIPTIONS = {
    "mlshift": "`mlshift serve`, its own payload (`dataframe_split` on `/invocations`), batching off",
    "mlshift-v2": "`mlshift serve`, V2 JSON tensor on `/v2/models/model/infer`, batching off",
    "mlserver-best": "MLServer, sklearn runtime, V2 JSON tensor; `parallel_workers: 0`, adaptive batching"
    f" (`max_batch_size: {MAX_BATCH_SIZE}`, `max_batch_time: {MAX_BATCH_TIME_S:g}`)",
    "mlserver-default": "MLServer, sklearn runtime, V2 JSON tensor; default settings (`parallel_workers: 1`)",
    "bentoml-batch": "BentoML, minimal service, NumPy input; `batchable=True`,"
    f" `max_batch_size={MAX_BATCH_SIZE}`",
    "bentoml": "BentoML, minimal service, NumPy input; no batching",
}


# ------------------------------------------------------------------------ request bodies


def v2_body(rows: list[list[float]]) -> bytes:
    """An Open Inference Protocol V2 JSON request: one FP64 tensor of ``rows``."""
    flat = [x for row in rows for x in row]
    tensor = {"name": "input", "shape": [len(rows), len(rows[0])], "datatype": "FP64", "data": flat}
    return json.dumps({"inputs": [tensor]}).encode()


def bentoml_body(rows: list[list[float]]) -> bytes:
    """A request to the BentoML service's ``predict`` API (its argument by name)."""
    return json.dumps({"instances": rows}).encode()


def predictions_of(kind: str, raw: bytes) -> list[Any]:
    """The predictions in a server's answer, flat, whatever the protocol."""
    data = json.loads(raw)
    if kind.startswith("bentoml"):
        return list(data)
    if kind == "mlshift":
        return list(data["predictions"])
    (output,) = data["outputs"]  # V2: mlshift-v2 and MLServer
    values = output["data"]
    return [v for row in values for v in row] if values and isinstance(values[0], list) else list(values)


# ------------------------------------------------------------------------------- MLServer


def mlserver_files(folder: Path, model_file: Path, *, best: bool, ports: dict[str, int]) -> Path:
    """Write MLServer's ``settings.json`` and ``model-settings.json`` into ``folder``; returns it.

    ``best``: ``parallel_workers: 0`` and adaptive batching (MLServer's documented route to
    throughput for a small model); otherwise only the ports and the host, as its defaults.
    """
    folder.mkdir(parents=True, exist_ok=True)
    settings: dict[str, Any] = {
        "host": "127.0.0.1",
        "http_port": ports["http"],
        "grpc_port": ports["grpc"],
        "metrics_port": ports["metrics"],
    }
    model: dict[str, Any] = {
        "name": MODEL_NAME,
        "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": str(model_file), "version": "v1"},
    }
    if best:
        settings["parallel_workers"] = 0
        model["max_batch_size"] = MAX_BATCH_SIZE
        model["max_batch_time"] = MAX_BATCH_TIME_S
    (folder / "settings.json").write_text(json.dumps(settings, indent=2))
    (folder / "model-settings.json").write_text(json.dumps(model, indent=2))
    return folder


def mlserver_command(python: str, folder: Path) -> list[str]:
    return [str(Path(python).parent / "mlserver"), "start", str(folder)]


#: Loads the skops file in the peer's venv and writes what MLServer's sklearn runtime reads.
_TO_JOBLIB = """
import sys, joblib, skops.io as sio
untrusted = sio.get_untrusted_types(file=sys.argv[1])
joblib.dump(sio.load(sys.argv[1], trusted=untrusted), sys.argv[2])
"""


def to_joblib(python: str, skops_file: Path, out: Path) -> Path:
    subprocess.run(
        [python, "-c", _TO_JOBLIB, str(skops_file), str(out)], check=True, capture_output=True, timeout=300
    )
    return out


# -------------------------------------------------------------------------------- BentoML


def bentoml_service(skops_file: Path, *, batching: bool) -> str:
    """The source of a minimal BentoML service around the same model (one worker)."""
    api = f"@bentoml.api(batchable=True, max_batch_size={MAX_BATCH_SIZE})" if batching else "@bentoml.api"
    return f"""import bentoml
import numpy as np
import skops.io as sio

PATH = {str(skops_file)!r}


@bentoml.service(workers=1)
class Model:
    def __init__(self) -> None:
        self.model = sio.load(PATH, trusted=sio.get_untrusted_types(file=PATH))

    {api}
    def predict(self, instances: np.ndarray) -> np.ndarray:
        return self.model.predict(instances)
"""


def bentoml_command(python: str, folder: Path, port: int) -> list[str]:
    return [
        str(Path(python).parent / "bentoml"), "serve", "service:Model",
        "--working-dir", str(folder), "--host", "127.0.0.1", "--port", str(port),
    ]  # fmt: skip


# -------------------------------------------------------------------------------- harness


@dataclass
class Peer:
    """One server configuration: how to start it on a port, where to POST, what body."""

    name: str
    path: str
    body: Path
    command: Any  # (port) -> list[str]
    env: dict[str, str] = field(default_factory=dict)


def peers_for(
    workload: Workload, folder: Path, mlserver_python: str | None, bentoml_python: str | None
) -> tuple[list[Peer], list[str]]:
    """The configurations to measure, and notes on the peers that cannot be."""
    rows = [
        [float(x) for x in row]
        for row in json.loads(workload.bodies[1].read_text())["dataframe_split"]["data"]
    ]
    v2 = folder / "body_v2.json"
    v2.write_bytes(v2_body(rows))

    def mlshift(port: int) -> list[str]:
        return [*mlshift_cmd(), "serve", str(workload.skops), "--port", str(port)]

    peers = [Peer("mlshift", PATH, workload.bodies[1], mlshift), Peer("mlshift-v2", V2_PATH, v2, mlshift)]
    notes: list[str] = []
    if mlserver_python:
        model_file = to_joblib(mlserver_python, workload.skops, folder / "model.joblib")
        for best in (True, False):
            name = "mlserver-best" if best else "mlserver-default"

            def command(port: int, best: bool = best, name: str = name) -> list[str]:
                ports = {"http": port, "grpc": free_port(), "metrics": free_port()}
                return mlserver_command(
                    mlserver_python, mlserver_files(folder / name, model_file, best=best, ports=ports)
                )

            peers.append(Peer(name, V2_PATH, v2, command, {"MLSERVER_LOGGING": "WARNING"}))
    else:
        notes.append("MLServer not measured: no --mlserver-python given (nox -s bench sets it up)")
    if bentoml_python:
        bento_body = folder / "body_bentoml.json"
        bento_body.write_bytes(bentoml_body(rows))
        for batching in (True, False):
            name = "bentoml-batch" if batching else "bentoml"
            service = folder / name
            service.mkdir(exist_ok=True)
            (service / "service.py").write_text(bentoml_service(workload.skops, batching=batching))
            peers.append(
                Peer(
                    name,
                    "/predict",
                    bento_body,
                    lambda port, service=service: bentoml_command(bentoml_python, service, port),
                    {"BENTOML_DO_NOT_TRACK": "True", "BENTOML_HOME": str(folder / "bentoml-home")},
                )
            )
    else:
        notes.append("BentoML not measured: no --bentoml-python given (nox -s bench sets it up)")
    return peers, notes


def _one(
    peer: Peer, workload: Workload, loadgen: Any, duration: int, max_requests: int, cpu: int | None
) -> dict[str, Any]:
    port = free_port()
    log = workload.folder / f"{peer.name}.log"
    with Server(peer.name, peer.command(port), port, log, env=peer.env, cpu=cpu) as server:
        cold = server.wait_for_200(peer.path, peer.body.read_bytes(), timeout=180.0)
        status, raw = post(port, peer.path, peer.body.read_bytes())
        got = predictions_of(peer.name, raw) if status == 200 else None
        if got != workload.expected[1]:
            raise RuntimeError(
                f"{peer.name} answered {status} {raw[:300]!r}, expected {workload.expected[1]}"
            )
        row = measure(
            loadgen, port, peer.body, CONNECTIONS, duration, max_requests, server.cpu_seconds, path=peer.path
        )
        row["cold_start_s"] = round(cold, 3)
        row["rss_mb"] = server.rss_mb()
    return row


def bench_peers(
    repeat: int,
    *,
    quick: bool = False,
    mlserver_python: str | None = None,
    bentoml_python: str | None = None,
    loadgen_choice: str = "auto",
    duration: int = 4,
    pin: bool = True,
) -> dict[str, Any]:
    """Every configuration at 16 connections, 1-row bodies; medians and mlshift's ratios to each."""
    loadgen = AsyncClient() if quick else pick_load_generator(loadgen_choice)
    server_cpu, loadgen.cpu = cpu_plan() if pin else (None, None)
    max_requests = 300 if quick else 10_000_000
    duration = 2 if quick else duration
    with tempfile.TemporaryDirectory(prefix="mlshift-bench-peers-") as tmp:
        folder = Path(tmp)
        workload = make_workload(folder)
        peers, notes = peers_for(
            workload, folder, None if quick else mlserver_python, None if quick else bentoml_python
        )
        samples: dict[str, list[dict[str, Any]]] = {p.name: [] for p in peers}
        failures: dict[str, str] = {}
        for rep in range(repeat):
            order = peers[rep % len(peers) :] + peers[: rep % len(peers)]
            for peer in order:
                if peer.name in failures:
                    continue
                print(f"  peers: {peer.name} (round {rep + 1}/{repeat})", flush=True)
                try:
                    samples[peer.name].append(
                        _one(peer, workload, loadgen, duration, max_requests, server_cpu)
                    )
                except (RuntimeError, OSError, subprocess.SubprocessError) as exc:
                    failures[peer.name] = str(exc)[-400:]
                    notes.append(f"{peer.name} failed: {failures[peer.name]}")
    servers = {name: _aggregate(rows) for name, rows in samples.items() if rows}
    return {
        "load_generator": loadgen.name,
        "cpus": {"server": server_cpu, "load_generator": loadgen.cpu},
        "connections": CONNECTIONS,
        "rows_per_request": 1,
        "duration_s": duration,
        "repeat": repeat,
        "servers": servers,
        "descriptions": {k: v for k, v in DESCRIPTIONS.items() if k in servers},
        "best_peer": best_peer(servers),
        "ratios": peer_ratios(servers),
        "notes": notes,
    }


def _aggregate(rows: list[dict[str, Any]]) -> dict[str, Any]:
    return {
        **run_medians(rows),
        "cold_start_s": median([r["cold_start_s"] for r in rows], 3),
        "rss_mb": median([r["rss_mb"] for r in rows]),
    }


def best_peer(servers: dict[str, Any]) -> str | None:
    """The peer configuration with the most req/s (mlshift's own rows are not peers)."""
    measured = {n: s["rps"] for n, s in servers.items() if not n.startswith("mlshift") and s["rps"]}
    return max(measured, key=lambda n: measured[n]) if measured else None


def peer_ratios(servers: dict[str, Any]) -> dict[str, Any]:
    """mlshift (its best of own payload and V2) ÷ each peer configuration: req/s, p99, cold start."""
    ours = [servers[n] for n in ("mlshift", "mlshift-v2") if n in servers and servers[n]["rps"]]
    if not ours:
        return {}
    best = max(ours, key=lambda s: s["rps"])
    out: dict[str, Any] = {}
    for name, theirs in servers.items():
        if name.startswith("mlshift"):
            continue
        out[name] = {
            "rps": ratio(best["rps"], theirs["rps"], 2),
            "p99": ratio(best["p99_ms"], theirs["p99_ms"], 3),
            "cold_start": ratio(best["cold_start_s"], theirs["cold_start_s"], 3),
            "rps_v2": ratio(servers.get("mlshift-v2", {}).get("rps"), theirs["rps"], 2),
        }
    return out


if __name__ == "__main__":
    import sys

    args = dict(zip(sys.argv[1::2], sys.argv[2::2], strict=False))
    result = bench_peers(
        int(args.get("--repeat", "1")),
        mlserver_python=args.get("--mlserver-python"),
        bentoml_python=args.get("--bentoml-python"),
        duration=int(args.get("--duration", "4")),
    )
    print(json.dumps(result, indent=2))
