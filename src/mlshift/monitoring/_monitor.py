"""Monitor runs: read an endpoint's captured window, judge it, record it, alert and retrain.

One run: find the version the endpoint serves (the variant with the most traffic) and its
baseline; read the requests captured for that version since the previous run (at most
``window`` old); compare inputs and predictions with the baseline; check data quality; write
``report.json``, ``report.html`` and ``window.json``; then act once per drift episode.
"""

from __future__ import annotations

import json
import subprocess
import time
import uuid
from collections.abc import Callable, Collection, Iterable, Sequence
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from mlshift.errors import ConfigError, NotFound
from mlshift.monitoring._baseline import Baseline
from mlshift.monitoring._drift import (
    CATEGORICAL_STATISTICS,
    DEFAULT_THRESHOLDS,
    NUMERIC_STATISTICS,
    DriftReport,
    drift_report,
)
from mlshift.monitoring._quality import HIGHER_IS_BETTER, ModelQuality, join_labels, judge_quality
from mlshift.monitoring._report import render_html
from mlshift.monitoring._store import MonitorStore, VersionBaseline, capture_reader, store_for
from mlshift.specs.model import Signature
from mlshift.specs.monitor import MonitorSpec

if TYPE_CHECKING:
    from mlshift._client import Client
    from mlshift.adapter import CapturedRequest
    from mlshift.pipelines import Pipeline

__all__ = ["PREDICTION", "MonitorRun", "check_monitor", "read_window", "run_monitor", "run_monitor_schedules"]

#: The name predictions go by in a report (parenthesised: no feature can be called that).
PREDICTION = "(prediction)"


class MonitorRun(BaseModel):
    """What one monitor run found and did (``report.json``).

    Attributes:
        id: The run's id (sorts by time).
        monitor: The monitor's name.
        endpoint: The endpoint watched.
        model: The version judged (``name:version``), the one taking most traffic.
        since: The window's start.
        until: The window's end (when the run started).
        requests: Captured requests in the window.
        judged: False when there were fewer rows than ``min_rows`` (nothing was judged).
        drifted: Features that drifted (``(prediction)`` for the model's answers).
        quality: Data quality problems found, one sentence each.
        episode_started: This run started a drift episode (alerts and retraining act on it).
        in_episode: A drift episode is open after this run.
        alerted: An alert was sent.
        alert_error: Why the alert failed, if it did.
        retrain_run: The id of the pipeline run this run started.
        report: Feature by feature (with ``(prediction)`` last), when judged.
        model_quality: The answers scored against labels joined by request id, when the
            monitor has ``model_quality``.
        note: Anything else worth saying.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    monitor: str
    endpoint: str
    model: str
    since: datetime
    until: datetime
    requests: int
    judged: bool
    drifted: tuple[str, ...] = ()
    quality: tuple[str, ...] = ()
    episode_started: bool = False
    in_episode: bool = False
    alerted: bool = False
    alert_error: str | None = None
    retrain_run: str | None = None
    report: DriftReport | None = None
    model_quality: ModelQuality | None = None
    note: str | None = None
    report_path: str | None = None
    html_path: str | None = None

    @property
    def degraded(self) -> bool:
        """Whether the model's quality on labelled requests crossed its limits."""
        return self.model_quality is not None and self.model_quality.degraded

    @property
    def alerting(self) -> bool:
        """Whether this run found drift, a data quality problem or degraded model quality."""
        return bool(self.drifted or self.quality or self.degraded)

    def summary(self) -> dict[str, Any]:
        """The short form sent to webhooks and commands."""
        return self.model_dump(mode="json", exclude={"report"})


# ------------------------------------------------------------------------------ plan checks


def _served(client: Client, endpoint: str) -> str:
    """``name:version`` of the variant taking the most traffic."""
    state = client.adapter.endpoints.observe(endpoint)
    if state is None:
        raise ConfigError(
            f"endpoint {endpoint!r} does not exist on {client.target}",
            field="endpoint",
            hint="deploy it with capture on first",
        )
    if not state.variants:
        raise ConfigError(f"endpoint {endpoint!r} has no variant", field="endpoint")
    best = max(state.variants, key=lambda v: v.weight)
    return best.model


