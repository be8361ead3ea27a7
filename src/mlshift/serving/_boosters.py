"""XGBoost and LightGBM model files, loaded with their own libraries.

XGBoost: what ``save_model`` writes, JSON (``.json``) or UBJSON (``.ubj``). A file saved from
the scikit-learn wrapper (``XGBClassifier``...) records it, and is loaded back into that
wrapper, so a classifier answers labels as its ``predict`` does; a plain ``Booster`` answers
what ``Booster.predict`` does. LightGBM: the text model file of ``Booster.save_model``,
answered with ``Booster.predict``. Both libraries are imported only here, when such a model
is loaded.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlshift.errors import ConfigError
from mlshift.serving._loaders import LoadedModel, _ArrayModel, _cannot_load, _check_width, _missing
from mlshift.specs.model import Signature

__all__ = [
    "is_lightgbm_file",
    "is_xgboost_file",
    "lightgbm_model",
    "lightgbm_signature",
    "load_lightgbm_model",
    "load_xgboost_model",
    "read_lightgbm_booster",
    "xgboost_signature",
]

#: XGBoost's scikit-learn wrappers, by the ``_estimator_type`` a saved file records.
_XGB_WRAPPERS = {"classifier": "XGBClassifier", "regressor": "XGBRegressor", "ranker": "XGBRanker"}


def is_xgboost_file(path: Path) -> bool:
    """Whether a ``.json``/``.ubj`` file is an XGBoost model (by its first bytes)."""
    suffix = path.suffix.lower()
    if suffix == ".ubj":
        return True
    if suffix != ".json":
        return False
    try:
        with path.open("rb") as fh:
            head = fh.read(256)
    except OSError:
        return False
    # save_model writes {"learner": {...}, "version": [...]}, the learner first.
    return head.lstrip().startswith(b"{") and b'"learner"' in head


def is_lightgbm_file(path: Path) -> bool:
    """Whether a file is a LightGBM text model: its first line is ``tree``."""
    try:
        with path.open("rb") as fh:
            head = fh.read(64)
    except OSError:
        return False
    return head.splitlines()[:1] == [b"tree"] and b"version=v" in head


class _XGBoostModel(_ArrayModel):
    framework = "xgboost"


class _LightGBMModel(_ArrayModel):
    framework = "lightgbm"


# ---------------------------------------------------------------------------- xgboost


def _xgboost() -> Any:
    try:
        import xgboost
    except ImportError as exc:
        raise _missing("xgboost", "loading XGBoost models", exc) from exc
    return xgboost


def _read_booster(path: Path) -> Any:
    xgb = _xgboost()
    if path.is_dir():
        raise ConfigError(f"xgboost artifact {str(path)!r} is a directory, expected a model file")
    booster = xgb.Booster()
    try:
        booster.load_model(str(path))
    except Exception as exc:
        raise _cannot_load(path, "XGBoost model", exc) from exc
    return booster


def _check_xgboost_features(booster: Any, path: Path) -> None:
    types = booster.feature_types or ()
    if "c" in types:
        raise ConfigError(
            f"XGBoost model {str(path)!r} has categorical features, which the server cannot feed "
            "(it sends one array of numbers)",
            field="path",
            hint="encode categories as numbers before training, or serve it with a predictor.py",
        )


def xgboost_signature(booster: Any, path: Path) -> Signature | None:
    """The signature a booster records: its feature names, else its feature count."""
    _check_xgboost_features(booster, path)
    names = booster.feature_names
    if names:
        return Signature.from_columns([str(n) for n in names])
    n = booster.num_features()
    return Signature.numeric(n) if n > 0 else None


def load_xgboost_model(
    path: Path,
    signature: Signature | None,
    digest: str | None,
    *,
    wrapper: str | None = None,
    cls: type[_ArrayModel] = _XGBoostModel,
) -> LoadedModel:
    """Load an XGBoost model file; ``wrapper`` names a scikit-learn wrapper class to load into.

    Without ``wrapper`` the one the file records is used (``save_model`` of ``XGBClassifier``
    writes it), else the plain booster; ``"Booster"`` asks for the booster. ``cls`` is the
    :class:`LoadedModel` to make.

    Raises:
        ConfigError: for a file XGBoost cannot read, categorical features, or a signature
            whose width differs from the model's.
        ImportError: naming the ``xgboost`` extra, when XGBoost is not installed.
    """
    xgb = _xgboost()
    booster = _read_booster(path)
    inferred = xgboost_signature(booster, path)
    if signature is not None:
        _check_width(signature, booster.num_features() or None, path)
    else:
        signature = inferred
    if wrapper is None:
        recorded = booster.attr("scikit_learn")
        kind = json.loads(recorded).get("_estimator_type") if recorded else None
        wrapper = _XGB_WRAPPERS.get(kind) if isinstance(kind, str) else None
    from mlshift.serving._arrays import array_dtype

    if wrapper is not None and wrapper != "Booster":
        native = getattr(xgb, wrapper, None)
        if not isinstance(native, type):
            raise ConfigError(
                f"XGBoost has no model class {wrapper!r} to load {str(path)!r} into", field="path"
            )
        native = native()
        try:
            native.load_model(str(path))
        except Exception as exc:
            raise _cannot_load(path, f"XGBoost {wrapper}", exc) from exc
        run = native.predict
    else:
        native = booster
        names = booster.feature_names
        dmatrix = xgb.DMatrix

        def run(array: Any) -> Any:
            # The booster checks the names it was trained with; the server already put the
            # columns in that order, so it names them.
            return booster.predict(dmatrix(array, feature_names=names))

    return cls(
        path=path,
        signature=signature,
        digest=digest,
        native=native,
        dtype=array_dtype(signature),
        run=run,
        refusals=(ValueError, TypeError, xgb.core.XGBoostError),
    )


# --------------------------------------------------------------------------- lightgbm


def _lightgbm() -> Any:
    try:
        import lightgbm
    except ImportError as exc:
        raise _missing("lightgbm", "loading LightGBM models", exc) from exc
    return lightgbm


def read_lightgbm_booster(path: Path) -> Any:
    """Read a LightGBM text model file into a ``lightgbm.Booster``.

    Raises:
        ConfigError: for a file LightGBM cannot read.
        ImportError: naming the ``lightgbm`` extra.
    """
    lgb = _lightgbm()
    if path.is_dir():
        raise ConfigError(f"lightgbm artifact {str(path)!r} is a directory, expected a model file")
    try:
        return lgb.Booster(model_file=str(path))
    except Exception as exc:
        raise _cannot_load(path, "LightGBM model", exc) from exc


def lightgbm_signature(booster: Any, path: Path) -> Signature | None:
    """Feature names a booster was trained with; a count alone when it only has LightGBM's own."""
    if booster.pandas_categorical:
        raise ConfigError(
            f"LightGBM model {str(path)!r} has pandas categorical features, which the server "
            "cannot feed (it sends one array of numbers)",
            field="path",
            hint="encode categories as numbers before training, or serve it with a predictor.py",
        )
    names = [str(n) for n in booster.feature_name()]
    if names and names != [f"Column_{i}" for i in range(len(names))]:
        return Signature.from_columns(names)
    n = booster.num_feature()
    return Signature.numeric(n) if n > 0 else None


