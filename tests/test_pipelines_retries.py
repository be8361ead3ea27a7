"""``call_with_retries``: how a cloud step runner retries a step function."""

from __future__ import annotations

import pytest

from mlshift.pipelines.builtins import call_with_retries


class Flaky:
    """Fails ``failures`` times with a ValueError, then returns how many calls it took."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls = 0

    def __call__(self) -> int:
        self.calls += 1
        if self.calls <= self.failures:
            raise ValueError(f"bad {self.calls}")
        return self.calls


def test_a_failing_call_is_retried_with_doubling_waits_and_each_failure_said() -> None:
    flaky, waits, lines = Flaky(failures=2), [], []
    result = call_with_retries(flaky, retries=3, delay=0.5, log=lines.append, sleep=waits.append)
    assert result == 3
    assert waits == [0.5, 1.0]
    assert lines == [
        "attempt 1 failed: ValueError: bad 1; retrying",
        "attempt 2 failed: ValueError: bad 2; retrying",
    ]


def test_the_last_failure_is_raised_unchanged_after_all_retries() -> None:
    flaky, waits = Flaky(failures=5), []
    with pytest.raises(ValueError, match="bad 3"):
        call_with_retries(flaky, retries=2, delay=1.0, log=lambda _: None, sleep=waits.append)
    assert flaky.calls == 3
    assert waits == [1.0, 2.0]


def test_no_retries_calls_once_and_says_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    flaky = Flaky(failures=1)
    with pytest.raises(ValueError, match="bad 1"):
        call_with_retries(flaky, retries=0, delay=1.0, sleep=lambda _: pytest.fail("slept"))
    assert flaky.calls == 1
    assert capsys.readouterr().err == ""


def test_failed_attempts_go_to_stderr_by_default(capsys: pytest.CaptureFixture[str]) -> None:
    assert call_with_retries(Flaky(failures=1), retries=1, delay=0, sleep=lambda _: None) == 2
    assert capsys.readouterr().err == "attempt 1 failed: ValueError: bad 1; retrying\n"


def test_a_keyboard_interrupt_is_not_retried() -> None:
    calls = []

    def interrupted() -> None:
        calls.append(1)
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        call_with_retries(interrupted, retries=3, delay=0, sleep=lambda _: None)
    assert calls == [1]
