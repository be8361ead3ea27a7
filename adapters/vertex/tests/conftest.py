"""Shared fixtures: a fake Vertex AI per test, a client on it, trained models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import mlshift
from mlshift.testing.conformance import iris_models
from mlshift_vertex.testing import FakeVertex

ROOT = Path(__file__).resolve().parents[3]
TARGET = "vertex://my-project/us-central1"


@pytest.fixture(scope="session")
def iris(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Two trained iris classifiers (skops files) with sample rows and their expected labels."""
    return iris_models(tmp_path_factory.mktemp("iris"))


@pytest.fixture
def vertex() -> Iterator[FakeVertex]:
    """A fresh fake Vertex AI, active for the test."""
    with FakeVertex(seed=7) as fake:
        yield fake


@pytest.fixture
def client(vertex: FakeVertex) -> Iterator[mlshift.Client]:
    """A client on the fake's vertex://my-project/us-central1."""
    with mlshift.connect(TARGET) as c:
        yield c


@pytest.fixture
def deployed(client: mlshift.Client, iris: dict[str, Any]) -> mlshift.Client:
    """iris:1 and iris:2 registered, iris:1 serving all of endpoint "iris-ep"."""
    client.models.register("iris", iris["v1"], framework="sklearn", metrics={"accuracy": 0.97})
    client.models.register("iris", iris["v2"], framework="sklearn")
    client.endpoints.deploy("iris-ep", "iris:1")
    return client
