"""Plan-time input compatibility: a version its callers cannot call is refused before any change."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import mlshift
from mlshift.errors import ConfigError
from mlshift.plan._schema import compare_signatures, name_ranges
from mlshift.specs.endpoint import EndpointSpec
from mlshift.specs.model import ColumnSpec, Signature
from mlshift.testing.memory import MemoryAdapter
from rollout_models import wide_models

NAMED_20 = Signature.from_columns([f"f{i}" for i in range(20)])
NAMED_5 = Signature.from_columns([f"f{i}" for i in range(5)])


@pytest.mark.parametrize(
    ("new", "old", "compatible", "text"),
    [
        (NAMED_5, NAMED_20, False, "iris:2 takes 5 columns, iris:1 takes 20: missing f5..f19"),
        (
            Signature.from_columns(["a", "b", "c"]),
            Signature.from_columns(["a", "c", "b"]),
            False,
            "iris:2 and iris:1 take different inputs: "
            "same columns in another order (position 1: b instead of c)",
        ),
        (
            Signature.from_columns(["a", "b", "x"]),
            Signature.from_columns(["a", "b", "c"]),
            False,
            "iris:2 and iris:1 take different inputs: missing c; new x",
        ),
        (
            Signature(inputs=(ColumnSpec(name="a"), ColumnSpec(name="b", dtype="string"))),
            Signature.from_columns(["a", "b"]),
            False,
            "iris:2 and iris:1 take different inputs: b is string, was float64",
        ),
        (
            Signature.numeric(5),
            Signature.numeric(20),
            False,
            "iris:2 takes 5 columns, iris:1 takes 20: callers send 20 values per row",
        ),
        (
            Signature.numeric(4, "float32"),
            Signature.from_columns(list("abcd")),
            True,
            "inputs match iris:1 (4 columns)",
        ),
        (None, NAMED_5, None, "no known signature for iris:2; inputs not compared"),
    ],
    ids=["fewer", "reordered", "renamed", "dtype", "unnamed", "same", "unknown"],
)
def test_compare_signatures(
    new: Signature | None, old: Signature, compatible: bool | None, text: str
) -> None:
    result = compare_signatures("iris:2", new, "iris:1", old)
    assert (result.compatible, result.text) == (compatible, text)


def test_name_ranges_shortens_numbered_runs_only() -> None:
    assert name_ranges(["f5", "f6", "f7", "x", "f9", "f10"]) == "f5..f7, x, f9, f10"
    assert name_ranges([f"c{i}" for i in range(0, 40, 2)], limit=3) == "c0, c2, c4 and 17 more"


@pytest.fixture
def wide(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    return wide_models(tmp_path_factory.mktemp("wide"))


@pytest.fixture
def serving(wide: dict[str, Any]) -> Iterator[mlshift.Client]:
    with mlshift.connect("memory://") as client:
        client.models.register("wide", wide["v1"])  # wide:1, 20 features
        client.models.register("wide", wide["v2"])  # wide:2, 5 features
        client.endpoints.deploy("wide", "wide:1")
        yield client


def test_incompatible_version_is_refused_before_any_change(serving: mlshift.Client) -> None:
    before = list(MemoryAdapter.of(serving).calls)
    with pytest.raises(ConfigError) as info:
        serving.endpoints.deploy("wide", "wide:2", rollout="canary")
    assert "wide:2 takes 5 columns, wide:1 takes 20: callers send 20 values per row" in str(info.value)
    assert info.value.field == "variants[0].model"
    assert "--allow-schema-change" in (info.value.hint or "")
    assert MemoryAdapter.of(serving).calls == before
    assert serving.endpoints.get("wide").weights == {"wide-v1": 100}


def test_named_columns_are_listed(tmp_path: Path, wide: dict[str, Any]) -> None:
    with mlshift.connect("memory://") as client:
        client.models.register("iris", wide["v1"], signature=NAMED_20)
        client.models.register("iris", wide["v2"], signature=NAMED_5)
        client.endpoints.deploy("iris", "iris:1")
        with pytest.raises(ConfigError, match=r"iris:2 takes 5 columns, iris:1 takes 20: missing f5\.\.f19"):
            client.endpoints.deploy("iris", "iris:2")


def test_allowed_change_is_shown_in_the_plan(serving: mlshift.Client) -> None:
    spec = EndpointSpec.model_validate(
        {
            "name": "wide",
            "variants": [{"name": "wide-v2", "model": "wide:2"}],
            "rollout": {"strategy": "canary", "percent": 20, "bake": "5s"},
            "allow_schema_change": True,
        }
    )
    plan = serving.plan(spec)
    expected = "schema change allowed: wide:2 takes 5 columns, wide:1 takes 20"
    assert expected in plan.render()
    rollout = next(a for a in plan.to_json()["actions"] if a["kind"] == "rollout")
    assert rollout["candidates"][0]["schema_check"].startswith(expected)


def test_compatible_and_unknown_signatures_are_said_in_the_plan(
    serving: mlshift.Client, tmp_path: Path, wide: dict[str, Any]
) -> None:
    serving.models.register("wide", wide["v1"], tags={"copy": "yes"})  # wide:3, same inputs as wide:1
    plan = serving.plan(
        EndpointSpec.model_validate({"name": "wide", "variants": [{"name": "wide-v3", "model": "wide:3"}]})
    )
    assert (
        "add variant wide-v3 (wide:3, cpu-small x1) at 0%; inputs match wide:1 (20 columns)" in plan.render()
    )

    unsigned = tmp_path / "unsigned"
    unsigned.mkdir()
    (unsigned / "predictor.py").write_text(
        "class Predictor:\n    def load(self, path):\n        pass\n\n"
        "    def predict(self, batch):\n        return [0 for _ in batch]\n"
    )
    assert serving.models.register("odd", unsigned).signature is None
    plan = serving.plan(
        EndpointSpec.model_validate({"name": "wide", "variants": [{"name": "odd", "model": "odd:1"}]})
    )
    assert "no known signature for odd:1; inputs not compared" in plan.render()


def test_rollback_to_an_older_schema_is_not_refused(serving: mlshift.Client) -> None:
    serving.endpoints.deploy("wide", "wide:2", allow_schema_change=True)
    state = serving.endpoints.rollback("wide")
    assert state.weights == {"wide-v1": 100}


def test_project_file_takes_allow_schema_change(tmp_path: Path) -> None:
    from mlshift._config import load_project

    path = tmp_path / "mlshift.yaml"
    path.write_text(
        "version: 1\nendpoints:\n  - name: wide\n    allow_schema_change: true\n"
        "    variants: [{name: a, model: 'wide:2'}]\n"
    )
    assert load_project(path).endpoints[0].allow_schema_change is True


def test_a_version_registered_in_the_same_apply_is_compared(serving: mlshift.Client, tmp_path: Path) -> None:
    import numpy as np
    import skops.io as skops_io
    from sklearn.linear_model import LogisticRegression

    from mlshift.specs.model import ModelSpec

    x = np.random.default_rng(1).normal(size=(50, 5))
    narrow = tmp_path / "narrow.skops"  # new bytes, 5 features: registered by the plan itself
    skops_io.dump(LogisticRegression().fit(x, (x[:, 0] > 0).astype(int)), narrow)
    model = ModelSpec.model_validate({"name": "wide", "path": str(narrow), "framework": "sklearn"})
    endpoint = {"name": "wide", "variants": [{"name": "wide-next", "model": "wide"}]}
    before = list(MemoryAdapter.of(serving).calls)
    with pytest.raises(ConfigError, match=r"wide:\(new version\) takes 5 columns, wide:1 takes 20"):
        serving.plan([model, EndpointSpec.model_validate(endpoint)])
    assert MemoryAdapter.of(serving).calls == before

    allowed = EndpointSpec.model_validate({**endpoint, "allow_schema_change": True})
    plan = serving.plan([model, allowed])
    register = plan.actions[0]
    assert register.kind == "register_model" and register.model.signature == Signature.numeric(5)
    assert "schema change allowed: wide:(new version) takes 5 columns, wide:1 takes 20" in plan.render()
    serving.apply(plan)
    assert serving.models.get("wide:3").signature == Signature.numeric(5)  # as `models register` infers it
    assert serving.endpoints.get("wide").weights == {"wide-next": 100}
    assert serving.endpoints.get("wide").variant("wide-next").model == "wide:3"  # the latest: the new one
    assert serving.plan([model, allowed]).is_empty


def test_the_deploy_step_refuses_a_schema_change_unless_allowed(serving: mlshift.Client) -> None:
    from mlshift.pipelines import Deploy, pipeline

    @pipeline
    def strict() -> None:
        Deploy("wide:2", endpoint="wide")

    @pipeline
    def lenient() -> None:
        Deploy("wide:2", endpoint="wide", allow_schema_change=True)

    run = serving.pipelines.run(strict).wait()
    assert run.status == "failed"
    assert "wide:2 takes 5 columns, wide:1 takes 20" in run.message + run.logs("deploy")
    assert serving.endpoints.get("wide").weights == {"wide-v1": 100}
    run = serving.pipelines.run(lenient).wait()
    assert run.status == "succeeded", run.message
    assert serving.endpoints.get("wide").weights == {"wide-v2": 100}
