"""The planner: desired specs + observed state -> an ordered, printable :class:`Plan`."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import Field

from mlshift.adapter import Capability, EndpointState, OptionChange
from mlshift.errors import ConfigError, NotFound, UnsupportedOperation
from mlshift.plan._actions import (
    Action,
    AddVariant,
    CreateEndpoint,
    PlannedVariant,
    RecoverRollout,
    RegisterModel,
    RemoveVariant,
    ReplaceVariant,
    RestoreReplicas,
    Rollout,
    SetWeights,
    UpdateAutoscaling,
    UpdateCompute,
    UpdateOptions,
    UpdateTags,
    batching_key,
)
from mlshift.plan._rollout import check_gate_observable
from mlshift.plan._schema import compare_signatures
from mlshift.specs._base import SpecModel
from mlshift.specs.endpoint import EndpointSpec
from mlshift.specs.model import ModelRef, ModelSpec, ModelVersion, Signature

if TYPE_CHECKING:
    from mlshift.adapter import Adapter

__all__ = ["Plan", "build_plan", "effective_state", "state_fingerprint"]


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
        notes: What the target says about how it carries the changes out
            (:meth:`~mlshift.adapter.EndpointService.plan_notes`), shown under them.
    """

    target: str
    actions: tuple[Action, ...] = ()
    observed: dict[str, str] = Field(default_factory=dict)
    unchanged: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

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
            sign = {
                "create_endpoint": "+",
                "add_variant": "+",
                "register_model": "+",
                "remove_variant": "-",
                "restore_replicas": "!",
                "rollout": ">",
                "recover_rollout": "!",
            }
            if isinstance(action, UpdateOptions):
                # One line per option: a plan is read field by field.
                lines.append("    ~ provider options:")
                lines.extend(f"        {change.describe()}" for change in action.changes)
                continue
            lines.append(f"    {sign.get(action.kind, '~')} {action.describe()}")
        lines.extend(f"  note: {note}" for note in self.notes)
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        """How a notebook shows the plan: the readable plan's lines, as a table."""
        from mlshift._html import plan_html

        return plan_html(self)

    def to_json(self) -> dict[str, Any]:
        """The plan as JSON-ready data (``mlshift plan --output json``).

        Provider options are shown, but not the values of container environments or of options
        named like credentials (``token``, ``secret``, ``password``, ...): those read
        ``(hidden)``, as in the readable plan.
        """
        data = self.model_dump(mode="json")
        data["actions"] = [_options_mapped(action, _redacted) for action in data["actions"]]
        data["changes"] = self.changes
        data["summary"] = [a.describe() for a in self.actions]
        return data

    @classmethod
    def from_json(cls, data: Mapping[str, Any], specs: Iterable[EndpointSpec] = ()) -> Plan:
        """A plan saved with :meth:`to_json` (``mlshift plan -o json``), ready to apply.

        The saved plan holds every option its actions need, except the values :meth:`to_json`
        hides (``(hidden)``): those are taken from ``specs``, the endpoint specs the plan was
        made from (the same ``mlshift.yaml``), after checking that they still have the options
        the plan shows. Whether the target is still in the state the plan was made from is
        checked when it is applied (:func:`~mlshift.plan.apply_plan`).

        Raises:
            ConfigError: ``data`` is not a plan; or it hides values of an endpoint that
                ``specs`` has no spec for.
            Conflict: a spec's provider options are no longer those the plan was made with.
        """
        from mlshift.errors import Conflict

        if not isinstance(data, Mapping) or not isinstance(data.get("actions"), list):
            raise ConfigError(
                "this is not a saved plan (no list of actions)",
                hint="save one with `mlshift plan -o json > plan.json`",
            )
        given = {spec.name: spec for spec in specs}
        actions: list[Any] = []
        for index, action in enumerate(data["actions"]):
            if not isinstance(action, dict) or not _hides_values(action):
                actions.append(action)
                continue
            endpoint = str(action.get("endpoint") or "")
            spec = given.get(endpoint)
            if spec is None:
                raise ConfigError(
                    f"action {index + 1} of the plan ({action.get('kind')}) hides the values of "
                    f"endpoint {endpoint!r}'s secret options, and no spec of that endpoint was given",
                    field=f"actions[{index}]",
                    hint="apply the plan with the mlshift.yaml it was made from (-f PATH)",
                )
            real = spec.model_dump(mode="json")["provider_options"]

            def filled(options: dict[str, Any], real: dict[str, Any] = real, endpoint: str = endpoint) -> Any:
                if options != _redacted(real):
                    raise Conflict(
                        f"the provider options of endpoint {endpoint!r} changed since this plan was made",
                        hint="run plan again and review the new diff",
                    )
                return real

            actions.append(_options_mapped(action, filled))
        known = {"changes", "summary"}  # written by to_json for readers, derived from the actions
        return cls.model_validate({**{k: v for k, v in data.items() if k not in known}, "actions": actions})


