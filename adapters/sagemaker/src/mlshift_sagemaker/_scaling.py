"""Autoscaling of production variants through Application Auto Scaling.

The neutral ``EndpointSpec.autoscaling`` applies to every variant of the endpoint: each is a
scalable target (``sagemaker:variant:DesiredInstanceCount`` on ``endpoint/NAME/variant/VARIANT``)
with the spec's bounds and, when ``target_requests_per_replica`` is set, one target-tracking
policy on ``SageMakerVariantInvocationsPerInstance``. What is registered is read back and only
what differs is changed, so an unchanged spec makes no call.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mlshift.errors import MlshiftError, NotFound
from mlshift.specs.endpoint import Autoscaling
from mlshift_sagemaker.errors import aws_errors

if TYPE_CHECKING:
    from mlshift_sagemaker._aws import AwsClients

__all__ = ["POLICY_NAME", "VariantScaling", "VariantScalingService", "resource_id"]

logger = logging.getLogger("mlshift.sagemaker")

NAMESPACE = "sagemaker"
DIMENSION = "sagemaker:variant:DesiredInstanceCount"
METRIC = "SageMakerVariantInvocationsPerInstance"
#: The target-tracking policy mlshift owns on each scalable variant.
POLICY_NAME = "mlshift-invocations-per-instance"


def resource_id(endpoint: str, variant: str) -> str:
    """Application Auto Scaling's id of a production variant."""
    return f"endpoint/{endpoint}/variant/{variant}"


@dataclass(frozen=True)
class VariantScaling:
    """How one variant scales, as registered."""

    min_replicas: int
    max_replicas: int
    target_requests_per_replica: float | None

    def as_spec(self) -> Autoscaling:
        return Autoscaling(
            min_replicas=self.min_replicas,
            max_replicas=self.max_replicas,
            target_requests_per_replica=self.target_requests_per_replica,
        )


class VariantScalingService:
    """Read, register and deregister the scaling of an endpoint's variants."""

    def __init__(self, clients: AwsClients) -> None:
        self._clients = clients

    @property
    def _aas(self) -> Any:
        return self._clients.client("application-autoscaling")

    def read(self, endpoint: str, variants: Sequence[str]) -> dict[str, VariantScaling]:
        """Variant name → its registered scaling (variants without one are left out)."""
        if not variants:
            return {}
        ids = {resource_id(endpoint, v): v for v in variants}
        with aws_errors(f"read the autoscaling of endpoint {endpoint!r}"):
            targets = self._aas.describe_scalable_targets(
                ServiceNamespace=NAMESPACE, ResourceIds=list(ids), ScalableDimension=DIMENSION
            ).get("ScalableTargets", [])
        found: dict[str, VariantScaling] = {}
        for target in targets:
            variant = ids.get(target["ResourceId"])
            if variant is None:
                continue
            with aws_errors(f"read the scaling policies of {endpoint}/{variant}"):
                policies = self._aas.describe_scaling_policies(
                    ServiceNamespace=NAMESPACE,
                    ResourceId=target["ResourceId"],
                    ScalableDimension=DIMENSION,
                    PolicyNames=[POLICY_NAME],
                ).get("ScalingPolicies", [])
            value = None
            for policy in policies:
                config = policy.get("TargetTrackingScalingPolicyConfiguration") or {}
                value = float(config["TargetValue"]) if "TargetValue" in config else None
            found[variant] = VariantScaling(int(target["MinCapacity"]), int(target["MaxCapacity"]), value)
        return found

    def converge(self, endpoint: str, variants: Sequence[str], wanted: Autoscaling | None) -> None:
        """Make every variant scale as ``wanted`` (``None``: not at all); unchanged ones get no call."""
        current = self.read(endpoint, variants)
        for variant in variants:
            have = current.get(variant)
            if wanted is None:
                if have is not None:
                    self.deregister(endpoint, [variant])
                continue
            rid = resource_id(endpoint, variant)
            if have is None or (have.min_replicas, have.max_replicas) != (
                wanted.min_replicas,
                wanted.max_replicas,
            ):
                with aws_errors(f"register the autoscaling of {endpoint}/{variant}"):
                    self._aas.register_scalable_target(
                        ServiceNamespace=NAMESPACE,
                        ResourceId=rid,
                        ScalableDimension=DIMENSION,
                        MinCapacity=wanted.min_replicas,
                        MaxCapacity=wanted.max_replicas,
                    )
            target = wanted.target_requests_per_replica
            had = None if have is None else have.target_requests_per_replica
            if target is not None and target != had:
                with aws_errors(f"set the scaling policy of {endpoint}/{variant}"):
                    self._aas.put_scaling_policy(
                        PolicyName=POLICY_NAME,
                        ServiceNamespace=NAMESPACE,
                        ResourceId=rid,
                        ScalableDimension=DIMENSION,
                        PolicyType="TargetTrackingScaling",
                        TargetTrackingScalingPolicyConfiguration={
                            "TargetValue": float(target),
                            "PredefinedMetricSpecification": {"PredefinedMetricType": METRIC},
                        },
                    )
            elif target is None and had is not None:
                self._delete_policy(endpoint, variant)

    def restore(self, endpoint: str, scaled: dict[str, VariantScaling]) -> None:
        """Register ``scaled`` again (after a change that deregistered them failed); best effort."""
        for variant, scaling in scaled.items():
            try:
                self.converge(endpoint, [variant], scaling.as_spec())
            except MlshiftError as exc:  # the change's own error matters more
                logger.warning("could not restore the autoscaling of %s/%s: %s", endpoint, variant, exc)

    def _delete_policy(self, endpoint: str, variant: str) -> None:
        try:
            with aws_errors(f"delete the scaling policy of {endpoint}/{variant}"):
                self._aas.delete_scaling_policy(
                    PolicyName=POLICY_NAME,
                    ServiceNamespace=NAMESPACE,
                    ResourceId=resource_id(endpoint, variant),
                    ScalableDimension=DIMENSION,
                )
        except NotFound:
            pass

    def deregister(self, endpoint: str, variants: Sequence[str]) -> None:
        """Remove the scaling of ``variants`` (SageMaker refuses to delete a variant that has one)."""
        current = self.read(endpoint, variants)
        for variant in variants:
            if variant not in current:
                continue
            if current[variant].target_requests_per_replica is not None:
                self._delete_policy(endpoint, variant)
            try:
                with aws_errors(f"deregister the autoscaling of {endpoint}/{variant}"):
                    self._aas.deregister_scalable_target(
                        ServiceNamespace=NAMESPACE,
                        ResourceId=resource_id(endpoint, variant),
                        ScalableDimension=DIMENSION,
                    )
            except NotFound:
                pass
