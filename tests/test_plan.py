"""The planner and executor, against the in-memory target (which records every mutating call)."""

from __future__ import annotations

import json
import threading
from typing import Any

import pytest

import mlshift
from mlshift.errors import ConfigError, Conflict, NotFound, UnsupportedOperation
from mlshift.plan import apply_plan
from mlshift.specs import EndpointSpec, ModelSpec
from mlshift.testing import MemoryAdapter


def spec(*variants: tuple[str, str, int], **extra: Any) -> EndpointSpec:
    return EndpointSpec.model_validate(
        {"name": "iris", "variants": [{"name": n, "model": m, "weight": w} for n, m, w in variants], **extra}
    )


def calls(client: mlshift.Client) -> list[tuple[Any, ...]]:
    adapter = client.adapter
    assert isinstance(adapter, MemoryAdapter)
    return adapter.calls


@pytest.fixture
def registered(memory: mlshift.Client, iris: dict[str, Any]) -> mlshift.Client:
    memory.models.register("iris", iris["v1"], framework="sklearn")
    memory.models.register("iris", iris["v2"], framework="sklearn")
    return memory


def test_create_then_reapply_makes_no_mutating_call(registered: mlshift.Client) -> None:
    desired = spec(("blue", "iris:1", 80), ("green", "iris:2", 20))
    plan = registered.plan(desired)
    assert [a.kind for a in plan.actions] == ["create_endpoint"]
    assert "create endpoint iris (blue=iris:1 80%, green=iris:2 20%)" in plan.render()
    registered.apply(plan)
    before = list(calls(registered))
    again = registered.plan(desired)
    assert again.is_empty and again.render().startswith("No changes.")
    registered.apply(again)
    assert calls(registered) == before


def test_weight_edit_plans_exactly_that(registered: mlshift.Client) -> None:
    registered.apply(spec(("blue", "iris:1", 80), ("green", "iris:2", 20)))
    plan = registered.plan(spec(("blue", "iris:1", 50), ("green", "iris:2", 50)))
    assert [a.kind for a in plan.actions] == ["set_weights"]
    assert "traffic: blue 80% -> 50%, green 20% -> 50%" in plan.render()
    registered.apply(plan)
    assert registered.endpoints.get("iris").weights == {"blue": 50, "green": 50}


def test_swapping_variants_never_leaves_the_endpoint_without_traffic(registered: mlshift.Client) -> None:
    registered.apply(spec(("blue", "iris:1", 100)))
    plan = registered.plan(spec(("green", "iris:2", 100)))
    assert [a.kind for a in plan.actions] == ["add_variant", "set_weights", "remove_variant"]
    registered.apply(plan)
    state = registered.endpoints.get("iris")
    assert [(v.name, v.model, v.weight) for v in state.variants] == [("green", "iris:2", 100)]


def test_model_compute_and_tag_changes(registered: mlshift.Client) -> None:
    registered.apply(spec(("blue", "iris:1", 100)))
    changed = EndpointSpec.model_validate(
        {
            "name": "iris",
            "variants": [{"name": "blue", "model": "iris:2", "weight": 100}],
            "tags": {"team": "fraud"},
        }
    )
    assert [a.kind for a in registered.plan(changed).actions] == ["replace_variant", "update_tags"]
    registered.apply(changed)
    resized = changed.model_copy(update={"compute": mlshift.Compute(size="cpu-large", replicas=2)})
    assert [a.kind for a in registered.plan(resized).actions] == ["update_compute"]
    registered.apply(resized)
    assert registered.plan(resized).is_empty


def test_plan_json(registered: mlshift.Client) -> None:
    plan = registered.plan(spec(("blue", "iris:1", 100)))
    data = json.loads(json.dumps(plan.to_json()))
    assert data["changes"] == 1 and data["actions"][0]["kind"] == "create_endpoint"
    assert data["actions"][0]["variants"][0]["model"]["digest"].startswith("sha256:")


def test_stale_plan_is_refused(registered: mlshift.Client) -> None:
    registered.apply(spec(("blue", "iris:1", 80), ("green", "iris:2", 20)))
    stale = registered.plan(spec(("blue", "iris:1", 60), ("green", "iris:2", 40)))
    registered.apply(spec(("blue", "iris:1", 10), ("green", "iris:2", 90)))
    with pytest.raises(Conflict, match="changed since this plan was made"):
        registered.apply(stale)
    assert registered.endpoints.get("iris").weights == {"blue": 10, "green": 90}


def test_missing_capability_fails_at_plan_time(iris: dict[str, Any]) -> None:
    client = mlshift.connect("memory://?capabilities=targeted_invoke")
    client.models.register("iris", iris["v1"], framework="sklearn")
    client.models.register("iris", iris["v2"], framework="sklearn")
    before = list(calls(client))
    with pytest.raises(
        UnsupportedOperation,
        match=r"needs more than one variant \(TRAFFIC_SPLIT\).*do: (\w+, )*local, memory\b",
    ):
        client.plan(spec(("blue", "iris:1", 80), ("green", "iris:2", 20)))
    with pytest.raises(UnsupportedOperation, match="GPU"):
        client.plan(spec(("blue", "iris:1", 100), compute={"size": "gpu-small"}))
    assert calls(client) == before


