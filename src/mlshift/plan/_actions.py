"""The steps a plan is made of. Each is data: it can be printed, serialised and replayed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Annotated, Any, Literal

from pydantic import Field

from mlshift.adapter import OptionChange, ResolvedVariant, VariantState
from mlshift.specs._base import SpecModel
from mlshift.specs.endpoint import Autoscaling, Batching, Compute, EndpointSpec
from mlshift.specs.model import ModelSpec, ModelVersion
from mlshift.specs.rollout import BlueGreen, Canary, Linear, RolloutStrategy, Shadow

__all__ = [
    "Action",
    "AddVariant",
    "CreateEndpoint",
    "PlannedVariant",
    "RecoverRollout",
    "RegisterModel",
    "RemoveVariant",
    "ReplaceVariant",
    "RestoreReplicas",
    "Rollout",
    "SetWeights",
    "UpdateAutoscaling",
    "UpdateCompute",
    "UpdateOptions",
    "UpdateTags",
]


class PlannedVariant(SpecModel):
    """A variant as the plan will create it.

    ``model`` is the resolved version; it is ``None`` only when the version is registered by
    an earlier step of the same plan (then ``pending_model`` names it). ``schema_check`` says
    how its inputs compare with those of the versions the endpoint serves, when it is new there
    (``inputs match iris:1 (4 columns)``, ``no known signature for ...``).

    ``provider_options`` and ``autoscaling`` are the endpoint spec's: the target makes the
    variant with them (see :class:`~mlshift.adapter.ResolvedVariant`), so the plan holds all an
    apply needs, whichever process runs it.
    """

    name: str
    ref: str
    model: ModelVersion | None = None
    pending_model: str | None = None
    weight: int
    compute: Compute
    schema_check: str | None = None
    provider_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    autoscaling: Autoscaling | None = None
    batching: Batching | None = None

    def resolved(self, registered: Mapping[str, ModelVersion], **changes: Any) -> ResolvedVariant:
        """The variant as the target's primitives take it, with ``changes`` applied.

        ``registered`` maps a model registered earlier in the same apply to its new version
        (for a variant whose ``pending_model`` it is).
        """
        model = self.model if self.model is not None else registered[self.pending_model or ""]
        fields: dict[str, Any] = {
            "name": self.name,
            "model": model,
            "weight": self.weight,
            "compute": self.compute,
            "provider_options": self.provider_options,
            "autoscaling": self.autoscaling,
            "batching": self.batching,
        }
        return ResolvedVariant(**{**fields, **changes})

    @property
    def model_label(self) -> str:
        if self.model is not None:
            return f"{self.model.name}:{self.model.version}"
        return f"{self.pending_model}:(new version)"

    @property
    def batching_label(self) -> str:
        """``, batching 32 rows / 2 ms`` when the variant batches, else nothing."""
        return f", {self.batching.describe()}" if self.batching is not None else ""


def batching_key(batching: Batching | None) -> tuple[int, float] | None:
    """What decides how a variant's servers batch: ``None`` when they do not (any latency)."""
    if batching is None or batching.max_batch_size <= 1:
        return None
    return batching.max_batch_size, batching.max_latency_ms


def live_variant(live: VariantState, weight: int | None = None) -> dict[str, Any]:
    """A spec variant (as a dict) that keeps ``live`` as it is: model, compute and batching.

    For specs built from live state (a rollback, a traffic change, finishing a promotion): one
    that left out batching would make the plan restart the variant without it.
    """
    batching = live.batching if batching_key(live.batching) is not None else None
    return {
        "name": live.name,
        "model": live.model,
        "weight": live.weight if weight is None else weight,
        "compute": live.compute.model_dump(),
        "batching": batching.model_dump() if batching is not None else None,
    }


class RegisterModel(SpecModel):
    """Register a new version of a model whose bytes the target does not have yet."""

    kind: Literal["register_model"] = "register_model"
    model: ModelSpec
    digest: str

    @property
    def resource(self) -> str:
        return f"model {self.model.name}"

    def describe(self) -> str:
        return f"register a new version of {self.model.name} ({self.digest[:19]}…)"


