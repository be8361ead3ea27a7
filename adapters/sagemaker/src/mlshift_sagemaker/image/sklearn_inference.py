"""mlshift's inference script for AWS's prebuilt scikit-learn container.

mlshift packages this file as ``code/inference.py`` in the ``model.tar.gz`` of a model served
with ``image: prebuilt``, next to the model file. The container's model server imports it
(``SAGEMAKER_PROGRAM=inference.py``) and follows its contract: ``model_fn(model_dir)`` once,
then, per request, ``input_fn(body, content_type)`` → ``predict_fn(data, model)`` →
``output_fn(prediction, accept)``.

It takes the request bodies the mlshift model server takes (``{"instances": ...}``,
``{"inputs": ...}``, ``{"dataframe_split": ...}``, ``{"dataframe_records": ...}``, Azure ML's
``{"input_data": ...}`` and ``{"data": ...}``, a bare JSON list, CSV rows, or an
``application/x-npy`` array) and answers ``{"predictions": [...]}``, so ``predict`` reads the same from
either image. mlshift is not installed in that container: this file uses the standard library,
numpy and joblib (which the container has), pandas when the model was fitted on named columns,
and skops for ``.skops`` files (listed in ``code/requirements.txt``, installed by the container).
"""

# The container's Python may be older than mlshift's (3.9 in the 1.2-1 image): no 3.10 syntax
# at run time here, hence zip() without strict=.
from __future__ import annotations

import csv
import hashlib
import io
import json
import os
from pathlib import Path
from typing import Any

#: The model file, as the adapter set it (``/opt/ml/model/<file>``).
ARTIFACT_ENV = "MLSHIFT_ARTIFACT"
DIGEST_ENV = "MLSHIFT_MODEL_DIGEST"
SIGNATURE_ENV = "MLSHIFT_SIGNATURE"
#: Types a ``.skops`` file may hold beyond skops' own trusted set, as in the mlshift server
#: (``mlshift.serving._loaders.SKOPS_EXTRA_TRUSTED``): exact names, never prefixes.
_DISTANCES = [
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
]
SKOPS_EXTRA_TRUSTED = frozenset(
    [
        "sklearn.tree._tree.Tree",
        "sklearn.ensemble._hist_gradient_boosting.predictor.TreePredictor",
        "sklearn.neighbors._kd_tree.KDTree",
        "sklearn.neighbors._ball_tree.BallTree",
    ]
    + [f"sklearn.metrics._dist_metrics.{n}Distance{b}" for b in (32, 64) for n in _DISTANCES]
)
_SUFFIXES = (".skops", ".joblib", ".pkl")
_JSON = "application/json"
_CSV = "text/csv"
_NPY = "application/x-npy"


class LoadedModel:
    """The estimator, and the input column names when they are known."""

    def __init__(self, estimator: Any, columns: list[str] | None) -> None:
        self.estimator = estimator
        self.columns = columns


def _artifact(model_dir: str) -> Path:
    root = Path(model_dir)
    named = os.environ.get(ARTIFACT_ENV, "")
    if named:
        path = root / Path(named).name
        if path.is_file():
            return path
    found = sorted(p for p in root.iterdir() if p.suffix.lower() in _SUFFIXES and p.is_file())
    if len(found) != 1:
        raise ValueError(f"expected one .skops, .joblib or .pkl file in {model_dir}, found {len(found)}")
    return found[0]


def _verify(path: Path, digest: str) -> None:
    sha = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            sha.update(block)
    if "sha256:" + sha.hexdigest() != digest:
        raise ValueError(f"{path.name} does not match its registered digest {digest}; refusing to load it")


def _load_skops(path: Path) -> Any:
    import skops.io as sio

    untrusted = sio.get_untrusted_types(file=path)
    trusted = {t.strip() for t in os.environ.get("MLSHIFT_SKOPS_TRUST", "").split(",") if t.strip()}
    refused = sorted(t for t in untrusted if t not in SKOPS_EXTRA_TRUSTED and t not in trusted)
    if refused:
        raise ValueError(
            f"{path.name} holds types mlshift does not trust: {', '.join(refused)} (building them "
            "can run code; if you made this file, set MLSHIFT_SKOPS_TRUST="
            f"{','.join(refused)} in the endpoint's environment)"
        )
    return sio.load(path, trusted=untrusted)


