"""Traffic splitting and request statistics shared by the local router, the in-memory target and
the rollout engine's probes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TypedDict

__all__ = ["SampleSummary", "WeightedRoundRobin", "spread_weights", "summarize"]


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
