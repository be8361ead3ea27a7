"""Endpoints on Vertex AI: an endpoint per name, a deployed model per variant, weights as ``traffic_split``.

- The endpoint id is the endpoint's name (checked against Vertex's id rule at plan time);
  ``display_name`` is the name too, and ``mlshift-*`` labels mark what mlshift manages.
- A variant is a deployed model. Deployed model ids are numeric and assigned by Vertex, so the
  variant's name is its ``display_name``; weights are the endpoint's ``traffic_split`` by id.
- Vertex cannot swap a deployed model's model or machines in place, so the target does not
  declare ``IN_PLACE_UPDATE``: the planner adds a variant, shifts traffic, removes the old one.
- Compute comes from the sizes table (:data:`mlshift_vertex.options.SIZE_TO_MACHINE`), as
  dedicated resources with ``min_replica_count = max_replica_count = replicas``.
- Autoscaling (``EndpointSpec.autoscaling``) applies to every deployed model: ``min_replicas`` and
  ``max_replicas`` become ``min_replica_count``/``max_replica_count``, and
  ``target_requests_per_replica`` one ``autoscaling_metric_specs`` entry on
  ``prediction/online/request_count``. A change is made in place (``MutateDeployedModel``), only
  on the deployed models whose scaling differs. Vertex starts a deployed model at
  ``min_replica_count``; the count the variant asked for (``compute.replicas``) is kept in the
  endpoint label ``mlshift-scale-<deployed model id>``, which also marks it as autoscaled.
- A public endpoint cannot send a request to one deployed model, so there is no
  ``TARGETED_INVOKE``: rollout gates read Cloud Monitoring (``read_metrics``), whose data is
  ``metric_lag`` seconds late; the planner refuses bakes shorter than that.
- ``capture`` (``CAPTURE``) is the endpoint's request-response logging
  (``predict_request_response_logging_config``): ``sample_rate`` is its ``sampling_rate`` and
  the rows go to the BigQuery table ``provider_options.vertex.capture_table``, else
  ``bq://PROJECT.<capture_dataset>.<endpoint>`` (``-`` written ``_``). Monitors read the rows
  back with a query on ``logging_time`` (:meth:`VertexEndpointService.read_capture`).
- Every long-running operation is polled by mlshift (:meth:`VertexAdapter.wait`) with its own
  deadline; the SDK's own 900 s deploy timeout is never used.
"""

from __future__ import annotations

import builtins
import json
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
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
    VariantMetrics,
    VariantState,
    check_replicas_within_autoscaling,
    validate_own_options,
)
from mlshift.errors import ConfigError, Conflict, InvalidPayload, NotFound, UnsupportedOperation
from mlshift.specs.endpoint import Autoscaling, Compute, EndpointSpec
from mlshift.specs.model import ModelRef
from mlshift.specs.monitor import CaptureSpec
from mlshift_vertex._naming import LABEL_MANAGED
from mlshift_vertex.errors import PROVIDER, google_errors
from mlshift_vertex.options import (
    SIZE_TO_MACHINE,
    EndpointOptions,
    bigquery_table,
    check_labels,
    machine_for,
)

if TYPE_CHECKING:
    from mlshift_vertex._adapter import VertexAdapter

__all__ = ["VertexEndpointService"]

LABEL_ENDPOINT = "mlshift-endpoint"
#: ``mlshift-scale-<deployed model id>``: the replicas an autoscaled variant asked to start with.
LABEL_SCALE = "mlshift-scale-"
#: The autoscaling metric ``target_requests_per_replica`` maps to (requests per minute per replica).
REQUEST_COUNT = "aiplatform.googleapis.com/prediction/online/request_count"
_RESPONSE_COUNT = "aiplatform.googleapis.com/prediction/online/response_count"
_LATENCIES = "aiplatform.googleapis.com/prediction/online/prediction_latencies"
#: How plans name the endpoint's request-response logging (``capture``).
LOGGING = "request_response_logging"
#: Where Vertex AI logs when ``bigquery_destination`` names only a project (its documented names).
_LOGGING_TABLE = "request_response_logging"


def _size_for(machine_type: str) -> str:
    for size, spec in SIZE_TO_MACHINE.items():
        if spec.machine_type == machine_type:
            return size
    return "cpu-small"


def _bounds(
    autoscaling: Autoscaling | None, replicas: int
) -> tuple[int, int, builtins.list[tuple[str, int]]]:
    """``min_replica_count``, ``max_replica_count`` and the metric specs of a deployed model."""
    if autoscaling is None:
        return replicas, replicas, []
    target = autoscaling.target_requests_per_replica
    metrics = [(REQUEST_COUNT, round(target))] if target is not None else []
    return autoscaling.min_replicas, autoscaling.max_replicas, metrics


def _scaling_of(resources: Any) -> Autoscaling:
    """A deployed model's bounds and request-count target in neutral terms."""
    target = next(
        (float(m.target) for m in resources.autoscaling_metric_specs if m.metric_name == REQUEST_COUNT), None
    )
    low = max(1, resources.min_replica_count)
    return Autoscaling(
        min_replicas=low,
        max_replicas=max(low, resources.max_replica_count),
        target_requests_per_replica=target,
    )


