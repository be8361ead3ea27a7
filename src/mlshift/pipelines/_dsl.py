"""The pipeline DSL: ``@step``, ``ContainerStep``, built-in steps, references and ``when`` gates.

Calling a step does not run it: it records a :class:`StepCall`, a node of the graph, whose
``outputs``/``output``/``metrics`` are references that later steps take as inputs. Every check
that can be made on one call (unknown input, wrong type, missing input, unknown output or
metric) is made right there, so the error points at the line that is wrong; checks that need
the whole graph (duplicate names, dangling references, cycles) run when the
:class:`~mlshift.pipelines.Pipeline` is built.

Nothing here imports pydantic: the step worker imports the user's module, and with it this
one, for every step it runs.
"""

from __future__ import annotations

import inspect
import re
import threading
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any, Literal, overload

from mlshift.errors import ConfigError
from mlshift.pipelines._types import (
    SCALAR_TYPES,
    ValueType,
    accepts,
    check_env_name,
    check_identifier,
    check_metric_name,
    check_step_name,
    coerce_literal,
    type_of_annotation,
    type_of_value,
)

__all__ = [
    "ContainerStep",
    "Deploy",
    "Fail",
    "Gate",
    "MetricRef",
    "MetricsRef",
    "OutputRef",
    "Param",
    "RegisterModel",
    "Resources",
    "StepCall",
    "StepFunction",
    "step",
    "when",
]

#: Neutral sizes, as in :data:`mlshift.specs.endpoint.SIZES` (repeated so that the step worker
#: needs no pydantic; a test keeps the two equal).
SIZES = ("cpu-small", "cpu-medium", "cpu-large", "gpu-small", "gpu-medium", "gpu-large")

StepKind = Literal["python", "container", "register_model", "deploy", "fail"]
CompareOp = Literal[">=", ">", "<=", "<", "==", "!="]
_MISSING: Any = object()

# Env var names that hold credentials: those go in ``secrets=`` so their values never land in the
# IR, the logs or a cloud's pipeline definition. Matched on ``_``-separated words so that
# TOKENIZERS_PARALLELISM is not taken for a token.
_SECRET_WORDS = {"TOKEN", "SECRET", "PASSWORD", "PASSWD", "APIKEY", "CREDENTIALS", "CREDENTIAL"}
_SECRET_SUFFIXES = ("_API_KEY", "_ACCESS_KEY", "_PRIVATE_KEY", "_SECRET_KEY")
_SECRET_REF = re.compile(r"[A-Za-z0-9][A-Za-z0-9_./:-]{0,255}")


# --------------------------------------------------------------------------------------------
# The definition context: which pipeline function is collecting steps, which gates are open


class _Context(threading.local):
    def __init__(self) -> None:
        self.collecting: list[StepCall] | None = None
        self.gates: tuple[tuple[Gate, bool], ...] = ()


_CONTEXT = _Context()


@contextmanager
def collecting_steps() -> Iterator[list[StepCall]]:
    """Collect every step created inside the block (what ``@pipeline`` does with its function)."""
    outer, outer_gates = _CONTEXT.collecting, _CONTEXT.gates
    steps: list[StepCall] = []
    _CONTEXT.collecting, _CONTEXT.gates = steps, ()
    try:
        yield steps
    finally:
        _CONTEXT.collecting, _CONTEXT.gates = outer, outer_gates


# --------------------------------------------------------------------------------------------
# Resources and per-step options


@dataclass(frozen=True)
class Resources:
    """What a step needs to run: a neutral size and a GPU count.

    Each target maps the size to its own machine type, as for endpoints. The local runner runs
    every step on this machine and reserves nothing; it only bounds how many run at once.

    Attributes:
        size: ``cpu-small`` … ``gpu-large``.
        gpus: GPUs per step; a ``gpu-*`` size implies at least one.
    """

    size: str = "cpu-small"
    gpus: int = 0

    def __post_init__(self) -> None:
        if self.size not in SIZES:
            raise ConfigError(
                f"unknown size {self.size!r}; expected one of {', '.join(SIZES)}", field="resources.size"
            )
        if isinstance(self.gpus, bool) or not isinstance(self.gpus, int) or not 0 <= self.gpus <= 16:
            raise ConfigError(
                f"gpus must be a whole number from 0 to 16, got {self.gpus!r}", field="resources.gpus"
            )
        if self.gpus and not self.size.startswith("gpu-"):
            raise ConfigError(
                f"gpus={self.gpus} needs a gpu-* size, not {self.size!r}", field="resources.gpus"
            )

    def to_json(self) -> dict[str, Any]:
        return {"size": self.size, "gpus": self.gpus or (1 if self.size.startswith("gpu-") else 0)}


@dataclass(frozen=True)
class StepOptions:
    """Per-step settings that do not change what a step computes (so not its cache key)."""

    resources: Resources = field(default_factory=Resources)
    retries: int = 0
    retry_delay: float = 1.0
    timeout: float | None = None
    cache: bool = True
    env: Mapping[str, str] = field(default_factory=dict)
    secrets: Mapping[str, str] = field(default_factory=dict)


