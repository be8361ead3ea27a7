"""The types a step can take and produce, and the names the IR allows.

Only the standard library is imported here: the step worker process imports this module, and
every step pays for what it loads.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal, get_args, get_origin

from mlshift.errors import ConfigError

__all__ = [
    "SCALAR_TYPES",
    "InputPath",
    "Metrics",
    "OutputPath",
    "ValueType",
    "accepts",
    "check_env_name",
    "check_identifier",
    "check_metric_name",
    "check_step_name",
    "coerce_literal",
    "type_of_annotation",
    "type_of_value",
]


class _ArtifactMarker:
    """Metadata in ``Annotated[Path, ...]`` telling an artifact input from an output."""

    __slots__ = ("direction",)

    def __init__(self, direction: Literal["in", "out"]) -> None:
        self.direction = direction

    def __repr__(self) -> str:
        return "InputPath" if self.direction == "in" else "OutputPath"


#: A step parameter annotated ``InputPath`` receives the path of an upstream artifact (a file or
#: a folder). Treat it as read-only: it is the cached copy other runs reuse.
InputPath = Annotated[Path, _ArtifactMarker("in")]

#: A step parameter annotated ``OutputPath`` receives a path that does not exist yet; the step
#: writes a file or a folder there (``path.with_suffix(".skops")`` is fine too, so a model file
#: keeps a name its loader recognises). The caller never passes it.
OutputPath = Annotated[Path, _ArtifactMarker("out")]

#: A step annotated ``-> Metrics`` returns named numbers (``{"auc": 0.91}``); declare their names
#: with ``@step(metrics=["auc"])`` so conditions can be checked when the pipeline is defined.
Metrics = dict[str, float]

ValueType = Literal["str", "int", "float", "bool", "artifact", "metrics"]
SCALAR_TYPES: dict[type, ValueType] = {str: "str", int: "int", float: "float", bool: "bool"}

_STEP_NAME = re.compile(r"[A-Za-z][A-Za-z0-9-]{0,62}")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,63}")
_METRIC = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,127}")
_ENV = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def check_step_name(name: str, *, field: str, what: str = "step") -> str:
    """Check a step or pipeline name against the rule every pipeline service accepts.

    Letters, digits and ``-`` only: SageMaker pipeline names forbid ``_`` and KFP rewrites it,
    so a name that passes here compiles unchanged everywhere.

    Raises:
        ConfigError: naming ``field``.
    """
    if not isinstance(name, str) or not _STEP_NAME.fullmatch(name):
        raise ConfigError(
            f"invalid {what} name {name!r}: use letters, digits and '-', starting with a letter "
            "(at most 63 characters)",
            field=field,
        )
    return name


def check_identifier(name: str, *, field: str, what: str) -> str:
    """Check a parameter, input or output name (a Python identifier)."""
    if not isinstance(name, str) or not _IDENTIFIER.fullmatch(name):
        raise ConfigError(f"invalid {what} name {name!r}: use a Python identifier", field=field)
    return name


def check_metric_name(name: str, *, field: str) -> str:
    """Check a metric name (``auc``, ``val.loss``, ``f1-macro``)."""
    if not isinstance(name, str) or not _METRIC.fullmatch(name):
        raise ConfigError(
            f"invalid metric name {name!r}: use letters, digits, '_', '.' and '-', starting with a letter",
            field=field,
        )
    return name


def check_env_name(name: str, *, field: str) -> str:
    """Check an environment variable name."""
    if not isinstance(name, str) or not _ENV.fullmatch(name):
        raise ConfigError(f"invalid environment variable name {name!r}", field=field)
    return name


def type_of_annotation(annotation: Any) -> tuple[ValueType, Literal["in", "out"]] | None:
    """Map a step parameter's annotation to an IR type and a direction, or ``None`` if unsupported."""
    if get_origin(annotation) is Annotated:
        for meta in get_args(annotation)[1:]:
            if isinstance(meta, _ArtifactMarker):
                return "artifact", meta.direction
        return type_of_annotation(get_args(annotation)[0])
    if isinstance(annotation, type) and annotation in SCALAR_TYPES:
        return SCALAR_TYPES[annotation], "in"
    if annotation == Metrics:
        return "metrics", "in"
    return None


def type_of_value(value: Any) -> ValueType | None:
    """The IR type of a literal value, or ``None`` if it is not a str/int/float/bool."""
    # bool first: it is a subclass of int, and True must not pass as a number.
    if isinstance(value, bool):
        return "bool"
    for kind, name in ((int, "int"), (float, "float"), (str, "str")):
        if isinstance(value, kind):
            return name  # type: ignore[return-value]
    return None


def accepts(expected: ValueType, actual: ValueType) -> bool:
    """Whether a value of type ``actual`` may feed an input of type ``expected`` (int widens to float)."""
    return expected == actual or (expected == "float" and actual == "int")


def coerce_literal(expected: ValueType, value: Any, *, field: str, where: str) -> Any:
    """Check a literal against a declared type and normalise it (``1`` → ``1.0`` for a float).

    Raises:
        ConfigError: naming ``field``, the expected type and the value.
    """
    actual = type_of_value(value)
    if actual is None or not accepts(expected, actual):
        got = f"{type(value).__name__} {value!r}" if actual is not None else type(value).__name__
        raise ConfigError(f"{where}: expects {expected}, got {got}", field=field)
    return float(value) if expected == "float" else value
