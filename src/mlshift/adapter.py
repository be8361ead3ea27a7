"""The adapter contract: the line between mlshift's core and one provider.

Above the line the core decides what changes, in which order, and whether it is healthy.
Below it an adapter translates one small, typed primitive into its SDK's calls and reports
live state in neutral terms. The contract is a set of :class:`typing.Protocol` classes, so a
fake needs no inheritance; :class:`BaseEndpointService` gives defaults that raise
:class:`~mlshift.errors.UnsupportedOperation` for the optional primitives.

Every mutating primitive returns an :class:`Operation`: a waitable handle, because on a cloud
creating an endpoint takes minutes. Local and in-memory adapters return finished ones.
"""

from __future__ import annotations

import builtins
import os
import re
import time
import types
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import TYPE_CHECKING, Any, Generic, Literal, Protocol, TypeVar, runtime_checkable

from pydantic import Field

# How mirrored requests are picked and their answers compared: one definition for every target
# with SHADOW_TRAFFIC (the local router, memory://, the SageMaker adapter and its testing kit).
from mlshift._routing import MirrorShare, compare_answers
from mlshift.errors import ConfigError, ProviderTimeout, UnsupportedOperation
from mlshift.specs._base import SpecModel
from mlshift.specs.endpoint import Autoscaling, Batching, Compute, EndpointSpec
from mlshift.specs.model import ModelRef, ModelSpec, ModelVersion
from mlshift.specs.monitor import CaptureSpec

if TYPE_CHECKING:
    # Type-only: the pipeline types are public in mlshift.pipelines.ir / .runs, which import this
    # module, not the other way round at run time.
    from mlshift.pipelines.ir import PipelineIR
    from mlshift.pipelines.runs import RemoteRunState
    from mlshift.storage import ObjectStore

__all__ = [
    "CREDENTIAL_WORDS",
    "PENDING",
    "Adapter",
    "Artifact",
    "BaseEndpointService",
    "Capability",
    "CaptureReader",
    "CapturedRequest",
    "CompletedOperation",
    "EndpointService",
    "EndpointState",
    "Invocation",
    "MetricsTiming",
    "MirrorShare",
    "ModelRegistry",
    "MonitoringStorage",
    "NameRule",
    "NameRules",
    "NativeRollout",
    "Operation",
    "OptionChange",
    "PipelineService",
    "PollingOperation",
    "ResolvedVariant",
    "RolloutPhase",
    "RolloutRecord",
    "ScheduleAction",
    "ScheduleChange",
    "ScheduleService",
    "ShadowMetrics",
    "ShadowMode",
    "TargetURI",
    "VariantMetrics",
    "VariantState",
    "VariantStatus",
    "check_replicas_within_autoscaling",
    "compare_answers",
    "target_options",
    "validate_own_options",
]

T = TypeVar("T")
T_co = TypeVar("T_co", covariant=True)
OptionsT = TypeVar("OptionsT", bound=SpecModel)


class Capability(str, Enum):
    """What a target can do; the planner checks these before any call is made."""

    TRAFFIC_SPLIT = "traffic_split"
    """More than one variant behind an endpoint, with weights."""
    TARGETED_INVOKE = "targeted_invoke"
    """Invoke one named variant directly, bypassing the split."""
    IN_PLACE_UPDATE = "in_place_update"
    """A live variant's model or compute can be swapped under its name (``replace_variant``,
    ``update_compute``). Without it the planner and the rollout engine reach the same end state
    by adding, shifting traffic and removing, and never call those two primitives."""
    NATIVE_ROLLOUT = "native_rollout"
    """The provider runs canary/linear/blue-green rollouts itself."""
    SHADOW_TRAFFIC = "shadow_traffic"
    """Mirror live traffic to a variant whose answers are never returned to callers; how the
    shadow is judged is the endpoint service's :attr:`~EndpointService.shadow_mode`."""
    METRICS = "metrics"
    """Per-variant request counts, error counts and latencies can be read."""
    AUTOSCALING = "autoscaling"
    """Replica counts follow load between bounds."""
    SERVERLESS = "serverless"
    """Endpoints that scale to zero and bill per request."""
    GPU = "gpu"
    """GPU compute sizes."""
    PIPELINES = "pipelines"
    """Pipelines can be compiled and run."""
    PIPELINE_CONDITIONS = "pipeline_conditions"
    """Pipelines can branch on step outputs natively."""
    SCHEDULES = "schedules"
    """Pipelines can be run on a schedule by the provider."""
    CAPTURE = "capture"
    """Endpoints can record a sample of their requests and answers (``capture`` in the spec)."""


# --------------------------------------------------------------------------------------------
# Waitable operations


@runtime_checkable
class Operation(Protocol[T_co]):
    """A handle on a possibly long-running change."""

    @property
    def description(self) -> str:
        """What the operation does, for progress output."""
        ...

    def done(self) -> bool:
        """Whether the operation has finished (successfully or not)."""
        ...

    def wait(self, timeout: float | None = None) -> T_co:
        """Block until finished and return the result.

        Raises:
            ProviderTimeout: if ``timeout`` seconds pass first.
            ProviderError: if the operation failed.
        """
        ...


@dataclass(frozen=True)
class CompletedOperation(Generic[T]):
    """An operation that finished before it was returned (local and in-memory targets)."""

    result: T
    description: str = ""

    def done(self) -> bool:
        return True

    def wait(self, timeout: float | None = None) -> T:
        return self.result


class _Pending:
    def __repr__(self) -> str:
        return "PENDING"


#: What a :class:`PollingOperation`'s ``poll`` returns while the change is still running (so
#: that ``None`` can be a result: ``Operation[None]``).
PENDING: Any = _Pending()


