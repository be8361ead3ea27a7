"""The KFP compiler against kfp's own: the same pipeline written in kfp's DSL compiles to the
same tasks, wiring and conditions, and kfp loads every spec mlshift compiles.

kfp is not in the tests session (it pulls the Kubernetes client and more); ``nox -s
crosscheck-kfp`` installs it and sets ``MLSHIFT_REQUIRE_CROSSCHECK``, so a missing kfp fails
there. Elsewhere these tests skip.
"""

import os
import re
from pathlib import Path
from typing import Any, NamedTuple

import pytest

if os.environ.get("MLSHIFT_REQUIRE_CROSSCHECK"):
    import kfp.dsl  # noqa: F401  (nox -s crosscheck-kfp: a skip must not pass)
else:
    pytest.importorskip("kfp.dsl", reason="kfp is installed by `nox -s crosscheck-kfp`")

import yaml
from kfp import compiler, components, dsl

from mlshift.pipelines import load_pipeline
from mlshift.pipelines.kfp import compile_kfp, to_yaml

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_gate_deploy.py"


# The example's shape in kfp's DSL. Output names are identifiers there: metric_accuracy and
# all_metrics stand for mlshift's metric-accuracy and all-metrics.
@dsl.component(base_image="img")
def prepare(label_noise: float, test_size: float, seed: int, dataset: dsl.Output[dsl.Artifact]) -> None:
    """Stands for the example's prepare step."""


@dsl.component(base_image="img")
def train(c: float, dataset: dsl.Input[dsl.Artifact], model: dsl.Output[dsl.Artifact]) -> None:
    """Stands for the example's train step."""


# No ``from __future__ import annotations`` in this file: kfp reads the components' annotations
# as types, not strings.
_Scores = NamedTuple("_Scores", [("metric_accuracy", float), ("all_metrics", dict)])  # noqa: UP014
_Version = NamedTuple("_Version", [("version", str)])  # noqa: UP014
_Url = NamedTuple("_Url", [("url", str)])  # noqa: UP014


@dsl.component(base_image="img")
def evaluate(dataset: dsl.Input[dsl.Artifact], model: dsl.Input[dsl.Artifact]) -> _Scores:  # type: ignore[empty-body]
    """Stands for the example's evaluate step."""


@dsl.component(base_image="img")
def register(artifact: dsl.Input[dsl.Artifact], model: str, metrics: dict) -> _Version:  # type: ignore[type-arg,empty-body]
    """Stands for RegisterModel."""


@dsl.component(base_image="img")
def deploy(model: str, endpoint: str) -> _Url:  # type: ignore[empty-body]
    """Stands for Deploy."""


@dsl.component(base_image="img")
def fail() -> None:
    """Stands for Fail."""


@dsl.pipeline(name="train-gate-deploy")
def kfp_train_gate_deploy(
    c: float = 1.0, label_noise: float = 0.0, threshold: float = 0.9, endpoint: str = "iris-pipeline"
) -> None:
    data = prepare(label_noise=label_noise, test_size=0.3, seed=7)
    fit = train(c=c, dataset=data.outputs["dataset"])
    scores = evaluate(dataset=data.outputs["dataset"], model=fit.outputs["model"])
    with dsl.If(scores.outputs["metric_accuracy"] >= threshold):
        version = register(artifact=fit.outputs["model"], model="iris", metrics=scores.outputs["all_metrics"])
        deploy(model=version.outputs["version"], endpoint=endpoint)
    with dsl.Else():
        fail()


def _normal(value: Any) -> Any:
    """mlshift's names in kfp's spelling, numbers as floats, caching left out (Fail's differs)."""
    if isinstance(value, dict):
        return {_normal(k): _normal(v) for k, v in value.items() if k != "cachingOptions"}
    if isinstance(value, list):
        return [_normal(v) for v in value]
    if isinstance(value, str):
        return re.sub(r"metric-accuracy|all-metrics", lambda m: m.group(0).replace("-", "_"), value)
    if isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    ours = compile_kfp(load_pipeline(f"{EXAMPLE}:train_gate_deploy").ir, image="img", target="local://")
    path = tmp_path_factory.mktemp("kfp") / "theirs.yaml"
    compiler.Compiler().compile(kfp_train_gate_deploy, str(path))
    return _normal(ours), yaml.safe_load(path.read_text())