def model_fn(model_dir: str) -> LoadedModel:
    """Load the model file (its digest checked first, when the adapter set one)."""
    path = _artifact(model_dir)
    digest = os.environ.get(DIGEST_ENV)
    if digest:
        _verify(path, digest)
    if path.suffix.lower() == ".skops":
        estimator = _load_skops(path)
    else:
        import joblib

        estimator = joblib.load(path)  # unpickles: the digest check above vouches for the bytes
    columns: list[str] | None = None
    signature = os.environ.get(SIGNATURE_ENV)
    if signature:
        names = [c.get("name") for c in json.loads(signature).get("inputs", [])]
        if names and all(isinstance(n, str) for n in names):
            columns = names
    if columns is None and hasattr(estimator, "feature_names_in_"):
        columns = [str(n) for n in estimator.feature_names_in_]
    return LoadedModel(estimator, columns)


def _rows(value: Any, source: str) -> list[Any]:
    if isinstance(value, list):
        return value
    if isinstance(value, dict) and value and all(isinstance(v, list) for v in value.values()):
        names = list(value)  # columns: {"a": [1, 2], "b": [3, 4]}
        return [dict(zip(names, row)) for row in zip(*value.values())]  # noqa: B905
    raise ValueError(f"{source} should be a list of rows or an object of columns")


def _rows_from_json(value: Any) -> list[Any]:
    if isinstance(value, list):
        return value
    if isinstance(value, dict):
        for key in ("instances", "inputs", "data"):
            if key in value:
                return _rows(value[key], key)
        split_key = next((k for k in ("dataframe_split", "input_data") if k in value), None)
        if split_key == "input_data" and isinstance(value["input_data"], list):
            return value["input_data"]
        if split_key is not None:
            split = value[split_key]
            columns, data = split.get("columns"), split["data"]
            return [dict(zip(columns, row)) for row in data] if columns else list(data)  # noqa: B905
        if "dataframe_records" in value:
            return list(value["dataframe_records"])
    raise ValueError(
        'expected {"instances": [...]}, {"inputs": ...}, {"dataframe_split": ...}, '
        '{"dataframe_records": ...}, {"input_data": ...}, {"data": [...]} or a JSON list of rows'
    )


def input_fn(request_body: bytes | str, content_type: str = _JSON) -> list[Any]:
    """Parse a request body into rows: lists of values, or ``{column: value}`` records."""
    kind = (content_type or _JSON).split(";", 1)[0].strip().lower()
    if kind == _NPY:
        import numpy as np

        raw = request_body.encode() if isinstance(request_body, str) else bytes(request_body)
        try:
            array = np.load(io.BytesIO(raw), allow_pickle=False)  # never unpickle a request
        except (ValueError, OSError, EOFError) as exc:
            raise ValueError(f"the application/x-npy body is not a .npy array: {exc}") from None
        if array.ndim == 1:
            array = array.reshape(1, -1)
        rows: list[Any] = array.tolist()
        return rows
    text = request_body.decode("utf-8") if isinstance(request_body, (bytes, bytearray)) else request_body
    if kind == _JSON:
        rows = _rows_from_json(json.loads(text))
    elif kind == _CSV:
        rows = [[float(v) for v in line] for line in csv.reader(io.StringIO(text)) if line]
    else:
        raise ValueError(f"unsupported content type {content_type!r}; send {_JSON}, {_CSV} or {_NPY}")
    if not rows:
        raise ValueError("the request holds no rows")
    return [r if isinstance(r, (list, dict)) else [r] for r in rows]


def predict_fn(input_data: list[Any], model: LoadedModel) -> Any:
    """Predict: named columns are put in the model's order (as a DataFrame when it has names)."""
    import numpy as np

    columns = model.columns
    if any(isinstance(r, dict) for r in input_data):
        if columns is None:
            raise ValueError("rows with column names need a model with known input names")
        missing = sorted({c for r in input_data if isinstance(r, dict) for c in columns if c not in r})
        if missing:
            raise ValueError(f"missing columns: {', '.join(missing)}")
        input_data = [[r[c] for c in columns] if isinstance(r, dict) else r for r in input_data]
    if columns is not None and hasattr(model.estimator, "feature_names_in_"):
        import pandas as pd

        return model.estimator.predict(pd.DataFrame(input_data, columns=columns))
    return model.estimator.predict(np.asarray(input_data))


def output_fn(prediction: Any, accept: str = _JSON) -> tuple[str, str]:
    """``({"predictions": [...]}, application/json)``, or CSV lines when ``accept`` asks for it."""
    values = prediction.tolist() if hasattr(prediction, "tolist") else list(prediction)
    if (accept or "").split(";", 1)[0].strip().lower() == _CSV:
        out = io.StringIO()
        writer = csv.writer(out, lineterminator="\n")
        for value in values:
            writer.writerow(value if isinstance(value, list) else [value])
        return out.getvalue(), _CSV
    return json.dumps({"predictions": values}), _JSON
