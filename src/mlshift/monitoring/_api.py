"""``client.monitors`` and the baseline kept with a model version."""

from __future__ import annotations

import builtins
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlshift.errors import ConfigError, NotFound

if TYPE_CHECKING:
    from mlshift._client import Client
    from mlshift.monitoring._baseline import Table
    from mlshift.monitoring._monitor import MonitorRun
    from mlshift.monitoring._store import VersionBaseline
    from mlshift.specs.model import Signature
    from mlshift.specs.monitor import MonitorSpec

__all__ = ["MonitorsAPI", "load_table", "version_baseline"]

#: Rows of the baseline the version predicts on to get its prediction baseline.
PREDICTION_SAMPLE = 5000


def version_baseline(
    data: Table,
    signature: Signature | None,
    *,
    categorical: Iterable[str] = (),
    model_path: Path | None = None,
    framework: str | None = None,
    skops_trust: Sequence[str] = (),
    labels: Sequence[Any] | None = None,
) -> VersionBaseline:
    """The baseline to keep with a version: its inputs' statistics and, when the model can be
    loaded here, the statistics of its predictions on (up to 5,000 of) those rows; with
    ``labels`` (one per row), its model quality metrics on them too.

    Raises:
        ConfigError: an empty or ragged table, columns that do not match ``signature``, or
            labels that are not one per row.
    """
    from mlshift.monitoring._baseline import compute_baseline, to_columns
    from mlshift.monitoring._monitor import check_baseline_columns
    from mlshift.monitoring._store import VersionBaseline

    names = signature.column_names if signature is not None else None
    given = _named(data)
    columns = None if given else names
    table = to_columns(data, columns)
    inputs = compute_baseline(table, categorical=categorical)
    if signature is not None:
        check_baseline_columns(inputs, names, signature.n_features)
    truth = _baseline_labels(labels, inputs.columns, table)
    predictions = quality = None
    if model_path is not None and framework is not None:
        predictions, predicted = _prediction_baseline(
            table, inputs.columns, model_path, framework, skops_trust
        )
        if truth is not None and predicted:
            from mlshift.monitoring._quality import reference_metrics

            quality = reference_metrics(truth[: len(predicted)], predicted) or None
    return VersionBaseline(inputs=inputs, predictions=predictions, quality=quality)


def _baseline_labels(labels: Sequence[Any] | None, columns: Sequence[str], table: Any) -> list[Any] | None:
    if labels is None:
        return None
    from mlshift.monitoring._quality import check_labels

    values = labels.tolist() if hasattr(labels, "tolist") else list(labels)
    rows = len(table[columns[0]]) if columns else 0
    if len(values) != rows:
        raise ConfigError(
            f"baseline_labels has {len(values)} values for {rows} baseline rows",
            field="baseline_labels",
            hint="give one ground-truth label per training row (y_train)",
        )
    checked = check_labels((str(i), v) for i, v in enumerate(values))
    return list(checked.values())


def _named(data: Any) -> bool:
    return isinstance(data, Mapping) or (hasattr(data, "columns") and hasattr(data, "to_numpy"))


def _prediction_baseline(
    table: dict[str, list[Any]], columns: Sequence[str], path: Path, framework: str, trust: Sequence[str]
) -> tuple[Any, list[Any]]:
    import warnings

    from mlshift.monitoring._baseline import compute_baseline
    from mlshift.serving import load_model

    rows = [list(r) for r in zip(*(table[c] for c in columns), strict=True)][:PREDICTION_SAMPLE]
    try:
        model = load_model(path, framework, skops_trust=trust)
        predicted = model.predict(rows)
    except Exception as exc:  # the inputs' baseline is still worth keeping
        warnings.warn(f"no prediction baseline: the model could not predict here ({exc})", stacklevel=3)
        return None, []
    if not predicted or not all(isinstance(p, (int, float, str, bool)) for p in predicted):
        return None, []  # probabilities or structured answers: prediction drift is not judged
    # Class labels are categories, not numbers on a line.
    labels = all(isinstance(p, (int, str, bool)) for p in predicted) and len(set(predicted)) <= 50
    kept = compute_baseline({"prediction": predicted}, categorical=["prediction"] if labels else [])
    return kept, list(predicted)


