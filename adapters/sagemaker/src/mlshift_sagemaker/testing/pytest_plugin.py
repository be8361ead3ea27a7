"""The ``fake_sagemaker`` pytest fixture (registered through the ``pytest11`` entry point).

Importing this module imports neither moto nor boto3; the fixture does, when a test uses it.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from mlshift_sagemaker.testing import FakeSageMaker


@pytest.fixture
def fake_sagemaker() -> Iterator[FakeSageMaker]:
    """A :class:`~mlshift_sagemaker.testing.FakeSageMaker`, active for the test.

    ``mlshift.connect("sagemaker://us-east-1")`` inside the test talks to it.
    """
    from mlshift_sagemaker.testing import FakeSageMaker

    with FakeSageMaker() as fake:
        yield fake
