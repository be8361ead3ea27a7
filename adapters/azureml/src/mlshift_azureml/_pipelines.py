"""The neutral pipeline IR → an Azure ML pipeline job (the YAML ``az ml job create`` reads), and back.

==========================  =====================================================================
IR                          Azure ML pipeline job
==========================  =====================================================================
parameter                   the job's ``inputs`` (the run's values, typed)
``python`` step             ``command`` node in the mlshift serving environment:
                            ``python -m mlshift_azureml.step python`` runs the function from its
                            source file (uploaded to the datastore by digest, a ``uri_folder`` input)
``container`` step          ``command`` node running the step's own image and command
artifact output / input     ``uri_folder`` output / the producing node's output bound as input
metrics, scalar outputs     ``metrics.json`` / ``outputs.json`` in every node's ``mlshift`` output;
                            a later node reads them from there (bound as a ``uri_folder`` input)
condition + ``when``        a **gate node** (``python -m mlshift_azureml.step gate``) that
                            evaluates the comparison; every node under the condition (and every
                            node downstream of one) takes the gate's ``mlshift`` output and
                            **short-circuits**: it exits 0 without running when the gate decided
                            against it, writing ``skipped.json``; reported as ``skipped``
``register_model`` step     ``command`` node registering through mlshift (digest, card, alias)
``deploy`` step             ``command`` node deploying through mlshift
``fail`` step               ``command`` node that fails with its message (when its gate lets it)
``after``                   the earlier node's ``mlshift`` output bound as an input (an edge)
``retries``, ``timeout``    retried in the node's process; ``limits.timeout``
``cache``                   the component's ``is_deterministic`` (Azure reuses an unchanged
                            node's earlier outputs); ``cache=False`` runs set ``force_rerun``
schedule                    a ``JobSchedule`` with a cron trigger (``sync_schedule``)
==========================  =====================================================================

Why gates are nodes: Azure ML's condition node (``dsl.condition``, an ``if_else`` control-flow
node over a boolean ``is_control`` output) is a preview feature; a short-circuiting node
works on every workspace and keeps the pipeline a plain DAG of command jobs.

Nodes run on serverless compute (``settings.default_compute: serverless``), sized by the
neutral size (the same table as endpoints). Run ids are the pipeline jobs' names.
"""

from __future__ import annotations

import builtins
import hashlib
import io
import json
import logging
import math
import re
import secrets
import shlex
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlshift.errors import ConfigError, MlshiftError, NotFound, UnsupportedOperation
from mlshift.pipelines.builtins import total_retry_delay
from mlshift_azureml.errors import PROVIDER, azure_errors
from mlshift_azureml.options import instance_type_for

if TYPE_CHECKING:
    from mlshift.adapter import ScheduleAction, ScheduleChange
    from mlshift.pipelines.ir import InputIR, OperandIR, PipelineIR, StepIR
    from mlshift.pipelines.runs import RemoteRunState, RunStatus, StepRun, StepStatus
    from mlshift_azureml._adapter import AzureMLAdapter

__all__ = [
    "SCHEMA",
    "AzureMLPipelineService",
    "PipelineContext",
    "compile_job",
    "node_name",
    "to_yaml",
]

logger = logging.getLogger("mlshift.azureml")

#: The ``$schema`` of a pipeline job YAML.
SCHEMA = "https://azuremlschemas.azureedge.net/latest/pipelineJob.schema.json"
MLSHIFT_STEP = "python -m mlshift_azureml.step"
_PARAM_TYPES = {"str": "string", "int": "integer", "float": "number", "bool": "boolean"}
_NODE = re.compile(r"[a-z_][a-z0-9_]{0,254}")
_JOB_NAME = re.compile(r"[a-zA-Z0-9][a-zA-Z0-9_-]{0,254}")
_PLACEHOLDER = re.compile(r"\{\{\s*(inputs|outputs)\.([A-Za-z_][A-Za-z0-9_]*)\s*\}\}|\{\{\s*metrics\s*\}\}")
_KIND_TAG, _STEP_TAG, _WHEN_TAG = "mlshift:kind", "mlshift:step", "mlshift:when"
_RESERVED_OUTPUT = "mlshift"


def node_name(name: str) -> str:
    """The node name of a step or condition (Azure takes lowercase identifiers: ``-`` → ``_``).

    Raises:
        ConfigError: if nothing usable is left.
    """
    converted = re.sub(r"[^a-z0-9_]", "_", name.lower())
    if converted and converted[0].isdigit():
        converted = f"s_{converted}"
    if not _NODE.fullmatch(converted):
        raise ConfigError(f"{name!r} cannot be an Azure ML pipeline node name", field=f"steps.{name}")
    return converted


def experiment_name(name: str) -> str:
    """The experiment a pipeline's jobs are filed under (Azure: letters, digits, ``_``, ``-``)."""
    return re.sub(r"[^A-Za-z0-9_-]", "-", name).strip("-")[:255] or "mlshift"


class PipelineContext:
    """What a compiled job needs from the target.

    Attributes:
        environment: The environment command nodes run in (``azureml:NAME:VERSION``).
        target_uri: The ``azureml://`` URI the register and deploy nodes act on.
        datastore: The datastore step source files are uploaded to.
        prefix: The folder of mlshift's files in that datastore.
    """

    def __init__(self, *, environment: str, target_uri: str, datastore: str, prefix: str) -> None:
        self.environment = environment
        self.target_uri = target_uri
        self.datastore = datastore
        self.prefix = prefix

    def code_key(self, file: Path) -> tuple[str, bytes]:
        """Where a step's source file goes (by digest) and its bytes."""
        data = file.read_bytes()
        return f"{self.prefix}/pipelines/code/{hashlib.sha256(data).hexdigest()}/{file.name}", data

    def uri(self, key: str) -> str:
        return f"azureml://datastores/{self.datastore}/paths/{key}"


