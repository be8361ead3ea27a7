"""``sagemaker://REGION``: the adapter object that ties clients, S3, registry and endpoints."""

from __future__ import annotations

import os
import re
import shutil
import tempfile
import weakref
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlshift.adapter import Adapter, Capability, CaptureReader, MonitoringStorage, NameRules, TargetURI
from mlshift.errors import ConfigError
from mlshift.storage import PrefixedObjectStore
from mlshift_sagemaker._aws import AwsClients
from mlshift_sagemaker._endpoints import SageMakerEndpointService
from mlshift_sagemaker._images import ServingImages
from mlshift_sagemaker._models import SageMakerModelRegistry
from mlshift_sagemaker._naming import NAME_RULES
from mlshift_sagemaker._store import S3ObjectStore
from mlshift_sagemaker.options import SageMakerOptions

if TYPE_CHECKING:
    from mlshift_sagemaker._pipelines import SageMakerPipelineService

__all__ = ["CAPABILITIES", "SageMakerAdapter"]

#: What the SageMaker target declares. ``METRICS`` are CloudWatch reads, for rollouts that
#: mlshift's engine runs instead of SageMaker. ``SHADOW_TRAFFIC``: shadow variants
#: (``ShadowProductionVariants``), their answers compared from data capture.
#: ``IN_PLACE_UPDATE``: an ``UpdateEndpoint`` to a new configuration swaps a variant's model or
#: instances under its name. Pipelines run on
#: SageMaker Pipelines, with conditions as condition steps; schedules are not mapped yet.
#: ``CAPTURE``: the neutral ``capture`` is SageMaker's data capture to S3, read back for monitors.
CAPABILITIES = frozenset(
    {
        Capability.TRAFFIC_SPLIT,
        Capability.TARGETED_INVOKE,
        Capability.IN_PLACE_UPDATE,
        Capability.NATIVE_ROLLOUT,
        Capability.METRICS,
        Capability.SHADOW_TRAFFIC,
        Capability.GPU,
        Capability.AUTOSCALING,
        Capability.SERVERLESS,
        Capability.PIPELINES,
        Capability.PIPELINE_CONDITIONS,
        Capability.CAPTURE,
    }
)

_REGION = re.compile(r"[a-z]{2}(-[a-z]+)+-\d")


class SageMakerAdapter:
    """Adapter for ``sagemaker://REGION``.

    Attributes:
        region: The AWS region.
        options: The validated target options.
        clients: The boto3 clients (made on first use).
        store: The S3 bucket as mlshift uses it.
        cache_dir: Where downloaded artifacts are kept (a temporary folder of this adapter).
        images: The serving images: which one an endpoint gets, checked at plan time.
    """

    name = "sagemaker"
    capabilities: frozenset[Capability] = CAPABILITIES
    name_rules: NameRules = NAME_RULES
    #: Nothing of the target's state is kept on this machine.
    root: None = None

    def __init__(self, uri: TargetURI, region: str, options: SageMakerOptions) -> None:
        self.uri = uri
        self.region = region
        self.options = options
        self.clients = AwsClients(region, options)
        self.store = S3ObjectStore(self.clients, options)
        self.cache_dir = Path(tempfile.mkdtemp(prefix="mlshift-sagemaker-"))
        weakref.finalize(self, shutil.rmtree, self.cache_dir, True)
        self.images = ServingImages(self)
        self._models = SageMakerModelRegistry(self)
        self._endpoints = SageMakerEndpointService(self)
        self._pipelines: Any = None

    @classmethod
    def from_uri(cls, uri: TargetURI, options: Mapping[str, Any], *, base_dir: Path) -> SageMakerAdapter:
        """Build from ``sagemaker://REGION[?option=value&...]`` and the target's options.

        No AWS call is made here: clients are created on first use. ``base_dir`` is not used:
        no option names a local path.

        Raises:
            ConfigError: a missing or malformed region, a path, or an invalid option (named).
        """
        if uri.variant is not None:
            raise ConfigError(
                f"the sagemaker target has no {uri.variant!r} variant (in {uri.raw!r})", field="target"
            )
        if uri.path.strip("/"):
            raise ConfigError(
                f"sagemaker target URIs have no path (got {uri.path!r} in {uri.raw!r})",
                field="target",
                hint="write sagemaker://REGION, e.g. sagemaker://us-east-1",
            )
        region = uri.location or os.environ.get("AWS_REGION") or os.environ.get("AWS_DEFAULT_REGION") or ""
        if not _REGION.fullmatch(region):
            raise ConfigError(
                f"{region!r} is not an AWS region (in {uri.raw!r})"
                if region
                else f"no AWS region in {uri.raw!r}",
                field="target",
                hint="write sagemaker://REGION, e.g. sagemaker://us-east-1",
            )
        return cls(uri, region, SageMakerOptions.from_sources(uri.query, options))

    @property
    def models(self) -> SageMakerModelRegistry:
        return self._models

    @property
    def endpoints(self) -> SageMakerEndpointService:
        return self._endpoints

    @property
    def pipelines(self) -> SageMakerPipelineService:
        """Pipelines on SageMaker (compile, upsert, submit, describe_run, cancel_run, list_runs, run_logs).

        Importing the compiler needs ``mlshift.pipelines``, so it is loaded on first use.
        """
        if self._pipelines is None:
            from mlshift_sagemaker._pipelines import SageMakerPipelineService

            self._pipelines = SageMakerPipelineService(self)
        service: SageMakerPipelineService = self._pipelines
        return service

    def monitoring_store(self) -> PrefixedObjectStore:
        """Monitoring's documents (baselines, monitors, runs) under ``s3://BUCKET/PREFIX/monitoring/``."""
        return PrefixedObjectStore(self.store, self.store.key("monitoring"))

    def monitoring_uri(self, key: str) -> str:
        """``s3://BUCKET/PREFIX/monitoring/KEY``."""
        return self.store.uri(self.store.key("monitoring", key))

    def default_image(self) -> str:
        """The image that runs mlshift code: the ``image_uri`` option, else the mlshift image in ECR.

        Registry entries and pipeline steps use it. An endpoint's models get the image
        :attr:`images` chooses (``image_uri``, ``image: mlshift`` or ``image: prebuilt``).
        """
        return self.options.image_uri or self.images.mlshift_uri()

    def resource_tags(self, extra: Mapping[str, str] | None = None) -> list[dict[str, str]]:
        """AWS tags for a new resource: the target's ``tags`` option plus ``extra``."""
        merged = {**self.options.tags, **(extra or {})}
        return [{"Key": k, "Value": v} for k, v in merged.items()]

    def close(self) -> None:
        """Close the AWS clients (endpoints keep running)."""
        self._endpoints.close()
        self.clients.close()

    def __repr__(self) -> str:
        return f"<SageMakerAdapter {self.uri.raw}>"


if TYPE_CHECKING:
    # mypy checks here that the adapter declares every hook of mlshift's adapter contract.
    _CONTRACT: type[Adapter] = SageMakerAdapter
    _MONITORING: type[MonitoringStorage] = SageMakerAdapter
    _CAPTURE: type[CaptureReader] = SageMakerEndpointService