def _options_mapped(node: Any, change: Callable[[dict[str, Any]], Any]) -> Any:
    """``node`` (an action as JSON) with every ``provider_options`` mapping passed through ``change``."""
    if isinstance(node, dict):
        return {
            key: change(value)
            if key == "provider_options" and isinstance(value, dict)
            else _options_mapped(value, change)
            for key, value in node.items()
        }
    if isinstance(node, list):
        return [_options_mapped(value, change) for value in node]
    return node


def _hides_values(node: Any) -> bool:
    found: list[bool] = []

    def look(options: dict[str, Any]) -> dict[str, Any]:
        found.append(_HIDDEN in json.dumps(options))
        return options

    _options_mapped(node, look)
    return any(found)


_HIDDEN = '"(hidden)"'


_SECRET_NAME = re.compile(r"token|secret|password|passwd|credential|api_?key", re.IGNORECASE)


def _redacted(value: Any, key: str = "") -> Any:
    """``value`` with the values of environments and credential-like options hidden."""
    if key == "environment" and isinstance(value, dict):
        return dict.fromkeys(value, "(hidden)")
    if key and _SECRET_NAME.search(key) and value is not None:
        return "(hidden)"
    if isinstance(value, dict):
        return {k: _redacted(v, str(k)) for k, v in value.items()}
    if isinstance(value, list):
        return [_redacted(v) for v in value]
    return value


def _artifact_signature(model: ModelSpec) -> Signature | None:
    """What the artifact of ``model`` says it takes (``None``: it does not say).

    Raises:
        ConfigError: an artifact that cannot be loaded, or a ``.skops`` file with types outside
            the trusted set and the model's ``mlshift.skops-trust`` tag.
    """
    from mlshift._artifacts import SKOPS_TRUST_TAG, parse_skops_trust
    from mlshift.serving import infer_signature

    trust = parse_skops_trust(model.tags.get(SKOPS_TRUST_TAG, ""))
    return infer_signature(Path(model.path), model.framework, skops_trust=trust)


def _resolve_variant(
    adapter: Adapter,
    spec: EndpointSpec,
    index: int,
    pending: dict[str, str],
) -> PlannedVariant:
    variant = spec.variants[index]
    ref: ModelRef = variant.model
    compute = spec.compute_for(variant)
    version: ModelVersion | None = None
    pending_name: str | None = None
    if ref.version is None and ref.alias is None and ref.name in pending:
        # The bare name means the latest version: after this plan, the one it registers.
        pending_name = ref.name
    else:
        try:
            version = adapter.models.get(ref)
        except NotFound as exc:
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
        provider_options=dict(spec.provider_options),
        autoscaling=spec.autoscaling,
        batching=variant.batching,
    )


