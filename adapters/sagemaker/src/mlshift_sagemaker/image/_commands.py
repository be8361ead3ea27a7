"""Build the mlshift serving image, push it to ECR, and start it (``serve``, inside the image).

Docker is driven through its CLI (``docker``, or ``--docker podman``); nothing here needs
docker-py. The ECR password goes to ``docker login --password-stdin`` and nowhere else: it is
never an argument, never printed, never written by mlshift.
"""

from __future__ import annotations

import base64
import importlib.metadata
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlshift.errors import ConfigError, ProviderError
from mlshift_sagemaker._images import mlshift_image_uri
from mlshift_sagemaker.errors import aws_errors, error_code

if TYPE_CHECKING:
    from mlshift_sagemaker._adapter import SageMakerAdapter

__all__ = ["build_context", "build_image", "push_image", "serve_arguments"]

_HERE = Path(__file__).parent
#: What the image installs from the wheels (every framework the model server loads).
_REQUIREMENTS = (("mlshift", "serve,sklearn,onnx"), ("mlshift-sagemaker", ""))

Say = Callable[[str], None]


def _say(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


def default_base_image() -> str:
    """``python:X.Y-slim`` for this interpreter's X.Y: the wheels built here install there."""
    return f"python:{sys.version_info.major}.{sys.version_info.minor}-slim"


def default_tag() -> str:
    """The mlshift version: the tag the SageMaker target looks for."""
    import mlshift

    return mlshift.__version__


def _requirement(name: str, extras: str) -> str:
    """``name[extras] @ file:///source`` for a local or editable install, else ``name[extras]==version``."""
    dist = importlib.metadata.distribution(name)
    spec = f"{name}[{extras}]" if extras else name
    direct = dist.read_text("direct_url.json")
    if direct:
        url = json.loads(direct).get("url", "")
        if url.startswith("file://"):
            return f"{spec} @ {url}"
    return f"{spec}=={dist.version}"


def build_context(dest: Path, *, wheels: Path | None = None, say: Say = _say) -> Path:
    """Write a build context: ``Dockerfile``, ``serve`` and ``wheels/``.

    Args:
        dest: An empty or new folder.
        wheels: A folder of wheels to copy (mlshift, mlshift-sagemaker and their dependencies,
            for the image's platform and Python). Default: ``pip wheel`` them here, from the
            installed versions (or their source folders, for editable installs).
        say: Where progress goes.

    Raises:
        ConfigError: ``wheels`` holds no wheel, or wheels would be built on a non-Linux host.
        ProviderError: ``pip wheel`` failed.
    """
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_HERE / "Dockerfile", dest / "Dockerfile")
    shutil.copyfile(_HERE / "serve", dest / "serve")
    (dest / "serve").chmod(0o755)
    target = dest / "wheels"
    target.mkdir(exist_ok=True)
    if wheels is not None:
        found = sorted(Path(wheels).glob("*.whl"))
        if not found:
            raise ConfigError(f"no .whl files in {str(wheels)!r}", field="--wheels")
        for wheel in found:
            shutil.copy2(wheel, target / wheel.name)
        say(f"copied {len(found)} wheels from {wheels}")
        return dest
    if not sys.platform.startswith("linux"):
        raise ConfigError(
            f"wheels built on {sys.platform} do not install in a Linux image",
            field="--wheels",
            hint="build on Linux, or pass --wheels DIR filled with `pip download --only-binary=:all: "
            "--platform manylinux2014_x86_64 --python-version X.Y ...` plus `pip wheel` of mlshift",
        )
    requirements = [_requirement(name, extras) for name, extras in _REQUIREMENTS]
    say(f"building wheels for {', '.join(requirements)}")
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", str(target), *requirements]
    if subprocess.run(command, check=False, stdin=subprocess.DEVNULL).returncode != 0:
        raise ProviderError(f"`{' '.join(command)}` failed (see its output above)", provider="pip")
    return dest


def _docker(docker: str) -> str:
    found = shutil.which(docker)
    if found is None:
        raise ConfigError(
            f"{docker!r} was not found on PATH",
            field="--docker",
            hint="install Docker (or podman), or pass --docker /path/to/docker",
        )
    return found


def _run(command: Sequence[str], what: str, *, stdin_text: str | None = None, quiet: bool = False) -> None:
    """Run a docker command; its output goes to the terminal unless ``quiet``."""
    result = subprocess.run(
        list(command),
        input=stdin_text,
        stdin=subprocess.DEVNULL if stdin_text is None else None,
        capture_output=quiet,
        text=True,
        check=False,
    )
    if result.returncode != 0:
        detail = (result.stderr or "").strip()[-500:] if quiet else "see its output above"
        raise ProviderError(f"{what} failed (exit {result.returncode}): {detail}", provider="docker")


