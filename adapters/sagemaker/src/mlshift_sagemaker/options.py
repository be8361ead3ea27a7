"""Options of the SageMaker target and of its endpoints, validated by pydantic models.

Two doors, both strict about unknown fields (STYLE.md rule 5):

- :class:`SageMakerOptions`: the target's options, from ``mlshift.yaml``
  (``targets.prod.options``), the URI query (``sagemaker://us-east-1?role_arn=...&bucket=...``)
  or ``MLSHIFT_SAGEMAKER_<FIELD>`` environment variables, in that order of precedence.
- :class:`EndpointOptions`: ``provider_options.sagemaker`` of one endpoint spec, checked at plan
  time; other targets' keys are left to them.

Credentials are never options: they come from the standard AWS chain.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Literal

from pydantic import Field, ValidationInfo, field_validator

from mlshift.adapter import target_options
from mlshift.specs import SpecModel

__all__ = [
    "IMAGE_KINDS",
    "INSTANCE_TYPES",
    "SIZE_TO_INSTANCE_TYPE",
    "DataCaptureOptions",
    "EndpointOptions",
    "SageMakerOptions",
    "ServerlessOptions",
    "VpcConfig",
    "instance_type_for",
    "size_for_instance_type",
]

#: Neutral compute sizes → SageMaker instance types (documented in docs/targets/sagemaker.md).
SIZE_TO_INSTANCE_TYPE: Mapping[str, str] = {
    "cpu-small": "ml.m5.large",  # 2 vCPU, 8 GiB
    "cpu-medium": "ml.m5.xlarge",  # 4 vCPU, 16 GiB
    "cpu-large": "ml.m5.4xlarge",  # 16 vCPU, 64 GiB
    "gpu-small": "ml.g4dn.xlarge",  # 1 NVIDIA T4 (16 GiB), 4 vCPU
    "gpu-medium": "ml.g5.2xlarge",  # 1 NVIDIA A10G (24 GiB), 8 vCPU
    "gpu-large": "ml.g5.12xlarge",  # 4 NVIDIA A10G, 48 vCPU
}

_SIZES = ("medium", "large", "xlarge", "2xlarge", "4xlarge", "8xlarge", "9xlarge", "12xlarge")
_BIG = ("16xlarge", "18xlarge", "24xlarge", "32xlarge", "48xlarge")


def _family(name: str, sizes: tuple[str, ...]) -> set[str]:
    return {f"ml.{name}.{s}" for s in sizes}


# Real-time hosting instance types. A typo here costs a 10-minute failed deployment, so the
# list is checked at plan time; it errs on the side of the families SageMaker hosting offers.
INSTANCE_TYPES: frozenset[str] = frozenset(
    _family("t2", ("medium", "large", "xlarge", "2xlarge"))
    | _family("m4", ("xlarge", "2xlarge", "4xlarge", "10xlarge", "16xlarge"))
    | _family("m5", (*_SIZES[1:], "12xlarge", "24xlarge"))
    | _family("m5d", (*_SIZES[1:], "12xlarge", "24xlarge"))
    | _family("m6i", _SIZES[1:] + _BIG[:3] + ("32xlarge",))
    | _family("m7i", _SIZES[1:] + _BIG[:3] + ("48xlarge",))
    | _family("c4", ("large", "xlarge", "2xlarge", "4xlarge", "8xlarge"))
    | _family("c5", ("large", "xlarge", "2xlarge", "4xlarge", "9xlarge", "18xlarge"))
    | _family("c5d", ("large", "xlarge", "2xlarge", "4xlarge", "9xlarge", "18xlarge"))
    | _family("c6i", _SIZES[1:] + _BIG[:3] + ("32xlarge",))
    | _family("c7i", _SIZES[1:] + _BIG[:3] + ("48xlarge",))
    | _family("r5", ("large", "xlarge", "2xlarge", "4xlarge", "12xlarge", "24xlarge"))
    | _family("r5d", ("large", "xlarge", "2xlarge", "4xlarge", "12xlarge", "24xlarge"))
    | _family("r6i", _SIZES[1:] + _BIG[:3] + ("32xlarge",))
    | _family("p2", ("xlarge", "8xlarge", "16xlarge"))
    | _family("p3", ("2xlarge", "8xlarge", "16xlarge"))
    | _family("p4d", ("24xlarge",))
    | _family("p5", ("48xlarge",))
    | _family("g4dn", ("xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge"))
    | _family(
        "g5", ("xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge", "48xlarge")
    )
    | _family(
        "g6", ("xlarge", "2xlarge", "4xlarge", "8xlarge", "12xlarge", "16xlarge", "24xlarge", "48xlarge")
    )
    | _family("inf1", ("xlarge", "2xlarge", "6xlarge", "24xlarge"))
    | _family("inf2", ("xlarge", "8xlarge", "24xlarge", "48xlarge"))
)


def instance_type_for(size: str) -> str:
    """The instance type a neutral size maps to."""
    return SIZE_TO_INSTANCE_TYPE[size]


def size_for_instance_type(instance_type: str) -> str | None:
    """The neutral size an instance type is the mapping of, if any."""
    return next((s for s, t in SIZE_TO_INSTANCE_TYPE.items() if t == instance_type), None)


_ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::\d{12}:role/[\w+=,.@/-]{1,512}")
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")
_ECR_IMAGE = re.compile(
    r"\d{12}\.dkr\.ecr\.[a-z0-9-]+\.amazonaws\.com(\.cn)?/[a-z0-9][a-z0-9._/-]*(:[\w][\w.-]{0,127}|@sha256:[0-9a-f]{64})"
)
_ECR_REPOSITORY = re.compile(r"[a-z0-9]+(?:[._-][a-z0-9]+)*(?:/[a-z0-9]+(?:[._-][a-z0-9]+)*)*")
#: ``image``: the mlshift serving image in your ECR, or AWS's prebuilt framework image.
IMAGE_KINDS: tuple[str, ...] = ("mlshift", "prebuilt")
ImageKind = Literal["mlshift", "prebuilt"]
_FRAMEWORK_VERSION = re.compile(r"[0-9][0-9A-Za-z.-]{0,31}")
_TAG_TEXT = re.compile(r"[\w\s.:/=+\-@]*")
_ENV_KEY = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
#: Fields that look like credentials get a specific answer instead of "unknown field".
_CREDENTIAL_WORDS = ("access_key", "secret", "session_token", "password", "credential")


def check_image_uri(value: str) -> str:
    """Refuse anything SageMaker cannot pull: hosting images come from a private ECR repository.

    Raises:
        ValueError: with the expected form.
    """
    if not _ECR_IMAGE.fullmatch(value):
        raise ValueError(
            f"{value!r} is not an ECR image URI SageMaker can pull; expected "
            "ACCOUNT.dkr.ecr.REGION.amazonaws.com/REPOSITORY:TAG (or @sha256:DIGEST)"
        )
    return value


def check_framework_version(value: str | None) -> str | None:
    """A prebuilt container version as AWS spells it (``1.2-1``).

    Raises:
        ValueError: with the expected form.
    """
    if value is not None and not _FRAMEWORK_VERSION.fullmatch(value):
        raise ValueError(f"{value!r} is not a framework container version (e.g. '1.2-1')")
    return value


def check_image_choice(image: str | None, image_uri: str | None) -> None:
    """``image_uri`` names one image; ``image: prebuilt`` asks for another: not both.

    Raises:
        ValueError: naming both fields.
    """
    if image_uri is not None and image == "prebuilt":
        raise ValueError(
            f"image_uri ({image_uri!r}) and image 'prebuilt' both choose the serving image; "
            "keep one (image takes 'mlshift' or 'prebuilt')"
        )


def check_tags(tags: Mapping[str, str]) -> dict[str, str]:
    """AWS tag rules, plus the ``mlshift:`` and ``aws:`` prefixes being reserved.

    Raises:
        ValueError: naming the offending key.
    """
    for key, value in tags.items():
        if key.lower().startswith(("mlshift:", "aws:")):
            raise ValueError(f"tag key {key!r} uses a reserved prefix ('mlshift:' and 'aws:' are reserved)")
        if not 1 <= len(key) <= 128 or not _TAG_TEXT.fullmatch(key):
            raise ValueError(
                f"tag key {key!r} is not a valid AWS tag key (1-128 letters, digits, spaces and _.:/=+-@)"
            )
        if len(value) > 256 or not _TAG_TEXT.fullmatch(value):
            raise ValueError(
                f"tag {key!r} has an invalid value {value!r} (up to 256 letters, digits, spaces, _.:/=+-@)"
            )
    return dict(tags)


class VpcConfig(SpecModel):
    """Where the model containers run: subnets and security groups of your VPC.

    Attributes:
        subnets: Subnet ids (``subnet-...``), 1 to 16.
        security_group_ids: Security group ids (``sg-...``), 1 to 5.
    """

    subnets: tuple[str, ...] = Field(min_length=1, max_length=16)
    security_group_ids: tuple[str, ...] = Field(min_length=1, max_length=5)

    @field_validator("subnets")
    @classmethod
    def _subnets(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [s for s in value if not re.fullmatch(r"subnet-[0-9a-z]+", s)]
        if bad:
            raise ValueError(f"not subnet ids: {', '.join(bad)} (expected subnet-...)")
        return value

    @field_validator("security_group_ids")
    @classmethod
    def _groups(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        bad = [s for s in value if not re.fullmatch(r"sg-[0-9a-z]+", s)]
        if bad:
            raise ValueError(f"not security group ids: {', '.join(bad)} (expected sg-...)")
        return value


class _ImageOptions(SpecModel):
    """The checks of ``image_uri``, ``image`` and ``framework_version``, on the target and on an
    endpoint alike (each declares the fields, with its own defaults)."""

    @field_validator("image_uri", check_fields=False)
    @classmethod
    def _image(cls, value: str | None) -> str | None:
        return None if value is None else check_image_uri(value)

    @field_validator("framework_version", check_fields=False)
    @classmethod
    def _framework_version(cls, value: str | None) -> str | None:
        return check_framework_version(value)

    @field_validator("image", check_fields=False)
    @classmethod
    def _one_image(cls, value: str | None, info: ValidationInfo) -> str | None:
        check_image_choice(value, info.data.get("image_uri"))  # image_uri is validated first
        return value


class SageMakerOptions(_ImageOptions):
    """Options of a ``sagemaker://REGION`` target.

    Attributes:
        role_arn: The IAM role SageMaker assumes to run models (needed to deploy, not to register).
        bucket: S3 bucket for artifacts, the rollout journal and locks
            (default ``sagemaker-REGION-ACCOUNT``, created on first use as the SageMaker SDK does).
        prefix: Key prefix inside the bucket.
        image_uri: The serving image for every model, as an ECR URI (it wins over ``image``).
        image: ``mlshift`` (default): the mlshift serving image in ``ecr_repository`` of your
            account, tagged with the mlshift version (checked at plan time); ``prebuilt``:
            AWS's prebuilt framework image for the model's framework (scikit-learn only).
        framework_version: With ``image: prebuilt``, the framework container version
            (``1.2-1``; default: the newest the SageMaker SDK knows).
        ecr_repository: The ECR repository holding the mlshift serving image.
        tags: Tags put on every resource mlshift creates (cost centre, owner, ...).
        kms_key_id: KMS key for S3 objects and the endpoints' storage volumes.
        vpc_config: Run model containers inside your VPC.
        profile: A named AWS profile (credentials still come from the standard chain).
        max_attempts: Attempts per AWS call, retries included (botocore standard retry mode).
        poll_interval: Seconds between status checks of a long-running change.
        wait_timeout: Seconds a change may take before ``ProviderTimeout`` (default: what the
            caller allows, 30 minutes for ``apply``).
        lease_seconds: How long an endpoint lock lasts without renewal; a holder that died
            blocks others for at most this long.
        multipart_threshold_mb: Artifacts larger than this are uploaded in parts, in parallel.
        metric_lag: Seconds CloudWatch may take to publish a variant's requests (default 180).
            A rollout that mlshift's engine judges on CloudWatch must bake at least this long;
            the testing kit, which publishes at once, sets 0.
    """

    role_arn: str | None = None
    bucket: str | None = None
    prefix: str = "mlshift"
    image_uri: str | None = None
    image: ImageKind = "mlshift"
    framework_version: str | None = None
    ecr_repository: str = "mlshift-serving"
    tags: dict[str, str] = Field(default_factory=dict)
    kms_key_id: str | None = None
    vpc_config: VpcConfig | None = None
    profile: str | None = None
    max_attempts: int = Field(default=5, ge=1, le=20)
    poll_interval: float = Field(default=10.0, ge=0, le=600)
    wait_timeout: float | None = Field(default=None, gt=0, le=86400)
    lease_seconds: float = Field(default=120.0, ge=1, le=3600)
    multipart_threshold_mb: int = Field(default=64, ge=5, le=5120)
    metric_lag: float = Field(default=180.0, ge=0, le=3600)

    @field_validator("role_arn")
    @classmethod
    def _role(cls, value: str | None) -> str | None:
        if value is not None and not _ROLE_ARN.fullmatch(value):
            raise ValueError(f"{value!r} is not an IAM role ARN; expected arn:aws:iam::ACCOUNT:role/NAME")
        return value

    @field_validator("bucket")
    @classmethod
    def _bucket(cls, value: str | None) -> str | None:
        if value is not None and (not _BUCKET.fullmatch(value) or ".." in value):
            raise ValueError(
                f"{value!r} is not a valid S3 bucket name (3-63 lowercase letters, digits, '.' and '-')"
            )
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        value = value.strip("/")
        if not value or not re.fullmatch(r"[\w!.*'()/-]{1,200}", value):
            raise ValueError(f"{value!r} is not a usable S3 key prefix")
        return value

    @field_validator("ecr_repository")
    @classmethod
    def _repository(cls, value: str) -> str:
        if not _ECR_REPOSITORY.fullmatch(value) or len(value) > 256:
            raise ValueError(f"{value!r} is not a valid ECR repository name")
        return value

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: dict[str, str]) -> dict[str, str]:
        return check_tags(value)

    @classmethod
    def from_sources(
        cls,
        query: Mapping[str, str],
        options: Mapping[str, Any],
        environ: Mapping[str, str] | None = None,
    ) -> SageMakerOptions:
        """Merge the URI query over ``options`` over ``MLSHIFT_SAGEMAKER_*`` variables.

        Raises:
            ConfigError: naming the option (``target.options.<field>``) and the known ones.
        """
        return target_options(
            cls,
            "sagemaker",
            query,
            options,
            environ,
            credential_words=_CREDENTIAL_WORDS,
            credential_kind="an AWS credential",
            credential_hint="use the standard AWS chain: AWS_PROFILE (or the profile option), "
            "environment variables, SSO, or an instance/task role",
        )


class ServerlessOptions(SpecModel):
    """A serverless endpoint: SageMaker starts containers per request and bills per use.

    Attributes:
        memory_mb: Memory per container: 1024 to 6144, in steps of 1024.
        max_concurrency: Requests served at once, 1 to 200.
    """

    memory_mb: int = Field(ge=1024, le=6144)
    max_concurrency: int = Field(ge=1, le=200)

    @field_validator("memory_mb")
    @classmethod
    def _memory(cls, value: int) -> int:
        if value % 1024:
            raise ValueError(f"{value} is not a multiple of 1024 (1024, 2048, ... 6144)")
        return value

    def serverless_config(self) -> dict[str, int]:
        """SageMaker's ``ServerlessConfig`` of a production variant."""
        return {"MemorySizeInMB": self.memory_mb, "MaxConcurrency": self.max_concurrency}


