"""Drift statistics: how far a window of live inputs has moved from a model's baseline."""

from __future__ import annotations

import itertools
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict

from mlshift.errors import ConfigError
from mlshift.monitoring._baseline import (
    OTHER,
    Baseline,
    CategoricalBaseline,
    NumericBaseline,
    Table,
    _is_missing,
    _numeric,
    to_columns,
)

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = [
    "CATEGORICAL_STATISTICS",
    "DEFAULT_THRESHOLDS",
    "NUMERIC_STATISTICS",
    "DriftReport",
    "FeatureDrift",
    "Statistic",
    "drift_report",
]

Statistic = Literal["psi", "ks", "jensenshannon", "wasserstein", "chi2", "linf"]
#: Statistics that compare numeric features.
NUMERIC_STATISTICS: tuple[Statistic, ...] = ("psi", "ks", "jensenshannon", "wasserstein")
#: Statistics that compare categorical features.
CATEGORICAL_STATISTICS: tuple[Statistic, ...] = ("jensenshannon", "chi2", "linf")
#: What each statistic's threshold means and its default. Every statistic but ``chi2`` flags
#: drift when it is *above* its threshold; ``chi2`` is a p-value and flags drift *below* it.
DEFAULT_THRESHOLDS: Mapping[Statistic, float] = {
    "psi": 0.2,  # population stability index over the baseline's decile bins
    "ks": 0.1,  # Kolmogorov-Smirnov distance between the two CDFs
    "jensenshannon": 0.1,  # Jensen-Shannon distance (base 2, in [0, 1]) over bins/categories
    "wasserstein": 0.1,  # earth mover's distance in units of the baseline's standard deviation
    "chi2": 0.01,  # p-value of Pearson's chi-squared test against baseline frequencies
    "linf": 0.1,  # largest change of any category's share
}
DEFAULT_NUMERIC: Statistic = "psi"
DEFAULT_CATEGORICAL: Statistic = "jensenshannon"
#: Below this many values in the window a feature is reported, not judged.
MIN_VALUES = 30
#: Floor for empty bins, so PSI stays finite (as in the usual PSI definition).
_EPSILON = 1e-4


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class FeatureDrift(_Frozen):
    """One feature's comparison with its baseline.

    Attributes:
        feature: The feature's name.
        kind: ``numeric`` or ``categorical``.
        statistic: The statistic used.
        value: Its value (``None`` when the window had too few values to judge).
        threshold: The threshold it was judged against.
        drifted: Whether it crossed the threshold.
        values: Values of the feature in the window (missing ones excluded).
        missing_rate: The window's share of missing values (baseline's: ``baseline_missing_rate``).
        baseline_missing_rate: The baseline's share of missing values.
        out_of_range: Share of the window's values outside the baseline's [min, max] (numeric).
        wrong_type: Values that are not numbers in a numeric feature.
        note: Why the feature was not judged, when it was not.
        bins: Labels of the bins (numeric) or categories compared, for plots.
        baseline_shares: The baseline's share in each bin.
        window_shares: The window's share in each bin.
    """

    feature: str
    kind: Literal["numeric", "categorical"]
    statistic: Statistic
    value: float | None
    threshold: float
    drifted: bool
    values: int
    missing_rate: float
    baseline_missing_rate: float
    out_of_range: float = 0.0
    wrong_type: int = 0
    note: str | None = None
    bins: tuple[str, ...] = ()
    baseline_shares: tuple[float, ...] = ()
    window_shares: tuple[float, ...] = ()


class DriftReport(_Frozen):
    """A window of data compared with a baseline, feature by feature.

    Attributes:
        rows: Rows in the window.
        features: One result per baseline feature, in the baseline's order.
    """

    rows: int
    features: tuple[FeatureDrift, ...]

    @property
    def drifted(self) -> tuple[str, ...]:
        """Names of the features that drifted."""
        return tuple(f.feature for f in self.features if f.drifted)

    def __getitem__(self, feature: str) -> FeatureDrift:
        for f in self.features:
            if f.feature == feature:
                return f
        raise KeyError(feature)