def _check_capabilities(adapter: Adapter, spec: EndpointSpec) -> None:
    from mlshift._registry import targets_with

    if spec.serverless and Capability.SERVERLESS not in adapter.capabilities:
        others = ", ".join(targets_with(Capability.SERVERLESS)) or "none installed"
        raise ConfigError(
            f"endpoint {spec.name!r} asks for serverless compute, which {adapter.uri.raw} does not offer "
            f"(no SERVERLESS); targets that do: {others}",
            field="serverless",
            hint="remove serverless: true to run on replicas, or apply the spec to a target that has it",
        )
    needs: list[tuple[Capability, str]] = []
    if len(spec.variants) > 1:
        needs.append((Capability.TRAFFIC_SPLIT, "more than one variant"))
    if spec.autoscaling is not None:
        needs.append((Capability.AUTOSCALING, "autoscaling"))
    if spec.rollout is not None and spec.rollout.strategy == "shadow":
        needs.append((Capability.SHADOW_TRAFFIC, "a shadow rollout"))
    sizes = {spec.compute_for(v).size for v in spec.variants}
    if any(s.startswith("gpu") for s in sizes):
        needs.append((Capability.GPU, "a GPU size"))
    if spec.capture is not None and spec.capture.enabled:
        needs.append((Capability.CAPTURE, "request capture"))
    for cap, why in needs:
        if cap not in adapter.capabilities:
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


def _recovery(
    adapter: Adapter, name: str, observed: EndpointState | None
) -> tuple[list[Action], EndpointState | None]:
    """An action for a rollout a dead process left open, and the state it leaves behind."""
    open_records = [r for r in adapter.endpoints.rollouts(name, limit=5) if r.is_open]
    if not open_records:
        return [], observed
    record = open_records[0]
    if observed is None or record.strategy in ("all-at-once", "create", "rollback"):
        # Live state is the truth; the diff below converges from wherever it stopped.
        mode = "close"
        predicted = observed
    elif record.phase == "promoting":
        mode, predicted = "complete", observed.model_copy(update={"variants": record.target})
    else:
        mode, predicted = "rollback", observed.model_copy(update={"variants": record.baseline})
    action = RecoverRollout(
        endpoint=name, record_id=record.id, strategy=record.strategy, mode=mode, owner=record.owner
    )
    return [action], predicted


def effective_state(adapter: Adapter, name: str) -> EndpointState | None:
    """The endpoint as it will be once an interrupted rollout is recovered (else as it is)."""
    return _recovery(adapter, name, adapter.endpoints.observe(name))[1]


def _staging_name(name: str, taken: set[str]) -> str:
    for suffix in ("next", "next-2", "next-3"):
        candidate = f"{name[: 62 - len(suffix)]}-{suffix}"
        if candidate not in taken:
            return candidate
    raise ConfigError(f"cannot find a free temporary name for variant {name!r}")  # pragma: no cover


def _rollout_runner(
    adapter: Adapter, spec: EndpointSpec, observed: EndpointState, checks: bool = False
) -> tuple[bool, str | None, str | None]:
    """Who runs this spec's rollout: ``(native, runner, engine_reason)``.

    A target that declares ``NATIVE_ROLLOUT`` runs it unless its optional
    ``native_rollout_refusal`` gives a reason not to; then mlshift's engine runs it, and the gate
    must be observable through the target's primitives like on any other target.
    """
    if Capability.NATIVE_ROLLOUT not in adapter.capabilities:
        return False, None, None
    runner = adapter.endpoints.target_name
    if spec.rollout is not None and spec.rollout.strategy == "shadow":
        return False, runner, "shadow rollouts compare answers on mlshift's engine"
    reason = adapter.endpoints.native_rollout_refusal(spec, observed)
    if reason is None and checks:
        reason = "checks= were given, which only mlshift's engine calls"
    if reason is None:
        return True, runner, None
    check_gate_observable(adapter, spec, native=False)
    return False, runner, reason


