"""``--output json`` on every command: each one takes it, and what each prints for scripts."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import typer
from typer.testing import CliRunner

from mlshift.cli import app

#: The one command where -o is not --output: `pipelines compile -o FILE` writes a file (it came
#: first); it takes --output in long form only.
SHORT_O_IS_OUT = {("pipelines", "compile")}


def _commands(group: Any, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], Any]]:
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            yield from _commands(command, (*path, name))
        else:
            yield (*path, name), command


def _all_commands() -> list[tuple[tuple[str, ...], Any]]:
    return sorted(_commands(typer.main.get_command(app)), key=lambda item: item[0])


def test_the_walk_finds_every_command_group() -> None:
    found = {path for path, _ in _all_commands()}
    # Guards the walk itself: if it stopped descending into groups, the test below would pass
    # on the top-level commands alone.
    assert {("models", "alias"), ("endpoints", "delete"), ("pipelines", "logs"), ("image", "base")} <= found
    assert {("serve",), ("schema",), ("targets",), ("plan",), ("apply",)} <= found
    assert len(found) >= 25


@pytest.mark.parametrize("path", [p for p, _ in _all_commands()], ids=lambda p: " ".join(p))
def test_every_command_takes_output_json(path: tuple[str, ...]) -> None:
    command = dict(_all_commands())[path]
    options = {opt: param for param in command.params for opt in getattr(param, "opts", [])}
    assert "--output" in options, f"`mlshift {' '.join(path)}` has no --output option"
    if path not in SHORT_O_IS_OUT:
        assert options.get("-o") is options["--output"], f"`mlshift {' '.join(path)} -o` is not --output"
    # What a user sees: click refuses an unknown option before it looks at --help.
    result = CliRunner().invoke(app, [*path, "--output", "json", "--help"])
    assert result.exit_code == 0, result.output
    unknown = CliRunner().invoke(app, [*path, "--no-such-option", "json", "--help"])
    assert unknown.exit_code == 2  # the same check fails for an option the command lacks


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

    def json(self, *args: str, code: int = 0) -> Any:
        return json.loads(self(*args, "-o", "json", code=code).stdout)


@pytest.fixture
def cli(tmp_path: Path, state_dir: Path) -> CLI:
    return CLI(tmp_path, state_dir)


def test_models_alias_unalias_delete_as_json(cli: CLI, iris: dict[str, Any]) -> None:
    cli("models", "register", "iris", str(iris["v1"]))
    cli("models", "register", "iris", str(iris["v2"]))
    moved = cli.json("models", "alias", "iris", "champion", "1")
    assert (moved["name"], moved["version"], moved["aliases"]) == ("iris", "1", ["champion"])
    assert cli.json("models", "unalias", "iris", "champion") == {
        "removed": "iris@champion",
        "name": "iris",
        "alias": "champion",
    }
    assert cli.json("models", "show", "iris:1")["aliases"] == []
    assert cli.json("models", "delete", "iris:2") == {"deleted": "iris:2"}
    assert [v["version"] for v in cli.json("models", "list")] == ["1"]
    # A failure is a JSON error on stdout too, as in every other command.
    error = cli.json("models", "delete", "iris:9", code=1)
    assert error["error"]["code"] == "not_found"


def test_endpoints_delete_as_json(cli: CLI, iris: dict[str, Any]) -> None:
    cli("models", "register", "iris", str(iris["v1"]))
    cli("deploy", "iris-json", "--model", "iris:1")
    deleted = cli.json("endpoints", "delete", "iris-json", "--yes")
    assert deleted["deleted"] == "iris-json"
    assert [v["model"] for v in deleted["endpoint"]["variants"]] == ["iris:1"]
    assert cli.json("endpoints", "list") == []


def test_schema_as_json(cli: CLI, tmp_path: Path) -> None:
    schema = cli.json("schema")
    assert schema["title"] == "mlshift.yaml" and "endpoints" in schema["properties"]
    assert json.loads(cli("schema", "-o", "table").stdout) == schema  # the document either way
    written = cli.json("schema", "--out", str(tmp_path / "s.json"))
    assert written["wrote"] == str(tmp_path / "s.json")
    assert json.loads((tmp_path / "s.json").read_text()) == schema


def test_serve_prints_where_it_listens_as_a_json_line(cli: CLI, iris: dict[str, Any]) -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "mlshift", "serve", str(iris["v1"]), "--port", "0", "-o", "json"],
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # readline() blocks until the line comes or the process ends; a watchdog ends a hung one.
    watchdog = threading.Timer(120, proc.kill)
    watchdog.start()
    try:
        line = proc.stdout.readline() if proc.stdout else ""
        assert line, proc.stderr.read() if proc.stderr else ""
        ready = json.loads(line)
        assert ready["event"] == "listening" and ready["host"] == "127.0.0.1"
        assert ready["port"] > 0 and ready["url"] == f"http://127.0.0.1:{ready['port']}"
        with httpx.Client(trust_env=False) as http:
            resp = http.post(f"{ready['url']}/invocations", json={"instances": iris["rows"]})
        assert resp.json()["predictions"] == iris["expected_v1"]
    finally:
        watchdog.cancel()
        proc.terminate()
        proc.wait(30)
    assert proc.stdout is not None and proc.stdout.read() == ""  # that one line, nothing else


PIPELINE = """
from mlshift.pipelines import pipeline, step