def _check_options(options: StepOptions, where: str, prefix: str) -> StepOptions:
    """Validate options; ``prefix`` is the field path of the step (``steps.train``)."""
    if (
        isinstance(options.retries, bool)
        or not isinstance(options.retries, int)
        or not 0 <= options.retries <= 20
    ):
        raise ConfigError(
            f"{where}: retries must be 0-20, got {options.retries!r}", field=f"{prefix}.retries"
        )
    if not isinstance(options.retry_delay, (int, float)) or not 0 <= options.retry_delay <= 3600:
        raise ConfigError(
            f"{where}: retry_delay must be 0-3600 seconds, got {options.retry_delay!r}",
            field=f"{prefix}.retry_delay",
        )
    if options.timeout is not None and (
        isinstance(options.timeout, bool)
        or not isinstance(options.timeout, (int, float))
        or options.timeout <= 0
    ):
        raise ConfigError(
            f"{where}: timeout must be a positive number of seconds, got {options.timeout!r}",
            field=f"{prefix}.timeout",
        )
    if not isinstance(options.cache, bool):
        raise ConfigError(f"{where}: cache must be True or False", field=f"{prefix}.cache")
    if not isinstance(options.resources, Resources):
        raise ConfigError(
            f"{where}: resources must be a Resources(size=..., gpus=...)", field=f"{prefix}.resources"
        )
    for key, value in options.env.items():
        check_env_name(key, field=f"{prefix}.env.{key}")
        if not isinstance(value, str):
            raise ConfigError(
                f"{where}: env {key} must be a string, got {type(value).__name__}",
                field=f"{prefix}.env.{key}",
            )
        words = set(key.upper().split("_"))
        if value and (words & _SECRET_WORDS or key.upper().endswith(_SECRET_SUFFIXES)):
            raise ConfigError(
                f"{where}: env {key} looks like a credential; values in env are written into the "
                "pipeline definition and its logs",
                field=f"{prefix}.env.{key}",
                hint=f"pass it by reference: secrets={{{key!r}: 'name-of-the-secret'}}",
            )
    for key, ref in options.secrets.items():
        check_env_name(key, field=f"{prefix}.secrets.{key}")
        if not isinstance(ref, str) or not _SECRET_REF.fullmatch(ref):
            raise ConfigError(
                f"{where}: secrets {key} must name a secret (letters, digits, '_', '-', '.', '/', ':'), "
                f"not hold its value",
                field=f"{prefix}.secrets.{key}",
            )
        if key in options.env:
            raise ConfigError(
                f"{where}: {key} is both in env and in secrets", field=f"{prefix}.secrets.{key}"
            )
    return replace(
        options,
        retry_delay=float(options.retry_delay),
        timeout=float(options.timeout) if options.timeout is not None else None,
        env=dict(options.env),
        secrets=dict(options.secrets),
    )


# --------------------------------------------------------------------------------------------
# References: values that exist only when the pipeline runs


class Operand:
    """Something a condition can compare: a pipeline parameter, a step output or a metric.

    Comparison operators build a :class:`Condition` for :func:`when`; asking a reference for
    its truth value is a mistake (its value exists only when the pipeline runs) and says so.
    """

    __slots__ = ()

    @property
    def value_type(self) -> ValueType | None:
        """The IR type of the value, when known at definition time."""
        raise NotImplementedError

    def describe(self) -> str:
        """How the reference reads in messages: ``evaluate.metrics['auc']``."""
        raise NotImplementedError

    def _compare(self, op: CompareOp, other: Any) -> Condition:
        return Condition(self, op, other)

    def __ge__(self, other: Any) -> Condition:
        return self._compare(">=", other)

    def __gt__(self, other: Any) -> Condition:
        return self._compare(">", other)

    def __le__(self, other: Any) -> Condition:
        return self._compare("<=", other)

    def __lt__(self, other: Any) -> Condition:
        return self._compare("<", other)

    def __eq__(self, other: Any) -> Condition:  # type: ignore[override]
        return self._compare("==", other)

    def __ne__(self, other: Any) -> Condition:  # type: ignore[override]
        return self._compare("!=", other)

    def __hash__(self) -> int:
        return id(self)

    def __bool__(self) -> bool:
        raise ConfigError(
            f"{self.describe()} has no value while the pipeline is being defined",
            hint="to run steps only when it holds, write `with when(<comparison>):` around them",
        )


class Param(Operand):
    """A pipeline parameter, as a step input or in a condition.

    ``@pipeline`` functions receive one per argument. In the ``Pipeline(...)`` form, write
    ``Param("c")`` where a step takes the pipeline's parameter ``c``.

    Attributes:
        name: The parameter's name.
        type: ``str``, ``int``, ``float`` or ``bool``, when known (checked against the pipeline).
    """

    __slots__ = ("name", "type")

    def __init__(self, name: str, type: type | ValueType | None = None) -> None:
        self.name = check_identifier(name, field=f"params.{name}", what="parameter")
        by_name = {v: v for v in SCALAR_TYPES.values()}
        if type is None:
            self.type: ValueType | None = None
        elif isinstance(type, str) and type in by_name:
            self.type = by_name[type]
        elif not isinstance(type, str) and type in SCALAR_TYPES:
            self.type = SCALAR_TYPES[type]
        else:
            raise ConfigError(
                f"parameter {name!r}: type must be str, int, float or bool, got {type!r}",
                field=f"params.{name}",
            )

    @property
    def value_type(self) -> ValueType | None:
        return self.type

    def describe(self) -> str:
        return self.name

    def __repr__(self) -> str:
        return f"Param({self.name!r})"


