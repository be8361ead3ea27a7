"""local+docker:// and the serving image against a real Docker engine.

Never skipped when CI=true (``nox -s tests`` starts an engine and makes the base image there);
on a machine without Docker every test here skips with one line saying how to run them.
"""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

import mlshift
from mlshift.errors import ImageNotFound, MlshiftError, RolloutFailed, UnsupportedOperation
from mlshift.specs.rollout import Canary, HealthGate, Probe
from rollout_models import predictor

pytestmark = [pytest.mark.slow, pytest.mark.docker]

ROOT = Path(__file__).resolve().parent.parent
HOW = (
    "run `nox -s tests` as root (it starts dockerd and makes the base image), or start Docker, "
    "set DOCKER_HOST and run `mlshift image base`"
)


def _unavailable(reason: str) -> None:
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"Docker tests cannot run in CI: {reason}", pytrace=False)
    pytest.skip(f"DOCKER TESTS SKIPPED: {reason}; {HOW}")


def _engine_or_skip_module() -> None:
    """One check at import: without an engine the whole module skips with one line (fails in CI)."""
    try:
        from mlshift.image import docker_client

        docker_client(timeout=10)
    except MlshiftError as exc:
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"Docker tests cannot run in CI: {exc.message}", pytrace=False)
        pytest.skip(f"DOCKER TESTS SKIPPED: {exc.message}; {HOW}", allow_module_level=True)


_engine_or_skip_module()


@pytest.fixture(scope="session")
def engine() -> Any:
    """The Docker client, with the serving image built from the code under test.

    Built every session, not only when missing: an image left by an earlier checkout would test
    that code. Docker's layer cache makes a build with nothing changed take seconds.
    """
    try:
        from mlshift.image import build_image, default_image
        from mlshift.local._docker import DockerRuntime

        runtime = DockerRuntime(say=lambda line: None)
        build_image(default_image(), client=runtime.client, say=lambda line: None)
    except ImageNotFound as exc:
        _unavailable(f"{exc.message} ({exc.hint})")
    except MlshiftError as exc:
        _unavailable(exc.message)
    return runtime.client


def ours(engine: Any, root: Path) -> list[Any]:
    """Containers labelled by mlshift for endpoints in the state folder ``root``."""
    found = engine.containers.list(all=True, filters={"label": "mlshift.endpoint"})
    return [c for c in found if str(c.labels.get("mlshift.folder", "")).startswith(str(root))]


@pytest.fixture
def docker_target(engine: Any, state_dir: Path) -> Iterator[mlshift.Client]:
    client = mlshift.connect(f"local+docker://{state_dir}")
    try:
        yield client
    finally:
        for endpoint in client.endpoints.list():
            with contextlib.suppress(MlshiftError):
                client.endpoints.delete(endpoint.name)
        client.close()
        for container in ours(engine, state_dir):  # a failed test must not leave any behind
            container.remove(force=True)


def wait_for(condition: Any, timeout: float, what: str) -> float:
    """Poll ``condition`` until it is true; return the seconds it took."""
    start = time.monotonic()
    while not condition():
        if time.monotonic() - start > timeout:
            raise AssertionError(f"{what}: not within {timeout:g} s")
        time.sleep(0.02)
    return time.monotonic() - start


def test_quickstart_runs_unchanged_and_leaves_no_container(engine: Any, state_dir: Path) -> None:
    import runpy

    quickstart = runpy.run_path(str(ROOT / "examples" / "quickstart.py"))
    seen = quickstart["main"](target=f"local+docker://{state_dir}", requests=1000)
    assert sum(seen.values()) == 1000
    assert 16 <= 100 * seen["iris-v2"] / 1000 <= 24, seen
    assert ours(engine, state_dir) == []


