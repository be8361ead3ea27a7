"""mlshift on Amazon SageMaker: ``sagemaker://REGION``.

>>> import mlshift
>>> role = "arn:aws:iam::123456789012:role/deploy"
>>> client = mlshift.connect(f"sagemaker://us-east-1?role_arn={role}")  # doctest: +SKIP

- models → model package groups and packages; artifacts in S3 under their digest;
- endpoints → a model per variant, an endpoint configuration, an endpoint with weighted
  production variants; ``predict`` goes through ``sagemaker-runtime``;
- rollouts → SageMaker's blue/green deployment guardrails, with CloudWatch alarms made from the
  health gate that roll the update back by themselves.

Offline, :mod:`mlshift_sagemaker.testing` runs all of it against moto in-process, with real
predictions. Importing this package does not import boto3.
"""

from mlshift_sagemaker._adapter import CAPABILITIES, SageMakerAdapter
from mlshift_sagemaker.errors import AwsValidationError
from mlshift_sagemaker.options import (
    INSTANCE_TYPES,
    SIZE_TO_INSTANCE_TYPE,
    EndpointOptions,
    SageMakerOptions,
    VpcConfig,
)

__all__ = [
    "CAPABILITIES",
    "INSTANCE_TYPES",
    "SIZE_TO_INSTANCE_TYPE",
    "AwsValidationError",
    "EndpointOptions",
    "SageMakerAdapter",
    "SageMakerOptions",
    "VpcConfig",
]
