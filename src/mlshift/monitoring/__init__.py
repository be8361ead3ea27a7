"""Monitoring: what a model was trained on, and how far its live inputs have moved since.

Endpoints capture a sample of their traffic (``capture:`` on the endpoint spec); a version
keeps its baseline (``client.models.register(..., baseline=x_train)``); monitors
(``client.monitors``) judge captured windows against it, record reports, alert and retrain.
The building blocks are usable on their own::

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
from mlshift.monitoring._monitor import PREDICTION, MonitorRun, read_window
from mlshift.monitoring._quality import ModelQuality, load_labels, quality_metric
from mlshift.monitoring._report import render_html
from mlshift.monitoring._store import VersionBaseline
from mlshift.specs.monitor import CaptureSpec, ModelQualitySignal, MonitorSpec

__all__ = [
    "CATEGORICAL_STATISTICS",
    "DEFAULT_THRESHOLDS",
    "NUMERIC_STATISTICS",
    "PREDICTION",
    "Baseline",
    "CaptureSpec",
    "CategoricalBaseline",
    "DriftReport",
    "FeatureBaseline",
    "FeatureDrift",
    "ModelQuality",
    "ModelQualitySignal",
    "MonitorRun",
    "MonitorSpec",
    "NumericBaseline",
    "Statistic",
    "VersionBaseline",
    "compute_baseline",
    "drift_report",
    "load_labels",
    "quality_metric",
    "read_window",
    "render_html",
]
