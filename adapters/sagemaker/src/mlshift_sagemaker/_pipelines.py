"""The neutral pipeline IR → a SageMaker Pipelines definition (schema ``2020-12-01``), and back.

==========================  =====================================================================
IR                          SageMaker definition
==========================  =====================================================================
parameter                   ``Parameters`` (``String``/``Integer``/``Float``/``Boolean``)
``python`` step             ``Processing`` step in the mlshift image: ``python -m mlshift_sagemaker.step``
                            runs the function from its source file (uploaded to S3 by digest)
``container`` step          ``Processing`` step running the step's own image and command
artifact output / input     ``ProcessingOutput`` to ``s3://.../runs/<execution id>/<step>/<name>`` /
                            ``ProcessingInput`` from the producing step's output (``Get``)
metrics, scalar outputs     ``metrics.json`` / ``outputs.json`` read as property files
condition + ``when``        ``Condition`` step; gated steps sit in its ``IfSteps`` / ``ElseSteps``
``register_model`` step     ``Processing`` step registering through mlshift (digest, card, alias)
``deploy`` step             ``Processing`` step deploying through mlshift
``fail`` step               ``Fail`` step
``after``                   ``DependsOn``
``retries``, ``timeout``    retried in the step process; ``StoppingCondition``
``cache``                   ``CacheConfig``
==========================  =====================================================================

Registering and deploying go through mlshift rather than SageMaker's own ``RegisterModel`` step
because a version needs its artifact digest and card to be served and verified, which only
exist once the model file does.

botocore only types the definition as a string, and SageMaker (or moto) accepts it without
looking, so :func:`validate_definition` checks it before anything is sent.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import logging
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlshift.errors import ConfigError, MlshiftError, NotFound, UnsupportedOperation
from mlshift.pipelines.builtins import total_retry_delay
from mlshift_sagemaker.errors import aws_errors
from mlshift_sagemaker.options import instance_type_for

if TYPE_CHECKING:
    from mlshift.pipelines.ir import ConditionIR, InputIR, OperandIR, PipelineIR, StepIR
    from mlshift.pipelines.runs import RemoteRunState, RunStatus, StepRun, StepStatus
    from mlshift_sagemaker._adapter import SageMakerAdapter

__all__ = [
    "PipelineContext",
    "SageMakerPipelineService",
    "compile_definition",
    "pipeline_name",
    "step_graph",
    "validate_definition",
]

logger = logging.getLogger("mlshift.sagemaker")

SCHEMA_VERSION = "2020-12-01"
#: SageMaker's limit on a definition (botocore's ``PipelineDefinition`` max length).
MAX_DEFINITION_BYTES = 1024 * 1024
PROCESSING = "/opt/ml/processing"
_PARAM_TYPES = {"str": "String", "int": "Integer", "float": "Float", "bool": "Boolean"}
_OPS = {
    ">=": "GreaterThanOrEqualTo",
    ">": "GreaterThan",
    "<=": "LessThanOrEqualTo",
    "<": "LessThan",
    "==": "Equals",
    "!=": "Equals",  # wrapped in Not
}
_STEP_TYPES = frozenset({"Processing", "Training", "Condition", "Fail", "RegisterModel", "Lambda", "Model"})
_STEP_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")
_PIPELINE_NAME = re.compile(r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,255}")
_PLACEHOLDER = re.compile(r"\{\{\s*(inputs|outputs)\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}|\{\{\s*metrics\s*\}\}")


def pipeline_name(name: str) -> str:
    """The SageMaker name of a pipeline (``_`` and ``.`` become ``-``).

    Raises:
        ConfigError: if nothing usable is left.
    """
    converted = re.sub(r"[_.]+", "-", name).strip("-")
    if not _PIPELINE_NAME.fullmatch(converted):
        raise ConfigError(
            f"pipeline name {name!r} cannot be a SageMaker pipeline name "
            "(letters, digits and '-', starting and ending with a letter or digit)",
            field="name",
        )
    return converted


class PipelineContext:
    """What a compiled definition needs from the target: role, bucket, image, region.

    Attributes:
        target_uri: The ``sagemaker://`` URI the register and deploy steps act on (with the
            bucket, prefix and role, so the step process finds the same registry).
    """

    def __init__(
        self, *, role_arn: str, bucket: str, prefix: str, image_uri: str, region: str, target_uri: str
    ) -> None:
        self.role_arn = role_arn
        self.bucket = bucket
        self.prefix = prefix
        self.image_uri = image_uri
        self.region = region
        self.target_uri = target_uri

    def s3(self, *parts: str) -> str:
        return "s3://" + "/".join([self.bucket, self.prefix, *parts])


def code_key(file: Path) -> tuple[str, bytes]:
    """Where a step's source file goes under ``pipelines/code/`` (by digest) and its bytes."""
    data = file.read_bytes()
    return f"{hashlib.sha256(data).hexdigest()}/{file.name}", data


def _get(path: str) -> dict[str, str]:
    return {"Get": path}


def _json_get(step: str, file: str, path: str) -> dict[str, Any]:
    return {"Std:JsonGet": {"PropertyFile": _get(f"Steps.{step}.PropertyFiles.{file}"), "Path": path}}


def _s3_input(uri: Any, local_path: str) -> dict[str, Any]:
    return {
        "S3Uri": uri,
        "LocalPath": local_path,
        "S3DataType": "S3Prefix",
        "S3InputMode": "File",
        "S3DataDistributionType": "FullyReplicated",
        "S3CompressionType": "None",
    }


def _artifact_uri(step: str, output: str) -> dict[str, str]:
    return _get(f"Steps.{step}.ProcessingOutputConfig.Outputs['{output}'].S3Output.S3Uri")


