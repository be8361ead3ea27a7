"""The local model registry: versions and aliases in SQLite, bytes in the artifact store."""

from __future__ import annotations

import builtins
import json
import sqlite3
from datetime import datetime, timezone
from pathlib import Path

from mlshift.adapter import Artifact
from mlshift.errors import Conflict, NotFound
from mlshift.local._state import StateDB
from mlshift.local._store import ArtifactStore
from mlshift.specs.model import ModelRef, ModelSpec, ModelVersion, Signature

__all__ = ["LocalModelRegistry"]


class LocalModelRegistry:
    """Versions auto-increment per name; identical bytes are stored once."""

    def __init__(self, db: StateDB, store: ArtifactStore) -> None:
        self._db = db
        self._store = store

    def _row_to_version(self, conn: sqlite3.Connection, row: sqlite3.Row) -> ModelVersion:
        aliases = tuple(
            r["alias"]
            for r in conn.execute(
                "SELECT alias FROM aliases WHERE name = ? AND version = ? ORDER BY alias",
                (row["name"], row["version"]),
            )
        )
        return ModelVersion(
            name=row["name"],
            version=str(row["version"]),
            artifact_uri=row["artifact_uri"],
            digest=row["digest"],
            framework=row["framework"],
            signature=Signature.model_validate_json(row["signature"]) if row["signature"] else None,
            metrics=json.loads(row["metrics"]),
            tags=json.loads(row["tags"]),
            aliases=aliases,
            description=row["description"],
            created_at=datetime.fromisoformat(row["created_at"]),
        )

    def register(self, spec: ModelSpec, artifact: Artifact) -> ModelVersion:
        stored = self._store.put(artifact.path, artifact.digest)
        now = datetime.now(timezone.utc).isoformat()
        with self._db.write() as conn:
            (latest,) = conn.execute(
                "SELECT COALESCE(MAX(version), 0) FROM models WHERE name = ?", (spec.name,)
            ).fetchone()
            version = latest + 1
            conn.execute(
                "INSERT INTO models (name, version, digest, artifact_uri, framework, signature,"
                " metrics, tags, description, created_at) VALUES (?,?,?,?,?,?,?,?,?,?)",
                (
                    spec.name,
                    version,
                    artifact.digest,
                    stored.as_uri(),
                    spec.framework,
                    spec.signature.model_dump_json() if spec.signature else None,
                    json.dumps(spec.metrics),
                    json.dumps(spec.tags),
                    spec.description,
                    now,
                ),
            )
            row = conn.execute(
                "SELECT * FROM models WHERE name = ? AND version = ?", (spec.name, version)
            ).fetchone()
            return self._row_to_version(conn, row)

    def _not_found(self, conn: sqlite3.Connection, ref: ModelRef) -> NotFound:
        versions = [
            str(r[0])
            for r in conn.execute("SELECT version FROM models WHERE name = ? ORDER BY version", (ref.name,))
        ]
        if not versions:
            names = [r[0] for r in conn.execute("SELECT DISTINCT name FROM models ORDER BY name")]
            known = ", ".join(names) if names else "none registered yet"
            return NotFound(f"model {ref.name!r} does not exist (models: {known})", provider="local")
        if ref.alias is not None:
            aliases = [r[0] for r in conn.execute("SELECT alias FROM aliases WHERE name = ?", (ref.name,))]
            return NotFound(
                f"model {ref.name!r} has no alias {ref.alias!r} (aliases: {', '.join(aliases) or 'none'})",
                provider="local",
                hint=f"set one with `mlshift models alias {ref.name} {ref.alias} VERSION`",
            )
        return NotFound(
            f"model {ref.name!r} has no version {ref.version} (versions: {', '.join(versions)})",
            provider="local",
        )

    def get(self, ref: ModelRef) -> ModelVersion:
        with self._db.read() as conn:
            if ref.alias is not None:
                row = conn.execute(
                    "SELECT m.* FROM models m JOIN aliases a ON a.name = m.name AND a.version = m.version"
                    " WHERE a.name = ? AND a.alias = ?",
                    (ref.name, ref.alias),
                ).fetchone()
            elif ref.version is not None:
                row = (
                    conn.execute(
                        "SELECT * FROM models WHERE name = ? AND version = ?", (ref.name, int(ref.version))
                    ).fetchone()
                    if ref.version.isdigit()
                    else None
                )
            else:
                row = conn.execute(
                    "SELECT * FROM models WHERE name = ? ORDER BY version DESC LIMIT 1", (ref.name,)
                ).fetchone()
            if row is None:
                raise self._not_found(conn, ref)
            return self._row_to_version(conn, row)

    def list(self, name: str | None = None) -> builtins.list[ModelVersion]:
        with self._db.read() as conn:
            if name is None:
                rows = conn.execute("SELECT * FROM models ORDER BY name, version").fetchall()
            else:
                rows = conn.execute(
                    "SELECT * FROM models WHERE name = ? ORDER BY version", (name,)
                ).fetchall()
            return [self._row_to_version(conn, r) for r in rows]

    def find_by_digest(self, name: str, digest: str) -> ModelVersion | None:
        with self._db.read() as conn:
            row = conn.execute(
                "SELECT * FROM models WHERE name = ? AND digest = ? ORDER BY version DESC LIMIT 1",
                (name, digest),
            ).fetchone()
            return self._row_to_version(conn, row) if row is not None else None

    def set_alias(self, name: str, alias: str, version: str) -> ModelVersion:
        self.get(ModelRef(name=name, version=version))
        with self._db.write() as conn:
            conn.execute(
                "INSERT INTO aliases (name, alias, version) VALUES (?,?,?)"
                " ON CONFLICT (name, alias) DO UPDATE SET version = excluded.version",
                (name, alias, int(version)),
            )
        return self.get(ModelRef(name=name, version=version))

    def remove_alias(self, name: str, alias: str) -> None:
        with self._db.write() as conn:
            cur = conn.execute("DELETE FROM aliases WHERE name = ? AND alias = ?", (name, alias))
            if cur.rowcount == 0:
                raise self._not_found(conn, ModelRef(name=name, alias=alias))

    def delete(self, name: str, version: str) -> None:
        target = self.get(ModelRef(name=name, version=version))
        with self._db.write() as conn:
            users = [
                f"{r['endpoint']}/{r['name']}"
                for r in conn.execute(
                    "SELECT endpoint, name FROM variants WHERE model_name = ? AND model_version = ?",
                    (name, int(version)),
                )
            ]
            if users:
                raise Conflict(
                    f"model {name}:{version} is served by {', '.join(users)}",
                    provider="local",
                    hint="move those variants to another version or delete the endpoints first",
                )
            conn.execute("DELETE FROM models WHERE name = ? AND version = ?", (name, int(version)))
            conn.execute("DELETE FROM aliases WHERE name = ? AND version = ?", (name, int(version)))
            (still_used,) = conn.execute(
                "SELECT COUNT(*) FROM models WHERE digest = ?", (target.digest,)
            ).fetchone()
        if not still_used:
            self._store.remove(target.digest)

    def artifact_path(self, version: ModelVersion) -> Path:
        return self._store.verified(version.digest)
