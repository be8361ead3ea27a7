"""Helpers shared by the benchmarks: processes, ports, HTTP probes, medians.

Everything here talks to 127.0.0.1 only, and every wait is bounded.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

LOOPBACK = "127.0.0.1"
#: Where every server of the serving benchmarks takes predictions.
PATH = "/invocations"
ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"


def pinned(cpu: int | None) -> Any:
    """A ``preexec_fn`` that confines the child to one CPU (``None``: no pinning)."""
    if cpu is None or not hasattr(os, "sched_setaffinity"):
        return None

    def pin() -> None:
        os.sched_setaffinity(0, {cpu})

    return pin


def cpu_plan() -> tuple[int | None, int | None]:
    """(server CPU, load generator CPU): apart when there are two CPUs we may use, else unpinned.

    With both on one scheduler, a fast server pays for its own load generator's CPU (wrk at
    a few thousand requests per second uses a good part of a core) while a slow one does not;
    one CPU each makes every server compete for the same, whole CPU.
    """
    if not hasattr(os, "sched_getaffinity"):
        return None, None
    usable = sorted(os.sched_getaffinity(0))
    if len(usable) < 2:
        return None, None
    return usable[0], usable[1]


def bench_env(**extra: str) -> dict[str, str]:
    """The environment for measured processes: ours, but writing bytecode as a user's would.

    Some machines set PYTHONDONTWRITEBYTECODE; then a module with no cached bytecode (an
    editable install's own source, say) is compiled again on every import, which is not
    what anyone's laptop does.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env.update(extra)
    return env


def median(values: Sequence[float | None], digits: int = 1) -> float | None:
    """The median of the values that were measured, rounded; ``None`` when none were."""
    present = [v for v in values if v is not None]
    return round(statistics.median(present), digits) if present else None


def ratio(numerator: float | None, denominator: float | None, digits: int = 2) -> float | None:
    if not numerator or not denominator:
        return None
    return round(numerator / denominator, digits)


def free_port() -> int:
    """A port nobody listens on right now (the server binds it a moment later)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def post(port: int, path: str, body: bytes, timeout: float = 5.0) -> tuple[int, bytes]:
    """POST a JSON body to 127.0.0.1:port; returns (status, body)."""
    conn = http.client.HTTPConnection(LOOPBACK, port, timeout=timeout)
    try:
        conn.request("POST", path, body=body, headers={"Content-Type": "application/json"})
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


class Server:
    """A server process started in its own process group, so it and its children stop together."""

    def __init__(
        self,
        name: str,
        cmd: list[str],
        port: int,
        log: Path,
        env: dict[str, str] | None = None,
        cpu: int | None = None,
    ) -> None:
        self.name = name
        self.cpu = cpu  # children (mlflow's uvicorn workers) inherit the pinning
        self.cmd = cmd
        self.port = port
        self.env = bench_env(PYTHONUNBUFFERED="1", **(env or {}))
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = 0.0
        # A file, not a pipe: a server that logs per request would block on a full pipe.
        self.log = log

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.started = time.perf_counter()
            self.proc = subprocess.Popen(
                self.cmd,
                env=self.env,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=pinned(self.cpu),
            )

    def wait_for_200(self, path: str, body: bytes, timeout: float = 120.0) -> float:
        """Seconds from launch to the first 200 answer to ``POST path``.

        Raises:
            RuntimeError: if the process exits or nothing answers 200 within ``timeout``.
        """
        assert self.proc is not None
        deadline = self.started + timeout
        while time.perf_counter() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited with {self.proc.returncode}: {self._stderr()}")
            try:
                status, _ = post(self.port, path, body, timeout=2.0)
            except OSError:
                time.sleep(0.01)
                continue
            if status == 200:
                return time.perf_counter() - self.started
            time.sleep(0.01)
        raise RuntimeError(f"{self.name} did not answer 200 within {timeout:.0f} s: {self._stderr()}")

    def _tree(self) -> list[Any]:
        import psutil

        if self.proc is None:
            return []
        try:
            root = psutil.Process(self.proc.pid)
            return [root, *root.children(recursive=True)]
        except psutil.Error:
            return []

    def rss_mb(self) -> float | None:
        """Resident memory of the server and all its children, in MB (shared pages counted in each)."""
        import psutil

        total = 0
        for p in self._tree():
            with contextlib.suppress(psutil.Error):
                total += p.memory_info().rss
        return round(total / 1e6, 1) if total else None

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by the server and its children."""
        import psutil

        total = 0.0
        for p in self._tree():
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)  # our own group: the server and its workers
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(timeout=5)

    def _stderr(self) -> str:
        try:
            text = self.log.read_text(errors="replace").strip().splitlines()
        except OSError:
            return ""
        return " | ".join(text[-5:])

    def __enter__(self) -> Server:
        self.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()


# ----------------------------------------------------------------------- load generators


class LoadGenerator:
    name = ""
    cpu: int | None = None  # the CPU it is confined to, if any

    def run(
        self, port: int, body: Path, connections: int, duration: int, limit: int, path: str = PATH
    ) -> dict[str, Any]:
        """One load run: ``connections`` keep-alive connections POSTing ``body`` to ``path`` for
        ``duration`` seconds (at most ``limit`` requests); returns the raw counts and latencies."""
        raise NotImplementedError


