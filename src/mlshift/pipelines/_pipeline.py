"""``Pipeline`` and ``@pipeline``: a named graph of steps, checked as a whole when it is defined.

Building a :class:`Pipeline` checks the graph (duplicate names, references to steps or
parameters outside it, cycles) in one linear pass and stops at the first error, naming the step
and the field. The pydantic IR is made only when asked for (:attr:`Pipeline.ir`), once: a step
process imports the pipeline's module too, and needs none of it.
"""

from __future__ import annotations

import inspect
import typing
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, overload

from mlshift.errors import ConfigError
from mlshift.pipelines._dsl import (
    _MISSING,
    Condition,
    Gate,
    MetricRef,
    MetricsRef,
    Operand,
    OutputRef,
    Param,
    StepCall,
    collecting_steps,
)
from mlshift.pipelines._types import (
    SCALAR_TYPES,
    ValueType,
    accepts,
    check_identifier,
    check_step_name,
    coerce_literal,
    type_of_value,
)

if TYPE_CHECKING:
    from mlshift.pipelines._cron import CronSchedule
    from mlshift.pipelines._ir import PipelineIR

__all__ = ["ParamSpec", "Pipeline", "pipeline"]


class ParamSpec:
    """A declared pipeline parameter: its type and, unless it is required, its default."""

    __slots__ = ("default", "name", "type")

    def __init__(self, name: str, type: ValueType, default: Any = _MISSING) -> None:
        self.name = name
        self.type = type
        self.default = default

    @property
    def required(self) -> bool:
        return self.default is _MISSING

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "type": self.type,
            "default": None if self.required else self.default,
            "required": self.required,
        }


def _param_specs(params: Mapping[str, Any] | None, where: str) -> dict[str, ParamSpec]:
    out: dict[str, ParamSpec] = {}
    for name, value in (params or {}).items():
        field = f"params.{name}"
        check_identifier(name, field=field, what="parameter")
        if isinstance(value, ParamSpec):
            out[name] = value
        elif isinstance(value, type) and value in SCALAR_TYPES:
            out[name] = ParamSpec(name, SCALAR_TYPES[value])
        else:
            kind = type_of_value(value)
            if kind is None:
                raise ConfigError(
                    f"{where}: parameter {name!r} must have a str/int/float/bool default or be one of "
                    f"those types, got {value!r}",
                    field=field,
                )
            out[name] = ParamSpec(name, kind, value)
    return out


class _Graph:
    """What validation learns about a pipeline, kept to build the IR later."""

    __slots__ = ("deps", "gate_ids", "gates", "input_types", "order")

    def __init__(self) -> None:
        self.order: list[StepCall] = []
        self.deps: dict[int, list[tuple[StepCall, str]]] = {}
        self.gate_ids: dict[int, str] = {}
        self.gates: list[Gate] = []
        self.input_types: dict[int, dict[str, ValueType]] = {}


