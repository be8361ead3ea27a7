"""Shared fixtures: a fake AWS per test, a client on it, trained models."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from typing import Any

import pytest

import mlshift
from mlshift.testing.conformance import iris_models
from mlshift_sagemaker.testing import FakeSageMaker
from sagemaker_helpers import ROOT, TARGET

__all__ = ["ROOT", "TARGET"]


@pytest.fixture(scope="session")
def example_module() -> Any:
    """The module ``examples/train_gate_deploy.py``: prepare → train → evaluate → gate →
    register → deploy."""
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import train_gate_deploy
    finally:
        sys.path.pop(0)
    return train_gate_deploy


@pytest.fixture(scope="session")
def iris(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two trained iris classifiers (skops files) with sample rows and their expected labels."""
    return iris_models(tmp_path_factory.mktemp("iris"))


@pytest.fixture
def aws() -> Iterator[FakeSageMaker]:
    """A fresh fake AWS, active for the test."""
    with FakeSageMaker() as fake:
        yield fake


@pytest.fixture
def client(aws: FakeSageMaker) -> Iterator[mlshift.Client]:
    """A client on the fake's sagemaker://us-east-1."""
    with mlshift.connect(TARGET) as c:
        yield c


@pytest.fixture
def registered(client: mlshift.Client, iris: dict[str, Any]) -> mlshift.Client:
    """iris:1 and iris:2 registered, nothing deployed."""
    client.models.register("iris", iris["v1"], framework="sklearn")
    client.models.register("iris", iris["v2"], framework="sklearn")
    return client


@pytest.fixture
def main(client: mlshift.Client, iris: dict[str, Any]) -> mlshift.Client:
    """iris:1 serving endpoint "iris-ep" as variant "main"; iris:2 registered."""
    client.models.register("iris", iris["v1"], framework="sklearn")
    client.models.register("iris", iris["v2"], framework="sklearn")
    client.endpoints.deploy("iris-ep", "iris:1", variant="main")
    return client


@pytest.fixture
def deployed(client: mlshift.Client, iris: dict[str, Any]) -> mlshift.Client:
    """iris:1 and iris:2 registered, iris:1 serving all of endpoint "iris-ep"."""
    client.models.register("iris", iris["v1"], framework="sklearn", metrics={"accuracy": 0.97})
    client.models.register("iris", iris["v2"], framework="sklearn")
    client.endpoints.deploy("iris-ep", "iris:1")
    return client
