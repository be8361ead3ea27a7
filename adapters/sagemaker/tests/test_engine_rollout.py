"""Rollouts SageMaker's guardrails cannot run go to mlshift's engine: weights, CloudWatch, probes."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

import boto3
import pytest

import mlshift
from mlshift.errors import ConfigError, InvalidPayload, MlshiftError
from mlshift.plan import ApplyEvent, GateReading, Rollout
from mlshift.specs import EndpointSpec
from mlshift.specs.rollout import Canary, HealthGate, Probe
from mlshift.testing.rollouts import canary_under_load, failing_predictor, hold_bake_for_requests
from mlshift_sagemaker.testing import FakeSageMaker

#: Short bakes: the fake publishes metrics at once, and canary_under_load holds a bake until
#: the gate has its requests.
GATE = HealthGate(max_error_rate=0.05, min_requests=5)


class Events:
    def __init__(self) -> None:
        self.events: list[ApplyEvent] = []

    def __call__(self, event: ApplyEvent) -> None:
        self.events.append(event)

    @property
    def rollout(self) -> Rollout:
        return next(e.action for e in self.events if isinstance(e.action, Rollout))

    @property
    def splits(self) -> list[dict[str, int]]:
        return [e.detail["weights"] for e in self.events if e.detail and "weights" in e.detail]


def leftovers() -> dict[str, list[str]]:
    """What exists in SageMaker and CloudWatch, through the API (not the fake's own view)."""
    sm, cw = boto3.client("sagemaker"), boto3.client("cloudwatch")
    return {
        "models": sorted(m["ModelName"] for m in sm.list_models()["Models"]),
        "configs": sorted(c["EndpointConfigName"] for c in sm.list_endpoint_configs()["EndpointConfigs"]),
        "endpoints": sorted(e["EndpointName"] for e in sm.list_endpoints()["Endpoints"]),
        "alarms": sorted(a["AlarmName"] for a in cw.describe_alarms()["MetricAlarms"]),
    }


def test_a_canary_to_a_new_variant_runs_on_the_engine_under_traffic(
    deployed: mlshift.Client, aws: FakeSageMaker, iris: dict[str, Any]
) -> None:
    seen = Events()
    mark = len(aws.calls)
    outcome = canary_under_load(
        deployed,
        "iris-ep",
        "iris:2",
        Canary(percent=20, bake=1.5, gate=GATE),
        rows=iris["rows"],
        on_event=seen,
    )
    assert outcome.failure is None, outcome.failure
    state, answers = outcome.state, outcome.answers
    assert state is not None
    rollout = seen.rollout
    assert rollout.native is False
    assert (
        rollout.engine_reason is not None and "variants change (iris-v1 -> iris-v2)" in rollout.engine_reason
    )
    assert "mlshift runs it: the variants change" in rollout.describe()

    assert [(v.name, v.model, v.weight) for v in state.variants] == [("iris-v2", "iris:2", 100)]
    assert seen.splits == [{"iris-v1": 80, "iris-v2": 20}, {"iris-v1": 0, "iris-v2": 100}]
    assert deployed.endpoints.predict("iris-ep", iris["rows"]).predictions == iris["expected_v2"]
    # The endpoint answered throughout, from both versions, with each one's real predictions.
    assert answers[f"iris-v1 {iris['expected_v1']}"] > 0
    assert answers[f"iris-v2 {iris['expected_v2']}"] > 0
    assert set(answers) == {f"iris-v1 {iris['expected_v1']}", f"iris-v2 {iris['expected_v2']}"}

    operations = aws.operations(since=mark)
    assert "GetMetricData" in operations and "PutMetricAlarm" not in operations
    updates = [c.params or {} for c in aws.calls[mark:] if c.operation == "UpdateEndpoint"]
    assert updates and not any("DeploymentConfig" in u for u in updates)  # weights, not guardrails
    record = deployed.endpoints.history("iris-ep")[0]
    assert (record.strategy, record.phase) == ("canary", "succeeded")
    assert record.measurements["requests"] >= GATE.min_requests and record.measurements["errors"] == 0
    assert len(leftovers()["models"]) == len(leftovers()["configs"]) == 1  # the old ones are gone


def test_a_broken_version_trips_the_gate_and_leaves_nothing_behind(
    deployed: mlshift.Client, aws: FakeSageMaker, iris: dict[str, Any], tmp_path: Path
) -> None:
    broken = failing_predictor(tmp_path / "failing-predictor")
    deployed.models.register("iris", broken, framework="predictor")  # iris:3
    before = leftovers()
    outcome = canary_under_load(
        deployed, "iris-ep", "iris:3", Canary(percent=20, bake=30, gate=GATE), rows=iris["rows"]
    )
    error, answers = outcome.failure, outcome.answers
    assert error is not None
    assert "gate failed at 20% traffic: error rate 100.0% > 5.0%" in str(error)
    assert error.measurements["errors"] >= GATE.min_requests
    assert error.measurements["elapsed_s"] < 30  # tripped early, not at the end of the bake
    assert answers["error ProviderError"] > 0  # users saw the broken version, briefly

    state = deployed.endpoints.get("iris-ep")
    assert [(v.name, v.model, v.weight) for v in state.variants] == [("iris-v1", "iris:1", 100)]
    assert deployed.endpoints.predict("iris-ep", iris["rows"]).predictions == iris["expected_v1"]
    assert leftovers() == before  # no model, endpoint configuration or alarm left behind
    record = deployed.endpoints.history("iris-ep")[0]
    assert record.phase == "rolled_back" and "error rate" in (record.reason or "")


def test_a_probe_gate_runs_on_the_engine_through_target_variant(
    main: mlshift.Client, aws: FakeSageMaker, iris: dict[str, Any]
) -> None:
    seen = Events()
    gate = HealthGate(min_requests=5, probe=Probe(payload={"instances": iris["rows"]}, rate=40))
    mark = len(aws.calls)
    state = main.endpoints.deploy(
        "iris-ep",
        "iris:2",
        variant="main",
        rollout=Canary(percent=20, bake=1, gate=gate),
        on_event=seen,
        checks=[hold_bake_for_requests(main, "iris-ep", gate.min_requests)],  # 5 probes in the 1 s bake
    )
    assert seen.rollout.native is False and "probe" in (seen.rollout.engine_reason or "")
    assert [(v.name, v.model, v.weight) for v in state.variants] == [("main", "iris:2", 100)]
    assert main.endpoints.predict("iris-ep", iris["rows"]).predictions == iris["expected_v2"]
    # Nothing but the probes sent traffic, straight to the new version beside the old one.
    assert aws.invocations[("iris-ep", "main-next")] >= gate.min_requests
    assert "PutMetricAlarm" not in aws.operations(since=mark)
    assert main.endpoints.history("iris-ep")[0].phase == "succeeded"


def test_a_canary_that_keeps_its_variant_names_stays_native(main: mlshift.Client, aws: FakeSageMaker) -> None:
    seen = Events()
    mark = len(aws.calls)
    main.endpoints.deploy(
        "iris-ep", "iris:2", variant="main", rollout=Canary(percent=20, bake=60), on_event=seen
    )
    assert seen.rollout.native is True and seen.rollout.engine_reason is None
    assert seen.rollout.describe().endswith("the sagemaker target runs it natively")
    assert "PutMetricAlarm" in aws.operations(since=mark)
    # One read: the variant's 4xx share before the update, for its alarm; the engine polls none.
    assert aws.operations(since=mark).count("GetMetricData") == 1


def test_read_metrics_counts_what_was_sent(
    deployed: mlshift.Client, aws: FakeSageMaker, iris: dict[str, Any], tmp_path: Path
) -> None:
    for _ in range(7):
        deployed.endpoints.predict("iris-ep", iris["rows"])
    for _ in range(2):
        with pytest.raises(InvalidPayload):
            deployed.endpoints.predict("iris-ep", [[1.0, 2.0]])  # a 4xx: a request, not an error
    broken = failing_predictor(tmp_path / "failing-predictor")
    deployed.models.register("iris", broken, framework="predictor")  # iris:3
    deployed.endpoints.deploy("broken-ep", "iris:3")
    for _ in range(3):
        with pytest.raises(MlshiftError):
            deployed.endpoints.predict("broken-ep", iris["rows"])

    endpoints = deployed.adapter.endpoints
    good = endpoints.read_metrics("iris-ep", "iris-v1", 60)
    bad = endpoints.read_metrics("broken-ep", "iris-v3", 60)
    idle = endpoints.read_metrics("iris-ep", "nobody", 60)
    assert good is not None and bad is not None and idle is not None
    assert (good.requests, good.errors, good.client_errors) == (9, 0, 2)
    assert (bad.requests, bad.errors, bad.client_errors) == (3, 3, 0)
    assert (idle.requests, idle.errors, idle.p99_ms) == (0, 0, None)
    assert good.p50_ms is not None and good.p99_ms is not None and 0 < good.p50_ms <= good.p99_ms

    # ModelLatency is published in microseconds; read_metrics answers in milliseconds.
    stats = boto3.client("cloudwatch").get_metric_statistics(
        Namespace="AWS/SageMaker",
        MetricName="ModelLatency",
        Dimensions=[
            {"Name": "EndpointName", "Value": "iris-ep"},
            {"Name": "VariantName", "Value": "iris-v1"},
        ],
        StartTime=datetime.now(timezone.utc) - timedelta(minutes=5),
        EndTime=datetime.now(timezone.utc) + timedelta(minutes=5),
        Period=300,
        Statistics=["Maximum", "SampleCount"],
    )["Datapoints"]
    assert sum(d["SampleCount"] for d in stats) == 9
    assert good.p99_ms == pytest.approx(max(d["Maximum"] for d in stats) / 1000)


def test_an_engine_rollout_cut_off_mid_bake_is_recovered_by_the_next_apply(
    deployed: mlshift.Client, iris: dict[str, Any]
) -> None:
    def process_dies(reading: GateReading) -> bool:
        raise SystemExit("the deploying process died")  # no rollback runs: the journal stays open

    quiet = HealthGate(min_requests=0)
    with pytest.raises(SystemExit):
        deployed.endpoints.deploy(
            "iris-ep", "iris:2", rollout=Canary(percent=20, bake=30, gate=quiet), checks=[process_dies]
        )
    assert deployed.endpoints.get("iris-ep").weights == {"iris-v1": 80, "iris-v2": 20}

    spec = EndpointSpec.model_validate(
        {
            "name": "iris-ep",
            "variants": [{"name": "iris-v2", "model": "iris:2"}],
            "rollout": Canary(percent=20, bake=0.5, gate=quiet).model_dump(),
        }
    )
    plan = deployed.plan(spec)
    assert [a.kind for a in plan.actions] == ["recover_rollout", "rollout"]
    assert "roll back the interrupted canary rollout" in plan.render()
    assert "mlshift runs it: the variants change (iris-v1 -> iris-v2)" in plan.render()
    deployed.apply(plan)
    state = deployed.endpoints.get("iris-ep")
    assert [(v.name, v.model, v.weight) for v in state.variants] == [("iris-v2", "iris:2", 100)]
    assert deployed.endpoints.predict("iris-ep", iris["rows"]).predictions == iris["expected_v2"]
    assert len(leftovers()["models"]) == len(leftovers()["configs"]) == 1
    phases = [r.phase for r in deployed.endpoints.history("iris-ep")]
    assert phases[:2] == ["succeeded", "rolled_back"]


def test_a_version_that_refuses_the_callers_requests_trips_the_gate_on_client_errors(
    deployed: mlshift.Client, aws: FakeSageMaker, iris: dict[str, Any], tmp_path: Path
) -> None:
    narrow = tmp_path / "narrow-predictor"
    narrow.mkdir()
    (narrow / "predictor.py").write_text(
        "class Predictor:\n"
        "    signature = {'inputs': [{'dtype': 'float64'}] * 3}\n"
        "    def load(self, path):\n"
        "        pass\n"
        "    def predict(self, batch):\n"
        "        return [0 for _ in batch]\n"
    )
    deployed.models.register("iris", narrow, framework="predictor")  # iris:3 takes 3 values, callers send 4
    with pytest.raises(ConfigError, match="iris:3 takes 3 columns, iris:1 takes 4"):
        deployed.endpoints.deploy("iris-ep", "iris:3", rollout=Canary(percent=20, bake=30, gate=GATE))
    before = leftovers()
    outcome = canary_under_load(
        deployed,
        "iris-ep",
        "iris:3",
        Canary(percent=20, bake=30, gate=GATE),
        rows=iris["rows"],
        allow_schema_change=True,
    )
    error, answers = outcome.failure, outcome.answers
    assert error is not None
    assert "client errors (4xx) 100.0% vs 0.0% on the baseline" in str(error)
    assert error.measurements["client_errors"] >= GATE.min_requests and error.measurements["errors"] == 0
    assert error.measurements["elapsed_s"] < 30
    assert answers["error InvalidPayload"] > 0  # what the canary's share of callers saw, briefly
    assert answers[f"iris-v1 {iris['expected_v1']}"] > 0
    state = deployed.endpoints.get("iris-ep")
    assert [(v.name, v.model, v.weight) for v in state.variants] == [("iris-v1", "iris:1", 100)]
    assert leftovers() == before
