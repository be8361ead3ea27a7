"""The steps a plan is made of. Each is data: it can be printed, serialised and replayed."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from mlshift.specs._base import SpecModel
from mlshift.specs.endpoint import Compute, EndpointSpec
from mlshift.specs.model import ModelSpec, ModelVersion

__all__ = [
    "Action",
    "AddVariant",
    "CreateEndpoint",
    "PlannedVariant",
    "RegisterModel",
    "RemoveVariant",
    "ReplaceVariant",
    "SetWeights",
    "UpdateCompute",
    "UpdateTags",
]


class PlannedVariant(SpecModel):
    """A variant as the plan will create it.

    ``model`` is the resolved version; it is ``None`` only when the version is registered by
    an earlier step of the same plan (then ``pending_model`` names it).
    """

    name: str
    ref: str
    model: ModelVersion | None = None
    pending_model: str | None = None
    weight: int
    compute: Compute

    @property
    def model_label(self) -> str:
        if self.model is not None:
            return f"{self.model.name}:{self.model.version}"
        return f"{self.pending_model}:(new version)"


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
        parts = ", ".join(f"{v.name}={v.model_label} {v.weight}%" for v in self.variants)
        return f"create endpoint {self.endpoint} ({parts})"


class AddVariant(SpecModel):
    """Start a new variant at 0% (weights move in a later step)."""

    kind: Literal["add_variant"] = "add_variant"
    endpoint: str
    variant: PlannedVariant

    @property
    def resource(self) -> str:
        return f"endpoint {self.endpoint}"

    def describe(self) -> str:
        v = self.variant
        return f"add variant {v.name} ({v.model_label}, {v.compute.size} x{v.compute.replicas}) at 0%"


class ReplaceVariant(SpecModel):
    """Swap the model behind an existing variant, keeping its traffic."""

    kind: Literal["replace_variant"] = "replace_variant"
    endpoint: str
    variant: PlannedVariant
    old_model: str

    @property
    def resource(self) -> str:
        return f"endpoint {self.endpoint}"

    def describe(self) -> str:
        return f"variant {self.variant.name}: model {self.old_model} -> {self.variant.model_label}"


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


Action = Annotated[
    RegisterModel
    | CreateEndpoint
    | AddVariant
    | ReplaceVariant
    | UpdateCompute
    | SetWeights
    | RemoveVariant
    | UpdateTags,
    Field(discriminator="kind"),
]
