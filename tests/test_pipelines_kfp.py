"""The KFP compiler: the IR → a PipelineSpec KFP's own protobuf accepts, field for field.

Every compiled spec is parsed strictly into ``pipeline_spec_pb2.PipelineSpec`` (unknown fields
fail), and each executor into ``PipelineDeploymentConfig.ExecutorSpec`` (``deploymentSpec`` is a
free-form Struct in the proto, so it is checked on its own). The step entrypoint is run on
executor inputs shaped like KFP's, with artifact URIs that are local folders.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from google.protobuf import json_format
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kfp.pipeline_spec import pipeline_spec_pb2  # kfp-pipeline-spec: the protobuf only, not kfp

import mlshift
from mlshift.errors import ConfigError
from mlshift.pipelines import (
    ContainerStep,
    Deploy,
    Fail,
    InputPath,
    Metrics,
    OutputPath,
    RegisterModel,
    Resources,
    load_pipeline,
    pipeline,
    step,
    when,
)
from mlshift.pipelines._ir import PipelineIR
from mlshift.pipelines.kfp import DEFAULT_IMAGE, SCHEMA_VERSION, code_files, compile_kfp
from mlshift.pipelines.kfp_step import run as run_step

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_gate_deploy.py"
IMAGE = "europe-docker.pkg.dev/acme/ml/mlshift-serving:0.1.0"


def strict(spec: dict[str, Any]) -> Any:
    """Parse the spec as KFP's backend does, refusing any field the proto does not have."""
    message = json_format.ParseDict(spec, pipeline_spec_pb2.PipelineSpec(), ignore_unknown_fields=False)
    for name, executor in spec["deploymentSpec"]["executors"].items():
        json_format.ParseDict(
            executor, pipeline_spec_pb2.PipelineDeploymentConfig.ExecutorSpec(), ignore_unknown_fields=False
        )
        assert message.components[name.replace("exec-", "comp-", 1)].executor_label == name
    check_wiring(spec)
    return message


def check_wiring(spec: dict[str, Any]) -> None:
    """What KFP's driver resolves at run time, checked on the spec: every task's inputs come from
    an input of its DAG or an output its producer's component declares (a task it waits for),
    each DAG is acyclic, and every DAG output names a subtask's declared output."""
    components = spec["components"]

    def outputs_of(task: dict[str, Any], kind: str) -> dict[str, Any]:
        out: dict[str, Any] = (
            components[task["componentRef"]["name"]].get("outputDefinitions", {}).get(kind, {})
        )
        return out

    def visit(component: dict[str, Any], where: str) -> None:
        tasks = component["dag"]["tasks"]
        declared = component.get("inputDefinitions", {})
        for name, task in tasks.items():
            target = components[task["componentRef"]["name"]]
            deps = set(task.get("dependentTasks", []))
            assert deps <= set(tasks) - {name}, (where, name, deps)
            given = task.get("inputs", {})
            for kind, source_key, task_key in (
                ("parameters", "componentInputParameter", "taskOutputParameter"),
                ("artifacts", "componentInputArtifact", "taskOutputArtifact"),
            ):
                wanted = target.get("inputDefinitions", {}).get(kind, {})
                assert set(given.get(kind, {})) == set(wanted), (where, name, kind)
                for spec_ in given.get(kind, {}).values():
                    if source_key in spec_:
                        assert spec_[source_key] in declared.get(kind, {}), (where, name, spec_)
                    elif task_key in spec_:
                        producer = spec_[task_key]["producerTask"]
                        key = spec_[task_key][
                            "outputParameterKey" if kind == "parameters" else "outputArtifactKey"
                        ]
                        assert producer in deps and key in outputs_of(tasks[producer], kind), (
                            where,
                            name,
                            spec_,
                        )
            condition = task.get("triggerPolicy", {}).get("condition", "")
            for channel in re.findall(r"parameter_values\['([^']+)'\]", condition):
                assert channel in given.get("parameters", {}), (where, name, channel)
            if "dag" in target:
                visit(target, task["componentRef"]["name"])
        for kind, selector in (("parameters", "valueFromParameter"), ("artifacts", "artifactSelectors")):
            for out in component["dag"].get("outputs", {}).get(kind, {}).values():
                picked = out[selector] if kind == "parameters" else out[selector][0]
                sub = tasks[picked["producerSubtask"]]
                key = picked["outputParameterKey" if kind == "parameters" else "outputArtifactKey"]
                assert key in outputs_of(sub, kind), (where, picked)
        # Acyclic: Kahn's algorithm over dependentTasks.
        remaining = {n: set(t.get("dependentTasks", [])) for n, t in tasks.items()}
        while remaining:
            ready = [n for n, d in remaining.items() if not d]
            assert ready, (where, "cycle", remaining)
            for n in ready:
                del remaining[n]
            for d in remaining.values():
                d.difference_update(ready)

    visit(spec["root"], "root")


def task_args(spec: dict[str, Any], task: str) -> list[str]:
    args: list[str] = spec["deploymentSpec"]["executors"][f"exec-{task}"]["container"]["args"]
    return args


def task_json(spec: dict[str, Any], task: str) -> dict[str, Any]:
    args = task_args(spec, task)
    data: dict[str, Any] = json.loads(args[args.index("--task") + 1])
    return data


# ------------------------------------------------------------------------------ the example


@pytest.fixture(scope="module")
def example_spec() -> dict[str, Any]:
    ir = load_pipeline(f"{EXAMPLE}:train_gate_deploy").ir
    return compile_kfp(ir, image=IMAGE, target="vertex://acme/europe-west4")


