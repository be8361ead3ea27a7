"""Request bodies in, prediction bodies out, with no pandas and no numpy.

Every accepted body shape becomes a :class:`Batch`: a list of rows, each a list of values in
the order of the model's signature, plus enough about where each row came from to name it in
an error (``instances[3]``, ``dataframe_split.data[0][2]``, ``line 7``).
"""

from __future__ import annotations

import csv
import io
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Literal

from mlshift.errors import InvalidPayload
from mlshift.specs.model import Signature

__all__ = [
    "ACCEPTED_KEYS",
    "Batch",
    "TooManyRows",
    "check_rows",
    "dumps",
    "encode_csv",
    "estimate_rows",
    "loads",
    "no_params",
    "parse_csv",
    "parse_json",
    "parse_json_records",
]

#: The top-level JSON keys that carry a batch, in the order they are documented: Vertex AI's
#: and TF Serving's ``instances`` / ``inputs``, MLflow's ``dataframe_split`` /
#: ``dataframe_records``, Azure ML's ``input_data`` (MLflow models) and ``data`` (its
#: ``score.py`` samples). A bare JSON list (SageMaker's scikit-learn container) is rows too.
ACCEPTED_KEYS: tuple[str, ...] = (
    "instances",
    "inputs",
    "dataframe_split",
    "dataframe_records",
    "input_data",
    "data",
)
# Vertex AI sends ``parameters`` next to ``instances``, MLflow clients ``params``. Non-empty,
# they reach a Predictor whose predict takes ``params``; other models refuse them.
_PARAMETER_KEYS = ("parameters", "params")
_NUMERIC = frozenset({"float32", "float64", "int32", "int64", "bool"})
_INTEGER = frozenset({"int32", "int64"})

try:
    import orjson

    _ORJSON_OPTIONS = orjson.OPT_SERIALIZE_NUMPY
    _HAVE_ORJSON = True
except ImportError:  # pragma: no cover - orjson ships with the "serve" extra
    import json

    _HAVE_ORJSON = False


def _default(value: Any) -> Any:
    # numpy scalars and arrays, and anything else a Predictor may return that knows how to
    # become plain Python; orjson handles most numpy types natively before getting here.
    for attr in ("tolist", "item"):
        convert = getattr(value, attr, None)
        if callable(convert):
            return convert()
    if isinstance(value, (set, frozenset, tuple)):
        return list(value)
    raise TypeError(f"cannot encode a {type(value).__name__} as JSON")


def dumps(value: Any) -> bytes:
    """Encode ``value`` as compact JSON bytes (orjson when installed, else the stdlib)."""
    if _HAVE_ORJSON:
        out: bytes = orjson.dumps(value, default=_default, option=_ORJSON_OPTIONS)
        return out
    return json.dumps(value, default=_default, separators=(",", ":")).encode()


def loads(body: bytes | bytearray) -> Any:
    """Decode JSON bytes (orjson when installed, else the stdlib).

    Raises:
        ValueError: if ``body`` is not valid JSON.
    """
    if _HAVE_ORJSON:
        return orjson.loads(body)
    return json.loads(body)


class TooManyRows(Exception):
    """A batch has more rows than the server takes (``rows`` counted so far)."""

    def __init__(self, rows: int) -> None:
        super().__init__(rows)
        self.rows = rows


def estimate_rows(body: bytes | bytearray, is_csv: bool, step: int = 1 << 20) -> int:
    """At least the number of rows in a body, give or take two, counted in C without parsing.

    Every JSON row is a list or an object, so it opens a bracket or a brace; every CSV row
    ends a line. Used to refuse a batch over the rows limit before parsing it costs memory.
    Counted ``step`` bytes at a time, so that other threads get the GIL in between.
    """
    marks = (b"\n",) if is_csv else (b"[", b"{")
    counts = [0] * len(marks)
    for start in range(0, len(body), step):
        for k, mark in enumerate(marks):
            counts[k] += body.count(mark, start, start + step)
        time.sleep(0)  # let the event loop have the GIL between steps
    return max(counts) - (1 if is_csv else 2)


RowsKind = Literal["rows", "single", "scalars", "records", "columns", "csv"]