class _Compiler:
    def __init__(self, ir: PipelineIR, ctx: PipelineContext) -> None:
        self.ir = ir
        self.ctx = ctx
        self.name = pipeline_name(ir.name)
        self.code: dict[str, bytes] = {}
        self.where = f"pipeline {ir.name!r}"

    # ------------------------------------------------------------------ values

    def _operand(self, operand: OperandIR | InputIR) -> Any:
        """A parameter or a step's metric or output as a reference; a literal as it is."""
        if operand.param is not None:
            return _get(f"Parameters.{operand.param}")
        if operand.step is not None:
            if operand.metric is not None:
                return _json_get(operand.step, "metrics", operand.metric)
            return _json_get(operand.step, "outputs", operand.output or "output")
        return operand.value

    def _scalar_input(self, step: StepIR, key: str) -> Any:
        """A scalar input as a container argument (literals as text)."""
        value = self._operand(step.inputs[key])
        if isinstance(value, dict):
            return value
        return json.dumps(value) if isinstance(value, bool) else str(value)

    # ------------------------------------------------------------------ processing steps

    def _inputs(self, step: StepIR) -> list[dict[str, Any]]:
        out = []
        for key, inp in step.inputs.items():
            if inp.type == "artifact":
                if inp.step is None:
                    raise UnsupportedOperation(
                        f"{self.where}: step {step.name!r}: input {key!r} is an artifact from a literal "
                        "path; on SageMaker artifacts come from other steps",
                    )
                source = _artifact_uri(inp.step, inp.output or "")
            elif inp.type == "metrics":
                source = _artifact_uri(inp.step or "", "mlshift")
            else:
                continue
            out.append(
                {
                    "InputName": key,
                    "S3Input": _s3_input(source, f"{PROCESSING}/input/{key}"),
                }
            )
        return out

    def _outputs(self, step: StepIR) -> list[dict[str, Any]]:
        names = [k for k, o in step.outputs.items() if o.type == "artifact"] + ["mlshift"]
        return [
            {
                "OutputName": name,
                "S3Output": {
                    "S3Uri": {
                        "Std:Join": {
                            "On": "/",
                            "Values": [
                                self.ctx.s3("pipelines", self.name, "runs"),
                                _get("Execution.PipelineExecutionId"),
                                step.name,
                                name,
                            ],
                        }
                    },
                    "LocalPath": f"{PROCESSING}/output/{name}",
                    "S3UploadMode": "EndOfJob",
                },
            }
            for name in names
        ]

    def _processing(
        self, step: StepIR, image: str, entrypoint: Sequence[str], arguments: Sequence[Any]
    ) -> dict[str, Any]:
        if step.secrets:
            raise UnsupportedOperation(
                f"{self.where}: step {step.name!r} uses secrets, which the SageMaker compiler does not "
                "pass yet",
                hint="read them from AWS Secrets Manager inside the step",
            )
        arguments_: dict[str, Any] = {
            "ProcessingResources": {
                "ClusterConfig": {
                    "InstanceType": instance_type_for(step.resources.size),
                    "InstanceCount": 1,
                    "VolumeSizeInGB": 30,
                }
            },
            "AppSpecification": {
                "ImageUri": image,
                "ContainerEntrypoint": list(entrypoint),
                "ContainerArguments": list(arguments),
            },
            "RoleArn": self.ctx.role_arn,
            "ProcessingInputs": self._inputs(step),
            "ProcessingOutputConfig": {"Outputs": self._outputs(step)},
            "Environment": dict(step.env),
        }
        # Written the way sagemaker-mlops writes them (the crosscheck compares both): empty
        # parts are left out.
        for key in ("ProcessingInputs", "Environment"):
            if not arguments_[key]:
                del arguments_[key]
        if not arguments:
            del arguments_["AppSpecification"]["ContainerArguments"]
        if step.timeout is not None:
            arguments_["StoppingCondition"] = {
                "MaxRuntimeInSeconds": math.ceil(
                    step.timeout * (step.retries + 1) + total_retry_delay(step.retry_delay, step.retries)
                )
            }
        out: dict[str, Any] = {
            "Name": step.name,
            "Type": "Processing",
            "Arguments": arguments_,
            "PropertyFiles": [
                {"PropertyFileName": "metrics", "OutputName": "mlshift", "FilePath": "metrics.json"},
                {"PropertyFileName": "outputs", "OutputName": "mlshift", "FilePath": "outputs.json"},
            ],
        }
        if step.cache:
            out["CacheConfig"] = {"Enabled": True, "ExpireAfter": "P30D"}
        if step.after:
            out["DependsOn"] = list(step.after)
        return out

    def _values(self, step: StepIR, keys: Sequence[str]) -> list[Any]:
        args: list[Any] = []
        for key in keys:
            args += ["--value", key, self._scalar_input(step, key)]
        return args

    def _python(self, step: StepIR) -> dict[str, Any]:
        assert step.python is not None
        code = step.python
        scalars = [k for k, i in step.inputs.items() if i.type not in ("artifact", "metrics")]
        task: dict[str, Any] = {
            "module": code.module,
            "qualname": code.qualname,
            "inputs": {k: i.type for k, i in step.inputs.items()},
            "outputs": {k: o.type for k, o in step.outputs.items()},
            "metrics": step.metrics is not None,
            "retries": step.retries,
            "retry_delay": step.retry_delay,
            "timeout": step.timeout,
        }
        if "." not in code.module:
            # A script or top-level module is run from its file, uploaded by content digest.
            key, data = code_key(Path(code.file))
            self.code[key] = data
            task["file"] = Path(code.file).name
            task["code_uri"] = self.ctx.s3("pipelines", "code", key)
        step_def = self._processing(
            step,
            self.ctx.image_uri,
            ["python", "-m", "mlshift_sagemaker.step"],
            ["python", "--task", json.dumps(task, sort_keys=True), *self._values(step, scalars)],
        )
        if "code_uri" in task:
            code_input = {
                "InputName": "code",
                "S3Input": _s3_input(task["code_uri"].rsplit("/", 1)[0] + "/", f"{PROCESSING}/code"),
            }
            step_def["Arguments"]["ProcessingInputs"] = [
                code_input,
                *step_def["Arguments"].get("ProcessingInputs", []),
            ]
        return step_def

    def _container(self, step: StepIR) -> dict[str, Any]:
        assert step.container is not None

        def resolve(arg: str) -> Any:
            parts: list[Any] = []
            last = 0
            for match in _PLACEHOLDER.finditer(arg):
                parts.append(arg[last : match.start()])
                kind, key = match.group(1), match.group(2)
                if kind is None:
                    parts.append(f"{PROCESSING}/output/mlshift/metrics.json")
                elif kind == "outputs":
                    parts.append(f"{PROCESSING}/output/{key}")
                elif step.inputs.get(key) is not None and step.inputs[key].type in ("artifact", "metrics"):
                    parts.append(f"{PROCESSING}/input/{key}")
                elif key in step.inputs:
                    parts.append(self._scalar_input(step, key))
                else:
                    raise ConfigError(
                        f"{self.where}: step {step.name!r}: argument {arg!r} names unknown input {key!r}",
                        field=f"steps.{step.name}.container.args",
                    )
                last = match.end()
            parts.append(arg[last:])
            parts = [p for p in parts if p != ""]
            if all(isinstance(p, str) for p in parts):
                return "".join(parts)
            return parts[0] if len(parts) == 1 else {"Std:Join": {"On": "", "Values": parts}}

        return self._processing(
            step,
            step.container.image,
            step.container.command,
            [resolve(a) for a in step.container.args],
        )

    def _register(self, step: StepIR) -> dict[str, Any]:
        config = step.register_model
        assert config is not None
        args: list[Any] = ["register", "--target", self.ctx.target_uri]
        if config.target:
            args[2] = config.target
        args += self._values(step, [k for k in ("model",) if k in step.inputs])
        extra = {
            "alias": config.alias,
            "framework": config.framework,
            "tags": config.tags,
            "description": config.description,
            # Lineage: the pipeline only. A per-execution value (the execution's ARN) in the
            # arguments would change the step's cache key on every run, so it would never be cached.
            "pipeline": self.ir.name,
        }
        args += ["--settings", json.dumps({k: v for k, v in extra.items() if v}, sort_keys=True)]
        return self._processing(step, self.ctx.image_uri, ["python", "-m", "mlshift_sagemaker.step"], args)

    def _deploy(self, step: StepIR) -> dict[str, Any]:
        config = step.deploy
        assert config is not None
        args: list[Any] = ["deploy", "--target", config.target or self.ctx.target_uri]
        args += self._values(step, [k for k in ("model", "endpoint") if k in step.inputs])
        settings = {"traffic": config.traffic, "size": config.size, "replicas": config.replicas}
        if config.allow_schema_change:  # only when set: existing step arguments stay as they were
            settings["allow_schema_change"] = True
        args += [
            "--settings",
            json.dumps({k: v for k, v in settings.items() if v is not None}, sort_keys=True),
        ]
        return self._processing(step, self.ctx.image_uri, ["python", "-m", "mlshift_sagemaker.step"], args)

    def _step(self, step: StepIR) -> dict[str, Any]:
        if step.kind == "fail":
            assert step.fail is not None
            return {"Name": step.name, "Type": "Fail", "Arguments": {"ErrorMessage": step.fail.message}}
        builder = {
            "python": self._python,
            "container": self._container,
            "register_model": self._register,
            "deploy": self._deploy,
        }[step.kind]
        return builder(step)

    # ------------------------------------------------------------------ conditions

    def _condition(self, cond: ConditionIR, if_steps: list[Any], else_steps: list[Any]) -> dict[str, Any]:
        comparison: dict[str, Any] = {
            "Type": _OPS[cond.op],
            "LeftValue": self._operand(cond.left),
            "RightValue": self._operand(cond.right),
        }
        if cond.op == "!=":
            comparison = {"Type": "Not", "Expression": comparison}
        return {
            "Name": cond.id,
            "Type": "Condition",
            "Arguments": {"Conditions": [comparison], "IfSteps": if_steps, "ElseSteps": else_steps},
        }

    def compile(self) -> dict[str, Any]:
        ir = self.ir
        branches: dict[str, tuple[list[Any], list[Any]]] = {c.id: ([], []) for c in ir.conditions}
        top: list[dict[str, Any]] = []
        names = {s.name for s in ir.steps}
        for cond in ir.conditions:
            if cond.id in names:
                raise ConfigError(
                    f"{self.where}: condition {cond.id!r} has the name of a step; SageMaker names "
                    "condition steps after their condition",
                    field=f"conditions.{cond.id}",
                )
        for step in ir.steps:
            if not _STEP_NAME.fullmatch(step.name):
                raise ConfigError(
                    f"{self.where}: step name {step.name!r} is not a SageMaker step name "
                    "(1-64 letters, digits, '_' and '-')",
                    field=f"steps.{step.name}",
                )
            if len(step.when) > 1:
                raise UnsupportedOperation(
                    f"{self.where}: step {step.name!r} sits under {len(step.when)} conditions; the SageMaker "
                    "compiler handles one condition per step so far",
                    hint="combine the comparisons into one step's metric, or gate on one condition",
                )
            compiled = self._step(step)
            if step.when:
                gate = step.when[0]
                branches[gate.condition][0 if gate.branch else 1].append(compiled)
            else:
                top.append(compiled)
        used = {w.condition for s in ir.steps for w in s.when}
        for cond in ir.conditions:
            if cond.id in used:
                if_steps, else_steps = branches[cond.id]
                top.append(self._condition(cond, if_steps, else_steps))
        parameters = []
        for p in ir.params:
            param: dict[str, Any] = {"Name": p.name, "Type": _PARAM_TYPES[p.type]}
            if p.default is not None:
                param["DefaultValue"] = p.default
            parameters.append(param)
        return {
            "Version": SCHEMA_VERSION,
            "Metadata": {},
            "Parameters": parameters,
            "PipelineExperimentConfig": {
                "ExperimentName": _get("Execution.PipelineName"),
                "TrialName": _get("Execution.PipelineExecutionId"),
            },
            "Steps": top,
        }