class OutputRef(Operand):
    """One output of a step: an artifact or a parameter value."""

    __slots__ = ("call", "output")

    def __init__(self, call: StepCall, output: str) -> None:
        self.call = call
        self.output = output

    @property
    def value_type(self) -> ValueType:
        return self.call.output_types[self.output]

    def describe(self) -> str:
        return f"{self.call.name}.outputs[{self.output!r}]"

    def __repr__(self) -> str:
        return f"<output {self.describe()}>"


class MetricRef(Operand):
    """One metric of a step (a float)."""

    __slots__ = ("call", "metric")

    def __init__(self, call: StepCall, metric: str) -> None:
        self.call = call
        self.metric = metric

    @property
    def value_type(self) -> ValueType:
        return "float"

    def describe(self) -> str:
        return f"{self.call.name}.metrics[{self.metric!r}]"

    def __repr__(self) -> str:
        return f"<metric {self.describe()}>"


class MetricsRef:
    """All metrics of a step: index it for one (``evaluate.metrics["auc"]``), or pass it whole."""

    __slots__ = ("call",)

    def __init__(self, call: StepCall) -> None:
        self.call = call

    def __getitem__(self, metric: str) -> MetricRef:
        call = self.call
        where = f"steps.{call.name}.metrics.{metric}"
        if call.metric_names is None:
            raise ConfigError(
                f"step {call.name!r} produces no metrics, so it has no metric {metric!r}",
                field=where,
                hint="a @step function that returns Metrics and declares @step(metrics=[...]) produces them",
            )
        if metric not in call.metric_names:
            declared = ", ".join(call.metric_names) or "none"
            raise ConfigError(
                f"step {call.name!r} produces no metric {metric!r} (it declares: {declared})",
                field=where,
                hint=f"declare it on the step: @step(metrics=[..., {metric!r}])",
            )
        return MetricRef(call, metric)

    def describe(self) -> str:
        return f"{self.call.name}.metrics"

    def __repr__(self) -> str:
        return f"<metrics of {self.call.name}>"


def _operand_type(value: Any) -> ValueType | None:
    return value.value_type if isinstance(value, Operand) else type_of_value(value)


def _describe(value: Any) -> str:
    return value.describe() if isinstance(value, Operand) else repr(value)


class Condition:
    """``left <op> right``, built by comparing a reference: ``evaluate.metrics["auc"] >= 0.85``."""

    __slots__ = ("left", "op", "right")

    def __init__(self, left: Operand, op: CompareOp, right: Any) -> None:
        if not isinstance(right, Operand) and type_of_value(right) is None:
            raise ConfigError(
                f"cannot compare {left.describe()} with {type(right).__name__} {right!r}; "
                "compare with a number, a string, a bool or a pipeline parameter",
                field="when",
            )
        left_type, right_type = _operand_type(left), _operand_type(right)
        if left_type is not None and right_type is not None:
            numeric = {"int", "float"}
            same_kind = (left_type in numeric and right_type in numeric) or left_type == right_type
            if not same_kind or left_type in ("artifact", "metrics"):
                raise ConfigError(
                    f"condition {left.describe()} {op} {_describe(right)} compares a {left_type} "
                    f"with a {right_type}",
                    field="when",
                )
            if op not in ("==", "!=") and left_type not in numeric:
                raise ConfigError(
                    f"condition {left.describe()} {op} {_describe(right)}: a {left_type} can only be "
                    "compared with == or !=",
                    field="when",
                )
        self.left, self.op, self.right = left, op, right

    def describe(self) -> str:
        """The condition as it reads in the pipeline's source."""
        return f"{self.left.describe()} {self.op} {_describe(self.right)}"

    def __bool__(self) -> bool:
        raise ConfigError(
            f"`{self.describe()}` is decided when the pipeline runs, not while it is defined",
            hint="write `with when(...):` around the steps it should control, not `if`",
        )

    def __repr__(self) -> str:
        return f"<condition {self.describe()}>"


class Gate:
    """A condition controlling steps: those created in ``with gate:`` run only when it holds,
    those in ``with gate.otherwise():`` only when it does not.

    Attributes:
        condition: The comparison.
        name: Its name in the IR and in messages (default ``condition-N``).
    """

    def __init__(self, condition: Condition, name: str | None = None) -> None:
        if not isinstance(condition, Condition):
            raise ConfigError(
                f"when() takes a comparison on a step's output, such as "
                f"when(evaluate.metrics['auc'] >= 0.85); got {type(condition).__name__} {condition!r}",
                field="when",
            )
        self.condition = condition
        self.name = check_step_name(name, field="when.name", what="condition") if name is not None else None

    def __enter__(self) -> Gate:
        _CONTEXT.gates = (*_CONTEXT.gates, (self, True))
        return self

    def __exit__(self, *exc: object) -> None:
        _CONTEXT.gates = _CONTEXT.gates[:-1]

    @contextmanager
    def otherwise(self) -> Iterator[Gate]:
        """The else branch: steps created inside run only when the condition is false."""
        _CONTEXT.gates = (*_CONTEXT.gates, (self, False))
        try:
            yield self
        finally:
            _CONTEXT.gates = _CONTEXT.gates[:-1]

    def __repr__(self) -> str:
        return f"<gate {self.name or ''} {self.condition.describe()}>"


def when(condition: Condition, *, name: str | None = None) -> Gate:
    """Gate steps on a comparison decided at run time.

    ::

        with when(evaluate.metrics["auc"] >= 0.85) as gate:
            version = RegisterModel(train.outputs["model"], model="churn")
        with gate.otherwise():
            Fail("AUC below the bar; nothing registered")

    Raises:
        ConfigError: if ``condition`` is not a comparison of a reference.
    """
    return Gate(condition, name)


