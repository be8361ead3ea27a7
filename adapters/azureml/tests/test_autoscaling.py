"""Autoscaling on the fake: an Azure Monitor autoscale setting per deployment, through azure-mgmt-monitor."""

from __future__ import annotations

import json
from typing import Any

import pytest

import mlshift
from conftest import TARGET, azureml
from mlshift.adapter import Capability
from mlshift.errors import ConfigError
from mlshift.specs.endpoint import Autoscaling, EndpointSpec
from mlshift_azureml.testing import FakeAzureML

SETTINGS = "/providers/microsoft.insights/autoscalesettings"


@pytest.fixture
def registered(client: mlshift.Client, iris: dict[str, Any]) -> mlshift.Client:
    client.models.register("iris", iris["v1"], framework="sklearn")
    client.models.register("iris", iris["v2"], framework="sklearn")
    return client


def spec(autoscaling: dict[str, Any] | None, replicas: int = 1, **weights: int) -> EndpointSpec:
    weights = weights or {"v1": 100}
    variants = [{"name": f"iris-{n}", "model": f"iris:{n[1:]}", "weight": w} for n, w in weights.items()]
    return EndpointSpec.model_validate(
        {
            "name": "iris-ep",
            "variants": variants,
            "compute": {"size": "cpu-small", "replicas": replicas},
            "autoscaling": autoscaling,
        }
    )


def settings(azure: FakeAzureML) -> dict[str, dict[str, Any]]:
    """Deployment name → its autoscale setting's REST body."""
    return {
        s["properties"]["targetResourceUri"].rsplit("/", 1)[-1]: s
        for group in azure.autoscale.settings.values()
        for s in group.values()
    }


def setting_calls(azure: FakeAzureML, since: int = 0) -> list[str]:
    return [
        f"{c.method} {c.url.split('?')[0].rsplit('/', 1)[-1]}"
        for c in azure.calls[since:]
        if SETTINGS in c.url.lower()
    ]


def test_the_target_declares_autoscaling(client: mlshift.Client) -> None:
    assert Capability.AUTOSCALING in client.adapter.capabilities


def test_each_deployment_gets_a_setting_with_a_requests_per_instance_rule(
    registered: mlshift.Client, azure: FakeAzureML
) -> None:
    registered.apply(
        spec({"min_replicas": 1, "max_replicas": 3, "target_requests_per_replica": 50}, v1=80, v2=20)
    )
    found = settings(azure)
    assert sorted(found) == ["iris-v1", "iris-v2"]
    setting = found["iris-v2"]
    assert setting["name"] == "mlshift-ml-ws-iris-ep-iris-v2"
    assert setting["location"] == "eastus"
    profile = setting["properties"]["profiles"][0]
    assert profile["capacity"] == {"minimum": "1", "maximum": "3", "default": "1"}
    out, down = profile["rules"]
    assert out["metricTrigger"]["metricName"] == "RequestsPerMinute"
    assert out["metricTrigger"]["metricResourceUri"].endswith("/onlineEndpoints/iris-ep")
    assert out["metricTrigger"]["dimensions"] == [
        {"DimensionName": "deployment", "Operator": "Equals", "Values": ["iris-v2"]}
    ]
    assert out["metricTrigger"]["dividePerInstance"] is True
    assert (out["metricTrigger"]["threshold"], out["scaleAction"]["direction"]) == (50, "Increase")
    assert (down["metricTrigger"]["threshold"], down["scaleAction"]["direction"]) == (25, "Decrease")
    state = registered.endpoints.get("iris-ep")
    assert state.autoscaling == Autoscaling(min_replicas=1, max_replicas=3, target_requests_per_replica=50)


def test_bounds_without_a_target_scale_on_cpu(registered: mlshift.Client, azure: FakeAzureML) -> None:
    registered.apply(spec({"min_replicas": 2, "max_replicas": 4}, replicas=2))
    rules = settings(azure)["iris-v1"]["properties"]["profiles"][0]["rules"]
    assert [r["metricTrigger"]["metricName"] for r in rules] == ["CpuUtilizationPercentage"] * 2
    assert rules[0]["metricTrigger"]["metricResourceUri"].endswith("/deployments/iris-v1")
    assert registered.endpoints.get("iris-ep").autoscaling == Autoscaling(min_replicas=2, max_replicas=4)


def test_reapplying_an_unchanged_spec_makes_no_call_even_after_the_autoscaler_moved(
    registered: mlshift.Client, azure: FakeAzureML
) -> None:
    wanted = spec({"min_replicas": 1, "max_replicas": 4, "target_requests_per_replica": 30})
    registered.apply(wanted)
    azure.scale_to("iris-ep", "iris-v1", 3)  # load came
    mark = len(azure.calls)
    assert registered.plan(wanted).is_empty
    assert not registered.apply(wanted).changed
    with mlshift.connect(TARGET) as other:  # a fresh process reads it back the same
        assert other.plan(wanted).is_empty
    assert azure.mutating_calls(since=mark) == []


