"""mlshift on Google Vertex AI: ``vertex://PROJECT/LOCATION``.

>>> import mlshift
>>> target = "vertex://my-project/us-central1?staging_bucket=gs://my-bucket"
>>> client = mlshift.connect(target)  # doctest: +SKIP

- models → Vertex Model Registry: one model per name, a version per version, aliases as
  native version aliases; artifacts in the staging bucket under their digest;
- endpoints → an endpoint per name, a deployed model per variant, weights as its traffic split;
  ``predict`` goes through the prediction service;
- rollouts → mlshift's engine steps the traffic split, gated on Cloud Monitoring.

Offline, :mod:`mlshift_vertex.testing` runs all of it against a fake Vertex AI (with GCS and
Cloud Monitoring) on 127.0.0.1, under the real SDK, with real predictions. Importing this
package imports no Google library.
"""

from mlshift_vertex._adapter import CAPABILITIES, VertexAdapter
from mlshift_vertex.errors import EtagConflict, VertexApiError
from mlshift_vertex.options import SIZE_TO_MACHINE, EndpointOptions, MachineSpec, VertexOptions

__all__ = [
    "CAPABILITIES",
    "SIZE_TO_MACHINE",
    "EndpointOptions",
    "EtagConflict",
    "MachineSpec",
    "VertexAdapter",
    "VertexApiError",
    "VertexOptions",
]
