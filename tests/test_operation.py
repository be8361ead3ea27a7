"""The one polling Operation: results (None included), its timeout rule, failures."""

from __future__ import annotations

import pytest

from mlshift.adapter import PENDING, Operation, PollingOperation
from mlshift.errors import ProviderError, ProviderTimeout


class Clock:
    """A fake monotonic clock that the operation's sleep advances."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> Clock:
    fake = Clock()
    monkeypatch.setattr("mlshift.adapter.time.monotonic", lambda: fake.now)
    return fake


def test_none_is_a_result(clock: Clock) -> None:
    answers = iter([PENDING, PENDING, None])
    operation: PollingOperation[None] = PollingOperation(lambda: next(answers), "delete x", sleep=clock.sleep)
    assert isinstance(operation, Operation)
    assert not operation.done()
    assert operation.wait() is None
    assert operation.done() and operation.wait() is None  # computed once
    assert len(clock.sleeps) == 1


def test_the_targets_own_limit_wins_over_the_callers(clock: Clock) -> None:
    operation: PollingOperation[str] = PollingOperation(
        lambda: PENDING, "create big-gpu", interval=10, timeout=100, provider="sagemaker", sleep=clock.sleep
    )
    with pytest.raises(ProviderTimeout, match="create big-gpu did not finish within 100 s") as caught:
        operation.wait(timeout=5)
    assert caught.value.provider == "sagemaker"
    assert clock.now >= 100


def test_otherwise_the_callers_limit_then_the_default(clock: Clock) -> None:
    operation: PollingOperation[str] = PollingOperation(lambda: PENDING, "x", interval=1, sleep=clock.sleep)
    with pytest.raises(ProviderTimeout, match="within 3 s"):
        operation.wait(timeout=3)
    operation = PollingOperation(lambda: PENDING, "x", interval=100, default_timeout=300, sleep=clock.sleep)
    with pytest.raises(ProviderTimeout, match="within 300 s"):
        operation.wait()


def test_a_failing_poll_fails_the_wait(clock: Clock) -> None:
    def poll() -> str:
        raise ProviderError("endpoint failed to start", provider="sagemaker")

    with pytest.raises(ProviderError, match="failed to start"):
        PollingOperation(poll, "create x", sleep=clock.sleep).wait()
