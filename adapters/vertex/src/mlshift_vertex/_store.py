"""The staging bucket as mlshift uses it: an ``ObjectStore`` over the GCS JSON API.

Layout under ``gs://BUCKET/PREFIX/`` (the journal, leases, artifacts and cards are core's,
:mod:`mlshift.storage`)::

    artifacts/sha256/<hex>/files/...     an artifact's files (a model's artifact_uri points here)
    artifacts/sha256/<hex>/manifest.json written last: the artifact is complete
    cards/<sha256>.json                  a version's signature, metrics and tags
    journal/<endpoint>/<record id>.json  the rollout journal
    locks/<endpoint>.json                endpoint leases
    monitoring/...                       baselines, monitors, their state and run reports
                                         (core's mlshift.monitoring, through VertexAdapter.monitoring_store)

Conditional writes use GCS generations: ``ifGenerationMatch=0`` creates only if absent,
``ifGenerationMatch=N`` replaces only generation N; a lost condition is HTTP 412.
"""

from __future__ import annotations

import builtins
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from mlshift.storage import (
    ArtifactStore,
    LeaseLock,
    PreconditionFailed,
    RolloutJournal,
    StoredObject,
    Written,
)
from mlshift_vertex.errors import google_errors

if TYPE_CHECKING:
    from mlshift_vertex._gcp import GoogleClients
    from mlshift_vertex.options import VertexOptions

__all__ = ["GcsObjectStore"]

_CHUNK = 1 << 20


class GcsObjectStore:
    """The target's staging bucket: keys relative to the bucket, files streamed both ways.

    Attributes:
        journal: The rollout journal under ``PREFIX/journal``.
        leases: Endpoint leases under ``PREFIX/locks``; a lost lease stops journaling.
        artifacts: Artifacts and version cards under ``PREFIX``.
    """

    def __init__(self, clients: GoogleClients, options: VertexOptions) -> None:
        self._clients = clients
        self.bucket = options.bucket
        self.prefix = options.prefix
        self.leases = LeaseLock(self, self.key("locks"), ttl=options.lease_seconds, provider="vertex")
        self.journal = RolloutJournal(self, self.key("journal"), before_write=self.leases.check)
        self.artifacts = ArtifactStore(self, self.prefix)

    def key(self, *parts: str) -> str:
        """A key under the target's prefix."""
        return "/".join(p for p in (self.prefix, *parts) if p)

    def uri(self, key: str) -> str:
        """``gs://BUCKET/KEY``."""
        return f"gs://{self.bucket}/{key}"

    # ---------------------------------------------------------------- HTTP

    def _object_url(self, key: str) -> str:
        base = self._clients.storage_endpoint
        return f"{base}/storage/v1/b/{self.bucket}/o/{quote(key, safe='')}"

    def _request(self, method: str, url: str, what: str, *, ok: tuple[int, ...] = (), **kwargs: Any) -> Any:
        from google.api_core import exceptions

        session = self._clients.client("session")
        with google_errors(what):
            response = session.request(method, url, timeout=120, **kwargs)
            if response.status_code >= 400 and response.status_code not in ok:
                raise exceptions.from_http_response(response)  # type: ignore[no-untyped-call]
        return response

    def _upload(self, key: str, data: Any, generation: str | None) -> Written | PreconditionFailed:
        params: dict[str, str] = {"uploadType": "media", "name": key}
        if generation is not None:
            params["ifGenerationMatch"] = generation
        url = f"{self._clients.storage_endpoint}/upload/storage/v1/b/{self.bucket}/o"
        response = self._request(
            "POST",
            url,
            f"write gs://{self.bucket}/{key}",
            ok=(412,),
            params=params,
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        if response.status_code == 412:
            return PreconditionFailed(key)
        return Written(key, str(response.json()["generation"]))

    # ---------------------------------------------------------------- ObjectStore

    def get(self, key: str) -> StoredObject | None:
        response = self._request(
            "GET", self._object_url(key), f"read gs://{self.bucket}/{key}", ok=(404,), params={"alt": "media"}
        )
        if response.status_code == 404:
            return None
        return StoredObject(key, response.content, response.headers.get("x-goog-generation", ""))

    def put(self, key: str, data: bytes) -> Written:
        written = self._upload(key, data, None)
        assert isinstance(written, Written)  # an unconditional write cannot lose a condition
        return written

    def put_if_absent(self, key: str, data: bytes) -> Written | PreconditionFailed:
        return self._upload(key, data, "0")

    def put_if_match(self, key: str, data: bytes, etag: str) -> Written | PreconditionFailed:
        return self._upload(key, data, etag)

    def list(self, prefix: str) -> builtins.list[str]:
        keys: builtins.list[str] = []
        params = {"prefix": prefix, "fields": "items(name),nextPageToken"}
        url = f"{self._clients.storage_endpoint}/storage/v1/b/{self.bucket}/o"
        while True:
            page = self._request("GET", url, f"list gs://{self.bucket}/{prefix}", params=params).json()
            keys.extend(item["name"] for item in page.get("items", []))
            token = page.get("nextPageToken")
            if not token:
                return sorted(keys)
            params = {**params, "pageToken": token}

    def delete(self, keys: Sequence[str]) -> None:
        for key in keys:
            self._request("DELETE", self._object_url(key), f"delete gs://{self.bucket}/{key}", ok=(404,))

    # ---------------------------------------------------------------- FileTransfer

    def upload_file(self, key: str, path: Path) -> None:
        """Stream a file into the bucket (big artifacts never sit in memory)."""
        with path.open("rb") as fh:
            self._upload(key, fh, None)

    def download_file(self, key: str, path: Path) -> None:
        """Stream an object into a file."""
        response = self._request(
            "GET",
            self._object_url(key),
            f"read gs://{self.bucket}/{key}",
            params={"alt": "media"},
            stream=True,
        )
        with path.open("wb") as fh:
            for chunk in response.iter_content(_CHUNK):
                fh.write(chunk)
