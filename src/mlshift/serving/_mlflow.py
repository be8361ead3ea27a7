"""MLflow model folders (what ``mlflow.<flavor>.save_model`` writes): read natively where possible.

The ``MLmodel`` file names the model's flavors and their files. The scikit-learn, XGBoost,
LightGBM and ONNX flavors are loaded with those libraries alone, without importing
``mlflow``: their files are ordinary model files (a ``.skops`` file goes through the same
trust check as any other). Other flavors are loaded with ``mlflow.pyfunc`` (the ``mlflow``
extra). MLflow's signature, else its input example, becomes mlshift's signature.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from mlshift.errors import ConfigError, InvalidPayload
from mlshift.serving._loaders import (
    LoadedModel,
    _ArrayModel,
    _cannot_load,
    _check_width,
    _missing,
    _refused,
)
from mlshift.serving._payload import Batch, check_rows
from mlshift.specs.model import ColumnSpec, DType, Signature

__all__ = [
    "MLMODEL",
    "NATIVE_FLAVORS",
    "MlflowArrayModel",
    "load_mlflow_model",
    "mlflow_flavor",
    "mlflow_signature",
    "read_mlmodel",
    "skops_file",
]

MLMODEL = "MLmodel"
#: Flavors loaded with their own library, most specific first; any other goes through pyfunc.
NATIVE_FLAVORS: tuple[str, ...] = ("sklearn", "xgboost", "lightgbm", "onnx")
#: Methods of a scikit-learn model that ``pyfunc_predict_fn`` may name (mlflow's own list).
_SKLEARN_METHODS = frozenset(
    {"predict", "predict_proba", "predict_log_proba", "predict_joint_log_proba", "score"}
)
#: MLflow column types and tensor dtypes → mlshift dtypes.
_COLUMN_TYPES: Mapping[str, DType] = {
    "double": "float64",
    "float": "float32",
    "long": "int64",
    "integer": "int32",
    "boolean": "bool",
    "string": "string",
}
_TENSOR_DTYPES: Mapping[str, DType] = {
    "float64": "float64",
    "float32": "float32",
    "int64": "int64",
    "int32": "int32",
    "bool": "bool",
    "str": "string",
    "object": "string",
}


class MlflowArrayModel(_ArrayModel):
    """An MLflow model served by its flavor's own library (one 2-D array per batch).

    Attributes:
        flavor: The flavor it was loaded as (``sklearn``, ``xgboost``, ``lightgbm``, ``onnx``).
    """

    framework = "mlflow"
    flavor = ""


class _PyfuncModel(LoadedModel):
    """An MLflow model of another flavor, through ``mlflow.pyfunc`` and a pandas DataFrame."""

    framework = "mlflow"
    flavor = "python_function"
    # Any library may be behind pyfunc; keep the event loop free for health checks.
    blocking = True

    def predict_batch(self, batch: Batch) -> list[Any]:
        import pandas as pd

        rows = check_rows(batch, self.signature)
        names = self.signature.column_names if self.signature is not None else None
        if names is not None:
            data: Any = pd.DataFrame(rows, columns=list(names))
        else:
            import numpy as np

            data = np.asarray(rows)
        try:
            result = self.native.predict(data)
        except InvalidPayload:
            raise
        except Exception as exc:
            # mlflow's schema enforcement raises MlflowException for input it refuses.
            if type(exc).__name__ == "MlflowException" or isinstance(exc, (ValueError, TypeError)):
                raise _refused(exc) from None
            raise
        return _pyfunc_output(result, len(rows))


def _pyfunc_output(result: Any, n: int) -> list[Any]:
    if hasattr(result, "columns") and hasattr(result, "to_dict"):  # a DataFrame
        result = result[result.columns[0]] if len(result.columns) == 1 else result.to_dict(orient="records")
    if hasattr(result, "tolist"):
        result = result.tolist()
    out = list(result)
    if len(out) != n:
        raise TypeError(f"the MLflow model returned {len(out)} predictions for {n} rows")
    return out


# --------------------------------------------------------------------------- MLmodel


def read_mlmodel(path: Path) -> dict[str, Any]:
    """The parsed ``MLmodel`` file of an MLflow model folder.

    Raises:
        ConfigError: if there is none, or it is not an MLflow model description.
    """
    import yaml

    file = Path(path) / MLMODEL
    try:
        data = yaml.safe_load(file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"{str(path)!r} has no {MLMODEL} file, so it is not an MLflow model folder",
            field="path",
            hint="pass the folder mlflow's save_model wrote (the one holding MLmodel)",
        ) from None
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
        raise _cannot_load(file, "MLmodel file", exc) from None
    if not isinstance(data, dict) or not isinstance(data.get("flavors"), dict) or not data["flavors"]:
        raise ConfigError(f"{str(file)!r} names no flavors, so it is not an MLflow model", field="path")
    return data


def mlflow_flavor(mlmodel: Mapping[str, Any], path: Path) -> str:
    """The flavor mlshift loads an MLflow model as: a native one, else ``python_function``.

    Raises:
        ConfigError: if the model has neither.
    """
    flavors = mlmodel["flavors"]
    for name in NATIVE_FLAVORS:
        if isinstance(flavors.get(name), dict):
            return name
    if isinstance(flavors.get("python_function"), dict):
        return "python_function"
    raise ConfigError(
        f"the MLflow model in {str(path)!r} has flavors {', '.join(sorted(flavors))}, none of which "
        "mlshift can load",
        field="path",
        hint=f"save it with one of the flavors {', '.join(NATIVE_FLAVORS)} or as an mlflow.pyfunc model",
    )


def _flavor_file(path: Path, flavor: str, conf: Mapping[str, Any], key: str) -> Path:
    name = conf.get(key)
    if not isinstance(name, str) or not name:
        raise ConfigError(
            f"the {flavor} flavor in {str(path / MLMODEL)!r} names no model file ({key})", field="path"
        )
    file = (path / name).resolve()
    # The MLmodel file is data from whoever made the folder: never read outside the folder.
    if not file.is_relative_to(path.resolve()):
        raise ConfigError(
            f"the {flavor} flavor in {str(path / MLMODEL)!r} points outside the folder ({name!r})",
            field="path",
        )
    if not file.is_file():
        raise ConfigError(
            f"the {flavor} flavor's model file {name!r} is missing from {str(path)!r}", field="path"
        )
    return file


def skops_file(path: Path) -> Path | None:
    """The ``.skops`` file an MLflow model folder's native flavor loads, if it loads one.

    Raises:
        ConfigError: for a folder that is not an MLflow model.
    """
    path = Path(path)
    mlmodel = read_mlmodel(path)
    flavor = mlflow_flavor(mlmodel, path)
    conf = mlmodel["flavors"].get(flavor) or {}
    if flavor == "sklearn":
        file = _flavor_file(path, flavor, conf, "pickled_model")
        skops = conf.get("serialization_format") == "skops" or file.suffix.lower() == ".skops"
        return file if skops else None
    if flavor == "lightgbm" and conf.get("model_class") != "lightgbm.basic.Booster":
        file = _flavor_file(path, flavor, conf, "data")
        return file if file.suffix.lower() == ".skops" else None
    return None


def is_pickled(path: Path) -> bool:
    """Whether an MLflow model folder's native flavor is a pickle (loading it runs its code)."""
    mlmodel = read_mlmodel(path)
    flavor = mlflow_flavor(mlmodel, path)
    conf = mlmodel["flavors"].get(flavor) or {}
    if flavor == "sklearn":
        return skops_file(path) is None
    if flavor == "lightgbm":
        return conf.get("model_class") != "lightgbm.basic.Booster" and skops_file(path) is None
    return flavor == "python_function"


