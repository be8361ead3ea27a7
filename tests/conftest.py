"""Shared fixtures: trained models, clients on fresh local and memory targets, process cleanup."""

from __future__ import annotations

import contextlib
import os
import random
import signal
import socket
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import mlshift
from mlshift.testing.conformance import iris_models


@pytest.fixture(scope="session")
def example() -> Any:
    """``examples/monitor_retrain.py`` (its data, model and traffic), for the monitoring tests."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
    try:
        import monitor_retrain
    finally:
        sys.path.pop(0)
    return monitor_retrain


@pytest.fixture(scope="session")
def iris(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two trained iris classifiers (skops files) with sample rows and their expected labels."""
    return iris_models(tmp_path_factory.mktemp("iris"))


@pytest.fixture
def fixed_port() -> int:
    """A free port on 127.0.0.1 for a test of a fixed, user-chosen port.

    Taken below the kernel's ephemeral range, which is where ports bound to 0 and outgoing
    connections come from: between this check and the test's use of it, no other process is
    handed this port by the OS (a port picked by binding to 0 and closing could be).
    """
    ranges = Path("/proc/sys/net/ipv4/ip_local_port_range")
    low = int(ranges.read_text().split()[0]) if ranges.exists() else 32768
    for port in random.sample(range(max(1024, low - 10_000), low), 500):
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no free port below {low} on 127.0.0.1")


def _kill_leftovers(root: Path) -> list[int]:
    """Kill any process still running from a state folder; return their pids."""
    import psutil

    killed = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(root) in cmdline and ("mlshift.serving" in cmdline or "mlshift.local._router" in cmdline):
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.info["pid"], signal.SIGKILL)
            killed.append(proc.info["pid"])
    return killed


@pytest.fixture
def state_dir(tmp_path: Path) -> Iterator[Path]:
    """A fresh local state folder; fails the test if it leaves processes behind."""
    root = tmp_path / "state"
    yield root
    leftovers = _kill_leftovers(root)
    assert not leftovers, f"processes left running after the test: {leftovers}"


@pytest.fixture
def local(state_dir: Path) -> Iterator[mlshift.Client]:
    """A client on an empty local target; endpoints are deleted afterwards."""
    client = mlshift.connect(f"local://{state_dir}")
    try:
        yield client
    finally:
        for endpoint in client.endpoints.list():
            with contextlib.suppress(mlshift.MlshiftError):
                client.endpoints.delete(endpoint.name)
        client.close()


@pytest.fixture
def memory() -> Iterator[mlshift.Client]:
    """A client on an empty in-memory target."""
    client = mlshift.connect("memory://")
    yield client
    client.close()
