"""A plan saved by ``mlshift plan -o json`` and applied by a fresh process does what it printed.

Two processes start from the same state on the kit: one plans with the CLI and applies in
process (the adapter that planned applies); the other applies the saved plan with
``mlshift apply --plan`` (a new adapter that never saw the specs). They must make the same
changes to AWS and end in the same state: the plan carries every option its actions need.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

PROJECT = """\
version: 1
endpoints:
  - name: iris-ep
    variants:
      - {name: main, model: "iris:2", weight: 80}
      - {name: extra, model: "iris:1", weight: 20}
    autoscaling: {min_replicas: 1, max_replicas: 3}
    provider_options:
      sagemaker:
        data_capture: {sampling_percent: 50}
        environment: {API_TOKEN: new-secret}
"""

SCRIPT = """\
import contextlib, io, json, sys
from pathlib import Path

import mlshift
from mlshift._config import load_project
from mlshift.cli import main
from mlshift.specs import EndpointSpec
from mlshift_sagemaker.testing import FakeSageMaker

mode, folder, v1, v2 = sys.argv[1], Path(sys.argv[2]), sys.argv[3], sys.argv[4]
TARGET = "sagemaker://us-east-1"
project = folder / "mlshift.yaml"


def cli(*args):
    out, argv = io.StringIO(), sys.argv
    sys.argv = ["mlshift", *args]
    try:
        with contextlib.redirect_stdout(out):
            main()
    except SystemExit as exc:
        assert not exc.code, (exc.code, out.getvalue())
    finally:
        sys.argv = argv
    return out.getvalue()


with FakeSageMaker() as aws:
    with mlshift.connect(TARGET) as client:
        client.models.register("iris", v1, framework="sklearn")
        client.models.register("iris", v2, framework="sklearn")
        client.apply(EndpointSpec.model_validate({
            "name": "iris-ep",
            "variants": [{"name": "main", "model": "iris:1"}],
            "autoscaling": {"min_replicas": 1, "max_replicas": 3},
            "provider_options": {"sagemaker": {
                "data_capture": {"sampling_percent": 20}, "environment": {"API_TOKEN": "old-secret"},
            }},
        }))
        if mode == "in-process":
            saved = cli("plan", "-f", str(project), "-t", TARGET, "-o", "json")
            (folder / "plan.json").write_text(saved)
            plan = client.plan(load_project(project))
            assert plan.to_json() == json.loads(saved)
            mark = len(aws.calls)
            client.apply(plan)
        else:
            mark = len(aws.calls)
            cli("apply", "--plan", str(folder / "plan.json"), "-f", str(project), "-t", TARGET, "--yes")
        state = client.endpoints.get("iris-ep")
        backend = aws.backend()
        config = backend.endpoint_configs[backend.endpoints["iris-ep"].endpoint_config_name]
        report = {
            "calls": [[c.service, c.operation] for c in aws.mutating_calls(since=mark)],
            "state": state.model_dump(mode="json", exclude={"created_at", "url"}),
            "resources": aws.resources(),
            "capture": dict(config.data_capture_config)["InitialSamplingPercentage"],
            "environments": {
                pv["VariantName"]: backend._models[pv["ModelName"]].primary_container["Environment"]
                for pv in config.production_variants
            },
            "scaling": {k: list(v) for k, v in aws.scalable_variants("iris-ep").items()},
            "replan": [a.kind for a in client.plan(load_project(project)).actions],
        }
        (folder / f"{mode}.json").write_text(json.dumps(report, default=str))
"""


def _run(mode: str, folder: Path, iris: dict[str, Any]) -> dict[str, Any]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLSHIFT_"))}
    result = subprocess.run(
        [sys.executable, str(folder / "script.py"), mode, str(folder), str(iris["v1"]), str(iris["v2"])],
        cwd=folder,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert result.returncode == 0, result.stderr[-4000:]
    report: dict[str, Any] = json.loads((folder / f"{mode}.json").read_text())
    return report


@pytest.mark.timeout(900)
def test_a_saved_plan_applied_by_a_fresh_process_makes_the_same_aws_calls(
    tmp_path: Path, iris: dict[str, Any]
) -> None:
    (tmp_path / "mlshift.yaml").write_text(PROJECT)
    (tmp_path / "script.py").write_text(SCRIPT)
    here = _run("in-process", tmp_path, iris)
    saved = json.loads((tmp_path / "plan.json").read_text())
    assert "new-secret" not in json.dumps(saved)  # the saved plan shows no secret...
    assert [a["kind"] for a in saved["actions"]] == [
        "replace_variant",
        "add_variant",
        "set_weights",
        "update_options",
    ]
    fresh = _run("fresh", tmp_path, iris)  # ...the fresh process takes it from mlshift.yaml

    assert fresh["calls"] == here["calls"]
    assert [op for _, op in here["calls"]].count("UpdateEndpoint") == 2  # the options rode along
    for key in ("state", "resources", "capture", "environments", "scaling"):
        assert fresh[key] == here[key], key
    assert here["capture"] == 50
    assert {v["API_TOKEN"] for v in here["environments"].values()} == {"new-secret"}
    assert here["scaling"] == {"main": [1, 3], "extra": [1, 3]}
    assert here["replan"] == fresh["replan"] == []
