"""What Azure ML accepts as names (checked by the planner before any call is made)."""

from __future__ import annotations

from mlshift.adapter import NameRule, NameRules

__all__ = ["MODEL", "NAME_RULES", "ONLINE"]

#: Workspace model (and environment) names.
MODEL = NameRule(
    pattern=r"[a-zA-Z0-9][a-zA-Z0-9\-_]{0,254}",
    max_length=255,
    description="Azure ML model names use letters, digits, '-' and '_', starting with a letter or digit",
)

#: Online endpoint and deployment names. Endpoint names are unique per Azure region
#: (``NAME.REGION.inference.ml.azure.com``), which no name rule can check: a taken one is
#: :class:`~mlshift_azureml.errors.EndpointNameTaken` when it is created.
ONLINE = NameRule(
    pattern=r"[a-zA-Z][-a-zA-Z0-9]{1,30}[a-zA-Z0-9]",
    max_length=32,
    description="Azure ML endpoint and deployment names are 3-32 letters, digits and '-', "
    "starting with a letter and ending with a letter or digit",
)

NAME_RULES = NameRules(model=MODEL, endpoint=ONLINE, variant=ONLINE)