def _as_rollout(
    adapter: Adapter, spec: EndpointSpec, observed: EndpointState, actions: list[Action], checks: bool = False
) -> list[Action]:
    """Fold the traffic-moving actions of a plan into one gated :class:`Rollout`."""
    strategy = spec.rollout
    if strategy is None or strategy.strategy == "all-at-once":
        return actions
    final = {v.name: v.weight for v in spec.variants}
    candidates = [a.variant for a in actions if isinstance(a, AddVariant) and final[a.variant.name] > 0]
    replaced = [a.variant for a in actions if isinstance(a, ReplaceVariant)]
    if not candidates and not replaced:
        return actions
    if strategy.strategy == "shadow" and len(candidates) + len(replaced) > 1:
        names = ", ".join(v.name for v in candidates + replaced)
        raise ConfigError(
            f"endpoint {spec.name!r}: a shadow rollout compares one new version with what serves, "
            f"but this plan brings {len(candidates) + len(replaced)} ({names})",
            field="rollout",
            hint="roll out one new version at a time",
        )
    taken = {v.name for v in observed.variants} | set(final)
    staging = {}
    for v in replaced:
        staging[v.name] = _staging_name(v.name, taken)
        taken.add(staging[v.name])
    moved = (AddVariant, ReplaceVariant, SetWeights, RemoveVariant)
    keep_before = [
        a
        for a in actions
        if (isinstance(a, AddVariant) and final[a.variant.name] == 0) or isinstance(a, UpdateCompute)
    ]
    keep_after = [a for a in actions if not isinstance(a, (*moved, UpdateCompute))]
    resized = {a.variant: a.compute for a in keep_before if isinstance(a, UpdateCompute)}
    native, runner, engine_reason = _rollout_runner(adapter, spec, observed, checks)
    rollout = Rollout(
        endpoint=spec.name,
        strategy=strategy,
        # As the rollout finds them: resized before it starts (keep_before), so that finishing
        # or rolling back an interrupted rollout does not undo the resize.
        baseline=tuple(
            v.model_copy(update={"compute": resized[v.name]}) if v.name in resized else v
            for v in observed.variants
        ),
        candidates=tuple(candidates + replaced),
        staging=staging,
        final_weights=final,
        remove=tuple(v.name for v in observed.variants if v.name not in final),
        native=native,
        runner=runner,
        engine_reason=engine_reason,
    )
    return [*keep_before, rollout, *keep_after]


def _swap_name(action: ReplaceVariant | UpdateCompute) -> str:
    return action.variant.name if isinstance(action, ReplaceVariant) else action.variant


