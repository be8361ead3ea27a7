"""Start-up: `import mlshift` and `mlshift --help` vs importing the SDKs users would use instead.

Each import is timed inside a fresh interpreter, around the import statement itself (so the
interpreter's own start is not counted, and everything the statement pulls in is). A peer
may live in its own venv (mlflow, sagemaker): it is then timed with that venv's interpreter.
One untimed pass first compiles bytecode and warms the page cache for everyone; then the
passes alternate between mlshift and its peers so that machine noise hits all alike.
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

from common import bench_env, median, ratio

#: label -> (statement, extra environment)
IMPORTS: dict[str, tuple[str, dict[str, str]]] = {
    "mlshift": ("import mlshift", {}),
    "google-cloud-aiplatform": ("from google.cloud import aiplatform", {}),
    "azure-ai-ml": ("from azure.ai.ml import MLClient", {}),
    # sagemaker raises NoRegionError at import time when no region is configured.
    "sagemaker (mlops)": ("import sagemaker.mlops.workflow", {"AWS_DEFAULT_REGION": "us-east-1"}),
    "mlflow": ("import mlflow", {}),
}

_TIMER = "import time as _t\n_s = _t.perf_counter()\n{statement}\nprint('IMPORT_S', _t.perf_counter() - _s)\n"


def _import_ms(python: str, statement: str, env: dict[str, str]) -> float | None:
    proc = subprocess.run(
        [python, "-c", _TIMER.format(statement=statement)],
        capture_output=True,
        text=True,
        env=bench_env(**env),
        timeout=120,
        check=False,
    )
    for line in proc.stdout.splitlines():
        if line.startswith("IMPORT_S "):
            return float(line.split()[1]) * 1000
    return None


def _wall_ms(cmd: list[str]) -> float | None:
    start = time.perf_counter()
    proc = subprocess.run(cmd, capture_output=True, env=bench_env(), check=False, timeout=120)
    elapsed = (time.perf_counter() - start) * 1000
    return elapsed if proc.returncode == 0 else None


def _cli() -> list[str]:
    script = Path(sys.executable).parent / "mlshift"
    return [str(script)] if script.exists() else [sys.executable, "-m", "mlshift"]


def _version(python: str, label: str) -> str | None:
    dist = {"sagemaker (mlops)": "sagemaker"}.get(label, label)
    proc = subprocess.run(
        [python, "-c", f"import importlib.metadata as m; print(m.version({dist!r}))"],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        return None
    return proc.stdout.strip() or None


def bench_startup(repeat: int, pythons: dict[str, str] | None = None) -> dict[str, Any]:
    """Import times of mlshift and its peers, `mlshift --help` and a first use, medians.

    Args:
        repeat: Timed passes (after one untimed warm-up pass).
        pythons: label -> interpreter for peers installed in their own venv (``mlflow``,
            ``sagemaker``); the rest are imported with this interpreter.
    """
    pythons = pythons or {}
    where = {label: pythons.get(label.split(" ")[0], sys.executable) for label in IMPORTS}
    samples: dict[str, list[float | None]] = {label: [] for label in IMPORTS}
    help_ms: list[float | None] = []
    python_ms: list[float | None] = []
    first_use_ms: list[float | None] = []
    first_use = [sys.executable, "-c", "import mlshift; mlshift.connect('memory://').endpoints.list()"]
    for i in range(repeat + 1):
        timed = i > 0  # pass 0 compiles bytecode and warms caches
        for label, (statement, env) in IMPORTS.items():
            value = _import_ms(where[label], statement, env)
            if timed:
                samples[label].append(value)
        for cmd, into in (
            ([*_cli(), "--help"], help_ms),
            ([sys.executable, "-c", "pass"], python_ms),
            (first_use, first_use_ms),
        ):
            value = _wall_ms(cmd)
            if timed:
                into.append(value)
    rows = {}
    for label, values in samples.items():
        measured = [v for v in values if v is not None]
        rows[label] = {
            "median_ms": median(measured),
            "runs": len(measured),
            "version": _version(where[label], label) if measured else None,
            "venv": "own venv" if where[label] != sys.executable else "bench venv",
        }
    ours = rows["mlshift"]["median_ms"]
    return {
        "imports": rows,
        "cli_help_ms": median(help_ms),
        "python_startup_ms": median(python_ms),
        "first_use_ms": median(first_use_ms),
        "import_ratio_vs_aiplatform": ratio(rows["google-cloud-aiplatform"]["median_ms"], ours, 1),
    }
