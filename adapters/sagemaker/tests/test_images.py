"""Serving images: an explicit URI, the mlshift image in ECR (checked at plan time, pushed by a
command), or AWS's prebuilt scikit-learn image with mlshift's inference script."""

from __future__ import annotations

import base64
import hashlib
import importlib.util
import io
import json
import os
import sys
import tarfile
from pathlib import Path
from typing import Any

import joblib
import pytest

import mlshift
from mlshift.errors import ConfigError, NotFound, ProviderError
from mlshift.specs import EndpointSpec
from mlshift.specs.model import Signature
from mlshift_sagemaker._images import inference_script, package_prebuilt
from mlshift_sagemaker.image import sklearn_inference as script
from mlshift_sagemaker.image.__main__ import main as image_main
from mlshift_sagemaker.testing import FakeSageMaker

ACCOUNT = "123456789012"
MLSHIFT_IMAGE = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/mlshift-serving:{mlshift.__version__}"
CUSTOM_IMAGE = f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com/my-server:7"
HAVE_SDK = (
    importlib.util.find_spec("sagemaker") is not None
    and importlib.util.find_spec("sagemaker.core") is not None
)
needs_sdk = pytest.mark.skipif(
    not HAVE_SDK,
    reason='the prebuilt image lookup needs sagemaker-core (pip install "mlshift-sagemaker[images]")',
)


def spec(options: dict[str, Any] | None = None, model: str = "iris:1", name: str = "iris-ep") -> EndpointSpec:
    return EndpointSpec.model_validate(
        {
            "name": name,
            "variants": [{"name": "main", "model": model}],
            "provider_options": {"sagemaker": options} if options is not None else {},
        }
    )


def created_containers(aws: FakeSageMaker, since: int = 0) -> list[dict[str, Any]]:
    return [
        dict(c.params["PrimaryContainer"])
        for c in aws.calls[since:]
        if c.operation == "CreateModel" and c.params
    ]


# ---------------------------------------------------------------- choosing an image


def test_an_explicit_image_uri_is_what_create_model_gets_and_is_not_looked_up(
    registered: mlshift.Client, aws: FakeSageMaker
) -> None:
    mark = len(aws.calls)
    registered.apply(spec({"image_uri": CUSTOM_IMAGE}))
    (container,) = created_containers(aws, mark)
    assert container["Image"] == CUSTOM_IMAGE
    assert container["Environment"]["MLSHIFT_MODEL_REF"] == "iris:1"
    assert "DescribeImages" not in aws.operations(since=mark)


def test_the_target_image_uri_applies_to_endpoints_without_their_own(iris: dict[str, Any]) -> None:
    with (
        FakeSageMaker(serving_image=False) as aws,
        mlshift.connect("sagemaker://us-east-1", options={"image_uri": CUSTOM_IMAGE}) as client,
    ):
        client.models.register("iris", iris["v1"], framework="sklearn")
        client.endpoints.deploy("iris-ep", "iris:1")
        assert [c["Image"] for c in created_containers(aws)] == [CUSTOM_IMAGE]


def test_the_mlshift_image_is_the_default_and_is_checked_in_ecr_once(
    registered: mlshift.Client, aws: FakeSageMaker
) -> None:
    mark = len(aws.calls)
    registered.endpoints.deploy("iris-ep", "iris:1")
    registered.endpoints.deploy("iris-ep2", "iris:1")
    assert [c["Image"] for c in created_containers(aws, mark)] == [MLSHIFT_IMAGE, MLSHIFT_IMAGE]
    checks = [c for c in aws.calls[mark:] if c.operation == "DescribeImages"]
    assert len(checks) == 1
    assert checks[0].params == {
        "registryId": ACCOUNT,
        "repositoryName": "mlshift-serving",
        "imageIds": [{"imageTag": mlshift.__version__}],
    }