def test_the_example_compiles_to_a_spec_kfp_accepts(example_spec: dict[str, Any]) -> None:
    spec = example_spec
    message = strict(spec)
    assert message.schema_version == SCHEMA_VERSION == "2.1.0"
    assert spec["sdkVersion"] == f"mlshift-{mlshift.__version__}"
    assert spec["pipelineInfo"]["name"] == "train-gate-deploy"
    params = spec["root"]["inputDefinitions"]["parameters"]
    assert params["c"] == {"parameterType": "NUMBER_DOUBLE", "defaultValue": 1.0, "isOptional": True}
    assert params["endpoint"]["parameterType"] == "STRING"
    tasks = spec["root"]["dag"]["tasks"]
    assert set(tasks) == {
        "prepare",
        "train",
        "evaluate",
        "condition-quality-gate",
        "condition-quality-gate-else",
    }
    assert tasks["train"]["dependentTasks"] == ["prepare"]
    assert tasks["evaluate"]["dependentTasks"] == ["prepare", "train"]
    assert tasks["train"]["inputs"]["parameters"]["c"] == {"componentInputParameter": "c"}
    assert tasks["train"]["inputs"]["artifacts"]["dataset"] == {
        "taskOutputArtifact": {"producerTask": "prepare", "outputArtifactKey": "dataset"}
    }
    assert tasks["prepare"]["inputs"]["parameters"]["seed"] == {"runtimeValue": {"constant": 7}}
    assert tasks["train"]["retryPolicy"] == {
        "maxRetryCount": 1,
        "backoffDuration": "1s",
        "backoffFactor": 2.0,
    }
    assert all(tasks[t]["cachingOptions"] == {"enableCache": True} for t in ("prepare", "train", "evaluate"))


def test_the_gate_is_a_condition_sub_dag_with_its_trigger(example_spec: dict[str, Any]) -> None:
    spec = example_spec
    tasks = spec["root"]["dag"]["tasks"]
    gate = tasks["condition-quality-gate"]
    expression = (
        "inputs.parameter_values['pipelinechannel--evaluate-metric-accuracy'] >= "
        "inputs.parameter_values['pipelinechannel--threshold']"
    )
    assert gate["triggerPolicy"] == {"condition": expression}
    assert tasks["condition-quality-gate-else"]["triggerPolicy"] == {"condition": f"!({expression})"}
    assert gate["inputs"]["parameters"]["pipelinechannel--evaluate-metric-accuracy"] == {
        "taskOutputParameter": {"producerTask": "evaluate", "outputParameterKey": "metric-accuracy"}
    }
    assert gate["inputs"]["parameters"]["pipelinechannel--threshold"] == {
        "componentInputParameter": "threshold"
    }
    # The model goes into the sub-DAG as an artifact channel, and on to register.
    assert gate["inputs"]["artifacts"]["pipelinechannel--train-model"] == {
        "taskOutputArtifact": {"producerTask": "train", "outputArtifactKey": "model"}
    }
    assert "evaluate" in gate["dependentTasks"] and "train" in gate["dependentTasks"]
    inner = spec["components"]["comp-condition-quality-gate"]
    assert set(inner["dag"]["tasks"]) == {"register", "deploy"}
    register = inner["dag"]["tasks"]["register"]
    assert register["inputs"]["artifacts"]["artifact"] == {
        "componentInputArtifact": "pipelinechannel--train-model"
    }
    assert register["inputs"]["parameters"]["metrics"] == {
        "componentInputParameter": "pipelinechannel--evaluate-all-metrics"
    }
    deploy = inner["dag"]["tasks"]["deploy"]
    assert deploy["dependentTasks"] == ["register"]
    assert deploy["inputs"]["parameters"]["model"] == {
        "taskOutputParameter": {"producerTask": "register", "outputParameterKey": "version"}
    }
    assert deploy["inputs"]["parameters"]["endpoint"] == {
        "componentInputParameter": "pipelinechannel--endpoint"
    }
    other = spec["components"]["comp-condition-quality-gate-else"]
    assert set(other["dag"]["tasks"]) == {"fail"}
    assert other["dag"]["tasks"]["fail"]["cachingOptions"] == {"enableCache": False}


def test_steps_run_the_mlshift_image_with_their_definition(example_spec: dict[str, Any]) -> None:
    spec = example_spec
    container = spec["deploymentSpec"]["executors"]["exec-train"]["container"]
    assert container["image"] == IMAGE
    assert container["command"] == ["python", "-m", "mlshift.pipelines.kfp_step"]
    assert container["args"][:3] == ["python", "--executor-input", "{{$}}"]
    assert container["resources"]["resourceCpuLimit"] == "2"
    assert container["resources"]["resourceMemoryLimit"] == "8Gi"
    task = task_json(spec, "train")
    ir = load_pipeline(f"{EXAMPLE}:train_gate_deploy").ir
    assert task["hash"] == ir.step("train").hash
    assert task["timeout"] == 600.0
    assert task["source"]["file"] == "train_gate_deploy.py"
    assert task["source"]["text"] == EXAMPLE.read_text()
    assert task_json(spec, "register")["target"] == "vertex://acme/europe-west4"
    assert task_json(spec, "register")["settings"] == {"alias": "champion"}
    assert task_args(spec, "fail")[:2] == ["fail", "--message"]
    outputs = spec["components"]["comp-evaluate"]["outputDefinitions"]
    assert outputs["parameters"]["metric-accuracy"] == {"parameterType": "NUMBER_DOUBLE"}
    assert outputs["parameters"]["all-metrics"] == {"parameterType": "STRUCT"}
    assert outputs["artifacts"]["metrics-report"]["artifactType"]["schemaTitle"] == "system.Metrics"


def test_compiling_is_deterministic_and_json_ready(example_spec: dict[str, Any]) -> None:
    ir = load_pipeline(f"{EXAMPLE}:train_gate_deploy").ir
    again = compile_kfp(ir, image=IMAGE, target="vertex://acme/europe-west4")
    assert json.dumps(again, sort_keys=True) == json.dumps(example_spec, sort_keys=True)