def _check_bounds(name: str, scaling: Autoscaling) -> None:
    if scaling.min_replicas < 1:
        raise ConfigError(
            f"endpoint {name!r}: autoscaling.min_replicas is 0; a Vertex AI deployed model keeps at "
            "least one replica (min_replica_count >= 1)",
            field="autoscaling.min_replicas",
            hint="set min_replicas to 1 or more",
        )
    target = scaling.target_requests_per_replica
    if target is not None and target != round(target):
        raise ConfigError(
            f"endpoint {name!r}: autoscaling.target_requests_per_replica is {target:g}; Vertex AI "
            "takes a whole number of requests per minute per replica",
            field="autoscaling.target_requests_per_replica",
            hint=f"use {max(1, round(target))}",
        )


@dataclass(frozen=True)
class Logging:
    """An endpoint's request-response logging: what ``capture`` amounts to on Vertex AI.

    Attributes:
        enabled: Whether requests are logged.
        sampling_rate: The share of requests logged, in (0, 1].
        destination: ``bq://PROJECT.DATASET.TABLE`` (or ``bq://PROJECT``: Vertex names the
            dataset and table itself); ``""`` when never set.
    """

    enabled: bool = False
    sampling_rate: float = 0.0
    destination: str = ""

    @classmethod
    def of(cls, endpoint: Any) -> Logging:
        """The logging of a live ``Endpoint``."""
        config = endpoint.predict_request_response_logging_config
        return cls(
            enabled=bool(config.enabled),
            sampling_rate=float(config.sampling_rate),
            destination=str(config.bigquery_destination.output_uri),
        )

    def message(self, types: Any) -> Any:
        """As ``PredictRequestResponseLoggingConfig``."""
        config = types.PredictRequestResponseLoggingConfig(
            enabled=self.enabled, sampling_rate=self.sampling_rate
        )
        if self.destination:
            config.bigquery_destination = types.BigQueryDestination(output_uri=self.destination)
        return config


def _dataset_name(text: str) -> str:
    """A name made BigQuery-dataset compatible as Vertex AI makes it (other characters as ``_``)."""
    return re.sub(r"[^A-Za-z0-9_]", "_", text)


def logging_table(destination: str, endpoint: str) -> tuple[str, str, str] | None:
    """The ``(project, dataset, table)`` request-response logging of ``endpoint`` writes to.

    A destination naming only a project gets the dataset and table Vertex AI documents:
    ``logging_<display name>_<endpoint id>`` and ``request_response_logging`` (the display name
    of an endpoint mlshift made is its id). ``None``: not a BigQuery destination.
    """
    full = bigquery_table(destination)
    if full is not None:
        return full
    project = re.fullmatch(r"bq://([a-z][a-z0-9-]{4,28}[a-z0-9])", destination)
    if project is None:
        return None
    return project[1], _dataset_name(f"logging_{endpoint}_{endpoint}"), _LOGGING_TABLE


def _payload(parts: Sequence[str], key: str) -> bytes | None:
    """A logged ``request_payload``/``response_payload`` as the body the model server saw or sent.

    One element holding the whole body (``{"instances": [...]}``) is kept as it is; elements
    that are one instance or prediction each are put back into ``{key: [...]}``.

    Raises:
        ValueError: an element that is not JSON.
    """
    if not parts:
        return None
    if len(parts) == 1:
        whole = json.loads(parts[0])
        if isinstance(whole, dict) and key in whole:
            return parts[0].encode()
    return json.dumps({key: [json.loads(p) for p in parts]}).encode()


def check_autoscaling(spec: EndpointSpec) -> None:
    """What Vertex AI refuses in ``spec.autoscaling`` (plan time).

    Raises:
        ConfigError: naming the field.
    """
    scaling = spec.autoscaling
    assert scaling is not None
    _check_bounds(spec.name, scaling)
    check_replicas_within_autoscaling(spec)


