"""Endpoint specs: a stable name that answers predictions, split across variants by weight."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, PlainSerializer, WithJsonSchema, model_validator

from mlshift.specs._base import Name, SpecModel
from mlshift.specs.model import ModelRef
from mlshift.specs.monitor import CaptureSpec
from mlshift.specs.rollout import RolloutStrategy

__all__ = ["SIZES", "Autoscaling", "Batching", "Compute", "EndpointSpec", "ModelRefField", "Size", "Variant"]

Size = Literal["cpu-small", "cpu-medium", "cpu-large", "gpu-small", "gpu-medium", "gpu-large"]
#: Neutral compute sizes; each adapter maps them to an instance type in a documented table.
SIZES: tuple[str, ...] = ("cpu-small", "cpu-medium", "cpu-large", "gpu-small", "gpu-medium", "gpu-large")


def _parse_ref(value: Any) -> Any:
    if isinstance(value, str):
        return ModelRef.parse(value)
    return value


ModelRefField = Annotated[
    ModelRef,
    BeforeValidator(_parse_ref),
    PlainSerializer(str, return_type=str),
    WithJsonSchema(
        {
            "type": "string",
            "description": "NAME:VERSION, NAME@ALIAS or NAME (latest version)",
            "examples": ["iris:3", "iris@champion"],
        }
    ),
]


class Compute(SpecModel):
    """Where a variant runs: a neutral size and a replica count.

    Attributes:
        size: ``cpu-small`` … ``gpu-large``; use ``provider_options`` for an exact instance type.
        replicas: How many copies serve the variant (instances, workers or nodes).
    """

    size: Size = "cpu-small"
    replicas: int = Field(default=1, ge=1, le=100)


class Autoscaling(SpecModel):
    """Replica bounds and the load each replica should carry."""

    min_replicas: int = Field(default=1, ge=0, le=100)
    max_replicas: int = Field(default=1, ge=1, le=100)
    target_requests_per_replica: float | None = Field(default=None, gt=0)

    @model_validator(mode="after")
    def _bounds(self) -> Autoscaling:
        if self.min_replicas > self.max_replicas:
            raise ValueError(
                f"min_replicas ({self.min_replicas}) is greater than max_replicas ({self.max_replicas})"
            )
        return self


class Batching(SpecModel):
    """Adaptive micro-batching in a variant's model servers (see ``docs/serving.md``).

    Concurrent requests to one server are merged into one model call of at most
    ``max_batch_size`` rows; a request waits at most ``max_latency_ms`` for others to join.
    Every target runs the same server, which reads these as ``MLSHIFT_MAX_BATCH_SIZE`` and
    ``MLSHIFT_MAX_LATENCY_MS`` (see :meth:`environment`).

    Attributes:
        max_batch_size: The most rows one model call gets; 1 turns batching off.
        max_latency_ms: The longest a request waits for others to join its batch.
    """

    max_batch_size: int = Field(default=1, ge=1, le=100_000)
    max_latency_ms: float = Field(default=5.0, gt=0, le=10_000)

    def environment(self) -> dict[str, str]:
        """The model server's environment variables for these settings."""
        return {
            "MLSHIFT_MAX_BATCH_SIZE": str(self.max_batch_size),
            "MLSHIFT_MAX_LATENCY_MS": f"{self.max_latency_ms:g}",
        }

    def describe(self) -> str:
        """How a plan shows it: ``batching 32 rows / 2 ms`` (or ``batching off``)."""
        if self.max_batch_size <= 1:
            return "batching off"
        return f"batching {self.max_batch_size} rows / {self.max_latency_ms:g} ms"


class Variant(SpecModel):
    """One model version behind an endpoint, with its share of the traffic.

    Attributes:
        name: Unique within the endpoint; shows in the response header that names who served.
        model: ``NAME:VERSION``, ``NAME@ALIAS`` or ``NAME``; resolved to a version at plan time.
        weight: Percent of requests, 0-100; the weights of an endpoint sum to 100.
        compute: Overrides the endpoint's compute for this variant.
        batching: Adaptive micro-batching in its model servers (off when omitted); passed
            to every replica as environment, on every target.
    """

    name: Name
    model: ModelRefField
    weight: int = Field(default=100, ge=0, le=100)
    compute: Compute | None = None
    batching: Batching | None = None


class EndpointSpec(SpecModel):
    """A desired endpoint.

    Attributes:
        name: The endpoint's stable name.
        variants: At least one; weights sum to 100.
        compute: The default compute for variants that do not set their own.
        rollout: How traffic moves to new model versions (default: all at once).
        provider_options: Per-target options under the target's name
            (``{"local": {"port": 8500}}``); each target validates only its own key.
        allow_schema_change: Let a new version take other inputs than the version it
            replaces (by default the plan refuses it: its callers would get 400s).
        serverless: Run on compute that scales to zero and bills per request, on a target
            that declares ``SERVERLESS`` (refused at plan time elsewhere). The target's own
            options say how (``provider_options.sagemaker.serverless``).
        capture: Record a sample of requests and answers for monitoring, on a target that
            declares ``CAPTURE`` (refused at plan time elsewhere); see ``docs/monitoring.md``.
    """

    name: Name
    variants: tuple[Variant, ...] = Field(min_length=1)
    compute: Compute = Field(default_factory=Compute)
    autoscaling: Autoscaling | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    rollout: RolloutStrategy | None = None
    provider_options: dict[str, dict[str, Any]] = Field(default_factory=dict)
    allow_schema_change: bool = False
    serverless: bool = False
    capture: CaptureSpec | None = None

    @model_validator(mode="after")
    def _variants_consistent(self) -> EndpointSpec:
        names = [v.name for v in self.variants]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"variant names must be unique; repeated: {', '.join(dupes)}")
        total = sum(v.weight for v in self.variants)
        if total != 100:
            shares = ", ".join(f"{v.name}={v.weight}" for v in self.variants)
            raise ValueError(f"variant weights must sum to 100, got {total} ({shares})")
        return self

    def compute_for(self, variant: Variant) -> Compute:
        """The compute a variant runs on (its own, else the endpoint's)."""
        return variant.compute or self.compute
