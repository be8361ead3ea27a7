"""Memory and health-check latency of the model server and the local router under huge bodies.

Not part of ``bench/run.py``: it measures bounds rather than speed. Run it alone, on a quiet
machine (it sends about 4 GB over loopback)::

    python bench/limits.py [--concurrency 10] [--mb 100] [--router-mb 400]

For the model server, each scenario sends ``--concurrency`` bodies of about ``--mb`` MB at
once while a thread asks ``GET /ping`` every 20 ms, and samples the server's RSS every 20 ms:

- ``small-rows``: the attack from issue 18, ~100 MB of 4-value rows (over the rows limit);
- ``numeric``: ~100 MB of valid 4-value rows, 1M rows (parsed piecewise into one array);
- ``bad-last-row``: the same with one value too many in the last row (a 400 at the very end);
- ``records``: ~100 MB of ``dataframe_records`` objects (parsed by the exact parser).

For the router, one chunked body of ``--router-mb`` MB, and the router's peak RSS.
Prints one JSON document with peak RSS (MB), the slowest ``/ping`` (ms) and status counts.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil

SRC = Path(__file__).resolve().parents[1] / "src"


def _start(
    args: list[str], port_file: Path, env: dict[str, str] | None = None
) -> tuple[subprocess.Popen[bytes], int]:
    proc = subprocess.Popen(
        [sys.executable, *args],
        env={**os.environ, "PYTHONPATH": str(SRC), **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if port_file.exists() and port_file.read_text().strip():
            return proc, int(port_file.read_text())
        if proc.poll() is not None:
            raise SystemExit(f"{args} exited with {proc.returncode}")
        time.sleep(0.05)
    proc.kill()
    raise SystemExit(f"{args} did not start")


_PINGER = """
import sys, threading, time, http.client
url = sys.argv[1].removeprefix("http://")
host, _, path = url.partition("/")
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
conn = http.client.HTTPConnection(host, timeout=60)
while not stop.is_set():
    start = time.perf_counter()
    try:
        conn.request("GET", "/" + path)
        ok = conn.getresponse().read() is not None
    except OSError:
        ok = False
        conn = http.client.HTTPConnection(host, timeout=60)
    ms = (time.perf_counter() - start) * 1000
    print(ms if ok else -ms, flush=True)
    time.sleep(0.02)
"""


class Watch:
    """Samples a process's RSS and the latency of GET /ping while a scenario runs."""

    def __init__(self, pid: int, ping_url: str | None) -> None:
        self.proc = psutil.Process(pid)
        self.ping_url = ping_url
        self.peak_rss = 0
        self.pings: list[float] = []
        self.ping_errors = 0
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._rss, daemon=True)]
        if ping_url:
            self._threads.append(threading.Thread(target=self._ping, daemon=True))

    def __enter__(self) -> Watch:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join()

    def _rss(self) -> None:
        while not self._stop.is_set():
            self.peak_rss = max(self.peak_rss, self.proc.memory_info().rss)
            time.sleep(0.02)

    def _ping(self) -> None:
        # In a process of its own: the senders' threads share this one's GIL.
        assert self.ping_url is not None
        proc = subprocess.Popen(
            [sys.executable, "-c", _PINGER, self.ping_url], stdin=subprocess.PIPE, stdout=subprocess.PIPE
        )
        self._stop.wait()
        out, _ = proc.communicate(b"stop\n", timeout=60)
        for line in out.decode().split():
            ms = float(line)
            self.ping_errors += ms < 0
            self.pings.append(abs(ms))