def test_replicas_are_labelled_limited_and_loopback_only(
    engine: Any, docker_target: mlshift.Client, iris: dict[str, Any], state_dir: Path
) -> None:
    docker_target.models.register("iris", iris["v1"], framework="sklearn")
    docker_target.endpoints.deploy("iris", "iris:1", replicas=2, size="cpu-small")
    containers = ours(engine, state_dir)
    assert sorted(c.labels["mlshift.replica"] for c in containers) == ["0", "1"]
    for container in containers:
        assert container.labels["mlshift.endpoint"] == "iris"
        assert container.labels["mlshift.variant"] == "iris-v1"
        host = container.attrs["HostConfig"]
        assert host["NanoCpus"] == int(min(1.0, os.cpu_count() or 1) * 1e9)
        assert host["Memory"] == 2048 * 1024 * 1024
        assert {b["HostIp"] for b in container.attrs["NetworkSettings"]["Ports"]["8080/tcp"]} == {"127.0.0.1"}
        # The model read-only; the only other mount is the endpoint's capture folder, where the
        # server writes captured requests when capture.json turns capture on.
        (model,) = [m for m in container.attrs["Mounts"] if m["Destination"].startswith("/opt/ml/model/")]
        assert model["RW"] is False
        others = [m for m in container.attrs["Mounts"] if m is not model]
        assert [m["Destination"] for m in others] == [str(state_dir / "capture" / "iris")], others
    assert docker_target.endpoints.predict("iris", iris["rows"]).predictions == iris["expected_v1"]


def test_gpu_sizes_are_refused_before_any_container_starts(
    engine: Any, docker_target: mlshift.Client, iris: dict[str, Any], state_dir: Path
) -> None:
    docker_target.models.register("iris", iris["v1"], framework="sklearn")
    with pytest.raises(UnsupportedOperation, match=r"needs a GPU size \(GPU\), which local\+docker://"):
        docker_target.endpoints.deploy("iris", "iris:1", size="gpu-small")
    assert ours(engine, state_dir) == []


def test_a_container_that_exits_fails_early_with_its_log(
    engine: Any, docker_target: mlshift.Client, tmp_path: Path, state_dir: Path
) -> None:
    broken = tmp_path / "broken"
    broken.mkdir()
    # Loads here (registration checks that), fails inside the image: as a model whose library
    # the image lacks would.
    (broken / "predictor.py").write_text(
        "import os\n"
        "if os.environ.get('MLSHIFT_SERVE_HOST') == '0.0.0.0':\n"
        "    raise RuntimeError('cannot load this model')\n"
        "class Predictor:\n"
        "    signature = {'inputs': [{'dtype': 'float64'}] * 4}\n"
        "    def load(self, path): pass\n"
        "    def predict(self, batch): return [0 for _ in batch]\n"
    )
    docker_target.models.register("broken", broken, framework="predictor")
    start = time.monotonic()
    with pytest.raises(MlshiftError, match="exited") as info:
        docker_target.endpoints.deploy("broken", "broken:1")
    assert "cannot load this model" in str(info.value)  # the container's last log lines
    assert time.monotonic() - start < 60  # not the startup timeout
    assert ours(engine, state_dir) == []