# ------------------------------------------------------------------------- signature


def _schema(mlmodel: Mapping[str, Any], key: str, path: Path) -> list[Any] | None:
    signature = mlmodel.get("signature")
    if not isinstance(signature, dict) or not signature.get(key):
        return None
    raw = signature[key]
    try:
        value = json.loads(raw) if isinstance(raw, str) else raw
    except ValueError:
        raise ConfigError(
            f"the signature in {str(path / MLMODEL)!r} is not valid JSON", field="path"
        ) from None
    return value if isinstance(value, list) and value else None


def _columns(schema: list[Any], path: Path, *, strict: bool) -> tuple[ColumnSpec, ...] | None:
    if all(isinstance(c, dict) and c.get("type") == "tensor" for c in schema):
        if len(schema) != 1:
            if not strict:
                return None
            raise ConfigError(
                f"the MLflow model in {str(path)!r} takes {len(schema)} named tensors; the server "
                "feeds one table of rows",
                field="signature",
                hint="pass a signature explicitly if the model also takes a table",
            )
        spec = schema[0].get("tensor-spec") or {}
        shape, dtype = spec.get("shape"), _TENSOR_DTYPES.get(str(spec.get("dtype")))
        if (
            isinstance(shape, list)
            and len(shape) == 2
            and isinstance(shape[1], int)
            and shape[1] > 0
            and dtype
        ):
            return tuple(ColumnSpec(dtype=dtype) for _ in range(shape[1]))
        if strict:
            raise ConfigError(
                f"the MLflow model in {str(path)!r} takes a {spec.get('dtype')} tensor of shape {shape}; "
                "the server feeds a 2-D table of rows of numbers or strings",
                field="signature",
                hint="pass a signature explicitly (Signature.from_columns or --signature)",
            )
        return None
    columns = []
    for c in schema:
        kind = c.get("type") if isinstance(c, dict) else None
        dtype = _COLUMN_TYPES.get(str(kind))
        if dtype is None:
            if not strict:
                return None
            name = c.get("name") if isinstance(c, dict) else None
            raise ConfigError(
                f"column {name!r} of the MLflow model in {str(path)!r} is of type {kind!r}, which the "
                f"server cannot check; it takes {', '.join(sorted(_COLUMN_TYPES))}",
                field="signature",
                hint="pass a signature explicitly (e.g. that column as a string)",
            )
        name = c.get("name")
        columns.append(ColumnSpec(name=str(name) if name is not None else None, dtype=dtype))
    return tuple(columns)