# --------------------------------------------------------------------------------------------
# Steps


class StepCall:
    """One node of a pipeline: a step with its inputs bound.

    Attributes:
        name: Unique within the pipeline.
        kind: ``python``, ``container``, ``register_model``, ``deploy`` or ``fail``.
        input_types: Input name → IR type.
        bindings: Input name → a literal, a :class:`Param`, an :class:`OutputRef`, a
            :class:`MetricRef` or a :class:`MetricsRef`.
        output_types: Output name → IR type.
        metric_names: Declared metrics, or ``None`` if the step produces none.
    """

    def __init__(
        self,
        *,
        name: str,
        kind: StepKind,
        input_types: Mapping[str, ValueType | None],
        required: Sequence[str],
        bindings: Mapping[str, Any],
        output_types: Mapping[str, ValueType],
        metric_names: tuple[str, ...] | None,
        options: StepOptions,
        function: StepFunction | None = None,
        container: Mapping[str, Any] | None = None,
        config: Mapping[str, Any] | None = None,
    ) -> None:
        self.name = check_step_name(name, field=f"steps.{name}.name")
        self.kind: StepKind = kind
        self.input_types: dict[str, ValueType | None] = dict(input_types)
        self.output_types: dict[str, ValueType] = dict(output_types)
        self.metric_names = metric_names
        self.function = function
        self.container = dict(container) if container is not None else None
        self.config = dict(config) if config is not None else None
        self.settings = _check_options(options, f"step {self.name!r}", f"steps.{self.name}")
        self.bindings: dict[str, Any] = {}
        for key, value in bindings.items():
            self.bindings[key] = self._bind(key, value)
        missing = [k for k in required if k not in self.bindings]
        if missing:
            raise ConfigError(
                f"step {self.name!r}: input {missing[0]!r} is required and not given",
                field=f"steps.{self.name}.inputs.{missing[0]}",
            )
        self.gates: tuple[tuple[Gate, bool], ...] = _CONTEXT.gates
        self.upstream: list[StepCall] = []
        if _CONTEXT.collecting is not None:
            _CONTEXT.collecting.append(self)

    def _bind(self, key: str, value: Any) -> Any:
        where = f"step {self.name!r}: input {key!r}"
        field_path = f"steps.{self.name}.inputs.{key}"
        if key not in self.input_types:
            known = ", ".join(self.input_types) or "none"
            raise ConfigError(
                f"step {self.name!r} has no input {key!r} (its inputs: {known})", field=field_path
            )
        expected = self.input_types[key]
        if isinstance(value, StepCall):
            # `train(data=prepare)` for a step with exactly one output.
            if len(value.output_types) != 1:
                outs = ", ".join(value.output_types) or "none"
                raise ConfigError(
                    f"{where}: step {value.name!r} has {len(value.output_types)} outputs ({outs}); "
                    f"pick one with {value.name}.outputs[NAME]",
                    field=field_path,
                )
            value = value.output
        if isinstance(value, (Condition, Gate)):
            raise ConfigError(f"{where}: a condition is not a value; use it with when()", field=field_path)
        if isinstance(value, MetricsRef):
            actual: ValueType | None = "metrics"
        elif isinstance(value, Operand):
            actual = value.value_type
        else:
            if expected is None:
                actual = type_of_value(value)
                if actual is None:
                    raise ConfigError(
                        f"{where}: {type(value).__name__} is not a str, int, float or bool", field=field_path
                    )
                self.input_types[key] = actual
                return value
            if expected in ("artifact", "metrics"):
                source = (
                    "another step's output, e.g. prepare.outputs['data']"
                    if expected == "artifact"
                    else ("a step's metrics, e.g. evaluate.metrics")
                )
                raise ConfigError(
                    f"{where}: expects {expected}, got {type(value).__name__} {value!r}; pass {source}",
                    field=field_path,
                )
            return coerce_literal(expected, value, field=field_path, where=where)
        if expected is None:
            self.input_types[key] = actual
        elif actual is not None and not accepts(expected, actual):
            raise ConfigError(
                f"{where}: expects {expected}, but {_source_name(value)} is {_article(actual)}",
                field=field_path,
            )
        return value

    # -- references to what the step produces

    @property
    def outputs(self) -> _Outputs:
        """Output name → reference, for wiring into later steps."""
        return _Outputs(self)

    @property
    def output(self) -> OutputRef:
        """The step's only output.

        Raises:
            ConfigError: if the step has none or several.
        """
        if len(self.output_types) != 1:
            outs = ", ".join(self.output_types) or "none"
            raise ConfigError(
                f"step {self.name!r} has {len(self.output_types)} outputs ({outs}); use .outputs[NAME]",
                field=f"steps.{self.name}.outputs",
            )
        return OutputRef(self, next(iter(self.output_types)))

    @property
    def metrics(self) -> MetricsRef:
        """The step's metrics: ``step.metrics["auc"]`` for one, ``step.metrics`` for all."""
        return MetricsRef(self)

    def after(self, *steps: StepCall) -> StepCall:
        """Run this step only once ``steps`` have finished, though it takes nothing from them."""
        for other in steps:
            if not isinstance(other, StepCall):
                raise ConfigError(
                    f"step {self.name!r}: after() takes steps, got {type(other).__name__}",
                    field=f"steps.{self.name}.after",
                )
            self.upstream.append(other)
        return self

    def __repr__(self) -> str:
        return f"<{self.kind} step {self.name!r}>"