def test_name_the_target_forbids(registered: mlshift.Client) -> None:
    with pytest.raises(ConfigError, match=r"endpoint name 'Iris_Prod' is not allowed on target 'memory://'"):
        registered.plan(
            EndpointSpec.model_validate({"name": "Iris_Prod", "variants": [{"name": "a", "model": "iris:1"}]})
        )
    with pytest.raises(ConfigError, match="at most 63 characters"):
        registered.plan(
            EndpointSpec.model_validate({"name": "x" * 64, "variants": [{"name": "a", "model": "iris:1"}]})
        )
    assert registered.endpoints.list() == []


def test_provider_options_only_own_key_is_checked(registered: mlshift.Client) -> None:
    ok = spec(("blue", "iris:1", 100), provider_options={"sagemaker": {"instance_type": "ml.m5.large"}})
    assert registered.plan(ok).changes == 1  # other targets' options are not ours to judge
    bad = spec(("blue", "iris:1", 100), provider_options={"memory": {"speed": "fast"}})
    with pytest.raises(ConfigError, match="provider_options.memory"):
        registered.plan(bad)


def test_models_in_the_plan_are_registered_once(memory: mlshift.Client, iris: dict[str, Any]) -> None:
    model = ModelSpec(name="iris", path=str(iris["v1"]), framework="sklearn")
    endpoint = spec(("blue", "iris", 100))  # "iris" = the latest, which this plan registers
    plan = memory.plan([model, endpoint])
    assert [a.kind for a in plan.actions] == ["register_model", "create_endpoint"]
    assert "iris:(new version)" in plan.render()
    result = memory.apply(plan)
    assert [m.version for m in result.models] == ["1"]
    assert memory.endpoints.get("iris").variants[0].model == "iris:1"
    assert memory.plan([model, endpoint]).is_empty
    assert memory.endpoints.predict("iris", iris["rows"]).predictions == iris["expected_v1"]


def test_missing_model_fails_before_any_change(registered: mlshift.Client) -> None:
    before = list(calls(registered))
    with pytest.raises(NotFound, match=r"variant 'blue': model 'iris:7' does not exist"):
        registered.plan(spec(("blue", "iris:7", 100)))
    with pytest.raises(NotFound, match="model 'ghost' does not exist"):
        registered.endpoints.deploy("iris", "ghost")
    assert calls(registered) == before


def test_deploy_sugar_splits_the_rest_proportionally(
    registered: mlshift.Client, iris: dict[str, Any]
) -> None:
    registered.models.register("iris", iris["v1"], framework="sklearn", tags={"copy": "3"})
    registered.apply(spec(("a", "iris:1", 75), ("b", "iris:2", 25)))
    state = registered.endpoints.deploy("iris", "iris:3", traffic=20)
    assert state.weights == {"a": 60, "b": 20, "iris-v3": 20}
    with pytest.raises(ConfigError, match="traffic must be between 1 and 100"):
        registered.endpoints.deploy("iris", "iris:3", traffic=0)
    with pytest.raises(ConfigError, match="first model takes all traffic"):
        registered.endpoints.deploy("other", "iris:1", traffic=20)


def test_lock_held_elsewhere_is_a_conflict(registered: mlshift.Client) -> None:
    plan = registered.plan(spec(("blue", "iris:1", 100)))
    held, release = threading.Event(), threading.Event()

    def holder() -> None:
        with registered.adapter.endpoints.lock("iris", owner="someone else", timeout=1):
            held.set()
            release.wait(5)

    thread = threading.Thread(target=holder)
    thread.start()
    held.wait(5)
    try:
        with pytest.raises(Conflict, match="being changed"):
            apply_plan(registered.adapter, plan, lock_timeout=0.2)
    finally:
        release.set()
        thread.join()
    assert registered.adapter.endpoints.observe("iris") is None
    apply_plan(registered.adapter, plan)
    assert registered.endpoints.get("iris").weights == {"blue": 100}


def test_an_autoscaling_change_alone_is_planned_and_applied(registered: mlshift.Client) -> None:
    registered.apply(spec(("blue", "iris:1", 100)))
    scaled = spec(("blue", "iris:1", 100), autoscaling={"min_replicas": 1, "max_replicas": 4})
    plan = registered.plan(scaled)
    assert [a.kind for a in plan.actions] == ["update_autoscaling"]
    assert "autoscaling: 1-4 replicas" in plan.render()
    registered.apply(plan)
    assert registered.endpoints.get("iris").autoscaling == mlshift.Autoscaling(min_replicas=1, max_replicas=4)
    assert registered.plan(scaled).is_empty
    assert registered.plan(spec(("blue", "iris:1", 100))).is_empty  # no autoscaling given: left alone


