"""The shared conformance suite, against the fake Azure ML."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import mlshift
from conftest import TARGET
from mlshift.testing.conformance import EndpointConformance, JournalConformance, RegistryConformance
from mlshift_azureml.testing import FakeAzureML


@pytest.fixture
def azureml_client() -> Iterator[mlshift.Client]:
    with FakeAzureML(), mlshift.connect(TARGET) as client:
        yield client


class TestAzureMLRegistry(RegistryConformance):
    @pytest.fixture
    def client(self, azureml_client: mlshift.Client) -> mlshift.Client:
        return azureml_client


class TestAzureMLEndpoints(EndpointConformance):
    @pytest.fixture
    def client(self, azureml_client: mlshift.Client) -> mlshift.Client:
        return azureml_client


class TestAzureMLJournal(JournalConformance):
    @pytest.fixture
    def client(self, azureml_client: mlshift.Client) -> mlshift.Client:
        return azureml_client
