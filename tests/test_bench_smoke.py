"""A tiny run of the benchmark suite, so it cannot silently rot (the real run is `nox -s bench`)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_bench_quick_run(tmp_path: Path) -> None:
    out = tmp_path / "results.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    results = json.loads(out.read_text())
    startup = results["startup"]
    assert startup["imports"]["mlshift"]["median_ms"] > 0
    assert startup["cli_help_ms"] > 0
    assert "| `mlshift --help` wall |" in proc.stdout  # the report renders