class _Compiler:
    def __init__(self, ir: PipelineIR, ctx: PipelineContext, values: Mapping[str, Any]) -> None:
        self.ir = ir
        self.ctx = ctx
        self.values = values
        self.where = f"pipeline {ir.name!r}"
        self.code: dict[str, bytes] = {}
        self.nodes: dict[str, str] = {}  # mlshift name (step or condition) → node name
        self.gates: dict[str, set[tuple[str, bool]]] = {}

    # ------------------------------------------------------------------ names and gates

    def _names(self) -> None:
        taken: dict[str, str] = {}
        used = {w.condition for s in self.ir.steps for w in s.when}
        names = [s.name for s in self.ir.steps] + [c.id for c in self.ir.conditions if c.id in used]
        for name in names:
            node = node_name(name)
            if node in taken:
                raise ConfigError(
                    f"{self.where}: {name!r} and {taken[node]!r} would both be node {node!r} on Azure ML "
                    "(node names are lowercase, '-' becomes '_')",
                    field=f"steps.{name}",
                    hint="rename one of them",
                )
            taken[node] = name
            self.nodes[name] = node

    def _effective_gates(self) -> None:
        """A step's gates: its own ``when`` and those of every step it waits for (a step
        downstream of a skipped one is skipped too)."""
        deps: dict[str, set[str]] = {s.name: set() for s in self.ir.steps}
        for edge in self.ir.edges:
            if edge.kind != "condition":
                deps[edge.target].add(edge.source)
        for step in self.ir.steps:  # steps are in dependency order
            mine = {(w.condition, w.branch) for w in step.when}
            for dep in deps[step.name]:
                mine |= self.gates[dep]
            self.gates[step.name] = mine

    # ------------------------------------------------------------------ bindings

    def _step_output(self, step: str, output: str) -> str:
        return f"${{{{parent.jobs.{self.nodes[step]}.outputs.{output}}}}}"

    def _scalar_binding(
        self, key: str, source: InputIR | OperandIR, kind: str, node: dict[str, Any], args: list[str]
    ) -> None:
        """Bind a scalar (or whole-metrics) input ``key`` and add its argument to ``args``."""
        if source.param is not None:
            ptype = next(p.type for p in self.ir.params if p.name == source.param)
            node["component"]["inputs"][key] = {"type": _PARAM_TYPES[ptype]}
            node["inputs"][key] = f"${{{{parent.inputs.{source.param}}}}}"
            args += ["--value", key, f"'${{{{inputs.{key}}}}}'"]
        elif source.step is not None:
            node["component"]["inputs"][key] = {"type": "uri_folder"}
            node["inputs"][key] = self._step_output(source.step, _RESERVED_OUTPUT)
            if kind == "metrics":
                what, name = "metrics", "-"
            elif source.metric is not None:
                what, name = "metric", source.metric
            else:
                what, name = "output", source.output or "output"
            args += ["--from", key, f"${{{{inputs.{key}}}}}", what, name]
        else:
            args += ["--value", key, shlex.quote(_text(source.value))]

    def _node(self, step_name: str, kind: str, display: str) -> dict[str, Any]:
        return {
            "type": "command",
            "display_name": display,
            "tags": {_STEP_TAG: display, _KIND_TAG: kind},
            "inputs": {},
            "outputs": {_RESERVED_OUTPUT: {"type": "uri_folder"}},
            "component": {
                "type": "command",
                "inputs": {},
                "outputs": {_RESERVED_OUTPUT: {"type": "uri_folder"}},
                "environment": self.ctx.environment,
                "command": "",
            },
        }

    def _finish(self, step: StepIR, node: dict[str, Any], command: str, args: list[str]) -> dict[str, Any]:
        component = node["component"]
        # Ordering edges (``after``): the earlier node's mlshift output as an input nobody reads.
        for other in step.after:
            key = f"after_{self.nodes[other]}"
            component["inputs"][key] = {"type": "uri_folder"}
            node["inputs"][key] = self._step_output(other, _RESERVED_OUTPUT)
        if self.gates[step.name]:
            # Read back by describe_run: why a step the job never reached did not run.
            node["tags"][_WHEN_TAG] = json.dumps(sorted([c, b] for c, b in self.gates[step.name]))
        for condition, branch in sorted(self.gates[step.name]):
            gate = self.nodes[condition]
            key = f"gate_{gate}"
            component["inputs"][key] = {"type": "uri_folder"}
            node["inputs"][key] = self._step_output(condition, _RESERVED_OUTPUT)
            args += [
                "--when",
                shlex.quote(condition),
                "true" if branch else "false",
                f"${{{{inputs.{key}}}}}",
            ]
        args += ["--mlshift", f"${{{{outputs.{_RESERVED_OUTPUT}}}}}"]
        component["command"] = " ".join([command, *args])
        component["is_deterministic"] = step.cache
        node["resources"] = {"instance_type": instance_type_for(step.resources.size)}
        if step.env:
            node["environment_variables"] = dict(step.env)
        if step.timeout is not None:
            node["limits"] = {
                "timeout": math.ceil(
                    step.timeout * (step.retries + 1) + total_retry_delay(step.retry_delay, step.retries)
                )
            }
        return node

    # ------------------------------------------------------------------ steps

    def _common_inputs(self, step: StepIR, node: dict[str, Any], args: list[str]) -> None:
        for key, inp in step.inputs.items():
            if inp.type == "artifact":
                if inp.step is None:
                    raise UnsupportedOperation(
                        f"{self.where}: step {step.name!r}: input {key!r} is an artifact from a literal "
                        "path; on Azure ML artifacts come from other steps",
                    )
                node["component"]["inputs"][key] = {"type": "uri_folder"}
                node["inputs"][key] = self._step_output(inp.step, inp.output or "")
                args += ["--input", key, f"${{{{inputs.{key}}}}}"]
            else:
                self._scalar_binding(key, inp, inp.type, node, args)

    def _python(self, step: StepIR) -> dict[str, Any]:
        code = step.python
        assert code is not None
        node = self._node(step.name, "python", step.name)
        for key, out in step.outputs.items():
            if out.type == "artifact":
                node["outputs"][key] = {"type": "uri_folder"}
                node["component"]["outputs"][key] = {"type": "uri_folder"}
        task: dict[str, Any] = {
            "module": code.module,
            "qualname": code.qualname,
            "inputs": {k: i.type for k, i in step.inputs.items()},
            "metrics": step.metrics is not None,
            "retries": step.retries,
            "retry_delay": step.retry_delay,
        }
        args: list[str] = []
        if "." not in code.module:
            # A script or top-level module runs from its file, uploaded by content digest.
            key, data = self.ctx.code_key(Path(code.file))
            self.code[key] = data
            task["file"] = Path(code.file).name
            node["component"]["inputs"]["mlshift_code"] = {"type": "uri_folder"}
            node["inputs"]["mlshift_code"] = {
                "type": "uri_folder",
                "path": self.ctx.uri(key.rsplit("/", 1)[0] + "/"),
            }
            args += ["--code", "${{inputs.mlshift_code}}"]
        args = ["--task", shlex.quote(json.dumps(task, sort_keys=True)), *args]
        self._common_inputs(step, node, args)
        for key, out in step.outputs.items():
            if out.type == "artifact":
                args += ["--output", key, f"${{{{outputs.{key}}}}}"]
        return self._finish(step, node, f"{MLSHIFT_STEP} python", args)

    def _container(self, step: StepIR) -> dict[str, Any]:
        container = step.container
        assert container is not None
        node = self._node(step.name, "container", step.name)
        node["component"]["environment"] = {"image": container.image}
        for key, out in step.outputs.items():
            if out.type == "artifact":
                node["outputs"][key] = {"type": "uri_folder"}
                node["component"]["outputs"][key] = {"type": "uri_folder"}
        for key, inp in step.inputs.items():
            if inp.type in ("artifact", "metrics"):
                node["component"]["inputs"][key] = {"type": "uri_folder"}
                node["inputs"][key] = self._step_output(inp.step or "", inp.output or _RESERVED_OUTPUT)
            elif inp.param is not None:
                ptype = next(p.type for p in self.ir.params if p.name == inp.param)
                node["component"]["inputs"][key] = {"type": _PARAM_TYPES[ptype]}
                node["inputs"][key] = f"${{{{parent.inputs.{inp.param}}}}}"
            elif inp.step is not None:
                raise UnsupportedOperation(
                    f"{self.where}: step {step.name!r}: container input {key!r} takes another step's "
                    "scalar; on Azure ML a container step reads artifacts, parameters and literals",
                )

        def resolve(arg: str) -> str:
            def one(match: re.Match[str]) -> str:
                kind, key = match.group(1), match.group(2)
                if kind is None:
                    return f"${{{{outputs.{_RESERVED_OUTPUT}}}}}/metrics.json"
                if kind == "outputs":
                    return f"${{{{outputs.{key}}}}}"
                inp = step.inputs.get(key)
                if inp is None:
                    raise ConfigError(
                        f"{self.where}: step {step.name!r}: argument {arg!r} names unknown input {key!r}",
                        field=f"steps.{step.name}.container.args",
                    )
                if inp.value is not None and inp.type not in ("artifact", "metrics"):
                    return _text(inp.value)
                return f"${{{{inputs.{key}}}}}"

            return shlex.quote(_PLACEHOLDER.sub(one, arg)).replace("'${{", "${{").replace("}}'", "}}")

        if step.secrets:
            raise UnsupportedOperation(
                f"{self.where}: step {step.name!r} uses secrets, which the Azure ML compiler does not "
                "pass yet",
                hint="read them from Azure Key Vault inside the step",
            )
        if self.gates[step.name]:
            raise UnsupportedOperation(
                f"{self.where}: container step {step.name!r} sits under a condition; on Azure ML a gated "
                "step short-circuits in mlshift's step runner, which a container of your own does not run",
                hint="make it a @step function, or move it out of the `when` block",
            )
        node = self._finish(step, node, "", [])
        # A container step's own command line; mlshift's arguments do not apply to it.
        node["component"]["command"] = " ".join(
            [*(shlex.quote(c) for c in container.command), *(resolve(a) for a in container.args)]
        )
        return node

    def _register(self, step: StepIR) -> dict[str, Any]:
        config = step.register_model
        assert config is not None
        node = self._node(step.name, "register_model", step.name)
        settings = {
            "alias": config.alias,
            "framework": config.framework,
            "tags": config.tags,
            "description": config.description,
            "pipeline": self.ir.name,
        }
        args = [
            "--target",
            shlex.quote(config.target or self.ctx.target_uri),
            "--settings",
            shlex.quote(json.dumps({k: v for k, v in settings.items() if v}, sort_keys=True)),
        ]
        self._common_inputs(step, node, args)
        return self._finish(step, node, f"{MLSHIFT_STEP} register", args)

    def _deploy(self, step: StepIR) -> dict[str, Any]:
        config = step.deploy
        assert config is not None
        node = self._node(step.name, "deploy", step.name)
        settings: dict[str, Any] = {
            "traffic": config.traffic,
            "size": config.size,
            "replicas": config.replicas,
        }
        if config.allow_schema_change:
            settings["allow_schema_change"] = True
        args = [
            "--target",
            shlex.quote(config.target or self.ctx.target_uri),
            "--settings",
            shlex.quote(json.dumps({k: v for k, v in settings.items() if v is not None}, sort_keys=True)),
        ]
        self._common_inputs(step, node, args)
        return self._finish(step, node, f"{MLSHIFT_STEP} deploy", args)

    def _fail(self, step: StepIR) -> dict[str, Any]:
        assert step.fail is not None
        node = self._node(step.name, "fail", step.name)
        return self._finish(step, node, f"{MLSHIFT_STEP} fail", ["--message", shlex.quote(step.fail.message)])

    def _gate(self, condition_id: str) -> dict[str, Any]:
        cond = self.ir.condition(condition_id)
        node = self._node(condition_id, "gate", condition_id)
        args: list[str] = []
        described: dict[str, Any] = {"id": cond.id, "op": cond.op}
        for side, operand in (("left", cond.left), ("right", cond.right)):
            kind: str | None = operand.type
            if operand.param is not None:
                kind = next(p.type for p in self.ir.params if p.name == operand.param)
            elif operand.step is not None and kind is None:
                source = self.ir.step(operand.step)
                kind = "float" if operand.metric is not None else source.outputs[operand.output or ""].type
            described[side] = {"type": kind}
            if operand.param is None and operand.step is None:
                described[side]["value"] = operand.value
            else:
                self._scalar_binding(side, operand, kind or "str", node, args)
        args = ["--condition", shlex.quote(json.dumps(described, sort_keys=True)), *args]
        # A gate under another condition (nested ``when``) is not produced by the DSL: none here.
        node["component"]["is_deterministic"] = True
        node["resources"] = {"instance_type": instance_type_for("cpu-small")}
        args += ["--mlshift", f"${{{{outputs.{_RESERVED_OUTPUT}}}}}"]
        node["component"]["command"] = " ".join([f"{MLSHIFT_STEP} gate", *args])
        return node

    # ------------------------------------------------------------------ the job

    def compile(self) -> dict[str, Any]:
        ir = self.ir
        self._names()
        self._effective_gates()
        for step in ir.steps:
            if _RESERVED_OUTPUT in step.outputs:
                raise ConfigError(
                    f"{self.where}: step {step.name!r} has an output called {_RESERVED_OUTPUT!r}, which "
                    "mlshift uses on Azure ML for every step's metrics and values",
                    field=f"steps.{step.name}.outputs.{_RESERVED_OUTPUT}",
                )
        jobs: dict[str, Any] = {}
        used = [c.id for c in ir.conditions if c.id in self.nodes]
        # Gates first, each before the steps it controls (the DAG order holds: a gate's inputs
        # come from steps that precede the steps it gates).
        builders = {
            "python": self._python,
            "container": self._container,
            "register_model": self._register,
            "deploy": self._deploy,
            "fail": self._fail,
        }
        emitted: set[str] = set()
        for step in ir.steps:
            for condition, _ in sorted(self.gates[step.name]):
                if condition not in emitted and condition in used:
                    jobs[self.nodes[condition]] = self._gate(condition)
                    emitted.add(condition)
            jobs[self.nodes[step.name]] = builders[step.kind](step)
        inputs = {k: v for k, v in self.values.items() if v is not None}
        return {
            "$schema": SCHEMA,
            "type": "pipeline",
            "display_name": ir.name,
            "experiment_name": experiment_name(ir.name),
            "description": ir.description or f"mlshift pipeline {ir.name}",
            "tags": {"mlshift:managed": "true", "mlshift:pipeline": ir.name},
            "properties": {
                "mlshift:params": json.dumps({p.name: p.type for p in ir.params}, sort_keys=True),
                "mlshift:hash": ir.hash or ir.content_hash(),
            },
            "inputs": inputs,
            "settings": {"default_compute": "serverless", "continue_on_step_failure": False},
            "jobs": jobs,
        }