def _serving_variants(client: Client, endpoint: str, model: str) -> list[str]:
    """The variants of ``endpoint`` that serve ``model`` now."""
    state = client.adapter.endpoints.observe(endpoint)
    return [v.name for v in state.variants if v.model == model] if state is not None else []


def _baseline_for(client: Client, store: MonitorStore, ref: str) -> VersionBaseline:
    name, _, version = ref.partition(":")
    baseline = store.baseline(name, version)
    if baseline is None:
        raise ConfigError(
            f"model {ref} has no baseline to judge drift against",
            field="endpoint",
            hint=f"register the version with a baseline: client.models.register(..., baseline=x_train) "
            f"or `mlshift models register {name} PATH --baseline FILE`",
        )
    return baseline


def check_monitor(
    client: Client, spec: MonitorSpec
) -> tuple[MonitorStore, str, VersionBaseline, Signature | None]:
    """Everything a run needs, checked before anything is written.

    Returns:
        The store, the served version, its baseline and its signature.

    Raises:
        ConfigError: an endpoint that does not exist or does not capture; a served version
            without a baseline, or whose baseline does not match its signature; a statistic
            that does not fit a feature's kind or names an unknown feature; a bad schedule; a
            retraining pipeline that cannot be loaded or lacks the report parameter.
        UnsupportedOperation: a target without a monitoring store, or that does not capture.
    """
    store = store_for(client.adapter)
    served = _served(client, spec.endpoint)
    if capture_reader(client.adapter).capture_settings(spec.endpoint) is None:
        raise ConfigError(
            f"monitor {spec.name!r}: endpoint {spec.endpoint!r} does not capture its requests, so "
            "there is nothing to monitor",
            field="endpoint",
            hint="add capture: {sample_rate: 1.0} to the endpoint (or deploy(..., capture=...)) and apply it",
        )
    baseline = _baseline_for(client, store, served)
    version = client.models.get(served)
    if version.signature is not None:
        check_baseline_columns(baseline.inputs, version.signature.column_names, version.signature.n_features)
    _check_statistics(spec, baseline.inputs)
    _check_model_quality(spec, baseline, served)
    if spec.schedule is not None:
        from mlshift.pipelines._cron import parse_cron

        parse_cron(spec.schedule)
    if spec.actions.retrain is not None:
        pipeline = _load_retrain(spec)
        params = {p.name for p in pipeline.ir.params}
        if spec.actions.retrain.report_param not in params:
            raise ConfigError(
                f"monitor {spec.name!r}: pipeline {pipeline.name!r} has no parameter "
                f"{spec.actions.retrain.report_param!r} to take the drift report",
                field="actions.retrain.report_param",
                hint=f"its parameters: {', '.join(sorted(params)) or 'none'}",
            )
    return store, served, baseline, version.signature


def check_baseline_columns(baseline: Baseline, names: Sequence[str] | None, count: int) -> None:
    """A baseline must have the model's inputs: the same names in the same order, or the count.

    Raises:
        ConfigError: naming the columns that differ.
    """
    columns = list(baseline.columns)
    if names is not None and all(not c.startswith("x") or not c[1:].isdigit() for c in columns):
        if columns != list(names):
            missing = [n for n in names if n not in columns]
            extra = [c for c in columns if c not in names]
            detail = "; ".join(
                part
                for part in (
                    f"missing {', '.join(missing)}" if missing else "",
                    f"not inputs of the model: {', '.join(extra)}" if extra else "",
                    "same columns in another order" if not missing and not extra else "",
                )
                if part
            )
            raise ConfigError(
                f"the baseline's columns do not match the model's signature ({detail})",
                field="baseline",
                hint=f"the model takes: {', '.join(names)}",
            )
    elif len(columns) != count:
        raise ConfigError(
            f"the baseline has {len(columns)} columns, the model takes {count} inputs",
            field="baseline",
            hint="compute the baseline from the training features the model was fitted on",
        )


