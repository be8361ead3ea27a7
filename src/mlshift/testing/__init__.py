"""Test helpers shipped with mlshift: the ``memory://`` target and the conformance suite.

Use them to test your own deployment code without a cloud account::

    import mlshift
    client = mlshift.connect("memory://")

and subclass :mod:`mlshift.testing.conformance` classes to check an adapter of your own.
"""

from mlshift.testing.memory import MemoryAdapter

__all__ = ["MemoryAdapter"]
