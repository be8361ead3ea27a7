"""The Vertex AI testing kit: a fake Vertex AI, GCS and Cloud Monitoring on 127.0.0.1.

The real SDK (``aiplatform_v1``'s REST transport) talks to it, so the adapter's own code paths
run and request bodies are checked against Vertex's rules::

    from mlshift_vertex.testing import FakeVertex

    def test_my_deploy_script():
        with FakeVertex() as vertex:
            client = mlshift.connect("vertex://my-project/us-central1")
            my_deploy_script(client)
            assert not vertex.mutating_calls()[10:]          # what it sent, in order
            vertex.fail("POST .*:deployModel", 429)         # the next deploy hits a quota

With pytest, the ``fake_vertex`` fixture (installed with the package) does the same. From a
shell, run any script unchanged against the fake::

    python -m mlshift_vertex.testing run examples/quickstart.py --target vertex://my-project/us-central1
"""

from mlshift_vertex.testing._fake import FakeVertex, Fault, VertexCall, fake_vertex

__all__ = ["FakeVertex", "Fault", "VertexCall", "fake_vertex"]
