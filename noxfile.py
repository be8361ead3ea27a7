"""The front door for every habit: ``nox -s tests lint typing``, ``nox -s demo``, ``nox -s bench``."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import nox

nox.options.sessions = ["tests", "lint", "typing"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = False

#: import-linter: tests/test_imports.py checks the custom contract type in tools/ it plugs into.
TEST_DEPS = [
    "pytest>=8",
    "pytest-timeout>=2.3",
    "hypothesis>=6.100",
    "skl2onnx>=1.16",
    "import-linter>=2",
    # The Open Inference Protocol routes are tested with the real Triton client.
    "tritonclient[http]>=2.40",
]
#: The example notebook runs in the tests (tests/test_notebooks.py), in ipykernel's own kernel.
NOTEBOOK_TEST_DEPS = ["nbclient>=0.10", "nbformat>=5.10", "ipykernel>=6.29"]
#: KFP's PipelineSpec protobuf (small; not kfp itself): the KFP compiler's tests parse every
#: compiled spec with it. It imports google.rpc, from googleapis-common-protos.
KFP_SPEC_DEPS = ["kfp-pipeline-spec>=2.17", "googleapis-common-protos>=1.56"]
EXTRAS = ".[serve,sklearn,onnx,xgboost,lightgbm,docker]"
#: The MLflow interop tests start a real `mlflow server` (SQLite backend) and log models to it.
MLFLOW_TEST_DEPS = ["mlflow>=2.16"]
#: hatchling lets `mlshift image build` make mlshift's wheel without an isolated build env.
DOCKER_TEST_DEPS = ["hatchling>=1.25"]
#: Cloud adapters, each a distribution of its own with its own tests and pytest/ruff/mypy config.
SAGEMAKER = "adapters/sagemaker"
# moto[server]: one test runs the adapter against moto_server through AWS_ENDPOINT_URL.
SAGEMAKER_TEST_DEPS = ["-e", f"{SAGEMAKER}[testing]", "moto[server]"]
#: What mlshift-sagemaker[images] adds (the prebuilt-image lookup), so its tests run too.
SAGEMAKER_IMAGES = "sagemaker-core>=2,<3"
VERTEX = "adapters/vertex"
# google-cloud-aiplatform (its low-level clients); the kit's fake is stdlib HTTP on 127.0.0.1.
VERTEX_TEST_DEPS = ["-e", f"{VERTEX}[testing]"]
#: The Azure ML adapter: its kit fakes Azure under the real azure-ai-ml SDK (no extra deps).
AZUREML = "adapters/azureml"
AZUREML_TEST_DEPS = ["-e", f"{AZUREML}[testing]"]


@nox.session
def tests(session: nox.Session) -> None:
    """Run the test suite (what CI runs). Extra arguments go to pytest."""
    session.install(
        "-e",
        EXTRAS,
        *SAGEMAKER_TEST_DEPS,
        *VERTEX_TEST_DEPS,
        *TEST_DEPS,
        *KFP_SPEC_DEPS,
        SAGEMAKER_IMAGES,
        *DOCKER_TEST_DEPS,
        *NOTEBOOK_TEST_DEPS,
        *MLFLOW_TEST_DEPS,
    )
    session.install(*AZUREML_TEST_DEPS)
    if session.posargs:
        with _docker_engine(session) as docker_env:
            session.run("pytest", *session.posargs, env=docker_env)
        return
    # The adapters' suites run while the core suite does (one after another, beside it): the
    # core suite spends most of its time waiting on servers and bakes, so the two share two
    # cores well (CI: 25 min in sequence). Each suite has its own rootdir, conftest and
    # --basetemp; ports come from the OS; nothing else is shared.
    adapters = _AdapterSuites(session, [SAGEMAKER, VERTEX, AZUREML])
    adapters.start()
    try:
        with _docker_engine(session) as docker_env:
            # pytest exits 5 when it collected nothing; nox fails on any non-zero code, so an
            # empty run can never pass silently.
            session.run("pytest", "-q", env=docker_env)
    finally:
        adapters.finish()


class _AdapterSuites:
    """The adapters' pytest suites, run one after another in a thread; output shown at the end."""

    def __init__(self, session: nox.Session, folders: list[str]) -> None:
        import tempfile
        import threading

        self.session = session
        self.folders = folders
        self.results: list[tuple[str, int, str, float]] = []
        self.base = tempfile.mkdtemp(prefix="mlshift-adapter-tests-")
        self.thread = threading.Thread(target=self._run, name="adapter-suites", daemon=True)

    def start(self) -> None:
        self.thread.start()

    def _run(self) -> None:
        pytest = str(Path(self.session.bin) / "pytest")
        env = {**os.environ, "PATH": f"{self.session.bin}{os.pathsep}{os.environ.get('PATH', '')}"}
        for folder in self.folders:
            started = time.monotonic()
            basetemp = str(Path(self.base) / Path(folder).name)
            done = subprocess.run(
                [pytest, "-q", "--basetemp", basetemp],
                cwd=folder,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                check=False,
            )
            self.results.append((folder, done.returncode, done.stdout, time.monotonic() - started))

    def finish(self) -> None:
        """Wait for the suites (all of them, even if the core suite failed) and report each."""
        self.thread.join()
        failed = []
        for folder, code, output, seconds in self.results:
            self.session.log(f"{folder}: pytest exited {code} after {seconds:.0f} s")
            print(output, end="", flush=True)
            if code != 0:
                failed.append(folder)
        missing = [f for f in self.folders if f not in [r[0] for r in self.results]]
        if failed or missing:
            self.session.error(f"adapter tests failed: {', '.join(failed + missing)}")


