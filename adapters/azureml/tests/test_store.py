"""Core's journal, lease lock and artifact store on the workspace datastore (the fake's blobs)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import mlshift
from conftest import TARGET, azureml
from mlshift.storage import FileTransfer, ObjectStore
from mlshift.testing.conformance import ObjectStoreConformance
from mlshift_azureml.testing import FakeAzureML


class TestBlobObjectStore(ObjectStoreConformance):
    @pytest.fixture
    def object_store(self, azure: FakeAzureML) -> Iterator[ObjectStore]:
        with mlshift.connect(TARGET) as client:
            store = azureml(client).store
            assert isinstance(store, ObjectStore) and isinstance(store, FileTransfer)
            yield store


def test_the_store_writes_blobs_in_the_workspace_datastore(azure: FakeAzureML) -> None:
    with mlshift.connect(TARGET + "?prefix=team/a") as client:
        store = azureml(client).store
        store.put("team/a/x.json", b"{}")
        assert azure.blob_keys() == ["team/a/x.json"]
        assert store.uri("team/a/x.json") == "azureml://datastores/workspaceblobstore/paths/team/a/x.json"
