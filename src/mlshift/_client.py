"""``mlshift.connect()`` and the :class:`Client` it returns."""

from __future__ import annotations

import builtins
import functools
import inspect
import json
import os
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from mlshift._routing import spread_weights
from mlshift.errors import ConfigError, InvalidPayload, NotFound, ProviderError, UnsupportedOperation

if TYPE_CHECKING:
    from types import TracebackType

    from pydantic import BaseModel

    from mlshift.adapter import (
        Adapter,
        Capability,
        EndpointState,
        Invocation,
        RolloutRecord,
        ScheduleChange,
        ScheduleService,
    )
    from mlshift.monitoring._store import VersionBaseline
    from mlshift.pipelines import Pipeline
    from mlshift.pipelines._ir import PipelineIR
    from mlshift.plan import ApplyEvent, ApplyResult, GateCheck, Plan
    from mlshift.specs.endpoint import EndpointSpec
    from mlshift.specs.model import ModelSpec, ModelVersion, Signature
    from mlshift.specs.monitor import CaptureSpec
    from mlshift.specs.project import ProjectFile
    from mlshift.specs.rollout import RolloutStrategy

__all__ = ["Client", "EndpointsAPI", "ModelsAPI", "PipelinesAPI", "Prediction", "compile_pipeline", "connect"]

M = TypeVar("M", bound="BaseModel")


def validate_spec(model: type[M], data: Any, what: str) -> M:
    """Validate ``data`` against a spec model, naming ``what`` in the error.

    Raises:
        ConfigError: naming the field path and what is wrong with it.
    """
    try:
        return model.model_validate(data)
    except ConfigError as exc:
        detail = exc.detail
        where = f"{exc.field}: " if exc.field else ""
        raise ConfigError(f"{what}: {where}{detail}", field=exc.field) from None


def default_variant_name(version: ModelVersion) -> str:
    """``iris:3`` → ``iris-v3``, lowercased and with ``_``/``.`` turned into ``-``."""
    base = version.name.lower().replace("_", "-").replace(".", "-")
    ver = version.version.lower().replace("_", "-").replace(".", "-")
    return f"{base}-v{ver}"[:63].strip("-")


class Prediction:
    """The answer of an endpoint to a ``predict`` call.

    Attributes:
        predictions: The model's outputs, one per input row.
        variant: The variant that served the request.
        request_id: The request's id (the caller's ``request_id=``, else one mlshift made):
            a captured request is recorded under it, so labels posted for it with
            ``client.monitors.labels`` join it. ``None`` on a target that names no requests.
        invocation: The raw response.
    """

    def __init__(self, predictions: list[Any], invocation: Invocation) -> None:
        self.predictions = predictions
        self.variant = invocation.variant
        self.request_id = invocation.request_id
        self.invocation = invocation

    def __repr__(self) -> str:
        return (
            f"Prediction(variant={self.variant!r}, request_id={self.request_id!r}, "
            f"predictions={self.predictions!r})"
        )


#: The longest request id: what model servers keep of ``X-Request-Id`` and labels accept.
MAX_REQUEST_ID = 128


def _request_id(value: Any) -> str:
    """``value`` checked as a request id, or a new one (24 random hex digits) for ``None``.

    It travels as an HTTP header: printable ASCII, no space at either end (a server would strip
    it, and the captured id would no longer be the one labels are posted for).
    """
    if value is None:
        return os.urandom(12).hex()
    if (
        not isinstance(value, str)
        or not 0 < len(value) <= MAX_REQUEST_ID
        or value != value.strip()
        or not all(" " <= c <= "~" for c in value)
    ):
        raise ConfigError(
            f"request_id {value!r} cannot name a request",
            field="request_id",
            hint=f"use 1 to {MAX_REQUEST_ID} printable ASCII characters, e.g. an order number",
        )
    return value


def _takes_request_id(invoke: Callable[..., Any]) -> bool:
    """Whether a target's ``invoke`` takes ``request_id=`` (third-party and older ones may not).

    Asked on every call, answered once per function: reading a signature costs tens of µs.
    """
    return _function_takes_request_id(getattr(invoke, "__func__", invoke))


@functools.lru_cache(maxsize=64)
def _function_takes_request_id(function: Callable[..., Any]) -> bool:
    try:
        parameters = inspect.signature(function).parameters
    except (TypeError, ValueError):  # pragma: no cover - builtins without a signature
        return False
    return "request_id" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values())


def _is_dataframe(data: Any) -> bool:
    # By name, so that pandas is never imported to ask.
    cls = type(data)
    return cls.__name__ == "DataFrame" and cls.__module__.split(".", 1)[0] == "pandas"


def _json_scalar(value: Any) -> Any:
    if isinstance(value, float):
        return None if value != value else value
    if type(value).__name__ in ("NAType", "NaTType"):
        return None
    return value


def _encode_dataframe(frame: Any) -> tuple[bytes, str]:
    """A pandas DataFrame as ``dataframe_split`` (named columns) or ``instances`` (unnamed).

    Named columns go by name: the server checks them against the signature, puts them in the
    model's order and names any that are missing or unknown.
    """
    names = list(frame.columns)
    if len(set(map(str, names))) != len(names):
        duplicated = sorted({str(n) for n in names if list(map(str, names)).count(str(n)) > 1})
        raise InvalidPayload(
            f"the DataFrame has duplicated columns {', '.join(map(repr, duplicated))}",
            hint="give every column its own name",
        )
    # Series.tolist() gives Python scalars (numpy's int64 is not JSON), column by column.
    columns = [frame[c].tolist() for c in names] if names else []
    # NaN, pd.NA and NaT are not JSON; as null the server names the row and column missing a value.
    rows = [[_json_scalar(v) for v in r] for r in zip(*columns, strict=True)] if columns else []
    if not rows:
        raise InvalidPayload("the DataFrame has no rows", hint="pass at least one row")
    if all(isinstance(n, str) for n in names):
        body: dict[str, Any] = {"dataframe_split": {"columns": names, "data": rows}}
    else:  # a RangeIndex (an array turned DataFrame): the values are in the model's order
        body = {"instances": rows}
    return json.dumps(body, default=str).encode(), "application/json"


