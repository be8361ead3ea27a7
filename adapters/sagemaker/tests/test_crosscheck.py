"""Crosscheck: the compiled definition equals, step for step, what sagemaker-mlops builds.

The same pipeline (``examples/train_gate_deploy.py``) is built a second time with the SageMaker
Python SDK's own workflow objects — ``Processor.run`` under a ``PipelineSession``,
``ProcessingStep``, ``PropertyFile``, ``JsonGet``, ``ConditionStep``, ``FailStep`` — from the IR,
following the mapping documented in ``mlshift_sagemaker._pipelines``; the SDK serialises it.
Only the two opaque JSON arguments (the step task and settings) are taken from the compiled
definition. Everything else — step names and types, branches, parameters, inputs wired to
other steps' outputs, property files and ``JsonGet`` paths, ``Join`` expressions, resources,
caching, dependencies — must come out identical.

Skipped unless ``sagemaker`` (v3) is installed: ``nox -s crosscheck`` installs it in a venv
of its own (~1 GB) and sets ``MLSHIFT_REQUIRE_CROSSCHECK``, so a missing SDK fails there.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path
from typing import Any

import pytest

from mlshift.pipelines.builtins import total_retry_delay

# The SDK calls AWS while it is imported (and fails without a region): give it a region and no
# reason to look up roles, before the import.
os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
os.environ.setdefault("SAGEMAKER_VALIDATE_ROLE", "false")
if os.environ.get("MLSHIFT_REQUIRE_CROSSCHECK"):
    import sagemaker.mlops.workflow.pipeline  # noqa: F401  (nox -s crosscheck: a skip must not pass)
else:
    pytest.importorskip(
        "sagemaker.mlops.workflow.pipeline", reason="the crosscheck needs sagemaker>=3 (nox -s crosscheck)"
    )

from mlshift_sagemaker._pipelines import PROCESSING, PipelineContext, compile_definition, pipeline_name

ROOT = Path(__file__).resolve().parents[3]
CONTEXT = PipelineContext(
    role_arn="arn:aws:iam::123456789012:role/mlshift-pipelines",
    bucket="acme-ml",
    prefix="mlshift",
    image_uri="123456789012.dkr.ecr.us-east-1.amazonaws.com/mlshift-serving:0.1.0",
    region="us-east-1",
    target_uri="sagemaker://us-east-1?role_arn=arn&bucket=acme-ml&prefix=mlshift",
)


@pytest.fixture(scope="module")
def ir() -> Any:
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import train_gate_deploy
    finally:
        sys.path.pop(0)
    return train_gate_deploy.train_gate_deploy.ir


def sdk_definition(ir: Any, mine: dict[str, Any]) -> dict[str, Any]:
    """The pipeline built with sagemaker-mlops objects, serialised by the SDK."""
    import logging

    logging.getLogger("sagemaker").setLevel(logging.WARNING)
    from sagemaker.core.processing import Processor
    from sagemaker.core.shapes import ProcessingInput, ProcessingOutput, ProcessingS3Input, ProcessingS3Output
    from sagemaker.core.workflow import conditions
    from sagemaker.core.workflow.execution_variables import ExecutionVariables
    from sagemaker.core.workflow.functions import Join, JsonGet
    from sagemaker.core.workflow.parameters import (
        ParameterBoolean,
        ParameterFloat,
        ParameterInteger,
        ParameterString,
    )
    from sagemaker.core.workflow.pipeline_context import PipelineSession
    from sagemaker.core.workflow.properties import PropertyFile
    from sagemaker.mlops.workflow.condition_step import ConditionStep
    from sagemaker.mlops.workflow.fail_step import FailStep
    from sagemaker.mlops.workflow.pipeline import Pipeline
    from sagemaker.mlops.workflow.steps import CacheConfig, ProcessingStep

    from mlshift_sagemaker.options import instance_type_for

    session = PipelineSession(default_bucket=CONTEXT.bucket)
    kinds = {
        "str": ParameterString,
        "int": ParameterInteger,
        "float": ParameterFloat,
        "bool": ParameterBoolean,
    }
    params = {p.name: kinds[p.type](name=p.name, default_value=p.default) for p in ir.params}
    name = pipeline_name(ir.name)
    property_files: dict[str, dict[str, Any]] = {}
    built: dict[str, Any] = {}
    opaque = {}  # the task/settings JSON of each step, from the compiled definition
    for step in _all_steps(mine):
        args = step.get("Arguments", {}).get("AppSpecification", {}).get("ContainerArguments", [])
        for flag in ("--task", "--settings"):
            if flag in args:
                opaque[(step["Name"], flag)] = args[args.index(flag) + 1]

    def files(step_name: str) -> dict[str, Any]:
        return property_files.setdefault(
            step_name,
            {
                "metrics": PropertyFile(name="metrics", output_name="mlshift", path="metrics.json"),
                "outputs": PropertyFile(name="outputs", output_name="mlshift", path="outputs.json"),
            },
        )

    def value(source: Any) -> Any:
        if source.param is not None:
            return params[source.param]
        if source.step is not None:
            if source.metric is not None:
                return JsonGet(
                    step_name=source.step,
                    property_file=files(source.step)["metrics"],
                    json_path=source.metric,
                )
            return JsonGet(
                step_name=source.step, property_file=files(source.step)["outputs"], json_path=source.output
            )
        return json.dumps(source.value) if isinstance(source.value, bool) else str(source.value)

    def s3_input(input_name: str, uri: Any, local: str) -> Any:
        return ProcessingInput(
            input_name=input_name,
            s3_input=ProcessingS3Input(
                s3_uri=uri,
                local_path=local,
                s3_data_type="S3Prefix",
                s3_input_mode="File",
                s3_data_distribution_type="FullyReplicated",
            ),
        )

    def processing(step: Any, arguments: list[Any], code_uri: str | None) -> Any:
        inputs = []
        if code_uri is not None:
            inputs.append(s3_input("code", code_uri, f"{PROCESSING}/code"))
        for key, inp in step.inputs.items():
            if inp.type in ("artifact", "metrics"):
                output = inp.output if inp.type == "artifact" else "mlshift"
                uri = built[inp.step].properties.ProcessingOutputConfig.Outputs[output].S3Output.S3Uri
                inputs.append(s3_input(key, uri, f"{PROCESSING}/input/{key}"))
        outputs = [
            ProcessingOutput(
                output_name=out,
                s3_output=ProcessingS3Output(
                    s3_uri=Join(
                        on="/",
                        values=[
                            f"s3://{CONTEXT.bucket}/{CONTEXT.prefix}/pipelines/{name}/runs",
                            ExecutionVariables.PIPELINE_EXECUTION_ID,
                            step.name,
                            out,
                        ],
                    ),
                    local_path=f"{PROCESSING}/output/{out}",
                    s3_upload_mode="EndOfJob",
                ),
            )
            for out in [k for k, o in step.outputs.items() if o.type == "artifact"] + ["mlshift"]
        ]
        timeout = None
        if step.timeout is not None:
            import math

            waits = total_retry_delay(step.retry_delay, step.retries)  # doubling, as every runner
            timeout = math.ceil(step.timeout * (step.retries + 1) + waits)
        processor = Processor(
            role=CONTEXT.role_arn,
            image_uri=CONTEXT.image_uri,
            instance_count=1,
            instance_type=instance_type_for(step.resources.size),
            entrypoint=["python", "-m", "mlshift_sagemaker.step"],
            env=dict(step.env) or None,
            max_runtime_in_seconds=timeout,
            sagemaker_session=session,
        )
        step_args = processor.run(inputs=inputs or None, outputs=outputs, arguments=arguments)
        return ProcessingStep(
            name=step.name,
            step_args=step_args,
            property_files=list(files(step.name).values()),
            cache_config=CacheConfig(enable_caching=True, expire_after="P30D") if step.cache else None,
            depends_on=list(step.after) or None,
        )

    def values(step: Any, keys: list[str]) -> list[Any]:
        out: list[Any] = []
        for key in keys:
            out += ["--value", key, value(step.inputs[key])]
        return out

    branches: dict[str, tuple[list[Any], list[Any]]] = {c.id: ([], []) for c in ir.conditions}
    top: list[Any] = []
    for step in ir.steps:
        if step.kind == "fail":
            sdk_step: Any = FailStep(name=step.name, error_message=step.fail.message)
        elif step.kind == "python":
            scalars = [k for k, i in step.inputs.items() if i.type not in ("artifact", "metrics")]
            task = opaque[(step.name, "--task")]
            code_uri = json.loads(task).get("code_uri")
            sdk_step = processing(
                step,
                ["python", "--task", task, *values(step, scalars)],
                code_uri.rsplit("/", 1)[0] + "/" if code_uri else None,
            )
        elif step.kind == "register_model":
            arguments = ["register", "--target", CONTEXT.target_uri, *values(step, ["model"])]
            sdk_step = processing(step, [*arguments, "--settings", opaque[(step.name, "--settings")]], None)
        else:
            arguments = ["deploy", "--target", CONTEXT.target_uri, *values(step, ["model", "endpoint"])]
            sdk_step = processing(step, [*arguments, "--settings", opaque[(step.name, "--settings")]], None)
        built[step.name] = sdk_step
        if step.when:
            branches[step.when[0].condition][0 if step.when[0].branch else 1].append(sdk_step)
        else:
            top.append(sdk_step)
    ops = {
        ">=": conditions.ConditionGreaterThanOrEqualTo,
        ">": conditions.ConditionGreaterThan,
        "<=": conditions.ConditionLessThanOrEqualTo,
        "<": conditions.ConditionLessThan,
        "==": conditions.ConditionEquals,
    }
    for cond in ir.conditions:
        comparison = ops[cond.op](left=value(cond.left), right=value(cond.right))
        if_steps, else_steps = branches[cond.id]
        top.append(
            ConditionStep(name=cond.id, conditions=[comparison], if_steps=if_steps, else_steps=else_steps)
        )
    pipeline = Pipeline(name=name, parameters=list(params.values()), steps=top, sagemaker_session=session)
    result: dict[str, Any] = json.loads(pipeline.definition())
    return result


def _all_steps(definition: dict[str, Any]) -> list[dict[str, Any]]:
    out = []
    for step in definition["Steps"]:
        out.append(step)
        args = step.get("Arguments", {})
        out += [*args.get("IfSteps", []), *args.get("ElseSteps", [])]
    return out


def test_the_definition_matches_sagemaker_mlops_step_for_step(ir: Any) -> None:
    mine, _ = compile_definition(ir, CONTEXT)
    sdk = sdk_definition(ir, mine)
    assert mine["Version"] == sdk["Version"] == "2020-12-01"
    assert mine["Parameters"] == sdk["Parameters"]
    assert mine["PipelineExperimentConfig"] == sdk["PipelineExperimentConfig"]
    assert [s["Name"] for s in mine["Steps"]] == [s["Name"] for s in sdk["Steps"]]
    theirs = {s["Name"]: s for s in _all_steps(sdk)}
    for step in _all_steps(mine):
        assert step == theirs[step["Name"]], step["Name"]
    # sagemaker 3 writes an empty MLflow setting at the top level; mlshift has none to give.
    if sdk.get("MlflowConfig") is None:
        sdk.pop("MlflowConfig", None)
    assert mine == sdk
