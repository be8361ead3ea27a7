"""Core's storage machinery over the object stores that ship with mlshift."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mlshift.errors import ConfigError
from mlshift.storage import FolderObjectStore, MemoryObjectStore, ObjectStore
from mlshift.testing.conformance import ObjectStoreConformance


class TestMemoryObjectStore(ObjectStoreConformance):
    @pytest.fixture
    def object_store(self) -> Iterator[ObjectStore]:
        yield MemoryObjectStore()


class TestFolderObjectStore(ObjectStoreConformance):
    @pytest.fixture
    def object_store(self, tmp_path: Path) -> Iterator[ObjectStore]:
        yield FolderObjectStore(tmp_path / "bucket")


def test_both_stores_fit_the_protocol(tmp_path: Path) -> None:
    assert isinstance(MemoryObjectStore(), ObjectStore)
    assert isinstance(FolderObjectStore(tmp_path), ObjectStore)


@pytest.mark.parametrize("key", ["", "../up", "a//b", "a/./b", ".lock", "/abs"])
def test_the_folder_store_refuses_keys_that_leave_it(tmp_path: Path, key: str) -> None:
    with pytest.raises(ConfigError, match="object key"):
        FolderObjectStore(tmp_path).put(key, b"x")