class Pipeline:
    """A named DAG of steps with parameters, conditions and an optional schedule.

    ::

        c = Param("c", float)
        prep = prepare()
        fit = train(data=prep.outputs["data"], c=c)
        training = Pipeline("training", params={"c": 1.0}, steps=[prep, fit])

    or the same with :func:`pipeline` on a function that wires the steps.

    Attributes:
        name: Letters, digits and ``-``.
        params: Parameter name → declaration.
        steps: The steps, in dependency order.
        schedule: The cron expression, if the pipeline runs on a schedule.

    Raises:
        ConfigError: naming the step and field: duplicate step names, a reference to a step
            or parameter that is not part of the pipeline, a type mismatch, a cycle, a bad
            schedule.
    """

    def __init__(
        self,
        name: str,
        *,
        steps: Sequence[StepCall],
        params: Mapping[str, Any] | None = None,
        schedule: str | None = None,
        timezone: str = "UTC",
        description: str | None = None,
    ) -> None:
        self.name = check_step_name(name, field="name", what="pipeline")
        self.description = description
        self.params = _param_specs(params, f"pipeline {name!r}")
        self.schedule = schedule
        self.timezone = timezone
        self.cron: CronSchedule | None = None
        if schedule is not None:
            from mlshift.pipelines._cron import parse_cron

            try:
                self.cron = parse_cron(schedule, timezone)
            except ConfigError as exc:
                raise ConfigError(
                    f"pipeline {name!r}: {exc.message}", field=exc.field, hint=exc.hint
                ) from None
        if isinstance(steps, StepCall) or not all(isinstance(s, StepCall) for s in steps):
            raise ConfigError(f"pipeline {name!r}: steps must be a list of steps", field="steps")
        if not steps:
            raise ConfigError(f"pipeline {name!r} has no steps", field="steps")
        self._graph = self._validate(list(steps))
        self.steps: tuple[StepCall, ...] = tuple(self._graph.order)
        self._ir: PipelineIR | None = None

    # ---------------------------------------------------------------------------- validation

    def _dangling(self, call: StepCall, field: str, what: str, other: StepCall) -> ConfigError:
        return ConfigError(
            f"pipeline {self.name!r}: step {call.name!r}: {what} comes from step {other.name!r}, "
            "which is not part of the pipeline",
            field=field,
            hint="add that step to steps=[...], or create it inside the @pipeline function",
        )

    def _check_param(self, call: StepCall, field: str, ref: Param, expected: ValueType | None) -> ValueType:
        spec = self.params.get(ref.name)
        if spec is None:
            known = ", ".join(self.params) or "none"
            raise ConfigError(
                f"pipeline {self.name!r}: step {call.name!r} uses parameter {ref.name!r}, which the "
                f"pipeline does not declare (its parameters: {known})",
                field=field,
            )
        if expected is not None and not accepts(expected, spec.type):
            raise ConfigError(
                f"pipeline {self.name!r}: step {call.name!r}: {field.rsplit('.', 1)[-1]!r} expects "
                f"{expected}, but parameter {ref.name!r} is a {spec.type}",
                field=field,
            )
        return spec.type

    def _validate(self, calls: list[StepCall]) -> _Graph:
        graph = _Graph()
        members: dict[int, StepCall] = {}
        by_name: dict[str, StepCall] = {}
        for call in calls:
            if call.name in by_name:
                if by_name[call.name] is call:
                    continue  # listed twice: the same step
                raise ConfigError(
                    f"pipeline {self.name!r}: two steps are named {call.name!r}",
                    field=f"steps.{call.name}",
                    hint=f"give one another name, e.g. fn.options(name='{call.name}-2')(...) or name=...",
                )
            by_name[call.name] = call
            members[id(call)] = call
        gate_names: dict[str, Gate] = {}
        for call in members.values():
            deps: list[tuple[StepCall, str]] = []
            types: dict[str, ValueType] = {}
            for key, value in call.bindings.items():
                field = f"steps.{call.name}.inputs.{key}"
                expected = call.input_types[key]
                if isinstance(value, Param):
                    declared = self._check_param(call, field, value, expected)
                    types[key] = expected or declared
                    continue
                if isinstance(value, (OutputRef, MetricRef, MetricsRef)):
                    if id(value.call) not in members:
                        raise self._dangling(call, field, f"input {key!r}", value.call)
                    deps.append((value.call, "data"))
                assert expected is not None  # literals set their type when bound
                types[key] = expected
            for other in call.upstream:
                if id(other) not in members:
                    raise self._dangling(call, f"steps.{call.name}.after", "an after() dependency", other)
                deps.append((other, "order"))
            for gate, _branch in call.gates:
                field = f"steps.{call.name}.when"
                if id(gate) not in graph.gate_ids:
                    gate_id = gate.name or f"condition-{len(graph.gates) + 1}"
                    if gate_id in gate_names:
                        raise ConfigError(
                            f"pipeline {self.name!r}: two conditions are named {gate_id!r}", field=field
                        )
                    gate_names[gate_id] = gate
                    graph.gate_ids[id(gate)] = gate_id
                    graph.gates.append(gate)
                cond = gate.condition
                for operand in (cond.left, cond.right):
                    if isinstance(operand, Param):
                        self._check_param(call, field, operand, None)
                        self._check_condition_types(call, cond, field)
                    elif isinstance(operand, (OutputRef, MetricRef)):
                        if id(operand.call) not in members:
                            raise self._dangling(call, field, f"condition {cond.describe()!r}", operand.call)
                        deps.append((operand.call, "condition"))
            graph.deps[id(call)] = deps
            graph.input_types[id(call)] = types
        graph.order = self._toposort(list(members.values()), graph.deps)
        return graph

    def _check_condition_types(self, call: StepCall, cond: Condition, field: str) -> None:
        """Conditions on untyped ``Param("x")`` get their type from the pipeline's declaration."""

        def kind(operand: Any) -> ValueType | None:
            if isinstance(operand, Param):
                spec = self.params.get(operand.name)
                return spec.type if spec is not None else None
            if isinstance(operand, Operand):
                return operand.value_type
            return type_of_value(operand)

        left, right = kind(cond.left), kind(cond.right)
        numeric = {"int", "float"}
        if left is None or right is None:
            return
        if not ((left in numeric and right in numeric) or left == right) or (
            cond.op not in ("==", "!=") and left not in numeric
        ):
            raise ConfigError(
                f"pipeline {self.name!r}: step {call.name!r}: condition {cond.describe()!r} compares "
                f"a {left} with a {right} using {cond.op}",
                field=field,
            )

    def _toposort(self, calls: list[StepCall], deps: dict[int, list[tuple[StepCall, str]]]) -> list[StepCall]:
        """Kahn's algorithm, stable in definition order; on a cycle, name the steps in it."""
        indegree = {id(c): 0 for c in calls}
        dependents: dict[int, list[StepCall]] = {id(c): [] for c in calls}
        for call in calls:
            seen: set[int] = set()
            for other, _kind in deps[id(call)]:
                if id(other) not in seen:
                    seen.add(id(other))
                    indegree[id(call)] += 1
                    dependents[id(other)].append(call)
        ready = deque(c for c in calls if indegree[id(c)] == 0)
        order: list[StepCall] = []
        while ready:
            call = ready.popleft()
            order.append(call)
            for nxt in dependents[id(call)]:
                indegree[id(nxt)] -= 1
                if indegree[id(nxt)] == 0:
                    ready.append(nxt)
        if len(order) == len(calls):
            return order
        # Walk dependencies among the steps left over until one repeats: that is a cycle.
        left = {id(c): c for c in calls if indegree[id(c)] > 0}
        call = next(iter(left.values()))
        path: list[StepCall] = []
        index: dict[int, int] = {}
        while id(call) not in index:
            index[id(call)] = len(path)
            path.append(call)
            call = next(o for o, _ in deps[id(call)] if id(o) in left)
        cycle = [*path[index[id(call)] :], call]
        names = " → ".join(c.name for c in reversed(cycle))
        first = cycle[-1]
        raise ConfigError(
            f"pipeline {self.name!r}: steps form a cycle: {names}",
            field=f"steps.{first.name}.after",
            hint="a step cannot depend, directly or through others, on itself",
        )

    # ---------------------------------------------------------------------------- IR

    @property
    def ir(self) -> PipelineIR:
        """The pipeline's IR (built once, on first use)."""
        if self._ir is None:
            from mlshift.pipelines._ir import build_ir

            self._ir = build_ir(self.to_dict(), prevalidated=True)
        return self._ir

    def to_dict(self) -> dict[str, Any]:
        """The IR as plain JSON-ready data (without step hashes; :attr:`ir` adds them)."""
        graph = self._graph
        steps = [_step_dict(call, graph) for call in graph.order]
        conditions = [
            {
                "id": graph.gate_ids[id(gate)],
                "left": _operand_dict(gate.condition.left, self.params),
                "op": gate.condition.op,
                "right": _operand_dict(gate.condition.right, self.params),
            }
            for gate in graph.gates
        ]
        edges: list[dict[str, str]] = []
        for call in graph.order:
            seen: set[tuple[str, str]] = set()
            for other, kind in graph.deps[id(call)]:
                if (other.name, kind) not in seen:
                    seen.add((other.name, kind))
                    edges.append({"source": other.name, "target": call.name, "kind": kind})
        return {
            "format": "mlshift.pipeline/v1",
            "name": self.name,
            "description": self.description,
            "params": [p.to_json() for p in self.params.values()],
            "steps": steps,
            "conditions": conditions,
            "edges": edges,
            "schedule": {"cron": self.schedule, "timezone": self.timezone} if self.schedule else None,
            "hash": "",
        }

    def to_json(self, indent: int | None = 2) -> str:
        """The IR as JSON text (what ``mlshift pipelines compile --target local`` writes)."""
        return self.ir.model_dump_json(indent=indent, exclude_none=True)

    def __getitem__(self, name: str) -> StepCall:
        for call in self.steps:
            if call.name == name:
                return call
        raise KeyError(name)

    def __repr__(self) -> str:
        return f"<Pipeline {self.name!r}: {len(self.steps)} steps>"