@dataclass
class PollingOperation(Generic[T]):
    """The one operation finished by polling: ``poll()`` returns the result, or :data:`PENDING`.

    ``poll`` may raise to fail the operation (after cleaning up what it made). The result is
    computed once; later ``wait`` calls return it again. Adapters for clouds wrap their
    describe-calls in one of these; the core only calls :meth:`wait`, so no adapter ever waits
    forever.

    The timeout rule: the target's own limit (``timeout``, from a target option such as
    ``wait_timeout``) wins when it is set, so a user can allow a big GPU model longer than
    ``apply``'s default; otherwise the caller's ``wait(timeout)``; otherwise ``default_timeout``.

    Attributes:
        poll: One status check.
        description: What the change does, for progress output and timeout messages.
        interval: Seconds between checks.
        timeout: The target's own limit (``None``: the caller's).
        default_timeout: The limit when neither the target nor the caller gives one.
        provider: The target's name, for the timeout error.
        hint: What to do when the wait times out.
        sleep: How to wait between checks (tests pass a fake).
    """

    poll: Callable[[], T]
    description: str = ""
    interval: float = 1.0
    timeout: float | None = None
    default_timeout: float = 1800.0
    provider: str | None = None
    hint: str | None = None
    sleep: Callable[[float], None] = time.sleep
    _result: Any = field(default=PENDING, init=False, repr=False)

    def done(self) -> bool:
        if self._result is PENDING:
            self._result = self.poll()
        return self._result is not PENDING

    def wait(self, timeout: float | None = None) -> T:
        if self.timeout is not None:
            limit = self.timeout
        else:
            limit = self.default_timeout if timeout is None else timeout
        deadline = time.monotonic() + limit
        while not self.done():
            if time.monotonic() >= deadline:
                raise ProviderTimeout(
                    f"{self.description or 'operation'} did not finish within {limit:g} s",
                    provider=self.provider,
                    hint=self.hint
                    or "it may still finish: check the target for what it waits on, or raise the timeout",
                )
            self.sleep(self.interval)
        result: T = self._result
        return result


# --------------------------------------------------------------------------------------------
# Typed inputs and outputs


class TargetURI(SpecModel):
    """A parsed target URI: ``scheme[+variant]://[location][/path][?key=value&...]``."""

    raw: str
    scheme: str
    variant: str | None = None
    location: str = ""
    path: str = ""
    query: dict[str, str] = Field(default_factory=dict)

    @property
    def adapter(self) -> str:
        """The adapter name (the scheme without ``+variant``)."""
        return self.scheme


@dataclass(frozen=True)
class Artifact:
    """A model artifact on local disk, with its digest computed by the core."""

    path: Path
    digest: str
    size: int

    @property
    def is_dir(self) -> bool:
        return self.path.is_dir()


class ResolvedVariant(SpecModel):
    """A variant whose model reference has been resolved to one exact version.

    It carries what the target needs to make it, from the endpoint's spec as the plan recorded
    it, so that a primitive never depends on what the adapter saw at plan time (a saved plan
    applied by another process makes the same calls).

    Attributes:
        provider_options: The endpoint spec's ``provider_options``. A target reads only its own
            key; without one, the variant is made with the options the endpoint was last
            applied with.
        autoscaling: How the endpoint's variants scale (the spec's ``autoscaling``), for a target
            that scales each variant (``AUTOSCALING``); ``None`` leaves scaling as it is.
        batching: The variant's micro-batching (``None``: off). Every target passes
            :meth:`serving_environment` to the model server's environment.
    """

    name: str
    model: ModelVersion
    weight: int
    compute: Compute = Field(default_factory=Compute)
    provider_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    autoscaling: Autoscaling | None = None
    batching: Batching | None = None

    def serving_environment(self) -> dict[str, str]:
        """Environment variables the variant's model servers need beyond the model's own
        (today: batching); empty when there are none."""
        return self.batching.environment() if self.batching is not None else {}


VariantStatus = Literal["creating", "healthy", "unhealthy", "failed", "stopped", "unknown"]


class VariantState(SpecModel):
    """A variant as it is live on the target."""

    name: str
    model: str
    """``name:version`` of the model version it serves."""
    digest: str | None = None
    weight: int
    compute: Compute = Field(default_factory=Compute)
    status: VariantStatus = "unknown"
    detail: str | None = None
    """Why it is not healthy, when it is not (its first line is a one-line summary)."""
    url: str | None = None
    ready_replicas: int | None = None
    """How many of its replicas run and answer health checks; ``None`` where the target does not
    count them. Fewer than ``compute.replicas`` makes the next plan restore the missing ones
    (:meth:`EndpointService.restore_replicas`)."""
    batching: Batching | None = None
    """The micro-batching its model servers run with (``Batching()``, one row per call: off);
    ``None`` where the target does not report it. A plan compares it with the spec's where it
    is reported, and replaces the variant (same model) when they differ."""


class EndpointState(SpecModel):
    """An endpoint as it is live on the target, in neutral terms."""

    name: str
    url: str | None = None
    status: VariantStatus = "unknown"
    variants: tuple[VariantState, ...] = ()
    tags: dict[str, str] = Field(default_factory=dict)
    created_at: datetime | None = None
    spec_digest: str | None = None
    """Digest of the spec the endpoint was last applied from (the ``mlshift:spec`` tag)."""
    autoscaling: Autoscaling | None = None
    """How the variants scale, where the target autoscales (``AUTOSCALING``) and they do."""

    def variant(self, name: str) -> VariantState | None:
        """The variant called ``name``, if present."""
        return next((v for v in self.variants if v.name == name), None)

    @property
    def weights(self) -> dict[str, int]:
        """Variant name → weight."""
        return {v.name: v.weight for v in self.variants}

    def _repr_html_(self) -> str:
        """How a notebook shows the endpoint: variants, weights, health (escaped; no secrets)."""
        from mlshift._html import endpoint_html

        return endpoint_html(self)