def load_lightgbm_model(path: Path, signature: Signature | None, digest: str | None) -> LoadedModel:
    """Load a LightGBM text model file; predictions are ``Booster.predict``'s.

    Raises:
        ConfigError: for a file LightGBM cannot read, categorical features, or a signature
            whose width differs from the model's.
        ImportError: naming the ``lightgbm`` extra, when LightGBM is not installed.
    """
    booster = read_lightgbm_booster(path)
    return lightgbm_model(booster, path, signature, digest)


def lightgbm_model(
    native: Any,
    path: Path,
    signature: Signature | None,
    digest: str | None,
    *,
    cls: type[_ArrayModel] = _LightGBMModel,
) -> LoadedModel:
    """Wrap a LightGBM ``Booster`` or scikit-learn estimator for serving (as a ``cls``)."""
    lgb = _lightgbm()
    booster = native if isinstance(native, lgb.Booster) else native.booster_
    inferred = lightgbm_signature(booster, path)
    if signature is not None:
        _check_width(signature, booster.num_feature(), path)
    else:
        signature = inferred
    from mlshift.serving._arrays import array_dtype

    return cls(
        path=path,
        signature=signature,
        digest=digest,
        native=native,
        dtype=array_dtype(signature),
        run=native.predict,
        refusals=(ValueError, TypeError, lgb.basic.LightGBMError),
    )
