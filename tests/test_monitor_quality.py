"""Model quality from labels joined by request id, and /v2 traffic in monitors, on local://.

A user's story: deploy with capture, send requests with their own X-Request-Id (through the
endpoint's router, as a caller does), post the ground truth later, run the monitor. Then the
world changes (the labels follow another rule while the inputs do not move): only model
quality can see it, and it does.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

import mlshift
from capture_helpers import captured_rows, captured_window, wait_for
from mlshift.errors import ConfigError


def _deploy(client: mlshift.Client, example: Any, tmp_path: Path, *, labels: bool = True) -> str:
    x_train = example.make_data(3000, seed=1)
    path = example.train_model(x_train, tmp_path / "churn.skops")
    client.models.register(
        "churn", path, baseline=x_train, baseline_labels=example.label(x_train) if labels else None
    )
    client.endpoints.deploy("churn", "churn:1", capture={"sample_rate": 1.0})
    url = client.endpoints.get("churn").url
    assert url is not None
    return url.rsplit("/invocations", 1)[0]


def _send(base: str, rows: Any, prefix: str) -> None:
    """One request per row, each with the caller's own request id."""
    with httpx.Client(timeout=30, trust_env=False) as http:
        for i, row in enumerate(rows.tolist()):
            rid = f"{prefix}-{i}"
            resp = http.post(f"{base}/invocations", json={"instances": [row]}, headers={"X-Request-Id": rid})
            assert resp.status_code == 200, resp.text
            assert resp.headers["x-request-id"] == rid  # the id the answer was recorded under


def test_labels_joined_by_request_id_flag_a_model_that_got_worse(
    local: mlshift.Client, example: Any, tmp_path: Path
) -> None:
    client = local
    base = _deploy(client, example, tmp_path)
    kept = client.models.baseline("churn:1")
    assert kept is not None and kept.quality is not None and kept.quality["accuracy"] > 0.95
    client.monitors.apply(
        {
            "name": "churn-quality",
            "endpoint": "churn",
            "min_rows": 150,
            "model_quality": {"metric": "accuracy", "threshold": 0.8, "max_drop": 0.1, "min_labels": 50},
        }
    )

    # Labels for a few requests only: reported as not enough, no alarm.
    first = example.make_data(200, seed=20)
    _send(base, first, "a")
    wait_for(lambda: captured_rows(client, "churn") == 200, "200 captured rows")
    truth = example.label(first).tolist()
    assert client.monitors.labels("churn", {f"a-{i}": truth[i] for i in range(10)}) == 10
    run = client.monitors.run("churn-quality")
    assert run.judged and run.model_quality is not None
    assert not run.model_quality.judged and run.model_quality.labelled_rows == 10
    assert "not enough labels" in (run.model_quality.note or "")
    assert not run.alerting and not run.episode_started

    # The rest of those labels arrive later; the next requests are labelled as a CSV file.
    second = example.make_data(200, seed=21)
    _send(base, second, "b")
    wait_for(lambda: captured_rows(client, "churn") == 400, "400 captured rows")
    later = tmp_path / "labels.csv"
    later.write_text(
        "request_id,label\n" + "".join(f"b-{i},{v}\n" for i, v in enumerate(example.label(second).tolist()))
    )
    assert client.monitors.labels("churn", later) == 200
    good = client.monitors.run("churn-quality")
    quality = good.model_quality
    assert quality is not None and quality.judged and not quality.degraded
    assert quality.labelled_rows == quality.labelled_requests == 200
    assert quality.value is not None and quality.value > 0.9
    assert quality.reference == pytest.approx(kept.quality["accuracy"])
    assert good.drifted == () and not good.alerting

    # The world changes: the same inputs, but the truth follows another rule.
    third = example.make_data(200, seed=22)
    _send(base, third, "c")
    wait_for(lambda: captured_rows(client, "churn") == 600, "600 captured rows")
    flipped = (1 - example.label(third)).tolist()
    client.monitors.labels("churn", [(f"c-{i}", v) for i, v in enumerate(flipped)])
    bad = client.monitors.run("churn-quality")
    quality = bad.model_quality
    assert quality is not None and quality.judged and quality.degraded
    assert quality.value is not None and quality.value < 0.2
    assert "below 0.8" in (quality.note or "") and "worse than the reference" in (quality.note or "")
    assert bad.drifted == ()  # the inputs did not move: drift alone would not have seen it
    assert bad.alerting and bad.episode_started
    saved = json.loads(Path(bad.report_path or "").read_text())
    assert saved["model_quality"]["degraded"] is True and saved["model_quality"]["metric"] == "accuracy"
    page = Path(bad.html_path or "").read_text()
    assert "Model quality (accuracy) degraded" in page


