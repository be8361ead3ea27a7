"""The local target's state: one SQLite database, safe to share between processes."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from contextlib import closing, contextmanager
from pathlib import Path

__all__ = ["StateDB"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS models (
    name TEXT NOT NULL,
    version INTEGER NOT NULL,
    digest TEXT NOT NULL,
    artifact_uri TEXT NOT NULL,
    framework TEXT NOT NULL,
    signature TEXT,
    metrics TEXT NOT NULL DEFAULT '{}',
    tags TEXT NOT NULL DEFAULT '{}',
    description TEXT,
    created_at TEXT NOT NULL,
    PRIMARY KEY (name, version)
);
CREATE INDEX IF NOT EXISTS models_digest ON models (name, digest);
CREATE TABLE IF NOT EXISTS aliases (
    name TEXT NOT NULL,
    alias TEXT NOT NULL,
    version INTEGER NOT NULL,
    PRIMARY KEY (name, alias)
);
CREATE TABLE IF NOT EXISTS endpoints (
    name TEXT PRIMARY KEY,
    port INTEGER NOT NULL,
    router_pid INTEGER NOT NULL,
    router_started REAL NOT NULL,
    startup_timeout REAL NOT NULL DEFAULT 60,
    tags TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS variants (
    endpoint TEXT NOT NULL,
    name TEXT NOT NULL,
    model_name TEXT NOT NULL,
    model_version INTEGER NOT NULL,
    digest TEXT NOT NULL,
    size TEXT NOT NULL,
    replicas INTEGER NOT NULL,
    weight INTEGER NOT NULL,
    processes TEXT NOT NULL DEFAULT '[]',
    PRIMARY KEY (endpoint, name)
);
CREATE TABLE IF NOT EXISTS rollouts (
    id TEXT PRIMARY KEY,
    endpoint TEXT NOT NULL,
    phase TEXT NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS rollouts_endpoint ON rollouts (endpoint, id);
"""


class StateDB:
    """Connections to ``state.db`` with WAL and a busy timeout.

    Each operation opens its own short-lived connection: two terminals, a notebook and a CLI
    can use one state directory at once, and SQLite serialises their writes.
    """

    def __init__(self, path: Path, schema: str = _SCHEMA) -> None:
        self.path = path
        path.parent.mkdir(parents=True, exist_ok=True)
        # Owner only, before SQLite opens it: its -wal and -shm files take the same mode.
        os.close(os.open(path, os.O_RDWR | os.O_CREAT, 0o600))
        path.chmod(0o600)
        # Two processes opening a new state folder at once race to switch it to WAL; SQLite
        # answers that race with "database is locked" at once, without its busy handler, so
        # the first open retries for a while instead of failing.
        deadline = time.monotonic() + 30.0
        while True:
            try:
                with closing(self.connect()) as conn:
                    if conn.execute("PRAGMA journal_mode").fetchone()[0].lower() != "wal":
                        conn.execute("PRAGMA journal_mode=WAL")
                    conn.executescript(schema)
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)

    def connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self.path, timeout=30.0, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute("PRAGMA busy_timeout=30000")
        return conn

    @contextmanager
    def read(self) -> Iterator[sqlite3.Connection]:
        """A connection for reads."""
        conn = self.connect()
        try:
            yield conn
        finally:
            conn.close()

    @contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """A write transaction (``BEGIN IMMEDIATE``): committed on success, rolled back on error."""
        conn = self.connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")
        finally:
            conn.close()
