"""Endpoints on SageMaker: a model per variant, an endpoint configuration, an endpoint.

Models and endpoint configurations are immutable in SageMaker, so a change of variants is a new
configuration plus ``update_endpoint`` (SageMaker then swaps fleets blue/green), while a change of
weights or instance counts alone is one ``update_endpoint_weights_and_capacities`` call.

Their names carry a hash of what they are made of (:mod:`mlshift_sagemaker._naming`), so the
same variant keeps its model across configurations, and everything mlshift creates is tagged
``mlshift:managed`` and ``mlshift:endpoint``. Whatever a failed change created is deleted before
the error is raised; what a successful change replaced is deleted once the endpoint is on the new
configuration. Nothing is left behind either way.
"""

from __future__ import annotations

import builtins
import contextlib
import hashlib
import json
import logging
import re
import secrets
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from mlshift.adapter import (
    PENDING,
    BaseEndpointService,
    CapturedRequest,
    CompletedOperation,
    EndpointState,
    Invocation,
    MetricsTiming,
    NativeRollout,
    Operation,
    OptionChange,
    PollingOperation,
    ResolvedVariant,
    RolloutRecord,
    ShadowMetrics,
    VariantMetrics,
    VariantState,
    VariantStatus,
    check_replicas_within_autoscaling,
    compare_answers,
    validate_own_options,
)
from mlshift.errors import ConfigError, Conflict, MlshiftError, NotFound, ProviderError, RolloutFailed
from mlshift.specs.endpoint import Autoscaling, Compute, EndpointSpec
from mlshift.specs.model import ModelRef
from mlshift.specs.monitor import CaptureSpec
from mlshift.specs.rollout import AllAtOnce, HealthGate, Shadow
from mlshift_sagemaker._capture import CaptureRecord, pair_records, parse_capture
from mlshift_sagemaker._metrics import read_variant_metrics
from mlshift_sagemaker._naming import config_name, config_prefix, fingerprint, model_name, model_prefix
from mlshift_sagemaker._rollout import (
    alarm_requests,
    check_native_rollout,
    deployment_config,
    native_refusal,
    parse_strategy,
)
from mlshift_sagemaker._scaling import VariantScaling, VariantScalingService
from mlshift_sagemaker.errors import aws_errors, error_code, translate
from mlshift_sagemaker.options import (
    DataCaptureOptions,
    EndpointOptions,
    check_tags,
    instance_type_for,
    size_for_instance_type,
)

if TYPE_CHECKING:
    from mlshift_sagemaker._adapter import SageMakerAdapter

__all__ = ["SageMakerEndpointService"]

logger = logging.getLogger("mlshift.sagemaker")

_STATUS: Mapping[str, VariantStatus] = {
    "InService": "healthy",
    "Creating": "creating",
    "Updating": "creating",
    "SystemUpdating": "creating",
    "RollingBack": "creating",
    "Failed": "failed",
    "UpdateRollbackFailed": "failed",
    "OutOfService": "unhealthy",
    "Deleting": "stopped",
}
#: While these run, the variants of the current configuration keep serving.
_SERVING_WHILE = frozenset({"Updating", "SystemUpdating", "RollingBack"})
_SIZE_TAG = "mlshift:size:"
#: ``InvokeEndpoint``'s longest ``InferenceId``.
MAX_INFERENCE_ID = 64
#: On the endpoint: ``COUNT/CONFIG``, the count last asked for a variant under autoscaling (the
#: live count is the autoscaler's to move, so the spec is compared with this instead).
_REPLICAS_TAG = "mlshift:replicas:"
_RESERVED_TAG = ("mlshift:", "aws:")
_VARIANT_EXTRAS = (
    "ModelDataDownloadTimeoutInSeconds",
    "ContainerStartupHealthCheckTimeoutInSeconds",
    "VolumeSizeInGB",
)
#: ``provider_options.sagemaker`` fields that SageMaker keeps per production variant.
_VARIANT_OPTIONS: Mapping[str, str] = {
    "model_data_download_timeout": "ModelDataDownloadTimeoutInSeconds",
    "startup_health_check_timeout": "ContainerStartupHealthCheckTimeoutInSeconds",
    "volume_size_gb": "VolumeSizeInGB",
}
_HIDDEN = "(hidden)"
#: Container variables mlshift sets itself (AWS's prebuilt images get the ``SAGEMAKER_``
#: ones): not the ``environment`` option, so never a change of it.
_SET_BY_MLSHIFT = (
    "MLSHIFT_",
    "SAGEMAKER_PROGRAM",
    "SAGEMAKER_SUBMIT_DIRECTORY",
    "SAGEMAKER_CONTAINER_LOG_LEVEL",
    "SAGEMAKER_REGION",
)


