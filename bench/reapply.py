"""Idempotent re-apply: what a first deploy costs, and that an unchanged re-apply costs nothing.

An ``mlshift.yaml`` with one model and one endpoint is applied to a fresh target, then applied
again, unchanged, ``repeat`` times. Every call the planner and executor make through the
adapter contract is recorded by a thin proxy around the target's adapter (these are the calls
that become provider API requests on a cloud target). Reported per target:

- calls and mutating calls for the first deploy, and for each unchanged re-apply;
- artifact bytes handed to ``models.register`` (what a cloud target uploads);
- bytes of files created or changed under the target's own storage folder;
- for ``memory://``, the adapter's own record of mutating calls (``adapter.calls``), as a
  cross-check of the proxy.

The goal for an unchanged re-apply is 0 mutating calls and 0 bytes.
"""

from __future__ import annotations

import contextlib
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

#: Contract methods that only read (or are plumbing: ``lock``, ``invoke``). Every other method
#: counts as mutating, so a new mutating primitive added to the contract is counted without
#: touching this file; a new read is recognised by its verb, or shows up here as a false alarm
#: (which the memory:// cross-check would contradict).
READS = frozenset(
    {
        "artifact_path",
        "invoke",
        "lock",
        "native_rollout_refusal",
        "observe",
        "option_changes",
        "rollouts",
        "validate",
        "validate_own_options",
    }
)
READ_VERBS = ("describe", "find", "get", "list", "observe", "read", "validate")

PROJECT = """\
version: 1
models:
  - name: bench
    path: model.skops
    framework: sklearn
    tags: {team: bench}
endpoints:
  - name: bench
    compute: {size: cpu-small, replicas: 1}
    variants:
      - name: blue
        model: bench
        weight: 100
    tags: {team: bench}
"""


class _Recorder:
    """Wraps one adapter service (``models`` or ``endpoints``) and records each method call."""

    def __init__(self, inner: Any, prefix: str, log: list[tuple[str, tuple[Any, ...]]]) -> None:
        self._inner = inner
        self._prefix = prefix
        self._log = log

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._inner, name)
        if name.startswith("_") or not callable(attr):
            return attr

        def call(*args: Any, **kwargs: Any) -> Any:
            self._log.append((f"{self._prefix}.{name}", args))
            return attr(*args, **kwargs)

        return call


class RecordingAdapter:
    """An adapter that forwards everything to ``inner`` and records contract calls in ``log``."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.log: list[tuple[str, tuple[Any, ...]]] = []
        self.models = _Recorder(inner.models, "models", self.log)
        self.endpoints = _Recorder(inner.endpoints, "endpoints", self.log)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


def _is_mutating(call: str) -> bool:
    method = call.split(".", 1)[1]
    return method not in READS and not method.startswith(READ_VERBS)


def _size(path: Path) -> int:
    if path.is_dir():
        return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
    return path.stat().st_size


def _snapshot(folder: Path | None) -> dict[str, tuple[int, int]]:
    if folder is None or not folder.exists():
        return {}
    out = {}
    for p in folder.rglob("*"):
        # Logs are the servers' own output while they run, not something apply wrote.
        if p.is_file() and p.suffix != ".log":
            with contextlib.suppress(OSError):
                st = p.stat()
                out[str(p.relative_to(folder))] = (st.st_size, st.st_mtime_ns)
    return out


def _written(before: dict[str, tuple[int, int]], after: dict[str, tuple[int, int]]) -> int:
    return sum(size for name, (size, mtime) in after.items() if before.get(name) != (size, mtime))


def _measure(
    client: Any, recorder: RecordingAdapter, project: Any, storage: Path | None, native: Callable[[], int]
) -> dict[str, Any]:
    recorder.log.clear()
    native_before = native()
    before = _snapshot(storage)
    start = time.perf_counter()
    plan = client.plan(project)
    changes = plan.changes
    client.apply(plan)
    elapsed = time.perf_counter() - start
    calls = [name for name, _ in recorder.log]
    mutating = [c for c in calls if _is_mutating(c)]
    uploaded = sum(_size(Path(args[1].path)) for name, args in recorder.log if name == "models.register")
    return {
        "plan_changes": changes,
        "calls": len(calls),
        "mutating_calls": len(mutating),
        "mutating": sorted(set(mutating)),
        "call_names": sorted(set(calls)),
        "bytes_uploaded": uploaded,
        "bytes_stored": None if storage is None else _written(before, _snapshot(storage)),
        "adapter_recorded_mutations": native() - native_before if native_before >= 0 else None,
        "seconds": round(elapsed, 4),
    }


def _one_target(uri_for: Callable[[Path], str], repeat: int, workdir: Path) -> dict[str, Any]:
    import mlshift
    from mlshift._config import load_project

    target = uri_for(workdir)
    project_file = workdir / "mlshift.yaml"
    project_file.write_text(PROJECT)
    project = load_project(project_file)
    client = mlshift.connect(target, project_file=project_file)
    recorder = RecordingAdapter(client.adapter)
    recording = mlshift.Client(recorder, label=target)
    inner = client.adapter
    if target.startswith("memory"):
        # memory:// keeps artifacts in a temporary folder of its own (a private attribute:
        # if it moves, stored bytes are reported as not measured rather than as 0).
        tmp = getattr(inner, "_tmp", None)
        storage: Path | None = Path(tmp) if tmp else None
    else:
        storage = workdir / "state"

    def native() -> int:
        calls = getattr(inner, "calls", None)
        return len(calls) if isinstance(calls, list) else -1

    try:
        first = _measure(recording, recorder, project, storage, native)
        again = [_measure(recording, recorder, project, storage, native) for _ in range(repeat)]
    finally:
        with contextlib.suppress(Exception):
            client.endpoints.delete("bench")  # local:// stops its servers here
        client.close()
    worst: dict[str, Any] = {
        key: max(r[key] for r in again)
        for key in ("plan_changes", "calls", "mutating_calls", "bytes_uploaded")
    }
    stored = [r["bytes_stored"] for r in again]
    worst["bytes_stored"] = None if None in stored else max(stored)
    recorded = [r["adapter_recorded_mutations"] for r in again if r["adapter_recorded_mutations"] is not None]
    return {
        "first_deploy": first,
        "reapply": {
            **worst,
            "adapter_recorded_mutations": max(recorded) if recorded else None,
            "call_names": sorted({c for r in again for c in r["call_names"]}),
            "median_seconds": round(statistics.median(r["seconds"] for r in again), 4),
            "runs": len(again),
        },
    }


def bench_reapply(repeat: int) -> dict[str, Any]:
    """First deploy and unchanged re-apply on memory:// and local://."""
    from serving import make_workload

    targets: dict[str, Callable[[Path], str]] = {
        "memory://": lambda _: "memory://",
        "local://": lambda folder: f"local://{folder / 'state'}",
    }
    out: dict[str, Any] = {}
    for label, uri_for in targets.items():
        print(f"  reapply: {label}", flush=True)
        with tempfile.TemporaryDirectory(prefix="mlshift-bench-reapply-") as tmp:
            make_workload(Path(tmp))  # writes model.skops next to mlshift.yaml
            out[label] = _one_target(uri_for, repeat, Path(tmp))
    return out
