"""The azureml:// target: URI, options and their errors, credentials, lazy imports."""

from __future__ import annotations

import subprocess
import sys

import pytest

import mlshift
from mlshift.errors import ConfigError
from mlshift_azureml import AzureMLAdapter
from mlshift_azureml.options import AzureMLOptions, EndpointOptions, instance_type_for


def test_uri_names_the_workspace() -> None:
    client = mlshift.connect("azureml://sub-1/ml-rg/ml-ws")
    adapter = client.adapter
    assert isinstance(adapter, AzureMLAdapter)
    ws = adapter.workspace
    assert (ws.subscription, ws.resource_group, ws.name) == ("sub-1", "ml-rg", "ml-ws")
    assert ws.arm_id.endswith(
        "/resourceGroups/ml-rg/providers/Microsoft.MachineLearningServices/workspaces/ml-ws"
    )


@pytest.mark.parametrize(
    ("uri", "words"),
    [
        ("azureml://sub", "does not name a workspace"),
        ("azureml://sub/rg", "does not name a workspace"),
        ("azureml://sub/rg/ws/extra", "does not name a workspace"),
        ("azureml://sub/rg./ws", "not a valid resource group"),
        ("azureml://sub/rg/w", "not a valid workspace name"),
        ("azureml://s_b/rg/ws", "not a valid subscription id"),
        ("azureml+k8s://sub/rg/ws", "no 'k8s' variant"),
    ],
)
def test_malformed_uris_are_named(uri: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words) as info:
        mlshift.connect(uri)
    assert info.value.field == "target"


def test_options_come_from_query_over_yaml_over_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    env = {"MLSHIFT_AZUREML_DATASTORE": "fromenv", "MLSHIFT_AZUREML_PREFIX": "envprefix"}
    opts = AzureMLOptions.from_sources({"prefix": "q"}, {"prefix": "yaml", "metric_lag": 30}, env)
    assert (opts.datastore, opts.prefix, opts.metric_lag) == ("fromenv", "q", 30)
    monkeypatch.setenv("MLSHIFT_AZUREML_POLL_INTERVAL", "0.5")
    client = mlshift.connect("azureml://sub/rg/ws?datastore=mlstore")
    assert client.adapter.options.datastore == "mlstore"  # type: ignore[attr-defined]
    assert client.adapter.options.poll_interval == 0.5  # type: ignore[attr-defined]


def test_bad_options_are_named_with_the_known_ones() -> None:
    with pytest.raises(ConfigError) as info:
        mlshift.connect("azureml://sub/rg/ws?wait_timeout=-1")
    assert info.value.field == "target.options.wait_timeout"
    assert "datastore" in str(info.value.hint)
    with pytest.raises(ConfigError, match="datastore"):
        mlshift.connect("azureml://sub/rg/ws?datastore=Bad-Name")
    with pytest.raises(ConfigError, match="either image_uri or environment"):
        AzureMLOptions.from_sources({}, {"image_uri": "x.azurecr.io/a:1", "environment": "sk:1"})
    with pytest.raises(ConfigError, match="NAME:VERSION"):
        AzureMLOptions.from_sources({}, {"environment": "sklearn"})
    with pytest.raises(ConfigError, match="bogus"):
        AzureMLOptions.from_sources({"bogus": "1"}, {})


def test_credentials_are_refused_and_never_echoed() -> None:
    secret = "s3cr3t-value-0123456789"
    with pytest.raises(ConfigError) as info:
        mlshift.connect(f"azureml://sub/rg/ws?client_secret={secret}")
    assert "credential" in str(info.value) and secret not in str(info.value)
    assert secret not in repr(info.value.to_dict())


def test_endpoint_options_and_sizes() -> None:
    assert instance_type_for("cpu-medium") == "Standard_DS4_v2"
    assert instance_type_for("cpu-small", "Standard_F8s_v2") == "Standard_F8s_v2"
    assert EndpointOptions(instance_type="Standard_F8s_v2").instance_type == "Standard_F8s_v2"
    with pytest.raises(ConfigError, match="did you mean"):
        EndpointOptions.model_validate({"instance_type": "Standard_F8s_v3"})


def test_serverless_is_refused_by_name() -> None:
    with pytest.raises(ConfigError, match="no serverless mode"):
        EndpointOptions.model_validate({"serverless": {"memory_mb": 2048}})


def test_importing_the_adapter_imports_no_azure_sdk() -> None:
    code = (
        "import sys, mlshift, mlshift_azureml, mlshift_azureml.testing.pytest_plugin\n"
        "mlshift.connect('azureml://sub/rg/ws').adapter.pipelines\n"
        "sdks = ('azure.ai', 'azure.identity', 'azure.storage', 'azure.mgmt', 'azure.core')\n"
        "heavy = sorted(m for m in sys.modules if m.startswith(sdks))\n"
        "print(heavy)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