def _text(value: Any) -> str:
    if isinstance(value, bool):
        return json.dumps(value)
    return str(value)


def compile_job(
    ir: PipelineIR, ctx: PipelineContext, values: Mapping[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The pipeline job for ``ir`` run with ``values`` (default: the parameters' defaults), and
    the step source files it needs in the datastore (key → bytes).

    Raises:
        ConfigError: a name Azure cannot take, a bad container argument.
        UnsupportedOperation: what the compiler does not map (secrets, literal artifact paths).
    """
    resolved = ir.resolve_params(values) if values is None else dict(values)
    compiler = _Compiler(ir, ctx, resolved)
    return compiler.compile(), compiler.code


def to_yaml(job: Mapping[str, Any]) -> str:
    """The job as the YAML ``az ml job create --file`` and ``azure.ai.ml.load_job`` read."""
    import yaml

    return str(yaml.safe_dump(dict(job), sort_keys=False, allow_unicode=True, width=1 << 16))


def load(job: Mapping[str, Any]) -> Any:
    """The SDK's ``PipelineJob`` for a compiled job, through ``azure.ai.ml.load_job`` (which
    validates it against the pipeline job schema).

    Raises:
        ConfigError: what the SDK's schema validation refused.
    """
    from azure.ai.ml import load_job

    try:
        return load_job(io.StringIO(to_yaml(job)))
    except Exception as exc:  # marshmallow's ValidationError, the SDK's ValidationException
        raise ConfigError(
            f"the Azure ML SDK refused the compiled pipeline job: {str(exc).strip()[:2000]}",
            field="pipeline",
        ) from exc


# ---------------------------------------------------------------------- the service

_RUN_STATUS: dict[str, RunStatus] = {
    "NotStarted": "running",
    "Queued": "running",
    "Preparing": "running",
    "Provisioning": "running",
    "Starting": "running",
    "Running": "running",
    "Finalizing": "running",
    "CancelRequested": "running",
    "Completed": "succeeded",
    "Failed": "failed",
    "Canceled": "cancelled",
    "NotResponding": "failed",
}
_STEP_STATUS: dict[str, StepStatus] = {
    "NotStarted": "pending",
    "Queued": "running",
    "Preparing": "running",
    "Provisioning": "running",
    "Starting": "running",
    "Running": "running",
    "Finalizing": "running",
    "CancelRequested": "running",
    "Completed": "succeeded",
    "Failed": "failed",
    "Canceled": "cancelled",
    "NotResponding": "failed",
}


def _check_run_id(run_id: str) -> str:
    if not _JOB_NAME.fullmatch(run_id):
        raise ConfigError(
            f"{run_id!r} is not an Azure ML job name (letters, digits, '_' and '-')",
            field="run_id",
            hint="`mlshift pipelines list --target azureml://SUB/RG/WS` shows the runs' ids",
        )
    return run_id


def _time(value: Any) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=timezone.utc)
    if isinstance(value, str):
        try:
            return _time(datetime.fromisoformat(value.replace("Z", "+00:00")))
        except ValueError:
            return None
    return None


def _status(job: Any) -> str:
    """A job's status as Azure spells it (the SDK hands some out as ``JobStatus`` members)."""
    status = getattr(job, "status", None)
    return str(getattr(status, "value", status))


def _typed(kind: str | None, value: Any) -> Any:
    if value is None:
        return None
    try:
        if kind == "int":
            return int(float(value))
        if kind == "float":
            return float(value)
    except (TypeError, ValueError):
        return value
    if kind == "bool":
        return value if isinstance(value, bool) else str(value).strip().lower() == "true"
    return value


class AzureMLPipelineService:
    """Pipelines on Azure ML: compile the IR to a pipeline job, submit, follow, cancel, schedule.

    ``adapter.pipelines`` of an ``azureml://`` target.
    """

    def __init__(self, adapter: AzureMLAdapter) -> None:
        self._adapter = adapter
        # What never changes once read: a finished node's outputs, a run's node list.
        self._step_outputs: dict[str, tuple[dict[str, Any], dict[str, float], str | None]] = {}
        self._failures: dict[str, str] = {}

    @property
    def _ml(self) -> Any:
        return self._adapter.clients.ml()

    def context(self, environment: str | None = None) -> PipelineContext:
        """What compiled nodes need: the serving environment, this target's URI, the datastore.

        The serving environment is the one endpoints use (made in the workspace on first use),
        unless ``environment`` is given.
        """
        from urllib.parse import urlencode

        options = self._adapter.options
        ws = self._adapter.workspace
        query: dict[str, str] = {}
        if options.datastore != "workspaceblobstore":
            query["datastore"] = options.datastore
        if options.prefix != "mlshift":
            query["prefix"] = options.prefix
        if options.image_uri:
            query["image_uri"] = options.image_uri
        if options.environment:
            query["environment"] = options.environment
        uri = f"azureml://{ws.subscription}/{ws.resource_group}/{ws.name}"
        return PipelineContext(
            environment=environment or self._adapter.endpoints._serving_environment(),
            target_uri=uri + (f"?{urlencode(query)}" if query else ""),
            datastore=options.datastore,
            prefix=options.prefix,
        )

    def compile(self, ir: PipelineIR) -> dict[str, Any]:
        """The pipeline job of ``ir`` with its parameters' defaults, as YAML-ready data.

        The SDK's own loader and schema validation check it before it is returned.

        Raises:
            ConfigError, UnsupportedOperation: see :func:`compile_job`.
        """
        self._precheck(ir, None)
        job, _ = compile_job(ir, self.context())
        load(job)
        return job

    def _precheck(self, ir: PipelineIR, values: Mapping[str, Any] | None) -> None:
        """Compile once without the workspace: what Azure cannot run is refused before any call
        (the serving environment is made in the workspace when missing)."""
        compile_job(ir, self.context(environment="azureml:mlshift-serve:1"), values)

    # ------------------------------------------------------------------ the neutral run contract

    @property
    def poll_interval(self) -> float:
        """Seconds between status checks while a run is followed (the ``poll_interval`` option)."""
        return self._adapter.options.poll_interval

    def _upload_code(self, code: Mapping[str, bytes]) -> None:
        store = self._adapter.store
        for key, data in code.items():
            if store.get(key) is None:
                store.put(key, data)

    def _job_entity(
        self, ir: PipelineIR, values: Mapping[str, Any], *, use_cache: bool, name: str | None = None
    ) -> Any:
        self._precheck(ir, values)
        job, code = compile_job(ir, self.context(), values)
        if not use_cache:
            job["settings"]["force_rerun"] = True
        entity = load(job)
        self._upload_code(code)
        if name is not None:
            entity.name = name
        return entity

    def submit(
        self,
        ir: PipelineIR,
        params: Mapping[str, Any] | None = None,
        *,
        use_cache: bool = True,
        max_parallel: int | None = None,
    ) -> str:
        """Submit a pipeline job; returns its name (the run id).

        Step source files go to the datastore by content digest first (skipped when there).
        ``max_parallel`` is not passed: Azure ML decides how many nodes run at once.
        """
        if max_parallel is not None and max_parallel < 1:
            raise ConfigError(f"max_parallel must be at least 1, got {max_parallel}", field="max_parallel")
        values = ir.resolve_params(params)
        stamp = datetime.now(timezone.utc).strftime("%Y%m%d%H%M%S")
        name = f"{experiment_name(ir.name)[:40]}-{stamp}-{secrets.token_hex(3)}".lower()
        entity = self._job_entity(ir, values, use_cache=use_cache, name=name)
        with azure_errors(f"submit pipeline {ir.name!r}"):
            created = self._ml.jobs.create_or_update(entity, experiment_name=experiment_name(ir.name))
        return str(created.name)

    def _job(self, run_id: str) -> Any:
        with azure_errors(f"read pipeline job {run_id!r}"):
            return self._ml.jobs.get(run_id)

    def describe_run(self, run_id: str) -> RemoteRunState:
        """The pipeline job in neutral terms: every step, with outputs and metrics.

        Raises:
            NotFound: for an unknown job name.
        """
        from mlshift.pipelines.runs import RemoteRunState

        _check_run_id(run_id)
        job = self._job(run_id)
        tags = dict(job.tags or {})
        if "mlshift:pipeline" not in tags:
            raise NotFound(
                f"Azure ML job {run_id!r} is not a pipeline run mlshift started", provider=PROVIDER
            )
        status = _RUN_STATUS.get(_status(job), "running")
        with azure_errors(f"list the steps of pipeline job {run_id!r}"):
            children = {
                str((c.tags or {}).get(_STEP_TAG) or c.display_name): c
                for c in self._ml.jobs.list(parent_job_name=run_id)
            }
        steps: list[StepRun] = []
        failed: list[str] = []
        gates: dict[str, bool] = {}
        for node_id, node in job.jobs.items():
            node_tags = dict(getattr(node, "tags", None) or {})
            kind = str(node_tags.get(_KIND_TAG, "container"))
            name = str(node_tags.get(_STEP_TAG) or node_id)
            child = children.get(name)
            if kind == "gate":
                if child is not None and _status(child) == "Completed":
                    outputs, _, _ = self._read_outputs(child)
                    gates[name] = bool(outputs.get("holds"))
                continue
            if child is None or _status(child) == "NotStarted":
                when = [(str(c), bool(b)) for c, b in json.loads(str(node_tags.get(_WHEN_TAG) or "[]"))]
                steps.append(self._not_started(name, kind, status, failed, when, gates))
                continue
            step = self._step_run(name, kind, child, [str(o) for o in (node.outputs or {})])
            if step.status == "failed":
                failed.append(name)
            steps.append(step)
        message: str | None = None
        first_failed = next((s for s in steps if s.status == "failed"), None)
        if first_failed is not None:
            message = f"step {first_failed.name!r} failed: {first_failed.message}"
        if status == "cancelled":
            message = "stopped"
        kinds = json.loads(str((job.properties or {}).get("mlshift:params") or "{}"))
        params = {}
        for key, value in (job.inputs or {}).items():
            result = getattr(value, "result", None)
            params[key] = _typed(kinds.get(key), result() if callable(result) else value)
        context = getattr(job, "creation_context", None)
        return RemoteRunState(
            id=run_id,
            pipeline=str(tags["mlshift:pipeline"]),
            status=status,
            message=message,
            params=params,
            created_at=_time(getattr(context, "created_at", None)),
            finished_at=(
                _time(getattr(context, "last_modified_at", None))
                if status in ("succeeded", "failed", "cancelled")
                else None
            ),
            steps=tuple(steps),
        )

    @staticmethod
    def _not_started(
        name: str,
        kind: str,
        status: str,
        failed: list[str],
        when: builtins.list[tuple[str, bool]],
        gates: Mapping[str, bool],
    ) -> StepRun:
        from mlshift.pipelines.runs import StepRun

        if status == "running":
            return StepRun(name=name, kind=kind, status="pending")
        against = next((c for c, b in when if c in gates and gates[c] != b), None)
        if against is not None:
            # It would have short-circuited had the job reached it: say so, as other targets do.
            decided = "true" if gates[against] else "false"
            return StepRun(name=name, kind=kind, status="skipped", message=f"{against} is {decided}")
        if status == "cancelled":
            return StepRun(
                name=name, kind=kind, status="cancelled", message="the run was stopped before it started"
            )
        message = f"skipped because {', '.join(failed)} failed" if failed else "not run"
        return StepRun(name=name, kind=kind, status="skipped", message=message)

    def _output_uri(self, child: Any, output: str) -> str:
        """Where a node's output is: Azure's default path (``azureml/<job>/<output>/``) of the job
        that produced it (the reused one, for a node served from cache)."""
        props = dict(child.properties or {})
        source = props.get("azureml.reusedrunid") or child.name
        return f"azureml://datastores/{self._adapter.options.datastore}/paths/azureml/{source}/{output}/"

    def _read_outputs(self, child: Any) -> tuple[dict[str, Any], dict[str, float], str | None]:
        """A finished node's ``outputs.json``, ``metrics.json`` and skip reason (read once)."""
        if child.name in self._step_outputs:
            return self._step_outputs[child.name]
        store = self._adapter.store
        folder = self._output_uri(child, _RESERVED_OUTPUT).split("/paths/", 1)[1]
        read: dict[str, Any] = {}
        for file in ("outputs", "metrics", "skipped"):
            try:
                found = store.get(f"{folder}{file}.json")
            except MlshiftError as exc:  # e.g. no blob read role: report the run without them
                logger.warning("cannot read %s.json of job %s: %s", file, child.name, exc)
                return {}, {}, None
            read[file] = json.loads(found.data or b"{}") if found is not None else {}
        skipped = read["skipped"].get("reason") if read["skipped"] else None
        result = (dict(read["outputs"]), {k: float(v) for k, v in read["metrics"].items()}, skipped)
        self._step_outputs[child.name] = result
        return result

    def _step_run(self, name: str, kind: str, child: Any, output_names: builtins.list[str]) -> StepRun:
        from mlshift.pipelines.runs import StepRun

        status = _STEP_STATUS.get(_status(child), "running")
        props = dict(child.properties or {})
        reused = str(props.get("azureml.isreused", "")).lower() == "true"
        source = props.get("azureml.reusedpipelinerunid") if reused else None
        outputs: dict[str, Any] = {}
        metrics: dict[str, float] = {}
        message: str | None = None
        if status == "succeeded":
            values, metrics, skipped = self._read_outputs(child)
            if skipped is not None:
                status, message = "skipped", skipped
                metrics = {}
            else:
                status = "cached" if reused else "succeeded"
                outputs = dict(values)
                for output in output_names:
                    if output != _RESERVED_OUTPUT:
                        outputs[output] = {"uri": self._output_uri(child, output)}
        elif status == "failed":
            # A failed job's log no longer changes: read once, not on every status check.
            if child.name not in self._failures:
                self._failures[child.name] = self._failure(child)
            message = self._failures[child.name]
        context = getattr(child, "creation_context", None)
        return StepRun(
            name=name,
            kind=kind,
            status=status,
            attempts=1 if status in ("succeeded", "failed", "cached") else 0,
            executions=0 if status in ("cached", "skipped") or kind == "fail" else 1,
            cached_from=str(source) if source else None,
            outputs=outputs,
            metrics=metrics,
            message=message,
            started_at=_time(getattr(context, "created_at", None)),
            finished_at=_time(getattr(context, "last_modified_at", None))
            if status not in ("running",)
            else None,
        )

    def _failure(self, child: Any) -> str:
        """Why a node failed: the ``step failed: ...`` line it wrote, else its log's last lines."""
        text = self._log_of(child.name)
        lines = [line for line in text.splitlines() if line.strip()]
        for line in reversed(lines):
            if line.startswith("step failed: "):
                return line.removeprefix("step failed: ")
        tail = "\n".join(lines[-10:])
        return "the job failed" + (f"; last log lines:\n{tail}" if tail else " (it wrote no log)")

    def cancel_run(self, run_id: str) -> None:
        """Ask Azure ML to cancel the pipeline job (running nodes stop, finished ones stay)."""
        _check_run_id(run_id)
        with azure_errors(f"cancel pipeline job {run_id!r}"):
            self._ml.jobs.begin_cancel(run_id).result(timeout=self._adapter.options.wait_timeout)

    def list_runs(self, pipeline: str | None = None, limit: int = 50) -> builtins.list[str]:
        """Job names of mlshift's pipeline runs, newest first (of ``pipeline``, when given)."""
        if limit < 1:
            raise ConfigError(f"limit must be at least 1, got {limit}", field="limit")
        found: list[tuple[datetime, str]] = []
        with azure_errors("list pipeline jobs"):
            for job in self._ml.jobs.list():
                tags = dict(getattr(job, "tags", None) or {})
                if "mlshift:pipeline" not in tags or (
                    pipeline is not None and tags["mlshift:pipeline"] != pipeline
                ):
                    continue
                created = _time(getattr(getattr(job, "creation_context", None), "created_at", None))
                found.append((created or datetime.min.replace(tzinfo=timezone.utc), str(job.name)))
        found.sort(reverse=True)
        return [name for _, name in found[:limit]]

    def run_logs(self, run_id: str, step: str) -> str:
        """What ``step``'s job wrote (``user_logs/std_log.txt``), or ``""``."""
        _check_run_id(run_id)
        with azure_errors(f"list the steps of pipeline job {run_id!r}"):
            for child in self._ml.jobs.list(parent_job_name=run_id):
                if str((child.tags or {}).get(_STEP_TAG) or child.display_name) == step:
                    return self._log_of(str(child.name))
        return ""

    def _log_of(self, job_name: str) -> str:
        """A job's ``user_logs/std_log.txt``, through run history's log file links."""
        try:
            with azure_errors(f"read the log files of job {job_name!r}"):
                details = self._ml.jobs._runs_operations.get_run_details(job_name)
        except MlshiftError as exc:
            logger.warning("cannot read the logs of job %s: %s", job_name, exc)
            return ""
        files = dict(getattr(details, "log_files", None) or {})
        url = files.get("user_logs/std_log.txt") or next(iter(files.values()), None)
        if not url:
            return ""
        from azure.core.rest import HttpRequest

        response = self._adapter.clients.pipeline().run(HttpRequest("GET", url)).http_response
        if response.status_code != 200:
            return ""
        return bytes(response.body()).decode(errors="replace")

    # ------------------------------------------------------------------ schedules

    def schedule_name(self, ir: PipelineIR) -> str:
        """The ``JobSchedule`` a pipeline's cron schedule lives in: ``mlshift-<pipeline>``."""
        return f"mlshift-{experiment_name(ir.name)}"[:255]

    def _schedule_fingerprint(self, ir: PipelineIR, values: Mapping[str, Any]) -> str:
        assert ir.schedule is not None
        data = {"ir": ir.hash or ir.content_hash(), "params": dict(values), "cron": ir.schedule.model_dump()}
        return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:32]

    def _live_schedule(self, name: str) -> Any | None:
        try:
            with azure_errors(f"read schedule {name!r}"):
                return self._ml.schedules.get(name)
        except NotFound:
            return None

    def _change(
        self,
        pipeline: str,
        action: ScheduleAction,
        name: str,
        ir: PipelineIR | None,
        live: Any,
        *,
        dry_run: bool,
    ) -> ScheduleChange:
        from mlshift.adapter import ScheduleChange

        gone = action in ("deleted", "absent")
        cron = timezone_ = None
        if ir is not None and ir.schedule is not None and not gone:
            cron, timezone_ = ir.schedule.cron, ir.schedule.timezone
        exists = not gone and (live is not None or not dry_run)
        return ScheduleChange(
            pipeline=pipeline,
            action=action,
            schedule_id=name if exists else None,
            cron=cron,
            timezone=timezone_,
            dry_run=dry_run,
        )

    def sync_schedule(
        self, ir: PipelineIR, params: Mapping[str, Any] | None = None, *, dry_run: bool = False
    ) -> ScheduleChange:
        """Make the pipeline's ``JobSchedule`` match its cron schedule; returns what changed.

        A pipeline with a schedule gets one (created, or updated when the pipeline, its
        parameters or its cron changed); one without loses it. An unchanged pipeline makes
        no mutating call; with ``dry_run`` only reads are made.

        Raises:
            ConfigError: a parameter or a pipeline Azure cannot run (before any change).
        """
        values = ir.resolve_params(params)
        name = self.schedule_name(ir)
        live = self._live_schedule(name)
        action: ScheduleAction
        if ir.schedule is None:
            action = "absent" if live is None else "deleted"
        elif live is None:
            action = "created"
        else:
            fingerprint = dict(live.tags or {}).get("mlshift:fingerprint")
            action = "unchanged" if fingerprint == self._schedule_fingerprint(ir, values) else "updated"
        if dry_run or action in ("absent", "unchanged"):
            return self._change(ir.name, action, name, ir, live, dry_run=dry_run)
        if action == "deleted":
            with azure_errors(f"delete schedule {name!r}"):
                self._ml.schedules.begin_delete(name).result(timeout=self._adapter.options.wait_timeout)
            return self._change(ir.name, action, name, ir, live, dry_run=False)
        from azure.ai.ml.entities import CronTrigger, JobSchedule

        assert ir.schedule is not None
        entity = self._job_entity(ir, values, use_cache=True)
        schedule = JobSchedule(
            name=name,
            trigger=CronTrigger(expression=ir.schedule.cron, time_zone=ir.schedule.timezone),
            create_job=entity,
            display_name=f"mlshift pipeline {ir.name}",
            tags=self._adapter.resource_tags(
                {
                    "mlshift:managed": "true",
                    "mlshift:pipeline": ir.name,
                    "mlshift:fingerprint": self._schedule_fingerprint(ir, values),
                }
            ),
        )
        verb = "create" if action == "created" else "update"
        with azure_errors(f"{verb} schedule {name!r}"):
            self._ml.schedules.begin_create_or_update(schedule).result(
                timeout=self._adapter.options.wait_timeout
            )
        return self._change(ir.name, action, name, ir, live, dry_run=False)

    def delete_schedule(self, pipeline_name: str, *, dry_run: bool = False) -> ScheduleChange:
        """Delete the schedule of the pipeline called ``pipeline_name`` (``absent``: it had none)."""
        name = f"mlshift-{experiment_name(pipeline_name)}"[:255]
        live = self._live_schedule(name)
        if live is None:
            return self._change(pipeline_name, "absent", name, None, None, dry_run=dry_run)
        if not dry_run:
            with azure_errors(f"delete schedule {name!r}"):
                self._ml.schedules.begin_delete(name).result(timeout=self._adapter.options.wait_timeout)
        return self._change(pipeline_name, "deleted", name, None, live, dry_run=dry_run)
