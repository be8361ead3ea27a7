"""What a shadow rollout adds to callers' latency on the local target: `python bench/shadow.py`.

One local endpoint serves an iris classifier; a second version runs beside it at 0%. Rounds take
turns: a load generator (its own process, 127.0.0.1 only) measures callers'
p50/p99 with no mirror, then with the router copying ``--percent`` of the answered requests to
the second version. Medians over the rounds and their ratio are printed as one JSON object
(``--out`` writes it to a file too). The claim to check: mirroring adds at most 10% to callers'
p99. This is a benchmark, not a test: on a loaded or small machine the numbers are noisy, so
read them beside the machine they came from.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import median, ratio

HERE = Path(__file__).resolve().parent


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


#: A closed-loop load generator in its own process. bench/loadgen.py needs Content-Length on
#: every answer, and the local router streams its answers (chunked), so this one uses httpx.
_LOAD = """
import asyncio, json, sys, time
import httpx

async def main(url, body, connections, seconds):
    latencies, statuses = [], {}
    deadline = time.perf_counter() + seconds
    async def worker(client):
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            resp = await client.post(url, content=body, headers={"Content-Type": "application/json"})
            latencies.append(time.perf_counter() - start)
            statuses[resp.status_code] = statuses.get(resp.status_code, 0) + 1
    limits = httpx.Limits(max_connections=connections)
    async with httpx.AsyncClient(limits=limits, trust_env=False, timeout=30) as client:
        begun = time.perf_counter()
        await asyncio.gather(*(worker(client) for _ in range(connections)))
        elapsed = time.perf_counter() - begun
    latencies.sort()
    pick = lambda q: latencies[min(len(latencies) - 1, int(len(latencies) * q))] if latencies else 0
    print("LOADJSON " + json.dumps({
        "requests": len(latencies), "duration_us": int(elapsed * 1e6),
        "non200": sum(n for s, n in statuses.items() if s != 200),
        "p50_us": int(pick(0.5) * 1e6), "p99_us": int(pick(0.99) * 1e6),
    }))

asyncio.run(main(sys.argv[1], open(sys.argv[2], "rb").read(), int(sys.argv[3]), float(sys.argv[4])))
"""


def _load(url: str, body_file: Path, connections: int, seconds: float) -> dict[str, Any]:
    host = urlsplit(url).hostname
    if host not in ("127.0.0.1", "localhost"):
        raise SystemExit(f"refusing to load {host}: this benchmark only targets loopback")
    out = subprocess.run(
        [sys.executable, "-c", _LOAD, url, str(body_file), str(connections), str(seconds)],
        capture_output=True, text=True, timeout=seconds + 60, check=True,
    )  # fmt: skip
    line = next(x for x in out.stdout.splitlines() if x.startswith("LOADJSON "))
    result: dict[str, Any] = json.loads(line.removeprefix("LOADJSON "))
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0, help="load per measurement")
    parser.add_argument("--connections", type=int, default=4)
    parser.add_argument("--percent", type=int, default=100, help="share of requests mirrored")
    parser.add_argument("--out", type=Path)
    args = parser.parse_args(argv)

    import mlshift
    from mlshift.adapter import ResolvedVariant

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
            url = f"{state.url}"
            _load(url, body, args.connections, 1.0)  # warm up both paths
            runs: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
            for _ in range(args.rounds):
                for mode in ("off", "on"):
                    endpoints.set_shadow("shadow-bench", "candidate", args.percent if mode == "on" else 0)
                    runs[mode].append(_load(url, body, args.connections, args.seconds))
            mirrored = endpoints.read_shadow("shadow-bench", "candidate", 3600)
        finally:
            for endpoint in client.endpoints.list():
                client.endpoints.delete(endpoint.name)
            client.close()

    def summary(mode: str) -> dict[str, Any]:
        return {
            "p50_ms": median([r["p50_us"] / 1000 for r in runs[mode]], 3),
            "p99_ms": median([r["p99_us"] / 1000 for r in runs[mode]], 3),
            "requests_per_s": median([r["requests"] / (r["duration_us"] / 1e6) for r in runs[mode]], 0),
            "non200": sum(r["non200"] for r in runs[mode]),
        }

    result = {
        "percent_mirrored": args.percent,
        "connections": args.connections,
        "rounds": args.rounds,
        "seconds": args.seconds,
        "without_shadow": summary("off"),
        "with_shadow": summary("on"),
        "mirrored_requests": mirrored.requests if mirrored else 0,
        "skipped_mirrors": mirrored.skipped if mirrored else 0,
    }
    result["p99_ratio"] = ratio(result["with_shadow"]["p99_ms"], result["without_shadow"]["p99_ms"])
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
