"""Pipelines: the IR compiled to a SageMaker definition, validated, created, run, followed, stopped."""

from __future__ import annotations

import copy
import json
import shutil
from pathlib import Path
from typing import Any

import pytest

import mlshift
from mlshift.errors import ConfigError
from mlshift_sagemaker._pipelines import validate_definition
from mlshift_sagemaker.testing import FakeSageMaker
from sagemaker_helpers import sagemaker

ROOT = Path(__file__).resolve().parents[3]


@pytest.fixture(scope="module")
def example(example_module: Any) -> Any:
    """``examples/train_gate_deploy.py``: prepare → train → evaluate → gate → register → deploy."""
    return example_module.train_gate_deploy


def steps_by_name(definition: dict[str, Any]) -> dict[str, dict[str, Any]]:
    found = {}
    for step in definition["Steps"]:
        found[step["Name"]] = step
        for nested in [
            *step.get("Arguments", {}).get("IfSteps", []),
            *step.get("Arguments", {}).get("ElseSteps", []),
        ]:
            found[nested["Name"]] = nested
    return found


def test_mlshift_pipelines_compile_routes_to_the_adapter(client: mlshift.Client, example: Any) -> None:
    from mlshift._client import compile_pipeline

    document = compile_pipeline(example, client.target)  # what `mlshift pipelines compile -t URI` runs
    assert document == sagemaker(client).pipelines.compile(example.ir)
    assert document["Version"] == "2020-12-01"


def test_the_gated_example_compiles_step_for_step(client: mlshift.Client, example: Any) -> None:
    definition = sagemaker(client).pipelines.compile(example.ir)
    assert definition["Version"] == "2020-12-01"
    assert [(p["Name"], p["Type"], p["DefaultValue"]) for p in definition["Parameters"]] == [
        ("c", "Float", 1.0),
        ("label_noise", "Float", 0.0),
        ("threshold", "Float", 0.9),
        ("endpoint", "String", "iris-pipeline"),
    ]
    assert [s["Name"] for s in definition["Steps"]] == ["prepare", "train", "evaluate", "quality-gate"]
    steps = steps_by_name(definition)
    gate = steps["quality-gate"]["Arguments"]
    assert gate["Conditions"] == [
        {
            "Type": "GreaterThanOrEqualTo",
            "LeftValue": {
                "Std:JsonGet": {
                    "PropertyFile": {"Get": "Steps.evaluate.PropertyFiles.metrics"},
                    "Path": "accuracy",
                }
            },
            "RightValue": {"Get": "Parameters.threshold"},
        }
    ]
    assert [s["Name"] for s in gate["IfSteps"]] == ["register", "deploy"]
    assert gate["ElseSteps"] == [
        {
            "Name": "fail",
            "Type": "Fail",
            "Arguments": {
                "ErrorMessage": "the model is not accurate enough; nothing was registered or deployed"
            },
        }
    ]
    train = steps["train"]["Arguments"]
    assert train["ProcessingResources"]["ClusterConfig"]["InstanceType"] == "ml.m5.large"
    assert train["AppSpecification"]["ContainerEntrypoint"] == ["python", "-m", "mlshift_sagemaker.step"]
    assert train["AppSpecification"]["ContainerArguments"][-3:] == ["--value", "c", {"Get": "Parameters.c"}]
    dataset = next(i for i in train["ProcessingInputs"] if i["InputName"] == "dataset")
    assert dataset["S3Input"]["S3Uri"] == {
        "Get": "Steps.prepare.ProcessingOutputConfig.Outputs['dataset'].S3Output.S3Uri"
    }
    assert train["StoppingCondition"] == {"MaxRuntimeInSeconds": 1201}  # 600 s, retried once, 1 s apart
    register = steps["register"]["Arguments"]["AppSpecification"]["ContainerArguments"]
    assert register[:2] == ["register", "--target"] and "role_arn=" in register[2]


def test_a_definition_is_validated_before_it_is_sent(client: mlshift.Client, example: Any) -> None:
    good = sagemaker(client).pipelines.compile(example.ir)

    def broken(change: Any) -> dict[str, Any]:
        definition = copy.deepcopy(good)
        change(definition)
        return definition

    cases = [
        (lambda d: d.update(Version="2020-01-01"), "Version must be '2020-12-01'"),
        (lambda d: d["Steps"].append(copy.deepcopy(d["Steps"][0])), "two steps are named 'prepare'"),
        (lambda d: d["Parameters"].pop(), "undeclared parameter 'endpoint'"),
        (lambda d: d["Steps"].pop(0), "unknown step 'prepare'"),
        (lambda d: d["Steps"][2].pop("PropertyFiles"), "does not declare"),
        (lambda d: d["Steps"][0].update(DependsOn=["evaluate"]), "in a cycle: .*prepare"),
        (lambda d: d["Steps"][0].update(Type="Magic"), "unknown type 'Magic'"),
        (lambda d: d["Steps"][0].update(Name="has space"), "is not 1-64 letters"),
        (lambda d: d["Metadata"].update(blob="x" * (1024 * 1024)), "SageMaker takes at most 1048576"),
    ]
    validate_definition(good)
    for change, words in cases:
        with pytest.raises(ConfigError, match=words):
            validate_definition(broken(change))