def test_changed_bounds_rewrite_the_settings_and_none_deletes_them(
    registered: mlshift.Client, azure: FakeAzureML
) -> None:
    registered.apply(spec({"min_replicas": 1, "max_replicas": 2}, v1=50, v2=50))
    mark = len(azure.calls)
    registered.apply(spec({"min_replicas": 1, "max_replicas": 5}, v1=50, v2=50))
    assert setting_calls(azure, mark).count("PUT mlshift-ml-ws-iris-ep-iris-v1") == 1
    assert settings(azure)["iris-v2"]["properties"]["profiles"][0]["capacity"]["maximum"] == "5"
    endpoints = azureml(registered).endpoints
    mark = len(azure.calls)
    endpoints.set_autoscaling("iris-ep", Autoscaling(min_replicas=1, max_replicas=5))
    assert azure.mutating_calls(since=mark) == []  # nothing differs
    endpoints.set_autoscaling("iris-ep", None)
    assert settings(azure) == {}
    assert registered.endpoints.get("iris-ep").autoscaling is None
    mark = len(azure.calls)
    registered.endpoints.get("iris-ep")
    assert setting_calls(azure, mark) == []  # not autoscaled: nothing to read


def test_a_spec_without_autoscaling_reads_no_setting(registered: mlshift.Client, azure: FakeAzureML) -> None:
    registered.apply(spec(None))
    assert setting_calls(azure) == []
    assert registered.endpoints.get("iris-ep").autoscaling is None


def test_a_removed_variant_and_a_deleted_endpoint_take_their_settings_along(
    registered: mlshift.Client, azure: FakeAzureML
) -> None:
    registered.apply(spec({"min_replicas": 1, "max_replicas": 3}, v1=50, v2=50))
    registered.apply(spec({"min_replicas": 1, "max_replicas": 3}, v2=100))
    assert sorted(settings(azure)) == ["iris-v2"]
    registered.endpoints.delete("iris-ep")
    assert settings(azure) == {}


@pytest.mark.parametrize(
    ("autoscaling", "replicas", "field"),
    [
        ({"min_replicas": 0, "max_replicas": 2}, 1, "autoscaling.min_replicas"),
        ({"min_replicas": 2, "max_replicas": 4}, 1, "compute.replicas"),
        ({"min_replicas": 1, "max_replicas": 2}, 3, "compute.replicas"),
    ],
)
def test_bounds_azure_refuses_fail_at_plan_time_naming_the_field(
    registered: mlshift.Client, azure: FakeAzureML, autoscaling: dict[str, int], replicas: int, field: str
) -> None:
    mark = len(azure.calls)
    with pytest.raises(ConfigError) as caught:
        registered.plan(spec(autoscaling, replicas=replicas))
    assert caught.value.field == field
    assert azure.mutating_calls(since=mark) == []


def test_the_fake_refuses_what_azure_monitor_refuses(registered: mlshift.Client, azure: FakeAzureML) -> None:
    from azure.core.exceptions import HttpResponseError
    from azure.mgmt.monitor import MonitorManagementClient

    registered.apply(spec(None))
    monitor = MonitorManagementClient(azure.credential(), "sub-0000", transport=azure.transport())
    ws = (
        "/subscriptions/sub-0000/resourceGroups/ml-rg/providers/"
        "Microsoft.MachineLearningServices/workspaces/ml-ws"
    )
    target = f"{ws}/onlineEndpoints/iris-ep/deployments/iris-v1"

    def body(minimum: str, metric: str, resource: str, target_uri: str = target) -> dict[str, Any]:
        trigger = {
            "metricName": metric,
            "metricResourceUri": resource,
            "timeGrain": "PT1M",
            "statistic": "Average",
            "timeWindow": "PT5M",
            "timeAggregation": "Average",
            "operator": "GreaterThan",
            "threshold": 70,
        }
        action = {"direction": "Increase", "type": "ChangeCount", "value": "1", "cooldown": "PT5M"}
        profile = {
            "name": "p",
            "capacity": {"minimum": minimum, "maximum": "3", "default": minimum},
            "rules": [{"metricTrigger": trigger, "scaleAction": action}],
        }
        return {"location": "eastus", "properties": {"profiles": [profile], "targetResourceUri": target_uri}}

    def put(name: str, data: dict[str, Any]) -> None:
        monitor.autoscale_settings.create_or_update("ml-rg", name, json.dumps(data).encode())

    put("ok", body("1", "CpuUtilizationPercentage", target))
    for bad, words in [
        (body("0", "CpuUtilizationPercentage", target), "at least one instance"),
        (body("1", "RequestsPerMinute", target), "not published"),
        (body("1", "CpuUtilizationPercentage", target, f"{target}-gone"), "not an online deployment"),
    ]:
        with pytest.raises(HttpResponseError, match=words):
            put("ok", bad)
    with pytest.raises(HttpResponseError, match="only one"):
        put("second", body("1", "CpuUtilizationPercentage", target))
