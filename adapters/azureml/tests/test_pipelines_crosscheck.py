"""Crosscheck: the pipeline job YAML mlshift writes is what azure-ai-ml itself accepts.

Each pipeline is compiled (offline: no workspace is needed to compile) and written as YAML, the
file ``az ml job create --file`` would take; azure-ai-ml's own ``load_job`` reads it back
(marshmallow schema validation of the pipeline job and of every inline command component),
the SDK's pipeline validation runs on it (bindings to parent inputs and to other nodes' outputs,
compute), and its REST form is what the SDK would send. Nothing mlshift checks itself counts
here: every assertion is on what the SDK made of the file.

Skipped unless ``azure-ai-ml`` is installed; ``nox -s crosscheck-azureml`` sets
``MLSHIFT_REQUIRE_CROSSCHECK``, so a missing SDK fails there instead of skipping.
"""

from __future__ import annotations

import os
import shlex
from pathlib import Path
from typing import Any

import pytest

from conftest import example_pipeline
from mlshift.pipelines import ContainerStep, Fail, InputPath, Metrics, OutputPath, pipeline, step, when

if os.environ.get("MLSHIFT_REQUIRE_CROSSCHECK") or os.environ.get("CI"):
    import azure.ai.ml  # noqa: F401  (nox -s crosscheck-azureml: a skip must not pass)
else:
    pytest.importorskip("azure.ai.ml", reason="the crosscheck needs azure-ai-ml (nox -s crosscheck-azureml)")

from mlshift_azureml._pipelines import PipelineContext, compile_job, node_name, to_yaml

CONTEXT = PipelineContext(
    environment="azureml:mlshift-serve:0123456789ab",
    target_uri="azureml://sub/rg/ws",
    datastore="workspaceblobstore",
    prefix="mlshift",
)


@step
def make_data(out: OutputPath, rows: int, name: str, shuffle: bool, ratio: float) -> None:
    pass


@step
def label(data: InputPath) -> str:
    return "iris"


@step(metrics=["auc"], timeout=30, retries=2, env={"MODE": "strict"})
def score(data: InputPath, tag: str) -> Metrics:
    return {"auc": 0.9}


@step
def count(data: InputPath) -> int:
    return 3


@step
def publish(summary: Metrics, tag: str, n: float) -> None:
    pass


@step(cache=False)
def notify(tag: str) -> None:
    pass


@pipeline
def everything(rows: int, name: str = "iris", shuffle: bool = True, ratio: float = 0.25) -> None:
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
        outputs={"model": "artifact"},
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


def loaded(ir: Any, tmp_path: Path, values: dict[str, Any] | None = None) -> tuple[dict[str, Any], Any]:
    """Compile, write the YAML file, and load it with the SDK as `az ml job create --file` would."""
    from azure.ai.ml import load_job
    from azure.ai.ml.entities import PipelineJob

    job, _ = compile_job(ir, CONTEXT, values)
    path = tmp_path / f"{node_name(ir.name)}.yaml"
    path.write_text(to_yaml(job))
    entity = load_job(source=path)
    assert isinstance(entity, PipelineJob)
    validation = entity._validate()  # the SDK's own pipeline validation (bindings, compute, types)
    assert validation.passed, validation.error_messages
    return job, entity


def rest_nodes(entity: Any) -> dict[str, Any]:
    nodes: dict[str, Any] = entity._to_rest_object().as_dict()["properties"]["jobs"]
    return nodes


def test_the_example_loads_and_validates_with_azure_ai_ml(tmp_path: Path) -> None:
    pipeline_ = example_pipeline()
    job, entity = loaded(pipeline_.ir, tmp_path)
    assert entity.settings.default_compute == "serverless"
    assert set(entity.jobs) == {"prepare", "train", "evaluate", "quality_gate", "register", "fail", "deploy"}
    assert {k: v.result() for k, v in entity.inputs.items()} == {
        "c": 1.0,
        "label_noise": 0.0,
        "threshold": 0.9,
        "endpoint": "iris-pipeline",
    }
    nodes = rest_nodes(entity)
    # What the SDK sends: data flows between nodes as Azure binds them.
    assert nodes["train"]["inputs"]["dataset"]["value"] == "${{parent.jobs.prepare.outputs.dataset}}"
    assert nodes["quality_gate"]["inputs"]["right"]["value"] == "${{parent.inputs.threshold}}"
    assert nodes["deploy"]["inputs"]["model"]["value"] == "${{parent.jobs.register.outputs.mlshift}}"
    assert nodes["register"]["inputs"]["gate_quality_gate"]["value"] == (
        "${{parent.jobs.quality_gate.outputs.mlshift}}"
    )
    code = nodes["train"]["inputs"]["mlshift_code"]
    assert code["job_input_type"] == "uri_folder"
    assert code["uri"].startswith("azureml://datastores/workspaceblobstore/paths/mlshift/pipelines/code/")
    # The gated steps short-circuit on the gate's decision; the fail step on the other branch.
    register = entity.jobs["register"].component.command
    assert "--when quality-gate true ${{inputs.gate_quality_gate}}" in register
    assert "--when quality-gate false" in entity.jobs["fail"].component.command
    assert entity.jobs["train"].limits.timeout == job["jobs"]["train"]["limits"]["timeout"] == 1201
    assert entity.jobs["train"].component.is_deterministic is True
    assert entity.jobs["fail"].component.is_deterministic is False


def test_every_binding_kind_loads_and_validates(tmp_path: Path) -> None:
    _, entity = loaded(everything.ir, tmp_path, {"rows": 10, "name": "iris", "shuffle": True, "ratio": 0.25})
    nodes = rest_nodes(entity)
    assert set(nodes) == {
        "make_data",
        "label",
        "fit",
        "score",
        "count",
        "good",
        "enough",
        "is_iris",
        "publish",
        "notify",
        "fail",
    }
    # Typed pipeline inputs, bound to typed component inputs.
    inputs = entity.jobs["make_data"].component.inputs
    assert {k: inputs[k].type for k in ("rows", "name", "shuffle", "ratio")} == {
        "rows": "integer",
        "name": "string",
        "shuffle": "boolean",
        "ratio": "number",
    }
    # A container step keeps its own image and command, with Azure's placeholders.
    fit = entity.jobs["fit"].component
    assert fit.environment.image == "python:3.11"
    assert shlex.split(fit.command)[:4] == ["python", "fit.py", "--data", "${{inputs.data}}"]
    assert "-m=${{outputs.mlshift}}/metrics.json" in fit.command
    assert entity.jobs["fit"].environment_variables == {"A": "1"}
    # Nested gates: publish waits for both decisions; notify runs after count and on is-iris.
    publish = entity.jobs["publish"].component.command
    assert "--when enough true" in publish and "--when good true" in publish
    assert nodes["notify"]["inputs"]["after_count"]["value"] == "${{parent.jobs.count.outputs.mlshift}}"
    assert entity.jobs["score"].environment_variables == {"MODE": "strict"}
    assert entity.jobs["score"].limits.timeout == 30 * 3 + 1 + 2  # three tries and the backoff