def test_labels_for_the_ids_predict_returns_are_joined(
    local: mlshift.Client, example: Any, tmp_path: Path
) -> None:
    client = local
    _deploy(client, example, tmp_path)
    client.monitors.apply(
        {
            "name": "churn-ids",
            "endpoint": "churn",
            "min_rows": 100,
            "model_quality": {"metric": "accuracy", "threshold": 0.5, "min_labels": 50},
        }
    )
    rows = example.make_data(120, seed=40)
    answers = [
        client.endpoints.predict("churn", [row], request_id=f"order-{i}" if i < 20 else None)
        for i, row in enumerate(rows.tolist())
    ]
    ids = [a.request_id for a in answers]
    assert ids[:20] == [f"order-{i}" for i in range(20)]  # the caller's own
    assert all(isinstance(i, str) and len(i) == 24 for i in ids[20:]) and len(set(ids)) == 120
    wait_for(lambda: captured_rows(client, "churn") == 120, "120 captured rows")

    # The ground truth, with every fourth label wrong: the metric is computed over these.
    truth = example.label(rows).tolist()
    labels = {rid: (1 - v if i % 4 == 0 else v) for i, (rid, v) in enumerate(zip(ids, truth, strict=True))}
    assert client.monitors.labels("churn", labels) == 120
    predicted = [a.predictions[0] for a in answers]
    expected = sum(p == labels[rid] for p, rid in zip(predicted, ids, strict=True)) / 120
    run = client.monitors.run("churn-ids")
    quality = run.model_quality
    assert quality is not None and quality.judged
    assert quality.labelled_rows == quality.labelled_requests == 120
    assert quality.value == pytest.approx(expected)
    assert 0.6 < expected < 0.85  # the wrong labels count: not the model's own ~0.97


def test_request_ids_on_memory_and_bad_ones_refused_before_sending(
    memory: mlshift.Client, iris: dict[str, Any]
) -> None:
    memory.models.register("iris", iris["v1"])
    memory.endpoints.deploy("iris", "iris:1")
    row = iris["rows"][:1]
    assert memory.endpoints.predict("iris", row, request_id="order-1").request_id == "order-1"
    made = memory.endpoints.predict("iris", row)
    assert made.request_id is not None and len(made.request_id) == 24
    assert made.invocation.request_id == made.request_id
    assert "request_id=" in repr(made)
    assert made.variant is not None

    def served() -> int:
        metrics = memory.adapter.endpoints.read_metrics("iris", made.variant or "", 3600)
        assert metrics is not None
        return metrics.requests

    before = served()
    for bad in ("", "x" * 129, " padded", "line\nbreak", "caf\u00e9"):
        with pytest.raises(ConfigError, match="request_id") as info:
            memory.endpoints.predict("iris", row, request_id=bad)
        assert info.value.field == "request_id"
    assert served() == before  # refused before anything was sent