def _check_statistics(spec: MonitorSpec, baseline: Baseline) -> None:
    kinds = {name: f.kind for name, f in baseline.features.items()}
    for key, statistic in spec.features.statistics.items():
        if key in ("numeric", "categorical"):
            kind = key
        elif key in kinds:
            kind = kinds[key]
        else:
            raise ConfigError(
                f"monitor {spec.name!r}: features.statistics names {key!r}, which is not a feature",
                field=f"features.statistics.{key}",
                hint=f"features are: {', '.join(kinds)} (or numeric / categorical for every one of a kind)",
            )
        allowed = NUMERIC_STATISTICS if kind == "numeric" else CATEGORICAL_STATISTICS
        if statistic not in allowed:
            raise ConfigError(
                f"monitor {spec.name!r}: {statistic!r} does not compare {kind} values (for {key!r})",
                field=f"features.statistics.{key}",
                hint=f"use one of: {', '.join(allowed)}",
            )
    for key in spec.features.thresholds:
        if key not in kinds and key not in DEFAULT_THRESHOLDS:
            raise ConfigError(
                f"monitor {spec.name!r}: features.thresholds names {key!r}, not a feature or a statistic",
                field=f"features.thresholds.{key}",
                hint=f"statistics: {', '.join(DEFAULT_THRESHOLDS)}; features: {', '.join(kinds)}",
            )


def _check_model_quality(spec: MonitorSpec, baseline: VersionBaseline, served: str) -> None:
    signal = spec.model_quality
    if signal is None or not signal.enabled:
        return
    kind = baseline.predictions.features["prediction"].kind if baseline.predictions is not None else None
    classes = signal.metric in HIGHER_IS_BETTER
    if kind is not None and (kind == "categorical") != classes:
        fits = "accuracy, f1" if kind == "categorical" else "mae, rmse"
        what = "class labels" if kind == "categorical" else "numbers"
        raise ConfigError(
            f"monitor {spec.name!r}: model_quality.metric {signal.metric!r} does not score {what}, "
            f"which {served} answers",
            field="model_quality.metric",
            hint=f"use one of: {fits}",
        )
    if signal.max_drop is not None and _reference(spec, baseline) is None:
        raise ConfigError(
            f"monitor {spec.name!r}: model_quality.max_drop needs a reference {signal.metric}, and "
            f"{served} was registered without one",
            field="model_quality.max_drop",
            hint="set model_quality.reference, or register the version with "
            "baseline_labels=y_train (`--label-column` on the CLI)",
        )


def _reference(spec: MonitorSpec, baseline: VersionBaseline) -> float | None:
    signal = spec.model_quality
    assert signal is not None
    if signal.reference is not None:
        return signal.reference
    return (baseline.quality or {}).get(signal.metric)


def _load_retrain(spec: MonitorSpec) -> Pipeline:
    from mlshift.pipelines._loader import load_pipeline

    assert spec.actions.retrain is not None
    try:
        return load_pipeline(spec.actions.retrain.pipeline)
    except ConfigError as exc:
        raise ConfigError(
            f"monitor {spec.name!r}: actions.retrain.pipeline: {exc.message}",
            field="actions.retrain.pipeline",
            hint=exc.hint,
        ) from None


# ------------------------------------------------------------------------------ the window


def read_window(
    source: Path | Iterable[CapturedRequest],
    *,
    since: datetime,
    until: datetime,
    model: str | None = None,
    signature: Signature | None = None,
    variants: Collection[str] = (),
    ids: list[str] | None = None,
) -> tuple[list[str] | None, list[list[Any]], list[Any], int]:
    """Captured rows in ``(since, until]``: columns, input rows, one output per row, requests.

    ``source`` is what a target's :class:`~mlshift.adapter.CaptureReader` read, or a local
    capture folder. Only records of ``model`` (``name:version``) count when it is given; a
    record that does not say which version answered counts when its variant is one of
    ``variants`` (the variants serving ``model``; SageMaker's records name only the variant).
    Bodies are decoded as the model server decodes them, in ``signature``'s column order when
    given (needed for ``dataframe_records`` and named inputs); a record that cannot be decoded
    is skipped. Given ``ids``, it is extended with each row's request id (to join labels).
    """
    from mlshift.errors import InvalidPayload
    from mlshift.serving._captured import decode_captured, read_capture_folder

    records = read_capture_folder(source, since=since, until=until) if isinstance(source, Path) else source
    columns: list[str] | None = None
    rows: list[list[Any]] = []
    outputs: list[Any] = []
    requests = 0
    for record in records:
        if not since < record.timestamp <= until:
            continue
        if model is not None:
            answered_by = record.model == model if record.model is not None else record.variant in variants
            if not answered_by:
                continue
        try:
            inputs, answers = decode_captured(record, signature)
        except InvalidPayload:
            continue
        requests += 1
        columns = columns or (list(record.columns) if record.columns else None)
        rows.extend(inputs)
        outputs.extend(answers)
        if ids is not None:
            ids.extend([record.request_id] * len(inputs))
    return columns, rows, outputs, requests


