"""``mlshift monitors ...`` and ``models register --baseline`` as a user runs them."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any


class CLI:
    def __init__(self, cwd: Path, state: Path) -> None:
        self.cwd = cwd
        self.env = {**os.environ, "MLSHIFT_TARGET": f"local://{state}", "NO_COLOR": "1", "COLUMNS": "200"}

    def __call__(self, *args: str, code: int = 0) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "mlshift", *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            timeout=180,
            check=False,
        )
        assert result.returncode == code, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
        assert "Traceback" not in result.stderr, result.stderr
        return result


MLSHIFT_YAML = """\
version: 1
endpoints:
  - name: churn
    variants: [{name: blue, model: "churn:1"}]
    capture: {sample_rate: 0.5}
monitors:
  - name: churn-drift
    endpoint: churn
    schedule: "*/10 * * * *"
    features:
      statistics: {numeric: ks}
"""


def test_register_with_baseline_apply_run_and_report(tmp_path: Path, state_dir: Path, example: Any) -> None:
    import numpy as np

    cli = CLI(tmp_path, state_dir)
    x = example.make_data(3000, seed=1)
    example.train_model(x, tmp_path / "churn.skops")
    np.savetxt(tmp_path / "bad.csv", x[:, :3], delimiter=",", header="x0,x1,x2", comments="")
    bad = cli("models", "register", "churn", "churn.skops", "--baseline", "bad.csv", code=1)
    assert "3 columns, the model takes 4" in bad.stderr
    np.savetxt(tmp_path / "train.csv", x, delimiter=",", header="x0,x1,x2,x3", comments="")
    cli("models", "register", "churn", "churn.skops", "--baseline", "train.csv")
    (tmp_path / "mlshift.yaml").write_text(MLSHIFT_YAML)
    try:
        cli("apply", "--yes")
        saved = cli("monitors", "apply")
        assert "Saved monitors: churn-drift" in saved.stdout
        listed = cli("monitors", "list").stdout
        assert "churn-drift" in listed and "*/10 * * * *" in listed and "never" in listed

        # Rows as the model server writes them: x2 moved by one standard deviation.
        capture = state_dir / "capture" / "churn"
        assert json.loads((capture / "capture.json").read_text())["sample_rate"] == 0.5
        now = datetime.now(timezone.utc)
        hour = capture / "data" / now.strftime("%Y-%m-%d") / now.strftime("%H")
        hour.mkdir(parents=True)
        rows = example.make_data(500, seed=5, shift=1.0).tolist()
        stamp = (now - timedelta(seconds=5)).isoformat()
        lines = [
            json.dumps({"request_id": str(i), "endpoint": "churn", "variant": "blue", "model": "churn:1",
                        "timestamp": stamp, "columns": None, "content_type": "application/json",
                        "request": {"instances": [r]}, "response": {"predictions": [1]}})
            for i, r in enumerate(rows)
        ]  # fmt: skip
        (hour / "blue-1-1.jsonl").write_text("\n".join(lines) + "\n")

        run = json.loads(cli("monitors", "run", "churn-drift", "-o", "json").stdout)
        drifted = [f["feature"] for f in run["report"]["features"] if f["drifted"]]
        assert drifted == ["x2", "(prediction)"]  # every answer written above is 1
        assert {f["statistic"] for f in run["report"]["features"] if f["feature"].startswith("x")} == {"ks"}
        assert run["episode_started"] and run["requests"] == 500
        report = cli("monitors", "report", "churn-drift", "--html", "drift.html").stdout
        assert "drift in x2" in report and "episode started" in report
        page = (tmp_path / "drift.html").read_text()
        assert page.startswith("<!DOCTYPE html>") and "<svg" in page
        shown = cli("monitors", "show", "churn-drift").stdout
        assert "endpoint: churn" in shown and run["id"] in shown
        again = cli("monitors", "run", "churn-drift").stdout
        assert "not judged: 0 rows captured" in again
        # The scheduler's first sight of a monitor runs it; -o json prints each run as a JSON line.
        ticked = cli("monitors", "schedule", "churn-drift", "--once", "-o", "json").stdout
        runs = [json.loads(line) for line in ticked.splitlines() if line.strip()]
        assert [r["monitor"] for r in runs] == ["churn-drift"] and runs[0]["id"] != run["id"]
        missing = cli("monitors", "report", "nope", code=1)
        assert "monitor 'nope' does not exist (monitors: churn-drift)" in missing.stderr
    finally:
        with contextlib.suppress(AssertionError):  # the endpoint may not have been made
            cli("endpoints", "delete", "churn", "--yes")