@dataclass(frozen=True)
class Batch:
    """Rows to predict, each a list of values ordered like the model's signature.

    Attributes:
        rows: The rows.
        source: Where the rows were in the request (``instances``, ``dataframe_split.data``,
            ``csv``); only used to name a row or value in an error.
        kind: How ``source`` maps onto rows, so errors can point at the exact value.
        columns: The column names, in row order, when known.
        lines: For CSV, the line number of each row.
        text: True when values are still strings to be parsed (CSV).
        array: The rows already as one checked 2-D numpy array (large numeric bodies are
            parsed straight into one); ``rows`` is then empty.
        offset: The index in the request of ``rows[0]`` (errors about one piece of a large
            body name rows by their place in the whole request).
        params: Non-empty ``parameters`` (Vertex AI) or ``params`` (MLflow) sent with the rows.
        params_key: Which of the two keys ``params`` came from, to name it in an error.
    """

    rows: list[list[Any]]
    source: str = "batch"
    kind: RowsKind = "rows"
    columns: tuple[str, ...] | None = None
    lines: tuple[int, ...] | None = None
    text: bool = False
    array: Any = None
    offset: int = 0
    params: Mapping[str, Any] | None = None
    params_key: str = "params"

    @classmethod
    def of_rows(cls, rows: Sequence[Sequence[Any]]) -> Batch:
        """A batch of rows given directly in Python (``LoadedModel.predict``)."""
        return cls(rows=[r if isinstance(r, list) else list(r) for r in rows])

    def row_name(self, i: int) -> str:
        """How the request spells row ``i``, for error messages."""
        if self.kind == "csv" and self.lines is not None:
            return f"line {self.lines[i]}"
        if self.kind == "single":
            return self.source
        if self.kind == "columns":
            return f"row {i} of {self.source}"
        return f"{self.source}[{i + self.offset}]"

    def value_name(self, i: int, j: int) -> str:
        """How the request spells value ``j`` of row ``i``, with its column name when known."""
        column = self.columns[j] if self.columns is not None and j < len(self.columns) else None
        if self.kind == "csv" and self.lines is not None:
            where = f"line {self.lines[i]}, column {j + 1}"
            return f"{where} ({column})" if column else where
        if self.kind == "records" and column:
            return f"{self.source}[{i}][{column!r}]"
        if self.kind == "columns" and column:
            return f"{self.source}[{column!r}][{i}]"
        if self.kind == "single":
            where = f"{self.source}[{j}]"
        elif self.kind == "scalars":
            where = f"{self.source}[{i}]"
        else:
            where = f"{self.source}[{i + self.offset}][{j}]"
        return f"{where} ({column})" if column else where


# The last signature whose column names were asked for, and those names. A server asks for the
# same (frozen) signature's names on every request; building the tuple each time showed up in
# profiles of single-row requests.
_names_cache: tuple[Signature | None, tuple[str, ...] | None] = (None, None)


def _names(signature: Signature | None) -> tuple[str, ...] | None:
    """``signature.column_names``, remembered for the signature seen last."""
    global _names_cache
    if signature is None:
        return None
    cached, names = _names_cache
    if cached is not signature:
        names = signature.column_names
        _names_cache = (signature, names)
    return names


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = value if len(value) <= 40 else value[:37] + "..."
        return repr(text)
    if isinstance(value, (list, tuple)):
        return "a list"
    if isinstance(value, Mapping):
        return "an object"
    return f"a {type(value).__name__}"


def _takes(signature: Signature | None, n: int) -> str:
    """'the model takes 4 (a, b, c, d)', naming at most eight columns."""
    names = _names(signature)
    if not names:
        return f"the model takes {n}"
    shown = ", ".join(names[:8]) + (", ..." if len(names) > 8 else "")
    return f"the model takes {n} ({shown})"


def _empty(source: str) -> InvalidPayload:
    return InvalidPayload(
        f"the batch in {source!r} is empty",
        hint="send at least one row",
    )


def _shape_hint(signature: Signature | None) -> str:
    names = _names(signature)
    if names:
        example = ", ".join(f'"{n}": ...' for n in names[:3])
        return (
            f'send {{"instances": [[...], ...]}} with {len(names)} values per row, '
            f"or rows keyed by column name ({{{example}}})"
        )
    if signature is not None:
        return f'send {{"instances": [[...], ...]}} with {signature.n_features} values per row'
    return 'send {"instances": [[...], ...]}'


# --------------------------------------------------------------------------------- JSON


