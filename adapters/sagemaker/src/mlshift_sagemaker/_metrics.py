"""Per-variant request counts and latencies from SageMaker's CloudWatch metrics.

SageMaker publishes, per ``EndpointName`` and ``VariantName`` in the ``AWS/SageMaker``
namespace, one datapoint a minute: ``Invocations``, ``Invocation5XXErrors``,
``Invocation4XXErrors`` and ``ModelLatency`` (in **microseconds**). The rollout engine asks for
"the last N seconds" many times in a bake; CloudWatch only answers in whole minutes, so the
window is widened to the minutes it touches (up to 59 s earlier than asked) and read as one
period. On AWS the newest minute or two are not published yet while a bake runs: numbers lag
live traffic by one to three minutes. The numbers say which window they cover, and the adapter
declares the grain and the lag (``metrics_timing``: 60 s, the ``metric_lag`` option), so that
the rollout engine polls at its grain and refuses bakes shorter than the lag.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from typing import Any

from mlshift.adapter import VariantMetrics

__all__ = ["NAMESPACE", "metric_span", "read_variant_metrics"]

NAMESPACE = "AWS/SageMaker"
_MINUTE = timedelta(minutes=1)
#: Query id → (metric, statistic).
_QUERIES = {
    "requests": ("Invocations", "Sum"),
    "errors": ("Invocation5XXErrors", "Sum"),
    "client_errors": ("Invocation4XXErrors", "Sum"),
    "p50": ("ModelLatency", "p50"),
    "p99": ("ModelLatency", "p99"),
}


def metric_span(window: float, now: datetime) -> tuple[datetime, datetime]:
    """The whole minutes that cover the ``window`` seconds before ``now`` (start, end)."""
    start = (now - timedelta(seconds=window)).replace(second=0, microsecond=0)
    end = now.replace(second=0, microsecond=0) + _MINUTE
    return start, end


def read_variant_metrics(
    cloudwatch: Any, endpoint: str, variant: str, window: float, *, now: datetime | None = None
) -> VariantMetrics:
    """One ``GetMetricData`` call: requests, 5xx and 4xx errors and latency percentiles of one variant.

    The span is read as a single period, so each metric has at most one datapoint; should
    CloudWatch split it anyway, counts are added up and the worst percentile is kept. A
    variant with no datapoints (new, idle, or not published yet) reads as zero requests.

    Args:
        cloudwatch: A boto3 CloudWatch client.
        window: Seconds before ``now`` (widened to whole minutes, see the module docs).

    Returns:
        The numbers, with ``window_seconds`` the span really read: from the start of its first
        minute to ``now``.
    """
    now = now or datetime.now(timezone.utc)
    start, end = metric_span(window, now)
    period = int((end - start).total_seconds())
    dimensions = [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": variant}]
    queries = [
        {
            "Id": query_id,
            "MetricStat": {
                "Metric": {"Namespace": NAMESPACE, "MetricName": metric, "Dimensions": dimensions},
                "Period": period,
                "Stat": stat,
            },
        }
        for query_id, (metric, stat) in _QUERIES.items()
    ]
    values: dict[str, list[float]] = {query_id: [] for query_id in _QUERIES}
    request: dict[str, Any] = {"MetricDataQueries": queries, "StartTime": start, "EndTime": end}
    while True:
        response = cloudwatch.get_metric_data(**request)
        for result in response.get("MetricDataResults", []):
            values[result["Id"]].extend(float(v) for v in result.get("Values", []))
        if not response.get("NextToken"):
            break
        request["NextToken"] = response["NextToken"]

    def latency_ms(query_id: str) -> float | None:
        return max(values[query_id]) / 1000 if values[query_id] else None  # reported in microseconds

    return VariantMetrics(
        variant=variant,
        window_seconds=max(window, (now - start).total_seconds()),
        requests=round(sum(values["requests"])),
        errors=round(sum(values["errors"])),
        client_errors=round(sum(values["client_errors"])),
        p50_ms=latency_ms("p50"),
        p99_ms=latency_ms("p99"),
    )
