"""Shared fixtures: a fake Azure ML per test, a client on it, trained models."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import mlshift
from mlshift.testing.conformance import iris_models
from mlshift_azureml import AzureMLAdapter
from mlshift_azureml.testing import FakeAzureML

ROOT = Path(__file__).resolve().parents[3]
TARGET = "azureml://sub-0000/ml-rg/ml-ws"


def azureml(client: mlshift.Client) -> AzureMLAdapter:
    """The client's adapter, typed."""
    adapter = client.adapter
    assert isinstance(adapter, AzureMLAdapter)
    return adapter


def example_pipeline() -> Any:
    """The pipeline of ``examples/train_gate_deploy.py``: prepare → train → evaluate → gate →
    register → deploy."""
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import train_gate_deploy
    finally:
        sys.path.pop(0)
    return train_gate_deploy.train_gate_deploy


@pytest.fixture(scope="session")
def example() -> Any:
    """:func:`example_pipeline`, for the tests that run or compile it."""
    return example_pipeline()


@pytest.fixture(scope="session")
def iris(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two trained iris classifiers (skops files) with sample rows and their expected labels."""
    return iris_models(tmp_path_factory.mktemp("iris"))


@pytest.fixture
def azure() -> Iterator[FakeAzureML]:
    """A fresh fake Azure ML, active for the test."""
    with FakeAzureML() as fake:
        yield fake


@pytest.fixture
def client(azure: FakeAzureML) -> Iterator[mlshift.Client]:
    """A client on the fake's workspace."""
    with mlshift.connect(TARGET) as c:
        yield c


@pytest.fixture
def deployed(client: mlshift.Client, iris: dict[str, Any]) -> mlshift.Client:
    """iris:1 serving all of "iris-ep"; iris:2 registered (what a rollout test starts from)."""
    client.models.register("iris", iris["v1"], framework="sklearn")
    client.models.register("iris", iris["v2"], framework="sklearn")
    client.endpoints.deploy("iris-ep", "iris:1")
    return client
