"""The neutral pipeline IR → a Kubeflow Pipelines ``PipelineSpec`` (``schemaVersion`` 2.1.0).

Plain dicts, no ``kfp`` import: the result is the JSON (or YAML) that KFP's own compiler
writes, which Vertex AI Pipelines and a self-hosted Kubeflow Pipelines both run.

==========================  =====================================================================
IR                          PipelineSpec
==========================  =====================================================================
parameter                   ``root.inputDefinitions.parameters`` (``STRING``/``NUMBER_INTEGER``/
                            ``NUMBER_DOUBLE``/``BOOLEAN``, ``defaultValue``, ``isOptional``)
step                        a task in a DAG, its component ``comp-<task>`` and executor
                            ``exec-<task>``
``python`` step             the mlshift image runs ``python -m mlshift.pipelines.kfp_step python``
                            with KFP's executor input (``{{$}}``); the step's source file is
                            embedded (or read from ``code_uri``)
``container`` step          the step's own image, command and arguments, placeholders mapped to
                            KFP's (``{{$.inputs.parameters['x']}}``, ``...artifacts['x'].path``)
literal / parameter /       ``runtimeValue.constant`` / ``componentInputParameter`` /
step output input           ``taskOutputParameter`` or ``taskOutputArtifact``
artifact                    ``system.Artifact``
metrics                     one ``NUMBER_DOUBLE`` output ``metric-<name>`` per metric, the whole
                            set as the ``STRUCT`` output ``all-metrics``, and a ``system.Metrics``
                            artifact ``metrics-report`` (what KFP's UI shows)
condition + ``when``        gated steps sit in a sub-DAG ``condition-<id>`` (``-else`` for the
                            other branch) whose task has ``triggerPolicy.condition`` (CEL), the
                            way ``dsl.If``/``dsl.Else`` compile
``register_model``,         the mlshift image registers / deploys through mlshift on the target
``deploy`` steps            given at compile time (or the step's own ``target``)
``fail`` step               a task in the mlshift image that exits 1 with the message and what
                            its gates measured (their operands are its inputs)
``after`` and edges         ``dependentTasks``
``retries``/``retry_delay`` ``retryPolicy`` (``maxRetryCount``, ``backoffDuration``, doubling)
``timeout``                 enforced by the step process (KFP has no per-task timeout)
``cache``                   ``cachingOptions.enableCache``
``resources``               ``resources`` limits (see :data:`SIZE_RESOURCES`), GPUs as
                            ``nvidia.com/gpu`` accelerators
``env``                     ``env``
==========================  =====================================================================

A step that depends on a gated step inherits its gates (as on the local runner, where it is
skipped when that step did not run), so every step sits in the sub-DAG of all the conditions
it is under, nested in the order the conditions were defined. Values cross sub-DAG borders the
way KFP's compiler passes them: ``pipelinechannel--...`` inputs going in, DAG outputs coming out.

The cache key is KFP's own (image, command, arguments and input values): a ``python`` step's
arguments carry its IR hash and code digest, so it changes exactly when the step does. KFP's
``cachingOptions.cacheKey`` is left alone: a fixed key would ignore the input values.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlshift.errors import ConfigError
from mlshift.pipelines._ir import ConditionIR, InputIR, OperandIR, PipelineIR, StepIR
from mlshift.pipelines.kfp_step import ALL_METRICS, METRICS_REPORT

__all__ = [
    "DEFAULT_IMAGE",
    "SCHEMA_VERSION",
    "SIZE_RESOURCES",
    "STEP_MODULE",
    "code_files",
    "compile_kfp",
    "to_yaml",
]

SCHEMA_VERSION = "2.1.0"
#: The module a ``python``, ``register_model``, ``deploy`` or ``fail`` step runs in the image.
STEP_MODULE = "mlshift.pipelines.kfp_step"
_STEP_COMMAND = ["python", "-m", STEP_MODULE]


def _default_image() -> str:
    from mlshift import __version__

    return f"mlshift-serving:{__version__}"


#: The mlshift serving image, as ``mlshift image build`` tags it; push it to a registry your
#: cluster pulls from and pass that name as ``image``.
DEFAULT_IMAGE = _default_image()

#: Neutral sizes → container limits (vCPU, memory GiB, GPUs when the step says none), the shapes
#: of the SageMaker instance types they map to there. A ``gpu-*`` size means at least one GPU,
#: as in the DSL.
SIZE_RESOURCES: Mapping[str, tuple[int, int, int]] = {
    "cpu-small": (2, 8, 0),
    "cpu-medium": (4, 16, 0),
    "cpu-large": (16, 64, 0),
    "gpu-small": (4, 16, 1),
    "gpu-medium": (8, 32, 1),
    "gpu-large": (48, 192, 1),
}
GPU_RESOURCE = "nvidia.com/gpu"

_PARAMETER_TYPES = {
    "str": "STRING",
    "int": "NUMBER_INTEGER",
    "float": "NUMBER_DOUBLE",
    "bool": "BOOLEAN",
    "metrics": "STRUCT",
}
_ARTIFACT = {"schemaTitle": "system.Artifact", "schemaVersion": "0.0.1"}
_METRICS_ARTIFACT = {"schemaTitle": "system.Metrics", "schemaVersion": "0.0.1"}
_PLACEHOLDER = re.compile(r"\{\{\s*(inputs|outputs)\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}|\{\{\s*metrics\s*\}\}")
_CHANNEL = "pipelinechannel--"

Scope = tuple[tuple[str, bool], ...]


def metric_key(name: str) -> str:
    """The output parameter a step's metric ``name`` is written to."""
    return f"metric-{name}"


