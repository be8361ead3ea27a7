"""The issue-11 scenario on the local target: v1 takes 20 features, v2 (a mistake) takes 5.

The plan refuses v2; allowed anyway, its canary under load trips the gate on client errors
within one bake, and callers of v1 never see an error.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import mlshift
from rollout_models import wide_models
from test_rollout_local import by_variant, load, server_processes

pytestmark = pytest.mark.slow


def cli(root: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MLSHIFT_TARGET": f"local://{root}", "NO_COLOR": "1"}
    return subprocess.run(
        [sys.executable, "-m", "mlshift", *args], env=env, capture_output=True, text=True, timeout=300
    )


def test_wrong_schema_is_refused_then_rolled_back_on_client_errors(
    local: mlshift.Client, tmp_path: Path
) -> None:
    wide: dict[str, Any] = wide_models(tmp_path / "models")
    local.models.register("wide", wide["v1"])
    local.models.register("wide", wide["v2"])
    local.endpoints.deploy("wide", "wide:1")
    root = local.adapter.root
    assert root is not None
    url = local.endpoints.get("wide").url
    assert url is not None
    args = ["deploy", "wide", "--model", "wide:2", "--strategy", "canary", "--percent", "20"]

    refused = cli(root, *args, "--bake", "5s")
    assert refused.returncode == 1, refused.stderr
    assert "wide:2 takes 5 columns, wide:1 takes 20: callers send 20 values per row" in refused.stderr

    # Far longer than 20 refusals take even on a loaded machine: the gate must trip on them,
    # not wait for the bake's end.
    bake = 120.0
    body = json.dumps({"instances": wide["rows"][:1]})
    with load(url, tmp_path, min_requests=2_000, body=body) as seen:
        failed = cli(
            root, *args, "--bake", f"{bake:g}s", "--min-requests", "20", "--allow-schema-change", "-o", "json"
        )
    assert failed.returncode == 3, failed.stderr
    error = json.loads(failed.stdout)["error"]
    assert "client errors (4xx)" in error["reason"] and "vs 0.0% on the baseline" in error["reason"]
    m = error["measurements"]
    assert m["client_error_rate"] == 1.0 and m["errors"] == 0 and m["max_client_error_increase"] == 0.01
    assert m["elapsed_s"] < bake  # tripped within the first bake, not at its end
    assert seen["total"] >= 2_000
    served = by_variant(seen["counts"])
    assert set(served["wide-v1"]) == {"200"}, seen["failures"]  # v1's callers never saw an error
    assert served["wide-v2"]["400"] >= 20  # the canary did refuse its share
    state = local.endpoints.get("wide")
    assert [(v.name, v.weight) for v in state.variants] == [("wide-v1", 100)]  # v2 removed
    assert len(server_processes(root)) == 1
