"""Provider-neutral specs: what users ask for, validated before anything happens.

The names below are imported on first use: a model server needs the model's ``Signature``
and none of the endpoint, monitor or project models (a noticeable part of its start-up).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlshift._lazy import lazy_exports

if TYPE_CHECKING:
    from mlshift.specs._base import SpecModel
    from mlshift.specs.endpoint import SIZES, Autoscaling, Batching, Compute, EndpointSpec, Variant
    from mlshift.specs.model import FRAMEWORKS, ColumnSpec, ModelRef, ModelSpec, ModelVersion, Signature
    from mlshift.specs.project import ProjectFile, TargetConfig

_LAZY: dict[str, str] = {
    "SpecModel": "mlshift.specs._base",
    **dict.fromkeys(
        ["SIZES", "Autoscaling", "Batching", "Compute", "EndpointSpec", "Variant"], "mlshift.specs.endpoint"
    ),
    **dict.fromkeys(
        ["FRAMEWORKS", "ColumnSpec", "ModelRef", "ModelSpec", "ModelVersion", "Signature"],
        "mlshift.specs.model",
    ),
    **dict.fromkeys(["ProjectFile", "TargetConfig"], "mlshift.specs.project"),
}

__all__ = [
    "FRAMEWORKS",
    "SIZES",
    "Autoscaling",
    "Batching",
    "ColumnSpec",
    "Compute",
    "EndpointSpec",
    "ModelRef",
    "ModelSpec",
    "ModelVersion",
    "ProjectFile",
    "Signature",
    "SpecModel",
    "TargetConfig",
    "Variant",
]


__getattr__, __dir__ = lazy_exports(globals(), _LAZY)