class _Outputs(Mapping[str, OutputRef]):
    def __init__(self, call: StepCall) -> None:
        self._call = call

    def __getitem__(self, name: str) -> OutputRef:
        call = self._call
        if name not in call.output_types:
            outs = ", ".join(call.output_types) or "none"
            raise ConfigError(
                f"step {call.name!r} has no output {name!r} (its outputs: {outs})",
                field=f"steps.{call.name}.outputs.{name}",
            )
        return OutputRef(call, name)

    def __iter__(self) -> Iterator[str]:
        return iter(self._call.output_types)

    def __len__(self) -> int:
        return len(self._call.output_types)


def _source_name(value: Any) -> str:
    if isinstance(value, Param):
        return f"pipeline parameter {value.name!r}"
    return str(value.describe())


def _article(kind: str) -> str:
    return f"an {kind}" if kind[0] in "aeiou" else f"a {kind}"


class StepFunction:
    """A Python function made into a step by :func:`step`. Calling it adds a step to the pipeline.

    Call ``.fn`` to run the plain function (in a unit test, say).

    Attributes:
        fn: The decorated function.
        name: The step's default name (the function's, with ``_`` turned into ``-``).
    """

    def __init__(
        self,
        fn: Callable[..., Any],
        *,
        name: str | None,
        metrics: Sequence[str] | None,
        options: StepOptions,
    ) -> None:
        from mlshift.pipelines._code import locate

        self.fn = fn
        self.name = check_step_name(name or fn.__name__.replace("_", "-"), field="name")
        prefix = f"steps.{self.name}"
        self.location = locate(fn, field=prefix)
        self.settings = _check_options(options, f"step {self.name!r}", prefix)
        self.__doc__ = fn.__doc__
        self.__name__ = getattr(fn, "__name__", self.name)
        self.__qualname__ = getattr(fn, "__qualname__", self.name)
        self.__module__ = fn.__module__
        try:
            hints = typing.get_type_hints(fn, include_extras=True)
        except Exception as exc:  # a NameError in a string annotation, typically
            raise ConfigError(
                f"step {self.name!r}: cannot read its type hints: {exc}", field=prefix
            ) from None
        self.input_types: dict[str, ValueType] = {}
        self.output_paths: list[str] = []
        self.positional: list[str] = []
        self.required: list[str] = []
        self.defaults: dict[str, Any] = {}
        for param in inspect.signature(fn).parameters.values():
            where = f"{prefix}.inputs.{param.name}"
            if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
                raise ConfigError(f"step {self.name!r}: *args and **kwargs cannot be inputs", field=where)
            annotation = hints.get(param.name, _MISSING)
            if annotation is _MISSING:
                guessed = type_of_value(param.default) if param.default is not param.empty else None
                if guessed is None:
                    raise ConfigError(
                        f"step {self.name!r}: input {param.name!r} has no type annotation",
                        field=where,
                        hint="annotate it: str, int, float, bool, InputPath, OutputPath or Metrics",
                    )
                resolved: tuple[ValueType, str] | None = (guessed, "in")
            else:
                resolved = type_of_annotation(annotation)
            if resolved is None:
                raise ConfigError(
                    f"step {self.name!r}: input {param.name!r} has type {annotation!r}; steps take "
                    "str, int, float, bool, InputPath, OutputPath or Metrics",
                    field=where,
                )
            kind, direction = resolved
            if direction == "out":
                if param.default is not param.empty:
                    raise ConfigError(
                        f"step {self.name!r}: output {param.name!r} cannot have a default", field=where
                    )
                self.output_paths.append(param.name)
                continue
            self.input_types[param.name] = kind
            if param.kind != param.KEYWORD_ONLY:
                self.positional.append(param.name)
            if param.default is param.empty:
                self.required.append(param.name)
            else:
                if kind in ("artifact", "metrics"):
                    raise ConfigError(
                        f"step {self.name!r}: {kind} input {param.name!r} cannot have a default", field=where
                    )
                self.defaults[param.name] = coerce_literal(
                    kind, param.default, field=where, where=f"step {self.name!r}: default of {param.name!r}"
                )
        returns = hints.get("return", None)
        self.returns: ValueType | None
        if returns is None or returns is type(None):
            self.returns = None
        else:
            found = type_of_annotation(returns)
            if found is None or found[0] == "artifact":
                raise ConfigError(
                    f"step {self.name!r} returns {returns!r}; a step returns None, Metrics, or a "
                    "str/int/float/bool (artifacts are written to OutputPath parameters)",
                    field=f"{prefix}.returns",
                )
            self.returns = found[0]
            if self.returns != "metrics" and "output" in self.output_paths:
                raise ConfigError(
                    f"step {self.name!r}: its returned value is its output 'output', and so is a parameter; "
                    "rename the OutputPath parameter",
                    field=f"{prefix}.outputs.output",
                )
        if metrics is not None:
            if self.returns != "metrics":
                raise ConfigError(
                    f"step {self.name!r} declares metrics but its function does not return Metrics",
                    field=f"{prefix}.metrics",
                    hint="annotate the return type: def ...(...) -> Metrics",
                )
            if isinstance(metrics, str):
                metrics = [metrics]
            names = tuple(check_metric_name(m, field=f"{prefix}.metrics.{m}") for m in metrics)
            if len(set(names)) != len(names):
                raise ConfigError(f"step {self.name!r} declares a metric twice", field=f"{prefix}.metrics")
            self.metric_names: tuple[str, ...] | None = names
        else:
            self.metric_names = () if self.returns == "metrics" else None
        # Shared with copies made by .options(): one function, one digest, read once.
        self._digest: dict[str, str] = {}

    @property
    def code_digest(self) -> str:
        """``sha256:`` of the function's source and of the same-module helpers it calls."""
        if "code" not in self._digest:
            from mlshift.pipelines._code import code_digest

            self._digest["code"] = code_digest(self.fn, field=f"steps.{self.name}")
        return self._digest["code"]

    def output_types(self) -> dict[str, ValueType]:
        """Output name → type: each ``OutputPath`` parameter, and ``output`` for a returned value."""
        out: dict[str, ValueType] = dict.fromkeys(self.output_paths, "artifact")
        if self.returns is not None and self.returns != "metrics":
            out["output"] = self.returns
        return out

    def options(
        self,
        *,
        name: str | None = None,
        resources: Resources | None = None,
        retries: int | None = None,
        retry_delay: float | None = None,
        timeout: float | None = None,
        cache: bool | None = None,
        env: Mapping[str, str] | None = None,
        secrets: Mapping[str, str] | None = None,
    ) -> StepFunction:
        """A copy with other settings, e.g. to use one function twice: ``train.options(name="train-b")``."""
        changes: dict[str, Any] = {
            k: v
            for k, v in {
                "resources": resources,
                "retries": retries,
                "retry_delay": retry_delay,
                "timeout": timeout,
                "cache": cache,
                "env": env,
                "secrets": secrets,
            }.items()
            if v is not None
        }
        clone = object.__new__(StepFunction)
        clone.__dict__.update(self.__dict__)
        clone.name = check_step_name(name, field="name") if name is not None else self.name
        clone.settings = _check_options(
            replace(self.settings, **changes), f"step {clone.name!r}", f"steps.{clone.name}"
        )
        return clone

    def __call__(self, *args: Any, **kwargs: Any) -> StepCall:
        """Add this step to the pipeline being defined, with its inputs bound.

        Raises:
            ConfigError: an unknown or missing input, or a value of the wrong type.
        """
        if len(args) > len(self.positional):
            raise ConfigError(
                f"step {self.name!r} takes {len(self.positional)} positional inputs, got {len(args)}",
                field=f"steps.{self.name}.inputs",
            )
        bindings = dict(self.defaults)
        for key, value in zip(self.positional, args, strict=False):
            if key in kwargs:
                raise ConfigError(
                    f"step {self.name!r}: input {key!r} given twice", field=f"steps.{self.name}.inputs.{key}"
                )
            bindings[key] = value
        for key, value in kwargs.items():
            if key in self.output_paths:
                raise ConfigError(
                    f"step {self.name!r}: {key!r} is an output (OutputPath); the runner provides its path",
                    field=f"steps.{self.name}.inputs.{key}",
                )
            bindings[key] = value
        return StepCall(
            name=self.name,
            kind="python",
            input_types=self.input_types,
            required=self.required,
            bindings=bindings,
            output_types=self.output_types(),
            metric_names=self.metric_names,
            options=self.settings,
            function=self,
        )

    def __repr__(self) -> str:
        return f"<step {self.name!r} ({self.location.module}.{self.location.qualname})>"


