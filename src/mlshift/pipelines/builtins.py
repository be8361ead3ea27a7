"""What the built-in steps do, defined once for every runner.

The local runner calls these from its worker threads; a cloud step runner (SageMaker's
``python -m mlshift_sagemaker.step``) calls them inside the step's container. Either way:

- ``RegisterModel`` reuses the version of the model that already holds the same bytes (found by
  digest) instead of registering them again, tags a new version with its lineage
  (``mlshift:pipeline``, ``mlshift:run``), and moves the alias if one is asked for.
- ``Deploy`` goes through ``client.endpoints.deploy`` (plan and apply), which changes nothing
  when the endpoint already serves the version.
- A failing step is retried after :func:`retry_delay` seconds: doubling from ``retry_delay``.
  A cloud step runner that retries a step function itself calls it through
  :func:`call_with_retries`.

Both steps are safe to repeat, which is what makes resuming a run safe.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from mlshift._client import Client
    from mlshift.adapter import EndpointState
    from mlshift.specs.model import ModelVersion

__all__ = [
    "call_with_retries",
    "deploy",
    "deploy_still_valid",
    "lineage_tags",
    "register_model",
    "register_still_valid",
    "retry_delay",
    "total_retry_delay",
]

Log = Callable[[str], None]

_T = TypeVar("_T")


def retry_delay(base: float, attempt: int) -> float:
    """Seconds to wait after failed attempt number ``attempt`` (1-based): ``base * 2 ** (attempt - 1)``."""
    return float(base) * 2.0 ** (attempt - 1)


def total_retry_delay(base: float, retries: int) -> float:
    """Seconds spent waiting between attempts when all ``retries`` are used."""
    return sum(retry_delay(base, attempt) for attempt in range(1, retries + 1))


def call_with_retries(
    call: Callable[[], _T],
    *,
    retries: int,
    delay: float,
    log: Log | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> _T:
    """Call ``call`` until it returns, at most ``retries + 1`` times, as every runner retries a step.

    After failed attempt number ``n`` (any ``Exception``) that is not the last, it says
    ``attempt n failed: TYPE: MESSAGE; retrying`` and waits :func:`retry_delay` ``(delay, n)``
    seconds. A cloud step runner wraps the user's step function in it inside the step's
    container, so a step retries the same way everywhere.

    Args:
        call: The attempt: the step function with its arguments bound.
        retries: How many times to call again after a failure (``0``: call once).
        delay: Seconds before the first retry; doubled for each next one.
        log: Where the line about a failed attempt goes (default: this process's stderr, as
            a step container's log).
        sleep: Waits between attempts (tests pass a recorder).

    Returns:
        What the first successful attempt returned.

    Raises:
        Exception: Whatever the last attempt raised, unchanged.
    """
    say = log or (lambda line: print(line, file=sys.stderr))
    attempts = int(retries) + 1
    attempt = 1
    while True:
        try:
            return call()
        except Exception as exc:
            if attempt >= attempts:
                raise
            say(f"attempt {attempt} failed: {type(exc).__name__}: {exc}; retrying")
            sleep(retry_delay(delay, attempt))
            attempt += 1


def lineage_tags(pipeline: str, run: str) -> dict[str, str]:
    """The tags a version registered by a pipeline run carries."""
    return {"mlshift:pipeline": pipeline, "mlshift:run": run}


def register_model(
    client: Client,
    name: str,
    artifact: Path,
    *,
    digest: str | None = None,
    framework: str | None = None,
    metrics: Mapping[str, float] | None = None,
    tags: Mapping[str, str] | None = None,
    description: str | None = None,
    alias: str | None = None,
    lineage: Mapping[str, str] | None = None,
    log: Log = lambda _: None,
) -> ModelVersion:
    """Register ``artifact`` as model ``name`` unless those bytes are registered already.

    Args:
        client: A client of the target to register on.
        name: The model's name.
        artifact: The artifact's local path (a file or a directory).
        digest: Its digest when the caller knows it (else it is computed).
        framework: The model's framework (``None``: detected from the artifact).
        metrics: Metrics for a new version.
        tags: Tags for a new version (``lineage`` is added to them).
        description: A new version's description.
        alias: An alias to point at the version (moved if it pointed elsewhere).
        lineage: The run that made the artifact (:func:`lineage_tags`).
        log: Where to say what happened.

    Returns:
        The version that holds the bytes: an existing one, or the one registered now.

    Raises:
        MlshiftError: whatever registering raises (a bad artifact, a name the target refuses).
    """
    from mlshift._artifacts import digest_path

    digest = digest or digest_path(artifact)
    existing = client.adapter.models.find_by_digest(name, digest)
    if existing is not None:
        version = existing
        log(f"{name}:{version.version} already holds these bytes ({digest[:19]}…); reusing it")
    else:
        version = client.models.register(
            name,
            artifact,
            framework=framework,
            metrics=dict(metrics or {}),
            tags={**(tags or {}), **(lineage or {})},
            description=description,
        )
        log(f"registered {name}:{version.version} from {artifact.name} ({digest[:19]}…)")
    if alias and alias not in version.aliases:
        version = client.models.set_alias(name, alias, version.version)
        log(f"{name}@{alias} -> {name}:{version.version}")
    return version


def register_still_valid(client: Client, name: str, digest: str, alias: str | None = None) -> bool:
    """Whether an earlier registration still stands: a version with the bytes exists, with its alias."""
    version = client.adapter.models.find_by_digest(name, digest)
    if version is None:
        return False
    return not alias or alias in version.aliases


def deploy(
    client: Client,
    endpoint: str,
    model: str,
    *,
    traffic: int | None = None,
    size: str = "cpu-small",
    replicas: int = 1,
    allow_schema_change: bool = False,
    log: Log = lambda _: None,
) -> EndpointState:
    """Deploy ``model`` (``name:version``, ``name@alias``) to ``endpoint`` through plan and apply.

    A version whose inputs differ from those of the version it replaces is refused at plan
    time unless ``allow_schema_change`` (as :meth:`mlshift.EndpointsAPI.deploy` does).

    Raises:
        MlshiftError: whatever the deployment raises (``RolloutFailed`` after a rollback, ...).
    """
    log(f"deploying {model} to endpoint {endpoint} ({size} x{replicas})")
    state = client.endpoints.deploy(
        endpoint,
        model,
        traffic=traffic,
        size=size,
        replicas=replicas,
        allow_schema_change=allow_schema_change,
    )
    for v in state.variants:
        log(f"  variant {v.name}: {v.model} {v.weight}% {v.status}")
    return state


def deploy_still_valid(client: Client, endpoint: str, model: str, traffic: int | None = None) -> bool:
    """Whether an earlier deployment still stands: the endpoint serves that version, healthy."""
    from mlshift.errors import MlshiftError

    try:
        wanted = client.models.get(model)
        state = client.adapter.endpoints.observe(endpoint)
    except MlshiftError:
        return False
    if state is None:
        return False
    exact = f"{wanted.name}:{wanted.version}"
    share = 100 if traffic is None else traffic
    return any(v.model == exact and v.weight == share and v.status == "healthy" for v in state.variants)
