"""Pipeline state on the local target: ``pipelines.db`` (runs, steps, cache, schedules) and
``pipelines/artifacts`` (step outputs, content-addressed).

The database is separate from the local target's ``state.db`` so the two evolve apart; it
uses the same habits: WAL, one short-lived connection per operation, ``BEGIN IMMEDIATE`` for
writes, so a runner, a ``status`` in another terminal and a notebook can share it.

A step's success is one transaction: its outputs, its status and its cache entry commit
together or not at all. Artifacts are stored *before* that transaction; a crash in between
leaves a stored artifact that nothing points to, which the next identical run reuses.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import tempfile
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from mlshift.errors import Conflict, NotFound
from mlshift.local._state import StateDB

__all__ = ["RunDB", "StepArtifacts", "now_iso"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id TEXT PRIMARY KEY,
    pipeline TEXT NOT NULL,
    status TEXT NOT NULL,
    trigger TEXT NOT NULL,
    params TEXT NOT NULL,
    ir TEXT NOT NULL,
    ir_hash TEXT NOT NULL,
    target TEXT NOT NULL,
    use_cache INTEGER NOT NULL DEFAULT 1,
    message TEXT,
    created_at TEXT NOT NULL,
    started_at TEXT,
    finished_at TEXT,
    runner_pid INTEGER,
    runner_started REAL,
    cancel_requested INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX IF NOT EXISTS runs_by_pipeline ON runs (pipeline, created_at);
CREATE TABLE IF NOT EXISTS steps (
    run_id TEXT NOT NULL,
    name TEXT NOT NULL,
    position INTEGER NOT NULL,
    kind TEXT NOT NULL,
    status TEXT NOT NULL,
    attempts INTEGER NOT NULL DEFAULT 0,
    executions INTEGER NOT NULL DEFAULT 0,
    cache_key TEXT,
    cached_from TEXT,
    outputs TEXT,
    message TEXT,
    started_at TEXT,
    finished_at TEXT,
    pid INTEGER,
    pid_started REAL,
    PRIMARY KEY (run_id, name)
);
CREATE TABLE IF NOT EXISTS cache (
    key TEXT PRIMARY KEY,
    outputs TEXT NOT NULL,
    run_id TEXT NOT NULL,
    step TEXT NOT NULL,
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS schedules (
    pipeline TEXT PRIMARY KEY,
    cron TEXT NOT NULL,
    timezone TEXT NOT NULL,
    source TEXT,
    last_tick TEXT,
    updated_at TEXT NOT NULL
);
"""


def now_iso() -> str:
    """The current UTC time, ISO 8601."""
    return datetime.now(timezone.utc).isoformat()