def load_table(path: str | Path) -> tuple[list[str] | None, list[list[Any]]]:
    """Read a baseline file: CSV with a header row, ``.npy``, JSON lines (one object or list per
    line) or Parquet (needs pyarrow).

    Returns:
        Column names (``None`` for ``.npy`` and lists) and rows.

    Raises:
        ConfigError: a missing file or a format mlshift does not read.
    """
    import csv
    import json

    p = Path(path).expanduser()
    if not p.is_file():
        raise ConfigError(f"baseline file {str(p)!r} does not exist", field="baseline")
    suffix = p.suffix.lower()
    if suffix == ".csv":
        with p.open(newline="") as f:
            reader = csv.reader(f)
            header = next(reader, None)
            rows = [[_cell(v) for v in row] for row in reader if row]
        if header is None:
            raise ConfigError(f"baseline file {str(p)!r} is empty", field="baseline")
        return header, rows
    if suffix == ".npy":
        import numpy as np

        array = np.load(p, allow_pickle=False)
        if array.ndim != 2:
            raise ConfigError(f"{p.name} holds a {array.ndim}-D array; a baseline is 2-D", field="baseline")
        return None, array.tolist()
    if suffix in (".jsonl", ".ndjson"):
        records = [json.loads(line) for line in p.read_text().splitlines() if line.strip()]
        if records and isinstance(records[0], dict):
            names = list(records[0])
            return names, [[r.get(n) for n in names] for r in records]
        return None, [list(r) for r in records]
    if suffix == ".parquet":
        try:
            import pyarrow.parquet as pq
        except ImportError:
            raise ConfigError(
                "reading a Parquet baseline needs pyarrow", field="baseline", hint="pip install pyarrow"
            ) from None
        table = pq.read_table(p).to_pydict()
        names = list(table)
        return names, [list(r) for r in zip(*table.values(), strict=True)]
    raise ConfigError(
        f"baseline file {p.name}: mlshift reads .csv (with a header), .npy, .jsonl and .parquet",
        field="baseline",
    )


def _cell(text: str) -> Any:
    if text == "":
        return None
    try:
        return float(text)
    except ValueError:
        return text