def parse_json(body: bytes | bytearray, signature: Signature | None) -> Batch:
    """Turn a JSON request body into a :class:`Batch` ordered by ``signature``.

    Accepts ``{"instances": ...}``, ``{"inputs": ...}``, ``{"dataframe_split": ...}``,
    ``{"dataframe_records": ...}``, ``{"input_data": ...}``, ``{"data": ...}`` and a bare
    JSON list of rows; see ``docs/serving.md`` for each shape.

    Raises:
        InvalidPayload: naming what was wrong and what was expected.
    """
    if not body.strip():
        raise InvalidPayload("the request body is empty", hint=_shape_hint(signature))
    try:
        doc = loads(body)
    except ValueError as exc:
        raise InvalidPayload(
            f"the request body is not valid JSON: {exc}",
            hint=f"{_shape_hint(signature)}, or send text/csv",
        ) from None
    if isinstance(doc, list):
        # SageMaker's convention (its scikit-learn container, the SDK's JSONSerializer).
        return _from_list(doc, "body", signature)
    if not isinstance(doc, dict):
        raise InvalidPayload(
            f"the request body is a JSON {_json_type(doc)}, expected a list of rows or an "
            f"object with one of the keys {', '.join(ACCEPTED_KEYS)}",
            hint=_shape_hint(signature),
        )
    present = [k for k in ACCEPTED_KEYS if k in doc]
    unknown = sorted(k for k in doc if k not in ACCEPTED_KEYS and k not in _PARAMETER_KEYS)
    if unknown:
        raise InvalidPayload(
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} "
            f"in the request body; expected one of {', '.join(ACCEPTED_KEYS)}",
            hint=_shape_hint(signature),
        )
    if len(present) != 1:
        found = f"found {', '.join(present)}" if present else "found none"
        raise InvalidPayload(
            f"the request body must have exactly one of {', '.join(ACCEPTED_KEYS)}; {found}",
            hint=_shape_hint(signature),
        )
    key = present[0]
    batch = _from_key(key, doc[key], signature)
    if "parameters" in doc or "params" in doc:
        return _with_params(batch, doc)
    return batch


def _from_key(key: str, value: Any, signature: Signature | None) -> Batch:
    if key == "dataframe_split" or (key == "input_data" and isinstance(value, dict)):
        return _from_split(value, signature, key)
    if key == "dataframe_records":
        if not isinstance(value, list):
            raise InvalidPayload(
                f"'dataframe_records' is a JSON {_json_type(value)}, expected a list of objects "
                "keyed by column name"
            )
        return _from_records(value, key, signature)
    if key == "inputs" and isinstance(value, dict):
        return _from_columns(value, key, signature)
    return _from_list(value, key, signature)


def _with_params(batch: Batch, doc: dict[str, Any]) -> Batch:
    """The batch with the request's non-empty ``parameters`` / ``params`` attached."""
    given = [k for k in _PARAMETER_KEYS if doc.get(k)]
    if not given:
        return batch
    if len(given) > 1:
        raise InvalidPayload(
            "the request has both 'parameters' and 'params'",
            hint="send the parameters under one of the two keys",
        )
    key = given[0]
    value = doc[key]
    if not isinstance(value, dict):
        raise InvalidPayload(
            f"{key!r} is a JSON {_json_type(value)}, expected an object of named parameters",
            hint=f'e.g. {{"{key}": {{"threshold": 0.5}}}}',
        )
    return replace(batch, params=value, params_key=key)


def no_params(batch: Batch) -> InvalidPayload:
    """The error for parameters sent to a model that takes none."""
    return InvalidPayload(
        f"the request has {batch.params_key!r}, but this model takes no parameters",
        hint=(
            f"leave {batch.params_key!r} out or send it empty; a predictor model takes them "
            "when its predict method has a params argument"
        ),
    )


def _json_type(value: Any) -> str:
    if isinstance(value, dict):
        return "object"
    if isinstance(value, list):
        return "list"
    if isinstance(value, str):
        return "string"
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    return "number"


def _from_list(value: Any, source: str, signature: Signature | None) -> Batch:
    if isinstance(value, dict):
        # One row keyed by column name: {"instances": {"a": 1, "b": 2}}.
        return _from_records([value], source, signature, single=True)
    if not isinstance(value, list):
        raise InvalidPayload(
            f"{source!r} is a JSON {_json_type(value)}, expected a list of rows",
            hint=_shape_hint(signature),
        )
    if not value:
        raise _empty(source)
    first = value[0]
    columns = _names(signature)
    if isinstance(first, list):
        return Batch(rows=value, source=source, kind="rows", columns=columns)
    if isinstance(first, dict):
        return _from_records(value, source, signature)
    # A flat list of scalars is one row, except for a one-feature model, where (as on Vertex
    # AI) each element is one instance.
    if signature is not None and signature.n_features == 1:
        return Batch(rows=[[v] for v in value], source=source, kind="scalars", columns=columns)
    return Batch(rows=[value], source=source, kind="single", columns=columns)


