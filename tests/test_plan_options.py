"""Provider options of a live endpoint: planned as ``update_options``, applied, then settled.

The memory target takes no options, so these tests give it some: ``provider_options.memory``
with a batch size and a token, reported the way the contract asks (secrets hidden).
"""

from __future__ import annotations

import builtins
import json
from typing import Any

import pytest

import mlshift
from mlshift.adapter import (
    BaseEndpointService,
    CompletedOperation,
    EndpointState,
    Operation,
    OptionChange,
    TargetURI,
    validate_own_options,
)
from mlshift.errors import UnsupportedOperation
from mlshift.plan import UpdateOptions
from mlshift.plan._apply import converge_to
from mlshift.specs import EndpointSpec
from mlshift.specs._base import SpecModel
from mlshift.testing import MemoryAdapter
from mlshift.testing.memory import _MemoryEndpoints


class TunedOptions(SpecModel):
    batch_size: int = 1
    token: str | None = None


class TunedEndpoints(_MemoryEndpoints):
    """The memory target with one option that shows and one that is a secret."""

    def __init__(self, adapter: MemoryAdapter) -> None:
        super().__init__(adapter)
        self.options: dict[str, TunedOptions] = {}

    def _own(self, spec: EndpointSpec) -> TunedOptions:
        options = validate_own_options(spec, "memory", TunedOptions)
        assert isinstance(options, TunedOptions)
        return options

    def validate(self, spec: EndpointSpec) -> None:
        self._own(spec)

    def create(self, spec: EndpointSpec, variants: Any) -> Operation[EndpointState]:
        self.options[spec.name] = self._own(spec)
        return super().create(spec, variants)

    def option_changes(self, spec: EndpointSpec) -> builtins.list[OptionChange]:
        if "memory" not in spec.provider_options or spec.name not in self.items:
            return []
        old, new = self.options[spec.name], self._own(spec)
        changes = []
        if old.batch_size != new.batch_size:
            changes.append(
                OptionChange(
                    field="provider_options.memory.batch_size",
                    old=str(old.batch_size),
                    new=str(new.batch_size),
                )
            )
        if old.token != new.token:
            changes.append(
                OptionChange(
                    field="provider_options.memory.token",
                    old=None if old.token is None else "(hidden)",
                    new=None if new.token is None else "(hidden)",
                )
            )
        return changes

    def update_options(self, name: str, spec: EndpointSpec) -> Operation[EndpointState]:
        self._require(name)
        if self.options[name] == self._own(spec):
            return CompletedOperation(self._state(name), "options in effect already")
        self._adapter.record("update_options", name)
        self.options[name] = self._own(spec)
        return self._done(name, "update options")


@pytest.fixture
def tuned(iris: dict[str, Any]) -> mlshift.Client:
    adapter = MemoryAdapter(TargetURI(raw="memory://", scheme="memory"))
    adapter._endpoints = TunedEndpoints(adapter)
    client = mlshift.Client(adapter)
    client.models.register("iris", iris["v1"], framework="sklearn")
    client.models.register("iris", iris["v2"], framework="sklearn")
    return client


def endpoints(client: mlshift.Client) -> TunedEndpoints:
    service = client.adapter.endpoints
    assert isinstance(service, TunedEndpoints)
    return service


def calls(client: mlshift.Client) -> list[tuple[Any, ...]]:
    adapter = client.adapter
    assert isinstance(adapter, MemoryAdapter)
    return adapter.calls


def spec(model: str = "iris:1", weight: int = 100, **memory: Any) -> EndpointSpec:
    variants = [{"name": "blue", "model": model, "weight": weight}]
    if weight < 100:
        variants.append({"name": "green", "model": "iris:2", "weight": 100 - weight})
    return EndpointSpec.model_validate(
        {"name": "iris", "variants": variants, "provider_options": {"memory": memory}}
    )


