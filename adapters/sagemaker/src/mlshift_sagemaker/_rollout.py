"""Neutral rollout strategies → SageMaker deployment guardrails (blue/green with auto-rollback).

=================================  ==============================================================
mlshift                            SageMaker ``DeploymentConfig.BlueGreenUpdatePolicy``
=================================  ==============================================================
``Canary(percent, bake)``          ``CANARY``, canary size ``percent``% of the new fleet, wait ``bake``
``Linear(step_percent, interval)`` ``LINEAR``, step ``step_percent``% of the new fleet, wait ``interval``
``BlueGreen(bake)``                ``ALL_AT_ONCE``, wait ``bake`` with the old fleet still up
``HealthGate.max_error_rate``      a CloudWatch alarm per variant: 5xx / invocations > the rate
``HealthGate.max_p99``             a CloudWatch alarm per variant: ``ModelLatency`` p99 > the limit
``max_client_error_increase``      a CloudWatch alarm per variant: 4xx / invocations > the share
                                   the variant had in the hour before the rollout + the increase
``HealthGate.max_p99_ratio``       not native: old and new fleets share a variant's metrics, so
                                   mlshift's engine runs the rollout (variants side by side)
=================================  ==============================================================

The alarms go into ``AutoRollbackConfiguration``: if one fires during a bake, SageMaker moves all
traffic back to the old fleet by itself. mlshift creates the alarms before the update and deletes
them when it has finished, either way.

SageMaker's limits are checked at plan time (:func:`native_refusal`): the new endpoint
configuration must keep the variant names of the old one, a canary is at most 50% of the new
fleet, a linear step 10-50%, a wait at most an hour, at most 10 alarms, and there are no probes.
A rollout outside them is not refused: the plan runs it on mlshift's own rollout engine instead,
and says why.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

from pydantic import TypeAdapter

from mlshift.errors import UnsupportedOperation
from mlshift.specs.rollout import AllAtOnce, BlueGreen, Canary, HealthGate, Linear, RolloutStrategy, Shadow

__all__ = ["alarm_requests", "check_native_rollout", "deployment_config", "native_refusal", "parse_strategy"]

#: SageMaker's limits on a blue/green update.
MAX_WAIT_SECONDS = 3600
MAX_ALARMS = 10
#: Time allowed for provisioning the new fleet, on top of the bakes, before SageMaker gives up.
PROVISIONING_ALLOWANCE = 1800

_STRATEGIES: TypeAdapter[AllAtOnce | Canary | Linear | BlueGreen | Shadow] = TypeAdapter(RolloutStrategy)


def parse_strategy(data: Mapping[str, Any]) -> AllAtOnce | Canary | Linear | BlueGreen | Shadow:
    """A strategy from its JSON form (as :class:`~mlshift.adapter.NativeRollout` carries it)."""
    return _STRATEGIES.validate_python(dict(data))


def _alarms_per_variant(gate: HealthGate) -> int:
    return 1 + (gate.max_p99 is not None) + (gate.max_client_error_increase is not None)


def native_refusal(
    strategy: AllAtOnce | Canary | Linear | BlueGreen | Shadow,
    wanted: Sequence[str],
    live: Sequence[str] | None,
) -> str | None:
    """Why SageMaker cannot run this rollout as a blue/green update (``None``: it can).

    Everything named here is a limit of SageMaker's deployment guardrails only: mlshift's own
    engine runs such a rollout on the endpoint's primitives instead (weights, CloudWatch
    metrics, ``TargetVariant`` probes).

    Args:
        wanted: The variant names the spec asks for.
        live: The variant names live now (``None`` if the endpoint does not exist yet).
    """
    if isinstance(strategy, AllAtOnce):
        return None
    if isinstance(strategy, Shadow):
        return "shadow rollouts compare answers on mlshift's engine"
    if live is not None and sorted(live) != sorted(wanted):
        return (
            f"the variants change ({', '.join(live)} -> {', '.join(wanted)}) and SageMaker's blue/green "
            "update only replaces variants under the same names"
        )
    gate = strategy.gate
    if gate.probe is not None:
        return "the gate sends probe requests, and SageMaker's guardrails judge by CloudWatch alarms only"
    if gate.max_p99_ratio is not None:
        return (
            "the gate compares p99 latency with the baseline's, and during a blue/green update the old "
            "and new fleets share one variant's metrics"
        )
    if isinstance(strategy, Canary) and strategy.percent > 50:
        return f"a SageMaker canary is at most 50% of the new fleet, got {strategy.percent}%"
    if isinstance(strategy, Linear) and not 10 <= strategy.step_percent <= 50:
        return f"SageMaker's linear steps are 10-50% of the new fleet, got {strategy.step_percent}%"
    wait, label = (strategy.interval, "interval") if isinstance(strategy, Linear) else (strategy.bake, "bake")
    if wait > MAX_WAIT_SECONDS:
        return f"SageMaker bakes for at most {MAX_WAIT_SECONDS} s per step, the {label} is {wait:g} s"
    alarms = len(wanted) * _alarms_per_variant(gate)
    if alarms > MAX_ALARMS:
        return f"the gate needs {alarms} CloudWatch alarms, SageMaker watches at most {MAX_ALARMS}"
    return None


def check_native_rollout(
    endpoint: str,
    strategy: AllAtOnce | Canary | Linear | BlueGreen | Shadow,
    wanted: Sequence[str],
    live: Sequence[str] | None,
) -> None:
    """Refuse a rollout handed to SageMaker that its guardrails cannot run.

    The planner sends such rollouts to mlshift's engine (see :func:`native_refusal`), so this
    only trips on a hand-made plan.

    Raises:
        UnsupportedOperation: with the reason.
    """
    reason = native_refusal(strategy, wanted, live)
    if reason is not None:
        raise UnsupportedOperation(
            f"endpoint {endpoint!r}: SageMaker cannot run this {strategy.strategy} rollout natively: "
            f"{reason}",
            hint="plan it again: the plan then runs it on mlshift's rollout engine",
        )


def deployment_config(strategy: Canary | Linear | BlueGreen, alarm_names: Sequence[str]) -> dict[str, Any]:
    """The ``DeploymentConfig`` of ``update_endpoint`` for a strategy and its alarms."""
    routing: dict[str, Any]
    if isinstance(strategy, Canary):
        wait = math.ceil(strategy.bake)
        routing = {
            "Type": "CANARY",
            "CanarySize": {"Type": "CAPACITY_PERCENT", "Value": strategy.percent},
            "WaitIntervalInSeconds": wait,
        }
        total = wait
    elif isinstance(strategy, Linear):
        wait = math.ceil(strategy.interval)
        routing = {
            "Type": "LINEAR",
            "LinearStepSize": {"Type": "CAPACITY_PERCENT", "Value": strategy.step_percent},
            "WaitIntervalInSeconds": wait,
        }
        total = wait * math.ceil(100 / strategy.step_percent)
    else:
        wait = math.ceil(strategy.bake)
        routing = {"Type": "ALL_AT_ONCE", "WaitIntervalInSeconds": wait}
        total = wait
    config: dict[str, Any] = {
        "BlueGreenUpdatePolicy": {
            "TrafficRoutingConfiguration": routing,
            "TerminationWaitInSeconds": 0,
            "MaximumExecutionTimeoutInSeconds": min(max(total + PROVISIONING_ALLOWANCE, 600), 28800),
        }
    }
    if alarm_names:
        config["AutoRollbackConfiguration"] = {"Alarms": [{"AlarmName": n} for n in alarm_names]}
    return config


def alarm_requests(
    endpoint: str,
    variants: Sequence[str],
    gate: HealthGate,
    run_id: str,
    tags: list[dict[str, str]],
    client_error_rates: Mapping[str, float] | None = None,
) -> list[dict[str, Any]]:
    """``put_metric_alarm`` requests that watch each variant against the gate.

    Args:
        client_error_rates: Each variant's share of 4xx answers before the rollout (the
            baseline the new fleet is judged against; missing: 0).
    """

    def metric(metric_id: str, name: str, variant: str) -> dict[str, Any]:
        return {
            "Id": metric_id,
            "MetricStat": {
                "Metric": {
                    "Namespace": "AWS/SageMaker",
                    "MetricName": name,
                    "Dimensions": [
                        {"Name": "EndpointName", "Value": endpoint},
                        {"Name": "VariantName", "Value": variant},
                    ],
                },
                "Period": 60,
                "Stat": "Sum",
            },
            "ReturnData": False,
        }

    requests: list[dict[str, Any]] = []
    for variant in variants:
        base = f"mlshift-{endpoint}-{variant}-{run_id}"
        requests.append(
            {
                "AlarmName": f"{base}-errors",
                "AlarmDescription": f"mlshift rollout {run_id} of {endpoint}/{variant}: 5xx share above "
                f"{gate.max_error_rate:.2%}",
                "Metrics": [
                    metric("errors", "Invocation5XXErrors", variant),
                    metric("invocations", "Invocations", variant),
                    {
                        "Id": "error_rate",
                        "Expression": "FILL(errors, 0) / FILL(invocations, 1)",
                        "Label": "5xx share",
                        "ReturnData": True,
                    },
                ],
                "ComparisonOperator": "GreaterThanThreshold",
                "Threshold": gate.max_error_rate,
                "EvaluationPeriods": 1,
                "DatapointsToAlarm": 1,
                "TreatMissingData": "notBreaching",
                "Tags": tags,
            }
        )
        if gate.max_client_error_increase is not None:
            before = (client_error_rates or {}).get(variant, 0.0)
            limit = min(1.0, before + gate.max_client_error_increase)
            requests.append(
                {
                    "AlarmName": f"{base}-client-errors",
                    "AlarmDescription": f"mlshift rollout {run_id} of {endpoint}/{variant}: 4xx share above "
                    f"{limit:.2%} ({before:.2%} before the rollout + "
                    f"{gate.max_client_error_increase * 100:g} points)",
                    "Metrics": [
                        metric("client_errors", "Invocation4XXErrors", variant),
                        metric("invocations", "Invocations", variant),
                        {
                            "Id": "client_error_rate",
                            "Expression": "FILL(client_errors, 0) / FILL(invocations, 1)",
                            "Label": "4xx share",
                            "ReturnData": True,
                        },
                    ],
                    "ComparisonOperator": "GreaterThanThreshold",
                    "Threshold": limit,
                    "EvaluationPeriods": 1,
                    "DatapointsToAlarm": 1,
                    "TreatMissingData": "notBreaching",
                    "Tags": tags,
                }
            )
        if gate.max_p99 is not None:
            requests.append(
                {
                    "AlarmName": f"{base}-p99",
                    "AlarmDescription": f"mlshift rollout {run_id} of {endpoint}/{variant}: p99 latency "
                    f"above {gate.max_p99 * 1000:g} ms",
                    "Namespace": "AWS/SageMaker",
                    "MetricName": "ModelLatency",
                    "Dimensions": [
                        {"Name": "EndpointName", "Value": endpoint},
                        {"Name": "VariantName", "Value": variant},
                    ],
                    "ExtendedStatistic": "p99",
                    "Period": 60,
                    # ModelLatency is reported in microseconds.
                    "Threshold": gate.max_p99 * 1_000_000,
                    "ComparisonOperator": "GreaterThanThreshold",
                    "EvaluationPeriods": 1,
                    "DatapointsToAlarm": 1,
                    "TreatMissingData": "notBreaching",
                    "Tags": tags,
                }
            )
    return requests