def _source_dict(value: Any) -> dict[str, Any]:
    if isinstance(value, Param):
        return {"param": value.name}
    if isinstance(value, OutputRef):
        return {"step": value.call.name, "output": value.output}
    if isinstance(value, MetricRef):
        return {"step": value.call.name, "metric": value.metric}
    if isinstance(value, MetricsRef):
        return {"step": value.call.name}
    return {"value": value}


def _operand_dict(value: Any, params: Mapping[str, ParamSpec]) -> dict[str, Any]:
    if isinstance(value, Param):
        kind: ValueType | None = params[value.name].type
    elif isinstance(value, Operand):
        kind = value.value_type
    else:
        kind = type_of_value(value)
    return {"type": kind, **_source_dict(value)}


def _step_dict(call: StepCall, graph: _Graph) -> dict[str, Any]:
    types = graph.input_types[id(call)]
    options = call.settings
    data: dict[str, Any] = {
        "name": call.name,
        "kind": call.kind,
        "hash": "",
        "inputs": {k: {"type": types[k], **_source_dict(v)} for k, v in call.bindings.items()},
        "outputs": {k: {"type": t} for k, t in call.output_types.items()},
        "metrics": list(call.metric_names) if call.metric_names is not None else None,
        "after": [o.name for o in call.upstream],
        "when": [{"condition": graph.gate_ids[id(g)], "branch": b} for g, b in call.gates],
        "resources": options.resources.to_json(),
        "retries": options.retries,
        "retry_delay": options.retry_delay,
        "timeout": options.timeout,
        "cache": options.cache,
        "env": dict(options.env),
        "secrets": dict(options.secrets),
    }
    if call.function is not None:
        data["python"] = {**call.function.location.to_json(), "code_digest": call.function.code_digest}
    if call.container is not None:
        data["container"] = call.container
    if call.config is not None:
        data[call.kind] = call.config
    return data


