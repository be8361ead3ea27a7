"""A waitable change on SageMaker: polls a describe-call until done, never forever."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar

from mlshift.errors import ProviderTimeout

__all__ = ["PENDING", "AwsOperation"]

T = TypeVar("T")


class _Pending:
    def __repr__(self) -> str:
        return "PENDING"


#: What a poll function returns while the change is still running.
PENDING = _Pending()


class AwsOperation(Generic[T]):
    """An :class:`~mlshift.adapter.Operation` finished by polling.

    ``poll()`` returns the result, or :data:`PENDING`; it may raise to fail the operation (after
    cleaning up). The result is computed once; later ``wait`` calls return it again.

    Args:
        poll: One status check.
        description: What the change does, for progress output and timeout messages.
        interval: Seconds between checks.
        timeout: The target's own limit (the ``wait_timeout`` option); when set it wins over the
            caller's, so a user can allow a big GPU model longer than ``apply``'s default.
        hint: What to do when the wait times out.
    """

    def __init__(
        self,
        poll: Callable[[], T | _Pending],
        description: str,
        *,
        interval: float,
        timeout: float | None = None,
        hint: str | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self._poll = poll
        self.description = description
        self._interval = interval
        self._timeout = timeout
        self._hint = hint
        self._sleep = sleep
        self._result: T | _Pending = PENDING

    def done(self) -> bool:
        if self._result is PENDING:
            self._result = self._poll()
        return self._result is not PENDING

    def wait(self, timeout: float | None = None) -> T:
        limit = self._timeout if self._timeout is not None else (1800.0 if timeout is None else timeout)
        deadline = time.monotonic() + limit
        while not self.done():
            if time.monotonic() >= deadline:
                raise ProviderTimeout(
                    f"{self.description} did not finish within {limit:g} s",
                    provider="sagemaker",
                    hint=self._hint
                    or "it may still finish: see `mlshift endpoints show`, or raise the wait_timeout option",
                )
            self._sleep(self._interval)
        assert not isinstance(self._result, _Pending)
        return self._result