def test_with_code_uri_steps_read_their_source_from_there() -> None:
    ir = load_pipeline(f"{EXAMPLE}:train_gate_deploy").ir
    spec = compile_kfp(ir, image=IMAGE, target="local://", code_uri="gs://acme-ml/code/")
    strict(spec)
    files = code_files(ir)
    assert list(files.values()) == [EXAMPLE.read_bytes()]
    (key,) = files
    assert task_json(spec, "train")["source"] == {
        "file": "train_gate_deploy.py",
        "uri": f"gs://acme-ml/code/{key}",
    }


# ------------------------------------------------------------------------------ every feature


@step
def make_data(
    out: OutputPath, rows: int = 10, name: str = "x", shuffle: bool = False, ratio: float = 0.5
) -> None:
    out.mkdir()
    (out / "rows.txt").write_text(f"{name},{rows},{shuffle},{ratio}")


@step
def label(data: InputPath) -> str:
    return data.name


@step(
    metrics=["auc", "val.loss"], resources=Resources(size="gpu-small", gpus=2), cache=False, env={"MODE": "x"}
)
def score(data: InputPath, tag: str) -> Metrics:
    return {"auc": 0.9, "val.loss": 0.1}


@step
def count(data: InputPath) -> int:
    return 3


@step
def publish(summary: Metrics, tag: str, n: float) -> None:
    pass


@step
def notify(tag: str) -> None:
    pass


@pipeline
def everything(
    rows: int, name: str = "iris", shuffle: bool = True, ratio: float = 0.25, mode: str = "full"
) -> None:
    data = make_data(rows=rows, name=name, shuffle=shuffle, ratio=ratio)
    tag = label(data=data.outputs["out"])
    fit = ContainerStep(
        "fit",
        "python:3.11",
        ["python", "fit.py"],
        [
            "--data",
            "{{inputs.data}}",
            "--n",
            "{{inputs.n}}",
            "--model",
            "{{outputs.model}}",
            "-m={{metrics}}",
        ],
        inputs={"data": data.outputs["out"], "n": rows},
        outputs={"model": "artifact", "note": "str"},
        metrics=["acc"],
        env={"A": "1"},
    )
    scores = score(data=fit.outputs["model"], tag=tag.output)
    n = count(data=data.outputs["out"])
    with when(scores.metrics["auc"] >= 0.8, name="good") as good:
        with when(n.output > 2, name="enough"):
            publish(summary=fit.metrics, tag=tag.output, n=ratio)
        with when(name == "iris", name="is-iris"):
            notify(tag="iris").after(n)
    with good.otherwise():
        Fail("auc too low")
    with when(mode != "dry", name="live"):
        notify.options(name="notify-live")(tag=tag.output)


@pytest.fixture(scope="module")
def everything_spec() -> dict[str, Any]:
    return compile_kfp(everything.ir, image=IMAGE)


def test_every_parameter_type_maps_to_a_kfp_type(everything_spec: dict[str, Any]) -> None:
    strict(everything_spec)
    params = everything_spec["root"]["inputDefinitions"]["parameters"]
    assert params == {
        "rows": {"parameterType": "NUMBER_INTEGER", "isOptional": False},
        "name": {"parameterType": "STRING", "defaultValue": "iris", "isOptional": True},
        "shuffle": {"parameterType": "BOOLEAN", "defaultValue": True, "isOptional": True},
        "ratio": {"parameterType": "NUMBER_DOUBLE", "defaultValue": 0.25, "isOptional": True},
        "mode": {"parameterType": "STRING", "defaultValue": "full", "isOptional": True},
    }
    inputs = everything_spec["components"]["comp-make-data"]["inputDefinitions"]["parameters"]
    assert {k: v["parameterType"] for k, v in inputs.items()} == {
        "rows": "NUMBER_INTEGER",
        "name": "STRING",
        "shuffle": "BOOLEAN",
        "ratio": "NUMBER_DOUBLE",
    }


def test_container_steps_keep_their_image_with_kfp_placeholders(everything_spec: dict[str, Any]) -> None:
    container = everything_spec["deploymentSpec"]["executors"]["exec-fit"]["container"]
    assert container["image"] == "python:3.11"
    assert container["command"] == ["python", "fit.py"]
    assert container["args"] == [
        "--data",
        "{{$.inputs.artifacts['data'].path}}",
        "--n",
        "{{$.inputs.parameters['n']}}",
        "--model",
        "{{$.outputs.artifacts['model'].path}}",
        "-m={{$.outputs.parameters['all-metrics'].output_file}}",
    ]
    assert container["env"] == [{"name": "A", "value": "1"}]
    outputs = everything_spec["components"]["comp-fit"]["outputDefinitions"]
    assert outputs["parameters"] == {
        "note": {"parameterType": "STRING"},
        "all-metrics": {"parameterType": "STRUCT"},
    }
    assert set(outputs["artifacts"]) == {"model"}


def test_resources_caching_env_and_scalar_outputs(everything_spec: dict[str, Any]) -> None:
    spec = everything_spec
    container = spec["deploymentSpec"]["executors"]["exec-score"]["container"]
    assert container["resources"]["resourceCpuLimit"] == "4"
    assert container["resources"]["resourceMemoryLimit"] == "16Gi"
    assert container["resources"]["accelerator"]["resourceType"] == "nvidia.com/gpu"
    assert container["resources"]["accelerator"]["resourceCount"] == "2"
    assert container["env"] == [{"name": "MODE", "value": "x"}]
    tasks = spec["root"]["dag"]["tasks"]
    assert tasks["score"]["cachingOptions"] == {"enableCache": False}
    assert tasks["score"]["inputs"]["parameters"]["tag"] == {
        "taskOutputParameter": {"producerTask": "label", "outputParameterKey": "output"}
    }
    assert spec["components"]["comp-count"]["outputDefinitions"]["parameters"]["output"] == {
        "parameterType": "NUMBER_INTEGER"
    }
    metrics = spec["components"]["comp-score"]["outputDefinitions"]["parameters"]
    assert {"metric-auc", "metric-val.loss", "all-metrics"} <= set(metrics)


