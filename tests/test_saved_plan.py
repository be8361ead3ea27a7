"""A plan saved as JSON (``mlshift plan -o json``) and applied by another process does what it printed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

import mlshift
from mlshift._config import load_project
from mlshift.errors import ConfigError, Conflict
from mlshift.plan import Plan
from mlshift.specs.endpoint import EndpointSpec
from mlshift.specs.model import ModelSpec
from mlshift.testing.memory import MemoryAdapter

PROJECT = """\
version: 1
models:
  - name: iris
    path: {model}
    framework: sklearn
endpoints:
  - name: flowers
    variants:
      - {{name: blue, model: iris, weight: 70}}
      - {{name: green, model: iris, weight: 30}}
    autoscaling: {{min_replicas: 1, max_replicas: 3}}
    tags: {{team: ml}}
"""

# Applies a saved plan through the CLI (`mlshift apply --plan`) in this fresh process, then
# writes what the memory target saw: its calls and the end state.
APPLY_AND_REPORT = """\
import json, sys
from mlshift.cli import _output, main
from mlshift.testing.memory import MemoryAdapter

made = []
connect = _output.client
_output.client = lambda *a, **k: made.append(connect(*a, **k)) or made[-1]
sys.argv = ["mlshift", *sys.argv[1:]]
try:
    main()
except SystemExit as exc:
    assert not exc.code, exc.code
adapter = MemoryAdapter.of(made[0])
state = adapter.endpoints.observe("flowers")
report = {
    "calls": [list(map(str, call)) for call in adapter.calls],
    "state": state.model_dump(mode="json", exclude={"created_at", "url"}),
}
with open(REPORT, "w") as f:
    json.dump(report, f)
