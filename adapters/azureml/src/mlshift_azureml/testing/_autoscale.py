"""The fake's Azure Monitor autoscale settings (``Microsoft.Insights/autoscaleSettings`` on ARM).

``azure-mgmt-monitor``'s ``autoscale_settings`` client sends its requests through the same
transport as every other SDK client, to
``/subscriptions/S/resourceGroups/RG/providers/Microsoft.Insights/autoscalesettings[/NAME]``.
The fake keeps the settings per resource group and refuses what Azure refuses: a missing
location or target, capacities out of order, a target that is not an online deployment of the
workspace, more than one setting per target, metrics the target does not publish, time grains,
windows and cooldowns out of range. An accepted setting brings the deployment's instance count
within its bounds, as Azure's autoscaler does on its first evaluation.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from datetime import timedelta
from typing import Any

from mlshift_azureml.testing._http import Reply

__all__ = ["AUTOSCALE_PATH", "DEPLOYMENT_METRICS", "ENDPOINT_METRICS", "AutoscaleSettings"]

AUTOSCALE_PATH = re.compile(
    r"^/subscriptions/(?P<sub>[^/]+)/resourcegroups/(?P<rg>[^/]+)/providers/microsoft\.insights/"
    r"autoscalesettings(?:/(?P<name>[^/]+))?/?$",
    re.IGNORECASE,
)
#: What Azure Monitor publishes for a managed online deployment and for its endpoint.
DEPLOYMENT_METRICS = frozenset(
    {
        "CpuUtilizationPercentage",
        "CpuMemoryUtilizationPercentage",
        "GpuUtilizationPercentage",
        "GpuMemoryUtilizationPercentage",
        "GpuEnergyJoules",
        "DiskUtilization",
        "DeploymentCapacity",
    }
)
ENDPOINT_METRICS = frozenset(
    {
        "RequestsPerMinute",
        "RequestLatency",
        "RequestLatency_P50",
        "RequestLatency_P90",
        "RequestLatency_P95",
        "RequestLatency_P99",
        "ConnectionsActive",
        "NetworkBytes",
        "NewConnectionsPerSecond",
    }
)
_STATISTICS = ("Average", "Min", "Max", "Sum", "Count")
_AGGREGATIONS = ("Average", "Minimum", "Maximum", "Total", "Count", "Last")
_OPERATORS = ("Equals", "NotEquals", "GreaterThan", "GreaterThanOrEqual", "LessThan", "LessThanOrEqual")
_ACTIONS = ("ChangeCount", "PercentChangeCount", "ExactCount", "ServiceAllowedNextValue")
_DURATION = re.compile(r"^P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+)S)?)?$")
_BAD_NAME = re.compile(r"[<>%&:\\?/#*]")


class _Invalid(Exception):
    pass


def _duration(text: Any, what: str) -> timedelta:
    match = _DURATION.fullmatch(str(text or ""))
    if not text or match is None:
        raise _Invalid(f"{what} {text!r} is not an ISO 8601 duration")
    parts = {k: int(v or 0) for k, v in match.groupdict().items()}
    return timedelta(days=parts["d"], hours=parts["h"], minutes=parts["m"], seconds=parts["s"])


def _count(text: Any, what: str) -> int:
    if not str(text).isdigit():
        raise _Invalid(f"{what} {text!r} is not a whole number")
    return int(text)


class AutoscaleSettings:
    """Autoscale settings of every resource group, answering their ARM requests.

    Args:
        deployment: Finds an online deployment's REST body by ARM id (``None``: there is none).
        region: The region settings are created in.
    """

    def __init__(self, deployment: Callable[[str], dict[str, Any] | None], region: str) -> None:
        self._deployment = deployment
        self._region = region
        self.settings: dict[tuple[str, str], dict[str, dict[str, Any]]] = {}

    def handle(self, method: str, path: str, data: Mapping[str, Any]) -> Reply:
        """Answer one autoscale settings request (``path`` already matched :data:`AUTOSCALE_PATH`)."""
        match = AUTOSCALE_PATH.match(path)
        assert match is not None
        group = self.settings.setdefault((match["sub"].lower(), match["rg"].lower()), {})
        name = match["name"]
        if name is None:
            if method != "GET":
                return _error(405, "MethodNotAllowed", method)
            return Reply(200, {"value": list(group.values())})
        found = group.get(name.lower())
        if method == "GET":
            if found is None:
                return _error(404, "ResourceNotFound", f"autoscale setting {name!r} not found")
            return Reply(200, found)
        if method == "DELETE":
            if found is None:
                return Reply(204)
            del group[name.lower()]
            return Reply(200)
        if method != "PUT":
            return _error(405, "MethodNotAllowed", method)
        try:
            body = self._validated(match["sub"], match["rg"], name, data, group)
        except _Invalid as exc:
            return _error(400, "InvalidRequest", str(exc))
        group[name.lower()] = body
        return Reply(200 if found else 201, body)

    def _validated(
        self, sub: str, rg: str, name: str, data: Mapping[str, Any], group: Mapping[str, dict[str, Any]]
    ) -> dict[str, Any]:
        if _BAD_NAME.search(name) or len(name) > 260:
            raise _Invalid(f"autoscale setting name {name!r} is invalid")
        if not data.get("location"):
            raise _Invalid("location is required")
        props = dict(data.get("properties") or {})
        target = str(props.get("targetResourceUri") or "")
        if not target:
            raise _Invalid("targetResourceUri is required")
        deployment = self._deployment(target)
        if deployment is None:
            raise _Invalid(f"the target resource {target!r} is not an online deployment that exists")
        for other_name, other in group.items():
            same = str(other["properties"]["targetResourceUri"]).lower() == target.lower()
            if same and other_name != name.lower():
                raise _Invalid(
                    f"the target resource already has the autoscale setting {other['name']!r}; "
                    "a resource takes only one"
                )
        profiles = props.get("profiles") or []
        if not 1 <= len(profiles) <= 20:
            raise _Invalid("an autoscale setting has 1 to 20 profiles")
        endpoint = target.rsplit("/deployments/", 1)[0]
        lowest = None
        for profile in profiles:
            capacity = profile.get("capacity") or {}
            low = _count(capacity.get("minimum"), "capacity.minimum")
            high = _count(capacity.get("maximum"), "capacity.maximum")
            default = _count(capacity.get("default"), "capacity.default")
            if not low <= default <= high:
                raise _Invalid(
                    f"capacity must satisfy minimum <= default <= maximum, got {low}/{default}/{high}"
                )
            if low < 1:
                raise _Invalid(
                    "a managed online deployment keeps at least one instance: minimum must be >= 1"
                )
            rules = profile.get("rules")
            if rules is None or len(rules) > 10:
                raise _Invalid("a profile has a list of at most 10 rules")
            for rule in rules:
                self._check_rule(rule, target, endpoint)
            lowest = (low, high, default) if lowest is None else lowest
        body = {
            "id": f"/subscriptions/{sub}/resourceGroups/{rg}/providers/microsoft.insights/"
            f"autoscalesettings/{name}",
            "name": name,
            "type": "Microsoft.Insights/autoscaleSettings",
            "location": data["location"],
            "tags": dict(data.get("tags") or {}),
            "properties": {
                "profiles": profiles,
                "notifications": props.get("notifications") or [],
                "enabled": props.get("enabled", True),
                "name": props.get("name") or name,
                "targetResourceUri": target,
                "targetResourceLocation": props.get("targetResourceLocation") or self._region,
            },
        }
        if body["properties"]["enabled"] and lowest is not None:
            # Azure's autoscaler evaluates the setting at once: a count outside the bounds moves in.
            sku = deployment.setdefault("sku", {})
            count = int(sku.get("capacity") or 1)
            sku["capacity"] = min(max(count, lowest[0]), lowest[1])
        return body

    @staticmethod
    def _check_rule(rule: Mapping[str, Any], target: str, endpoint: str) -> None:
        trigger = rule.get("metricTrigger") or {}
        action = rule.get("scaleAction") or {}
        metric = str(trigger.get("metricName") or "")
        resource = str(trigger.get("metricResourceUri") or "")
        if resource.lower() == target.lower():
            known = DEPLOYMENT_METRICS
        elif resource.lower() == endpoint.lower():
            known = ENDPOINT_METRICS
        else:
            raise _Invalid(
                f"metricResourceUri {resource!r} is neither the target deployment nor its endpoint"
            )
        if metric not in known:
            raise _Invalid(f"metric {metric!r} is not published by {resource.rsplit('/', 2)[-2]} resources")
        grain = _duration(trigger.get("timeGrain"), "timeGrain")
        window = _duration(trigger.get("timeWindow"), "timeWindow")
        if not timedelta(minutes=1) <= grain <= timedelta(hours=12):
            raise _Invalid("timeGrain must be between PT1M and PT12H")
        if not timedelta(minutes=5) <= window <= timedelta(hours=12) or window < grain:
            raise _Invalid("timeWindow must be between PT5M and PT12H, and not shorter than timeGrain")
        if trigger.get("statistic") not in _STATISTICS:
            raise _Invalid(f"statistic must be one of {', '.join(_STATISTICS)}")
        if trigger.get("timeAggregation") not in _AGGREGATIONS:
            raise _Invalid(f"timeAggregation must be one of {', '.join(_AGGREGATIONS)}")
        if trigger.get("operator") not in _OPERATORS:
            raise _Invalid(f"operator must be one of {', '.join(_OPERATORS)}")
        if not isinstance(trigger.get("threshold"), (int, float)):
            raise _Invalid("threshold is required")
        if action.get("direction") not in ("Increase", "Decrease", "None"):
            raise _Invalid("scaleAction.direction must be Increase, Decrease or None")
        if action.get("type") not in _ACTIONS:
            raise _Invalid(f"scaleAction.type must be one of {', '.join(_ACTIONS)}")
        cooldown = _duration(action.get("cooldown"), "cooldown")
        if not timedelta(minutes=1) <= cooldown <= timedelta(weeks=1):
            raise _Invalid("cooldown must be between PT1M and P7D")


def _error(status: int, code: str, message: str) -> Reply:
    return Reply(status, {"error": {"code": code, "message": message}})
