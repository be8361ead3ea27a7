"""A smoke run of bench/capture.py (request capture's cost), so it cannot silently rot.

`--quick --only capture` serves the benchmark model once (with MLSHIFT_CAPTURE_DIR), switches
its capture off, to sample_rate 0.1 and to 1.0 as the local target does, sends a couple of
hundred requests at each from bench/loadgen.py, and counts what the server wrote. Needs neither
wrk nor any peer.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "bench"


@pytest.fixture(scope="module")
def quick_capture(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], str]:
    tmp = tmp_path_factory.mktemp("bench-capture")
    out, report = tmp / "results.json", tmp / "performance.md"
    proc = subprocess.run(
        [
            *(sys.executable, str(BENCH / "run.py"), "--quick", "--only", "capture"),
            *("--out", str(out), "--report", str(report)),
        ],
        capture_output=True,
        text=True,
        timeout=600,  # a bound against a hung run, not a speed claim (three server launches)
        check=False,
    )
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    return json.loads(out.read_text()), report.read_text()


def test_every_configuration_is_measured_with_only_200s(quick_capture: tuple[dict[str, Any], str]) -> None:
    capture = quick_capture[0]["capture"]
    assert capture["load_generator"].startswith("bench/loadgen.py")
    assert set(capture["configs"]) == {"off", "0.1", "1.0"}
    for config in capture["configs"].values():
        assert set(config["loads"]) == {"c16_r1"}
        row = config["loads"]["c16_r1"]
        assert row["failed_runs"] == 0 and row["non200"] == 0 and row["socket_errors"] == 0
        assert row["rps"] > 0 and row["p99_ms"] >= row["p50_ms"] > 0
    ratios = capture["ratios"]["c16_r1"]
    assert ratios["1.0"]["rps"] > 0 and ratios["0.1"]["rps"] > 0
    assert capture["load"]["cpus"] >= 1 and capture["load"]["start"] >= 0
    # The in-process CPU cost: the bare route costs something, and writing every request more
    # than writing a tenth of them.
    cost = capture["cpu_cost"]["loads"]["c16_r1"]
    assert cost["off_us"] > 0 and cost["dropped"] == 0
    assert cost["1.0_added_us"] > cost["0.1_added_us"]


def test_records_are_written_at_the_rate_asked(quick_capture: tuple[dict[str, Any], str]) -> None:
    counts = quick_capture[0]["capture"]["capture"]
    answered = counts["answered"]
    assert set(answered) == {"0.1", "1.0"}  # answers while capture was off are not expected
    assert answered["1.0"] >= 200 and answered["0.1"] >= 200
    # Every answer at 1.0 is written or (if the queue was full) counted as dropped, and about
    # one in ten at 0.1 more (200 answers: none at all would be a one-in-10^9 draw).
    offered = counts["captured"] + counts["dropped"]
    assert answered["1.0"] < offered < answered["1.0"] + answered["0.1"] // 2 + 16
    assert counts["records_in_files"] == counts["captured"] > 0 and counts["failed"] == 0
    assert counts["plausible"] is True
    assert counts["record_readable"] and counts["writer_settled"]


def test_the_report_states_both_targets_and_the_section(quick_capture: tuple[dict[str, Any], str]) -> None:
    results, report = quick_capture
    statuses = {t["target"]: t["status"] for t in results["targets"]}
    for target in (
        "req/s with capture at sample_rate 1.0 vs off",
        "req/s with capture at sample_rate 0.1 vs off",
        "server CPU that capture at sample_rate 1.0 adds per request (in process)",
    ):
        assert statuses[target] in ("pass", "MISS")  # measured, whichever way it went
    assert "## Request capture" in report and "| sample_rate 1.0 | 16 conns, 1 row |" in report


def test_capture_splices_into_the_page_beside_the_image_section() -> None:
    sys.path.insert(0, str(BENCH))
    try:
        import report
    finally:
        sys.path.remove(str(BENCH))
    loads = {"c16_r1": {"rps": 1000.0, "rps_runs": [990.0, 1000.0, 1010.0], "p50_ms": 10.0, "p99_ms": 20.0,
                        "cpu_us_per_req": 500.0, "runs": 3, "failed_runs": 0, "requests": 12000,
                        "non200": 0, "socket_errors": 0}}  # fmt: skip
    counts = {"answered": {"0.1": 12000, "1.0": 12000}, "expected": 13200.0, "captured": 13200,
              "dropped": 0, "failed": 0, "records_in_files": 13200, "writer_settled": True,
              "record_readable": True, "plausible": True}  # fmt: skip
    measured = {
        "load_generator": "wrk 4.1.0", "cpus": {"server": 0, "load_generator": 1}, "connections": 16,
        "duration_s": 4, "repeat": 3, "load": {"start": 1.0, "end": 1.2, "cpus": 2},
        "configs": {
            "off": {"sample_rate": None, "loads": loads},
            "0.1": {"sample_rate": 0.1, "loads": loads},
            "1.0": {"sample_rate": 1.0, "loads": loads},
        },
        "capture": counts,
        "ratios": {"c16_r1": {"noise": 0.02, "0.1": {"rps": 0.99, "p99": 1.0, "cpu_per_req": 1.0},
                              "1.0": {"rps": 0.93, "p99": 1.1, "cpu_per_req": 1.05}}},
    }  # fmt: skip
    statuses = {t["target"]: t["status"] for t in report.evaluate_targets({"capture": measured})}
    assert statuses["req/s with capture at sample_rate 1.0 vs off"] == "MISS"  # 0.93x is under 0.95x
    assert statuses["req/s with capture at sample_rate 0.1 vs off"] == "pass"  # 1% off, 2% noise
    before = (ROOT / "docs" / "performance.md").read_text()
    once = report.splice(before, {"capture": measured}, ["capture"])
    better = {
        **measured,
        "ratios": {
            "c16_r1": {**measured["ratios"]["c16_r1"], "1.0": {"rps": 0.97, "p99": 1.0, "cpu_per_req": 1.0}}
        },
    }
    again = report.splice(once, {"capture": better}, ["capture"])
    target = "| req/s with capture at sample_rate 1.0 vs off |"
    assert again.count("## Request capture") == 1 and again.count(target) == 1
    assert f"{target} >= 0.95x | 0.97x (16 conns, 1 row) | pass |" in again
    assert before[: before.index("## Targets")] in again  # the header, as it was measured
    assert "## Idempotent re-apply" in again and "## Serving\n" in again
    # Rounds without capture that differ by more than the 5% being judged decide nothing.
    noisy = {**measured, "ratios": {"c16_r1": {**measured["ratios"]["c16_r1"], "noise": 0.2}}}
    statuses = {t["target"]: t["status"] for t in report.evaluate_targets({"capture": noisy})}
    assert statuses["req/s with capture at sample_rate 1.0 vs off"] == "inconclusive"
    assert statuses["req/s with capture at sample_rate 0.1 vs off"] == "inconclusive"
    with pytest.raises(ValueError, match="can be spliced"):
        report.splice(before, {"serving": {}}, ["serving"])