def _encode_payload(data: Any) -> tuple[bytes, str]:
    if _is_dataframe(data):
        return _encode_dataframe(data)
    if isinstance(data, bytes):
        return data, "application/json"
    if isinstance(data, str):
        text = data.strip()
        if text.startswith(("{", "[")):
            return text.encode(), "application/json"
        return text.encode(), "text/csv"
    if hasattr(data, "tolist"):  # numpy arrays without importing numpy
        data = data.tolist()
    if isinstance(data, Mapping):
        return json.dumps(data).encode(), "application/json"
    if isinstance(data, (list, tuple)):
        return json.dumps({"instances": list(data)}).encode(), "application/json"
    raise InvalidPayload(
        f"cannot send a {type(data).__name__} as a prediction request",
        hint="pass a list of rows, a dict such as {'instances': [...]}, JSON text, CSV text or bytes",
    )


def _has_file(path: Path, name: str) -> bool:
    return (path / name).is_file() and not (path / name).is_symlink()


def _check_model_folder(path: Path, framework: str | None) -> None:
    """Refuse a folder that is not a model (predictor or MLflow), without looking any further."""
    if path.is_symlink() or not path.is_dir():
        return  # scan_artifact names what is wrong with it
    if framework is not None and framework not in ("predictor", "mlflow"):
        raise ConfigError(
            f"artifact {str(path)!r} is a directory, but {framework} models are a single file",
            field="path",
            hint="pass the model file itself (.skops, .joblib, .onnx, .json, .ubj, .txt)",
        )
    wanted = {"predictor": ("predictor.py",), "mlflow": ("MLmodel",)}.get(
        framework or "", ("predictor.py", "MLmodel")
    )
    if not any(_has_file(path, name) for name in wanted):
        raise ConfigError(
            f"artifact directory {str(path)!r} has {' or '.join(f'no {n}' for n in wanted)}, "
            "so it is not a model",
            field="path",
            hint="a predictor model is a directory with a predictor.py defining class Predictor; "
            "an MLflow model is the folder mlflow's save_model writes (with its MLmodel file); "
            "for other frameworks pass the model file (.skops, .joblib, .onnx, ...)",
        )


def _progress_counter(
    total: int, progress: Callable[[int, int], None] | None
) -> Callable[[int], None] | None:
    if progress is None:
        return None
    done = 0

    def step(n: int) -> None:
        nonlocal done
        done += n
        progress(done, total)

    return step


class PickleWarning(UserWarning):
    """A pickled (joblib/pickle) model was registered: loading it runs whatever it contains."""


def _warn_pickle(path: Path) -> None:
    import warnings

    # The default warning filter shows this once per process, not once per model.
    warnings.warn(
        f"{path.name} is a pickle: loading it runs whatever code it contains. Register only "
        "pickles you made or trust; save with skops (.skops) for files of unknown origin",
        PickleWarning,
        stacklevel=3,
    )