def _duration(seconds: float) -> str:
    text = f"{seconds:.3f}".rstrip("0").rstrip(".")
    return f"{text}s"


def _cel_string(text: str) -> str:
    return "'" + text.replace("\\", "\\\\").replace("'", "\\'") + "'"


class _Ref:
    """A value a task input takes from a producer: a step's output, or a pipeline parameter."""

    __slots__ = ("artifact", "key", "param", "ptype", "step")

    def __init__(
        self, *, step: str | None, key: str, artifact: bool, ptype: str | None, param: str | None = None
    ) -> None:
        self.step = step
        self.key = key
        self.artifact = artifact
        self.ptype = ptype  # the KFP parameter type (None for artifacts)
        self.param = param

    def channel(self, tasks: Mapping[str, str]) -> str:
        if self.param is not None:
            return _CHANNEL + self.param
        assert self.step is not None
        return f"{_CHANNEL}{tasks[self.step]}-{self.key}"


class _Dag:
    """One DAG: the root, or a condition's sub-DAG."""

    def __init__(self, scope: Scope, task: str | None) -> None:
        self.scope = scope
        self.task = task  # its task (and component ``comp-<task>``) in the parent DAG
        self.tasks: dict[str, dict[str, Any]] = {}
        self.inputs: dict[str, dict[str, Any]] = {"parameters": {}, "artifacts": {}}
        self.outputs: dict[str, dict[str, Any]] = {"parameters": {}, "artifacts": {}}
        self.dag_outputs: dict[str, dict[str, Any]] = {"parameters": {}, "artifacts": {}}
        self.task_spec: dict[str, Any] | None = None  # its task in the parent DAG