def test_create_update_and_an_unchanged_pipeline(
    client: mlshift.Client, aws: FakeSageMaker, example: Any
) -> None:
    pipelines = sagemaker(client).pipelines
    arn = pipelines.upsert(example.ir)
    assert arn.endswith(":pipeline/train-gate-deploy")
    assert "CreatePipeline" in aws.operations()
    code = [c.path for c in aws.mutating_calls(service="s3") if "/pipelines/code/" in c.path]
    assert len(code) == 1 and code[0].endswith("/train_gate_deploy.py")
    mark = len(aws.calls)
    assert pipelines.upsert(example.ir) == arn
    assert aws.mutating_calls(since=mark) == []
    stricter = example.ir.model_copy(
        update={
            "params": tuple(
                p.model_copy(update={"default": 0.95}) if p.name == "threshold" else p
                for p in example.ir.params
            )
        }
    )
    pipelines.upsert(stricter)
    assert aws.operations(since=mark, service="sagemaker").count("UpdatePipeline") == 1
    live = json.loads(
        sagemaker(client)
        .clients.client("sagemaker")
        .describe_pipeline(PipelineName="train-gate-deploy")["PipelineDefinition"]
    )
    assert {"Name": "threshold", "Type": "Float", "DefaultValue": 0.95} in live["Parameters"]


def test_submit_follow_and_read_each_step(client: mlshift.Client, aws: FakeSageMaker, example: Any) -> None:
    pipelines = sagemaker(client).pipelines
    run_id = pipelines.submit(example.ir, {"c": 0.5})
    start = next(c for c in aws.calls if c.operation == "StartPipelineExecution")
    assert {"Name": "c", "Value": "0.5"} in (start.params or {})["PipelineParameters"]
    assert pipelines.describe_run(run_id).id == run_id
    done = client.pipelines.get(run_id).wait(timeout=300)
    assert done.status == "succeeded"
    assert [(s.name, s.status) for s in done.steps] == [
        ("prepare", "succeeded"),
        ("train", "succeeded"),
        ("evaluate", "succeeded"),
        ("register", "succeeded"),
        ("deploy", "succeeded"),
        ("fail", "skipped"),
    ]


def test_the_gate_can_stop_the_pipeline(client: mlshift.Client, aws: FakeSageMaker, example: Any) -> None:
    aws.condition_outcome("quality-gate", False)
    run_id = sagemaker(client).pipelines.submit(example.ir)
    done = client.pipelines.get(run_id).wait(timeout=300)
    assert done.status == "failed" and "not accurate enough" in (done.message or "")
    assert done.step("fail").status == "failed"
    assert done.step("register").status == "skipped"


def test_a_failing_step_fails_the_execution_and_nothing_after_it_runs(
    client: mlshift.Client, aws: FakeSageMaker, example: Any
) -> None:
    aws.fail_pipeline_step("train", "AlgorithmError: ValueError: C must be positive")
    run_id = sagemaker(client).pipelines.submit(example.ir, {"c": -1.0})
    done = client.pipelines.get(run_id).wait(timeout=300)
    assert done.status == "failed" and "C must be positive" in (done.message or "")
    assert [s.name for s in done.steps if s.status in ("succeeded", "failed")] == ["prepare", "train"]
    assert done.step("train").status == "failed"
    assert done.step("evaluate").status != "succeeded"


def test_cancel_run(client: mlshift.Client, aws: FakeSageMaker, example: Any) -> None:
    pipelines = sagemaker(client).pipelines
    run_id = pipelines.submit(example.ir)
    pipelines.cancel_run(run_id)
    assert any(c.operation == "StopPipelineExecution" for c in aws.calls)
    assert client.pipelines.get(run_id).wait(timeout=300).status == "cancelled"


def test_parameters_are_checked_against_the_pipeline(
    client: mlshift.Client, aws: FakeSageMaker, example: Any
) -> None:
    with pytest.raises(ConfigError, match="has no parameter 'k'"):
        sagemaker(client).pipelines.submit(example.ir, {"k": 1})
    assert aws.mutating_calls() == []


