"""The command line as a user drives it: real subprocesses, exit codes, JSON output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from importlib.util import find_spec
from pathlib import Path
from typing import Any

import httpx
import pytest


class CLI:
    def __init__(self, cwd: Path, state: Path) -> None:
        self.cwd = cwd
        self.env = {**os.environ, "MLSHIFT_TARGET": f"local://{state}", "NO_COLOR": "1", "COLUMNS": "200"}

    def __call__(
        self, *args: str, code: int = 0, stdin: str | None = None
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [sys.executable, "-m", "mlshift", *args],
            cwd=self.cwd,
            env=self.env,
            capture_output=True,
            text=True,
            input=stdin,
            timeout=180,
            check=False,
        )
        assert result.returncode == code, f"exit {result.returncode}\n{result.stdout}\n{result.stderr}"
        assert "Traceback" not in result.stderr, result.stderr
        return result

    def json(self, *args: str) -> Any:
        return json.loads(self(*args, "--output", "json").stdout)


@pytest.fixture
def cli(tmp_path: Path, state_dir: Path) -> Any:
    runner = CLI(tmp_path, state_dir)
    yield runner
    for endpoint in json.loads(runner("endpoints", "list", "-o", "json").stdout):
        runner("endpoints", "delete", endpoint["name"], "--yes")


def test_version_and_help(cli: CLI) -> None:
    assert cli("--version").stdout.startswith("mlshift ")
    out = cli("--help").stdout
    for command in ("deploy", "predict", "plan", "apply", "serve", "models", "endpoints"):
        assert command in out
    assert "--traffic" in cli("deploy", "--help").stdout


def test_register_list_show_alias(cli: CLI, iris: dict[str, Any]) -> None:
    first = cli.json(
        "models",
        "register",
        "iris",
        str(iris["v1"]),
        "--framework",
        "sklearn",
        "--metric",
        "accuracy=0.97",
        "--tag",
        "team=ml",
    )
    assert (first["version"], first["metrics"], first["tags"]) == ("1", {"accuracy": 0.97}, {"team": "ml"})
    cli("models", "register", "iris", str(iris["v2"]))  # framework from the extension
    assert [v["version"] for v in cli.json("models", "list", "iris")] == ["1", "2"]
    cli("models", "alias", "iris", "champion", "2")
    assert cli.json("models", "show", "iris@champion")["version"] == "2"
    assert "iris" in cli("models", "list").stdout


def test_provider_options_are_given_as_target_key_value(
    cli: CLI, iris: dict[str, Any], fixed_port: int
) -> None:
    cli("models", "register", "iris", str(iris["v1"]))
    state = cli.json("deploy", "iris", "--model", "iris:1", "--option", f"local.port={fixed_port}")
    assert state["url"] == f"http://127.0.0.1:{fixed_port}/invocations"
    bad = cli("deploy", "iris", "--model", "iris:1", "--option", "port=8081", code=1)
    assert "--option 'port=8081' is not TARGET.KEY=VALUE" in bad.stderr
    unknown = cli("deploy", "iris", "--model", "iris:1", "--option", "local.prot=8081", code=1)
    assert "provider_options.local.prot" in unknown.stderr  # checked by the target, before any change


def test_deploy_show_predict(cli: CLI, iris: dict[str, Any]) -> None:
    cli("models", "register", "iris", str(iris["v1"]))
    cli("models", "register", "iris", str(iris["v2"]))
    cli("deploy", "iris", "--model", "iris:1")
    cli("deploy", "iris", "--model", "iris:2", "--traffic", "20")
    shown = cli.json("endpoints", "show", "iris")
    assert shown["invocation_url"].startswith("http://127.0.0.1:")
    assert [(v["model"], v["weight"]) for v in shown["variants"]] == [("iris:1", 80), ("iris:2", 20)]
    out = json.loads(
        cli(
            "predict",
            "iris",
            "--data",
            json.dumps(iris["rows"]),
            "--variant",
            "iris-v1",
            "--request-id",
            "order-7",
        ).stdout
    )
    assert out == {"predictions": iris["expected_v1"], "variant": "iris-v1", "request_id": "order-7"}
    rows_file = Path(cli.cwd) / "rows.json"
    rows_file.write_text(json.dumps({"instances": iris["rows"]}))
    answer = json.loads(cli("predict", "iris", "--data", f"@{rows_file}").stdout)
    assert answer["predictions"] in (iris["expected_v1"], iris["expected_v2"])
    assert len(answer["request_id"]) == 24  # one was made for it
    with httpx.Client(trust_env=False) as http:
        assert http.post(shown["invocation_url"], json={"instances": iris["rows"]}).status_code == 200


def test_user_mistakes_are_one_line_errors(cli: CLI, iris: dict[str, Any]) -> None:
    cli("models", "register", "iris", str(iris["v1"]))
    cli("deploy", "iris", "--model", "iris:1")
    cases = [
        (("predict", "iris", "--data", "[[1, 2"), "not valid JSON"),
        (("predict", "iris", "--data", "[[1, 2]]"), "the model takes 4"),
        (("predict", "nope", "--data", "[[1, 2, 3, 4]]"), "endpoint 'nope' does not exist"),
        (("deploy", "iris", "--model", "iris:9"), "has no version 9"),
        (("deploy", "iris", "--model", "iris:1", "--size", "huge"), "size"),
        (("models", "register", "x", "/no/such/file.skops"), "does not exist"),
        (
            ("models", "register", "x", str(iris["v1"]), "--framework", "keras"),
            "'lightgbm', 'mlflow' or 'predictor'",
        ),
        (("models", "show", "iris", "--target", "gcp://x"), "unknown target scheme 'gcp'"),
        (
            ("models", "list", "--target", "vertex://p/l"),
            # Not installed: what to install; installed: what is wrong with the URI.
            'pip install "mlshift[vertex]"'
            if find_spec("mlshift_vertex") is None
            else "not a Google Cloud project",
        ),
        (("models", "register", "x", str(iris["v1"]), "--metric", "acc=high"), "is not a number"),
    ]
    for args, message in cases:
        result = cli(*args, code=1)
        assert message in result.stderr, (args, result.stderr)
    assert cli("predict", "iris", "--data", json.dumps(iris["rows"])).returncode == 0  # still serving


def test_json_errors_for_scripts(cli: CLI) -> None:
    result = cli("models", "show", "ghost", "-o", "json", code=1)
    assert json.loads(result.stdout)["error"]["code"] == "not_found"


def test_bad_output_flag_is_a_usage_error(cli: CLI) -> None:
    result = cli("models", "list", "--output", "xml", code=2)
    assert "expected one of json, table" in result.stderr


YAML = """\
endpoints:
  - name: iris
    variants:
      - {{name: blue, model: "iris:1", weight: {blue}}}
      - {{name: green, model: "iris:2", weight: {green}}}
