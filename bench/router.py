"""The router hop: a variant's model server called on its own URL vs through the endpoint's router.

The same model and 1-row ``dataframe_split`` bodies as bench/serving.py. Per round, one
`python -m mlshift.serving` replica (on the server CPU) and one local router
(``python -m mlshift.local._router``, as ``local://`` runs it, in front of that replica only)
are started; then, alternating which goes first, a warm-up and a measured load run of 16
keep-alive connections straight at the replica, and the same through the router. The claims:
through the router, at least 0.85x the req/s of the direct URL, and p99 at most 1 ms more.

The router is not pinned: on ``local://`` it is one more process the OS schedules, and on a
two-CPU machine it shares the CPUs with the replica and the load generator (the report says so).
"""

from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from common import (
    PATH,
    AsyncClient,
    Server,
    cpu_plan,
    free_port,
    median,
    pick_load_generator,
    post,
    ratio,
    run_medians,
    summarize,
)
from serving import make_workload

CONNECTIONS = 16
CONFIGS = ("direct", "router")


def _router_cmd(routes: Path, port: int, port_file: Path) -> list[str]:
    return [
        sys.executable, "-m", "mlshift.local._router",
        "--routes", str(routes), "--port", str(port), "--port-file", str(port_file),
    ]  # fmt: skip


def bench_router(
    repeat: int,
    *,
    quick: bool = False,
    loadgen_choice: str = "auto",
    duration: int = 4,
    pin: bool = True,
) -> dict[str, Any]:
    """Direct vs through the router at 16 connections; medians per configuration and the ratios."""
    loadgen = AsyncClient() if quick else pick_load_generator(loadgen_choice)
    server_cpu, loadgen.cpu = cpu_plan() if pin else (None, None)
    max_requests = 300 if quick else 10_000_000
    duration = 2 if quick else duration
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in CONFIGS}
    router_cpu: list[float] = []
    with tempfile.TemporaryDirectory(prefix="mlshift-bench-router-") as tmp:
        folder = Path(tmp)
        workload = make_workload(folder)
        body = workload.bodies[1]
        for rep in range(repeat):
            print(f"  router: round {rep + 1}/{repeat}", flush=True)
            port = free_port()
            cmd = [
                sys.executable,
                "-m",
                "mlshift.serving",
                "--artifact",
                str(workload.skops),
                "--port",
                str(port),
            ]
            with Server("mlshift replica", cmd, port, folder / "replica.log", cpu=server_cpu) as replica:
                replica.wait_for_200(PATH, body.read_bytes())
                routes = folder / "routes.json"
                routes.write_text(
                    json.dumps(
                        {
                            "variants": [
                                {
                                    "name": "blue",
                                    "weight": 100,
                                    "backends": [f"http://127.0.0.1:{port}"],
                                    "model": "bench:1",
                                }
                            ]
                        }
                    )
                )
                router_port = free_port()
                port_file = folder / f"router-{rep}.port"
                router_log = folder / "router.log"
                with Server(
                    "router", _router_cmd(routes, router_port, port_file), router_port, router_log
                ) as router:
                    router.wait_for_200(PATH, body.read_bytes())
                    for name, target in (("direct", port), ("router", router_port)):
                        status, raw = post(target, PATH, body.read_bytes())
                        got = json.loads(raw).get("predictions") if status == 200 else None
                        if got != workload.expected[1]:
                            raise RuntimeError(f"{name} answered {status} {raw[:200]!r}")
                    order = CONFIGS[rep % 2 :] + CONFIGS[: rep % 2]  # alternate who goes first
                    for name in order:
                        target = port if name == "direct" else router_port
                        loadgen.run(target, body, CONNECTIONS, 1, max_requests)  # warm-up
                        cpu_before = replica.cpu_seconds()
                        router_before = router.cpu_seconds()
                        run = loadgen.run(target, body, CONNECTIONS, duration, max_requests)
                        row = summarize(run, 1, replica.cpu_seconds() - cpu_before)
                        if name == "router" and row["rps"]:
                            spent = router.cpu_seconds() - router_before
                            ok = run["requests"] - run["non200"]
                            router_cpu.append(round(spent * 1e6 / ok, 1) if ok else 0.0)
                        samples[name].append(row)
    configs = {name: _aggregate(runs) for name, runs in samples.items()}
    direct, routed = configs["direct"], configs["router"]
    added = None
    if direct["p99_ms"] is not None and routed["p99_ms"] is not None:
        added = round(routed["p99_ms"] - direct["p99_ms"], 2)
    return {
        "load_generator": loadgen.name,
        "cpus": {"server": server_cpu, "load_generator": loadgen.cpu, "router": None},
        "connections": CONNECTIONS,
        "rows_per_request": 1,
        "duration_s": duration,
        "repeat": repeat,
        "configs": configs,
        "router_cpu_us_per_req": median(router_cpu),
        "ratios": {"rps_router_vs_direct": ratio(routed["rps"], direct["rps"]), "p99_added_ms": added},
    }


def _aggregate(runs: list[dict[str, Any]]) -> dict[str, Any]:
    medians = run_medians(runs)
    # The CPU measured is the replica's (the router's own is reported apart).
    medians["replica_cpu_us_per_req"] = medians.pop("cpu_us_per_req")
    return medians


if __name__ == "__main__":
    print(json.dumps(bench_router(int(sys.argv[1]) if len(sys.argv) > 1 else 3), indent=2))
