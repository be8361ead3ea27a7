"""The portable pipeline IR: what a pipeline compiler reads (public).

A :class:`~mlshift.pipelines.Pipeline` is built into a :class:`PipelineIR` (``pipeline.ir``):
steps with their typed inputs, outputs, conditions and resources, and the edges between them,
in a JSON-ready, content-hashed form. The local runner runs it; a cloud adapter's
:class:`~mlshift.adapter.PipelineService` compiles it to the provider's own document.
"""

from __future__ import annotations

from mlshift.pipelines._ir import (
    IR_FORMAT,
    ConditionIR,
    ContainerIR,
    DeployConfig,
    EdgeIR,
    FailConfig,
    InputIR,
    OperandIR,
    OutputIR,
    ParamIR,
    PipelineIR,
    PythonCode,
    RegisterModelConfig,
    ResourcesIR,
    Scalar,
    ScalarType,
    ScheduleIR,
    StepIR,
    WhenIR,
    build_ir,
    canonical_json,
)
from mlshift.pipelines._types import ValueType

__all__ = [
    "IR_FORMAT",
    "ConditionIR",
    "ContainerIR",
    "DeployConfig",
    "EdgeIR",
    "FailConfig",
    "InputIR",
    "OperandIR",
    "OutputIR",
    "ParamIR",
    "PipelineIR",
    "PythonCode",
    "RegisterModelConfig",
    "ResourcesIR",
    "Scalar",
    "ScalarType",
    "ScheduleIR",
    "StepIR",
    "ValueType",
    "WhenIR",
    "build_ir",
    "canonical_json",
]
