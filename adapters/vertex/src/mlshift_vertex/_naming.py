"""Vertex AI's naming rules, as mlshift checks them at plan time, and mlshift's labels."""

from __future__ import annotations

import re

from mlshift.adapter import NameRule, NameRules
from mlshift.errors import ConfigError

__all__ = [
    "ALIAS",
    "LABEL_MANAGED",
    "NAME_RULES",
    "check_alias",
    "join_hex",
    "split_hex",
]

#: mlshift's own labels start with this (users' labels may not).
LABEL_MANAGED = "mlshift-managed"

NAME_RULES = NameRules(
    # model_id: [a-z0-9_-], at most 63 characters (the model name is the model id).
    model=NameRule(
        pattern=r"[a-z0-9]([a-z0-9_-]*[a-z0-9])?",
        max_length=63,
        description="Vertex AI model ids use lowercase letters, digits, '_' and '-'",
    ),
    # endpoint_id: [a-z0-9-], at most 63, starting with a letter (the endpoint name is its id).
    endpoint=NameRule(
        pattern=r"[a-z]([a-z0-9-]*[a-z0-9])?",
        max_length=63,
        description="Vertex AI endpoint ids use lowercase letters, digits and '-', starting with a letter",
    ),
    # A variant is a deployed model whose id is numeric; its name goes in its display_name.
    variant=NameRule(
        pattern=r"[a-z0-9]([a-z0-9-]*[a-z0-9])?",
        max_length=63,
        description="use lowercase letters, digits and '-', starting and ending with a letter or digit",
    ),
)

#: Vertex's rule for version aliases.
ALIAS = re.compile(r"[a-z][a-zA-Z0-9-]{0,126}[a-z0-9]")


def check_alias(alias: str, target: str) -> None:
    """Refuse an alias Vertex AI would refuse (before any call).

    Raises:
        ConfigError: naming the rule.
    """
    if not ALIAS.fullmatch(alias) or alias.isdigit():
        raise ConfigError(
            f"alias {alias!r} is not allowed on target {target!r}: Vertex AI version aliases start with a "
            "lowercase letter, end with a lowercase letter or digit, and use letters, digits and '-' "
            "(2-128 characters)",
            field="alias",
        )


def split_hex(hexdigest: str) -> tuple[str, str]:
    """A 64-digit hex digest as two label values (a label value holds at most 63 characters)."""
    return hexdigest[:32], hexdigest[32:]


def join_hex(first: str | None, second: str | None) -> str | None:
    """The digest :func:`split_hex` split, or ``None`` if a part is missing."""
    if not first or not second:
        return None
    return first + second
