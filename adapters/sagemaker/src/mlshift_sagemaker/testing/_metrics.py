"""The endpoint metrics SageMaker publishes to CloudWatch, for the fake's ``InvokeEndpoint``.

Each answered invocation becomes datapoints in moto's CloudWatch, under the dimensions and
units SageMaker uses, so ``read_metrics`` (and anything else reading ``AWS/SageMaker``) sees
the requests a test sent. Unlike AWS they are visible at once: the fake has no publishing lag.
moto cannot compute percentile statistics (``p99``), so the fake adds them while it is active.
"""

from __future__ import annotations

import contextlib
import math
import re
from collections.abc import Iterator
from typing import Any

__all__ = ["moto_percentiles", "publish_invocation"]

NAMESPACE = "AWS/SageMaker"
_PERCENTILE = re.compile(r"p(\d{1,2}(?:\.\d+)?)")


def publish_invocation(cloudwatch: Any, endpoint: str, variant: str, status: int, seconds: float) -> None:
    """Record one invocation of ``endpoint``/``variant`` as SageMaker would.

    ``Invocations`` counts every request the model answered; ``Invocation4XXErrors`` and
    ``Invocation5XXErrors`` are 1 or 0 per request (SageMaker publishes the zeros too);
    ``ModelLatency`` is in microseconds.

    Args:
        cloudwatch: moto's CloudWatch backend for the region.
        status: The model server's HTTP status.
        seconds: How long the model server took.
    """
    dimensions = [{"Name": "EndpointName", "Value": endpoint}, {"Name": "VariantName", "Value": variant}]
    datapoints = [
        ("Invocations", 1.0, "None"),
        ("Invocation4XXErrors", float(400 <= status < 500), "None"),
        ("Invocation5XXErrors", float(status >= 500), "None"),
        ("ModelLatency", seconds * 1_000_000, "Microseconds"),
    ]
    cloudwatch.put_metric_data(
        NAMESPACE,
        [
            {"MetricName": name, "Dimensions": dimensions, "Value": value, "Unit": unit}
            for name, value, unit in datapoints
        ],
    )


@contextlib.contextmanager
def moto_percentiles() -> Iterator[None]:
    """While active, moto's CloudWatch answers ``pNN`` statistics (nearest rank, as CloudWatch)."""
    from moto.cloudwatch.models import Statistics

    original = Statistics.get_statistics_for_type

    def get_statistics_for_type(self: Any, stat: str) -> Any:
        match = _PERCENTILE.fullmatch(stat)
        if match is None:
            return original(self, stat)
        values = sorted(self.metric_single_values_list)
        if not values:
            return None
        rank = math.ceil(float(match[1]) / 100 * len(values))
        return values[min(max(rank, 1), len(values)) - 1]

    Statistics.get_statistics_for_type = get_statistics_for_type  # type: ignore[method-assign]
    try:
        yield
    finally:
        Statistics.get_statistics_for_type = original  # type: ignore[method-assign]