def _require_names(signature: Signature | None, what: str) -> tuple[str, ...]:
    names = _names(signature)
    if not names:
        raise InvalidPayload(
            f"{what} need column names, but the model's signature does not name its columns",
            hint=(
                "send rows as lists of values in the model's order, "
                'e.g. {"instances": [[...], ...]}; or register the model with a named signature'
            ),
        )
    return names


def _column_mismatch(given: Sequence[str], names: Sequence[str], where: str) -> InvalidPayload:
    missing = [n for n in names if n not in given]
    extra = [g for g in given if g not in names]
    parts = []
    if missing:
        parts.append(f"missing {', '.join(map(repr, missing))}")
    if extra:
        parts.append(f"unknown {', '.join(map(repr, extra))}")
    return InvalidPayload(
        f"{where} has columns that do not match the model: {'; '.join(parts)}",
        hint=f"the model takes {len(names)} columns: {', '.join(names)}",
    )


def _from_records(
    records: list[Any], source: str, signature: Signature | None, *, single: bool = False
) -> Batch:
    names = _require_names(signature, "rows keyed by column name")
    if not records:
        raise _empty(source)
    n = len(names)
    rows: list[list[Any]] = []
    for i, record in enumerate(records):
        where = source if single else f"{source}[{i}]"
        if not isinstance(record, dict):
            raise InvalidPayload(
                f"{where} is {_describe(record)}, expected an object keyed by column name",
                hint=_shape_hint(signature),
            )
        try:
            rows.append([record[c] for c in names])
        except KeyError:
            raise _column_mismatch(list(record), names, where) from None
        if len(record) != n:
            raise _column_mismatch(list(record), names, where)
    return Batch(rows=rows, source=source, kind="records", columns=names)


def _from_columns(value: dict[str, Any], source: str, signature: Signature | None) -> Batch:
    names = _require_names(signature, "columnar inputs")
    if set(value) != set(names):
        raise _column_mismatch(list(value), names, repr(source))
    columns = [value[n] for n in names]
    if all(isinstance(c, list) for c in columns):
        length = len(columns[0])
        for name, column in zip(names, columns, strict=True):
            if len(column) != length:
                raise InvalidPayload(
                    f"{source}[{name!r}] has {len(column)} values but {source}[{names[0]!r}] "
                    f"has {length}; every column needs one value per row"
                )
        if length == 0:
            raise _empty(source)
        rows = [list(r) for r in zip(*columns, strict=True)]
        return Batch(rows=rows, source=source, kind="columns", columns=names)
    if not any(isinstance(c, list) for c in columns):
        return Batch(rows=[columns], source=source, kind="records", columns=names)
    raise InvalidPayload(
        f"{source!r} mixes lists and single values; send every column as a list of the same "
        "length (or every column as a single value for one row)"
    )


def _from_split(value: Any, signature: Signature | None, source: str = "dataframe_split") -> Batch:
    if not isinstance(value, dict):
        raise InvalidPayload(
            f"{source!r} is a JSON {_json_type(value)}, expected an object with 'columns' and 'data'"
        )
    unknown = sorted(k for k in value if k not in ("columns", "data", "index"))
    if unknown:
        raise InvalidPayload(
            f"unknown key{'s' if len(unknown) > 1 else ''} {', '.join(map(repr, unknown))} in "
            f"{source!r}; expected 'columns', 'data' and optionally 'index'"
        )
    if "data" not in value:
        raise InvalidPayload(f"{source!r} has no 'data'", hint="send the rows in 'data'")
    data = value["data"]
    data_source = f"{source}.data"
    if not isinstance(data, list):
        raise InvalidPayload(f"{data_source!r} is a JSON {_json_type(data)}, expected a list of rows")
    if not data:
        raise _empty(data_source)
    given = value.get("columns")
    names = _names(signature)
    if given is None:
        return Batch(rows=data, source=data_source, kind="rows", columns=names)
    if names is not None and isinstance(given, list) and len(given) == len(names) and tuple(given) == names:
        # The common case, checked first: the client sent the model's own column order.
        return Batch(rows=data, source=data_source, kind="rows", columns=names)
    if not isinstance(given, list) or not all(isinstance(c, str) for c in given):
        raise InvalidPayload(f"'{source}.columns' must be a list of column names")
    if names is None:
        # Nothing to reorder by: trust the client's order, the width is still checked.
        return Batch(rows=data, source=data_source, kind="rows", columns=tuple(given))
    if len(given) != len(set(given)) or set(given) != set(names):
        raise _column_mismatch(given, names, f"'{source}.columns'")
    order = [given.index(n) for n in names]
    rows: list[list[Any]] = []
    for i, row in enumerate(data):
        if not isinstance(row, list) or len(row) != len(order):
            got = f"has {len(row)} values" if isinstance(row, list) else f"is {_describe(row)}"
            raise InvalidPayload(
                f"{data_source}[{i}] {got}, but '{source}.columns' names {len(order)} columns"
            )
        rows.append([row[k] for k in order])
    return Batch(rows=rows, source=data_source, kind="rows", columns=names)