class Invocation(SpecModel):
    """The answer to one prediction request."""

    status_code: int
    body: bytes
    content_type: str = "application/json"
    variant: str | None = None
    """The variant that served the request (from the target's response header)."""
    latency_ms: float = 0.0
    request_id: str | None = None
    """The request's id: the caller's, else the one the target gave it (``X-Request-Id``,
    SageMaker's ``InferenceId``). A captured request is recorded under it, so ground-truth
    labels posted for it join (``client.monitors.labels``). ``None``: the target names none."""

    def json_body(self) -> Any:
        """The body parsed as JSON.

        Raises:
            ValueError: if the body is not JSON.
        """
        import json

        return json.loads(self.body)


class VariantMetrics(SpecModel):
    """Request counts and latencies for one variant over a window.

    Attributes:
        errors: Answers that were the variant's fault (5xx).
        client_errors: Requests the variant refused as the caller's error (4xx): a version that
            rejects what its predecessor accepted shows here, not in ``errors``.
    """

    variant: str
    window_seconds: float
    requests: int
    errors: int
    client_errors: int = 0
    p50_ms: float | None = None
    p99_ms: float | None = None


@dataclass(frozen=True)
class MetricsTiming:
    """How fine and how fresh a target's per-variant metrics are (``METRICS``).

    The rollout engine reads :meth:`EndpointService.read_metrics` once per ``resolution``
    seconds during a bake (more often only in bakes shorter than 20 periods), and at plan time
    refuses a rollout it runs whose bake is shorter than ``lag`` when the gate reads metrics:
    such a bake would end before its requests were counted.

    Attributes:
        resolution: Seconds per datapoint: a reading never changes faster (CloudWatch: 60).
        lag: Seconds a request may take to show up in ``read_metrics`` (0: at once).
    """

    resolution: float = 1.0
    lag: float = 0.0


ShadowMode = Literal["paired", "mirror-only"]
"""How a target with ``SHADOW_TRAFFIC`` lets a shadow variant be judged.

- ``paired``: each mirrored request's two answers are kept side by side (mlshift's router,
  SageMaker's data capture), so the shadow's predictions are compared with the serving
  variant's (``rows``, ``agreed_rows``), and its errors and latency judged on the same requests.
- ``mirror-only``: the provider mirrors requests and discards the shadow's answers (Azure ML's
  ``mirror_traffic``). The shadow is judged on its own error rate, client errors and latency
  from the target's metrics, against the serving variants' numbers over the same window;
  agreement cannot be measured, so a rollout that asks for it explicitly is refused at plan time.
"""


class ShadowMetrics(SpecModel):
    """What a shadow variant did with its copy of live traffic over a window (``SHADOW_TRAFFIC``).

    Only requests the serving variant answered are mirrored. On a ``paired`` target the serving
    variant's answer to each is kept beside the shadow's, so both are judged on the same
    requests; on a ``mirror-only`` one the baseline numbers are the serving variants' over the
    same window (``baseline_requests``) and nothing is compared (``rows`` stays 0).

    Attributes:
        requests: Requests mirrored to the shadow variant (and answered, or failed).
        errors: Its 5xx answers (and failures to answer at all).
        client_errors: Its 4xx answers.
        baseline_client_errors: The serving variants' 4xx answers to the same requests.
        rows: Rows whose predictions were compared (both answered 2xx).
        agreed_rows: Rows on which both gave the same prediction (numbers within the tolerance).
        skipped: Requests that were not mirrored because the shadow had too many in flight.
        baseline_requests: Requests the serving variants answered in the window, when they are
            not the mirrored ones (``mirror-only``); ``None``: the same requests as ``requests``.
    """

    variant: str
    window_seconds: float
    requests: int
    errors: int
    client_errors: int = 0
    baseline_client_errors: int = 0
    rows: int = 0
    agreed_rows: int = 0
    skipped: int = 0
    p99_ms: float | None = None
    baseline_p99_ms: float | None = None
    baseline_requests: int | None = None


@dataclass(frozen=True)
class CapturedRequest:
    """One request an endpoint captured, with its answer, in neutral terms (``CAPTURE``).

    Bodies are the bytes as they were sent and answered; monitors decode them with the model
    server's own parsers (every payload shape it accepts), so a target never parses them.

    Attributes:
        request_id: The caller's request id, else the one the target gave the request
            (SageMaker: the inference id, else the event id); labels are joined on it.
        endpoint: The endpoint's name.
        variant: The variant that answered.
        timestamp: When it was answered (UTC).
        content_type: The request's media type (``application/json``, ``text/csv``).
        request: The request body (``None``: the target captured answers only).
        response: The answer's body (``None``: the target captured requests only).
        model: ``name:version`` of the version that answered, when the target records it
            (``None``: the variant stands for whatever version it served then).
        columns: The model's input names, when the record carries them.
        protocol: ``"v2"`` for an Open Inference Protocol request (``/v2/models/.../infer``):
            ``request``/``response`` are then the protocol's JSON parts, and
            ``request_binary``/``response_binary`` their binary tensor data, if any.
        request_binary: A ``v2`` request's binary tensor data.
        response_binary: A ``v2`` answer's binary tensor data.
    """

    request_id: str
    endpoint: str
    variant: str
    timestamp: datetime
    content_type: str
    request: bytes | None
    response: bytes | None
    model: str | None = None
    columns: tuple[str, ...] | None = None
    protocol: str | None = None
    request_binary: bytes | None = None
    response_binary: bytes | None = None


RolloutPhase = Literal["running", "promoting", "succeeded", "rolled_back", "failed", "interrupted"]


