"""Plan-time input compatibility: does a new version take what the serving one takes?

A version that takes other columns than the one it replaces answers its callers' requests
with 400s. The planner compares the two input signatures before any side effect and refuses
an incompatible change unless the spec allows it (``allow_schema_change``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass

from mlshift.specs.model import DType, Signature

__all__ = ["SchemaComparison", "compare_signatures", "name_ranges"]

#: Values a JSON caller sends that both dtypes of a group read the same way.
_KIND: dict[DType, str] = {
    "float32": "number",
    "float64": "number",
    "int32": "number",
    "int64": "number",
    "bool": "bool",
    "string": "string",
}
_NUMBERED = re.compile(r"^(.*?)(\d+)$")


def name_ranges(names: Sequence[str], limit: int = 8) -> str:
    """``f5, f6, ..., f19`` → ``f5..f19``: runs of numbered names shortened, at most ``limit`` parts."""
    parts: list[str] = []
    i = 0
    while i < len(names):
        match = _NUMBERED.match(names[i])
        j = i
        if match:
            prefix, start = match[1], int(match[2])
            while j + 1 < len(names):
                nxt = _NUMBERED.match(names[j + 1])
                if not nxt or nxt[1] != prefix or int(nxt[2]) != start + (j + 1 - i):
                    break
                j += 1
        if j - i >= 2:
            parts.append(f"{names[i]}..{names[j]}")
        else:
            parts.extend(names[i : j + 1])
        i = j + 1
    if len(parts) > limit:
        return ", ".join(parts[:limit]) + f" and {len(parts) - limit} more"
    return ", ".join(parts)


@dataclass(frozen=True)
class SchemaComparison:
    """How a new version's inputs compare with a serving version's.

    Attributes:
        compatible: ``True``: callers' requests fit the new version; ``False``: they do not;
            ``None``: one of the two has no known signature, so nothing was compared.
        text: The comparison as a plan shows it.
    """

    compatible: bool | None
    text: str


def compare_signatures(
    new_label: str, new: Signature | None, old_label: str, old: Signature | None
) -> SchemaComparison:
    """Compare the input columns (names, order, count, kinds of value) of two versions.

    Unnamed columns are compared by position and count; numeric dtypes are interchangeable
    (a JSON caller sends the same numbers to either), a number and a string are not.
    """
    if new is None or old is None:
        missing = " and ".join(label for label, sig in ((new_label, new), (old_label, old)) if sig is None)
        return SchemaComparison(None, f"no known signature for {missing}; inputs not compared")
    problems: list[str] = []
    new_names, old_names = new.column_names, old.column_names
    if new_names is not None and old_names is not None:
        gone = [n for n in old_names if n not in new_names]
        extra = [n for n in new_names if n not in old_names]
        if gone:
            problems.append(f"missing {name_ranges(gone)}")
        if extra:
            problems.append(f"new {name_ranges(extra)}")
        if not gone and not extra and new_names != old_names:
            first = next(i for i, (a, b) in enumerate(zip(new_names, old_names, strict=True)) if a != b)
            problems.append(
                f"same columns in another order (position {first}: {new_names[first]} instead of "
                f"{old_names[first]})"
            )
        old_kinds = {c.name: c.dtype for c in old.inputs}
        for col in new.inputs:
            was = old_kinds.get(col.name or "")
            if was is not None and _KIND[was] != _KIND[col.dtype]:
                problems.append(f"{col.name} is {col.dtype}, was {was}")
    elif new.n_features == old.n_features:
        for i, (a, b) in enumerate(zip(new.inputs, old.inputs, strict=True)):
            if _KIND[a.dtype] != _KIND[b.dtype]:
                problems.append(f"column {i} is {a.dtype}, was {b.dtype}")
    if new.n_features != old.n_features:
        head = f"{new_label} takes {new.n_features} columns, {old_label} takes {old.n_features}"
        if not problems:
            problems.append(f"callers send {old.n_features} values per row")
        return SchemaComparison(False, f"{head}: {'; '.join(problems)}")
    if problems:
        return SchemaComparison(
            False, f"{new_label} and {old_label} take different inputs: {'; '.join(problems)}"
        )
    return SchemaComparison(True, f"inputs match {old_label} ({old.n_features} columns)")
