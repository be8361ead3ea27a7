"""Shared storage machinery: an object store contract, and what adapters build on it.

A cloud target keeps a little state of its own next to the provider's resources: the rollout
journal, a lease per endpoint so two applies never change one endpoint at once, and the
content-addressed artifacts and version cards of registered models. All of it needs only a
bucket with conditional writes, so it is written once here, over :class:`ObjectStore`:

- :class:`ObjectStore` — ``get`` / ``put`` / ``put_if_absent`` / ``put_if_match`` / ``list`` /
  ``delete``: S3 (``If-None-Match`` / ``If-Match`` on ETags), Azure Blob (ETags) and GCS
  (generations) all fit. :class:`MemoryObjectStore` and :class:`FolderObjectStore` ship here.
- :class:`PrefixedObjectStore` — a view of a store under a key prefix.
- :class:`RolloutJournal` — ``journal/<endpoint>/<record id>.json``.
- :class:`LeaseLock` — ``locks/<endpoint>.json``, taken with ``put_if_absent``, renewed in the
  background with ``put_if_match``, taken over once expired. A lease that is lost (someone else
  took it over) makes the next journal write and the end of the ``with`` block raise
  :class:`~mlshift.errors.LeaseLost`, so an apply never goes on unlocked.
- :class:`ArtifactStore` — ``artifacts/sha256/<hex>/files/...`` plus ``manifest.json`` written
  last (its presence means complete), and ``cards/<sha256>.json`` version cards.

Keys are ``/``-separated; each class takes a ``prefix`` under which it keeps its keys.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import logging
import os
import secrets
import shutil
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from mlshift._artifacts import scan_artifact
from mlshift.adapter import Artifact, RolloutRecord
from mlshift.errors import ConfigError, Conflict, IntegrityError, LeaseLost, MlshiftError, NotFound

__all__ = [
    "ArtifactStore",
    "FileTransfer",
    "FolderObjectStore",
    "LeaseLock",
    "MemoryObjectStore",
    "ObjectStore",
    "PreconditionFailed",
    "PrefixedObjectStore",
    "RolloutJournal",
    "StoredArtifact",
    "StoredObject",
    "Written",
    "read_json",
    "write_json",
]

logger = logging.getLogger("mlshift.storage")


# --------------------------------------------------------------------------------------------
# The contract


@dataclass(frozen=True)
class StoredObject:
    """One object as read: its bytes and the version tag a conditional write compares against.

    Attributes:
        key: The object's key.
        data: Its bytes.
        etag: An opaque version tag (S3/Azure ETag, GCS generation); changes whenever it is written.
    """

    key: str
    data: bytes
    etag: str


@dataclass(frozen=True)
class Written:
    """A write that happened; ``etag`` is the new version tag."""

    key: str
    etag: str


@dataclass(frozen=True)
class PreconditionFailed:
    """A conditional write that did not happen: the object existed, or was changed since read."""

    key: str


@runtime_checkable
class ObjectStore(Protocol):
    """A flat key → bytes store with compare-and-swap writes.

    Implementations translate their SDK's errors into :mod:`mlshift.errors` (a lost condition is
    a :class:`PreconditionFailed` result, never an exception). A store that does not exist yet
    (a bucket nobody wrote to) reads as empty.
    """

    def get(self, key: str) -> StoredObject | None:
        """The object, or ``None`` when it does not exist."""
        ...

    def put(self, key: str, data: bytes) -> Written:
        """Create or replace the object."""
        ...

    def put_if_absent(self, key: str, data: bytes) -> Written | PreconditionFailed:
        """Create the object only if no object has that key."""
        ...

    def put_if_match(self, key: str, data: bytes, etag: str) -> Written | PreconditionFailed:
        """Replace the object only if its version tag is still ``etag``."""
        ...

    def list(self, prefix: str) -> list[str]:
        """Every key that starts with ``prefix``, sorted."""
        ...

    def delete(self, keys: Sequence[str]) -> None:
        """Delete objects (missing ones are fine)."""
        ...


@runtime_checkable
class FileTransfer(Protocol):
    """Optional: a store that moves big files itself (multipart, in parallel, with progress).

    :class:`ArtifactStore` uses these when a store has them, else ``put`` / ``get`` whole bytes.
    """

    def upload_file(self, key: str, path: Path) -> None:
        """Write the file at ``path`` as object ``key`` (replacing it)."""
        ...

    def download_file(self, key: str, path: Path) -> None:
        """Write object ``key`` to ``path``.

        Raises:
            NotFound: if it does not exist.
        """
        ...


def read_json(store: ObjectStore, key: str) -> tuple[Any, str] | None:
    """A JSON document and its version tag, or ``None`` when it does not exist."""
    found = store.get(key)
    return None if found is None else (json.loads(found.data), found.etag)


def write_json(store: ObjectStore, key: str, data: Any) -> str:
    """Create or replace a JSON document (keys sorted); returns its version tag."""
    return store.put(key, _dumps(data)).etag


def _dumps(data: Any) -> bytes:
    return json.dumps(data, sort_keys=True).encode()


def _join(*parts: str) -> str:
    return "/".join(p.strip("/") for p in parts if p.strip("/"))


# --------------------------------------------------------------------------------------------
# Two implementations


class MemoryObjectStore:
    """An :class:`ObjectStore` in this process's memory (for tests and ``memory://``-like targets).

    Version tags are a counter, so writing the same bytes twice still changes the tag. State
    lives on the instance.
    """

    def __init__(self) -> None:
        self._objects: dict[str, tuple[bytes, str]] = {}
        self._generation = 0
        self._lock = threading.Lock()

    def _write(self, key: str, data: bytes) -> Written:
        self._generation += 1
        etag = str(self._generation)
        self._objects[key] = (bytes(data), etag)
        return Written(key, etag)

    def get(self, key: str) -> StoredObject | None:
        with self._lock:
            found = self._objects.get(key)
        return None if found is None else StoredObject(key, found[0], found[1])

    def put(self, key: str, data: bytes) -> Written:
        with self._lock:
            return self._write(key, data)

    def put_if_absent(self, key: str, data: bytes) -> Written | PreconditionFailed:
        with self._lock:
            if key in self._objects:
                return PreconditionFailed(key)
            return self._write(key, data)

    def put_if_match(self, key: str, data: bytes, etag: str) -> Written | PreconditionFailed:
        with self._lock:
            found = self._objects.get(key)
            if found is None or found[1] != etag:
                return PreconditionFailed(key)
            return self._write(key, data)

    def list(self, prefix: str) -> list[str]:
        with self._lock:
            return sorted(k for k in self._objects if k.startswith(prefix))

    def delete(self, keys: Sequence[str]) -> None:
        with self._lock:
            for key in keys:
                self._objects.pop(key, None)


class FolderObjectStore:
    """An :class:`ObjectStore` in a local folder, safe across processes on one machine.

    Each key is a file under ``root``. Conditional writes hold an exclusive ``flock`` on
    ``root/.lock`` while they compare and rename, so two processes cannot both win. The version
    tag is the SHA-256 of the bytes (as S3's ETag is the MD5 of them).
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def _path(self, key: str) -> Path:
        parts = key.split("/")
        if not key or any(p in ("", ".", "..") for p in parts) or parts[0].startswith("."):
            raise ConfigError(f"object key {key!r} is not a relative path of plain names", field="key")
        return self.root.joinpath(*parts)

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a+b") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    @staticmethod
    def _etag(data: bytes) -> str:
        return hashlib.sha256(data).hexdigest()

    def _read(self, key: str) -> bytes | None:
        try:
            return self._path(key).read_bytes()
        except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
            return None

    def _write(self, key: str, data: bytes) -> Written:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".incoming-", dir=self.root)
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
        os.replace(tmp, path)  # readers see the old bytes or the new ones, never half
        return Written(key, self._etag(data))

    def get(self, key: str) -> StoredObject | None:
        data = self._read(key)
        return None if data is None else StoredObject(key, data, self._etag(data))

    def put(self, key: str, data: bytes) -> Written:
        with self._locked():
            return self._write(key, data)

    def put_if_absent(self, key: str, data: bytes) -> Written | PreconditionFailed:
        with self._locked():
            if self._read(key) is not None:
                return PreconditionFailed(key)
            return self._write(key, data)

    def put_if_match(self, key: str, data: bytes, etag: str) -> Written | PreconditionFailed:
        with self._locked():
            current = self._read(key)
            if current is None or self._etag(current) != etag:
                return PreconditionFailed(key)
            return self._write(key, data)

    def list(self, prefix: str) -> list[str]:
        if not self.root.is_dir():
            return []
        keys = (
            p.relative_to(self.root).as_posix()
            for p in self.root.rglob("*")
            if p.is_file() and not p.name.startswith(".")
        )
        return sorted(k for k in keys if k.startswith(prefix))

    def delete(self, keys: Sequence[str]) -> None:
        with self._locked():
            for key in keys:
                with contextlib.suppress(FileNotFoundError):
                    self._path(key).unlink()

    def upload_file(self, key: str, path: Path) -> None:
        """Copy a file in (atomically: a temporary copy renamed into place)."""
        dest = self._path(key)
        dest.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".incoming-", dir=self.root)
        os.close(fd)
        shutil.copyfile(path, tmp)
        os.replace(tmp, dest)

    def download_file(self, key: str, path: Path) -> None:
        """Copy a file out.

        Raises:
            NotFound: if it does not exist.
        """
        source = self._path(key)
        if not source.is_file():
            raise NotFound(f"object {key!r} does not exist in {self.root}")
        shutil.copyfile(source, path)


