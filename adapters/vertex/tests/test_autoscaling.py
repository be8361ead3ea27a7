"""Autoscaling of Vertex AI deployed models: bounds, request-count target, in-place changes."""

from __future__ import annotations

from typing import Any

import pytest

import mlshift
from mlshift.errors import ConfigError
from mlshift.specs import EndpointSpec
from mlshift_vertex.testing import FakeVertex

REQUEST_COUNT = "aiplatform.googleapis.com/prediction/online/request_count"
ENDPOINT = "projects/my-project/locations/us-central1/endpoints/iris-as"


def spec(scaling: dict[str, Any] | None, replicas: int = 1, **extra: Any) -> EndpointSpec:
    data: dict[str, Any] = {
        "name": "iris-as",
        "variants": [{"name": "blue", "model": "iris:1"}],
        "compute": {"size": "cpu-small", "replicas": replicas},
        **extra,
    }
    if scaling is not None:
        data["autoscaling"] = scaling
    return EndpointSpec.model_validate(data)


@pytest.fixture
def registered(client: mlshift.Client, iris: dict[str, Any]) -> mlshift.Client:
    client.models.register("iris", iris["v1"], framework="sklearn")
    client.models.register("iris", iris["v2"], framework="sklearn")
    return client


def resources(vertex: FakeVertex) -> list[dict[str, Any]]:
    endpoint = vertex.endpoint(ENDPOINT)
    assert endpoint is not None
    return [d["dedicatedResources"] for d in endpoint["deployedModels"]]


def test_deployed_with_bounds_and_a_request_count_target(
    registered: mlshift.Client, vertex: FakeVertex
) -> None:
    wanted = spec({"min_replicas": 1, "max_replicas": 4, "target_requests_per_replica": 300})
    registered.apply(wanted)
    (res,) = resources(vertex)
    assert (int(res["minReplicaCount"]), int(res["maxReplicaCount"])) == (1, 4)
    assert res["autoscalingMetricSpecs"] == [{"metricName": REQUEST_COUNT, "target": 300}]
    state = registered.endpoints.get("iris-as")
    assert state.autoscaling is not None and state.autoscaling.max_replicas == 4
    assert state.autoscaling.target_requests_per_replica == 300

    before = len(vertex.mutating_calls())
    assert registered.plan(wanted).actions == ()
    registered.apply(wanted)
    assert len(vertex.mutating_calls()) == before


def test_a_change_is_made_in_place_on_each_deployed_model(
    registered: mlshift.Client, vertex: FakeVertex
) -> None:
    blue_green = [
        {"name": "blue", "model": "iris:1", "weight": 50},
        {"name": "green", "model": "iris:2", "weight": 50},
    ]
    two = spec(
        {"min_replicas": 1, "max_replicas": 4, "target_requests_per_replica": 300}, variants=blue_green
    )
    registered.apply(two)
    before = len(vertex.mutating_calls())
    wider = spec(
        {"min_replicas": 1, "max_replicas": 6, "target_requests_per_replica": 300}, variants=blue_green
    )
    plan = registered.plan(wider)
    assert [a.kind for a in plan.actions] == ["update_autoscaling"]
    registered.apply(plan)
    calls = vertex.mutating_calls()[before:]
    assert [c.path.rsplit(":", 1)[-1] for c in calls if c.path.startswith("/v1/")] == [
        "mutateDeployedModel",
        "mutateDeployedModel",
    ]
    assert {int(r["maxReplicaCount"]) for r in resources(vertex)} == {6}
    assert registered.plan(wider).actions == ()


def test_the_asked_replica_count_is_kept_so_a_reapply_changes_nothing(
    registered: mlshift.Client, vertex: FakeVertex
) -> None:
    wanted = spec({"min_replicas": 1, "max_replicas": 5}, replicas=3)
    registered.apply(wanted)
    (res,) = resources(vertex)
    assert (int(res["minReplicaCount"]), int(res["maxReplicaCount"])) == (1, 5)
    assert "autoscalingMetricSpecs" not in res or res["autoscalingMetricSpecs"] == []
    state = registered.endpoints.get("iris-as")
    assert state.variants[0].compute.replicas == 3
    assert registered.plan(wanted).actions == ()


