"""Batches to numpy arrays and back: the fast path for scikit-learn and ONNX models.

Imported only by the loaders of those frameworks, so ``import mlshift.serving`` does not
import numpy.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import numpy.typing as npt

from mlshift.errors import InvalidPayload
from mlshift.serving._payload import Batch, check_rows, is_numeric_signature
from mlshift.specs.model import Signature

__all__ = ["array_dtype", "to_array", "to_list"]

_NUMERIC_KINDS = frozenset("biuf")


def array_dtype(signature: Signature | None, default: str = "float64") -> np.dtype[Any]:
    """The one dtype to build a model's input array with.

    A signature whose columns share one numeric dtype uses it, mixed ones use ``default``;
    any string column means an object array, which pipelines with encoders accept.
    """
    if not is_numeric_signature(signature):
        return np.dtype(object)
    kinds = {c.dtype for c in signature.inputs} if signature is not None else set()
    if len(kinds) == 1 and "bool" not in kinds:
        return np.dtype(kinds.pop())
    return np.dtype(default)


def to_array(batch: Batch, signature: Signature | None, dtype: np.dtype[Any]) -> npt.NDArray[Any]:
    """Build one 2-D array from a batch, refusing what does not fit the signature.

    The common case costs one ``np.asarray`` and a dtype check, all in C: the width and the
    element kind of the array tell whether every row fits. Only a refused batch is walked in
    Python (:func:`check_rows`), to say which row or value is wrong.

    Raises:
        InvalidPayload: naming the first row or value that does not fit.
    """
    if dtype.kind == "O":
        return np.asarray(check_rows(batch, signature), dtype=object)
    try:
        arr = np.asarray(batch.rows)
    except (ValueError, TypeError):
        # Ragged rows, or values numpy cannot hold; the exact check names the culprit.
        raise _explain(batch, signature) from None
    if arr.ndim != 2 or (signature is not None and arr.shape[1] != signature.n_features):
        raise _explain(batch, signature)
    kind = arr.dtype.kind
    if kind in _NUMERIC_KINDS:
        if dtype.kind in "iu" and kind == "f" and np.any(np.mod(arr, 1)):
            raise _explain(batch, signature)
        return arr.astype(dtype, copy=False)
    if kind == "U" and batch.text:
        try:
            # CSV cells are strings; numpy parses them (and surrounding spaces) in C.
            return arr.astype(dtype)
        except ValueError:
            raise _explain(batch, signature) from None
    raise _explain(batch, signature)


def _explain(batch: Batch, signature: Signature | None) -> InvalidPayload:
    try:
        check_rows(batch, signature, numeric_default=True)
    except InvalidPayload as exc:
        return exc
    # check_rows found nothing the fast path refused: say what the model takes instead.
    n = f"{signature.n_features} " if signature is not None else ""
    return InvalidPayload(
        f"the batch cannot be read as a table of numbers: expected rows of {n}numbers",
        hint='send {"instances": [[...], ...]} with one list of numbers per row',
    )


def to_list(result: Any) -> list[Any]:
    """Model output to plain Python: one prediction per row."""
    if isinstance(result, np.ndarray):
        out: list[Any] = result.tolist()
        return out
    if isinstance(result, list):
        return result
    return list(result)