# ------------------------------------------------------------------------------- statistics


def _shares(counts: NDArray[np.float64]) -> NDArray[np.float64]:
    import numpy as np

    total = counts.sum()
    shares = counts / total if total else np.zeros_like(counts)
    return np.maximum(shares, _EPSILON)


def psi(expected: Sequence[float], actual: Sequence[float]) -> float:
    """Population stability index of two histograms over the same bins (counts or shares)."""
    import numpy as np

    e = _shares(np.asarray(expected, dtype=np.float64))
    a = _shares(np.asarray(actual, dtype=np.float64))
    return float(np.sum((a - e) * np.log(a / e)))


def jensenshannon(expected: Sequence[float], actual: Sequence[float]) -> float:
    """Jensen-Shannon distance (base 2: 0 = same, 1 = disjoint) of two histograms."""
    import numpy as np

    p = np.asarray(expected, dtype=np.float64)
    q = np.asarray(actual, dtype=np.float64)
    p = p / p.sum() if p.sum() else p
    q = q / q.sum() if q.sum() else q
    m = (p + q) / 2

    def kl(x: NDArray[np.float64]) -> float:
        mask = x > 0
        return float(np.sum(x[mask] * np.log2(x[mask] / m[mask])))

    return math.sqrt(max((kl(p) + kl(q)) / 2, 0.0))


def _baseline_cdf(quantiles: NDArray[np.float64], x: NDArray[np.float64]) -> NDArray[np.float64]:
    """The baseline's CDF at ``x``, from its stored quantiles (linear between them)."""
    import numpy as np

    levels = np.linspace(0.0, 1.0, quantiles.size)
    # np.interp needs increasing x-coordinates; ties (a value repeated over several
    # percentiles) collapse to the highest level reached, which is what a CDF does.
    unique, last = np.unique(quantiles[::-1], return_index=True)
    top = levels[::-1][last]
    return np.interp(x, unique, top, left=0.0, right=1.0)


def ks(quantiles: Sequence[float], window: NDArray[np.float64]) -> float:
    """Kolmogorov-Smirnov distance between the baseline (by its quantiles) and a sample."""
    import numpy as np

    q = np.asarray(quantiles, dtype=np.float64)
    sample = np.sort(window)
    points = np.union1d(q, sample)
    f_base = _baseline_cdf(q, points)
    f_window = np.searchsorted(sample, points, side="right") / sample.size
    return float(np.max(np.abs(f_base - f_window)))


def wasserstein(quantiles: Sequence[float], window: NDArray[np.float64]) -> float:
    """Earth mover's distance between the baseline (by its quantiles) and a sample.

    It is the area between the two quantile functions, integrated on a fine grid.
    """
    import numpy as np

    q = np.asarray(quantiles, dtype=np.float64)
    grid = (np.arange(2000) + 0.5) / 2000
    base = np.interp(grid, np.linspace(0.0, 1.0, q.size), q)
    return float(np.mean(np.abs(base - np.quantile(window, grid))))


def chi2_pvalue(expected: Mapping[str, int], observed: Mapping[str, int]) -> float:
    """Pearson's chi-squared test of observed category counts against baseline frequencies.

    Raises:
        ImportError: scipy is missing (``pip install scipy``).
    """
    import numpy as np
    from scipy.stats import chi2

    categories = list(expected)
    total_base = sum(expected.values())
    total = sum(observed.values())
    p = np.asarray([expected[c] / total_base for c in categories], dtype=np.float64)
    p = np.maximum(p, _EPSILON)
    p = p / p.sum()
    o = np.asarray([observed.get(c, 0) for c in categories], dtype=np.float64)
    e = total * p
    statistic = float(np.sum((o - e) ** 2 / e))
    return float(chi2.sf(statistic, max(len(categories) - 1, 1)))


# ------------------------------------------------------------------------------- the report


