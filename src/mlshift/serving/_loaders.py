"""Loading model artifacts: scikit-learn (skops, joblib), ONNX, XGBoost, LightGBM, MLflow model
folders, and user ``Predictor`` classes.

Each framework's library is imported inside its loader, so importing :mod:`mlshift.serving`
costs neither scikit-learn nor onnxruntime nor numpy (XGBoost and LightGBM live in
``_boosters``, MLflow folders in ``_mlflow``).
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import threading
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, runtime_checkable

from pydantic import ValidationError

from mlshift._artifacts import SKOPS_TRUST_TAG, parse_skops_trust, verify_digest
from mlshift.errors import ConfigError, InvalidPayload
from mlshift.serving._payload import Batch, check_rows, no_params
from mlshift.specs.model import FRAMEWORKS, Signature

if TYPE_CHECKING:
    import numpy as np

__all__ = ["SKOPS_TRUST_TAG", "LoadedModel", "Predictor", "detect_framework", "infer_signature", "load_model"]

_SKLEARN_SUFFIXES = (".skops", ".joblib", ".pkl")

#: Types a ``.skops`` file may hold beyond skops' own default trusted set (scikit-learn's
#: estimators, numpy dtypes and ufuncs, builtin containers and primitives). skops reports
#: these scikit-learn internals as untrusted, yet every tree ensemble and neighbours model
#: holds them; they are data structures, none of them calls code named in the file.
#: Exact names, never prefixes: ``numpy.vectorize(builtins.eval)`` is "numpy." and "builtins."
#: and runs any expression it is given.
SKOPS_EXTRA_TRUSTED: frozenset[str] = frozenset(
    {
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.neighbors._kd_tree.KDTree",
        "sklearn.neighbors._ball_tree.BallTree",
        *(
            f"sklearn.metrics._dist_metrics.{name}Distance{bits}"
            for bits in (32, 64)
            for name in (
                "BrayCurtis",
                "Canberra",
                "Chebyshev",
                "Dice",
                "Euclidean",
                "Hamming",
                "Haversine",
                "Jaccard",
                "Mahalanobis",
                "Manhattan",
                "Matching",
                "Minkowski",
                "RogersTanimoto",
                "RussellRao",
                "SEuclidean",
                "SokalMichener",
                "SokalSneath",
            )
        ),
    }
)
#: Comma-separated type names a process trusts in every ``.skops`` file it loads.
SKOPS_TRUST_ENV = "MLSHIFT_SKOPS_TRUST"


@runtime_checkable
class Predictor(Protocol):
    """The interface of a ``predictor`` model: a directory with a ``predictor.py``.

    ``predictor.py`` defines a class named ``Predictor`` with this interface (no base class
    needed). The server creates it with no arguments, calls :meth:`load` once with the
    artifact directory, then :meth:`predict` for each request. Calls are never concurrent,
    and run off the event loop, so ``predict`` may block.

    A class attribute ``signature`` (a :class:`~mlshift.specs.model.Signature`, or a dict
    that validates as one) lets the server check and reorder requests by column name.

    A ``predict`` with a ``params`` argument (``def predict(self, batch, params=None)``, as
    in MLflow's ``PythonModel``) receives the non-empty ``parameters`` (Vertex AI) or
    ``params`` (MLflow) object of a request; without one, such requests are refused with 400.

    Example::

        # my_model/predictor.py
        from pathlib import Path
        from typing import Any

        class Predictor:
            def load(self, path: Path) -> None:
                self.offset = float((path / "offset.txt").read_text())

            def predict(self, batch: list[list[Any]]) -> list[Any]:
                return [sum(row) + self.offset for row in batch]
    """

    def load(self, path: Path) -> None:
        """Load whatever the model needs from its artifact directory ``path``."""

    def predict(self, batch: list[list[Any]]) -> list[Any]:
        """Return one prediction per row of ``batch``.

        Raise :class:`~mlshift.errors.InvalidPayload` (or ``ValueError``) for input the
        model cannot take; the server answers 400 with the message.
        """


class LoadedModel(ABC):
    """A model loaded from its artifact, ready to predict.

    Attributes:
        framework: One of :data:`~mlshift.specs.model.FRAMEWORKS`.
        path: The artifact it was loaded from.
        signature: The signature given to :func:`load_model`, else the one inferred from the
            artifact; ``None`` when neither is known (requests are then checked for shape only).
        digest: The digest the artifact was verified against, when one was given.
        native: The framework's own object (the estimator, the ``InferenceSession``, the
            ``Predictor`` instance).
    """

    framework: ClassVar[str]
    #: Whether predictions should run in a worker thread rather than on the event loop.
    blocking: ClassVar[bool] = False
    #: The numeric dtype of the one array the model takes, when it takes one: large request
    #: bodies are then parsed straight into an array (``Batch.array``).
    array_dtype: Any = None
    #: Whether requests may carry parameters (``Batch.params``) for the model.
    accepts_params: bool = False

    def __init__(self, *, path: Path, signature: Signature | None, digest: str | None, native: Any) -> None:
        self.path = path
        self.signature = signature
        self.digest = digest
        self.native = native

    def predict(self, batch: Sequence[Sequence[Any]]) -> list[Any]:
        """Predict a batch of rows, each a sequence of values in the signature's order.

        Raises:
            InvalidPayload: if a row does not fit the signature or the model refuses it.
        """
        return self.predict_batch(Batch.of_rows(batch))

    @abstractmethod
    def predict_batch(self, batch: Batch) -> list[Any]:
        """Predict a parsed request batch (the server's entry point; rows carry their origin).

        Raises:
            InvalidPayload: if a row does not fit the signature or the model refuses it.
        """

    #: Whether requests can be merged into one model call (:meth:`prepare`,
    #: :meth:`predict_prepared`); the server batches only models that can.
    batchable: ClassVar[bool] = False

    def prepare(self, batch: Batch) -> tuple[Any, int]:
        """Check one request's batch and turn it into the model's input, without predicting.

        The server's micro-batching calls this for each request on its own, so that a
        malformed request is refused before it can join other requests' batch.

        Returns:
            The model input for this request, and its number of rows.

        Raises:
            InvalidPayload: if a row does not fit the signature, or the request carries
                parameters (a request with parameters is predicted on its own).
            NotImplementedError: if the model cannot merge requests (``batchable`` is false).
        """
        raise NotImplementedError(f"{type(self).__name__} does not merge requests")

    def predict_prepared(self, inputs: Sequence[Any]) -> list[list[Any]]:
        """Predict several prepared requests in one model call: one list of predictions each.

        Raises:
            InvalidPayload: if the model refuses the merged batch.
            NotImplementedError: if the model cannot merge requests (``batchable`` is false).
        """
        raise NotImplementedError(f"{type(self).__name__} does not merge requests")

    def __repr__(self) -> str:
        n = self.signature.n_features if self.signature is not None else "?"
        return f"<{type(self).__name__} {self.framework} {str(self.path)!r} features={n}>"


def _refused(exc: BaseException) -> InvalidPayload:
    message = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return InvalidPayload(f"the model refused the batch: {message}")


class _ArrayModel(LoadedModel):
    """Shared by models that take one 2-D numpy array."""

    def __init__(
        self,
        *,
        path: Path,
        signature: Signature | None,
        digest: str | None,
        native: Any,
        dtype: np.dtype[Any],
        run: Callable[[Any], Any],
        refusals: tuple[type[BaseException], ...],
    ) -> None:
        super().__init__(path=path, signature=signature, digest=digest, native=native)
        # Bound here so the request path does no attribute lookups or imports.
        import numpy

        from mlshift.serving import _arrays

        self._to_array = _arrays.to_array
        self._to_list = _arrays.to_list
        self._concatenate = numpy.concatenate
        self._dtype = dtype
        self._run = run
        self._refusals = refusals
        if dtype.kind in "biuf":
            self.array_dtype = dtype

    def predict_batch(self, batch: Batch) -> list[Any]:
        if batch.params is not None:
            raise no_params(batch)
        array = batch.array
        if array is None:
            array = self._to_array(batch, self.signature, self._dtype)
        try:
            result = self._run(array)
        except self._refusals as exc:
            raise _refused(exc) from None
        return self._to_list(result)

    batchable = True

    def prepare(self, batch: Batch) -> tuple[Any, int]:
        if batch.params is not None:
            raise no_params(batch)
        array = batch.array
        if array is None:
            array = self._to_array(batch, self.signature, self._dtype)
        return array, int(array.shape[0])

    def predict_prepared(self, inputs: Sequence[Any]) -> list[list[Any]]:
        try:
            result = self._run(self._concatenate(inputs))
        except self._refusals as exc:
            raise _refused(exc) from None
        return _split(self._to_list(result), [int(a.shape[0]) for a in inputs])


def _split(predictions: list[Any], sizes: Sequence[int]) -> list[list[Any]]:
    """One list of predictions per request, in order, from the merged batch's predictions."""
    if len(predictions) != sum(sizes):
        raise TypeError(f"the model returned {len(predictions)} predictions for {sum(sizes)} rows")
    out: list[list[Any]] = []
    start = 0
    for n in sizes:
        out.append(predictions[start : start + n])
        start += n
    return out


class _SklearnModel(_ArrayModel):
    framework = "sklearn"


class _OnnxModel(_ArrayModel):
    framework = "onnx"


class _PredictorModel(LoadedModel):
    framework = "predictor"
    # User code may do I/O or take its time; keep the event loop free for health checks.
    blocking = True

    def predict_batch(self, batch: Batch) -> list[Any]:
        if batch.params is not None and not self.accepts_params:
            raise no_params(batch)
        rows = check_rows(batch, self.signature)
        return self._call(rows, batch.params)

    batchable = True

    def prepare(self, batch: Batch) -> tuple[Any, int]:
        if batch.params is not None:
            # The server predicts requests with parameters on their own (predict_batch).
            raise no_params(batch)
        rows = check_rows(batch, self.signature)
        return rows, len(rows)

    def predict_prepared(self, inputs: Sequence[Any]) -> list[list[Any]]:
        merged = [row for rows in inputs for row in rows]
        return _split(self._call(merged, None), [len(rows) for rows in inputs])

    def _call(self, rows: list[list[Any]], params: Any) -> list[Any]:
        try:
            if params is not None:
                result: Any = self.native.predict(rows, params=dict(params))
            else:
                result = self.native.predict(rows)
        except InvalidPayload:
            raise
        except (ValueError, TypeError) as exc:
            raise _refused(exc) from None
        if hasattr(result, "tolist"):
            result = result.tolist()
        elif not isinstance(result, list):
            try:
                result = list(result)
            except TypeError:
                raise TypeError(
                    f"Predictor.predict returned a {type(result).__name__}, expected a list"
                ) from None
        predictions: list[Any] = result
        if len(predictions) != len(rows):
            raise TypeError(f"Predictor.predict returned {len(predictions)} predictions for {len(rows)} rows")
        return predictions


# ------------------------------------------------------------------------------ detect


def detect_framework(path: Path) -> str:
    """Tell which framework can load an artifact, from its file name, first bytes or layout.

    ``.skops``, ``.joblib`` and ``.pkl`` files are ``sklearn``; ``.onnx`` files are ``onnx``;
    ``.ubj`` files and ``.json`` files holding an XGBoost learner are ``xgboost``; LightGBM
    text model files (first line ``tree``) are ``lightgbm``; a directory holding a
    ``predictor.py`` is ``predictor``, one holding an ``MLmodel`` file is ``mlflow``.

    Raises:
        ConfigError: if the path does not exist or is none of those.
    """
    path = Path(path)
    if path.is_dir():
        if (path / "predictor.py").is_file():
            return "predictor"
        if (path / "MLmodel").is_file():
            return "mlflow"
        raise ConfigError(
            f"artifact directory {str(path)!r} has neither a predictor.py nor an MLmodel file",
            field="path",
            hint=_KINDS_HINT,
        )
    if not path.exists():
        raise ConfigError(f"artifact path {str(path)!r} does not exist", field="path")
    suffix = path.suffix.lower()
    if suffix in _SKLEARN_SUFFIXES:
        return "sklearn"
    if suffix == ".onnx":
        return "onnx"
    from mlshift.serving._boosters import is_lightgbm_file, is_xgboost_file

    if is_xgboost_file(path):
        return "xgboost"
    if is_lightgbm_file(path):
        return "lightgbm"
    raise ConfigError(
        f"cannot tell the framework of artifact {str(path)!r} from its name",
        field="path",
        hint=_KINDS_HINT + "; or pass the framework explicitly",
    )


_KINDS_HINT = (
    "known kinds: sklearn (.skops, .joblib, .pkl), onnx (.onnx), xgboost (.json, .ubj from "
    "save_model), lightgbm (a text model from save_model), mlflow (a folder with an MLmodel file, "
    "as mlflow's save_model writes), predictor (a directory with predictor.py)"
)


def _check_framework(framework: str) -> None:
    if framework not in FRAMEWORKS:
        raise ConfigError(
            f"unknown framework {framework!r}; expected one of {', '.join(sorted(FRAMEWORKS))}",
            field="framework",
        )


# ------------------------------------------------------------------------------- load


def load_model(
    path: Path,
    framework: str,
    *,
    digest: str | None = None,
    signature: Signature | None = None,
    skops_trust: Sequence[str] = (),
) -> LoadedModel:
    """Load a model artifact for serving.

    Args:
        path: A ``.skops``/``.joblib``/``.pkl``, ``.onnx``, XGBoost or LightGBM model file, an
            MLflow model folder, or a predictor directory.
        framework: One of :data:`~mlshift.specs.model.FRAMEWORKS` (see :func:`detect_framework`).
        digest: ``sha256:<hex>`` the artifact must match; checked before anything is read.
        signature: What the model takes; inferred from the artifact when omitted.
        skops_trust: Type names a ``.skops`` file may hold beyond the trusted set (the
            ``mlshift.skops-trust`` tag of a registered version).

    Raises:
        ConfigError: for an unknown framework, a missing, unreadable or corrupt artifact, a
            ``.skops`` file holding untrusted types, or a signature that contradicts the model.
        IntegrityError: if the artifact does not match ``digest``.
        ImportError: if the framework's library is not installed (naming the extra).
    """
    path = Path(path)
    _check_framework(framework)
    if not path.exists():
        raise ConfigError(f"artifact path {str(path)!r} does not exist", field="path")
    if digest is not None:
        # Before deserializing anything: a tampered pickle must never be unpickled.
        verify_digest(path, digest)
    if framework == "sklearn":
        return _load_sklearn_model(path, signature, digest, skops_trust)
    if framework == "onnx":
        return _load_onnx_model(path, signature, digest)
    if framework == "xgboost":
        from mlshift.serving._boosters import load_xgboost_model

        return load_xgboost_model(path, signature, digest)
    if framework == "lightgbm":
        from mlshift.serving._boosters import load_lightgbm_model

        return load_lightgbm_model(path, signature, digest)
    if framework == "mlflow":
        from mlshift.serving._mlflow import load_mlflow_model

        return load_mlflow_model(path, signature, digest, skops_trust)
    return _load_predictor_model(path, signature, digest)


def infer_signature(path: Path, framework: str, *, skops_trust: Sequence[str] = ()) -> Signature | None:
    """Read what a model takes from the artifact itself.

    scikit-learn: ``feature_names_in_`` (named columns) or ``n_features_in_``; ONNX: the
    width of the first input; XGBoost and LightGBM: the booster's feature names, else its
    feature count; MLflow: the ``MLmodel`` file's signature, else its input example, else the
    flavor's own; predictor: the ``Predictor`` class's ``signature`` attribute.

    Returns:
        The signature, or ``None`` when the artifact does not say.

    Raises:
        ConfigError: for an unknown framework, an artifact that cannot be loaded, or a
            ``.skops`` file holding types outside the trusted set and ``skops_trust``.
    """
    path = Path(path)
    _check_framework(framework)
    if not path.exists():
        raise ConfigError(f"artifact path {str(path)!r} does not exist", field="path")
    if framework == "sklearn":
        return _sklearn_signature(_read_sklearn(path, skops_trust))
    if framework == "onnx":
        session = _onnx_session(path)
        return _onnx_signature(session, path)
    if framework == "xgboost":
        from mlshift.serving._boosters import _read_booster, xgboost_signature

        return xgboost_signature(_read_booster(path), path)
    if framework == "lightgbm":
        from mlshift.serving._boosters import lightgbm_signature, read_lightgbm_booster

        return lightgbm_signature(read_lightgbm_booster(path), path)
    if framework == "mlflow":
        from mlshift.serving._mlflow import mlflow_signature

        return mlflow_signature(path, skops_trust=skops_trust)
    return _predictor_signature(_predictor_class(path), path)


def _cannot_load(path: Path, what: str, exc: BaseException) -> ConfigError:
    detail = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
    reason = f"{type(exc).__name__}: {detail}" if detail else type(exc).__name__
    return ConfigError(f"cannot load {what} {str(path)!r}: {reason}", field="path")


def _missing(extra: str, what: str, exc: ImportError) -> ImportError:
    return ImportError(f"{what} needs the {extra!r} extra: pip install 'mlshift[{extra}]' ({exc})")


def _check_width(signature: Signature, n: int | None, path: Path) -> None:
    if n is not None and signature.n_features != n:
        raise ConfigError(
            f"the signature has {signature.n_features} inputs but the model in {str(path)!r} takes {n}",
            field="signature",
        )


# ---------------------------------------------------------------------------- sklearn


def _read_sklearn(path: Path, trust: Sequence[str] = ()) -> Any:
    if path.is_dir():
        raise ConfigError(f"sklearn artifact {str(path)!r} is a directory, expected a file")
    if path.suffix.lower() == ".skops":
        return _read_skops(path, trust)
    try:
        import joblib
    except ImportError as exc:
        raise _missing("sklearn", "loading joblib models", exc) from exc
    try:
        # joblib unpickles: it runs whatever the file says. The digest check in load_model
        # is what makes that acceptable; use .skops for files of unknown origin.
        return joblib.load(path)
    except Exception as exc:
        raise _cannot_load(path, "joblib model", exc) from exc


def untrusted_skops_types(path: Path, trust: Sequence[str] = ()) -> list[str]:
    """The types in a ``.skops`` file that neither skops, mlshift nor ``trust`` vouch for.

    Reading the list builds nothing: skops only looks at the file's schema.

    Raises:
        ConfigError: if the file is not a readable skops file.
    """
    sio = _skops_io()
    try:
        untrusted: list[str] = sio.get_untrusted_types(file=path)
    except Exception as exc:
        raise _cannot_load(path, "skops model", exc) from exc
    allowed = SKOPS_EXTRA_TRUSTED | set(trust) | set(parse_skops_trust(os.environ.get(SKOPS_TRUST_ENV)))
    return sorted(t for t in untrusted if t not in allowed and not _is_sklearn_estimator(t))


# skops builds its default trusted set when skops.io is first imported, and for it imports
# every module of scikit-learn (sklearn.utils.all_estimators): a second or more of a model
# server's start that has nothing to do with the one model it loads. A process that only
# serves may import skops.io without that scan; the scikit-learn estimators it would have
# trusted are then recognised one by one (_is_sklearn_estimator), by the same rule.
_QUICK_SKOPS = False
_SKOPS_IMPORT = threading.Lock()
_ESTIMATOR_NAMES: set[str] | None = None


def quick_skops_import() -> None:
    """Have this process import skops.io without scanning all of scikit-learn.

    For processes that serve a scikit-learn model and run no other code
    (:func:`mlshift.serving.serve` of a ``sklearn`` artifact):
    skops' own default trusted set then lacks scikit-learn's estimators, which mlshift
    recognises by itself; other code calling ``skops.io.load`` in the same process without
    naming them as trusted would see them refused.
    """
    global _QUICK_SKOPS
    _QUICK_SKOPS = True


def _skops_io() -> Any:
    with _SKOPS_IMPORT:
        if _QUICK_SKOPS and "skops.io" not in sys.modules:
            try:
                import sklearn.utils
            except ImportError as exc:
                raise _missing("sklearn", "loading .skops models", exc) from exc
            real = sklearn.utils.all_estimators
            sklearn.utils.all_estimators = lambda type_filter=None: []
            try:
                import skops.io as sio
            except ImportError as exc:
                raise _missing("sklearn", "loading .skops models", exc) from exc
            finally:
                sklearn.utils.all_estimators = real
            return sio
        try:
            import skops.io as sio
        except ImportError as exc:
            raise _missing("sklearn", "loading .skops models", exc) from exc
        return sio


def _is_sklearn_estimator(name: str) -> bool:
    """Whether ``name`` is one of the scikit-learn estimators skops trusts by default.

    skops trusts every class ``sklearn.utils.all_estimators()`` lists: public, concrete
    ``BaseEstimator`` subclasses found in scikit-learn's public modules. Most are found by
    :func:`_exported_estimator`; any other name is looked up in the full list, built once
    as skops builds it.
    """
    if not name.startswith("sklearn."):
        return False
    return _exported_estimator(name) or name in _sklearn_estimator_names()


def _exported_estimator(name: str) -> bool:
    """Whether the public package above ``name``'s module exports it as an estimator that
    ``all_estimators()`` lists (``sklearn.linear_model._logistic.LogisticRegression`` from
    ``sklearn.linear_model``).

    It imports that package only, which loading the model imports anyway. ``False`` means
    "not found this way", not "not an estimator".
    """
    module_name, _, class_name = name.rpartition(".")
    parts = module_name.split(".")
    private = next((i for i, part in enumerate(parts) if part.startswith("_")), len(parts))
    public = ".".join(parts[:private])
    if parts[0] != "sklearn" or public == "sklearn" or class_name.startswith("_"):
        return False
    try:
        import inspect
        from importlib import import_module

        from sklearn.base import BaseEstimator
        from sklearn.utils.discovery import _MODULE_TO_IGNORE
        from skops.io._utils import get_type_name

        if set(parts) & set(_MODULE_TO_IGNORE):
            return False
        cls = getattr(import_module(public), class_name, None)
    except ImportError:
        return False
    return (
        inspect.isclass(cls)
        and issubclass(cls, BaseEstimator)
        and cls is not BaseEstimator
        and not inspect.isabstract(cls)
        and get_type_name(cls) == name
    )


def _sklearn_estimator_names() -> set[str]:
    global _ESTIMATOR_NAMES
    if _ESTIMATOR_NAMES is None:
        with _SKOPS_IMPORT:
            if "skops.io" in sys.modules and not _QUICK_SKOPS:
                from skops.io._trusted_types import SKLEARN_ESTIMATOR_TYPE_NAMES

                _ESTIMATOR_NAMES = set(SKLEARN_ESTIMATOR_TYPE_NAMES)
            else:
                from sklearn.utils import all_estimators
                from skops.io._utils import get_type_name

                _ESTIMATOR_NAMES = {
                    n for _, c in all_estimators() if (n := get_type_name(c)).startswith("sklearn.")
                }
    return _ESTIMATOR_NAMES


def check_skops_trust(path: Path, trust: Sequence[str] = ()) -> None:
    """Refuse a ``.skops`` file holding types nobody trusted, naming them and how to trust them.

    Raises:
        ConfigError: naming the untrusted types.
    """
    refused = untrusted_skops_types(path, trust)
    if not refused:
        return
    names = ",".join(refused)
    flags = " ".join(f"--skops-trust {t}" for t in refused)
    raise ConfigError(
        f"skops model {str(path)!r} contains types mlshift does not trust: {', '.join(refused)}",
        field="path",
        hint=(
            "building them can run arbitrary code (numpy.vectorize(builtins.eval) evaluates any "
            "string); only if you made this file and trust it, register it with "
            f"`{flags}` (recorded with the version) or set {SKOPS_TRUST_ENV}={names}"
        ),
    )


def _read_skops(path: Path, trust: Sequence[str] = ()) -> Any:
    sio = _skops_io()
    check_skops_trust(path, trust)
    try:
        # Everything left untrusted was vouched for above, by name.
        return sio.load(path, trusted=sio.get_untrusted_types(file=path))
    except Exception as exc:
        raise _cannot_load(path, "skops model", exc) from exc


def _sklearn_signature(estimator: Any) -> Signature | None:
    names = getattr(estimator, "feature_names_in_", None)
    if names is not None:
        return Signature.from_columns([str(n) for n in names])
    n = getattr(estimator, "n_features_in_", None)
    if isinstance(n, int) and n > 0:
        return Signature.numeric(n)
    return None


def _load_sklearn_model(
    path: Path, signature: Signature | None, digest: str | None, trust: Sequence[str]
) -> LoadedModel:
    return sklearn_model(_read_sklearn(path, trust), path, signature, digest)


def sklearn_model(
    estimator: Any,
    path: Path,
    signature: Signature | None,
    digest: str | None,
    *,
    method: str = "predict",
    cls: type[_ArrayModel] = _SklearnModel,
) -> LoadedModel:
    """Wrap a fitted scikit-learn estimator for serving: ``method`` answers each batch.

    Raises:
        ConfigError: if the estimator has no such method, or ``signature`` has another width.
    """
    run = getattr(estimator, method, None)
    if not callable(run):
        raise ConfigError(
            f"{str(path)!r} holds a {type(estimator).__name__}, which has no {method} method",
            field="path",
            hint="save a fitted estimator or pipeline",
        )
    inferred = _sklearn_signature(estimator)
    if signature is not None:
        _check_width(signature, getattr(estimator, "n_features_in_", None), path)
    else:
        signature = inferred
    if getattr(estimator, "feature_names_in_", None) is not None:
        # The server orders columns by name itself and hands the model an array, so
        # scikit-learn's "X does not have valid feature names" warning would fire on every
        # request and mean nothing.
        warnings.filterwarnings("ignore", message="X does not have valid feature names", category=UserWarning)
    from mlshift.serving._arrays import array_dtype

    return cls(
        path=path,
        signature=signature,
        digest=digest,
        native=estimator,
        dtype=array_dtype(signature),
        run=run,
        refusals=(ValueError, TypeError),
    )


# ------------------------------------------------------------------------------- onnx

_ONNX_DTYPES = {
    "tensor(float)": "float32",
    "tensor(double)": "float64",
    "tensor(int64)": "int64",
    "tensor(int32)": "int32",
    "tensor(bool)": "bool",
    "tensor(string)": "string",
}


def _onnx_session(path: Path) -> Any:
    try:
        import onnxruntime as ort
    except ImportError as exc:
        raise _missing("onnx", "loading ONNX models", exc) from exc
    if path.is_dir():
        raise ConfigError(f"onnx artifact {str(path)!r} is a directory, expected a file")
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: its warnings would go to stderr per session
    try:
        return ort.InferenceSession(str(path), sess_options=options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise _cannot_load(path, "ONNX model", exc) from exc


def _onnx_input(session: Any, path: Path) -> Any:
    inputs = session.get_inputs()
    if len(inputs) != 1:
        names = ", ".join(i.name for i in inputs)
        raise ConfigError(
            f"ONNX model {str(path)!r} has {len(inputs)} inputs ({names}); the server feeds one "
            "2-D tensor of rows",
            field="path",
            hint="export the model with a single [batch, features] input",
        )
    first = inputs[0]
    if first.type not in _ONNX_DTYPES or len(first.shape) != 2:
        raise ConfigError(
            f"ONNX model {str(path)!r} takes {first.type} of shape {first.shape}; the server "
            "feeds a 2-D [batch, features] tensor of numbers or strings",
            field="path",
        )
    return first


def _onnx_signature(session: Any, path: Path) -> Signature | None:
    first = _onnx_input(session, path)
    width = first.shape[1]
    if isinstance(width, int) and width > 0:
        return Signature.numeric(width, dtype=_ONNX_DTYPES[first.type])  # type: ignore[arg-type]
    return None


def _load_onnx_model(
    path: Path, signature: Signature | None, digest: str | None, *, cls: type[_ArrayModel] = _OnnxModel
) -> LoadedModel:
    import numpy as np

    session = _onnx_session(path)
    first = _onnx_input(session, path)
    inferred = _onnx_signature(session, path)
    if signature is not None:
        _check_width(signature, inferred.n_features if inferred else None, path)
    else:
        signature = inferred
    kind = _ONNX_DTYPES[first.type]
    dtype = np.dtype(object) if kind == "string" else np.dtype(kind)
    input_name: str = first.name
    output_names = [session.get_outputs()[0].name]
    session_run = session.run

    def run(array: Any) -> Any:
        # Only the first output (labels for a classifier): onnxruntime then skips the rest.
        return session_run(output_names, {input_name: array})[0]

    try:
        from onnxruntime.capi.onnxruntime_pybind11_state import (
            Fail,
            InvalidArgument,
        )

        refusals: tuple[type[BaseException], ...] = (InvalidArgument, Fail, ValueError)
    except ImportError:  # pragma: no cover - a private module; keep working if it moves
        refusals = (ValueError,)
    return cls(
        path=path,
        signature=signature,
        digest=digest,
        native=session,
        dtype=dtype,
        run=run,
        refusals=refusals,
    )


# -------------------------------------------------------------------------- predictor

_PREDICTOR_IMPORT = threading.RLock()  # a predictor may load another predictor


def _import_predictor_module(path: Path) -> ModuleType:
    file = path / "predictor.py"
    if not file.is_file():
        raise ConfigError(
            f"predictor artifact {str(path)!r} has no predictor.py",
            field="path",
            hint="a predictor model is a directory with a predictor.py defining class Predictor",
        )
    # A name unique to the file's place and content, so two predictors never share a module
    # and an edited file is imported afresh; nothing is added to sys.path, so the user's
    # directory cannot shadow other imports.
    try:
        source = file.read_bytes()
    except OSError as exc:
        raise _cannot_load(file, "predictor module", exc) from exc
    digest = hashlib.sha256(str(file.resolve()).encode() + b"\0" + source).hexdigest()[:16]
    name = f"_mlshift_predictor_{digest}"
    # The module is in sys.modules while its body runs, so without the lock a second thread
    # loading the same predictor would take a half-run module that has no Predictor yet.
    with _PREDICTOR_IMPORT:
        cached = sys.modules.get(name)
        if cached is not None:
            return cached
        spec = importlib.util.spec_from_file_location(name, file)
        if spec is None or spec.loader is None:  # pragma: no cover - a .py file always has one
            raise ConfigError(f"cannot import {str(file)!r}", field="path")
        module = importlib.util.module_from_spec(spec)
        # Registered while it runs so dataclasses and pickling inside it can find the module.
        sys.modules[name] = module
        try:
            spec.loader.exec_module(module)
        except Exception as exc:
            del sys.modules[name]
            raise _cannot_load(file, "predictor module", exc) from exc
        return module


def _predictor_class(path: Path) -> type[Any]:
    module = _import_predictor_module(path)
    cls = getattr(module, "Predictor", None)
    if not isinstance(cls, type):
        raise ConfigError(
            f"{str(path / 'predictor.py')!r} defines no class named Predictor",
            field="path",
            hint="define class Predictor with load(self, path) and predict(self, batch)",
        )
    missing = [m for m in ("load", "predict") if not callable(getattr(cls, m, None))]
    if missing:
        raise ConfigError(
            f"class Predictor in {str(path / 'predictor.py')!r} has no {' or '.join(missing)} method",
            field="path",
            hint="define load(self, path: Path) -> None and predict(self, batch) -> list",
        )
    return cls


def _predictor_signature(cls: type[Any], path: Path) -> Signature | None:
    declared = getattr(cls, "signature", None)
    if declared is None or isinstance(declared, Signature):
        return declared
    try:
        return Signature.model_validate(declared)
    except ValidationError as exc:
        raise ConfigError(
            f"Predictor.signature in {str(path / 'predictor.py')!r} is not a valid signature: "
            f"{exc.errors()[0]['msg']}",
            field="signature",
        ) from None


def _load_predictor_model(path: Path, signature: Signature | None, digest: str | None) -> LoadedModel:
    if not path.is_dir():
        raise ConfigError(
            f"predictor artifact {str(path)!r} is a file, expected a directory with predictor.py",
            field="path",
        )
    cls = _predictor_class(path)
    if signature is None:
        signature = _predictor_signature(cls, path)
    try:
        instance = cls()
        instance.load(path)
    except Exception as exc:
        raise _cannot_load(path, "predictor", exc) from exc
    loaded = _PredictorModel(path=path, signature=signature, digest=digest, native=instance)
    loaded.accepts_params = _takes_params(instance.predict)
    return loaded


def _takes_params(predict: Callable[..., Any]) -> bool:
    """Whether ``predict`` has a ``params`` argument (or takes any keyword)."""
    import inspect

    try:
        parameters = inspect.signature(predict).parameters.values()
    except (TypeError, ValueError):
        return False
    return any(p.name == "params" or p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters)
