"""The serving image's build inputs and in-container entry point, without a Docker engine."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

import mlshift
from mlshift.errors import ConfigError, DockerUnavailable
from mlshift.image import (
    build_context,
    default_image,
    docker_client,
    model_path,
    parse_frameworks,
    serve_arguments,
)


def test_frameworks_default_to_the_small_set_and_unknown_ones_are_named() -> None:
    assert parse_frameworks(None) == ("sklearn",)
    assert parse_frameworks("onnx, sklearn,onnx") == ("onnx", "sklearn")
    with pytest.raises(ConfigError, match="unknown framework 'torch'") as info:
        parse_frameworks("sklearn,torch")
    assert info.value.field == "--frameworks"
    assert "onnx, sklearn" in (info.value.hint or "")


def test_image_names_carry_the_version_and_any_extra_frameworks() -> None:
    assert default_image() == f"mlshift-serving:{mlshift.__version__}"
    assert default_image(("sklearn", "onnx")) == f"mlshift-serving:{mlshift.__version__}-onnx-sklearn"


@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, "/opt/ml/model"),  # SageMaker
        ({"AIP_STORAGE_URI": "file:///mnt/models"}, "/mnt/models"),  # Vertex AI, mounted
        (
            {"AZUREML_MODEL_DIR": "/var/azureml-app/azureml-models/iris/1"},
            "/var/azureml-app/azureml-models/iris/1",
        ),
        (
            {"AZUREML_MODEL_DIR": "/azure", "MLSHIFT_ARTIFACT": "/opt/ml/model/m.skops"},
            "/opt/ml/model/m.skops",
        ),
    ],
)
def test_each_platform_names_its_model(environ: dict[str, str], expected: str) -> None:
    assert model_path(environ) == expected


def test_a_mounted_folder_with_one_model_file_stands_for_it(tmp_path: Path) -> None:
    (tmp_path / "iris").mkdir()
    (tmp_path / "iris" / "model.skops").write_bytes(b"x")
    assert model_path({"AZUREML_MODEL_DIR": str(tmp_path)}) == str(tmp_path / "iris" / "model.skops")
    (tmp_path / "other.onnx").write_bytes(b"x")
    assert model_path({"AZUREML_MODEL_DIR": str(tmp_path)}) == str(tmp_path)  # ambiguous: left to the server


def test_models_in_cloud_storage_are_refused_with_the_fix() -> None:
    with pytest.raises(ConfigError, match="does not download models from Cloud Storage") as info:
        model_path({"AIP_STORAGE_URI": "gs://bucket/model"})
    assert info.value.field == "AIP_STORAGE_URI"


def test_serve_arguments_follow_the_environment() -> None:
    args = serve_arguments(
        {
            "MLSHIFT_SERVE_HOST": "0.0.0.0",
            "SAGEMAKER_BIND_TO_PORT": "9000",
            "MLSHIFT_FRAMEWORK": "sklearn",
            "MLSHIFT_MODEL_DIGEST": "sha256:" + "0" * 64,
            "MLSHIFT_VARIANT": "blue",
        }
    )
    assert args == [
        "--artifact", "/opt/ml/model", "--host", "0.0.0.0", "--port", "9000",
        "--framework", "sklearn", "--digest", "sha256:" + "0" * 64, "--variant", "blue",
    ]  # fmt: skip
    # Vertex AI's port is left to the server, which reads AIP_HTTP_PORT itself.
    assert "--port" not in serve_arguments({"AIP_HTTP_PORT": "7080"})


def test_build_context_splits_mlshift_from_its_dependencies(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    for name in ("mlshift-0.1.0-py3-none-any.whl", "numpy-2.0-cp311-cp311-linux_x86_64.whl"):
        (wheels / name).write_bytes(b"PK")
    context = build_context(tmp_path / "context", wheels=wheels, say=lambda _: None)
    assert (context / "Dockerfile").is_file() and (context / "serve").stat().st_mode & 0o111
    assert list((context / "wheels" / "extra").iterdir()) == []  # none asked for
    assert [p.name for p in (context / "wheels" / "mlshift").iterdir()] == ["mlshift-0.1.0-py3-none-any.whl"]
    assert [p.name for p in (context / "wheels" / "deps").iterdir()] == [
        "numpy-2.0-cp311-cp311-linux_x86_64.whl"
    ]


def test_a_wheels_folder_without_mlshift_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"no mlshift-\*\.whl") as info:
        build_context(tmp_path / "context", wheels=tmp_path, say=lambda _: None)
    assert info.value.field == "--wheels"


def test_no_daemon_is_a_named_error_that_says_how_to_start_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    pytest.importorskip("docker")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nothing.sock")
    with pytest.raises(DockerUnavailable, match=r"no Docker daemon answers at unix://") as info:
        docker_client()
    assert "start Docker" in (info.value.hint or "")
    assert "DOCKER_HOST" in (info.value.hint or "")


def test_cli_without_a_daemon_fails_before_building_anything(tmp_path: Path) -> None:
    pytest.importorskip("docker")
    env = {"DOCKER_HOST": f"unix://{tmp_path}/nothing.sock", "PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    import os

    env["PYTHONPATH"] = os.pathsep.join(sys.path)
    result = subprocess.run(
        [sys.executable, "-c", "from mlshift.cli import main; main()", "image", "build", "--context", "ctx"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env=env,
        timeout=120,
        check=False,
    )
    assert result.returncode == 1
    assert "no Docker daemon answers" in result.stderr and "hint: start Docker" in result.stderr
    assert not (tmp_path / "ctx").exists()  # nothing was written


def test_the_docker_runtime_picks_the_image_that_has_the_models_framework() -> None:
    from mlshift.local import DockerRuntime, ReplicaRuntime

    runtime = DockerRuntime()  # no engine is contacted until a replica starts
    assert isinstance(runtime, ReplicaRuntime)
    assert runtime.image_for("sklearn") == runtime.image_for("predictor") == default_image()
    assert runtime.image_for("onnx") == default_image(("onnx", "sklearn"))
    assert DockerRuntime("my/serving:1").image_for("onnx") == "my/serving:1"


def test_local_docker_is_a_variant_of_the_local_target_and_others_are_refused(tmp_path: Path) -> None:
    from mlshift.local import DockerRuntime, LocalAdapter

    client = mlshift.connect(f"local+docker://{tmp_path}/state")
    adapter = client.adapter
    assert isinstance(adapter, LocalAdapter)
    assert isinstance(adapter.endpoints.runtime, DockerRuntime)
    client.close()
    with pytest.raises(ConfigError, match=r"no 'podman' variant.*local\+docker://"):
        mlshift.connect(f"local+podman://{tmp_path}/state")


LISTED = """
import json, sys
import sklearn.utils
from mlshift.image._serve import listed_estimators