# {"instances" | "inputs" | "dataframe_records" | "input_data" | "data": [{...}, ...]} or a
# bare [{...}, ...], and nothing else around the rows.
_RECORDS_START = re.compile(
    rb'\A\s*(?:\{\s*"(instances|inputs|dataframe_records|input_data|data)"\s*:\s*)?\[\s*\{'
)
_RECORDS_END = re.compile(rb"\}\s*\](\s*\})?\s*\Z")
_RECORD_BOUNDARY = re.compile(rb"\}\s*,\s*\{")
#: Bytes of records parsed at a time (see :func:`parse_json_records`).
RECORD_PIECE_BYTES = 1 << 18


def parse_json_records(body: bytes | bytearray, signature: Signature | None) -> Batch | None:
    """Parse a large body of rows keyed by column name a piece at a time.

    One ``loads`` of a 100 MB body holds the GIL for seconds; parsing about 256 KB of records
    at a time lets the event loop answer health checks in between. The body is cut between
    ``}`` and ``{`` around a comma; a cut that falls inside a string or a nested object leaves
    a piece that is not valid JSON on its own (an unclosed string or bracket), and the body is
    then left to :func:`parse_json` (``None``), so the answer never differs from it.

    Raises:
        InvalidPayload: as :func:`parse_json` for the same body.
    """
    head = _RECORDS_START.match(body, 0, 256)
    tail = _RECORDS_END.search(body, max(0, len(body) - 256))
    if head is None or tail is None or (head.group(1) is None) != (tail.group(1) is None):
        return None
    start, end = head.end() - 1, tail.start() + 1  # the first record's "{", the last one's "}"
    records: list[Any] = []
    pos = start
    while pos < end:
        boundary = _RECORD_BOUNDARY.search(body, min(pos + RECORD_PIECE_BYTES, end), end)
        cut, following = (boundary.start() + 1, boundary.end() - 1) if boundary else (end, end)
        try:
            piece = loads(b"[" + body[pos:cut] + b"]")
        except ValueError:
            return None
        if not all(isinstance(r, dict) for r in piece):
            return None
        records.extend(piece)
        pos = following
        time.sleep(0)  # hand the GIL to the event loop between pieces
    key = "body" if head.group(1) is None else head.group(1).decode()
    # As parse_json does with the whole document.
    return (
        _from_records(records, key, signature)
        if key == "dataframe_records"
        else _from_list(records, key, signature)
    )


# ---------------------------------------------------------------------------------- CSV


def parse_csv(body: bytes | bytearray, signature: Signature | None) -> Batch:
    """Turn a ``text/csv`` body into a :class:`Batch` of strings.

    A first line equal to the model's column names (in any order) is a header: it is skipped
    and the columns are reordered by it. Blank lines are ignored.

    Raises:
        InvalidPayload: if the body is not UTF-8 or has no rows.
    """
    try:
        text = body.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise InvalidPayload(f"the CSV body is not UTF-8: {exc}") from None
    rows: list[list[Any]] = []
    lines: list[int] = []
    reader = csv.reader(io.StringIO(text))
    try:
        for row in reader:
            if not row or not any(cell.strip() for cell in row):
                continue
            rows.append(row)
            lines.append(reader.line_num)
    except csv.Error as exc:
        raise InvalidPayload(f"the CSV body cannot be read at line {reader.line_num}: {exc}") from None
    names = _names(signature)
    if rows and names is not None:
        header = [cell.strip() for cell in rows[0]]
        if len(header) == len(names) and set(header) == set(names):
            del rows[0], lines[0]
            if header != list(names):
                order = [header.index(n) for n in names]
                rows = [[r[k] for k in order] if len(r) == len(order) else r for r in rows]
    if not rows:
        raise _empty("csv")
    return Batch(rows=rows, source="csv", kind="csv", columns=names, lines=tuple(lines), text=True)


