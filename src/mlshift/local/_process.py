"""Detached server processes that outlive the Python session that started them."""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from mlshift.errors import ProviderError, ProviderTimeout

__all__ = ["ProcessHandle", "log_tail", "reap_processes", "spawn_server"]


@dataclass(frozen=True)
class ProcessHandle:
    """A process we started: its pid and start time (so a reused pid is never mistaken for it)."""

    pid: int
    started: float

    def alive(self) -> bool:
        """True while the process runs (a zombie counts as exited, and is reaped)."""
        import psutil

        try:
            proc = psutil.Process(self.pid)
            if abs(proc.create_time() - self.started) > 1.0:
                return False
            if proc.status() == psutil.STATUS_ZOMBIE:
                _reap(self.pid)
                return False
            return True
        except (psutil.NoSuchProcess, psutil.AccessDenied):
            return False

    def terminate(self, timeout: float = 10.0) -> None:
        """SIGTERM (the server finishes in-flight requests), then SIGKILL after ``timeout``."""
        if not self.alive():
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGTERM)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            _reap(self.pid)
            if not self.alive():
                return
            time.sleep(0.02)
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, signal.SIGKILL)
        for _ in range(100):
            _reap(self.pid)
            if not self.alive():
                return
            time.sleep(0.02)

    def to_json(self) -> dict[str, float]:
        return {"pid": self.pid, "started": self.started}


def _reap(pid: int) -> None:
    # Our own children linger as zombies until waited for; others' are not ours to reap.
    with contextlib.suppress(ChildProcessError, OSError):
        os.waitpid(pid, os.WNOHANG)


def reap_processes(folder: Path, *modules: str, keep: set[int] | frozenset[int] = frozenset()) -> list[int]:
    """Stop ``python -m MODULE`` processes whose command line names ``folder``, except ``keep``.

    Returns:
        The pids that were stopped.
    """
    import psutil

    marker = str(folder) + os.sep
    found = []
    for proc in psutil.process_iter(["pid", "cmdline", "create_time"]):
        cmdline = proc.info["cmdline"] or []
        if proc.info["pid"] in keep or not any(marker in part for part in cmdline):
            continue
        if any(module in cmdline for module in modules):
            ProcessHandle(pid=proc.info["pid"], started=proc.info["create_time"]).terminate(timeout=5)
            found.append(proc.info["pid"])
    return found


def log_tail(path: Path, lines: int = 8) -> str:
    """The last lines of a log file, for error messages."""
    try:
        text = path.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(text.strip().splitlines()[-lines:])


def spawn_server(
    module: str, args: list[str], *, log: Path, port_file: Path, timeout: float = 60.0, what: str
) -> tuple[ProcessHandle, int]:
    """Start ``python -m module args...`` in its own session and wait for its port file.

    The child binds its socket itself and writes the port once it accepts connections, so
    there is no window where two processes race for one port.

    Raises:
        ProviderError: if the process exits before it is ready (with the end of its log).
        ProviderTimeout: if it is not ready within ``timeout`` seconds.
    """
    import psutil

    log.parent.mkdir(parents=True, exist_ok=True)
    port_file.unlink(missing_ok=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    fd = os.open(log, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        pid = os.posix_spawn(
            sys.executable,
            [sys.executable, "-m", module, *args],
            env,
            file_actions=[
                (os.POSIX_SPAWN_OPEN, 0, os.devnull, os.O_RDONLY, 0),
                (os.POSIX_SPAWN_DUP2, fd, 1),
                (os.POSIX_SPAWN_DUP2, fd, 2),
            ],
            setsid=True,
        )
    finally:
        os.close(fd)
    handle = ProcessHandle(pid=pid, started=psutil.Process(pid).create_time())
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if port_file.exists():
            text = port_file.read_text().strip()
            if text.isdigit():
                return handle, int(text)
        if not handle.alive():
            tail = log_tail(log)
            raise ProviderError(
                f"{what} exited before it was ready" + (f":\n{tail}" if tail else ""),
                provider="local",
                hint=f"full log: {log}",
            )
        time.sleep(0.02)
    handle.terminate()
    raise ProviderTimeout(f"{what} was not ready within {timeout:g} s", provider="local", hint=f"log: {log}")