def test_an_option_only_change_is_planned_applied_and_then_settled(tuned: mlshift.Client) -> None:
    tuned.apply(spec(batch_size=1))
    plan = tuned.plan(spec(batch_size=8))
    assert [a.kind for a in plan.actions] == ["update_options"]
    assert "~ provider options:\n        provider_options.memory.batch_size 1 -> 8" in plan.render()
    assert plan.to_json()["actions"][0]["changes"] == [
        {"field": "provider_options.memory.batch_size", "old": "1", "new": "8"}
    ]
    assert plan.to_json()["summary"] == ["provider options: provider_options.memory.batch_size 1 -> 8"]

    before = len(calls(tuned))
    tuned.apply(plan)
    assert calls(tuned)[before:] == [("update_options", "iris")]
    assert endpoints(tuned).options["iris"].batch_size == 8
    history = tuned.adapter.endpoints.rollouts("iris")[0]
    assert history.phase == "succeeded"
    assert history.steps == ("provider options: provider_options.memory.batch_size 1 -> 8",)

    before = len(calls(tuned))
    assert tuned.plan(spec(batch_size=8)).is_empty
    assert not tuned.apply(spec(batch_size=8)).changed
    assert calls(tuned)[before:] == []


def test_a_plan_shows_that_a_secret_changes_but_not_its_value(tuned: mlshift.Client) -> None:
    tuned.apply(spec(token="first-value"))
    plan = tuned.plan(spec(token="second-value"))
    shown = plan.render() + json.dumps(plan.to_json())
    assert "provider_options.memory.token (hidden) -> (hidden)" in shown
    assert "-value" not in shown


def test_options_change_after_the_variants_of_the_same_plan(tuned: mlshift.Client) -> None:
    tuned.apply(spec(weight=80))
    plan = tuned.plan(spec(model="iris:2", weight=50, batch_size=4))
    assert [a.kind for a in plan.actions] == ["replace_variant", "set_weights", "update_options"]
    tuned.apply(plan)
    assert [c[0] for c in calls(tuned)[-3:]] == ["replace_variant", "set_weights", "update_options"]
    assert tuned.plan(spec(model="iris:2", weight=50, batch_size=4)).is_empty


def test_a_spec_without_the_targets_options_keeps_them(tuned: mlshift.Client) -> None:
    tuned.apply(spec(batch_size=8))
    tuned.endpoints.deploy("iris", "iris:2", variant="blue")  # deploy() makes specs without options
    assert endpoints(tuned).options["iris"].batch_size == 8
    plain = EndpointSpec.model_validate({"name": "iris", "variants": [{"name": "blue", "model": "iris:2"}]})
    assert tuned.plan(plain).is_empty


def test_converging_variants_leaves_the_options_alone(tuned: mlshift.Client) -> None:
    tuned.apply(spec(batch_size=8))
    state = tuned.endpoints.get("iris")
    converge_to(tuned.adapter, "iris", state.variants)
    assert endpoints(tuned).options["iris"].batch_size == 8


def test_an_update_options_action_survives_a_json_round_trip(tuned: mlshift.Client) -> None:
    tuned.apply(spec(batch_size=1))
    plan = tuned.plan(spec(batch_size=2))
    again = type(plan).model_validate_json(plan.model_dump_json())
    assert isinstance(again.actions[0], UpdateOptions)
    tuned.apply(again)
    assert endpoints(tuned).options["iris"].batch_size == 2


def test_the_default_contract_reports_no_option_changes_and_cannot_update_them(
    memory: mlshift.Client, iris: dict[str, Any]
) -> None:
    memory.models.register("iris", iris["v1"], framework="sklearn")
    memory.apply(spec())
    service = memory.adapter.endpoints
    assert isinstance(service, BaseEndpointService)
    assert service.option_changes(spec()) == []
    with pytest.raises(UnsupportedOperation, match="change the provider options"):
        service.update_options("iris", spec())
    assert memory.plan(spec()).is_empty
