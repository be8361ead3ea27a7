"""Pipelines: define + validate + compile an N-step DAG to IR, mlshift vs kfp.

Each measurement is a fresh process running bench/pipeline_chain_mlshift.py or
bench/pipeline_chain_kfp.py (same DAG shape), alternating. Reported per side and size:
the library's import time, the first define + compile in that process (what a CLI run
pays after import; mlshift's lazy imports of its IR model fall in here), and the median of
further define + compile calls in the same process (warm).

When ``mlshift.pipelines`` is not importable the benchmark reports "not measured" rather
than failing: it was being built alongside this suite.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
import tempfile
from typing import Any

from common import BENCH, bench_env, median, ratio

SIZES = (10, 100, 500)
WARM_REPS = 3


def _run(python: str, worker: str, n: int, out_dir: str, *extra: str) -> dict[str, Any] | str:
    proc = subprocess.run(
        [python, str(BENCH / worker), str(n), str(WARM_REPS), out_dir, *extra],
        capture_output=True,
        text=True,
        env=bench_env(),
        timeout=300,
        check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("PIPEJSON "):
            result: dict[str, Any] = json.loads(line[len("PIPEJSON ") :])
            return result
    lines = (proc.stderr or proc.stdout).strip().splitlines()
    return lines[-1] if lines else f"exit code {proc.returncode}"


def _has(python: str, module: str) -> bool:
    if python == sys.executable:
        try:
            return importlib.util.find_spec(module) is not None
        except ImportError:
            return False
    proc = subprocess.run(
        [python, "-c", f"import importlib.util as u, sys; sys.exit(u.find_spec({module!r}) is None)"],
        capture_output=True,
        check=False,
    )
    return proc.returncode == 0


def _version(python: str, dist: str) -> str | None:
    proc = subprocess.run(
        [python, "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
        capture_output=True,
        text=True,
        check=False,
    )
    return proc.stdout.strip() if proc.returncode == 0 else None


def bench_pipelines(repeat: int, kfp_python: str | None = None) -> dict[str, Any]:
    """Both sides for 10, 100 and 500 steps, medians of ``repeat`` fresh processes each."""
    if not _has(sys.executable, "mlshift.pipelines"):
        return {"status": "not measured: pipelines not built yet (mlshift.pipelines is not importable)"}
    # mlshift-kfp: mlshift compiling the same chain to a KFP PipelineSpec, kfp's own output.
    sides: dict[str, tuple[str, ...]] = {"mlshift": (sys.executable, "pipeline_chain_mlshift.py")}
    if _has(sys.executable, "mlshift.pipelines.kfp"):
        sides["mlshift-kfp"] = (sys.executable, "pipeline_chain_mlshift.py", "kfp")
    kfp_python = kfp_python or sys.executable
    notes = []
    if _has(kfp_python, "kfp"):
        sides["kfp"] = (kfp_python, "pipeline_chain_kfp.py")
    else:
        notes.append("kfp not installed: mlshift measured alone (nox -s bench installs kfp)")
    out: dict[str, Any] = {"status": "measured", "shape": "chain", "sizes": {}, "notes": notes}
    out["versions"] = {"kfp": _version(kfp_python, "kfp")} if "kfp" in sides else {}
    with tempfile.TemporaryDirectory(prefix="mlshift-bench-pipelines-") as tmp:
        for n in SIZES:
            samples: dict[str, list[dict[str, Any]]] = {side: [] for side in sides}
            errors: dict[str, str] = {}
            for rep in range(repeat):
                order = list(sides) if rep % 2 == 0 else list(reversed(sides))
                for side in order:
                    print(f"  pipelines: {side} {n} steps (round {rep + 1}/{repeat})", flush=True)
                    python, worker, *extra = sides[side]
                    result = _run(python, worker, n, tmp, *extra)
                    if isinstance(result, str):
                        errors[side] = result
                    else:
                        samples[side].append(result)
            row: dict[str, Any] = {}
            for side, runs in samples.items():
                row[side] = {
                    "import_ms": median([r["import_s"] * 1000 for r in runs]),
                    "first_ms": median([r["first_s"] * 1000 for r in runs]),
                    "warm_ms": median([r["warm_s"] * 1000 for r in runs]),
                    "ir_bytes": runs[-1]["bytes"] if runs else None,
                    "runs": len(runs),
                    "error": errors.get(side),
                }
            notes.extend(f"{side} failed at {n} steps: {error}" for side, error in errors.items())
            if "kfp" in row:
                row["speedup_first"] = ratio(row["kfp"]["first_ms"], row["mlshift"]["first_ms"], 1)
                row["speedup_warm"] = ratio(row["kfp"]["warm_ms"], row["mlshift"]["warm_ms"], 1)
                if "mlshift-kfp" in row:
                    row["speedup_first_kfp_ir"] = ratio(
                        row["kfp"]["first_ms"], row["mlshift-kfp"]["first_ms"], 1
                    )
                    row["speedup_warm_kfp_ir"] = ratio(
                        row["kfp"]["warm_ms"], row["mlshift-kfp"]["warm_ms"], 1
                    )
            out["sizes"][str(n)] = row
    return out