def _bodies(mb: int) -> dict[str, bytes]:
    size = mb * 1024 * 1024 - 4096
    small = b"[5.1,3.5,1.4,0.2],"
    # 1M rows of four long decimals: just under the size and the rows limit.
    numeric_row = b"[5.100000000000000000001,3.500000000000000000001,1.40000000000000000001,0.2000000001],"
    record = b'{"sepal_length":5.1,"sepal_width":3.5,"petal_length":1.4,"petal_width":0.2},'

    def fill(key: bytes, row: bytes, rows: int | None = None) -> bytes:
        n = rows if rows is not None else size // len(row)
        return b'{"' + key + b'":[' + row * (n - 1) + row[:-1] + b"]}"

    return {
        "small-rows": fill(b"instances", small),
        "numeric": fill(b"instances", numeric_row, min(999_000, size // len(numeric_row))),
        # The same rows with a five-value row at the very end: every piece is parsed first.
        "bad-last-row": fill(b"instances", numeric_row, min(999_000, size // len(numeric_row)))[:-3]
        + b",0.1]]}",
        "records": fill(b"dataframe_records", record, min(999_000, size // len(record))),
    }


def _send_all(url: str, body: bytes, concurrency: int) -> Counter[int]:
    statuses: Counter[int] = Counter()
    lock = threading.Lock()

    def one() -> None:
        with httpx.Client(trust_env=False, timeout=600) as http:
            try:
                status = http.post(
                    url, content=body, headers={"content-type": "application/json"}
                ).status_code
            except httpx.HTTPError:
                status = 0  # the server closed the connection after answering early
            with lock:
                statuses[status] += 1

    threads = [threading.Thread(target=one) for _ in range(concurrency)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return statuses


def bench_server(folder: Path, concurrency: int, mb: int) -> dict[str, Any]:
    import skops.io as sio
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression

    X, y = load_iris(return_X_y=True)
    sio.dump(LogisticRegression(max_iter=300).fit(X, y), folder / "iris.skops")
    port_file = folder / "server.port"
    proc, port = _start(
        [
            "-m",
            "mlshift.serving",
            "--artifact",
            str(folder / "iris.skops"),
            "--port",
            "0",
            "--port-file",
            str(port_file),
        ],
        port_file,
    )
    base = f"http://127.0.0.1:{port}"
    out: dict[str, Any] = {"idle_rss_mb": round(psutil.Process(proc.pid).memory_info().rss / 2**20)}
    try:
        for name, body in _bodies(mb).items():
            with Watch(proc.pid, base + "/ping") as watch:
                statuses = _send_all(base + "/invocations", body, concurrency)
            out[name] = {
                "body_mb": round(len(body) / 2**20, 1),
                "statuses": dict(statuses),
                "peak_rss_mb": round(watch.peak_rss / 2**20),
                "ping_max_ms": round(max(watch.pings), 1),
                "ping_p99_ms": round(sorted(watch.pings)[int(len(watch.pings) * 0.99)], 1),
                "pings": len(watch.pings),
                "ping_errors": watch.ping_errors,
            }
            print(name, out[name], file=sys.stderr)
    finally:
        proc.terminate()
        proc.wait(30)
    return out


def bench_router(folder: Path, mb: int) -> dict[str, Any]:
    import socket

    # A variant that swallows whatever it is sent and never answers: what the router holds
    # is what it buffers itself, until it stops at the body limit.
    sink = socket.socket()
    sink.bind(("127.0.0.1", 0))
    sink.listen(8)

    def drain(conn: socket.socket) -> None:
        while conn.recv(1 << 16):
            pass

    def swallow() -> None:
        while True:
            try:
                conn, _ = sink.accept()
            except OSError:
                return
            threading.Thread(target=drain, args=(conn,), daemon=True).start()

    threading.Thread(target=swallow, daemon=True).start()
    routes = folder / "routes.json"
    backend = f"http://127.0.0.1:{sink.getsockname()[1]}"
    routes.write_text(json.dumps({"variants": [{"name": "a", "weight": 100, "backends": [backend]}]}))
    port_file = folder / "router.port"
    proc, port = _start(
        [
            "-m",
            "mlshift.local._router",
            "--routes",
            str(routes),
            "--port",
            "0",
            "--port-file",
            str(port_file),
        ],
        port_file,
    )
    chunk = b"x" * (1 << 20)

    def chunks() -> Iterator[bytes]:
        for _ in range(mb):
            yield chunk

    try:
        idle = psutil.Process(proc.pid).memory_info().rss
        with Watch(proc.pid, None) as watch, httpx.Client(trust_env=False, timeout=600) as http:
            try:
                status = http.post(f"http://127.0.0.1:{port}/invocations", content=chunks()).status_code
            except httpx.HTTPError:
                status = 0
        after = psutil.Process(proc.pid).memory_info().rss
    finally:
        proc.terminate()
        proc.wait(30)
        sink.close()
    return {
        "body_mb": mb,
        "status": status,
        "idle_rss_mb": round(idle / 2**20),
        "peak_rss_mb": round(watch.peak_rss / 2**20),
        "after_rss_mb": round(after / 2**20),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, default=10)
    parser.add_argument("--mb", type=int, default=100)
    parser.add_argument("--router-mb", type=int, default=400)
    parser.add_argument("--only", choices=["server", "router"])
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        result: dict[str, Any] = {"cpus": os.cpu_count()}
        if args.only in (None, "router"):
            result["router"] = bench_router(folder, args.router_mb)
            print("router", result["router"], file=sys.stderr)
        if args.only in (None, "server"):
            result["server"] = bench_server(folder, args.concurrency, args.mb)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