class ModelsAPI:
    """``client.models``: register, find and label model versions."""

    def __init__(self, adapter: Adapter) -> None:
        self._adapter = adapter

    def register(
        self,
        name: str,
        path: str | Path,
        *,
        framework: str | None = None,
        metrics: Mapping[str, float] | None = None,
        tags: Mapping[str, str] | None = None,
        signature: Signature | None = None,
        description: str | None = None,
        skops_trust: Sequence[str] = (),
        progress: Callable[[int, int], None] | None = None,
        baseline: Any = None,
        categorical: Sequence[str] = (),
        baseline_labels: Any = None,
    ) -> ModelVersion:
        """Register a new version of ``name`` from a local artifact or an MLflow model URI.

        The artifact is checked before anything is stored: it must exist, be loadable by the
        framework, and its signature is inferred when not given. Identical bytes are stored once.

        An MLflow URI (``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, ``runs:/RUN_ID/PATH``)
        is resolved on the tracking server in ``MLFLOW_TRACKING_URI`` (needs the ``mlflow``
        extra); its artifacts are downloaded and registered as an MLflow model folder, with
        ``mlflow.*`` tags saying where they came from.

        Args:
            name: The model's name.
            path: A model file (``.skops``, ``.joblib``, ``.onnx``, XGBoost ``.json``/``.ubj``,
                a LightGBM text model), an MLflow model folder or URI, or a predictor directory.
            framework: One of :data:`~mlshift.specs.model.FRAMEWORKS`; guessed from the path
                when omitted.
            skops_trust: Type names this ``.skops`` file may hold beyond the trusted set
                (see ``docs/security.md``); recorded in the ``mlshift.skops-trust`` tag and
                honoured wherever the version is loaded.
            progress: Called as ``progress(bytes_hashed, total_bytes)`` while the artifact is
                hashed (a megabyte at a time), for a progress bar on big artifacts.
            baseline: The training features (rows, ``{column: values}``, a numpy array or a
                DataFrame): per-feature statistics, and those of the version's predictions on
                them, are kept with the version for monitors (``docs/monitoring.md``).
            categorical: Baseline columns to treat as categories.
            baseline_labels: The ground truth of the baseline rows (``y_train``), one per row:
                the version's accuracy and F1 (or MAE and RMSE) on them are kept as the
                references of monitors' ``model_quality.max_drop``.

        Raises:
            ConfigError: missing/unreadable artifact, unknown framework, bad name or metric,
                a ``.skops`` file holding types nobody trusted, a symbolic link out of the
                artifact, a FIFO/device/socket in it, an artifact over the size limit
                (``MLSHIFT_MAX_ARTIFACT_MB``), a malformed MLflow URI or no
                ``MLFLOW_TRACKING_URI``.
            NotFound: an MLflow model, version, alias or run that does not exist.
            ImportError: for an MLflow URI without mlflow installed (naming the extra).
        """
        from mlshift._mlflow import is_mlflow_uri

        if is_mlflow_uri(path):
            from mlshift._mlflow import download_mlflow_model, parse_mlflow_uri

            source = parse_mlflow_uri(str(path))
            with download_mlflow_model(source) as (local, resolved):
                return self.register(
                    name,
                    local,
                    framework=framework,
                    metrics=metrics,
                    tags={**resolved.tags, **(tags or {})},
                    signature=signature,
                    description=description,
                    skops_trust=skops_trust,
                    progress=progress,
                    baseline=baseline,
                    categorical=categorical,
                    baseline_labels=baseline_labels,
                )
        from mlshift._artifacts import SKOPS_TRUST_TAG, digest_path, parse_skops_trust, scan_artifact
        from mlshift.adapter import Artifact
        from mlshift.serving import detect_framework, infer_signature
        from mlshift.serving._loaders import check_skops_trust
        from mlshift.specs.model import ModelSpec

        p = Path(path).expanduser()
        # Before reading a byte: no symlink out, no FIFO or device, within the size limit,
        # and a folder must be a model (predictor.py) before gigabytes of it are hashed.
        _check_model_folder(p, framework)
        size = scan_artifact(p)
        fw = framework or detect_framework(p)
        digest = digest_path(p, _progress_counter(size, progress))
        trust = parse_skops_trust(",".join([*skops_trust, (tags or {}).get(SKOPS_TRUST_TAG, "")]))
        if trust:
            tags = {**(tags or {}), SKOPS_TRUST_TAG: ",".join(trust)}
        if fw == "sklearn" and p.suffix.lower() == ".skops":
            check_skops_trust(p, trust)  # also when a signature is given: nothing built it yet
        elif fw == "sklearn":
            _warn_pickle(p)
        elif fw == "mlflow":
            from mlshift.serving._mlflow import is_pickled, mlflow_flavor, read_mlmodel, skops_file

            tags = {"mlflow.flavor": mlflow_flavor(read_mlmodel(p), p), **(tags or {})}
            skops = skops_file(p)
            if skops is not None:
                check_skops_trust(skops, trust)
            elif is_pickled(p):
                _warn_pickle(p)
        spec = validate_spec(
            ModelSpec,
            {
                "name": name,
                "path": str(p.resolve()),
                "framework": fw,
                "signature": signature,
                "metrics": dict(metrics or {}),
                "tags": dict(tags or {}),
                "description": description,
            },
            f"model {name!r}",
        )
        self._adapter.name_rules.model.check("model", spec.name, self._adapter.uri.raw, field="name")
        if spec.signature is None:
            spec = spec.model_copy(
                update={"signature": infer_signature(p, spec.framework, skops_trust=trust)}
            )
        kept = None
        if baseline is not None:  # checked against the signature before anything is stored
            from mlshift.monitoring._api import version_baseline
            from mlshift.monitoring._store import store_for

            store = store_for(self._adapter)
            kept = version_baseline(
                baseline,
                spec.signature,
                categorical=categorical,
                model_path=p.resolve(),
                framework=spec.framework,
                skops_trust=trust,
                labels=baseline_labels,
            )
        elif baseline_labels is not None:
            raise ConfigError(
                "baseline_labels needs a baseline: the labels are those of its rows",
                field="baseline_labels",
                hint="register(..., baseline=x_train, baseline_labels=y_train)",
            )
        version = self._adapter.models.register(spec, Artifact(path=p.resolve(), digest=digest, size=size))
        if kept is not None:
            store.save_baseline(version.name, version.version, kept)
        return version

    def baseline(self, ref: str) -> VersionBaseline | None:
        """The baseline kept with a version (``None``: registered without one).

        Raises:
            NotFound: the reference resolves to nothing.
        """
        from mlshift.monitoring._store import store_for

        version = self.get(ref)
        return store_for(self._adapter).baseline(version.name, version.version)

    def get(self, ref: str) -> ModelVersion:
        """Resolve ``NAME:VERSION``, ``NAME@ALIAS`` or ``NAME`` (latest).

        Raises:
            NotFound: if nothing matches.
        """
        from mlshift.specs.model import ModelRef

        return self._adapter.models.get(ModelRef.parse(ref))

    def list(self, name: str | None = None) -> list[ModelVersion]:
        """Every version of ``name``, or of every model, oldest first."""
        return self._adapter.models.list(name)

    def set_alias(self, name: str, alias: str, version: str | int) -> ModelVersion:
        """Point ``name@alias`` at a version.

        Raises:
            ConfigError: for an alias that is not a simple name.
            NotFound: for a version that does not exist.
        """
        import re

        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,62}", alias):
            raise ConfigError(
                f"invalid alias {alias!r}: use letters, digits, '_' and '-', starting with a letter",
                field="alias",
            )
        if alias == "latest":
            raise ConfigError("'latest' is reserved: NAME without a version already means the latest")
        return self._adapter.models.set_alias(name, alias, str(version))

    def remove_alias(self, name: str, alias: str) -> None:
        """Remove ``name@alias``."""
        self._adapter.models.remove_alias(name, alias)

    def delete(self, ref: str) -> None:
        """Delete one exact version (``NAME:VERSION``).

        Raises:
            ConfigError: if the reference is not exact.
            Conflict: if an endpoint serves it.
        """
        from mlshift.specs.model import ModelRef

        parsed = ModelRef.parse(ref)
        if parsed.version is None:
            raise ConfigError(f"delete needs an exact version, e.g. {parsed.name}:1; got {ref!r}")
        self._adapter.models.delete(parsed.name, parsed.version)


