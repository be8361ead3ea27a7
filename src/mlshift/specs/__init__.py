"""Provider-neutral specs: what users ask for, validated before anything happens."""

from mlshift.specs._base import SpecModel
from mlshift.specs.endpoint import SIZES, Autoscaling, Batching, Compute, EndpointSpec, Variant
from mlshift.specs.model import FRAMEWORKS, ColumnSpec, ModelRef, ModelSpec, ModelVersion, Signature
from mlshift.specs.project import ProjectFile, TargetConfig

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