@contextlib.contextmanager
def _docker_engine(session: nox.Session) -> Iterator[dict[str, str]]:
    """A Docker engine and the offline base image for the Docker tests; yields pytest's env.

    `.ci/docker-up` finds a running engine or installs and starts one (its own data root in
    ~/.cache/mlshift/docker); a dockerd it started is stopped again afterwards. With CI=true
    a missing engine fails the session (the Docker tests never skip there); elsewhere it is a
    warning and those tests skip, saying how to run them.
    """
    ci = os.environ.get("CI", "").lower() == "true"
    started = time.monotonic()
    up = subprocess.run([".ci/docker-up"], stdout=subprocess.PIPE, text=True, check=False)
    if up.returncode != 0:
        if ci:
            session.error("no Docker engine for the Docker tests (see docker-up's output above)")
        session.warn("no Docker engine: the Docker tests will skip (start Docker to run them)")
        yield {}
        return
    env = dict(line.split("=", 1) for line in up.stdout.splitlines() if "=" in line)
    pid = env.pop("DOCKERD_PID", None)
    try:
        # Once per machine: debootstrap + docker import, the root filesystem cached outside the clone.
        # Off CI a failure here (no root, no debootstrap) only makes the Docker tests skip.
        session.run("python", "-m", "mlshift.image", "base", env=env, success_codes=[0] if ci else [0, 1, 2])
        session.log(f"Docker engine and base image ready in {time.monotonic() - started:.0f} s")
        yield env
    finally:
        if pid is not None:
            session.log(f"stopping dockerd {pid}")
            with contextlib.suppress(ProcessLookupError):
                os.kill(int(pid), signal.SIGTERM)
            deadline = time.monotonic() + 60
            while time.monotonic() < deadline:
                try:
                    os.kill(int(pid), 0)
                except ProcessLookupError:
                    break
                time.sleep(0.2)


