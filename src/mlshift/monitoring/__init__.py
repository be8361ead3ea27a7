"""Monitoring: what a model was trained on, and how far its live inputs have moved since.

The first building blocks are the baseline and the drift statistics::

    from mlshift.monitoring import compute_baseline, drift_report

    baseline = compute_baseline(x_train, columns=["age", "income", "plan"], categorical=["plan"])
    report = drift_report(baseline, last_hour_rows)
    report.drifted                      # ('income',)
    report["income"].value              # 0.41 (PSI), over its threshold of 0.2

Everything here needs numpy only (the ``chi2`` statistic also needs scipy) and no pandas;
a baseline is a small pydantic model, stored as JSON.
"""

from __future__ import annotations

from mlshift.monitoring._baseline import (
    Baseline,
    CategoricalBaseline,
    FeatureBaseline,
    NumericBaseline,
    compute_baseline,
)
from mlshift.monitoring._drift import (
    CATEGORICAL_STATISTICS,
    DEFAULT_THRESHOLDS,
    NUMERIC_STATISTICS,
    DriftReport,
    FeatureDrift,
    Statistic,
    drift_report,
)
from mlshift.monitoring._report import render_html

__all__ = [
    "CATEGORICAL_STATISTICS",
    "DEFAULT_THRESHOLDS",
    "NUMERIC_STATISTICS",
    "Baseline",
    "CategoricalBaseline",
    "DriftReport",
    "FeatureBaseline",
    "FeatureDrift",
    "NumericBaseline",
    "Statistic",
    "compute_baseline",
    "drift_report",
    "render_html",
]