def test_a_missing_base_image_names_the_command_that_makes_it_before_building(
    engine: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import mlshift.image._build as build

    monkeypatch.setattr(build, "DEFAULT_BASE_IMAGE", "mlshift-base:not-made-yet")
    with pytest.raises(ImageNotFound, match="base image 'mlshift-base:not-made-yet' is not on") as info:
        build.build_image("mlshift-test:never", context=tmp_path / "context", client=engine)
    assert "mlshift image base" in (info.value.hint or "") and "--base-image" in (info.value.hint or "")
    assert not (tmp_path / "context").exists()  # nothing was written, no wheel was built


def test_a_missing_serving_image_that_was_named_says_how_to_build_it(engine: Any) -> None:
    from mlshift.local import DockerRuntime

    with pytest.raises(ImageNotFound, match="serving image 'mlshift-test:absent' is not") as info:
        DockerRuntime("mlshift-test:absent", client=engine).ensure_image("sklearn")
    assert info.value.hint == "build it with `mlshift image build --tag mlshift-test:absent`"


def test_canary_with_a_gate_rolls_back_and_the_old_version_keeps_serving(
    engine: Any, docker_target: mlshift.Client, iris: dict[str, Any], tmp_path: Path, state_dir: Path
) -> None:
    docker_target.models.register("iris", iris["v1"], framework="sklearn")
    docker_target.models.register("iris", predictor(tmp_path, "failing"))  # iris:2 answers 500
    docker_target.endpoints.deploy("iris", "iris:1")
    gate = HealthGate(min_requests=5, probe=Probe(payload={"instances": iris["rows"][:1]}, rate=50))
    with pytest.raises(RolloutFailed, match="error rate"):
        # The gate trips on its 5th failed probe; the bake only bounds a hang.
        docker_target.endpoints.deploy("iris", "iris:2", rollout=Canary(percent=10, bake=120, gate=gate))
    state = docker_target.endpoints.get("iris")
    assert [(v.model, v.weight, v.status) for v in state.variants] == [("iris:1", 100, "healthy")]
    assert docker_target.endpoints.predict("iris", iris["rows"]).predictions == iris["expected_v1"]
    assert {c.labels["mlshift.variant"] for c in ours(engine, state_dir)} == {"iris-v1"}


def test_killed_replica_is_reported_and_callers_see_at_most_the_in_flight_failures(
    engine: Any, docker_target: mlshift.Client, iris: dict[str, Any], state_dir: Path
) -> None:
    docker_target.models.register("iris", iris["v1"], framework="sklearn")
    docker_target.models.register("iris", iris["v2"], framework="sklearn")
    docker_target.endpoints.deploy("iris", "iris:1")
    state = docker_target.endpoints.deploy("iris", "iris:2", traffic=20)
    url = state.url
    assert url is not None
    statuses: Counter[int] = Counter()
    stop = threading.Event()

    def load() -> None:  # one caller: at most one request is in flight at the kill
        with httpx.Client(trust_env=False, timeout=10) as http:
            while not stop.is_set():
                try:
                    statuses[http.post(url, json={"instances": iris["rows"][:1]}).status_code] += 1
                except httpx.HTTPError:
                    statuses[0] += 1

    thread = threading.Thread(target=load)
    thread.start()
    try:
        wait_for(lambda: statuses.total() >= 50, 60, "traffic before the kill")
        (victim,) = [c for c in ours(engine, state_dir) if c.labels["mlshift.variant"] == "iris-v2"]
        victim.kill()
        wait_for(
            lambda: docker_target.endpoints.get("iris").variant("iris-v2").status == "failed",  # type: ignore[union-attr]
            10,
            "endpoints show reporting the killed replica",
        )
        after = statuses.total()
        wait_for(lambda: statuses.total() >= after + 200, 60, "traffic after the kill")
    finally:
        stop.set()
        thread.join(30)
    failed = sum(n for code, n in statuses.items() if code != 200)
    assert failed <= 1, statuses
    variant = docker_target.endpoints.get("iris").variant("iris-v2")
    assert variant is not None and "exited" in (variant.detail or "")
    assert docker_target.endpoints.get("iris").status == "unhealthy"


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory: pytest.TempPathFactory, iris: dict[str, Any]) -> Path:
    folder = tmp_path_factory.mktemp("mounted")
    (folder / "model.skops").write_bytes(Path(iris["v1"]).read_bytes())
    folder.chmod(0o755)
    return folder


