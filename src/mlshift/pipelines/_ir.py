"""The portable pipeline IR: pydantic models, JSON in and out, a stable content hash per step.

This is what ``mlshift pipelines compile --target local`` writes and what each cloud adapter's
compiler reads: SageMaker turns ``conditions`` into ConditionSteps and ``fail`` into a
FailStep, KFP into ``dsl.If`` groups, and so on. Everything a provider needs is here, typed;
nothing refers back to Python objects except ``python`` steps, which name the module and
function a step process imports.

A step's ``hash`` covers everything that defines the step except where its source file sits
on this machine, so the same pipeline hashes the same in every checkout. IR loaded from JSON
is checked like a pipeline defined in Python: the graph rules, and that each hash matches.
"""

from __future__ import annotations

import hashlib
import json
from collections import deque
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, model_validator
from typing_extensions import Self

from mlshift.errors import ConfigError
from mlshift.pipelines._types import ValueType, accepts, coerce_literal
from mlshift.specs._base import SpecModel
from mlshift.specs.model import Framework

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
    "ScheduleIR",
    "StepIR",
    "WhenIR",
    "build_ir",
    "canonical_json",
]

IR_FORMAT: Literal["mlshift.pipeline/v1"] = "mlshift.pipeline/v1"
Scalar = str | bool | int | float
ScalarType = Literal["str", "int", "float", "bool"]
Size = Literal["cpu-small", "cpu-medium", "cpu-large", "gpu-small", "gpu-medium", "gpu-large"]