class PrefixedObjectStore:
    """A view of ``store`` under ``prefix``: keys are relative to it, in and out.

    One bucket holds several things a target keeps (journal, artifacts, monitoring); a part of
    core that owns one of them gets a view that cannot read or write beside it.
    """

    def __init__(self, store: ObjectStore, prefix: str) -> None:
        self.store = store
        self.prefix = prefix.strip("/")

    def _key(self, key: str) -> str:
        return _join(self.prefix, key)

    def _cut(self) -> int:
        return len(self.prefix) + 1 if self.prefix else 0

    def get(self, key: str) -> StoredObject | None:
        found = self.store.get(self._key(key))
        return None if found is None else StoredObject(key, found.data, found.etag)

    def put(self, key: str, data: bytes) -> Written:
        return Written(key, self.store.put(self._key(key), data).etag)

    def put_if_absent(self, key: str, data: bytes) -> Written | PreconditionFailed:
        done = self.store.put_if_absent(self._key(key), data)
        return Written(key, done.etag) if isinstance(done, Written) else PreconditionFailed(key)

    def put_if_match(self, key: str, data: bytes, etag: str) -> Written | PreconditionFailed:
        done = self.store.put_if_match(self._key(key), data, etag)
        return Written(key, done.etag) if isinstance(done, Written) else PreconditionFailed(key)

    def list(self, prefix: str) -> list[str]:
        # The prefix may end inside a name ("runs/a" lists "runs/a/..." and "runs/ab/..."),
        # so it is not joined with a "/" of its own.
        full = f"{self.prefix}/{prefix}" if self.prefix else prefix
        return [key[self._cut() :] for key in self.store.list(full)]

    def delete(self, keys: Sequence[str]) -> None:
        self.store.delete([self._key(k) for k in keys])


