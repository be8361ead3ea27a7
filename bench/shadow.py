"""What a shadow rollout adds to callers' latency on the local target: `python bench/shadow.py`.

One local endpoint serves an iris classifier; a second version runs beside it at 0%. Rounds take
turns: a load generator (wrk when installed, else bench/loadgen.py; its own process, 127.0.0.1
only) measures callers' p50/p99 through the router with no mirror, then with the router copying
``--percent`` of the answered requests to the second version. Medians over the rounds and
their ratio are printed as one JSON object (``--out`` writes it to a file too); bench/run.py runs
it as ``shadow``. The claim to check: mirroring adds at most 10% to callers' p99. This is a
benchmark, not a test: on a loaded or small machine the numbers are noisy, so read them beside
the machine they came from.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
from datetime import datetime, timezone
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import median, ratio


def _models(folder: Path) -> tuple[Path, Path]:
    import skops.io as skops_io
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.tree import DecisionTreeClassifier

    x, y = load_iris(return_X_y=True)
    v1, v2 = folder / "v1.skops", folder / "v2.skops"
    skops_io.dump(LogisticRegression(max_iter=500).fit(x, y), v1)
    skops_io.dump(DecisionTreeClassifier(max_depth=3, random_state=0).fit(x, y), v2)
    return v1, v2


def _port(url: str) -> int:
    parts = urlsplit(url)
    if parts.hostname not in ("127.0.0.1", "localhost"):
        raise SystemExit(f"refusing to load {parts.hostname}: this benchmark only targets loopback")
    if parts.port is None:
        raise SystemExit(f"the endpoint's URL has no port: {url}")
    return parts.port


def bench_shadow(
    repeat: int,
    *,
    seconds: int = 5,
    connections: int = 4,
    percent: int = 100,
    loadgen_choice: str = "auto",
) -> dict[str, Any]:
    """``repeat`` rounds of (no mirror, mirror) load runs against one local endpoint.

    Returns the medians of each side, their p99 ratio, how many requests were mirrored, and
    when, where and under what load it ran (it may be run on its own, apart from the other
    benchmarks).
    """
    from serving import pick_load_generator

    import mlshift
    from mlshift.adapter import ResolvedVariant

    loadgen = pick_load_generator(loadgen_choice)
    measured = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "cpus": os.cpu_count(),
        "load_start": round(os.getloadavg()[0], 2),
    }
    with tempfile.TemporaryDirectory(prefix="mlshift-bench-shadow-") as tmp:
        folder = Path(tmp)
        v1, v2 = _models(folder)
        client = mlshift.connect(f"local://{folder / 'state'}")
        try:
            client.models.register("iris", v1)
            second = client.models.register("iris", v2)
            state = client.endpoints.deploy("shadow-bench", "iris:1")
            endpoints = client.adapter.endpoints
            endpoints.add_variant(
                "shadow-bench", ResolvedVariant(name="candidate", model=second, weight=0)
            ).wait(120)
            body = folder / "body.json"
            body.write_text(json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]}))
            port = _port(state.url or "")
            limit = 1_000_000
            runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
            for mode in ("off", "on"):  # warm up both paths, not counted
                endpoints.set_shadow("shadow-bench", "candidate", percent if mode == "on" else 0).wait(60)
                loadgen.run(port, body, connections, 1, limit)
            for _ in range(repeat):
                for mode in ("off", "on"):
                    endpoints.set_shadow("shadow-bench", "candidate", percent if mode == "on" else 0).wait(60)
                    runs[mode].append(loadgen.run(port, body, connections, seconds, limit))
            mirrored = endpoints.read_shadow("shadow-bench", "candidate", 3600)
        finally:
            for endpoint in client.endpoints.list():
                client.endpoints.delete(endpoint.name)
            client.close()
    measured["load_end"] = round(os.getloadavg()[0], 2)

    def summary(mode: str) -> dict[str, Any]:
        return {
            "p50_ms": median([r["p50_us"] / 1000 for r in runs[mode]], 3),
            "p99_ms": median([r["p99_us"] / 1000 for r in runs[mode]], 3),
            "requests_per_s": median([r["requests"] / (r["duration_us"] / 1e6) for r in runs[mode]], 0),
            "non200": sum(r["non200"] for r in runs[mode]),
            "p99_ms_runs": [round(r["p99_us"] / 1000, 3) for r in runs[mode]],
        }

    result: dict[str, Any] = {
        "measured": measured,
        "load_generator": loadgen.name,
        "percent_mirrored": percent,
        "connections": connections,
        "rounds": repeat,
        "seconds": seconds,
        "without_shadow": summary("off"),
        "with_shadow": summary("on"),
        "mirrored_requests": mirrored.requests if mirrored else 0,
        "skipped_mirrors": mirrored.skipped if mirrored else 0,
    }
    result["p99_ratio"] = ratio(result["with_shadow"]["p99_ms"], result["without_shadow"]["p99_ms"])
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=int, default=5, help="load per measurement")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--percent", type=int, default=100, help="share of requests mirrored")
    parser.add_argument("--loadgen", choices=("auto", "wrk", "async"), default="auto")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)
    result = bench_shadow(
        args.rounds,
        seconds=args.seconds,
        connections=args.connections,
        percent=args.percent,
        loadgen_choice=args.loadgen,
    )
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
