"""What the SageMaker target keeps in S3: artifacts, version cards, the journal, endpoint locks.

Layout under ``s3://BUCKET/PREFIX/``::

    artifacts/sha256/<hex>/files/...          the artifact's bytes, uncompressed (content-addressed)
    artifacts/sha256/<hex>/manifest.json      written last: its presence means "complete"
    cards/<sha256 of the card>.json           a version's signature, metrics, tags (content-addressed)
    endpoints/<name>/options.json             provider_options.sagemaker the endpoint was deployed with
    journal/<endpoint>/<record id>.json       the rollout journal (RolloutRecord as JSON)
    locks/<endpoint>.json                     a lease: owner + expiry, taken with conditional writes

Artifacts are stored uncompressed under a key prefix so that a SageMaker model can mount them
directly (``S3DataType=S3Prefix, CompressionType=None``) and an unchanged artifact is found by
one ``HeadObject`` and never uploaded again.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import secrets
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlshift.adapter import Artifact
from mlshift.errors import Conflict, IntegrityError
from mlshift_sagemaker.errors import aws_errors, error_code

if TYPE_CHECKING:
    from mlshift_sagemaker._aws import AwsClients
    from mlshift_sagemaker.options import SageMakerOptions

__all__ = ["S3Store", "StoredArtifact"]

logger = logging.getLogger("mlshift.sagemaker")

_MISSING = frozenset({"NoSuchKey", "404", "NotFound", "NoSuchBucket"})
_LOST_RACE = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "409"})


@dataclass(frozen=True)
class StoredArtifact:
    """An artifact in S3.

    Attributes:
        prefix_uri: ``s3://bucket/.../files/``: what a SageMaker model mounts at ``/opt/ml/model``.
        entry: The file's name for a single-file artifact, ``""`` for a directory.
        size: Total bytes.
    """

    prefix_uri: str
    entry: str
    size: int

    @property
    def uri(self) -> str:
        """The artifact itself: the file, or the directory prefix."""
        return self.prefix_uri + self.entry


class _Progress:
    """Logs upload progress of one big file every 10%."""

    def __init__(self, name: str, total: int) -> None:
        self._name, self._total, self._sent, self._next = name, max(total, 1), 0, 10
        self._lock = threading.Lock()

    def __call__(self, sent: int) -> None:
        with self._lock:  # s3transfer calls this from its worker threads
            self._sent += sent
            percent = self._sent * 100 // self._total
            if percent >= self._next:
                logger.info("uploading %s: %d%%", self._name, percent)
                self._next = (percent // 10 + 1) * 10


class S3Store:
    """The target's bucket, seen as artifacts, JSON documents and leases."""

    def __init__(self, clients: AwsClients, options: SageMakerOptions) -> None:
        self._clients = clients
        self._options = options
        self._bucket_ready = False
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- basics

    @property
    def bucket(self) -> str:
        """The bucket: the ``bucket`` option, else SageMaker's default ``sagemaker-REGION-ACCOUNT``."""
        return self._options.bucket or f"sagemaker-{self._clients.region}-{self._clients.account_id}"

    def key(self, *parts: str) -> str:
        """A key under the target's prefix."""
        return "/".join([self._options.prefix, *parts])

    def uri(self, key: str) -> str:
        return f"s3://{self.bucket}/{key}"

    @property
    def _s3(self) -> Any:
        return self._clients.client("s3")

    def _encryption(self) -> dict[str, str]:
        if self._options.kms_key_id:
            return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self._options.kms_key_id}
        return {}

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (once per adapter; only before a write)."""
        with self._lock:
            if self._bucket_ready:
                return
            bucket = self.bucket
            try:
                self._s3.head_bucket(Bucket=bucket)
            except Exception as exc:
                if error_code(exc) not in _MISSING:
                    with aws_errors(f"check bucket {bucket!r}"):
                        raise
                kwargs: dict[str, Any] = {"Bucket": bucket}
                if self._clients.region != "us-east-1":
                    kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self._clients.region}
                with aws_errors(f"create bucket {bucket!r}"):
                    self._s3.create_bucket(**kwargs)
                logger.info("created bucket %s", bucket)
            self._bucket_ready = True

    def exists(self, key: str) -> bool:
        """Whether an object exists (a missing bucket counts as missing)."""
        try:
            self._s3.head_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if error_code(exc) in _MISSING:
                return False
            with aws_errors(f"read s3://{self.bucket}/{key}"):
                raise
        return True

    def put_json(
        self, key: str, data: Any, *, if_none_match: bool = False, if_match: str | None = None
    ) -> str:
        """Write a JSON document; returns its ETag.

        Raises:
            Conflict: a condition did not hold (``if_none_match``: it exists; ``if_match``: it changed).
        """
        self.ensure_bucket()
        kwargs: dict[str, Any] = {
            "Bucket": self.bucket,
            "Key": key,
            "Body": json.dumps(data, sort_keys=True).encode(),
            "ContentType": "application/json",
            **self._encryption(),
        }
        if if_none_match:
            kwargs["IfNoneMatch"] = "*"
        if if_match is not None:
            kwargs["IfMatch"] = if_match
        with aws_errors(f"write s3://{self.bucket}/{key}"):
            etag: str = self._s3.put_object(**kwargs)["ETag"]
        return etag

    def get_json(self, key: str) -> tuple[Any, str] | None:
        """A JSON document and its ETag, or ``None`` when it does not exist."""
        try:
            response = self._s3.get_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if error_code(exc) in _MISSING:
                return None
            with aws_errors(f"read s3://{self.bucket}/{key}"):
                raise
        with aws_errors(f"read s3://{self.bucket}/{key}"):
            body = response["Body"].read()
        return json.loads(body), str(response["ETag"])

    def list_keys(self, prefix: str) -> list[str]:
        """Every key under ``prefix`` (empty when the bucket does not exist yet)."""
        keys: list[str] = []
        try:
            pages = self._s3.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=prefix)
            for page in pages:
                keys.extend(item["Key"] for item in page.get("Contents", []))
        except Exception as exc:
            if error_code(exc) in _MISSING:
                return []
            with aws_errors(f"list s3://{self.bucket}/{prefix}"):
                raise
        return keys

    def delete(self, keys: list[str]) -> None:
        """Delete objects (missing ones are fine)."""
        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]
            with aws_errors(f"delete {len(batch)} objects in s3://{self.bucket}"):
                self._s3.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
                )

    # ---------------------------------------------------------------- artifacts

    def _artifact_key(self, digest: str, *parts: str) -> str:
        return self.key("artifacts", "sha256", digest.split(":", 1)[1], *parts)

    def put_artifact(self, artifact: Artifact) -> StoredArtifact:
        """Upload an artifact unless its digest is stored already (then nothing is sent).

        Big files go up in parallel parts through boto3's transfer manager; progress is logged
        on the ``mlshift.sagemaker`` logger.
        """
        manifest_key = self._artifact_key(artifact.digest, "manifest.json")
        found = self.get_json(manifest_key)
        if found is not None:
            return self._stored(artifact.digest, found[0])
        from boto3.s3.transfer import TransferConfig

        mb = 1024 * 1024
        config = TransferConfig(
            multipart_threshold=self._options.multipart_threshold_mb * mb,
            multipart_chunksize=max(8 * mb, self._options.multipart_threshold_mb * mb // 4),
            max_concurrency=8,
        )
        path = artifact.path
        if path.is_dir():
            files = sorted(f for f in path.rglob("*") if f.is_file() and "__pycache__" not in f.parts)
            entries = [(f, f.relative_to(path).as_posix()) for f in files]
        else:
            entries = [(path, path.name)]
        self.ensure_bucket()
        total = 0
        for file, rel in entries:
            size = file.stat().st_size
            total += size
            callback = _Progress(rel, size) if size >= config.multipart_threshold else None
            with aws_errors(f"upload {file} to s3://{self.bucket}"):
                self._s3.upload_file(
                    str(file),
                    self.bucket,
                    self._artifact_key(artifact.digest, "files", rel),
                    ExtraArgs=self._encryption() or None,
                    Config=config,
                    Callback=callback,
                )
        manifest = {
            "digest": artifact.digest,
            "kind": "dir" if path.is_dir() else "file",
            "entry": "" if path.is_dir() else path.name,
            "files": [{"path": rel, "size": f.stat().st_size} for f, rel in entries],
            "size": total,
        }
        # Written last: a manifest is the promise that every file above it is complete.
        self.put_json(manifest_key, manifest)
        return self._stored(artifact.digest, manifest)

    def _stored(self, digest: str, manifest: dict[str, Any]) -> StoredArtifact:
        return StoredArtifact(
            prefix_uri=self.uri(self._artifact_key(digest, "files")) + "/",
            entry=str(manifest.get("entry", "")),
            size=int(manifest.get("size", 0)),
        )

    def fetch_artifact(self, digest: str, cache: Path) -> Path:
        """A local copy of an artifact, downloaded once into ``cache`` and verified every time.

        Raises:
            IntegrityError: the local copy or the stored bytes do not match ``digest``; a bad
                local copy is removed, so the next call downloads it again.
            NotFound: the artifact is not in the bucket.
        """
        from mlshift.artifacts import verify_digest

        hexdigest = digest.split(":", 1)[1]
        folder = cache / hexdigest
        marker = folder / "manifest.json"
        if not marker.exists():
            found = self.get_json(self._artifact_key(digest, "manifest.json"))
            if found is None:
                from mlshift.errors import NotFound

                raise NotFound(
                    f"artifact {digest} is not stored in s3://{self.bucket}/{self.key('artifacts')}",
                    provider="sagemaker",
                    hint="register the model again to upload it",
                )
            manifest = found[0]
            tmp = cache / f".{hexdigest}.{secrets.token_hex(4)}"
            root = tmp / ("tree" if manifest["kind"] == "dir" else "file")
            for item in manifest["files"]:
                dest = root / item["path"]
                dest.parent.mkdir(parents=True, exist_ok=True)
                with aws_errors(f"download artifact {digest}"):
                    self._s3.download_file(
                        self.bucket, self._artifact_key(digest, "files", item["path"]), str(dest)
                    )
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

    # ---------------------------------------------------------------- cards

    def put_card(self, card: dict[str, Any]) -> str:
        """Store a version card (content-addressed); returns its ``s3://`` URI."""
        body = json.dumps(card, sort_keys=True)
        key = self.key("cards", hashlib.sha256(body.encode()).hexdigest() + ".json")
        if not self.exists(key):
            self.put_json(key, card)
        return self.uri(key)

    def get_card(self, uri: str) -> dict[str, Any]:
        """A card by its URI (``{}`` if it is missing)."""
        key = uri.removeprefix(f"s3://{self.bucket}/")
        found = self.get_json(key)
        return dict(found[0]) if found is not None else {}

    # ---------------------------------------------------------------- leases

    @contextlib.contextmanager
    def lease(self, name: str, *, owner: str, timeout: float, ttl: float) -> Iterator[None]:
        """Hold ``locks/<name>.json`` for the duration of a ``with`` block.

        The lease is taken with a conditional write (``If-None-Match: *``), renewed in the
        background every third of ``ttl`` with ``If-Match`` on its ETag, and released on exit.
        A lease whose holder died expires after ``ttl`` and is then taken over (again with
        ``If-Match``, so two waiters cannot both take it).

        Raises:
            Conflict: if ``timeout`` seconds pass while someone else holds it, naming them.
        """
        key = self.key("locks", f"{name}.json")
        token = secrets.token_hex(8)
        deadline = time.monotonic() + timeout
        holder: dict[str, Any] = {}
        etag: str | None = None
        while etag is None:
            body = {"endpoint": name, "owner": owner, "token": token, "expires_at": time.time() + ttl}
            etag = self._try_put(key, body, if_none_match=True)
            if etag is None:
                current = self.get_json(key)
                if current is None:
                    continue  # released between our write and our read
                holder, current_etag = current
                if float(holder.get("expires_at", 0)) < time.time():
                    logger.info("taking over the expired lock of %s from %s", name, holder.get("owner"))
                    etag = self._try_put(key, body, if_match=current_etag)
            if etag is None:
                left = deadline - time.monotonic()
                if left <= 0:
                    expires = float(holder.get("expires_at", 0)) - time.time()
                    raise Conflict(
                        f"endpoint {name!r} is being changed by {holder.get('owner', 'someone else')} "
                        f"(its lock expires in {max(expires, 0):.0f}s unless renewed)",
                        provider="sagemaker",
                        hint="wait for that change to finish, or raise --lock-timeout",
                    )
                time.sleep(min(0.2, left))
        state = {"etag": etag}
        stop = threading.Event()

        def renew() -> None:
            while not stop.wait(ttl / 3):
                body = {"endpoint": name, "owner": owner, "token": token, "expires_at": time.time() + ttl}
                new = self._try_put(key, body, if_match=state["etag"])
                if new is None:
                    logger.warning("lost the lock of endpoint %s", name)
                    return
                state["etag"] = new

        renewer = threading.Thread(target=renew, name=f"mlshift-lease-{name}", daemon=True)
        renewer.start()
        try:
            yield
        finally:
            stop.set()
            renewer.join(timeout=10)
            current = self.get_json(key)
            if current is not None and current[0].get("token") == token:
                self.delete([key])

    def _try_put(
        self, key: str, body: dict[str, Any], *, if_none_match: bool = False, if_match: str | None = None
    ) -> str | None:
        """A conditional write; ``None`` when the condition did not hold."""
        try:
            return self.put_json(key, body, if_none_match=if_none_match, if_match=if_match)
        except Conflict as exc:
            if error_code(getattr(exc, "orig", None) or exc) in _LOST_RACE:
                return None
            raise
