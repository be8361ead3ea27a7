"""bench/cloud_calls.py: HTTP requests of a first deploy and an unchanged re-apply on each cloud's kit.

Runs the benchmark itself (one re-apply per cloud) so that its numbers, and the report code
that writes them into docs/performance.md, cannot rot. A cloud whose adapter or SDK is not
installed (the tests-core session) must be reported as not measured, never as a pass.
"""

from __future__ import annotations

import importlib
import sys
from pathlib import Path
from typing import Any

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture(scope="module")
def bench() -> Any:
    sys.path.insert(0, str(BENCH))
    try:
        import cloud_calls
        import report

        yield cloud_calls, report
    finally:
        sys.path.remove(str(BENCH))


@pytest.fixture(scope="module")
def measured(bench: Any) -> dict[str, Any]:
    cloud_calls, _ = bench
    return cloud_calls.bench_cloud_calls(1)


def installed(module: str, cls: str) -> bool:
    """Whether a cloud's kit (its adapter and SDK) can be imported here."""
    try:
        return getattr(importlib.import_module(module), cls) is not None
    except ImportError:
        return False


def test_every_cloud_is_measured_or_says_why(bench: Any, measured: dict[str, Any]) -> None:
    kits = bench[0].KITS
    assert set(measured) == set(kits) == {"sagemaker://", "azureml://", "vertex://"}
    for label, (module, cls, _, _) in kits.items():
        if installed(module, cls):
            assert measured[label]["status"] == "measured", measured[label]
        else:
            assert measured[label]["status"].startswith("not measured")


def test_a_first_deploy_changes_things_and_an_unchanged_reapply_nothing(measured: dict[str, Any]) -> None:
    rows = [row for row in measured.values() if row["status"] == "measured"]
    for row in rows:
        first, again = row["first_deploy"], row["reapply"]
        # Register and create at least, on the control plane; the artifact goes to storage.
        assert first["mutating_control_plane"] >= 2 and first["bytes_uploaded"] > 0
        assert first["requests"] == first["control_plane"] + first["storage"]
        assert (again["plan_changes"], again["mutating"], again["bytes_uploaded"]) == (0, 0, 0)
        assert again["requests"] > 0  # it did read the live state


def test_the_report_writes_a_row_per_cloud_and_a_target_each(bench: Any, measured: dict[str, Any]) -> None:
    _, report = bench
    section = "\n".join(report._cloud_calls(measured))
    targets = {t["target"]: t for t in report._cloud_calls_targets(measured)}
    for label, row in measured.items():
        target = targets[f"unchanged re-apply on `{label}` (HTTP requests the SDK sent)"]
        if row["status"] == "measured":
            first = row["first_deploy"]
            assert f"| `{label}` | first deploy | {first['requests']} | {first['control_plane']} |" in section
            assert target["status"] == "pass"
        else:
            assert target["status"] == "not measured"
    table = ["| target | goal | measured | status |", "|---|---|---|---|"]
    page = "\n".join(["# Performance", "", "## Targets", "", *table, "", "## Serving", ""])
    spliced = report.splice(page, {"cloud_calls": measured}, ["cloud_calls"])
    assert "## Control-plane calls on the clouds" in spliced and "## Serving" in spliced
    assert spliced.count("(HTTP requests the SDK sent)") == len(measured)