def test_stopping_autoscaling_fixes_each_at_its_asked_count(
    registered: mlshift.Client, vertex: FakeVertex
) -> None:
    registered.apply(
        spec({"min_replicas": 1, "max_replicas": 5, "target_requests_per_replica": 100}, replicas=2)
    )
    state = registered.adapter.endpoints.set_autoscaling("iris-as", None).wait()
    (res,) = resources(vertex)
    assert (int(res["minReplicaCount"]), int(res["maxReplicaCount"])) == (2, 2)
    assert not res.get("autoscalingMetricSpecs")
    assert state.autoscaling is None and state.variants[0].compute.replicas == 2


@pytest.mark.parametrize(
    ("scaling", "replicas", "field"),
    [
        ({"min_replicas": 0, "max_replicas": 3}, 1, "autoscaling.min_replicas"),
        ({"min_replicas": 2, "max_replicas": 3}, 1, "compute.replicas"),
        (
            {"min_replicas": 1, "max_replicas": 3, "target_requests_per_replica": 12.5},
            1,
            "target_requests_per_replica",
        ),
    ],
)
def test_what_vertex_refuses_is_refused_at_plan_time(
    registered: mlshift.Client, vertex: FakeVertex, scaling: dict[str, Any], replicas: int, field: str
) -> None:
    before = len(vertex.mutating_calls())
    with pytest.raises(ConfigError) as caught:
        registered.plan(spec(scaling, replicas=replicas))
    assert field in (caught.value.field or "")
    assert len(vertex.mutating_calls()) == before


def test_the_fake_enforces_vertex_rules_for_mutations(registered: mlshift.Client, vertex: FakeVertex) -> None:
    from google.api_core import exceptions
    from google.protobuf import field_mask_pb2

    registered.apply(spec({"min_replicas": 1, "max_replicas": 3}))
    adapter = registered.adapter
    types = adapter.clients.types()  # type: ignore[attr-defined]
    client = adapter.clients.client("endpoint")  # type: ignore[attr-defined]
    deployed_id = vertex.endpoint(ENDPOINT)["deployedModels"][0]["id"]  # type: ignore[index]

    def mutate(resources: Any, *paths: str) -> None:
        client.mutate_deployed_model(
            endpoint=ENDPOINT,
            deployed_model=types.DeployedModel(id=deployed_id, dedicated_resources=resources),
            update_mask=field_mask_pb2.FieldMask(paths=list(paths)),
        ).result()

    machine = types.DedicatedResources(machine_spec=types.MachineSpec(machine_type="n1-standard-8"))
    with pytest.raises(exceptions.BadRequest, match="cannot be mutated"):
        mutate(machine, "dedicated_resources.machine_spec")
    cpu = types.AutoscalingMetricSpec(
        metric_name="aiplatform.googleapis.com/prediction/online/cpu/utilization", target=150
    )
    with pytest.raises(exceptions.BadRequest, match="1-100"):
        mutate(
            types.DedicatedResources(autoscaling_metric_specs=[cpu]),
            "dedicated_resources.autoscaling_metric_specs",
        )
    duty = types.AutoscalingMetricSpec(
        metric_name="aiplatform.googleapis.com/prediction/online/accelerator/duty_cycle"
    )
    with pytest.raises(exceptions.BadRequest, match="accelerators"):
        mutate(
            types.DedicatedResources(autoscaling_metric_specs=[duty]),
            "dedicated_resources.autoscaling_metric_specs",
        )
    with pytest.raises(exceptions.BadRequest, match="at least 1"):
        mutate(types.DedicatedResources(min_replica_count=0), "dedicated_resources.min_replica_count")
    (res,) = resources(vertex)
    assert (int(res["minReplicaCount"]), int(res["maxReplicaCount"])) == (1, 3)


def test_the_plan_says_how_gates_see_variants_and_where_scaling_starts(registered: mlshift.Client) -> None:
    from mlshift.specs.rollout import Canary, HealthGate

    registered.apply(spec(None))
    canary = EndpointSpec.model_validate(
        {
            **spec({"min_replicas": 1, "max_replicas": 4}, replicas=2).model_dump(),
            "variants": [{"name": "green", "model": "iris:2"}],
            "rollout": Canary(percent=10, bake=60, gate=HealthGate(max_error_rate=0.05)),
        }
    )
    plan = registered.plan(canary)
    text = plan.render()
    assert "cannot send a request to one deployed model" in text
    assert "Cloud Monitoring" in text
    assert "starts each deployed model at min_replica_count (1), not at compute.replicas (2)" in text
    assert registered.plan(spec(None)).notes == ()