def _example_signature(mlmodel: Mapping[str, Any], path: Path) -> Signature | None:
    info = mlmodel.get("saved_input_example_info")
    if not isinstance(info, dict) or not isinstance(info.get("artifact_path"), str):
        return None
    file = path / info["artifact_path"]
    try:
        if not file.resolve().is_relative_to(path.resolve()):
            return None
        example = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    names: list[Any] | None = None
    if isinstance(example, dict) and isinstance(example.get("data"), list):
        columns = example.get("columns")
        names = columns if isinstance(columns, list) else None
        rows = example["data"]
    else:
        rows = example
    if not isinstance(rows, list) or not rows or not isinstance(rows[0], list) or not rows[0]:
        return None
    first = rows[0]
    if names is not None and len(names) != len(first):
        return None
    dtypes = [_value_dtype(v) for v in first]
    if any(d is None for d in dtypes):
        return None
    return Signature(
        inputs=tuple(
            ColumnSpec(name=str(names[i]) if names is not None else None, dtype=d)
            for i, d in enumerate(dtypes)
        )
    )


def _value_dtype(value: Any) -> DType | None:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int64"
    if isinstance(value, float):
        return "float64"
    if isinstance(value, str):
        return "string"
    return None


def declared_signature(path: Path, mlmodel: Mapping[str, Any] | None = None) -> Signature | None:
    """MLflow's own signature of a model folder, else one read from its input example.

    Raises:
        ConfigError: for a signature mlshift cannot express (a column of an unsupported
            type, a tensor that is not 2-D); pass one explicitly instead.
    """
    path = Path(path)
    mlmodel = read_mlmodel(path) if mlmodel is None else mlmodel
    inputs = _schema(mlmodel, "inputs", path)
    if inputs is None:
        return _example_signature(mlmodel, path)
    columns = _columns(inputs, path, strict=True)
    assert columns is not None  # strict: refused above otherwise
    outputs = _schema(mlmodel, "outputs", path)
    return Signature(inputs=columns, outputs=(_columns(outputs, path, strict=False) or ()) if outputs else ())


def _merge(declared: Signature | None, native: Signature | None, path: Path) -> Signature | None:
    """MLflow's signature, in the column order the model itself was trained with."""
    if declared is None or native is None:
        return declared or native
    _check_width(declared, native.n_features, path)
    names, trained = declared.column_names, native.column_names
    if names is None or trained is None or names == trained:
        return declared
    if set(names) != set(trained):
        unknown = ", ".join(sorted(set(names) - set(trained)))
        missing = ", ".join(sorted(set(trained) - set(names)))
        raise ConfigError(
            f"the MLflow signature in {str(path)!r} names columns {unknown} "
            f"but the model was trained on {missing} instead",
            field="signature",
        )
    by_name = {c.name: c for c in declared.inputs}
    return declared.model_copy(update={"inputs": tuple(by_name[n] for n in trained)})


def mlflow_signature(path: Path, *, skops_trust: Sequence[str] = ()) -> Signature | None:
    """The signature of an MLflow model folder: MLflow's, else its input example's, else the
    flavor's own (feature names a scikit-learn model or a booster was trained with).

    Raises:
        ConfigError: for a folder that is not a loadable MLflow model, or a signature mlshift
            cannot express.
    """
    path = Path(path)
    mlmodel = read_mlmodel(path)
    declared = declared_signature(path, mlmodel)
    if mlflow_flavor(mlmodel, path) == "python_function":
        return declared  # nothing to read without mlflow
    return load_mlflow_model(path, None, None, skops_trust, mlmodel=mlmodel).signature


# ------------------------------------------------------------------------------ load