def compile_definition(ir: PipelineIR, ctx: PipelineContext) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The definition for ``ir``, and the step source files it needs in S3 (key → bytes).

    The definition is checked with :func:`validate_definition` before it is returned.

    Raises:
        ConfigError: a name SageMaker cannot take, a bad container argument.
        UnsupportedOperation: what the compiler does not map yet (secrets, nested conditions).
    """
    compiler = _Compiler(ir, ctx)
    definition = compiler.compile()
    validate_definition(definition)
    return definition, compiler.code


# ---------------------------------------------------------------------- validation


def _walk(
    steps: Sequence[Mapping[str, Any]], parent: str | None = None
) -> Iterator[tuple[Mapping[str, Any], str | None]]:
    for step in steps:
        yield step, parent
        if step.get("Type") == "Condition":
            args = step.get("Arguments", {})
            yield from _walk([*args.get("IfSteps", []), *args.get("ElseSteps", [])], str(step.get("Name")))


def _references(value: Any) -> Iterator[str]:
    if isinstance(value, Mapping):
        for key, item in value.items():
            if key == "Get" and isinstance(item, str):
                yield item
            elif key == "IfSteps" or key == "ElseSteps":
                continue  # nested steps are checked as steps of their own
            else:
                yield from _references(item)
    elif isinstance(value, list):
        for item in value:
            yield from _references(item)


def validate_definition(definition: Mapping[str, Any]) -> None:
    """Check a definition as SageMaker would when it runs it (moto and botocore do not).

    Checks the schema version and top-level keys, unique and valid step names, step types,
    that every ``Get`` names a parameter, an execution variable, or a step (and its property
    file) that exists, that ``DependsOn`` names steps, that dependencies form no cycle, and the
    1 MiB size limit.

    Raises:
        ConfigError: naming the step and what is wrong (field ``definition.<...>``).
    """

    def fail(message: str, field: str = "definition") -> ConfigError:
        return ConfigError(f"invalid SageMaker pipeline definition: {message}", field=field)

    if definition.get("Version") != SCHEMA_VERSION:
        raise fail(
            f"Version must be {SCHEMA_VERSION!r}, got {definition.get('Version')!r}", "definition.Version"
        )
    unknown = sorted(
        set(definition) - {"Version", "Metadata", "Parameters", "PipelineExperimentConfig", "Steps"}
    )
    if unknown:
        raise fail(f"unknown top-level keys {unknown}", "definition")
    steps = definition.get("Steps")
    if not isinstance(steps, list) or not steps:
        raise fail("Steps must be a non-empty list", "definition.Steps")
    parameters: dict[str, str] = {}
    for p in definition.get("Parameters", []):
        name = p.get("Name")
        if not isinstance(name, str) or name in parameters:
            raise fail(f"parameter {name!r} is missing a name or is declared twice", "definition.Parameters")
        if p.get("Type") not in ("String", "Integer", "Float", "Boolean"):
            raise fail(f"parameter {name!r} has type {p.get('Type')!r}", f"definition.Parameters.{name}")
        parameters[name] = p["Type"]
    _, deps = step_graph(definition, parameters, fail)
    # A step's dependencies must finish first: no cycles (Kahn's algorithm).
    indegree = {n: len(d) for n, d in deps.items()}
    ready = [n for n, k in indegree.items() if k == 0]
    seen = 0
    dependents: dict[str, list[str]] = {n: [] for n in deps}
    for n, d in deps.items():
        for other in d:
            dependents[other].append(n)
    while ready:
        n = ready.pop()
        seen += 1
        for m in dependents[n]:
            indegree[m] -= 1
            if indegree[m] == 0:
                ready.append(m)
    if seen != len(deps):
        stuck = sorted(n for n, k in indegree.items() if k > 0)
        raise fail(f"steps depend on each other in a cycle: {', '.join(stuck)}", "definition.Steps")
    size = len(json.dumps(definition).encode())
    if size > MAX_DEFINITION_BYTES:
        raise fail(f"the definition is {size} bytes; SageMaker takes at most {MAX_DEFINITION_BYTES}")


def step_graph(
    definition: Mapping[str, Any],
    parameters: Mapping[str, str] | None = None,
    fail: Any = None,
) -> tuple[dict[str, Mapping[str, Any]], dict[str, set[str]]]:
    """Every step of a definition (branches included) by name, and the steps each waits for.

    A step waits for the steps it reads from (``Get``), the ones in its ``DependsOn``, and the
    condition step whose branch it sits in.
    """
    if parameters is None:
        parameters = {p.get("Name"): p.get("Type") for p in definition.get("Parameters", [])}

    def default_fail(message: str, field: str = "definition") -> ConfigError:
        return ConfigError(f"invalid SageMaker pipeline definition: {message}", field=field)

    fail = fail or default_fail
    steps = definition.get("Steps", [])
    all_steps: dict[str, Mapping[str, Any]] = {}
    parents: dict[str, str | None] = {}
    for step, parent in _walk(steps):
        name = step.get("Name")
        if not isinstance(name, str) or not _STEP_NAME.fullmatch(name):
            raise fail(f"step name {name!r} is not 1-64 letters, digits, '_' or '-'", "definition.Steps")
        if name in all_steps:
            raise fail(f"two steps are named {name!r}", f"definition.Steps.{name}")
        if step.get("Type") not in _STEP_TYPES:
            raise fail(
                f"step {name!r} has unknown type {step.get('Type')!r}", f"definition.Steps.{name}.Type"
            )
        all_steps[name] = step
        parents[name] = parent
    deps: dict[str, set[str]] = {name: set() for name in all_steps}
    for name, step in all_steps.items():
        for ref in _references(step.get("Arguments", {})):
            head, _, rest = ref.partition(".")
            if head == "Parameters":
                if rest not in parameters:
                    raise fail(
                        f"step {name!r} uses undeclared parameter {rest!r}", f"definition.Steps.{name}"
                    )
            elif head == "Steps":
                target, _, tail = rest.partition(".")
                if target not in all_steps:
                    raise fail(f"step {name!r} refers to unknown step {target!r}", f"definition.Steps.{name}")
                if tail.startswith("PropertyFiles."):
                    file = tail.removeprefix("PropertyFiles.")
                    declared = {f.get("PropertyFileName") for f in all_steps[target].get("PropertyFiles", [])}
                    if file not in declared:
                        raise fail(
                            f"step {name!r} reads property file {file!r}, "
                            f"which step {target!r} does not declare",
                            f"definition.Steps.{name}",
                        )
                if target != name:
                    deps[name].add(target)
            elif head != "Execution":
                raise fail(
                    f"step {name!r} has a reference {ref!r} SageMaker cannot resolve",
                    f"definition.Steps.{name}",
                )
        for other in step.get("DependsOn", []):
            if other not in all_steps:
                raise fail(
                    f"step {name!r} depends on unknown step {other!r}", f"definition.Steps.{name}.DependsOn"
                )
            deps[name].add(other)
        parent = parents[name]
        if parent is not None:
            deps[name].add(parent)
    return all_steps, deps


# ---------------------------------------------------------------------- the service


class SageMakerPipelineService:
    """Pipelines on SageMaker: compile the IR, create or update the pipeline, run, follow, stop.

    ``adapter.pipelines`` of a ``sagemaker://`` target.
    """

    def __init__(self, adapter: SageMakerAdapter) -> None:
        self._adapter = adapter
        # What never changes once read: an execution's definition, a finished step's outputs.
        self._definitions: dict[str, dict[str, Any]] = {}
        self._step_outputs: dict[tuple[str, str], tuple[dict[str, Any], dict[str, float]]] = {}
        self._described: dict[str, dict[str, Any]] = {}
        self._run_params: dict[str, dict[str, Any]] = {}
        self._labels: dict[str, str] = {}

    @property
    def _sm(self) -> Any:
        return self._adapter.clients.client("sagemaker")

    def context(self) -> PipelineContext:
        """What compiled steps need: the role, bucket, serving image and this target's URI.

        Raises:
            ConfigError: without ``role_arn`` (naming ``target.options.role_arn``).
        """
        from urllib.parse import urlencode

        options = self._adapter.options
        role = self._adapter.endpoints._require_role()
        store = self._adapter.store
        query = {"role_arn": role, "bucket": store.bucket, "prefix": options.prefix}
        return PipelineContext(
            role_arn=role,
            bucket=store.bucket,
            prefix=options.prefix,
            image_uri=self._adapter.default_image(),
            region=self._adapter.region,
            target_uri=f"sagemaker://{self._adapter.region}?{urlencode(query)}",
        )

    def compile(self, ir: PipelineIR) -> dict[str, Any]:
        """The SageMaker pipeline definition of ``ir`` (validated; nothing is sent).

        Raises:
            ConfigError, UnsupportedOperation: see :func:`compile_definition`.
        """
        return compile_definition(ir, self.context())[0]

    def upsert(self, ir: PipelineIR) -> str:
        """Create the pipeline, or update it if its definition changed; returns its ARN.

        Step source files go to S3 by content digest first (skipped when already there). An
        unchanged pipeline makes no mutating call.

        Raises:
            NotFound: the mlshift serving image the steps run in is not in ECR (with the
                command that pushes it); nothing is uploaded or created.
        """
        context = self.context()
        definition, code = compile_definition(ir, context)
        if self._adapter.options.image_uri is None:
            # The steps run in the mlshift image: missing, every step would fail minutes later.
            self._adapter.images.require_pushed(context.image_uri)
        store = self._adapter.store
        for key, data in code.items():
            full = store.key("pipelines", "code", key)
            if not store.exists(full):
                store.put(full, data)
        name = pipeline_name(ir.name)
        text = json.dumps(definition, sort_keys=True)
        try:
            with aws_errors(f"describe pipeline {name!r}"):
                live = self._sm.describe_pipeline(PipelineName=name)
        except NotFound:
            live = None
        request = {
            "PipelineName": name,
            "PipelineDefinition": text,
            "PipelineDescription": (ir.description or f"mlshift pipeline {ir.name}")[:3072],
            "RoleArn": context.role_arn,
        }
        if live is None:
            with aws_errors(f"create pipeline {name!r}"):
                arn: str = self._sm.create_pipeline(
                    **request,
                    Tags=self._adapter.resource_tags(
                        {"mlshift:managed": "true", "mlshift:pipeline": ir.name}
                    ),
                )["PipelineArn"]
            return arn
        changed = json.loads(live.get("PipelineDefinition") or "{}") != definition
        if changed or live.get("PipelineDescription") != request["PipelineDescription"]:
            with aws_errors(f"update pipeline {name!r}"):
                self._sm.update_pipeline(**request)
        return str(live["PipelineArn"])

    def _start(
        self, ir: PipelineIR, params: Mapping[str, Any] | None, *, max_parallel: int | None = None
    ) -> str:
        values = ir.resolve_params(params)
        if max_parallel is not None and max_parallel < 1:
            raise ConfigError(f"max_parallel must be at least 1, got {max_parallel}", field="max_parallel")
        self.upsert(ir)
        name = pipeline_name(ir.name)
        parameters = [
            {"Name": k, "Value": json.dumps(v) if isinstance(v, bool) else str(v)}
            for k, v in values.items()
            if v is not None
        ]
        request: dict[str, Any] = {"PipelineName": name, "PipelineParameters": parameters}
        if max_parallel is not None:
            request["ParallelismConfiguration"] = {"MaxParallelExecutionSteps": max_parallel}
        with aws_errors(f"start pipeline {name!r}"):
            arn: str = self._sm.start_pipeline_execution(**request)["PipelineExecutionArn"]
        return arn

    # ------------------------------------------------------------------ the neutral run contract
    # (mlshift.adapter.PipelineService: what client.pipelines.run() uses)

    @property
    def poll_interval(self) -> float:
        """Seconds between status checks while a run is followed (the ``poll_interval`` option)."""
        return self._adapter.options.poll_interval

    def submit(
        self,
        ir: PipelineIR,
        params: Mapping[str, Any] | None = None,
        *,
        use_cache: bool = True,
        max_parallel: int | None = None,
    ) -> str:
        """Create or update the pipeline and start an execution; returns its ARN (the run id).

        ``use_cache=False`` turns step caching off in the definition this execution runs (the
        pipeline is updated; the next cached run updates it back).
        """
        if not use_cache:
            ir = ir.model_copy(
                update={"steps": tuple(s.model_copy(update={"cache": False}) for s in ir.steps)}
            )
        return self._start(ir, params, max_parallel=max_parallel)

    def describe_run(self, run_id: str) -> RemoteRunState:
        """The execution in neutral terms: every step of the pipeline, with outputs and metrics.

        Raises:
            NotFound: for an unknown execution ARN.
        """
        from mlshift.pipelines.runs import RemoteRunState

        arn = _check_run_id(run_id)
        listed = self._listed(arn)
        described = self._described[arn]
        definition = self._definition(arn)
        status = _RUN_STATUS.get(str(described.get("PipelineExecutionStatus")), "running")
        steps, _ = step_graph(definition)
        outcomes = {
            name: (listed.get(name, {}).get("Metadata", {}).get("Condition") or {}).get("Outcome")
            for name, step in steps.items()
            if step.get("Type") == "Condition"
        }
        branch_of: dict[str, tuple[str, bool]] = {}
        for name, step in steps.items():
            if step.get("Type") == "Condition":
                for nested in step.get("Arguments", {}).get("IfSteps", []):
                    branch_of[nested["Name"]] = (name, True)
                for nested in step.get("Arguments", {}).get("ElseSteps", []):
                    branch_of[nested["Name"]] = (name, False)
        result: list[StepRun] = []
        failed_steps: list[str] = []
        for name, step in steps.items():
            if step.get("Type") == "Condition":
                continue
            entry = listed.get(name)
            if entry is None:
                result.append(self._not_started(name, step, status, branch_of, outcomes, failed_steps))
                continue
            run_step = self._step_run(arn, name, step, entry)
            if run_step.status == "failed":
                failed_steps.append(name)
            result.append(run_step)
        message = described.get("FailureReason") or None
        first_failed = next((s for s in result if s.status == "failed"), None)
        if first_failed is not None and first_failed.message:
            message = f"step {first_failed.name!r} failed: {first_failed.message}"
        if status == "cancelled":
            message = "stopped"
        finished = (
            _time(described.get("LastModifiedTime"))
            if status in ("succeeded", "failed", "cancelled")
            else None
        )
        return RemoteRunState(
            id=arn,
            pipeline=self._pipeline_label(str(described.get("PipelineArn") or ""), arn),
            status=status,
            message=message,
            params=self._params(arn, definition),
            created_at=_time(described.get("CreationTime")),
            finished_at=finished,
            steps=tuple(result),
        )

    def cancel_run(self, run_id: str) -> None:
        """Ask SageMaker to stop the execution (running steps stop, finished ones stay)."""
        arn = _check_run_id(run_id)
        with aws_errors(f"stop pipeline execution {arn}"):
            self._sm.stop_pipeline_execution(PipelineExecutionArn=arn)

    def list_runs(self, pipeline: str | None = None, limit: int = 50) -> builtins.list[str]:
        """Execution ARNs, newest first: of one pipeline (by its mlshift or SageMaker name), or of
        every pipeline mlshift made in this account and region (tagged ``mlshift:managed``)."""
        if limit < 1:
            raise ConfigError(f"limit must be at least 1, got {limit}", field="limit")
        if pipeline is not None:
            names = [pipeline_name(pipeline)]
        else:
            names = []
            with aws_errors("list pipelines"):
                for page in self._sm.get_paginator("list_pipelines").paginate():
                    for p in page.get("PipelineSummaries", []):
                        tags = self._sm.list_tags(ResourceArn=p["PipelineArn"]).get("Tags", [])
                        if any(t.get("Key") == "mlshift:managed" for t in tags):
                            names.append(p["PipelineName"])
        found: list[tuple[Any, str]] = []
        for name in names:
            try:
                with aws_errors(f"list the executions of pipeline {name!r}"):
                    response = self._sm.list_pipeline_executions(
                        PipelineName=name,
                        SortBy="CreationTime",
                        SortOrder="Descending",
                        MaxResults=min(limit, 100),
                    )
            except NotFound:
                continue
            found += [
                (s.get("StartTime"), s["PipelineExecutionArn"])
                for s in response.get("PipelineExecutionSummaries", [])
            ]
        found.sort(key=lambda item: _time(item[0]) or datetime.min.replace(tzinfo=timezone.utc), reverse=True)
        return [arn for _, arn in found[:limit]]

    def run_logs(self, run_id: str, step: str) -> str:
        """The CloudWatch log of ``step``'s processing job (``""`` for steps without a job)."""
        arn = _check_run_id(run_id)
        entry = self._listed(arn).get(step)
        if entry is None:
            return ""
        job_arn = (entry.get("Metadata", {}).get("ProcessingJob") or {}).get("Arn")
        if not job_arn:
            return str(entry.get("FailureReason") or "")
        # SageMaker lowercases names in ARNs; log streams keep the job name's case. Pipeline jobs
        # are named pipelines-<execution id>-<step>-..., whose lowercase start is searched by.
        job = str(job_arn).rsplit("/", 1)[-1].lower()
        execution_id = arn.rsplit("/", 1)[-1]
        prefix = f"pipelines-{execution_id}-" if job.startswith(f"pipelines-{execution_id}-") else job
        logs = self._adapter.clients.client("logs")
        lines: list[str] = []
        try:
            with aws_errors(f"read the log of step {step!r}"):
                streams = [
                    s["logStreamName"]
                    for page in logs.get_paginator("describe_log_streams").paginate(
                        logGroupName=LOG_GROUP, logStreamNamePrefix=prefix
                    )
                    for s in page.get("logStreams", [])
                    if str(s["logStreamName"]).lower().startswith(f"{job}/")
                ]
                if not streams:
                    return ""
                for page in logs.get_paginator("filter_log_events").paginate(
                    logGroupName=LOG_GROUP, logStreamNames=streams[:100]
                ):
                    lines += [e.get("message", "") for e in page.get("events", [])]
        except NotFound:
            return ""
        return "\n".join(lines) + ("\n" if lines else "")

    # ------------------------------------------------------------------ helpers of describe_run

    def _definition(self, arn: str) -> dict[str, Any]:
        if arn not in self._definitions:
            with aws_errors(f"read the definition of pipeline execution {arn}"):
                text = self._sm.describe_pipeline_definition_for_execution(PipelineExecutionArn=arn)[
                    "PipelineDefinition"
                ]
            self._definitions[arn] = json.loads(text)
        return self._definitions[arn]

    def _pipeline_label(self, pipeline_arn: str, execution_arn: str) -> str:
        """The pipeline's mlshift name (its ``mlshift:pipeline`` tag), else its SageMaker name."""
        fallback = execution_arn.split(":pipeline/")[-1].split("/")[0]
        if not pipeline_arn:
            return fallback
        if pipeline_arn not in self._labels:
            try:
                with aws_errors(f"read the tags of {pipeline_arn}"):
                    tags = self._sm.list_tags(ResourceArn=pipeline_arn).get("Tags", [])
            except MlshiftError as exc:
                logger.warning("cannot read the tags of %s: %s", pipeline_arn, exc)
                return fallback
            label = next((t["Value"] for t in tags if t.get("Key") == "mlshift:pipeline"), None)
            self._labels[pipeline_arn] = label or fallback
        return self._labels[pipeline_arn]

    def _params(self, arn: str, definition: Mapping[str, Any]) -> dict[str, Any]:
        """The execution's parameter values, typed (read once: they never change)."""
        if arn in self._run_params:
            return dict(self._run_params[arn])
        kinds = {p.get("Name"): p.get("Type") for p in definition.get("Parameters", [])}
        values: dict[str, Any] = {p["Name"]: p.get("DefaultValue") for p in definition.get("Parameters", [])}
        with aws_errors(f"read the parameters of pipeline execution {arn}"):
            for page in self._sm.get_paginator("list_pipeline_parameters_for_execution").paginate(
                PipelineExecutionArn=arn
            ):
                values.update({p["Name"]: p["Value"] for p in page.get("PipelineParameters", [])})
        self._run_params[arn] = {k: _typed(kinds.get(k), v) for k, v in values.items()}
        return dict(self._run_params[arn])

    def _listed(self, arn: str) -> dict[str, dict[str, Any]]:
        with aws_errors(f"describe pipeline execution {arn}"):
            self._described[arn] = self._sm.describe_pipeline_execution(PipelineExecutionArn=arn)
            entries: list[dict[str, Any]] = []
            for page in self._sm.get_paginator("list_pipeline_execution_steps").paginate(
                PipelineExecutionArn=arn, SortOrder="Ascending"
            ):
                entries.extend(page.get("PipelineExecutionSteps", []))
        return {e["StepName"]: e for e in entries}

    @staticmethod
    def _kind(step: Mapping[str, Any]) -> str:
        if step.get("Type") == "Fail":
            return "fail"
        app = step.get("Arguments", {}).get("AppSpecification", {})
        if list(app.get("ContainerEntrypoint", [])) == ["python", "-m", "mlshift_sagemaker.step"]:
            command = (app.get("ContainerArguments") or [""])[0]
            return {"register": "register_model", "deploy": "deploy"}.get(command, "python")
        return "container"

    def _not_started(
        self,
        name: str,
        step: Mapping[str, Any],
        status: str,
        branch_of: Mapping[str, tuple[str, bool]],
        outcomes: Mapping[str, str | None],
        failed: Sequence[str],
    ) -> StepRun:
        from mlshift.pipelines.runs import StepRun

        kind = self._kind(step)
        if status == "running":
            return StepRun(name=name, kind=kind, status="pending")
        gate = branch_of.get(name)
        if gate is not None and outcomes.get(gate[0]) not in (None, str(gate[1])):
            message = f"{gate[0]} is {'false' if gate[1] else 'true'}"
        elif status == "cancelled":
            return StepRun(
                name=name, kind=kind, status="cancelled", message="the run was stopped before it started"
            )
        elif failed:
            message = f"skipped because {', '.join(failed)} failed"
        else:
            message = "not run"
        return StepRun(name=name, kind=kind, status="skipped", message=message)

    def _step_run(self, arn: str, name: str, step: Mapping[str, Any], entry: Mapping[str, Any]) -> StepRun:
        from mlshift.pipelines.runs import StepRun

        raw = str(entry.get("StepStatus", "Executing"))
        source = (entry.get("CacheHitResult") or {}).get("SourcePipelineExecutionArn")
        status = _STEP_STATUS.get(raw, "running")
        if status == "succeeded" and source:
            status = "cached"
        fail_message = (entry.get("Metadata", {}).get("Fail") or {}).get("ErrorMessage")
        message = entry.get("FailureReason") or fail_message or None
        kind = self._kind(step)
        if status == "failed" and step.get("Type") == "Processing":
            message = self._failure_from_log(arn, name) or message
        outputs: dict[str, Any] = {}
        metrics: dict[str, float] = {}
        if status in ("succeeded", "cached") and step.get("Type") == "Processing":
            outputs, metrics = self._outputs(arn, name, step, str(source) if source else None)
        return StepRun(
            name=name,
            kind=kind,
            status=status,
            attempts=int(entry.get("AttemptCount") or 1),
            # A Fail step stops the run rather than running anything (as the local runner counts it).
            executions=0 if status == "cached" or kind == "fail" else 1,
            cached_from=str(source) if source else None,
            outputs=outputs,
            metrics=metrics,
            message=message,
            started_at=_time(entry.get("StartTime")),
            finished_at=_time(entry.get("EndTime")),
        )

    def _failure_from_log(self, arn: str, step: str) -> str | None:
        """The ``step failed: ...`` line the step process wrote last, if its log has one (and
        may be read: without ``logs:`` permissions the run's status is still reported)."""
        try:
            text = self.run_logs(arn, step)
        except MlshiftError as exc:
            logger.warning("cannot read the log of step %r: %s", step, exc)
            return None
        for line in reversed(text.splitlines()):
            if line.startswith("step failed: "):
                return line.removeprefix("step failed: ")
        return None

    def _outputs(
        self, arn: str, name: str, step: Mapping[str, Any], source: str | None
    ) -> tuple[dict[str, Any], dict[str, float]]:
        """A finished step's outputs (values from ``outputs.json``, artifacts as S3 URIs) and metrics."""
        key = (arn, name)
        if key in self._step_outputs:
            return self._step_outputs[key]
        execution_id = (source or arn).rsplit("/", 1)[-1]
        uris: dict[str, str] = {}
        for output in step.get("Arguments", {}).get("ProcessingOutputConfig", {}).get("Outputs", []):
            uri = _resolve_uri(output["S3Output"]["S3Uri"], execution_id)
            if uri is not None:
                uris[output["OutputName"]] = uri
        outputs: dict[str, Any] = {k: {"uri": v} for k, v in uris.items() if k != "mlshift"}
        metrics: dict[str, float] = {}
        if "mlshift" in uris:
            store = self._adapter.store
            for file in ("outputs.json", "metrics.json"):
                bucket, _, prefix = uris["mlshift"].removeprefix("s3://").partition("/")
                try:
                    with aws_errors(f"read {file} of step {name!r}"):
                        body = store._s3.get_object(Bucket=bucket, Key=f"{prefix.rstrip('/')}/{file}")[
                            "Body"
                        ].read()
                except NotFound:
                    continue
                except MlshiftError as exc:  # e.g. no s3:GetObject: report the run without them
                    logger.warning("cannot read %s of step %r: %s", file, name, exc)
                    return outputs, metrics  # not remembered: read again next time
                data = json.loads(body or b"{}")
                if file == "outputs.json":
                    outputs.update(data)
                else:
                    metrics = {k: float(v) for k, v in data.items()}
        self._step_outputs[key] = (outputs, metrics)
        return outputs, metrics