def canonical_json(data: Any) -> bytes:
    """JSON with sorted keys and no spaces: the bytes hashes are computed over."""
    return json.dumps(data, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()


class ParamIR(SpecModel):
    """A pipeline parameter."""

    name: str
    type: ScalarType
    default: Scalar | None = None
    required: bool = False


class InputIR(SpecModel):
    """Where a step input comes from: exactly one of a literal ``value``, a pipeline ``param``,
    or a ``step``'s ``output`` / ``metric`` / whole metrics (``step`` alone, type ``metrics``)."""

    type: ValueType
    value: Scalar | None = None
    param: str | None = None
    step: str | None = None
    output: str | None = None
    metric: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> InputIR:
        sources = sum(x is not None for x in (self.value, self.param, self.step))
        if sources != 1:
            raise ValueError("an input takes exactly one of value, param or step")
        if self.step is None and (self.output is not None or self.metric is not None):
            raise ValueError("output and metric name what a step produces; set step too")
        if self.step is not None:
            if self.type == "metrics":
                if self.output is not None or self.metric is not None:
                    raise ValueError("a metrics input takes a step's whole metrics: set step only")
            elif (self.output is None) == (self.metric is None):
                raise ValueError("an input from a step names exactly one of output or metric")
        return self


class OperandIR(SpecModel):
    """One side of a condition: a literal, a parameter, or a step's metric or output."""

    type: ValueType | None = None
    value: Scalar | None = None
    param: str | None = None
    step: str | None = None
    output: str | None = None
    metric: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> OperandIR:
        if sum(x is not None for x in (self.value, self.param, self.step)) != 1:
            raise ValueError("an operand takes exactly one of value, param or step")
        if self.step is not None and (self.output is None) == (self.metric is None):
            raise ValueError("an operand from a step names exactly one of output or metric")
        return self

    def describe(self) -> str:
        """How it reads in messages."""
        if self.step is not None:
            which = f"metrics[{self.metric!r}]" if self.metric is not None else f"outputs[{self.output!r}]"
            return f"{self.step}.{which}"
        if self.param is not None:
            return self.param
        return repr(self.value)


class ConditionIR(SpecModel):
    """``left <op> right``, referenced by the steps it controls."""

    id: str
    left: OperandIR
    op: Literal[">=", ">", "<=", "<", "==", "!="]
    right: OperandIR

    def describe(self) -> str:
        """The comparison as written."""
        return f"{self.left.describe()} {self.op} {self.right.describe()}"


class WhenIR(SpecModel):
    """A step runs only if condition ``condition`` evaluates to ``branch``."""

    condition: str
    branch: bool = True


class OutputIR(SpecModel):
    """A declared output."""

    type: Literal["artifact", "str", "int", "float", "bool"]


class ResourcesIR(SpecModel):
    """Neutral size and GPU count."""

    size: Size = "cpu-small"
    gpus: int = Field(default=0, ge=0, le=16)


class PythonCode(SpecModel):
    """How a step process imports a ``@step`` function, and the digest of its source."""

    module: str
    file: str
    qualname: str
    root: str
    code_digest: str = Field(pattern=r"^sha256:[0-9a-f]{64}$")


class ContainerIR(SpecModel):
    """A command in an image; arguments may hold ``{{inputs.X}}``/``{{outputs.X}}``/``{{metrics}}``."""

    image: str
    command: tuple[str, ...] = Field(min_length=1)
    args: tuple[str, ...] = ()


class RegisterModelConfig(SpecModel):
    """Settings of a ``register_model`` step (its artifact, name and metrics are inputs)."""

    alias: str | None = None
    framework: Framework | None = None
    tags: dict[str, str] = Field(default_factory=dict)
    description: str | None = None
    target: str | None = None


class DeployConfig(SpecModel):
    """Settings of a ``deploy`` step (its model and endpoint are inputs)."""

    traffic: int | None = Field(default=None, ge=1, le=100)
    size: Size = "cpu-small"
    replicas: int = Field(default=1, ge=1, le=100)
    target: str | None = None
    allow_schema_change: bool = False


class FailConfig(SpecModel):
    """Settings of a ``fail`` step."""

    message: str = Field(min_length=1)


StepKind = Literal["python", "container", "register_model", "deploy", "fail"]


class StepIR(SpecModel):
    """One step. Exactly the block named by ``kind`` is set (``python``, ``container``, ...)."""

    name: str
    kind: StepKind
    hash: str = ""
    inputs: dict[str, InputIR] = Field(default_factory=dict)
    outputs: dict[str, OutputIR] = Field(default_factory=dict)
    metrics: tuple[str, ...] | None = None
    after: tuple[str, ...] = ()
    when: tuple[WhenIR, ...] = ()
    resources: ResourcesIR = Field(default_factory=ResourcesIR)
    retries: int = Field(default=0, ge=0, le=20)
    retry_delay: float = Field(default=1.0, ge=0, le=3600)
    timeout: float | None = Field(default=None, gt=0)
    cache: bool = True
    env: dict[str, str] = Field(default_factory=dict)
    secrets: dict[str, str] = Field(default_factory=dict)
    python: PythonCode | None = None
    container: ContainerIR | None = None
    register_model: RegisterModelConfig | None = None
    deploy: DeployConfig | None = None
    fail: FailConfig | None = None

    @model_validator(mode="after")
    def _kind_block(self) -> StepIR:
        blocks = {
            k: getattr(self, k) is not None
            for k in ("python", "container", "register_model", "deploy", "fail")
        }
        if not blocks[self.kind] or sum(blocks.values()) != 1:
            raise ValueError(f"a {self.kind} step sets the {self.kind!r} block and no other kind's block")
        return self

    def content_hash(self) -> str:
        """``sha256:`` over the step's definition, minus the machine-specific source location."""
        data = self.model_dump(mode="json", exclude={"hash"})
        if data.get("python"):
            data["python"] = {k: v for k, v in data["python"].items() if k not in ("file", "root")}
        return "sha256:" + hashlib.sha256(canonical_json(data)).hexdigest()


class EdgeIR(SpecModel):
    """``source`` must finish before ``target``: it feeds it (``data``), is named in its
    ``after`` (``order``), or is measured by one of its conditions (``condition``)."""

    source: str
    target: str
    kind: Literal["data", "order", "condition"]


class ScheduleIR(SpecModel):
    """When the pipeline runs by itself."""

    cron: str
    timezone: str = "UTC"


class PipelineIR(SpecModel):
    """A whole pipeline. Steps are in dependency order.

    Raises:
        ConfigError: on load, for anything the DSL refuses at definition (naming the step and
            field) and for a step whose ``hash`` does not match its content.
    """

    format: Literal["mlshift.pipeline/v1"] = IR_FORMAT
    name: str
    description: str | None = None
    params: tuple[ParamIR, ...] = ()
    steps: tuple[StepIR, ...] = Field(min_length=1)
    conditions: tuple[ConditionIR, ...] = ()
    edges: tuple[EdgeIR, ...] = ()
    schedule: ScheduleIR | None = None
    hash: str = ""

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Self:
        """Validate data (e.g. loaded JSON) and check the graph as the DSL would.

        Raises:
            ConfigError: naming the step and field.
        """
        ir = super().model_validate(obj, *args, **kwargs)
        if not (kwargs.get("context") or {}).get("prevalidated"):
            ir.check()
        return ir

    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray, *args: Any, **kwargs: Any) -> Self:
        """Validate IR JSON and check the graph as the DSL would.

        Raises:
            ConfigError: naming the step and field.
        """
        ir = super().model_validate_json(json_data, *args, **kwargs)
        if not (kwargs.get("context") or {}).get("prevalidated"):
            ir.check()
        return ir

    def check(self) -> None:
        """The definition-time rules, and that every hash matches its content.

        Raises:
            ConfigError: naming the step and field.
        """
        check_graph(self)
        for s in self.steps:
            if s.hash and s.hash != s.content_hash():
                raise ConfigError(
                    f"pipeline {self.name!r}: step {s.name!r}: hash does not match the step's content "
                    "(was the IR edited by hand?)",
                    field=f"steps.{s.name}.hash",
                    hint="compile the pipeline again instead of editing its IR",
                )
        if self.hash and self.hash != self.content_hash():
            raise ConfigError(f"pipeline {self.name!r}: hash does not match its content", field="hash")

    def content_hash(self) -> str:
        """``sha256:`` over parameters, conditions, schedule and the step hashes."""
        data = {
            "name": self.name,
            "params": [p.model_dump(mode="json") for p in self.params],
            "conditions": [c.model_dump(mode="json") for c in self.conditions],
            "schedule": self.schedule.model_dump(mode="json") if self.schedule else None,
            "steps": [s.hash or s.content_hash() for s in self.steps],
        }
        return "sha256:" + hashlib.sha256(canonical_json(data)).hexdigest()

    def step(self, name: str) -> StepIR:
        """The step called ``name``.

        Raises:
            KeyError: if there is none.
        """
        for s in self.steps:
            if s.name == name:
                return s
        raise KeyError(name)

    def condition(self, condition_id: str) -> ConditionIR:
        """The condition with this id."""
        for c in self.conditions:
            if c.id == condition_id:
                return c
        raise KeyError(condition_id)

    def resolve_params(self, given: Mapping[str, Any] | None, *, from_text: bool = False) -> dict[str, Any]:
        """Check run parameters against the declarations and fill in defaults.

        Args:
            given: Name → value. With ``from_text``, values are strings (``--param c=0.5``) and
                are converted to the declared type.

        Raises:
            ConfigError: an unknown or missing parameter, or a value of the wrong type.
        """
        declared = {p.name: p for p in self.params}
        values = dict(given or {})
        unknown = sorted(set(values) - set(declared))
        if unknown:
            known = ", ".join(declared) or "none"
            raise ConfigError(
                f"pipeline {self.name!r} has no parameter {unknown[0]!r} (its parameters: {known})",
                field=f"params.{unknown[0]}",
            )
        out: dict[str, Any] = {}
        for name, p in declared.items():
            field = f"params.{name}"
            if name not in values:
                if p.required:
                    raise ConfigError(
                        f"pipeline {self.name!r}: parameter {name!r} ({p.type}) is required", field=field
                    )
                out[name] = p.default
                continue
            value = values[name]
            if from_text and isinstance(value, str):
                value = _from_text(
                    p.type, value, field=field, where=f"pipeline {self.name!r}: parameter {name!r}"
                )
            out[name] = coerce_literal(
                p.type, value, field=field, where=f"pipeline {self.name!r}: parameter {name!r}"
            )
        return out


