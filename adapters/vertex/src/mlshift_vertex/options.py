"""Options of the Vertex AI target and of its endpoints, validated by pydantic models.

- :class:`VertexOptions`: the target's options, from ``mlshift.yaml`` (``targets.NAME.options``),
  the URI query (``vertex://PROJECT/LOCATION?staging_bucket=gs://b``) or ``MLSHIFT_VERTEX_<FIELD>``
  environment variables; the URI query wins over ``mlshift.yaml``, which wins over the environment.
- :class:`EndpointOptions`: ``provider_options.vertex`` of one endpoint spec, checked at plan
  time; other targets' keys are left to them.

Credentials are never options: they come from Application Default Credentials.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, field_validator

from mlshift.adapter import target_options
from mlshift.errors import ConfigError
from mlshift.specs import SpecModel

__all__ = [
    "LABEL_KEY",
    "LABEL_VALUE",
    "SIZE_TO_MACHINE",
    "EndpointOptions",
    "MachineSpec",
    "VertexOptions",
    "bigquery_table",
    "check_labels",
    "machine_for",
]

#: Label rules: keys ``[a-z][a-z0-9_-]{0,62}``, values ``[a-z0-9_-]{0,63}`` (lowercase only).
LABEL_KEY = re.compile(r"[a-z][a-z0-9_-]{0,62}")
LABEL_VALUE = re.compile(r"[a-z0-9_-]{0,63}")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,61}[a-z0-9]")
_CMEK = re.compile(r"projects/[^/]+/locations/[^/]+/keyRings/[^/]+/cryptoKeys/[^/]+")
_NETWORK = re.compile(r"projects/[0-9]+/global/networks/[a-z]([-a-z0-9]*[a-z0-9])?")
_SERVICE_ACCOUNT = re.compile(r"[a-z0-9][a-z0-9-]{4,28}[a-z0-9]@[a-z0-9.-]+\.iam\.gserviceaccount\.com")
#: A BigQuery dataset id (letters, digits and underscores).
_DATASET = re.compile(r"[A-Za-z0-9_]{1,1024}")
#: ``bq://PROJECT.DATASET.TABLE``: where Vertex AI's request-response logging writes its rows.
_BQ_TABLE = re.compile(
    r"bq://([a-z][a-z0-9-]{4,28}[a-z0-9])\.([A-Za-z0-9_]{1,1024})\.([A-Za-z0-9_-]{1,1024})"
)
_CREDENTIAL_WORDS = ("secret", "token", "credential", "password", "private_key", "key_file", "keyfile")


class MachineSpec(SpecModel):
    """A Vertex machine: a machine type and, for GPU sizes, an accelerator."""

    machine_type: str
    accelerator_type: str | None = None
    accelerator_count: int = 0


#: Neutral compute sizes → Vertex machine specs (documented in docs/targets/vertex.md).
SIZE_TO_MACHINE: Mapping[str, MachineSpec] = {
    "cpu-small": MachineSpec(machine_type="n1-standard-2"),  # 2 vCPU, 7.5 GB
    "cpu-medium": MachineSpec(machine_type="n1-standard-4"),  # 4 vCPU, 15 GB
    "cpu-large": MachineSpec(machine_type="n1-standard-16"),  # 16 vCPU, 60 GB
    "gpu-small": MachineSpec(
        machine_type="n1-standard-4", accelerator_type="NVIDIA_TESLA_T4", accelerator_count=1
    ),
    "gpu-medium": MachineSpec(
        machine_type="g2-standard-8", accelerator_type="NVIDIA_L4", accelerator_count=1
    ),
    "gpu-large": MachineSpec(
        machine_type="a2-highgpu-1g", accelerator_type="NVIDIA_TESLA_A100", accelerator_count=1
    ),
}


def machine_for(size: str, options: EndpointOptions | None = None) -> MachineSpec:
    """The machine a variant of ``size`` runs on (``provider_options.vertex.machine_type`` wins)."""
    base = SIZE_TO_MACHINE[size]
    if options is not None and options.machine_type:
        return MachineSpec(machine_type=options.machine_type)
    return base


def check_labels(labels: Mapping[str, str], field: str) -> None:
    """Refuse labels Vertex would refuse, and the ``mlshift-`` prefix mlshift keeps for itself.

    Raises:
        ConfigError: naming the label and the rule.
    """
    if len(labels) > 54:  # Vertex allows 64 labels; mlshift keeps up to 10 for its own
        raise ConfigError(f"{field}: at most 54 labels (got {len(labels)})", field=field)
    for key, value in labels.items():
        if not LABEL_KEY.fullmatch(key):
            raise ConfigError(
                f"{field}: label key {key!r} is not allowed on Vertex AI",
                field=f"{field}.{key}",
                hint="label keys are lowercase letters, digits, '_' and '-', starting with a letter, "
                "at most 63 characters",
            )
        if key.startswith("mlshift-"):
            raise ConfigError(
                f"{field}: label key {key!r} uses the prefix 'mlshift-', which mlshift keeps for itself",
                field=f"{field}.{key}",
            )
        if not isinstance(value, str) or not LABEL_VALUE.fullmatch(value):
            raise ConfigError(
                f"{field}: label {key}={value!r} has a value Vertex AI does not allow",
                field=f"{field}.{key}",
                hint="label values are lowercase letters, digits, '_' and '-', at most 63 characters",
            )


class VertexOptions(SpecModel):
    """Options of a ``vertex://PROJECT/LOCATION`` target.

    Attributes:
        staging_bucket: ``gs://BUCKET[/PREFIX]``: where artifacts (by digest), version cards, the
            rollout journal and endpoint leases live. Required.
        service_account: The service account endpoints run as (``NAME@PROJECT.iam.gserviceaccount.com``).
        network: A VPC network to peer endpoints with (``projects/NUMBER/global/networks/NAME``).
        labels: Labels put on every model and endpoint mlshift creates.
        encryption_key: A Cloud KMS key (CMEK) for models and endpoints
            (``projects/P/locations/L/keyRings/R/cryptoKeys/K``).
        image_uri: The serving image; default: the mlshift image in Artifact Registry,
            ``LOCATION-docker.pkg.dev/PROJECT/mlshift/serving:latest``.
        metric_lag: Seconds Cloud Monitoring may take to show a request (Vertex: 2-6 minutes).
            A metric-gated bake shorter than this is refused at plan time.
        metric_resolution: Seconds per Cloud Monitoring datapoint (Vertex samples every 60 s).
        poll_interval: Seconds between checks of a long-running operation.
        wait_timeout: mlshift's own limit on one long-running operation, in seconds (``None``:
            the caller's; the SDK's own 900 s deploy timeout is never used).
        lease_seconds: How long an endpoint lease lasts without renewal.
        capture_dataset: The BigQuery dataset (in the target's project) that endpoints with
            ``capture`` log their requests to, one table per endpoint
            (``bq://PROJECT.DATASET.ENDPOINT``, ``-`` written ``_``); an endpoint's
            ``provider_options.vertex.capture_table`` names another table.
        api_endpoint: Send every Vertex, GCS, Cloud Monitoring and BigQuery call to this base URL instead
            of Google's (``http://127.0.0.1:PORT`` for an emulator such as the testing kit: plain
            HTTP is accepted on loopback only, with anonymous credentials).
    """

    staging_bucket: str
    service_account: str | None = None
    network: str | None = None
    labels: dict[str, str] = Field(default_factory=dict)
    encryption_key: str | None = None
    image_uri: str | None = None
    metric_lag: float = Field(default=360.0, ge=0, le=3600)
    metric_resolution: float = Field(default=60.0, gt=0, le=3600)
    poll_interval: float = Field(default=5.0, gt=0, le=300)
    wait_timeout: float | None = Field(default=None, gt=0)
    lease_seconds: float = Field(default=60.0, ge=5, le=3600)
    capture_dataset: str = "mlshift_capture"
    api_endpoint: str | None = None

    @field_validator("capture_dataset")
    @classmethod
    def _capture_dataset(cls, value: str) -> str:
        if not _DATASET.fullmatch(value):
            raise ValueError(f"{value!r} is not a BigQuery dataset id (letters, digits and '_')")
        return value

    @field_validator("staging_bucket")
    @classmethod
    def _bucket(cls, value: str) -> str:
        bucket, _, _prefix = value.removeprefix("gs://").partition("/")
        if not value.startswith("gs://") or not _BUCKET.fullmatch(bucket):
            raise ValueError(f"{value!r} is not a GCS location: write gs://BUCKET or gs://BUCKET/PREFIX")
        return value.rstrip("/")

    @field_validator("service_account")
    @classmethod
    def _service_account(cls, value: str | None) -> str | None:
        if value is not None and not _SERVICE_ACCOUNT.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a service account email (NAME@PROJECT.iam.gserviceaccount.com)"
            )
        return value

    @field_validator("network")
    @classmethod
    def _network(cls, value: str | None) -> str | None:
        if value is not None and not _NETWORK.fullmatch(value):
            raise ValueError(f"{value!r} is not a VPC network (projects/NUMBER/global/networks/NAME)")
        return value

    @field_validator("encryption_key")
    @classmethod
    def _cmek(cls, value: str | None) -> str | None:
        if value is not None and not _CMEK.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a Cloud KMS key (projects/P/locations/L/keyRings/R/cryptoKeys/K)"
            )
        return value

    @field_validator("labels")
    @classmethod
    def _labels(cls, value: dict[str, str]) -> dict[str, str]:
        try:
            check_labels(value, "labels")
        except ConfigError as exc:
            raise ValueError(exc.detail) from None
        return value

    @field_validator("api_endpoint")
    @classmethod
    def _api_endpoint(cls, value: str | None) -> str | None:
        if value is None:
            return None
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.hostname or parts.path not in ("", "/"):
            raise ValueError(f"{value!r} is not a base URL (http://127.0.0.1:PORT or https://HOST)")
        if parts.scheme == "http":
            try:
                loopback = parts.hostname == "localhost" or ipaddress.ip_address(parts.hostname).is_loopback
            except ValueError:
                loopback = False
            if not loopback:
                raise ValueError(f"{value!r}: plain http is only allowed to a loopback address")
        return value.rstrip("/")

    @property
    def bucket(self) -> str:
        """The bucket's name."""
        return self.staging_bucket.removeprefix("gs://").partition("/")[0]

    @property
    def prefix(self) -> str:
        """The key prefix inside the bucket (``""``: its root)."""
        return self.staging_bucket.removeprefix("gs://").partition("/")[2].strip("/")

    @property
    def emulated(self) -> bool:
        """Whether calls go to a plain-HTTP loopback emulator (anonymous credentials)."""
        return self.api_endpoint is not None and self.api_endpoint.startswith("http://")

    @classmethod
    def from_sources(
        cls,
        query: Mapping[str, str],
        options: Mapping[str, Any],
        environ: Mapping[str, str] | None = None,
    ) -> VertexOptions:
        """Merge the URI query over ``options`` over ``MLSHIFT_VERTEX_*`` variables.

        Raises:
            ConfigError: naming the option (``target.options.<field>``) and the known ones.
        """
        return target_options(
            cls,
            "vertex",
            query,
            options,
            environ,
            credential_words=_CREDENTIAL_WORDS,
            credential_hint="use Application Default Credentials: `gcloud auth application-default login`, "
            "GOOGLE_APPLICATION_CREDENTIALS, or the attached service account",
            required={
                "staging_bucket": "set staging_bucket: gs://BUCKET under the target's options, add "
                "?staging_bucket=gs://BUCKET to the URI, or set MLSHIFT_VERTEX_STAGING_BUCKET"
            },
        )


class EndpointOptions(SpecModel):
    """``provider_options.vertex`` of an endpoint.

    Attributes:
        machine_type: An exact machine type for every variant (instead of the sizes table).
        capture_table: With ``capture``, the BigQuery table Vertex AI logs requests and
            responses to, ``bq://PROJECT.DATASET.TABLE`` (default:
            ``bq://PROJECT.<capture_dataset>.<endpoint>`` from the target's options).
    """

    machine_type: str | None = Field(default=None, pattern=r"^[a-z][a-z0-9]*-[a-z0-9-]+$")
    capture_table: str | None = None

    @field_validator("capture_table")
    @classmethod
    def _capture_table(cls, value: str | None) -> str | None:
        if value is not None and not _BQ_TABLE.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a BigQuery table: write bq://PROJECT.DATASET.TABLE "
                "(a dataset is letters, digits and '_'; a table may also have '-')"
            )
        return value


def bigquery_table(uri: str) -> tuple[str, str, str] | None:
    """``bq://PROJECT.DATASET.TABLE`` as ``(project, dataset, table)`` (``None``: not a table URI)."""
    match = _BQ_TABLE.fullmatch(uri)
    return None if match is None else (match[1], match[2], match[3])
