"""Targets without IN_PLACE_UPDATE: the planner and the rollout engine add, shift and remove instead."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import mlshift
from mlshift.errors import ConfigError, UnsupportedOperation
from mlshift.plan import Plan, ReplaceVariant
from mlshift.specs import EndpointSpec
from mlshift.specs.rollout import HealthGate, Probe
from mlshift.testing.memory import MemoryAdapter
from mlshift.testing.rollouts import hold_bake_for_requests
from rollout_models import predictor

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]]
GATE = HealthGate(min_requests=5, probe=Probe(payload={"instances": ROWS}, rate=100))
IN_PLACE = ("replace_variant", "update_compute")


@pytest.fixture(
    params=["memory://", "memory://?capabilities=-in_place_update"], ids=["in-place", "no-in-place"]
)
def client(request: pytest.FixtureRequest, iris: dict[str, Any], tmp_path: Path) -> Iterator[mlshift.Client]:
    """iris:1 (sklearn), iris:2 (sklearn), iris:3 (answers 0 to everything) registered."""
    with mlshift.connect(request.param) as c:
        c.models.register("iris", iris["v1"])
        c.models.register("iris", iris["v2"])
        c.models.register("iris", predictor(tmp_path, "good"))
        yield c


def spec(
    *variants: tuple[str, str, int], rollout: dict[str, Any] | None = None, **extra: Any
) -> EndpointSpec:
    data: dict[str, Any] = {
        "name": "iris",
        "variants": [{"name": n, "model": m, "weight": w} for n, m, w in variants],
        **extra,
    }
    if rollout is not None:
        data["rollout"] = rollout
    return EndpointSpec.model_validate(data)


def in_place(client: mlshift.Client) -> bool:
    return mlshift.adapter.Capability.IN_PLACE_UPDATE in client.adapter.capabilities


def calls_since(client: mlshift.Client, mark: int) -> list[str]:
    return [c[0] for c in MemoryAdapter.of(client).calls[mark:]]


def end_state(client: mlshift.Client) -> list[tuple[str, str, int, str, int]]:
    state = client.endpoints.get("iris")
    return [(v.name, v.model, v.weight, v.compute.size, v.compute.replicas) for v in state.variants]


def test_the_switch_drops_in_place_update_from_the_defaults() -> None:
    with (
        mlshift.connect("memory://") as full,
        mlshift.connect("memory://?capabilities=-in_place_update") as less,
    ):
        assert full.adapter.capabilities - less.adapter.capabilities == {
            mlshift.adapter.Capability.IN_PLACE_UPDATE
        }
    with pytest.raises(ConfigError, match="mixes names to keep and '-names' to drop"):
        mlshift.connect("memory://?capabilities=metrics,-in_place_update")
    with pytest.raises(ConfigError, match="unknown capabilities in_place"):
        mlshift.connect("memory://?capabilities=-in_place")


def test_a_plain_model_change_ends_the_same_with_or_without_in_place_update(
    client: mlshift.Client, iris: dict[str, Any]
) -> None:
    client.apply(spec(("main", "iris:1", 100)))
    mark = len(MemoryAdapter.of(client).calls)
    wanted = spec(("main", "iris:2", 100))
    plan = client.plan(wanted)
    if in_place(client):
        assert [a.kind for a in plan.actions] == ["replace_variant"]
    else:
        assert [a.describe() for a in plan.actions] == [
            "add variant main-next (iris:2, cpu-small x1) at 0%, to serve main's traffic while it is "
            "replaced (no in-place updates); inputs match iris:1 (4 columns)",
            "traffic: main 100% -> 0%, main-next 0% -> 100%",
            "remove variant main (iris:1)",
            "add variant main (iris:2, cpu-small x1) at 0%",
            "traffic: main 0% -> 100%, main-next 100% -> 0%",
            "remove variant main-next (iris:2)",
        ]
    # The plan is data: what it printed comes back from its JSON and runs as printed.
    client.apply(Plan.model_validate(json.loads(plan.model_dump_json())))
    assert end_state(client) == [("main", "iris:2", 100, "cpu-small", 1)]
    answer = client.endpoints.predict("iris", iris["rows"])
    assert (answer.variant, answer.predictions) == ("main", iris["expected_v2"])
    calls = calls_since(client, mark)
    if in_place(client):
        assert calls == ["replace_variant"]
    else:
        assert not any(c in IN_PLACE for c in calls)
    assert client.plan(wanted).is_empty

    # A resize alone goes the same way: update_compute, or a stand-in while main is re-created.
    mark = len(MemoryAdapter.of(client).calls)
    bigger = spec(("main", "iris:2", 100), compute={"size": "cpu-large", "replicas": 2})
    client.apply(bigger)
    assert end_state(client) == [("main", "iris:2", 100, "cpu-large", 2)]
    calls = calls_since(client, mark)
    if in_place(client):
        assert calls == ["update_compute"]
    else:
        assert not any(c in IN_PLACE for c in calls)
        assert calls == [
            "add_variant",
            "set_weights",
            "remove_variant",
            "add_variant",
            "set_weights",
            "remove_variant",
        ]
    assert client.plan(bigger).is_empty


def test_variants_that_serve_nothing_before_or_after_need_no_stand_in(client: mlshift.Client) -> None:
    client.apply(spec(("a", "iris:1", 100), ("b", "iris:1", 0), ("c", "iris:1", 0)))
    mark = len(MemoryAdapter.of(client).calls)
    # a: serving -> 0% (replaced once drained); b: 0% -> serving (replaced before traffic moves);
    # c: stays at 0% with another model.
    wanted = spec(("a", "iris:2", 0), ("b", "iris:2", 100), ("c", "iris:3", 0))
    plan = client.plan(wanted)
    if not in_place(client):
        assert [a.describe() for a in plan.actions if "stand" in a.describe()] == []
        assert [a.kind for a in plan.actions] == [
            *["remove_variant", "add_variant"] * 2,  # b and c, at 0% now
            "set_weights",
            "remove_variant",
            "add_variant",  # a, drained
        ]
    client.apply(plan)
    assert sorted(end_state(client)) == [
        ("a", "iris:2", 0, "cpu-small", 1),
        ("b", "iris:2", 100, "cpu-small", 1),
        ("c", "iris:3", 0, "cpu-small", 1),
    ]
    calls = calls_since(client, mark)
    assert any(c in IN_PLACE for c in calls) == in_place(client)
    assert client.plan(wanted).is_empty


def test_a_canary_into_the_same_variant_promotes_without_in_place_calls(
    client: mlshift.Client, iris: dict[str, Any]
) -> None:
    client.apply(spec(("main", "iris:1", 100)))
    mark = len(MemoryAdapter.of(client).calls)
    wanted = spec(
        ("main", "iris:2", 100),
        rollout={"strategy": "canary", "percent": 20, "bake": 0.3, "gate": GATE.model_dump()},
    )
    plan = client.plan(wanted)
    assert [a.kind for a in plan.actions] == ["rollout"]
    client.apply(plan, checks=[hold_bake_for_requests(client, "iris", GATE.min_requests)])
    assert end_state(client) == [("main", "iris:2", 100, "cpu-small", 1)]
    assert client.endpoints.predict("iris", iris["rows"]).predictions == iris["expected_v2"]
    calls = calls_since(client, mark)
    if in_place(client):
        assert "replace_variant" in calls
    else:
        assert not any(c in IN_PLACE for c in calls)
        record = client.endpoints.history("iris")[0]
        assert (record.phase, record.steps[-4:]) == (
            "succeeded",
            (
                "remove variant main",
                "add variant main (iris:2) at 0%",
                "set weights main-next=0 main=100",
                "remove variant main-next",
            ),
        )
    assert client.plan(wanted).is_empty


def test_a_plan_that_swaps_in_place_is_refused_before_any_change(iris: dict[str, Any]) -> None:
    with (
        mlshift.connect("memory://") as able,
        mlshift.connect("memory://?capabilities=-in_place_update") as unable,
    ):
        for c in (able, unable):
            c.models.register("iris", iris["v1"])
            c.models.register("iris", iris["v2"])
            c.apply(spec(("main", "iris:1", 100)))
        made_elsewhere = able.plan(spec(("main", "iris:2", 100), tags={"team": "x"}))
        assert any(isinstance(a, ReplaceVariant) for a in made_elsewhere.actions)
        replayed = Plan.model_validate({**made_elsewhere.model_dump(), "target": unable.adapter.uri.raw})
        mark = len(MemoryAdapter.of(unable).calls)
        with pytest.raises(UnsupportedOperation, match=r"changes variants in place .*no IN_PLACE_UPDATE"):
            unable.apply(replayed)
        assert MemoryAdapter.of(unable).calls[mark:] == []
        assert end_state(unable) == [("main", "iris:1", 100, "cpu-small", 1)]


def test_a_promotion_cut_off_after_the_old_variant_went_is_finished_by_the_next_apply(
    iris: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    with mlshift.connect("memory://?capabilities=-in_place_update") as client:
        client.models.register("iris", iris["v1"])
        client.models.register("iris", iris["v2"])
        client.apply(spec(("main", "iris:1", 100)))
        adapter = MemoryAdapter.of(client)
        real_add = adapter.endpoints.add_variant

        def dies_re_adding_main(name: str, variant: Any) -> Any:
            if variant.name == "main":
                raise SystemExit("the deploying process died")  # no clean-up runs
            return real_add(name, variant)

        monkeypatch.setattr(adapter.endpoints, "add_variant", dies_re_adding_main)
        rollout = {"strategy": "canary", "percent": 20, "bake": 0.3, "gate": GATE.model_dump()}
        wanted = spec(("main", "iris:2", 100), rollout=rollout)
        with pytest.raises(SystemExit):
            client.apply(wanted)
        # The old main is gone, its stand-in serves everything: never nothing.
        assert end_state(client) == [("main-next", "iris:2", 100, "cpu-small", 1)]
        assert client.endpoints.history("iris")[0].phase == "promoting"
        monkeypatch.undo()

        mark = len(adapter.calls)
        plan = client.plan(wanted)
        assert [a.kind for a in plan.actions] == ["recover_rollout"]
        client.apply(plan)
        assert end_state(client) == [("main", "iris:2", 100, "cpu-small", 1)]
        assert client.endpoints.predict("iris", iris["rows"]).predictions == iris["expected_v2"]
        assert not any(c[0] in IN_PLACE for c in adapter.calls[mark:])
        assert client.plan(wanted).is_empty


def test_a_serving_variant_is_not_replaced_where_it_can_neither_swap_nor_split(iris: dict[str, Any]) -> None:
    with mlshift.connect("memory://?capabilities=targeted_invoke") as client:
        client.models.register("iris", iris["v1"])
        client.models.register("iris", iris["v2"])
        client.apply(spec(("main", "iris:1", 100)))
        mark = len(MemoryAdapter.of(client).calls)
        with pytest.raises(UnsupportedOperation, match=r"neither update it in place \(IN_PLACE_UPDATE\) nor"):
            client.plan(spec(("main", "iris:2", 100)))
        assert MemoryAdapter.of(client).calls[mark:] == []


def test_a_resize_before_a_rollout_is_kept_in_what_the_rollout_records(client: mlshift.Client) -> None:
    client.apply(spec(("a", "iris:1", 50), ("b", "iris:1", 50)))
    rollout = {"strategy": "canary", "percent": 20, "bake": 0.3, "gate": GATE.model_dump()}
    # a gets bigger (before the rollout), b gets iris:2 (by the rollout).
    wanted = EndpointSpec.model_validate(
        {
            "name": "iris",
            "variants": [
                {"name": "a", "model": "iris:1", "weight": 50, "compute": {"size": "cpu-large"}},
                {"name": "b", "model": "iris:2", "weight": 50},
            ],
            "rollout": rollout,
        }
    )
    mark = len(MemoryAdapter.of(client).calls)
    client.apply(wanted, checks=[hold_bake_for_requests(client, "iris", GATE.min_requests)])
    assert sorted(end_state(client)) == [
        ("a", "iris:1", 50, "cpu-large", 1),
        ("b", "iris:2", 50, "cpu-small", 1),
    ]
    record = client.endpoints.history("iris")[0]
    assert [(v.name, v.compute.size) for v in record.baseline] == [("a", "cpu-large"), ("b", "cpu-small")]
    assert sorted((v.name, v.model, v.compute.size) for v in record.target) == [
        ("a", "iris:1", "cpu-large"),
        ("b", "iris:2", "cpu-small"),
    ]
    assert any(c in IN_PLACE for c in calls_since(client, mark)) == in_place(client)
    assert client.plan(wanted).is_empty