def _capture_values(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """The ``data_capture`` fields a ``DataCaptureConfig`` amounts to (all ``None``: no capture)."""
    if not config or not config.get("EnableCapture"):
        return {"sampling_percent": None, "s3_uri": None, "capture": None}
    return {
        "sampling_percent": config.get("InitialSamplingPercentage"),
        "s3_uri": config.get("DestinationS3Uri"),
        "capture": tuple(str(o["CaptureMode"]).lower() for o in config.get("CaptureOptions") or []),
    }


#: ``capture`` (the neutral spec) as SageMaker records it: JSON and CSV bodies kept as text, so
#: a monitor reads them without base64 (other types are kept in base64, and decoded too).
CAPTURE_CONTENT_TYPES: Mapping[str, builtins.list[str]] = {
    "JsonContentTypes": ["application/json"],
    "CsvContentTypes": ["text/csv"],
}
#: A stand-in for "the neutral capture the endpoint was last applied with" (read from S3).
_STORED: Any = object()


def sampling_percent(capture: CaptureSpec, name: str) -> int:
    """``capture.sample_rate`` as SageMaker's ``InitialSamplingPercentage`` (a whole percent).

    Raises:
        ConfigError: a rate that is not a whole percent, naming ``capture.sample_rate``.
    """
    percent = capture.sample_rate * 100
    if abs(percent - round(percent)) > 1e-6:
        raise ConfigError(
            f"endpoint {name!r}: capture.sample_rate {capture.sample_rate:g} is {percent:g}% of requests; "
            "SageMaker samples whole percents (InitialSamplingPercentage)",
            field="capture.sample_rate",
            hint=f"use a multiple of 0.01, e.g. {max(round(percent), 1) / 100:g}",
        )
    return round(percent)


def _repository(image: str) -> str:
    """``image`` without its tag or digest (``host:5000/repo:tag`` → ``host:5000/repo``)."""
    name = image.split("@", 1)[0]
    head, _, last = name.rpartition("/")
    return f"{head}/{last.split(':', 1)[0]}" if head else last.split(":", 1)[0]


def _shown(values: Sequence[Any]) -> str | None:
    """Values of one option (one per variant) as a plan shows them: distinct ones, sorted."""
    distinct = {"[" + ", ".join(v) + "]" if isinstance(v, tuple) else str(v) for v in values if v is not None}
    return ", ".join(sorted(distinct)) or None


def _change(field: str, old: Sequence[Any], new: Sequence[Any]) -> builtins.list[OptionChange]:
    if list(old) == list(new):
        return []
    return [OptionChange(field=f"provider_options.sagemaker.{field}", old=_shown(old), new=_shown(new))]


#: In ``endpoints/<name>/options.json``, what stands for the ``environment`` values: their
#: names and a SHA-256 of the names and values. The values may be secrets; they live only in
#: the SageMaker models' container definitions, where the containers need them.
_ENV_DIGEST_FIELD = "environment_sha256"


def _environment_digest(environment: Mapping[str, str]) -> str:
    return "sha256:" + hashlib.sha256(json.dumps(dict(environment), sort_keys=True).encode()).hexdigest()


def _options_document(options: EndpointOptions) -> dict[str, Any]:
    """The options as stored in S3: the environment as a digest, never in plain text."""
    data = options.model_dump(mode="json")
    environment = data.pop("environment", None) or {}
    data["environment"] = {}
    if environment:
        data[_ENV_DIGEST_FIELD] = {"names": sorted(environment), "digest": _environment_digest(environment)}
    return data


@dataclass
class _Slot:
    """One production variant as SageMaker runs it (or will)."""

    name: str
    model_name: str
    model_ref: str
    digest: str | None
    instance_type: str
    count: int
    weight: int
    size: str
    extras: dict[str, Any] = field(default_factory=dict)
    container: dict[str, Any] | None = None
    """For a variant whose model may not exist yet: the model's primary container."""
    serverless: dict[str, Any] | None = None
    """``ServerlessConfig`` of a serverless variant (it then has no instance type or count)."""
    shadow: int = 0
    """Percent of the production variant's requests mirrored to this one: a shadow variant
    (``ShadowProductionVariants``), which carries no traffic of its own."""

    def production_variant(self) -> dict[str, Any]:
        if self.serverless is not None:
            return {
                "VariantName": self.name,
                "ModelName": self.model_name,
                "InitialVariantWeight": float(self.weight),
                "ServerlessConfig": dict(self.serverless),
                **self.extras,
            }
        return {
            "VariantName": self.name,
            "ModelName": self.model_name,
            "InstanceType": self.instance_type,
            "InitialInstanceCount": self.count,
            "InitialVariantWeight": float(self.weight),
            **self.extras,
        }


@dataclass
class _Live:
    """An endpoint as described by SageMaker."""

    name: str
    arn: str
    status: str
    failure: str | None
    config: str
    slots: list[_Slot]
    tags: dict[str, str]
    config_tags: dict[str, str]
    created_at: Any
    scaled: dict[str, VariantScaling] = field(default_factory=dict)

    def slot(self, name: str) -> _Slot | None:
        return next((s for s in self.slots if s.name == name), None)


def _percentages(raw: Mapping[str, float]) -> dict[str, int]:
    """SageMaker's relative weights as whole percentages summing to 100 (largest remainder)."""
    total = sum(raw.values())
    if total <= 0:
        return dict.fromkeys(raw, 0)
    shares = {n: w * 100 / total for n, w in raw.items()}
    out = {n: int(s) for n, s in shares.items()}
    for n in sorted(shares, key=lambda n: shares[n] - out[n], reverse=True)[: 100 - sum(out.values())]:
        out[n] += 1
    return out


def _scaling_of(wanted: Autoscaling) -> VariantScaling:
    return VariantScaling(wanted.min_replicas, wanted.max_replicas, wanted.target_requests_per_replica)


def _check_min_replicas(name: str, scaling: Autoscaling) -> None:
    if scaling.min_replicas < 1:
        raise ConfigError(
            f"endpoint {name!r}: autoscaling.min_replicas is 0; SageMaker real-time variants "
            "keep at least one instance",
            field="autoscaling.min_replicas",
            hint="set min_replicas to 1 or more",
        )


def check_autoscaling(spec: EndpointSpec) -> None:
    """What SageMaker refuses in ``spec.autoscaling`` (plan time).

    Raises:
        ConfigError: naming the field.
    """
    scaling = spec.autoscaling
    assert scaling is not None
    _check_min_replicas(spec.name, scaling)
    check_replicas_within_autoscaling(spec)


def check_shadow(spec: EndpointSpec, options: EndpointOptions) -> None:
    """What SageMaker's shadow variants cannot do, refused at plan time.

    Raises:
        ConfigError: more than one variant wanted, or a serverless endpoint.
    """
    if len(spec.variants) > 1:
        raise ConfigError(
            f"endpoint {spec.name!r}: rollout: SageMaker mirrors one production variant to one shadow "
            f"variant; the spec wants {len(spec.variants)} variants",
            field="rollout",
            hint="shadow a new version on an endpoint with one variant, or use a canary rollout",
        )
    if options.serverless is not None:
        raise ConfigError(
            f"endpoint {spec.name!r}: rollout: SageMaker serverless endpoints take no data capture, "
            "which shadow answers are compared from",
            field="rollout",
            hint="use a canary rollout on a serverless endpoint",
        )


class SageMakerEndpointService(BaseEndpointService):
    """``EndpointService`` on SageMaker real-time endpoints."""

    target_name = "the sagemaker target"

    def __init__(self, adapter: SageMakerAdapter) -> None:
        self._adapter = adapter
        # Endpoint configurations and models never change once created: describe them once.
        self._configs: dict[str, tuple[dict[str, Any], dict[str, str]]] = {}
        self._models: dict[str, dict[str, Any]] = {}
        self._scaler = VariantScalingService(adapter.clients)
        # set_shadow's tolerance per endpoint, for read_shadow's comparisons.
        self._tolerances: dict[str, float] = {}
        # Data capture files read during a shadow phase, by (bucket, key, ETag).
        self._capture_files: dict[tuple[str, str, str], builtins.list[CaptureRecord]] = {}
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- helpers

    @property
    def _sm(self) -> Any:
        return self._adapter.clients.client("sagemaker")

    def _op(self, poll: Any, description: str, hint: str | None = None) -> PollingOperation[Any]:
        options = self._adapter.options
        return PollingOperation(
            poll,
            description,
            interval=options.poll_interval,
            timeout=options.wait_timeout,
            provider="sagemaker",
            hint=hint
            or "it may still finish: see `mlshift endpoints show`, or raise the wait_timeout option",
        )

    def _describe(self, name: str) -> dict[str, Any] | None:
        try:
            with aws_errors(f"describe endpoint {name!r}"):
                found: dict[str, Any] = self._sm.describe_endpoint(EndpointName=name)
        except NotFound:
            return None
        return found

    def _config(self, name: str) -> tuple[dict[str, Any], dict[str, str]]:
        cached = self._configs.get(name)
        if cached is None:
            with aws_errors(f"describe endpoint configuration {name!r}"):
                config = self._sm.describe_endpoint_config(EndpointConfigName=name)
                tags = self._sm.list_tags(ResourceArn=config["EndpointConfigArn"]).get("Tags", [])
            cached = (config, {t["Key"]: t["Value"] for t in tags})
            with self._lock:
                self._configs[name] = cached
        return cached

    def _model(self, name: str) -> dict[str, Any]:
        cached = self._models.get(name)
        if cached is None:
            with aws_errors(f"describe model {name!r}"):
                cached = self._sm.describe_model(ModelName=name)
            with self._lock:
                self._models[name] = cached
        return cached

    def _read(self, name: str) -> _Live | None:
        described = self._describe(name)
        if described is None:
            return None
        with aws_errors(f"read the tags of endpoint {name!r}"):
            tags = self._sm.list_tags(ResourceArn=described["EndpointArn"]).get("Tags", [])
        endpoint_tags = {t["Key"]: t["Value"] for t in tags}
        config, config_tags = self._config(described["EndpointConfigName"])
        live_variants = {v["VariantName"]: v for v in described.get("ProductionVariants") or []}
        scaled = self._scaler.read(name, [pv["VariantName"] for pv in config["ProductionVariants"]])
        raw_weights: dict[str, float] = {}
        slots: list[_Slot] = []
        # A shadow variant's weight is relative to the production variant's: 100 and 25 mirror
        # a quarter of the requests. SageMaker allows one of each in a configuration.
        production_weight = sum(
            float(pv.get("InitialVariantWeight", 1.0)) for pv in config["ProductionVariants"]
        )
        shadows = {
            pv["VariantName"]: round(
                float(pv.get("InitialVariantWeight", 1.0)) * 100 / (production_weight or 1.0)
            )
            for pv in config.get("ShadowProductionVariants") or []
        }
        for pv in [*config["ProductionVariants"], *(config.get("ShadowProductionVariants") or [])]:
            live = live_variants.get(pv["VariantName"], {})
            # moto leaves CurrentWeight out for a 0 weight and sets counts to None after a
            # weights-only update; the configuration holds what was asked for then.
            weight = live.get("CurrentWeight")
            if weight is None:
                weight = live.get("DesiredWeight")
            if weight is None:
                weight = pv.get("InitialVariantWeight", 1.0)
            if pv["VariantName"] not in shadows:
                raw_weights[pv["VariantName"]] = float(weight)
            count = (
                live.get("DesiredInstanceCount")
                or live.get("CurrentInstanceCount")
                or pv.get("InitialInstanceCount", 1)
            )
            if pv["VariantName"] in scaled:
                # The autoscaler moves the live count: compare the spec with what was asked.
                tag = endpoint_tags.get(_REPLICAS_TAG + pv["VariantName"], "")
                asked, _, asked_config = tag.partition("/")
                fresh = asked.isdigit() and asked_config == described["EndpointConfigName"]
                count = int(asked) if fresh else pv.get("InitialInstanceCount", 1)
            env = (self._model(pv["ModelName"]).get("PrimaryContainer") or {}).get("Environment") or {}
            instance_type = pv.get("InstanceType", "")
            serverless = pv.get("ServerlessConfig")
            if serverless:
                count = 1  # a serverless variant has no instances; its spec asks for 1 replica
            size = config_tags.get(_SIZE_TAG + pv["VariantName"]) or size_for_instance_type(instance_type)
            slots.append(
                _Slot(
                    name=pv["VariantName"],
                    model_name=pv["ModelName"],
                    model_ref=env.get("MLSHIFT_MODEL_REF", pv["ModelName"]),
                    digest=env.get("MLSHIFT_MODEL_DIGEST"),
                    instance_type=instance_type,
                    count=max(int(count), 1),
                    weight=0,
                    size=size or "cpu-small",
                    extras={k: pv[k] for k in _VARIANT_EXTRAS if pv.get(k) is not None},
                    serverless=dict(serverless) if serverless else None,
                    # At least 1: a shadow variant mirroring under 0.5% is still a shadow.
                    shadow=max(shadows[pv["VariantName"]], 1) if pv["VariantName"] in shadows else 0,
                )
            )
        percents = _percentages(raw_weights)
        for slot in slots:
            slot.weight = percents.get(slot.name, 0)
        return _Live(
            name=name,
            arn=described["EndpointArn"],
            status=described.get("EndpointStatus", "InService"),
            failure=described.get("FailureReason"),
            config=described["EndpointConfigName"],
            slots=slots,
            tags=endpoint_tags,
            config_tags=config_tags,
            created_at=described.get("CreationTime"),
            scaled=scaled,
        )

    def _require(self, name: str) -> _Live:
        live = self._read(name)
        if live is None:
            raise NotFound(
                f"endpoint {name!r} does not exist on {self._adapter.uri.raw}",
                provider="sagemaker",
                hint="list endpoints with `mlshift endpoints list`",
            )
        return live

    def _require_in_service(self, name: str) -> _Live:
        live = self._require(name)
        if live.status != "InService":
            raise Conflict(
                f"endpoint {name!r} is {live.status}; SageMaker changes endpoints only when InService",
                provider="sagemaker",
                hint="wait for the current change to finish (mlshift endpoints show), then apply again",
            )
        return live

    def _user_tags(self, tags: Mapping[str, str]) -> dict[str, str]:
        target = self._adapter.options.tags
        return {
            k: v
            for k, v in tags.items()
            if not k.startswith(_RESERVED_TAG) and not (k in target and target[k] == v)
        }

    def _state(self, live: _Live) -> EndpointState:
        status = _STATUS.get(live.status, "unknown")
        variant_status: VariantStatus = "healthy" if live.status in _SERVING_WHILE else status
        detail = live.failure if status in ("failed", "unhealthy") else None
        return EndpointState(
            name=live.name,
            url=f"https://runtime.sagemaker.{self._adapter.region}.amazonaws.com/endpoints/{live.name}/invocations",
            status=status,
            variants=tuple(
                VariantState(
                    name=s.name,
                    model=s.model_ref,
                    digest=s.digest,
                    weight=s.weight,
                    compute=Compute(size=s.size, replicas=min(s.count, 100)),
                    status=variant_status,
                    detail=detail,
                )
                for s in live.slots
            ),
            tags=self._user_tags(live.tags),
            created_at=live.created_at,
            spec_digest=live.config_tags.get("mlshift:spec"),
            autoscaling=self._common_scaling(live),
        )

    @staticmethod
    def _common_scaling(live: _Live) -> Autoscaling | None:
        """The endpoint's autoscaling when every variant scales alike (as mlshift sets it)."""
        scalings = {variant: scaling.as_spec() for variant, scaling in live.scaled.items()}
        if not scalings or len(scalings) != len(live.slots):
            return None
        first = next(iter(scalings.values()))
        return first if all(v == first for v in scalings.values()) else None

    # ---------------------------------------------------------------- options

    def _options_key(self, name: str) -> str:
        return self._adapter.store.key("endpoints", name, "options.json")

    def _options_for(self, name: str, own: EndpointOptions | None = None) -> EndpointOptions:
        """The options new variants of ``name`` get: ``own`` when the change carries them (then
        stored, for later changes that do not), else the stored ones."""
        stored_options = self._stored_options(name)
        if own is not None:
            if own != stored_options:
                self._adapter.store.put_json(self._options_key(name), _options_document(own))
            return own
        return stored_options or EndpointOptions()

    def _carried_options(self, name: str, variant: ResolvedVariant) -> EndpointOptions:
        """The options a new variant is made with: its spec's (as the plan recorded them), else
        the endpoint's stored ones."""
        if "sagemaker" not in variant.provider_options:
            return self._options_for(name)
        try:
            options = EndpointOptions.model_validate(variant.provider_options["sagemaker"])
        except ConfigError as exc:  # checked at plan time: only an edited plan gets here
            path = "provider_options.sagemaker" + (f".{exc.field}" if exc.field else "")
            raise ConfigError(
                f"endpoint {name!r}, variant {variant.name!r}: {path}: {exc.detail}", field=path
            ) from None
        return self._options_for(name, options)

    def _stored_options(self, name: str) -> EndpointOptions | None:
        stored = self._adapter.store.get_json(self._options_key(name))
        if not stored:
            return None
        data = dict(stored[0])
        recorded = data.pop(_ENV_DIGEST_FIELD, None)
        if isinstance(recorded, dict):
            data["environment"] = self._environment_matching(name, str(recorded.get("digest")))
        return EndpointOptions.model_validate(data)

    def _environment_matching(self, name: str, digest: str) -> dict[str, str]:
        """The environment values whose digest the options document keeps, read from the
        containers of the endpoint's live models (the values themselves are never stored)."""
        live = self._read(name)
        for slot in live.slots if live is not None else []:
            with contextlib.suppress(MlshiftError):
                environment = self._user_environment(self._container(slot))
                if _environment_digest(environment) == digest:
                    return environment
        return {}

    def _container(self, slot: _Slot) -> dict[str, Any]:
        """The primary container of the model a variant runs (or will run)."""
        if slot.container is not None:
            return slot.container
        return dict(self._model(slot.model_name).get("PrimaryContainer") or {})

    @staticmethod
    def _user_environment(container: Mapping[str, Any]) -> dict[str, str]:
        environment = container.get("Environment") or {}
        return {k: v for k, v in environment.items() if not k.startswith(_SET_BY_MLSHIFT)}

    def _wanted_image(
        self, slot: _Slot, image: str | None, options: EndpointOptions, stored: EndpointOptions | None
    ) -> str | None:
        """The image ``options`` ask for, for variant ``slot`` running ``image``.

        An explicit ``image_uri`` or ``image: prebuilt`` names its image. For the mlshift image a
        variant keeps the one it runs (a newer mlshift does not move live endpoints by itself),
        unless the endpoint was last applied with another choice: then it goes to the mlshift
        image of this target.
        """
        images = self._adapter.images
        choice = images.choice(options)
        if choice.kind == "explicit":
            return choice.uri
        if choice.kind == "prebuilt":
            version = self._adapter.models.get(ModelRef.parse(slot.model_ref))
            return images._prebuilt_uri(
                slot.name, version, choice, slot.instance_type, where=f"variant {slot.name!r}"
            )
        if stored is not None and images.choice(stored).kind != "mlshift":
            return images.mlshift_uri()
        # Also when the stored choice says mlshift but the variant runs another image (a switch
        # back that did not finish): the live image decides, so the next plan shows the move.
        if image is not None and _repository(image) != _repository(images.mlshift_uri()):
            return images.mlshift_uri()
        return image

    def _optioned(
        self, live: _Live, options: EndpointOptions, *, build: bool = True
    ) -> builtins.list[tuple[_Slot, _Slot]]:
        """Each live variant, paired with itself as ``options`` make it (same version, weight, count).

        Mirrors what :meth:`_new_slot` derives from the options; a new image or environment is a
        new SageMaker model of the same version, made by :meth:`_new_slot`. With ``build=False``
        (plan time) such a variant only gets the image and environment it would have: nothing is
        resolved or prepared.
        """
        stored = self._stored_options(live.name)
        settings = {key: getattr(options, option) for option, key in _VARIANT_OPTIONS.items()}
        serverless = None if options.serverless is None else options.serverless.serverless_config()
        pairs: builtins.list[tuple[_Slot, _Slot]] = []
        for slot in live.slots:
            wanted = replace(
                slot,
                instance_type=options.instance_type or instance_type_for(slot.size),
                extras={key: value for key, value in settings.items() if value is not None},
                serverless=serverless,
            )
            container = self._container(slot)
            image = container.get("Image")
            wanted_image = self._wanted_image(slot, image, options, stored)
            if self._user_environment(container) != options.environment or wanted_image != image:
                if build:
                    version = self._adapter.models.get(ModelRef.parse(slot.model_ref))
                    compute = Compute(size=slot.size, replicas=min(slot.count, 100))
                    variant = ResolvedVariant(
                        name=slot.name, model=version, weight=slot.weight, compute=compute
                    )
                    # The variant keeps its image when only its options change (a newer mlshift
                    # image is not slipped in unplanned); a new image is checked as usual.
                    kept = image if wanted_image == image else None
                    fresh = self._new_slot(live.name, variant, options, image=kept)
                    wanted = replace(fresh, count=slot.count, weight=slot.weight)
                else:
                    wanted.container = {"Image": wanted_image, "Environment": dict(options.environment)}
            pairs.append((slot, wanted))
        return pairs

    def _option_diff(
        self, live: _Live, options: EndpointOptions, neutral: Any = _STORED
    ) -> builtins.list[OptionChange]:
        """What applying ``options`` (and the neutral ``capture``) changes in the live
        configuration, its variants and models."""
        changes: builtins.list[OptionChange] = []
        config, _ = self._config(live.config)
        old_capture = _capture_values(config.get("DataCaptureConfig"))
        new_capture = _capture_values(self._data_capture(live.name, options, neutral))
        for key in ("sampling_percent", "s3_uri", "capture"):
            changes += _change(f"data_capture.{key}", [old_capture[key]], [new_capture[key]])
        pairs = self._optioned(live, options, build=False)
        old = [o for o, _ in pairs]
        new = [n for _, n in pairs]
        for key, field_name in (("memory_mb", "MemorySizeInMB"), ("max_concurrency", "MaxConcurrency")):
            changes += _change(
                f"serverless.{key}",
                [(s.serverless or {}).get(field_name) for s in old],
                [(s.serverless or {}).get(field_name) for s in new],
            )
        changes += _change(
            "instance_type",
            [None if s.serverless else s.instance_type for s in old],
            [None if s.serverless else s.instance_type for s in new],
        )
        for option, key in _VARIANT_OPTIONS.items():
            changes += _change(option, [s.extras.get(key) for s in old], [s.extras.get(key) for s in new])
        containers = [(self._container(o), self._container(n)) for o, n in pairs]
        changes += _change(
            "image_uri", [o.get("Image") for o, _ in containers], [n.get("Image") for _, n in containers]
        )
        environments = [(self._user_environment(o), self._user_environment(n)) for o, n in containers]
        for key in sorted({k for o, n in environments for k in (*o, *n)}):
            before, after = [o.get(key) for o, _ in environments], [n.get(key) for _, n in environments]
            if before != after:  # values may be secrets: say that they change, never what they are
                changes.append(
                    OptionChange(
                        field=f"provider_options.sagemaker.environment.{key}",
                        old=_HIDDEN if any(v is not None for v in before) else None,
                        new=_HIDDEN if key in options.environment else None,
                    )
                )
        return changes

    def option_changes(self, spec: EndpointSpec) -> builtins.list[OptionChange]:
        """What ``provider_options.sagemaker`` of ``spec`` changes on the live endpoint (plan time).

        Compared with what is live — the configuration's ``DataCaptureConfig``, each production
        variant, the containers of their models — so options that an earlier change never got
        to apply show too. A spec without a ``sagemaker`` key keeps the endpoint's options.
        Environment values are shown as ``(hidden)``. Reads only.

        Raises:
            ConfigError: ``provider_options.sagemaker`` is invalid.
        """
        if "sagemaker" not in spec.provider_options and spec.capture is None:
            return []
        live = self._read(spec.name)
        if live is None:
            return []
        options = self._wanted_options(spec)
        return self._option_diff(live, options, _STORED if spec.capture is None else spec.capture)

    def _wanted_options(self, spec: EndpointSpec) -> EndpointOptions:
        """``provider_options.sagemaker`` of ``spec``, else the ones the endpoint was applied with."""
        if "sagemaker" not in spec.provider_options:
            return self._stored_options(spec.name) or EndpointOptions()
        options = validate_own_options(spec, "sagemaker", EndpointOptions)
        assert isinstance(options, EndpointOptions)
        return options

    def update_options(self, name: str, spec: EndpointSpec) -> Operation[EndpointState]:
        """Move the endpoint onto a configuration made with ``spec``'s options, then retire the old one.

        Variants keep their model versions, weights and instance counts; a new image or
        environment means new SageMaker models of the same versions. When the live configuration
        has the options already (a variant change of the same apply made it with them), nothing
        is called.

        Raises:
            Conflict: the endpoint is not ``InService``.
            ProviderError: SageMaker rolled the update back (the old configuration serves on).
        """
        what = f"update the provider options of {name}"
        own = "sagemaker" in spec.provider_options
        if not own and spec.capture is None:
            return CompletedOperation(self._settled(name), what)
        options = self._wanted_options(spec)
        live = self._require_in_service(name)
        # Compared (and the new variants made) before the options are stored: which image a
        # variant goes to depends on the choice the endpoint was last applied with.
        changed = bool(self._option_diff(live, options, _STORED if spec.capture is None else spec.capture))
        wanted = [slot for _, slot in self._optioned(live, options)] if changed else []
        if own:
            self._options_for(name, options)  # what later variants get
        self._keep_neutral_capture(name, spec.capture)  # read when the configuration is made
        if not changed:
            return CompletedOperation(self._settled(name), what)
        return self._switch(name, wanted, what, options=options)

    # ---------------------------------------------------------------- building blocks

    def _new_slot(
        self, endpoint: str, variant: ResolvedVariant, options: EndpointOptions, image: str | None = None
    ) -> _Slot:
        version = variant.model
        uri = version.artifact_uri
        if not uri.startswith("s3://") or "/files/" not in uri:
            raise ConfigError(
                f"model {version.name}:{version.version} was not registered on this target "
                f"(artifact {uri!r})",
                hint="register the model on the sagemaker target first",
            )
        cut = uri.index("/files/") + len("/files/")
        prefix, entry = uri[:cut], uri[cut:]
        env = {
            **options.environment,
            "MLSHIFT_MODEL_REF": f"{version.name}:{version.version}",
            "MLSHIFT_MODEL_DIGEST": version.digest,
            "MLSHIFT_FRAMEWORK": version.framework,
            "MLSHIFT_ARTIFACT": "/opt/ml/model/" + entry,
            "MLSHIFT_VARIANT": variant.name,
            **variant.serving_environment(),  # the variant's batching: the same server reads it
        }
        if version.signature is not None:
            signature = version.signature.model_dump_json()
            if len(signature) <= 1024:  # SageMaker's limit per value; else the server infers it
                env["MLSHIFT_SIGNATURE"] = signature
        instance_type = options.instance_type or instance_type_for(variant.compute.size)
        container = self._adapter.images.container(
            endpoint,
            version,
            options,
            environment=env,
            model_data={
                "S3DataSource": {"S3Uri": prefix, "S3DataType": "S3Prefix", "CompressionType": "None"}
            },
            instance_type=None if options.serverless is not None else instance_type,
            image=image,
        )
        identity = {
            "container": container,
            "role": self._adapter.options.role_arn,
            "vpc": self._adapter.options.vpc_config,
        }
        extras: dict[str, Any] = {}
        if options.model_data_download_timeout is not None:
            extras["ModelDataDownloadTimeoutInSeconds"] = options.model_data_download_timeout
        if options.startup_health_check_timeout is not None:
            extras["ContainerStartupHealthCheckTimeoutInSeconds"] = options.startup_health_check_timeout
        if options.volume_size_gb is not None:
            extras["VolumeSizeInGB"] = options.volume_size_gb
        return _Slot(
            name=variant.name,
            model_name=model_name(endpoint, variant.name, fingerprint(identity)),
            model_ref=f"{version.name}:{version.version}",
            digest=version.digest,
            instance_type=instance_type,
            count=variant.compute.replicas,
            weight=variant.weight,
            size=variant.compute.size,
            extras=extras,
            container=container,
            serverless=None if options.serverless is None else options.serverless.serverless_config(),
        )

    def _owned_tags(
        self, endpoint: str, extra: Mapping[str, str] | None = None
    ) -> builtins.list[dict[str, str]]:
        return self._adapter.resource_tags(
            {"mlshift:managed": "true", "mlshift:endpoint": endpoint, **(extra or {})}
        )

    def _ensure_models(self, endpoint: str, slots: Sequence[_Slot]) -> builtins.list[str]:
        """Create the models the slots need; returns the names created now."""
        created: list[str] = []
        options = self._adapter.options
        try:
            for slot in slots:
                if slot.container is None or slot.model_name in self._models:
                    continue
                request: dict[str, Any] = {
                    "ModelName": slot.model_name,
                    "PrimaryContainer": slot.container,
                    "ExecutionRoleArn": self._require_role(),
                    "Tags": self._owned_tags(endpoint, {"mlshift:model": slot.model_ref}),
                }
                if options.vpc_config is not None:
                    request["VpcConfig"] = {
                        "Subnets": list(options.vpc_config.subnets),
                        "SecurityGroupIds": list(options.vpc_config.security_group_ids),
                    }
                self._adapter.images.prepare(slot.container)  # e.g. upload a prebuilt-image package
                try:
                    with aws_errors(f"create model {slot.model_name!r} for {endpoint}/{slot.name}"):
                        self._sm.create_model(**request)
                    created.append(slot.model_name)
                except Conflict:
                    pass  # the same model (same hash) exists already: use it
        except MlshiftError:
            self._delete_models(created)
            raise
        return created

    def _require_role(self) -> str:
        role = self._adapter.options.role_arn
        if role is None:
            raise ConfigError(
                "the sagemaker target needs an IAM role to run models",
                field="target.options.role_arn",
                hint="add role_arn to the target's options (or ?role_arn=... to the URI, or "
                "MLSHIFT_SAGEMAKER_ROLE_ARN)",
            )
        return role

    def _data_capture(
        self, endpoint: str, options: EndpointOptions | None, neutral: Any = _STORED
    ) -> dict[str, Any] | None:
        """The ``DataCaptureConfig`` new configurations of ``endpoint`` get, if any.

        ``provider_options.sagemaker.data_capture`` when set, else the neutral ``capture`` of
        the endpoint (``neutral``; by default the one it was last applied with).
        """
        capture = (options or self._options_for(endpoint)).data_capture
        store = self._adapter.store
        default = store.uri(store.key("data-capture", endpoint))
        kms = self._adapter.options.kms_key_id
        if capture is not None:
            return capture.data_capture_config(default, kms)
        wanted = self._neutral_capture(endpoint) if neutral is _STORED else neutral
        if wanted is None or not wanted.enabled:
            return None
        percent = sampling_percent(wanted, endpoint)
        config = DataCaptureOptions(sampling_percent=percent).data_capture_config(default, kms)
        config["CaptureContentTypeHeader"] = {k: list(v) for k, v in CAPTURE_CONTENT_TYPES.items()}
        return config

    def _capture_key(self, name: str) -> str:
        return self._adapter.store.key("endpoints", name, "capture.json")

    def _neutral_capture(self, name: str) -> CaptureSpec | None:
        """The ``capture`` the endpoint was last applied with (``None``: never given)."""
        stored = self._adapter.store.get_json(self._capture_key(name))
        return None if not stored else CaptureSpec.model_validate(stored[0])

    def _keep_neutral_capture(self, name: str, capture: CaptureSpec | None) -> None:
        """Remember a spec's ``capture``; a spec without one leaves the endpoint's as it is."""
        if capture is not None and capture != self._neutral_capture(name):
            self._adapter.store.put_json(self._capture_key(name), capture.model_dump(mode="json"))

    def _shadow_capture(self, endpoint: str, capture: Mapping[str, Any] | None) -> dict[str, Any]:
        """The ``DataCaptureConfig`` of a configuration with a shadow variant.

        Shadow answers reach no caller: SageMaker records them only through data capture, and
        :meth:`read_shadow` compares them with the production variant's. So while a shadow
        variant runs, every request is captured, input and output, to the endpoint's capture
        location (its ``data_capture.s3_uri``, else mlshift's default); the configuration after
        the shadow phase goes back to the endpoint's own capture settings.
        """
        store = self._adapter.store
        config: dict[str, Any] = {
            "EnableCapture": True,
            "InitialSamplingPercentage": 100,
            "DestinationS3Uri": (capture or {}).get("DestinationS3Uri")
            or store.uri(store.key("data-capture", endpoint)),
            "CaptureOptions": [{"CaptureMode": "Input"}, {"CaptureMode": "Output"}],
        }
        kms = (capture or {}).get("KmsKeyId") or self._adapter.options.kms_key_id
        if kms:
            config["KmsKeyId"] = kms
        return config

    def _create_config(
        self, endpoint: str, slots: Sequence[_Slot], options: EndpointOptions | None = None
    ) -> tuple[str, bool]:
        """Create the configuration for ``slots``; returns its name and whether it is new.

        ``options`` are the endpoint's (default: this apply's, else the stored ones).
        """
        variants = [s.production_variant() for s in slots if not s.shadow]
        production_weight = sum(v["InitialVariantWeight"] for v in variants)
        shadows = [
            {**s.production_variant(), "InitialVariantWeight": production_weight * s.shadow / 100}
            for s in slots
            if s.shadow
        ]
        kms = self._adapter.options.kms_key_id
        sizes = {s.name: s.size for s in slots}
        capture = self._data_capture(endpoint, options)
        if shadows:
            capture = self._shadow_capture(endpoint, capture)
        identity: dict[str, Any] = {"variants": variants, "kms": kms, "sizes": sizes}
        if capture is not None:  # left out when unset, so existing configurations keep their names
            identity["capture"] = capture
        if shadows:
            identity["shadows"] = shadows
        digest = fingerprint(identity)
        name = config_name(endpoint, digest)
        tags = {_SIZE_TAG + s.name: s.size for s in slots}
        tags["mlshift:spec"] = digest[:16]
        request: dict[str, Any] = {
            "EndpointConfigName": name,
            "ProductionVariants": variants,
            "Tags": self._owned_tags(endpoint, tags),
        }
        if shadows:
            request["ShadowProductionVariants"] = shadows
        if kms:
            request["KmsKeyId"] = kms
        if capture is not None:
            request["DataCaptureConfig"] = capture
        try:
            with aws_errors(f"create endpoint configuration {name!r}"):
                self._sm.create_endpoint_config(**request)
        except Conflict:
            return name, False  # same variants, same hash: it exists already
        return name, True

    def _delete_models(self, names: Sequence[str]) -> None:
        for name in names:
            try:
                with aws_errors(f"delete model {name!r}"):
                    self._sm.delete_model(ModelName=name)
            except NotFound:
                pass
            self._models.pop(name, None)

    def _delete_config(self, name: str) -> None:
        try:
            with aws_errors(f"delete endpoint configuration {name!r}"):
                self._sm.delete_endpoint_config(EndpointConfigName=name)
        except NotFound:
            pass
        self._configs.pop(name, None)

    def _config_models(self, name: str) -> set[str]:
        try:
            config, _ = self._config(name)
        except NotFound:
            return set()
        variants = [*config["ProductionVariants"], *(config.get("ShadowProductionVariants") or [])]
        return {pv["ModelName"] for pv in variants}

    def _retire(self, old_config: str, new_config: str) -> None:
        """After a switch: delete the old configuration and the models only it used."""
        if old_config == new_config:
            return
        unused = self._config_models(old_config) - self._config_models(new_config)
        self._delete_config(old_config)
        self._delete_models(sorted(unused))

    def _describe_or_fail(self, name: str, what: str) -> dict[str, Any]:
        described = self._describe(name)
        if described is None:
            raise NotFound(f"{what}: endpoint {name!r} disappeared", provider="sagemaker")
        return described

    def _wait_in_service(self, name: str, what: str) -> Operation[EndpointState]:
        def poll() -> EndpointState | Any:
            described = self._describe_or_fail(name, what)
            status = described.get("EndpointStatus")
            if status == "InService":
                return self._settled(name)
            if status in ("Failed", "UpdateRollbackFailed"):
                reason = described.get("FailureReason") or "no reason given"
                raise ProviderError(
                    f"{what}: endpoint {name!r} is {status}: {reason}",
                    provider="sagemaker",
                    provider_code=status,
                )
            return PENDING

        return self._op(poll, what)

    # ---------------------------------------------------------------- reading

    def list(self) -> builtins.list[EndpointState]:
        names: builtins.list[tuple[str, str]] = []
        with aws_errors("list endpoints"):
            for page in self._sm.get_paginator("list_endpoints").paginate():
                names.extend((e["EndpointName"], e["EndpointArn"]) for e in page.get("Endpoints", []))
        out = []
        for name, arn in sorted(names):
            with aws_errors(f"read the tags of endpoint {name!r}"):
                tags = self._sm.list_tags(ResourceArn=arn).get("Tags", [])
            if not any(t["Key"] == "mlshift:managed" for t in tags):
                continue  # made outside mlshift: not ours to show or change
            state = self.observe(name)
            if state is not None:
                out.append(state)
        return out

    def observe(self, name: str) -> EndpointState | None:
        live = self._read(name)
        return None if live is None else self._state(live)

    def serving(self, model_ref: str) -> builtins.list[str]:
        """``endpoint/variant`` of every variant that serves ``name:version``."""
        return [f"{e.name}/{v.name}" for e in self.list() for v in e.variants if v.model == model_ref]

    def validate(self, spec: EndpointSpec) -> None:
        """Check ``provider_options.sagemaker``, tags, the role, serverless and autoscaling (plan time).

        A rollout SageMaker cannot run natively is not refused here: see
        :meth:`native_rollout_refusal`.

        Raises:
            ConfigError: naming the field.
        """
        options = validate_own_options(spec, "sagemaker", EndpointOptions)
        assert isinstance(options, EndpointOptions)
        own = "sagemaker" in spec.provider_options
        if not own:
            # deploy() and set_traffic() make specs without provider options: the endpoint keeps
            # the ones it was applied with (a serverless endpoint stays serverless).
            options = self._stored_options(spec.name) or options
        try:
            check_tags(spec.tags)
        except ValueError as exc:
            raise ConfigError(f"endpoint {spec.name!r}: tags: {exc}", field="tags") from None
        self._require_role()
        # The serving image exists / fits the models.
        self._adapter.images.check(spec, options, creates_models=lambda: self._creates_models(spec))
        if spec.serverless and options.serverless is None:
            raise ConfigError(
                f"endpoint {spec.name!r}: serverless: SageMaker needs the memory and concurrency of "
                "a serverless endpoint",
                field="provider_options.sagemaker.serverless",
                hint="add provider_options: "
                "{sagemaker: {serverless: {memory_mb: 2048, max_concurrency: 10}}}",
            )
        if options.serverless is not None:
            self._check_serverless(spec, options)
        if spec.capture is not None:
            self._check_capture(spec, options, own)
        if spec.autoscaling is not None:
            check_autoscaling(spec)
        if spec.rollout is not None and spec.rollout.strategy == "shadow":
            check_shadow(spec, options)

    def _check_capture(self, spec: EndpointSpec, options: EndpointOptions, own: bool) -> None:
        """What SageMaker's data capture cannot do with the neutral ``capture`` (plan time).

        Raises:
            ConfigError: a rate that is not a whole percent, a serverless endpoint, or a
                ``provider_options.sagemaker.data_capture`` that says otherwise, naming the field.
        """
        capture = spec.capture
        assert capture is not None
        # Without its own provider options the spec keeps the endpoint's: their data_capture
        # would win over capture, so a disagreement is refused rather than silently ignored.
        where = "provider_options.sagemaker.data_capture" + ("" if own else " the endpoint was applied with")
        if not capture.enabled:
            if options.data_capture is not None:
                raise ConfigError(
                    f"endpoint {spec.name!r}: capture.enabled is false but {where} turns capture on",
                    field="capture.enabled",
                    hint="remove one of them (provider_options: {sagemaker: {}} drops data_capture)",
                )
            return
        percent = sampling_percent(capture, spec.name)
        if options.serverless is not None:
            raise ConfigError(
                f"endpoint {spec.name!r}: capture: SageMaker serverless endpoints take no data capture",
                field="capture",
                hint="capture on an instance-backed endpoint, or remove capture",
            )
        given = options.data_capture
        if given is not None and given.sampling_percent != percent:
            raise ConfigError(
                f"endpoint {spec.name!r}: capture.sample_rate {capture.sample_rate:g} ({percent}%) and "
                f"{where} (sampling_percent {given.sampling_percent}) disagree",
                field="capture.sample_rate",
                hint="give the rate once (data_capture may still choose s3_uri and the modes)",
            )

    def plan_notes(self, spec: EndpointSpec, observed: EndpointState | None) -> builtins.list[str]:
        """What SageMaker does not take of the neutral ``capture`` (it writes its files itself)."""
        capture = spec.capture
        if capture is None or not capture.enabled:
            return []
        ignored = capture.server_settings_set()
        if not ignored:
            return []
        return [
            f"SageMaker writes capture files itself: {' and '.join(ignored)} do not apply there "
            "(its data capture samples requests to S3 and never slows a caller)"
        ]

    def _creates_models(self, spec: EndpointSpec) -> bool:
        """Whether applying ``spec`` may make new SageMaker models (reads only).

        True for a new endpoint, and for a variant whose name or model version is not live
        (a reference that does not resolve yet counts as new: this plan registers it).
        """
        live = self._read(spec.name)
        if live is None:
            return True
        running = {(slot.name, slot.model_ref) for slot in live.slots}
        for variant in spec.variants:
            try:
                version = self._adapter.models.get(variant.model)
            except NotFound:
                return True
            if (variant.name, f"{version.name}:{version.version}") not in running:
                return True
        return False

    def _check_serverless(self, spec: EndpointSpec, options: EndpointOptions) -> None:
        """What SageMaker refuses on a serverless endpoint, named by field (plan time).

        Raises:
            ConfigError: naming the field that conflicts with ``serverless``.
        """
        field_name = "provider_options.sagemaker.serverless"

        def refuse(what: str, where: str, hint: str) -> ConfigError:
            return ConfigError(
                f"endpoint {spec.name!r}: {field_name}: SageMaker serverless endpoints {what}",
                field=where,
                hint=hint,
            )

        if spec.autoscaling is not None:
            raise refuse(
                "scale by themselves and take no autoscaling",
                "autoscaling",
                "remove autoscaling, or serverless to scale instances",
            )
        if len(spec.variants) > 1:
            raise refuse("have one variant", "variants", "split traffic on an instance-backed endpoint")
        compute = spec.compute_for(spec.variants[0])
        where = "variants[0].compute" if spec.variants[0].compute else "compute"
        if compute.size.startswith("gpu"):
            raise refuse(
                f"have no GPUs (size {compute.size!r})",
                f"{where}.size",
                "use a cpu-* size, or drop serverless",
            )
        if compute.replicas != 1:
            raise refuse(
                f"have no instances to count (replicas {compute.replicas})",
                f"{where}.replicas",
                "set replicas to 1; max_concurrency bounds the load instead",
            )
        for name in ("instance_type", "volume_size_gb", "data_capture"):
            if getattr(options, name) is not None:
                raise refuse(
                    f"take no {name}", f"provider_options.sagemaker.{name}", f"remove {name} or serverless"
                )
        if self._adapter.options.vpc_config is not None:
            raise refuse(
                "cannot run in a VPC", "target.options.vpc_config", "use another target without vpc_config"
            )
        if spec.rollout is not None and spec.rollout.strategy in ("canary", "linear"):
            raise refuse(
                f"have no instances for a {spec.rollout.strategy} rollout to shift",
                "rollout",
                "use blue-green or all-at-once",
            )

    # ---------------------------------------------------------------- autoscaling

    def _settled(self, name: str, wanted: Autoscaling | None = None) -> EndpointState:
        """After a change: scale the variants as ``wanted`` (the change's spec) asks, then read
        the endpoint (``None``: their scaling stays as it is)."""
        live = self._require(name)
        if wanted is not None and any(live.scaled.get(s.name) != _scaling_of(wanted) for s in live.slots):
            self._scaler.converge(name, [s.name for s in live.slots], wanted)
            live = self._require(name)
        return self._state(live)

    def autoscaling(self, name: str) -> dict[str, Autoscaling]:
        """Variant name → how it scales, for the variants of ``name`` that autoscale.

        Raises:
            NotFound: no such endpoint.
        """
        live = self._require(name)
        return {variant: scaling.as_spec() for variant, scaling in live.scaled.items()}

    def set_autoscaling(self, name: str, autoscaling: Autoscaling | None) -> Operation[EndpointState]:
        """Scale every variant of ``name`` as ``autoscaling`` says (``None``: stop autoscaling).

        Only what differs from the registered scaling is changed; :meth:`autoscaling` reads it back.

        Raises:
            NotFound: no such endpoint.
            ConfigError: bounds SageMaker cannot take (``min_replicas`` 0).
        """
        live = self._require_in_service(name)
        if autoscaling is not None:
            _check_min_replicas(name, autoscaling)
        self._scaler.converge(name, [s.name for s in live.slots], autoscaling)
        state = self.observe(name)
        assert state is not None
        return CompletedOperation(state, f"set autoscaling of {name}")

    # ---------------------------------------------------------------- changing

    def create(self, spec: EndpointSpec, variants: Sequence[ResolvedVariant]) -> Operation[EndpointState]:
        name = spec.name
        if self._describe(name) is not None:
            raise Conflict(f"endpoint {name!r} already exists", provider="sagemaker")
        options = validate_own_options(spec, "sagemaker", EndpointOptions)
        assert isinstance(options, EndpointOptions)
        slots = [self._new_slot(name, v, options) for v in variants]
        # A new endpoint starts from its own spec: a capture.json left by an endpoint of the
        # same name that was deleted does not count.
        self._adapter.store.delete([self._capture_key(name)])
        self._keep_neutral_capture(name, spec.capture)
        created_models = self._ensure_models(name, slots)
        made: str | None = None
        try:
            the_config, created_config = self._create_config(name, slots, options)
            made = the_config if created_config else None  # an existing one is not ours to delete
            tags = {"mlshift:spec": fingerprint(spec.model_dump(mode="json"))[:16], **spec.tags}
            with aws_errors(f"create endpoint {name!r}"):
                self._sm.create_endpoint(
                    EndpointName=name, EndpointConfigName=the_config, Tags=self._owned_tags(name, tags)
                )
        except BaseException:
            if made is not None:
                self._delete_config(made)
            self._delete_models(created_models)
            raise
        try:
            self._options_for(name, options)  # kept next to the journal, for variants added later
        except MlshiftError as exc:  # the endpoint exists: report it, do not fail its creation
            logger.warning("could not store the options of endpoint %s: %s", name, exc)

        def poll() -> EndpointState | Any:
            described = self._describe_or_fail(name, f"create endpoint {name}")
            status = described.get("EndpointStatus")
            if status == "InService":
                return self._settled(name, spec.autoscaling)
            if status == "Failed":
                reason = described.get("FailureReason") or "no reason given"
                self._remove(name, [the_config])
                self._adapter.store.delete([self._options_key(name), self._capture_key(name)])
                raise ProviderError(
                    f"endpoint {name!r} failed to start and was deleted: {reason}",
                    provider="sagemaker",
                    provider_code="Failed",
                    hint=f"check the model's container logs in CloudWatch (/aws/sagemaker/Endpoints/{name})",
                )
            return PENDING

        return self._op(poll, f"create endpoint {name}")

    def _switch(
        self,
        name: str,
        slots: Sequence[_Slot],
        what: str,
        *,
        deployment: dict[str, Any] | None = None,
        on_finish: Any = None,
        rolled_back: Any = None,
        options: EndpointOptions | None = None,
        scaling: Autoscaling | None = None,
    ) -> Operation[EndpointState]:
        """Move the endpoint onto a new configuration made of ``slots``.

        ``options`` are the endpoint's for the configuration (default: the stored ones);
        ``scaling`` is how its variants scale afterwards (default: as they did).
        """
        live = self._require_in_service(name)
        old_config = live.config
        created_models = self._ensure_models(name, slots)
        new_config: str | None = None
        created_config = False
        try:
            new_config, created_config = self._create_config(name, slots, options)
            if new_config == old_config:
                if on_finish is not None:
                    on_finish()
                return CompletedOperation(self._settled(name, scaling), what)
            request: dict[str, Any] = {"EndpointName": name, "EndpointConfigName": new_config}
            if deployment is not None:
                request["DeploymentConfig"] = deployment
            # SageMaker refuses to drop, or change the instance type of, a variant that scales.
            types = {s.name: s.instance_type for s in slots}
            unscaled = {
                s.name: live.scaled[s.name]
                for s in live.slots
                if s.name in live.scaled and types.get(s.name) != s.instance_type
            }
            if unscaled:
                self._scaler.deregister(name, sorted(unscaled))
            try:
                with aws_errors(f"{what} (update endpoint {name!r})"):
                    self._sm.update_endpoint(**request)
            except BaseException:
                self._scaler.restore(name, unscaled)
                raise
        except BaseException:
            if new_config is not None and created_config:
                self._delete_config(new_config)
            self._delete_models(created_models)
            if on_finish is not None:
                on_finish()
            raise
        target = new_config

        def poll() -> EndpointState | Any:
            described = self._describe_or_fail(name, what)
            status, current = described.get("EndpointStatus"), described.get("EndpointConfigName")
            if status == "InService" and current == target:
                self._retire(old_config, target)
                if on_finish is not None:
                    on_finish()
                if scaling is None:
                    # Variants that kept their name scale as before the change made SageMaker
                    # drop their scaling (a new instance type).
                    self._scaler.restore(name, {v: s for v, s in unscaled.items() if v in types})
                return self._settled(name, scaling)
            if status == "InService" and current == old_config:
                # SageMaker switched back to the old fleet: a failed health check or an alarm.
                reason = described.get("FailureReason") or "SageMaker rolled the update back"
                self._retire(target, old_config)
                self._scaler.restore(name, unscaled)  # the old fleet scales as it did
                if on_finish is not None:
                    on_finish()
                if rolled_back is not None:
                    raise rolled_back(reason)
                raise ProviderError(
                    f"{what}: SageMaker rolled the update of {name!r} back: {reason}",
                    provider="sagemaker",
                    provider_code="RolledBack",
                    hint="the endpoint still serves its previous variants; check the new model's "
                    f"container logs in CloudWatch (/aws/sagemaker/Endpoints/{name})",
                )
            if status in ("Failed", "UpdateRollbackFailed"):
                if on_finish is not None:
                    on_finish()
                reason = described.get("FailureReason") or "no reason given"
                raise ProviderError(
                    f"{what}: endpoint {name!r} is {status}: {reason}",
                    provider="sagemaker",
                    provider_code=status,
                    hint="see the endpoint in the SageMaker console; delete and deploy it again if it "
                    "does not recover",
                )
            return PENDING

        return self._op(poll, what)

    def _slots_with(self, live: _Live, change: _Slot) -> builtins.list[_Slot]:
        return [change if s.name == change.name else s for s in live.slots]

    def add_variant(self, name: str, variant: ResolvedVariant) -> Operation[EndpointState]:
        live = self._require_in_service(name)
        if live.slot(variant.name) is not None:
            raise Conflict(f"endpoint {name!r} already has a variant {variant.name!r}", provider="sagemaker")
        options = self._carried_options(name, variant)
        slot = self._new_slot(name, variant, options)
        slot.weight = 0
        return self._switch(
            name,
            [*live.slots, slot],
            f"add variant {variant.name} to {name}",
            options=options,
            scaling=variant.autoscaling,
        )

    def replace_variant(self, name: str, variant: ResolvedVariant) -> Operation[EndpointState]:
        live = self._require_in_service(name)
        old = live.slot(variant.name)
        if old is None:
            raise NotFound(f"endpoint {name!r} has no variant {variant.name!r}", provider="sagemaker")
        options = self._carried_options(name, variant)
        slot = self._new_slot(name, variant, options)
        slot.weight = old.weight
        return self._switch(
            name,
            self._slots_with(live, slot),
            f"replace the model of {name}/{variant.name}",
            options=options,
            scaling=variant.autoscaling,
        )

    def remove_variant(self, name: str, variant_name: str) -> Operation[EndpointState]:
        live = self._require_in_service(name)
        slot = live.slot(variant_name)
        if slot is None:
            raise NotFound(f"endpoint {name!r} has no variant {variant_name!r}", provider="sagemaker")
        if slot.weight > 0:
            raise Conflict(
                f"variant {variant_name!r} of {name!r} still carries {slot.weight}% of the traffic",
                provider="sagemaker",
                hint="move its traffic to other variants first",
            )
        rest = [s for s in live.slots if s.name != variant_name]
        if not rest:
            raise ConfigError(f"endpoint {name!r} needs at least one variant; delete the endpoint instead")
        return self._switch(name, rest, f"remove variant {variant_name} from {name}")

    def set_weights(self, name: str, weights: Mapping[str, int]) -> Operation[EndpointState]:
        live = self._require_in_service(name)
        names = [s.name for s in live.slots if not s.shadow]
        # A shadow variant carries no traffic of its own: 0 for it is what it has already.
        shadows = {s.name for s in live.slots if s.shadow}
        asked = {n: w for n, w in weights.items() if not (n in shadows and w == 0)}
        unknown = sorted(set(asked) - set(names))
        full = {n: int(asked.get(n, 0)) for n in names}
        if unknown or sum(full.values()) != 100:
            raise ConfigError(
                f"invalid weights {dict(weights)} for endpoint {name!r}: "
                + (
                    f"no variant {', '.join(unknown)}"
                    if unknown
                    else f"they sum to {sum(full.values())}, not 100"
                ),
                field="weights",
            )
        with aws_errors(f"set the weights of {name!r}"):
            self._sm.update_endpoint_weights_and_capacities(
                EndpointName=name,
                DesiredWeightsAndCapacities=[
                    {"VariantName": n, "DesiredWeight": float(w)} for n, w in full.items()
                ],
            )
        return self._wait_in_service(name, f"set the weights of {name}")

    def update_compute(self, name: str, variant_name: str, compute: Compute) -> Operation[EndpointState]:
        live = self._require_in_service(name)
        slot = live.slot(variant_name)
        if slot is None:
            raise NotFound(f"endpoint {name!r} has no variant {variant_name!r}", provider="sagemaker")
        options = self._options_for(name)
        instance_type = options.instance_type or instance_type_for(compute.size)
        if compute.size == slot.size and instance_type == slot.instance_type:
            # Only the instance count changes: no new fleet needed.
            if variant_name in live.scaled:
                asked = {"Key": _REPLICAS_TAG + variant_name, "Value": f"{compute.replicas}/{live.config}"}
                with aws_errors(f"tag endpoint {name!r}"):
                    self._sm.add_tags(ResourceArn=live.arn, Tags=[asked])
            with aws_errors(f"resize {name}/{variant_name}"):
                self._sm.update_endpoint_weights_and_capacities(
                    EndpointName=name,
                    DesiredWeightsAndCapacities=[
                        {"VariantName": variant_name, "DesiredInstanceCount": compute.replicas}
                    ],
                )
            return self._wait_in_service(name, f"resize {name}/{variant_name}")
        changed = replace(slot, instance_type=instance_type, size=compute.size, count=compute.replicas)
        return self._switch(name, self._slots_with(live, changed), f"resize {name}/{variant_name}")

    def update_tags(self, name: str, tags: Mapping[str, str]) -> Operation[EndpointState]:
        try:
            check_tags(tags)
        except ValueError as exc:
            raise ConfigError(f"endpoint {name!r}: tags: {exc}", field="tags") from None
        live = self._require(name)
        current = self._user_tags(live.tags)
        stale = sorted(set(current) - set(tags))
        changed = {k: v for k, v in tags.items() if current.get(k) != v}
        if stale:
            with aws_errors(f"remove tags from {name!r}"):
                self._sm.delete_tags(ResourceArn=live.arn, TagKeys=stale)
        if changed:
            with aws_errors(f"tag endpoint {name!r}"):
                self._sm.add_tags(
                    ResourceArn=live.arn, Tags=[{"Key": k, "Value": v} for k, v in changed.items()]
                )
        return CompletedOperation(self._settled(name), f"update the tags of {name}")

    def _leftover_configs(self, name: str) -> builtins.list[str]:
        """Configurations of ``name`` a crashed process left behind (found by name and tag)."""
        prefix = config_prefix(name)
        pattern = re.compile(re.escape(prefix) + r"[0-9a-f]{12}")
        found: builtins.list[str] = []
        with aws_errors(f"list the configurations of {name!r}"):
            for page in self._sm.get_paginator("list_endpoint_configs").paginate(NameContains=prefix):
                for item in page.get("EndpointConfigs", []):
                    if not pattern.fullmatch(item["EndpointConfigName"]):
                        continue
                    tags = self._sm.list_tags(ResourceArn=item["EndpointConfigArn"]).get("Tags", [])
                    if {"Key": "mlshift:endpoint", "Value": name} in tags:
                        found.append(item["EndpointConfigName"])
        return found

    def _leftover_models(self, name: str) -> builtins.list[str]:
        prefix = model_prefix(name)
        found: builtins.list[str] = []
        with aws_errors(f"list the models of {name!r}"):
            for page in self._sm.get_paginator("list_models").paginate(NameContains=prefix):
                for item in page.get("Models", []):
                    if not item["ModelName"].startswith(prefix):
                        continue
                    tags = self._sm.list_tags(ResourceArn=item["ModelArn"]).get("Tags", [])
                    if {"Key": "mlshift:endpoint", "Value": name} in tags:
                        found.append(item["ModelName"])
        return found

    def _start_removal(self, name: str) -> None:
        try:
            with aws_errors(f"delete endpoint {name!r}"):
                self._sm.delete_endpoint(EndpointName=name)
        except NotFound:
            pass

    def _finish_removal(self, name: str, configs: Sequence[str]) -> None:
        """Once the endpoint is gone: every configuration and model it used or left behind."""
        all_configs = sorted({*configs, *self._leftover_configs(name)})
        models: set[str] = set()
        for config in all_configs:
            models |= self._config_models(config)
            self._delete_config(config)
        self._delete_models(sorted(models | set(self._leftover_models(name))))

    def _remove(self, name: str, configs: Sequence[str]) -> None:
        """Delete the endpoint, then every configuration and model it used or left behind."""
        self._start_removal(name)
        deadline = time.monotonic() + (self._adapter.options.wait_timeout or 1800.0)
        while self._describe(name) is not None:
            if time.monotonic() > deadline:
                raise ProviderError(f"endpoint {name!r} is still being deleted", provider="sagemaker")
            time.sleep(self._adapter.options.poll_interval)
        self._finish_removal(name, configs)

    def delete(self, name: str) -> Operation[None]:
        """Start deleting at once (scaling policies, then the endpoint); the operation finishes
        when SageMaker has removed it, by deleting its configurations, models and S3 documents."""
        live = self._require(name)
        if live.scaled:  # before the endpoint goes, as SageMaker asks
            self._scaler.deregister(name, sorted(live.scaled))
        self._start_removal(name)

        def poll() -> Any:
            if self._describe(name) is not None:
                return PENDING
            self._finish_removal(name, [live.config])
            store = self._adapter.store
            store.journal.clear(name)
            store.delete([self._options_key(name), self._capture_key(name)])
            return None

        return self._op(poll, f"delete endpoint {name}")

    # ---------------------------------------------------------------- invoking

    def invoke(
        self,
        name: str,
        body: bytes,
        content_type: str = "application/json",
        *,
        variant: str | None = None,
        timeout: float = 60.0,
        request_id: str | None = None,
    ) -> Invocation:
        """Invoke through ``sagemaker-runtime`` (``TargetVariant`` for one variant).

        ``request_id`` is the ``InferenceId``: data capture records the request under it
        (``eventMetadata.inferenceId``), which is the id labels are joined on.

        A model's own error (SageMaker's ``ModelError``) comes back as an invocation with the
        model server's status code and body, as on every other target.

        Raises:
            ConfigError: a ``request_id`` longer than SageMaker's 64 characters.
        """
        request: dict[str, Any] = {
            "EndpointName": name,
            "Body": body,
            "ContentType": content_type,
            "Accept": "application/json",
        }
        if variant is not None:
            request["TargetVariant"] = variant
        if request_id is not None:
            if len(request_id) > MAX_INFERENCE_ID:
                raise ConfigError(
                    f"request_id {request_id!r} is longer than SageMaker's InferenceId "
                    f"({MAX_INFERENCE_ID} characters)",
                    field="request_id",
                    hint=f"use an id of at most {MAX_INFERENCE_ID} characters on sagemaker://",
                )
            request["InferenceId"] = request_id
        start = time.perf_counter()
        runtime = self._adapter.clients.client("sagemaker-runtime")
        try:
            response = runtime.invoke_endpoint(**request)
            content = response["Body"].read()
        except Exception as exc:
            if error_code(exc) == "ModelError":
                data: dict[str, Any] = getattr(exc, "response", {})
                original = data.get("OriginalMessage") or data.get("Error", {}).get("Message", "")
                return Invocation(
                    status_code=int(data.get("OriginalStatusCode") or 500),
                    body=str(original).encode(),
                    content_type="application/json",
                    variant=variant,
                    latency_ms=(time.perf_counter() - start) * 1000,
                    request_id=request_id,
                )
            if type(exc).__module__.startswith("botocore"):
                raise translate(
                    exc, f"invoke endpoint {name!r}" + (f" variant {variant!r}" if variant else "")
                ) from exc
            raise
        return Invocation(
            status_code=200,
            body=content,
            content_type=response.get("ContentType", "application/json"),
            variant=response.get("InvokedProductionVariant") or variant,
            latency_ms=(time.perf_counter() - start) * 1000,
            request_id=request_id,
        )

    @property
    def metrics_timing(self) -> MetricsTiming:
        """CloudWatch: one datapoint a minute, published up to ``metric_lag`` seconds late."""
        return MetricsTiming(resolution=60.0, lag=self._adapter.options.metric_lag)

    def read_metrics(self, name: str, variant: str, window: float) -> VariantMetrics | None:
        """Requests, 5xx errors and latency of one variant from CloudWatch (``AWS/SageMaker``).

        CloudWatch has one datapoint a minute, so the window is widened to the whole minutes it
        touches, and on AWS the last one to three minutes are not published yet: the rollout
        engine sees traffic late, so give bakes several minutes on this target. ``ModelLatency``
        (microseconds) is returned in milliseconds.

        Raises:
            ProviderError: CloudWatch refused (``cloudwatch:GetMetricData`` is needed).
        """
        with aws_errors(f"read the CloudWatch metrics of {name!r} variant {variant!r}"):
            return read_variant_metrics(self._adapter.clients.client("cloudwatch"), name, variant, window)

    # ---------------------------------------------------------------- shadow variants

    def set_shadow(
        self, name: str, variant: str, percent: int, *, tolerance: float = 0.01
    ) -> Operation[EndpointState]:
        """Make ``variant`` a SageMaker shadow variant mirroring ``percent`` of requests (0: stop).

        A new configuration with the serving variant in ``ProductionVariants`` and ``variant``
        in ``ShadowProductionVariants`` (weighted ``percent`` of the production weight), with
        data capture of every request so :meth:`read_shadow` can compare answers. SageMaker
        mirrors from exactly one production variant, so the endpoint must have exactly one
        other variant. ``0`` puts the variant back among the production variants at 0%.

        Raises:
            NotFound: no such variant.
            ConfigError: the endpoint has more than one other variant, or the variant carries
                traffic.
        """
        live = self._require_in_service(name)
        slot = live.slot(variant)
        if slot is None:
            raise NotFound(f"endpoint {name!r} has no variant {variant!r}", provider="sagemaker")
        with self._lock:
            self._tolerances[name] = tolerance
        if percent <= 0:
            if not slot.shadow:
                return CompletedOperation(self._state(live), f"stop mirroring to {name}/{variant}")
            slots = [replace(s, shadow=0, weight=0) if s.name == variant else s for s in live.slots]
            return self._switch(name, slots, f"stop mirroring to {name}/{variant}")
        others = [s for s in live.slots if s.name != variant]
        if len(others) != 1 or slot.weight > 0:
            raise ConfigError(
                f"endpoint {name!r}: SageMaker mirrors one production variant to one shadow variant; "
                f"it has {', '.join(f'{s.name} ({s.weight}%)' for s in live.slots)}",
                field="rollout",
                hint="shadow a new version on an endpoint with one serving variant",
            )
        if slot.serverless is not None or others[0].serverless is not None:
            raise ConfigError(
                f"endpoint {name!r}: SageMaker serverless endpoints take no data capture, which "
                "shadow answers are compared from",
                field="rollout",
                hint="use a canary rollout on a serverless endpoint",
            )
        if slot.shadow == percent:
            return CompletedOperation(self._state(live), f"mirror {percent}% of {name} to {variant}")
        shadowed = replace(slot, shadow=min(percent, 100), weight=0)
        return self._switch(name, [others[0], shadowed], f"mirror {percent}% of {name} to {variant}")

    def read_shadow(self, name: str, variant: str, window: float) -> ShadowMetrics | None:
        """What the shadow ``variant`` did over the last ``window`` seconds.

        Requests, errors and latency come from CloudWatch (SageMaker publishes them per
        variant, shadow variants included); the comparison of answers from the data capture
        records in S3, where a mirrored request's record (under the shadow variant) is paired
        with the production variant's record of the same request by ``eventId`` (else by
        identical input, closest in time). The serving variant's 4xx count is its 4xx share over
        the window applied to the mirrored requests: CloudWatch does not split it by request.

        Raises:
            ProviderError: S3 or CloudWatch refused.
        """
        live = self._read(name)
        slot = None if live is None else live.slot(variant)
        if live is None or slot is None or not slot.shadow:
            return None
        production = next((s.name for s in live.slots if not s.shadow), None)
        if production is None:
            return None
        config, _ = self._config(live.config)
        destination = (config.get("DataCaptureConfig") or {}).get("DestinationS3Uri")
        since = datetime.now(timezone.utc) - timedelta(seconds=window)
        tolerance = self._tolerances.get(name, 0.01)
        rows = agreed = 0
        mirrored = 0
        if destination:
            shadow_records = self._capture_records(destination, name, variant, since)
            mirrored = len(shadow_records)
            for primary, answer in pair_records(
                self._capture_records(destination, name, production, since), shadow_records
            ):
                compared, same = compare_answers(primary, answer, tolerance)
                rows, agreed = rows + compared, agreed + same
        shadow_m = self.read_metrics(name, variant, window)
        base_m = self.read_metrics(name, production, window)
        requests = shadow_m.requests if shadow_m is not None else mirrored
        base_rate = base_m.client_errors / base_m.requests if base_m is not None and base_m.requests else 0.0
        return ShadowMetrics(
            variant=variant,
            window_seconds=window,
            requests=max(requests, mirrored),
            errors=shadow_m.errors if shadow_m is not None else 0,
            client_errors=shadow_m.client_errors if shadow_m is not None else 0,
            baseline_client_errors=round(base_rate * max(requests, mirrored)),
            rows=rows,
            agreed_rows=agreed,
            p99_ms=shadow_m.p99_ms if shadow_m is not None else None,
            baseline_p99_ms=base_m.p99_ms if base_m is not None else None,
        )

    def _capture_records(
        self, destination: str, endpoint: str, variant: str, since: datetime
    ) -> builtins.list[CaptureRecord]:
        """The data capture records of ``endpoint``/``variant`` made at or after ``since``."""
        bucket, _, prefix = destination.removeprefix("s3://").partition("/")
        folder = "/".join(p for p in (prefix.strip("/"), endpoint, variant) if p) + "/"
        s3 = self._adapter.clients.client("s3")
        records: list[CaptureRecord] = []
        seen: dict[tuple[str, str, str], builtins.list[CaptureRecord]] = {}
        # Keys are .../YYYY/MM/DD/HH/file.jsonl: start listing at the hour ``since`` falls in.
        start_after = folder + since.strftime("%Y/%m/%d/%H")
        with aws_errors(f"read the data capture of {endpoint}/{variant} in {destination}"):
            for page in s3.get_paginator("list_objects_v2").paginate(
                Bucket=bucket, Prefix=folder, StartAfter=start_after
            ):
                for item in page.get("Contents", []):
                    # A shadow phase reads its files again every poll: each is fetched once.
                    key = (bucket, item["Key"], str(item.get("ETag", "")))
                    parsed = self._capture_files.get(key)
                    if parsed is None:
                        body = s3.get_object(Bucket=bucket, Key=item["Key"])["Body"].read()
                        parsed = list(parse_capture(body))
                    seen[key] = parsed
                    records.extend(r for r in parsed if r.time >= since)
        with self._lock:
            # Keep what this listing saw, plus other folders' files (the other variant's).
            kept = {k: v for k, v in self._capture_files.items() if not k[1].startswith(folder)}
            self._capture_files = {**kept, **seen}
        return records

    # ---------------------------------------------------------------- reading capture back

    def _live_capture(self, name: str) -> dict[str, Any] | None:
        live = self._read(name)
        if live is None:
            return None
        config, _ = self._config(live.config)
        return dict(config.get("DataCaptureConfig") or {})

    def capture_settings(self, name: str) -> CaptureSpec | None:
        """The live configuration's data capture in neutral terms (``None``: it does not
        capture requests, or the endpoint does not exist)."""
        capture = self._live_capture(name) or {}
        modes = {str(o.get("CaptureMode", "")).lower() for o in capture.get("CaptureOptions") or []}
        percent = int(capture.get("InitialSamplingPercentage") or 0)
        if not capture.get("EnableCapture") or "input" not in modes or percent <= 0:
            return None
        return CaptureSpec(sample_rate=percent / 100)

    def capture_location(self, name: str) -> str:
        """Where the data capture of ``name`` goes (``s3://BUCKET/PREFIX``; files are under
        ``ENDPOINT/VARIANT/YYYY/MM/DD/HH/`` there): the live configuration's destination, else
        the stored ``data_capture.s3_uri``, else ``s3://BUCKET/PREFIX/data-capture/ENDPOINT``."""
        destination = (self._live_capture(name) or {}).get("DestinationS3Uri")
        if destination:
            return str(destination)
        stored = self._stored_options(name)
        if stored is not None and stored.data_capture is not None and stored.data_capture.s3_uri:
            return stored.data_capture.s3_uri
        store = self._adapter.store
        return store.uri(store.key("data-capture", name))

    def read_capture(self, name: str, *, since: datetime, until: datetime) -> Iterator[CapturedRequest]:
        """The records SageMaker wrote for ``name`` in ``(since, until]``, variant by variant.

        Only hour folders from ``since``'s hour on are listed (a file is written after the
        requests it holds, so none of them is in an earlier folder). A request's id is the
        caller's ``InferenceId`` when it gave one, else SageMaker's event id; records name the
        variant, not the model version (``CapturedRequest.model`` is ``None``).

        Raises:
            ProviderError: S3 refused a read (a bucket that does not exist holds nothing).
        """
        destination = self.capture_location(name)
        bucket, _, prefix = destination.removeprefix("s3://").partition("/")
        folder = "/".join(p for p in (prefix.strip("/"), name) if p) + "/"
        s3 = self._adapter.clients.client("s3")
        hour = since.astimezone(timezone.utc).strftime("%Y/%m/%d/%H")
        try:
            with aws_errors(f"list the data capture of {name} in {destination}"):
                pages = s3.get_paginator("list_objects_v2").paginate(
                    Bucket=bucket, Prefix=folder, Delimiter="/"
                )
                variants = sorted(p["Prefix"] for page in pages for p in page.get("CommonPrefixes", []))
        except NotFound:
            return  # no bucket yet: nothing was captured
        for variant_folder in variants:
            variant = variant_folder[len(folder) :].strip("/")
            with aws_errors(f"list the data capture of {name}/{variant} in {destination}"):
                pages = s3.get_paginator("list_objects_v2").paginate(
                    Bucket=bucket, Prefix=variant_folder, StartAfter=variant_folder + hour
                )
                keys = [item["Key"] for page in pages for item in page.get("Contents", [])]
            for key in keys:
                with aws_errors(f"read s3://{bucket}/{key}"):
                    body = s3.get_object(Bucket=bucket, Key=key)["Body"].read()
                for record in parse_capture(body):
                    if since < record.time <= until:
                        yield CapturedRequest(
                            request_id=record.inference_id or record.event_id,
                            endpoint=name,
                            variant=variant,
                            timestamp=record.time,
                            content_type=record.input_type or "application/json",
                            request=record.input,
                            response=record.output,
                        )

    # ---------------------------------------------------------------- journal and lock

    def record_rollout(self, record: RolloutRecord) -> None:
        """Journal in S3 (core's :class:`~mlshift.storage.RolloutJournal`).

        Raises:
            LeaseLost: this process lost the endpoint's lock while changing it.
        """
        self._adapter.store.journal.record(record)

    def rollouts(self, name: str, limit: int = 20) -> builtins.list[RolloutRecord]:
        return self._adapter.store.journal.records(name, limit)

    def lock(self, name: str, *, owner: str, timeout: float) -> AbstractContextManager[None]:
        """A lease in S3 (``locks/<name>.json``, core's :class:`~mlshift.storage.LeaseLock`): taken
        with a conditional write, renewed while held, expired if its holder dies
        (``lease_seconds``); losing it stops the apply with ``LeaseLost``."""
        return self._adapter.store.leases.hold(name, owner=owner, timeout=timeout)

    # ---------------------------------------------------------------- native rollouts

    def native_rollout_refusal(self, spec: EndpointSpec, observed: EndpointState | None) -> str | None:
        """Why SageMaker's blue/green guardrails cannot run this rollout (``None``: they can).

        Variants that change names, probe gates and rollouts past SageMaker's limits (a canary
        over 50%, linear steps outside 10-50%, waits over an hour, more than 10 alarms) go to
        mlshift's own engine instead, which the plan shows with this reason. Reads nothing.
        """
        if spec.rollout is None:
            return None
        live = None if observed is None else [v.name for v in observed.variants]
        return native_refusal(spec.rollout, [v.name for v in spec.variants], live)

    def _client_error_rates(self, name: str, variants: Sequence[str], gate: HealthGate) -> dict[str, float]:
        """Each variant's 4xx share over the hour before a rollout: what the new fleet is judged
        against (the old and new fleets of a blue/green update share the variant's metrics)."""
        if gate.max_client_error_increase is None:
            return {}
        cloudwatch = self._adapter.clients.client("cloudwatch")
        rates: dict[str, float] = {}
        for variant in variants:
            with aws_errors(f"read the metrics of {name}/{variant}"):
                m = read_variant_metrics(cloudwatch, name, variant, 3600)
            rates[variant] = m.client_errors / m.requests if m.requests else 0.0
        return rates

    def native_rollout(self, name: str, rollout: NativeRollout) -> Operation[EndpointState]:
        """A blue/green update with traffic shifting and alarms that roll it back by themselves.

        Raises:
            RolloutFailed: SageMaker rolled it back (an alarm fired, or the new fleet failed).
        """
        strategy = parse_strategy(rollout.strategy)
        live = self._require_in_service(name)
        wanted = list(rollout.final_weights)
        check_native_rollout(name, strategy, wanted, [s.name for s in live.slots])
        assert not isinstance(strategy, Shadow)  # refused just above
        carrier = rollout.candidates[0] if rollout.candidates else None
        options = self._carried_options(name, carrier) if carrier else self._options_for(name)
        candidates = {c.name: c for c in rollout.candidates}
        slots: builtins.list[_Slot] = []
        for slot in live.slots:
            if slot.name in candidates:
                slot = self._new_slot(name, candidates[slot.name], options)
            slots.append(replace(slot, weight=rollout.final_weights.get(slot.name, 0)))
        cloudwatch = self._adapter.clients.client("cloudwatch")
        run_id = secrets.token_hex(4)
        requests = (
            []
            if isinstance(strategy, AllAtOnce)
            else alarm_requests(
                name,
                [s.name for s in slots],
                strategy.gate,
                run_id,
                self._owned_tags(name),
                self._client_error_rates(name, [s.name for s in slots], strategy.gate),
            )
        )
        alarms: builtins.list[str] = []

        def remove_alarms() -> None:
            if alarms:
                try:
                    with aws_errors(f"delete the rollout alarms of {name!r}"):
                        cloudwatch.delete_alarms(AlarmNames=list(alarms))
                except MlshiftError as exc:  # the rollout's outcome matters more than the cleanup
                    logger.warning("could not delete alarms %s: %s", alarms, exc)
                alarms.clear()

        try:
            for request in requests:
                with aws_errors(f"create alarm {request['AlarmName']!r}"):
                    cloudwatch.put_metric_alarm(**request)
                alarms.append(request["AlarmName"])
        except BaseException:
            remove_alarms()
            raise
        deployment = None if isinstance(strategy, AllAtOnce) else deployment_config(strategy, alarms)

        def failed(reason: str) -> RolloutFailed:
            return RolloutFailed(
                f"SageMaker rolled back the {strategy.strategy} rollout of {name!r}: {reason}",
                reason=reason,
                hint=f"the previous version serves all traffic again; see `mlshift endpoints history {name}`",
            )

        return self._switch(
            name,
            slots,
            f"roll out {', '.join(sorted(candidates))} to {name} ({strategy.strategy})",
            deployment=deployment,
            on_finish=remove_alarms,
            rolled_back=failed,
            options=options,
            scaling=carrier.autoscaling if carrier else None,
        )

    def close(self) -> None:
        self._configs.clear()
        self._models.clear()