class RolloutRecord(SpecModel):
    """One change to an endpoint's variants, journaled before each step it takes.

    The record is the rollout engine's memory: if the process dies mid-rollout, the next apply
    finds the open record and rolls back to ``baseline`` (or, once the gate has passed,
    finishes towards ``target``). Finished records are the endpoint's history.

    Attributes:
        id: Unique id (time-ordered).
        strategy: ``all-at-once``, ``canary``, ``linear``, ``blue-green`` or ``rollback``.
        settings: The strategy and gate as given, for the history.
        phase: ``running`` → ``promoting`` → ``succeeded``; or ``rolled_back`` / ``failed``;
            ``interrupted`` when a later apply found it open and cleaned up.
        baseline: The variants serving before the change.
        target: The variants the change converges to.
        added: Variants this rollout created (removed again on rollback).
        steps: What was done, in order; each step is written here before it is carried out.
        owner: Who ran it (pid and host).
    """

    id: str
    endpoint: str
    strategy: str
    settings: dict[str, Any] = Field(default_factory=dict)
    phase: RolloutPhase = "running"
    started_at: datetime
    finished_at: datetime | None = None
    baseline: tuple[VariantState, ...] = ()
    target: tuple[VariantState, ...] = ()
    added: tuple[str, ...] = ()
    steps: tuple[str, ...] = ()
    reason: str | None = None
    measurements: dict[str, float] = Field(default_factory=dict)
    owner: str = ""

    @property
    def is_open(self) -> bool:
        """True while the rollout has not reached an outcome."""
        return self.phase in ("running", "promoting")

    def _repr_html_(self) -> str:
        """How a notebook shows the change: strategy, outcome, before and after, gate numbers."""
        from mlshift._html import rollout_record_html

        return rollout_record_html(self)


class OptionChange(SpecModel):
    """One provider option of an endpoint that applying a spec would change, as a plan shows it.

    Values are display text, never secrets: a target shows an option that may hold one (an
    environment variable's value) as ``(hidden)``.

    Attributes:
        field: The option's path in the spec, e.g.
            ``provider_options.sagemaker.data_capture.sampling_percent``.
        old: What is live now (``None``: not set).
        new: What the spec asks for (``None``: not set).
    """

    field: str
    old: str | None = None
    new: str | None = None

    def describe(self) -> str:
        """``field old -> new``, with ``(unset)`` for a missing side."""
        return f"{self.field} {self.old or '(unset)'} -> {self.new or '(unset)'}"


class NativeRollout(SpecModel):
    """A whole rollout handed to a target that runs rollouts itself (``NATIVE_ROLLOUT``)."""

    endpoint: str
    strategy: dict[str, Any]
    candidates: tuple[ResolvedVariant, ...]
    final_weights: dict[str, int]
    remove: tuple[str, ...] = ()


class NameRule(SpecModel):
    """What a target accepts as a name of one kind of resource."""

    pattern: str
    max_length: int
    description: str

    def check(self, kind: str, name: str, target: str, field: str | None = None) -> None:
        """Raise :class:`ConfigError` if ``name`` breaks this rule."""
        if len(name) > self.max_length or not re.fullmatch(self.pattern, name):
            raise ConfigError(
                f"{kind} name {name!r} is not allowed on target {target!r}: {self.description} "
                f"(at most {self.max_length} characters)",
                field=field,
            )


_DNS_LABEL = NameRule(
    pattern=r"[a-z0-9]([a-z0-9-]*[a-z0-9])?",
    max_length=63,
    description="use lowercase letters, digits and '-', starting and ending with a letter or digit",
)


class NameRules(SpecModel):
    """Name rules of a target, per kind of resource (checked at plan time)."""

    model: NameRule = NameRule(
        pattern=r"[A-Za-z0-9]([A-Za-z0-9._-]*[A-Za-z0-9])?",
        max_length=128,
        description="use letters, digits, '.', '_' and '-', starting and ending with a letter or digit",
    )
    endpoint: NameRule = _DNS_LABEL
    variant: NameRule = _DNS_LABEL


# --------------------------------------------------------------------------------------------
# The protocols


@runtime_checkable
class ModelRegistry(Protocol):
    """Where model versions live on a target."""

    def register(self, spec: ModelSpec, artifact: Artifact) -> ModelVersion:
        """Store the artifact and create the next version of ``spec.name``."""
        ...

    def get(self, ref: ModelRef) -> ModelVersion:
        """Resolve a reference to one version.

        Raises:
            NotFound: if the model, version or alias does not exist.
        """
        ...

    def list(self, name: str | None = None) -> builtins.list[ModelVersion]:
        """All versions of ``name`` (or of every model), oldest first."""
        ...

    def find_by_digest(self, name: str, digest: str) -> ModelVersion | None:
        """The version of ``name`` with these exact bytes, if one exists."""
        ...

    def set_alias(self, name: str, alias: str, version: str) -> ModelVersion:
        """Point ``alias`` at ``version`` (moving it if it pointed elsewhere)."""
        ...

    def remove_alias(self, name: str, alias: str) -> None:
        """Remove ``alias`` from ``name``."""
        ...

    def delete(self, name: str, version: str) -> None:
        """Delete one version.

        Raises:
            Conflict: if an endpoint still serves it.
        """
        ...

    def artifact_path(self, version: ModelVersion) -> Path:
        """A local path holding the version's artifact, verified against its digest.

        Raises:
            IntegrityError: if the stored bytes do not match the digest.
        """
        ...