def build_image(
    tag: str,
    *,
    base_image: str | None = None,
    wheels: Path | None = None,
    docker: str = "docker",
    context: Path | None = None,
    say: Say = _say,
) -> str:
    """``docker build`` the serving image as ``tag``; returns ``tag``.

    Args:
        tag: The local image name (``mlshift-serving:0.1.0``).
        base_image: The ``BASE_IMAGE`` build argument (default ``python:X.Y-slim``).
        wheels: See :func:`build_context`.
        docker: The docker (or podman) executable.
        context: Where to write the build context (default: a temporary folder, removed after).
        say: Where progress goes.

    Raises:
        ConfigError: no docker, or unusable wheels.
        ProviderError: the build failed.
    """
    executable = _docker(docker)
    base = base_image or default_base_image()
    import tempfile

    with tempfile.TemporaryDirectory(prefix="mlshift-image-") as tmp:
        folder = build_context(context or Path(tmp) / "context", wheels=wheels, say=say)
        say(f"building {tag} from {base}")
        _run(
            [executable, "build", "--build-arg", f"BASE_IMAGE={base}", "--tag", tag, str(folder)],
            f"docker build of {tag}",
        )
    return tag


def _ensure_repository(adapter: SageMakerAdapter, repository: str, say: Say) -> None:
    ecr = adapter.clients.client("ecr")
    try:
        ecr.describe_repositories(registryId=adapter.clients.account_id, repositoryNames=[repository])
        return
    except Exception as exc:
        if error_code(exc) != "RepositoryNotFoundException":
            with aws_errors(f"read ECR repository {repository!r}"):
                raise
    with aws_errors(f"create ECR repository {repository!r}"):
        ecr.create_repository(
            repositoryName=repository,
            imageScanningConfiguration={"scanOnPush": True},
            tags=adapter.resource_tags({"mlshift:managed": "true"}),
        )
    say(f"created ECR repository {repository} in {adapter.region}")


def push_image(
    adapter: SageMakerAdapter,
    *,
    local_image: str,
    repository: str | None = None,
    tag: str | None = None,
    docker: str = "docker",
    say: Say = _say,
) -> str:
    """Push ``local_image`` to the target's ECR as the mlshift serving image; returns its URI.

    Creates the repository if needed, logs docker in with a token from
    ``ecr:GetAuthorizationToken`` (through stdin: never an argument, never printed), tags and
    pushes.

    Raises:
        ConfigError: no docker.
        ProviderError: an AWS or docker step failed (``AuthError`` for missing permissions).
    """
    executable = _docker(docker)
    repository = repository or adapter.options.ecr_repository
    tag = tag or default_tag()
    account = adapter.clients.account_id
    uri = mlshift_image_uri(account, adapter.region, repository, tag)
    _ensure_repository(adapter, repository, say)
    with aws_errors("get an ECR login token (ecr:GetAuthorizationToken)"):
        data: dict[str, Any] = adapter.clients.client("ecr").get_authorization_token()["authorizationData"][0]
    user, _, password = base64.b64decode(data["authorizationToken"]).decode().partition(":")
    registry = str(data.get("proxyEndpoint") or "https://" + uri.split("/", 1)[0]).removeprefix("https://")
    say(f"logging docker in to {registry}")
    _run(
        [executable, "login", "--username", user, "--password-stdin", registry],
        f"docker login to {registry}",
        stdin_text=password,
        quiet=True,
    )
    _run([executable, "tag", local_image, uri], f"docker tag {local_image} {uri}")
    say(f"pushing {uri}")
    _run([executable, "push", uri], f"docker push {uri}")
    say(f"pushed {uri}")
    return uri


def serve_arguments(environ: Mapping[str, str] | None = None) -> list[str]:
    """``python -m mlshift.serving`` arguments for the model SageMaker mounted at /opt/ml/model.

    The adapter describes the model in ``MLSHIFT_*`` variables of the SageMaker model;
    ``SAGEMAKER_BIND_TO_PORT`` (set by SageMaker for some setups) overrides port 8080. The
    server listens on ``MLSHIFT_SERVE_HOST``: the image sets ``0.0.0.0`` (SageMaker reaches the
    container from outside); anywhere else it defaults to 127.0.0.1.
    """
    env = os.environ if environ is None else environ
    args = [
        "--artifact",
        env.get("MLSHIFT_ARTIFACT") or "/opt/ml/model",
        "--host",
        env.get("MLSHIFT_SERVE_HOST") or "127.0.0.1",
        "--port",
        env.get("SAGEMAKER_BIND_TO_PORT") or "8080",
    ]
    for variable, option in (
        ("MLSHIFT_FRAMEWORK", "--framework"),
        ("MLSHIFT_MODEL_DIGEST", "--digest"),
        ("MLSHIFT_SIGNATURE", "--signature-json"),
        ("MLSHIFT_VARIANT", "--variant"),
        ("MLSHIFT_MODEL_REF", "--model-ref"),
    ):
        if env.get(variable):
            args += [option, env[variable]]
    return args
