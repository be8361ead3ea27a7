"""Plan and apply: diff desired specs against live state, then converge through the adapter."""

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
)
from mlshift.plan._apply import ApplyEvent, ApplyResult, apply_plan
from mlshift.plan._plan import Plan, build_plan, effective_state, state_fingerprint
from mlshift.plan._rollout import GateCheck, GateReading

__all__ = [
    "Action",
    "AddVariant",
    "ApplyEvent",
    "ApplyResult",
    "CreateEndpoint",
    "GateCheck",
    "GateReading",
    "Plan",
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
    "apply_plan",
    "build_plan",
    "effective_state",
    "state_fingerprint",
]
