"""Pipelines as defined: every definition error names its step and field, the IR round-trips with
stable hashes, schedules parse, compile targets behave. Nothing here starts a process."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import textwrap
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pytest

from mlshift.errors import AdapterNotFound, ConfigError
from mlshift.pipelines import (
    ContainerStep,
    Deploy,
    Fail,
    Param,
    Pipeline,
    PipelineIR,
    RegisterModel,
    Resources,
    load_pipeline,
    parse_cron,
    pipeline,
    when,
)

STEPS = """
from __future__ import annotations

from mlshift.pipelines import InputPath, Metrics, OutputPath, step


@step
def prepare(data: OutputPath, rows: int = 10) -> None:
    data.write_text("x" * rows)


@step
def train(data: InputPath, model: OutputPath, c: float = 1.0) -> None:
    model.write_text(str(c))


@step(metrics=["accuracy", "f1"])
def evaluate(model: InputPath) -> Metrics:
    return {"accuracy": 1.0, "f1": 1.0}


@step
def count(data: InputPath) -> int:
    return 3


@step
def label(name: str) -> str:
    return name
"""


@pytest.fixture
def steps(tmp_path: Path) -> Any:
    """A module of step functions, written to a file as users would."""
    path = tmp_path / "dsl_steps.py"
    path.write_text(STEPS)
    from mlshift.pipelines._code import load_module_file

    return load_module_file(path, "dsl_steps")


def field_of(exc: pytest.ExceptionInfo[ConfigError]) -> str | None:
    return exc.value.field


# ------------------------------------------------------------------------------ definition errors


def test_duplicate_step_names_are_refused(steps: Any) -> None:
    with pytest.raises(ConfigError) as exc:

        @pipeline
        def twice() -> None:
            data = steps.prepare()
            steps.train(data=data.outputs["data"])
            steps.train(data=data.outputs["data"], c=2.0)

    assert field_of(exc) == "steps.train"
    assert "two steps are named 'train'" in str(exc.value)
    assert "options(name=" in str(exc.value)


def test_the_same_function_twice_under_two_names_is_fine(steps: Any) -> None:
    @pipeline
    def sweep() -> None:
        data = steps.prepare()
        steps.train(data=data.outputs["data"], c=0.5)
        steps.train.options(name="train-strong")(data=data.outputs["data"], c=2.0)

    assert [s.name for s in sweep.steps] == ["prepare", "train", "train-strong"]


def test_cycles_are_refused_naming_the_steps(steps: Any) -> None:
    data = steps.prepare()
    fit = steps.train(data=data.outputs["data"])
    data.after(fit)
    with pytest.raises(ConfigError) as exc:
        Pipeline("loop", steps=[data, fit])
    assert "cycle" in str(exc.value)
    assert "prepare" in str(exc.value) and "train" in str(exc.value)
    assert field_of(exc) in ("steps.prepare.after", "steps.train.after")


def test_a_step_after_itself_is_a_cycle(steps: Any) -> None:
    data = steps.prepare()
    data.after(data)
    with pytest.raises(ConfigError, match="cycle: prepare → prepare") as exc:
        Pipeline("self-loop", steps=[data])
    assert field_of(exc) == "steps.prepare.after"


def test_an_input_from_a_step_outside_the_pipeline_is_dangling(steps: Any) -> None:
    data = steps.prepare()
    fit = steps.train(data=data.outputs["data"])
    with pytest.raises(ConfigError) as exc:
        Pipeline("dangling", steps=[fit])
    assert field_of(exc) == "steps.train.inputs.data"
    assert "'prepare', which is not part of the pipeline" in str(exc.value)


def test_the_explicit_form(steps: Any) -> None:
    data = steps.prepare(rows=Param("rows"))
    fit = steps.train(data=data.outputs["data"], c=Param("c"))
    training = Pipeline("training", params={"c": 1.0, "rows": int}, steps=[fit, data], schedule="@daily")
    assert [s.name for s in training.steps] == ["prepare", "train"]  # dependency order
    params = {p.name: (p.type, p.required, p.default) for p in training.ir.params}
    assert params == {"c": ("float", False, 1.0), "rows": ("int", True, None)}
    assert training.ir.step("prepare").inputs["rows"].param == "rows"
    with pytest.raises(ConfigError, match="'rows' \\(int\\) is required"):
        training.ir.resolve_params({})
    assert training.ir.resolve_params({"rows": "7"}, from_text=True) == {"c": 1.0, "rows": 7}


def test_an_undeclared_parameter_is_dangling(steps: Any) -> None:
    data = steps.prepare()
    fit = steps.train(data=data.outputs["data"], c=Param("c"))
    with pytest.raises(ConfigError) as exc:
        Pipeline("no-param", steps=[data, fit], params={"rows": 10})
    assert field_of(exc) == "steps.train.inputs.c"
    assert "parameter 'c'" in str(exc.value) and "rows" in str(exc.value)


def test_type_mismatches_name_step_and_input(steps: Any) -> None:
    with pytest.raises(ConfigError) as exc:
        steps.train(data=steps.prepare().outputs["data"], c="strong")
    assert field_of(exc) == "steps.train.inputs.c"
    assert "expects float" in str(exc.value) and "'strong'" in str(exc.value)

    with pytest.raises(ConfigError) as exc:
        steps.label(name=steps.prepare().outputs["data"])
    assert field_of(exc) == "steps.label.inputs.name"
    assert "expects str" in str(exc.value) and "artifact" in str(exc.value)

    with pytest.raises(ConfigError) as exc:
        steps.train(data="data.csv")
    assert field_of(exc) == "steps.train.inputs.data"
    assert "expects artifact" in str(exc.value)

    with pytest.raises(ConfigError) as exc:

        @pipeline
        def typed(name: str = "x") -> None:
            steps.prepare(rows=name)

    assert field_of(exc) == "steps.prepare.inputs.rows"
    assert "pipeline parameter 'name' is a str" in str(exc.value)


def test_an_int_feeds_a_float_but_a_bool_is_not_a_number(steps: Any) -> None:
    data = steps.prepare()
    assert steps.train(data=data.outputs["data"], c=2).bindings["c"] == 2.0
    with pytest.raises(ConfigError) as exc:
        steps.prepare(rows=True)
    assert field_of(exc) == "steps.prepare.inputs.rows"


def test_unknown_missing_and_output_inputs(steps: Any) -> None:
    with pytest.raises(ConfigError) as exc:
        steps.prepare(row=3)
    assert field_of(exc) == "steps.prepare.inputs.row"
    assert "no input 'row'" in str(exc.value) and "rows" in str(exc.value)

    with pytest.raises(ConfigError) as exc:
        steps.train()
    assert field_of(exc) == "steps.train.inputs.data"
    assert "required" in str(exc.value)

    with pytest.raises(ConfigError) as exc:
        steps.prepare(data="somewhere")
    assert field_of(exc) == "steps.prepare.inputs.data"
    assert "is an output" in str(exc.value)

    with pytest.raises(ConfigError) as exc:
        steps.prepare().outputs["dataset"]
    assert field_of(exc) == "steps.prepare.outputs.dataset"


def test_a_condition_on_a_metric_no_step_produces(steps: Any) -> None:
    data = steps.prepare()
    scores = steps.evaluate(model=steps.train(data=data.outputs["data"]).outputs["model"])
    with pytest.raises(ConfigError) as exc:
        when(scores.metrics["auc"] >= 0.85)
    assert field_of(exc) == "steps.evaluate.metrics.auc"
    assert "produces no metric 'auc'" in str(exc.value) and "accuracy, f1" in str(exc.value)

    with pytest.raises(ConfigError) as exc:
        when(data.metrics["accuracy"] > 0.5)
    assert field_of(exc) == "steps.prepare.metrics.accuracy"


def test_a_condition_is_not_a_python_bool(steps: Any) -> None:
    scores = steps.evaluate(model=steps.train(data=steps.prepare().outputs["data"]).outputs["model"])
    with pytest.raises(ConfigError, match="with when"):
        if scores.metrics["accuracy"] > 0.9:
            pass
    with pytest.raises(ConfigError, match="when\\(\\) takes a comparison"):
        when(True)  # type: ignore[arg-type]


def test_conditions_compare_like_types(steps: Any) -> None:
    scores = steps.evaluate(model=steps.train(data=steps.prepare().outputs["data"]).outputs["model"])
    with pytest.raises(ConfigError, match="compares a float with a str"):
        when(scores.metrics["accuracy"] >= "high")
    name = steps.label(name="x")
    with pytest.raises(ConfigError, match="only be compared with == or !="):
        when(name.output > "a")


def test_step_definitions_are_checked_when_decorated(tmp_path: Path) -> None:
    bad = {
        "def f(x): pass": ("steps.f.inputs.x", "no type annotation"),
        "def f(x: list) -> None: pass": ("steps.f.inputs.x", "steps take"),
        "def f() -> OutputPath: pass": ("steps.f.returns", "OutputPath"),
        "def f(out: OutputPath = None) -> None: pass": ("steps.f.inputs.out", "cannot have a default"),
    }
    for i, (source, (field, text)) in enumerate(bad.items()):
        path = tmp_path / f"bad_{i}.py"
        header = "from pathlib import Path\nfrom mlshift.pipelines import OutputPath, step\n"
        path.write_text(f"{header}@step\n{source}\n")
        from mlshift.pipelines._code import load_module_file

        with pytest.raises(ConfigError) as exc:
            load_module_file(path, f"bad_{i}")
        assert exc.value.field == field, source
        assert text in str(exc.value), source


def test_nested_functions_cannot_be_steps() -> None:
    from mlshift.pipelines import step

    with pytest.raises(ConfigError, match="module level"):

        @step
        def inner() -> None:
            pass


def test_credentials_go_in_secrets_not_env(steps: Any) -> None:
    with pytest.raises(ConfigError) as exc:
        steps.prepare.options(env={"HF_TOKEN": "hf_abc"})
    assert field_of(exc) == "steps.prepare.env.HF_TOKEN"
    assert "secrets=" in str(exc.value)
    # Ordinary settings that merely contain the letters are fine.
    fine = steps.prepare.options(
        env={"TOKENIZERS_PARALLELISM": "false"}, secrets={"HF_TOKEN": "prod/hf-token"}
    )
    call = fine()
    ir = Pipeline("env-ok", steps=[call]).ir
    assert ir.steps[0].secrets == {"HF_TOKEN": "prod/hf-token"}
    assert "hf_abc" not in ir.model_dump_json()


def test_resources_and_options_are_validated(steps: Any) -> None:
    with pytest.raises(ConfigError, match="unknown size"):
        Resources(size="huge")
    with pytest.raises(ConfigError, match="gpu-"):
        Resources(size="cpu-small", gpus=2)
    with pytest.raises(ConfigError) as exc:
        steps.prepare.options(retries=-1)
    assert field_of(exc) == "steps.prepare.retries"
    with pytest.raises(ConfigError) as exc:
        steps.prepare.options(timeout=0)
    assert field_of(exc) == "steps.prepare.timeout"
    with pytest.raises(ConfigError) as exc:
        Deploy("iris:1", endpoint="iris", traffic=0)
    assert field_of(exc) == "steps.deploy.traffic"


def test_container_step_placeholders_must_be_declared() -> None:
    with pytest.raises(ConfigError) as exc:
        ContainerStep("fit", "python:3.11", ["python", "train.py"], ["--out", "{{outputs.model}}"])
    assert field_of(exc) == "steps.fit.args[1]"
    step = ContainerStep(
        "fit",
        "python:3.11",
        ["python", "train.py"],
        ["--c", "{{inputs.c}}", "--out", "{{outputs.model}}", "--metrics", "{{metrics}}"],
        inputs={"c": 0.5},
        outputs={"model": "artifact"},
        metrics=["accuracy"],
    )
    assert step.output_types == {"model": "artifact"}


def test_schedules_are_validated_at_definition(steps: Any) -> None:
    with pytest.raises(ConfigError) as exc:

        @pipeline(schedule="61 * * * *")
        def hourly() -> None:
            steps.prepare()

    assert field_of(exc) == "schedule"
    assert "minute 61 is out of range 0-59" in str(exc.value)


# ------------------------------------------------------------------------------ the IR


def _build(steps: Any, c: float = 1.0) -> Pipeline:
    @pipeline(name="gated")
    def gated(threshold: float = 0.9, endpoint: str = "iris") -> None:
        data = steps.prepare()
        fit = steps.train(data=data.outputs["data"], c=c)
        scores = steps.evaluate(model=fit.outputs["model"])
        with when(scores.metrics["accuracy"] >= threshold, name="quality") as gate:
            version = RegisterModel(fit.outputs["model"], model="iris", metrics=scores.metrics)
            Deploy(version.output, endpoint=endpoint)
        with gate.otherwise():
            Fail("not good enough")

    return gated


def test_ir_has_steps_edges_params_conditions_and_types(steps: Any) -> None:
    ir = _build(steps).ir
    assert [s.name for s in ir.steps] == ["prepare", "train", "evaluate", "register", "fail", "deploy"]
    assert {(e.source, e.target, e.kind) for e in ir.edges} >= {
        ("prepare", "train", "data"),
        ("evaluate", "register", "data"),
        ("evaluate", "register", "condition"),
        ("register", "deploy", "data"),
        ("evaluate", "fail", "condition"),
    }
    (cond,) = ir.conditions
    assert cond.id == "quality" and cond.op == ">="
    assert (cond.left.step, cond.left.metric, cond.right.param) == ("evaluate", "accuracy", "threshold")
    register = ir.step("register")
    assert [w.model_dump() for w in register.when] == [{"condition": "quality", "branch": True}]
    assert [w.model_dump() for w in ir.step("fail").when] == [{"condition": "quality", "branch": False}]
    assert register.inputs["artifact"].type == "artifact" and register.inputs["metrics"].type == "metrics"
    assert ir.step("train").outputs["model"].type == "artifact"
    assert {p.name: p.type for p in ir.params} == {"threshold": "float", "endpoint": "str"}
    assert all(s.hash.startswith("sha256:") for s in ir.steps)


def test_step_hashes_are_stable_and_follow_content(steps: Any) -> None:
    first, again = _build(steps).ir, _build(steps).ir
    assert [s.hash for s in first.steps] == [s.hash for s in again.steps]
    assert first.hash == again.hash
    changed = _build(steps, c=2.0).ir
    differs = {s.name for s, t in zip(first.steps, changed.steps, strict=True) if s.hash != t.hash}
    assert differs == {"train"}  # a step's hash covers its own definition, not its neighbours'


def test_ir_json_round_trips_and_is_checked_on_load(steps: Any) -> None:
    ir = _build(steps).ir
    loaded = PipelineIR.model_validate_json(ir.model_dump_json())
    assert loaded.hash == ir.hash and loaded == ir

    data = json.loads(ir.model_dump_json())
    data["steps"][1]["inputs"]["c"]["value"] = 3.0  # edited by hand: the hash no longer matches
    with pytest.raises(ConfigError) as exc:
        PipelineIR.model_validate(data)
    assert exc.value.field == "steps.train.hash"

    data = json.loads(ir.model_dump_json())
    data["steps"][0]["after"] = ["deploy"]
    data["edges"].append({"source": "deploy", "target": "prepare", "kind": "order"})
    data["steps"][0]["hash"] = ""
    data["hash"] = ""
    with pytest.raises(ConfigError, match="cycle"):
        PipelineIR.model_validate(data)

    data = json.loads(ir.model_dump_json())
    data["conditions"][0]["left"]["metric"] = "auc"
    data["hash"] = ""
    with pytest.raises(ConfigError) as exc:
        PipelineIR.model_validate(data)
    assert exc.value.field == "steps.evaluate.metrics.auc"


def test_a_500_step_dag_defines_and_validates(steps: Any) -> None:
    # The timing target (< 0.5 s) is measured in bench/; this checks the shape and that it is linear
    # enough not to time out.
    @pipeline(name="wide")
    def wide() -> None:
        outs = [steps.prepare.options(name=f"p{i}")(rows=i).outputs["data"] for i in range(2)]
        for i in range(2, 499):
            outs.append(steps.train.options(name=f"t{i}")(data=outs[i // 2], c=float(i)).outputs["model"])
        steps.count(data=outs[-1])

    ir = wide.ir
    assert len(ir.steps) == 500
    position = {s.name: i for i, s in enumerate(ir.steps)}
    assert all(position[e.source] < position[e.target] for e in ir.edges)


def test_compile_local_gives_the_ir_and_cloud_targets_say_what_is_missing(steps: Any) -> None:
    from mlshift._client import compile_pipeline

    gated = _build(steps)
    document = compile_pipeline(gated, "local")
    assert PipelineIR.model_validate(document).hash == gated.ir.hash
    assert compile_pipeline(gated, "memory://") == document
    # A kind, not a target: no role, bucket or region (or, without the adapter, what to install).
    installed = importlib.util.find_spec("mlshift_sagemaker") is not None
    expected = "needs the target itself, e.g. --target sagemaker://" if installed else "pip install"
    with pytest.raises(ConfigError, match=expected):
        compile_pipeline(gated, "sagemaker")
    if importlib.util.find_spec("mlshift_vertex") is None:
        with pytest.raises(AdapterNotFound, match="vertex"):
            compile_pipeline(gated, "vertex://my-project/us-central1")  # not installed: says what to install
    else:  # installed: Vertex AI Pipelines runs the KFP spec (compiled without a call)
        spec = compile_pipeline(gated, "vertex://my-project/us-central1?staging_bucket=gs://b-1")
        assert spec["schemaVersion"] == "2.1.0"


def test_compile_command_writes_the_ir(tmp_path: Path) -> None:
    source = tmp_path / "compiled.py"
    source.write_text(
        STEPS
        + textwrap.dedent(
            """
            from mlshift.pipelines import pipeline

            @pipeline(schedule="@daily")
            def nightly(rows: int = 5) -> None:
                train(data=prepare(rows=rows).outputs["data"])
            """
        )
    )
    out = tmp_path / "nightly.json"
    command = [sys.executable, "-m", "mlshift", "pipelines", "compile", f"{source}:nightly"]
    env_run = subprocess.run(
        [*command, "-t", "local", "-o", str(out)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert env_run.returncode == 0, env_run.stderr
    ir = PipelineIR.model_validate_json(out.read_text())
    assert ir.name == "nightly" and ir.schedule is not None and ir.schedule.cron == "@daily"
    cloud = subprocess.run(
        [*command, "-t", "azureml://ws"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert cloud.returncode == 1
    # Without the adapter: what to install; with it: what is wrong with the target (no workspace).
    installed = importlib.util.find_spec("mlshift_azureml") is not None
    expected = "does not name a workspace" if installed else 'pip install "mlshift[azureml]"'
    assert expected in cloud.stderr and "Traceback" not in cloud.stderr


def test_load_pipeline_names_what_is_wrong(tmp_path: Path) -> None:
    path = tmp_path / "two.py"
    path.write_text(STEPS + "\nfrom mlshift.pipelines import Pipeline\n")
    with pytest.raises(ConfigError, match="defines 0 pipelines"):
        load_pipeline(str(path))
    with pytest.raises(ConfigError, match="does not exist"):
        load_pipeline(str(tmp_path / "missing.py:p"))
    with pytest.raises(ConfigError, match="not a pipeline"):
        load_pipeline(f"{path}:prepare")


def test_neutral_sizes_match_the_endpoint_specs() -> None:
    from mlshift.pipelines._dsl import SIZES
    from mlshift.specs.endpoint import SIZES as ENDPOINT_SIZES

    assert SIZES == ENDPOINT_SIZES


# ------------------------------------------------------------------------------ cron


def at(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=timezone.utc)


def test_cron_ticks() -> None:
    nightly = parse_cron("0 3 * * *")
    assert nightly.next_after(at("2024-05-01T02:59:30")) == at("2024-05-01T03:00")
    assert nightly.next_after(at("2024-05-01T03:00")) == at("2024-05-02T03:00")
    assert nightly.latest_at_or_before(at("2024-05-01T02:59")) == at("2024-04-30T03:00")
    weekdays = parse_cron("*/15 9-17 * * mon-fri")
    assert weekdays.next_after(at("2024-05-03T17:50")) == at("2024-05-06T09:00")  # Friday → Monday
    assert parse_cron("@hourly").next_after(at("2024-05-01T10:01")) == at("2024-05-01T11:00")
    # Both day fields restricted: either matches, as in cron.
    either = parse_cron("0 0 13 * fri")
    assert either.next_after(at("2024-09-01T00:00")) == at("2024-09-06T00:00")
    leap = parse_cron("0 0 29 2 *")
    assert leap.next_after(at("2025-01-01T00:00")) == at("2028-02-29T00:00")


def test_cron_time_zones() -> None:
    paris = parse_cron("0 9 * * *", "Europe/Paris")
    assert paris.next_after(at("2024-07-01T00:00")) == at("2024-07-01T07:00")  # 09:00 CEST
    with pytest.raises(ConfigError) as exc:
        parse_cron("0 9 * * *", "Mars/Olympus")
    assert exc.value.field == "timezone"


@pytest.mark.parametrize(
    ("expression", "text"),
    [
        ("* * * *", "has 4 fields"),
        ("0 24 * * *", "hour 24 is out of range 0-23"),
        ("0 0 * foo *", "month 'foo' is not a number or a name"),
        ("*/0 * * * *", "positive number"),
        ("5-1 * * * *", "runs backwards"),
        ("0 0 30 2 *", "never fires"),
    ],
)
def test_cron_errors(expression: str, text: str) -> None:
    with pytest.raises(ConfigError) as exc:
        parse_cron(expression)
    assert text in str(exc.value)
    assert exc.value.field == "schedule"