# ------------------------------------------------------------------------------ a run


def _quality(spec: MonitorSpec, report: DriftReport) -> list[str]:
    limits = spec.data_quality
    if not limits.enabled:
        return []
    found = []
    for f in report.features:
        rise = f.missing_rate - f.baseline_missing_rate
        if rise > limits.missing:
            found.append(
                f"{f.feature}: {f.missing_rate:.1%} missing (baseline {f.baseline_missing_rate:.1%})"
            )
        if f.kind == "numeric" and f.out_of_range > limits.out_of_range:
            found.append(f"{f.feature}: {f.out_of_range:.1%} of values outside the training range")
        total = f.values + f.wrong_type
        if f.kind == "numeric" and total and f.wrong_type / total > limits.wrong_type:
            found.append(f"{f.feature}: {f.wrong_type} values are not numbers")
    return found


def _prediction_drift(spec: MonitorSpec, baseline: Baseline, outputs: list[Any]) -> DriftReport | None:
    scalars = [o for o in outputs if o is None or isinstance(o, (int, float, str, bool))]
    if len(scalars) != len(outputs) or not outputs:
        return None  # lists of probabilities, or nothing captured: not judged
    signal = spec.predictions
    statistics = {"prediction": signal.statistic} if signal.statistic else {}
    kind = baseline.features["prediction"].kind
    allowed = NUMERIC_STATISTICS if kind == "numeric" else CATEGORICAL_STATISTICS
    if signal.statistic and signal.statistic not in allowed:
        statistics = {}
    thresholds = {"prediction": signal.threshold} if signal.threshold is not None else {}
    return drift_report(baseline, {"prediction": scalars}, statistics=statistics, thresholds=thresholds)


def _alert(spec: MonitorSpec, run: MonitorRun) -> str | None:
    """Send the alert; the reason it failed, or ``None``."""
    action = spec.actions.alert
    assert action is not None
    payload = json.dumps(run.summary(), default=str).encode()
    try:
        if action.webhook is not None:
            import httpx

            resp = httpx.post(
                action.webhook,
                content=payload,
                headers={"Content-Type": "application/json"},
                timeout=action.timeout,
                trust_env=False,
            )
            if resp.status_code >= 300:
                return f"the webhook answered {resp.status_code}"
        else:
            assert action.command is not None
            done = subprocess.run(
                list(action.command), input=payload, capture_output=True, timeout=action.timeout, check=False
            )
            if done.returncode != 0:
                return f"the alert command exited with code {done.returncode}"
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def _new_id() -> str:
    # Sorts by time; the suffix keeps two runs in one millisecond apart.
    return datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ") + "-" + uuid.uuid4().hex[:6]


