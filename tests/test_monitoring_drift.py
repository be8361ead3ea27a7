"""Baselines and drift statistics: the numbers, checked against scipy, and the verdicts."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
import pytest
from scipy import stats
from scipy.spatial.distance import jensenshannon as scipy_jensenshannon

from mlshift.errors import ConfigError
from mlshift.monitoring import (
    Baseline,
    CategoricalBaseline,
    NumericBaseline,
    compute_baseline,
    drift_report,
)
from mlshift.monitoring._drift import chi2_pvalue, jensenshannon, ks, psi, wasserstein

COLUMNS = ["age", "income", "score", "plan"]
PLANS = ["basic", "plus", "pro"]


def sample(
    rng: np.random.Generator, n: int, *, income_shift: float = 0.0, plans: Any = None
) -> dict[str, list[Any]]:
    """Rows drawn like the training data; ``income_shift`` moves income by that many std."""
    return {
        "age": rng.normal(40, 12, n).round().tolist(),
        "income": (rng.lognormal(10, 0.5, n) + income_shift * 30_000).tolist(),
        "score": rng.uniform(0, 1, n).tolist(),
        "plan": rng.choice(PLANS, n, p=plans or [0.5, 0.3, 0.2]).tolist(),
    }


@pytest.fixture(scope="module")
def training() -> dict[str, list[Any]]:
    return sample(np.random.default_rng(0), 5000)


@pytest.fixture(scope="module")
def baseline(training: dict[str, list[Any]]) -> Baseline:
    return compute_baseline(training)


# --------------------------------------------------------------------- statistics vs scipy


def test_ks_matches_scipy_two_sample_statistic(training: dict[str, list[Any]], baseline: Baseline) -> None:
    rng = np.random.default_rng(1)
    for shift in (0.0, 0.3, 1.0):
        window = np.asarray(sample(rng, 2000, income_shift=shift)["income"])
        base = baseline.features["income"]
        assert isinstance(base, NumericBaseline)
        expected = stats.ks_2samp(training["income"], window).statistic
        # the baseline keeps percentiles, not every value: at most ~1/100 apart
        assert ks(base.quantiles, window) == pytest.approx(expected, abs=0.015)


def test_ks_on_a_discrete_feature_is_not_fooled_by_ties() -> None:
    rng = np.random.default_rng(2)
    train = rng.integers(0, 2, 4000).astype(float)
    base = compute_baseline({"flag": train.tolist()}).features["flag"]
    assert isinstance(base, NumericBaseline)
    window = rng.integers(0, 2, 2000).astype(float)
    assert ks(base.quantiles, window) == pytest.approx(stats.ks_2samp(train, window).statistic, abs=0.015)


def test_wasserstein_matches_scipy(training: dict[str, list[Any]], baseline: Baseline) -> None:
    rng = np.random.default_rng(3)
    base = baseline.features["income"]
    assert isinstance(base, NumericBaseline)
    for shift in (0.2, 1.0):
        window = np.asarray(sample(rng, 2000, income_shift=shift)["income"])
        expected = stats.wasserstein_distance(training["income"], window)
        assert wasserstein(base.quantiles, window) == pytest.approx(expected, rel=0.05)


def test_jensenshannon_and_psi_match_independent_formulas() -> None:
    p = [500.0, 300.0, 150.0, 50.0]
    q = [400.0, 320.0, 200.0, 80.0]
    assert jensenshannon(p, q) == pytest.approx(scipy_jensenshannon(p, q, base=2), abs=1e-12)
    # PSI is the symmetrised Kullback-Leibler divergence of the two histograms
    pn, qn = np.asarray(p) / sum(p), np.asarray(q) / sum(q)
    assert psi(p, q) == pytest.approx(stats.entropy(qn, pn) + stats.entropy(pn, qn), abs=1e-12)
    assert psi(p, p) == 0.0
    assert jensenshannon(p, p) == 0.0


def test_chi2_pvalue_matches_scipy() -> None:
    expected = {"basic": 2500, "plus": 1500, "pro": 1000}
    observed = {"basic": 950, "plus": 640, "pro": 410}
    scale = sum(observed.values()) / sum(expected.values())
    reference = stats.chisquare(list(observed.values()), [v * scale for v in expected.values()]).pvalue
    assert chi2_pvalue(expected, observed) == pytest.approx(reference, rel=1e-9)


# --------------------------------------------------------------------- verdicts


def test_undrifted_window_reports_no_drift(baseline: Baseline) -> None:
    report = drift_report(baseline, sample(np.random.default_rng(4), 2000))
    assert report.drifted == ()
    assert report.rows == 2000
    assert [f.feature for f in report.features] == COLUMNS
    assert report["income"].statistic == "psi" and report["plan"].statistic == "jensenshannon"


@pytest.mark.parametrize("statistic", ["psi", "ks", "jensenshannon", "wasserstein"])
def test_one_feature_shifted_by_one_std_is_flagged_and_only_it(baseline: Baseline, statistic: str) -> None:
    income_std = baseline.features["income"].std  # type: ignore[union-attr]
    rng = np.random.default_rng(5)
    window = sample(rng, 2000)
    window["income"] = (np.asarray(window["income"]) + income_std).tolist()
    report = drift_report(baseline, window, statistics={"numeric": statistic})
    assert report.drifted == ("income",)
    flagged = report["income"]
    assert flagged.statistic == statistic
    assert flagged.value is not None and flagged.value > flagged.threshold


def test_twenty_fresh_undrifted_samples_raise_at_most_one_alert(baseline: Baseline) -> None:
    alerts = 0
    for seed in range(100, 120):
        for statistic in ("psi", "ks", "wasserstein", "jensenshannon"):
            report = drift_report(
                baseline, sample(np.random.default_rng(seed), 2000), statistics={"numeric": statistic}
            )
            alerts += bool(report.drifted)
    assert alerts <= 1


@pytest.mark.parametrize("statistic", ["jensenshannon", "chi2", "linf"])
def test_categorical_shift_is_flagged(baseline: Baseline, statistic: str) -> None:
    rng = np.random.default_rng(6)
    same = drift_report(baseline, sample(rng, 2000), statistics={"categorical": statistic})
    moved = drift_report(
        baseline, sample(rng, 2000, plans=[0.2, 0.3, 0.5]), statistics={"categorical": statistic}
    )
    assert same.drifted == ()
    assert moved.drifted == ("plan",)


def test_unseen_categories_count_as_other_and_show_as_drift(baseline: Baseline) -> None:
    rng = np.random.default_rng(7)
    window = sample(rng, 1000)
    window["plan"] = ["enterprise"] * 1000
    assert drift_report(baseline, window).drifted == ("plan",)


def test_data_quality_is_reported(baseline: Baseline) -> None:
    rng = np.random.default_rng(8)
    window = sample(rng, 1000)
    window["age"] = [None] * 200 + [500.0] * 100 + window["age"][300:]
    window["score"] = ["n/a"] * 10 + window["score"][10:]
    report = drift_report(baseline, window)
    assert report["age"].missing_rate == pytest.approx(0.2)
    assert report["age"].baseline_missing_rate == 0.0
    assert report["age"].out_of_range == pytest.approx(100 / 800)
    assert report["score"].wrong_type == 10


def test_too_few_values_are_reported_not_judged(baseline: Baseline) -> None:
    report = drift_report(baseline, sample(np.random.default_rng(9), 10))
    assert report.drifted == ()
    assert all(f.value is None and f.note and "at least 30" in f.note for f in report.features)


# --------------------------------------------------------------------- baselines


def test_baseline_is_small_and_round_trips(baseline: Baseline) -> None:
    text = baseline.model_dump_json()
    assert len(text) < 4 * 4096  # four features: a few KB, fit for a registry
    assert Baseline.model_validate_json(text) == baseline
    plan = baseline.features["plan"]
    assert isinstance(plan, CategoricalBaseline)
    assert set(plan.frequencies) == set(PLANS)
    assert json.loads(text)["features"]["income"]["kind"] == "numeric"


def test_baseline_from_rows_and_numpy_names_columns() -> None:
    rows = np.random.default_rng(10).normal(size=(200, 3))
    by_rows = compute_baseline(rows.tolist(), columns=["a", "b", "c"])
    by_array = compute_baseline(rows)
    assert by_rows.columns == ("a", "b", "c")
    assert by_array.columns == ("x0", "x1", "x2")
    assert by_rows.features["a"] == by_array.features["x0"]
    report = drift_report(by_array, rows)  # a window given as rows in the same order
    assert report.drifted == ()


def test_many_categories_keep_the_most_frequent_and_other() -> None:
    values = [f"c{i % 80}" for i in range(8000)] + ["c0"] * 500
    base = compute_baseline({"city": values}).features["city"]
    assert isinstance(base, CategoricalBaseline)
    assert len(base.frequencies) == 51 and base.frequencies["__other__"] == 30 * 100
    assert next(iter(base.frequencies)) == "c0"


# --------------------------------------------------------------------- bad input


@pytest.mark.parametrize(
    ("call", "field", "words"),
    [
        (lambda b: drift_report(b, [[1.0, 2.0]]), "window", "4 features"),
        (lambda b: drift_report(b, {"age": [1.0]}), "window", "no column income"),
        (
            lambda b: drift_report(b, sample(np.random.default_rng(0), 50), statistics={"plan": "ks"}),
            "statistics.plan",
            "not a statistic",
        ),
        (
            lambda b: drift_report(b, sample(np.random.default_rng(0), 50), statistics={"height": "ks"}),
            "statistics.height",
            "not a feature",
        ),
        (
            lambda b: drift_report(b, sample(np.random.default_rng(0), 50), thresholds={"pval": 0.1}),
            "thresholds.pval",
            "neither",
        ),
    ],
)
def test_bad_report_arguments_name_the_field(baseline: Baseline, call: Any, field: str, words: str) -> None:
    with pytest.raises(ConfigError) as err:
        call(baseline)
    assert err.value.field == field
    assert words in str(err.value)


def test_bad_baseline_input_names_what_is_wrong() -> None:
    with pytest.raises(ConfigError, match="empty"):
        compute_baseline([])
    with pytest.raises(ConfigError, match="different lengths"):
        compute_baseline([[1.0, 2.0], [1.0]])
    with pytest.raises(ConfigError, match="which the table does not have") as err:
        compute_baseline({"a": [1.0]}, categorical=["b"])
    assert err.value.field == "categorical"
    with pytest.raises(ConfigError, match="3 values but 2 column names"):
        compute_baseline([[1.0, 2.0, 3.0]], columns=["a", "b"])
    with pytest.raises(ConfigError, match="no values"):
        compute_baseline({"a": [None, float("nan")]})


# --------------------------------------------------------------------- the HTML report


def test_html_report_is_self_contained_and_charts_the_drifted_feature(baseline: Baseline) -> None:
    from html.parser import HTMLParser

    from mlshift.monitoring import render_html

    window = sample(np.random.default_rng(11), 2000, income_shift=1.0)
    window["plan"][0] = "<script>alert(1)</script>"  # user data is escaped, never markup
    report = drift_report(baseline, window)
    page = render_html(report, title="churn · last hour")

    tags: list[str] = []
    figures: list[str] = []

    class Collect(HTMLParser):
        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            tags.append(tag)

        def handle_data(self, data: str) -> None:
            if tags and tags[-1] == "figcaption":
                figures.append(data)

    Collect().feed(page)
    assert "script" not in tags and "link" not in tags and "img" not in tags  # nothing to fetch
    assert figures == [f"income — psi {report['income'].value:.4g} (threshold 0.2)"]
    assert tags.count("rect") == 2 * len(report["income"].bins)
    assert "1 of 4 features drifted: income" in page
    assert "churn · last hour" in page


def test_report_histograms_are_shares_of_the_same_bins(baseline: Baseline) -> None:
    report = drift_report(baseline, sample(np.random.default_rng(12), 2000))
    for feature in report.features:
        assert len(feature.bins) == len(feature.baseline_shares) == len(feature.window_shares) > 1
        assert sum(feature.baseline_shares) == pytest.approx(1.0)
        assert sum(feature.window_shares) == pytest.approx(1.0)
