"""Autoscaling of deployments through Azure Monitor autoscale settings.

Azure ML scales a managed online deployment with an autoscale setting of Azure Monitor (a
separate ARM resource, ``Microsoft.Insights/autoscaleSettings``) whose target is the deployment.
The neutral ``EndpointSpec.autoscaling`` applies to every deployment of the endpoint; each gets
one setting, named ``mlshift-WORKSPACE-ENDPOINT-DEPLOYMENT``, with one profile:

- capacity: ``min_replicas`` to ``max_replicas`` instances (``default``: ``min_replicas``);
- with ``target_requests_per_replica``: scale out by one instance when the endpoint's
  ``RequestsPerMinute`` for the deployment, per instance, averages above the target over five
  minutes; scale in by one below half of it (the gap keeps it from flapping);
- without: scale on the deployment's ``CpuUtilizationPercentage`` (out above 70%, in below 25%),
  Azure's documented default for online endpoints.

What is set is read back and only what differs is sent, so an unchanged spec makes no call.
``azure.mgmt.monitor`` is imported when a setting is first written.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any

from mlshift.errors import ConfigError, NotFound
from mlshift.specs.endpoint import Autoscaling
from mlshift_azureml.errors import azure_errors

if TYPE_CHECKING:
    from mlshift_azureml._adapter import AzureMLAdapter

__all__ = [
    "CPU_METRIC",
    "REQUESTS_METRIC",
    "DeploymentScaling",
    "DeploymentScalingService",
    "check_autoscaling",
    "setting_name",
]

logger = logging.getLogger("mlshift.azureml")

REQUESTS_METRIC = "RequestsPerMinute"
CPU_METRIC = "CpuUtilizationPercentage"
_CPU_OUT, _CPU_IN = 70.0, 25.0
_WINDOW = timedelta(minutes=5)
_GRAIN = timedelta(minutes=1)
_COOLDOWN = timedelta(minutes=5)
_PROFILE = "mlshift"


def setting_name(workspace: str, endpoint: str, deployment: str) -> str:
    """The autoscale setting mlshift owns for one deployment (unique in the resource group)."""
    return f"mlshift-{workspace}-{endpoint}-{deployment}"


def check_autoscaling(name: str, scaling: Autoscaling) -> None:
    """What Azure refuses in ``autoscaling`` (plan time).

    Args:
        name: The endpoint.
        scaling: The spec's autoscaling.

    Raises:
        ConfigError: naming the field.
    """
    if scaling.min_replicas < 1:
        raise ConfigError(
            f"endpoint {name!r}: autoscaling.min_replicas is 0; managed online deployments keep at "
            "least one instance",
            field="autoscaling.min_replicas",
            hint="set min_replicas to 1 or more",
        )


@dataclass(frozen=True)
class DeploymentScaling:
    """How one deployment scales, as its autoscale setting says."""

    min_replicas: int
    max_replicas: int
    target_requests_per_replica: float | None

    @classmethod
    def of(cls, spec: Autoscaling) -> DeploymentScaling:
        return cls(spec.min_replicas, spec.max_replicas, spec.target_requests_per_replica)

    def as_spec(self) -> Autoscaling:
        return Autoscaling(
            min_replicas=self.min_replicas,
            max_replicas=self.max_replicas,
            target_requests_per_replica=self.target_requests_per_replica,
        )


def _read(setting: Any) -> DeploymentScaling | None:
    """The neutral scaling of a setting mlshift wrote (``None``: disabled or not one of ours)."""
    if not getattr(setting, "enabled", True):
        return None
    profiles = [p for p in (setting.profiles or []) if p.name == _PROFILE] or list(setting.profiles or [])
    if not profiles:
        return None
    profile = profiles[0]
    target = None
    for rule in profile.rules or []:
        trigger, action = rule.metric_trigger, rule.scale_action
        if trigger.metric_name == REQUESTS_METRIC and str(action.direction) == "Increase":
            target = float(trigger.threshold)
    capacity = profile.capacity
    return DeploymentScaling(int(capacity.minimum), int(capacity.maximum), target)


class DeploymentScalingService:
    """Read, write and delete the autoscale settings of an endpoint's deployments."""

    def __init__(self, adapter: AzureMLAdapter) -> None:
        self._adapter = adapter

    @property
    def _settings(self) -> Any:
        return self._adapter.clients.monitor().autoscale_settings

    def _name(self, endpoint: str, deployment: str) -> str:
        return setting_name(self._adapter.workspace.name, endpoint, deployment)

    def read(self, endpoint: str, deployments: Sequence[str]) -> dict[str, DeploymentScaling]:
        """Deployment name → how it scales (deployments without a setting are left out)."""
        rg = self._adapter.workspace.resource_group
        found: dict[str, DeploymentScaling] = {}
        for deployment in deployments:
            try:
                with azure_errors(f"read the autoscale setting of {endpoint}/{deployment}"):
                    setting = self._settings.get(rg, self._name(endpoint, deployment))
            except NotFound:
                continue
            scaling = _read(setting)
            if scaling is not None:
                found[deployment] = scaling
        return found

    def converge(
        self,
        endpoint: Any,
        deployments: Sequence[Any],
        wanted: Autoscaling | None,
        current: dict[str, DeploymentScaling] | None = None,
    ) -> None:
        """Make every deployment scale as ``wanted`` (``None``: not at all); unchanged ones get no call.

        Args:
            endpoint: The SDK's endpoint entity (for its ARM id and location).
            deployments: The SDK's deployment entities.
            wanted: The scaling.
            current: What :meth:`read` returned, if it was just read.
        """
        names = [str(d.name) for d in deployments]
        have = self.read(str(endpoint.name), names) if current is None else current
        for deployment in deployments:
            name = str(deployment.name)
            if wanted is None:
                if name in have:
                    self.delete(str(endpoint.name), [name])
                continue
            if have.get(name) == DeploymentScaling.of(wanted):
                continue
            self._write(endpoint, deployment, wanted)

    def _write(self, endpoint: Any, deployment: Any, wanted: Autoscaling) -> None:
        from azure.mgmt.monitor.models import (
            AutoscaleProfile,
            AutoscaleSettingResource,
            MetricTrigger,
            ScaleAction,
            ScaleCapacity,
            ScaleRule,
            ScaleRuleMetricDimension,
        )

        def rule(metric: str, resource: str, operator: str, threshold: float, direction: str) -> Any:
            per_deployment = metric == REQUESTS_METRIC
            return ScaleRule(
                metric_trigger=MetricTrigger(
                    metric_name=metric,
                    metric_resource_uri=resource,
                    time_grain=_GRAIN,
                    statistic="Average",
                    time_window=_WINDOW,
                    time_aggregation="Average",
                    operator=operator,
                    threshold=threshold,
                    # The endpoint's request count, for this deployment only, per instance.
                    dimensions=[
                        ScaleRuleMetricDimension(
                            dimension_name="deployment", operator="Equals", values=[str(deployment.name)]
                        )
                    ]
                    if per_deployment
                    else None,
                    divide_per_instance=per_deployment,
                ),
                scale_action=ScaleAction(
                    direction=direction, type="ChangeCount", value="1", cooldown=_COOLDOWN
                ),
            )

        target = wanted.target_requests_per_replica
        if target is not None:
            rules = [
                rule(REQUESTS_METRIC, str(endpoint.id), "GreaterThan", float(target), "Increase"),
                rule(REQUESTS_METRIC, str(endpoint.id), "LessThan", float(target) / 2, "Decrease"),
            ]
        else:
            rules = [
                rule(CPU_METRIC, str(deployment.id), "GreaterThan", _CPU_OUT, "Increase"),
                rule(CPU_METRIC, str(deployment.id), "LessThan", _CPU_IN, "Decrease"),
            ]
        name = self._name(str(endpoint.name), str(deployment.name))
        setting = AutoscaleSettingResource(
            location=str(endpoint.location),
            tags=self._adapter.resource_tags(
                {"mlshift:managed": "true", "mlshift:endpoint": str(endpoint.name)}
            ),
            profiles=[
                AutoscaleProfile(
                    name=_PROFILE,
                    capacity=ScaleCapacity(
                        minimum=str(wanted.min_replicas),
                        maximum=str(wanted.max_replicas),
                        default=str(wanted.min_replicas),
                    ),
                    rules=rules,
                )
            ],
            enabled=True,
            target_resource_uri=str(deployment.id),
            name_properties_name=name,
        )
        with azure_errors(f"set the autoscale setting of {endpoint.name}/{deployment.name}"):
            self._settings.create_or_update(self._adapter.workspace.resource_group, name, setting)

    def delete(self, endpoint: str, deployments: Sequence[str]) -> None:
        """Delete the settings of ``deployments`` (a missing one is fine)."""
        rg = self._adapter.workspace.resource_group
        for deployment in deployments:
            try:
                with azure_errors(f"delete the autoscale setting of {endpoint}/{deployment}"):
                    self._settings.delete(rg, self._name(endpoint, deployment))
            except NotFound:
                pass