class _Compiler:
    def __init__(
        self,
        ir: PipelineIR,
        *,
        image: str,
        code_uri: str | None,
        target: str | None,
        pipeline_root: str | None,
    ) -> None:
        self.ir = ir
        self.image = image
        self.code_uri = code_uri.rstrip("/") if code_uri else None
        self.target = target
        self.pipeline_root = pipeline_root
        self.where = f"pipeline {ir.name!r}"
        self.steps = {s.name: s for s in ir.steps}
        self.params = {p.name: p for p in ir.params}
        self.order = {c.id: i for i, c in enumerate(ir.conditions)}
        self.components: dict[str, dict[str, Any]] = {}
        self.executors: dict[str, dict[str, Any]] = {}
        self.dags: dict[Scope, _Dag] = {(): _Dag((), None)}
        self.scope_of: dict[str, Scope] = {}
        self.tasks: dict[str, str] = {}
        self.used_names: set[str] = set()
        self.needs: dict[str, set[str]] = {s.name: set() for s in ir.steps}
        for e in ir.edges:
            self.needs[e.target].add(e.source)
        self.sources: dict[str, bytes] = {}  # source files by path, read once

    # ------------------------------------------------------------------ names and scopes

    def _error(self, step: StepIR | str, message: str, field: str, hint: str | None = None) -> ConfigError:
        name = step if isinstance(step, str) else step.name
        return ConfigError(f"{self.where}: step {name!r}: {message}", field=field, hint=hint)

    def _task_names(self) -> None:
        for s in self.ir.steps:
            task = s.name.lower()
            if task in self.used_names:
                other = next(n for n, t in self.tasks.items() if t == task)
                raise self._error(
                    s,
                    f"its KFP task name {task!r} is also the task name of step {other!r} "
                    "(KFP task names are lower case)",
                    field=f"steps.{s.name}",
                    hint="rename one of the two steps",
                )
            self.tasks[s.name] = task
            self.used_names.add(task)

    def _scopes(self) -> None:
        """Every step's scope: its own gates and those of every step it depends on."""
        from graphlib import TopologicalSorter

        gates: dict[str, set[tuple[str, bool]]] = {}
        # IR loaded from JSON is checked for cycles, not for its steps' order: sort here.
        for name in TopologicalSorter(self.needs).static_order():
            mine = {(w.condition, w.branch) for w in self.steps[name].when}
            for dep in self.needs[name]:
                mine |= gates[dep]
            gates[name] = mine
            self.scope_of[name] = tuple(sorted(mine, key=lambda g: (self.order[g[0]], not g[1])))

    def _dag(self, scope: Scope) -> _Dag:
        dag = self.dags.get(scope)
        if dag is not None:
            return dag
        self._dag(scope[:-1])
        cond, branch = scope[-1]
        # DSL gates without a name are "condition-N" already; ids from JSON may hold anything.
        slug = re.sub(r"[^a-z0-9-]+", "-", cond.lower()).strip("-") or "gate"
        base = (slug if slug.startswith("condition-") else f"condition-{slug}") + ("" if branch else "-else")
        name, n = base, 1
        while name in self.used_names or f"comp-{name}" in self.components:
            n += 1
            name = f"{base}-{n}"
        self.used_names.add(name)
        dag = _Dag(scope, name)
        self.dags[scope] = dag
        return dag

    # ------------------------------------------------------------------ values across DAGs

    def _ref_of(self, where: str, source: InputIR | OperandIR) -> _Ref:
        """What ``source`` refers to; ``where`` says who reads it (for messages)."""
        if source.param is not None:
            ptype = _PARAMETER_TYPES[self.params[source.param].type]
            return _Ref(step=None, key=source.param, artifact=False, ptype=ptype, param=source.param)
        assert source.step is not None
        producer = self.steps[source.step]
        if source.metric is not None:
            if producer.kind == "container":
                raise ConfigError(
                    f"{self.where}: {where} reads metric {source.metric!r} of container step "
                    f"{producer.name!r}; on KFP a container step reports its metrics as one JSON "
                    "object, so a single metric of it cannot be compared or passed yet",
                    field=f"steps.{producer.name}.metrics",
                    hint="take the whole metrics, or report them from a @step function",
                )
            return _Ref(
                step=producer.name, key=metric_key(source.metric), artifact=False, ptype="NUMBER_DOUBLE"
            )
        if source.output is None:  # the whole metrics
            return _Ref(step=producer.name, key=ALL_METRICS, artifact=False, ptype="STRUCT")
        kind = producer.outputs[source.output].type
        if kind == "artifact":
            return _Ref(step=producer.name, key=source.output, artifact=True, ptype=None)
        return _Ref(step=producer.name, key=source.output, artifact=False, ptype=_PARAMETER_TYPES[kind])

    def _resolve(self, scope: Scope, ref: _Ref) -> tuple[dict[str, Any], str | None]:
        """The task input spec that gives ``ref`` to a task in DAG ``scope``, and the task of
        that DAG it comes from (a dependency), if any."""
        if ref.param is not None:
            source: Scope = ()
            if scope == ():
                return {"componentInputParameter": ref.param}, None
        else:
            assert ref.step is not None
            source = self.scope_of[ref.step]
        if source[: len(scope)] == scope:
            # The producer is in this DAG or below it: from its task or the sub-DAG holding it.
            if source == scope:
                task, key = self.tasks[ref.step or ""], ref.key
            else:
                task, key = self._export(source[: len(scope) + 1], ref)
            if ref.artifact:
                return {"taskOutputArtifact": {"producerTask": task, "outputArtifactKey": key}}, task
            return {"taskOutputParameter": {"producerTask": task, "outputParameterKey": key}}, task
        # From outside this sub-DAG: an input of it, which its parent passes in.
        dag = self.dags[scope]
        channel = ref.channel(self.tasks)
        kind = "artifacts" if ref.artifact else "parameters"
        if channel not in dag.inputs[kind]:
            dag.inputs[kind][channel] = (
                {"artifactType": dict(_ARTIFACT)} if ref.artifact else {"parameterType": ref.ptype}
            )
            spec, dep = self._resolve(scope[:-1], ref)
            self._wire(dag, channel, ref.artifact, spec, dep)
        if ref.artifact:
            return {"componentInputArtifact": channel}, None
        return {"componentInputParameter": channel}, None

    def _wire(self, child: _Dag, channel: str, artifact: bool, spec: dict[str, Any], dep: str | None) -> None:
        """Pass ``spec`` (from the parent DAG) into sub-DAG ``child`` as its input ``channel``."""
        task = self._scope_task(child)
        task["inputs"]["artifacts" if artifact else "parameters"][channel] = spec
        if dep is not None:
            task["dependentTasks"].add(dep)

    def _export(self, scope: Scope, ref: _Ref) -> tuple[str, str]:
        """Make sub-DAG ``scope`` output ``ref`` (from a task in or below it); its task and key."""
        dag = self._dag(scope)
        channel = ref.channel(self.tasks)
        kind = "artifacts" if ref.artifact else "parameters"
        if channel not in dag.dag_outputs[kind]:
            spec, _ = self._resolve(scope, ref)
            if ref.artifact:
                inner = spec["taskOutputArtifact"]
                dag.dag_outputs[kind][channel] = {
                    "artifactSelectors": [
                        {
                            "producerSubtask": inner["producerTask"],
                            "outputArtifactKey": inner["outputArtifactKey"],
                        }
                    ]
                }
                dag.outputs[kind][channel] = {"artifactType": dict(_ARTIFACT)}
            else:
                inner = spec["taskOutputParameter"]
                dag.dag_outputs[kind][channel] = {
                    "valueFromParameter": {
                        "producerSubtask": inner["producerTask"],
                        "outputParameterKey": inner["outputParameterKey"],
                    }
                }
                dag.outputs[kind][channel] = {"parameterType": ref.ptype}
        assert dag.task is not None
        return dag.task, channel

    def _depend(self, scope: Scope, task: dict[str, Any], producer: str) -> None:
        """``task`` (in DAG ``scope``) runs after step ``producer``."""
        source = self.scope_of[producer]
        if source[: len(scope)] == scope:
            if source == scope:
                task["dependentTasks"].add(self.tasks[producer])
            else:
                child = self._dag(source[: len(scope) + 1])
                assert child.task is not None
                task["dependentTasks"].add(child.task)
            return
        # Not below this DAG: the sub-DAGs holding each, where they are siblings, wait.
        common = 0
        while common < min(len(scope), len(source)) and scope[common] == source[common]:
            common += 1
        mine = self._scope_task(self.dags[scope[: common + 1]])
        self._depend(scope[:common], mine, producer)

    def _scope_task(self, dag: _Dag) -> dict[str, Any]:
        """The task running sub-DAG ``dag`` in its parent (its trigger is the condition)."""
        if dag.task_spec is None:
            assert dag.task is not None
            dag.task_spec = {
                "componentRef": {"name": f"comp-{dag.task}"},
                "taskInfo": {"name": dag.task},
                "inputs": {"parameters": {}, "artifacts": {}},
                "dependentTasks": set(),
            }
            parent = self.dags[dag.scope[:-1]]
            if parent.scope:
                self._scope_task(parent)
            parent.tasks[dag.task] = dag.task_spec
            self._trigger(dag)
        return dag.task_spec

    # ------------------------------------------------------------------ conditions

    def _trigger(self, dag: _Dag) -> None:
        cond_id, branch = dag.scope[-1]
        cond = self.ir.condition(cond_id)
        parent_scope = dag.scope[:-1]
        kinds = [self._operand_type(cond, o) for o in (cond.left, cond.right)]
        numeric = all(k in ("NUMBER_INTEGER", "NUMBER_DOUBLE") for k in kinds)
        as_double = numeric and "NUMBER_DOUBLE" in kinds
        if not numeric and kinds[0] != kinds[1]:
            raise ConfigError(
                f"{self.where}: condition {cond.id!r} ({cond.describe()}) compares a {kinds[0]} with a "
                f"{kinds[1]}, which a KFP condition cannot",
                field=f"conditions.{cond.id}",
            )
        if kinds[0] in ("STRUCT",) or (cond.op not in ("==", "!=") and kinds[0] in ("STRING", "BOOLEAN")):
            raise ConfigError(
                f"{self.where}: condition {cond.id!r} ({cond.describe()}): {cond.op} on {kinds[0]} values "
                "is not a KFP condition",
                field=f"conditions.{cond.id}",
            )
        assert dag.task_spec is not None
        sides = []
        for operand, kind in zip((cond.left, cond.right), kinds, strict=True):
            if operand.value is not None:
                value = operand.value
                if isinstance(value, bool):
                    sides.append("true" if value else "false")
                elif isinstance(value, str):
                    sides.append(_cel_string(value))
                elif as_double:
                    sides.append(repr(float(value)))
                else:
                    sides.append(repr(int(value)))
                continue
            ref = self._ref_of(f"condition {cond.id!r}", operand)
            spec, dep = self._resolve(parent_scope, ref)
            channel = ref.channel(self.tasks)
            dag.task_spec["inputs"]["parameters"][channel] = spec
            dag.inputs["parameters"].setdefault(channel, {"parameterType": ref.ptype})
            if dep is not None:
                dag.task_spec["dependentTasks"].add(dep)
            if ref.step is not None:
                self._depend(parent_scope, dag.task_spec, ref.step)
            text = f"inputs.parameter_values[{_cel_string(channel)}]"
            if kind == "NUMBER_INTEGER":
                text = f"double({text})" if as_double else f"int({text})"
            sides.append(text)
        expression = f"{sides[0]} {cond.op} {sides[1]}"
        dag.task_spec["triggerPolicy"] = {"condition": expression if branch else f"!({expression})"}

    def _operand_type(self, cond: ConditionIR, operand: OperandIR) -> str:
        if operand.value is not None:
            v = operand.value
            kind = "bool" if isinstance(v, bool) else "int" if isinstance(v, int) else type(v).__name__
            return _PARAMETER_TYPES[kind]
        if operand.param is not None:
            return _PARAMETER_TYPES[self.params[operand.param].type]
        if operand.metric is not None:
            return "NUMBER_DOUBLE"
        assert operand.step is not None and operand.output is not None
        kind = self.steps[operand.step].outputs[operand.output].type
        if kind == "artifact":
            raise ConfigError(
                f"{self.where}: condition {cond.id!r} compares artifact {operand.describe()}",
                field=f"conditions.{cond.id}",
            )
        return _PARAMETER_TYPES[kind]

    # ------------------------------------------------------------------ steps

    def _step(self, step: StepIR) -> None:
        scope = self.scope_of[step.name]
        dag = self._dag(scope)
        if scope:
            self._scope_task(dag)
        task_name = self.tasks[step.name]
        inputs_def: dict[str, dict[str, Any]] = {"parameters": {}, "artifacts": {}}
        outputs_def: dict[str, dict[str, Any]] = {"parameters": {}, "artifacts": {}}
        task: dict[str, Any] = {
            "componentRef": {"name": f"comp-{task_name}"},
            "taskInfo": {"name": step.name},
            "inputs": {"parameters": {}, "artifacts": {}},
            "dependentTasks": set(),
            "cachingOptions": {"enableCache": bool(step.cache and step.kind != "fail")},
        }
        for key, inp in step.inputs.items():
            field = f"steps.{step.name}.inputs.{key}"
            if inp.type == "artifact":
                if inp.step is None:
                    raise self._error(
                        step,
                        f"input {key!r} is an artifact from a literal path; on KFP artifacts come from "
                        "other steps (importer nodes are not mapped yet)",
                        field=field,
                        hint="produce the artifact in a step, or pass the path as a str input",
                    )
                inputs_def["artifacts"][key] = {"artifactType": dict(_ARTIFACT)}
            else:
                inputs_def["parameters"][key] = {"parameterType": _PARAMETER_TYPES[inp.type]}
            if inp.value is not None:
                task["inputs"]["parameters"][key] = {"runtimeValue": {"constant": inp.value}}
                continue
            ref = self._ref_of(f"step {step.name!r}: input {key!r}", inp)
            spec, dep = self._resolve(scope, ref)
            task["inputs"]["artifacts" if ref.artifact else "parameters"][key] = spec
            if dep is not None:
                task["dependentTasks"].add(dep)
        for key, out in step.outputs.items():
            if out.type == "artifact":
                outputs_def["artifacts"][key] = {"artifactType": dict(_ARTIFACT)}
            else:
                outputs_def["parameters"][key] = {"parameterType": _PARAMETER_TYPES[out.type]}
        if step.metrics is not None:
            outputs_def["parameters"][ALL_METRICS] = {"parameterType": "STRUCT"}
            if step.kind != "container":
                for m in step.metrics:
                    outputs_def["parameters"][metric_key(m)] = {"parameterType": "NUMBER_DOUBLE"}
                outputs_def["artifacts"][METRICS_REPORT] = {"artifactType": dict(_METRICS_ARTIFACT)}
        readings = self._gate_readings(step, scope, task, inputs_def) if step.kind == "fail" else []
        for producer in sorted(self.needs[step.name]):
            self._depend(scope, task, producer)
        if step.retries:
            task["retryPolicy"] = {
                "maxRetryCount": step.retries,
                "backoffDuration": _duration(step.retry_delay),
                "backoffFactor": 2.0,
            }
        dag.tasks[task_name] = task
        component: dict[str, Any] = {"executorLabel": f"exec-{task_name}"}
        if any(inputs_def.values()):
            component["inputDefinitions"] = {k: v for k, v in inputs_def.items() if v}
        if any(outputs_def.values()):
            component["outputDefinitions"] = {k: v for k, v in outputs_def.items() if v}
        self.components[f"comp-{task_name}"] = component
        container = self._container(step)
        if readings:
            container["args"] += [
                "--executor-input",
                "{{$}}",
                "--gates",
                json.dumps(readings, sort_keys=True),
            ]
        self.executors[f"exec-{task_name}"] = {"container": container}

    def _gate_readings(
        self, step: StepIR, scope: Scope, task: dict[str, Any], inputs_def: dict[str, dict[str, Any]]
    ) -> list[dict[str, Any]]:
        """A ``Fail`` step's gates, with their operands as inputs, so that its message says what
        they measured (as the local runner's does)."""
        readings = []
        for i, w in enumerate(step.when):
            cond = self.ir.condition(w.condition)
            sides: list[dict[str, Any]] = []
            for side, operand in (("left", cond.left), ("right", cond.right)):
                if operand.value is not None:
                    sides.append({"value": operand.value})
                    continue
                name = f"gate{i}-{side}"
                ref = self._ref_of(f"condition {cond.id!r}", operand)
                spec, dep = self._resolve(scope, ref)
                inputs_def["parameters"][name] = {"parameterType": ref.ptype}
                task["inputs"]["parameters"][name] = spec
                if dep is not None:
                    task["dependentTasks"].add(dep)
                reads = {"param": operand.param} if operand.param is not None else {"of": operand.describe()}
                sides.append({"input": name, **reads})
            readings.append({"op": cond.op, "left": sides[0], "right": sides[1]})
        return readings

    def _container(self, step: StepIR) -> dict[str, Any]:
        if step.secrets:
            raise self._error(
                step,
                "uses secrets, which a PipelineSpec cannot carry (Kubernetes secrets are a KFP "
                "platform-spec feature, not mapped yet)",
                field=f"steps.{step.name}.secrets",
                hint="read the secret inside the step (e.g. from Secret Manager)",
            )
        if step.kind == "python":
            container = self._python(step)
        elif step.kind == "container":
            container = self._user_container(step)
        elif step.kind == "register_model":
            container = self._register(step)
        elif step.kind == "deploy":
            container = self._deploy(step)
        else:
            assert step.fail is not None
            container = {
                "image": self.image,
                "command": list(_STEP_COMMAND),
                "args": ["fail", "--message", step.fail.message],
            }
        if step.env:
            container["env"] = [{"name": k, "value": v} for k, v in step.env.items()]
        if step.kind != "fail":
            container["resources"] = self._resources(step)
        return container

    def _resources(self, step: StepIR) -> dict[str, Any]:
        cpu, memory_gib, default_gpus = SIZE_RESOURCES[step.resources.size]
        out: dict[str, Any] = {
            # The string fields are what KFP reads now; the numbers are the deprecated fields
            # older backends read (KFP's compiler writes both, memory in GB).
            "resourceCpuLimit": str(cpu),
            "resourceMemoryLimit": f"{memory_gib}Gi",
            "cpuLimit": float(cpu),
            "memoryLimit": round(memory_gib * 2**30 / 1e9, 9),
        }
        gpus = step.resources.gpus or default_gpus
        if gpus:
            out["accelerator"] = {
                "resourceType": GPU_RESOURCE,
                "resourceCount": str(gpus),
                "type": GPU_RESOURCE,
                "count": str(gpus),
            }
        return out

    def _common(self, step: StepIR) -> dict[str, Any]:
        task: dict[str, Any] = {
            "step": step.name,
            "hash": step.hash or step.content_hash(),
            "inputs": {k: i.type for k, i in step.inputs.items()},
            "outputs": {k: o.type for k, o in step.outputs.items()},
        }
        if step.metrics is not None:
            task["metrics"] = list(step.metrics)
        if step.timeout is not None:
            task["timeout"] = step.timeout
        return task

    def _python(self, step: StepIR) -> dict[str, Any]:
        code = step.python
        assert code is not None
        task = self._common(step)
        task.update(module=code.module, qualname=code.qualname, code_digest=code.code_digest)
        if "." not in code.module:
            # A script or top-level module: its file goes with the step (KFP's lightweight
            # components embed their source the same way), or is read from code_uri.
            path = Path(code.file)
            try:
                data = self.sources.get(code.file) or self.sources.setdefault(code.file, path.read_bytes())
            except OSError as exc:
                raise self._error(
                    step,
                    f"cannot read its source file {code.file!r} ({exc.strerror or exc}); the KFP step "
                    "carries the file, so compile where the pipeline's code is",
                    field=f"steps.{step.name}.python.file",
                ) from None
            if self.code_uri is None:
                try:
                    task["source"] = {"file": path.name, "text": data.decode("utf-8")}
                except UnicodeDecodeError:
                    raise self._error(
                        step,
                        f"source file {code.file!r} is not UTF-8",
                        field=f"steps.{step.name}.python.file",
                    ) from None
            else:
                task["source"] = {"file": path.name, "uri": f"{self.code_uri}/{code_key(path.name, data)}"}
        return {
            "image": self.image,
            "command": list(_STEP_COMMAND),
            "args": ["python", "--executor-input", "{{$}}", "--task", json.dumps(task, sort_keys=True)],
        }

    def _user_container(self, step: StepIR) -> dict[str, Any]:
        spec = step.container
        assert spec is not None
        if step.timeout is not None:
            raise self._error(
                step,
                "has a timeout, which KFP cannot enforce on a container it does not wrap "
                "(a PipelineSpec has no task timeout)",
                field=f"steps.{step.name}.timeout",
                hint="drop the timeout, or enforce it in the container's command",
            )

        def resolve(arg: str) -> str:
            def one(match: re.Match[str]) -> str:
                kind, key = match.group(1), match.group(2)
                if kind is None:
                    if step.metrics is None:
                        raise self._error(
                            step,
                            f"argument {arg!r} uses {{{{metrics}}}} but the step declares no metrics",
                            field=f"steps.{step.name}.container.args",
                        )
                    return f"{{{{$.outputs.parameters['{ALL_METRICS}'].output_file}}}}"
                if kind == "outputs":
                    out = step.outputs.get(key)
                    if out is None:
                        raise self._error(
                            step,
                            f"argument {arg!r} names unknown output {key!r}",
                            field=f"steps.{step.name}.container.args",
                        )
                    if out.type == "artifact":
                        return f"{{{{$.outputs.artifacts['{key}'].path}}}}"
                    return f"{{{{$.outputs.parameters['{key}'].output_file}}}}"
                inp = step.inputs.get(key)
                if inp is None:
                    raise self._error(
                        step,
                        f"argument {arg!r} names unknown input {key!r}",
                        field=f"steps.{step.name}.container.args",
                    )
                if inp.type == "artifact":
                    return f"{{{{$.inputs.artifacts['{key}'].path}}}}"
                return f"{{{{$.inputs.parameters['{key}']}}}}"

            return _PLACEHOLDER.sub(one, arg)

        out: dict[str, Any] = {"image": spec.image, "command": list(spec.command)}
        if spec.args:
            out["args"] = [resolve(a) for a in spec.args]
        return out

    def _target_for(self, step: StepIR, own: str | None, block: str) -> str:
        target = own or self.target
        if not target:
            raise self._error(
                step,
                f"a {step.kind} step acts on a target, and neither it nor the compile names one",
                field=f"steps.{step.name}.{block}.target",
                hint="pass target= to compile_kfp (--target with `mlshift pipelines compile --format kfp`), "
                "or set target= on the step",
            )
        return target

    def _register(self, step: StepIR) -> dict[str, Any]:
        config = step.register_model
        assert config is not None
        settings = {
            "alias": config.alias,
            "framework": config.framework,
            "tags": config.tags,
            "description": config.description,
        }
        task = self._common(step)
        task["settings"] = {k: v for k, v in settings.items() if v}
        task["target"] = self._target_for(step, config.target, "register_model")
        return {
            "image": self.image,
            "command": list(_STEP_COMMAND),
            "args": ["register", "--executor-input", "{{$}}", "--task", json.dumps(task, sort_keys=True)],
        }

    def _deploy(self, step: StepIR) -> dict[str, Any]:
        config = step.deploy
        assert config is not None
        settings = {"traffic": config.traffic, "size": config.size, "replicas": config.replicas}
        if config.allow_schema_change:  # only when set: existing task arguments stay as they were
            settings["allow_schema_change"] = True
        task = self._common(step)
        task["settings"] = {k: v for k, v in settings.items() if v is not None}
        task["target"] = self._target_for(step, config.target, "deploy")
        return {
            "image": self.image,
            "command": list(_STEP_COMMAND),
            "args": ["deploy", "--executor-input", "{{$}}", "--task", json.dumps(task, sort_keys=True)],
        }

    # ------------------------------------------------------------------ the whole spec

    def _root_inputs(self) -> dict[str, Any]:
        parameters: dict[str, Any] = {}
        for p in self.ir.params:
            spec: dict[str, Any] = {"parameterType": _PARAMETER_TYPES[p.type]}
            if p.required:
                spec["isOptional"] = False
            elif p.default is None:
                raise ConfigError(
                    f"{self.where}: parameter {p.name!r} is optional without a default; a KFP "
                    "parameter needs one",
                    field=f"params.{p.name}",
                    hint="give it a default, or make it required",
                )
            else:
                spec["defaultValue"] = p.default
                spec["isOptional"] = True
            parameters[p.name] = spec
        return {"parameters": parameters} if parameters else {}

    @staticmethod
    def _finish_task(task: dict[str, Any]) -> dict[str, Any]:
        out = dict(task)
        deps = sorted(out.pop("dependentTasks"))
        inputs = {k: dict(sorted(v.items())) for k, v in out.pop("inputs").items() if v}
        if inputs:
            out["inputs"] = inputs
        if deps:
            out["dependentTasks"] = deps
        return dict(sorted(out.items()))

    def compile(self) -> dict[str, Any]:
        ir = self.ir
        if ir.description is not None and len(ir.description) > 1024:
            raise ConfigError(
                f"{self.where}: description is {len(ir.description)} characters; KFP takes at most 1024",
                field="description",
            )
        self._task_names()
        self._scopes()
        for step in ir.steps:
            self._step(step)
        components = dict(self.components)
        for scope, dag in self.dags.items():
            if not scope:
                continue
            assert dag.task is not None
            component: dict[str, Any] = {
                "dag": {"tasks": {n: self._finish_task(t) for n, t in sorted(dag.tasks.items())}}
            }
            dag_outputs = {k: dict(sorted(v.items())) for k, v in dag.dag_outputs.items() if v}
            if dag_outputs:
                component["dag"]["outputs"] = dag_outputs
            inputs = {k: dict(sorted(v.items())) for k, v in dag.inputs.items() if v}
            if inputs:
                component["inputDefinitions"] = inputs
            outputs = {k: dict(sorted(v.items())) for k, v in dag.outputs.items() if v}
            if outputs:
                component["outputDefinitions"] = outputs
            components[f"comp-{dag.task}"] = component
        root_dag = self.dags[()]
        root: dict[str, Any] = {
            "dag": {"tasks": {n: self._finish_task(t) for n, t in sorted(root_dag.tasks.items())}}
        }
        root_inputs = self._root_inputs()
        if root_inputs:
            root["inputDefinitions"] = root_inputs
        info: dict[str, Any] = {"name": ir.name.lower(), "displayName": ir.name}
        if ir.description:
            info["description"] = ir.description
        from mlshift import __version__

        spec: dict[str, Any] = {
            "components": dict(sorted(components.items())),
            "deploymentSpec": {"executors": dict(sorted(self.executors.items()))},
            "pipelineInfo": info,
            "root": root,
            "schemaVersion": SCHEMA_VERSION,
            "sdkVersion": f"mlshift-{__version__}",
        }
        if self.pipeline_root:
            spec["defaultPipelineRoot"] = self.pipeline_root
        return spec


