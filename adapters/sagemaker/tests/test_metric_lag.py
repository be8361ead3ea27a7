"""CloudWatch's grain and lag, as the SageMaker target declares them to mlshift's rollout engine."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest

import mlshift
from mlshift.adapter import MetricsTiming
from mlshift.errors import ConfigError
from mlshift.plan import GateReading
from mlshift.specs.rollout import Canary, HealthGate, Probe
from mlshift_sagemaker.options import SageMakerOptions
from mlshift_sagemaker.testing import FakeSageMaker
from sagemaker_helpers import TARGET

#: The real lag, not the kit's 0: what a user gets on AWS.
ON_AWS = f"{TARGET}?metric_lag=180"


@pytest.fixture
def on_aws(aws: FakeSageMaker, iris: dict[str, Any]) -> Iterator[mlshift.Client]:
    """iris:1 serving "iris-ep" as variant "main" on a target declaring CloudWatch's real lag."""
    with mlshift.connect(ON_AWS) as client:
        client.models.register("iris", iris["v1"], framework="sklearn")
        client.models.register("iris", iris["v2"], framework="sklearn")
        client.endpoints.deploy("iris-ep", "iris:1", variant="main")
        yield client


def test_cloudwatch_timing_is_declared_and_the_kit_declares_no_lag(aws: FakeSageMaker) -> None:
    assert SageMakerOptions.from_sources({}, {}, environ={}).metric_lag == 180
    with mlshift.connect(TARGET) as kit, mlshift.connect(ON_AWS) as real:
        assert kit.adapter.endpoints.metrics_timing == MetricsTiming(resolution=60.0, lag=0.0)
        assert real.adapter.endpoints.metrics_timing == MetricsTiming(resolution=60.0, lag=180.0)
    with pytest.raises(ConfigError, match=r"target\.options\.metric_lag"):
        mlshift.connect(f"{TARGET}?metric_lag=-5")


def test_an_engine_bake_shorter_than_the_lag_is_refused_before_any_call(
    on_aws: mlshift.Client, aws: FakeSageMaker
) -> None:
    mark = len(aws.calls)
    with pytest.raises(ConfigError) as caught:
        # A new variant name: SageMaker's blue/green cannot run it, mlshift's engine would.
        on_aws.endpoints.deploy("iris-ep", "iris:2", rollout=Canary(percent=20, bake=30))
    assert str(caught.value).startswith(
        "endpoint 'iris-ep': rollout.bake is 30 s, but sagemaker's metrics arrive up to 180 s late: "
        "bake at least 180 s"
    )
    assert caught.value.field == "rollout.bake"
    assert aws.mutating_calls(since=mark) == []


def test_a_native_rollout_is_not_held_to_the_lag(on_aws: mlshift.Client, aws: FakeSageMaker) -> None:
    mark = len(aws.calls)
    on_aws.endpoints.deploy("iris-ep", "iris:2", variant="main", rollout=Canary(percent=20, bake=30))
    assert "PutMetricAlarm" in aws.operations(since=mark)  # SageMaker's guardrails judged it
    assert on_aws.endpoints.get("iris-ep").variants[0].model == "iris:2"


def test_a_probe_gate_runs_on_the_engine_without_waiting_for_cloudwatch(
    on_aws: mlshift.Client, aws: FakeSageMaker, iris: dict[str, Any]
) -> None:
    gate = HealthGate(min_requests=5, probe=Probe(payload={"instances": iris["rows"]}, rate=40))
    held: list[bool] = []

    def hold_for_probe_answers(reading: GateReading) -> bool:
        # The 1 s bake ends with the gate's 5 probe answers in, however slow the machine:
        # the first reading waits for them (counted by the fake as each request arrives, so
        # two more than the gate needs). hold_bake_for_requests reads CloudWatch, which a
        # probe gate on a lagging target is not judged on.
        if held:
            return True
        held.append(True)
        deadline = time.monotonic() + 300  # bounds a hang only
        while aws.invocations[("iris-ep", "iris-v2")] < gate.min_requests + 2:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)
        return True

    mark = len(aws.calls)
    state = on_aws.endpoints.deploy(
        "iris-ep", "iris:2", rollout=Canary(percent=20, bake=1, gate=gate), checks=[hold_for_probe_answers]
    )
    assert [(v.name, v.model, v.weight) for v in state.variants] == [("iris-v2", "iris:2", 100)]
    record = on_aws.endpoints.history("iris-ep")[0]
    assert record.phase == "succeeded" and record.measurements["requests"] >= 5
    # Judged on the probes' answers: at most the one baseline read before the rollout.
    assert aws.operations(since=mark).count("GetMetricData") <= 1


def test_read_metrics_reports_the_whole_minutes_it_read(deployed: mlshift.Client) -> None:
    metrics = deployed.adapter.endpoints.read_metrics("iris-ep", "iris-v1", 5)
    assert metrics is not None and 5 <= metrics.window_seconds <= 65
