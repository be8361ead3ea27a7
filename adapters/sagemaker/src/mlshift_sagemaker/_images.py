"""Which image serves a model on SageMaker, checked at plan time, and what it is given.

Three choices, per target and per endpoint (the endpoint's wins):

- ``image_uri``: an explicit ECR image, used as is (mlshift cannot know what it needs).
- ``image: mlshift`` (the default): the mlshift serving image in the ``ecr_repository`` of your
  account, tagged with the mlshift version. Planning checks the tag exists
  (``ecr:DescribeImages``) and otherwise fails before anything is created, naming the command
  that pushes it (``python -m mlshift_sagemaker.image push``).
- ``image: prebuilt``: AWS's prebuilt scikit-learn image, looked up offline with the SageMaker
  SDK (``sagemaker.core.image_uris``). That container wants a ``model.tar.gz`` with an inference
  script, so mlshift packages the artifact with :mod:`mlshift_sagemaker.image.sklearn_inference`
  and uploads it once per content digest, next to the artifact.
"""

from __future__ import annotations

import gzip
import hashlib
import importlib.metadata
import io
import logging
import tarfile
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from mlshift.errors import ConfigError, NotFound
from mlshift.specs.model import ModelRef
from mlshift_sagemaker.errors import aws_errors, error_code

if TYPE_CHECKING:
    from mlshift.specs.endpoint import EndpointSpec
    from mlshift.specs.model import ModelVersion
    from mlshift_sagemaker._adapter import SageMakerAdapter
    from mlshift_sagemaker.options import EndpointOptions

__all__ = [
    "DEFAULT_REPOSITORY",
    "IMAGES_EXTRA",
    "PREBUILT_FRAMEWORKS",
    "ImageChoice",
    "ServingImages",
    "mlshift_image_uri",
    "package_prebuilt",
    "prebuilt_image_uri",
    "prebuilt_package",
    "push_command",
]

logger = logging.getLogger("mlshift.sagemaker")

DEFAULT_REPOSITORY = "mlshift-serving"
#: What installs the SageMaker SDK's offline image lookup.
IMAGES_EXTRA = 'pip install "mlshift-sagemaker[images]"'
#: mlshift framework → the SageMaker SDK's framework name. AWS has no prebuilt serving image
#: for ONNX models, and a ``predictor`` directory is mlshift's own contract.
PREBUILT_FRAMEWORKS = {"sklearn": "sklearn"}
#: The prebuilt scikit-learn container imports this file from ``/opt/ml/model/code``.
_PROGRAM = "inference.py"
_MISSING_IMAGE = frozenset({"RepositoryNotFoundException", "ImageNotFoundException"})
_DENIED = frozenset({"AccessDeniedException", "AccessDenied", "UnauthorizedOperation"})


def mlshift_image_uri(account: str, region: str, repository: str, tag: str) -> str:
    """``ACCOUNT.dkr.ecr.REGION.amazonaws.com[.cn]/REPOSITORY:TAG``."""
    domain = "amazonaws.com.cn" if region.startswith("cn-") else "amazonaws.com"
    return f"{account}.dkr.ecr.{region}.{domain}/{repository}:{tag}"


def push_command(target: str, repository: str = DEFAULT_REPOSITORY) -> str:
    """The command that builds and pushes the mlshift serving image for ``target``."""
    extra = "" if repository == DEFAULT_REPOSITORY else f" --repository {repository}"
    return f"python -m mlshift_sagemaker.image push --target {target}{extra}"


def prebuilt_image_uri(
    framework: str, region: str, version: str | None = None, instance_type: str | None = None
) -> str:
    """AWS's prebuilt serving image for ``framework``, from the SageMaker SDK's bundled tables.

    No AWS call is made. Importing ``sagemaker.core`` takes 1.5-2 s (it pulls pandas and
    scipy), so it happens here, once a prebuilt image is asked for.

    Args:
        framework: An mlshift framework (``sklearn``).
        region: The AWS region.
        version: The container version (``1.2-1``); default: the newest the SDK knows.
        instance_type: The hosting instance type (``None`` for serverless endpoints).

    Raises:
        ImportError: the SageMaker SDK is not installed (names the install command).
        ConfigError: a framework without a prebuilt image, or a version or region the SDK
            does not know (field ``framework_version`` / ``target``).
    """
    name = PREBUILT_FRAMEWORKS.get(framework)
    if name is None:
        raise ConfigError(
            f"AWS has no prebuilt serving image for {framework} models",
            field="image",
            hint=f"prebuilt images exist for: {', '.join(sorted(PREBUILT_FRAMEWORKS))}; "
            "use image 'mlshift' (the default) for the others",
        )
    try:
        from sagemaker.core import image_uris
    except ImportError:
        raise ConfigError(
            "image: prebuilt looks up AWS's prebuilt images with the SageMaker SDK, which is not installed",
            field="image",
            hint=IMAGES_EXTRA,
        ) from None
    try:
        uri: str = image_uris.retrieve(
            name, region=region, version=version, instance_type=instance_type, image_scope="inference"
        )
    except ValueError as exc:
        text = str(exc)
        where = "framework_version" if "version" in text.split(":", 1)[0].lower() else "target"
        raise ConfigError(
            f"no prebuilt {framework} image: {text}",
            field=where,
            hint=f"known versions: {', '.join(image_uris.list_versions(name, 'inference'))}"
            if where == "framework_version"
            else None,
        ) from None
    return uri


