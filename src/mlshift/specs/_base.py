"""Shared pieces of the specs: the base model and the neutral name rules."""

from __future__ import annotations

import re
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, ValidationError
from typing_extensions import Self

from mlshift.errors import ConfigError

__all__ = ["NAME_PATTERN", "SpecModel", "check_name", "config_error"]


def _field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif not part.startswith("function-"):
            out += ("." if out else "") + part
    return out


_TAGGED = frozenset({"rollout", "then"})
_TAGS = frozenset({"all-at-once", "canary", "linear", "blue-green", "shadow"})


def config_error(exc: ValidationError, what: str) -> ConfigError:
    """Turn pydantic's first error into a :class:`ConfigError` naming the field path.

    The raw location is kept on ``error.loc`` and the bare problem on ``error.detail``, so
    callers can re-frame it (``mlshift.yaml`` adds the line number).
    """
    err = exc.errors()[0]
    # A tagged union (``rollout: {strategy: canary}``) puts the tag in the location; users wrote
    # ``rollout.percent``, not ``rollout.canary.percent``.
    loc = tuple(
        p for i, p in enumerate(err["loc"]) if not (i and err["loc"][i - 1] in _TAGGED and p in _TAGS)
    )
    inner = err.get("ctx", {}).get("error")
    if isinstance(inner, ConfigError):
        # A nested spec raised already: keep its location, below ours.
        loc, msg = loc + inner.loc, inner.detail
    else:
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg += " (unknown field; check its spelling)"
        elif err["type"] == "missing":
            msg = "required field is missing"
    path = _field_path(loc)
    return ConfigError(f"{what}: {path + ': ' if path else ''}{msg}", field=path or None, loc=loc, detail=msg)


class SpecModel(BaseModel):
    """Base of every spec: immutable, strict about unknown fields, JSON-schema exportable.

    Invalid input raises :class:`~mlshift.errors.ConfigError` (a ``ValueError``) naming the
    field path, not pydantic's ``ValidationError``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid", populate_by_name=True)

    def __init__(self, /, **data: Any) -> None:
        try:
            super().__init__(**data)
        except ValidationError as exc:
            raise config_error(exc, type(self).__name__) from None

    @classmethod
    def model_validate(cls, obj: Any, *args: Any, **kwargs: Any) -> Self:
        try:
            return super().model_validate(obj, *args, **kwargs)
        except ValidationError as exc:
            raise config_error(exc, cls.__name__) from None

    @classmethod
    def model_validate_json(cls, json_data: str | bytes | bytearray, *args: Any, **kwargs: Any) -> Self:
        try:
            return super().model_validate_json(json_data, *args, **kwargs)
        except ValidationError as exc:
            raise config_error(exc, cls.__name__) from None


#: The neutral rule for resource names. Targets narrow it further (see
#: :class:`mlshift.adapter.NameRules`), and the planner checks those before any call.
NAME_PATTERN = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,126}[A-Za-z0-9])?$")


def check_name(value: str) -> str:
    """Validate a resource name against the neutral rule.

    Raises:
        ValueError: with the rule spelled out (pydantic reports it with the field path).
    """
    if not NAME_PATTERN.match(value):
        raise ValueError(
            f"invalid name {value!r}: use 1-128 letters, digits, '.', '_' or '-', "
            "starting and ending with a letter or digit"
        )
    return value


Name = Annotated[str, AfterValidator(check_name)]