# ------------------------------------------------------------------------------------------------
# The container side, run here: each step of the compiled definition through
# `python -m mlshift_sagemaker.step`, wired the way SageMaker wires Processing jobs.


class LocalProcessing:
    """Runs a compiled definition's Processing steps in folders, as SageMaker would run them."""

    def __init__(self, definition: dict[str, Any], work: Path, params: dict[str, Any], code: Path) -> None:
        self.steps = steps_by_name(definition)
        self.work = work
        self.params = params
        self.code = code

    def value(self, expr: Any) -> Any:
        if isinstance(expr, str):
            return expr
        if "Get" in expr:
            assert expr["Get"].startswith("Parameters.")
            return str(self.params[expr["Get"].removeprefix("Parameters.")])
        if "Std:JsonGet" in expr:
            source = expr["Std:JsonGet"]["PropertyFile"]["Get"].split(".")  # Steps.X.PropertyFiles.F
            data = json.loads(
                (self.work / source[1] / "output" / "mlshift" / f"{source[3]}.json").read_text()
            )
            return data[expr["Std:JsonGet"]["Path"]]
        raise AssertionError(expr)

    def run(self, name: str, monkeypatch: pytest.MonkeyPatch) -> int:
        from mlshift_sagemaker.step import main

        args = self.steps[name]["Arguments"]
        root = self.work / name
        for inp in args.get("ProcessingInputs", []):
            dest = root / "input" / inp["InputName"]
            uri = inp["S3Input"]["S3Uri"]
            if inp["InputName"] == "code":
                dest.mkdir(parents=True)
                shutil.copy(self.code, dest / self.code.name)
                shutil.move(str(dest), root / "code")
                continue
            producer, output = uri["Get"].split(".")[1], uri["Get"].split("'")[1]
            shutil.copytree(self.work / producer / "output" / output, dest)
        arguments = [str(self.value(a)) for a in args["AppSpecification"]["ContainerArguments"]]
        return main(["--root", str(root), *arguments])


def test_the_compiled_steps_run_their_code_and_register_and_deploy_through_mlshift(
    client: mlshift.Client, aws: FakeSageMaker, example: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    definition = sagemaker(client).pipelines.compile(example.ir)
    params = {"c": 1.0, "label_noise": 0.0, "threshold": 0.9, "endpoint": "iris-pipeline"}
    local = LocalProcessing(definition, tmp_path, params, ROOT / "examples" / "train_gate_deploy.py")
    for name in ("prepare", "train", "evaluate"):
        assert local.run(name, monkeypatch) == 0, name
    accuracy = json.loads((tmp_path / "evaluate" / "output" / "mlshift" / "metrics.json").read_text())[
        "accuracy"
    ]
    assert accuracy >= 0.9  # the gate's LeftValue: it would take the IfSteps
    assert local.run("register", monkeypatch) == 0
    version = client.models.get("iris@champion")
    assert version.metrics == {"accuracy": accuracy} and version.framework == "sklearn"
    outputs = json.loads((tmp_path / "register" / "output" / "mlshift" / "outputs.json").read_text())
    assert outputs == {"version": "iris:1"}
    # The pipeline's lineage tag, as the local runner writes it; the same bytes again reuse the
    # version. (No run tag here: no SageMaker job configuration names an execution.)
    assert version.tags["mlshift:pipeline"] == example.ir.name
    assert "mlshift:run" not in version.tags
    shutil.rmtree(tmp_path / "register")
    assert local.run("register", monkeypatch) == 0
    outputs = json.loads((tmp_path / "register" / "output" / "mlshift" / "outputs.json").read_text())
    assert outputs == {"version": "iris:1"}
    assert [v.version for v in client.models.list("iris")] == ["1"]
    assert local.run("deploy", monkeypatch) == 0
    assert client.endpoints.predict("iris-pipeline", [[5.1, 3.5, 1.4, 0.2]]).predictions == [0]


def test_a_failing_step_function_exits_1_with_the_reason(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    from mlshift_sagemaker.step import main

    (tmp_path / "code").mkdir()
    (tmp_path / "code" / "steps.py").write_text(
        "def boom(x: int) -> None:\n    raise ValueError(f'bad {x}')\n"
    )
    task = {
        "module": "steps",
        "file": "steps.py",
        "qualname": "boom",
        "inputs": {"x": "int"},
        "outputs": {},
        "retries": 1,
        "retry_delay": 0,
    }
    assert main(["--root", str(tmp_path), "python", "--task", json.dumps(task), "--value", "x", "3"]) == 1
    err = capsys.readouterr().err
    assert "attempt 1 failed: ValueError: bad 3; retrying" in err
    assert err.strip().splitlines()[-1] == "step failed: ValueError: bad 3"
