"""The kit as users meet it: scripts run unchanged from the shell, and the pytest fixture."""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import mlshift
from conftest import ROOT
from mlshift_azureml.testing import FakeAzureML


def test_the_quickstart_runs_unchanged_against_the_fake() -> None:
    command = [
        sys.executable,
        "-m",
        "mlshift_azureml.testing",
        "run",
        str(ROOT / "examples" / "quickstart.py"),
    ]
    command += ["--target", "azureml://SUB/RG/WS", "--requests", "100"]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=600, check=False, env=dict(os.environ), cwd=ROOT
    )
    out = result.stdout
    assert result.returncode == 0, out + result.stderr
    assert "target: azureml://SUB/RG/WS" in out
    assert "predictions [2, 1, 0] (served by iris-v1)" in out
    assert (
        "endpoint iris-quickstart is healthy at https://iris-quickstart.eastus.inference.ml.azure.com/score"
        in out
    )
    split = {line.split()[0]: line.split()[1] for line in out.splitlines() if "%)" in line}
    assert split == {"iris-v1": "80", "iris-v2": "20"}
    assert "deleted endpoint iris-quickstart" in out


def test_the_cli_runs_against_the_fake(iris: dict[str, Any]) -> None:
    command = [
        sys.executable,
        "-m",
        "mlshift_azureml.testing",
        "run",
        "-m",
        "mlshift.cli",
        "models",
        "register",
    ]
    command += ["iris", str(iris["v1"]), "--target", "azureml://SUB/RG/WS"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False, cwd=ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "iris:1" in result.stdout


def test_the_runner_needs_a_script() -> None:
    from mlshift_azureml.testing.__main__ import main

    try:
        main(["run"])
    except SystemExit as exc:
        assert exc.code == 2
    else:  # pragma: no cover - argparse always exits here
        raise AssertionError("run without a script must fail")


def test_the_pytest_fixture_is_installed(fake_azureml: FakeAzureML, iris: dict[str, Any]) -> None:
    with mlshift.connect("azureml://other-sub/rg/ws2") as client:
        version = client.models.register("iris", iris["v1"], framework="sklearn")
    assert version.version == "1"
    assert any(c.method == "PUT" and "/models/iris/versions/1" in c.url for c in fake_azureml.calls)


def test_state_lives_and_dies_with_the_fake(iris: dict[str, Any]) -> None:
    with FakeAzureML(), mlshift.connect("azureml://sub/rg/ws") as client:
        client.models.register("iris", iris["v1"], framework="sklearn")
    with FakeAzureML(), mlshift.connect("azureml://sub/rg/ws") as client:
        assert client.models.list() == []
