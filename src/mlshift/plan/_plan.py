"""The planner: desired specs + observed state -> an ordered, printable :class:`Plan`."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

from pydantic import Field

from mlshift.adapter import Capability, EndpointState
from mlshift.errors import ConfigError, NotFound, UnsupportedOperation
from mlshift.plan._actions import (
    Action,
    AddVariant,
    CreateEndpoint,
    PlannedVariant,
    RegisterModel,
    RemoveVariant,
    ReplaceVariant,
    SetWeights,
    UpdateCompute,
    UpdateTags,
)
from mlshift.specs._base import SpecModel
from mlshift.specs.endpoint import EndpointSpec
from mlshift.specs.model import ModelRef, ModelSpec, ModelVersion

if TYPE_CHECKING:
    from mlshift.adapter import Adapter

__all__ = ["Plan", "build_plan", "state_fingerprint"]


def state_fingerprint(state: EndpointState | None) -> str:
    """A digest of the parts of an endpoint's state a plan depends on (``-`` when absent)."""
    if state is None:
        return "-"
    core = {
        "variants": sorted(
            (v.name, v.model, v.weight, v.compute.size, v.compute.replicas) for v in state.variants
        ),
        "tags": sorted(state.tags.items()),
    }
    return hashlib.sha256(json.dumps(core).encode()).hexdigest()[:16]


class Plan(SpecModel):
    """What applying a set of specs to a target would change, in order.

    Attributes:
        target: The target the plan was made against.
        actions: The steps, in the order they will run.
        observed: Endpoint name → fingerprint of the state the plan was made from; ``apply``
            refuses to run a plan whose endpoints changed since.
    """

    target: str
    actions: tuple[Action, ...] = ()
    observed: dict[str, str] = Field(default_factory=dict)
    unchanged: tuple[str, ...] = ()

    @property
    def is_empty(self) -> bool:
        """True when applying would change nothing."""
        return not self.actions

    @property
    def changes(self) -> int:
        """The number of actions."""
        return len(self.actions)

    def render(self) -> str:
        """A readable diff, grouped by resource."""
        if self.is_empty:
            return f"No changes. {self.target} matches the spec."
        lines: list[str] = [f"Plan for {self.target}: {self.changes} change(s)"]
        current = None
        for action in self.actions:
            if action.resource != current:
                current = action.resource
                lines.append(f"  {current}")
            sign = {"create_endpoint": "+", "add_variant": "+", "register_model": "+", "remove_variant": "-"}
            lines.append(f"    {sign.get(action.kind, '~')} {action.describe()}")
        return "\n".join(lines)

    def to_json(self) -> dict[str, Any]:
        """The plan as JSON-ready data (``mlshift plan --output json``)."""
        data = self.model_dump(mode="json")
        data["changes"] = self.changes
        data["summary"] = [a.describe() for a in self.actions]
        return data


def _resolve_variant(
    adapter: Adapter,
    spec: EndpointSpec,
    index: int,
    pending: dict[str, str],
) -> PlannedVariant:
    variant = spec.variants[index]
    ref: ModelRef = variant.model
    compute = spec.compute_for(variant)
    try:
        version: ModelVersion | None = adapter.models.get(ref)
        pending_name = None
    except NotFound as exc:
        if ref.version is None and ref.alias is None and ref.name in pending:
            version, pending_name = None, ref.name
        else:
            raise NotFound(
                f"endpoint {spec.name!r}, variant {variant.name!r}: model {str(ref)!r} does not "
                f"exist on {adapter.uri.raw}",
                provider=adapter.name,
                hint="register it first (mlshift models register), or list versions with "
                f"`mlshift models list {ref.name}`",
            ) from exc
    return PlannedVariant(
        name=variant.name,
        ref=str(ref),
        model=version,
        pending_model=pending_name,
        weight=variant.weight,
        compute=compute,
    )


