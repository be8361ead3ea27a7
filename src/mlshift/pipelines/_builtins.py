"""The local runner's side of the built-in steps: its step IR and inputs, mapped onto the one
definition of what they do (:mod:`mlshift.pipelines.builtins`, shared with cloud step runners).

They run inside the runner (in a worker thread), not in a step process: they are a few API
calls, and they need the runner's client (a ``memory://`` target exists only in-process).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlshift.pipelines import builtins as builtin_steps

if TYPE_CHECKING:
    from mlshift._client import Client
    from mlshift.pipelines._ir import StepIR

__all__ = ["deploy", "deploy_still_valid", "register_model", "register_still_valid"]

Log = Callable[[str], None]


def register_model(
    client: Client,
    step: StepIR,
    inputs: Mapping[str, Any],
    artifact: Path,
    *,
    lineage: Mapping[str, str],
    log: Log,
) -> dict[str, Any]:
    """Register ``artifact`` as model ``inputs["model"]`` unless those bytes are registered already.

    Returns:
        The step's outputs: ``{"values": {"version": "NAME:VERSION"}}``.

    Raises:
        MlshiftError: whatever registering raises (a bad artifact, a name the target refuses).
    """
    config = step.register_model
    assert config is not None
    version = builtin_steps.register_model(
        client,
        str(inputs["model"]),
        artifact,
        digest=inputs["artifact"]["digest"],
        framework=config.framework,
        metrics=inputs.get("metrics") or {},
        tags=config.tags,
        description=config.description,
        alias=config.alias,
        lineage=lineage,
        log=log,
    )
    return {"values": {"version": f"{version.name}:{version.version}"}}


def register_still_valid(client: Client, step: StepIR, inputs: Mapping[str, Any]) -> bool:
    """Whether a cached registration still stands: the version exists, with its alias."""
    config = step.register_model
    assert config is not None
    return builtin_steps.register_still_valid(
        client, str(inputs["model"]), inputs["artifact"]["digest"], config.alias
    )


def deploy(client: Client, step: StepIR, inputs: Mapping[str, Any], *, log: Log) -> dict[str, Any]:
    """Deploy ``inputs["model"]`` to endpoint ``inputs["endpoint"]`` through ``client.endpoints.deploy``.

    Returns:
        The step's outputs: ``{"values": {"url": ...}}``.

    Raises:
        MlshiftError: whatever the deployment raises (``RolloutFailed`` after a rollback, ...).
    """
    config = step.deploy
    assert config is not None
    state = builtin_steps.deploy(
        client,
        str(inputs["endpoint"]),
        str(inputs["model"]),
        traffic=config.traffic,
        size=config.size,
        replicas=config.replicas,
        allow_schema_change=config.allow_schema_change,
        log=log,
    )
    return {"values": {"url": state.url or ""}}


def deploy_still_valid(client: Client, step: StepIR, inputs: Mapping[str, Any]) -> bool:
    """Whether a cached deployment still stands: the endpoint serves that version, healthy."""
    config = step.deploy
    assert config is not None
    return builtin_steps.deploy_still_valid(
        client, str(inputs["endpoint"]), str(inputs["model"]), config.traffic
    )
