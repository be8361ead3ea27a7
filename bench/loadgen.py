"""A small closed-loop HTTP/1.1 load generator: the fallback when wrk is not installed.

Run as its own process (``python bench/loadgen.py URL --body-file F -c 16 -d 5``) so that it
never shares an interpreter with the server it measures. Each connection keeps one request in
flight over a keep-alive socket, like wrk. Every response's status is checked: only 200 counts
as a success. It stops after ``--duration`` seconds or ``--requests`` requests, whichever comes
first, and prints one JSON line with the same fields the wrk script reports.

It is slower than wrk (Python parses every response), so it caps the throughput it can show
at a few thousand requests per second on one core; the report says which generator ran.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from urllib.parse import urlsplit


def _percentile(sorted_us: list[int], q: float) -> int:
    if not sorted_us:
        return 0
    k = min(len(sorted_us) - 1, max(0, round(q / 100 * len(sorted_us)) - 1))
    return sorted_us[k]


async def _connection(
    host: str,
    port: int,
    request: bytes,
    deadline: float,
    budget: list[int],
    latencies: list[int],
    statuses: dict[int, int],
    errors: dict[str, int],
) -> None:
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        errors["connect"] += 1
        return
    try:
        while budget[0] > 0 and time.perf_counter() < deadline:
            budget[0] -= 1
            start = time.perf_counter_ns()
            writer.write(request)
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                errors["read"] += 1
                return
            status = int(head[9:12])
            length = 0
            for line in head.split(b"\r\n")[1:]:
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
                    break
            else:
                errors["framing"] += 1  # every server measured here sends Content-Length
                return
            try:
                await reader.readexactly(length)
            except (asyncio.IncompleteReadError, ConnectionError):
                errors["read"] += 1
                return
            latencies.append((time.perf_counter_ns() - start) // 1000)
            statuses[status] = statuses.get(status, 0) + 1
    finally:
        writer.close()


async def run(url: str, body: bytes, connections: int, duration: float, limit: int) -> dict[str, object]:
    """Load ``url`` with POSTs of ``body``; returns counts, latency percentiles and errors."""
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 80
    request = (
        f"POST {parts.path or '/'} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies: list[int] = []
    statuses: dict[int, int] = {}
    errors = {"connect": 0, "read": 0, "framing": 0}
    budget = [limit]
    start = time.perf_counter()
    deadline = start + duration
    await asyncio.gather(
        *(
            _connection(host, port, request, deadline, budget, latencies, statuses, errors)
            for _ in range(connections)
        )
    )
    elapsed = time.perf_counter() - start
    latencies.sort()
    ok = statuses.get(200, 0)
    return {
        "requests": sum(statuses.values()),
        "duration_us": int(elapsed * 1e6),
        "non200": sum(n for s, n in statuses.items() if s != 200),
        "statuses": {str(k): v for k, v in sorted(statuses.items())},
        "ok": ok,
        **errors,
        "p50_us": _percentile(latencies, 50),
        "p99_us": _percentile(latencies, 99),
        "max_us": latencies[-1] if latencies else 0,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("url")
    parser.add_argument("--body-file", required=True)
    parser.add_argument("-c", "--connections", type=int, default=2)
    parser.add_argument("-d", "--duration", type=float, default=5.0, help="seconds (upper bound)")
    parser.add_argument("-n", "--requests", type=int, default=1_000_000, help="requests (upper bound)")
    args = parser.parse_args(argv)
    host = urlsplit(args.url).hostname
    if host not in ("127.0.0.1", "localhost", "::1"):
        parser.error(f"refusing to load {host}: this generator only targets loopback")
    with open(args.body_file, "rb") as f:
        body = f.read()
    try:
        from uvloop import run as run_loop
    except ImportError:
        run_loop = asyncio.run
    result = run_loop(run(args.url, body, args.connections, args.duration, args.requests))
    print("LOADJSON " + json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