def encode_csv(predictions: Sequence[Any]) -> bytes:
    """One line per prediction; a prediction that is a list becomes comma-separated values.

    Raises:
        TypeError: for a value that is not a string, number, boolean or null (it would be
            written as its ``repr``, such as ``<object object at 0x...>``).
    """
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    for p in predictions:
        if isinstance(p, (list, tuple)):
            row = list(p)
        elif isinstance(p, dict):
            row = list(p.values())
        else:
            row = [p]
        writer.writerow([_csv_cell(v) for v in row])
    return out.getvalue().encode()


def _csv_cell(value: Any) -> Any:
    if value is None or isinstance(value, (str, int, float)):
        return value
    item = getattr(value, "item", None)  # numpy scalars
    if callable(item):
        converted = item()
        if converted is None or isinstance(converted, (str, int, float)):
            return converted
    raise TypeError(f"cannot write a {type(value).__name__} as a CSV value")


# ----------------------------------------------------------------------------- checking


def _parse_number(text: str, integer: bool) -> float | int:
    value = float(text)
    if integer:
        if not value.is_integer():
            raise ValueError(text)
        return int(value)
    return value


def check_rows(
    batch: Batch, signature: Signature | None, *, numeric_default: bool = False
) -> list[list[Any]]:
    """Check every row and value in Python and return the rows, CSV strings parsed.

    This is the exact, slow path: it serves ``predictor`` models and signatures with string
    columns, and explains why the fast numpy path refused a batch. It raises at the first
    problem, naming the row or value.

    Args:
        batch: The rows.
        signature: What the model takes; without one only the rows' shape is checked.
        numeric_default: Whether values must be numbers when there is no signature.

    Raises:
        InvalidPayload: naming the first row or value that does not fit.
    """
    rows = batch.rows
    if not rows:
        raise _empty(batch.source)
    if signature is not None:
        n = signature.n_features
        dtypes: list[str] = [c.dtype for c in signature.inputs]
    else:
        first = rows[0]
        n = len(first) if isinstance(first, list) else 0
        dtypes = ["float64" if numeric_default else "any"] * n
    out: list[list[Any]] = rows
    for i, row in enumerate(rows):
        if not isinstance(row, list):
            raise InvalidPayload(
                f"{batch.row_name(i)} is {_describe(row)}, expected a list of {n} values",
                hint=_shape_hint(signature),
            )
        if len(row) != n:
            if signature is not None:
                message = f"{batch.row_name(i)} has {len(row)} values, {_takes(signature, n)}"
            else:
                message = (
                    f"{batch.row_name(i)} has {len(row)} values but {batch.row_name(0)} has {n}; "
                    "every row needs the same number of values"
                )
            raise InvalidPayload(message)
        parsed: list[Any] | None = None
        for j, value in enumerate(row):
            dtype = dtypes[j]
            if dtype == "any":
                continue
            if dtype == "string":
                if not isinstance(value, str):
                    raise InvalidPayload(f"{batch.value_name(i, j)} is {_describe(value)}, expected a string")
                continue
            if batch.text and isinstance(value, str):
                try:
                    number = _parse_number(value, dtype in _INTEGER)
                except ValueError:
                    expected = "an integer" if dtype in _INTEGER else "a number"
                    raise InvalidPayload(
                        f"{batch.value_name(i, j)} is {_describe(value)}, expected {expected}"
                    ) from None
                if parsed is None:
                    parsed = list(row)
                parsed[j] = number
                continue
            if isinstance(value, (bool, int)):
                continue  # true/false are 1/0, as numpy reads them
            if isinstance(value, float) and (dtype not in _INTEGER or value.is_integer()):
                continue
            expected = "an integer" if dtype in _INTEGER else "a number"
            raise InvalidPayload(f"{batch.value_name(i, j)} is {_describe(value)}, expected {expected}")
        if parsed is not None:
            if out is rows:
                out = list(rows)
            out[i] = parsed
    return out


def is_numeric_signature(signature: Signature | None) -> bool:
    """True when every input is numeric (the model can take one numeric array)."""
    return signature is None or all(c.dtype in _NUMERIC for c in signature.inputs)