CLOUDS = {
    "sagemaker": {
        "command": ["serve"],
        "mount": "/opt/ml/model",
        "environment": {},
        "port": 8080,
        "health": "/ping",
        "predict": "/invocations",
    },
    "vertex": {
        "command": None,
        "mount": "/mnt/model",
        "environment": {
            "AIP_HTTP_PORT": "7080",
            "AIP_HEALTH_ROUTE": "/v1/endpoints/e/deployedModels/m",
            "AIP_PREDICT_ROUTE": "/v1/endpoints/e/deployedModels/m:predict",
            "AIP_STORAGE_URI": "/mnt/model",
        },
        "port": 7080,
        "health": "/v1/endpoints/e/deployedModels/m",
        "predict": "/v1/endpoints/e/deployedModels/m:predict",
    },
    "azure": {
        "command": None,
        "mount": "/var/azureml-app/azureml-models/iris/1",
        "environment": {
            "AZUREML_MODEL_DIR": "/var/azureml-app/azureml-models/iris/1",
            "MLSHIFT_PORT": "5001",
        },
        "port": 5001,
        "health": "/ready",
        "predict": "/score",
    },
}


@pytest.mark.parametrize("cloud", sorted(CLOUDS))
def test_the_same_image_answers_each_clouds_contract(
    engine: Any, model_dir: Path, iris: dict[str, Any], cloud: str
) -> None:
    from mlshift.image import default_image

    spec = CLOUDS[cloud]
    container = engine.containers.run(
        default_image(),
        spec["command"],
        detach=True,
        environment=spec["environment"],
        volumes={str(model_dir): {"bind": spec["mount"], "mode": "ro"}},
        ports={f"{spec['port']}/tcp": ("127.0.0.1", None)},
        labels={"mlshift.test": cloud},
    )
    try:
        container.reload()
        port = int(container.attrs["NetworkSettings"]["Ports"][f"{spec['port']}/tcp"][0]["HostPort"])
        base = f"http://127.0.0.1:{port}"

        def healthy() -> bool:
            container.reload()
            assert container.status == "running", container.logs(tail=10).decode()
            try:
                return httpx.get(base + spec["health"], timeout=2, trust_env=False).status_code == 200
            except httpx.HTTPError:
                return False

        wait_for(healthy, 60, f"{cloud} health route {spec['health']}")
        resp = httpx.post(
            base + spec["predict"], json={"instances": iris["rows"]}, timeout=10, trust_env=False
        )
        assert resp.status_code == 200, resp.text
        assert resp.json()["predictions"] == iris["expected_v1"]
        if cloud == "azure":
            assert httpx.get(base + "/", timeout=2, trust_env=False).status_code == 200  # liveness
    finally:
        container.remove(force=True)


def test_the_next_apply_restores_a_killed_container(
    engine: Any, docker_target: mlshift.Client, iris: dict[str, Any], state_dir: Path
) -> None:
    from mlshift.specs.endpoint import EndpointSpec

    docker_target.models.register("iris", iris["v1"], framework="sklearn")
    docker_target.endpoints.deploy("iris", "iris:1", replicas=2)
    victim = next(c for c in ours(engine, state_dir) if c.labels["mlshift.replica"] == "1")
    survivor = next(c for c in ours(engine, state_dir) if c.labels["mlshift.replica"] == "0")
    victim.kill()
    wait_for(
        lambda: docker_target.endpoints.get("iris").variants[0].status == "failed",
        10,
        "endpoints show reporting the killed container",
    )
    spec = EndpointSpec.model_validate(
        {
            "name": "iris",
            "variants": [{"name": "iris-v1", "model": "iris:1", "weight": 100}],
            "compute": {"size": "cpu-small", "replicas": 2},
        }
    )
    plan = docker_target.plan(spec)
    assert [a.describe() for a in plan.actions] == [
        f"restore 1 replica of iris-v1 (iris:1): replica 1: container {victim.id[:12]} exited (code 137)"
    ]
    docker_target.apply(plan)

    state = docker_target.endpoints.get("iris")
    assert [(v.status, v.ready_replicas) for v in state.variants] == [("healthy", 2)]
    containers = ours(engine, state_dir)
    assert {c.status for c in containers} == {"running"}  # the killed one is removed
    assert sorted(c.labels["mlshift.replica"] for c in containers) == ["0", "1"]
    assert survivor.id in {c.id for c in containers} and victim.id not in {c.id for c in containers}
    assert docker_target.endpoints.predict("iris", iris["rows"]).predictions == iris["expected_v1"]
    assert docker_target.plan(spec).is_empty