class DataCaptureOptions(SpecModel):
    """Requests and responses of an endpoint sampled to S3 (SageMaker's data capture).

    Attributes:
        s3_uri: Where captures go (default ``s3://BUCKET/PREFIX/data-capture/ENDPOINT``).
        sampling_percent: Percent of requests captured, 0 to 100.
        capture: What is captured: ``input``, ``output`` or both.
    """

    s3_uri: str | None = None
    sampling_percent: int = Field(ge=0, le=100)
    capture: tuple[Literal["input", "output"], ...] = Field(default=("input", "output"), min_length=1)

    @field_validator("s3_uri")
    @classmethod
    def _s3_uri(cls, value: str | None) -> str | None:
        if value is not None:
            bucket = value.removeprefix("s3://").split("/", 1)[0]
            if not value.startswith("s3://") or not _BUCKET.fullmatch(bucket) or len(value) > 512:
                raise ValueError(f"{value!r} is not an S3 URI (s3://BUCKET/PREFIX)")
        return value

    @field_validator("capture")
    @classmethod
    def _capture(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if len(set(value)) != len(value):
            raise ValueError(f"{list(value)} names a mode twice")
        return value

    def data_capture_config(self, default_uri: str, kms_key_id: str | None) -> dict[str, Any]:
        """SageMaker's ``DataCaptureConfig`` of an endpoint configuration."""
        config: dict[str, Any] = {
            "EnableCapture": True,
            "InitialSamplingPercentage": self.sampling_percent,
            "DestinationS3Uri": self.s3_uri or default_uri,
            "CaptureOptions": [{"CaptureMode": mode.capitalize()} for mode in self.capture],
        }
        if kms_key_id:
            config["KmsKeyId"] = kms_key_id
        return config


class EndpointOptions(_ImageOptions):
    """``provider_options.sagemaker`` of an endpoint.

    SageMaker models and endpoint configurations are immutable: a change to these on a live
    endpoint is planned as ``update_options``, which makes a new configuration (and new models
    for a new image or environment) with the same variants and weights.

    Attributes:
        instance_type: An exact instance type for every variant (``ml.c5.xlarge``), instead
            of the one the neutral size maps to.
        image_uri: The serving image for this endpoint's models, as an ECR URI.
        image: ``mlshift`` or ``prebuilt`` for this endpoint's models (default: the
            target's choice; see :class:`SageMakerOptions`).
        framework_version: With ``image: prebuilt``, the framework container version.
        environment: Extra environment variables for the model containers.
        startup_health_check_timeout: Seconds a container may take to answer ``/ping``.
        model_data_download_timeout: Seconds allowed to download the model artifact.
        volume_size_gb: Storage volume per instance.
        serverless: Serve from a serverless endpoint instead of instances.
        data_capture: Sample requests and responses to S3.
    """

    instance_type: str | None = None
    image_uri: str | None = None
    image: ImageKind | None = None
    framework_version: str | None = None
    environment: dict[str, str] = Field(default_factory=dict)
    startup_health_check_timeout: int | None = Field(default=None, ge=60, le=3600)
    model_data_download_timeout: int | None = Field(default=None, ge=60, le=3600)
    volume_size_gb: int | None = Field(default=None, ge=1, le=512)
    serverless: ServerlessOptions | None = None
    data_capture: DataCaptureOptions | None = None

    @field_validator("instance_type")
    @classmethod
    def _instance_type(cls, value: str | None) -> str | None:
        if value is None or value in INSTANCE_TYPES:
            return value
        import difflib

        close = difflib.get_close_matches(value, sorted(INSTANCE_TYPES), n=3, cutoff=0.6)
        near = f"; did you mean {', '.join(close)}?" if close else ""
        raise ValueError(
            f"unknown SageMaker hosting instance type {value!r}{near} "
            "(see docs/targets/sagemaker.md for the list)"
        )

    @field_validator("environment")
    @classmethod
    def _environment(cls, value: dict[str, str]) -> dict[str, str]:
        for key, item in value.items():
            if not _ENV_KEY.fullmatch(key) or len(key) > 1024:
                raise ValueError(f"{key!r} is not a valid environment variable name")
            if key.upper().startswith("MLSHIFT_"):
                raise ValueError(f"{key!r}: variables starting with MLSHIFT_ are set by mlshift")
            if len(item) > 1024:
                raise ValueError(f"the value of {key!r} is longer than SageMaker's 1024 characters")
        return value
