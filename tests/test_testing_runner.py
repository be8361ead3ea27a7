"""`run_with_kit`: the `python -m ADAPTER.testing run SCRIPT` command adapters' kits share."""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from mlshift.testing.runner import KitOption, run_with_kit

OPTION = KitOption("--region", "us-east-1", "the fake's region")


def test_the_script_runs_inside_the_kit_with_its_own_argv(tmp_path: Path) -> None:
    seen: list[str] = []

    @contextlib.contextmanager
    def kit(region: str) -> Iterator[None]:
        seen.append(f"enter {region}")
        try:
            yield
        finally:
            seen.append("exit")

    script = tmp_path / "script.py"
    script.write_text("import sys\nprint('ARGV', sys.argv[1:])\nraise SystemExit(int(sys.argv[1]))\n")
    before = sys.argv[:]
    assert (
        run_with_kit("prog", kit, OPTION, ["run", "--region", "eu-west-1", str(script), "3", "-m", "x"]) == 3
    )
    assert seen == ["enter eu-west-1", "exit"]
    assert sys.argv == before  # restored for the caller


def test_a_module_runs_too_and_a_normal_end_is_exit_code_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert (
        run_with_kit("prog", lambda _: contextlib.nullcontext(), OPTION, ["run", "-m", "platform", "--terse"])
        == 0
    )
    assert "Linux" in capsys.readouterr().out or sys.platform != "linux"


def test_run_without_a_script_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        run_with_kit("python -m mlshift_x.testing", lambda _: contextlib.nullcontext(), OPTION, ["run"])
    assert caught.value.code == 2
    assert "run needs a script path or -m MODULE" in capsys.readouterr().err