STEP_SCRIPT = (
    "import json, os, pathlib, sys; a = dict(zip(sys.argv[1::2], sys.argv[2::2]));"
    "text = pathlib.Path(a['--data']).read_text();"
    "pathlib.Path(a['--out']).write_text(text.upper());"
    "pathlib.Path(a['--where']).write_text(json.dumps(os.path.exists('/.dockerenv')));"
    "pathlib.Path(a['--metrics']).write_text(json.dumps({'chars': len(text)}));"
    "print('mode', os.environ['MODE'])"
)


def test_container_steps_run_in_a_container_of_the_engine(
    engine: Any, state_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from mlshift.pipelines import load_pipeline

    # No docker CLI on PATH: local+docker:// runs the step through the Docker SDK, like replicas.
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))
    module = tmp_path / "boxed_steps.py"
    module.write_text(
        "from mlshift.pipelines import ContainerStep, OutputPath, pipeline, step\n\n"
        "@step\ndef source(data: OutputPath) -> None:\n    data.write_text('abc')\n\n"
        "@pipeline\ndef boxed() -> None:\n"
        "    raw = source()\n"
        f"    ContainerStep('shout', 'mlshift-base:bookworm', ['python3', '-c', {STEP_SCRIPT!r}],\n"
        "        ['--data', '{{inputs.data}}', '--out', '{{outputs.loud}}',\n"
        "         '--where', '{{outputs.inside}}', '--metrics', '{{metrics}}'],\n"
        "        inputs={'data': raw.outputs['data']}, outputs={'loud': 'artifact', 'inside': bool},\n"
        "        metrics=['chars'], env={'MODE': 'fast'})\n"
    )
    with mlshift.connect(f"local+docker://{state_dir}") as client:
        run = client.pipelines.run(load_pipeline(f"{module}:boxed")).wait()
        assert run.status == "succeeded", (run.message or "") + run.logs("shout")
        shout = run.step("shout")
        assert shout.outputs["inside"] is True  # it ran inside a container, not on the host
        assert shout.metrics == {"chars": 3.0}
        assert run.artifact_path("shout", "loud").read_text() == "ABC"
        assert "mode fast" in run.logs("shout")  # its output reached the step's log
    left = engine.containers.list(all=True, filters={"label": "mlshift.pipeline"})
    assert [c for c in left if c.labels.get("mlshift.run") == run.id] == []  # removed afterwards


IN_IMAGE = """
import importlib.util, sklearn.utils
from mlshift.image._serve import listed_estimators
real = sklearn.utils.all_estimators
assert listed_estimators(), "the image has no estimator list for its scikit-learn"
from skops.io._trusted_types import SKLEARN_ESTIMATOR_TYPE_NAMES as listed
expected = [f"{c.__module__}.{c.__name__}" for _, c in real() if c.__module__.startswith("sklearn.")]
assert listed == expected, (len(listed), len(expected))
assert importlib.util.find_spec("pip") is None, "pip is in the serving image"
print("listed", len(listed))
"""


def test_the_image_lists_scikit_learns_estimators_at_build_and_has_no_pip(engine: Any) -> None:
    from mlshift.image import default_image

    out = engine.containers.run(default_image(), ["python3", "-c", IN_IMAGE], remove=True)
    assert out.decode().startswith("listed ")


