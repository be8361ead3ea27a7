"""The executor: carries out a :class:`Plan` through the adapter's primitives."""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from mlshift.adapter import EndpointState, ResolvedVariant
from mlshift.errors import Conflict, MlshiftError
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
from mlshift.plan._plan import Plan, state_fingerprint
from mlshift.specs.model import ModelVersion

if TYPE_CHECKING:
    from mlshift.adapter import Adapter

__all__ = ["ApplyEvent", "ApplyResult", "apply_plan"]

#: How long ``apply`` waits for another process's change to the same endpoint.
DEFAULT_LOCK_TIMEOUT = 60.0
#: How long one primitive may take before ``apply`` gives up on it.
DEFAULT_OPERATION_TIMEOUT = 1800.0


@dataclass(frozen=True)
class ApplyEvent:
    """Progress of one action, for progress bars and JSON-lines logs."""

    index: int
    total: int
    action: Action
    phase: Literal["start", "done", "failed"]
    elapsed: float = 0.0
    error: str | None = None


@dataclass
class ApplyResult:
    """What ``apply`` did."""

    plan: Plan
    models: list[ModelVersion] = field(default_factory=list)
    endpoints: dict[str, EndpointState] = field(default_factory=dict)

    @property
    def changed(self) -> bool:
        return not self.plan.is_empty


def _lock_owner() -> str:
    return f"pid {os.getpid()} on {socket.gethostname()}"


def apply_plan(
    adapter: Adapter,
    plan: Plan,
    *,
    on_event: Callable[[ApplyEvent], None] | None = None,
    lock_timeout: float = DEFAULT_LOCK_TIMEOUT,
    operation_timeout: float = DEFAULT_OPERATION_TIMEOUT,
) -> ApplyResult:
    """Run a plan's actions in order.

    Each endpoint in the plan is locked for the whole apply, and its live state is compared
    with the state the plan was made from: a plan made stale by someone else's change is
    refused instead of half-applied on top of it.

    Raises:
        Conflict: another process holds an endpoint's lock, or the endpoint changed since the plan.
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
    registered: dict[str, ModelVersion] = {}
    with ExitStack() as stack:
        for name in sorted(plan.observed):
            stack.enter_context(adapter.endpoints.lock(name, owner=_lock_owner(), timeout=lock_timeout))
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
            if on_event:
                on_event(ApplyEvent(index, total, action, "start"))
            try:
                state = _run(adapter, action, registered, operation_timeout)
            except MlshiftError as exc:
                if on_event:
                    on_event(ApplyEvent(index, total, action, "failed", time.monotonic() - start, str(exc)))
                raise
            if isinstance(state, ModelVersion):
                result.models.append(state)
            elif isinstance(state, EndpointState):
                result.endpoints[state.name] = state
            if on_event:
                on_event(ApplyEvent(index, total, action, "done", time.monotonic() - start))
    return result


def _resolve(variant: PlannedVariant, registered: dict[str, ModelVersion]) -> ResolvedVariant:
    model = variant.model
    if model is None:
        assert variant.pending_model is not None
        model = registered[variant.pending_model]
    return ResolvedVariant(name=variant.name, model=model, weight=variant.weight, compute=variant.compute)


def _run(
    adapter: Adapter,
    action: Action,
    registered: dict[str, ModelVersion],
    timeout: float,
) -> ModelVersion | EndpointState | None:
    from pathlib import Path

    from mlshift._artifacts import digest_path
    from mlshift.adapter import Artifact

    endpoints = adapter.endpoints
    if isinstance(action, RegisterModel):
        path = Path(action.model.path)
        digest = digest_path(path)
        if digest != action.digest:
            raise Conflict(
                f"model {action.model.name!r}: {path} changed since the plan was made",
                hint="run plan again",
            )
        size = (
            sum(f.stat().st_size for f in path.rglob("*") if f.is_file())
            if path.is_dir()
            else path.stat().st_size
        )
        version = adapter.models.register(action.model, Artifact(path=path, digest=digest, size=size))
        registered[action.model.name] = version
        return version
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
    if isinstance(action, SetWeights):
        return endpoints.set_weights(action.endpoint, action.weights).wait(timeout)
    if isinstance(action, RemoveVariant):
        return endpoints.remove_variant(action.endpoint, action.variant).wait(timeout)
    if isinstance(action, UpdateTags):
        return endpoints.update_tags(action.endpoint, action.tags).wait(timeout)
    raise AssertionError(f"unhandled action {action!r}")  # pragma: no cover
