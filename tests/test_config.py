"""mlshift.yaml and target resolution."""

from __future__ import annotations

from pathlib import Path

import pytest

import mlshift
from mlshift._config import load_project, parse_project, resolve_target
from mlshift._registry import parse_target_uri
from mlshift.errors import AdapterNotFound, ConfigError

GOOD = """\
default_target: dev
targets:
  dev: local://
  prod:
    uri: sagemaker://us-east-1
    options: {role_arn: "arn:aws:iam::123456789012:role/x"}
models:
  - name: iris
    path: models/iris.skops
    framework: sklearn
endpoints:
  - name: iris
    variants:
      - {name: blue, model: "iris:1", weight: 80}
      - {name: green, model: "iris:2", weight: 20}
"""


def test_good_file(tmp_path: Path) -> None:
    path = tmp_path / "mlshift.yaml"
    path.write_text(GOOD)
    project = load_project(path)
    assert project.targets["dev"].uri == "local://"
    assert project.targets["prod"].options["role_arn"].endswith(":role/x")
    assert project.models[0].path == str(tmp_path / "models" / "iris.skops")
    assert [v.weight for v in project.endpoints[0].variants] == [80, 20]


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            GOOD.replace("weight: 20", "wieght: 20"),
            r"mlshift.yaml:15: endpoints\[0\]\.variants\[1\]\.wieght: .*unknown field",
        ),
        (
            GOOD.replace("weight: 20", "weight: 30"),
            r"mlshift.yaml:12: endpoints\[0\]: variant weights must sum to 100, got 110",
        ),
        (
            GOOD.replace("framework: sklearn", "framework: keras"),
            r"mlshift.yaml:10: models\[0\]\.framework: .*'sklearn', 'onnx', .*'mlflow' or 'predictor'",
        ),
        (
            GOOD.replace("default_target: dev", "default_target: staging"),
            r"default_target 'staging' is not a defined target \(dev, prod\)",
        ),
        ("endpoints: [\n  {name: x\n", r"mlshift.yaml:\d+: not valid YAML"),
        ("- just\n- a list\n", r"top level must be a mapping"),
        ("version: 2\n", r"unsupported file version 2"),
        (
            "endpoints:\n  - name: a\n    variants: [{name: x, model: 'm:1'}]\n"
            "    rollout:\n      strategy: canary\n      bake: soon\n",
            r"mlshift.yaml:6: endpoints\[0\]\.rollout\.bake: invalid duration 'soon'",
        ),
    ],
)
def test_malformed_file_names_line_and_field(text: str, expected: str) -> None:
    with pytest.raises(ConfigError, match=expected):
        parse_project(text)


def test_missing_file() -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_project("/nonexistent/mlshift.yaml")


def test_target_resolution_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "mlshift.yaml").write_text(GOOD)
    sub = tmp_path / "a" / "b"
    sub.mkdir(parents=True)
    monkeypatch.chdir(sub)  # the file is found by searching upward
    monkeypatch.delenv("MLSHIFT_TARGET", raising=False)
    assert resolve_target().uri == "local://"  # default_target: dev
    assert resolve_target("prod").uri == "sagemaker://us-east-1"
    assert resolve_target("memory://").uri == "memory://"
    monkeypatch.setenv("MLSHIFT_TARGET", "prod")
    assert resolve_target().label == "prod"
    with pytest.raises(
        ConfigError, match=r"unknown target 'qa' \(from argument\); defined targets: dev, prod"
    ):
        resolve_target("qa")


def test_default_is_local_in_dot_mlshift(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("MLSHIFT_TARGET", raising=False)
    with mlshift.connect() as client:
        assert client.target == "local://"
        assert client.adapter.root == tmp_path / ".mlshift"


def test_unknown_scheme_lists_known() -> None:
    with pytest.raises(
        AdapterNotFound, match=r"unknown target scheme 'gcp'.*expected one of .*local, memory, sagemaker"
    ):
        mlshift.connect("gcp://x")


@pytest.mark.parametrize(
    ("scheme", "package"),
    [("sagemaker", "mlshift-sagemaker"), ("vertex", "mlshift-vertex"), ("azureml", "mlshift-azureml")],
)
def test_first_party_adapter_not_installed_says_how(
    scheme: str, package: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlshift._registry as registry

    # Pretend the adapter is not installed, whatever this environment has.
    installed = {k: v for k, v in registry.available_adapters().items() if k != scheme}
    monkeypatch.setattr(registry, "available_adapters", lambda: installed)
    with pytest.raises(AdapterNotFound) as info:
        mlshift.connect(f"{scheme}://somewhere")
    assert f'pip install "mlshift[{scheme}]"' in str(info.value)
    assert package in str(info.value)


def test_uri_parsing() -> None:
    uri = parse_target_uri("local+docker:///tmp/state?x=1")
    assert (uri.scheme, uri.variant, uri.path, uri.query) == ("local", "docker", "/tmp/state", {"x": "1"})
    with pytest.raises(ConfigError, match="not a target URI"):
        parse_target_uri("just-a-name")


def test_local_rejects_options(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="takes no options"):
        mlshift.connect(f"local://{tmp_path}?port=1")
    with pytest.raises(ConfigError, match=r"no 'podman' variant.*local\+docker://"):
        mlshift.connect(f"local+podman://{tmp_path}")
