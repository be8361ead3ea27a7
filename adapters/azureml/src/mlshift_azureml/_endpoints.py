"""Endpoints on Azure ML: managed online endpoints, a deployment per variant, weights as ``traffic``.

- A variant is an online deployment of the same name; its model is a workspace model version;
  it runs the mlshift serving image as a custom container (``options.image_uri``, by default
  the mlshift image in the workspace's registry) or a workspace environment
  (``options.environment``).
- Weights are the endpoint's ``traffic`` (summing to 100). Azure applies a traffic change
  eventually: after each change mlshift reads the endpoint until the new traffic shows.
- Azure refuses a change while the endpoint is "Updating": every change first waits for the
  endpoint to be idle (up to ``wait_timeout``), so changes are serialized.
- A deployment that never becomes healthy is deleted again and reported with the container's
  last log lines (:class:`~mlshift_azureml.errors.DeploymentUnhealthy`).
- ``predict`` posts to the endpoint's scoring URI with its key; ``azureml-model-deployment``
  targets one deployment, and the same response header names the one that answered.
- Metrics for rollout gates come from Azure Monitor (``RequestsPerMinute`` split by deployment
  and status, ``RequestLatency_P99``): one datapoint a minute, some minutes late.
- Shadows are the endpoint's ``mirror_traffic`` (one deployment, at most 50%, never one that
  takes live traffic; only requests without the ``azureml-model-deployment`` header are
  mirrored). Azure discards mirrored answers, so the shadow mode is ``mirror-only``: a shadow is
  judged on its own Azure Monitor numbers against the live deployments' over the same window.
- Autoscaling is an Azure Monitor autoscale setting per deployment (:mod:`._scaling`); the
  endpoint carries the tag ``mlshift:autoscale`` while mlshift keeps any, so that endpoints
  without autoscaling cost no read (nor a Monitor role) to observe.
- ``capture`` is each deployment's data collector: payload logging (the ``request`` and
  ``response`` collections) at ``sampling_rate``, written by Azure to ``workspaceblobstore``
  and read back for monitors (:mod:`._capture`). A spec without ``capture`` keeps the
  endpoint's: new deployments get what the live ones have.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import re
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

from mlshift.adapter import (
    BaseEndpointService,
    CapturedRequest,
    CompletedOperation,
    EndpointState,
    Invocation,
    MetricsTiming,
    Operation,
    OptionChange,
    ResolvedVariant,
    RolloutRecord,
    ShadowMetrics,
    ShadowMode,
    VariantMetrics,
    VariantState,
    VariantStatus,
    check_replicas_within_autoscaling,
    validate_own_options,
)
from mlshift.errors import ConfigError, Conflict, MlshiftError, NotFound
from mlshift.specs.endpoint import Autoscaling, Compute, EndpointSpec
from mlshift.specs.monitor import CaptureSpec
from mlshift_azureml._capture import COLLECTIONS, COLLECTOR_DATASTORE, COLLECTOR_FOLDER, parse_payloads
from mlshift_azureml._scaling import DeploymentScaling, DeploymentScalingService, check_autoscaling
from mlshift_azureml.errors import PROVIDER, DeploymentUnhealthy, EndpointBusy, azure_errors, error_code
from mlshift_azureml.options import SIZE_TO_INSTANCE_TYPE, EndpointOptions, instance_type_for

if TYPE_CHECKING:
    from mlshift_azureml._adapter import AzureMLAdapter

__all__ = ["SERVING_PORT", "AzureMLEndpointService"]

#: The port the mlshift serving image listens on inside the container.
SERVING_PORT = 8080
_RESERVED = "mlshift:"
_SIZE, _DIGEST, _MODEL = "mlshift:size", "mlshift:digest", "mlshift:model"
#: On a deployment: the instance count mlshift asked for (an autoscaler moves the live one).
_REPLICAS = "mlshift:replicas"
#: On an endpoint: some of its deployments may have an autoscale setting of mlshift's.
_AUTOSCALE = "mlshift:autoscale"
_STATUS: Mapping[str, VariantStatus] = {
    "succeeded": "healthy",
    "creating": "creating",
    "updating": "creating",
    "scaling": "healthy",
    "failed": "failed",
    "deleting": "stopped",
    "canceled": "failed",
}
_BUSY_STATES = ("creating", "updating", "deleting")
#: Azure mirrors at most this share of an endpoint's traffic.
MAX_MIRROR_PERCENT = 50
_MODEL_ID = re.compile(r"/models/([^/]+)/versions/([^/]+)$")


def _fingerprint(data: Any) -> str:
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()


def _capture_of(deployment: Any) -> CaptureSpec | None:
    """A deployment's data collector in neutral terms (``None``: it logs no request payloads)."""
    collector = getattr(deployment, "data_collector", None)
    collections = getattr(collector, "collections", None) or {}
    request = collections.get("request")
    if request is None or str(getattr(request, "enabled", "")).lower() != "true":
        return None
    rate = getattr(collector, "sampling_rate", None)
    # Azure collects every request when no rate is set.
    return CaptureSpec(sample_rate=float(rate) if rate else 1.0)


def _rate_label(capture: CaptureSpec | None) -> str | None:
    return None if capture is None else f"{capture.sample_rate:g}"


def _collector_label(deployment: Any) -> str | None:
    """A deployment's collector as a plan shows it: the rate, and what differs from mlshift's own
    (answers not logged, files rolled other than hourly, which the reader would not find)."""
    capture = _capture_of(deployment)
    if capture is None:
        return None
    collector = deployment.data_collector
    response = (collector.collections or {}).get("response")
    extra = []
    if response is None or str(getattr(response, "enabled", "")).lower() != "true":
        extra.append("answers not logged")
    rolling = getattr(collector, "rolling_rate", None) or "Hour"
    # The SDK hands out a str enum (RollingRateType.HOUR) or a plain string.
    rolling = str(getattr(rolling, "value", rolling))
    if rolling.lower() != "hour":
        extra.append(f"rolling_rate {rolling}")
    return f"{capture.sample_rate:g}" + (f" ({', '.join(extra)})" if extra else "")


