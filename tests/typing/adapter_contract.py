"""Type-checked (not run): mlshift's own adapters satisfy the declared adapter contract.

``mypy --strict`` checks each assignment structurally against the protocols in
:mod:`mlshift.adapter`, so a hook core calls that an adapter lacks (or types differently) fails
``nox -s typing`` here instead of at run time.
"""

from __future__ import annotations

from mlshift.adapter import Adapter, EndpointService, ModelRegistry
from mlshift.local import LocalAdapter
from mlshift.testing.memory import MemoryAdapter


def contract(local: LocalAdapter, memory: MemoryAdapter) -> list[Adapter]:
    adapters: list[Adapter] = [local, memory]
    endpoints: list[EndpointService] = [local.endpoints, memory.endpoints]
    models: list[ModelRegistry] = [local.models, memory.models]
    assert endpoints and models
    return adapters