class RunDB(StateDB):
    """``pipelines.db``: runs, their steps, the step cache and schedule bookkeeping.

    A database of its own beside the target's ``state.db``, with the same concurrency rules.
    """

    def __init__(self, path: Path) -> None:
        super().__init__(path, schema=_SCHEMA)

    # ---------------------------------------------------------------------------- runs

    def create_run(
        self,
        *,
        run_id: str,
        pipeline: str,
        ir_json: str,
        ir_hash: str,
        params: Mapping[str, Any],
        target: str,
        trigger: str,
        use_cache: bool,
        steps: list[tuple[str, str]],
        runner: tuple[int, float],
    ) -> None:
        """Record a new run and its steps (all ``pending``) in one transaction."""
        now = now_iso()
        with self.write() as conn:
            conn.execute(
                "INSERT INTO runs (id, pipeline, status, trigger, params, ir, ir_hash, target, use_cache,"
                " created_at, started_at, runner_pid, runner_started) VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)",
                (run_id, pipeline, "running", trigger, json.dumps(dict(params)), ir_json, ir_hash, target,
                 int(use_cache), now, now, runner[0], runner[1]),
            )  # fmt: skip
            conn.executemany(
                "INSERT INTO steps (run_id, name, position, kind, status) VALUES (?,?,?,?,?)",
                [(run_id, name, i, kind, "pending") for i, (name, kind) in enumerate(steps)],
            )

    def run(self, run_id: str) -> dict[str, Any]:
        """One run's row.

        Raises:
            NotFound: for an unknown id.
        """
        with self.read() as conn:
            row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
        if row is None:
            raise NotFound(
                f"no pipeline run {run_id!r} on this target",
                provider="local",
                hint="list runs with `mlshift pipelines list`",
            )
        return dict(row)

    def runs(self, pipeline: str | None, limit: int) -> list[dict[str, Any]]:
        """The newest runs first (optionally of one pipeline)."""
        query = "SELECT * FROM runs"
        args: tuple[Any, ...] = ()
        if pipeline is not None:
            query += " WHERE pipeline = ?"
            args = (pipeline,)
        query += " ORDER BY created_at DESC, id DESC LIMIT ?"
        with self.read() as conn:
            return [dict(r) for r in conn.execute(query, (*args, limit))]

    def update_run(self, run_id: str, **fields: Any) -> None:
        """Set some columns of a run."""
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self.write() as conn:
            conn.execute(f"UPDATE runs SET {cols} WHERE id = ?", (*fields.values(), run_id))

    def claim_run(self, run_id: str, runner: tuple[int, float], alive: Any) -> dict[str, Any]:
        """Take over a stopped run for resuming, atomically.

        Args:
            alive: ``alive(pid, started) -> bool``, to tell a live runner from a dead one.

        Raises:
            NotFound: for an unknown id.
            Conflict: if another live process is running it.
        """
        with self.write() as conn:
            row = conn.execute("SELECT * FROM runs WHERE id = ?", (run_id,)).fetchone()
            if row is None:
                raise NotFound(f"no pipeline run {run_id!r} on this target", provider="local")
            if (
                row["status"] == "running"
                and row["runner_pid"]
                and alive(row["runner_pid"], row["runner_started"])
            ):
                raise Conflict(
                    f"pipeline run {run_id!r} is still running (process {row['runner_pid']})",
                    provider="local",
                    hint="wait for it, or stop that process first",
                )
            conn.execute(
                "UPDATE runs SET status = 'running', runner_pid = ?, runner_started = ?, message = NULL,"
                " finished_at = NULL, cancel_requested = 0 WHERE id = ?",
                (runner[0], runner[1], run_id),
            )
            conn.execute(
                "UPDATE steps SET status = 'pending', pid = NULL, pid_started = NULL, message = NULL"
                " WHERE run_id = ? AND status NOT IN ('succeeded', 'cached')",
                (run_id,),
            )
        return dict(row)

    # ---------------------------------------------------------------------------- steps

    def steps(self, run_id: str) -> list[dict[str, Any]]:
        """A run's steps in pipeline order."""
        with self.read() as conn:
            rows = conn.execute("SELECT * FROM steps WHERE run_id = ? ORDER BY position", (run_id,))
            return [dict(r) for r in rows]

    def update_step(self, run_id: str, name: str, **fields: Any) -> None:
        """Set some columns of a step."""
        cols = ", ".join(f"{k} = ?" for k in fields)
        with self.write() as conn:
            conn.execute(
                f"UPDATE steps SET {cols} WHERE run_id = ? AND name = ?", (*fields.values(), run_id, name)
            )

    def start_attempt(self, run_id: str, name: str, attempt: int) -> None:
        """Mark a step running for its ``attempt``-th try (counted as an execution)."""
        with self.write() as conn:
            conn.execute(
                "UPDATE steps SET status = 'running', attempts = ?, executions = executions + 1,"
                " started_at = COALESCE(started_at, ?), message = NULL WHERE run_id = ? AND name = ?",
                (attempt, now_iso(), run_id, name),
            )

    def finish_step(
        self,
        run_id: str,
        name: str,
        *,
        status: str,
        outputs: Mapping[str, Any] | None = None,
        message: str | None = None,
        cache_key: str | None = None,
        cached_from: str | None = None,
        write_cache: bool = False,
    ) -> None:
        """Record a step's end; with ``write_cache``, its cache entry in the same transaction."""
        now = now_iso()
        data = json.dumps(outputs) if outputs is not None else None
        with self.write() as conn:
            conn.execute(
                "UPDATE steps SET status = ?, outputs = ?, message = ?, cache_key = ?, cached_from = ?,"
                " finished_at = ?, pid = NULL, pid_started = NULL WHERE run_id = ? AND name = ?",
                (status, data, message, cache_key, cached_from, now, run_id, name),
            )
            if write_cache and cache_key and data is not None:
                conn.execute(
                    "INSERT OR REPLACE INTO cache (key, outputs, run_id, step, created_at)"
                    " VALUES (?,?,?,?,?)",
                    (cache_key, data, run_id, name, now),
                )

    def cached(self, key: str) -> dict[str, Any] | None:
        """The cache entry for ``key``: ``{"outputs", "run_id", "step"}``."""
        with self.read() as conn:
            row = conn.execute("SELECT * FROM cache WHERE key = ?", (key,)).fetchone()
        if row is None:
            return None
        return {"outputs": json.loads(row["outputs"]), "run_id": row["run_id"], "step": row["step"]}

    def forget_cached(self, key: str) -> None:
        """Drop a cache entry whose artifacts or live resources are gone."""
        with self.write() as conn:
            conn.execute("DELETE FROM cache WHERE key = ?", (key,))

    # ---------------------------------------------------------------------------- schedules

    def schedule(self, pipeline: str) -> dict[str, Any] | None:
        """The scheduler's bookkeeping for one pipeline."""
        with self.read() as conn:
            row = conn.execute("SELECT * FROM schedules WHERE pipeline = ?", (pipeline,)).fetchone()
        return dict(row) if row is not None else None

    def save_schedule(
        self, pipeline: str, cron: str, tz: str, source: str | None, last_tick: str | None
    ) -> None:
        """Store a pipeline's schedule and the last tick it ran for."""
        with self.write() as conn:
            conn.execute(
                "INSERT INTO schedules (pipeline, cron, timezone, source, last_tick, updated_at)"
                " VALUES (?,?,?,?,?,?) ON CONFLICT(pipeline) DO UPDATE SET cron = excluded.cron,"
                " timezone = excluded.timezone, source = COALESCE(excluded.source, schedules.source),"
                " last_tick = COALESCE(excluded.last_tick, schedules.last_tick),"
                " updated_at = excluded.updated_at",
                (pipeline, cron, tz, source, last_tick, now_iso()),
            )