def _check_statistic(feature: str, kind: str, statistic: str) -> Statistic:
    allowed = NUMERIC_STATISTICS if kind == "numeric" else CATEGORICAL_STATISTICS
    if statistic not in allowed:
        raise ConfigError(
            f"{statistic!r} is not a statistic for the {kind} feature {feature!r}",
            field=f"statistics.{feature}",
            hint=f"use one of: {', '.join(sorted(allowed))}",
        )
    if statistic == "chi2":
        try:
            import scipy.stats  # noqa: F401
        except ImportError:
            raise ConfigError(
                f"the chi2 statistic (for {feature!r}) needs scipy, which is not installed",
                field=f"statistics.{feature}",
                hint="pip install scipy, or use jensenshannon or linf",
            ) from None
    return statistic


def _bin_labels(edges: Sequence[float]) -> tuple[str, ...]:
    if not edges:
        return ("all",)
    inner = [f"{lo:.4g} to {hi:.4g}" for lo, hi in itertools.pairwise(edges)]
    return (f"< {edges[0]:.4g}", *inner, f"≥ {edges[-1]:.4g}")


def _histogram_fields(
    labels: Sequence[str], baseline: Sequence[float], window: Sequence[float]
) -> dict[str, Any]:
    base_total = sum(baseline) or 1
    window_total = sum(window) or 1
    return {
        "bins": tuple(labels),
        "baseline_shares": tuple(b / base_total for b in baseline),
        "window_shares": tuple(w / window_total for w in window),
    }


def _numeric_drift(
    name: str, base: NumericBaseline, values: list[Any], statistic: Statistic, threshold: float
) -> FeatureDrift:
    import numpy as np

    array, missing, wrong = _numeric(values)
    total = len(values)
    common: dict[str, Any] = {
        "feature": name,
        "kind": "numeric",
        "statistic": statistic,
        "threshold": threshold,
        "values": int(array.size),
        "missing_rate": missing / total if total else 0.0,
        "baseline_missing_rate": base.missing_rate,
        "wrong_type": wrong,
    }
    if array.size < MIN_VALUES:
        note = f"{array.size} values in the window; at least {MIN_VALUES} are needed to judge drift"
        return FeatureDrift(value=None, drifted=False, note=note, **common)
    common["out_of_range"] = float(np.mean((array < base.minimum) | (array > base.maximum)))
    edges = np.asarray(base.edges, dtype=np.float64)
    window_counts = np.bincount(np.searchsorted(edges, array, side="right"), minlength=edges.size + 1)
    common.update(_histogram_fields(_bin_labels(base.edges), base.counts, window_counts.tolist()))
    if statistic == "psi":
        value = psi(base.counts, window_counts.tolist())
    elif statistic == "jensenshannon":
        value = jensenshannon(base.counts, window_counts.tolist())
    elif statistic == "ks":
        value = ks(base.quantiles, array)
    else:  # wasserstein, in units of the baseline's spread so one threshold fits every feature
        value = wasserstein(base.quantiles, array) / (base.std or 1.0)
    return FeatureDrift(value=value, drifted=value > threshold, **common)


def _categorical_drift(
    name: str, base: CategoricalBaseline, values: list[Any], statistic: Statistic, threshold: float
) -> FeatureDrift:
    present = [str(v) for v in values if not _is_missing(v)]
    total = len(values)
    common: dict[str, Any] = {
        "feature": name,
        "kind": "categorical",
        "statistic": statistic,
        "threshold": threshold,
        "values": len(present),
        "missing_rate": (total - len(present)) / total if total else 0.0,
        "baseline_missing_rate": base.missing_rate,
    }
    if len(present) < MIN_VALUES:
        note = f"{len(present)} values in the window; at least {MIN_VALUES} are needed to judge drift"
        return FeatureDrift(value=None, drifted=False, note=note, **common)
    known = set(base.frequencies)
    counted = Counter(v if v in known else OTHER for v in present)
    categories = list(base.frequencies) + ([OTHER] if OTHER not in known and OTHER in counted else [])
    expected = [float(base.frequencies.get(c, 0)) for c in categories]
    observed = [float(counted.get(c, 0)) for c in categories]
    common.update(_histogram_fields(tuple(categories), expected, observed))
    if statistic == "chi2":
        value = chi2_pvalue({c: int(e) for c, e in zip(categories, expected, strict=True)}, counted)
        return FeatureDrift(value=value, drifted=value < threshold, **common)
    if statistic == "jensenshannon":
        value = jensenshannon(expected, observed)
    else:  # linf
        value = max(
            abs(e / sum(expected) - o / sum(observed)) for e, o in zip(expected, observed, strict=True)
        )
    return FeatureDrift(value=value, drifted=value > threshold, **common)


