"""Plan and apply: diff desired specs against live state, then converge through the adapter."""

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
from mlshift.plan._apply import ApplyEvent, ApplyResult, apply_plan
from mlshift.plan._plan import Plan, build_plan, state_fingerprint

__all__ = [
    "Action",
    "AddVariant",
    "ApplyEvent",
    "ApplyResult",
    "CreateEndpoint",
    "Plan",
    "PlannedVariant",
    "RegisterModel",
    "RemoveVariant",
    "ReplaceVariant",
    "SetWeights",
    "UpdateCompute",
    "UpdateTags",
    "apply_plan",
    "build_plan",
    "state_fingerprint",
]