@nox.session(name="tests-core")
def tests_core(session: nox.Session) -> None:
    """Core tests with no model framework or cloud SDK installed (lazy imports hold)."""
    session.install("-e", ".", "pytest>=8", "pytest-timeout>=2.3", "hypothesis>=6.100")
    session.run(
        "pytest",
        "-q",
        "tests/test_imports.py",
        "tests/test_specs.py",
        "tests/test_config.py",
        "tests/test_pipelines_dsl.py",
    )


@nox.session
def lint(session: nox.Session) -> None:
    """ruff (lint and formatting) and the import contracts in .importlinter (lint-imports)."""
    session.install("ruff>=0.6", "import-linter>=2.1")
    paths = ["src", "tests", "examples", "bench", "tools", "noxfile.py", SAGEMAKER, VERTEX, AZUREML]
    session.run("ruff", "check", *paths)
    session.run("ruff", "format", "--check", *paths)
    # lint-imports reads the sources without importing them, so no install is needed;
    # tools/ holds the custom contract type.
    source_path = os.pathsep.join(["src", f"{SAGEMAKER}/src", f"{VERTEX}/src", f"{AZUREML}/src", "tools"])
    session.run("lint-imports", env={"PYTHONPATH": source_path})


@nox.session
def typing(session: nox.Session) -> None:
    """mypy --strict on src/ and the public-API typing tests."""
    session.install(
        "-e", EXTRAS, *SAGEMAKER_TEST_DEPS, *VERTEX_TEST_DEPS, "mypy>=1.10", "types-PyYAML", "pytest>=8"
    )
    session.install(*AZUREML_TEST_DEPS)
    session.run("mypy")
    with session.chdir(SAGEMAKER):  # strict, with its own overrides for boto3/botocore/moto
        session.run("mypy")
    with session.chdir(VERTEX):  # strict, with its own overrides for the Google libraries
        session.run("mypy")
    with session.chdir(AZUREML):  # strict; the Azure SDKs ship their own types
        session.run("mypy")


@nox.session
def crosscheck(session: nox.Session) -> None:
    """The SageMaker pipeline compiler against sagemaker-mlops, step for step (~1 GB install)."""
    session.install("-e", ".", "-e", SAGEMAKER, "sagemaker>=3,<4", "pytest>=8")
    with session.chdir(SAGEMAKER):
        session.run("pytest", "-q", "tests/test_crosscheck.py", env={"MLSHIFT_REQUIRE_CROSSCHECK": "1"})


@nox.session(name="crosscheck-kfp")
def crosscheck_kfp(session: nox.Session) -> None:
    """The KFP compiler against kfp's own compiler, and kfp loading every spec mlshift writes."""
    # hypothesis: the crosscheck reuses the pipelines of tests/test_pipelines_kfp.py.
    session.install("-e", ".", "kfp>=2.8,<3", *KFP_SPEC_DEPS, "pytest>=8", "hypothesis>=6.100")
    session.run("pytest", "-q", "tests/test_crosscheck_kfp.py", env={"MLSHIFT_REQUIRE_CROSSCHECK": "1"})