# --------------------------------------------------------------------------------------------
# The rollout journal


class RolloutJournal:
    """Rollout records as JSON objects: ``PREFIX/<endpoint>/<record id>.json``.

    Record ids are time-ordered, so the newest are the last keys.

    Args:
        store: Where the records live.
        prefix: The key prefix (``journal`` by default).
        before_write: Called with the endpoint's name before each write (a
            :meth:`LeaseLock.check`, so a process that lost its lease stops journaling).
    """

    def __init__(
        self,
        store: ObjectStore,
        prefix: str = "journal",
        *,
        before_write: Callable[[str], None] | None = None,
    ) -> None:
        self._store = store
        self._prefix = prefix
        self._before_write = before_write

    def prefix(self, endpoint: str) -> str:
        """The key prefix of one endpoint's records (ends with ``/``)."""
        return _join(self._prefix, endpoint) + "/"

    def record(self, record: RolloutRecord) -> None:
        """Create or replace the record ``record.id`` of ``record.endpoint``.

        Raises:
            LeaseLost: from ``before_write``, when this process no longer holds the endpoint.
        """
        if self._before_write is not None:
            self._before_write(record.endpoint)
        key = self.prefix(record.endpoint) + f"{record.id}.json"
        self._store.put(key, _dumps(record.model_dump(mode="json")))

    def records(self, endpoint: str, limit: int = 20) -> list[RolloutRecord]:
        """The endpoint's records, newest first."""
        keys = sorted(self._store.list(self.prefix(endpoint)), reverse=True)[:limit]
        out = []
        for key in keys:
            found = self._store.get(key)
            if found is not None:
                out.append(RolloutRecord.model_validate_json(found.data))
        return out

    def clear(self, endpoint: str) -> None:
        """Delete every record of the endpoint (when the endpoint itself is deleted)."""
        self._store.delete(self._store.list(self.prefix(endpoint)))