def test_a_batching_change_alone_is_planned_and_applied(registered: mlshift.Client) -> None:
    registered.apply(spec(("blue", "iris:1", 100)))
    batched = EndpointSpec.model_validate(
        {
            "name": "iris",
            "variants": [
                {"name": "blue", "model": "iris:1", "batching": {"max_batch_size": 8, "max_latency_ms": 2}}
            ],
        }
    )
    plan = registered.plan(batched)
    assert [a.kind for a in plan.actions] == ["replace_variant"]
    assert "variant blue (iris:1): batching off -> batching 8 rows / 2 ms" in plan.render()
    registered.apply(plan)
    (variant,) = registered.endpoints.get("iris").variants
    assert variant.model == "iris:1" and variant.batching == mlshift.specs.Batching(
        max_batch_size=8, max_latency_ms=2
    )
    assert registered.plan(batched).is_empty
    # With a new model too, the plan names both changes.
    both = spec(("blue", "iris:2", 100))
    assert (
        "variant blue: model iris:1 -> iris:2, batching 8 rows / 2 ms -> batching off"
        in registered.plan(both).render()
    )


def test_a_batching_change_goes_through_the_endpoint_s_rollout_and_says_so(
    registered: mlshift.Client,
) -> None:
    def canary(batching: dict[str, Any] | None) -> EndpointSpec:
        variant: dict[str, Any] = {"name": "blue", "model": "iris:1"}
        if batching is not None:
            variant["batching"] = batching
        rollout = {"strategy": "canary", "percent": 50, "bake": "1s", "gate": {"min_requests": 0}}
        return EndpointSpec.model_validate({"name": "iris", "variants": [variant], "rollout": rollout})

    registered.apply(canary(None))
    plan = registered.plan(canary({"max_batch_size": 8}))
    assert [a.kind for a in plan.actions] == ["rollout"]
    assert "roll out blue=iris:1 (batching off -> batching 8 rows / 5 ms): canary 50%" in plan.render()
    registered.apply(plan)
    (variant,) = registered.endpoints.get("iris").variants
    assert (variant.name, variant.weight, variant.batching) == (
        "blue",
        100,
        mlshift.specs.Batching(max_batch_size=8),
    )
    assert registered.plan(canary({"max_batch_size": 8})).is_empty


def test_a_variant_with_fewer_ready_replicas_than_wanted_is_restored_unless_it_changes_anyway(
    registered: mlshift.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    registered.apply(spec(("blue", "iris:1", 80), ("green", "iris:2", 20), compute={"replicas": 2}))
    endpoints = registered.adapter.endpoints
    real = endpoints.observe

    def one_died(name: str) -> Any:  # what a target that counts replicas reports after a kill
        state = real(name)
        variants = tuple(
            v.model_copy(update={"ready_replicas": 1, "status": "failed", "detail": "replica 1: exited\nlog"})
            if v.name == "green"
            else v.model_copy(update={"ready_replicas": 2})
            for v in state.variants
        )
        return state.model_copy(update={"variants": variants})

    monkeypatch.setattr(endpoints, "observe", one_died)
    plan = registered.plan(spec(("blue", "iris:1", 80), ("green", "iris:2", 20), compute={"replicas": 2}))
    assert [a.describe() for a in plan.actions] == ["restore 1 replica of green (iris:2): replica 1: exited"]
    assert type(plan).model_validate_json(plan.model_dump_json()) == plan  # data, like every action
    # A variant that gets new replicas anyway (another model) is not restored on top of that.
    changed = registered.plan(spec(("blue", "iris:1", 80), ("green", "iris:1", 20), compute={"replicas": 2}))
    assert [a.kind for a in changed.actions] == ["replace_variant"]
    # A target that does not count replicas (ready_replicas None) never gets the step.
    monkeypatch.setattr(endpoints, "observe", real)
    assert registered.plan(
        spec(("blue", "iris:1", 80), ("green", "iris:2", 20), compute={"replicas": 2})
    ).is_empty


def test_a_target_s_plan_notes_are_shown_under_its_changes(
    registered: mlshift.Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlshift.plan import Plan

    seen: list[Any] = []

    def notes(spec: EndpointSpec, observed: Any) -> list[str]:
        seen.append(observed)
        return ["gates read metrics here"]

    monkeypatch.setattr(registered.adapter.endpoints, "plan_notes", notes)
    plan = registered.plan(spec(("blue", "iris:1", 100)))
    assert plan.notes == ("endpoint iris: gates read metrics here",)
    assert plan.render().endswith("  note: endpoint iris: gates read metrics here")
    assert Plan.from_json(json.loads(json.dumps(plan.to_json()))).notes == plan.notes
    assert seen == [None]  # the endpoint did not exist yet
    registered.apply(plan)
    assert registered.plan(spec(("blue", "iris:1", 100))).notes == ()  # nothing changes: nothing to note
