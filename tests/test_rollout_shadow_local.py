"""Shadow rollouts on the local target: the router mirrors live traffic under load."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import psutil
import pytest

import mlshift
from mlshift.errors import RolloutFailed
from mlshift.plan import ApplyEvent, GateCheck
from mlshift.specs.rollout import Shadow
from mlshift.testing.rollouts import hold_bake_for_requests
from rollout_models import predictor, shadow_rows
from test_rollout_local import by_variant, load, non_2xx, server_processes

pytestmark = pytest.mark.slow
BODY = json.dumps({"instances": shadow_rows()})  # 200 rows a request


@pytest.fixture
def endpoint(local: mlshift.Client, tmp_path: Path) -> mlshift.Client:
    for kind in ("threshold-5", "threshold-2", "threshold-5.01", "good"):
        local.models.register("m", predictor(tmp_path, kind))  # m:1 serves; m:2 30% off; m:3 0.5% off
    local.endpoints.deploy("m", "m:1")
    return local


def hold(client: mlshift.Client) -> GateCheck:
    """The shadow phase ends with the gate's 20 mirrored requests counted, however slow the machine."""
    return hold_bake_for_requests(client, "m", 20)


def rollout(**extra: object) -> Shadow:
    return Shadow.model_validate(
        {"percent": 50, "duration": 4, "min_agreement": 0.99, "gate": {"min_requests": 20}, **extra}
    )


def test_disagreeing_version_is_rejected_and_callers_only_see_the_serving_one(
    endpoint: mlshift.Client, tmp_path: Path
) -> None:
    url = endpoint.endpoints.get("m").url
    assert url is not None
    with load(url, tmp_path, min_requests=500, body=BODY) as seen, pytest.raises(RolloutFailed) as info:
        endpoint.endpoints.deploy("m", "m:2", rollout=rollout(), checks=[hold(endpoint)])
    m = info.value.measurements
    assert "agreement" in (info.value.reason or "") and m["agreement"] == pytest.approx(0.7, abs=0.01)
    assert m["rows"] >= 20 * 200
    assert set(by_variant(seen["counts"])) == {"m-v1"}, seen["failures"]
    assert non_2xx(seen["counts"]) == 0, seen["failures"]
    assert [(v.name, v.weight) for v in endpoint.endpoints.get("m").variants] == [("m-v1", 100)]
    assert len(server_processes(endpoint.adapter.root)) == 1


def test_agreeing_version_is_promoted(endpoint: mlshift.Client, tmp_path: Path) -> None:
    url = endpoint.endpoints.get("m").url
    assert url is not None
    with load(url, tmp_path, min_requests=500, body=BODY) as seen:
        state = endpoint.endpoints.deploy("m", "m:3", rollout=rollout(), checks=[hold(endpoint)])
    assert state.weights == {"m-v3": 100}
    record = endpoint.endpoints.history("m")[0]
    assert record.measurements["agreement"] == pytest.approx(0.995, abs=0.002)
    assert non_2xx(seen["counts"]) == 0, seen["failures"]
    assert set(by_variant(seen["counts"])) <= {"m-v1", "m-v3"}


def test_a_candidate_that_crashes_never_fails_a_caller(endpoint: mlshift.Client, tmp_path: Path) -> None:
    url = endpoint.endpoints.get("m").url
    root = endpoint.adapter.root
    assert root is not None
    assert url is not None
    killed: list[int] = []

    def kill_the_candidate(event: ApplyEvent) -> None:
        # Once mirrored requests flow, SIGKILL the candidate's model server.
        detail = event.detail or {}
        if killed or detail.get("phase") != "shadow" or detail.get("requests", 0) < 5:
            return
        for proc in psutil.process_iter(["pid", "cmdline"]):
            cmdline = " ".join(proc.info["cmdline"] or [])
            if str(root) in cmdline and "mlshift.serving" in cmdline and "m-v4" in cmdline:
                os.kill(proc.info["pid"], signal.SIGKILL)
                killed.append(proc.info["pid"])

    with load(url, tmp_path, min_requests=500, body=BODY) as seen, pytest.raises(RolloutFailed) as info:
        endpoint.endpoints.deploy("m", "m:4", rollout=rollout(duration=30), on_event=kill_the_candidate)
    assert killed, "the candidate's server was never found"
    assert info.value.measurements.get("elapsed_s", 0) < 30  # tripped once mirrored requests failed
    assert non_2xx(seen["counts"]) == 0, seen["failures"]
    assert set(by_variant(seen["counts"])) == {"m-v1"}
    assert [(v.name, v.weight) for v in endpoint.endpoints.get("m").variants] == [("m-v1", 100)]
