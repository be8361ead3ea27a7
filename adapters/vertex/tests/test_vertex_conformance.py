"""The shared conformance suite, against the fake Vertex AI under the real SDK."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import mlshift
from mlshift.testing.conformance import (
    EndpointConformance,
    JournalConformance,
    ObjectStoreConformance,
    RegistryConformance,
)
from mlshift_vertex.testing import FakeVertex

TARGET = "vertex://my-project/us-central1"


@pytest.fixture
def vertex_client() -> Iterator[mlshift.Client]:
    with FakeVertex(seed=1), mlshift.connect(TARGET) as client:
        yield client


class TestVertexRegistry(RegistryConformance):
    @pytest.fixture
    def client(self, vertex_client: mlshift.Client) -> mlshift.Client:
        return vertex_client


class TestVertexEndpoints(EndpointConformance):
    @pytest.fixture
    def client(self, vertex_client: mlshift.Client) -> mlshift.Client:
        return vertex_client


class TestVertexJournal(JournalConformance):
    @pytest.fixture
    def client(self, vertex_client: mlshift.Client) -> mlshift.Client:
        return vertex_client


class TestGcsObjectStore(ObjectStoreConformance):
    """Core's journal, leases and artifact store on the GCS JSON API (generations as etags)."""

    @pytest.fixture
    def object_store(self) -> Iterator[object]:
        with FakeVertex(), mlshift.connect(TARGET) as client:
            yield client.adapter.store  # type: ignore[attr-defined]
