"""Batching: `mlshift serve` at 64 connections of 1-row bodies, batching off vs on.

The same model and bodies as bench/serving.py. Per round, each configuration in turn (the
order alternates): launch, check its predictions, a warm-up and a measured load run of 64
keep-alive connections each sending one-row ``dataframe_split`` bodies, then read the
server's own batch counts from ``GET /v1/metadata``. The claims: req/s with batching on is at
least 1.3x without, and its p99 stays within ``max_latency_ms`` plus the unbatched p99.
"""

from __future__ import annotations

import http.client
import json
import tempfile
from pathlib import Path
from typing import Any

from common import (
    LOOPBACK,
    PATH,
    AsyncClient,
    Server,
    cpu_plan,
    free_port,
    median,
    mlshift_cmd,
    pick_load_generator,
    post,
    ratio,
    run_medians,
    summarize,
)
from serving import make_workload

CONNECTIONS = 64
MAX_BATCH_SIZE = 64
MAX_LATENCY_MS = 5.0
CONFIGS = {
    "off": [],
    "on": ["--max-batch-size", str(MAX_BATCH_SIZE), "--max-latency-ms", f"{MAX_LATENCY_MS:g}"],
}


def _batching_stats(port: int) -> dict[str, Any] | None:
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=10)
    try:
        conn.request("GET", "/v1/metadata")
        stats: dict[str, Any] | None = json.loads(conn.getresponse().read())["batching"]
        return stats
    finally:
        conn.close()


def bench_batching(
    repeat: int,
    *,
    quick: bool = False,
    loadgen_choice: str = "auto",
    duration: int = 4,
    pin: bool = True,
) -> dict[str, Any]:
    """Batching off vs on at 64 connections; returns medians per configuration and the ratios."""
    loadgen = AsyncClient() if quick else pick_load_generator(loadgen_choice)
    server_cpu, loadgen.cpu = cpu_plan() if pin else (None, None)
    max_requests = 300 if quick else 10_000_000
    duration = 2 if quick else duration
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in CONFIGS}
    with tempfile.TemporaryDirectory(prefix="mlshift-bench-batching-") as tmp:
        workload = make_workload(Path(tmp))
        body = workload.bodies[1]
        names = list(CONFIGS)
        for rep in range(repeat):
            order = names[rep % 2 :] + names[: rep % 2]  # alternate who goes first
            for name in order:
                print(f"  batching: {name} (round {rep + 1}/{repeat})", flush=True)
                port = free_port()
                cmd = [*mlshift_cmd(), "serve", str(workload.skops), "--port", str(port), *CONFIGS[name]]
                log = workload.folder / f"batching-{name}.log"
                with Server(f"mlshift (batching {name})", cmd, port, log, cpu=server_cpu) as server:
                    server.wait_for_200(PATH, body.read_bytes())
                    status, raw = post(port, PATH, body.read_bytes())
                    got = json.loads(raw).get("predictions") if status == 200 else None
                    if got != workload.expected[1]:
                        raise RuntimeError(f"batching {name} answered {status} {raw[:200]!r}")
                    loadgen.run(port, body, CONNECTIONS, 1, max_requests)  # warm-up, not counted
                    before = _batching_stats(port)
                    cpu_before = server.cpu_seconds()
                    run = loadgen.run(port, body, CONNECTIONS, duration, max_requests)
                    row = summarize(run, 1, server.cpu_seconds() - cpu_before)
                    after = _batching_stats(port)
                    if before is not None and after is not None:
                        batches = after["batches"] - before["batches"]
                        rows = after["rows"] - before["rows"]
                        row["mean_batch_rows"] = round(rows / batches, 1) if batches else None
                    samples[name].append(row)
    configs = {name: _aggregate(runs) for name, runs in samples.items()}
    off, on = configs["off"], configs["on"]
    budget = None if off["p99_ms"] is None else round(off["p99_ms"] + MAX_LATENCY_MS, 2)
    return {
        "load_generator": loadgen.name,
        "cpus": {"server": server_cpu, "load_generator": loadgen.cpu},
        "connections": CONNECTIONS,
        "rows_per_request": 1,
        "max_batch_size": MAX_BATCH_SIZE,
        "max_latency_ms": MAX_LATENCY_MS,
        "duration_s": duration,
        "repeat": repeat,
        "configs": configs,
        "ratios": {"rps_on_vs_off": ratio(on["rps"], off["rps"]), "p99_budget_ms": budget},
    }


def _aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    return {**run_medians(runs), "mean_batch_rows": median([r.get("mean_batch_rows") for r in runs])}
