"""Core's journal, lease lock and artifact store on the target's S3 bucket (moto, in process)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

import mlshift
from mlshift.storage import FileTransfer, ObjectStore
from mlshift.testing.conformance import ObjectStoreConformance
from mlshift_sagemaker.testing import FakeSageMaker
from sagemaker_helpers import sagemaker


class TestS3ObjectStore(ObjectStoreConformance):
    @pytest.fixture
    def object_store(self, aws: FakeSageMaker) -> Iterator[ObjectStore]:
        with mlshift.connect("sagemaker://us-east-1") as client:
            store = sagemaker(client).store
            assert isinstance(store, ObjectStore) and isinstance(store, FileTransfer)
            yield store
