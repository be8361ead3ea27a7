"""Options of the Azure ML target and of its endpoints, validated by pydantic models.

Two doors, both strict about unknown fields (STYLE.md rule 5):

- :class:`AzureMLOptions`: the target's options, from ``mlshift.yaml``
  (``targets.prod.options``), the URI query (``azureml://SUB/RG/WS?datastore=...``) or
  ``MLSHIFT_AZUREML_<FIELD>`` environment variables; the URI query wins over ``mlshift.yaml``,
  which wins over the environment.
- :class:`EndpointOptions`: ``provider_options.azureml`` of one endpoint spec, checked at plan
  time; other targets' keys are left to them.

Credentials are never options: they come from ``azure-identity``'s default chain
(environment, workload identity, managed identity, the Azure CLI's login, ...).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic import Field, ValidationInfo, field_validator, model_validator

from mlshift.adapter import target_options
from mlshift.specs import SpecModel

__all__ = [
    "INSTANCE_TYPES",
    "SIZE_TO_INSTANCE_TYPE",
    "AzureMLOptions",
    "EndpointOptions",
    "instance_type_for",
]

#: Neutral compute sizes → managed online endpoint instance types (docs/targets/azureml.md).
SIZE_TO_INSTANCE_TYPE: Mapping[str, str] = {
    # Azure's smallest recommended size for general-purpose endpoints is Standard_DS3_v2 (the
    # SDK warns below it), so cpu-small starts there rather than at 2 vCPU.
    "cpu-small": "Standard_DS3_v2",  # 4 vCPU, 14 GiB
    "cpu-medium": "Standard_DS4_v2",  # 8 vCPU, 28 GiB
    "cpu-large": "Standard_F16s_v2",  # 16 vCPU, 32 GiB
    "gpu-small": "Standard_NC4as_T4_v3",  # 1 NVIDIA T4 (16 GiB), 4 vCPU
    "gpu-medium": "Standard_NC6s_v3",  # 1 NVIDIA V100 (16 GiB), 6 vCPU
    "gpu-large": "Standard_NC24ads_A100_v4",  # 1 NVIDIA A100 (80 GiB), 24 vCPU
}

# Instance types of Azure ML's managed online endpoint SKU list. A typo here costs a failed
# deployment minutes later, so a type outside the list is refused at plan time.
INSTANCE_TYPES: frozenset[str] = frozenset(
    {
        *SIZE_TO_INSTANCE_TYPE.values(),
        *(f"Standard_DS{n}_v2" for n in (1, 2, 3, 4, 5)),
        *(f"Standard_F{n}s_v2" for n in (2, 4, 8, 16, 32, 48, 64, 72)),
        *(f"Standard_E{n}s_v3" for n in (2, 4, 8, 16, 32, 48, 64)),
        *(f"Standard_D{n}a_v4" for n in (2, 4, 8, 16, 32, 48, 64, 96)),
        *(f"Standard_D{n}as_v4" for n in (2, 4, 8, 16, 32, 48, 64, 96)),
        *(f"Standard_NC{n}as_T4_v3" for n in (4, 8, 16, 64)),
        *(f"Standard_NC{n}s_v3" for n in (6, 12, 24)),
        *(f"Standard_NC{n}ads_A100_v4" for n in (24, 48, 96)),
        "Standard_ND96asr_v4",
        "Standard_ND96amsr_A100_v4",
        "Standard_ND40rs_v2",
    }
)

_CREDENTIAL_WORDS = ("secret", "password", "credential", "token", "key")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,254}")


def instance_type_for(size: str, override: str | None = None) -> str:
    """The instance type for a neutral size, unless ``override`` names one."""
    return override or SIZE_TO_INSTANCE_TYPE[size]


class AzureMLOptions(SpecModel):
    """Options of an ``azureml://SUB/RG/WS`` target.

    Attributes:
        datastore: The workspace datastore (an Azure Blob container) that holds mlshift's
            artifacts, version cards, rollout journal and endpoint locks.
        prefix: The folder in that datastore under which mlshift keeps them.
        image_uri: The serving image of custom-container deployments (by default the mlshift
            image in the workspace's container registry, ``<acr>/mlshift-serve:<version>``).
        environment: The workspace environment (``name:version`` or ``name@latest``) that
            deployments run in, instead of the custom container (for example Azure's curated
            scikit-learn environment). Exclusive with ``image_uri``.
        wait_timeout: Seconds to wait for a deployment or a traffic change before failing.
        poll_interval: Seconds between state checks mlshift makes itself (traffic visibility).
        metric_lag: Seconds Azure Monitor may take to show a request (default 180).
        lease_seconds: How long an endpoint lock lasts without renewal.
        tags: Extra tags on every resource mlshift creates.
    """

    datastore: str = "workspaceblobstore"
    prefix: str = "mlshift"
    image_uri: str | None = None
    environment: str | None = None
    wait_timeout: float = Field(default=1800.0, gt=0, le=24 * 3600)
    poll_interval: float = Field(default=5.0, ge=0, le=600)
    metric_lag: float = Field(default=180.0, ge=0, le=3600)
    lease_seconds: float = Field(default=120.0, gt=0, le=3600)
    tags: dict[str, str] = Field(default_factory=dict)

    @field_validator("datastore")
    @classmethod
    def _datastore_name(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9_]{1,255}", value):
            raise ValueError(f"{value!r} is not a datastore name (lowercase letters, digits and '_')")
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        value = value.strip("/")
        if not value or not re.fullmatch(r"[A-Za-z0-9._/-]+", value):
            raise ValueError(f"{value!r} is not a blob folder (letters, digits, '.', '_', '-', '/')")
        return value

    @field_validator("environment")
    @classmethod
    def _environment(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value is None:
            return None
        if info.data.get("image_uri"):
            raise ValueError("give either image_uri or environment, not both")
        name = re.split(r"[:@]", value, maxsplit=1)[0]
        if not _NAME.fullmatch(name) or (":" not in value and "@" not in value):
            raise ValueError(f"{value!r} is not an environment reference: write NAME:VERSION or NAME@latest")
        return value

    @classmethod
    def from_sources(
        cls,
        query: Mapping[str, str],
        options: Mapping[str, Any],
        environ: Mapping[str, str] | None = None,
    ) -> AzureMLOptions:
        """Merge the URI query over ``options`` over ``MLSHIFT_AZUREML_*`` variables.

        Raises:
            ConfigError: naming the option (``target.options.<field>``) and the known ones.
        """
        return target_options(
            cls,
            "azureml",
            query,
            options,
            environ,
            credential_words=_CREDENTIAL_WORDS,
            credential_kind="an Azure credential",
            credential_hint="use azure-identity's default chain: AZURE_CLIENT_ID/AZURE_TENANT_ID with "
            "workload identity, a managed identity, or `az login`",
        )


class EndpointOptions(SpecModel):
    """``provider_options.azureml`` of an endpoint spec.

    Attributes:
        instance_type: An exact instance type for every variant, instead of the one the
            neutral size maps to (see :data:`SIZE_TO_INSTANCE_TYPE`).
    """

    instance_type: str | None = None

    @model_validator(mode="before")
    @classmethod
    def _no_serverless(cls, data: Any) -> Any:
        if isinstance(data, Mapping) and "serverless" in data:
            # Said plainly rather than as an unknown field: a user moving a SageMaker spec over
            # must not get a one-instance dedicated deployment in its place.
            raise ValueError(
                "Azure ML managed online endpoints have no serverless mode; remove 'serverless' "
                "(variants then run on dedicated instances: compute.size or instance_type)"
            )
        return data

    @field_validator("instance_type")
    @classmethod
    def _known_type(cls, value: str | None) -> str | None:
        if value is not None and value not in INSTANCE_TYPES:
            close = sorted(t for t in INSTANCE_TYPES if t.lower()[:11] == value.lower()[:11])
            raise ValueError(
                f"{value!r} is not a managed online endpoint instance type"
                + (f" (did you mean {', '.join(close)}?)" if close else " (e.g. Standard_DS3_v2)")
            )
        return value
