"""Model quality: the answers a model gave, scored against ground truth posted later.

Users post labels by request id (``client.monitors.labels``, ``mlshift monitors labels``); a
monitor with ``model_quality`` joins them to the captured requests of its window and scores
the answers: accuracy or macro F1 for class labels, MAE or RMSE for numbers. Fewer labelled
rows than ``min_labels`` is "not enough labels", never an alarm.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from mlshift.errors import ConfigError
from mlshift.specs.monitor import QUALITY_METRICS, ModelQualitySignal

__all__ = [
    "HIGHER_IS_BETTER",
    "ModelQuality",
    "check_labels",
    "join_labels",
    "judge_quality",
    "load_labels",
    "quality_metric",
    "reference_metrics",
]

#: Metrics for which a larger value is a better model.
HIGHER_IS_BETTER = frozenset({"accuracy", "f1"})
#: The longest request id kept (as the model server keeps ``X-Request-Id``).
MAX_ID = 128


class ModelQuality(BaseModel):
    """One run's model quality (``model_quality`` in ``report.json``).

    Attributes:
        metric: The metric (``accuracy``, ``f1``, ``mae``, ``rmse``).
        value: Its value on the labelled rows (``None`` when not judged).
        labelled_rows: Captured rows in the window whose request id has a label.
        labelled_requests: Requests those rows came from.
        threshold: The threshold it was judged against, if any.
        reference: The reference value (from the spec, else the baseline), if any.
        max_drop: The largest allowed change for the worse from the reference, if any.
        judged: False with too few labels (``note`` says how many).
        degraded: The metric crossed the threshold or fell more than ``max_drop``.
        note: Why it was not judged, or what crossed.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    metric: str
    value: float | None = None
    labelled_rows: int = 0
    labelled_requests: int = 0
    threshold: float | None = None
    reference: float | None = None
    max_drop: float | None = None
    judged: bool = False
    degraded: bool = False
    note: str | None = None


# ------------------------------------------------------------------------------ labels in


def _label_value(value: Any, where: str) -> Any:
    if isinstance(value, (bool, int, str)):
        if isinstance(value, str) and not value.strip():
            raise ConfigError(f"{where}: the label is empty", field="labels")
        return value
    if isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            raise ConfigError(f"{where}: the label is {value}", field="labels")
        return value
    if hasattr(value, "item") and callable(value.item):  # a numpy scalar
        return _label_value(value.item(), where)
    if isinstance(value, (list, tuple)) and value:  # one label per row of a batch request
        return [_label_value(v, where) for v in value]
    raise ConfigError(
        f"{where}: a label must be a number, a string or a boolean (or a list of them, one per row), "
        f"got {type(value).__name__}",
        field="labels",
    )


def check_labels(labels: Mapping[str, Any] | Iterable[tuple[str, Any]]) -> dict[str, Any]:
    """Labels by request id, checked: ids are non-empty strings of at most 128 characters,
    labels numbers, strings or booleans (or a list of them for a request of several rows).

    Raises:
        ConfigError: naming the first bad id or label (field ``labels``).
    """
    pairs = labels.items() if isinstance(labels, Mapping) else labels
    out: dict[str, Any] = {}
    for item in pairs:
        if not isinstance(item, (tuple, list)) or len(item) != 2:
            raise ConfigError(
                "labels must be a mapping {request_id: label} or (request_id, label) pairs",
                field="labels",
            )
        request_id, value = item
        if not isinstance(request_id, str) or not request_id or len(request_id) > MAX_ID:
            raise ConfigError(
                f"request id {request_id!r} is not an id the endpoint records",
                field="labels",
                hint="use the X-Request-Id the requests were sent with (a string of 1 to 128 characters)",
            )
        out[request_id] = _label_value(value, f"label of request {request_id!r}")
    if not out:
        raise ConfigError("no labels given", field="labels", hint="give {request_id: label, ...}")
    return out


def _cell(text: str) -> Any:
    text = text.strip()
    try:
        number = float(text)
    except ValueError:
        return text
    return int(number) if number.is_integer() and "." not in text and "e" not in text.lower() else number


