"""A small load generator for rollout tests: runs in its own process, loopback only.

    python tests/loadgen.py URL OUT --stop-file F [--min-requests N] [--max-seconds S] [--body JSON]

Sends the same prediction request from a few concurrent connections until the stop file
exists and at least N requests were sent (or S seconds passed), then writes counts per
(variant, status) to OUT as JSON. Every response's status and serving variant are recorded.
``OUT.ready`` appears once the first response has come back: traffic is flowing.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import time
from collections import Counter
from pathlib import Path

import httpx

BODY = json.dumps({"instances": [[5.1, 3.5, 1.4, 0.2]]}).encode()


async def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("out", type=Path)
    parser.add_argument("--stop-file", type=Path, required=True)
    parser.add_argument("--min-requests", type=int, default=0)
    parser.add_argument("--max-seconds", type=float, default=120)
    parser.add_argument("--concurrency", type=int, default=6)
    parser.add_argument("--body", default=None, help="the request body (JSON); default: one iris row")
    args = parser.parse_args()
    body = args.body.encode() if args.body else BODY

    counts: Counter[str] = Counter()
    failures: list[str] = []
    deadline = time.monotonic() + args.max_seconds
    state = {"total": 0}
    ready = args.out.parent / (args.out.name + ".ready")

    def done() -> bool:
        if time.monotonic() > deadline:
            return True
        return args.stop_file.exists() and state["total"] >= args.min_requests

    async def worker(client: httpx.AsyncClient) -> None:
        while not done():
            try:
                resp = await client.post(args.url, content=body, headers={"Content-Type": "application/json"})
                key = f"{resp.headers.get('x-mlshift-variant', '?')} {resp.status_code}"
                if resp.status_code >= 300 and len(failures) < 20:
                    failures.append(f"{key}: {resp.text[:200]}")
                if not ready.exists():
                    ready.write_text("1")
            except httpx.HTTPError as exc:
                key = f"? {type(exc).__name__}"
                if len(failures) < 20:
                    failures.append(f"{key}: {exc}")
            counts[key] += 1
            state["total"] += 1

    limits = httpx.Limits(max_connections=args.concurrency)
    async with httpx.AsyncClient(timeout=30, limits=limits, trust_env=False) as client:
        await asyncio.gather(*(worker(client) for _ in range(args.concurrency)))
    args.out.write_text(json.dumps({"total": state["total"], "counts": dict(counts), "failures": failures}))


if __name__ == "__main__":
    asyncio.run(main())