class CreateEndpoint(SpecModel):
    """Create an endpoint with its first variants."""

    kind: Literal["create_endpoint"] = "create_endpoint"
    endpoint: str
    spec: EndpointSpec
    variants: tuple[PlannedVariant, ...]

    @property
    def resource(self) -> str:
        return f"endpoint {self.endpoint}"

    def describe(self) -> str:
        parts = ", ".join(f"{v.name}={v.model_label} {v.weight}%{v.batching_label}" for v in self.variants)
        text = f"create endpoint {self.endpoint} ({parts})"
        capture = self.spec.capture
        if capture is not None and capture.enabled:
            # Made with the endpoint: no later action shows it, so its line does.
            text += f" with {capture.describe()}"
        return text


class AddVariant(SpecModel):
    """Start a new variant at 0% (weights move in a later step).

    Attributes:
        stand_in_for: On a target without ``IN_PLACE_UPDATE``, the variant whose traffic this
            temporary one carries while that variant is removed and added again with its new
            model or compute (this one is removed at the end of the plan).
    """

    kind: Literal["add_variant"] = "add_variant"
    endpoint: str
    variant: PlannedVariant
    stand_in_for: str | None = None

    @property
    def resource(self) -> str:
        return f"endpoint {self.endpoint}"

    def describe(self) -> str:
        v = self.variant
        text = (
            f"add variant {v.name} ({v.model_label}, {v.compute.size} x{v.compute.replicas}"
            f"{v.batching_label}) at 0%"
        )
        if self.stand_in_for:
            text += f", to serve {self.stand_in_for}'s traffic while it is replaced (no in-place updates)"
        return f"{text}; {v.schema_check}" if v.schema_check else text


class ReplaceVariant(SpecModel):
    """Swap the model behind an existing variant, keeping its traffic; or, with the same model,
    restart it with other batching settings.

    Attributes:
        old_batching: The batching the variant runs with now, when the target reports it and
            it changes (``None``: it does not change, or is not known).
    """

    kind: Literal["replace_variant"] = "replace_variant"
    endpoint: str
    variant: PlannedVariant
    old_model: str
    old_batching: Batching | None = None

    @property
    def resource(self) -> str:
        return f"endpoint {self.endpoint}"

    def describe(self) -> str:
        v = self.variant
        if self.old_batching is not None:
            new = (v.batching or Batching()).describe()
            change = f"{self.old_batching.describe()} -> {new}"
            if self.old_model == v.model_label:
                text = f"variant {v.name} ({v.model_label}): {change}"
            else:
                text = f"variant {v.name}: model {self.old_model} -> {v.model_label}, {change}"
        else:
            text = f"variant {v.name}: model {self.old_model} -> {v.model_label}{v.batching_label}"
        return f"{text}; {v.schema_check}" if v.schema_check else text


class UpdateCompute(SpecModel):
    """Resize a variant in place."""

    kind: Literal["update_compute"] = "update_compute"
    endpoint: str
    variant: str
    compute: Compute
    old_compute: Compute

    @property
    def resource(self) -> str:
        return f"endpoint {self.endpoint}"

    def describe(self) -> str:
        old, new = self.old_compute, self.compute
        return f"variant {self.variant}: compute {old.size} x{old.replicas} -> {new.size} x{new.replicas}"


class RestoreReplicas(SpecModel):
    """Start again replicas of an unchanged variant that exited or stopped answering.

    Attributes:
        model: ``name:version`` the variant serves (it keeps it).
        count: How many of its replicas were not ready when the plan was made.
        reason: Why, as the target reported it (``replica 0 exited (code 137)``).
    """

    kind: Literal["restore_replicas"] = "restore_replicas"
    endpoint: str
    variant: str
    model: str
    count: int
    reason: str | None = None

    @property
    def resource(self) -> str:
        return f"endpoint {self.endpoint}"

    def describe(self) -> str:
        text = (
            f"restore {self.count} replica{'s' if self.count != 1 else ''} of {self.variant} ({self.model})"
        )
        return f"{text}: {self.reason}" if self.reason else text