def _from_text(kind: ScalarType, text: str, *, field: str, where: str) -> Any:
    try:
        if kind == "int":
            return int(text)
        if kind == "float":
            return float(text)
    except ValueError:
        raise ConfigError(f"{where}: expects {kind}, got {text!r}", field=field) from None
    if kind == "bool":
        lowered = text.strip().lower()
        if lowered in ("true", "1", "yes", "on"):
            return True
        if lowered in ("false", "0", "no", "off"):
            return False
        raise ConfigError(f"{where}: expects true or false, got {text!r}", field=field)
    return text


def check_graph(ir: PipelineIR) -> None:
    """The DSL's definition-time rules, for IR that did not come from the DSL (loaded JSON).

    Raises:
        ConfigError: naming the step and field.
    """
    where = f"pipeline {ir.name!r}"
    params = {p.name: p for p in ir.params}
    steps: dict[str, StepIR] = {}
    for s in ir.steps:
        if s.name in steps:
            raise ConfigError(f"{where}: two steps are named {s.name!r}", field=f"steps.{s.name}")
        steps[s.name] = s
    conditions = {c.id: c for c in ir.conditions}
    if len(conditions) != len(ir.conditions):
        raise ConfigError(f"{where}: two conditions share an id", field="conditions")

    def source_type(step_name: str, field: str, *, output: str | None, metric: str | None) -> ValueType:
        src = steps.get(step_name)
        if src is None:
            raise ConfigError(
                f"{where}: {field} comes from step {step_name!r}, which is not in the pipeline", field=field
            )
        if metric is not None:
            if src.metrics is None or metric not in src.metrics:
                declared = ", ".join(src.metrics or ()) or "none"
                raise ConfigError(
                    f"{where}: step {step_name!r} produces no metric {metric!r} (it declares: {declared})",
                    field=f"steps.{step_name}.metrics.{metric}",
                )
            return "float"
        if output is None:
            if src.metrics is None:
                raise ConfigError(
                    f"{where}: step {step_name!r} produces no metrics", field=f"steps.{step_name}.metrics"
                )
            return "metrics"
        if output not in src.outputs:
            raise ConfigError(
                f"{where}: step {step_name!r} has no output {output!r}",
                field=f"steps.{step_name}.outputs.{output}",
            )
        return src.outputs[output].type

    deps: dict[str, set[str]] = {}
    edges: set[tuple[str, str, str]] = set()
    for s in ir.steps:
        mine: set[str] = set()
        for key, inp in s.inputs.items():
            field = f"steps.{s.name}.inputs.{key}"
            if inp.param is not None:
                if inp.param not in params:
                    raise ConfigError(
                        f"{where}: step {s.name!r} uses undeclared parameter {inp.param!r}", field=field
                    )
                actual: ValueType = params[inp.param].type
            elif inp.step is not None:
                actual = source_type(inp.step, field, output=inp.output, metric=inp.metric)
                mine.add(inp.step)
                edges.add((inp.step, s.name, "data"))
            else:
                coerce_literal(
                    inp.type, inp.value, field=field, where=f"{where}: step {s.name!r}: input {key!r}"
                )
                continue
            if not accepts(inp.type, actual):
                raise ConfigError(
                    f"{where}: step {s.name!r}: input {key!r} expects {inp.type}, "
                    f"but its source is a {actual}",
                    field=field,
                )
        for other in s.after:
            if other not in steps:
                raise ConfigError(
                    f"{where}: step {s.name!r} runs after {other!r}, which is not in the pipeline",
                    field=f"steps.{s.name}.after",
                )
            mine.add(other)
            edges.add((other, s.name, "order"))
        for w in s.when:
            cond = conditions.get(w.condition)
            if cond is None:
                raise ConfigError(
                    f"{where}: step {s.name!r} is gated on unknown condition {w.condition!r}",
                    field=f"steps.{s.name}.when",
                )
            for operand in (cond.left, cond.right):
                if operand.step is not None:
                    source_type(
                        operand.step, f"conditions.{cond.id}", output=operand.output, metric=operand.metric
                    )
                    mine.add(operand.step)
                    edges.add((operand.step, s.name, "condition"))
                elif operand.param is not None and operand.param not in params:
                    raise ConfigError(
                        f"{where}: condition {cond.id!r} uses undeclared parameter {operand.param!r}",
                        field=f"conditions.{cond.id}",
                    )
        deps[s.name] = mine
    declared_edges: set[tuple[str, str, str]] = {(e.source, e.target, e.kind) for e in ir.edges}
    if declared_edges != edges:
        extra = sorted(declared_edges - edges) or sorted(edges - declared_edges)
        raise ConfigError(
            f"{where}: edges do not match the steps' inputs, after and conditions (e.g. {extra[0]})",
            field="edges",
        )
    # Cycles, with Kahn's algorithm.
    indegree = {n: len(d) for n, d in deps.items()}
    dependents: dict[str, list[str]] = {n: [] for n in deps}
    for n, d in deps.items():
        for other in d:
            dependents[other].append(n)
    ready = deque(n for n, k in indegree.items() if k == 0)
    done = 0
    while ready:
        n = ready.popleft()
        done += 1
        for nxt in dependents[n]:
            indegree[nxt] -= 1
            if indegree[nxt] == 0:
                ready.append(nxt)
    if done != len(deps):
        stuck = sorted(n for n, k in indegree.items() if k > 0)
        raise ConfigError(
            f"{where}: steps form a cycle among {', '.join(stuck)}", field=f"steps.{stuck[0]}.after"
        )


def build_ir(data: Mapping[str, Any], *, prevalidated: bool = False) -> PipelineIR:
    """Validate IR data and fill in the step and pipeline hashes.

    Raises:
        ConfigError: naming the field.
    """
    ir = PipelineIR.model_validate(data, context={"prevalidated": True})
    steps = tuple(s.model_copy(update={"hash": s.content_hash()}) for s in ir.steps)
    ir = ir.model_copy(update={"steps": steps})
    ir = ir.model_copy(update={"hash": ir.content_hash()})
    if not prevalidated:
        ir.check()
    return ir