def test_open_inference_protocol_traffic_is_monitored(
    local: mlshift.Client, example: Any, tmp_path: Path
) -> None:
    client = local
    base = _deploy(client, example, tmp_path, labels=False)
    rows = example.make_data(300, seed=30)
    answered: list[Any] = []
    with httpx.Client(timeout=30, trust_env=False) as http:
        for start in range(0, 300, 10):
            chunk = rows[start : start + 10].tolist()
            body = {"inputs": [{"name": "input", "shape": [10, 4], "datatype": "FP64", "data": chunk}]}
            resp = http.post(
                f"{base}/v2/models/churn/infer", json=body, headers={"X-Request-Id": f"v2-{start}"}
            )
            assert resp.status_code == 200, resp.text
            assert resp.headers["x-request-id"] == f"v2-{start}"
            answered.extend(resp.json()["outputs"][0]["data"])
    wait_for(lambda: captured_rows(client, "churn") == 300, "300 captured rows")
    ids: list[str] = []
    _, got, outputs, requests = captured_window(client, "churn", ids)
    assert requests == 30 and got == rows.tolist() and ids[:10] == ["v2-0"] * 10
    assert outputs == answered
    run = client.monitors.run({"name": "churn-v2", "endpoint": "churn", "min_rows": 100})
    assert run.judged and run.requests == 30 and run.report is not None and run.report.rows == 300
    assert run.drifted == ()
    # Labels posted for /v2 requests (one per row of a 10-row request) join the same way.
    labels = {f"v2-{s}": example.label(rows[s : s + 10]).tolist() for s in range(0, 300, 10)}
    client.monitors.labels("churn", labels)
    scored = client.monitors.run(
        {
            "name": "churn-v2-quality",
            "endpoint": "churn",
            "min_rows": 100,
            "model_quality": {"metric": "f1", "threshold": 0.8},
        }
    )
    assert scored.model_quality is not None and scored.model_quality.labelled_rows == 300
    assert scored.model_quality.value is not None and scored.model_quality.value > 0.9
    # The next run's drift window starts where this one ended (nothing new), but the quality
    # window reaches back: labels come later than requests.
    spec = {
        "name": "churn-v2-late",
        "endpoint": "churn",
        "min_rows": 100,
        "model_quality": {"metric": "accuracy", "threshold": 0.8, "window": "1h"},
    }
    client.monitors.apply(spec)
    client.monitors.run("churn-v2-late")
    late = client.monitors.run("churn-v2-late")
    assert not late.judged and late.requests == 0
    assert late.model_quality is not None and late.model_quality.judged
    assert late.model_quality.labelled_rows == 300


def test_bad_labels_and_quality_specs_are_refused_before_anything_is_stored(
    local: mlshift.Client, example: Any, tmp_path: Path
) -> None:
    client = local
    _deploy(client, example, tmp_path, labels=False)
    labels_dir = client.adapter.root / "monitoring" / "labels"
    with pytest.raises(ConfigError, match="model_quality.metric") as unknown:
        client.monitors.plan(
            {"name": "q", "endpoint": "churn", "model_quality": {"metric": "auc", "threshold": 0.9}}
        )
    assert "accuracy" in str(unknown.value)
    with pytest.raises(ConfigError, match="does not score numbers|does not score class labels") as wrong:
        client.monitors.plan(
            {"name": "q", "endpoint": "churn", "model_quality": {"metric": "mae", "threshold": 1}}
        )
    assert wrong.value.field == "model_quality.metric" and "accuracy, f1" in (wrong.value.hint or "")
    with pytest.raises(ConfigError, match="needs a reference accuracy") as no_reference:
        client.monitors.plan({"name": "q", "endpoint": "churn", "model_quality": {"max_drop": 0.05}})
    assert no_reference.value.field == "model_quality.max_drop"
    with pytest.raises(ConfigError, match="give a threshold, a max_drop"):
        client.monitors.plan({"name": "q", "endpoint": "churn", "model_quality": {"metric": "accuracy"}})

    no_columns = tmp_path / "labels.csv"
    no_columns.write_text("id,truth\nr-1,1\n")
    with pytest.raises(
        ConfigError, match="needs the columns request_id and label; its header has: id, truth"
    ):
        client.monitors.labels("churn", no_columns)
    with pytest.raises(ConfigError, match="a label must be a number"):
        client.monitors.labels("churn", {"r-1": {"class": 1}})
    with pytest.raises(ConfigError, match="'nope' does not exist"):
        client.monitors.labels("nope", {"r-1": 1})
    client.endpoints.deploy("quiet", "churn:1")  # no capture
    with pytest.raises(ConfigError, match="'quiet' does not capture") as no_capture:
        client.monitors.labels("quiet", {"r-1": 1})
    assert no_capture.value.field == "endpoint"
    assert not labels_dir.exists()
    with pytest.raises(ConfigError, match="baseline_labels has 2 values for 3000 baseline rows"):
        client.models.register(
            "churn",
            tmp_path / "churn.skops",
            baseline=example.make_data(3000, seed=1),
            baseline_labels=[0, 1],
        )
    assert [v.version for v in client.models.list("churn")] == ["1"]