@dataclass(frozen=True)
class ImageChoice:
    """Which image the models of one endpoint get, and where that choice was made.

    Attributes:
        kind: ``explicit`` (an ``image_uri``), ``mlshift`` or ``prebuilt``.
        field: The option that decided it (``provider_options.sagemaker.image``, ...).
        uri: The explicit URI (``explicit`` only).
        framework_version: The prebuilt container version (``prebuilt`` only; ``None``: newest).
        version_field: The option ``framework_version`` came from.
    """

    kind: Literal["explicit", "mlshift", "prebuilt"]
    field: str
    uri: str | None = None
    framework_version: str | None = None
    version_field: str = "target.options.framework_version"


class ServingImages:
    """The serving images of one adapter: choice, plan-time checks and model containers."""

    def __init__(self, adapter: SageMakerAdapter) -> None:
        self._adapter = adapter
        self._present: set[str] = set()
        self._prebuilt: dict[tuple[str, str | None, str | None], str] = {}
        #: Packages that containers name and that may still need uploading: URI → version.
        self._packages: dict[str, ModelVersion] = {}
        self._lock = threading.Lock()

    # ---------------------------------------------------------------- choosing

    def mlshift_uri(self) -> str:
        """The mlshift serving image of this target (its account, region and ``ecr_repository``)."""
        import mlshift

        adapter = self._adapter
        return mlshift_image_uri(
            adapter.clients.account_id, adapter.region, adapter.options.ecr_repository, mlshift.__version__
        )

    def choice(self, options: EndpointOptions) -> ImageChoice:
        """The endpoint's ``image_uri`` or ``image``, else the target's."""
        target = self._adapter.options
        version = options.framework_version or target.framework_version
        source = "provider_options.sagemaker" if options.framework_version else "target.options"
        version_field = f"{source}.framework_version"
        if options.image_uri is not None:
            return ImageChoice("explicit", "provider_options.sagemaker.image_uri", uri=options.image_uri)
        if options.image is not None:
            field = "provider_options.sagemaker.image"
            if options.image == "prebuilt":
                return ImageChoice("prebuilt", field, framework_version=version, version_field=version_field)
            return ImageChoice("mlshift", field)
        if target.image_uri is not None:
            return ImageChoice("explicit", "target.options.image_uri", uri=target.image_uri)
        if target.image == "prebuilt":
            return ImageChoice(
                "prebuilt", "target.options.image", framework_version=version, version_field=version_field
            )
        return ImageChoice("mlshift", "target.options.image")

    # ---------------------------------------------------------------- plan time

    def check(
        self,
        spec: EndpointSpec,
        options: EndpointOptions,
        *,
        creates_models: Callable[[], bool] = lambda: True,
    ) -> None:
        """What the endpoint's image needs, checked before anything is created.

        ``mlshift``: the image tag exists in ECR, when the plan makes new SageMaker models
        (``creates_models()``; an endpoint whose variants keep their models keeps their image,
        so upgrading mlshift does not stop plans of endpoints it would not change).
        ``prebuilt``: every variant's model has a prebuilt image, and the SDK knows the version
        (a model registered by this same plan is checked when its variant is created, before
        its SageMaker model is).

        Raises:
            NotFound: the mlshift image is not in ECR (with the command that pushes it).
            ConfigError: a framework AWS has no prebuilt image for, naming the field.
            ConfigError: ``prebuilt`` without the SageMaker SDK installed (naming the extra).
        """
        choice = self.choice(options)
        if options.framework_version is not None and choice.kind != "prebuilt":
            raise ConfigError(
                f"endpoint {spec.name!r}: provider_options.sagemaker.framework_version: it picks the "
                f"version of a prebuilt image, and this endpoint's image is {choice.kind} ({choice.field})",
                field="provider_options.sagemaker.framework_version",
                hint="add image: prebuilt, or remove framework_version",
            )
        if choice.kind == "mlshift":
            if creates_models():  # asked only now: the checks above need no call at all
                self.require_pushed(self.mlshift_uri())
        elif choice.kind == "prebuilt":
            for i, variant in enumerate(spec.variants):
                try:
                    version = self._adapter.models.get(ModelRef.parse(variant.model))
                except NotFound:
                    continue  # registered by this plan: checked when the variant is created
                self._prebuilt_uri(spec.name, version, choice, None, where=f"variants[{i}].model")

    def require_pushed(self, uri: str) -> None:
        """Fail unless ``uri`` (an image of this account's ECR) exists; checked once per adapter.

        A caller who may not read ECR (``AccessDenied``) is not stopped: SageMaker's execution
        role pulls the image, not the caller, so the check is skipped with a warning.

        Raises:
            NotFound: no such repository or tag, with the command that pushes it.
        """
        if uri in self._present:
            return
        repository, tag = uri.split("/", 1)[1].rsplit(":", 1)
        ecr = self._adapter.clients.client("ecr")
        try:
            ecr.describe_images(
                registryId=self._adapter.clients.account_id,
                repositoryName=repository,
                imageIds=[{"imageTag": tag}],
            )
        except Exception as exc:
            code = error_code(exc)
            if code in _MISSING_IMAGE:
                missing = (
                    f"no repository {repository!r}" if code.startswith("Repository") else f"no tag {tag!r}"
                )
                raise NotFound(
                    f"the mlshift serving image {uri} is not in ECR ({missing})",
                    provider="sagemaker",
                    provider_code=code,
                    hint=f"push it with `{push_command(self._adapter.uri.raw, repository)}`, "
                    "or choose another image with the image_uri or image option",
                ) from None
            if code in _DENIED:
                logger.warning("cannot check that %s exists (%s); SageMaker will pull it", uri, code)
            else:
                with aws_errors(f"check that the serving image {uri} exists"):
                    raise
        with self._lock:
            self._present.add(uri)

    def _prebuilt_uri(
        self,
        endpoint: str,
        version: ModelVersion,
        choice: ImageChoice,
        instance_type: str | None,
        *,
        where: str,
    ) -> str:
        key = (version.framework, choice.framework_version, instance_type)
        found = self._prebuilt.get(key)
        if found is not None:
            return found
        try:
            uri = prebuilt_image_uri(
                version.framework, self._adapter.region, choice.framework_version, instance_type
            )
        except ConfigError as exc:
            field = {"image": choice.field, "framework_version": choice.version_field}
            path = field.get(exc.field or "", "target")
            raise ConfigError(
                f"endpoint {endpoint!r}: {path}: {exc.message} ({where} is {version.name}:{version.version}, "
                f"a {version.framework} model)",
                field=path,
                hint=exc.hint,
            ) from None
        with self._lock:
            self._prebuilt[key] = uri
        return uri

    # ---------------------------------------------------------------- apply time

    def container(
        self,
        endpoint: str,
        version: ModelVersion,
        options: EndpointOptions,
        *,
        environment: dict[str, str],
        model_data: dict[str, Any],
        instance_type: str | None,
        image: str | None = None,
    ) -> dict[str, Any]:
        """The ``PrimaryContainer`` of a SageMaker model serving ``version``.

        For the mlshift image (or an explicit one): the artifact's folder, uncompressed, and
        the ``MLSHIFT_*`` variables (in ``image`` if given: the mlshift image a live variant
        already runs). For a prebuilt image: the ``model.tar.gz`` package (named here, uploaded
        by :meth:`prepare` before the model is created) and the variables AWS's container reads.
        Reads only.

        Raises:
            NotFound: the mlshift image is not in ECR.
            ConfigError: a framework AWS has no prebuilt image for.
        """
        choice = self.choice(options)
        if choice.kind == "explicit":
            assert choice.uri is not None
            return {"Image": choice.uri, "ModelDataSource": model_data, "Environment": environment}
        if choice.kind == "mlshift":
            # ``image``: the one a live variant runs, kept when only its options change.
            uri = image or self.mlshift_uri()
            if image is None:
                self.require_pushed(uri)
            return {"Image": uri, "ModelDataSource": model_data, "Environment": environment}
        image = self._prebuilt_uri(endpoint, version, choice, instance_type, where="the variant's model")
        data_url, entry = prebuilt_package(self._adapter, version)
        with self._lock:
            self._packages[data_url] = version
        env = {
            **environment,
            "MLSHIFT_ARTIFACT": "/opt/ml/model/" + entry,
            "SAGEMAKER_PROGRAM": _PROGRAM,
            "SAGEMAKER_SUBMIT_DIRECTORY": "/opt/ml/model/code",
            "SAGEMAKER_CONTAINER_LOG_LEVEL": "20",
            "SAGEMAKER_REGION": self._adapter.region,
        }
        return {"Image": image, "ModelDataUrl": data_url, "Environment": env}

    def prepare(self, container: dict[str, Any]) -> None:
        """Upload what ``container`` needs and is not stored yet (a prebuilt-image package)."""
        url = str(container.get("ModelDataUrl"))
        with self._lock:
            version = self._packages.get(url)
        if version is not None:
            package_prebuilt(self._adapter, version)
            with self._lock:
                self._packages.pop(url, None)


