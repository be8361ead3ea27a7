"""The executor: carries out a :class:`Plan` through the adapter's primitives."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mlshift._artifacts import check_artifact, digest_path
from mlshift.adapter import Artifact, Capability, EndpointState, ResolvedVariant, RolloutRecord, VariantState
from mlshift.errors import Conflict, MlshiftError, UnsupportedOperation
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
    live_variant,
)
from mlshift.plan._plan import Plan, state_fingerprint
from mlshift.plan._rollout import GateCheck, Journal, new_record_id, owner_id, recover_rollout, run_rollout
from mlshift.specs.model import ModelVersion

if TYPE_CHECKING:
    from mlshift.adapter import Adapter

__all__ = ["ApplyEvent", "ApplyResult", "apply_plan", "converge_to"]

#: How long ``apply`` waits for another process's change to the same endpoint.
DEFAULT_LOCK_TIMEOUT = 60.0
#: How long one primitive may take before ``apply`` gives up on it.
DEFAULT_OPERATION_TIMEOUT = 1800.0


@dataclass(frozen=True)
class ApplyEvent:
    """Progress of one action, for progress bars and JSON-lines logs.

    ``progress`` events come from a rollout while it runs: ``detail`` holds the current stage,
    weights and gate readings.
    """

    index: int
    total: int
    action: Action
    phase: Literal["start", "progress", "done", "failed"]
    elapsed: float = 0.0
    error: str | None = None
    detail: dict[str, Any] | None = None


@dataclass
class ApplyResult:
    """What ``apply`` did."""

    plan: Plan
    models: list[ModelVersion] = field(default_factory=list)
    endpoints: dict[str, EndpointState] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return not self.plan.is_empty

    def _repr_html_(self) -> str:
        """How a notebook shows the result: the plan, registered models, endpoints as they are now."""
        from mlshift._html import apply_result_html

        return apply_result_html(self)


def apply_plan(
    adapter: Adapter,
    plan: Plan,
    *,
    on_event: Callable[[ApplyEvent], None] | None = None,
    checks: Sequence[GateCheck] = (),
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    operation_timeout: float = DEFAULT_OPERATION_TIMEOUT,
    label: str | None = None,
) -> ApplyResult:
    """Run a plan's actions in order.

    Each endpoint in the plan is locked for the whole apply, and its live state is compared
    with the state the plan was made from: a plan made stale by someone else's change is
    refused instead of half-applied on top of it. Every change to an endpoint is journaled
    before it is made (see :class:`~mlshift.adapter.RolloutRecord`).

    Args:
        checks: Extra health checks for rollouts, called with each gate reading.
        lock_timeout: How long to wait for another process's change to an endpoint.
        operation_timeout: How long one primitive may take.
        label: The strategy name recorded in the history for changes made without a rollout
            (default ``all-at-once``, or ``create``).

    Raises:
        Conflict: another process holds an endpoint's lock, or the endpoint changed since the plan.
        UnsupportedOperation: the plan swaps a variant in place on a target without
            ``IN_PLACE_UPDATE`` (a plan made elsewhere); nothing is changed.
        RolloutFailed: a rollout's gate failed; traffic is back on the previous version.
        MlshiftError: from the failing primitive; earlier actions stay applied, and a new plan
            shows what remains.
    """
    result = ApplyResult(plan=plan)
    if plan.is_empty:
        return result
    if plan.target != adapter.uri.raw:
        raise Conflict(
            f"this plan was made for {plan.target}, not {adapter.uri.raw}",
            hint="make the plan against the target you apply it to",
        )
    in_place = [a for a in plan.actions if isinstance(a, (ReplaceVariant, UpdateCompute))]
    if in_place and Capability.IN_PLACE_UPDATE not in adapter.capabilities:
        # Refused before the first action, not when the apply reaches it half-way through.
        raise UnsupportedOperation(
            f"this plan changes variants in place ({in_place[0].describe()}), which "
            f"{adapter.uri.raw} cannot do (no IN_PLACE_UPDATE)",
            hint="make the plan against this target again: it replaces such variants by adding, "
            "moving traffic and removing",
        )
    registered: dict[str, ModelVersion] = {}
    journals: dict[str, Journal] = {}
    owner = owner_id()
    with ExitStack() as stack:
        for name in sorted(plan.observed):
            stack.enter_context(adapter.endpoints.lock(name, owner=owner, timeout=lock_timeout))
            now = state_fingerprint(adapter.endpoints.observe(name))
            if now != plan.observed[name]:
                raise Conflict(
                    f"endpoint {name!r} changed since this plan was made",
                    provider=adapter.name,
                    hint="run plan again and review the new diff",
                )
        total = len(plan.actions)
        for index, action in enumerate(plan.actions, start=1):
            start = time.monotonic()

            def emit(
                detail: dict[str, Any], index: int = index, action: Action = action, start: float = start
            ) -> None:
                if on_event:
                    on_event(
                        ApplyEvent(index, total, action, "progress", time.monotonic() - start, detail=detail)
                    )

            if on_event:
                on_event(ApplyEvent(index, total, action, "start"))
            try:
                if isinstance(action, (RegisterModel, Rollout, RecoverRollout)):
                    state = _run_special(adapter, action, registered, emit, checks, operation_timeout)
                else:
                    journal = journals.get(action.endpoint) or _open_journal(adapter, action, journals, label)
                    journal.step(action.describe())
                    state = _run(adapter, action, registered, operation_timeout)
            except (MlshiftError, KeyboardInterrupt) as exc:
                if on_event:
                    on_event(ApplyEvent(index, total, action, "failed", time.monotonic() - start, str(exc)))
                endpoint = getattr(action, "endpoint", None)
                if endpoint in journals:
                    journals.pop(endpoint).phase("failed", reason=str(exc))
                raise
            if isinstance(state, ModelVersion):
                result.models.append(state)
            elif isinstance(state, EndpointState):
                result.endpoints[state.name] = state
            if on_event:
                on_event(ApplyEvent(index, total, action, "done", time.monotonic() - start))
        for name, journal in journals.items():
            final = adapter.endpoints.observe(name)
            journal.phase("succeeded", target=final.variants if final else ())
    return result


def _open_journal(
    adapter: Adapter, action: Action, journals: dict[str, Journal], label: str | None
) -> Journal:
    endpoint: str = getattr(action, "endpoint")  # noqa: B009  (every non-model action has one)
    before = adapter.endpoints.observe(endpoint)
    journal = Journal(
        adapter,
        RolloutRecord(
            id=new_record_id(),
            endpoint=endpoint,
            strategy="create" if isinstance(action, CreateEndpoint) else (label or "all-at-once"),
            started_at=datetime.now(timezone.utc),
            baseline=before.variants if before else (),
            owner=owner_id(),
        ),
    )
    journals[endpoint] = journal
    return journal


def _resolve(variant: PlannedVariant, registered: dict[str, ModelVersion]) -> ResolvedVariant:
    return variant.resolved(registered)


def _run_special(
    adapter: Adapter,
    action: RegisterModel | Rollout | RecoverRollout,
    registered: dict[str, ModelVersion],
    emit: Callable[[dict[str, Any]], None],
    checks: Sequence[GateCheck],
    timeout: float,
) -> ModelVersion | EndpointState | None:
    if isinstance(action, Rollout):
        return run_rollout(adapter, action, registered, emit=emit, checks=checks, timeout=timeout)
    if isinstance(action, RecoverRollout):
        recover_rollout(adapter, action, timeout=timeout)
        return adapter.endpoints.observe(action.endpoint)
    path = Path(action.model.path)
    digest = digest_path(path)
    if digest != action.digest:
        raise Conflict(
            f"model {action.model.name!r}: {path} changed since the plan was made",
            hint="run plan again",
        )
    size = check_artifact(path, action.model.framework, action.model.tags)
    version = adapter.models.register(action.model, Artifact(path=path, digest=digest, size=size))
    registered[action.model.name] = version
    return version


def _run(
    adapter: Adapter,
    action: Action,
    registered: dict[str, ModelVersion],
    timeout: float,
) -> EndpointState | None:
    endpoints = adapter.endpoints
    if isinstance(action, CreateEndpoint):
        variants = [_resolve(v, registered) for v in action.variants]
        return endpoints.create(action.spec, variants).wait(timeout)
    if isinstance(action, AddVariant):
        variant = _resolve(action.variant, registered).model_copy(update={"weight": 0})
        return endpoints.add_variant(action.endpoint, variant).wait(timeout)
    if isinstance(action, ReplaceVariant):
        return endpoints.replace_variant(action.endpoint, _resolve(action.variant, registered)).wait(timeout)
    if isinstance(action, UpdateCompute):
        return endpoints.update_compute(action.endpoint, action.variant, action.compute).wait(timeout)
    if isinstance(action, RestoreReplicas):
        return endpoints.restore_replicas(action.endpoint, action.variant).wait(timeout)
    if isinstance(action, SetWeights):
        return endpoints.set_weights(action.endpoint, action.weights).wait(timeout)
    if isinstance(action, RemoveVariant):
        return endpoints.remove_variant(action.endpoint, action.variant).wait(timeout)
    if isinstance(action, UpdateTags):
        return endpoints.update_tags(action.endpoint, action.tags).wait(timeout)
    if isinstance(action, UpdateAutoscaling):
        return endpoints.set_autoscaling(action.endpoint, action.autoscaling).wait(timeout)
    if isinstance(action, UpdateOptions):
        return endpoints.update_options(action.endpoint, action.spec).wait(timeout)
    raise AssertionError(f"unhandled action {action!r}")  # pragma: no cover


def converge_to(
    adapter: Adapter,
    endpoint: str,
    variants: Sequence[VariantState],
    *,
    timeout: float = DEFAULT_OPERATION_TIMEOUT,
) -> EndpointState | None:
    """Bring an endpoint to exactly ``variants`` (models, weights, compute), all at once.

    Used to finish a promotion that a dead process left half done; the caller holds the lock.
    """
    from mlshift.plan._plan import build_plan
    from mlshift.specs.endpoint import EndpointSpec

    state = adapter.endpoints.observe(endpoint)
    spec = EndpointSpec.model_validate(
        {
            "name": endpoint,
            "variants": [live_variant(v) for v in variants],
            "tags": state.tags if state else {},
            "allow_schema_change": True,  # finishing a change whose plan was already accepted
        }
    )
    plan = build_plan(adapter, endpoints=[spec], recover=False)  # the open record is ours
    registered: dict[str, ModelVersion] = {}
    for action in plan.actions:
        if isinstance(action, UpdateOptions):
            continue  # converging variants; the endpoint keeps its options
        _run(adapter, action, registered, timeout)
    return adapter.endpoints.observe(endpoint)