def _without_in_place(
    adapter: Adapter,
    endpoint: str,
    actions: list[Action],
    observed: EndpointState,
    desired: dict[str, PlannedVariant],
) -> list[Action]:
    """The same change as ``actions`` without ``ReplaceVariant``/``UpdateCompute`` (no ``IN_PLACE_UPDATE``).

    A variant whose model or compute changes is removed and added again under its name. One
    that serves traffic before and after meanwhile has a stand-in: a temporary variant with the
    new version takes its share, so the endpoint never stops answering, and hands it back
    once the variant is there again. One that serves nothing now is replaced first; one that
    ends at 0% is replaced once the weights have moved. The end state is the spec's, so a
    re-plan is empty.

    Raises:
        UnsupportedOperation: a serving variant to replace on a target that cannot run two
            variants side by side (no ``TRAFFIC_SPLIT`` either).
    """
    swaps = [a for a in actions if isinstance(a, (ReplaceVariant, UpdateCompute))]
    if not swaps:
        return actions
    before = observed.weights
    set_weights = next((a for a in actions if isinstance(a, SetWeights)), None)
    after = dict(set_weights.weights) if set_weights is not None else dict(before)
    adds = [a for a in actions if isinstance(a, AddVariant)]
    taken = set(before) | set(after) | {a.variant.name for a in adds}
    cold: list[PlannedVariant] = []
    draining: list[PlannedVariant] = []
    hot: dict[str, str] = {}
    for swap in swaps:
        name = _swap_name(swap)
        if before.get(name, 0) > 0 and after.get(name, 0) > 0:
            if Capability.TRAFFIC_SPLIT not in adapter.capabilities:
                raise UnsupportedOperation(
                    f"endpoint {endpoint!r}: variant {name!r} serves traffic and changes; "
                    f"{adapter.uri.raw} can neither update it in place (IN_PLACE_UPDATE) nor run its "
                    "new version beside it (TRAFFIC_SPLIT)",
                    hint="deploy the new version as a new endpoint and move callers to it",
                )
            hot[name] = _staging_name(name, taken)
            taken.add(hot[name])
        elif before.get(name, 0) > 0:
            draining.append(desired[name])
        else:
            cold.append(desired[name])

    def remove(name: str, model: str | None = None) -> RemoveVariant:
        live = observed.variant(name)
        return RemoveVariant(endpoint=endpoint, variant=name, model=model or (live.model if live else "?"))

    out: list[Action] = list(adds)
    for name, temp in hot.items():
        stand_in = desired[name].model_copy(update={"name": temp})
        out.append(AddVariant(endpoint=endpoint, variant=stand_in, stand_in_for=name))
    for v in cold:
        out += [remove(v.name), AddVariant(endpoint=endpoint, variant=v)]
    interim = {**after}
    for name, temp in hot.items():
        interim[temp], interim[name] = after[name], 0
    if {n: w for n, w in interim.items() if w} != {n: w for n, w in before.items() if w}:
        out.append(SetWeights(endpoint=endpoint, weights=interim, old_weights=before))
    for v in draining:
        out += [remove(v.name), AddVariant(endpoint=endpoint, variant=v)]
    for name in hot:
        # Its schema check was shown on the stand-in, which serves the new version first.
        again = desired[name].model_copy(update={"schema_check": None})
        out += [remove(name), AddVariant(endpoint=endpoint, variant=again)]
    if hot:
        final = {**after, **dict.fromkeys(hot.values(), 0)}
        out.append(SetWeights(endpoint=endpoint, weights=final, old_weights=interim))
        out += [remove(temp, desired[name].model_label) for name, temp in hot.items()]
    out += [a for a in actions if not isinstance(a, (AddVariant, SetWeights, ReplaceVariant, UpdateCompute))]
    return out


def _check_schemas(
    adapter: Adapter,
    spec: EndpointSpec,
    observed: EndpointState,
    variants: list[PlannedVariant],
    signatures: dict[str, Signature | None],
) -> list[PlannedVariant]:
    """Compare each new version's inputs with those of the versions serving now.

    Returns the variants with :attr:`PlannedVariant.schema` set, for the plan to show.

    Raises:
        ConfigError: a new version that takes other inputs than a serving one, unless the
            spec allows it (``allow_schema_change``).
    """
    serving = {v.model for v in observed.variants if v.weight > 0}
    old_signatures: dict[str, Signature | None] = {}
    out: list[PlannedVariant] = []
    for index, v in enumerate(variants):
        live = observed.variant(v.name)
        label = v.model_label if v.model is not None else f"{v.pending_model}:(new version)"
        unchanged = live is not None and v.model is not None and live.model == label
        if unchanged or v.weight == 0 or label in serving:
            out.append(v)
            continue
        new_sig = v.model.signature if v.model is not None else signatures.get(v.pending_model or "")
        texts: list[str] = []
        for old_label in sorted(serving):
            if old_label not in old_signatures:
                try:
                    old_signatures[old_label] = adapter.models.get(ModelRef.parse(old_label)).signature
                except (NotFound, ConfigError):
                    old_signatures[old_label] = None  # deleted since, or not a model of this target
            result = compare_signatures(label, new_sig, old_label, old_signatures[old_label])
            if result.compatible is False and not spec.allow_schema_change:
                raise ConfigError(
                    f"endpoint {spec.name!r}: {result.text}",
                    field=f"variants[{index}].model",
                    hint=f"callers of {old_label} would get errors from {label}; deploy a version "
                    "that takes the same inputs, or, if callers change with it, allow it: "
                    "allow_schema_change=True (Python), allow_schema_change: true (mlshift.yaml), "
                    "--allow-schema-change (CLI)",
                )
            texts.append(("schema change allowed: " if result.compatible is False else "") + result.text)
        out.append(v.model_copy(update={"schema_check": "; ".join(texts)}) if texts else v)
    return out


