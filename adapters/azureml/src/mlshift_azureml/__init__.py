"""mlshift on Azure Machine Learning: ``azureml://SUBSCRIPTION/RESOURCE_GROUP/WORKSPACE``.

>>> import mlshift
>>> client = mlshift.connect("azureml://00000000-0000-0000-0000-000000000000/ml-rg/ml-ws")  # doctest: +SKIP

- models → workspace models (``name:version``); artifacts in the workspace datastore under
  their digest; mlshift's metadata and aliases as tags;
- endpoints → managed online endpoints; variants → deployments; weights → the endpoint's
  ``traffic``; ``predict`` posts to the scoring URI (``azureml-model-deployment`` targets one);
- rollouts → mlshift's engine, stepping ``traffic`` and reading gates from Azure Monitor.

Offline, :mod:`mlshift_azureml.testing` runs all of it under the real ``azure-ai-ml`` SDK
against a fake of the control plane, with real predictions. Importing this package imports
no Azure SDK.
"""

from mlshift_azureml._adapter import CAPABILITIES, AzureMLAdapter, Workspace
from mlshift_azureml.errors import DeploymentUnhealthy, EndpointBusy, EndpointNameTaken, Throttled
from mlshift_azureml.options import INSTANCE_TYPES, SIZE_TO_INSTANCE_TYPE, AzureMLOptions, EndpointOptions

__all__ = [
    "CAPABILITIES",
    "INSTANCE_TYPES",
    "SIZE_TO_INSTANCE_TYPE",
    "AzureMLAdapter",
    "AzureMLOptions",
    "DeploymentUnhealthy",
    "EndpointBusy",
    "EndpointNameTaken",
    "EndpointOptions",
    "Throttled",
    "Workspace",
]
