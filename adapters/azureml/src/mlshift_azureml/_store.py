"""The workspace datastore as mlshift uses it: an :class:`mlshift.storage.ObjectStore` on Azure Blob.

Conditional writes are Blob Storage's ETags (``If-None-Match: *`` to create, ``If-Match`` to
replace), which is all core's journal, lease lock and artifact store need. The container is the
datastore's (``workspaceblobstore`` by default), reached with the target's own credential: the
identity needs *Storage Blob Data Contributor* on the storage account (account keys are never
fetched).
"""

from __future__ import annotations

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
from mlshift_azureml.errors import azure_errors

if TYPE_CHECKING:
    from mlshift_azureml._adapter import AzureMLAdapter

__all__ = ["BlobObjectStore"]


class BlobObjectStore:
    """Keys relative to the datastore's container, under the target's ``prefix``.

    Attributes:
        journal: The rollout journal under ``PREFIX/journal``.
        leases: Endpoint leases under ``PREFIX/locks``; a lost lease stops journaling.
        artifacts: Artifacts and version cards under ``PREFIX``.
    """

    def __init__(self, adapter: AzureMLAdapter, datastore: str | None = None) -> None:
        self._adapter = adapter
        #: The datastore whose container this is (the target's ``datastore`` option by default).
        self.datastore = datastore or adapter.options.datastore
        self._container: Any = None
        self._datastore: tuple[str, str] | None = None
        self._lock = threading.Lock()
        options = adapter.options
        self.leases = LeaseLock(
            self, f"{options.prefix}/locks", ttl=options.lease_seconds, provider="azureml"
        )
        self.journal = RolloutJournal(self, f"{options.prefix}/journal", before_write=self.leases.check)
        self.artifacts = ArtifactStore(self, options.prefix)

    def _client(self) -> Any:
        with self._lock:
            if self._container is None:
                name = self.datastore
                with azure_errors(f"read datastore {name!r}"):
                    datastore = self._adapter.clients.ml().datastores.get(name)
                account = datastore.account_name
                protocol = getattr(datastore, "protocol", None) or "https"
                suffix = getattr(datastore, "endpoint", None) or "core.windows.net"
                self._datastore = (name, datastore.container_name)
                self._container = self._adapter.clients.container(
                    f"{protocol}://{account}.blob.{suffix}", datastore.container_name
                )
            return self._container

    def uri(self, key: str) -> str:
        """The ``azureml://datastores/NAME/paths/KEY`` URI a model asset points at."""
        return f"azureml://datastores/{self.datastore}/paths/{key}"

    def get(self, key: str) -> StoredObject | None:
        from azure.core.exceptions import ResourceNotFoundError

        try:
            with azure_errors(f"read blob {key!r}"):
                downloader = self._client().download_blob(key)
                data = downloader.readall()
        except Exception as exc:
            if isinstance(getattr(exc, "orig", None), ResourceNotFoundError):
                return None
            raise
        return StoredObject(key=key, data=bytes(data), etag=str(downloader.properties.etag))

    def _upload(self, key: str, data: bytes, **conditions: Any) -> Written | PreconditionFailed:
        from azure.core.exceptions import ResourceExistsError, ResourceModifiedError, ResourceNotFoundError

        try:
            with azure_errors(f"write blob {key!r}"):
                result = self._client().get_blob_client(key).upload_blob(data, **conditions)
        except Exception as exc:
            if isinstance(
                getattr(exc, "orig", None),
                (ResourceExistsError, ResourceModifiedError, ResourceNotFoundError),
            ):
                return PreconditionFailed(key=key)
            raise
        return Written(key=key, etag=str(result["etag"]))

    def put(self, key: str, data: bytes) -> Written:
        written = self._upload(key, data, overwrite=True)
        assert isinstance(written, Written)  # an unconditional write has no precondition
        return written

    def put_if_absent(self, key: str, data: bytes) -> Written | PreconditionFailed:
        return self._upload(key, data, overwrite=False)

    def put_if_match(self, key: str, data: bytes, etag: str) -> Written | PreconditionFailed:
        from azure.core import MatchConditions

        return self._upload(
            key, data, overwrite=True, etag=etag, match_condition=MatchConditions.IfNotModified
        )

    def list(self, prefix: str) -> list[str]:
        with azure_errors(f"list blobs under {prefix!r}"):
            return sorted(str(name) for name in self._client().list_blob_names(name_starts_with=prefix))

    def delete(self, keys: Sequence[str]) -> None:
        from azure.core.exceptions import ResourceNotFoundError

        for key in keys:
            try:
                with azure_errors(f"delete blob {key!r}"):
                    self._client().delete_blob(key)
            except Exception as exc:
                if not isinstance(getattr(exc, "orig", None), ResourceNotFoundError):
                    raise

    def upload_file(self, key: str, path: Path) -> None:
        """Stream a file into a blob (big artifacts are not read into memory)."""
        with azure_errors(f"upload {path.name} to blob {key!r}"), path.open("rb") as handle:
            self._client().upload_blob(key, handle, overwrite=True)

    def download_file(self, key: str, path: Path) -> None:
        """Stream a blob into a file."""
        with azure_errors(f"download blob {key!r}"), path.open("wb") as handle:
            self._client().download_blob(key).readinto(handle)
