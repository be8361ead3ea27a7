"""The shared conformance suite, run against the targets that ship with mlshift."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

import mlshift
from mlshift.testing.conformance import EndpointConformance, JournalConformance, RegistryConformance


class TestMemoryRegistry(RegistryConformance):
    @pytest.fixture
    def client(self) -> Iterator[mlshift.Client]:
        with mlshift.connect("memory://") as client:
            yield client


class TestMemoryEndpoints(EndpointConformance):
    @pytest.fixture
    def client(self) -> Iterator[mlshift.Client]:
        with mlshift.connect("memory://") as client:
            yield client


class TestLocalRegistry(RegistryConformance):
    @pytest.fixture
    def client(self, tmp_path: Path) -> Iterator[mlshift.Client]:
        with mlshift.connect(f"local://{tmp_path / 'state'}") as client:
            yield client


class TestLocalEndpoints(EndpointConformance):
    @pytest.fixture
    def client(self, local: mlshift.Client) -> mlshift.Client:
        return local


class TestMemoryJournal(JournalConformance):
    @pytest.fixture
    def client(self) -> Iterator[mlshift.Client]:
        with mlshift.connect("memory://") as client:
            yield client


class TestLocalJournal(JournalConformance):
    @pytest.fixture
    def client(self, local: mlshift.Client) -> mlshift.Client:
        return local