@runtime_checkable
class EndpointService(Protocol):
    """Endpoints on a target: observe live state and change it one primitive at a time."""

    @property
    def target_name(self) -> str:
        """How messages name the target (``SageMaker``, ``the local target``)."""
        ...

    def list(self) -> builtins.list[EndpointState]:
        """Every endpoint on the target that mlshift can see."""
        ...

    def observe(self, name: str) -> EndpointState | None:
        """The live state of ``name``, or ``None`` if it does not exist."""
        ...

    def validate(self, spec: EndpointSpec) -> None:
        """Check target-specific parts of a spec (options, sizes, ports) without side effects.

        Raises:
            ConfigError: naming the field that is wrong.
        """
        ...

    def create(self, spec: EndpointSpec, variants: Sequence[ResolvedVariant]) -> Operation[EndpointState]:
        """Create the endpoint serving ``variants`` with their weights."""
        ...

    def add_variant(self, name: str, variant: ResolvedVariant) -> Operation[EndpointState]:
        """Start one more variant (traffic goes to it only per its weight)."""
        ...

    def replace_variant(self, name: str, variant: ResolvedVariant) -> Operation[EndpointState]:
        """Swap the model or compute of an existing variant without dropping its traffic.

        Called only on targets that declare ``IN_PLACE_UPDATE``.
        """
        ...

    def remove_variant(self, name: str, variant_name: str) -> Operation[EndpointState]:
        """Stop a variant; it must carry no traffic."""
        ...

    def set_weights(self, name: str, weights: Mapping[str, int]) -> Operation[EndpointState]:
        """Set every variant's share of traffic at once (shares sum to 100)."""
        ...

    def update_compute(self, name: str, variant_name: str, compute: Compute) -> Operation[EndpointState]:
        """Resize a variant in place (called only where ``IN_PLACE_UPDATE``)."""
        ...

    def update_tags(self, name: str, tags: Mapping[str, str]) -> Operation[EndpointState]:
        """Replace the endpoint's user tags."""
        ...

    def restore_replicas(self, name: str, variant_name: str) -> Operation[EndpointState]:
        """Start again the replicas of a variant that exited or stopped answering health checks.

        The variant keeps its model, compute and weight; replicas that answer are left alone.
        Planned only for variants whose observed ``ready_replicas`` is below
        ``compute.replicas``, so a target that does not count replicas is never asked.
        Optional: :class:`BaseEndpointService` raises ``UnsupportedOperation``.
        """
        ...

    def option_changes(self, spec: EndpointSpec) -> builtins.list[OptionChange]:
        """The target's own ``provider_options`` that applying ``spec`` would change (plan time).

        Only options that take effect on a live endpoint count (on SageMaker, what goes into the
        endpoint configuration); a spec without the target's key keeps the endpoint's options
        and changes none. Read-only, like :meth:`observe`; an endpoint that does not exist has
        no changes. Optional: :class:`BaseEndpointService` reports none.
        """
        ...

    def update_options(self, name: str, spec: EndpointSpec) -> Operation[EndpointState]:
        """Make the live endpoint use ``spec``'s provider options, keeping its variants and weights.

        The planner orders this after the plan's variant changes, so a target whose variant
        change already carried the new options (SageMaker makes one configuration for both)
        finds nothing left to do and makes no call.

        Raises:
            UnsupportedOperation: by default (a target that reports no option changes).
        """
        ...

    def set_autoscaling(self, name: str, autoscaling: Autoscaling | None) -> Operation[EndpointState]:
        """Scale every variant within the bounds given (``None``: stop), where ``AUTOSCALING``."""
        ...

    def delete(self, name: str) -> Operation[None]:
        """Delete the endpoint and everything it runs."""
        ...

    def invoke(
        self,
        name: str,
        body: bytes,
        content_type: str = "application/json",
        *,
        variant: str | None = None,
        timeout: float = 60.0,
    ) -> Invocation:
        """Send one prediction request (to one variant where ``TARGETED_INVOKE``).

        Optionally also a keyword ``request_id: str | None = None``: the id the request is
        sent and captured with (``X-Request-Id``; SageMaker: ``InferenceId``), 1 to 128
        printable ASCII characters, checked by the client, which always passes one to a target
        whose ``invoke`` takes it. Such a target returns it as :attr:`Invocation.request_id`,
        so labels posted for it join its captured record. A target whose ``invoke`` does not
        take it still works: ``client.endpoints.predict(request_id=...)`` refuses the id there.
        """
        ...

    def read_metrics(self, name: str, variant: str, window: float) -> VariantMetrics | None:
        """Per-variant numbers over the last ``window`` seconds, where ``METRICS``.

        ``VariantMetrics.window_seconds`` is the window the numbers really cover: a target with
        coarse datapoints widens the one asked for (CloudWatch: to whole minutes).
        """
        ...

    @property
    def metrics_timing(self) -> MetricsTiming:
        """The resolution and lag of :meth:`read_metrics` (``BaseEndpointService``: 1 s, no lag)."""
        ...

    def set_shadow(
        self, name: str, variant: str, percent: int, *, tolerance: float = 0.01
    ) -> Operation[EndpointState]:
        """Mirror ``percent`` of live requests to ``variant`` (0 stops it), where ``SHADOW_TRAFFIC``.

        A mirrored request is sent after the serving variant has answered it, never delays or
        fails the caller, and its answer is never returned: it is compared (numbers within
        ``tolerance`` of each other agree) on a ``paired`` target, discarded on a ``mirror-only``
        one (:attr:`shadow_mode`). One shadow variant per endpoint at a time; removing the
        variant stops its mirror.
        """
        ...

    def read_shadow(self, name: str, variant: str, window: float) -> ShadowMetrics | None:
        """What the shadow ``variant`` did over the last ``window`` seconds, where ``SHADOW_TRAFFIC``."""
        ...

    @property
    def shadow_mode(self) -> ShadowMode:
        """How :meth:`read_shadow` can judge a shadow (:data:`ShadowMode`; ``BaseEndpointService``:
        ``paired``). A ``mirror-only`` target's shadow is judged on its metrics, with the
        metrics' resolution and lag (:attr:`metrics_timing`)."""
        ...

    def record_rollout(self, record: RolloutRecord) -> None:
        """Create or replace the journal record ``record.id`` (written before each step)."""
        ...

    def rollouts(self, name: str, limit: int = 20) -> builtins.list[RolloutRecord]:
        """The endpoint's journal records, newest first (open ones included)."""
        ...

    def native_rollout(self, name: str, rollout: NativeRollout) -> Operation[EndpointState]:
        """Run a whole rollout with the provider's own mechanism, where ``NATIVE_ROLLOUT``.

        Raises:
            RolloutFailed: if the provider rolled it back (with its reason).
        """
        ...

    def native_rollout_refusal(self, spec: EndpointSpec, observed: EndpointState | None) -> str | None:
        """Why the provider will not run this spec's rollout itself (``None``: it will).

        Optional, and asked at plan time only on targets that declare ``NATIVE_ROLLOUT``. A
        reason sends the rollout to mlshift's own engine, which runs it on the primitives
        (``add_variant``, ``set_weights``, ``read_metrics``, ``invoke(..., variant=)``, ...);
        the plan shows the reason. Targets without this method hand every rollout over.

        Args:
            spec: The endpoint as it is wanted (``spec.rollout`` is not all-at-once).
            observed: The endpoint as it will be when the rollout starts (``None``: it does not
                exist yet).
        """
        ...

    def plan_notes(self, spec: EndpointSpec, observed: EndpointState | None) -> builtins.list[str]:
        """What the plan should tell the user about how this target carries ``spec`` out.

        One sentence each, shown under the plan's changes (and in its JSON as ``notes``): how
        the target differs from what the spec may lead one to expect, e.g. that rollout gates
        read metrics because a variant cannot be invoked on its own. Read-only and optional:
        :class:`BaseEndpointService` has none.
        """
        ...

    def lock(self, name: str, *, owner: str, timeout: float) -> AbstractContextManager[None]:
        """Hold an exclusive lease on changing ``name`` for the duration of a ``with`` block.

        Two processes changing one endpoint at once is how state gets corrupted. The local
        target locks a file; cloud targets use a tag/ETag lease. The lock must not outlive a
        holder that died.

        Raises:
            Conflict: if ``timeout`` seconds pass while someone else holds it (naming them).
        """
        ...


