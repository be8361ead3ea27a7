"""The built-in steps, carried out by calling mlshift's own public API on the pipeline's target.

They run inside the runner (in a worker thread), not in a step process: they are a few API
calls, and they need the runner's client (a ``memory://`` target exists only in-process).

Both are safe to repeat, which is what makes resuming safe. ``RegisterModel`` first looks for
a version of the model with the same bytes and reuses it; ``Deploy`` goes through plan and
apply, which changes nothing when the endpoint already serves the version.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

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
    name = str(inputs["model"])
    digest = inputs["artifact"]["digest"]
    existing = client.adapter.models.find_by_digest(name, digest)
    if existing is not None:
        version = existing
        log(f"{name}:{version.version} already holds these bytes ({digest[:19]}…); reusing it")
    else:
        metrics = inputs.get("metrics") or {}
        version = client.models.register(
            name,
            artifact,
            framework=config.framework,
            metrics=metrics,
            tags={**config.tags, **lineage},
            description=config.description,
        )
        log(f"registered {name}:{version.version} from {artifact.name} ({digest[:19]}…)")
    if config.alias and config.alias not in version.aliases:
        client.models.set_alias(name, config.alias, version.version)
        log(f"{name}@{config.alias} -> {name}:{version.version}")
    return {"values": {"version": f"{name}:{version.version}"}}


def register_still_valid(client: Client, step: StepIR, inputs: Mapping[str, Any]) -> bool:
    """Whether a cached registration still stands: the version exists, with its alias."""
    config = step.register_model
    assert config is not None
    version = client.adapter.models.find_by_digest(str(inputs["model"]), inputs["artifact"]["digest"])
    if version is None:
        return False
    return not config.alias or config.alias in version.aliases


def deploy(client: Client, step: StepIR, inputs: Mapping[str, Any], *, log: Log) -> dict[str, Any]:
    """Deploy ``inputs["model"]`` to endpoint ``inputs["endpoint"]`` through ``client.endpoints.deploy``.

    Returns:
        The step's outputs: ``{"values": {"url": ...}}``.

    Raises:
        MlshiftError: whatever the deployment raises (``RolloutFailed`` after a rollback, ...).
    """
    config = step.deploy
    assert config is not None
    endpoint, model = str(inputs["endpoint"]), str(inputs["model"])
    log(f"deploying {model} to endpoint {endpoint} ({config.size} x{config.replicas})")
    state = client.endpoints.deploy(
        endpoint, model, traffic=config.traffic, size=config.size, replicas=config.replicas
    )
    for v in state.variants:
        log(f"  variant {v.name}: {v.model} {v.weight}% {v.status}")
    return {"values": {"url": state.url or ""}}


def deploy_still_valid(client: Client, step: StepIR, inputs: Mapping[str, Any]) -> bool:
    """Whether a cached deployment still stands: the endpoint serves that version, healthy."""
    from mlshift.errors import MlshiftError

    config = step.deploy
    assert config is not None
    try:
        wanted = client.models.get(str(inputs["model"]))
        state = client.adapter.endpoints.observe(str(inputs["endpoint"]))
    except MlshiftError:
        return False
    if state is None:
        return False
    exact = f"{wanted.name}:{wanted.version}"
    share = 100 if config.traffic is None else config.traffic
    return any(v.model == exact and v.weight == share and v.status == "healthy" for v in state.variants)