real = sklearn.utils.all_estimators
used = listed_estimators(sys.argv[1])
imported = "skops.io" in sys.modules
if used:
    from skops.io._trusted_types import SKLEARN_ESTIMATOR_TYPE_NAMES as listed
    # What skops would have computed by importing every scikit-learn module itself.
    expected = [f"{c.__module__}.{c.__name__}" for _, c in real() if c.__module__.startswith("sklearn.")]
    assert listed == expected, (len(listed), len(expected))
assert sklearn.utils.all_estimators is real  # put back for everyone else
print(json.dumps({"used": used, "imported": imported}))
"""


@pytest.mark.parametrize("version", ["same", "other"])
def test_skops_trusts_the_same_estimators_when_they_are_listed_at_build(tmp_path: Path, version: str) -> None:
    # The list as the Dockerfile writes it (its python -c), for this machine's scikit-learn.
    listing = tmp_path / "sklearn-estimators.json"
    made = subprocess.run(
        [sys.executable, "-W", "ignore", "-c",
         "import json, sklearn; from sklearn.utils import all_estimators; "
         "print(json.dumps({'sklearn': sklearn.__version__, "
         "'estimators': [[n, c.__module__, c.__name__] for n, c in all_estimators()]}))"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    data = json.loads(made.stdout)
    if version == "other":
        data["sklearn"] = "0.0.1"
    listing.write_text(json.dumps(data))
    dockerfile = (Path(mlshift.__file__).parent / "image" / "Dockerfile").read_text()
    assert "[[n, c.__module__, c.__name__] for n, c in all_estimators()]" in dockerfile  # the same list

    proc = subprocess.run(
        [sys.executable, "-c", LISTED, str(listing)], capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    # Another scikit-learn than the list was made for: nothing is done, skops lists them itself.
    assert json.loads(proc.stdout) == {"used": version == "same", "imported": version == "same"}


def test_extra_packages_are_names_with_versions_and_nothing_else() -> None:
    from mlshift.image import parse_extra_packages

    assert parse_extra_packages(["xgboost==2.1.1 lightgbm>=4,<5", "six", "six"]) == (
        "xgboost==2.1.1",
        "lightgbm>=4,<5",
        "six",
    )
    assert parse_extra_packages("mlflow-skinny[extras]~=2.9") == ("mlflow-skinny[extras]~=2.9",)
    for bad in (
        "--index-url=https://evil.example/simple",
        "git+https://x/y.git",
        "./pkg",
        "a;b",
        "x==1 @ http",
    ):
        with pytest.raises(ConfigError, match="not a package name") as info:
            parse_extra_packages(bad)
        assert info.value.field == "--extra-packages"


def test_extra_packages_need_a_tag_of_their_own_and_no_wheels_folder(tmp_path: Path) -> None:
    from mlshift.image import build_image

    # Refused before the engine is contacted: the client would fail (no daemon is needed).
    with pytest.raises(ConfigError, match="needs a name of its own") as info:
        build_image(extra_packages="six", client=object())
    assert info.value.field == "--tag" and "--tag" in (info.value.hint or "")
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "mlshift-0.1.0-py3-none-any.whl").write_bytes(b"PK")
    with pytest.raises(ConfigError, match="do not go together"):
        build_context(tmp_path / "context", wheels=wheels, extra_packages=("six",), say=lambda _: None)
    assert not (tmp_path / "context").exists()  # nothing written


def _wheel(path: Path, files: dict[str, bytes], when: tuple[int, int, int, int, int, int]) -> Path:
    import zipfile

    with zipfile.ZipFile(path, "w") as archive:
        for name, data in files.items():
            archive.writestr(zipfile.ZipInfo(name, date_time=when), data)
    return path


def test_an_images_inputs_digest_changes_with_each_input_and_only_then(tmp_path: Path) -> None:
    from mlshift.image import INPUTS_LABEL, image_inputs

    first = image_inputs()
    assert first == image_inputs()  # nothing changed: the same labels
    assert set(first) == {INPUTS_LABEL} | {
        f"{INPUTS_LABEL}.{p}" for p in ("code", "files", "arguments", "extra")
    }  # no client: the base image's ID is not known, so it is left out
    onnx = image_inputs("sklearn,onnx")
    assert onnx[f"{INPUTS_LABEL}.arguments"] != first[f"{INPUTS_LABEL}.arguments"]
    assert onnx[f"{INPUTS_LABEL}.code"] == first[f"{INPUTS_LABEL}.code"]
    assert onnx[INPUTS_LABEL] != first[INPUTS_LABEL]
    assert image_inputs(extra_packages="six")[INPUTS_LABEL] != first[INPUTS_LABEL]

    # A wheel counts by what it installs: built again at another time, it is the same input.
    (tmp_path / "a").mkdir()
    old = _wheel(tmp_path / "a" / "x-1-py3-none-any.whl", {"x.py": b"A = 1\n"}, (2020, 1, 1, 0, 0, 0))
    again = _wheel(tmp_path / "x-1-py3-none-any.whl", {"x.py": b"A = 1\n"}, (2024, 6, 1, 12, 0, 0))
    assert image_inputs(extra_wheels=[old]) == image_inputs(extra_wheels=[again])
    changed = _wheel(tmp_path / "b-x-1-py3-none-any.whl", {"x.py": b"A = 2\n"}, (2020, 1, 1, 0, 0, 0))
    assert (
        image_inputs(extra_wheels=[changed])[f"{INPUTS_LABEL}.extra"]
        != image_inputs(extra_wheels=[old])[f"{INPUTS_LABEL}.extra"]
    )


def test_the_code_part_follows_the_running_mlshift(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import shutil

    from mlshift.image import INPUTS_LABEL, image_inputs

    # A copy of mlshift's package: its digest is that of the running code's files.
    copy = tmp_path / "src" / "mlshift"
    shutil.copytree(Path(mlshift.__file__).parent, copy, ignore=shutil.ignore_patterns("__pycache__"))
    monkeypatch.setattr(mlshift, "__file__", str(copy / "__init__.py"))
    before = image_inputs()[f"{INPUTS_LABEL}.code"]
    (copy / "__pycache__").mkdir(exist_ok=True)
    (copy / "__pycache__" / "x.cpython-311.pyc").write_bytes(b"compiled")  # bytecode is no input
    assert image_inputs()[f"{INPUTS_LABEL}.code"] == before
    (copy / "serving" / "_app.py").write_text((copy / "serving" / "_app.py").read_text() + "\n# changed\n")
    assert image_inputs()[f"{INPUTS_LABEL}.code"] != before