class EndpointsAPI:
    """``client.endpoints``: deploy, inspect, call and remove endpoints."""

    def __init__(self, client: Client) -> None:
        self._client = client
        self._adapter = client.adapter

    def list(self) -> list[EndpointState]:
        """Every endpoint on the target."""
        return self._adapter.endpoints.list()

    def get(self, name: str) -> EndpointState:
        """The live state of one endpoint.

        Raises:
            NotFound: if there is no such endpoint.
        """
        state = self._adapter.endpoints.observe(name)
        if state is None:
            raise NotFound(
                f"endpoint {name!r} does not exist on {self._adapter.uri.raw}",
                provider=self._adapter.name,
                hint="list endpoints with `mlshift endpoints list`",
            )
        return state

    def deploy(
        self,
        name: str,
        model: str,
        *,
        traffic: int | None = None,
        size: str = "cpu-small",
        replicas: int = 1,
        variant: str | None = None,
        tags: Mapping[str, str] | None = None,
        provider_options: Mapping[str, Mapping[str, Any]] | None = None,
        rollout: RolloutStrategy | Mapping[str, Any] | str | None = None,
        checks: Sequence[GateCheck] = (),
        lock_timeout: float = 60.0,
        on_event: Callable[[ApplyEvent], None] | None = None,
        allow_schema_change: bool = False,
        capture: CaptureSpec | Mapping[str, Any] | None = None,
    ) -> EndpointState:
        """Deploy a model version to an endpoint, creating the endpoint if needed.

        Without ``traffic`` the new version takes all traffic and the variants it replaces are
        removed once traffic has moved. With ``traffic=20`` it becomes one more variant at 20%
        and the other variants keep 80% between them, in their current proportions.

        With ``rollout`` (``Canary(percent=10, bake="5m")``, ``"canary"``, or the same as a dict)
        traffic moves in stages while a health gate watches the new version; a failed gate
        puts traffic back and raises :class:`~mlshift.errors.RolloutFailed`. ``checks`` are
        extra gate checks: functions that get each :class:`~mlshift.plan.GateReading` and return
        ``False`` or a reason to fail.

        A version whose inputs (column names, order, count, kinds) differ from those of the
        version serving now is refused before anything changes, since its callers would get
        errors; ``allow_schema_change=True`` lets it through when callers change with it.

        ``capture`` (``{"sample_rate": 0.1}``) records a sample of requests for monitors, on a
        target with ``CAPTURE``; without it the endpoint's capture stays as it is.

        This is sugar over :meth:`Client.plan` and :meth:`Client.apply`.

        Raises:
            ConfigError: a bad name, size, traffic share, rollout or option.
            NotFound: the model reference resolves to nothing.
            RolloutFailed: the rollout's gate failed and it was rolled back.
            Conflict: another process is changing this endpoint (after ``lock_timeout`` s).
        """
        from mlshift.specs.endpoint import Compute, EndpointSpec

        if traffic is not None and not 0 < traffic <= 100:
            raise ConfigError(f"traffic must be between 1 and 100 percent, got {traffic}", field="traffic")
        version = self._client.models.get(model)
        compute = validate_spec(Compute, {"size": size, "replicas": replicas}, "compute")
        new_name = variant or default_variant_name(version)
        exact = f"{version.name}:{version.version}"
        from mlshift.plan import effective_state
        from mlshift.plan._actions import live_variant

        state = effective_state(self._adapter, name)
        variants: list[dict[str, Any]] = []
        if state is None or not state.variants:
            if traffic not in (None, 100):
                raise ConfigError(
                    f"endpoint {name!r} does not exist yet, so its first model takes all traffic; "
                    f"drop --traffic or deploy once without it first",
                    field="traffic",
                )
            variants.append({"name": new_name, "model": exact, "weight": 100, "compute": compute})
        else:
            share = 100 if traffic is None else traffic
            others = {v.name: v.weight for v in state.variants if v.name != new_name}
            if share < 100 and not others:
                raise ConfigError(
                    f"endpoint {name!r} has no other variant to keep the remaining {100 - share}%",
                    field="traffic",
                )
            rest = spread_weights(100 - share, others) if share < 100 else {}
            for live in state.variants:
                if live.name in rest:
                    variants.append(live_variant(live, rest[live.name]))
            current = state.variant(new_name)
            keep_compute = current.compute if current is not None and current.model == exact else compute
            variants.append({"name": new_name, "model": exact, "weight": share, "compute": keep_compute})
        spec = validate_spec(
            EndpointSpec,
            {
                "name": name,
                "variants": variants,
                "compute": compute,
                "tags": dict(tags if tags is not None else (state.tags if state else {})),
                "rollout": {"strategy": rollout} if isinstance(rollout, str) else rollout,
                "provider_options": {k: dict(v) for k, v in (provider_options or {}).items()},
                "allow_schema_change": allow_schema_change,
                "capture": capture,
            },
            f"endpoint {name!r}",
        )
        plan = self._client.plan(spec, checks=bool(checks))
        self._client.apply(plan, on_event=on_event, checks=checks, lock_timeout=lock_timeout)
        return self.get(name)

    def history(self, name: str, limit: int = 20) -> builtins.list[RolloutRecord]:
        """Past changes to an endpoint's variants, newest first, with their outcomes."""
        return self._adapter.endpoints.rollouts(name, limit=limit)

    def rollback(
        self,
        name: str,
        *,
        on_event: Callable[[ApplyEvent], None] | None = None,
        lock_timeout: float = 60.0,
    ) -> EndpointState:
        """Return the endpoint to the variants it had before its last successful change.

        Rolling back twice undoes the rollback.

        Raises:
            NotFound: if no earlier state is recorded, or the models it served were deleted.
        """
        from mlshift.plan import apply_plan
        from mlshift.plan._actions import live_variant
        from mlshift.specs.endpoint import EndpointSpec

        current = self.get(name)
        previous = next((r for r in self.history(name) if r.phase == "succeeded" and r.baseline), None)
        if previous is None:
            raise NotFound(
                f"endpoint {name!r} has no earlier deployment to roll back to",
                provider=self._adapter.name,
                hint=f"see `mlshift endpoints history {name}`",
            )
        spec = validate_spec(
            EndpointSpec,
            {
                "name": name,
                "variants": [live_variant(v) for v in previous.baseline],
                "tags": current.tags,
                # Going back to what served before: its callers are the ones it served.
                "allow_schema_change": True,
            },
            f"endpoint {name!r}",
        )
        plan = self._client.plan(spec)
        apply_plan(self._adapter, plan, on_event=on_event, lock_timeout=lock_timeout, label="rollback")
        return self.get(name)

    def set_traffic(self, name: str, weights: Mapping[str, int]) -> EndpointState:
        """Set every variant's share of traffic; shares must sum to 100.

        Raises:
            ConfigError: unknown variant names or shares not summing to 100.
        """
        from mlshift.plan._actions import live_variant
        from mlshift.specs.endpoint import EndpointSpec

        state = self.get(name)
        unknown = sorted(set(weights) - {v.name for v in state.variants})
        if unknown:
            known = ", ".join(v.name for v in state.variants)
            raise ConfigError(f"endpoint {name!r} has no variant {', '.join(unknown)} (it has {known})")
        spec = validate_spec(
            EndpointSpec,
            {
                "name": name,
                "variants": [live_variant(v, weights.get(v.name, 0)) for v in state.variants],
                "tags": state.tags,
            },
            f"endpoint {name!r}",
        )
        self._client.apply(self._client.plan(spec))
        return self.get(name)

    def delete(self, name: str, *, lock_timeout: float = 60.0) -> None:
        """Delete an endpoint and stop everything it runs.

        Takes the endpoint's lock, as a deploy does: a delete waits for a deploy in progress
        to finish instead of pulling the endpoint from under it.

        Raises:
            NotFound: if there is no such endpoint.
            Conflict: another process is changing this endpoint (after ``lock_timeout`` s).
        """
        from mlshift.plan._rollout import owner_id

        with self._adapter.endpoints.lock(name, owner=owner_id(), timeout=lock_timeout):
            self.get(name)
            self._adapter.endpoints.delete(name).wait()

    def invoke(
        self,
        name: str,
        body: bytes,
        content_type: str = "application/json",
        *,
        variant: str | None = None,
        request_id: str | None = None,
    ) -> Invocation:
        """Send raw bytes to an endpoint and return the raw answer (any status).

        The request goes with ``request_id`` (else a new id), returned as
        ``Invocation.request_id``; see :meth:`predict`.

        Raises:
            ConfigError: a ``request_id`` that cannot name a request.
            UnsupportedOperation: ``request_id`` given to a target that cannot name requests.
        """
        invoke = self._adapter.endpoints.invoke
        if not _takes_request_id(invoke):
            if request_id is not None:
                raise UnsupportedOperation(
                    f"{self._adapter.uri.raw} cannot send a request with an id of the caller's",
                    hint="leave out request_id",
                )
            return invoke(name, body, content_type, variant=variant)
        # An optional keyword of the contract (see EndpointService.invoke): not in its signature,
        # so that adapters written before it still match the protocol.
        named: Callable[..., Invocation] = invoke
        return named(name, body, content_type, variant=variant, request_id=_request_id(request_id))

    def predict(
        self, name: str, data: Any, *, variant: str | None = None, request_id: str | None = None
    ) -> Prediction:
        """Ask an endpoint for predictions.

        Every request goes with an id, returned as ``Prediction.request_id``: the endpoint
        captures the request under it (where capture is on), so ground-truth labels that come
        later are posted for it (``client.monitors.labels(name, {pred.request_id: label})``)
        and a model-quality monitor joins them.

        Args:
            data: Rows (a list of lists or of dicts, or a numpy array), a pandas DataFrame
                (named columns are matched to the signature's by name, in any order), a full
                JSON payload as a dict (``{"instances": ...}``, ``{"dataframe_split": ...}``),
                JSON/CSV text or bytes.
            variant: Send to one variant directly, where the target supports it.
            request_id: The request's id, e.g. an order number its label will be known by
                (1 to 128 printable ASCII characters; 64 on SageMaker); by default a new one.

        Raises:
            ConfigError: a ``request_id`` that cannot name a request.
            InvalidPayload: the model rejected the input (HTTP 400), with the server's reason
                (for a DataFrame: the columns missing from it, or unknown to the model).
            ProviderError: the endpoint failed to answer.
        """
        body, content_type = _encode_payload(data)
        inv = self.invoke(name, body, content_type, variant=variant, request_id=request_id)
        try:
            payload = inv.json_body()
        except ValueError:
            payload = None
        if inv.status_code >= 400:
            err = payload.get("error", {}) if isinstance(payload, dict) else {}
            message = err.get("message") if isinstance(err, dict) else None
            text = message or inv.body[:300].decode(errors="replace")
            if 400 <= inv.status_code < 500:
                raise InvalidPayload(f"endpoint {name!r} rejected the request: {text}")
            raise ProviderError(
                f"endpoint {name!r} failed with HTTP {inv.status_code}: {text}", provider=self._adapter.name
            )
        if not isinstance(payload, dict) or "predictions" not in payload:
            raise ProviderError(
                f"endpoint {name!r} answered without predictions", provider=self._adapter.name
            )
        return Prediction(list(payload["predictions"]), inv)