@overload
def step(fn: Callable[..., Any], /) -> StepFunction: ...


@overload
def step(
    *,
    name: str | None = None,
    metrics: Sequence[str] | None = None,
    resources: Resources | None = None,
    retries: int = 0,
    retry_delay: float = 1.0,
    timeout: float | None = None,
    cache: bool = True,
    env: Mapping[str, str] | None = None,
    secrets: Mapping[str, str] | None = None,
) -> Callable[[Callable[..., Any]], StepFunction]: ...


def step(
    fn: Callable[..., Any] | None = None,
    /,
    *,
    name: str | None = None,
    metrics: Sequence[str] | None = None,
    resources: Resources | None = None,
    retries: int = 0,
    retry_delay: float = 1.0,
    timeout: float | None = None,
    cache: bool = True,
    env: Mapping[str, str] | None = None,
    secrets: Mapping[str, str] | None = None,
) -> StepFunction | Callable[[Callable[..., Any]], StepFunction]:
    """Make a module-level function a pipeline step; it will run in its own process.

    Parameters annotated ``str``/``int``/``float``/``bool`` are parameters, ``InputPath`` an
    artifact from another step, ``Metrics`` another step's metrics; ``OutputPath`` parameters
    are artifacts it writes. It returns ``None``, ``Metrics`` or one ``str``/``int``/``float``/
    ``bool`` (its output ``output``).

    Args:
        name: The step's name (default: the function's, ``_`` → ``-``).
        metrics: The metric names it returns, so conditions on them are checked at definition.
        resources: Neutral size and GPUs.
        retries: Extra attempts after a failure.
        retry_delay: Seconds before the first retry; doubled for each next one.
        timeout: Seconds one attempt may take before it is stopped.
        cache: Reuse the outputs of an earlier identical execution (same code, inputs, params).
        env: Environment variables (not credentials: those go in ``secrets``).
        secrets: Environment variable → name of a secret, resolved by the target where the
            step runs (locally: the runner's environment variable of that name, upper-cased,
            with other characters turned into ``_``).

    Raises:
        ConfigError: unsupported annotations, a nested function, bad options.
    """
    options = StepOptions(
        resources=resources or Resources(),
        retries=retries,
        retry_delay=retry_delay,
        timeout=timeout,
        cache=cache,
        env=dict(env or {}),
        secrets=dict(secrets or {}),
    )

    def decorate(func: Callable[..., Any]) -> StepFunction:
        return StepFunction(func, name=name, metrics=metrics, options=options)

    return decorate(fn) if fn is not None else decorate


