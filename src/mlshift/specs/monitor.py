"""Capture and monitor specs: record what an endpoint is asked, and watch it drift.

``capture`` sits on an :class:`~mlshift.specs.endpoint.EndpointSpec`; a :class:`MonitorSpec`
names an endpoint that captures and says which signals to judge, how often, and what to do
when one crosses its threshold. Both are provider-neutral; see ``docs/monitoring.md``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from mlshift.specs._base import Name, SpecModel
from mlshift.specs.rollout import Duration

__all__ = [
    "QUALITY_METRICS",
    "STATISTICS",
    "AlertAction",
    "CaptureSpec",
    "DataQuality",
    "FeatureDriftSignal",
    "ModelQualitySignal",
    "MonitorActions",
    "MonitorSpec",
    "PredictionDriftSignal",
    "RetrainAction",
]

#: Every drift statistic a monitor can name (which fit which kind: ``docs/monitoring.md``).
STATISTICS: tuple[str, ...] = ("psi", "ks", "jensenshannon", "wasserstein", "chi2", "linf")
StatisticName = Literal["psi", "ks", "jensenshannon", "wasserstein", "chi2", "linf"]
#: Model quality metrics: for class labels (higher is better) and for numbers (lower is better).
QUALITY_METRICS: tuple[str, ...] = ("accuracy", "f1", "mae", "rmse")
QualityMetric = Literal["accuracy", "f1", "mae", "rmse"]


class CaptureSpec(SpecModel):
    """``capture`` on an endpoint: record a sample of requests and their answers.

    Records are written in the background by the model server: a full queue drops records
    (and counts them) rather than slow or fail a caller. A spec without ``capture`` leaves a
    live endpoint's capture as it is; ``capture: {enabled: false}`` stops it.

    Attributes:
        enabled: ``false`` stops capturing (files already written are kept).
        sample_rate: The share of requests recorded, above 0 and at most 1.
        max_file_mb: A capture file is closed and a new one started past this size (files
            also roll over every hour).
        queue_size: Requests waiting to be written per server process; more are dropped.
    """

    enabled: bool = True
    sample_rate: float = Field(default=1.0, gt=0.0, le=1.0)
    max_file_mb: float = Field(default=16.0, gt=0.0, le=1024.0)
    queue_size: int = Field(default=10_000, ge=1, le=1_000_000)

    def server_settings_set(self) -> list[str]:
        """The settings only mlshift's model server uses, where given: ``["capture.queue_size"]``.

        A cloud that records requests itself (SageMaker, Azure ML, Vertex AI) honours the rate
        but not these; its plan notes them rather than drop them silently.
        """
        return [
            f"capture.{name}"
            for name in ("max_file_mb", "queue_size")
            if getattr(self, name) != type(self).model_fields[name].default
        ]

    def describe(self) -> str:
        """How a plan shows it: ``capture sample_rate 0.2, max_file_mb 16, queue_size 10000``."""
        if not self.enabled:
            return "capture off"
        return (
            f"capture sample_rate {self.sample_rate:g}, max_file_mb {self.max_file_mb:g}, "
            f"queue_size {self.queue_size}"
        )


class FeatureDriftSignal(SpecModel):
    """Input drift, feature by feature, against the served version's baseline.

    Attributes:
        statistics: A statistic per feature name or per kind (``numeric``, ``categorical``);
            by default PSI for numeric features and Jensen-Shannon for categorical ones.
        thresholds: A threshold per feature name or per statistic (defaults:
            ``mlshift.monitoring.DEFAULT_THRESHOLDS``).
    """

    enabled: bool = True
    statistics: dict[str, StatisticName] = Field(default_factory=dict)
    thresholds: dict[str, float] = Field(default_factory=dict)


class PredictionDriftSignal(SpecModel):
    """Drift of the model's answers against the predictions it made on its baseline.

    Attributes:
        statistic: For numeric answers (default ``psi``); categorical answers (class labels)
            use ``jensenshannon`` unless a categorical statistic is named.
        threshold: Its threshold (default: the statistic's default).
    """

    enabled: bool = True
    statistic: StatisticName | None = None
    threshold: float | None = None


class ModelQualitySignal(SpecModel):
    """Model quality on captured requests whose ground truth was posted later, joined by request id.

    Labels are posted with ``client.monitors.labels(endpoint, {request_id: label})`` or
    ``mlshift monitors labels ENDPOINT FILE``; a run scores the answers of the labelled requests
    captured in its window.

    Attributes:
        metric: ``accuracy`` or ``f1`` (macro-averaged over the classes) for class labels,
            ``mae`` or ``rmse`` for numbers.
        threshold: Flag quality when ``accuracy``/``f1`` falls below this, or ``mae``/``rmse``
            rises above it.
        max_drop: Flag quality when the metric is this much worse than the reference.
        reference: The metric's expected value; default: the one recorded with the version's
            baseline (``client.models.register(..., baseline=x, baseline_labels=y)``).
        min_labels: Fewer labelled rows than this: reported as "not enough labels", not judged.
        window: How far back labelled requests count (labels often come later than the
            requests); default: the monitor's own window.
    """

    enabled: bool = True
    metric: QualityMetric = "accuracy"
    threshold: float | None = None
    max_drop: float | None = Field(default=None, ge=0.0)
    reference: float | None = None
    min_labels: int = Field(default=30, ge=1)
    window: Duration | None = None

    @model_validator(mode="after")
    def _one_limit(self) -> ModelQualitySignal:
        if self.threshold is None and self.max_drop is None:
            raise ValueError("give a threshold, a max_drop (against the reference), or both")
        if self.window is not None and self.window <= 0:
            raise ValueError("window must be longer than 0 seconds")
        return self


class DataQuality(SpecModel):
    """Data quality limits, judged on every window.

    Attributes:
        missing: The largest rise of a feature's missing rate over its baseline's (0.05: five
            points more than in training).
        out_of_range: The largest share of a numeric feature's values outside the baseline's
            minimum and maximum.
        wrong_type: The largest share of a numeric feature's values that are not numbers.
    """

    enabled: bool = True
    missing: float = Field(default=0.05, ge=0.0, le=1.0)
    out_of_range: float = Field(default=0.05, ge=0.0, le=1.0)
    wrong_type: float = Field(default=0.0, ge=0.0, le=1.0)


class AlertAction(SpecModel):
    """Tell someone when a drift episode starts: POST the report summary to a webhook, or run a
    command with the summary's JSON on its standard input.

    Attributes:
        webhook: An ``http(s)://`` URL that receives a JSON POST.
        command: A program and its arguments (no shell).
        timeout: Seconds either may take before the alert counts as failed.
    """

    webhook: str | None = None
    command: tuple[str, ...] | None = None
    timeout: float = Field(default=10.0, gt=0.0, le=300.0)

    @model_validator(mode="after")
    def _one_way(self) -> AlertAction:
        if (self.webhook is None) == (self.command is None):
            raise ValueError("give exactly one of webhook or command")
        if self.webhook is not None and not self.webhook.startswith(("http://", "https://")):
            raise ValueError(f"webhook must be an http:// or https:// URL, got {self.webhook!r}")
        if self.command is not None and not self.command:
            raise ValueError("command must name a program")
        return self


class RetrainAction(SpecModel):
    """Run a pipeline once per drift episode, with the drift report as an input.

    Attributes:
        pipeline: ``path/to/file.py:PIPELINE`` or ``package.module:PIPELINE`` (a relative
            path is read from where the monitor runs).
        params: Values for the pipeline's other parameters.
        report_param: The pipeline parameter that receives the drift report's path (a JSON
            file that also names the window's captured rows).
    """

    pipeline: str = Field(min_length=1)
    params: dict[str, Any] = Field(default_factory=dict)
    report_param: str = "drift_report"


class MonitorActions(SpecModel):
    """What a monitor does with each run's result. Every run is recorded (a JSON and an HTML
    report); ``alert`` and ``retrain`` act once per drift episode."""

    alert: AlertAction | None = None
    retrain: RetrainAction | None = None


class MonitorSpec(SpecModel):
    """A monitor: judge an endpoint's captured traffic against its model's baseline.

    A drift *episode* starts with the first run that finds drift and ends with the first run
    that finds none (or when the endpoint serves another version); alerts and retraining
    happen once per episode.

    Attributes:
        name: The monitor's name.
        endpoint: An endpoint whose spec has ``capture``.
        features: Input drift per feature.
        predictions: Drift of the model's answers.
        data_quality: Missing values, out-of-range values and values of the wrong type.
        model_quality: A metric of the answers against ground-truth labels joined by request
            id (off unless given).
        window: How far back a run looks; it judges the requests captured since the previous
            run, at most this old (``"1h"``, ``"30m"``).
        min_rows: Below this many captured rows a run reports but judges nothing.
        schedule: A cron expression for ``mlshift monitors schedule`` (``"*/15 * * * *"``).
        actions: Alert and retrain.
    """

    name: Name
    endpoint: Name
    features: FeatureDriftSignal = Field(default_factory=FeatureDriftSignal)
    predictions: PredictionDriftSignal = Field(default_factory=PredictionDriftSignal)
    data_quality: DataQuality = Field(default_factory=DataQuality)
    model_quality: ModelQualitySignal | None = None
    window: Duration = 3600.0
    min_rows: int = Field(default=100, ge=1)
    schedule: str | None = None
    actions: MonitorActions = Field(default_factory=MonitorActions)

    @field_validator("window")
    @classmethod
    def _positive(cls, value: float) -> float:
        if value <= 0:
            raise ValueError("window must be longer than 0 seconds")
        return value
