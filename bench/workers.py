"""Workers: `mlshift serve --workers 2` vs one worker, same model and bodies as bench/serving.py.

Per round, each configuration in turn (the order alternates): launch, check its predictions, a
warm-up and a measured run of 16 keep-alive connections sending 1-row ``dataframe_split``
bodies. Nothing is pinned: the workers may use every CPU. On a machine with two CPUs the load
generator shares them with the two workers, so the ratio it shows is a lower bound of what a
third core for the load generator would show (the report states the CPU count).
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from common import (
    PATH,
    AsyncClient,
    Server,
    free_port,
    measure,
    mlshift_cmd,
    pick_load_generator,
    post,
    ratio,
    run_medians,
)
from serving import make_workload

CONNECTIONS = 16
CONFIGS = {"1 worker": 1, "2 workers": 2}


def bench_workers(
    repeat: int, *, quick: bool = False, loadgen_choice: str = "auto", duration: int = 4
) -> dict[str, Any]:
    """1 vs 2 workers at 16 connections; medians per configuration and the ratio."""
    loadgen = AsyncClient() if quick else pick_load_generator(loadgen_choice)
    max_requests = 300 if quick else 10_000_000
    duration = 2 if quick else duration
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in CONFIGS}
    with tempfile.TemporaryDirectory(prefix="mlshift-bench-workers-") as tmp:
        workload = make_workload(Path(tmp))
        body = workload.bodies[1]
        names = list(CONFIGS)
        for rep in range(repeat):
            for name in names[rep % 2 :] + names[: rep % 2]:
                print(f"  workers: {name} (round {rep + 1}/{repeat})", flush=True)
                port = free_port()
                cmd = [
                    *mlshift_cmd(),
                    "serve",
                    str(workload.skops),
                    "--port",
                    str(port),
                    "--workers",
                    str(CONFIGS[name]),
                ]
                with Server(f"mlshift ({name})", cmd, port, workload.folder / "workers.log") as server:
                    server.wait_for_200(PATH, body.read_bytes())
                    status, raw = post(port, PATH, body.read_bytes())
                    if status != 200 or json.loads(raw).get("predictions") != workload.expected[1]:
                        raise RuntimeError(f"{name} answered {status} {raw[:200]!r}")
                    samples[name].append(
                        measure(loadgen, port, body, CONNECTIONS, duration, max_requests, server.cpu_seconds)
                    )
    configs = {name: run_medians(runs) for name, runs in samples.items()}
    return {
        "load_generator": loadgen.name,
        "cpus_usable": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "connections": CONNECTIONS,
        "duration_s": duration,
        "repeat": repeat,
        "configs": configs,
        "ratios": {"rps_2_vs_1": ratio(configs["2 workers"]["rps"], configs["1 worker"]["rps"])},
    }
