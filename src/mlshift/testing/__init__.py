"""Test helpers shipped with mlshift: the ``memory://`` target and the conformance suite.

Use them to test your own deployment code without a cloud account::

    import mlshift
    client = mlshift.connect("memory://")

subclass :mod:`mlshift.testing.conformance` classes to check an adapter of your own, and use
:mod:`mlshift.testing.rollouts` to test a gated rollout under load on any machine.
"""

from mlshift.testing.memory import MemoryAdapter

__all__ = ["MemoryAdapter"]