@pytest.mark.parametrize(
    ("setup", "missing"),
    [
        ("nothing", "no repository 'mlshift-serving'"),
        ("other tag", f"no tag {mlshift.__version__!r}"),
    ],
)
def test_a_missing_mlshift_image_fails_the_plan_with_the_push_command_and_creates_nothing(
    iris: dict[str, Any], setup: str, missing: str
) -> None:
    with FakeSageMaker(serving_image=False) as aws, mlshift.connect("sagemaker://us-east-1") as client:
        if setup == "other tag":
            aws.push_serving_image(tag="0.0.1")
        client.models.register("iris", iris["v1"], framework="sklearn")
        mark = len(aws.calls)
        with pytest.raises(NotFound) as caught:
            client.endpoints.deploy("iris-ep", "iris:1")
        assert MLSHIFT_IMAGE in caught.value.message and missing in caught.value.message
        assert caught.value.hint is not None
        assert "python -m mlshift_sagemaker.image push --target sagemaker://us-east-1`" in caught.value.hint
        assert aws.mutating_calls(since=mark) == []
        assert aws.resources() == {"models": [], "endpoint_configs": [], "endpoints": [], "alarms": []}
        # Once pushed, the same deploy goes through.
        aws.push_serving_image()
        client.endpoints.deploy("iris-ep", "iris:1")
        assert [c["Image"] for c in created_containers(aws, mark)] == [MLSHIFT_IMAGE]