@nox.session(name="crosscheck-azureml")
def crosscheck_azureml(session: nox.Session) -> None:
    """The Azure ML pipeline jobs mlshift writes, loaded and schema-validated by azure-ai-ml's `load_job`."""
    session.install("-e", ".", *AZUREML_TEST_DEPS, "pytest>=8")
    with session.chdir(AZUREML):
        session.run(
            "pytest", "-q", "tests/test_pipelines_crosscheck.py", env={"MLSHIFT_REQUIRE_CROSSCHECK": "1"}
        )


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site (mkdocs, strict: broken links fail)."""
    session.install("mkdocs>=1.6")
    session.run("mkdocs", "build", "--strict", "--site-dir", "site")


@nox.session
def demo(session: nox.Session) -> None:
    """Train, register, deploy, predict and canary a model on the local target."""
    session.install("-e", ".[serve,sklearn]")
    session.run("python", "examples/quickstart.py", *session.posargs)


@nox.session
def bench(session: nox.Session) -> None:
    """Benchmarks against peers; rewrites docs/performance.md (not part of `tests`).

    Installs everything it measures: mlshift, kfp and the cloud SDKs in this venv
    (bench/requirements/peers.txt); mlflow, sagemaker, MLServer and BentoML each in a venv of
    its own beside it,
    since both pull large trees that pin differently; wrk with apt-get when it is missing
    (without apt-get the serving benchmark falls back to bench/loadgen.py, and says so).
    Installs go through uv, which the session installs first: pip needs minutes for the same.
    Arguments after `--` go to bench/run.py, e.g. `nox -s bench -- --only serving`.
    """
    import shutil
    import subprocess
    from pathlib import Path

    session.install("uv")
    uv = str(Path(session.bin) / "uv")
    python = str(Path(session.bin) / "python")
    quiet = ["--quiet", "--compile-bytecode"]
    # The adapters' testing kits: bench/cloud_calls.py counts the HTTP requests of a deploy on each.
    kits = [*SAGEMAKER_TEST_DEPS, *VERTEX_TEST_DEPS, *AZUREML_TEST_DEPS]
    ours = ["-e", ".[serve,sklearn,docker]", "-r", "bench/requirements/peers.txt", *kits]
    session.run(uv, "pip", "install", *quiet, "--python", python, *ours, external=True)
    sklearn = session.run("python", "-c", "import sklearn; print(sklearn.__version__)", silent=True)
    peers = Path(session.virtualenv.location).parent / "bench-peers"

    def peer_venv(name: str, *requirements: str) -> str:
        venv = peers / name
        if not (venv / "bin" / "python").exists():
            session.run(uv, "venv", "--quiet", "--python", python, str(venv), external=True)
        peer_python = str(venv / "bin" / "python")
        session.run(uv, "pip", "install", *quiet, "--python", peer_python, *requirements, external=True)
        return peer_python

    # The same scikit-learn in mlflow's venv as in ours: both servers load one estimator.
    same_sklearn = f"scikit-learn=={str(sklearn).strip()}"
    mlflow_python = peer_venv("mlflow", "-r", "bench/requirements/mlflow.txt", same_sklearn)
    sagemaker_python = peer_venv("sagemaker", "-r", "bench/requirements/sagemaker.txt")
    # The model-server peers (bench/peers.py), each in its own venv with our scikit-learn.
    mlserver_python = peer_venv("mlserver", "-r", "bench/requirements/mlserver.txt", same_sklearn)
    bentoml_python = peer_venv("bentoml", "-r", "bench/requirements/bentoml.txt", same_sklearn)

    if shutil.which("wrk") is None:
        apt = shutil.which("apt-get")
        root = hasattr(os, "geteuid") and os.geteuid() == 0
        sudo = [] if root else (["sudo", "-n"] if shutil.which("sudo") else None)
        if apt is None or sudo is None:
            session.warn(
                "wrk is not installed and cannot be installed here (needs apt-get as root): "
                "serving will use bench/loadgen.py, which tops out at a few thousand req/s"
            )
        else:
            session.log("installing wrk with apt-get")
            for cmd in (["apt-get", "update", "-qq"], ["apt-get", "install", "-y", "-qq", "wrk"]):
                if subprocess.run([*sudo, *cmd], check=False).returncode != 0:
                    session.warn(f"`{' '.join(cmd)}` failed: serving will use bench/loadgen.py")
                    break

    peer_args = [
        *("--mlflow-python", mlflow_python, "--sagemaker-python", sagemaker_python),
        *("--mlserver-python", mlserver_python, "--bentoml-python", bentoml_python),
    ]
    # The serving-image benchmark needs an engine; without one it reports "not measured".
    with _docker_engine(session) as docker_env:
        session.run(
            "python", "bench/run.py", *peer_args, *session.posargs, env={"MLSHIFT_BENCH": "1", **docker_env}
        )