class VertexEndpointService(BaseEndpointService):
    """``EndpointService`` on Vertex AI endpoints."""

    target_name = "Vertex AI"

    def __init__(self, adapter: VertexAdapter) -> None:
        self._adapter = adapter
        # Deployed model id -> variant name, per endpoint (for naming who answered a request).
        self._variant_names: dict[str, dict[str, str]] = {}
        # Immutable model versions' digests, by "projects/../models/NAME@VERSION".
        self._digests: dict[str, str] = {}
        self._lock = threading.Lock()

    @property
    def _client(self) -> Any:
        return self._adapter.clients.client("endpoint")

    def resource(self, name: str) -> str:
        """``projects/P/locations/L/endpoints/NAME``."""
        return f"{self._adapter.parent}/endpoints/{name}"

    # ---------------------------------------------------------------- reading

    def _get(self, name: str) -> Any | None:
        try:
            with google_errors(f"read endpoint {name!r}"):
                return self._client.get_endpoint(name=self.resource(name))
        except NotFound:
            return None

    def _require(self, name: str) -> Any:
        endpoint = self._get(name)
        if endpoint is None:
            raise NotFound(f"endpoint {name!r} does not exist on {self._adapter.uri.raw}", provider=PROVIDER)
        return endpoint

    def _digest(self, model: str, version: str) -> str | None:
        key = f"{model}@{version}"
        found = self._digests.get(key)
        if found is None:
            name = model.rsplit("/", 1)[-1]
            try:
                found = self._adapter.models.get(ModelRef(name=name, version=version)).digest
            except NotFound:
                return None
            with self._lock:
                self._digests[key] = found
        return found

    def _state(self, endpoint: Any) -> EndpointState:
        split = dict(endpoint.traffic_split)
        variants = []
        names: dict[str, str] = {}
        labels = dict(endpoint.labels)
        scalings: list[Autoscaling | None] = []
        for deployed in endpoint.deployed_models:
            model_name = deployed.model.rsplit("/", 1)[-1].partition("@")[0]
            resources = deployed.dedicated_resources
            names[deployed.id] = deployed.display_name
            asked = labels.get(LABEL_SCALE + deployed.id, "")
            scalings.append(_scaling_of(resources) if asked else None)
            variants.append(
                VariantState(
                    name=deployed.display_name or deployed.id,
                    model=f"{model_name}:{deployed.model_version_id}",
                    digest=self._digest(deployed.model.partition("@")[0], deployed.model_version_id),
                    weight=int(split.get(deployed.id, 0)),
                    compute=Compute(
                        size=_size_for(resources.machine_spec.machine_type),
                        replicas=int(asked) if asked.isdigit() else max(1, resources.min_replica_count),
                    ),
                    status="healthy",
                )
            )
        name = endpoint.name.rsplit("/", 1)[-1]
        with self._lock:
            self._variant_names[name] = names
        created = endpoint.create_time
        common = scalings[0] if scalings and all(x == scalings[0] for x in scalings) else None
        return EndpointState(
            name=name,
            url=f"{self._adapter.clients.vertex_endpoint}/v1/{endpoint.name}:predict",
            status="healthy" if variants else "creating",
            variants=tuple(variants),
            tags={
                k: v
                for k, v in labels.items()
                if not k.startswith("mlshift-") and k not in self._adapter.options.labels
            },
            created_at=created if isinstance(created, datetime) else None,
            autoscaling=common,
        )

    def observe(self, name: str) -> EndpointState | None:
        endpoint = self._get(name)
        return None if endpoint is None else self._state(endpoint)

    def _managed(self) -> builtins.list[Any]:
        with google_errors("list endpoints"):
            return builtins.list(
                self._client.list_endpoints(
                    request=self._adapter.clients.types().ListEndpointsRequest(
                        parent=self._adapter.parent, filter=f'labels.{LABEL_MANAGED}="true"'
                    )
                )
            )

    def list(self) -> builtins.list[EndpointState]:
        return sorted((self._state(e) for e in self._managed()), key=lambda s: s.name)

    def serving(self, model_ref: str) -> builtins.list[str]:
        """Names of the endpoints serving ``NAME:VERSION``."""
        name, _, version = model_ref.partition(":")
        out = []
        for endpoint in self._managed():
            for deployed in endpoint.deployed_models:
                if (
                    deployed.model.rsplit("/", 1)[-1].partition("@")[0] == name
                    and deployed.model_version_id == version
                ):
                    out.append(endpoint.name.rsplit("/", 1)[-1])
                    break
        return out

    def validate(self, spec: EndpointSpec) -> None:
        """Check ``provider_options.vertex``, the tags (they become labels) and the sizes."""
        options = validate_own_options(spec, "vertex", EndpointOptions)
        check_labels(spec.tags, "tags")
        for i, variant in enumerate(spec.variants):
            size = spec.compute_for(variant).size
            if size not in SIZE_TO_MACHINE and not getattr(options, "machine_type", None):
                raise ConfigError(f"no Vertex machine for size {size!r}", field=f"variants[{i}].compute.size")
            if variant.batching is not None and variant.batching.max_batch_size > 1:
                # The server's environment is part of the uploaded Model, shared by every
                # deployment of the version; a DeployedModel cannot set its own.
                raise ConfigError(
                    f"variant {variant.name!r} sets batching, which Vertex AI cannot apply per variant: "
                    "a model server's environment is fixed when the model version is uploaded",
                    field=f"variants[{i}].batching",
                    hint="remove batching from the variant on the vertex target",
                )
        if spec.autoscaling is not None:
            check_autoscaling(spec)
        assert isinstance(options, EndpointOptions)
        self._check_capture(spec, options)

    @staticmethod
    def _check_capture(spec: EndpointSpec, options: EndpointOptions) -> None:
        """What request-response logging cannot do with ``capture`` and ``capture_table`` (plan time).

        Raises:
            ConfigError: a ``capture_table`` with nothing to log, naming the field.
        """
        if options.capture_table is None:
            return
        if spec.capture is None:
            raise ConfigError(
                f"endpoint {spec.name!r}: provider_options.vertex.capture_table is set but the spec has "
                "no capture: the table only says where captured requests go",
                field="provider_options.vertex.capture_table",
                hint="add capture: {sample_rate: 1.0} to log requests there, or remove capture_table",
            )
        if not spec.capture.enabled:
            raise ConfigError(
                f"endpoint {spec.name!r}: capture.enabled is false but provider_options.vertex.capture_table "
                "names a table to log requests to",
                field="capture.enabled",
                hint="remove capture_table to stop logging, or set capture.enabled to true",
            )

    def plan_notes(self, spec: EndpointSpec, observed: EndpointState | None) -> builtins.list[str]:
        """What Vertex AI does differently with ``spec``, for the plan: how gates see variants,
        where an autoscaled variant starts, and where captured requests go."""
        notes = []
        capture = spec.capture
        if capture is not None and capture.enabled:
            wanted = self._wanted_logging(spec, self._get(spec.name))
            assert wanted is not None
            notes.append(
                f"capture is Vertex AI request-response logging: sampling_rate {wanted.sampling_rate:g} "
                f"to the BigQuery table {wanted.destination} (Vertex writes the rows; monitors query "
                "them by logging_time)"
            )
            ignored = capture.server_settings_set()
            if ignored:
                notes.append(
                    f"Vertex AI logs requests itself: {' and '.join(ignored)} do not apply there "
                    "(its logging never slows a caller)"
                )
        if spec.rollout is not None or len(spec.variants) > 1:
            lag = self._adapter.options.metric_lag
            notes.append(
                "Vertex AI cannot send a request to one deployed model of a public endpoint, so "
                "rollout gates read each variant's Cloud Monitoring metrics (response_count by "
                f"response_code, prediction_latencies), which arrive up to {lag:g} s late; probes "
                "and checks= cannot target a variant"
            )
        scaling = spec.autoscaling
        if scaling is not None:
            above = sorted({spec.compute_for(v).replicas for v in spec.variants} - {scaling.min_replicas})
            if above:
                notes.append(
                    f"Vertex AI starts each deployed model at min_replica_count ({scaling.min_replicas}), "
                    f"not at compute.replicas ({', '.join(map(str, above))}), and scales from there"
                )
        return notes

    # ---------------------------------------------------------------- writing

    def _labels(self, name: str, tags: Mapping[str, str]) -> dict[str, str]:
        return {**self._adapter.options.labels, **tags, LABEL_MANAGED: "true", LABEL_ENDPOINT: name}

    def _deployed_model(self, variant: ResolvedVariant, options: EndpointOptions | None) -> Any:
        types = self._adapter.clients.types()
        machine = machine_for(variant.compute.size, options)
        spec = types.MachineSpec(machine_type=machine.machine_type)
        if machine.accelerator_type:
            spec.accelerator_type = machine.accelerator_type
            spec.accelerator_count = machine.accelerator_count
        low, high, metrics = _bounds(variant.autoscaling, variant.compute.replicas)
        deployed = types.DeployedModel(
            model=f"{self._adapter.models.model_name(variant.model.name)}@{variant.model.version}",
            display_name=variant.name,
            dedicated_resources=types.DedicatedResources(
                machine_spec=spec,
                min_replica_count=low,
                max_replica_count=high,
                autoscaling_metric_specs=[
                    types.AutoscalingMetricSpec(metric_name=m, target=t) for m, t in metrics
                ],
            ),
        )
        if self._adapter.options.service_account:
            deployed.service_account = self._adapter.options.service_account
        return deployed

    def _deploy(self, name: str, variant: ResolvedVariant, split: Mapping[str, int], options: Any) -> None:
        what = f"deploy {variant.model.name}:{variant.model.version} as variant {variant.name!r} of {name!r}"
        with google_errors(what):
            operation = self._client.deploy_model(
                endpoint=self.resource(name),
                deployed_model=self._deployed_model(variant, options),
                traffic_split=dict(split),
            )
        result = self._adapter.wait(operation, what)
        if variant.autoscaling is not None:
            # Mark it autoscaled, with the count it asked to start with (see the module docstring).
            endpoint = self._require(name)
            deployed_id = str(result.deployed_model.id)
            labels = {**dict(endpoint.labels), LABEL_SCALE + deployed_id: str(variant.compute.replicas)}
            self._update(endpoint, {"labels": labels}, f"label the autoscaling of variant {variant.name!r}")

    def create(self, spec: EndpointSpec, variants: Sequence[ResolvedVariant]) -> Operation[EndpointState]:
        """Create the endpoint, deploy each variant, then set the weights.

        The first variant is deployed with all the traffic (``{"0": 100}``), the others at 0%;
        if any step fails, what was made is removed again before the error is raised.
        """
        options = validate_own_options(spec, "vertex", EndpointOptions)
        assert isinstance(options, EndpointOptions)
        types = self._adapter.clients.types()
        endpoint = types.Endpoint(display_name=spec.name, labels=self._labels(spec.name, spec.tags))
        if self._adapter.options.encryption_key:
            endpoint.encryption_spec = types.EncryptionSpec(kms_key_name=self._adapter.options.encryption_key)
        if self._adapter.options.network:
            endpoint.network = self._adapter.options.network
        logging = self._wanted_logging(spec, None)
        if logging is not None and logging.enabled:
            endpoint.predict_request_response_logging_config = logging.message(types)
        what = f"create endpoint {spec.name!r}"
        with google_errors(what):
            operation = self._client.create_endpoint(
                parent=self._adapter.parent, endpoint=endpoint, endpoint_id=spec.name
            )
        self._adapter.wait(operation, what)
        try:
            for i, variant in enumerate(variants):
                split = {"0": 100} if i == 0 else {"0": 0, **self._split(spec.name)}
                self._deploy(spec.name, variant, split, options)
            if len(variants) > 1:
                self.set_weights(spec.name, {v.name: v.weight for v in variants}).wait()
        except Exception:
            self._teardown(spec.name)
            raise
        return CompletedOperation(self._require_state(spec.name), what)

    def _require_state(self, name: str) -> EndpointState:
        return self._state(self._require(name))

    def _split(self, name: str) -> dict[str, int]:
        return {k: int(v) for k, v in self._require(name).traffic_split.items()}

    def add_variant(self, name: str, variant: ResolvedVariant) -> Operation[EndpointState]:
        """Deploy one more model at 0% (the planner shifts traffic to it afterwards)."""
        endpoint = self._require(name)
        if any(d.display_name == variant.name for d in endpoint.deployed_models):
            raise Conflict(f"endpoint {name!r} already has a variant {variant.name!r}", provider=PROVIDER)
        split = {k: int(v) for k, v in endpoint.traffic_split.items()}
        self._deploy(name, variant, {"0": 0, **split} if split else {"0": 100}, None)
        return CompletedOperation(self._require_state(name), f"add variant {variant.name}")

    def _ids(self, endpoint: Any) -> dict[str, str]:
        """Variant name → deployed model id."""
        return {d.display_name: d.id for d in endpoint.deployed_models}

    def remove_variant(self, name: str, variant_name: str) -> Operation[EndpointState]:
        """Undeploy a variant; Vertex refuses one that still has traffic, and so does this, first."""
        endpoint = self._require(name)
        ids = self._ids(endpoint)
        if variant_name not in ids:
            raise NotFound(f"endpoint {name!r} has no variant {variant_name!r}", provider=PROVIDER)
        weight = int(endpoint.traffic_split.get(ids[variant_name], 0))
        if weight > 0 and len(ids) > 1:
            raise Conflict(
                f"variant {variant_name!r} of endpoint {name!r} still receives {weight}% of the traffic",
                provider=PROVIDER,
                hint="shift its traffic to the other variants first (Vertex undeploys only at 0%)",
            )
        if len(ids) == 1:
            raise Conflict(
                f"variant {variant_name!r} is the last one of endpoint {name!r}",
                provider=PROVIDER,
                hint="delete the endpoint instead",
            )
        what = f"undeploy variant {variant_name!r} of {name!r}"
        with google_errors(what):
            operation = self._client.undeploy_model(
                endpoint=self.resource(name), deployed_model_id=ids[variant_name]
            )
        self._adapter.wait(operation, what)
        return CompletedOperation(self._require_state(name), what)

    def set_weights(self, name: str, weights: Mapping[str, int]) -> Operation[EndpointState]:
        """One ``UpdateEndpoint`` of ``traffic_split`` with the endpoint's ``etag``."""
        endpoint = self._require(name)
        ids = self._ids(endpoint)
        unknown = sorted(set(weights) - set(ids))
        full = {ids[n]: int(weights.get(n, 0)) for n in ids}
        if unknown or sum(full.values()) != 100:
            raise ConfigError(
                f"invalid weights {dict(weights)} for endpoint {name!r}"
                + (f": no variant {', '.join(unknown)}" if unknown else ": they must sum to 100"),
                field="weights",
            )
        current = {i: int(endpoint.traffic_split.get(i, 0)) for i in ids.values()}
        if full != current:
            self._update(endpoint, {"traffic_split": full}, f"set the weights of {name!r}")
        return CompletedOperation(self._require_state(name), "set weights")

    def _update(self, endpoint: Any, changes: Mapping[str, Any], what: str) -> None:
        from google.protobuf import field_mask_pb2

        types = self._adapter.clients.types()
        update = types.Endpoint(name=endpoint.name, etag=endpoint.etag, **changes)
        with google_errors(what):
            self._client.update_endpoint(
                endpoint=update, update_mask=field_mask_pb2.FieldMask(paths=builtins.list(changes))
            )

    def update_tags(self, name: str, tags: Mapping[str, str]) -> Operation[EndpointState]:
        endpoint = self._require(name)
        check_labels(tags, "tags")
        labels = {**self._labels(name, tags), **self._scale_labels(endpoint)}
        if labels != dict(endpoint.labels):
            self._update(endpoint, {"labels": labels}, f"update the labels of {name!r}")
        return CompletedOperation(self._require_state(name), "update tags")

    @staticmethod
    def _scale_labels(endpoint: Any) -> dict[str, str]:
        """The ``mlshift-scale-*`` labels of the deployed models the endpoint still has."""
        ids = {d.id for d in endpoint.deployed_models}
        return {
            k: v
            for k, v in endpoint.labels.items()
            if k.startswith(LABEL_SCALE) and k[len(LABEL_SCALE) :] in ids
        }

    def set_autoscaling(self, name: str, autoscaling: Autoscaling | None) -> Operation[EndpointState]:
        """Scale every deployed model within ``autoscaling``'s bounds (``None``: back to fixed counts).

        Each deployed model whose bounds or metric differ gets one ``MutateDeployedModel``; the
        others are left alone, so an unchanged spec makes no call. Stopping autoscaling fixes
        each at the count its variant asked to start with.

        Raises:
            ConfigError: bounds Vertex refuses (``min_replicas`` 0), before any call.
            NotFound: no such endpoint.
        """
        from google.protobuf import field_mask_pb2

        if autoscaling is not None:
            _check_bounds(name, autoscaling)
        endpoint = self._require(name)
        types = self._adapter.clients.types()
        labels = {k: v for k, v in endpoint.labels.items() if not k.startswith(LABEL_SCALE)}
        scale = self._scale_labels(endpoint)
        for deployed in endpoint.deployed_models:
            resources = deployed.dedicated_resources
            asked = scale.get(LABEL_SCALE + deployed.id, "")
            start = int(asked) if asked.isdigit() else max(1, resources.min_replica_count)
            low, high, metrics = _bounds(autoscaling, start)
            have = (
                resources.min_replica_count,
                resources.max_replica_count,
                sorted((m.metric_name, m.target) for m in resources.autoscaling_metric_specs),
            )
            if autoscaling is not None:
                labels[LABEL_SCALE + deployed.id] = str(start)
            if have == (low, high, sorted(metrics)):
                continue
            what = f"change the autoscaling of variant {deployed.display_name!r} of {name!r}"
            change = types.DeployedModel(
                id=deployed.id,
                dedicated_resources=types.DedicatedResources(
                    min_replica_count=low,
                    max_replica_count=high,
                    autoscaling_metric_specs=[
                        types.AutoscalingMetricSpec(metric_name=m, target=t) for m, t in metrics
                    ],
                ),
            )
            paths = [
                "dedicated_resources.min_replica_count",
                "dedicated_resources.max_replica_count",
                "dedicated_resources.autoscaling_metric_specs",
            ]
            with google_errors(what):
                operation = self._client.mutate_deployed_model(
                    endpoint=self.resource(name),
                    deployed_model=change,
                    update_mask=field_mask_pb2.FieldMask(paths=paths),
                )
            self._adapter.wait(operation, what)
        if labels != dict(endpoint.labels):
            self._update(self._require(name), {"labels": labels}, f"label the autoscaling of {name!r}")
        return CompletedOperation(self._require_state(name), f"set autoscaling of {name}")

    # ---------------------------------------------------------------- capture (options)

    def default_capture_table(self, name: str) -> str:
        """``bq://PROJECT.<capture_dataset>.<name>`` (``-`` as ``_``): where ``capture`` logs by default."""
        options = self._adapter.options
        return f"bq://{self._adapter.project}.{options.capture_dataset}.{name.replace('-', '_')}"

    def _wanted_logging(self, spec: EndpointSpec, endpoint: Any | None) -> Logging | None:
        """The logging ``spec`` asks for, given the live ``endpoint`` (``None``: leave it as it is).

        The table is ``provider_options.vertex.capture_table``; a spec without its own
        ``provider_options.vertex`` keeps the live endpoint's table, else gets the default.
        Stopping capture keeps the rate and table, so rows already logged are still found.
        """
        capture = spec.capture
        if capture is None:
            return None
        have = Logging() if endpoint is None else Logging.of(endpoint)
        if not capture.enabled:
            return Logging(False, have.sampling_rate, have.destination)
        options = validate_own_options(spec, "vertex", EndpointOptions)
        assert isinstance(options, EndpointOptions)
        if options.capture_table:
            table = options.capture_table
        elif "vertex" not in spec.provider_options and have.destination:
            table = have.destination
        else:
            table = self.default_capture_table(spec.name)
        return Logging(True, capture.sample_rate, table)

    def option_changes(self, spec: EndpointSpec) -> builtins.list[OptionChange]:
        """What applying ``capture`` changes in the endpoint's request-response logging (reads only).

        A spec without ``capture`` changes nothing; nor does one whose logging is already live.
        """
        if spec.capture is None:
            return []
        endpoint = self._get(spec.name)
        if endpoint is None:
            return []
        wanted = self._wanted_logging(spec, endpoint)
        have = Logging.of(endpoint)
        if wanted is None or wanted == have or (not wanted.enabled and not have.enabled):
            return []
        changes = []
        if wanted.enabled != have.enabled:
            changes.append(
                OptionChange(field=f"{LOGGING}.enabled", old=str(have.enabled).lower(), new="true")
                if wanted.enabled
                else OptionChange(field=f"{LOGGING}.enabled", old="true", new="false")
            )
        if wanted.enabled and wanted.sampling_rate != (have.sampling_rate if have.enabled else None):
            changes.append(
                OptionChange(
                    field=f"{LOGGING}.sampling_rate",
                    old=f"{have.sampling_rate:g}" if have.enabled else None,
                    new=f"{wanted.sampling_rate:g}",
                )
            )
        if wanted.enabled and wanted.destination != have.destination:
            changes.append(
                OptionChange(
                    field=f"{LOGGING}.bigquery_destination",
                    old=have.destination or None,
                    new=wanted.destination,
                )
            )
        return changes

    def update_options(self, name: str, spec: EndpointSpec) -> Operation[EndpointState]:
        """Set the endpoint's request-response logging to what ``capture`` asks for: one
        ``UpdateEndpoint`` of ``predict_request_response_logging_config``, none if it already is.

        Raises:
            NotFound: no such endpoint.
        """
        endpoint = self._require(name)
        wanted = self._wanted_logging(spec, endpoint)
        have = Logging.of(endpoint)
        if wanted is not None and wanted != have and (wanted.enabled or have.enabled):
            types = self._adapter.clients.types()
            self._update(
                endpoint,
                {"predict_request_response_logging_config": wanted.message(types)},
                f"set the request-response logging of {name!r}",
            )
        return CompletedOperation(self._require_state(name), f"update the capture of {name}")

    # ---------------------------------------------------------------- capture (reading)

    def capture_settings(self, name: str) -> CaptureSpec | None:
        """The endpoint's request-response logging in neutral terms (``None``: it does not log
        requests, or does not exist). Read-only."""
        endpoint = self._get(name)
        if endpoint is None:
            return None
        logging = Logging.of(endpoint)
        if not logging.enabled or not 0 < logging.sampling_rate <= 1:
            return None
        return CaptureSpec(sample_rate=logging.sampling_rate)

    def capture_location(self, name: str) -> str:
        """The BigQuery table ``name`` logs to, ``bq://PROJECT.DATASET.TABLE``: the live endpoint's
        destination (a project alone: the dataset and table Vertex AI makes there), else the
        default table (an endpoint that was deleted)."""
        endpoint = self._get(name)
        destination = "" if endpoint is None else Logging.of(endpoint).destination
        found = logging_table(destination, name) if destination else None
        if found is None:
            return self.default_capture_table(name)
        return "bq://" + ".".join(found)

    def _answered_by(self, endpoint: Any | None) -> dict[str, tuple[str, str]]:
        """Deployed model id -> (variant, ``name:version``) of the live endpoint."""
        if endpoint is None:
            return {}
        return {
            str(d.id): (
                d.display_name or str(d.id),
                f"{d.model.rsplit('/', 1)[-1].partition('@')[0]}:{d.model_version_id}",
            )
            for d in endpoint.deployed_models
        }

    def read_capture(self, name: str, *, since: datetime, until: datetime) -> Iterator[CapturedRequest]:
        """The rows request-response logging wrote for ``name`` with ``since < logging_time <= until``.

        One query (``jobs.query``) on the endpoint's table, filtered on ``logging_time``; rows of
        other endpoints sharing the table are left out. A row's request id is Vertex AI's
        ``request_id``; its variant is the deployed model's name while it is deployed (its id
        afterwards, and then no model version is known). A table that does not exist yet holds
        nothing; a row whose payload is not JSON is skipped.

        Raises:
            ProviderError: BigQuery refused the query.
        """
        from google.cloud import bigquery

        endpoint = self._get(name)
        location = self.capture_location(name)
        table = bigquery_table(location)
        assert table is not None
        answered_by = self._answered_by(endpoint)
        sql = (
            "SELECT endpoint, deployed_model_id, logging_time, request_id, request_payload, "
            f"response_payload FROM `{'.'.join(table)}` "
            "WHERE logging_time > @since AND logging_time <= @until ORDER BY logging_time"
        )
        config = bigquery.QueryJobConfig(
            query_parameters=[
                bigquery.ScalarQueryParameter("since", "TIMESTAMP", since.astimezone(timezone.utc)),
                bigquery.ScalarQueryParameter("until", "TIMESTAMP", until.astimezone(timezone.utc)),
            ]
        )
        client = self._adapter.clients.client("bigquery")
        what = f"read the request-response logging of {name!r} in {location}"
        try:
            with google_errors(what):
                rows = builtins.list(client.query_and_wait(sql, job_config=config))
        except NotFound:
            return  # no table yet: nothing was logged
        suffix = f"/endpoints/{name}"
        for row in rows:
            logged_by = str(row.get("endpoint") or "")
            if logged_by and logged_by != name and not logged_by.endswith(suffix):
                continue
            deployed_id = str(row.get("deployed_model_id") or "")
            variant, model = answered_by.get(deployed_id, (deployed_id, None))
            try:
                request = _payload(builtins.list(row.get("request_payload") or []), "instances")
                response = _payload(builtins.list(row.get("response_payload") or []), "predictions")
            except ValueError:
                continue
            stamp = row.get("logging_time")
            if request is None or not isinstance(stamp, datetime):
                continue
            yield CapturedRequest(
                request_id=str(row.get("request_id") or ""),
                endpoint=name,
                variant=variant,
                timestamp=stamp.astimezone(timezone.utc),
                content_type="application/json",
                request=request,
                response=response,
                model=model,
            )

    def _teardown(self, name: str) -> None:
        """Undeploy every deployed model (traffic moved off each first) and delete the endpoint."""
        endpoint = self._get(name)
        if endpoint is None:
            return
        deployed = builtins.list(endpoint.deployed_models)
        if len(deployed) > 1:
            last = deployed[-1].id
            self._update(
                endpoint, {"traffic_split": {last: 100}}, f"move the traffic of {name!r} to one variant"
            )
        for each in deployed:
            what = f"undeploy variant {each.display_name!r} of {name!r}"
            with google_errors(what):
                operation = self._client.undeploy_model(
                    endpoint=self.resource(name), deployed_model_id=each.id
                )
            self._adapter.wait(operation, what)
        with google_errors(f"delete endpoint {name!r}"):
            operation = self._client.delete_endpoint(name=self.resource(name))
        self._adapter.wait(operation, f"delete endpoint {name!r}")

    def delete(self, name: str) -> Operation[None]:
        self._require(name)
        self._teardown(name)
        self._adapter.store.journal.clear(name)
        with self._lock:
            self._variant_names.pop(name, None)
        return CompletedOperation(None, f"delete endpoint {name}")

    # ---------------------------------------------------------------- invoking

    def _variant_name(self, name: str, deployed_id: str) -> str | None:
        found = self._variant_names.get(name, {}).get(deployed_id)
        if found is None and deployed_id:
            self.observe(name)
            found = self._variant_names.get(name, {}).get(deployed_id)
        return found

    def invoke(
        self,
        name: str,
        body: bytes,
        content_type: str = "application/json",
        *,
        variant: str | None = None,
        timeout: float = 60.0,
    ) -> Invocation:
        """``Predict`` on the endpoint; the response's ``deployedModelId`` names the variant.

        Raises:
            UnsupportedOperation: ``variant`` given (a public endpoint cannot target one).
            InvalidPayload: a body that is not ``{"instances": [...]}`` JSON.
        """
        if variant is not None:
            raise UnsupportedOperation(
                "Vertex AI cannot send a request to one deployed model of a public endpoint "
                f"(asked for variant {variant!r} of {name!r})",
                hint="predict without a variant; rollout gates on this target read Cloud Monitoring",
            )
        if "json" not in content_type:
            raise InvalidPayload(
                f"Vertex AI endpoints take JSON, not {content_type}",
                hint='send {"instances": [...]} (a list of rows)',
            )
        try:
            payload = json.loads(body)
        except ValueError as exc:
            raise InvalidPayload(f"the request to {name!r} is not JSON: {exc}") from None
        if isinstance(payload, list):
            payload = {"instances": payload}
        if not isinstance(payload, dict) or not isinstance(payload.get("instances"), builtins.list):
            raise InvalidPayload(
                f"Vertex AI endpoints take {{'instances': [...]}}; the request to {name!r} has none",
                hint="pass a list of rows, or a dict with an 'instances' list",
            )
        from google.api_core import exceptions as g

        types = self._adapter.clients.types()
        request = types.PredictRequest.from_json(
            json.dumps(
                {
                    "endpoint": self.resource(name),
                    "instances": payload["instances"],
                    **({"parameters": payload["parameters"]} if "parameters" in payload else {}),
                }
            )
        )
        start = time.perf_counter()
        client = self._adapter.clients.client("prediction")
        with google_errors(f"invoke endpoint {name!r}"):
            try:
                response = client.predict(request=request, timeout=timeout)
            except g.GoogleAPICallError as exc:
                code = int(exc.code or 500)
                if code in (400, 500, 502, 503):  # the model container's own answer
                    error = {"error": {"message": exc.message or str(exc)}}
                    return Invocation(
                        status_code=code,
                        body=json.dumps(error).encode(),
                        latency_ms=(time.perf_counter() - start) * 1000,
                    )
                raise
        data = type(response).to_dict(response, preserving_proto_field_name=False)
        out = {"predictions": data.get("predictions", [])}
        deployed_id = str(data.get("deployedModelId", ""))
        return Invocation(
            status_code=200,
            body=json.dumps(out).encode(),
            variant=self._variant_name(name, deployed_id),
            latency_ms=(time.perf_counter() - start) * 1000,
        )

    # ---------------------------------------------------------------- metrics

    @property
    def metrics_timing(self) -> MetricsTiming:
        """Cloud Monitoring: datapoints every ``metric_resolution`` s, up to ``metric_lag`` s late."""
        options = self._adapter.options
        return MetricsTiming(resolution=options.metric_resolution, lag=options.metric_lag)

    def _series(self, name: str, deployed_id: str, metric: str, window: float, aligner: str) -> Any:
        from google.api_core import exceptions

        end = datetime.now(timezone.utc) + timedelta(seconds=1)
        start = end - timedelta(seconds=window + 1)
        query = (
            f'metric.type="{metric}" AND resource.type="aiplatform.googleapis.com/Endpoint" '
            f'AND resource.labels.endpoint_id="{name}" AND metric.labels.deployed_model_id="{deployed_id}"'
        )
        params = {
            "filter": query,
            "interval.startTime": start.isoformat().replace("+00:00", "Z"),
            "interval.endTime": end.isoformat().replace("+00:00", "Z"),
            "aggregation.alignmentPeriod": f"{int(window) + 2}s",
            "aggregation.perSeriesAligner": aligner,
        }
        clients = self._adapter.clients
        url = f"{clients.monitoring_endpoint}/v3/projects/{clients.project}/timeSeries"
        with google_errors(f"read the Cloud Monitoring metrics of {name!r}"):
            response = clients.client("session").get(url, params=params, timeout=60)
            if response.status_code >= 400:
                raise exceptions.from_http_response(response)  # type: ignore[no-untyped-call]
        return response.json().get("timeSeries", [])

    def read_metrics(self, name: str, variant: str, window: float) -> VariantMetrics | None:
        """Requests by response code and latency percentiles of one deployed model (Cloud Monitoring).

        Raises:
            NotFound: no such endpoint or variant.
        """
        ids = self._ids(self._require(name))
        if variant not in ids:
            raise NotFound(f"endpoint {name!r} has no variant {variant!r}", provider=PROVIDER)
        deployed_id = ids[variant]
        requests = errors = client_errors = 0
        for series in self._series(name, deployed_id, _RESPONSE_COUNT, window, "ALIGN_DELTA"):
            code = str(series.get("metric", {}).get("labels", {}).get("response_code", "200"))
            count = sum(int(p.get("value", {}).get("int64Value", 0)) for p in series.get("points", []))
            requests += count
            if code.startswith("5"):
                errors += count
            elif code.startswith("4"):
                client_errors += count
        percentiles: dict[str, float | None] = {}
        for key, aligner in (("p50", "ALIGN_PERCENTILE_50"), ("p99", "ALIGN_PERCENTILE_99")):
            values = [
                float(p.get("value", {}).get("doubleValue", 0.0))
                for s in self._series(name, deployed_id, _LATENCIES, window, aligner)
                for p in s.get("points", [])
            ]
            percentiles[key] = max(values) if values else None
        return VariantMetrics(
            variant=variant,
            window_seconds=window,
            requests=requests,
            errors=errors,
            client_errors=client_errors,
            p50_ms=percentiles["p50"],
            p99_ms=percentiles["p99"],
        )

    # ---------------------------------------------------------------- journal and lock

    def record_rollout(self, record: RolloutRecord) -> None:
        """Journal in the staging bucket (core's :class:`~mlshift.storage.RolloutJournal`)."""
        self._adapter.store.journal.record(record)

    def rollouts(self, name: str, limit: int = 20) -> builtins.list[RolloutRecord]:
        return self._adapter.store.journal.records(name, limit)

    def lock(self, name: str, *, owner: str, timeout: float) -> AbstractContextManager[None]:
        """A lease in the staging bucket, ``locks/<name>.json`` (:class:`mlshift.storage.LeaseLock`)."""
        return self._adapter.store.leases.hold(name, owner=owner, timeout=timeout)

    def close(self) -> None:
        """Forget cached names (the clients are the adapter's)."""
        with self._lock:
            self._variant_names.clear()