class PipelinesAPI:
    """``client.pipelines``: run pipelines on this target, follow their runs, compile them.

    Which runner runs them is decided by what the target declares, not by its name. A target
    with a pipeline service (``adapter.pipelines``, e.g. ``sagemaker://``) gets the pipeline
    compiled to the provider's own document, created or updated there and started; the run
    handle reads its status from the provider. A target that declares ``Capability.PIPELINES``
    without a service (``local://``, ``memory://``) runs them on this machine with the local
    runner: a process per step, parallel where the graph allows, cached, resumable. Either way
    ``run()`` returns a :class:`~mlshift.pipelines.PipelineRun`. A target without
    ``PIPELINES`` (or without ``PIPELINE_CONDITIONS``, for a pipeline with conditions) refuses
    before anything runs, naming the targets that can.
    """

    if TYPE_CHECKING:
        from mlshift.pipelines import Pipeline, PipelineEvent, PipelineRun
        from mlshift.pipelines._remote import RemotePipelineRun, RemotePipelineService
        from mlshift.pipelines._service import PipelineService

    def __init__(self, client: Client) -> None:
        self._client = client
        self._service_instance: Any = None

    def _remote(self) -> RemotePipelineService | None:
        """The target's own pipeline service (``None``: the local runner runs its pipelines)."""
        return self._client.adapter.pipelines

    def _remote_run(
        self,
        service: RemotePipelineService,
        run_id: str,
        on_event: Callable[[PipelineEvent], None] | None = None,
    ) -> RemotePipelineRun:
        from mlshift.pipelines._remote import RemotePipelineRun

        return RemotePipelineRun(service, run_id, provider=self._client.adapter.name, on_event=on_event)

    def _local_only(self, what: str, hint: str) -> None:
        if self._remote() is not None:
            from mlshift.errors import UnsupportedOperation

            raise UnsupportedOperation(
                f"{what} is done by the local runner; on {self._client.target} the provider runs "
                "pipelines itself",
                hint=hint,
            )

    def _service(self) -> PipelineService:
        if self._service_instance is None:
            from mlshift.pipelines._service import PipelineService

            self._service_instance = PipelineService.for_client(self._client, connect=connect)
        service: PipelineService = self._service_instance
        return service

    def run(
        self,
        pipeline: Pipeline,
        params: Mapping[str, Any] | None = None,
        *,
        cache: bool = True,
        max_parallel: int | None = None,
        on_event: Callable[[PipelineEvent], None] | None = None,
    ) -> PipelineRun:
        """Start a run of ``pipeline`` and return it at once; ``.wait()`` for the end.

        Steps whose code, inputs and parameters are unchanged since an earlier run are served
        from the cache instead of running. Built-in ``RegisterModel``/``Deploy`` steps act on
        this client's target unless they name another.

        On a cloud target the pipeline is created (or updated, if its definition changed) and
        started there; the steps run on the provider's compute and the cache is the provider's.

        Args:
            params: Values for the pipeline's parameters (defaults fill in the rest).
            cache: ``False`` runs every step even if a cached result exists.
            max_parallel: Steps running at once (default: the number of CPU cores locally, the
                provider's default on a cloud target).
            on_event: Called for each step start and end: from the runner's thread locally;
                on a cloud target from ``wait()``, as it sees steps change.

        Raises:
            ConfigError: an unknown, missing or mistyped parameter; a secret that is not set.
            UnsupportedOperation: a target without ``PIPELINES`` (or ``PIPELINE_CONDITIONS``,
                for a pipeline with conditions), naming the targets that have it.
        """
        from mlshift.errors import ConfigError
        from mlshift.pipelines import Pipeline

        if not isinstance(pipeline, Pipeline):
            raise ConfigError(
                f"client.pipelines.run() takes a Pipeline, got {type(pipeline).__name__}",
                hint="decorate the wiring function with @pipeline, or build Pipeline(name, steps=[...])",
            )
        from mlshift.pipelines._service import require_capabilities

        adapter = self._client.adapter
        require_capabilities(adapter.capabilities, adapter.uri.raw, pipeline.ir)
        remote = self._remote()
        if remote is not None:
            values = pipeline.ir.resolve_params(params)  # checked before anything is sent
            run_id = remote.submit(pipeline.ir, values, use_cache=cache, max_parallel=max_parallel)
            return self._remote_run(remote, run_id, on_event)
        return self._service().start(
            pipeline.ir, params, use_cache=cache, max_parallel=max_parallel, on_event=on_event
        )

    def resume(
        self,
        run_id: str,
        *,
        max_parallel: int | None = None,
        on_event: Callable[[PipelineEvent], None] | None = None,
    ) -> PipelineRun:
        """Resume a failed, cancelled or interrupted run; finished steps are not run again.

        Raises:
            NotFound: no such run.
            ConfigError: the run succeeded, or a step's code can no longer be imported.
            Conflict: another live process is running it.
            UnsupportedOperation: on a cloud target (start a new run: finished steps come from
                the provider's cache).
        """
        self._local_only(
            "resuming a run", "start a new run: steps whose inputs did not change come from the cache"
        )
        return self._service().resume(run_id, max_parallel=max_parallel, on_event=on_event)

    def get(self, run_id: str) -> PipelineRun:
        """A run by id (from this process or any other).

        Raises:
            NotFound: no such run.
        """
        remote = self._remote()
        if remote is not None:
            return self._remote_run(remote, run_id)
        return self._service().get(run_id)

    def compile(self, pipeline: Pipeline, target: str | None = None) -> dict[str, Any]:
        """The document ``target`` (default: this client's) would run ``pipeline`` from.

        For ``local``/``memory`` that is the portable IR as JSON-ready data.

        Raises:
            UnsupportedOperation: for a cloud target: its compiler arrives with its adapter.
        """
        return compile_pipeline(pipeline, target or self._client.target)

    def run_schedules(
        self,
        pipelines: Iterable[Pipeline],
        *,
        once: bool = False,
        max_runs: int | None = None,
        on_event: Callable[[PipelineEvent], None] | None = None,
    ) -> builtins.list[PipelineRun]:
        """Run pipelines whenever their cron ``schedule`` comes due, in the foreground.

        A schedule seen for the first time runs right away for its latest tick; after that,
        once per tick. Missed ticks are covered by one run, not replayed.

        Args:
            once: Run what is due now and return, instead of waiting for the next tick.
            max_runs: Return after this many runs.

        Raises:
            ConfigError: a pipeline without a schedule.
            UnsupportedOperation: on a target with its own pipeline service (use the provider's
                scheduler), or one that does not declare ``SCHEDULES``.
        """
        from mlshift.adapter import Capability
        from mlshift.errors import UnsupportedOperation
        from mlshift.pipelines._schedule import run_schedules

        self._local_only(
            "running schedules in the foreground",
            "run the scheduler against local://, or keep the schedule on the provider's scheduler "
            "with client.pipelines.schedule(pipeline)",
        )
        adapter = self._client.adapter
        if Capability.SCHEDULES not in adapter.capabilities:
            from mlshift._registry import targets_with

            others = ", ".join(targets_with(Capability.SCHEDULES)) or "none installed"
            raise UnsupportedOperation(
                f"running pipelines on a schedule needs SCHEDULES, which {adapter.uri.raw} does not "
                f"declare; targets that do: {others}",
                hint="run the scheduler against local://",
            )

        return run_schedules(
            self._service(), builtins.list(pipelines), once=once, max_runs=max_runs, on_event=on_event
        )

    def _schedule_service(self, what: str) -> ScheduleService:
        """The target's provider-side schedule service, or a named refusal (before any call)."""
        from mlshift.adapter import Capability, ScheduleService
        from mlshift.errors import UnsupportedOperation

        adapter = self._client.adapter
        if Capability.SCHEDULES not in adapter.capabilities:
            from mlshift._registry import targets_with

            others = ", ".join(targets_with(Capability.SCHEDULES)) or "none installed"
            raise UnsupportedOperation(
                f"{what} needs SCHEDULES, which {adapter.uri.raw} does not declare; "
                f"targets that do: {others}",
                hint="schedule it on a target that declares SCHEDULES",
            )
        service = adapter.pipelines
        if isinstance(service, ScheduleService):
            return service
        if service is None:
            raise UnsupportedOperation(
                f"{what}: {adapter.uri.raw} has no provider-side scheduler; its schedules fire only "
                "while mlshift's foreground scheduler runs",
                hint=f"run `mlshift pipelines schedule FILE:PIPELINE --target {adapter.uri.raw}` "
                "(or client.pipelines.run_schedules) under systemd, a container or a CI cron job",
            )
        raise UnsupportedOperation(
            f"{what}: {adapter.uri.raw} declares SCHEDULES but its pipeline service does not "
            "implement mlshift.adapter.ScheduleService",
            hint="this is a defect of the adapter; report it to its authors",
        )

    def schedule(
        self, pipeline: Pipeline, params: Mapping[str, Any] | None = None, *, dry_run: bool = False
    ) -> ScheduleChange:
        """Keep ``pipeline``'s schedule on the provider's own scheduler in step with it.

        The cron and time zone are the pipeline's ``schedule``. The provider's schedule is
        created, updated when the pipeline, ``params`` or the cron changed, left alone (no
        mutating call) when nothing did, and deleted when the pipeline has no schedule any more.

        Local targets (``local://``, ``memory://``) have no provider scheduler: their schedules
        fire only while ``mlshift pipelines schedule`` (:meth:`run_schedules`) runs, so this
        refuses there rather than return a schedule that would never fire.

        Args:
            params: Parameter values the scheduled runs use (defaults: the pipeline's).
            dry_run: Make only reads; the result says what would be done.

        Raises:
            ConfigError: a bad parameter, or a schedule the provider cannot keep.
            UnsupportedOperation: a target without ``SCHEDULES``, or a local target (pointing
                at the foreground scheduler), before any call.
        """
        service = self._schedule_service(f"scheduling pipeline {pipeline.name!r}")
        return service.sync_schedule(pipeline.ir, params, dry_run=dry_run)

    def unschedule(self, name: str, *, dry_run: bool = False) -> ScheduleChange:
        """Delete the provider's schedule of the pipeline called ``name`` (``absent``: none).

        Raises:
            UnsupportedOperation: as for :meth:`schedule`, before any call.
        """
        service = self._schedule_service(f"unscheduling pipeline {name!r}")
        return service.delete_schedule(name, dry_run=dry_run)

    def list(self, pipeline: str | None = None, *, limit: int = 50) -> builtins.list[PipelineRun]:
        """Runs, newest first (of one pipeline, by name, when given)."""
        remote = self._remote()
        if remote is not None:
            return [self._remote_run(remote, run_id) for run_id in remote.list_runs(pipeline, limit)]
        return builtins.list(self._service().list(pipeline, limit))