def load_labels(path: str | Path) -> dict[str, Any]:
    """Labels from a file: CSV with a header naming ``request_id`` and ``label`` columns, or
    JSON lines of ``{"request_id": ..., "label": ...}``.

    Raises:
        ConfigError: a missing file, another format, or no ``request_id`` / ``label`` columns
            (naming the ones found).
    """
    import csv
    import json

    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"labels file {str(p)!r} does not exist", field="labels")
    suffix = p.suffix.lower()
    pairs: list[tuple[Any, Any]] = []
    if suffix == ".csv":
        with p.open(newline="") as f:
            reader = csv.DictReader(f)
            found = [str(c) for c in reader.fieldnames or []]
            if "request_id" not in found or "label" not in found:
                raise ConfigError(
                    f"labels file {p.name} needs the columns request_id and label; its header has: "
                    f"{', '.join(found) or 'nothing'}",
                    field="labels",
                    hint="a CSV header line: request_id,label",
                )
            for number, row in enumerate(reader, start=2):
                if row.get("label") is None or not str(row["label"]).strip():
                    raise ConfigError(f"{p.name} line {number}: no label", field="labels")
                pairs.append((row["request_id"], _cell(str(row["label"]))))
    elif suffix in (".jsonl", ".ndjson", ".json"):
        for number, line in enumerate(p.read_text().splitlines(), start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as exc:
                raise ConfigError(f"{p.name} line {number} is not JSON: {exc}", field="labels") from None
            if not isinstance(record, dict) or "request_id" not in record or "label" not in record:
                keys = ", ".join(map(str, record)) if isinstance(record, dict) else type(record).__name__
                raise ConfigError(
                    f"{p.name} line {number} needs the keys request_id and label (found: {keys})",
                    field="labels",
                    hint='one object per line: {"request_id": "...", "label": 1}',
                )
            request_id = record["request_id"]
            if isinstance(request_id, int) and not isinstance(request_id, bool):
                request_id = str(request_id)  # a header is text; a writer may have made it a number
            pairs.append((request_id, record["label"]))
    else:
        raise ConfigError(
            f"labels file {p.name}: mlshift reads .csv (header request_id,label) and .jsonl",
            field="labels",
        )
    return check_labels(pairs)


# ------------------------------------------------------------------------------ scoring


def _key(value: Any) -> str:
    """A class label as one text: 1, 1.0, "1" and "1.0" (a CSV's) are one class; True is not 1."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, str):
        text: str = value
        try:
            value = float(text)
        except ValueError:
            return text
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _number(value: Any) -> float:
    if isinstance(value, str):
        return float(value)
    return float(value)


def quality_metric(metric: str, truth: Sequence[Any], predicted: Sequence[Any]) -> float:
    """``metric`` of ``predicted`` against ``truth`` (same length, at least one row).

    Raises:
        ValueError: an unknown metric, or values a regression metric cannot read as numbers.
    """
    if metric not in QUALITY_METRICS:
        raise ValueError(f"unknown metric {metric!r}; use one of {', '.join(QUALITY_METRICS)}")
    if metric == "accuracy":
        return sum(_key(t) == _key(p) for t, p in zip(truth, predicted, strict=True)) / len(truth)
    if metric == "f1":
        keys = [_key(v) for v in truth]
        guesses = [_key(v) for v in predicted]
        scores = []
        for cls in sorted(set(keys) | set(guesses)):
            tp = sum(k == cls and g == cls for k, g in zip(keys, guesses, strict=True))
            fp = sum(k != cls and g == cls for k, g in zip(keys, guesses, strict=True))
            fn = sum(k == cls and g != cls for k, g in zip(keys, guesses, strict=True))
            scores.append(2 * tp / (2 * tp + fp + fn) if tp + fp + fn else 1.0)
        return sum(scores) / len(scores)
    errors = [_number(p) - _number(t) for t, p in zip(truth, predicted, strict=True)]
    if metric == "mae":
        return sum(abs(e) for e in errors) / len(errors)
    return math.sqrt(sum(e * e for e in errors) / len(errors))


def join_labels(
    labels: Mapping[str, Any], ids: Sequence[str], outputs: Sequence[Any]
) -> tuple[list[Any], list[Any], int]:
    """Truth and answers of the captured rows whose request has a label.

    ``ids`` and ``outputs`` hold one entry per captured row (a request of several rows repeats
    its id). A request's label is one value (for a one-row request) or a list with one value
    per row; a label that fits neither is left out.

    Returns:
        Truth, answers, and how many requests they came from.
    """
    truth: list[Any] = []
    answers: list[Any] = []
    requests = 0
    start = 0
    while start < len(ids):
        end = start
        while end < len(ids) and ids[end] == ids[start]:
            end += 1
        label = labels.get(ids[start])
        rows = end - start
        if label is not None:
            values = label if isinstance(label, list) else [label]
            given = outputs[start:end]
            if len(values) == rows and all(a is not None for a in given):
                truth.extend(values)
                answers.extend(given)
                requests += 1
        start = end
    return truth, answers, requests


def judge_quality(
    signal: ModelQualitySignal,
    truth: Sequence[Any],
    answers: Sequence[Any],
    requests: int,
    reference: float | None,
) -> ModelQuality:
    """The verdict on one window: the metric, and whether it crossed the threshold or fell
    more than ``max_drop`` below the reference (above it, for errors)."""
    common: dict[str, Any] = {
        "metric": signal.metric,
        "labelled_rows": len(truth),
        "labelled_requests": requests,
        "threshold": signal.threshold,
        "reference": reference,
        "max_drop": signal.max_drop,
    }
    if len(truth) < signal.min_labels:
        return ModelQuality(
            note=f"not enough labels: {len(truth)} labelled rows in the window, "
            f"at least {signal.min_labels} are needed to judge",
            **common,
        )
    try:
        value = quality_metric(signal.metric, truth, answers)
    except (TypeError, ValueError) as exc:
        return ModelQuality(note=f"{signal.metric} could not be computed: {exc}", **common)
    higher = signal.metric in HIGHER_IS_BETTER
    found = []
    if signal.threshold is not None and (value < signal.threshold if higher else value > signal.threshold):
        found.append(f"{signal.metric} {value:.4g} is {'below' if higher else 'above'} {signal.threshold:g}")
    if signal.max_drop is not None and reference is not None:
        worse = reference - value if higher else value - reference
        if worse > signal.max_drop:
            found.append(
                f"{signal.metric} {value:.4g} is {worse:.4g} worse than the reference {reference:.4g} "
                f"(at most {signal.max_drop:g})"
            )
    return ModelQuality(
        value=value, judged=True, degraded=bool(found), note="; ".join(found) or None, **common
    )


def reference_metrics(labels: Sequence[Any], predicted: Sequence[Any]) -> dict[str, float]:
    """Every metric that fits the answers, on the baseline rows: the references monitors
    compare with (``accuracy`` and ``f1`` for class labels; ``mae`` and ``rmse`` for numbers)."""
    classes = all(isinstance(p, (int, str, bool)) for p in predicted) and len(set(map(str, predicted))) <= 50
    names = ("accuracy", "f1") if classes else ("mae", "rmse")
    out = {}
    for name in names:
        try:
            out[name] = quality_metric(name, labels, predicted)
        except (TypeError, ValueError):
            continue
    return out