def drift_report(
    baseline: Baseline,
    window: Table,
    *,
    statistics: Mapping[str, str] | None = None,
    thresholds: Mapping[str, float] | None = None,
) -> DriftReport:
    """Compare a window of inputs with a baseline, feature by feature.

    Numeric features use PSI and categorical ones Jensen-Shannon unless ``statistics`` says
    otherwise; each is judged against its threshold (``DEFAULT_THRESHOLDS`` unless given).
    Features with fewer than 30 values in the window are reported but not judged.

    Args:
        baseline: The model version's baseline (:func:`compute_baseline`).
        window: The inputs to judge: rows in the baseline's column order, ``{column: values}``,
            a numpy array or a pandas DataFrame.
        statistics: A statistic per feature name (or per kind: ``numeric``/``categorical``).
        thresholds: A threshold per feature name or per statistic name.

    Raises:
        ConfigError: the window's columns do not match the baseline's, or an unknown feature,
            statistic or threshold is named.
    """
    statistics = dict(statistics or {})
    thresholds = dict(thresholds or {})
    known = set(baseline.columns)
    for key in statistics:
        if key not in known and key not in ("numeric", "categorical"):
            raise ConfigError(
                f"statistics names {key!r}, which is not a feature of the baseline",
                field=f"statistics.{key}",
                hint=f"features are: {', '.join(baseline.columns)}",
            )
    for key in thresholds:
        if key not in known and key not in DEFAULT_THRESHOLDS:
            raise ConfigError(
                f"thresholds names {key!r}, which is neither a feature nor a statistic",
                field=f"thresholds.{key}",
                hint=f"statistics are: {', '.join(DEFAULT_THRESHOLDS)}",
            )
    table = _window_columns(baseline, window)
    results = []
    for name, base in baseline.features.items():
        default = DEFAULT_NUMERIC if base.kind == "numeric" else DEFAULT_CATEGORICAL
        statistic = _check_statistic(
            name, base.kind, statistics.get(name, statistics.get(base.kind, default))
        )
        threshold = float(thresholds.get(name, thresholds.get(statistic, DEFAULT_THRESHOLDS[statistic])))
        if isinstance(base, NumericBaseline):
            results.append(_numeric_drift(name, base, table[name], statistic, threshold))
        else:
            results.append(_categorical_drift(name, base, table[name], statistic, threshold))
    rows = len(next(iter(table.values()))) if table else 0
    return DriftReport(rows=rows, features=tuple(results))


def _window_columns(baseline: Baseline, window: Table) -> dict[str, list[Any]]:
    if isinstance(window, Mapping) or (hasattr(window, "columns") and hasattr(window, "to_numpy")):
        table = to_columns(window)
        missing = [c for c in baseline.columns if c not in table]
        if missing:
            raise ConfigError(
                f"the window has no column {', '.join(missing)}",
                field="window",
                hint=f"the baseline's columns are: {', '.join(baseline.columns)}",
            )
        return table
    rows = window.tolist() if hasattr(window, "tolist") else list(window)
    width = len(rows[0]) if rows and isinstance(rows[0], (list, tuple)) else 1
    if width != len(baseline.columns):
        raise ConfigError(
            f"window rows have {width} values, the baseline has {len(baseline.columns)} features",
            field="window",
            hint=f"send rows in this column order: {', '.join(baseline.columns)}",
        )
    return to_columns(rows, baseline.columns)