def test_nested_and_parallel_gates_nest_sub_dags(everything_spec: dict[str, Any]) -> None:
    spec = everything_spec
    tasks = spec["root"]["dag"]["tasks"]
    assert {"condition-good", "condition-good-else", "condition-live"} <= set(tasks)
    assert tasks["condition-live"]["triggerPolicy"]["condition"] == (
        "inputs.parameter_values['pipelinechannel--mode'] != 'dry'"
    )
    good = spec["components"]["comp-condition-good"]["dag"]["tasks"]
    assert set(good) == {"condition-enough", "condition-is-iris"}
    assert good["condition-enough"]["triggerPolicy"]["condition"] == (
        "int(inputs.parameter_values['pipelinechannel--count-output']) > 2"
    )
    assert good["condition-is-iris"]["triggerPolicy"]["condition"] == (
        "inputs.parameter_values['pipelinechannel--name'] == 'iris'"
    )
    # count's output crosses into condition-good, then into condition-enough.
    assert tasks["condition-good"]["inputs"]["parameters"]["pipelinechannel--count-output"] == {
        "taskOutputParameter": {"producerTask": "count", "outputParameterKey": "output"}
    }
    assert good["condition-enough"]["inputs"]["parameters"]["pipelinechannel--count-output"] == {
        "componentInputParameter": "pipelinechannel--count-output"
    }
    publish_task = spec["components"]["comp-condition-enough"]["dag"]["tasks"]["publish"]
    assert publish_task["inputs"]["parameters"] == {
        "n": {"componentInputParameter": "pipelinechannel--ratio"},
        "summary": {"componentInputParameter": "pipelinechannel--fit-all-metrics"},
        "tag": {"componentInputParameter": "pipelinechannel--label-output"},
    }
    # after(n): count is outside the sub-DAG, so the sub-DAG's task waits for it.
    assert "count" in tasks["condition-good"]["dependentTasks"]
    assert "notify-live" in spec["components"]["comp-condition-live"]["dag"]["tasks"]


def test_unnamed_gates_keep_their_ids_as_sub_dag_names() -> None:
    @pipeline
    def unnamed(threshold: float = 0.5) -> None:
        scores = score(data=make_data().outputs["out"], tag="t")
        with when(scores.metrics["val.loss"] < threshold) as gate:
            notify(tag="ok")
        with gate.otherwise():
            Fail("loss too high")

    spec = compile_kfp(unnamed.ir, image=IMAGE)
    strict(spec)
    tasks = spec["root"]["dag"]["tasks"]
    assert {"condition-1", "condition-1-else"} <= set(tasks)
    assert tasks["condition-1"]["triggerPolicy"]["condition"] == (
        "inputs.parameter_values['pipelinechannel--score-metric-val.loss'] < "
        "inputs.parameter_values['pipelinechannel--threshold']"
    )


def test_a_step_fed_by_a_gated_step_sits_under_the_same_gate() -> None:
    @pipeline
    def downstream(threshold: float = 0.5) -> None:
        data = make_data()
        scores = score(data=data.outputs["out"], tag="t")
        with when(scores.metrics["auc"] >= threshold, name="gate"):
            n = count(data=data.outputs["out"])
        notify(tag="x").after(n)  # on the local runner: skipped when count did not run

    spec = compile_kfp(downstream.ir, image=IMAGE)
    strict(spec)
    assert set(spec["root"]["dag"]["tasks"]) == {"make-data", "score", "condition-gate"}
    inner = spec["components"]["comp-condition-gate"]["dag"]["tasks"]
    assert set(inner) == {"count", "notify"}
    assert inner["notify"]["dependentTasks"] == ["count"]


def test_an_output_passes_down_into_nested_sub_dags() -> None:
    @pipeline
    def crossing(threshold: float = 0.5, ok: bool = True) -> None:
        data = make_data()
        scores = score(data=data.outputs["out"], tag="t")
        with when(ok == True, name="first"):  # noqa: E712 - a condition, not a comparison
            n = count(data=data.outputs["out"])
        with when(scores.metrics["auc"] >= threshold, name="second"):
            publish(summary=scores.metrics, tag="t", n=n.output)

    spec = compile_kfp(crossing.ir, image=IMAGE)
    strict(spec)
    first = spec["components"]["comp-condition-first"]
    # publish sits under both gates: first → second; count's output is passed down inside
    # condition-first. Nothing is exported when the consumer is nested inside the producer's DAG.
    assert set(first["dag"]["tasks"]) == {"count", "condition-second"}
    inner = first["dag"]["tasks"]["condition-second"]
    assert inner["inputs"]["parameters"]["pipelinechannel--count-output"] == {
        "taskOutputParameter": {"producerTask": "count", "outputParameterKey": "output"}
    }
    assert spec["root"]["dag"]["tasks"]["condition-first"]["triggerPolicy"]["condition"] == (
        "inputs.parameter_values['pipelinechannel--ok'] == true"
    )


