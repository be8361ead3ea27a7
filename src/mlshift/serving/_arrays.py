"""Batches to numpy arrays and back: the fast path for scikit-learn and ONNX models.

Imported only by the loaders of those frameworks, so ``import mlshift.serving`` does not
import numpy.
"""

from __future__ import annotations

import re
import time
from typing import Any

import numpy as np
import numpy.typing as npt

from mlshift.errors import InvalidPayload
from mlshift.serving._payload import Batch, TooManyRows, check_rows, is_numeric_signature, loads
from mlshift.specs.model import Signature

__all__ = ["array_dtype", "parse_json_array", "parse_npy", "to_array", "to_list"]

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


# {"instances" | "inputs" | "input_data" | "data": [[...], ...]} or a bare [[...], ...], and
# nothing else, around the rows.
_ENVELOPE_START = re.compile(rb'\A\s*(?:\{\s*"(instances|inputs|input_data|data)"\s*:\s*)?\[\s*\[')
_ENVELOPE_END = re.compile(rb"\]\s*\](\s*\})?\s*\Z")
#: Bytes of rows parsed at a time: small enough that the GIL is handed back to the event loop
#: (health checks) every few tens of milliseconds, and that only one piece's Python objects
#: are alive at once.
PIECE_BYTES = 1 << 18


def parse_json_array(
    body: bytes | bytearray, signature: Signature | None, dtype: np.dtype[Any], max_rows: int
) -> Batch | None:
    """Parse a large ``{"instances": [[numbers...], ...]}`` body straight into one array.

    The same for ``inputs``, ``input_data``, ``data`` and a bare list of rows.

    Parsing 100 MB of small rows into Python lists costs gigabytes and holds the GIL for
    seconds; this parses about a megabyte of rows at a time into an array and keeps only the
    arrays. It takes only numeric rows with no strings or objects anywhere in them; for
    another shape it returns ``None`` and the exact parser takes over. A piece holding a bad
    row is checked by the exact checker, which names the row by its place in the request, so
    answers never differ between the two.

    Raises:
        TooManyRows: as soon as more than ``max_rows`` rows have been read.
        InvalidPayload: naming the first row or value that does not fit.
    """
    head = _ENVELOPE_START.match(body, 0, 256)
    tail = _ENVELOPE_END.search(body, max(0, len(body) - 256))
    if head is None or tail is None or (head.group(1) is None) != (tail.group(1) is None):
        return None
    start, end = head.end() - 1, tail.start() + 1  # the first row's "[", the last row's "]"
    source = "body" if head.group(1) is None else head.group(1).decode()
    if body.find(b'"', start, end) != -1 or body.find(b"{", start, end) != -1:
        return None
    width = signature.n_features if signature is not None else None
    pieces: list[npt.NDArray[Any]] = []
    rows = 0
    pos = start
    while pos < end:
        cut = body.find(b"]", min(pos + PIECE_BYTES, end - 1), end)
        if cut == -1 or cut >= end - 1:
            cut, following = end - 1, end
        else:
            following = body.find(b"[", cut, end)
            if following == -1 or body[cut + 1 : following].strip() != b",":
                return None  # not a boundary between flat rows: nested lists
        try:
            rows_of_piece = loads(b"[" + body[pos : cut + 1] + b"]")
        except ValueError:
            return None  # not JSON on its own: the cut was not between rows
        try:
            part = np.asarray(rows_of_piece)
            fits = (
                part.ndim == 2
                and part.dtype.kind in _NUMERIC_KINDS
                and (width is None or part.shape[1] == width)
                and (not pieces or part.shape[1] == pieces[0].shape[1])
                and not (dtype.kind in "iu" and part.dtype.kind == "f" and bool(np.any(np.mod(part, 1))))
            )
        except (ValueError, TypeError):
            fits = False
        if not fits:
            check_rows(Batch(rows=rows_of_piece, source=source, offset=rows), signature, numeric_default=True)
            return None  # nothing wrong within the piece (rows of another width elsewhere)
        rows += part.shape[0]
        if rows > max_rows:
            raise TooManyRows(rows)
        pieces.append(part.astype(dtype, copy=False))
        # Hand the GIL over now: the event loop may be waiting for it, to answer a health check.
        time.sleep(0)
        pos = following
    if not pieces:
        return None
    array = pieces[0] if len(pieces) == 1 else np.concatenate(pieces)
    return Batch(rows=[], source=source, kind="rows", array=array)


def parse_npy(body: bytes | bytearray, signature: Signature | None, dtype: np.dtype[Any] | None) -> Batch:
    """Read an ``application/x-npy`` body (what SageMaker's ``NumpySerializer`` sends).

    Never unpickles: object arrays are refused. A 2-D array is rows; a 1-D array is one row,
    or one value per row for a one-feature model (as with a flat JSON list).

    Args:
        body: The ``.npy`` bytes.
        signature: What the model takes.
        dtype: The numeric dtype of the model's input array; ``None`` for models that take
            rows (the array is then handed over as rows and checked as JSON rows are).

    Raises:
        InvalidPayload: for a body that is not a ``.npy`` array of numbers (or strings, for
            models that take them), or one whose width does not fit the signature.
    """
    import io

    try:
        arr = np.load(io.BytesIO(bytes(body)), allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise InvalidPayload(
            f"the application/x-npy body is not a .npy array: {exc}",
            hint="send numpy.save output (object arrays are not accepted), or send JSON",
        ) from None
    if not isinstance(arr, np.ndarray):  # an .npz archive
        raise InvalidPayload(
            "the application/x-npy body is an .npz archive, expected one .npy array",
            hint="send numpy.save output of one 2-D array",
        )
    if arr.ndim == 1:
        one_feature = signature is not None and signature.n_features == 1
        arr = arr.reshape(-1, 1) if one_feature else arr.reshape(1, -1)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise InvalidPayload(
            f"the application/x-npy array has shape {list(arr.shape)}, expected [rows, features]",
            hint="send a 2-D array with one row per instance",
        )
    if signature is not None and arr.shape[1] != signature.n_features:
        raise InvalidPayload(
            f"the application/x-npy array has {arr.shape[1]} columns, the model takes {signature.n_features}"
        )
    kind = arr.dtype.kind
    if dtype is None or kind not in _NUMERIC_KINDS:
        if kind not in "biufU":
            raise InvalidPayload(
                f"the application/x-npy array holds {arr.dtype}, expected numbers or strings"
            )
        return Batch(rows=arr.tolist(), source="npy", kind="rows", columns=_column_names(signature))
    if dtype.kind in "iu" and kind == "f" and bool(np.any(np.mod(arr, 1))):
        raise InvalidPayload(f"the application/x-npy array holds fractions, the model takes {dtype} values")
    return Batch(rows=[], source="npy", kind="rows", array=arr.astype(dtype, copy=False))


def _column_names(signature: Signature | None) -> tuple[str, ...] | None:
    return signature.column_names if signature is not None else None
