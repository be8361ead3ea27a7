"""The Azure ML testing kit: a fake Azure ML in this process, for your tests and offline scripts.

:class:`FakeAzureML` is a stateful fake of the Azure ML REST control plane (workspace, models,
environments, online endpoints and deployments), of the workspace's blob datastore, of the
endpoints' scoring URIs (real predictions from the mlshift model server) and of Azure Monitor
metrics. The real ``azure-ai-ml`` SDK talks to it through its ``transport=``, with a credential
that hands out JWTs, and its long-running operations finish without sleeping::

    from mlshift_azureml.testing import FakeAzureML

    def test_my_deploy_script():
        with FakeAzureML() as azure:
            client = mlshift.connect("azureml://SUB/RG/WS")
            my_deploy_script(client)
            assert client.endpoints.get("fraud").weights == {"fraud-v1": 90, "fraud-v2": 10}
            azure.throttle(times=2)       # two 429s with Retry-After; the SDK retries
            my_deploy_script(client)      # converges, with no mutating call

With pytest, the ``fake_azureml`` fixture (installed with the package) does the same. From a
shell, run any script unchanged against the fake::

    python -m mlshift_azureml.testing run examples/quickstart.py --target azureml://SUB/RG/WS
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mlshift_azureml.testing._fake import AzureCall, FakeAzureML, Fault, fake_azureml

__all__ = ["AzureCall", "FakeAzureML", "Fault", "fake_azureml"]


def __getattr__(name: str) -> Any:
    # Loaded on first use: the pytest plugin imports this package in every test session, and
    # the fake imports azure-core (and the SDKs it fakes), which such a session may not need.
    if name in __all__:
        from mlshift_azureml.testing import _fake

        return getattr(_fake, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
