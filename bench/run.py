"""mlshift benchmarks: `nox -s bench` (or `python bench/run.py`).

Each benchmark measures mlshift and the peer a user would pick instead in the same run,
taking turns, and reports medians; the ratio is the claim. Results go to
bench/results/latest.json and docs/performance.md is regenerated from them.

    python bench/run.py                      # everything the environment has peers for
    python bench/run.py --quick              # smoke run: seconds, mlshift only, docs untouched
    python bench/run.py --only serving --mlflow-python .nox/bench-mlflow/bin/python

Peers that live in their own venv (mlflow, sagemaker) are named with --mlflow-python and
--sagemaker-python; `nox -s bench` creates those venvs and passes them. A peer that is not
installed is reported as "not measured", never silently dropped.

Benchmarks (bench/<name>.py): startup, serving, batching, router (the local router's hop),
peers (MLServer and BentoML, each from its own venv: --mlserver-python, --bentoml-python),
workers (`mlshift serve --workers 2` vs 1), pipelines (kfp from --kfp-python, else this
interpreter), reapply, shadow, image,
cloud_calls (HTTP requests of a first deploy and an unchanged re-apply on each cloud's testing kit)
(bench/serving_image.py: the serving image and local+docker:// replicas; needs a Docker engine,
else "not measured"), capture (request capture off / sample_rate 0.1 / 1.0). Every server and
load generator runs on 127.0.0.1 only, and every load run is bounded in time and request count.

    python bench/run.py --only image --merge   # re-measure one benchmark, keep the others' results
    python bench/run.py --only cloud_calls --merge
    python bench/run.py --only pipelines --merge --kfp-python /tmp/kfpvenv/bin/python
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import shlex
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import report
from common import ROOT

RESULTS = ROOT / "bench" / "results" / "latest.json"
REPORT = ROOT / "docs" / "performance.md"
NAMES = (
    "startup",
    "serving",
    "batching",
    "router",
    "peers",
    "workers",
    "pipelines",
    "reapply",
    "shadow",
    "image",
    "cloud_calls",
    "capture",
)
#: Repetitions per benchmark (--repeat overrides all): rounds for serving, batching, pipelines and shadow
#: (each shadow round is two load runs of --duration seconds: mirror off, then on), timed
#: passes for start-up, re-applies for reapply.
DEFAULT_REPEAT = {
    "startup": 5,
    "serving": 3,
    "batching": 3,
    "router": 3,
    "peers": 3,
    "workers": 3,
    "pipelines": 3,
    "reapply": 3,
    "shadow": 3,
    "image": 3,
    "cloud_calls": 2,
    "capture": 5,
}


def _machine() -> dict[str, Any]:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import psutil

        memory_gb: float | None = round(psutil.virtual_memory().total / 2**30, 1)
    except ImportError:
        memory_gb = None
    return {
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu": cpu,
        "cpus": os.cpu_count(),
        "memory_gb": memory_gb,
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "load_start": round(os.getloadavg()[0], 2),
    }


def _versions() -> dict[str, str]:
    out = {}
    for dist in ("mlshift", "starlette", "uvicorn", "uvloop", "httptools", "orjson", "scikit-learn", "skops"):
        try:
            out[dist] = importlib.metadata.version(dist)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def _python_version_of(python: str, dist: str) -> str | None:
    import subprocess

    proc = subprocess.run(
        [python, "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


def run_one(name: str, repeat: int, args: argparse.Namespace) -> dict[str, Any]:
    if name == "startup":
        from startup import bench_startup

        pythons = {}
        if args.mlflow_python:
            pythons["mlflow"] = args.mlflow_python
        if args.sagemaker_python:
            pythons["sagemaker"] = args.sagemaker_python
        result = bench_startup(repeat, pythons)
        if not args.sagemaker_python and result["imports"]["sagemaker (mlops)"]["median_ms"] is None:
            result["imports"]["sagemaker (mlops)"]["reason"] = args.sagemaker_reason or "not installed"
        return result
    if name == "serving":
        from serving import bench_serving

        return bench_serving(
            repeat,
            quick=args.quick,
            mlflow_python=args.mlflow_python,
            loadgen_choice=args.loadgen,
            duration=args.duration,
            pin=not args.no_pin,
        )
    if name == "batching":
        from batching import bench_batching

        return bench_batching(
            repeat, quick=args.quick, loadgen_choice=args.loadgen, duration=args.duration, pin=not args.no_pin
        )
    if name == "router":
        from router import bench_router

        return bench_router(
            repeat, quick=args.quick, loadgen_choice=args.loadgen, duration=args.duration, pin=not args.no_pin
        )
    if name == "peers":
        from peers import bench_peers

        return bench_peers(
            repeat,
            quick=args.quick,
            mlserver_python=args.mlserver_python,
            bentoml_python=args.bentoml_python,
            loadgen_choice=args.loadgen,
            duration=args.duration,
            pin=not args.no_pin,
        )
    if name == "workers":
        from workers import bench_workers

        return bench_workers(repeat, quick=args.quick, loadgen_choice=args.loadgen, duration=args.duration)
    if name == "image":
        from serving_image import bench_serving_image

        return bench_serving_image(repeat, seconds=2.0 if args.quick else 5.0, cold_build=args.cold_build)
    if name == "capture":
        from capture import bench_capture

        return bench_capture(
            repeat, quick=args.quick, loadgen_choice=args.loadgen, duration=args.duration, pin=not args.no_pin
        )
    if name == "pipelines":
        from pipelines import bench_pipelines

        return bench_pipelines(repeat, kfp_python=args.kfp_python)
    if name == "shadow":
        from shadow import bench_shadow

        return bench_shadow(
            repeat,
            seconds=1 if args.quick else args.duration,
            loadgen_choice="async" if args.quick else args.loadgen,
        )
    if name == "cloud_calls":
        from cloud_calls import bench_cloud_calls

        return bench_cloud_calls(repeat)
    from reapply import bench_reapply

    return bench_reapply(repeat)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run: one repetition, mlshift-only serving with the asyncio client and a few "
        "hundred requests; docs/performance.md is not touched",
    )
    parser.add_argument("--only", choices=NAMES, action="append", help="run only these (repeatable)")
    parser.add_argument("--repeat", type=int, default=None, help="repetitions for every benchmark")
    parser.add_argument(
        "--duration", type=int, default=3, help="seconds per serving and shadow load run (default 3)"
    )
    parser.add_argument(
        "--loadgen", choices=("auto", "wrk", "async"), default="auto", help="serving load generator"
    )
    parser.add_argument(
        "--no-pin", action="store_true", help="do not give the server and the load generator a CPU each"
    )
    parser.add_argument("--mlflow-python", help="interpreter of a venv with mlflow (serving, start-up)")
    parser.add_argument("--sagemaker-python", help="interpreter of a venv with sagemaker (start-up)")
    parser.add_argument(
        "--mlserver-python", help="interpreter of a venv with mlserver + mlserver-sklearn (peers)"
    )
    parser.add_argument("--bentoml-python", help="interpreter of a venv with bentoml (peers)")
    parser.add_argument("--kfp-python", help="interpreter of a venv with kfp (pipelines; default: this one)")
    parser.add_argument("--sagemaker-reason", help=argparse.SUPPRESS)  # why nox left sagemaker out
    parser.add_argument(
        "--cold-build", action="store_true", help="image: also time a build with no layer cache (minutes)"
    )
    parser.add_argument(
        "--merge",
        action="store_true",
        help="keep the other benchmarks' results from the results file (--out) and replace only those "
        "run now; each merged benchmark records its own date and load",
    )
    parser.add_argument("--out", type=Path, default=None, help=f"results file (default {RESULTS})")
    parser.add_argument(
        "--report", type=Path, default=None, help=f"report file (default {REPORT}; none with --quick)"
    )
    parser.add_argument(
        "--render-only",
        action="store_true",
        help="measure nothing: re-evaluate the targets of an existing results file (--out) and "
        "rewrite the report from it",
    )
    args = parser.parse_args(argv)
    if args.render_only:
        source = args.out or RESULTS
        results = json.loads(source.read_text())
        results["targets"] = report.evaluate_targets(results)
        source.write_text(json.dumps(results, indent=2) + "\n")
        (args.report or REPORT).write_text(report.render(results) + "\n")
        print(f"rewrote {args.report or REPORT} from {source}")
        return 0

    started = time.perf_counter()
    results: dict[str, Any] = {
        "machine": _machine(),
        "versions": _versions(),
        "quick": args.quick,
        "command": "nox -s bench"
        if os.environ.get("MLSHIFT_BENCH") == "1"
        else shlex.join(["python", "bench/run.py", *(argv if argv is not None else sys.argv[1:])]),
    }
    for python, dist in (
        (args.mlflow_python, "mlflow"),
        (args.mlserver_python, "mlserver"),
        (args.bentoml_python, "bentoml"),
    ):
        version = _python_version_of(python, dist) if python else None
        if version:
            results["versions"][dist] = version
    results["repeat"] = {}
    #: Seconds each benchmark took (what to trim when `nox -s bench` runs long).
    results["took_s"] = {}
    # --quick is a smoke run of seconds: the image benchmark builds and starts containers.
    # The peers and workers comparisons need their peers (or more cores) to say anything: a
    # smoke run leaves them out; their harness is covered by tests/test_bench_smoke.py.
    # (cloud_calls drives three cloud SDKs on their kits: tests/test_bench_cloud_calls.py runs it.)
    ran = args.only or [
        n for n in NAMES if not (args.quick and n in ("image", "cloud_calls", "peers", "workers"))
    ]
    for name in ran:
        repeat = 1 if args.quick else (args.repeat or DEFAULT_REPEAT[name])
        results["repeat"][name] = repeat
        print(f"running {name} (repeat {repeat}) ...", flush=True)
        load_start = round(os.getloadavg()[0], 2)
        begun = time.perf_counter()
        results[name] = run_one(name, repeat, args)
        results["took_s"][name] = round(time.perf_counter() - begun, 1)
        if args.merge:
            results[name]["measured"] = {
                "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
                "load_start": load_start,
                "load_end": round(os.getloadavg()[0], 2),
                "command": results["command"],
            }
    results["machine"]["load_end"] = round(os.getloadavg()[0], 2)
    page = args.report or REPORT
    if args.merge and not (args.out or RESULTS).exists() and page.exists() and not args.quick:
        # No earlier results to merge with (they are not committed): splice into the page.
        out = args.out or RESULTS
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
        page.write_text(report.splice(page.read_text(), results, list(ran)) + "\n")
        print(f"wrote {out} and spliced {', '.join(ran)} into {page}")
        return 0
    if args.merge and (args.out or RESULTS).exists():
        earlier = json.loads((args.out or RESULTS).read_text())
        # The page keeps describing the run that measured most of it; merged parts carry their own.
        merged = {**earlier, **{name: results[name] for name in ran}}
        merged["repeat"] = {**earlier.get("repeat", {}), **results["repeat"]}
        merged["took_s"] = {**earlier.get("took_s", {}), **results["took_s"]}
        results = merged
    else:
        # A merged run keeps the whole run's time: the page's "for the whole run" is that run's.
        results["elapsed_s"] = round(time.perf_counter() - started, 1)
    if "serving" in results and "load_generator" in results["serving"]:
        results["versions"]["load generator"] = results["serving"]["load_generator"]
    if results.get("pipelines", {}).get("versions", {}).get("kfp"):
        results["versions"]["kfp"] = results["pipelines"]["versions"]["kfp"]
    results["targets"] = report.evaluate_targets(results)

    out = args.out or RESULTS
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    text = report.render(results) + "\n"
    target_file = args.report or (None if args.quick else REPORT)
    if target_file is not None:
        target_file.write_text(text)
        print(f"wrote {out} and {target_file}")
    else:
        print(text)
        print(f"wrote {out}")
    print(f"done in {results['elapsed_s']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