def load_mlflow_model(
    path: Path,
    signature: Signature | None,
    digest: str | None,
    skops_trust: Sequence[str] = (),
    *,
    mlmodel: Mapping[str, Any] | None = None,
) -> LoadedModel:
    """Load an MLflow model folder: natively for the sklearn/XGBoost/LightGBM/ONNX flavors.

    Predictions are those of ``mlflow.pyfunc.load_model(path).predict``: the scikit-learn
    method ``pyfunc_predict_fn`` names, the XGBoost or LightGBM model's ``predict``, the ONNX
    model's first output.

    Raises:
        ConfigError: for a folder that is not a loadable MLflow model, a ``.skops`` file
            holding untrusted types, or a signature that contradicts the model.
        ImportError: naming the extra to install (``mlflow`` for other flavors).
    """
    path = Path(path)
    mlmodel = read_mlmodel(path) if mlmodel is None else mlmodel
    flavor = mlflow_flavor(mlmodel, path)
    conf = mlmodel["flavors"][flavor]
    given = signature is not None
    if signature is None:
        signature = declared_signature(path, mlmodel)
    if flavor == "python_function":
        return _load_pyfunc(path, signature, digest)
    model = _load_native(path, flavor, conf, mlmodel, signature, digest, skops_trust, given=given)
    # The artifact is the folder: metadata and digests speak of it, not of the file inside.
    model.path = path
    model.flavor = flavor  # type: ignore[attr-defined]
    return model


def _load_native(
    path: Path,
    flavor: str,
    conf: Mapping[str, Any],
    mlmodel: Mapping[str, Any],
    signature: Signature | None,
    digest: str | None,
    trust: Sequence[str],
    *,
    given: bool,
) -> LoadedModel:
    from mlshift.serving import _boosters, _loaders

    def final(native: Signature | None) -> Signature | None:
        # A signature registered with the version is used as is; MLflow's is put in the
        # model's own column order.
        return signature if given else _merge(signature, native, path)

    if flavor == "sklearn":
        file = _flavor_file(path, flavor, conf, "pickled_model")
        skops = conf.get("serialization_format") == "skops" or file.suffix.lower() == ".skops"
        estimator = _loaders._read_skops(file, trust) if skops else _loaders._read_sklearn(file)
        pyfunc = mlmodel["flavors"].get("python_function") or {}
        method = pyfunc.get("predict_fn") or "predict"
        if method not in _SKLEARN_METHODS:
            raise ConfigError(
                f"the MLflow model in {str(path)!r} predicts with {method!r}; mlshift calls one of "
                f"{', '.join(sorted(_SKLEARN_METHODS))}",
                field="path",
            )
        return _loaders.sklearn_model(
            estimator,
            path,
            final(_loaders._sklearn_signature(estimator)),
            digest,
            method=method,
            cls=MlflowArrayModel,
        )
    if flavor == "xgboost":
        file = _flavor_file(path, flavor, conf, "data")
        model_class = str(conf.get("model_class") or "xgboost.core.Booster")
        module, _, wrapper = model_class.rpartition(".")
        if model_class != "xgboost.core.Booster" and module != "xgboost.sklearn":
            raise ConfigError(
                f"the MLflow model in {str(path)!r} is a {model_class}, not an XGBoost model mlshift knows",
                field="path",
            )
        booster_signature = _boosters.xgboost_signature(_boosters._read_booster(file), file)
        return _boosters.load_xgboost_model(
            file,
            final(booster_signature),
            digest,
            wrapper="Booster" if wrapper == "Booster" else wrapper,
            cls=MlflowArrayModel,
        )
    if flavor == "lightgbm":
        file = _flavor_file(path, flavor, conf, "data")
        if conf.get("model_class") == "lightgbm.basic.Booster":
            native: Any = _boosters.read_lightgbm_booster(file)
        elif file.suffix.lower() == ".skops":
            native = _loaders._read_skops(file, trust)
        else:
            native = _loaders._read_sklearn(file)
        booster = native if hasattr(native, "feature_name") else getattr(native, "booster_", None)
        if booster is None:
            raise ConfigError(f"the LightGBM model in {str(path)!r} is not fitted", field="path")
        return _boosters.lightgbm_model(
            native, file, final(_boosters.lightgbm_signature(booster, file)), digest, cls=MlflowArrayModel
        )
    file = _flavor_file(path, flavor, conf, "data")
    session = _loaders._onnx_session(file)
    return _loaders._load_onnx_model(
        file, final(_loaders._onnx_signature(session, file)), digest, cls=MlflowArrayModel
    )


def _load_pyfunc(path: Path, signature: Signature | None, digest: str | None) -> LoadedModel:
    try:
        import mlflow.pyfunc
    except ImportError as exc:
        raise _missing(
            "mlflow", "loading MLflow models that are not sklearn/xgboost/lightgbm/onnx", exc
        ) from exc
    try:
        native = mlflow.pyfunc.load_model(str(path))
    except Exception as exc:
        raise _cannot_load(path, "MLflow model", exc) from exc
    return _PyfuncModel(path=path, signature=signature, digest=digest, native=native)