def test_cli_posts_labels_and_registers_a_reference(
    local: mlshift.Client, state_dir: Path, example: Any, tmp_path: Path
) -> None:
    import os
    import subprocess

    import numpy as np

    env = {**os.environ, "MLSHIFT_TARGET": f"local://{state_dir}", "NO_COLOR": "1", "COLUMNS": "200"}

    def cli(*args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [sys.executable, "-m", "mlshift", *args],
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert done.returncode == code, done.stdout + done.stderr
        assert "Traceback" not in done.stderr
        return done

    x = example.make_data(1000, seed=1)
    example.train_model(x, tmp_path / "churn.skops")
    table = np.column_stack([x, example.label(x)])
    np.savetxt(tmp_path / "train.csv", table, delimiter=",", header="x0,x1,x2,x3,churned", comments="")
    missing = cli(
        "models", "register", "churn", "churn.skops", "--baseline", "train.csv", "--label-column", "y", code=1
    )
    assert "--label-column y" in missing.stderr and "churned" in missing.stderr
    cli("models", "register", "churn", "churn.skops", "--baseline", "train.csv", "--label-column", "churned")
    kept = local.models.baseline("churn:1")
    assert kept is not None and kept.inputs.columns == ("x0", "x1", "x2", "x3")
    assert kept.quality is not None and kept.quality["accuracy"] > 0.95
    assert kept.quality["f1"] > 0.95  # the CSV's labels are 1.0 / 0.0, the model answers 1 / 0
    local.endpoints.deploy("churn", "churn:1", capture={"sample_rate": 1.0})

    (tmp_path / "labels.jsonl").write_text(
        '{"request_id": "r-1", "label": 1}\n{"request_id": "r-2", "label": 0}\n'
    )
    stored = cli("monitors", "labels", "churn", "labels.jsonl")
    assert "Stored 2 labels for endpoint churn" in stored.stdout
    (tmp_path / "bad.csv").write_text("request,label\nr-3,1\n")
    bad = cli("monitors", "labels", "churn", "bad.csv", code=1)
    assert "needs the columns request_id and label; its header has: request, label" in bad.stderr
    assert "request_id,label" in cli("monitors", "labels", "--help").stdout
    store_labels = state_dir / "monitoring" / "labels" / "churn"
    assert len(list(store_labels.glob("*.jsonl"))) == 1  # the bad file stored nothing


def test_quality_metrics_agree_with_scikit_learn() -> None:
    import numpy as np
    from sklearn import metrics

    from mlshift.monitoring import quality_metric

    rng = np.random.default_rng(7)
    truth = rng.integers(0, 3, 500)
    guess = np.where(rng.random(500) < 0.7, truth, rng.integers(0, 3, 500))
    assert quality_metric("accuracy", truth.tolist(), guess.tolist()) == pytest.approx(
        metrics.accuracy_score(truth, guess)
    )
    # Labels as a CSV gives them (text, floats) score the same as the model's integers.
    as_text = [f"{v:.1f}" for v in truth]
    assert quality_metric("f1", as_text, guess.tolist()) == pytest.approx(
        metrics.f1_score(truth, guess, average="macro")
    )
    y = rng.normal(size=300)
    p = y + rng.normal(scale=0.3, size=300)
    assert quality_metric("mae", y.tolist(), p.tolist()) == pytest.approx(metrics.mean_absolute_error(y, p))
    assert quality_metric("rmse", y.tolist(), p.tolist()) == pytest.approx(
        float(np.sqrt(metrics.mean_squared_error(y, p)))
    )


def test_labels_join_rows_by_request_id() -> None:
    from mlshift.monitoring._quality import join_labels

    ids = ["a", "b", "b", "c", "d", "d"]
    outputs = [1, 0, 1, 1, 0, 0]
    # "b" has one label per row; "c" none; "d" one label for two rows (left out).
    truth, answers, requests = join_labels({"a": 1, "b": [0, 0], "d": 1, "x": 1}, ids, outputs)
    assert (truth, answers, requests) == ([1, 0, 0], [1, 0, 1], 2)