"""


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MLSHIFT_")} | {"NO_COLOR": "1"}


def _mlshift(cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(
        [sys.executable, "-m", "mlshift", *args],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


def _comparable(state: Any) -> dict[str, Any]:
    data: dict[str, Any] = state.model_dump(mode="json", exclude={"created_at", "url"})
    return data


def test_a_saved_plan_applied_by_a_fresh_process_makes_the_same_calls_on_memory(
    tmp_path: Path, iris: dict[str, Any]
) -> None:
    (tmp_path / "mlshift.yaml").write_text(PROJECT.format(model=iris["v1"]))
    saved = _mlshift(tmp_path, "plan", "-t", "memory://", "-o", "json").stdout
    (tmp_path / "plan.json").write_text(saved)
    assert [a["kind"] for a in json.loads(saved)["actions"]] == ["register_model", "create_endpoint"]

    script = tmp_path / "apply_and_report.py"
    report = tmp_path / "report.json"
    script.write_text(f"REPORT = {str(report)!r}\n" + APPLY_AND_REPORT)
    result = subprocess.run(
        [sys.executable, str(script), "apply", "--plan", "plan.json", "-t", "memory://", "--yes"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    fresh = json.loads(report.read_text())

    with mlshift.connect("memory://") as client:
        project = load_project(tmp_path / "mlshift.yaml")
        client.apply(client.plan(project))
        here = MemoryAdapter.of(client)
        state = client.endpoints.get("flowers")
        assert fresh["calls"] == [list(map(str, call)) for call in here.calls]
        assert fresh["state"] == _comparable(state)
    assert fresh["state"]["autoscaling"] == {
        "min_replicas": 1,
        "max_replicas": 3,
        "target_requests_per_replica": None,
    }


def _spec(model: str, token: str = "s3cret", weight: int = 100) -> EndpointSpec:
    return EndpointSpec.model_validate(
        {
            "name": "flowers",
            "variants": [{"name": "main", "model": model, "weight": weight}],
            # memory:// ignores other targets' options; they travel in the plan all the same
            "provider_options": {"sagemaker": {"environment": {"API_TOKEN": token}}},
        }
    )


def test_a_saved_plan_hides_secrets_and_takes_them_back_from_the_spec(
    memory: mlshift.Client, iris: dict[str, Any]
) -> None:
    memory.models.register("iris", iris["v1"], framework="sklearn")
    memory.models.register("iris", iris["v2"], framework="sklearn")
    memory.apply(_spec("iris:1"))
    plan = memory.plan(_spec("iris:2"))
    saved = json.loads(json.dumps(plan.to_json()))
    assert "s3cret" not in json.dumps(saved)
    (action,) = saved["actions"]
    assert action["variant"]["provider_options"] == {"sagemaker": {"environment": {"API_TOKEN": "(hidden)"}}}

    with pytest.raises(ConfigError, match="hides the values of endpoint 'flowers'") as missing:
        Plan.from_json(saved)
    assert "-f PATH" in (missing.value.hint or "")
    with pytest.raises(Conflict, match="provider options of endpoint 'flowers' changed"):
        Plan.from_json(saved, [_spec("iris:2").model_copy(update={"provider_options": {"sagemaker": {}}})])
    loaded = Plan.from_json(saved, [_spec("iris:2", token="other-value")])  # same names: a value may change
    assert loaded.actions[0].variant.provider_options["sagemaker"]["environment"] == {
        "API_TOKEN": "other-value"
    }
    assert Plan.from_json(saved, [_spec("iris:2")]) == plan


def test_a_saved_plan_is_refused_once_the_endpoint_changed(
    memory: mlshift.Client, iris: dict[str, Any]
) -> None:
    memory.models.register("iris", iris["v1"], framework="sklearn")
    memory.models.register("iris", iris["v2"], framework="sklearn")
    memory.apply(_spec("iris:1"))
    saved = memory.plan(_spec("iris:2")).to_json()
    memory.apply(_spec("iris:1").model_copy(update={"tags": {"owner": "someone-else"}}))  # another change
    mark = len(MemoryAdapter.of(memory).calls)
    with pytest.raises(Conflict, match="endpoint 'flowers' changed since this plan was made"):
        memory.apply(Plan.from_json(saved, [_spec("iris:2")]))
    assert MemoryAdapter.of(memory).calls[mark:] == []


def test_apply_plan_refuses_a_file_that_is_not_a_plan(tmp_path: Path) -> None:
    (tmp_path / "plan.json").write_text("{not json")
    result = subprocess.run(
        [sys.executable, "-m", "mlshift", "apply", "--plan", "plan.json", "-t", "memory://", "--yes"],
        cwd=tmp_path,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 1
    assert "the plan file 'plan.json' is not JSON" in result.stderr
    assert "Traceback" not in result.stderr


def test_a_saved_plan_with_a_relative_model_path_applies_from_another_directory(
    tmp_path: Path, iris: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    here, elsewhere = tmp_path / "a", tmp_path / "b"
    here.mkdir()
    elsewhere.mkdir()
    (here / "iris.skops").write_bytes(Path(iris["v1"]).read_bytes())
    monkeypatch.chdir(here)
    spec = ModelSpec(name="iris", path="iris.skops", framework="sklearn")  # relative to a/
    with mlshift.connect("memory://") as client:
        endpoint = EndpointSpec.model_validate(
            {"name": "flowers", "variants": [{"name": "main", "model": "iris"}]}
        )
        plan = client.plan([spec, endpoint])
    (here / "plan.json").write_text(json.dumps(plan.to_json()))
    (action,) = [a for a in plan.to_json()["actions"] if a["kind"] == "register_model"]
    assert action["model"]["path"] == str(here / "iris.skops")  # resolved where it was planned

    # Applied by a fresh process whose working directory is b/, where no iris.skops exists.
    apply = (
        "import json, sys, mlshift\n"
        "from mlshift.plan import Plan\n"
        "plan = Plan.from_json(json.load(open(sys.argv[1])))\n"
        "with mlshift.connect('memory://') as client:\n"
        "    client.apply(plan)\n"
        "    print(client.endpoints.predict('flowers', sys.argv[2]).predictions)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", apply, str(here / "plan.json"), json.dumps(iris["rows"])],
        cwd=elsewhere,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert not (elsewhere / "iris.skops").exists()
    assert json.loads(result.stdout) == iris["expected_v1"]  # the registered model serves