@overload
def pipeline(fn: Callable[..., Any], /) -> Pipeline: ...


@overload
def pipeline(
    *,
    name: str | None = None,
    schedule: str | None = None,
    timezone: str = "UTC",
    description: str | None = None,
) -> Callable[[Callable[..., Any]], Pipeline]: ...


def pipeline(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    schedule: str | None = None,
    timezone: str = "UTC",
    description: str | None = None,
) -> Pipeline | Callable[[Callable[..., Any]], Pipeline]:
    """Define a pipeline with a function that wires steps together; it becomes a :class:`Pipeline`.

    The function runs once, right away, with a :class:`Param` for each of its arguments; the
    steps it calls become the pipeline. Its arguments are the pipeline's parameters, typed by
    their annotations (or defaults); an argument without a default is required at run time.

    Args:
        name: The pipeline's name (default: the function's, ``_`` → ``-``).
        schedule: A cron expression (``"0 3 * * *"``), validated now.
        timezone: The IANA zone the schedule is read in.
        description: Default: the function's docstring, first line.

    Raises:
        ConfigError: naming the step and field, for anything :class:`Pipeline` refuses.
    """

    def build(func: Callable[..., Any]) -> Pipeline:
        pname = check_step_name(name or func.__name__.replace("_", "-"), field="name", what="pipeline")
        try:
            hints = typing.get_type_hints(func)
        except Exception as exc:
            raise ConfigError(
                f"pipeline {pname!r}: cannot read its type hints: {exc}", field="params"
            ) from None
        specs: dict[str, ParamSpec] = {}
        refs: dict[str, Param] = {}
        for param in inspect.signature(func).parameters.values():
            field = f"params.{param.name}"
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise ConfigError(f"pipeline {pname!r}: *args and **kwargs cannot be parameters", field=field)
            annotation = hints.get(param.name)
            if annotation is not None:
                kind = SCALAR_TYPES.get(annotation) if isinstance(annotation, type) else None
            else:
                kind = type_of_value(param.default) if param.default is not param.empty else None
            if kind is None:
                raise ConfigError(
                    f"pipeline {pname!r}: parameter {param.name!r} must be annotated str, int, float or bool "
                    "(or have a default of one of those types)",
                    field=field,
                )
            default = _MISSING
            if param.default is not param.empty:
                default = coerce_literal(
                    kind, param.default, field=field, where=f"pipeline {pname!r}: default of {param.name!r}"
                )
            specs[param.name] = ParamSpec(param.name, kind, default)
            refs[param.name] = Param(param.name, kind)
        with collecting_steps() as steps:
            func(**refs)
        doc = inspect.getdoc(func)
        return Pipeline(
            pname,
            steps=steps,
            params=specs,
            schedule=schedule,
            timezone=timezone,
            description=description or (doc.splitlines()[0] if doc else None),
        )

    return build(fn) if fn is not None else build