class Client:
    """A connection to one target. Use :func:`connect` to make one.

    Attributes:
        adapter: The target's adapter.
        models: Register, find and label model versions.
        endpoints: Deploy, inspect, call and remove endpoints.
        pipelines: Run, follow, resume and compile pipelines.
        monitors: Save, run and read monitors of captured traffic.
    """

    def __init__(self, adapter: Adapter, *, label: str = "") -> None:
        self.adapter = adapter
        self.label = label or adapter.uri.raw
        self.models = ModelsAPI(adapter)
        self.endpoints = EndpointsAPI(self)
        self.pipelines = PipelinesAPI(self)
        from mlshift.monitoring._api import MonitorsAPI

        self.monitors = MonitorsAPI(self)

    @property
    def target(self) -> str:
        """The target's URI."""
        return self.adapter.uri.raw

    def __repr__(self) -> str:
        return f"<mlshift.Client {self.target}>"

    def plan(
        self,
        specs: ProjectFile | EndpointSpec | ModelSpec | Iterable[EndpointSpec | ModelSpec],
        *,
        checks: bool = False,
    ) -> Plan:
        """What applying ``specs`` would change. Reads only; changes nothing.

        ``checks=True``: the apply will pass gate checks, which only mlshift's rollout engine
        calls, so the plan runs every rollout there (never hands one to the target).

        Raises:
            ConfigError, UnsupportedOperation, NotFound: before any side effect.
        """
        from mlshift.plan import build_plan
        from mlshift.specs.endpoint import EndpointSpec
        from mlshift.specs.model import ModelSpec
        from mlshift.specs.project import ProjectFile

        if isinstance(specs, ProjectFile):
            return build_plan(self.adapter, models=specs.models, endpoints=specs.endpoints, checks=checks)
        items = [specs] if isinstance(specs, (EndpointSpec, ModelSpec)) else list(specs)
        models = [s for s in items if isinstance(s, ModelSpec)]
        endpoints = [s for s in items if isinstance(s, EndpointSpec)]
        return build_plan(self.adapter, models=models, endpoints=endpoints, checks=checks)

    def apply(
        self,
        plan: Plan | ProjectFile | EndpointSpec | ModelSpec | Iterable[EndpointSpec | ModelSpec],
        *,
        on_event: Callable[[ApplyEvent], None] | None = None,
        checks: Sequence[GateCheck] = (),
        lock_timeout: float = 60.0,
    ) -> ApplyResult:
        """Carry out a plan (or plan and carry out specs). An empty plan makes no call.

        Args:
            on_event: Called as each action starts, progresses (rollouts) and finishes.
            checks: Extra health checks for rollouts (see :meth:`EndpointsAPI.deploy`).
            lock_timeout: Seconds to wait while another process changes the same endpoint.

        Raises:
            Conflict: the plan is stale, or another process is changing the same endpoint.
            RolloutFailed: a rollout was rolled back.
        """
        from mlshift.plan import Plan, apply_plan

        if not isinstance(plan, Plan):
            plan = self.plan(plan, checks=bool(checks))
        return apply_plan(self.adapter, plan, on_event=on_event, checks=checks, lock_timeout=lock_timeout)

    def close(self) -> None:
        """Release the adapter's clients (endpoints keep running)."""
        self.adapter.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()