_PLACEHOLDER = re.compile(r"\{\{\s*([^{}]*?)\s*\}\}")


class ContainerStep(StepCall):
    """A step that runs a command in a container image.

    Arguments can hold placeholders the runner fills in: ``{{inputs.NAME}}`` (an artifact's
    path or a parameter's value), ``{{outputs.NAME}}`` (where to write an output: an artifact,
    or a file holding a parameter's JSON value) and ``{{metrics}}`` (where to write a JSON object
    of metrics). The local runner needs ``docker`` on ``PATH`` (on ``local+docker://`` it runs
    the container through the Docker SDK instead); paths are mounted at the same place inside
    the container.

    Args:
        name: The step's name.
        image: The container image.
        command: The entry point, e.g. ``["python", "-m", "trainer"]``.
        args: More arguments, with placeholders.
        inputs: Input name → a literal, a :class:`Param` or another step's output.
        outputs: Output name → ``"artifact"``, ``"str"``, ``"int"``, ``"float"`` or ``"bool"``.
        metrics: The metric names it writes to ``{{metrics}}``.
    """

    def __init__(
        self,
        name: str,
        image: str,
        command: Sequence[str],
        args: Sequence[str] = (),
        *,
        inputs: Mapping[str, Any] | None = None,
        outputs: Mapping[str, str | type] | None = None,
        metrics: Sequence[str] | None = None,
        resources: Resources | None = None,
        retries: int = 0,
        retry_delay: float = 1.0,
        timeout: float | None = None,
        cache: bool = True,
        env: Mapping[str, str] | None = None,
        secrets: Mapping[str, str] | None = None,
    ) -> None:
        check_step_name(name, field=f"steps.{name}.name")
        prefix = f"steps.{name}"
        if not isinstance(image, str) or not image.strip() or any(c.isspace() for c in image):
            raise ConfigError(
                f"step {name!r}: image must be an image reference, got {image!r}", field=f"{prefix}.image"
            )
        if isinstance(command, str) or not command or not all(isinstance(c, str) for c in command):
            raise ConfigError(
                f"step {name!r}: command must be a non-empty list of strings, e.g. ['python', '-m', 'train']",
                field=f"{prefix}.command",
            )
        if isinstance(args, str) or not all(isinstance(a, str) for a in args):
            raise ConfigError(f"step {name!r}: args must be a list of strings", field=f"{prefix}.args")
        output_types: dict[str, ValueType] = {}
        for out, kind in (outputs or {}).items():
            check_identifier(out, field=f"{prefix}.outputs.{out}", what="output")
            resolved = SCALAR_TYPES.get(kind) if isinstance(kind, type) else kind
            if resolved not in ("artifact", "str", "int", "float", "bool"):
                raise ConfigError(
                    f"step {name!r}: output {out!r} has type {kind!r}; use artifact, str, int, float or bool",
                    field=f"{prefix}.outputs.{out}",
                )
            output_types[out] = resolved  # type: ignore[assignment]
        metric_names = None
        if metrics is not None:
            metric_names = tuple(check_metric_name(m, field=f"{prefix}.metrics.{m}") for m in metrics)
        input_values = dict(inputs or {})
        for key in input_values:
            check_identifier(key, field=f"{prefix}.inputs.{key}", what="input")
            if key in output_types:
                raise ConfigError(
                    f"step {name!r}: {key!r} is both an input and an output", field=f"{prefix}.inputs.{key}"
                )
        for i, text in enumerate([*command, *args]):
            for match in _PLACEHOLDER.finditer(text):
                ref = match.group(1)
                section, _, key = ref.partition(".")
                ok = (
                    (section == "inputs" and key in input_values)
                    or (section == "outputs" and key in output_types)
                    or (ref == "metrics" and metric_names is not None)
                )
                if not ok:
                    where = f"command[{i}]" if i < len(command) else f"args[{i - len(command)}]"
                    raise ConfigError(
                        f"step {name!r}: {where} refers to {{{{{ref}}}}}, which the step does not declare "
                        "(use {{inputs.NAME}}, {{outputs.NAME}} or {{metrics}})",
                        field=f"{prefix}.{where}",
                    )
        super().__init__(
            name=name,
            kind="container",
            input_types=dict.fromkeys(input_values, None),
            required=(),
            bindings=input_values,
            output_types=output_types,
            metric_names=metric_names,
            options=StepOptions(
                resources=resources or Resources(),
                retries=retries,
                retry_delay=retry_delay,
                timeout=timeout,
                cache=cache,
                env=dict(env or {}),
                secrets=dict(secrets or {}),
            ),
            container={"image": image.strip(), "command": list(command), "args": list(args)},
        )