@step
def hello(name: str = "world") -> str:
    print(f"hello {name}")
    return name


@pipeline
def greet(name: str = "world") -> None:
    hello(name=name)
"""


def test_pipelines_logs_and_compile_as_json(cli: CLI, tmp_path: Path) -> None:
    (tmp_path / "greet.py").write_text(PIPELINE)
    run = cli.json("pipelines", "run", "greet.py:greet")
    assert run["status"] == "succeeded"
    logs = cli.json("pipelines", "logs", run["id"], "hello")
    assert logs["run_id"] == run["id"] and logs["step"] == "hello" and "hello world" in logs["log"]
    assert "hello world" in cli("pipelines", "logs", run["id"], "hello").stdout

    ir = json.loads(cli("pipelines", "compile", "greet.py:greet").stdout)
    assert json.loads(cli("pipelines", "compile", "greet.py:greet", "--output", "json").stdout) == ir
    out = tmp_path / "ir.json"
    written = json.loads(
        cli("pipelines", "compile", "greet.py:greet", "-o", str(out), "--output", "json").stdout
    )
    assert written["wrote"] == str(out) and written["pipeline"] == "greet" and written["steps"] == 1
    assert json.loads(out.read_text()) == ir
    kfp = cli("pipelines", "compile", "greet.py:greet", "--format", "kfp", "--output", "json")
    assert json.loads(kfp.stdout)["pipelineInfo"]["name"]  # JSON, not YAML
    # -o is --out here: `-o json` is refused rather than writing a file called json.
    refused = cli("pipelines", "compile", "greet.py:greet", "-o", "json", code=1)
    assert "--output json" in refused.stderr and not (tmp_path / "json").exists()


def test_image_commands_as_json(monkeypatch: pytest.MonkeyPatch) -> None:
    # Building needs Docker (tests/test_image.py); here only what the command prints.
    import mlshift.image

    monkeypatch.setattr(mlshift.image, "build_image", lambda tag, **kw: "mlshift-serving:test")
    monkeypatch.setattr(mlshift.image, "make_base_image", lambda name, **kw: name)
    built = CliRunner().invoke(app, ["image", "build", "-o", "json"])
    assert built.exit_code == 0, built.output
    assert json.loads(built.stdout) == {"image": "mlshift-serving:test"}
    base = CliRunner().invoke(app, ["image", "base", "--name", "b:1", "-o", "json"])
    assert json.loads(base.stdout) == {"image": "b:1"}
    assert CliRunner().invoke(app, ["image", "base", "--name", "b:1"]).stdout == "b:1\n"
