"""Core's storage machinery over the object stores that ship with mlshift."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from mlshift.errors import ConfigError
from mlshift.storage import FolderObjectStore, MemoryObjectStore, ObjectStore, PrefixedObjectStore
from mlshift.testing.conformance import ObjectStoreConformance


class TestMemoryObjectStore(ObjectStoreConformance):
    @pytest.fixture
    def object_store(self) -> Iterator[ObjectStore]:
        yield MemoryObjectStore()


class TestFolderObjectStore(ObjectStoreConformance):
    @pytest.fixture
    def object_store(self, tmp_path: Path) -> Iterator[ObjectStore]:
        yield FolderObjectStore(tmp_path / "bucket")


class TestPrefixedObjectStore(ObjectStoreConformance):
    @pytest.fixture
    def object_store(self) -> Iterator[ObjectStore]:
        yield PrefixedObjectStore(MemoryObjectStore(), "team/monitoring")


def test_a_prefixed_view_keeps_to_its_prefix() -> None:
    bucket = MemoryObjectStore()
    bucket.put("team/journal/x.json", b"{}")
    view = PrefixedObjectStore(bucket, "team/monitoring/")
    view.put("runs/a/1/report.json", b"1")
    view.put("runs/ab/2/report.json", b"2")
    assert bucket.list("team/") == [
        "team/journal/x.json",
        "team/monitoring/runs/a/1/report.json",
        "team/monitoring/runs/ab/2/report.json",
    ]
    assert view.list("runs/a/") == ["runs/a/1/report.json"]
    assert view.list("") == ["runs/a/1/report.json", "runs/ab/2/report.json"]
    found = view.get("runs/a/1/report.json")
    assert found is not None and found.key == "runs/a/1/report.json" and found.data == b"1"
    view.delete(["runs/a/1/report.json"])
    assert bucket.list("team/monitoring/") == ["team/monitoring/runs/ab/2/report.json"]


def test_both_stores_fit_the_protocol(tmp_path: Path) -> None:
    assert isinstance(MemoryObjectStore(), ObjectStore)
    assert isinstance(FolderObjectStore(tmp_path), ObjectStore)


@pytest.mark.parametrize("key", ["", "../up", "a//b", "a/./b", ".lock", "/abs"])
def test_the_folder_store_refuses_keys_that_leave_it(tmp_path: Path, key: str) -> None:
    with pytest.raises(ConfigError, match="object key"):
        FolderObjectStore(tmp_path).put(key, b"x")