@runtime_checkable
class PipelineService(Protocol):
    """A target's own pipeline service: the provider compiles and runs pipelines itself.

    An adapter offers one as :attr:`Adapter.pipelines` (and declares ``Capability.PIPELINES``);
    ``client.pipelines`` then compiles the portable IR (:mod:`mlshift.pipelines.ir`) to the
    provider's document, starts runs there and follows them through :meth:`describe_run`. Run
    states are reported in neutral terms (:class:`mlshift.pipelines.runs.RemoteRunState`, made of
    :class:`~mlshift.pipelines.runs.StepRun` records).
    """

    @property
    def poll_interval(self) -> float:
        """Seconds between status checks while a client waits for a run."""
        ...

    def compile(self, ir: PipelineIR) -> dict[str, Any]:
        """The provider's pipeline document for ``ir`` (validated; nothing is sent).

        Raises:
            ConfigError: a step or condition the provider cannot express, naming it.
        """
        ...

    def submit(
        self,
        ir: PipelineIR,
        params: Mapping[str, Any] | None = None,
        *,
        use_cache: bool = True,
        max_parallel: int | None = None,
    ) -> str:
        """Create or update the pipeline, start a run with ``params``; returns the run id.

        Raises:
            ConfigError: an unknown, missing or mistyped parameter (before anything is sent).
        """
        ...

    def describe_run(self, run_id: str) -> RemoteRunState:
        """The run's status and every step's.

        Raises:
            NotFound: for an unknown run id.
        """
        ...

    def cancel_run(self, run_id: str) -> None:
        """Ask the provider to stop the run."""
        ...

    def list_runs(self, pipeline: str | None = None, limit: int = 50) -> builtins.list[str]:
        """Run ids, newest first (of the pipeline called ``pipeline``, when given)."""
        ...

    def run_logs(self, run_id: str, step: str) -> str:
        """What ``step`` of the run wrote (its job's log), or ``""``."""
        ...


ScheduleAction = Literal["created", "updated", "unchanged", "deleted", "absent"]
"""What syncing a provider-side schedule did (or, with ``dry_run``, would do)."""