class Wrk(LoadGenerator):
    """wrk with bench/wrk_post.lua, one thread (the other core is the server's)."""

    def __init__(self, exe: str) -> None:
        self.exe = exe
        out = subprocess.run([exe, "-v"], capture_output=True, text=True, check=False)
        self.name = (out.stdout + out.stderr).strip().splitlines()[0].split(" [")[0] or "wrk"

    def run(
        self, port: int, body: Path, connections: int, duration: int, limit: int, path: str = PATH
    ) -> dict[str, Any]:
        cmd = [
            self.exe,
            "-t1",
            f"-c{connections}",
            f"-d{duration}s",
            "--timeout",
            "10s",
            "-s",
            str(BENCH / "wrk_post.lua"),
            f"http://{LOOPBACK}:{port}{path}",
        ]
        env = {**os.environ, "WRK_BODY_FILE": str(body)}  # wrk reads the body file named here
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            env=env,
            timeout=duration + 60,
            check=False,
            preexec_fn=pinned(self.cpu),
        )
        return _parse(proc, "WRKJSON ")


class AsyncClient(LoadGenerator):
    """bench/loadgen.py: Python asyncio (uvloop when installed), its own process."""

    name = "bench/loadgen.py (asyncio)"

    def run(
        self, port: int, body: Path, connections: int, duration: int, limit: int, path: str = PATH
    ) -> dict[str, Any]:
        cmd = [
            sys.executable,
            str(BENCH / "loadgen.py"),
            f"http://{LOOPBACK}:{port}{path}",
            "--body-file",
            str(body),
            "-c",
            str(connections),
            "-d",
            str(duration),
            "-n",
            str(limit),
        ]
        pin = pinned(self.cpu)
        proc = subprocess.run(
            cmd, capture_output=True, text=True, timeout=duration + 60, check=False, preexec_fn=pin
        )
        return _parse(proc, "LOADJSON ")


def _parse(proc: subprocess.CompletedProcess[str], marker: str) -> dict[str, Any]:
    for line in proc.stdout.splitlines():
        if line.startswith(marker):
            raw: dict[str, Any] = json.loads(line[len(marker) :])
            return raw
    output = f"{proc.stdout[-300:]} {proc.stderr[-300:]}".strip()
    raise RuntimeError(f"load generator failed ({proc.returncode}): {output}")


def pick_load_generator(choice: str) -> LoadGenerator:
    """``auto``: wrk when it is on PATH, else the asyncio client."""
    exe = shutil.which("wrk")
    if choice == "wrk" and exe is None:
        raise SystemExit("--loadgen wrk: wrk is not installed (apt-get install -y wrk)")
    if choice in ("auto", "wrk") and exe is not None:
        return Wrk(exe)
    return AsyncClient()


def measure(
    loadgen: LoadGenerator,
    port: int,
    body: Path,
    connections: int,
    duration: int,
    limit: int,
    cpu_seconds: Callable[[], float],
    *,
    rows: int = 1,
    path: str = PATH,
) -> dict[str, Any]:
    """A 1 s warm-up (not counted), then one measured run, summarized (:func:`summarize`) with
    the CPU that ``cpu_seconds`` (the server's, user + system) says the server spent in it."""
    loadgen.run(port, body, connections, 1, limit, path=path)  # warm-up, not counted
    cpu_before = cpu_seconds()
    raw = loadgen.run(port, body, connections, duration, limit, path=path)
    return summarize(raw, rows, cpu_seconds() - cpu_before)


def summarize(raw: dict[str, Any], rows: int, cpu_s: float) -> dict[str, Any]:
    """One load run's counts as the reports show them; a run with any non-200 answer or socket
    error is failed (``rps`` and the latencies ``None``), so medians leave it out."""
    seconds = raw["duration_us"] / 1e6
    socket_errors = sum(raw.get(k, 0) for k in ("connect", "read", "write", "timeout", "framing"))
    ok = raw["requests"] - raw["non200"]
    failed = raw["non200"] > 0 or socket_errors > 0 or ok == 0
    return {
        "rps": None if failed else round(ok / seconds, 1),
        "rows_per_s": None if failed else round(ok * rows / seconds),
        "p50_ms": None if failed else round(raw["p50_us"] / 1000, 2),
        "p99_ms": None if failed else round(raw["p99_us"] / 1000, 2),
        # Server CPU per answered request: less sensitive to a busy machine than req/s.
        "cpu_us_per_req": None if failed else round(cpu_s * 1e6 / ok, 1),
        "requests": raw["requests"],
        "non200": raw["non200"],
        "socket_errors": socket_errors,
    }


def run_medians(
    runs: Sequence[dict[str, Any]], *, rps_runs: bool = False, rows_per_s: bool = False
) -> dict[str, Any]:
    """Medians over repeated runs of one configuration (failed runs left out) and their counts.

    ``rps_runs`` adds each run's req/s (``None`` for a failed one), to show how rounds differ;
    ``rows_per_s`` the median rows per second, for bodies of more than one row. Both come
    right after ``rps``.
    """
    rps = [r["rps"] for r in runs]
    medians: dict[str, Any] = {"rps": median(rps)}
    if rps_runs:
        medians["rps_runs"] = rps
    if rows_per_s:
        medians["rows_per_s"] = median([r["rows_per_s"] for r in runs], 0)
    return {
        **medians,
        "p50_ms": median([r["p50_ms"] for r in runs], 2),
        "p99_ms": median([r["p99_ms"] for r in runs], 2),
        "cpu_us_per_req": median([r["cpu_us_per_req"] for r in runs]),
        "runs": len(runs),
        "failed_runs": sum(r["rps"] is None for r in runs),
        "requests": sum(r["requests"] for r in runs),
        "non200": sum(r["non200"] for r in runs),
        "socket_errors": sum(r["socket_errors"] for r in runs),
    }


def mlshift_cmd() -> list[str]:
    """How to run this environment's ``mlshift`` command."""
    script = Path(sys.executable).parent / "mlshift"
    return [str(script)] if script.exists() else [sys.executable, "-m", "mlshift"]