class StepArtifacts:
    """Step outputs stored by content: ``<root>/sha256/<hex>/<name>``.

    Unlike the model registry's store, the file name is part of the address: a model written
    as ``model.skops`` must reach the next step under that name, because the name tells its
    loader what it is. The same bytes under two names are two entries.
    """

    def __init__(self, root: Path) -> None:
        self.root = root

    def path(self, ref: Mapping[str, str]) -> Path:
        """Where the artifact ``{"digest", "name"}`` is stored."""
        algo, _, hexdigest = ref["digest"].partition(":")
        return self.root / algo / hexdigest / ref["name"]

    def exists(self, ref: Mapping[str, str]) -> bool:
        """Whether the artifact is still stored."""
        return self.path(ref).exists()

    def put(self, source: Path) -> dict[str, str]:
        """Move ``source`` (a file or folder the step wrote) into the store.

        It is moved, not copied: it lives in the step's work folder on the same file system,
        and that folder is deleted afterwards. Stored files are made read-only, as a reminder
        that other steps and runs read them.

        Raises:
            ConfigError: for an empty folder (from :func:`digest_path`).
        """
        from mlshift._artifacts import digest_path

        digest = digest_path(source)
        ref = {"digest": digest, "name": source.name}
        final = self.path(ref)
        if final.exists():
            return ref
        final.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=final.parent))
        try:
            staged = staging / source.name
            try:
                os.rename(source, staged)
            except OSError:  # another file system after all
                if source.is_dir():
                    shutil.copytree(source, staged)
                else:
                    shutil.copy2(source, staged)
            for f in [staged] if staged.is_file() else staged.rglob("*"):
                if f.is_file():
                    f.chmod(f.stat().st_mode & ~(stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH))
            try:
                os.rename(staged, final)
            except OSError:
                if not final.exists():  # the same bytes stored concurrently are fine
                    raise
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return ref
