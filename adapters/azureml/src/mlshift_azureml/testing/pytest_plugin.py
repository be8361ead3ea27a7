"""The ``fake_azureml`` pytest fixture (registered through the ``pytest11`` entry point).

Importing this module imports no Azure SDK; the fixture does, when a test uses it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from mlshift_azureml.testing import FakeAzureML


@pytest.fixture
def fake_azureml() -> Iterator[FakeAzureML]:
    """A :class:`~mlshift_azureml.testing.FakeAzureML`, active for the test.

    ``mlshift.connect("azureml://SUB/RG/WS")`` inside the test talks to it.
    """
    from mlshift_azureml.testing import FakeAzureML

    with FakeAzureML() as fake:
        yield fake