def code_key(file_name: str, data: bytes) -> str:
    """Where a step's source file goes under ``code_uri``: ``<sha256>/<file name>``."""
    import hashlib

    return f"{hashlib.sha256(data).hexdigest()}/{file_name}"


def code_files(ir: PipelineIR) -> dict[str, bytes]:
    """The source files a spec compiled with ``code_uri`` reads, by key under ``code_uri``.

    Upload each to ``<code_uri>/<key>`` before running the spec.

    Raises:
        ConfigError: a source file that cannot be read, naming the step.
    """
    out: dict[str, bytes] = {}
    for step in ir.steps:
        if step.python is None or "." in step.python.module:
            continue
        path = Path(step.python.file)
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(
                f"pipeline {ir.name!r}: step {step.name!r}: cannot read its source file {str(path)!r} "
                f"({exc.strerror or exc})",
                field=f"steps.{step.name}.python.file",
            ) from None
        out[code_key(path.name, data)] = data
    return out


def compile_kfp(
    ir: PipelineIR,
    *,
    image: str = DEFAULT_IMAGE,
    code_uri: str | None = None,
    target: str | None = None,
    pipeline_root: str | None = None,
) -> dict[str, Any]:
    """Compile the IR to a KFP ``PipelineSpec`` (schema 2.1.0), as a JSON-ready dict.

    Args:
        ir: The pipeline (``pipeline.ir``, or IR loaded from JSON).
        image: The mlshift image ``python``, ``register_model``, ``deploy`` and ``fail`` steps
            run in (mlshift installed, plus what the steps import); container steps keep theirs.
        code_uri: Where the steps' source files are uploaded (see :func:`code_files`), read by
            the step from ``<code_uri>/<sha256>/<file>``. Without it each step carries its file.
        target: The target URI ``register_model`` and ``deploy`` steps act on, unless the step
            names its own.
        pipeline_root: ``defaultPipelineRoot``: where KFP writes artifacts (``gs://...``).

    Raises:
        ConfigError: for what a PipelineSpec cannot express (secrets, a container step's
            timeout, a single metric of a container step, ...), naming the step and field,
            before anything is returned.
    """
    if not image or any(c.isspace() for c in image):
        raise ConfigError(f"invalid image {image!r}", field="image")
    return _Compiler(ir, image=image, code_uri=code_uri, target=target, pipeline_root=pipeline_root).compile()


def to_yaml(spec: Mapping[str, Any]) -> str:
    """The spec as YAML, as KFP's compiler writes it (header comment, keys sorted, no anchors)."""
    import yaml

    class _Dumper(yaml.SafeDumper):
        def ignore_aliases(self, data: Any) -> bool:
            return True

    name = spec.get("pipelineInfo", {}).get("name", "")
    body = yaml.dump(dict(spec), Dumper=_Dumper, sort_keys=True, allow_unicode=True, width=100)
    return f"# PIPELINE DEFINITION\n# Name: {name}\n{body}"