LOG_GROUP = "/aws/sagemaker/ProcessingJobs"
_RUN_STATUS: dict[str, RunStatus] = {
    "Executing": "running",
    "Stopping": "running",
    "Succeeded": "succeeded",
    "Failed": "failed",
    "Stopped": "cancelled",
}
_STEP_STATUS: dict[str, StepStatus] = {
    "Starting": "running",
    "Executing": "running",
    "Stopping": "running",
    "Succeeded": "succeeded",
    "Failed": "failed",
    "Stopped": "cancelled",
}
_RUN_ARN = re.compile(r"arn:aws[a-z-]*:sagemaker:[a-z0-9-]+:\d{12}:pipeline/[^/]+/execution/[a-z0-9]+")


def _check_run_id(run_id: str) -> str:
    """A run id is a pipeline execution ARN; anything else is refused before a call is made."""
    if not _RUN_ARN.fullmatch(run_id):
        raise ConfigError(
            f"{run_id!r} is not a SageMaker pipeline execution ARN "
            "(arn:aws:sagemaker:REGION:ACCOUNT:pipeline/NAME/execution/ID)",
            field="run_id",
            hint="`mlshift pipelines list --target sagemaker://REGION` shows the runs' ids",
        )
    return run_id


def _time(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, int | float):
        return datetime.fromtimestamp(value, tz=timezone.utc)
    return None


def _typed(kind: str | None, value: Any) -> Any:
    if value is None:
        return None
    try:
        if kind == "Integer":
            return int(value)
        if kind == "Float":
            return float(value)
    except ValueError:
        return value
    if kind == "Boolean":
        return value if isinstance(value, bool) else str(value).strip().lower() == "true"
    return value


def _resolve_uri(expr: Any, execution_id: str) -> str | None:
    """An output ``S3Uri`` as compiled (a string or a ``Std:Join`` over the execution id)."""
    if isinstance(expr, str):
        return expr
    if isinstance(expr, dict) and "Std:Join" in expr:
        parts = []
        for value in expr["Std:Join"].get("Values", []):
            if isinstance(value, str):
                parts.append(value)
            elif value == {"Get": "Execution.PipelineExecutionId"}:
                parts.append(execution_id)
            else:
                return None
        return str(expr["Std:Join"].get("On", "")).join(parts)
    return None