def test_a_versions_skops_trust_reaches_its_container(
    engine: Any, docker_target: mlshift.Client, iris: dict[str, Any], tmp_path: Path
) -> None:
    import numpy as np
    import skops.io
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import FunctionTransformer

    x = np.array(iris["rows"] * 10)
    y = np.array(iris["expected_v1"] * 10)
    model = make_pipeline(FunctionTransformer(np.asarray), LogisticRegression(max_iter=500)).fit(x, y)
    path = tmp_path / "trusting.skops"
    skops.io.dump(model, path)
    assert skops.io.get_untrusted_types(file=path) == ["numpy.asarray"]
    docker_target.models.register("asarray", path, skops_trust=["numpy.asarray"])
    docker_target.endpoints.deploy("asarray", "asarray:1")  # its container would exit untrusted
    answer = docker_target.endpoints.predict("asarray", iris["rows"])
    assert answer.predictions == model.predict(np.array(iris["rows"])).tolist()


def test_extra_packages_go_into_a_layer_of_their_own(engine: Any) -> None:
    from mlshift.image import build_image, default_image

    tag = "mlshift-test:extra-six"
    try:
        build_image(tag, extra_packages="six", client=engine, say=lambda line: None)
        image = engine.images.get(tag)
        assert image.labels["mlshift.extra-packages"] == "six"
        out = engine.containers.run(
            tag, ["python3", "-c", "import six, sklearn; print(six.__name__)"], remove=True
        )
        assert out.decode().strip() == "six"
        # Only the last layer, the extra packages', differs from the default image's: a registry
        # that has the default image receives only that one.
        default_layers = engine.images.get(default_image()).attrs["RootFS"]["Layers"]
        layers = image.attrs["RootFS"]["Layers"]
        assert layers[:-1] == default_layers[:-1] and layers[-1] != default_layers[-1]
    finally:
        with contextlib.suppress(Exception):
            engine.images.remove(tag, force=True)


def test_a_serving_image_built_from_other_inputs_is_rebuilt_saying_why(
    engine: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    import io

    from mlshift.image import (
        BASE_LABEL,
        DEFAULT_BASE_IMAGE,
        INPUTS_LABEL,
        default_image,
        image_inputs,
        outdated_because,
    )
    from mlshift.local import DockerRuntime

    current = default_image()
    assert outdated_because(engine, current, image_inputs(client=engine)) is None  # the session's build
    # An image of this name left by other code, built from a base of the user's choosing:
    # labelled with what this code would build it from, but for the code itself.
    monkeypatch.setattr(mlshift, "__version__", "0.0.0-outdated-test")
    stale = default_image()
    engine.images.get(DEFAULT_BASE_IMAGE).tag("mlshift-test-base", "own")
    base = "mlshift-test-base:own"
    labels = {
        **image_inputs(base_image=base, client=engine),
        f"{INPUTS_LABEL}.code": "sha256:other",
        INPUTS_LABEL: "sha256:x",
        BASE_LABEL: base,
    }
    engine.images.build(fileobj=io.BytesIO(f"FROM {current}\n".encode()), tag=stale, labels=labels, rm=True)
    try:
        said: list[str] = []
        assert DockerRuntime(client=engine, say=said.append).ensure_image("sklearn") == stale
        why = [line for line in said if line.startswith(f"building the serving image {stale}")]
        assert why == [
            f"building the serving image {stale}: mlshift's code or its requirements changed since it "
            "was built (later starts reuse it)"
        ]
        rebuilt = engine.images.get(stale).labels
        assert rebuilt[f"{INPUTS_LABEL}.code"] != "sha256:other"
        assert rebuilt[BASE_LABEL] == base  # rebuilt from the base it was built from
        assert outdated_because(engine, stale, image_inputs(base_image=base, client=engine)) is None
        # Up to date now: another runtime (a later deploy) reuses it without building.
        said.clear()
        assert DockerRuntime(client=engine, say=said.append).ensure_image("sklearn") == stale
        assert said == []
    finally:
        for name in (stale, "mlshift-test-base:own"):
            with contextlib.suppress(Exception):
                engine.images.remove(name, force=True)
