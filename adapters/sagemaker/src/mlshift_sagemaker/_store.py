"""The target's S3 bucket as an :class:`mlshift.storage.ObjectStore`, and what core builds on it.

Layout under ``s3://BUCKET/PREFIX/`` (the journal, leases, artifacts and cards are core's,
:mod:`mlshift.storage`)::

    artifacts/sha256/<hex>/files/...          the artifact's bytes, uncompressed (content-addressed)
    artifacts/sha256/<hex>/manifest.json      written last: its presence means "complete"
    cards/<sha256 of the card>.json           a version's signature, metrics, tags (content-addressed)
    endpoints/<name>/options.json             provider_options.sagemaker the endpoint was deployed with
    journal/<endpoint>/<record id>.json       the rollout journal (RolloutRecord as JSON)
    locks/<endpoint>.json                     a lease: owner + expiry, taken with conditional writes

Artifacts are stored uncompressed under a key prefix so that a SageMaker model can mount them
directly (``S3DataType=S3Prefix, CompressionType=None``) and an unchanged artifact is found by
one ``GetObject`` of its manifest and never uploaded again. Conditional writes are S3's
``If-None-Match: *`` and ``If-Match: ETAG`` on ``PutObject``.
"""

from __future__ import annotations

import builtins
import json
import logging
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlshift.storage import (
    ArtifactStore,
    LeaseLock,
    PreconditionFailed,
    RolloutJournal,
    StoredObject,
    Written,
)
from mlshift_sagemaker.errors import aws_errors, error_code

if TYPE_CHECKING:
    from mlshift_sagemaker._aws import AwsClients
    from mlshift_sagemaker.options import SageMakerOptions

__all__ = ["S3ObjectStore"]

logger = logging.getLogger("mlshift.sagemaker")

_MISSING = frozenset({"NoSuchKey", "404", "NotFound", "NoSuchBucket"})
_LOST_RACE = frozenset({"PreconditionFailed", "412", "ConditionalRequestConflict", "409"})


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


class S3ObjectStore:
    """The target's bucket: an ``ObjectStore`` (keys relative to the bucket) with big-file transfers.

    Attributes:
        journal: The rollout journal under ``PREFIX/journal``.
        leases: Endpoint leases under ``PREFIX/locks``; a lost lease stops journaling.
        artifacts: Artifacts and version cards under ``PREFIX``.
    """

    def __init__(self, clients: AwsClients, options: SageMakerOptions) -> None:
        self._clients = clients
        self._options = options
        self._bucket_ready = False
        self._lock = threading.Lock()
        self.leases = LeaseLock(self, self.key("locks"), ttl=options.lease_seconds, provider="sagemaker")
        self.journal = RolloutJournal(self, self.key("journal"), before_write=self.leases.check)
        self.artifacts = ArtifactStore(self, options.prefix)

    # ---------------------------------------------------------------- basics

    @property
    def bucket(self) -> str:
        """The bucket: the ``bucket`` option, else SageMaker's default ``sagemaker-REGION-ACCOUNT``."""
        return self._options.bucket or f"sagemaker-{self._clients.region}-{self._clients.account_id}"

    def key(self, *parts: str) -> str:
        """A key under the target's prefix."""
        return "/".join([self._options.prefix, *parts])

    def uri(self, key: str) -> str:
        """``s3://BUCKET/KEY``."""
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

    # ---------------------------------------------------------------- ObjectStore

    def get(self, key: str) -> StoredObject | None:
        """The object, or ``None`` (a missing bucket counts as empty)."""
        try:
            response = self._s3.get_object(Bucket=self.bucket, Key=key)
        except Exception as exc:
            if error_code(exc) in _MISSING:
                return None
            with aws_errors(f"read s3://{self.bucket}/{key}"):
                raise
        with aws_errors(f"read s3://{self.bucket}/{key}"):
            body = response["Body"].read()
        return StoredObject(key, body, str(response["ETag"]))

    def _put(self, key: str, data: bytes, **condition: str) -> Written | PreconditionFailed:
        self.ensure_bucket()
        try:
            with aws_errors(f"write s3://{self.bucket}/{key}"):
                response = self._s3.put_object(
                    Bucket=self.bucket, Key=key, Body=data, **condition, **self._encryption()
                )
        except Exception as exc:
            code = error_code(getattr(exc, "orig", None) or exc)
            # S3 answers If-Match on a missing key with 404 NoSuchKey: the condition failed too.
            if condition and (code in _LOST_RACE or ("IfMatch" in condition and code in _MISSING)):
                return PreconditionFailed(key)
            raise
        return Written(key, str(response["ETag"]))

    def put(self, key: str, data: bytes) -> Written:
        """Create or replace the object."""
        written = self._put(key, data)
        assert isinstance(written, Written)
        return written

    def put_if_absent(self, key: str, data: bytes) -> Written | PreconditionFailed:
        """``PutObject`` with ``If-None-Match: *``."""
        return self._put(key, data, IfNoneMatch="*")

    def put_if_match(self, key: str, data: bytes, etag: str) -> Written | PreconditionFailed:
        """``PutObject`` with ``If-Match: ETAG``."""
        return self._put(key, data, IfMatch=etag)

    def list(self, prefix: str) -> list[str]:
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
        return sorted(keys)

    def delete(self, keys: Sequence[str]) -> None:
        """Delete objects, a thousand per request (missing ones are fine)."""
        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]
            with aws_errors(f"delete {len(batch)} objects in s3://{self.bucket}"):
                self._s3.delete_objects(
                    Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in batch], "Quiet": True}
                )

    def upload_file(self, key: str, path: Path) -> None:
        """Upload through boto3's transfer manager: big files in parallel parts, progress logged."""
        from boto3.s3.transfer import TransferConfig

        mb = 1024 * 1024
        config = TransferConfig(
            multipart_threshold=self._options.multipart_threshold_mb * mb,
            multipart_chunksize=max(8 * mb, self._options.multipart_threshold_mb * mb // 4),
            max_concurrency=8,
        )
        size = path.stat().st_size
        self.ensure_bucket()
        with aws_errors(f"upload {path} to s3://{self.bucket}"):
            self._s3.upload_file(
                str(path),
                self.bucket,
                key,
                ExtraArgs=self._encryption() or None,
                Config=config,
                Callback=_Progress(path.name, size) if size >= config.multipart_threshold else None,
            )

    def download_file(self, key: str, path: Path) -> None:
        """Download through boto3's transfer manager."""
        with aws_errors(f"download s3://{self.bucket}/{key}"):
            self._s3.download_file(self.bucket, key, str(path))

    # ---------------------------------------------------------------- JSON documents

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

    def put_json(self, key: str, data: Any) -> str:
        """Create or replace a JSON document; returns its ETag."""
        return self.put(key, json.dumps(data, sort_keys=True).encode()).etag

    def get_json(self, key: str) -> tuple[Any, str] | None:
        """A JSON document and its ETag, or ``None`` when it does not exist."""
        found = self.get(key)
        return None if found is None else (json.loads(found.data), found.etag)

    def list_keys(self, prefix: str) -> builtins.list[str]:
        """Every key under ``prefix`` (same as :meth:`list`)."""
        return self.list(prefix)