"""


def test_plan_apply_converge(cli: CLI, iris: dict[str, Any]) -> None:
    cli("models", "register", "iris", str(iris["v1"]))
    cli("models", "register", "iris", str(iris["v2"]))
    spec = Path(cli.cwd) / "mlshift.yaml"
    spec.write_text(YAML.format(blue=80, green=20))
    first = cli("plan", "--detailed-exitcode", code=2)
    assert "create endpoint iris (blue=iris:1 80%, green=iris:2 20%)" in first.stdout
    refused = cli("apply", code=1)  # no TTY, no --yes
    assert "--yes" in refused.stderr
    cli("apply", "--yes")
    unchanged = cli("plan", "--detailed-exitcode")
    assert "No changes" in unchanged.stdout
    spec.write_text(YAML.format(blue=50, green=50))
    edited = cli("plan", "--detailed-exitcode", code=2)
    assert "1 change(s)" in edited.stdout
    assert "traffic: blue 80% -> 50%, green 20% -> 50%" in edited.stdout
    as_json = json.loads(cli("plan", "-o", "json").stdout)
    assert [a["kind"] for a in as_json["actions"]] == ["set_weights"]
    cli("apply", "--yes")
    assert cli("plan", "--detailed-exitcode").returncode == 0
    assert {v["name"]: v["weight"] for v in cli.json("endpoints", "show", "iris")["variants"]} == {
        "blue": 50,
        "green": 50,
    }


def test_apply_registers_models_from_the_file_once(cli: CLI, iris: dict[str, Any]) -> None:
    spec = Path(cli.cwd) / "mlshift.yaml"
    spec.write_text(
        f"models:\n  - {{name: iris, path: {iris['v1']}, framework: sklearn}}\n"
        "endpoints:\n  - {name: iris, variants: [{name: main, model: iris}]}\n"
    )
    cli("apply", "--yes")
    assert cli("plan", "--detailed-exitcode").returncode == 0
    assert [v["version"] for v in cli.json("models", "list", "iris")] == ["1"]


def test_malformed_yaml_points_at_line_and_field(cli: CLI) -> None:
    spec = Path(cli.cwd) / "mlshift.yaml"
    spec.write_text(YAML.format(blue=80, green=30))
    result = cli("plan", code=1)
    assert "mlshift.yaml:2: endpoints[0]: variant weights must sum to 100, got 110" in result.stderr
    spec.write_text(YAML.format(blue=80, green=20).replace("weight: 20", "wieght: 20"))
    result = cli("apply", "--yes", code=1)
    assert "mlshift.yaml:5: endpoints[0].variants[1].wieght" in result.stderr
    assert cli.json("endpoints", "list") == []


def test_schema(cli: CLI, tmp_path: Path) -> None:
    schema = json.loads(cli("schema").stdout)
    assert schema["title"] == "mlshift.yaml" and "endpoints" in schema["properties"]
    cli("schema", "--out", str(tmp_path / "schema.json"))
    assert json.loads((tmp_path / "schema.json").read_text()) == schema


def test_serve_in_the_foreground(cli: CLI, iris: dict[str, Any], tmp_path: Path) -> None:
    port_file = tmp_path / "port"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlshift",
            "serve",
            str(iris["v1"]),
            "--port",
            "0",
            "--port-file",
            str(port_file),
        ],
        env=cli.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 300  # bounds a hang only: Python starts slowly on a loaded machine
        while not port_file.exists():  # written once the server answers on the port it bound
            assert proc.poll() is None and time.monotonic() < deadline
            time.sleep(0.05)
        port = int(port_file.read_text())
        with httpx.Client(trust_env=False) as http:
            assert http.get(f"http://127.0.0.1:{port}/ping").status_code == 200
            resp = http.post(f"http://127.0.0.1:{port}/invocations", json={"instances": iris["rows"]})
            assert resp.json()["predictions"] == iris["expected_v1"]
    finally:
        proc.terminate()
        proc.wait(30)
