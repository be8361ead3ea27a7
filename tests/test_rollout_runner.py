"""Who runs a rollout — the target or mlshift's engine — is decided per rollout, at plan time."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest

import mlshift
from mlshift.adapter import EndpointState
from mlshift.errors import ConfigError
from mlshift.plan import Plan, Rollout
from mlshift.specs import EndpointSpec
from mlshift.specs.rollout import Canary, HealthGate, Probe
from mlshift.testing.memory import MemoryAdapter
from mlshift.testing.rollouts import hold_bake_for_requests

GATE = HealthGate(min_requests=5, probe=Probe(payload={"instances": [[5.1, 3.5, 1.4, 0.2]]}, rate=100))


@pytest.fixture
def native(iris: dict[str, Any]) -> Iterator[mlshift.Client]:
    """A target that runs rollouts natively, can be probed, and declines rollouts to iris:2."""
    with mlshift.connect("memory://?capabilities=traffic_split,targeted_invoke,native_rollout") as client:
        client.models.register("iris", iris["v1"])
        client.models.register("iris", iris["v2"])
        client.endpoints.deploy("iris", "iris:1")

        def refusal(spec: EndpointSpec, observed: EndpointState | None) -> str | None:
            wants_v2 = any(v.model.version == "2" for v in spec.variants)
            return "the target cannot run rollouts to iris:2" if wants_v2 else None

        client.adapter.endpoints.native_rollout_refusal = refusal  # type: ignore[method-assign]
        yield client


def spec(model: str, gate: HealthGate = GATE) -> EndpointSpec:
    return EndpointSpec.model_validate(
        {
            "name": "iris",
            "variants": [{"name": "next", "model": model}],
            "rollout": Canary(percent=20, bake=0.3, gate=gate).model_dump(),
        }
    )


def rollout_of(plan: Plan) -> Rollout:
    return next(a for a in plan.actions if isinstance(a, Rollout))


def test_a_declined_rollout_runs_on_the_engine_and_the_plan_says_why(native: mlshift.Client) -> None:
    plan = native.plan(spec("iris:2"))
    action = rollout_of(plan)
    assert (action.native, action.engine_reason) == (False, "the target cannot run rollouts to iris:2")
    assert "; mlshift runs it: the target cannot run rollouts to iris:2" in plan.render()
    state = native.apply(plan, checks=[hold_bake_for_requests(native, "iris", GATE.min_requests)]).endpoints[
        "iris"
    ]
    assert state.weights == {"next": 100}
    assert not any(call[0] == "native_rollout" for call in MemoryAdapter.of(native).calls)
    record = native.endpoints.history("iris")[0]
    assert record.phase == "succeeded" and record.steps[0].startswith("add variant next")
    assert record.measurements["requests"] >= GATE.min_requests  # the probes were counted


def test_an_accepted_rollout_is_handed_over(native: mlshift.Client) -> None:
    native.endpoints.deploy("iris", "iris:2")
    plan = native.plan(spec("iris:1"))
    action = rollout_of(plan)
    assert (action.native, action.runner) == (True, "the memory target")
    assert plan.render().endswith("; the memory target runs it natively")
    native.apply(plan)
    assert ("native_rollout", "iris", "canary") in MemoryAdapter.of(native).calls


def test_the_gate_of_a_declined_rollout_must_be_observable(native: mlshift.Client) -> None:
    # Handed over, the target judges the gate its own way; declined, the engine needs a signal.
    rollout_of(native.plan(spec("iris:1", HealthGate(min_requests=5))))
    with pytest.raises(ConfigError, match="cannot count the new variant's requests"):
        native.plan(spec("iris:2", HealthGate(min_requests=5)))


def test_the_decision_round_trips_through_json_and_old_plans_still_load(native: mlshift.Client) -> None:
    plan = native.plan(spec("iris:2"))
    data = json.loads(json.dumps(plan.model_dump(mode="json")))
    assert Plan.model_validate(data) == plan
    for action in data["actions"]:  # a plan saved before the decision was recorded
        for key in ("native", "runner", "engine_reason"):
            action.pop(key, None)
    assert rollout_of(Plan.model_validate(data)).native is None  # NATIVE_ROLLOUT decides, as before
