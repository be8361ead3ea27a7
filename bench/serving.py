"""Serving: `mlshift serve` vs `mlflow models serve` vs a bare Starlette ceiling, same model.

One scikit-learn LogisticRegression on 20 named features is trained here, saved once as a
``.skops`` file (what mlshift and the ceiling load) and, from that very file, as an MLflow
model directory by ``mlflow.sklearn.save_model`` in mlflow's own venv. Every server gets the
same ``dataframe_split`` bodies (MLflow's own payload) on ``POST /invocations``.

Per repetition, each server in turn (the order rotates): launch it and time launch → first
200 (cold start); check that its predictions equal the model's; then for 2 and 16 connections
and 1- and 100-row bodies, a warm-up and a measured load run from a separate process (wrk, or
bench/loadgen.py when wrk is missing); then its resident memory; then stop it. Only 200
answers count as throughput: a run with any other status or a socket error is reported as
failed and left out of the medians.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from common import (
    BENCH,
    LOOPBACK,
    PATH,
    AsyncClient,
    LoadGenerator,
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

N_FEATURES = 20
COLUMNS = [f"f{i}" for i in range(N_FEATURES)]
BODY_ROWS = (1, 100)
CONNECTIONS = (2, 16)


# -------------------------------------------------------------------------------- model


@dataclass
class Workload:
    """The model files and request bodies every server is measured with."""

    folder: Path
    skops: Path
    feature_names: bool
    bodies: dict[int, Path]
    expected: dict[int, list[Any]]
    bad_body: bytes
    mlflow_model: Path | None = None


def make_workload(folder: Path) -> Workload:
    """Train the model (on a DataFrame when pandas is installed, so it has feature names)."""
    import numpy as np
    import skops.io as sio
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(5000, N_FEATURES))
    y = (x @ rng.normal(size=N_FEATURES) + rng.normal(scale=0.5, size=5000) > 0).astype(int)
    try:
        import pandas as pd

        def table(a: Any) -> Any:
            return pd.DataFrame(a, columns=COLUMNS)

        feature_names = True
    except ImportError:  # the smoke test's environment has no pandas: unnamed columns then

        def table(a: Any) -> Any:
            return a

        feature_names = False
    model = LogisticRegression(max_iter=1000).fit(table(x), y)
    skops_path = folder / "model.skops"
    sio.dump(model, skops_path)

    test = np.random.default_rng(1).normal(size=(max(BODY_ROWS), N_FEATURES))
    bodies, expected = {}, {}
    for n in BODY_ROWS:
        rows = test[:n].tolist()
        bodies[n] = folder / f"body_{n}.json"
        bodies[n].write_text(json.dumps({"dataframe_split": {"columns": COLUMNS, "data": rows}}))
        expected[n] = model.predict(table(test[:n])).tolist()
    bad = test[:1].tolist()
    bad[0][3] = "not a number"
    bad_body = json.dumps({"dataframe_split": {"columns": COLUMNS, "data": bad}}).encode()
    return Workload(folder, skops_path, feature_names, bodies, expected, bad_body)


def save_mlflow_model(workload: Workload, mlflow_python: str) -> None:
    out = workload.folder / "mlflow-model"
    subprocess.run(
        [mlflow_python, str(BENCH / "servers" / "mlflow_model.py"), str(workload.skops), str(out)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    workload.mlflow_model = out


# -------------------------------------------------------------------------------- servers


@dataclass
class ServerKind:
    name: str
    cmd: list[str]
    env: dict[str, str] = field(default_factory=dict)


def server_kinds(workload: Workload, mlflow_python: str | None, quick: bool) -> list[ServerKind]:
    kinds = [ServerKind("mlshift", [*mlshift_cmd(), "serve", str(workload.skops), "--port", "{port}"])]
    if quick:
        return kinds
    if mlflow_python and workload.mlflow_model is not None:
        mlflow_exe = str(Path(mlflow_python).parent / "mlflow")
        kinds.append(
            ServerKind(
                "mlflow",
                [
                    *(mlflow_exe, "models", "serve", "-m", str(workload.mlflow_model)),
                    # Both spellings of "use this venv as it is" (--no-conda is the older one).
                    *("--env-manager", "local", "--no-conda", "-h", LOOPBACK, "-p", "{port}"),
                ],
                env={
                    # mlflow starts `uvicorn` from PATH: as if its venv were activated.
                    "PATH": f"{Path(mlflow_python).parent}{os.pathsep}{os.environ.get('PATH', '')}",
                    # No usage reporting from a benchmark (the network is closed anyway).
                    "MLFLOW_DISABLE_TELEMETRY": "true",
                    "DO_NOT_TRACK": "true",
                },
            )
        )
    kinds.append(
        ServerKind(
            "starlette-ceiling",
            [sys.executable, str(BENCH / "servers" / "ceiling.py"), str(workload.skops), "{port}"],
        )
    )
    return kinds


def _config(connections: int, rows: int) -> str:
    return f"c{connections}_r{rows}"


def _one_server(
    kind: ServerKind,
    workload: Workload,
    loadgen: LoadGenerator,
    duration: int,
    max_requests: int,
    load: bool,
    cpu: int | None,
) -> dict[str, Any]:
    """Launch, time the first 200, check answers, load it, read its memory, stop it."""
    port = free_port()
    cmd = [a.replace("{port}", str(port)) for a in kind.cmd]
    log = workload.folder / f"{kind.name}.log"
    out: dict[str, Any] = {}
    with Server(kind.name, cmd, port, log, env=kind.env, cpu=cpu) as server:
        out["cold_start_s"] = round(server.wait_for_200(PATH, workload.bodies[1].read_bytes()), 3)
        if not load:
            return out
        for n, body in workload.bodies.items():
            status, raw = post(port, PATH, body.read_bytes())
            got = json.loads(raw).get("predictions") if status == 200 else None
            if got != workload.expected[n]:
                raise RuntimeError(f"{kind.name} answered {status} {raw[:200]!r} to the {n}-row body")
        out["bad_payload_status"] = post(port, PATH, workload.bad_body)[0]
        runs: dict[str, Any] = {}
        for connections in CONNECTIONS:
            for rows, body in workload.bodies.items():
                runs[_config(connections, rows)] = measure(
                    loadgen, port, body, connections, duration, max_requests, server.cpu_seconds, rows=rows
                )
        out["runs"] = runs
        out["rss_mb"] = server.rss_mb()
    return out


def bench_serving(
    repeat: int,
    *,
    quick: bool = False,
    mlflow_python: str | None = None,
    loadgen_choice: str = "auto",
    duration: int = 4,
    pin: bool = True,
) -> dict[str, Any]:
    """Run the serving comparison; returns per-server medians and the ratios that are claimed."""
    loadgen = AsyncClient() if quick else pick_load_generator(loadgen_choice)
    server_cpu, loadgen.cpu = cpu_plan() if pin else (None, None)
    max_requests = 300 if quick else 10_000_000
    duration = 2 if quick else duration
    with tempfile.TemporaryDirectory(prefix="mlshift-bench-") as tmp:
        workload = make_workload(Path(tmp))
        notes: list[str] = []
        if mlflow_python and not quick:
            try:
                save_mlflow_model(workload, mlflow_python)
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired, OSError) as exc:
                stderr = getattr(exc, "stderr", b"") or b""
                notes.append(f"mlflow model not saved: {exc} {stderr.decode(errors='replace')[-300:]}")
        elif not quick:
            notes.append("mlflow not measured: no --mlflow-python given (nox -s bench sets it up)")
        kinds = server_kinds(workload, mlflow_python, quick)
        samples: dict[str, list[dict[str, Any]]] = {k.name: [] for k in kinds}
        cold: dict[str, list[float]] = {k.name: [] for k in kinds}
        for rep in range(repeat):
            order = kinds[rep % len(kinds) :] + kinds[: rep % len(kinds)]  # alternate who goes first
            for kind in order:
                print(f"  serving: {kind.name} (round {rep + 1}/{repeat})", flush=True)
                result = _one_server(kind, workload, loadgen, duration, max_requests, True, server_cpu)
                samples[kind.name].append(result)
                cold[kind.name].append(result["cold_start_s"])
        # Cold start alone is cheap to sample more often: two more alternating launches each.
        for _ in range(0 if quick else 2):
            for kind in kinds:
                once = _one_server(kind, workload, loadgen, 0, 0, False, server_cpu)
                cold[kind.name].append(once["cold_start_s"])
    servers = {name: _aggregate(runs, cold[name]) for name, runs in samples.items()}
    return {
        "load_generator": loadgen.name,
        "cpus": {"server": server_cpu, "load_generator": loadgen.cpu},
        "duration_s": duration,
        "repeat": repeat,
        "model": {
            "estimator": "LogisticRegression",
            "features": N_FEATURES,
            "feature_names": workload.feature_names,
            "payload": "dataframe_split",
        },
        "servers": servers,
        "ratios": _ratios(servers),
        "notes": notes,
    }


def _aggregate(results: list[dict[str, Any]], cold: list[float]) -> dict[str, Any]:
    configs = {
        name: run_medians([r["runs"][name] for r in results], rows_per_s=True) for name in results[0]["runs"]
    }
    return {
        "cold_start_s": median(cold, 3),
        "cold_start_samples": cold,
        "rss_mb": median([r["rss_mb"] for r in results]),
        "bad_payload_status": sorted({r["bad_payload_status"] for r in results}),
        "configs": configs,
    }


def _ratios(servers: dict[str, Any]) -> dict[str, Any]:
    ours = servers["mlshift"]
    out: dict[str, Any] = {}
    if "mlflow" in servers and "starlette-ceiling" in servers:
        # The bound on any server built on this stack: the ceiling's own ratio to mlflow.
        ceiling, mlflow = servers["starlette-ceiling"]["configs"], servers["mlflow"]["configs"]
        out["ceiling_vs_mlflow"] = {
            cfg: {"rps": ratio(ceiling[cfg]["rps"], mlflow[cfg]["rps"], 3)} for cfg in ceiling
        }
    for peer, key in (("mlflow", "vs_mlflow"), ("starlette-ceiling", "vs_ceiling")):
        if peer not in servers:
            continue
        theirs = servers[peer]
        out[key] = {
            "cold_start": ratio(ours["cold_start_s"], theirs["cold_start_s"], 3),
            "rss": ratio(ours["rss_mb"], theirs["rss_mb"]),
            **{
                cfg: {
                    "rps": ratio(ours["configs"][cfg]["rps"], theirs["configs"][cfg]["rps"], 3),
                    "p99": ratio(ours["configs"][cfg]["p99_ms"], theirs["configs"][cfg]["p99_ms"], 3),
                    "cpu_per_req": ratio(
                        ours["configs"][cfg]["cpu_us_per_req"], theirs["configs"][cfg]["cpu_us_per_req"], 3
                    ),
                }
                for cfg in ours["configs"]
            },
        }
    return out