def test_after_an_upgrade_live_endpoints_keep_their_image_until_a_new_model_needs_one(
    iris: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    with FakeSageMaker() as aws, mlshift.connect("sagemaker://us-east-1") as client:
        client.models.register("iris", iris["v1"], framework="sklearn")
        client.models.register("iris", iris["v2"], framework="sklearn")
        client.apply(spec())
        old_image = created_containers(aws)[-1]["Image"]
        monkeypatch.setattr(mlshift, "__version__", "9.9.9")  # a newer mlshift, image not pushed yet
        with mlshift.connect("sagemaker://us-east-1") as upgraded:
            assert upgraded.plan(spec()).is_empty  # nothing would change: no image needed
            mark = len(aws.calls)
            upgraded.apply(spec({"environment": {"LOG_LEVEL": "debug"}}))  # options only
            (container,) = created_containers(aws, mark)
            assert container["Image"] == old_image  # not moved to 9.9.9 behind the plan's back
            with pytest.raises(NotFound, match="9.9.9"):
                upgraded.plan(spec({"environment": {"LOG_LEVEL": "debug"}}, model="iris:2"))
            aws.push_serving_image(tag="9.9.9")
            upgraded.apply(spec({"environment": {"LOG_LEVEL": "debug"}}, model="iris:2"))
            assert created_containers(aws)[-1]["Image"].endswith(":9.9.9")
            predicted = upgraded.endpoints.predict("iris-ep", iris["rows"]).predictions
            assert predicted == iris["expected_v2"]


def test_a_caller_who_may_not_read_ecr_is_warned_not_stopped(
    iris: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with FakeSageMaker(serving_image=False) as aws, mlshift.connect("sagemaker://us-east-1") as client:
        client.models.register("iris", iris["v1"], framework="sklearn")
        aws.fail("DescribeImages", "AccessDeniedException", service="ecr", times=None)
        with caplog.at_level("WARNING", logger="mlshift.sagemaker"):
            client.endpoints.deploy("iris-ep", "iris:1")
        assert [c["Image"] for c in created_containers(aws)] == [MLSHIFT_IMAGE]
        assert f"cannot check that {MLSHIFT_IMAGE} exists (AccessDeniedException)" in caplog.text


def test_other_ecr_errors_stop_the_plan(registered: mlshift.Client, aws: FakeSageMaker) -> None:
    aws.fail("DescribeImages", "ServerException", status=500, service="ecr", times=None)
    mark = len(aws.calls)
    with pytest.raises(ProviderError, match="check that the serving image"):
        registered.endpoints.deploy("iris-ep", "iris:1")
    assert aws.mutating_calls(since=mark) == []


def test_the_push_command_names_a_repository_that_is_not_the_default(iris: dict[str, Any]) -> None:
    with (
        FakeSageMaker() as aws,
        mlshift.connect("sagemaker://us-east-1", options={"ecr_repository": "team/serving"}) as client,
    ):
        client.models.register("iris", iris["v1"], framework="sklearn")
        with pytest.raises(NotFound, match="team/serving:") as caught:
            client.endpoints.deploy("iris-ep", "iris:1")
        assert "push --target sagemaker://us-east-1 --repository team/serving`" in str(caught.value.hint)
        aws.push_serving_image(repository="team/serving")
        client.endpoints.deploy("iris-ep", "iris:1")


def test_an_endpoint_may_ask_for_the_mlshift_image_over_the_target_image_uri(iris: dict[str, Any]) -> None:
    with (
        FakeSageMaker() as aws,
        mlshift.connect("sagemaker://us-east-1", options={"image_uri": CUSTOM_IMAGE}) as c,
    ):
        c.models.register("iris", iris["v1"], framework="sklearn")
        c.apply(spec({"image": "mlshift"}))
        assert [x["Image"] for x in created_containers(aws)] == [MLSHIFT_IMAGE]


@pytest.mark.parametrize(
    ("options", "field", "words"),
    [
        ({"image": "docker"}, "provider_options.sagemaker.image", "'mlshift' or 'prebuilt'"),
        (
            {"image": "prebuilt", "image_uri": CUSTOM_IMAGE},
            "provider_options.sagemaker.image",
            "image_uri",
        ),
        ({"framework_version": "latest!"}, "provider_options.sagemaker.framework_version", "1.2-1"),
        ({"framework_version": "1.2-1"}, "provider_options.sagemaker.framework_version", "image is mlshift"),
    ],
)
def test_bad_image_options_name_the_field_and_the_allowed_values(
    registered: mlshift.Client, aws: FakeSageMaker, options: dict[str, Any], field: str, words: str
) -> None:
    mark = len(aws.calls)
    with pytest.raises(ConfigError) as caught:
        registered.plan(spec(options))
    assert caught.value.field == field and words in caught.value.message
    assert aws.calls[mark:] == []


def test_a_bad_target_image_option_names_the_field() -> None:
    with pytest.raises(ConfigError) as caught:
        mlshift.connect("sagemaker://us-east-1", options={"image": "custom"})
    assert caught.value.field == "target.options.image"
    assert "'mlshift' or 'prebuilt'" in caught.value.message


# ---------------------------------------------------------------- AWS's prebuilt image


def test_a_framework_without_a_prebuilt_image_is_refused_at_plan_time(
    client: mlshift.Client, aws: FakeSageMaker, tmp_path: Path
) -> None:
    model = tmp_path / "model.onnx"
    model.write_bytes(b"not really onnx: only registered")
    client.models.register("scorer", model, framework="onnx", signature=Signature.numeric(4))
    mark = len(aws.calls)
    with pytest.raises(ConfigError) as caught:
        client.plan(spec({"image": "prebuilt"}, model="scorer:1"))
    assert caught.value.field == "provider_options.sagemaker.image"
    assert "no prebuilt serving image for onnx models" in caught.value.message
    assert "scorer:1" in caught.value.message
    assert aws.mutating_calls(since=mark) == []


def test_without_the_sdk_a_prebuilt_image_names_the_install_command(
    registered: mlshift.Client, aws: FakeSageMaker, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "sagemaker.core", None)  # import fails as if not installed
    mark = len(aws.calls)
    with pytest.raises(ConfigError, match="SageMaker SDK") as caught:
        registered.plan(spec({"image": "prebuilt"}))
    assert caught.value.field == "provider_options.sagemaker.image"
    assert 'pip install "mlshift-sagemaker[images]"' in str(caught.value.hint)
    assert aws.mutating_calls(since=mark) == []


@needs_sdk
def test_prebuilt_sklearn_models_get_aws_image_and_a_packaged_model(
    registered: mlshift.Client, aws: FakeSageMaker, iris: dict[str, Any]
) -> None:
    mark = len(aws.calls)
    registered.plan(spec({"image": "prebuilt", "framework_version": "1.2-1"}))
    assert aws.mutating_calls(since=mark) == []  # the package is uploaded by apply, not plan
    registered.apply(spec({"image": "prebuilt", "framework_version": "1.2-1"}))
    (container,) = created_containers(aws, mark)
    puts = [i for i, c in enumerate(aws.calls) if c.operation == "PutObject" and c.path.endswith(".tar.gz")]
    creates = [i for i, c in enumerate(aws.calls) if c.operation == "CreateModel"]
    assert len(puts) == 1 and puts[0] < creates[-1]
    assert (
        container["Image"]
        == "683313688378.dkr.ecr.us-east-1.amazonaws.com/sagemaker-scikit-learn:1.2-1-cpu-py3"
    )
    assert container["ModelDataUrl"].endswith("/model.tar.gz") and "ModelDataSource" not in container
    env = container["Environment"]
    assert env["SAGEMAKER_PROGRAM"] == "inference.py"
    assert env["SAGEMAKER_SUBMIT_DIRECTORY"] == "/opt/ml/model/code"
    assert env["MLSHIFT_ARTIFACT"] == "/opt/ml/model/" + Path(iris["v1"]).name
    assert "DescribeImages" not in aws.operations(since=mark)
    # A second endpoint on the same model reuses the stored package.
    uploads = len([c for c in aws.calls if c.operation == "PutObject" and c.path.endswith("model.tar.gz")])
    registered.apply(spec({"image": "prebuilt", "framework_version": "1.2-1"}, name="iris-ep2"))
    assert uploads == len(
        [c for c in aws.calls if c.operation == "PutObject" and c.path.endswith("model.tar.gz")]
    )
    assert endpoint_names(registered) == {"iris-ep", "iris-ep2"}
    # The fake answers the way AWS's container would: through the packaged inference script.
    rows = iris["rows"]
    assert registered.endpoints.predict("iris-ep", rows).predictions == iris["expected_v1"]


@needs_sdk
def test_a_live_endpoint_moves_between_the_mlshift_and_the_prebuilt_image(
    registered: mlshift.Client, aws: FakeSageMaker, iris: dict[str, Any]
) -> None:
    registered.apply(spec())
    mlshift_image = created_containers(aws)[-1]["Image"]
    plan = registered.plan(spec({"image": "prebuilt", "framework_version": "1.2-1"}))
    assert "sagemaker-scikit-learn:1.2-1-cpu-py3" in plan.render()
    registered.apply(plan)
    assert "/sagemaker-scikit-learn:" in created_containers(aws)[-1]["Image"]
    assert registered.endpoints.predict("iris-ep", iris["rows"]).predictions == iris["expected_v1"]
    assert registered.plan(spec({"image": "prebuilt", "framework_version": "1.2-1"})).is_empty
    # Back to the default: the variant returns to the mlshift image.
    registered.apply(spec({"image": "mlshift"}))
    assert created_containers(aws)[-1]["Image"] == mlshift_image
    assert registered.endpoints.predict("iris-ep", iris["rows"]).predictions == iris["expected_v1"]


def endpoint_names(client: mlshift.Client) -> set[str]:
    return {e.name for e in client.endpoints.list()}


@needs_sdk
def test_an_unknown_prebuilt_version_lists_the_known_ones(
    registered: mlshift.Client, aws: FakeSageMaker
) -> None:
    with pytest.raises(ConfigError) as caught:
        registered.plan(spec({"image": "prebuilt", "framework_version": "0.1-9"}))
    assert caught.value.field == "provider_options.sagemaker.framework_version"
    assert "1.2-1" in str(caught.value.hint)


@needs_sdk
def test_the_target_may_choose_prebuilt_for_every_endpoint(iris: dict[str, Any]) -> None:
    with (
        FakeSageMaker(serving_image=False) as aws,
        mlshift.connect("sagemaker://us-east-1", options={"image": "prebuilt"}) as client,
    ):
        client.models.register("iris", iris["v1"], framework="sklearn")
        client.endpoints.deploy("iris-ep", "iris:1")
        (container,) = created_containers(aws)
        assert "/sagemaker-scikit-learn:" in container["Image"]


# ---------------------------------------------------------------- the package and its script


def _package(client: mlshift.Client, aws: FakeSageMaker, ref: str) -> tuple[str, dict[str, bytes]]:
    adapter: Any = client.adapter
    url, _ = package_prebuilt(adapter, client.models.get(ref))
    bucket, _, key = url.removeprefix("s3://").partition("/")
    data = aws.backend("s3").get_object(bucket, key).value
    with tarfile.open(fileobj=io.BytesIO(data), mode="r:gz") as archive:
        files = {m.name: archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()}  # type: ignore[union-attr]
    return url, files


def test_the_package_holds_the_model_the_script_and_its_requirements(
    registered: mlshift.Client, aws: FakeSageMaker, iris: dict[str, Any]
) -> None:
    url, files = _package(registered, aws, "iris:1")
    name = Path(iris["v1"]).name
    assert sorted(files) == sorted([name, "code/inference.py", "code/requirements.txt"])
    assert files[name] == Path(iris["v1"]).read_bytes()
    assert files["code/inference.py"] == inference_script()
    assert files["code/requirements.txt"].decode().startswith("skops==")
    digest = hashlib.sha256(Path(iris["v1"]).read_bytes()).hexdigest()
    assert f"/artifacts/sha256/{digest}/prebuilt/" in url
    mark = len(aws.calls)
    assert _package(registered, aws, "iris:1")[0] == url  # stored: found, not rebuilt
    assert "PutObject" not in aws.operations(since=mark)


def test_a_joblib_model_needs_no_requirements(
    client: mlshift.Client, aws: FakeSageMaker, tmp_path: Path
) -> None:
    from sklearn.datasets import load_iris
    from sklearn.tree import DecisionTreeClassifier

    x, y = load_iris(return_X_y=True)
    path = tmp_path / "tree.joblib"
    joblib.dump(DecisionTreeClassifier(max_depth=2).fit(x, y), path)
    client.models.register("tree", path, framework="sklearn")
    _, files = _package(client, aws, "tree:1")
    assert sorted(files) == ["code/inference.py", "tree.joblib"]


@pytest.fixture
def model_dir(
    registered: mlshift.Client,
    aws: FakeSageMaker,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    iris: dict[str, Any],
) -> Path:
    """The package, unpacked as the container sees /opt/ml/model, with the variables it gets."""
    _, files = _package(registered, aws, "iris:1")
    for name, data in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(data)
    version = registered.models.get("iris:1")
    monkeypatch.setenv("MLSHIFT_ARTIFACT", "/opt/ml/model/" + Path(iris["v1"]).name)
    monkeypatch.setenv("MLSHIFT_MODEL_DIGEST", version.digest)
    return tmp_path


@pytest.mark.parametrize(
    "body",
    [
        lambda rows: {"instances": rows},
        lambda rows: {"inputs": rows},
        lambda rows: rows,
        lambda rows: {"dataframe_split": {"columns": None, "data": rows}},
        lambda rows: {"input_data": rows},
        lambda rows: {"input_data": {"columns": None, "index": list(range(len(rows))), "data": rows}},
        lambda rows: {"data": rows},
    ],
)
def test_the_script_answers_the_container_contract_like_the_mlshift_server(
    model_dir: Path, iris: dict[str, Any], body: Any
) -> None:
    model = script.model_fn(str(model_dir))
    data = script.input_fn(json.dumps(body(iris["rows"])).encode(), "application/json")
    text, content_type = script.output_fn(script.predict_fn(data, model), "application/json")
    assert content_type == "application/json"
    assert json.loads(text) == {"predictions": iris["expected_v1"]}


def test_the_script_takes_and_gives_csv(model_dir: Path, iris: dict[str, Any]) -> None:
    model = script.model_fn(str(model_dir))
    csv_rows = "\n".join(",".join(str(v) for v in row) for row in iris["rows"])
    prediction = script.predict_fn(script.input_fn(csv_rows, "text/csv"), model)
    text, content_type = script.output_fn(prediction, "text/csv")
    assert content_type == "text/csv"
    assert [int(line) for line in text.split()] == iris["expected_v1"]


def test_the_script_takes_npy(model_dir: Path, iris: dict[str, Any]) -> None:
    import io

    import numpy as np

    model = script.model_fn(str(model_dir))
    out = io.BytesIO()
    np.save(out, np.asarray(iris["rows"]))
    prediction = script.predict_fn(script.input_fn(out.getvalue(), "application/x-npy"), model)
    assert prediction.tolist() == iris["expected_v1"]


def test_the_script_orders_named_columns_by_the_signature(
    model_dir: Path, iris: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    names = ["sl", "sw", "pl", "pw"]
    monkeypatch.setenv("MLSHIFT_SIGNATURE", Signature.from_columns(names).model_dump_json())
    model = script.model_fn(str(model_dir))
    records = [dict(reversed(list(zip(names, row, strict=True)))) for row in iris["rows"]]
    prediction = script.predict_fn(
        script.input_fn(json.dumps({"dataframe_records": records}), "application/json"), model
    )
    assert prediction.tolist() == iris["expected_v1"]
    with pytest.raises(ValueError, match="missing columns: pw"):
        script.predict_fn([{"sl": 1, "sw": 2, "pl": 3}], model)


def test_the_script_refuses_a_model_that_does_not_match_its_digest(
    model_dir: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLSHIFT_MODEL_DIGEST", "sha256:" + "0" * 64)
    with pytest.raises(ValueError, match="does not match its registered digest"):
        script.model_fn(str(model_dir))


@pytest.mark.parametrize(
    ("body", "content_type", "message"),
    [
        (b"a,b", "application/x-recordio-protobuf", "unsupported content type"),
        (b"a,b", "application/x-npy", "not a .npy array"),
        (b'{"rows": [[1]]}', "application/json", "expected {"),
        (b"[]", "application/json", "no rows"),
    ],
)
def test_the_script_says_what_is_wrong_with_a_request(body: bytes, content_type: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        script.input_fn(body, content_type)


# ---------------------------------------------------------------- the mlshift image: serve, build, push


def test_the_sagemaker_models_variables_reach_the_core_images_model_server() -> None:
    from mlshift.image import serve_arguments

    # What the adapter puts in a SageMaker model's Environment, as the core image's serve reads it.
    env = {
        "MLSHIFT_ARTIFACT": "/opt/ml/model/iris.skops",
        "MLSHIFT_FRAMEWORK": "sklearn",
        "MLSHIFT_MODEL_DIGEST": "sha256:" + "a" * 64,
        "MLSHIFT_SIGNATURE": '{"inputs": [{"name": "a b", "dtype": "float64"}]}',
        "MLSHIFT_VARIANT": "iris-v1",
        "MLSHIFT_MODEL_REF": "iris:1",
        "MLSHIFT_SERVE_HOST": "0.0.0.0",  # what the image sets
    }
    args = serve_arguments(env)
    assert args[:4] == ["--artifact", "/opt/ml/model/iris.skops", "--host", "0.0.0.0"]
    pairs = dict(zip(args[4::2], args[5::2], strict=True))
    assert pairs == {  # no --port: the server's default is SageMaker's 8080
        "--framework": "sklearn",
        "--digest": env["MLSHIFT_MODEL_DIGEST"],
        "--signature-json": env["MLSHIFT_SIGNATURE"],
        "--variant": "iris-v1",
        "--model-ref": "iris:1",
    }
    assert serve_arguments({"SAGEMAKER_BIND_TO_PORT": "9000"})[1::2][:3] == [
        "/opt/ml/model",
        "127.0.0.1",  # outside the image: loopback only
        "9000",
    ]


@pytest.fixture
def core_builds(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """What the adapter asks of the core image build (which needs a Docker engine), recorded.

    Each record holds the arguments, and the names and files of the extra wheels, read while
    the build would run (the adapter's own wheel lives in a temporary folder until then).
    """
    import zipfile

    import mlshift.image

    calls: list[dict[str, Any]] = []

    def build_image(tag: str, **kwargs: Any) -> str:
        wheels = {}
        for wheel in kwargs.get("extra_wheels") or ():
            with zipfile.ZipFile(wheel) as archive:
                wheels[Path(wheel).name] = archive.namelist()
        calls.append({"tag": tag, **kwargs, "extra_wheels": wheels})
        return tag

    monkeypatch.setattr(mlshift.image, "build_image", build_image)
    return calls


def test_the_image_is_the_core_one_with_this_adapters_own_wheel_added(
    core_builds: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    assert image_main(["build"]) == 0
    local = f"mlshift-serving:{mlshift.__version__}-sagemaker"
    assert capsys.readouterr().out.strip() == local
    (build,) = core_builds
    assert build["tag"] == local  # not the core image's own name, which has no adapter
    assert build["frameworks"] == ("onnx", "sklearn")  # one image serves every model of a target
    (wheel, files), *others = build["extra_wheels"].items()
    assert others == [] and wheel.startswith("mlshift_sagemaker-")
    # Built from the code that runs: pipeline steps run `python -m mlshift_sagemaker.step` in it.
    assert "mlshift_sagemaker/step.py" in files and "mlshift_sagemaker/image/sklearn_inference.py" in files
    # No Dockerfile of its own: the core image's is the only one.
    assert not (Path(script.__file__).parent / "Dockerfile").exists()


FAKE_DOCKER = """\
#!{python}
import json, os, sys
argv = sys.argv[1:]
record = {{"argv": argv, "stdin_len": len(sys.stdin.read())}}
if argv and argv[0] == "build":
    ctx = argv[-1]
    record["context"] = sorted(
        os.path.relpath(os.path.join(d, f), ctx) for d, _, names in os.walk(ctx) for f in names
    )
    record["serve_mode"] = oct(os.stat(os.path.join(ctx, "serve")).st_mode & 0o777)
with open(os.environ["FAKE_DOCKER_LOG"], "a") as log:
    log.write(json.dumps(record) + "\\n")
if argv and argv[0] == "login":
    print("Login Succeeded")
sys.exit(int(os.environ.get("FAKE_DOCKER_EXIT_" + argv[0].upper(), "0")))
"""


@pytest.fixture
def docker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `docker` first on PATH that records its argv and how much it read from stdin."""
    folder = tmp_path / "bin"
    folder.mkdir()
    executable = folder / "docker"
    executable.write_text(FAKE_DOCKER.format(python=sys.executable))
    executable.chmod(0o755)
    log = tmp_path / "docker.jsonl"
    monkeypatch.setenv("PATH", f"{folder}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DOCKER_LOG", str(log))
    return log


def docker_calls(log: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log.read_text().splitlines()] if log.exists() else []


def test_push_creates_the_repository_and_logs_in_through_stdin(
    docker: Path, capsys: pytest.CaptureFixture[str], iris: dict[str, Any]
) -> None:
    with FakeSageMaker(serving_image=False) as aws:
        code = image_main(["push", "--target", "sagemaker://us-east-1", "--no-build"])
        assert code == 0
        out, err = capsys.readouterr()
        assert out.strip() == MLSHIFT_IMAGE
        assert "created ECR repository mlshift-serving" in err and f"pushing {MLSHIFT_IMAGE}" in err
        ecr = aws.backend("ecr")
        assert "mlshift-serving" in ecr.repositories
        import boto3

        token = boto3.client("ecr", region_name="us-east-1").get_authorization_token()["authorizationData"][
            0
        ]["authorizationToken"]
        password = base64.b64decode(token).decode().partition(":")[2]
        assert len(password) >= 8
        calls = docker_calls(docker)
        assert [c["argv"][0] for c in calls] == ["login", "tag", "push"]
        login, tag, push = calls
        assert login["argv"] == [
            "login",
            "--username",
            "AWS",
            "--password-stdin",
            f"{ACCOUNT}.dkr.ecr.us-east-1.amazonaws.com",
        ]
        assert login["stdin_len"] == len(password)
        assert all(password not in arg for c in calls for arg in c["argv"])
        assert password not in out + err
        assert tag["argv"] == ["tag", f"mlshift-serving:{mlshift.__version__}-sagemaker", MLSHIFT_IMAGE]
        assert push["argv"] == ["push", MLSHIFT_IMAGE] and push["stdin_len"] == 0
        assert "GetAuthorizationToken" in aws.operations(service="ecr")


def test_push_builds_from_a_wheels_folder_first(
    docker: Path, tmp_path: Path, core_builds: list[dict[str, Any]]
) -> None:
    wheels = tmp_path / "wheels"
    wheels.mkdir()
    (wheels / "mlshift-0.1.0-py3-none-any.whl").write_bytes(b"PK")
    (wheels / "mlshift_sagemaker-0.1.0-py3-none-any.whl").write_bytes(b"PK")
    with FakeSageMaker(serving_image=False) as aws:
        aws.push_serving_image(tag="old")  # the repository exists: it is not created again
        mark = len(aws.calls)
        code = image_main(
            [
                "push",
                "--target",
                "sagemaker://us-east-1",
                "--wheels",
                str(wheels),
                "--base-image",
                "debian-py:1",
                "--frameworks",
                "sklearn",
            ]
        )
        assert code == 0
        assert "CreateRepository" not in aws.operations(since=mark)
    local = f"mlshift-serving:{mlshift.__version__}-sagemaker"
    (build,) = core_builds
    assert (build["tag"], build["base_image"], build["wheels"]) == (local, "debian-py:1", wheels)
    assert build["frameworks"] == ("sklearn",)
    assert build["extra_wheels"] == {}  # the folder is installed as it is
    assert [c["argv"][:2] for c in docker_calls(docker)] == [
        ["login", "--username"],
        ["tag", local],
        ["push", MLSHIFT_IMAGE],
    ]


def test_a_wheels_folder_without_this_adapter_is_refused_before_building(
    tmp_path: Path, core_builds: list[dict[str, Any]], capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "mlshift-0.1.0-py3-none-any.whl").write_bytes(b"PK")
    assert image_main(["build", "--wheels", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "no mlshift_sagemaker-*.whl" in err and "pip wheel --no-deps" in err
    assert core_builds == []


def test_a_failed_docker_step_stops_the_push_with_its_name(
    docker: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("FAKE_DOCKER_EXIT_LOGIN", "1")
    with FakeSageMaker(serving_image=False):
        assert image_main(["push", "--target", "sagemaker://us-east-1", "--no-build"]) == 1
    assert "docker login" in capsys.readouterr().err
    assert [c["argv"][0] for c in docker_calls(docker)] == ["login"]


def test_build_without_a_docker_engine_says_how_to_start_one(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("docker")
    monkeypatch.setenv("DOCKER_HOST", f"unix://{tmp_path}/nothing.sock")
    wheels = tmp_path / "w"
    wheels.mkdir()
    (wheels / "mlshift_sagemaker-0.1.0-py3-none-any.whl").write_bytes(b"PK")
    assert image_main(["build", "--wheels", str(wheels), "--context", str(tmp_path / "ctx")]) == 1
    err = capsys.readouterr().err
    assert "no Docker daemon answers" in err and "start Docker" in err
    assert not (tmp_path / "ctx").exists()  # nothing was written


def test_push_without_the_docker_command_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    with FakeSageMaker(serving_image=False):
        assert image_main(["push", "--target", "sagemaker://us-east-1", "--no-build"]) == 2
    err = capsys.readouterr().err
    assert "'docker' was not found on PATH" in err and "--docker" in err


def test_the_command_help_explains_build_and_push(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as caught:
        image_main(["--help"])
    assert caught.value.code == 0
    out = capsys.readouterr().out
    assert "push --target sagemaker://us-east-1" in out and "wheels" in out


def test_prebuilt_script_refuses_skops_types_nobody_trusted(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import builtins

    import numpy as np
    import skops.io as sio
    from sklearn.dummy import DummyClassifier
    from sklearn.pipeline import Pipeline
    from sklearn.preprocessing import FunctionTransformer

    X, y = np.zeros((4, 2)), [0, 1, 0, 1]
    # Every cell becomes code, then every cell is evaluated: "numpy." and "builtins." names
    # that a prefix rule would have let through.
    evil = Pipeline(
        [
            ("fill", FunctionTransformer(np.full_like, kw_args={"fill_value": "0", "dtype": object})),
            ("run", FunctionTransformer(np.vectorize(builtins.eval))),
            ("clf", DummyClassifier()),
        ]
    ).fit(X, y)
    sio.dump(evil, tmp_path / "evil.skops")
    monkeypatch.delenv("MLSHIFT_SKOPS_TRUST", raising=False)
    with pytest.raises(ValueError, match=r"builtins\.eval.*numpy\.vectorize") as info:
        script._load_skops(tmp_path / "evil.skops")
    assert "MLSHIFT_SKOPS_TRUST=builtins.eval" in str(info.value)
    monkeypatch.setenv("MLSHIFT_SKOPS_TRUST", "builtins.eval,builtins.object,numpy.full_like,numpy.vectorize")
    assert script._load_skops(tmp_path / "evil.skops").predict(X).tolist() == [0, 0, 0, 0]