def _plan_endpoint(
    adapter: Adapter,
    spec: EndpointSpec,
    observed: EndpointState | None,
    pending: dict[str, str],
    recover: bool = True,
    signatures: dict[str, Signature | None] | None = None,
    checks: bool = False,
) -> list[Action]:
    variants = [_resolve_variant(adapter, spec, i, pending) for i in range(len(spec.variants))]
    recovery, observed = _recovery(adapter, spec.name, observed) if recover else ([], observed)
    if observed is None:
        return [CreateEndpoint(endpoint=spec.name, spec=spec, variants=tuple(variants))]
    variants = _check_schemas(adapter, spec, observed, variants, signatures or {})

    actions: list[Action] = []
    restores: list[Action] = []
    desired = {v.name: v for v in variants}
    for v in variants:
        live = observed.variant(v.name)
        if live is None:
            actions.append(AddVariant(endpoint=spec.name, variant=v))
            continue
        # Where the target reports it: servers take their batching settings when they start, so a
        # change replaces the variant, with the same model (and the spec's compute) if only that.
        rebatch = live.batching is not None and batching_key(live.batching) != batching_key(v.batching)
        if v.model is None or live.model != f"{v.model.name}:{v.model.version}" or rebatch:
            old_batching = live.batching if rebatch else None
            actions.append(
                ReplaceVariant(endpoint=spec.name, variant=v, old_model=live.model, old_batching=old_batching)
            )
        elif live.compute != v.compute:
            actions.append(
                UpdateCompute(endpoint=spec.name, variant=v.name, compute=v.compute, old_compute=live.compute)
            )
        elif not recovery and live.ready_replicas is not None and live.ready_replicas < live.compute.replicas:
            # Same model and compute, but replicas died (killed, out of memory): the spec still
            # wants them. A replaced or resized variant gets new replicas anyway; after a
            # recovery the predicted state says nothing about replicas.
            reason = (live.detail or "").split("\n", 1)[0] or None
            restores.append(
                RestoreReplicas(
                    endpoint=spec.name,
                    variant=v.name,
                    model=live.model,
                    count=live.compute.replicas - live.ready_replicas,
                    reason=reason,
                )
            )
    new_weights = {v.name: v.weight for v in variants}
    old_weights = observed.weights
    full_new = {**dict.fromkeys(old_weights, 0), **new_weights}
    if full_new != old_weights:
        actions.append(SetWeights(endpoint=spec.name, weights=full_new, old_weights=old_weights))
    for live in observed.variants:
        if live.name not in desired:
            actions.append(RemoveVariant(endpoint=spec.name, variant=live.name, model=live.model))
    # After the variant changes: a target whose new variants already carry the new options
    # (SageMaker makes one configuration for both) then finds the options in effect.
    option_changes: list[OptionChange] = adapter.endpoints.option_changes(spec)
    if option_changes:
        actions.append(UpdateOptions(endpoint=spec.name, spec=spec, changes=tuple(option_changes)))
    if dict(spec.tags) != observed.tags:
        actions.append(UpdateTags(endpoint=spec.name, tags=dict(spec.tags), old_tags=observed.tags))
    if spec.autoscaling is not None and spec.autoscaling != observed.autoscaling:
        # A spec without autoscaling leaves the target's scaling alone (deploy() builds such specs).
        actions.append(
            UpdateAutoscaling(
                endpoint=spec.name, autoscaling=spec.autoscaling, old_autoscaling=observed.autoscaling
            )
        )
    folded = _as_rollout(adapter, spec, observed, actions, checks)
    if Capability.IN_PLACE_UPDATE not in adapter.capabilities:
        # What runs before a rollout (a resize) keeps the live weights: the rollout moves them.
        split = next((i for i, a in enumerate(folded) if isinstance(a, Rollout)), len(folded))
        lowered = _without_in_place(adapter, spec.name, folded[:split], observed, desired)
        folded = [*lowered, *folded[split:]]
    # First: a rollout measures the serving variants against its gate, so they serve in full.
    return [*recovery, *restores, *folded]