def run_monitor(
    client: Client,
    spec: MonitorSpec,
    *,
    now: datetime | None = None,
    on_retrain: Callable[[Any], None] | None = None,
) -> MonitorRun:
    """Run ``spec`` once over what was captured since its previous run.

    Args:
        now: The window's end (default: now).
        on_retrain: Called with the pipeline run a retraining started (``.wait()`` on it to
            see it through; the local runner runs it in this process).

    Raises:
        ConfigError, UnsupportedOperation: from :func:`check_monitor`, before anything is written.
    """
    store, served, baseline, signature = check_monitor(client, spec)
    until = now or datetime.now(timezone.utc)
    state = store.state(spec.name)
    since = until - timedelta(seconds=spec.window)
    if state.get("until"):
        since = max(since, datetime.fromisoformat(state["until"]))
    ids: list[str] = []
    columns, rows, outputs, requests = read_window(
        capture_reader(client.adapter).read_capture(spec.endpoint, since=since, until=until),
        since=since,
        until=until,
        model=served,
        signature=signature,
        variants=_serving_variants(client, spec.endpoint, served),
        ids=ids,
    )
    quality_found = _model_quality(client, store, spec, baseline, served, signature, until, ids, outputs)
    run_id = _new_id()
    common: dict[str, Any] = {
        "id": run_id,
        "monitor": spec.name,
        "endpoint": spec.endpoint,
        "model": served,
        "since": since,
        "until": until,
        "requests": requests,
        "report_path": store.run_uri(spec.name, run_id, "report.json"),
        "html_path": store.run_uri(spec.name, run_id, "report.html"),
    }
    episode = state.get("episode")
    if episode is not None and episode.get("model") != served:
        episode = None  # another version serves now: its own baseline, its own episodes
    if len(rows) < spec.min_rows:
        run = MonitorRun(
            judged=False,
            model_quality=quality_found,
            in_episode=episode is not None,
            note=f"{len(rows)} rows captured in the window; at least {spec.min_rows} are needed to judge",
            **common,
        )
    else:
        features = baseline.inputs.columns
        table = {c: [r[i] if i < len(r) else None for r in rows] for i, c in enumerate(features)}
        report = drift_report(
            baseline.inputs,
            table,
            statistics=dict(spec.features.statistics),
            thresholds=dict(spec.features.thresholds),
        )
        results = list(report.features) if spec.features.enabled else []
        quality = _quality(spec, report)
        if spec.predictions.enabled and baseline.predictions is not None:
            predicted = _prediction_drift(spec, baseline.predictions, outputs)
            if predicted is not None:
                results.append(predicted.features[0].model_copy(update={"feature": PREDICTION}))
        combined = DriftReport(rows=len(rows), features=tuple(results))
        drifted = combined.drifted
        degraded = quality_found is not None and quality_found.degraded
        started = bool((drifted or quality or degraded) and episode is None)
        if started:
            episode = {"started": until.isoformat(), "model": served, "run": run_id}
        elif not drifted and not quality and not degraded:
            episode = None
        run = MonitorRun(
            judged=True,
            drifted=drifted,
            quality=tuple(quality),
            episode_started=started,
            in_episode=episode is not None,
            report=combined,
            model_quality=quality_found,
            **common,
        )
        store.put_run_file(
            spec.name,
            run_id,
            "window.json",
            json.dumps({"columns": columns or list(features), "rows": rows, "outputs": outputs}, default=str),
        )
        if started and spec.actions.alert is not None:
            error = _alert(spec, run)
            run = run.model_copy(update={"alerted": error is None, "alert_error": error})
        # Retraining answers drift and a worse model, not bad data (a fix upstream does).
        if started and (drifted or degraded) and spec.actions.retrain is not None:
            run = _retrain(client, spec, run, store, on_retrain)
            assert episode is not None
            episode["retrain_run"] = run.retrain_run
    _record(store, spec, run, episode, state)
    return run


def _model_quality(
    client: Client,
    store: MonitorStore,
    spec: MonitorSpec,
    baseline: VersionBaseline,
    served: str,
    signature: Signature | None,
    until: datetime,
    ids: list[str],
    outputs: list[Any],
) -> ModelQuality | None:
    """The answers of labelled requests in the window scored, or ``None`` without ``model_quality``."""
    signal = spec.model_quality
    if signal is None or not signal.enabled:
        return None
    if signal.window is not None:
        # Labels come later than requests: the quality window reaches further back.
        ids = []
        since = until - timedelta(seconds=signal.window)
        _, _, outputs, _ = read_window(
            capture_reader(client.adapter).read_capture(spec.endpoint, since=since, until=until),
            since=since,
            until=until,
            model=served,
            signature=signature,
            variants=_serving_variants(client, spec.endpoint, served),
            ids=ids,
        )
    truth, answers, requests = join_labels(store.labels(spec.endpoint), ids, outputs)
    return judge_quality(signal, truth, answers, requests, _reference(spec, baseline))


def _retrain(
    client: Client,
    spec: MonitorSpec,
    run: MonitorRun,
    store: MonitorStore,
    on_retrain: Callable[[Any], None] | None,
) -> MonitorRun:
    action = spec.actions.retrain
    assert action is not None
    # The report is stored before the pipeline starts: it is the pipeline's input.
    store.put_run_file(spec.name, run.id, "report.json", run.model_dump_json(indent=2))
    pipeline = _load_retrain(spec)
    params = {**action.params, action.report_param: store.run_uri(spec.name, run.id, "report.json")}
    started = client.pipelines.run(pipeline, params)
    if on_retrain is not None:
        on_retrain(started)
    return run.model_copy(update={"retrain_run": started.id})


