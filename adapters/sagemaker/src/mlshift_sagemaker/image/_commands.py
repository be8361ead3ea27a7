"""Build the SageMaker serving image on the core one, push it to ECR.

The image is mlshift's one serving image (:mod:`mlshift.image`: the model server for SageMaker's
container contract and every other cloud's) with this adapter added in its extra layer, so
that pipeline steps run ``python -m mlshift_sagemaker.step`` in it. It is built through the
Docker SDK (``DOCKER_HOST``), like every mlshift image; the push uses the ``docker`` CLI (or
``--docker podman``). The ECR password goes to ``docker login --password-stdin`` and nowhere
else: it is never an argument, never printed, never written by mlshift.
"""

from __future__ import annotations

import base64
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlshift.errors import ConfigError, ProviderError
from mlshift_sagemaker._images import mlshift_image_uri
from mlshift_sagemaker.errors import aws_errors, error_code

if TYPE_CHECKING:
    from mlshift_sagemaker._adapter import SageMakerAdapter

__all__ = ["DISTRIBUTION", "build_image", "default_tag", "local_image", "push_image"]

#: This adapter's distribution: its wheel goes into the image's extra layer.
DISTRIBUTION = "mlshift-sagemaker"

Say = Callable[[str], None]


def _say(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


def default_tag() -> str:
    """The mlshift version: the tag the SageMaker target looks for."""
    import mlshift

    return mlshift.__version__


def local_image(tag: str | None = None) -> str:
    """The local name of the SageMaker image: ``mlshift-serving:VERSION-sagemaker``.

    Not the core image's own name (``mlshift-serving:VERSION``): that one carries no adapter,
    and ``local+docker://`` rebuilds it when it finds an image built from other inputs.
    """
    from mlshift.image import IMAGE_REPOSITORY

    return f"{IMAGE_REPOSITORY}:{tag or default_tag()}-sagemaker"


def build_image(
    tag: str,
    *,
    frameworks: str | Sequence[str] | None = None,
    base_image: str | None = None,
    wheels: Path | None = None,
    context: Path | None = None,
    no_cache: bool = False,
    say: Say = _say,
    client: Any = None,
) -> str:
    """Build the SageMaker serving image as ``tag``: the core serving image with this adapter.

    Args:
        tag: The local image name (:func:`local_image` by default on the command line).
        frameworks: The image's framework sets (default: all of them, since one image serves
            every model of a target; see :data:`mlshift.image.FRAMEWORKS`).
        base_image: The core image's ``BASE_IMAGE`` (default: the offline Debian base that
            ``mlshift image base`` makes).
        wheels: A folder with every wheel to install (mlshift, mlshift-sagemaker and their
            dependencies) instead of building them here.
        context: Where to write the build context and keep it.
        no_cache: Rebuild every layer.
        say: Where progress goes.
        client: A ``docker.DockerClient`` (default: one for ``DOCKER_HOST``).

    Raises:
        ConfigError: ``wheels`` lacks the mlshift-sagemaker wheel, or another bad argument.
        DockerUnavailable: no Docker daemon.
        ImageNotFound: the base image is missing (the hint says how to make it).
        ProviderError: pip or the build failed.
    """
    from mlshift import image

    names = image.parse_frameworks(frameworks if frameworks is not None else sorted(image.FRAMEWORKS))
    if wheels is not None:
        if not any(w.name.startswith("mlshift_sagemaker-") for w in Path(wheels).glob("*.whl")):
            raise ConfigError(
                f"no mlshift_sagemaker-*.whl in {str(wheels)!r}: the SageMaker image runs pipeline "
                "steps with this adapter",
                field="--wheels",
                hint=f"add it with `pip wheel --no-deps --wheel-dir {wheels} mlshift-sagemaker` "
                "(or leave --wheels out)",
            )
        return image.build_image(
            tag,
            frameworks=names,
            base_image=base_image,
            wheels=wheels,
            context=context,
            no_cache=no_cache,
            say=say,
            client=client,
        )
    with tempfile.TemporaryDirectory(prefix="mlshift-sagemaker-wheel-") as tmp:
        own = image.project_wheel(DISTRIBUTION, Path(tmp), say=say)
        return image.build_image(
            tag,
            frameworks=names,
            base_image=base_image,
            context=context,
            no_cache=no_cache,
            extra_wheels=[own],
            say=say,
            client=client,
        )


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