@dataclass(frozen=True)
class ScheduleChange:
    """The outcome of syncing or deleting one pipeline's schedule on the provider.

    Attributes:
        pipeline: The pipeline's name.
        action: ``created``, ``updated``, ``unchanged``, ``deleted`` or ``absent`` (there was
            none and there is none).
        schedule_id: The provider's name or id of the schedule (``None`` when there is none or
            a dry run did not make it).
        cron: The cron expression the schedule fires on (``None`` once deleted).
        timezone: The IANA time zone of ``cron``.
        next_run: When it fires next, if the provider says.
        dry_run: Whether only reads were made (``action`` is then what would be done).
    """

    pipeline: str
    action: ScheduleAction
    schedule_id: str | None = None
    cron: str | None = None
    timezone: str | None = None
    next_run: datetime | None = None
    dry_run: bool = False

    @property
    def changed(self) -> bool:
        """Whether anything was (or, with ``dry_run``, would be) changed on the provider."""
        return self.action in ("created", "updated", "deleted")

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready data (``next_run`` as ISO 8601)."""
        return {
            "pipeline": self.pipeline,
            "action": self.action,
            "schedule_id": self.schedule_id,
            "cron": self.cron,
            "timezone": self.timezone,
            "next_run": self.next_run.isoformat() if self.next_run else None,
            "dry_run": self.dry_run,
        }


@runtime_checkable
class ScheduleService(Protocol):
    """Provider-side schedules: the provider's scheduler starts the pipeline's runs.

    A target's pipeline service implements this, in addition to :class:`PipelineService`, when
    the provider keeps cron schedules itself (and the adapter declares ``Capability.SCHEDULES``).
    ``client.pipelines.schedule`` / ``unschedule`` dispatch here. The cron expression and time
    zone are the pipeline's own ``schedule`` (in the IR). Both methods are idempotent, and a
    schedule that already matches makes no mutating call.
    """

    def sync_schedule(
        self, ir: PipelineIR, params: Mapping[str, Any] | None = None, *, dry_run: bool = False
    ) -> ScheduleChange:
        """Make the provider's schedule of ``ir`` match ``ir.schedule`` and ``params``.

        Creates it, updates it when the pipeline, its parameters or its cron changed, deletes
        it when the pipeline has no schedule any more. With ``dry_run`` only reads are made and
        the result says what would be done.

        Raises:
            ConfigError: a bad parameter, or a schedule the provider cannot keep (named),
                before any change.
        """
        ...

    def delete_schedule(self, pipeline_name: str, *, dry_run: bool = False) -> ScheduleChange:
        """Delete the schedule of the pipeline called ``pipeline_name`` (``absent``: none)."""
        ...


@runtime_checkable
class CaptureReader(Protocol):
    """Reading back what endpoints captured: an endpoint service implements this where the
    adapter declares ``Capability.CAPTURE`` (checked with ``isinstance``).

    Monitors read captured traffic only through this, never through a target's files or
    buckets, so the same monitor runs on every target that captures.
    """

    def capture_settings(self, name: str) -> CaptureSpec | None:
        """How endpoint ``name`` captures now (``None``: it does not capture its requests, or
        does not exist). Read-only."""
        ...

    def read_capture(self, name: str, *, since: datetime, until: datetime) -> Iterator[CapturedRequest]:
        """The requests ``name`` captured with ``since < timestamp <= until``, in the order the
        target keeps them (monitors do not depend on it).

        Records kept after the endpoint was deleted are still read. A record that is not one
        (a line being written, another tool's file) is skipped, never an error.

        Raises:
            ProviderError: the provider refused the read.
        """
        ...


@runtime_checkable
class MonitoringStorage(Protocol):
    """Where a target keeps monitoring's documents: baselines kept with versions, saved
    monitors, their state and their runs' reports. An adapter implements this (checked with
    ``isinstance``) to let ``client.models.register(..., baseline=...)`` and ``client.monitors``
    work on it; every machine that connects to the target sees the same documents.
    """

    def monitoring_store(self) -> ObjectStore:
        """An object store whose keys are relative to monitoring's own folder or prefix
        (``baselines/...``, ``monitors/...``, ``state/...``, ``runs/...``)."""
        ...

    def monitoring_uri(self, key: str) -> str:
        """Where ``key`` of :meth:`monitoring_store` is, for people and for pipelines that read it:
        a local path (``/state/monitoring/runs/...``) or a URI (``s3://bucket/prefix/...``)."""
        ...


@runtime_checkable
class Adapter(Protocol):
    """One target: a provider plus its location and options.

    Core calls exactly what is declared here. Optional services follow one pattern: a read-only
    attribute typed as the service's protocol that is ``None`` when the target has no such
    service, together with the :class:`Capability` that says what the target can do. Today that
    is :attr:`pipelines` (with ``Capability.PIPELINES``). Monitoring is declared by optional
    protocols core checks with ``isinstance``: :class:`MonitoringStorage` on the adapter and
    :class:`CaptureReader` on its endpoint service (with ``Capability.CAPTURE``).

    Adapters are found through the ``mlshift.adapters`` entry point, which names a class (or
    any object) with :meth:`from_uri`.
    """

    name: str
    """The target scheme this adapter serves (``sagemaker``)."""
    uri: TargetURI
    capabilities: frozenset[Capability]
    name_rules: NameRules

    @classmethod
    def from_uri(cls, uri: TargetURI, options: Mapping[str, Any], *, base_dir: Path) -> Adapter:
        """Build the adapter for ``uri``; make no provider call (clients are made on first use).

        Args:
            uri: The parsed target URI (its query holds options given in the URI).
            options: The target's options from ``mlshift.yaml`` and ``connect(options=...)``,
                unvalidated: the adapter validates them and names the bad one.
            base_dir: The folder relative paths in the URI or the options are relative to (the
                folder of ``mlshift.yaml``, else the working directory).

        Raises:
            ConfigError: a malformed URI or an invalid option (named), before any side effect.
        """
        ...

    @property
    def models(self) -> ModelRegistry: ...

    @property
    def endpoints(self) -> EndpointService: ...

    @property
    def pipelines(self) -> PipelineService | None:
        """The provider's own pipeline service, or ``None``.

        With ``Capability.PIPELINES`` and no service, pipelines run on this machine with
        mlshift's local runner (their built-in steps acting on this target); without the
        capability, running a pipeline is refused, naming the targets that can.
        """
        ...

    @property
    def root(self) -> Path | None:
        """A folder on this machine where the target keeps its state (``None``: none).

        The local pipeline runner keeps its run records there; without one it uses a
        temporary folder that lives as long as the adapter.
        """
        ...

    def close(self) -> None:
        """Release clients and connections (not the resources on the target)."""
        ...


class BaseEndpointService:
    """Defaults for the optional endpoint primitives: each raises ``UnsupportedOperation``."""

    target_name: str = "this target"

    def _unsupported(self, what: str) -> UnsupportedOperation:
        return UnsupportedOperation(f"{self.target_name} cannot {what}")

    def replace_variant(self, name: str, variant: ResolvedVariant) -> Operation[EndpointState]:
        raise self._unsupported("replace a variant in place")

    def update_compute(self, name: str, variant_name: str, compute: Compute) -> Operation[EndpointState]:
        raise self._unsupported("resize a variant in place")

    def restore_replicas(self, name: str, variant_name: str) -> Operation[EndpointState]:
        raise self._unsupported("restore failed replicas")

    def read_metrics(self, name: str, variant: str, window: float) -> VariantMetrics | None:
        return None

    @property
    def metrics_timing(self) -> MetricsTiming:
        return MetricsTiming()

    def native_rollout(self, name: str, rollout: NativeRollout) -> Operation[EndpointState]:
        raise self._unsupported("run rollouts natively")

    def set_shadow(
        self, name: str, variant: str, percent: int, *, tolerance: float = 0.01
    ) -> Operation[EndpointState]:
        raise self._unsupported("mirror traffic to a shadow variant")

    def read_shadow(self, name: str, variant: str, window: float) -> ShadowMetrics | None:
        return None

    @property
    def shadow_mode(self) -> ShadowMode:
        return "paired"

    def native_rollout_refusal(self, spec: EndpointSpec, observed: EndpointState | None) -> str | None:
        return None

    def set_autoscaling(self, name: str, autoscaling: Autoscaling | None) -> Operation[EndpointState]:
        raise self._unsupported("autoscale")

    def option_changes(self, spec: EndpointSpec) -> builtins.list[OptionChange]:
        return []

    def plan_notes(self, spec: EndpointSpec, observed: EndpointState | None) -> builtins.list[str]:
        return []

    def update_options(self, name: str, spec: EndpointSpec) -> Operation[EndpointState]:
        raise self._unsupported("change the provider options of a live endpoint")


def check_replicas_within_autoscaling(spec: EndpointSpec, *, unit: str = "replica(s)") -> None:
    """Refuse a variant whose starting replica count lies outside ``spec.autoscaling``'s bounds.

    Every autoscaling target starts a variant inside ``min_replicas``-``max_replicas``; a count
    outside them would be moved by the provider at once, so a re-apply would never compare equal.

    Args:
        spec: The endpoint (nothing is checked without ``autoscaling``).
        unit: What the target calls a replica in the message (``"instance(s)"`` on Azure ML).

    Raises:
        ConfigError: naming the variant's replicas field.
    """
    scaling = spec.autoscaling
    if scaling is None:
        return
    for i, variant in enumerate(spec.variants):
        count = spec.compute_for(variant).replicas
        if not scaling.min_replicas <= count <= scaling.max_replicas:
            raise ConfigError(
                f"endpoint {spec.name!r}: variant {variant.name!r} starts with {count} {unit}, "
                f"outside autoscaling's {scaling.min_replicas}-{scaling.max_replicas}",
                field=f"variants[{i}].compute.replicas" if variant.compute else "compute.replicas",
                hint="set replicas between autoscaling.min_replicas and autoscaling.max_replicas",
            )


def validate_own_options(spec: EndpointSpec, target: str, model: type[SpecModel]) -> SpecModel:
    """Validate ``spec.provider_options[target]`` against ``model`` (other keys are not ours).

    Raises:
        ConfigError: naming ``provider_options.<target>.<field>``.
    """
    raw: Mapping[str, Any] = spec.provider_options.get(target, {})
    try:
        return model.model_validate(raw)
    except ConfigError as exc:
        path = f"provider_options.{target}" + (f".{exc.field}" if exc.field else "")
        allowed = ", ".join(sorted(model.model_fields))
        raise ConfigError(
            f"endpoint {spec.name!r}: {path}: {exc.detail}",
            field=path,
            hint=f"options the {target} target knows: {allowed}",
        ) from None


#: Option names that look like a credential (``client_secret``, ``aws_session_token``): an
#: unknown option with one of these words gets its own answer instead of "unknown field".
CREDENTIAL_WORDS: tuple[str, ...] = ("secret", "password", "credential", "token", "private_key")


def _structured_fields(model: type[SpecModel]) -> frozenset[str]:
    """Fields whose value is a mapping, a list or a model: a string cannot spell them."""
    names = set()
    for name, info in model.model_fields.items():
        kinds = [info.annotation]
        while kinds:
            kind = kinds.pop()
            origin = typing.get_origin(kind)
            if origin in (typing.Union, types.UnionType):
                kinds.extend(typing.get_args(kind))
                continue
            base = origin if origin is not None else kind
            if isinstance(base, type) and issubclass(base, (SpecModel, Mapping, list, tuple, set, frozenset)):
                names.add(name)
    return frozenset(names)


def target_options(
    model: type[OptionsT],
    target: str,
    query: Mapping[str, str],
    options: Mapping[str, Any],
    environ: Mapping[str, str] | None = None,
    *,
    credential_words: Sequence[str] = CREDENTIAL_WORDS,
    credential_kind: str = "a credential",
    credential_hint: str | None = None,
    required: Mapping[str, str] | None = None,
) -> OptionsT:
    """A target's options from its three sources, validated by ``model``.

    The URI query wins over ``options`` (``mlshift.yaml`` and ``connect(options=...)``), which
    win over ``MLSHIFT_<TARGET>_<FIELD>`` environment variables (an empty variable is unset).
    Fields whose value is a mapping, a list or a model (tags, labels, a VPC config) come from
    ``options`` only: the query refuses them and the environment is not read for them.

    Args:
        model: The target's options model (strict about unknown fields).
        target: The target's scheme (``azureml``): the variables' prefix and the messages' subject.
        query: The options given in the target URI.
        options: The options from ``mlshift.yaml`` and ``connect(options=...)``.
        environ: The environment (default: ``os.environ``).
        credential_words: Words that make an unknown option look like a credential.
        credential_kind: How messages call such a credential (``an AWS credential``).
        credential_hint: Where the target takes credentials from instead.
        required: Fields that must be given, each with how to give it; checked before the
            others so the message says where the value can come from.

    Raises:
        ConfigError: before any side effect, naming ``target.options.<field>`` and listing the
            options the target knows; a credential-looking option is named, its value never.
    """
    env = os.environ if environ is None else environ
    known = sorted(model.model_fields)
    structured = _structured_fields(model)
    data: dict[str, Any] = {}
    for name in known:
        value = env.get(f"MLSHIFT_{target.upper()}_{name.upper()}")
        if value and name not in structured:
            data[name] = value
    data.update(options)
    for key, value in query.items():
        if key in structured:
            raise ConfigError(
                f"target option {key!r} cannot be given in the URI query",
                field=f"target.options.{key}",
                hint=f"set {key} under targets.<name>.options in mlshift.yaml",
            )
        data[key] = value
    for key in data:
        if key not in model.model_fields and any(w in key.lower() for w in credential_words):
            # Never echo the value: it may be the secret itself.
            raise ConfigError(
                f"target option {key!r} looks like {credential_kind}; mlshift never takes or stores one",
                field=f"target.options.{key}",
                hint=credential_hint,
            )
    for name, how in (required or {}).items():
        if name not in data:
            raise ConfigError(
                f"{target} target: target.options.{name} is required",
                field=f"target.options.{name}",
                hint=how,
            )
    try:
        return model.model_validate(data)
    except ConfigError as exc:
        path = "target.options" + (f".{exc.field}" if exc.field else "")
        raise ConfigError(
            f"{target} target: {path}: {exc.detail}",
            field=path,
            hint=f"options the {target} target knows: {', '.join(known)}",
        ) from None
