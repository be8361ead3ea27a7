"""Endpoints on the fake Vertex AI: what the planner refuses, re-apply costs, rollouts, faults."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import mlshift
from mlshift.errors import (
    ConfigError,
    MlshiftError,
    ProviderTimeout,
    QuotaExceeded,
    UnsupportedOperation,
)
from mlshift.specs import EndpointSpec
from mlshift.specs.rollout import Canary, HealthGate, Probe, Shadow
from mlshift.testing.rollouts import canary_under_load, failing_predictor
from mlshift_vertex import EtagConflict
from mlshift_vertex.testing import FakeVertex

TARGET = "vertex://my-project/us-central1"
GATE = HealthGate(max_error_rate=0.05, min_requests=5)


def test_unchanged_reapply_makes_no_mutating_call_and_uploads_nothing(
    client: mlshift.Client, vertex: FakeVertex, iris: dict[str, Any]
) -> None:
    client.models.register("iris", iris["v1"], framework="sklearn")
    registered = len(vertex.calls)
    client.endpoints.deploy("iris-ep", "iris:1")
    first_deploy = vertex.calls[registered:]
    vertex_mutations = [c for c in first_deploy if c.mutating and c.path.startswith("/v1/")]
    # create endpoint, deploy model: the first deploy's Vertex writes (recorded in docs/targets/vertex.md)
    assert [c.path.rsplit("/", 1)[-1] for c in vertex_mutations] == ["endpoints", "iris-ep:deployModel"]
    assert len(first_deploy) <= 40, [f"{c.method} {c.path}" for c in first_deploy]

    before, uploaded = len(vertex.calls), vertex.bytes_uploaded
    state = client.endpoints.deploy("iris-ep", "iris:1")
    assert [(v.model, v.weight) for v in state.variants] == [("iris:1", 100)]
    again = vertex.calls[before:]
    assert [c for c in again if c.mutating] == []
    assert vertex.bytes_uploaded == uploaded


def test_same_bytes_are_never_uploaded_twice(
    client: mlshift.Client, vertex: FakeVertex, iris: dict[str, Any]
) -> None:
    client.models.register("iris", iris["v1"], framework="sklearn")
    first = vertex.bytes_uploaded
    assert first >= Path(iris["v1"]).stat().st_size
    version = client.models.register("iris", iris["v1"], framework="sklearn")
    assert version.version == "2"
    assert vertex.bytes_uploaded == first  # the card is content-addressed too


def test_shadow_rollouts_are_refused_at_plan_time_naming_targets(
    deployed: mlshift.Client, vertex: FakeVertex
) -> None:
    before = len(vertex.mutating_calls())
    with pytest.raises(UnsupportedOperation, match="SHADOW_TRAFFIC") as info:
        deployed.endpoints.deploy("iris-ep", "iris:2", rollout=Shadow(duration=60))
    assert "targets that do:" in str(info.value) and "vertex://" in str(info.value)
    assert len(vertex.mutating_calls()) == before


def test_variant_batching_is_refused_at_plan_time(deployed: mlshift.Client, vertex: FakeVertex) -> None:
    before = len(vertex.mutating_calls())
    spec = EndpointSpec.model_validate(
        {"name": "iris-ep", "variants": [{"name": "v", "model": "iris:1", "batching": {"max_batch_size": 8}}]}
    )
    with pytest.raises(ConfigError, match="Vertex AI cannot apply per variant") as info:
        deployed.plan(spec)
    assert info.value.field == "variants[0].batching"
    assert len(vertex.mutating_calls()) == before


def test_a_bake_shorter_than_the_metric_lag_is_refused(iris: dict[str, Any]) -> None:
    with FakeVertex(metric_lag=120), mlshift.connect(TARGET) as client:
        assert client.adapter.endpoints.metrics_timing.lag == 120
        client.models.register("iris", iris["v1"], framework="sklearn")
        client.models.register("iris", iris["v2"], framework="sklearn")
        client.endpoints.deploy("iris-ep", "iris:1")
        with pytest.raises(ConfigError, match="arrive up to 120 s late"):
            client.endpoints.deploy("iris-ep", "iris:2", rollout=Canary(percent=10, bake=30, gate=GATE))


def test_probe_gates_are_refused_without_per_deployed_model_invoke(deployed: mlshift.Client) -> None:
    gate = HealthGate(min_requests=5, probe=Probe(payload={"instances": [[5.1, 3.5, 1.4, 0.2]]}))
    with pytest.raises(UnsupportedOperation, match="TARGETED_INVOKE"):
        deployed.endpoints.deploy("iris-ep", "iris:2", rollout=Canary(percent=10, bake=2, gate=gate))
    with pytest.raises(UnsupportedOperation, match="one deployed model"):
        deployed.endpoints.predict("iris-ep", [[5.1, 3.5, 1.4, 0.2]], variant="iris-v1")


def test_a_model_change_is_add_shift_remove(deployed: mlshift.Client) -> None:
    spec = EndpointSpec.model_validate(
        {"name": "iris-ep", "variants": [{"name": "iris-v1", "model": "iris:2"}]}
    )
    plan = deployed.plan(spec)
    kinds = [a.kind for a in plan.actions]
    assert "replace_variant" not in kinds and "update_compute" not in kinds, plan.render()


def test_canary_promotes_under_load_on_monitoring_gates(
    deployed: mlshift.Client, iris: dict[str, Any]
) -> None:
    outcome = canary_under_load(
        deployed, "iris-ep", "iris:2", Canary(percent=50, bake=6, gate=GATE), rows=iris["rows"]
    )
    assert outcome.failure is None, outcome.failure
    assert outcome.state is not None
    assert [(v.model, v.weight) for v in outcome.state.variants] == [("iris:2", 100)]
    assert not outcome.errors, outcome.answers
    assert outcome.served("iris-v2") > 0
    record = deployed.adapter.endpoints.rollouts("iris-ep")[0]
    assert (record.strategy, record.phase) == ("canary", "succeeded")


def test_a_failing_canary_returns_traffic(
    deployed: mlshift.Client, iris: dict[str, Any], tmp_path: Path
) -> None:
    broken = failing_predictor(tmp_path / "broken")
    deployed.models.register("iris", broken, framework="predictor")
    outcome = canary_under_load(
        deployed, "iris-ep", "iris:3", Canary(percent=50, bake=6, gate=GATE), rows=iris["rows"]
    )
    assert outcome.failure is not None and "error rate" in str(outcome.failure), outcome.failure
    state = deployed.endpoints.get("iris-ep")
    assert [(v.model, v.weight) for v in state.variants] == [("iris:1", 100)]
    assert deployed.endpoints.predict("iris-ep", iris["rows"]).predictions == iris["expected_v1"]


def test_metrics_are_read_per_deployed_model(
    deployed: mlshift.Client, vertex: FakeVertex, iris: dict[str, Any]
) -> None:
    for _ in range(3):
        deployed.endpoints.predict("iris-ep", iris["rows"])
    vertex.break_variant("iris-v1", 503)
    with pytest.raises(MlshiftError):
        deployed.endpoints.predict("iris-ep", iris["rows"])
    metrics = deployed.adapter.endpoints.read_metrics("iris-ep", "iris-v1", 300)
    assert metrics is not None
    assert (metrics.requests, metrics.errors, metrics.client_errors) == (4, 1, 0)
    assert metrics.p99_ms is not None and metrics.p99_ms >= (metrics.p50_ms or 0)


# --------------------------------------------------------------------------------------------
# Faults: named errors, nothing half-made, the next apply converges


def test_quota_on_deploy_is_named_and_leaves_nothing(
    client: mlshift.Client, vertex: FakeVertex, iris: dict[str, Any]
) -> None:
    client.models.register("iris", iris["v1"], framework="sklearn")
    vertex.fail(
        "POST .*:deployModel", 429, "Quota exceeded for aiplatform.googleapis.com/custom_model_serving_cpus"
    )
    with pytest.raises(QuotaExceeded, match="custom_model_serving_cpus") as info:
        client.endpoints.deploy("iris-ep", "iris:1")
    assert "Quotas" in str(info.value)
    assert client.adapter.endpoints.observe("iris-ep") is None
    state = client.endpoints.deploy("iris-ep", "iris:1")
    assert [(v.model, v.weight) for v in state.variants] == [("iris:1", 100)]


def test_a_504_is_a_timeout_that_says_where_to_look(
    deployed: mlshift.Client, vertex: FakeVertex, iris: dict[str, Any]
) -> None:
    vertex.fail("POST .*:predict", 504, "Deadline exceeded", times=10)
    with pytest.raises(ProviderTimeout, match="Deadline exceeded") as info:
        deployed.endpoints.predict("iris-ep", iris["rows"])
    assert "Cloud Logging" in str(info.value)


def test_an_etag_conflict_is_named_and_the_next_apply_converges(
    deployed: mlshift.Client, vertex: FakeVertex
) -> None:
    deployed.endpoints.deploy("iris-ep", "iris:2", traffic=10)
    vertex.fail("PATCH .*/endpoints/iris-ep", 409, "etag mismatch: the endpoint was changed", times=1)
    names = sorted(deployed.endpoints.get("iris-ep").weights)
    with pytest.raises(EtagConflict):
        deployed.adapter.endpoints.set_weights("iris-ep", dict(zip(names, (50, 50), strict=True)))
    state = deployed.adapter.endpoints.set_weights("iris-ep", dict(zip(names, (50, 50), strict=True))).wait()
    assert sorted(state.weights.values()) == [50, 50]


def test_undeploy_refused_by_vertex_is_a_conflict(deployed: mlshift.Client, vertex: FakeVertex) -> None:
    from mlshift.errors import Conflict

    deployed.endpoints.deploy("iris-ep", "iris:2", traffic=10)
    # Vertex's answer over REST is a 400 whose body says FAILED_PRECONDITION.
    message = "Deployed model has traffic; move it before undeploying"
    vertex.fail("POST .*:undeployModel", 400, message, status="FAILED_PRECONDITION")
    names = deployed.endpoints.get("iris-ep").weights
    zero = next(n for n, w in names.items() if w == 10)
    deployed.adapter.endpoints.set_weights("iris-ep", {n: (0 if n == zero else 100) for n in names}).wait()
    with pytest.raises(Conflict, match="move it before undeploying") as info:
        deployed.adapter.endpoints.remove_variant("iris-ep", zero)
    assert info.value.provider_code == "FAILED_PRECONDITION"  # type: ignore[attr-defined]
    deployed.adapter.endpoints.remove_variant("iris-ep", zero).wait()  # the next try converges
    assert list(deployed.endpoints.get("iris-ep").weights.values()) == [100]