def test_an_output_exported_from_a_sibling_sub_dag() -> None:
    # The consumer is gated on "a" and "b" (defined in that order); its producer only on "b":
    # the value comes out of condition-b through a DAG output, then into condition-a.
    ir = everything.ir.model_dump(mode="json")
    spec_ir = {
        "name": "sibling",
        "params": [{"name": "x", "type": "int", "default": 1}],
        "conditions": [
            {"id": "a", "left": {"param": "x"}, "op": ">", "right": {"value": 0}},
            {"id": "b", "left": {"param": "x"}, "op": "<", "right": {"value": 5.5}},
        ],
        "steps": [
            {**_python_step(ir, "count", "make"), "inputs": {}, "when": [{"condition": "b"}]},
            {
                **_python_step(ir, "notify", "use"),
                "inputs": {"tag": {"type": "str", "step": "make", "output": "output"}},
                "when": [{"condition": "a"}],
            },
        ],
        "edges": [{"source": "make", "target": "use", "kind": "data"}],
    }
    spec_ir["steps"][0]["outputs"] = {"output": {"type": "str"}}
    from mlshift.pipelines._ir import build_ir

    spec = compile_kfp(build_ir(spec_ir), image=IMAGE)
    strict(spec)
    root = spec["root"]["dag"]["tasks"]
    assert set(root) == {"condition-a", "condition-b"}
    assert root["condition-a"]["dependentTasks"] == ["condition-b"]
    assert root["condition-a"]["inputs"]["parameters"]["pipelinechannel--make-output"] == {
        "taskOutputParameter": {
            "producerTask": "condition-b",
            "outputParameterKey": "pipelinechannel--make-output",
        }
    }
    assert spec["components"]["comp-condition-b"]["dag"]["outputs"]["parameters"] == {
        "pipelinechannel--make-output": {
            "valueFromParameter": {"producerSubtask": "make", "outputParameterKey": "output"}
        }
    }
    # x is an int compared with a float literal: both sides as doubles.
    assert root["condition-b"]["triggerPolicy"]["condition"] == (
        "double(inputs.parameter_values['pipelinechannel--x']) < 5.5"
    )
    assert root["condition-a"]["triggerPolicy"]["condition"] == (
        "int(inputs.parameter_values['pipelinechannel--x']) > 0"
    )
    assert set(spec["components"]["comp-condition-a"]["dag"]["tasks"]) == {"condition-b-2"}


def _python_step(ir: dict[str, Any], like: str, name: str) -> dict[str, Any]:
    base = next(s for s in ir["steps"] if s["name"] == like)
    return {k: v for k, v in base.items() if k not in ("hash", "after")} | {"name": name, "when": []}


def test_ir_with_its_steps_out_of_order_compiles_the_same() -> None:
    data = load_pipeline(f"{EXAMPLE}:train_gate_deploy").ir.model_dump(mode="json")
    # The pipeline hash covers the order; the step hashes still hold.
    shuffled = PipelineIR.model_validate({**data, "steps": list(reversed(data["steps"])), "hash": ""})
    ordered = PipelineIR.model_validate(data)
    assert compile_kfp(shuffled, image=IMAGE, target="local://") == compile_kfp(
        ordered, image=IMAGE, target="local://"
    )


def test_a_500_step_pipeline_compiles() -> None:
    steps = [{**_python_step(everything.ir.model_dump(mode="json"), "notify", "s0"), "inputs": {}}]
    steps[0]["inputs"] = {"tag": {"type": "str", "value": "x"}}
    for i in range(1, 500):
        s = dict(steps[0], name=f"s{i}", after=[f"s{i - 1}"])
        steps.append(s)
    from mlshift.pipelines._ir import build_ir

    edges = [{"source": f"s{i - 1}", "target": f"s{i}", "kind": "order"} for i in range(1, 500)]
    spec = compile_kfp(build_ir({"name": "long", "steps": steps, "edges": edges}), image=IMAGE)
    strict(spec)
    tasks = spec["root"]["dag"]["tasks"]
    assert len(tasks) == 500 and len(spec["deploymentSpec"]["executors"]) == 500
    assert tasks["s499"]["dependentTasks"] == ["s498"]


# ------------------------------------------------------------------------------ refusals


def _ir_with(**changes: Any) -> PipelineIR:
    data = load_pipeline(f"{EXAMPLE}:train_gate_deploy").ir.model_dump(mode="json")
    for step_name, update in changes.items():
        for s in data["steps"]:
            if s["name"] == step_name:
                s.update(update)
    from mlshift.pipelines._ir import build_ir

    return build_ir(data)


def test_secrets_are_refused_naming_the_step() -> None:
    with pytest.raises(ConfigError) as exc:
        compile_kfp(_ir_with(train={"secrets": {"TOKEN": "hf-token"}}), image=IMAGE, target="local://")
    assert exc.value.field == "steps.train.secrets"
    assert "step 'train'" in str(exc.value) and "secrets" in str(exc.value)
    assert "hf-token" not in str(exc.value)


def test_register_and_deploy_need_a_target() -> None:
    ir = load_pipeline(f"{EXAMPLE}:train_gate_deploy").ir
    with pytest.raises(ConfigError) as exc:
        compile_kfp(ir, image=IMAGE)
    assert exc.value.field == "steps.register.register_model.target"
    assert "step 'register'" in str(exc.value)


def test_a_step_s_own_target_wins_over_the_compile_target() -> None:
    @pipeline
    def ship() -> None:
        data = make_data()
        version = RegisterModel(
            data.outputs["out"], model="m", target="sagemaker://eu-west-1", framework="onnx"
        )
        Deploy(version.outputs["version"], endpoint="e", traffic=10, replicas=2)

    spec = compile_kfp(ship.ir, image=IMAGE, target="local:///srv/mlshift")
    strict(spec)
    register = task_json(spec, "register")
    assert register["target"] == "sagemaker://eu-west-1"
    assert register["settings"] == {"framework": "onnx"}
    deploy = task_json(spec, "deploy")
    assert deploy["target"] == "local:///srv/mlshift"
    assert deploy["settings"] == {"traffic": 10, "size": "cpu-small", "replicas": 2}
    assert spec["root"]["dag"]["tasks"]["deploy"]["dependentTasks"] == ["register"]


def test_a_missing_source_file_is_refused_naming_the_step(tmp_path: Path) -> None:
    data = load_pipeline(f"{EXAMPLE}:train_gate_deploy").ir.model_dump(mode="json")
    for s in data["steps"]:
        if s.get("python"):
            s["python"]["file"] = str(tmp_path / "gone.py")  # not part of the hash
    ir = PipelineIR.model_validate(data)
    with pytest.raises(ConfigError) as exc:
        compile_kfp(ir, image=IMAGE, target="local://")
    assert exc.value.field == "steps.prepare.python.file"


