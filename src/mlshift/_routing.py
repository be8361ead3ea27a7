"""Traffic splitting, request statistics and shadow comparisons shared by the local router, the
in-memory target and the rollout engine's probes."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple, TypedDict

__all__ = [
    "MirrorShare",
    "SampleSummary",
    "ShadowSample",
    "ShadowSummary",
    "WeightedRoundRobin",
    "compare_answers",
    "spread_weights",
    "summarize",
    "summarize_shadow",
]


class WeightedRoundRobin:
    """Smooth weighted round-robin (as nginx does it).

    Over any window of 100 picks each variant gets exactly its percentage, interleaved evenly
    (80/20 gives ``a a b a a a a b ...``, never long runs), so a split is visible after a few
    requests and never drifts the way random choice does.
    """

    def __init__(self, weights: Mapping[str, int]) -> None:
        self.weights = {k: int(v) for k, v in weights.items() if v > 0}
        self._total = sum(self.weights.values())
        self._current = dict.fromkeys(self.weights, 0)

    def __bool__(self) -> bool:
        return self._total > 0

    def pick(self) -> str:
        """The next variant to send a request to.

        Raises:
            LookupError: if no variant has any weight.
        """
        if not self._total:
            raise LookupError("no variant carries traffic")
        best, best_value = "", None
        for name, weight in self.weights.items():
            value = self._current[name] + weight
            self._current[name] = value
            if best_value is None or value > best_value:
                best, best_value = name, value
        self._current[best] -= self._total
        return best


def spread_weights(total: int, weights: Mapping[str, int]) -> dict[str, int]:
    """Split ``total`` percent across names in proportion to ``weights`` (largest remainder).

    Names with no weight share equally when every weight is zero. The result sums to ``total``.
    """
    names = list(weights)
    if not names:
        return {}
    base = sum(weights.values())
    shares = {n: (weights[n] / base if base else 1 / len(names)) * total for n in names}
    out = {n: int(shares[n]) for n in names}
    rest = total - sum(out.values())
    for n in sorted(names, key=lambda n: shares[n] - out[n], reverse=True)[:rest]:
        out[n] += 1
    return out


class SampleSummary(TypedDict):
    """Requests seen in a window: how many, how many failed (5xx), how many were refused as the
    caller's error (4xx), and latency percentiles."""

    requests: int
    errors: int
    client_errors: int
    p50_ms: float | None
    p99_ms: float | None


def summarize(samples: Iterable[tuple[float, int, float]], since: float) -> SampleSummary:
    """Summarize ``(monotonic start, status code, latency ms)`` samples taken at or after ``since``
    (nearest-rank percentiles)."""
    recent = [s for s in samples if s[0] >= since]
    latencies = sorted(s[2] for s in recent)
    last = len(latencies) - 1
    return SampleSummary(
        requests=len(recent),
        errors=sum(1 for s in recent if s[1] >= 500),
        client_errors=sum(1 for s in recent if 400 <= s[1] < 500),
        p50_ms=latencies[len(latencies) // 2] if latencies else None,
        p99_ms=latencies[min(last, int(len(latencies) * 0.99))] if latencies else None,
    )


# ---------------------------------------------------------------------------------------------
# Shadow traffic: which requests to mirror, and how the two answers compare


class MirrorShare:
    """Picks ``percent`` of requests to mirror, evenly spread (every 10th at 10%), never random."""

    def __init__(self, percent: int) -> None:
        self.percent = percent
        self._credit = 0

    def pick(self) -> bool:
        """Whether to mirror the next request."""
        self._credit += self.percent
        if self._credit >= 100:
            self._credit -= 100
            return True
        return False


def _agree(a: Any, b: Any, tolerance: float) -> bool:
    if isinstance(a, bool) or isinstance(b, bool) or isinstance(a, str) or isinstance(b, str):
        return bool(a == b)
    if isinstance(a, int) and isinstance(b, int):
        return a == b  # labels
    if isinstance(a, (int, float)) and isinstance(b, (int, float)):
        return abs(a - b) <= tolerance * max(abs(a), abs(b))
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_agree(x, y, tolerance) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_agree(a[k], b[k], tolerance) for k in a)
    return bool(a == b)


def compare_answers(primary: bytes, shadow: bytes, tolerance: float) -> tuple[int, int]:
    """``(rows compared, rows that agree)`` between two answers to the same request.

    Answers with a ``predictions`` list (what the model server returns) are compared row by row:
    labels (integers, strings, booleans) agree when equal, numbers when they differ by at most
    ``tolerance`` of the larger one. Anything else counts as one row.
    """
    try:
        a, b = json.loads(primary), json.loads(shadow)
    except ValueError:
        return 1, int(primary == shadow)
    rows_a = a.get("predictions") if isinstance(a, dict) else None
    rows_b = b.get("predictions") if isinstance(b, dict) else None
    try:
        if isinstance(rows_a, list) and isinstance(rows_b, list) and len(rows_a) == len(rows_b):
            return len(rows_a), sum(_agree(x, y, tolerance) for x, y in zip(rows_a, rows_b, strict=True))
        return 1, int(_agree(a, b, tolerance))
    except (TypeError, ValueError, OverflowError, RecursionError):
        return 1, 0  # answers that cannot be compared do not agree


class ShadowSample(NamedTuple):
    """One mirrored request: when, both answers' status and latency, and how they compared."""

    start: float
    status: int
    latency_ms: float
    baseline_status: int
    baseline_latency_ms: float
    rows: int
    agreed_rows: int

    @classmethod
    def compared(
        cls,
        start: float,
        status: int,
        latency_ms: float,
        answer: bytes,
        baseline_status: int,
        baseline_latency_ms: float,
        baseline_answer: bytes,
        tolerance: float,
    ) -> ShadowSample:
        """A sample whose answers are compared when both succeeded."""
        rows = agreed = 0
        if 200 <= status < 300 and 200 <= baseline_status < 300:
            rows, agreed = compare_answers(baseline_answer, answer, tolerance)
        return cls(start, status, latency_ms, baseline_status, baseline_latency_ms, rows, agreed)


class ShadowSummary(TypedDict):
    """Mirrored requests seen in a window (the fields of ``mlshift.adapter.ShadowMetrics``)."""

    requests: int
    errors: int
    client_errors: int
    baseline_client_errors: int
    rows: int
    agreed_rows: int
    skipped: int
    p99_ms: float | None
    baseline_p99_ms: float | None


def _p99(values: list[float]) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]


def summarize_shadow(
    samples: Iterable[ShadowSample], skipped: Iterable[float], since: float
) -> ShadowSummary:
    """Summarize mirrored requests started at or after ``since`` (``skipped``: their start times)."""
    recent = [s for s in samples if s.start >= since]
    return ShadowSummary(
        requests=len(recent),
        errors=sum(1 for s in recent if s.status >= 500),
        client_errors=sum(1 for s in recent if 400 <= s.status < 500),
        baseline_client_errors=sum(1 for s in recent if 400 <= s.baseline_status < 500),
        rows=sum(s.rows for s in recent),
        agreed_rows=sum(s.agreed_rows for s in recent),
        skipped=sum(1 for t in skipped if t >= since),
        p99_ms=_p99([s.latency_ms for s in recent]),
        baseline_p99_ms=_p99([s.baseline_latency_ms for s in recent]),
    )