def _record(
    store: MonitorStore,
    spec: MonitorSpec,
    run: MonitorRun,
    episode: dict[str, Any] | None,
    state: dict[str, Any],
) -> None:
    if run.report is not None:
        title = f"{spec.name} · {spec.endpoint} · {run.model}"
        page = render_html(run.report, title=title, generated=run.until, model_quality=run.model_quality)
    else:
        page = render_html(
            DriftReport(rows=0, features=()),
            title=f"{spec.name} · {run.note}",
            generated=run.until,
            model_quality=run.model_quality,
        )
    # The page first: report.json is what makes a run listed (MonitorStore.run_ids).
    store.put_run_file(spec.name, run.id, "report.html", page)
    store.put_run_file(spec.name, run.id, "report.json", run.model_dump_json(indent=2))
    # Rows too few to judge stay for the next run (within the window), rather than be skipped.
    until = run.until.isoformat() if run.judged else state.get("until")
    store.save_state(spec.name, {**state, "until": until, "episode": episode, "last_run": run.id})


def load_run(store: MonitorStore, name: str, run_id: str | None = None) -> MonitorRun:
    """A recorded run (the latest when ``run_id`` is ``None``).

    Raises:
        NotFound: no such run, or the monitor has not run yet.
    """
    ids = store.run_ids(name)
    if run_id is None:
        if not ids:
            raise NotFound(f"monitor {name!r} has not run yet", hint=f"run it: mlshift monitors run {name}")
        run_id = ids[-1]
    text = store.run_file(name, run_id, "report.json")
    if text is None:
        raise NotFound(
            f"monitor {name!r} has no run {run_id!r}", hint=f"runs: {', '.join(ids[-5:]) or 'none'}"
        )
    return MonitorRun.model_validate_json(text)


# ------------------------------------------------------------------------------ schedules


def run_monitor_schedules(
    client: Client,
    specs: Sequence[MonitorSpec],
    *,
    once: bool = False,
    max_runs: int | None = None,
    on_run: Callable[[MonitorRun], None] | None = None,
    on_retrain: Callable[[Any], None] | None = None,
    now: Callable[[], datetime] = lambda: datetime.now(timezone.utc),
    sleep: Callable[[float], None] = time.sleep,
) -> list[MonitorRun]:
    """Run each monitor when its cron schedule comes due, as pipeline schedules run.

    A monitor seen for the first time runs once right away; ticks missed while the loop was
    stopped are covered by one run. Retraining runs are waited for before the next monitor.

    Raises:
        ConfigError: a monitor without a schedule, or listed twice.
    """
    from mlshift.pipelines._cron import parse_cron

    if not specs:
        raise ConfigError("no monitors to schedule", field="monitors")
    crons = {}
    for spec in specs:
        if spec.schedule is None:
            raise ConfigError(
                f"monitor {spec.name!r} has no schedule",
                field="schedule",
                hint='add schedule: "*/15 * * * *"',
            )
        if spec.name in crons:
            raise ConfigError(f"monitor {spec.name!r} is listed twice", field="monitors")
        crons[spec.name] = parse_cron(spec.schedule)
    store = store_for(client.adapter)
    runs: list[MonitorRun] = []
    retrains: list[Any] = []

    def retrained(pipeline_run: Any) -> None:
        retrains.append(pipeline_run)
        if on_retrain is not None:
            on_retrain(pipeline_run)

    while True:
        moment = now()
        for spec in specs:
            tick = crons[spec.name].latest_at_or_before(moment)
            state = store.state(spec.name)
            last = state.get("last_tick")
            if last is not None and datetime.fromisoformat(last) >= tick:
                continue
            # Recorded first: a run that fails does not make the same tick fire again.
            store.save_state(spec.name, {**state, "last_tick": tick.isoformat()})
            run = run_monitor(client, spec, now=moment, on_retrain=retrained)
            for pipeline_run in retrains:
                pipeline_run.wait()
            retrains.clear()
            runs.append(run)
            if on_run is not None:
                on_run(run)
            if max_runs is not None and len(runs) >= max_runs:
                return runs
        if once:
            return runs
        moment = now()
        upcoming = min(c.next_after(moment) for c in crons.values())
        sleep(max(0.0, (upcoming - moment).total_seconds()) + 0.05)