class MonitorsAPI:
    """``client.monitors``: save, run and read monitors on this target."""

    def __init__(self, client: Client) -> None:
        self._client = client

    def _store(self) -> Any:
        from mlshift.monitoring._store import store_for

        return store_for(self._client.adapter)

    def _spec(self, monitor: MonitorSpec | Mapping[str, Any] | str) -> MonitorSpec:
        from mlshift.specs.monitor import MonitorSpec

        if isinstance(monitor, str):
            spec: MonitorSpec = self._store().monitor(monitor)
            return spec
        if isinstance(monitor, MonitorSpec):
            return monitor
        return MonitorSpec.model_validate(dict(monitor))

    def plan(self, monitor: MonitorSpec | Mapping[str, Any]) -> MonitorSpec:
        """Check a monitor against the target (endpoint captures, baseline, statistics,
        schedule, pipeline) without saving or running it.

        Raises:
            ConfigError: naming what is wrong, before anything is written.
        """
        from mlshift.monitoring._monitor import check_monitor

        spec = self._spec(monitor)
        check_monitor(self._client, spec)
        return spec

    def apply(self, monitor: MonitorSpec | Mapping[str, Any]) -> MonitorSpec:
        """Check and save a monitor (replacing one of the same name); its state is kept.

        Raises:
            ConfigError: as :meth:`plan`.
        """
        spec = self.plan(monitor)
        self._store().save_monitor(spec)
        return spec

    def list(self) -> builtins.list[MonitorSpec]:
        """Saved monitors, by name."""
        monitors: builtins.list[MonitorSpec] = self._store().monitors()
        return monitors

    def get(self, name: str) -> MonitorSpec:
        """A saved monitor.

        Raises:
            NotFound: naming the monitors there are.
        """
        return self._spec(name)

    def delete(self, name: str) -> None:
        """Forget a monitor, its state and its reports (captured data stays)."""
        self._store().delete_monitor(name)

    def labels(
        self, endpoint: str, labels: Mapping[str, Any] | Iterable[tuple[str, Any]] | str | Path
    ) -> int:
        """Post ground truth for requests an endpoint answered, by request id (their
        ``X-Request-Id``), for monitors with ``model_quality``.

        Args:
            endpoint: An endpoint that captures its requests.
            labels: ``{request_id: label}`` (a list of labels for a request of several rows),
                ``(request_id, label)`` pairs, or a file: CSV with a ``request_id,label``
                header, or JSON lines of ``{"request_id": ..., "label": ...}``.

        Returns:
            How many labels were stored.

        Raises:
            ConfigError: a bad id or label, a file without those columns, or an endpoint that
                does not exist or does not capture (field ``endpoint``), before anything is stored.
        """
        from mlshift.monitoring._quality import check_labels, load_labels
        from mlshift.monitoring._store import capture_reader

        checked = load_labels(labels) if isinstance(labels, (str, Path)) else check_labels(labels)
        store = self._store()
        if capture_reader(self._client.adapter).capture_settings(endpoint) is None:
            if self._client.adapter.endpoints.observe(endpoint) is None:
                raise ConfigError(
                    f"endpoint {endpoint!r} does not exist on {self._client.target}",
                    field="endpoint",
                    hint="labels join the requests an endpoint captured; deploy it with capture on first",
                )
            raise ConfigError(
                f"endpoint {endpoint!r} does not capture its requests, so no labels can be joined to them",
                field="endpoint",
                hint="add capture: {sample_rate: 1.0} to the endpoint (or deploy(..., capture=...))",
            )
        store.save_labels(endpoint, checked)
        return len(checked)

    def run(
        self,
        monitor: MonitorSpec | Mapping[str, Any] | str,
        *,
        now: datetime | None = None,
        on_retrain: Callable[[Any], None] | None = None,
    ) -> MonitorRun:
        """Run a monitor once over what was captured since its previous run.

        A retraining pipeline it starts runs in this process (``on_retrain`` gets its run;
        ``client.pipelines.get(run.retrain_run).wait()`` sees it through).

        Raises:
            ConfigError: as :meth:`plan`.
        """
        from mlshift.monitoring._monitor import run_monitor

        return run_monitor(self._client, self._spec(monitor), now=now, on_retrain=on_retrain)

    def runs(self, name: str) -> builtins.list[MonitorRun]:
        """Recorded runs of a monitor, oldest first."""
        from mlshift.monitoring._monitor import load_run

        store = self._store()
        store.monitor(name)  # a name that is no monitor is an error, not an empty list
        return [load_run(store, name, run_id) for run_id in store.run_ids(name)]

    def report(self, name: str, run_id: str | None = None) -> MonitorRun:
        """A recorded run (the latest by default), with its drift report.

        Raises:
            NotFound: no such run.
        """
        from mlshift.monitoring._monitor import load_run

        store = self._store()
        store.monitor(name)
        return load_run(store, name, run_id)

    def html(self, name: str, run_id: str | None = None) -> str:
        """A run's report as a self-contained HTML page."""
        run = self.report(name, run_id)
        page: str | None = self._store().run_file(name, run.id, "report.html")
        if page is None:
            raise NotFound(f"monitor {name!r}: run {run.id} has no HTML report")
        return page

    def run_schedules(
        self,
        names: Sequence[str] = (),
        *,
        once: bool = False,
        max_runs: int | None = None,
        on_run: Callable[[MonitorRun], None] | None = None,
    ) -> builtins.list[MonitorRun]:
        """Run saved monitors (all, or those named) on their cron schedules, in the foreground."""
        from mlshift.monitoring._monitor import run_monitor_schedules

        specs = [self._spec(n) for n in names] if names else self.list()
        return run_monitor_schedules(self._client, specs, once=once, max_runs=max_runs, on_run=on_run)
