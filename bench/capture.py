"""Capture: `mlshift serve` with request capture off, at sample_rate 0.1 and at 1.0.

The same model, bodies and load generator as bench/serving.py, on one server process started
with ``MLSHIFT_CAPTURE_DIR`` naming a capture folder. Per round, each configuration in turn
(the order rotates): switch capture the way the local target does (``capture.json`` written
by ``write_capture_config`` with the settings for ``capture: {sample_rate: R}``, removed for
"off"), wait until the server's stats say the rate is in force, then for 16 connections of
1- and 100-row bodies a measured load run. Each rate is compared with "off" of the same round,
seconds apart in the same process. Then wait until the server's writer has written what it
queued and count what it wrote: records in the data files, and the captured / dropped /
failed counts the server keeps, against the answers we received times the rate.

The claims (issue 15): req/s at sample_rate 1.0 is at least 0.95x without capture, and at 0.1
the difference is smaller than the round-to-round spread of the runs without capture.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import (
    BENCH,
    PATH,
    AsyncClient,
    Server,
    cpu_plan,
    free_port,
    median,
    mlshift_cmd,
    pick_load_generator,
    pinned,
    post,
    ratio,
    run_medians,
    summarize,
)
from serving import make_workload

CONNECTIONS = 16
BODY_ROWS = (1, 100)
#: Configuration name → sample rate (``None``: no capture folder at all, as `mlshift serve` runs).
CONFIGS: dict[str, float | None] = {"off": None, "0.1": 0.1, "1.0": 1.0}


def _load_name(rows: int) -> str:
    return f"c{CONNECTIONS}_r{rows}"


def _capture_counts(folder: Path, timeout: float = 15.0) -> dict[str, Any]:
    """What the server wrote to ``folder``, read once its writer has caught up.

    The server rewrites its counts (``stats/*.json``) every half second; two equal readings a
    tick apart, with no load running, mean the queue is empty and the files flushed.
    """
    from mlshift.serving._capture import capture_files

    def stats() -> dict[str, int]:
        total = {"captured": 0, "dropped": 0, "failed": 0}
        for path in sorted((folder / "stats").glob("*.json")):
            try:
                one = json.loads(path.read_text())
            except (OSError, ValueError):
                continue  # replaced while we read it: the next reading has it
            for key in total:
                total[key] += int(one.get(key, 0))
        return total

    deadline = time.monotonic() + timeout
    previous = stats()
    settled = False
    while time.monotonic() < deadline:
        time.sleep(0.6)  # one writer tick (0.5 s) and a margin
        now = stats()
        if now == previous and now["captured"] + now["dropped"] + now["failed"] > 0:
            settled = True
            break
        previous = now
    records = 0
    first: bytes | None = None
    for path in capture_files(folder):
        data = path.read_bytes()
        records += data.count(b"\n")
        if first is None and data:
            first = data.split(b"\n", 1)[0]
    return {**previous, "records": records, "settled": settled, "first": first}


def _set_rate(folder: Path, rate: float, timeout: float = 30.0) -> None:
    """Switch the server's capture to ``rate`` (0: off) and wait until its stats say it is in force.

    What the local target does when an endpoint's ``capture`` changes: it rewrites (or, to
    switch capture off, removes) ``capture.json``; the server re-reads it within a second.
    """
    from mlshift import CaptureSpec
    from mlshift.serving._capture import write_capture_config

    if rate:
        write_capture_config(
            folder, CaptureSpec(sample_rate=rate).model_dump(mode="json", exclude={"enabled"})
        )
    else:
        write_capture_config(folder, None)
    deadline = time.monotonic() + timeout
    while True:
        stated = []
        for path in (folder / "stats").glob("*.json"):
            try:
                stated.append(json.loads(path.read_text()).get("sample_rate"))
            except (OSError, ValueError):
                stated.append(None)  # being replaced: read it again
        if stated and all(s == rate for s in stated):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"the server did not switch capture to sample_rate {rate} within {timeout:.0f} s"
            )
        time.sleep(0.05)


def _one_process(
    workload: Any,
    loadgen: Any,
    duration: int,
    max_requests: int,
    warmup: int,
    cpu: int | None,
    repeat: int,
    body_rows: tuple[int, ...] = BODY_ROWS,
) -> tuple[dict[str, list[dict[str, Any]]], dict[str, Any]]:
    """One server, its capture switched between off, 0.1 and 1.0 before each run.

    One process for every configuration: two launches of the same server differ by several
    percent in req/s (memory layout, where the allocator puts things), more than the 5% being
    judged, and comparing runs of one process a few seconds apart takes that out.

    Returns the load runs per configuration (one entry per round) and what the server wrote.
    """
    from mlshift.serving._capture import CAPTURE_DIR_ENV

    port = free_port()
    cmd = [*mlshift_cmd(), "serve", str(workload.skops), "--port", str(port)]
    folder = workload.folder / "capture"
    folder.mkdir(parents=True, exist_ok=True)
    server = Server(
        "mlshift (capture)",
        cmd,
        port,
        workload.folder / "capture.log",
        env={CAPTURE_DIR_ENV: str(folder)},
        cpu=cpu,
    )
    samples: dict[str, list[dict[str, Any]]] = {name: [] for name in CONFIGS}
    # 200s the load generator counted at each rate (the ones before the first switch: off).
    answered = dict.fromkeys(CONFIGS, 0)
    runs_at = dict.fromkeys(CONFIGS, 0)
    with server:
        server.wait_for_200(PATH, workload.bodies[1].read_bytes())
        for rows in body_rows:
            status, raw = post(server.port, PATH, workload.bodies[rows].read_bytes())
            got = json.loads(raw).get("predictions") if status == 200 else None
            if got != workload.expected[rows]:
                raise RuntimeError(f"the server answered {status} {raw[:200]!r} to the {rows}-row body")
            if warmup:
                loadgen.run(server.port, workload.bodies[rows], CONNECTIONS, 1, warmup)  # not counted
        names = list(CONFIGS)
        for rep in range(repeat):
            order = names[rep % len(names) :] + names[: rep % len(names)]  # rotate who goes first
            for name in order:
                print(f"  capture: {name} (round {rep + 1}/{repeat})", flush=True)
                _set_rate(folder, CONFIGS[name] or 0.0)
                runs: dict[str, Any] = {}
                for rows in body_rows:
                    cpu_before = server.cpu_seconds()
                    raw_run = loadgen.run(
                        server.port, workload.bodies[rows], CONNECTIONS, duration, max_requests
                    )
                    answered[name] += raw_run["requests"] - raw_run["non200"]
                    runs_at[name] += 1
                    runs[_load_name(rows)] = summarize(raw_run, rows, server.cpu_seconds() - cpu_before)
                samples[name].append({"runs": runs})
        _set_rate(folder, 0.0)
        counts = _capture_counts(folder)
    return samples, _judge_counts(counts, answered, runs_at, workload=workload)


def _judge_counts(
    counts: dict[str, Any], answered: dict[str, int], runs_at: dict[str, int], *, workload: Any
) -> dict[str, Any]:
    """The counts beside what the rates predict, and whether they are plausible.

    ``answered`` counts the 200s the load generator saw at each rate; a run that ends with
    requests in flight may have a few more answered (and captured) than it counted: at most one
    per connection per run. At a rate below 1 the sample is binomial: four standard deviations
    either side.
    """
    offered = counts["captured"] + counts["dropped"] + counts["failed"]
    rates = {name: CONFIGS[name] or 0.0 for name in answered}
    expected = sum(answered[n] * rates[n] for n in answered)
    spread = 4 * math.sqrt(sum(answered[n] * rates[n] * (1 - rates[n]) for n in answered))
    slack = sum(CONNECTIONS * runs_at[n] * rates[n] for n in answered)
    low, high = expected - spread, expected + spread + slack
    first_ok = False
    if counts["first"]:
        record = json.loads(counts["first"])
        sent = {
            json.loads(workload.bodies[n].read_bytes())["dataframe_split"]["data"][0][0] for n in BODY_ROWS
        }
        request = record.get("request") or {}
        first_ok = (
            record.get("request_id") not in (None, "")
            and request.get("dataframe_split", {}).get("data", [[None]])[0][0] in sent
            and isinstance((record.get("response") or {}).get("predictions"), list)
        )
    return {
        "answered": {n: answered[n] for n in answered if rates[n]},
        "expected": round(expected, 1),
        "captured": counts["captured"],
        "dropped": counts["dropped"],
        "failed": counts["failed"],
        "records_in_files": counts["records"],
        "writer_settled": counts["settled"],
        "record_readable": first_ok,
        "plausible": bool(
            counts["settled"]
            and counts["records"] == counts["captured"]
            and low <= offered <= high
            and counts["failed"] == 0
            and first_ok
        ),
    }


def bench_capture(
    repeat: int,
    *,
    quick: bool = False,
    loadgen_choice: str = "auto",
    duration: int = 3,
    pin: bool = True,
) -> dict[str, Any]:
    """Capture off vs 0.1 vs 1.0 at 16 connections; returns medians, counts and paired ratios."""
    loadgen = AsyncClient() if quick else pick_load_generator(loadgen_choice)
    server_cpu, loadgen.cpu = cpu_plan() if pin else (None, None)
    load_start = round(os.getloadavg()[0], 2)
    # A smoke run: one body, a couple of hundred requests, no warm-up.
    max_requests = 200 if quick else 10_000_000
    warmup = 0 if quick else max_requests
    duration = 2 if quick else duration
    body_rows = BODY_ROWS[:1] if quick else BODY_ROWS
    with tempfile.TemporaryDirectory(prefix="mlshift-bench-capture-") as tmp:
        workload = make_workload(Path(tmp))
        samples, counts = _one_process(
            workload, loadgen, duration, max_requests, warmup, server_cpu, repeat, body_rows
        )
        print("  capture: CPU cost in process", flush=True)
        cost = _cost_in_subprocess(
            workload, body_rows, 2_000 if quick else 20_000, 1 if quick else 3, server_cpu
        )
    configs = {name: _aggregate(runs, CONFIGS[name]) for name, runs in samples.items()}
    return {
        "load_generator": loadgen.name,
        "cpus": {"server": server_cpu, "load_generator": loadgen.cpu},
        "connections": CONNECTIONS,
        "duration_s": duration,
        "repeat": repeat,
        "python": sys.version.split()[0],
        # A busy machine widens every spread: the load average (1 min) is part of the result.
        "load": {"start": load_start, "end": round(os.getloadavg()[0], 2), "cpus": os.cpu_count()},
        "configs": configs,
        "ratios": _ratios(samples),
        "capture": counts,
        "cpu_cost": cost,
    }


def _aggregate(results: list[dict[str, Any]], rate: float | None) -> dict[str, Any]:
    loads = {
        load: run_medians([r["runs"][load] for r in results], rps_runs=True) for load in results[0]["runs"]
    }
    return {"sample_rate": rate, "loads": loads}


def deviation(values: list[float | None]) -> float | None:
    """The median absolute deviation of the measured values: how much they differ from one
    another, unmoved by one disturbed run (a range would be decided by that run alone)."""
    present = [v for v in values if v is not None]
    if not present:
        return None
    mid = statistics.median(present)
    return round(statistics.median([abs(v - mid) for v in present]), 3)


def _ratios(samples: dict[str, list[dict[str, Any]]]) -> dict[str, Any]:
    """Per load: each rate over off *in the same round* (runs seconds apart), median over rounds.

    ``noise`` is how much those per-round ratios vary (:func:`deviation`, the larger of the
    two rates'): a difference smaller than that is not one the benchmark can see.
    """
    out: dict[str, Any] = {}
    for load in samples["off"][0]["runs"]:
        off = [s["runs"][load] for s in samples["off"]]
        row: dict[str, Any] = {}
        deviations = []
        for name in ("0.1", "1.0"):
            pairs = list(zip([s["runs"][load] for s in samples[name]], off, strict=True))
            row[name] = {
                key: median([ratio(t[field], o[field], 4) for t, o in pairs], 3)
                for key, field in (("rps", "rps"), ("p99", "p99_ms"), ("cpu_per_req", "cpu_us_per_req"))
            }
            deviations.append(deviation([ratio(t["rps"], o["rps"], 4) for t, o in pairs]))
        present = [d for d in deviations if d is not None]
        row["noise"] = max(present) if present else None
        out[load] = row
    return out


# ------------------------------------------------------------------- CPU cost, in process


def cpu_cost(bodies: dict[int, Path], answers: dict[int, bytes], calls: int, repeat: int) -> dict[str, Any]:
    """CPU seconds per request that capture adds, measured without a network or a machine's noise.

    One process (this one) calls an ASGI app that answers ``answers[rows]`` to ``bodies[rows]``
    ``calls`` times: bare, then wrapped by a ``CaptureWriter`` at each rate (the writer thread
    writing real files), each time until the writer has written everything (``close``).
    Process CPU time counts both threads; other processes' work does not count, which makes
    this the figure to read on a busy machine. Returns µs per request, medians of ``repeat``.
    """
    from mlshift import CaptureSpec
    from mlshift.serving._capture import CaptureWriter, write_capture_config

    scope = {
        "type": "http",
        "method": "POST",
        "path": PATH,
        "headers": [(b"content-type", b"application/json")],
    }

    def app_for(answer: bytes) -> Any:
        async def app(scope: Any, receive: Any, send: Any) -> None:
            await receive()
            length = str(len(answer)).encode()
            await send(
                {"type": "http.response.start", "status": 200, "headers": [(b"content-length", length)]}
            )
            await send({"type": "http.response.body", "body": answer})

        return app

    async def drive(app: Any, body: bytes) -> None:
        message = {"type": "http.request", "body": body, "more_body": False}

        async def receive() -> Any:
            return message

        async def send(message: Any) -> None:
            pass

        for _ in range(calls):
            await app(dict(scope), receive, send)

    out: dict[str, Any] = {"calls": calls, "repeat": repeat, "loads": {}}
    with tempfile.TemporaryDirectory(prefix="mlshift-bench-capture-cost-") as tmp:
        for rows, path in bodies.items():
            body, app = path.read_bytes(), app_for(answers[rows])
            samples: dict[str, list[float]] = {name: [] for name in CONFIGS}
            dropped = 0
            for rep in range(repeat):
                for name, rate in CONFIGS.items():
                    start = time.process_time()
                    if rate is None:
                        asyncio.run(drive(app, body))
                    else:
                        folder = Path(tmp) / f"r{rows}-{name}-{rep}"
                        # A queue that holds every call: here nothing waits on a socket, so
                        # the writer would fall behind a loop that never idles, unlike a server.
                        settings = CaptureSpec(sample_rate=rate, queue_size=calls + 1)
                        write_capture_config(folder, settings.model_dump(mode="json", exclude={"enabled"}))
                        writer = CaptureWriter(
                            folder, endpoint="bench", variant=None, model_ref=None, signature=None
                        )
                        asyncio.run(drive(writer.wrap(app), body))
                        writer.close(timeout=60.0)
                        dropped += writer.dropped
                    samples[name].append((time.process_time() - start) * 1e6 / calls)
            bare = median(samples["off"], 2)
            row: dict[str, Any] = {"off_us": bare, "dropped": dropped}
            for name in ("0.1", "1.0"):
                with_capture = median(samples[name], 2)
                added = None if bare is None or with_capture is None else round(with_capture - bare, 2)
                row[f"{name}_added_us"] = added
            out["loads"][_load_name(rows)] = row
    return out


def _cost_in_subprocess(
    workload: Any, body_rows: tuple[int, ...], calls: int, repeat: int, cpu: int | None
) -> dict[str, Any]:
    answers = {}
    for rows in body_rows:
        answers[rows] = workload.folder / f"answer_{rows}.json"
        answers[rows].write_text(json.dumps({"predictions": workload.expected[rows]}))
    cmd = [
        sys.executable,
        str(BENCH / "capture.py"),
        "--cost",
        "--calls",
        str(calls),
        "--repeat",
        str(repeat),
    ]
    for rows in body_rows:
        cmd += ["--body", str(rows), str(workload.bodies[rows]), str(answers[rows])]
    proc = subprocess.run(
        cmd, capture_output=True, text=True, timeout=600, check=False, preexec_fn=pinned(cpu)
    )
    for line in proc.stdout.splitlines():
        if line.startswith("COSTJSON "):
            result: dict[str, Any] = json.loads(line[len("COSTJSON ") :])
            return result
    raise RuntimeError(f"capture cost probe failed ({proc.returncode}): {proc.stderr[-500:]}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--cost", action="store_true", help="only the in-process CPU cost (COSTJSON line)")
    parser.add_argument("--calls", type=int, default=20_000)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--body", nargs=3, action="append", metavar=("ROWS", "BODY", "ANSWER"), default=[])
    args = parser.parse_args(argv)
    if args.cost:
        bodies = {int(rows): Path(body) for rows, body, _ in args.body}
        answers = {int(rows): Path(answer).read_bytes() for rows, _, answer in args.body}
        print("COSTJSON " + json.dumps(cpu_cost(bodies, answers, args.calls, args.repeat)))
        return 0
    print(json.dumps(bench_capture(1, quick=args.quick), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
