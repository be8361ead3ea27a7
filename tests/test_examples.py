"""Every example runs as documented; a broken example is a failing test."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_quickstart_on_the_local_target(tmp_path: Path, state_dir: Path) -> None:
    env = {**os.environ, "MLSHIFT_TARGET": f"local://{state_dir}"}
    result = subprocess.run(
        [sys.executable, str(ROOT / "examples" / "quickstart.py"), "--requests", "200"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    assert "predictions [" in out and "served by iris-v1" in out
    split = {line.split()[0]: line.split()[1] for line in out.splitlines() if "%)" in line}
    assert split == {"iris-v1": "160", "iris-v2": "40"}
    assert "deleted endpoint iris-quickstart" in out
    # state_dir's fixture fails the test if a router or model server is still running


def test_quickstart_on_the_memory_target() -> None:
    sys.path.insert(0, str(ROOT / "examples"))
    try:
        import quickstart
    finally:
        sys.path.pop(0)
    seen = quickstart.main("memory://", requests=100)
    assert seen == {"iris-v1": 80, "iris-v2": 20}


def test_example_project_file_is_valid() -> None:
    from mlshift._config import load_project

    project = load_project(ROOT / "examples" / "mlshift.yaml")
    assert project.endpoints and project.targets


#: Each file in examples/ and the test that runs it (a new example needs a test to be listed here).
EXAMPLE_TESTS = {
    "mlshift.yaml": "tests/test_examples.py",
    "quickstart.py": "tests/test_examples.py",
    "train_gate_deploy.py": "tests/test_pipelines_example.py",
    "monitor_retrain.py": "tests/test_monitor_loop.py",
    "ci/mlshift.yml": "tests/test_ci_recipe.py",
    "ci/mlshift.yaml": "tests/test_ci_recipe.py",
    "notebooks/deploy_from_experiment.ipynb": "tests/test_notebooks.py",
}


def test_every_example_has_a_test() -> None:
    examples = ROOT / "examples"
    found = {
        p.relative_to(examples).as_posix()
        for p in examples.rglob("*")
        if p.is_file() and "__pycache__" not in p.parts and ".ipynb_checkpoints" not in p.parts
    }
    assert found == set(EXAMPLE_TESTS), "list each example with the test that runs it"
    for example, test in EXAMPLE_TESTS.items():
        # The test names the example's file, so it runs that one and not a copy.
        assert Path(example).name in (ROOT / test).read_text(), f"{test} does not use {example}"
