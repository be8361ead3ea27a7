"""Public names a package imports on first use (PEP 562), so that importing it stays cheap.

Only the standard library's ``importlib`` is used: ``import mlshift`` loads this module.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping

__all__ = ["lazy_exports"]


def lazy_exports(
    namespace: dict[str, Any], modules: Mapping[str, str]
) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """The module ``__getattr__`` and ``__dir__`` of the package whose ``globals()`` is ``namespace``.

    ``modules`` maps each lazy name to the module that defines it (absolute, or relative to the
    package). A name is imported on first use and then stored in ``namespace``, so later lookups
    are plain attribute reads. ``__dir__`` lists the package's ``__all__``. Keep the names'
    imports under ``TYPE_CHECKING`` in the package too: that is how type checkers see them.

    Usage, in a package's ``__init__.py``::

        __getattr__, __dir__ = lazy_exports(globals(), {"Client": "mlshift._client"})
    """
    package: str = namespace["__name__"]

    def __getattr__(name: str) -> Any:
        module = modules.get(name)
        if module is None:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(import_module(module, package), name)
        namespace[name] = value
        return value

    def __dir__() -> list[str]:
        return list(namespace["__all__"])

    return __getattr__, __dir__
