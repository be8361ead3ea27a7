"""Plain-line progress of an apply, for notebooks, CI logs and scripts (no terminal needed)."""

from __future__ import annotations

import sys
import time
from typing import TYPE_CHECKING, Any, TextIO

if TYPE_CHECKING:
    from mlshift.plan import ApplyEvent

__all__ = ["ProgressPrinter", "bake_text"]


def bake_text(d: dict[str, Any]) -> str:
    """One line for a rollout's bake: share on the new version, time left, the gate's numbers."""
    p99 = f" · p99 {d['p99_ms']:.1f}ms" if d.get("p99_ms") is not None else ""
    if p99 and d.get("baseline_p99_ms") is not None:
        p99 += f" (baseline {d['baseline_p99_ms']:.1f}ms)"
    client = ""
    if "client_errors" in d:
        client = (
            f" · {d['client_errors']} 4xx ({d['client_error_rate']:.1%}, "
            f"baseline {d['baseline_client_error_rate']:.1%})"
        )
    left = max(0.0, d["bake_s"] - d["elapsed_s"])
    if d.get("phase") == "shadow":
        agreement = "-" if d.get("agreement") is None else f"{d['agreement']:.1%}"
        return (
            f"  shadow {d['shadow_percent']}% · {left:4.1f}s of {d['bake_s']:g}s left · "
            f"{d['requests']} mirrored · agreement {agreement} over {d['rows']} rows · "
            f"{d['errors']} errors ({d['error_rate']:.1%}){client}{p99}"
        )
    return (
        f"  {d['stage_percent']}% on the new version · {left:4.1f}s of {d['bake_s']:g}s left · "
        f"{d['requests']} requests · {d['errors']} errors ({d['error_rate']:.1%}){client}{p99}"
    )


class ProgressPrinter:
    """Prints an apply's progress as plain lines; pass it as ``on_event``.

    Made for places without a terminal: a notebook cell, a CI log, a file. Every line is
    complete text, with no colours or cursor movement; while a rollout bakes, its gate
    numbers are printed at most every ``interval`` seconds.

    >>> client.endpoints.deploy("iris", "iris:2", rollout=Canary(percent=10, bake="1m"),
    ...                         on_event=mlshift.ProgressPrinter())   # doctest: +SKIP
    [1/1] roll out iris:2 to endpoint iris (canary 10% for 60s, ...) ...
      traffic: iris-v1 90%, iris-v2 10%
      10% on the new version ·  55.0s of 60s left · 120 requests · 0 errors (0.0%)
    ...

    Args:
        file: Where to print (default: ``sys.stdout`` at the time of each event, which is
            the cell's output in a notebook).
        interval: Seconds between two bake lines.
    """

    def __init__(self, file: TextIO | None = None, *, interval: float = 5.0) -> None:
        self.file = file
        self.interval = interval
        self._last_bake = float("-inf")

    def _print(self, text: str) -> None:
        out = self.file if self.file is not None else sys.stdout
        out.write(text + "\n")
        out.flush()

    def __call__(self, event: ApplyEvent) -> None:
        detail = event.detail or {}
        prefix = f"[{event.index}/{event.total}]"
        if event.phase == "start":
            self._last_bake = float("-inf")
            self._print(f"{prefix} {event.action.describe()} ...")
        elif event.phase == "done":
            self._print(f"{prefix} done in {event.elapsed:.1f}s")
        elif event.phase == "failed":
            self._print(f"{prefix} failed after {event.elapsed:.1f}s: {event.error or ''}".rstrip(": "))
        elif "elapsed_s" in detail:
            now = time.monotonic()
            if now - self._last_bake >= self.interval:
                self._last_bake = now
                self._print(bake_text(detail))
        elif "weights" in detail:
            self._print("  traffic: " + ", ".join(f"{n} {w}%" for n, w in detail["weights"].items()))
        elif "shadow" in detail:
            self._print(f"  shadow: {detail['shadow_percent']}% of traffic copied to {detail['shadow']}")
        elif "rollback" in detail:
            self._print(f"  rolling back: {detail['rollback']}")