# ---------------------------------------------------------------- packaging for prebuilt images


def inference_script() -> bytes:
    """The source of the inference script AWS's scikit-learn container runs."""
    return (Path(__file__).parent / "image" / "sklearn_inference.py").read_bytes()


def _requirements(entry: str) -> bytes:
    """What the container installs before importing the script (it has sklearn and joblib)."""
    if not entry.endswith(".skops"):
        return b""
    try:  # the version that wrote the file reads it back
        return f"skops=={importlib.metadata.version('skops')}\n".encode()
    except importlib.metadata.PackageNotFoundError:
        return b"skops\n"


def _add(archive: tarfile.TarFile, name: str, data: bytes | None = None, path: Path | None = None) -> None:
    # Fixed metadata: the same inputs make the same bytes, so the package is content-addressed.
    info = tarfile.TarInfo(name)
    info.mode, info.mtime, info.uid, info.gid, info.uname, info.gname = 0o644, 0, 0, 0, "", ""
    if path is not None:
        info.size = path.stat().st_size
        with path.open("rb") as f:
            archive.addfile(info, f)
    else:
        assert data is not None
        info.size = len(data)
        archive.addfile(info, io.BytesIO(data))


def prebuilt_package(adapter: SageMakerAdapter, version: ModelVersion) -> tuple[str, str]:
    """Where the prebuilt-image package of ``version`` is (or goes), and its model file's name.

    The package holds the model file at its root, ``code/inference.py`` and, for ``.skops``
    files, ``code/requirements.txt``. Its key carries a digest of all of that, next to the
    artifact: ``.../artifacts/sha256/<artifact>/prebuilt/<package digest>/model.tar.gz``.
    Reads only (the artifact's manifest).

    Raises:
        ConfigError: a directory artifact (the prebuilt container loads one model file).
        NotFound: the artifact is not stored.
    """
    store = adapter.store
    manifest = store.get_json(store.artifacts.key(version.digest, "manifest.json"))
    if manifest is None:
        raise NotFound(
            f"artifact {version.digest} of {version.name}:{version.version} is not stored",
            provider="sagemaker",
            hint="register the model again to upload it",
        )
    if manifest[0].get("kind") != "file":
        raise ConfigError(
            f"model {version.name}:{version.version} is a directory; AWS's prebuilt image serves one "
            ".skops/.joblib/.pkl file",
            field="image",
            hint="use image 'mlshift' for this model",
        )
    entry = str(manifest[0]["entry"])
    recipe = hashlib.sha256()
    for part in (version.digest.encode(), entry.encode(), inference_script(), _requirements(entry)):
        recipe.update(hashlib.sha256(part).digest())
    key = store.artifacts.key(version.digest, "prebuilt", recipe.hexdigest()[:32], "model.tar.gz")
    return store.uri(key), entry


def package_prebuilt(adapter: SageMakerAdapter, version: ModelVersion) -> tuple[str, str]:
    """Upload the prebuilt-image package of ``version`` unless it is stored already.

    Returns:
        The package's ``s3://`` URI and the model file's name inside it (see
        :func:`prebuilt_package`).

    Raises:
        ConfigError: a directory artifact.
    """
    url, entry = prebuilt_package(adapter, version)
    store = adapter.store
    key = url.removeprefix(f"s3://{store.bucket}/")
    if store.exists(key):
        return url, entry
    script, requirements = inference_script(), _requirements(entry)
    path = adapter.models.artifact_path(version)
    with tempfile.TemporaryDirectory(dir=adapter.cache_dir) as tmp:
        package = Path(tmp) / "model.tar.gz"
        with (
            package.open("wb") as raw,
            gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as zipped,
            tarfile.open(fileobj=zipped, mode="w", format=tarfile.PAX_FORMAT) as archive,
        ):
            _add(archive, entry, path=path)
            _add(archive, f"code/{_PROGRAM}", script)
            if requirements:
                _add(archive, "code/requirements.txt", requirements)
        store.upload_file(key, package)
    logger.info("uploaded %s", url)
    return url, entry