def test_the_steps_outside_the_gate_match_kfp(both: tuple[dict[str, Any], dict[str, Any]]) -> None:
    ours, theirs = both
    assert ours["schemaVersion"] == theirs["schemaVersion"] == "2.1.0"
    assert ours["root"]["inputDefinitions"] == theirs["root"]["inputDefinitions"]
    for task in ("prepare", "train", "evaluate"):
        mine = dict(ours["root"]["dag"]["tasks"][task])
        mine.pop("retryPolicy", None)  # train's retries=1; the kfp version has none
        assert mine == _normal(theirs["root"]["dag"]["tasks"][task]), task
        assert (
            ours["components"][f"comp-{task}"]["inputDefinitions"]
            == (theirs["components"][f"comp-{task}"]["inputDefinitions"])
        )


def test_the_gate_matches_kfp_if_else(both: tuple[dict[str, Any], dict[str, Any]]) -> None:
    ours, theirs = both
    # kfp >= 2.8 wraps If/Else in a condition-branches-N DAG; inside it, the two branches are
    # what mlshift puts in the root (as kfp's dsl.Condition does).
    branches = theirs["components"]["comp-condition-branches-1"]["dag"]["tasks"]
    wrapper = theirs["root"]["dag"]["tasks"]["condition-branches-1"]
    gate = ours["root"]["dag"]["tasks"]["condition-quality-gate"]
    other = ours["root"]["dag"]["tasks"]["condition-quality-gate-else"]
    assert gate["triggerPolicy"] == branches["condition-2"]["triggerPolicy"]
    assert other["triggerPolicy"] == branches["condition-3"]["triggerPolicy"]
    assert gate["inputs"] == _normal(wrapper["inputs"])
    assert gate["dependentTasks"] == wrapper["dependentTasks"]
    for mine, kfp_name in (
        ("condition-quality-gate", "condition-2"),
        ("condition-quality-gate-else", "condition-3"),
    ):
        a, b = ours["components"][f"comp-{mine}"], _normal(theirs["components"][f"comp-{kfp_name}"])
        if mine.endswith("-else"):
            # mlshift's Fail also takes the gate's operands, to say what it measured.
            fail = a["dag"]["tasks"]["fail"]
            assert set(fail.pop("inputs")["parameters"]) == {"gate0-left", "gate0-right"}
        assert a["dag"] == b["dag"], mine
        assert a["inputDefinitions"] == b["inputDefinitions"], mine
    for task in ("register", "deploy"):
        assert ours["components"][f"comp-{task}"]["inputDefinitions"] == (
            _normal(theirs["components"][f"comp-{task}"]["inputDefinitions"])
        )


def _specs() -> dict[str, dict[str, Any]]:
    import test_pipelines_kfp as t

    return {
        "example": compile_kfp(
            load_pipeline(f"{EXAMPLE}:train_gate_deploy").ir, image="img", target="local://"
        ),
        "everything": compile_kfp(t.everything.ir, image="img"),
    }


@pytest.mark.parametrize("name", ["example", "everything"])
def test_kfp_loads_the_spec_and_compiles_it_as_a_sub_pipeline(name: str, tmp_path: Path) -> None:
    spec = _specs()[name]
    loaded = components.load_component_from_text(to_yaml(spec))
    assert loaded.name == spec["pipelineInfo"]["name"]
    params = spec["root"].get("inputDefinitions", {}).get("parameters", {})
    assert set(loaded.component_spec.inputs or {}) == set(params)
    required = {k: 1 for k, v in params.items() if not v.get("isOptional")}

    @dsl.pipeline(name="outer")
    def outer() -> None:
        loaded(**required)

    path = tmp_path / "outer.yaml"
    compiler.Compiler().compile(outer, str(path))
    recompiled = yaml.safe_load(path.read_text())
    assert set(spec["components"]) <= set(recompiled["components"])
    inner = recompiled["components"][f"comp-{spec['pipelineInfo']['name']}"]
    assert inner["dag"]["tasks"].keys() == spec["root"]["dag"]["tasks"].keys()