def test_container_timeouts_and_single_container_metrics_are_refused() -> None:
    @pipeline
    def timed() -> None:
        ContainerStep("fit", "python:3.11", ["python", "fit.py"], timeout=60)

    with pytest.raises(ConfigError) as exc:
        compile_kfp(timed.ir, image=IMAGE)
    assert exc.value.field == "steps.fit.timeout"

    @pipeline
    def gated() -> None:
        fit = ContainerStep("fit", "python:3.11", ["python", "fit.py"], ["{{metrics}}"], metrics=["acc"])
        with when(fit.metrics["acc"] > 0.5):
            notify(tag="ok")

    with pytest.raises(ConfigError) as exc:
        compile_kfp(gated.ir, image=IMAGE)
    assert exc.value.field == "steps.fit.metrics"
    assert "container step 'fit'" in str(exc.value)


def test_task_names_that_collide_in_lower_case_are_refused() -> None:
    @pipeline
    def cased() -> None:
        notify(tag="a")
        ContainerStep("Notify", "busybox", ["true"])

    with pytest.raises(ConfigError) as exc:
        compile_kfp(cased.ir, image=IMAGE)
    assert exc.value.field == "steps.Notify"
    assert "'notify'" in str(exc.value)


def test_a_bad_image_is_refused() -> None:
    with pytest.raises(ConfigError) as exc:
        compile_kfp(everything.ir, image="not an image")
    assert exc.value.field == "image"


# ------------------------------------------------------------------------------ the step entrypoint


def _executor_input(
    spec: dict[str, Any], task: str, root: Path, params: dict[str, Any], artifacts: dict[str, Path]
) -> dict[str, Any]:
    """What KFP's launcher hands a task: values, artifact URIs, where outputs go."""
    component = spec["components"][f"comp-{task}"]
    outputs = component.get("outputDefinitions", {})
    out_dir = root / task
    return {
        "inputs": {
            "parameterValues": params,
            "artifacts": {
                k: {"artifacts": [{"name": k, "uri": str(v), "metadata": {}}]} for k, v in artifacts.items()
            },
        },
        "outputs": {
            "parameters": {
                k: {"outputFile": str(out_dir / "parameters" / k)} for k in outputs.get("parameters", {})
            },
            "artifacts": {
                k: {"artifacts": [{"name": k, "uri": str(out_dir / "artifacts" / k), "metadata": {}}]}
                for k in outputs.get("artifacts", {})
            },
            "outputFile": str(out_dir / "executor_output.json"),
        },
    }


def _run(spec: dict[str, Any], task: str, executor_input: dict[str, Any]) -> dict[str, Any]:
    args = [json.dumps(executor_input) if a == "{{$}}" else a for a in task_args(spec, task)]
    failure = run_step(args)
    assert failure is None, failure
    output: dict[str, Any] = json.loads(Path(executor_input["outputs"]["outputFile"]).read_text())
    return output


