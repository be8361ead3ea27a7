"""Names: what SageMaker accepts, and the names mlshift gives the resources it creates."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from mlshift.adapter import NameRule, NameRules

__all__ = ["NAME_RULES", "config_name", "config_prefix", "fingerprint", "model_name", "model_prefix"]

# SageMaker's pattern for endpoint, endpoint config, variant and model package group names.
_SAGEMAKER = NameRule(
    pattern=r"[a-zA-Z0-9](-*[a-zA-Z0-9]){0,62}",
    max_length=63,
    description="SageMaker names use letters, digits and '-' (no '.' or '_'), "
    "starting and ending with a letter or digit",
)

#: Checked by the planner before any call is made.
NAME_RULES = NameRules(model=_SAGEMAKER, endpoint=_SAGEMAKER, variant=_SAGEMAKER)


def fingerprint(data: Any) -> str:
    """A hex digest of JSON-able data (stable across processes)."""
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _cut(name: str, length: int) -> str:
    return name[:length].rstrip("-")


def model_name(endpoint: str, variant: str, digest: str) -> str:
    """The SageMaker model behind one variant: ``ENDPOINT-VARIANT-<hash>`` within 63 characters.

    The hash covers everything the model is made of, so an unchanged variant keeps its model
    and a changed one gets a new, immutable one.
    """
    return f"{_cut(endpoint, 26)}-{_cut(variant, 24)}-{digest[:10]}"


def config_name(endpoint: str, digest: str) -> str:
    """An endpoint configuration: ``ENDPOINT-<hash of its variants>``."""
    return f"{_cut(endpoint, 50)}-{digest[:12]}"


def config_prefix(endpoint: str) -> str:
    """What every configuration name of ``endpoint`` starts with."""
    return _cut(endpoint, 50) + "-"


def model_prefix(endpoint: str) -> str:
    """What every model name of ``endpoint`` starts with."""
    return _cut(endpoint, 26) + "-"
