"""Provider-neutral pipelines: write the train → evaluate → gate → register → deploy loop once.

::

    from mlshift.pipelines import Deploy, Fail, InputPath, Metrics, OutputPath, RegisterModel
    from mlshift.pipelines import pipeline, step, when

    @step
    def train(model: OutputPath, c: float = 1.0) -> None: ...

    @step(metrics=["accuracy"])
    def evaluate(model: InputPath) -> Metrics: ...

    @pipeline(schedule="0 3 * * *")
    def nightly(c: float = 1.0, threshold: float = 0.9) -> None:
        fit = train(c=c)
        scores = evaluate(model=fit.outputs["model"])
        with when(scores.metrics["accuracy"] >= threshold) as gate:
            version = RegisterModel(fit.outputs["model"], model="iris", metrics=scores.metrics)
            Deploy(version.output, endpoint="iris")
        with gate.otherwise():
            Fail("accuracy below the bar")

    run = mlshift.connect("local://").pipelines.run(nightly, params={"c": 0.5}).wait()

The DSL and the local step worker need no pydantic; the IR and the runner are imported on
first use.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from mlshift._lazy import lazy_exports
from mlshift.pipelines._dsl import (
    Condition,
    ContainerStep,
    Deploy,
    Fail,
    Gate,
    MetricRef,
    MetricsRef,
    OutputRef,
    Param,
    RegisterModel,
    Resources,
    StepCall,
    StepFunction,
    step,
    when,
)
from mlshift.pipelines._pipeline import Pipeline, pipeline
from mlshift.pipelines._types import InputPath, Metrics, OutputPath

if TYPE_CHECKING:
    from mlshift.pipelines._cron import CronSchedule, parse_cron
    from mlshift.pipelines._ir import ConditionIR, PipelineIR, StepIR
    from mlshift.pipelines._loader import load_pipeline
    from mlshift.pipelines._run import PipelineEvent, PipelineRun, RunStatus, StepRun, StepStatus

_LAZY = {
    "CronSchedule": "mlshift.pipelines._cron",
    "parse_cron": "mlshift.pipelines._cron",
    "ConditionIR": "mlshift.pipelines._ir",
    "PipelineIR": "mlshift.pipelines._ir",
    "StepIR": "mlshift.pipelines._ir",
    "load_pipeline": "mlshift.pipelines._loader",
    "PipelineEvent": "mlshift.pipelines._run",
    "PipelineRun": "mlshift.pipelines._run",
    "RunStatus": "mlshift.pipelines._run",
    "StepRun": "mlshift.pipelines._run",
    "StepStatus": "mlshift.pipelines._run",
}

__all__ = [
    "Condition",
    "ConditionIR",
    "ContainerStep",
    "CronSchedule",
    "Deploy",
    "Fail",
    "Gate",
    "InputPath",
    "MetricRef",
    "Metrics",
    "MetricsRef",
    "OutputPath",
    "OutputRef",
    "Param",
    "Pipeline",
    "PipelineEvent",
    "PipelineIR",
    "PipelineRun",
    "RegisterModel",
    "Resources",
    "RunStatus",
    "StepCall",
    "StepFunction",
    "StepIR",
    "StepRun",
    "StepStatus",
    "load_pipeline",
    "parse_cron",
    "pipeline",
    "step",
    "when",
]


__getattr__, __dir__ = lazy_exports(globals(), _LAZY)