def test_the_compiled_steps_run_through_the_entrypoint(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    pytest.importorskip("skops")
    state = tmp_path / "state"
    ir = load_pipeline(f"{EXAMPLE}:train_gate_deploy").ir
    spec = compile_kfp(ir, image=IMAGE, target=f"local://{state}")
    runs = tmp_path / "runs"
    _run(
        spec,
        "prepare",
        _executor_input(spec, "prepare", runs, {"test_size": 0.3, "seed": 7.0, "label_noise": 0.0}, {}),
    )
    dataset = runs / "prepare" / "artifacts" / "dataset"
    assert sorted(p.name for p in (dataset / "dataset").iterdir()) == ["test.csv", "train.csv"]
    _run(spec, "train", _executor_input(spec, "train", runs, {"c": 1.0}, {"dataset": dataset}))
    model = runs / "train" / "artifacts" / "model"
    assert [p.name for p in model.iterdir()] == ["model.skops"]
    out = _run(
        spec, "evaluate", _executor_input(spec, "evaluate", runs, {}, {"dataset": dataset, "model": model})
    )
    accuracy = out["parameterValues"]["metric-accuracy"]
    assert 0.9 <= accuracy <= 1.0
    assert out["parameterValues"]["all-metrics"] == {"accuracy": accuracy}
    assert out["artifacts"]["metrics-report"]["artifacts"][0]["metadata"] == {"accuracy": accuracy}
    assert json.loads((runs / "evaluate" / "parameters" / "metric-accuracy").read_text()) == accuracy
    out = _run(
        spec,
        "register",
        _executor_input(
            spec, "register", runs, {"model": "iris", "metrics": {"accuracy": accuracy}}, {"artifact": model}
        ),
    )
    assert out["parameterValues"]["version"] == "iris:1"
    with mlshift.connect(f"local://{state}") as client:
        version = client.models.get("iris@champion")
        assert version.version == "1" and version.metrics == {"accuracy": accuracy}


def test_a_fail_step_exits_with_its_message(capsys: pytest.CaptureFixture[str]) -> None:
    from mlshift.pipelines.kfp_step import main

    assert main(["fail", "--message", "auc too low"]) == 1
    assert capsys.readouterr().err.strip().splitlines()[-1] == "step failed: StepFailed: auc too low"


def test_a_step_past_its_timeout_fails(tmp_path: Path) -> None:
    source = "def slow():\n    import time\n    time.sleep(30)\n"
    task = {
        "module": "slowstep",
        "qualname": "slow",
        "inputs": {},
        "outputs": {},
        "timeout": 0.2,
        "source": {"file": "slowstep.py", "text": source},
    }
    executor_input = {"outputs": {"outputFile": str(tmp_path / "out.json")}}
    failure = run_step(["python", "--executor-input", json.dumps(executor_input), "--task", json.dumps(task)])
    sys.modules.pop("slowstep", None)
    assert failure is not None and "TimeoutError" in failure and "timeout of 0.2 s" in failure


# ------------------------------------------------------------------------------ the command line


def _mlshift(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "NO_COLOR": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.run(
        [sys.executable, "-m", "mlshift", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_cli_writes_kfp_yaml_or_json(tmp_path: Path) -> None:
    ref = f"{EXAMPLE}:train_gate_deploy"
    shown = _mlshift(
        "pipelines", "compile", ref, "--format", "kfp", "--target", "local:///srv/ml", cwd=tmp_path
    )
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("# PIPELINE DEFINITION\n# Name: train-gate-deploy\n")
    spec = yaml.safe_load(shown.stdout)
    strict(spec)
    assert spec["deploymentSpec"]["executors"]["exec-train"]["container"]["image"] == DEFAULT_IMAGE
    assert task_json(spec, "deploy")["target"] == "local:///srv/ml"
    written = _mlshift(
        "pipelines",
        "compile",
        ref,
        "--format",
        "kfp",
        "-t",
        "local://",
        "--image",
        IMAGE,
        "-o",
        "spec.json",
        cwd=tmp_path,
    )
    assert written.returncode == 0, written.stderr
    spec = json.loads((tmp_path / "spec.json").read_text())
    strict(spec)
    assert spec["deploymentSpec"]["executors"]["exec-train"]["container"]["image"] == IMAGE


def test_the_cli_names_what_is_missing(tmp_path: Path) -> None:
    ref = f"{EXAMPLE}:train_gate_deploy"
    failed = _mlshift("pipelines", "compile", ref, "--format", "kfp", cwd=tmp_path)
    assert failed.returncode == 1 and failed.stdout == ""
    assert "step 'register'" in failed.stderr and "--target" in failed.stderr
    failed = _mlshift("pipelines", "compile", ref, "--format", "argo", cwd=tmp_path)
    assert failed.returncode == 1 and "unknown --format 'argo'" in failed.stderr


def test_scalar_outputs_and_missing_metrics_through_the_entrypoint(tmp_path: Path) -> None:
    spec = compile_kfp(everything.ir, image=IMAGE)
    runs = tmp_path / "runs"
    out = _run(
        spec,
        "make-data",
        _executor_input(
            spec, "make-data", runs, {"rows": 5.0, "name": "iris", "shuffle": True, "ratio": 0.25}, {}
        ),
    )
    data = runs / "make-data" / "artifacts" / "out"
    assert (data / "out" / "rows.txt").read_text() == "iris,5,True,0.25"
    assert out["parameterValues"] == {}
    out = _run(spec, "label", _executor_input(spec, "label", runs, {}, {"data": data}))
    assert out["parameterValues"] == {"output": "out"}
    assert (runs / "label" / "parameters" / "output").read_text() == "out"
    out = _run(spec, "count", _executor_input(spec, "count", runs, {}, {"data": data}))
    assert out["parameterValues"] == {"output": 3}
    # A step that declares a metric and does not return it fails, saying which.
    args = task_args(spec, "score")
    task = json.loads(args[args.index("--task") + 1])
    task["metrics"] = ["auc", "f1"]
    executor_input = _executor_input(spec, "score", runs, {"tag": "t"}, {"data": data})
    failure = run_step(["python", "--executor-input", json.dumps(executor_input), "--task", json.dumps(task)])
    assert failure == "StepFailed: the step declares metric 'f1' but did not return it"


def test_compiling_imports_neither_kfp_nor_protobuf(tmp_path: Path) -> None:
    code = (
        "import json, sys\n"
        "from mlshift.pipelines import load_pipeline\n"
        "from mlshift.pipelines.kfp import compile_kfp, to_yaml\n"
        f"spec = compile_kfp(load_pipeline({str(EXAMPLE) + ':train_gate_deploy'!r}).ir, target='local://')\n"
        "to_yaml(spec)\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('kfp', 'google'))))"
    )
    # Empty `google` namespace modules that a `*-nspkg.pth` file (google-cloud wheels) makes at
    # interpreter start are not the compiler's doing; protobuf or kfp would add more than those.
    at_start = (
        "import json, sys\nprint(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] == 'google')))"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    bare = subprocess.run(
        [sys.executable, "-c", at_start], env=env, capture_output=True, text=True, timeout=120
    )
    preloaded = set(json.loads(bare.stdout.strip().splitlines()[-1]))
    assert sorted(set(json.loads(proc.stdout.strip().splitlines()[-1])) - preloaded) == []


# ------------------------------------------------------------------------------ random graphs


@st.composite
def gated_graphs(draw: st.DrawFn) -> dict[str, Any]:
    """Random DAGs of python steps passing values, artifacts and metrics, under random gates."""
    python = everything.ir.step("count").model_dump(mode="json")["python"]
    n = draw(st.integers(2, 9))
    conditions: list[dict[str, Any]] = []
    measured: dict[str, int] = {}  # condition id -> the step it measures
    for c in range(draw(st.integers(0, 3))):
        on = draw(st.integers(0, n - 2))
        right = draw(st.sampled_from([{"value": 0.5}, {"param": "x"}, {"value": 1}]))
        conditions.append(
            {"id": f"g{c}", "left": {"step": f"s{on}", "metric": "m"}, "op": ">=", "right": right}
        )
        measured[f"g{c}"] = on
    steps: list[dict[str, Any]] = []
    edges: set[tuple[str, str, str]] = set()
    for i in range(n):
        inputs: dict[str, Any] = {}
        for j in draw(st.sets(st.integers(0, max(i - 1, 0)), max_size=3)) if i else ():
            kind = draw(st.sampled_from(["str", "artifact", "metric", "metrics"]))
            if kind == "str":
                inputs[f"v{j}"] = {"type": "str", "step": f"s{j}", "output": "o"}
            elif kind == "artifact":
                inputs[f"a{j}"] = {"type": "artifact", "step": f"s{j}", "output": "a"}
            elif kind == "metric":
                inputs[f"m{j}"] = {"type": "float", "step": f"s{j}", "metric": "m"}
            else:
                inputs[f"all{j}"] = {"type": "metrics", "step": f"s{j}"}
            edges.add((f"s{j}", f"s{i}", "data"))
        inputs["p"] = {"type": "int", "param": "x"}
        after = sorted(f"s{j}" for j in draw(st.sets(st.integers(0, max(i - 1, 0)), max_size=2)) if i)
        edges |= {(a, f"s{i}", "order") for a in after}
        usable = [c for c, on in measured.items() if on < i]
        when = (
            [
                {"condition": c, "branch": draw(st.booleans())}
                for c in draw(st.sets(st.sampled_from(usable)))
                if usable
            ]
            if usable
            else []
        )
        edges |= {(f"s{measured[w['condition']]}", f"s{i}", "condition") for w in when}
        steps.append(
            {
                "name": f"s{i}",
                "kind": "python",
                "inputs": inputs,
                "outputs": {"o": {"type": "str"}, "a": {"type": "artifact"}},
                "metrics": ["m"],
                "after": after,
                "when": when,
                "python": python,
            }
        )
    return {
        "name": "random",
        "params": [{"name": "x", "type": "int", "default": 1}],
        "conditions": conditions,
        "steps": steps,
        "edges": [{"source": s, "target": t, "kind": k} for s, t, k in sorted(edges)],
    }


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(gated_graphs())
def test_random_gated_graphs_compile_to_wired_specs(data: dict[str, Any]) -> None:
    from mlshift.pipelines._ir import build_ir

    ir = build_ir(data)
    spec = compile_kfp(ir, image=IMAGE)
    strict(spec)  # includes check_wiring
    # Every step is a task exactly once, in the sub-DAG of all the gates it is under: its own,
    # and those of every step it depends on (as on the local runner, where it is skipped when
    # one of them did not run).
    placed: dict[str, str] = {}
    parent: dict[str, str] = {}
    for name, component in [("root", spec["root"]), *spec["components"].items()]:
        for task, task_spec in component.get("dag", {}).get("tasks", {}).items():
            if task.startswith("condition-"):
                parent[task_spec["componentRef"]["name"]] = name
            else:
                assert task not in placed
                placed[task] = name
    assert set(placed) == {s.name for s in ir.steps}

    def gates_above(component: str) -> set[tuple[str, bool]]:
        out: set[tuple[str, bool]] = set()
        while component != "root":
            match = re.fullmatch(r"comp-condition-(g\d+)(-else)?(-\d+)?", component)
            assert match, component
            out.add((match.group(1), match.group(2) is None))
            component = parent[component]
        return out

    expected: dict[str, set[tuple[str, bool]]] = {}
    for s in ir.steps:
        mine = {(w.condition, w.branch) for w in s.when}
        for e in ir.edges:
            if e.target == s.name:
                mine |= expected[e.source]
        expected[s.name] = mine
        assert gates_above(placed[s.name]) == mine, s.name


def test_an_optional_parameter_without_default_and_a_long_description_are_refused() -> None:
    data = load_pipeline(f"{EXAMPLE}:train_gate_deploy").ir.model_dump(mode="json")
    data["params"][0] = {"name": "c", "type": "float", "default": None, "required": False}
    data["hash"] = ""
    with pytest.raises(ConfigError) as exc:
        compile_kfp(PipelineIR.model_validate(data), image=IMAGE, target="local://")
    assert exc.value.field == "params.c"
    data = load_pipeline(f"{EXAMPLE}:train_gate_deploy").ir.model_dump(mode="json")
    data["description"] = "x" * 1025
    with pytest.raises(ConfigError) as exc:
        compile_kfp(PipelineIR.model_validate(data), image=IMAGE, target="local://")
    assert exc.value.field == "description"


def test_the_entrypoint_runs_as_a_module_and_exits_1_on_failure(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.run(
        [sys.executable, "-m", "mlshift.pipelines.kfp_step", "fail", "--message", "stop here"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1
    assert proc.stderr.strip().splitlines()[-1] == "step failed: StepFailed: stop here"


def test_string_literals_in_conditions_are_escaped_for_cel() -> None:
    @pipeline
    def quoted(name: str = "x") -> None:
        with when(name == "it's a \\\\ path", name="odd"):
            notify(tag="t")

    spec = compile_kfp(quoted.ir, image=IMAGE)
    strict(spec)
    condition = spec["root"]["dag"]["tasks"]["condition-odd"]["triggerPolicy"]["condition"]
    assert condition == "inputs.parameter_values['pipelinechannel--name'] == 'it\\'s a \\\\\\\\ path'"


def test_a_fail_step_says_what_its_gate_measured(capsys: pytest.CaptureFixture[str]) -> None:
    ir = load_pipeline(f"{EXAMPLE}:train_gate_deploy").ir
    spec = compile_kfp(ir, image=IMAGE, target="local://")
    fail = spec["components"]["comp-condition-quality-gate-else"]["dag"]["tasks"]["fail"]
    assert fail["inputs"]["parameters"] == {
        "gate0-left": {"componentInputParameter": "pipelinechannel--evaluate-metric-accuracy"},
        "gate0-right": {"componentInputParameter": "pipelinechannel--threshold"},
    }
    executor_input = {"inputs": {"parameterValues": {"gate0-left": 0.51111, "gate0-right": 0.9}}}
    args = [json.dumps(executor_input) if a == "{{$}}" else a for a in task_args(spec, "fail")]
    assert run_step(args) == (
        "StepFailed: the model is not accurate enough; nothing was registered or deployed: "
        "evaluate.metrics['accuracy'] = 0.5111, needs >= 0.9 (threshold)"
    )