class RegisterModel(StepCall):
    """Built-in step: register an artifact as a new model version on the pipeline's target.

    If a version of ``model`` with the same bytes already exists it is reused, so a resumed
    or repeated run never registers the same model twice. Output ``version`` is the exact
    reference (``iris:3``), ready for :class:`Deploy`.

    Args:
        artifact: The model file or predictor folder, usually ``train.outputs["model"]``.
        model: The model's name.
        metrics: Metrics to keep with the version, usually ``evaluate.metrics``.
        alias: Point ``model@alias`` at the version (``champion``).
        framework: One of :data:`~mlshift.specs.model.FRAMEWORKS` (default: from the artifact).
        target: Another target (URI or ``mlshift.yaml`` name) to register on.
    """

    def __init__(
        self,
        artifact: OutputRef | StepCall,
        *,
        model: str | Param,
        metrics: MetricsRef | None = None,
        alias: str | None = None,
        framework: str | None = None,
        tags: Mapping[str, str] | None = None,
        description: str | None = None,
        target: str | None = None,
        name: str = "register",
        retries: int = 0,
        cache: bool = True,
    ) -> None:
        prefix = f"steps.{name}"
        if alias is not None and not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,62}", str(alias)):
            raise ConfigError(f"step {name!r}: invalid alias {alias!r}", field=f"{prefix}.alias")
        # Imported here: mlshift.specs loads pydantic, which defining a pipeline does not need.
        from mlshift.specs.model import FRAMEWORKS

        if framework is not None and framework not in FRAMEWORKS:
            raise ConfigError(
                f"step {name!r}: unknown framework {framework!r}; expected one of {', '.join(FRAMEWORKS)}",
                field=f"{prefix}.framework",
            )
        for key, value in (tags or {}).items():
            if not isinstance(key, str) or not isinstance(value, str):
                raise ConfigError(f"step {name!r}: tags must map strings to strings", field=f"{prefix}.tags")
        if target is not None and not isinstance(target, str):
            raise ConfigError(
                f"step {name!r}: target must be a URI or a target name", field=f"{prefix}.target"
            )
        bindings: dict[str, Any] = {"artifact": artifact, "model": model}
        if metrics is not None:
            bindings["metrics"] = metrics
        super().__init__(
            name=name,
            kind="register_model",
            input_types={"artifact": "artifact", "model": "str", "metrics": "metrics"},
            required=("artifact", "model"),
            bindings=bindings,
            output_types={"version": "str"},
            metric_names=None,
            options=StepOptions(retries=retries, cache=cache),
            config={
                "alias": alias,
                "framework": framework,
                "tags": dict(tags or {}),
                "description": description,
                "target": target,
            },
        )


class Deploy(StepCall):
    """Built-in step: deploy a model version to an endpoint on the pipeline's target.

    It goes through ``client.endpoints.deploy``: the same plan and apply as any deployment, so
    re-running it for a version the endpoint already serves changes nothing.

    Args:
        model: ``NAME:VERSION``/``NAME@ALIAS``, usually ``register.outputs["version"]``.
        endpoint: The endpoint's name (created if needed).
        traffic: Percent for the new version beside what serves now (default: all of it).
        target: Another target (URI or ``mlshift.yaml`` name) to deploy to.
        allow_schema_change: Deploy a version whose inputs differ from those of the version it
            replaces (by default the plan refuses it, as ``EndpointsAPI.deploy`` does).
    """

    def __init__(
        self,
        model: OutputRef | StepCall | Param | str,
        *,
        endpoint: str | Param,
        traffic: int | None = None,
        size: str = "cpu-small",
        replicas: int = 1,
        target: str | None = None,
        allow_schema_change: bool = False,
        name: str = "deploy",
        retries: int = 0,
        cache: bool = True,
    ) -> None:
        prefix = f"steps.{name}"
        if not isinstance(allow_schema_change, bool):
            raise ConfigError(
                f"step {name!r}: allow_schema_change must be true or false, got {allow_schema_change!r}",
                field=f"{prefix}.allow_schema_change",
            )
        if traffic is not None and (
            isinstance(traffic, bool) or not isinstance(traffic, int) or not 0 < traffic <= 100
        ):
            raise ConfigError(
                f"step {name!r}: traffic must be 1-100 percent, got {traffic!r}", field=f"{prefix}.traffic"
            )
        if size not in SIZES:
            raise ConfigError(
                f"step {name!r}: unknown size {size!r}; expected one of {', '.join(SIZES)}",
                field=f"{prefix}.size",
            )
        if isinstance(replicas, bool) or not isinstance(replicas, int) or not 1 <= replicas <= 100:
            raise ConfigError(
                f"step {name!r}: replicas must be 1-100, got {replicas!r}", field=f"{prefix}.replicas"
            )
        super().__init__(
            name=name,
            kind="deploy",
            input_types={"model": "str", "endpoint": "str"},
            required=("model", "endpoint"),
            bindings={"model": model, "endpoint": endpoint},
            output_types={"url": "str"},
            metric_names=None,
            options=StepOptions(retries=retries, cache=cache),
            config={
                "traffic": traffic,
                "size": size,
                "replicas": replicas,
                "target": target,
                "allow_schema_change": allow_schema_change,
            },
        )


class Fail(StepCall):
    """Built-in step: stop the run as failed with a message, typically in a gate's else branch.

    When it runs because a gate was false, the message also says what the gate measured
    (``evaluate.metrics['auc'] = 0.81, needs >= 0.85``).
    """

    def __init__(self, message: str, *, name: str = "fail") -> None:
        if not isinstance(message, str) or not message.strip():
            raise ConfigError(
                f"step {name!r}: message must be a non-empty string", field=f"steps.{name}.message"
            )
        super().__init__(
            name=name,
            kind="fail",
            input_types={},
            required=(),
            bindings={},
            output_types={},
            metric_names=None,
            options=StepOptions(cache=False),
            config={"message": message},
        )