def _check_capabilities(adapter: Adapter, spec: EndpointSpec) -> None:
    needs: list[tuple[Capability, str]] = []
    if len(spec.variants) > 1:
        needs.append((Capability.TRAFFIC_SPLIT, "more than one variant"))
    if spec.autoscaling is not None:
        needs.append((Capability.AUTOSCALING, "autoscaling"))
    sizes = {spec.compute_for(v).size for v in spec.variants}
    if any(s.startswith("gpu") for s in sizes):
        needs.append((Capability.GPU, "a GPU size"))
    for cap, why in needs:
        if cap not in adapter.capabilities:
            from mlshift._registry import targets_with

            others = ", ".join(targets_with(cap)) or "none installed"
            raise UnsupportedOperation(
                f"endpoint {spec.name!r} needs {why} ({cap.name}), which {adapter.uri.raw} "
                f"does not support; targets that do: {others}"
            )


def _check_names(adapter: Adapter, spec: EndpointSpec) -> None:
    rules, target = adapter.name_rules, adapter.uri.raw
    rules.endpoint.check("endpoint", spec.name, target, field="name")
    for i, v in enumerate(spec.variants):
        rules.variant.check("variant", v.name, target, field=f"variants[{i}].name")


def _plan_endpoint(
    adapter: Adapter,
    spec: EndpointSpec,
    observed: EndpointState | None,
    pending: dict[str, str],
) -> list[Action]:
    variants = [_resolve_variant(adapter, spec, i, pending) for i in range(len(spec.variants))]
    if observed is None:
        return [CreateEndpoint(endpoint=spec.name, spec=spec, variants=tuple(variants))]

    actions: list[Action] = []
    desired = {v.name: v for v in variants}
    for v in variants:
        live = observed.variant(v.name)
        if live is None:
            actions.append(AddVariant(endpoint=spec.name, variant=v))
            continue
        if v.model is None or live.model != f"{v.model.name}:{v.model.version}":
            actions.append(ReplaceVariant(endpoint=spec.name, variant=v, old_model=live.model))
        elif live.compute != v.compute:
            actions.append(
                UpdateCompute(endpoint=spec.name, variant=v.name, compute=v.compute, old_compute=live.compute)
            )
    new_weights = {v.name: v.weight for v in variants}
    old_weights = observed.weights
    full_new = {**dict.fromkeys(old_weights, 0), **new_weights}
    if full_new != old_weights:
        actions.append(SetWeights(endpoint=spec.name, weights=full_new, old_weights=old_weights))
    for live in observed.variants:
        if live.name not in desired:
            actions.append(RemoveVariant(endpoint=spec.name, variant=live.name, model=live.model))
    if dict(spec.tags) != observed.tags:
        actions.append(UpdateTags(endpoint=spec.name, tags=dict(spec.tags), old_tags=observed.tags))
    return actions


def build_plan(
    adapter: Adapter,
    *,
    models: Sequence[ModelSpec] = (),
    endpoints: Iterable[EndpointSpec] = (),
) -> Plan:
    """Diff desired models and endpoints against the target's live state.

    Nothing is changed: the planner only reads (artifact digests, registry, endpoint state).

    Raises:
        ConfigError: a spec the target cannot take (names, options, ports).
        UnsupportedOperation: a spec that needs a capability the target lacks.
        NotFound: a model reference that resolves to nothing.
    """
    from mlshift._artifacts import digest_path

    actions: list[Action] = []
    unchanged: list[str] = []
    pending: dict[str, str] = {}
    for i, model in enumerate(models):
        adapter.name_rules.model.check("model", model.name, adapter.uri.raw, field=f"models[{i}].name")
        if "://" in model.path:
            raise ConfigError(
                f"model {model.name!r}: remote artifact URIs ({model.path}) are not supported yet",
                field=f"models[{i}].path",
                hint="point path at a local file or directory",
            )
        digest = digest_path(model.path)
        if adapter.models.find_by_digest(model.name, digest) is None:
            actions.append(RegisterModel(model=model, digest=digest))
            pending[model.name] = digest
        else:
            unchanged.append(f"model {model.name}")

    observed: dict[str, str] = {}
    for spec in endpoints:
        _check_names(adapter, spec)
        _check_capabilities(adapter, spec)
        adapter.endpoints.validate(spec)
        state = adapter.endpoints.observe(spec.name)
        observed[spec.name] = state_fingerprint(state)
        endpoint_actions = _plan_endpoint(adapter, spec, state, pending)
        if endpoint_actions:
            actions.extend(endpoint_actions)
        else:
            unchanged.append(f"endpoint {spec.name}")
    return Plan(target=adapter.uri.raw, actions=tuple(actions), observed=observed, unchanged=tuple(unchanged))
