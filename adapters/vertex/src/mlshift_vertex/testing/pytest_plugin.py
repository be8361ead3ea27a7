"""The ``fake_vertex`` pytest fixture (registered through the ``pytest11`` entry point).

Importing this module imports no Google library; the fixture's client calls do.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from mlshift_vertex.testing import FakeVertex


@pytest.fixture
def fake_vertex() -> Iterator[FakeVertex]:
    """A started :class:`~mlshift_vertex.testing.FakeVertex`, active for the test.

    ``mlshift.connect("vertex://my-project/us-central1")`` inside the test talks to it.
    """
    from mlshift_vertex.testing import FakeVertex

    with FakeVertex() as fake:
        yield fake
