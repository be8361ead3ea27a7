"""mlshift on a self-hosted Kubeflow Pipelines: ``kfp://HOST[:PORT][/PREFIX]``.

>>> import mlshift
>>> client = mlshift.connect("kfp://127.0.0.1:8888?step_target=vertex://acme/europe-west4")  # doctest: +SKIP
>>> run = client.pipelines.run(train_gate_deploy).wait()  # doctest: +SKIP

Pipelines are compiled to KFP IR (:mod:`mlshift.pipelines.kfp`), uploaded as a pipeline version
and run through the API server's v2beta1 REST API, with plain httpx (no ``kfp`` import). The
target runs pipelines only: models and endpoints are refused at plan time
(:class:`PipelinesOnlyTarget`). Offline, :mod:`mlshift_vertex.kfp.testing` is a fake API server
that runs the steps on this machine.
"""

from mlshift_vertex.kfp._adapter import KUBEFLOW_CAPABILITIES, KubeflowAdapter, PipelinesOnlyTarget
from mlshift_vertex.kfp._client import KubeflowApiError
from mlshift_vertex.kfp._options import KubeflowOptions
from mlshift_vertex.kfp._service import KubeflowPipelineService

__all__ = [
    "KUBEFLOW_CAPABILITIES",
    "KubeflowAdapter",
    "KubeflowApiError",
    "KubeflowOptions",
    "KubeflowPipelineService",
    "PipelinesOnlyTarget",
]