# --------------------------------------------------------------------------------------------
# The lease lock


@dataclass
class _Held:
    token: str
    owner: str
    etag: str
    expires_at: float
    lost: str | None = None


class LeaseLock:
    """Exclusive, expiring leases on names (endpoints): ``PREFIX/<name>.json``.

    A lease is taken with ``put_if_absent``; while held, a background thread renews it every
    third of ``ttl`` with ``put_if_match`` on its version tag. A lease whose holder died expires
    after ``ttl`` and is taken over with ``put_if_match`` (so two waiters cannot both take it).

    If renewing finds that someone else has taken the lease (or renewals kept failing until it
    expired), the lease is lost: :meth:`check` raises :class:`~mlshift.errors.LeaseLost` from
    then on, and so does the end of the ``with`` block, even when its body succeeded.

    Args:
        store: Where leases live.
        prefix: The key prefix (``locks`` by default).
        ttl: Seconds a lease lasts without renewal.
        provider: The target's name, for errors.
        clock: Wall-clock seconds (expiry is compared across machines).
    """

    def __init__(
        self,
        store: ObjectStore,
        prefix: str = "locks",
        *,
        ttl: float,
        provider: str | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if ttl <= 0:
            raise ConfigError(f"a lease must last longer than 0 s (got {ttl:g})", field="lease_seconds")
        self._store = store
        self._prefix = prefix
        self.ttl = ttl
        self._provider = provider
        self._clock = clock
        self._held: dict[str, _Held] = {}
        self._mutex = threading.Lock()

    def key(self, name: str) -> str:
        """The lease object's key."""
        return _join(self._prefix, f"{name}.json")

    def _body(self, name: str, held: _Held, expires_at: float) -> bytes:
        return _dumps({"endpoint": name, "owner": held.owner, "token": held.token, "expires_at": expires_at})

    def _acquire(self, name: str, owner: str, timeout: float) -> _Held:
        key = self.key(name)
        deadline = time.monotonic() + timeout
        held = _Held(token=secrets.token_hex(8), owner=owner, etag="", expires_at=0.0)
        holder: dict[str, Any] = {}
        while True:
            expires_at = self._clock() + self.ttl
            outcome: Written | PreconditionFailed = self._store.put_if_absent(
                key, self._body(name, held, expires_at)
            )
            if isinstance(outcome, PreconditionFailed):
                current = self._store.get(key)
                if current is None:
                    continue  # released between our write and our read
                holder = json.loads(current.data)
                if float(holder.get("expires_at", 0)) < self._clock():
                    logger.info("taking over the expired lease of %s from %s", name, holder.get("owner"))
                    outcome = self._store.put_if_match(key, self._body(name, held, expires_at), current.etag)
            if isinstance(outcome, Written):
                held.etag, held.expires_at = outcome.etag, expires_at
                return held
            left = deadline - time.monotonic()
            if left <= 0:
                expires = float(holder.get("expires_at", 0)) - self._clock()
                raise Conflict(
                    f"endpoint {name!r} is being changed by {holder.get('owner', 'someone else')} "
                    f"(its lock expires in {max(expires, 0):.0f}s unless renewed)",
                    provider=self._provider,
                    hint="wait for that change to finish, or raise --lock-timeout",
                )
            time.sleep(min(0.2, left))

    def _renew(self, name: str, held: _Held, stop: threading.Event) -> None:
        key = self.key(name)
        while not stop.wait(self.ttl / 3):
            expires_at = self._clock() + self.ttl
            try:
                outcome = self._store.put_if_match(key, self._body(name, held, expires_at), held.etag)
            except MlshiftError as exc:
                # A passing network or throttling error: the lease is still ours until it expires.
                if self._clock() < held.expires_at:
                    logger.warning("could not renew the lease of %s (will retry): %s", name, exc)
                    continue
                held.lost = f"it expired while renewals failed ({exc})"
            else:
                if isinstance(outcome, Written):
                    held.etag, held.expires_at = outcome.etag, expires_at
                    continue
                try:
                    current = self._store.get(key)
                    other = json.loads(current.data).get("owner", "someone else") if current else "nobody"
                except (MlshiftError, ValueError):
                    other = "someone else"
                held.lost = f"{other} holds it now"
            logger.error("lost the lease of endpoint %s: %s", name, held.lost)
            return

    def check(self, name: str) -> None:
        """Raise if this process held the lease on ``name`` and lost it.

        Raises:
            LeaseLost: naming the endpoint and who holds it now.
        """
        held = self._held.get(name)
        if held is not None and held.lost is not None:
            raise self._lost_error(name, held)

    def _lost_error(self, name: str, held: _Held) -> LeaseLost:
        return LeaseLost(
            f"lost the lock of endpoint {name!r} while changing it: {held.lost}; stopped before "
            "changing anything more",
            provider=self._provider,
            hint="the endpoint may be half-changed: run `mlshift plan` again once the other change ends",
        )

    @contextlib.contextmanager
    def hold(self, name: str, *, owner: str, timeout: float) -> Iterator[None]:
        """Hold the lease on ``name`` for a ``with`` block.

        Raises:
            Conflict: if ``timeout`` seconds pass while someone else holds it (naming them).
            LeaseLost: at the end of the block, if the lease was lost while it ran.
        """
        held = self._acquire(name, owner, timeout)
        with self._mutex:
            self._held[name] = held
        stop = threading.Event()
        renewer = threading.Thread(
            target=self._renew, args=(name, held, stop), name=f"mlshift-lease-{name}", daemon=True
        )
        renewer.start()
        failed = False
        try:
            yield
        except BaseException:
            failed = True
            raise
        finally:
            stop.set()
            renewer.join(timeout=10)
            with self._mutex:
                self._held.pop(name, None)
            if held.lost is None:
                current = self._store.get(self.key(name))
                if current is not None and json.loads(current.data).get("token") == held.token:
                    self._store.delete([self.key(name)])
            elif not failed:
                raise self._lost_error(name, held)


# --------------------------------------------------------------------------------------------
# Content-addressed artifacts and version cards


@dataclass(frozen=True)
class StoredArtifact:
    """An artifact in an object store.

    Attributes:
        digest: Its ``sha256:<hex>`` digest.
        files_prefix: The key prefix of its files (ends with ``/``): what a cloud model mounts.
        entry: The file's name for a single-file artifact, ``""`` for a directory.
        size: Total bytes.
    """

    digest: str
    files_prefix: str
    entry: str
    size: int


class ArtifactStore:
    """Artifacts stored once per digest, uncompressed, and content-addressed version cards.

    Layout under ``prefix``::

        artifacts/sha256/<hex>/files/...       the artifact's files
        artifacts/sha256/<hex>/manifest.json   written last: its presence means "complete"
        cards/<sha256 of the card>.json        a version's signature, metrics, tags

    Args:
        store: Where they live (a :class:`FileTransfer` store moves files itself).
        prefix: The key prefix (``""``: the store's root).
    """

    def __init__(self, store: ObjectStore, prefix: str = "") -> None:
        self._store = store
        self._prefix = prefix

    def key(self, digest: str, *parts: str) -> str:
        """A key under one artifact's folder."""
        algo, _, hexdigest = digest.partition(":")
        return _join(self._prefix, "artifacts", algo, hexdigest, *parts)

    def _manifest(self, digest: str) -> dict[str, Any] | None:
        found = self._store.get(self.key(digest, "manifest.json"))
        return None if found is None else dict(json.loads(found.data))

    def _stored(self, digest: str, manifest: dict[str, Any]) -> StoredArtifact:
        return StoredArtifact(
            digest=digest,
            files_prefix=self.key(digest, "files") + "/",
            entry=str(manifest.get("entry", "")),
            size=int(manifest.get("size", 0)),
        )

    def stored(self, digest: str) -> StoredArtifact | None:
        """The artifact, if it is stored completely."""
        manifest = self._manifest(digest)
        return None if manifest is None else self._stored(digest, manifest)

    def put(self, artifact: Artifact) -> StoredArtifact:
        """Store an artifact unless its digest is stored already (then nothing is written).

        Raises:
            ConfigError: the artifact is (or holds) a symbolic link out of its folder, a broken
                link or a special file, or is over the size limit; nothing is stored then.
        """
        manifest = self._manifest(artifact.digest)
        if manifest is not None:
            return self._stored(artifact.digest, manifest)
        path = artifact.path
        # What registration checked, checked again before a byte leaves the machine: the folder
        # may have changed since (a predictor's load() runs in between, to infer the signature),
        # and a link out of it would upload whatever it points to. The local store checks the
        # digest of its copy for the same reason.
        scan_artifact(path)
        if path.is_dir():
            files = sorted(f for f in path.rglob("*") if f.is_file() and "__pycache__" not in f.parts)
            entries = [(f, f.relative_to(path).as_posix()) for f in files]
        else:
            entries = [(path, path.name)]
        total = 0
        for file, rel in entries:
            total += file.stat().st_size
            key = self.key(artifact.digest, "files", rel)
            if isinstance(self._store, FileTransfer):
                self._store.upload_file(key, file)
            else:
                self._store.put(key, file.read_bytes())
        manifest = {
            "digest": artifact.digest,
            "kind": "dir" if path.is_dir() else "file",
            "entry": "" if path.is_dir() else path.name,
            "files": [{"path": rel, "size": f.stat().st_size} for f, rel in entries],
            "size": total,
        }
        # Written last: a manifest is the promise that every file above it is complete. Two
        # processes storing the same bytes write the same manifest, so either may win.
        self._store.put_if_absent(self.key(artifact.digest, "manifest.json"), _dumps(manifest))
        return self._stored(artifact.digest, manifest)

    def fetch(self, digest: str, cache: Path) -> Path:
        """A local copy of an artifact, downloaded once into ``cache`` and verified every time.

        Raises:
            IntegrityError: the local copy or the stored bytes do not match ``digest``; a bad
                local copy is removed, so the next call downloads it again.
            NotFound: the artifact is not stored.
        """
        from mlshift._artifacts import verify_digest

        hexdigest = digest.partition(":")[2]
        folder = cache / hexdigest
        marker = folder / "manifest.json"
        if not marker.exists():
            manifest = self._manifest(digest)
            if manifest is None:
                raise NotFound(
                    f"artifact {digest} is not stored (no {self.key(digest, 'manifest.json')})",
                    hint="register the model again to upload it",
                )
            cache.mkdir(parents=True, exist_ok=True)
            tmp = cache / f".{hexdigest}.{secrets.token_hex(4)}"
            root = tmp / ("tree" if manifest["kind"] == "dir" else "file")
            for item in manifest["files"]:
                dest = root / item["path"]
                dest.parent.mkdir(parents=True, exist_ok=True)
                key = self.key(digest, "files", item["path"])
                if isinstance(self._store, FileTransfer):
                    self._store.download_file(key, dest)
                else:
                    found = self._store.get(key)
                    if found is None:
                        raise IntegrityError(f"artifact {digest} is missing its file {item['path']!r}")
                    dest.write_bytes(found.data)
            (tmp / "manifest.json").write_text(json.dumps(manifest))
            try:
                tmp.rename(folder)
            except OSError:  # another thread or process got there first
                shutil.rmtree(tmp, ignore_errors=True)
        manifest = json.loads(marker.read_text())
        path = folder / "tree" if manifest["kind"] == "dir" else folder / "file" / manifest["entry"]
        try:
            verify_digest(path, digest)
        except IntegrityError:
            # Keep refusing this copy, but do not keep it: the next call fetches clean bytes.
            shutil.rmtree(folder, ignore_errors=True)
            raise
        return path

    def put_card(self, card: dict[str, Any]) -> str:
        """Store a version card (content-addressed, written once); returns its key."""
        body = _dumps(card)
        key = _join(self._prefix, "cards", hashlib.sha256(body).hexdigest() + ".json")
        if self._store.get(key) is None:  # stored already: nothing is sent again
            self._store.put_if_absent(key, body)
        return key

    def get_card(self, key: str) -> dict[str, Any]:
        """A card by its key (``{}`` if it is missing)."""
        found = self._store.get(key)
        return {} if found is None else dict(json.loads(found.data))