class SetWeights(SpecModel):
    """Move traffic: every variant's share at once."""

    kind: Literal["set_weights"] = "set_weights"
    endpoint: str
    weights: dict[str, int]
    old_weights: dict[str, int]

    @property
    def resource(self) -> str:
        return f"endpoint {self.endpoint}"

    def describe(self) -> str:
        names = list(dict.fromkeys([*self.old_weights, *self.weights]))
        moves = [
            f"{n} {self.old_weights.get(n, 0)}% -> {self.weights.get(n, 0)}%"
            for n in names
            if self.old_weights.get(n, 0) != self.weights.get(n, 0)
        ]
        return "traffic: " + ", ".join(moves)


class RemoveVariant(SpecModel):
    """Stop a variant that no longer carries traffic."""

    kind: Literal["remove_variant"] = "remove_variant"
    endpoint: str
    variant: str
    model: str

    @property
    def resource(self) -> str:
        return f"endpoint {self.endpoint}"

    def describe(self) -> str:
        return f"remove variant {self.variant} ({self.model})"


class UpdateTags(SpecModel):
    """Replace an endpoint's tags."""

    kind: Literal["update_tags"] = "update_tags"
    endpoint: str
    tags: dict[str, str]
    old_tags: dict[str, str]

    @property
    def resource(self) -> str:
        return f"endpoint {self.endpoint}"

    def describe(self) -> str:
        return f"tags {self.old_tags} -> {self.tags}"


class UpdateAutoscaling(SpecModel):
    """Set how the endpoint's variants scale."""

    kind: Literal["update_autoscaling"] = "update_autoscaling"
    endpoint: str
    autoscaling: Autoscaling
    old_autoscaling: Autoscaling | None = None

    @property
    def resource(self) -> str:
        return f"endpoint {self.endpoint}"

    def describe(self) -> str:
        new = self.autoscaling
        target = (
            f", {new.target_requests_per_replica:g} requests/replica"
            if new.target_requests_per_replica
            else ""
        )
        return f"autoscaling: {new.min_replicas}-{new.max_replicas} replicas{target}"


class UpdateOptions(SpecModel):
    """Make a live endpoint use the spec's provider options (variants and weights stay as they are).

    Planned after the variant changes of the same plan: a target whose variant change already
    carried the new options then has nothing left to do here.

    Attributes:
        spec: The spec whose ``provider_options`` the endpoint takes.
        changes: Each option that changes, old -> new, as the target reported it (no secrets).
    """

    kind: Literal["update_options"] = "update_options"
    endpoint: str
    spec: EndpointSpec
    changes: tuple[OptionChange, ...]

    @property
    def resource(self) -> str:
        return f"endpoint {self.endpoint}"

    def describe(self) -> str:
        return "provider options: " + ", ".join(c.describe() for c in self.changes)


def _gate_text(strategy: RolloutStrategy) -> str:
    gate = strategy.gate
    parts = [f"errors <= {gate.max_error_rate:.2%}"]
    if gate.max_client_error_increase is not None:
        parts.append(f"4xx <= baseline + {gate.max_client_error_increase * 100:g} points")
    if gate.max_p99 is not None:
        parts.append(f"p99 <= {gate.max_p99 * 1000:g}ms")
    if gate.max_p99_ratio is not None:
        parts.append(f"p99 <= {gate.max_p99_ratio:g}x baseline")
    parts.append(f">= {gate.min_requests} requests")
    if gate.probe is not None:
        parts.append(f"probes {gate.probe.rate:g}/s")
    return ", ".join(parts)


def _how(s: RolloutStrategy) -> str:
    if isinstance(s, Canary):
        return f"canary {s.percent}% for {s.bake:g}s, then all"
    if isinstance(s, Linear):
        return f"linear steps of {s.step_percent}% every {s.interval:g}s"
    if isinstance(s, BlueGreen):
        return f"blue/green, bake {s.bake:g}s"
    return "all at once"


