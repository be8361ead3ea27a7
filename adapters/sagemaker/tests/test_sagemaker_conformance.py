"""The shared conformance suite, against the fake SageMaker."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import mlshift
from mlshift.testing.conformance import EndpointConformance, JournalConformance, RegistryConformance
from mlshift_sagemaker.testing import FakeSageMaker


@pytest.fixture
def sagemaker_client() -> Iterator[mlshift.Client]:
    with FakeSageMaker(), mlshift.connect("sagemaker://us-east-1") as client:
        yield client


class TestSageMakerRegistry(RegistryConformance):
    @pytest.fixture
    def client(self, sagemaker_client: mlshift.Client) -> mlshift.Client:
        return sagemaker_client


class TestSageMakerEndpoints(EndpointConformance):
    @pytest.fixture
    def client(self, sagemaker_client: mlshift.Client) -> mlshift.Client:
        return sagemaker_client


class TestSageMakerJournal(JournalConformance):
    @pytest.fixture
    def client(self, sagemaker_client: mlshift.Client) -> mlshift.Client:
        return sagemaker_client
