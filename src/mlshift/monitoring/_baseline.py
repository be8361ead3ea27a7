"""Per-feature statistics of the data a model was trained on, small enough to keep in a registry."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from mlshift.errors import ConfigError

if TYPE_CHECKING:
    import numpy as np
    from numpy.typing import NDArray

__all__ = [
    "OTHER",
    "Baseline",
    "CategoricalBaseline",
    "FeatureBaseline",
    "FeatureKind",
    "NumericBaseline",
    "Table",
    "compute_baseline",
    "to_columns",
]

FeatureKind = Literal["numeric", "categorical"]
#: Where categories beyond the most frequent ones are counted.
OTHER = "__other__"
#: Quantile levels kept per numeric feature (0, 1, 2 ... 100 percent).
QUANTILE_LEVELS = 101
#: Bins (by the baseline's deciles) that PSI and Jensen-Shannon compare.
BINS = 10
#: Categories kept per categorical feature; the rest count as ``__other__``.
MAX_CATEGORIES = 50

#: What a baseline or a window of data can be given as: rows (lists), a mapping of column name
#: to values, a numpy array, or anything with ``columns`` and ``to_numpy()`` (a pandas DataFrame).
Table = Any


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class NumericBaseline(_Frozen):
    """Statistics of one numeric feature.

    Attributes:
        count: Values seen (missing ones excluded).
        missing: Missing values (``None`` or NaN).
        minimum: The smallest value seen.
        maximum: The largest value seen.
        mean: The mean.
        std: The standard deviation (population).
        quantiles: The values at 0, 1, ..., 100 percent: the distribution, for KS and Wasserstein.
        edges: Inner bin edges (the baseline's distinct deciles); the outer bins are open-ended.
        counts: Baseline values per bin (``len(edges) + 1`` bins), for PSI and Jensen-Shannon.
    """

    kind: Literal["numeric"] = "numeric"
    count: int
    missing: int
    minimum: float
    maximum: float
    mean: float
    std: float
    quantiles: tuple[float, ...]
    edges: tuple[float, ...]
    counts: tuple[int, ...]

    @property
    def missing_rate(self) -> float:
        """The share of values that were missing."""
        total = self.count + self.missing
        return self.missing / total if total else 0.0


class CategoricalBaseline(_Frozen):
    """Statistics of one categorical feature.

    Attributes:
        count: Values seen (missing ones excluded).
        missing: Missing values (``None``, NaN or the empty string).
        frequencies: Count per category, the most frequent first; ``__other__`` holds the rest.
    """

    kind: Literal["categorical"] = "categorical"
    count: int
    missing: int
    frequencies: dict[str, int]

    @property
    def missing_rate(self) -> float:
        """The share of values that were missing."""
        total = self.count + self.missing
        return self.missing / total if total else 0.0


#: The statistics of one feature, told apart by ``kind``.
FeatureBaseline = Annotated[NumericBaseline | CategoricalBaseline, Field(discriminator="kind")]


class Baseline(_Frozen):
    """Per-feature statistics of a model's training data, kept with the model version.

    Attributes:
        rows: How many rows it was computed from.
        features: Statistics per feature, in the model's column order.
    """

    rows: int
    features: dict[str, FeatureBaseline]

    @property
    def columns(self) -> tuple[str, ...]:
        """Feature names in order."""
        return tuple(self.features)


def _is_missing(value: Any) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, str):
        return value == ""
    try:
        return bool(value != value)  # NaN of numpy scalar types
    except (TypeError, ValueError):
        return False


def to_columns(data: Table, columns: Sequence[str] | None = None) -> dict[str, list[Any]]:
    """Turn a table into ``{column: values}``, naming unnamed columns ``x0``, ``x1``...

    Raises:
        ConfigError: ragged rows, an empty table, or ``columns`` that do not match the data.
    """
    named: dict[str, list[Any]]
    if isinstance(data, Mapping):
        named = {str(k): list(v) for k, v in data.items()}
        lengths = {len(v) for v in named.values()}
        if len(lengths) > 1:
            raise ConfigError("columns of the table have different lengths", field="data")
        if columns is not None and list(columns) != list(named):
            missing = [c for c in columns if c not in named]
            if missing:
                raise ConfigError(f"the table has no column {', '.join(missing)}", field="data")
            named = {c: named[c] for c in columns}
    elif hasattr(data, "columns") and hasattr(data, "to_numpy"):  # a pandas DataFrame
        names = [str(c) for c in data.columns]
        values = data.to_numpy(dtype=object)
        named = {n: [row[i] for row in values] for i, n in enumerate(names)}
        if columns is not None:
            return to_columns(named, columns)
    else:
        rows = data.tolist() if hasattr(data, "tolist") else [list(r) for r in data]
        if rows and not isinstance(rows[0], (list, tuple)):
            rows = [[v] for v in rows]  # one feature, given as a flat list
        widths = {len(r) for r in rows}
        if len(widths) > 1:
            raise ConfigError(f"rows have different lengths: {sorted(widths)}", field="data")
        width = widths.pop() if widths else (len(columns) if columns else 0)
        names = list(columns) if columns is not None else [f"x{i}" for i in range(width)]
        if len(names) != width:
            raise ConfigError(
                f"rows have {width} values but {len(names)} column names were given", field="columns"
            )
        named = {n: [r[i] for r in rows] for i, n in enumerate(names)}
    if not named or not any(named.values()):
        raise ConfigError("the table is empty", field="data", hint="give at least one row")
    return named


def _numeric(values: Iterable[Any]) -> tuple[NDArray[np.float64], int, int]:
    """Finite floats, the missing count, and the count of values that are not numbers."""
    import numpy as np

    kept: list[float] = []
    missing = wrong = 0
    for v in values:
        if _is_missing(v):
            missing += 1
        elif isinstance(v, bool) or not isinstance(v, (int, float, np.number)):
            wrong += 1
        else:
            f = float(v)
            if math.isfinite(f):
                kept.append(f)
            else:
                missing += 1
    return np.asarray(kept, dtype=np.float64), missing, wrong


def _looks_categorical(values: Sequence[Any]) -> bool:
    import numpy as np

    present = [v for v in values if not _is_missing(v)]
    return bool(present) and any(
        isinstance(v, (str, bool, np.str_, np.bool_)) or not isinstance(v, (int, float, np.number))
        for v in present
    )


def numeric_baseline(values: Sequence[Any], column: str) -> NumericBaseline:
    """Statistics of one numeric column.

    Raises:
        ConfigError: the column holds no number, or holds values that are not numbers.
    """
    import numpy as np

    array, missing, wrong = _numeric(values)
    if wrong:
        raise ConfigError(
            f"column {column!r} mixes numbers and other values",
            field=column,
            hint="list it in categorical=[...] to treat it as categories",
        )
    if array.size == 0:
        raise ConfigError(f"column {column!r} has no values to compute a baseline from", field=column)
    levels = np.linspace(0.0, 1.0, QUANTILE_LEVELS)
    quantiles = np.quantile(array, levels)
    edges = np.unique(np.quantile(array, np.linspace(0.0, 1.0, BINS + 1)[1:-1]))
    counts = np.bincount(np.searchsorted(edges, array, side="right"), minlength=edges.size + 1)
    return NumericBaseline(
        count=int(array.size),
        missing=missing,
        minimum=float(array.min()),
        maximum=float(array.max()),
        mean=float(array.mean()),
        std=float(array.std()),
        quantiles=tuple(float(q) for q in quantiles),
        edges=tuple(float(e) for e in edges),
        counts=tuple(int(c) for c in counts),
    )


def categorical_baseline(values: Sequence[Any]) -> CategoricalBaseline:
    """Statistics of one categorical column (values compared as strings)."""
    present = [str(v) for v in values if not _is_missing(v)]
    counter = Counter(present)
    frequencies = dict(counter.most_common(MAX_CATEGORIES))
    rest = len(present) - sum(frequencies.values())
    if rest:
        frequencies[OTHER] = rest
    return CategoricalBaseline(
        count=len(present), missing=len(values) - len(present), frequencies=frequencies
    )


def compute_baseline(
    data: Table,
    *,
    columns: Sequence[str] | None = None,
    categorical: Iterable[str] = (),
) -> Baseline:
    """Per-feature statistics of ``data`` (usually the training features), without pandas.

    Numeric features keep their quantiles and decile bins; categorical ones their category
    frequencies (the 50 most frequent, the rest as ``__other__``); both keep their missing rate.

    Args:
        data: Rows, ``{column: values}``, a numpy array or a pandas DataFrame.
        columns: Feature names, in the model's order (default: the DataFrame's or mapping's
            names, else ``x0``, ``x1``...).
        categorical: Columns to treat as categories; columns holding strings are categorical
            anyway.

    Raises:
        ConfigError: an empty or ragged table, an unknown column in ``categorical``, or a
            numeric column with no values.
    """
    table = to_columns(data, columns)
    wanted = set(categorical)
    unknown = sorted(wanted - set(table))
    if unknown:
        raise ConfigError(
            f"categorical names {', '.join(unknown)}, which the table does not have",
            field="categorical",
            hint=f"columns are: {', '.join(table)}",
        )
    features: dict[str, NumericBaseline | CategoricalBaseline] = {}
    for name, values in table.items():
        if name in wanted or _looks_categorical(values):
            features[name] = categorical_baseline(values)
        else:
            features[name] = numeric_baseline(values, name)
    rows = len(next(iter(table.values())))
    return Baseline(rows=rows, features=features)