class Rollout(SpecModel):
    """Move traffic to new versions step by step, watching a health gate, rolling back on failure.

    Attributes:
        baseline: The variants serving now (restored on rollback).
        candidates: The variants that receive the new versions, under their final names.
        staging: Final name → temporary name, for variants whose model changes in place: the
            new version runs beside the old one under the temporary name until promotion.
        final_weights: The weights when the rollout has finished (final names).
        remove: Variants that go away once traffic has left them.
        native: Who runs it, decided at plan time: ``True`` hands it to the target
            (``NATIVE_ROLLOUT``), ``False`` runs it on mlshift's engine. ``None`` (a plan made
            before this was recorded) lets the target's ``NATIVE_ROLLOUT`` decide at apply time.
        runner: The target that runs it natively, as plans name it (``the sagemaker target``).
        engine_reason: Why mlshift's engine runs it although the target runs rollouts natively.
    """

    kind: Literal["rollout"] = "rollout"
    endpoint: str
    strategy: RolloutStrategy
    baseline: tuple[VariantState, ...]
    candidates: tuple[PlannedVariant, ...]
    staging: dict[str, str] = Field(default_factory=dict)
    final_weights: dict[str, int]
    remove: tuple[str, ...] = ()
    native: bool | None = None
    runner: str | None = None
    engine_reason: str | None = None

    @property
    def resource(self) -> str:
        return f"endpoint {self.endpoint}"

    def _rebatch(self, v: PlannedVariant) -> str:
        """`` (batching off -> batching 8 rows / 5 ms)`` when the rollout changes how ``v`` batches."""
        live = next((b for b in self.baseline if b.name == v.name), None)
        if live is None or live.batching is None or batching_key(live.batching) == batching_key(v.batching):
            return ""
        return f" ({live.batching.describe()} -> {(v.batching or Batching()).describe()})"

    def describe(self) -> str:
        new = ", ".join(f"{v.name}={v.model_label}{self._rebatch(v)}" for v in self.candidates)
        s = self.strategy
        if isinstance(s, Shadow):
            then = _how(s.then)
            how = (
                f"shadow {s.percent}% of traffic for {s.duration:g}s (answers never returned; agreement "
                f">= {s.min_agreement:.0%}, gate: {_gate_text(s)}), then {then}"
            )
            if isinstance(s.then, Canary):
                how += f"; gate: {_gate_text(s.then)}"
        else:
            how = f"{_how(s)}; gate: {_gate_text(s)}"
        text = f"roll out {new}: {how}; rolls back on failure"
        text += "".join(f"; {v.schema_check}" for v in self.candidates if v.schema_check)
        if self.native:
            return f"{text}; {self.runner or 'the target'} runs it natively"
        if self.engine_reason:
            return f"{text}; mlshift runs it: {self.engine_reason}"
        return text


class RecoverRollout(SpecModel):
    """Deal with a rollout a dead process left open: roll it back, or finish it if it was promoting."""

    kind: Literal["recover_rollout"] = "recover_rollout"
    endpoint: str
    record_id: str
    strategy: str
    mode: Literal["rollback", "complete", "close"]
    owner: str = ""

    @property
    def resource(self) -> str:
        return f"endpoint {self.endpoint}"

    def describe(self) -> str:
        what = {
            "rollback": "roll back",
            "complete": "finish (its gate had passed)",
            "close": "close",
        }[self.mode]
        who = f" left open by {self.owner}" if self.owner else ""
        return f"{what} the interrupted {self.strategy} rollout {self.record_id}{who}"


Action = Annotated[
    RegisterModel
    | CreateEndpoint
    | AddVariant
    | ReplaceVariant
    | UpdateCompute
    | RestoreReplicas
    | SetWeights
    | RemoveVariant
    | UpdateTags
    | UpdateAutoscaling
    | UpdateOptions
    | Rollout
    | RecoverRollout,
    Field(discriminator="kind"),
]
