"""The serving image and local+docker:// replicas: size, build time, cold start, req/s vs a process.

    python bench/run.py --only image [--merge]          # what `nox -s bench` runs; docs/performance.md
    DOCKER_HOST=unix:///... python bench/serving_image.py [--rounds 3] [--cold-build]   # JSON only
    DOCKER_HOST=unix:///... python bench/serving_image.py --cold-start-only   # no load runs

Needs a Docker engine with the base image (`mlshift image base`); the serving image is built
from the code that runs (a warm build when nothing changed). Without an engine the result says
"not measured" and why.

- image size of mlshift-serving:VERSION (scikit-learn only);
- build time warm (nothing changed: every layer cached) and, with --cold-build, cold (no build
  cache; the dependency wheels still come from the host's cache);
- cold start: `docker run` of a container to the first 200 on /invocations, and for scale the
  engine's own cost of a container (`docker run IMAGE true` to its exit); then what a
  local+docker:// deployment waits for: a replica started by mlshift's Docker runtime (1 CPU,
  the cpu-small limits) until its readiness probe passes, and to its first 200;
- req/s and p99 through bench/loadgen.py, 2 connections, straight at one container replica and
  at one `python -m mlshift.serving` process serving the same model.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from common import free_port, median  # noqa: E402

ROWS = {"instances": [[5.1, 3.5, 1.4, 0.2]]}


def _model(folder: Path) -> Path:
    import skops.io
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    x, y = load_iris(return_X_y=True)
    path = folder / "model" / "iris.skops"
    path.parent.mkdir(parents=True)
    skops.io.dump(LogisticRegression(max_iter=500).fit(x, y), path)
    path.parent.chmod(0o755)
    return path


def _first_200(port: int, deadline: float) -> None:
    with httpx.Client(trust_env=False, timeout=2) as http:
        while time.monotonic() < deadline:
            try:
                if http.post(f"http://127.0.0.1:{port}/invocations", json=ROWS).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.01)
    raise TimeoutError("no 200 within the deadline")


def _container(client: Any, image: str, model: Path) -> tuple[Any, int, float]:
    start = time.monotonic()
    container = client.containers.run(
        image,
        detach=True,
        environment={"MLSHIFT_ARTIFACT": f"/opt/ml/model/{model.name}"},
        volumes={str(model.parent): {"bind": "/opt/ml/model", "mode": "ro"}},
        ports={"8080/tcp": ("127.0.0.1", None)},
        labels={"mlshift.bench": "1"},
    )
    port = None
    while port is None:
        container.reload()
        bound = (container.attrs["NetworkSettings"]["Ports"] or {}).get("8080/tcp")
        port = int(bound[0]["HostPort"]) if bound else None
    _first_200(port, time.monotonic() + 60)
    return container, port, time.monotonic() - start


def _cpu_seconds(container: Any) -> float:
    """CPU time the container's processes have used so far: unlike the wall time, it hardly
    depends on what else the machine runs, so it compares starts measured under other loads."""
    stats = container.stats(stream=False, one_shot=True)
    return float(stats["cpu_stats"]["cpu_usage"]["total_usage"]) / 1e9


def _load(port: int, body: Path, seconds: float) -> dict[str, Any]:
    out = subprocess.run(
        [sys.executable, str(HERE / "loadgen.py"), f"http://127.0.0.1:{port}/invocations",
         "--body-file", str(body), "-c", "2", "-d", str(seconds)],
        capture_output=True, text=True, check=True, timeout=seconds + 60,
    )  # fmt: skip
    line = next(x for x in out.stdout.splitlines() if x.startswith("LOADJSON "))
    data = json.loads(line.removeprefix("LOADJSON "))
    return {"rps": data["ok"] / (data["duration_us"] / 1e6), "p99_ms": data["p99_us"] / 1000}


def _replica_start(client: Any, image: str, model: Path) -> tuple[float, float]:
    """Seconds from asking mlshift's Docker runtime for a replica to its start returning (its
    readiness probe passed), and to the first 200 on /invocations."""
    import hashlib

    from mlshift.local._docker import DockerRuntime
    from mlshift.local._runtime import ReplicaRequest
    from mlshift.specs.endpoint import Compute

    runtime = DockerRuntime(image, client=client, say=lambda _line: None)
    request = ReplicaRequest(
        endpoint="bench", variant="cold", index=0, artifact=model, framework="sklearn",
        digest="sha256:" + hashlib.sha256(model.read_bytes()).hexdigest(), model_ref="iris:1",
        compute=Compute(size="cpu-small"), folder=model.parent.parent / "replica", timeout=120,
    )  # fmt: skip
    runtime.ensure_image("sklearn")  # an image check is not part of a replica's start
    start = time.monotonic()
    replica = runtime.start(request)
    try:
        ready = time.monotonic() - start
        _first_200(replica.port, time.monotonic() + 60)
        return ready, time.monotonic() - start
    finally:
        runtime.stop(replica, timeout=1)


def _container_overhead(client: Any, image: str) -> float:
    """Seconds from `docker run IMAGE true` to its exit: what any container costs on this engine."""
    start = time.monotonic()
    container = client.containers.run(image, ["true"], detach=True, labels={"mlshift.bench": "1"})
    try:
        container.wait(timeout=60)
        return time.monotonic() - start
    finally:
        container.remove(force=True)


def bench_serving_image(
    rounds: int = 3,
    *,
    seconds: float = 5.0,
    cold_build: bool = False,
    cold_start_only: bool = False,
    image: str | None = None,
) -> dict[str, Any]:
    """Measure the serving image; ``{"status": "not measured: ..."}`` without an engine or base image.

    ``cold_start_only``: no build and no load runs, only the cold start rows of ``image``
    (default: the serving image of this mlshift, which must be there).
    """
    from mlshift.errors import MlshiftError
    from mlshift.image import build_image, default_image, docker_client

    try:
        client = docker_client(timeout=30)
    except MlshiftError as exc:
        return {"status": f"not measured: {exc.message}"}
    image = (image if cold_start_only else None) or default_image()
    quiet = lambda _line: None  # noqa: E731
    result: dict[str, Any] = {"status": "measured", "image": image, "rounds": rounds, "load_seconds": seconds}
    result["load_average_at_start"] = [round(x, 2) for x in os.getloadavg()]
    try:
        if cold_start_only:
            pass
        elif cold_build:
            start = time.monotonic()
            build_image(image, no_cache=True, say=quiet)
            result["build_cold_s"] = round(time.monotonic() - start, 1)
        if not cold_start_only:
            start = time.monotonic()
            build_image(image, say=quiet)
            result["build_warm_s"] = round(time.monotonic() - start, 1)
    except MlshiftError as exc:
        return {"status": f"not measured: {exc.message}" + (f" ({exc.hint})" if exc.hint else "")}
    result["image_mb"] = round(client.images.get(image).attrs["Size"] / 1e6)
    base = client.images.get(image).labels.get("mlshift.python")
    result["python"] = base

    with tempfile.TemporaryDirectory() as tmp:
        model = _model(Path(tmp))
        body = Path(tmp) / "body.json"
        body.write_text(json.dumps(ROWS))
        starts, overheads, container_rps, container_p99, process_rps, process_p99 = [], [], [], [], [], []
        replica_ready, replica_first, cpu = [], [], []
        for _ in range(rounds):
            overheads.append(_container_overhead(client, image))
            container, port, took = _container(client, image, model)
            starts.append(took)
            cpu.append(_cpu_seconds(container))
            if cold_start_only:
                container.remove(force=True)
                ready, first = _replica_start(client, image, model)
                replica_ready.append(ready)
                replica_first.append(first)
                continue
            try:
                run = _load(port, body, seconds)
                container_rps.append(run.get("rps"))
                container_p99.append(run.get("p99_ms"))
            finally:
                container.remove(force=True)
            port = free_port()
            proc = subprocess.Popen(
                [sys.executable, "-m", "mlshift.serving", "--artifact", str(model), "--port", str(port)],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )  # fmt: skip
            try:
                _first_200(port, time.monotonic() + 60)
                run = _load(port, body, seconds)
                process_rps.append(run.get("rps"))
                process_p99.append(run.get("p99_ms"))
            finally:
                proc.terminate()
                proc.wait(30)
        result.update(
            cold_start_to_first_200_s=median(starts, 2),
            cold_start_samples=[round(s, 2) for s in starts],
            cold_start_cpu_s=median(cpu, 2),
            container_overhead_s=median(overheads, 2),
        )
        result["load_average_at_end"] = [round(x, 2) for x in os.getloadavg()]
        if cold_start_only:
            result.update(
                replica_ready_s=median(replica_ready, 2),
                replica_first_200_s=median(replica_first, 2),
                replica_samples=[round(s, 2) for s in replica_first],
            )
            return result
        result.update(
            container_rps=median(container_rps),
            container_p99_ms=median(container_p99, 2),
            process_rps=median(process_rps),
            process_p99_ms=median(process_p99, 2),
        )
        if result["container_rps"] and result["process_rps"]:
            result["container_vs_process"] = round(result["container_rps"] / result["process_rps"], 2)
    return result


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--cold-build", action="store_true")
    parser.add_argument(
        "--cold-start-only", action="store_true", help="only the cold start rows (no build, no load)"
    )
    parser.add_argument(
        "--image", help="with --cold-start-only: the image to start (default: this mlshift's)"
    )
    args = parser.parse_args()
    result = bench_serving_image(
        args.rounds,
        seconds=args.seconds,
        cold_build=args.cold_build,
        cold_start_only=args.cold_start_only,
        image=args.image,
    )
    print(json.dumps(result, indent=2))
    return 0 if result["status"] == "measured" else 1


if __name__ == "__main__":
    sys.exit(main())