def _state_of(entity: Any) -> str:
    state = getattr(entity, "provisioning_state", "") or ""
    # The SDK hands out str enums (EndpointProvisioningState.SUCCEEDED) or plain strings.
    return str(getattr(state, "value", state)).lower()


class AzureMLEndpointService(BaseEndpointService):
    """``EndpointService`` on managed online endpoints."""

    target_name = "Azure ML"

    def __init__(self, adapter: AzureMLAdapter) -> None:
        self._adapter = adapter
        self._scoring: dict[str, tuple[str, str]] = {}
        self._environment: str | None = None
        # provider_options.azureml of the spec last planned per endpoint, for new variants.
        self._planned: dict[str, EndpointOptions] = {}
        # capture of the spec last planned per endpoint (None: keep the live one), for new variants.
        self._planned_capture: dict[str, CaptureSpec | None] = {}
        self._scaler = DeploymentScalingService(adapter)

    @property
    def _ml(self) -> Any:
        return self._adapter.clients.ml()

    @property
    def _options(self) -> Any:
        return self._adapter.options

    # ---------------------------------------------------------------- reading

    def _endpoint(self, name: str) -> Any | None:
        try:
            with azure_errors(f"read endpoint {name!r}"):
                return self._ml.online_endpoints.get(name)
        except NotFound:
            return None

    def _deployments(self, name: str) -> builtins.list[Any]:
        with azure_errors(f"list the deployments of endpoint {name!r}"):
            return sorted(self._ml.online_deployments.list(name), key=lambda d: str(d.name))

    def _variant(self, deployment: Any, traffic: Mapping[str, int], scaled: bool = False) -> VariantState:
        tags = dict(deployment.tags or {})
        match = _MODEL_ID.search(str(deployment.model or ""))
        model = tags.get(_MODEL) or (f"{match[1]}:{match[2]}" if match else str(deployment.model))
        size = tags.get(_SIZE)
        if size not in SIZE_TO_INSTANCE_TYPE:
            size = next(
                (s for s, t in SIZE_TO_INSTANCE_TYPE.items() if t == deployment.instance_type), "cpu-small"
            )
        status = _STATUS.get(_state_of(deployment), "unknown")
        replicas = int(deployment.instance_count or 1)
        asked = tags.get(_REPLICAS, "")
        if scaled and asked.isdigit():
            # The autoscaler moves the live count: compare the spec with what was asked.
            replicas = int(asked)
        return VariantState(
            name=str(deployment.name),
            model=model,
            digest=tags.get(_DIGEST),
            weight=int(traffic.get(str(deployment.name), 0)),
            compute=Compute(size=size, replicas=max(replicas, 1)),
            status=status,
            detail="the deployment failed: see its logs" if status == "failed" else None,
        )

    def _scaling(self, endpoint: Any, deployments: builtins.list[Any]) -> dict[str, DeploymentScaling]:
        """Deployment → its autoscale setting, read only where mlshift may have written one."""
        if not (endpoint.tags or {}).get(_AUTOSCALE) or not deployments:
            return {}
        return self._scaler.read(str(endpoint.name), [str(d.name) for d in deployments])

    def _state(self, endpoint: Any, deployments: builtins.list[Any]) -> EndpointState:
        traffic = {k: int(v) for k, v in (endpoint.traffic or {}).items()}
        scaled = self._scaling(endpoint, deployments)
        variants = tuple(self._variant(d, traffic, str(d.name) in scaled) for d in deployments)
        tags = dict(endpoint.tags or {})
        alike = set(scaled.values())
        autoscaling = (
            next(iter(alike)).as_spec() if len(alike) == 1 and len(scaled) == len(deployments) else None
        )
        status = _STATUS.get(_state_of(endpoint), "unknown")
        if status == "healthy" and any(v.status != "healthy" for v in variants):
            status = "unhealthy"
        created = getattr(getattr(endpoint, "creation_context", None), "created_at", None)
        return EndpointState(
            name=str(endpoint.name),
            url=endpoint.scoring_uri,
            status=status,
            variants=variants,
            tags=self._user_tags(tags),
            created_at=created if isinstance(created, datetime) else None,
            spec_digest=tags.get("mlshift:spec"),
            autoscaling=autoscaling,
        )

    def _user_tags(self, tags: Mapping[str, str]) -> dict[str, str]:
        target = self._options.tags
        return {
            k: v
            for k, v in tags.items()
            if not k.startswith(_RESERVED) and not (k in target and target[k] == v)
        }

    def list(self) -> builtins.list[EndpointState]:
        with azure_errors("list online endpoints"):
            endpoints = list(self._ml.online_endpoints.list())
        return [
            self._state(e, self._deployments(e.name)) for e in sorted(endpoints, key=lambda e: str(e.name))
        ]

    def observe(self, name: str) -> EndpointState | None:
        endpoint = self._endpoint(name)
        return None if endpoint is None else self._state(endpoint, self._deployments(name))

    def _require(self, name: str) -> EndpointState:
        state = self.observe(name)
        if state is None:
            raise NotFound(f"endpoint {name!r} does not exist in {self._adapter.uri.raw}", provider=PROVIDER)
        return state

    def serving(self, model_ref: str) -> builtins.list[str]:
        """``endpoint/variant`` of every variant that serves ``name:version``."""
        return [f"{e.name}/{v.name}" for e in self.list() for v in e.variants if v.model == model_ref]

    def validate(self, spec: EndpointSpec) -> None:
        """Check at plan time what Azure would refuse: ``provider_options.azureml`` (instance
        types, no serverless), a shadow above 50%, autoscaling bounds (at least one instance, each
        variant's replicas within them).

        Raises:
            ConfigError: naming the field.
        """
        self._planned[spec.name] = self._options_for(spec)
        self._planned_capture[spec.name] = spec.capture
        rollout = spec.rollout
        if rollout is not None and rollout.strategy == "shadow" and rollout.percent > MAX_MIRROR_PERCENT:
            raise ConfigError(
                f"endpoint {spec.name!r}: rollout.percent is {rollout.percent}; Azure ML mirrors at most "
                f"{MAX_MIRROR_PERCENT}% of an endpoint's traffic",
                field="rollout.percent",
                hint=f"set rollout.percent between 1 and {MAX_MIRROR_PERCENT}",
            )
        if spec.autoscaling is not None:
            check_autoscaling(spec.name, spec.autoscaling)
            check_replicas_within_autoscaling(spec, unit="instance(s)")

    def option_changes(self, spec: EndpointSpec) -> builtins.list[OptionChange]:
        """The data collector ``capture`` changes on live deployments (``capture.sample_rate``).

        Azure cannot change a live deployment's instance type, so a spec asking for another
        one is refused here, at plan time, rather than applied to new variants only. Reads only.

        Raises:
            ConfigError: naming the variant and both instance types.
        """
        options = self._options_for(spec)
        if self._endpoint(spec.name) is None:
            return []
        deployments = self._deployments(spec.name)
        live = {str(d.name): d for d in deployments}
        for i, variant in enumerate(spec.variants):
            compute = variant.compute or spec.compute
            wanted = instance_type_for(compute.size, options.instance_type)
            found = live.get(variant.name)
            have = None if found is None else str(found.instance_type)
            # A new size is a variant change the planner carries out by replacement; only the
            # same size on another exact type would otherwise go unapplied.
            same_size = found is not None and (found.tags or {}).get(_SIZE) == compute.size
            if same_size and have != wanted:
                raise ConfigError(
                    f"endpoint {spec.name!r}: variant {variant.name!r} runs on {have}, the spec asks for "
                    f"{wanted}; Azure ML cannot change a live deployment's instance type",
                    field=f"variants[{i}].compute",
                    hint="deploy it under a new variant name (a blue/green rollout), then remove the old one",
                )
        if spec.capture is None:
            return []
        label = _rate_label(self._effective(spec.capture))
        stale = [d for d in deployments if _collector_label(d) != label]
        if not stale:
            return []
        old = sorted({_collector_label(d) or "(unset)" for d in stale})
        return [
            OptionChange(
                field="capture.sample_rate",
                old=None if old == ["(unset)"] else "; ".join(old),
                new=label,
            )
        ]

    def plan_notes(self, spec: EndpointSpec, observed: EndpointState | None) -> builtins.list[str]:
        """Where Azure's data collector writes, and the ``capture`` settings it does not take."""
        capture = spec.capture
        if capture is None or not capture.enabled:
            return []
        notes = [
            f"capture: each deployment's data collector logs requests and answers (payload logging, "
            f"sampling_rate {capture.sample_rate:g}) to datastore {COLLECTOR_DATASTORE} under "
            f"{COLLECTOR_FOLDER}/{spec.name}/"
        ]
        ignored = capture.server_settings_set()
        if ignored:
            notes.append(
                f"Azure's data collector writes its files itself: {' and '.join(ignored)} do not apply "
                "there (it rolls files every hour and never slows a caller)"
            )
        return notes

    @staticmethod
    def _effective(capture: CaptureSpec | None) -> CaptureSpec | None:
        """What a deployment's collector reads back as for ``capture`` (``None``: no capture)."""
        if capture is None or not capture.enabled:
            return None
        return CaptureSpec(sample_rate=capture.sample_rate)

    @staticmethod
    def _collector(capture: CaptureSpec | None) -> Any:
        """The ``DataCollector`` a deployment gets for ``capture`` (``None``: none)."""
        if capture is None or not capture.enabled:
            return None
        from azure.ai.ml.entities import DataCollector, DeploymentCollection

        return DataCollector(
            collections={name: DeploymentCollection(enabled="true") for name in COLLECTIONS},
            sampling_rate=capture.sample_rate,
            # The reader lists hour folders: Azure's default, set so that it stays so.
            rolling_rate="Hour",
        )

    def _capture_for_new(self, name: str) -> CaptureSpec | None:
        """The capture a new deployment of ``name`` gets: the planned spec's, else the live one."""
        planned = self._planned_capture.get(name)
        if planned is not None:
            return self._effective(planned)
        return self.capture_settings(name)

    def update_options(self, name: str, spec: EndpointSpec) -> Operation[EndpointState]:
        """Give every deployment of ``name`` the data collector ``spec.capture`` asks for.

        Only deployments whose collector differs are updated (Azure updates a deployment in
        place: its instances keep serving), so nothing is called when a variant change of the
        same apply already made them with it.

        Raises:
            NotFound: no such endpoint.
        """
        what = f"update the data collector of {name}"
        if spec.capture is None:
            return CompletedOperation(self._require(name), what)
        wanted = self._effective(spec.capture)
        for deployment in self._deployments(name):
            if _collector_label(deployment) == _rate_label(wanted):
                continue
            self._wait_idle(name)
            deployment.data_collector = self._collector(wanted)
            with azure_errors(f"update the data collector of deployment {deployment.name!r} of {name!r}"):
                self._ml.online_deployments.begin_create_or_update(
                    deployment, skip_script_validation=True
                ).result(timeout=self._options.wait_timeout)
        return CompletedOperation(self._require(name), what)

    # ---------------------------------------------------------------- capture (CaptureReader)

    def capture_settings(self, name: str) -> CaptureSpec | None:
        """How the endpoint's deployments log requests (``None``: none does, or no endpoint).

        Deployments that take traffic are asked first; the first one that logs requests answers.
        """
        endpoint = self._endpoint(name)
        if endpoint is None:
            return None
        traffic = {str(k): int(v) for k, v in (endpoint.traffic or {}).items()}
        deployments = sorted(self._deployments(name), key=lambda d: -traffic.get(str(d.name), 0))
        for deployment in deployments:
            found = _capture_of(deployment)
            if found is not None:
                return found
        return None

    def read_capture(self, name: str, *, since: datetime, until: datetime) -> Iterator[CapturedRequest]:
        """The requests Azure's data collector logged for ``name`` in ``(since, until]``.

        Reads ``modelDataCollector/ENDPOINT/`` of ``workspaceblobstore``, hour folders from
        ``since``'s hour on, and pairs each request with its answer by ``correlationid`` (the
        request's id). Records name the deployment, not the model version.

        Raises:
            ProviderError: Blob Storage refused a read.
        """
        store = self._adapter.capture_store
        root = f"{COLLECTOR_FOLDER}/{name}/"
        first_hour = since.astimezone(timezone.utc).strftime("%Y/%m/%d/%H")
        # deployment -> correlation id -> (request, response)
        found: dict[str, dict[str, dict[str, Any]]] = {}
        for key in store.list(root):
            parts = key[len(root) :].split("/")
            # DEPLOYMENT/COLLECTION/YYYY/MM/DD/HH/FILE.jsonl
            if len(parts) != 7 or parts[1] not in COLLECTIONS or "/".join(parts[2:6]) < first_hour:
                continue
            blob = store.get(key)
            if blob is None:
                continue
            pairs = found.setdefault(parts[0], {})
            for record in parse_payloads(blob.data):
                if record.kind == parts[1]:
                    pairs.setdefault(record.correlation_id, {})[record.kind] = record
        for deployment, pairs in sorted(found.items()):
            for correlation, pair in pairs.items():
                request = pair.get("request")
                if request is None or not since < request.time <= until:
                    continue
                response = pair.get("response")
                yield CapturedRequest(
                    request_id=correlation,
                    endpoint=name,
                    variant=deployment,
                    timestamp=request.time,
                    content_type=request.content_type,
                    request=request.body,
                    response=None if response is None else response.body,
                )

    # ---------------------------------------------------------------- serialized changes

    def _wait_idle(self, name: str) -> Any:
        """The endpoint once no operation runs on it (Azure refuses a change meanwhile).

        Raises:
            EndpointBusy: if it stays busy for ``wait_timeout`` seconds.
            NotFound: if it does not exist.
        """
        deadline = time.monotonic() + self._options.wait_timeout
        while True:
            endpoint = self._endpoint(name)
            if endpoint is None:
                raise NotFound(
                    f"endpoint {name!r} does not exist in {self._adapter.uri.raw}", provider=PROVIDER
                )
            state = _state_of(endpoint)
            if state not in _BUSY_STATES:
                return endpoint
            if time.monotonic() >= deadline:
                raise EndpointBusy(
                    f"endpoint {name!r} stayed {state!r} for {self._options.wait_timeout:g} s; Azure refuses "
                    "changes until its running operation ends",
                    provider=PROVIDER,
                    hint="wait for it to finish (az ml online-endpoint show), then apply again",
                )
            self._adapter.clients.sleep(max(self._options.poll_interval, 0.01))

    def _put_endpoint(self, endpoint: Any, what: str) -> None:
        """Send an endpoint change, retrying while Azure says the endpoint is busy."""
        deadline = time.monotonic() + self._options.wait_timeout
        while True:
            try:
                with azure_errors(what):
                    self._ml.online_endpoints.begin_create_or_update(endpoint).result(
                        timeout=self._options.wait_timeout
                    )
                return
            except EndpointBusy:
                if time.monotonic() >= deadline:
                    raise
                self._adapter.clients.sleep(max(self._options.poll_interval, 0.01))
                self._wait_idle(str(endpoint.name))

    def _set_traffic(self, name: str, traffic: Mapping[str, int], what: str) -> EndpointState:
        """Set the endpoint's traffic and read it back until Azure shows it (eventual consistency)."""
        endpoint = self._wait_idle(name)
        wanted = {k: int(v) for k, v in traffic.items() if int(v) > 0}
        current = {k: int(v) for k, v in (endpoint.traffic or {}).items() if int(v) > 0}
        mirror = {k: int(v) for k, v in (endpoint.mirror_traffic or {}).items() if int(v) > 0}
        # A deployment is live or mirrored, never both: one that goes live stops being mirrored.
        kept = {k: v for k, v in mirror.items() if k not in wanted}
        if current != wanted or kept != mirror:
            endpoint.traffic = dict(traffic)
            endpoint.mirror_traffic = kept
            self._put_endpoint(endpoint, what)
        deadline = time.monotonic() + self._options.wait_timeout
        while True:
            state = self._require(name)
            if {k: v for k, v in state.weights.items() if v > 0} == wanted:
                return state
            if time.monotonic() >= deadline:
                raise EndpointBusy(
                    f"endpoint {name!r}: traffic {wanted} was accepted but still shows {state.weights} after "
                    f"{self._options.wait_timeout:g} s",
                    provider=PROVIDER,
                    hint="Azure applies traffic changes eventually; check the endpoint and apply again",
                )
            self._adapter.clients.sleep(max(self._options.poll_interval, 0.01))

    # ---------------------------------------------------------------- deployments

    def _serving_environment(self) -> str:
        """``azureml:NAME:VERSION`` of the environment deployments run in (made once, if missing)."""
        if self._options.environment:
            ref = str(self._options.environment)
            return ref if ref.startswith("azureml:") else f"azureml:{ref}"
        if self._environment is not None:
            return self._environment
        from azure.ai.ml.entities import Environment

        image = self._options.image_uri or self._default_image()
        routes = {
            "liveness_route": {"port": SERVING_PORT, "path": "/"},
            "readiness_route": {"port": SERVING_PORT, "path": "/ready"},
            "scoring_route": {"port": SERVING_PORT, "path": "/score"},
        }
        version = _fingerprint({"image": image, "routes": routes})[:12]
        name = "mlshift-serve"
        try:
            with azure_errors(f"read environment {name}:{version}"):
                self._ml.environments.get(name, version=version)
        except NotFound:
            with azure_errors(f"create environment {name}:{version}"):
                self._ml.environments.create_or_update(
                    Environment(
                        name=name,
                        version=version,
                        image=image,
                        inference_config=routes,
                        description="The mlshift serving image (custom container)",
                        tags=self._adapter.resource_tags({"mlshift:managed": "true"}),
                    )
                )
        self._environment = f"azureml:{name}:{version}"
        return self._environment

    def _default_image(self) -> str:
        """The mlshift serving image in the workspace's container registry."""
        import mlshift

        with azure_errors(f"read workspace {self._adapter.workspace.name!r}"):
            workspace = self._ml.workspaces.get(self._adapter.workspace.name)
        registry = str(getattr(workspace, "container_registry", "") or "").rsplit("/", 1)[-1]
        if not registry:
            raise ConfigError(
                f"workspace {self._adapter.workspace.name!r} has no container registry for the serving image",
                field="target.options.image_uri",
                hint="push the mlshift image (`mlshift image build --push`) and set image_uri, or set "
                "environment to a workspace environment",
            )
        return f"{registry}.azurecr.io/mlshift-serve:{mlshift.__version__}"

    def _create_deployment(
        self, name: str, variant: ResolvedVariant, options: EndpointOptions, capture: CaptureSpec | None
    ) -> None:
        from azure.ai.ml.entities import ManagedOnlineDeployment, ProbeSettings

        model = variant.model
        env = {
            "MLSHIFT_FRAMEWORK": model.framework,
            "MLSHIFT_MODEL_DIGEST": model.digest,
            "MLSHIFT_MODEL_REF": f"{model.name}:{model.version}",
            "MLSHIFT_VARIANT": variant.name,
            **variant.serving_environment(),  # the variant's batching: the same server reads it
        }
        if model.signature is not None:
            env["MLSHIFT_SIGNATURE"] = model.signature.model_dump_json()
        probe = ProbeSettings(
            initial_delay=10, period=10, timeout=2, failure_threshold=30, success_threshold=1
        )
        deployment = ManagedOnlineDeployment(
            name=variant.name,
            endpoint_name=name,
            model=f"azureml:{model.name}:{model.version}",
            environment=self._serving_environment(),
            instance_type=instance_type_for(variant.compute.size, options.instance_type),
            instance_count=variant.compute.replicas,
            environment_variables=env,
            liveness_probe=probe,
            readiness_probe=probe,
            data_collector=self._collector(capture),
            tags=self._adapter.resource_tags(
                {
                    _SIZE: variant.compute.size,
                    _DIGEST: model.digest,
                    _MODEL: f"{model.name}:{model.version}",
                    _REPLICAS: str(variant.compute.replicas),
                }
            ),
        )
        what = f"create deployment {variant.name!r} of endpoint {name!r}"
        try:
            with azure_errors(what):
                self._ml.online_deployments.begin_create_or_update(
                    deployment, skip_script_validation=True
                ).result(timeout=self._options.wait_timeout)
        except MlshiftError as exc:
            failed = self._failed_deployment(name, variant.name)
            if failed is None:
                raise
            logs = self._logs(name, variant.name)
            # Leave nothing half-made: the next apply starts from a clean endpoint.
            self._delete_deployment(name, variant.name)
            raise DeploymentUnhealthy(
                f"{what}: the deployment never became healthy ({getattr(exc, 'message', exc)})\n"
                f"  probes: readiness GET /ready and liveness GET / on port {SERVING_PORT}, every "
                f"{probe.period}s, failing after {probe.failure_threshold} misses\n"
                "  last log lines:\n" + "\n".join(f"    {line}" for line in logs.splitlines()[-20:]),
                logs=logs,
                provider=PROVIDER,
                provider_code=error_code(getattr(exc, "orig", exc)) or None,
                orig=exc,
                hint="fix what the log shows (a missing package, a model that does not load) and apply again",
            ) from exc
        if variant.autoscaling is not None:
            self._autoscale(name, variant.autoscaling, only=variant.name)

    def _autoscale(self, name: str, wanted: Autoscaling | None, only: str | None = None) -> None:
        """Scale the endpoint's deployments (or just ``only``) as ``wanted`` (``None``: stop)."""
        endpoint = self._wait_idle(name)
        tagged = bool((endpoint.tags or {}).get(_AUTOSCALE))
        if wanted is None and not tagged:
            return
        if wanted is not None:
            check_autoscaling(name, wanted)
            if not tagged:
                # Tagged first: a setting written after a failed tag change would go unobserved.
                endpoint.tags = {**(endpoint.tags or {}), _AUTOSCALE: "azure-monitor"}
                self._put_endpoint(endpoint, f"tag endpoint {name!r} as autoscaled")
                endpoint = self._wait_idle(name)
        deployments = [d for d in self._deployments(name) if only is None or str(d.name) == only]
        self._scaler.converge(endpoint, deployments, wanted)
        if wanted is None and only is None:
            endpoint = self._wait_idle(name)
            endpoint.tags = {k: v for k, v in (endpoint.tags or {}).items() if k != _AUTOSCALE}
            self._put_endpoint(endpoint, f"untag endpoint {name!r} as autoscaled")

    def set_autoscaling(self, name: str, autoscaling: Autoscaling | None) -> Operation[EndpointState]:
        """Scale every deployment of ``name`` as ``autoscaling`` says (``None``: stop autoscaling).

        Only settings that differ from the wanted scaling are written.

        Raises:
            NotFound: no such endpoint.
            ConfigError: bounds Azure cannot take (``min_replicas`` 0).
        """
        self._require(name)
        self._autoscale(name, autoscaling)
        return CompletedOperation(self._require(name), f"set autoscaling of {name}")

    def _failed_deployment(self, name: str, deployment: str) -> Any | None:
        try:
            with azure_errors(f"read deployment {deployment!r}"):
                found = self._ml.online_deployments.get(deployment, name)
        except NotFound:
            return None
        return found if _state_of(found) == "failed" else None

    def _logs(self, name: str, deployment: str) -> str:
        try:
            with azure_errors(f"read the logs of deployment {deployment!r}"):
                return str(self._ml.online_deployments.get_logs(deployment, name, lines=50) or "")
        except MlshiftError as exc:
            return f"(no logs: {exc})"

    def _delete_deployment(self, name: str, deployment: str) -> None:
        with azure_errors(f"delete deployment {deployment!r} of endpoint {name!r}"):
            self._ml.online_deployments.begin_delete(deployment, name).result(
                timeout=self._options.wait_timeout
            )

    def _options_for(self, spec: EndpointSpec | None) -> EndpointOptions:
        if spec is None:
            return EndpointOptions()
        options = validate_own_options(spec, PROVIDER, EndpointOptions)
        assert isinstance(options, EndpointOptions)
        return options

    # ---------------------------------------------------------------- primitives

    def create(self, spec: EndpointSpec, variants: Sequence[ResolvedVariant]) -> Operation[EndpointState]:
        from azure.ai.ml.entities import ManagedOnlineEndpoint

        name = spec.name
        options = self._options_for(spec)
        if self._endpoint(name) is not None:
            raise Conflict(f"endpoint {name!r} already exists", provider=PROVIDER)
        tags = self._adapter.resource_tags(
            {
                **spec.tags,
                "mlshift:managed": "true",
                "mlshift:spec": _fingerprint(spec.model_dump(mode="json"))[:16],
                **({_AUTOSCALE: "azure-monitor"} if spec.autoscaling is not None else {}),
            }
        )
        endpoint = ManagedOnlineEndpoint(name=name, auth_mode="key", tags=tags)
        with azure_errors(f"create endpoint {name!r}"):
            self._ml.online_endpoints.begin_create_or_update(endpoint).result(
                timeout=self._options.wait_timeout
            )
        try:
            capture = self._effective(spec.capture)
            for variant in variants:
                self._create_deployment(name, variant, options, capture)
            weights = {v.name: v.weight for v in variants}
            if sum(weights.values()) == 100:
                self._set_traffic(name, weights, f"send traffic to endpoint {name!r}")
        except BaseException:
            # An endpoint without its deployments is half-made: remove it, then report.
            try:
                self._delete_endpoint(name)
            except MlshiftError:
                pass
            raise
        return CompletedOperation(self._require(name), f"create endpoint {name}")

    def add_variant(self, name: str, variant: ResolvedVariant) -> Operation[EndpointState]:
        state = self._require(name)
        if state.variant(variant.name) is not None:
            raise Conflict(f"endpoint {name!r} already has a variant {variant.name!r}", provider=PROVIDER)
        self._wait_idle(name)
        options = self._planned.get(name) or EndpointOptions(instance_type=self._instance_override(name))
        self._create_deployment(name, variant, options, self._capture_for_new(name))
        return CompletedOperation(self._require(name), f"add variant {variant.name}")

    def _instance_override(self, name: str) -> str | None:
        """The exact instance type the endpoint's variants were given, if one was (kept for new ones)."""
        types = {
            str(d.instance_type)
            for d in self._deployments(name)
            if (d.tags or {}).get(_SIZE) in SIZE_TO_INSTANCE_TYPE
            and SIZE_TO_INSTANCE_TYPE[(d.tags or {})[_SIZE]] != d.instance_type
        }
        return types.pop() if len(types) == 1 else None

    def remove_variant(self, name: str, variant_name: str) -> Operation[EndpointState]:
        state = self._require(name)
        found = state.variant(variant_name)
        if found is None:
            raise NotFound(f"endpoint {name!r} has no variant {variant_name!r}", provider=PROVIDER)
        if found.weight > 0:
            raise Conflict(
                f"variant {variant_name!r} of endpoint {name!r} still takes {found.weight}% of the traffic",
                provider=PROVIDER,
                hint="shift its traffic to other variants first",
            )
        endpoint = self._wait_idle(name)
        if int((endpoint.mirror_traffic or {}).get(variant_name, 0)):
            self._set_mirror(name, variant_name, 0)  # Azure refuses to delete a mirrored deployment
        if (endpoint.tags or {}).get(_AUTOSCALE):
            self._scaler.delete(name, [variant_name])
        self._delete_deployment(name, variant_name)
        return CompletedOperation(self._require(name), f"remove variant {variant_name}")

    def set_weights(self, name: str, weights: Mapping[str, int]) -> Operation[EndpointState]:
        state = self._require(name)
        unknown = sorted(set(weights) - {v.name for v in state.variants})
        full = {v.name: int(weights.get(v.name, 0)) for v in state.variants}
        if unknown or sum(full.values()) != 100:
            raise ConfigError(
                f"invalid weights {dict(weights)} for endpoint {name!r}: "
                + (
                    f"no variants {', '.join(unknown)}"
                    if unknown
                    else f"they sum to {sum(full.values())}, not 100"
                ),
                field="weights",
            )
        return CompletedOperation(
            self._set_traffic(name, full, f"set the traffic of endpoint {name!r}"), "set weights"
        )

    def update_tags(self, name: str, tags: Mapping[str, str]) -> Operation[EndpointState]:
        endpoint = self._wait_idle(name)
        owned = {k: v for k, v in (endpoint.tags or {}).items() if k.startswith(_RESERVED)}
        endpoint.tags = self._adapter.resource_tags({**tags, **owned})
        self._put_endpoint(endpoint, f"tag endpoint {name!r}")
        return CompletedOperation(self._require(name), "update tags")

    def _delete_endpoint(self, name: str) -> None:
        with azure_errors(f"delete endpoint {name!r}"):
            self._ml.online_endpoints.begin_delete(name=name).result(timeout=self._options.wait_timeout)
        self._scoring.pop(name, None)

    def delete(self, name: str) -> Operation[None]:
        endpoint = self._wait_idle(name)
        if (endpoint.tags or {}).get(_AUTOSCALE):
            # Azure keeps an autoscale setting whose deployment is gone: delete it with it.
            self._scaler.delete(name, [str(d.name) for d in self._deployments(name)])
        self._delete_endpoint(name)
        return CompletedOperation(None, f"delete endpoint {name}")

    # ---------------------------------------------------------------- invoking

    def _scoring_target(self, name: str) -> tuple[str, str]:
        found = self._scoring.get(name)
        if found is None:
            endpoint = self._endpoint(name)
            if endpoint is None or not endpoint.scoring_uri:
                raise NotFound(
                    f"endpoint {name!r} does not exist in {self._adapter.uri.raw}", provider=PROVIDER
                )
            with azure_errors(f"read the keys of endpoint {name!r}"):
                keys = self._ml.online_endpoints.get_keys(name)
            found = (str(endpoint.scoring_uri), str(keys.primary_key))
            self._scoring[name] = found
        return found

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
        """Post to the scoring URI (``azureml-model-deployment`` for one variant).

        ``request_id`` goes as ``x-request-id``, which Azure's data collector records as the
        request's correlation id: the id monitors join ground-truth labels on.

        A model's own error (Azure's 424 with the container's status code in
        ``ms-azureml-model-error-statuscode``) comes back with the container's status and body,
        as on every other target.
        """
        from azure.core.rest import HttpRequest

        for attempt in range(2):
            uri, key = self._scoring_target(name)
            headers = {
                "Content-Type": content_type,
                "Authorization": f"Bearer {key}",
                "Accept": "application/json",
            }
            if variant is not None:
                headers["azureml-model-deployment"] = variant
            if request_id is not None:
                headers["x-request-id"] = request_id
            start = time.perf_counter()
            with azure_errors(f"invoke endpoint {name!r}"):
                response = (
                    self._adapter.clients.pipeline()
                    .run(HttpRequest("POST", uri, headers=headers, content=body), connection_timeout=timeout)
                    .http_response
                )
                content = response.read()
            latency = (time.perf_counter() - start) * 1000
            if response.status_code == 401 and attempt == 0:
                self._scoring.pop(name, None)  # the keys were regenerated: read them again
                continue
            break
        status = int(response.status_code)
        original = response.headers.get("ms-azureml-model-error-statuscode")
        if status == 424 and original and original.isdigit():
            status = int(original)
        if status == 404 and self._endpoint(name) is None:
            raise NotFound(f"endpoint {name!r} does not exist in {self._adapter.uri.raw}", provider=PROVIDER)
        return Invocation(
            status_code=status,
            body=bytes(content),
            content_type=response.headers.get("content-type", "application/json"),
            variant=response.headers.get("azureml-model-deployment") or variant,
            latency_ms=latency,
            request_id=response.headers.get("x-request-id") or request_id,
        )

    # ---------------------------------------------------------------- metrics

    @property
    def metrics_timing(self) -> MetricsTiming:
        """Azure Monitor: one datapoint a minute, shown up to ``metric_lag`` seconds late."""
        return MetricsTiming(resolution=60.0, lag=self._options.metric_lag)

    def read_metrics(self, name: str, variant: str, window: float) -> VariantMetrics | None:
        """Requests, errors and p99 latency of one deployment from Azure Monitor.

        ``RequestsPerMinute`` is split by ``statusCode`` and ``modelStatusCode``: a 424 is the
        model container's answer, counted by the container's own status (4xx: the caller's
        error, else the model's); 408 (timeout) and 5xx are errors; other 4xx (401, 429) are
        client errors. The window widens to the whole minutes it touches.
        """
        endpoint = self._endpoint(name)
        if endpoint is None:
            return None
        now = datetime.now(timezone.utc)
        start = (now - timedelta(seconds=window)).replace(second=0, microsecond=0)
        end = now.replace(second=0, microsecond=0) + timedelta(minutes=1)
        timespan = f"{start.isoformat()}/{end.isoformat()}"
        monitor = self._adapter.clients.monitor()
        requests = errors = client_errors = 0
        with azure_errors(f"read the metrics of endpoint {name!r}"):
            counts = monitor.metrics.list(
                endpoint.id,
                timespan=timespan,
                interval="PT1M",
                metricnames="RequestsPerMinute",
                aggregation="Total",
                filter=f"deployment eq '{variant}' and statusCode eq '*' and modelStatusCode eq '*'",
            )
            for metric in counts.value:
                for series in metric.timeseries or []:
                    dims = {m.name.value: m.value for m in series.metadatavalues or []}
                    total = int(sum(point.total or 0 for point in series.data or []))
                    code = int(dims.get("statusCode") or 0)
                    model_code = int(dims.get("modelStatusCode") or 0)
                    if code == 424 and model_code:
                        code = model_code
                    requests += total
                    if code >= 500 or code == 408:
                        errors += total
                    elif code >= 400:
                        client_errors += total
            latency = monitor.metrics.list(
                endpoint.id,
                timespan=timespan,
                interval="PT1M",
                metricnames="RequestLatency_P99",
                aggregation="Average",
                filter=f"deployment eq '{variant}'",
            )
            p99s = [
                float(point.average)
                for metric in latency.value
                for series in metric.timeseries or []
                for point in series.data or []
                if point.average is not None
            ]
        return VariantMetrics(
            variant=variant,
            window_seconds=(end - start).total_seconds(),
            requests=requests,
            errors=errors,
            client_errors=client_errors,
            p99_ms=max(p99s) if p99s else None,
        )

    # ---------------------------------------------------------------- shadows

    @property
    def shadow_mode(self) -> ShadowMode:
        """``mirror-only``: Azure discards the mirrored deployment's answers."""
        return "mirror-only"

    def _set_mirror(self, name: str, variant: str, percent: int) -> EndpointState:
        """Set the endpoint's ``mirror_traffic`` and read it back until Azure shows it."""
        endpoint = self._wait_idle(name)
        wanted = {variant: percent} if percent > 0 else {}
        current = {k: int(v) for k, v in (endpoint.mirror_traffic or {}).items() if int(v) > 0}
        if current != wanted:
            endpoint.mirror_traffic = wanted
            self._put_endpoint(endpoint, f"mirror {percent}% of endpoint {name!r} to {variant!r}")
        deadline = time.monotonic() + self._options.wait_timeout
        while True:
            endpoint = self._endpoint(name)
            seen = {
                k: int(v) for k, v in ((endpoint and endpoint.mirror_traffic) or {}).items() if int(v) > 0
            }
            if seen == wanted:
                return self._require(name)
            if time.monotonic() >= deadline:
                raise EndpointBusy(
                    f"endpoint {name!r}: mirror traffic {wanted} was accepted but still shows {seen} after "
                    f"{self._options.wait_timeout:g} s",
                    provider=PROVIDER,
                    hint="Azure applies traffic changes eventually; check the endpoint and apply again",
                )
            self._adapter.clients.sleep(max(self._options.poll_interval, 0.01))

    def set_shadow(
        self, name: str, variant: str, percent: int, *, tolerance: float = 0.01
    ) -> Operation[EndpointState]:
        """Mirror ``percent`` of the requests without a deployment header to ``variant`` (0 stops).

        ``tolerance`` is not used: Azure discards mirrored answers, so nothing is compared.

        Raises:
            ConfigError: more than 50%, or a variant that takes live traffic.
            NotFound: no such endpoint or variant.
        """
        state = self._require(name)
        found = state.variant(variant)
        if found is None:
            raise NotFound(f"endpoint {name!r} has no variant {variant!r}", provider=PROVIDER)
        if not 0 <= percent <= MAX_MIRROR_PERCENT:
            raise ConfigError(
                f"cannot mirror {percent}% of endpoint {name!r}: "
                f"Azure ML mirrors at most {MAX_MIRROR_PERCENT}%",
                field="percent",
            )
        if percent and found.weight:
            raise ConfigError(
                f"variant {variant!r} of endpoint {name!r} takes {found.weight}% of the live traffic; Azure "
                "mirrors only to a deployment without live traffic",
                field="variant",
                hint="set its weight to 0 first",
            )
        return CompletedOperation(self._set_mirror(name, variant, percent), f"mirror {percent}% to {variant}")

    def read_shadow(self, name: str, variant: str, window: float) -> ShadowMetrics | None:
        """The mirrored deployment's Azure Monitor numbers, beside the live deployments'.

        A mirrored deployment takes no live traffic, so its requests are the mirrored ones (and
        any sent to it by name). ``None`` when ``variant`` is not mirrored.
        """
        endpoint = self._endpoint(name)
        if endpoint is None or not int((endpoint.mirror_traffic or {}).get(variant, 0)):
            return None
        shadow = self.read_metrics(name, variant, window)
        if shadow is None:
            return None
        live = [k for k, v in (endpoint.traffic or {}).items() if int(v) > 0 and k != variant]
        baseline = [m for m in (self.read_metrics(name, k, window) for k in live) if m is not None]
        p99s = [m.p99_ms for m in baseline if m.p99_ms is not None]
        return ShadowMetrics(
            variant=variant,
            window_seconds=shadow.window_seconds,
            requests=shadow.requests,
            errors=shadow.errors,
            client_errors=shadow.client_errors,
            p99_ms=shadow.p99_ms,
            baseline_requests=sum(m.requests for m in baseline),
            baseline_client_errors=sum(m.client_errors for m in baseline),
            baseline_p99_ms=max(p99s) if p99s else None,
        )

    # ---------------------------------------------------------------- journal and lock

    def record_rollout(self, record: RolloutRecord) -> None:
        self._adapter.store.journal.record(record)

    def rollouts(self, name: str, limit: int = 20) -> builtins.list[RolloutRecord]:
        return self._adapter.store.journal.records(name, limit)

    def lock(self, name: str, *, owner: str, timeout: float) -> AbstractContextManager[None]:
        return self._hold(name, owner, timeout)

    @contextmanager
    def _hold(self, name: str, owner: str, timeout: float) -> Iterator[None]:
        with self._adapter.store.leases.hold(name, owner=owner, timeout=timeout):
            yield