def build_plan(
    adapter: Adapter,
    *,
    models: Sequence[ModelSpec] = (),
    endpoints: Iterable[EndpointSpec] = (),
    recover: bool = True,
    checks: bool = False,
) -> Plan:
    """Diff desired models and endpoints against the target's live state.

    Nothing is changed: the planner only reads (artifact digests, registry, endpoint state).
    A rollout a dead process left open is recovered first (``recover=False`` diffs against the
    state as it is). ``checks=True`` says the apply will pass gate checks (``checks=``): only
    mlshift's engine calls them, so no rollout is handed to the target.

    Raises:
        ConfigError: a spec the target cannot take (names, options, ports).
        UnsupportedOperation: a spec that needs a capability the target lacks.
        NotFound: a model reference that resolves to nothing.
    """
    from mlshift._artifacts import check_artifact, digest_path
    from mlshift._mlflow import is_mlflow_uri

    actions: list[Action] = []
    unchanged: list[str] = []
    pending: dict[str, str] = {}
    signatures: dict[str, Signature | None] = {}
    for i, model in enumerate(models):
        adapter.name_rules.model.check("model", model.name, adapter.uri.raw, field=f"models[{i}].name")
        if is_mlflow_uri(model.path):
            raise ConfigError(
                f"model {model.name!r}: MLflow model URIs ({model.path}) are registered with "
                "`mlshift models register`, not planned",
                field=f"models[{i}].path",
                hint=f"run `mlshift models register {model.name} {model.path}` and point endpoints at "
                f"the version it prints, or download the model folder and set path to it",
            )
        if "://" in model.path:
            raise ConfigError(
                f"model {model.name!r}: remote artifact URIs ({model.path}) are not supported yet",
                field=f"models[{i}].path",
                hint="point path at a local file or directory",
            )
        # A plan is data that may be saved and applied from another directory (or machine
        # folder layout): the artifact's path travels absolute, resolved where it was planned.
        # absolute(), not resolve(): a symbolic link stays one, for check_artifact to refuse.
        model = model.model_copy(update={"path": str(Path(model.path).absolute())})
        check_artifact(model.path, model.framework, model.tags)
        digest = digest_path(model.path)
        if adapter.models.find_by_digest(model.name, digest) is None:
            if model.signature is None:
                # As `models.register` does: the version gets the signature its artifact shows,
                # and an endpoint of the same plan is checked against it (not "unknown").
                model = model.model_copy(update={"signature": _artifact_signature(model)})
            actions.append(RegisterModel(model=model, digest=digest))
            pending[model.name] = digest
            signatures[model.name] = model.signature
        else:
            unchanged.append(f"model {model.name}")

    observed: dict[str, str] = {}
    notes: list[str] = []
    for spec in endpoints:
        _check_names(adapter, spec)
        _check_capabilities(adapter, spec)
        check_gate_observable(adapter, spec)
        adapter.endpoints.validate(spec)
        state = adapter.endpoints.observe(spec.name)
        observed[spec.name] = state_fingerprint(state)
        endpoint_actions = _plan_endpoint(adapter, spec, state, pending, recover, signatures, checks)
        if endpoint_actions:
            actions.extend(endpoint_actions)
            # Notes explain changes: an unchanged endpoint has nothing to explain.
            notes.extend(f"endpoint {spec.name}: {n}" for n in adapter.endpoints.plan_notes(spec, state))
        else:
            unchanged.append(f"endpoint {spec.name}")
    return Plan(
        target=adapter.uri.raw,
        actions=tuple(actions),
        observed=observed,
        unchanged=tuple(unchanged),
        notes=tuple(notes),
    )