def connect(
    target: str | None = None,
    *,
    options: Mapping[str, Any] | None = None,
    project_file: str | Path | None = None,
) -> Client:
    """Connect to a target.

    Args:
        target: A URI (``local://``, ``local:///path/to/state``, ``memory://``,
            ``sagemaker://us-east-1``) or a target name from ``mlshift.yaml``. When omitted:
            ``$MLSHIFT_TARGET``, then the file's ``default_target``, then ``local://`` (state in
            ``./.mlshift``).
        options: Adapter options, merged over those ``mlshift.yaml`` gives the target.
        project_file: An explicit ``mlshift.yaml`` (default: searched upward from the working
            directory).

    Raises:
        AdapterNotFound: unknown scheme, or an adapter that is not installed (with the install
            command).
        ConfigError: an unknown target name or a malformed ``mlshift.yaml``.
    """
    from mlshift._config import resolve_target
    from mlshift._registry import load_adapter

    resolved = resolve_target(target, project_file=Path(project_file) if project_file else None)
    merged = {**resolved.options, **dict(options or {})}
    return Client(load_adapter(resolved.uri, merged, base_dir=resolved.base_dir), label=resolved.label)


def compile_pipeline(pipeline: Pipeline | PipelineIR, target: str) -> dict[str, Any]:
    """The document ``target`` runs a pipeline from, decided by what its adapter declares.

    A target with a pipeline service (``adapter.pipelines``) compiles to the provider's own
    document; one that declares ``PIPELINES`` without a service runs the portable IR with the
    local runner, so the IR is its document (without connecting: ``local://`` creates no
    state folder for a compile). ``target`` is a URI, a target name from ``mlshift.yaml`` or
    an adapter's scheme alone (``local``).

    Raises:
        ConfigError: a target name that is not defined; an adapter's scheme alone for a target
            whose document depends on where it is (its role, bucket, region).
        UnsupportedOperation: a target without ``PIPELINES`` (or ``PIPELINE_CONDITIONS`` for a
            pipeline with conditions), naming the targets that have it.
        AdapterNotFound: an adapter that is not installed (with the install command).
    """
    from mlshift._config import resolve_target
    from mlshift._registry import KNOWN_ADAPTERS, adapter_class, available_adapters, parse_target_uri
    from mlshift.pipelines._ir import PipelineIR
    from mlshift.pipelines._service import require_capabilities

    ir = pipeline if isinstance(pipeline, PipelineIR) else pipeline.ir
    scheme_only = "://" not in target and (target in KNOWN_ADAPTERS or target in available_adapters())
    uri = f"{target}://" if scheme_only else target if "://" in target else resolve_target(target).uri
    factory = adapter_class(parse_target_uri(uri))
    declared: frozenset[Capability] = getattr(factory, "capabilities", frozenset())
    # An adapter whose class says "no pipeline service" (pipelines = None) runs the IR itself.
    if getattr(factory, "pipelines", _MISSING) is None:
        require_capabilities(declared, target, ir)
        data: dict[str, Any] = ir.model_dump(mode="json", exclude_none=True)
        return data
    if scheme_only:
        require_capabilities(declared, target, ir)
        raise ConfigError(
            f"compiling for {target} needs the target itself, e.g. --target {target}://REGION-OR-LOCATION "
            "or a target name from mlshift.yaml (the compiled document names its role, bucket and region)",
            field="target",
        )
    with connect(target) as client:
        adapter = client.adapter
        require_capabilities(adapter.capabilities, adapter.uri.raw, ir)
        if adapter.pipelines is None:
            data = ir.model_dump(mode="json", exclude_none=True)
            return data
        return adapter.pipelines.compile(ir)


_MISSING = object()
