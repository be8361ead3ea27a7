"""Building the serving image: a context of host-built wheels, then ``docker build`` through the SDK."""

from __future__ import annotations

import hashlib
import importlib.metadata
import importlib.util
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from mlshift.errors import ConfigError, ImageNotFound, ProviderError
from mlshift.image._engine import Say, docker_client, image_exists

__all__ = [
    "DEFAULT_BASE_IMAGE",
    "DEFAULT_FRAMEWORKS",
    "FRAMEWORKS",
    "IMAGE_REPOSITORY",
    "build_context",
    "build_image",
    "default_image",
    "parse_extra_packages",
    "parse_frameworks",
    "wheel_cache_dir",
]

_HERE = Path(__file__).parent

#: The local name of the serving image (tagged with the mlshift version, see :func:`default_image`).
IMAGE_REPOSITORY = "mlshift-serving"
#: The base image ``mlshift image base`` makes offline from Debian packages.
DEFAULT_BASE_IMAGE = "mlshift-base:bookworm"
#: Framework sets an image can carry: name -> mlshift extras that install it.
FRAMEWORKS: dict[str, tuple[str, ...]] = {"sklearn": ("sklearn",), "onnx": ("onnx",)}
#: What an image carries unless told otherwise: small (scikit-learn only).
DEFAULT_FRAMEWORKS: tuple[str, ...] = ("sklearn",)


def _say(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


def parse_frameworks(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """``"sklearn,onnx"`` (or a list) -> sorted, de-duplicated framework names.

    Raises:
        ConfigError: for an unknown framework name (the message lists the known ones).
    """
    if value is None:
        return DEFAULT_FRAMEWORKS
    items = value.split(",") if isinstance(value, str) else list(value)
    names = sorted({item.strip().lower() for item in items if item.strip()})
    unknown = [n for n in names if n not in FRAMEWORKS]
    if unknown:
        raise ConfigError(
            f"unknown framework {', '.join(map(repr, unknown))} for the serving image",
            field="--frameworks",
            hint=f"choose from {', '.join(sorted(FRAMEWORKS))} (comma-separated), "
            "e.g. --frameworks sklearn,onnx",
        )
    return tuple(names)


_SPECIFIER = r"(?:===|==|!=|~=|<=|>=|<|>)[A-Za-z0-9.*+!_-]+"
#: A package name with optional extras and version specifiers: no URLs, paths, markers or options.
_REQUIREMENT = re.compile(
    rf"[A-Za-z0-9](?:[A-Za-z0-9._-]*[A-Za-z0-9])?(?:\[[A-Za-z0-9._,-]+\])?(?:{_SPECIFIER}(?:,{_SPECIFIER})*)?"
)


def parse_extra_packages(value: str | Iterable[str] | None) -> tuple[str, ...]:
    """Packages an image carries beyond mlshift's frameworks: ``"xgboost==2.1.1 lightgbm>=4"``.

    Each is a name with optional extras and version specifiers (``name[extra]>=1,<2``, no
    spaces inside one); several are separated by spaces or given as a list.

    Raises:
        ConfigError: for anything else (a URL, a path, a pip option), naming it.
    """
    if value is None:
        return ()
    items = [value] if isinstance(value, str) else list(value)
    found: list[str] = []
    for item in items:
        for spec in str(item).split():
            if not _REQUIREMENT.fullmatch(spec):
                raise ConfigError(
                    f"extra package {spec!r} is not a package name with optional version specifiers",
                    field="--extra-packages",
                    hint="e.g. --extra-packages 'xgboost==2.1.1 lightgbm>=4' (no URLs, paths or pip options)",
                )
            found.append(spec)
    return tuple(dict.fromkeys(found))


def default_image(frameworks: Sequence[str] = DEFAULT_FRAMEWORKS) -> str:
    """The image name for a framework set: ``mlshift-serving:0.1.0`` for the default set,
    ``mlshift-serving:0.1.0-onnx-sklearn`` for another."""
    import mlshift

    names = tuple(sorted(frameworks))
    suffix = "" if names == DEFAULT_FRAMEWORKS else "-" + ("-".join(names) or "bare")
    return f"{IMAGE_REPOSITORY}:{mlshift.__version__}{suffix}"


def _python_version() -> str:
    return f"{sys.version_info.major}.{sys.version_info.minor}"


def _mlshift_source() -> str:
    """What ``pip wheel`` builds mlshift from: the running code's source tree when it is one
    (an editable install or a checkout on ``PYTHONPATH``), else the installed version."""
    import mlshift

    package = Path(mlshift.__file__).resolve().parent
    project = package.parent.parent  # src/mlshift -> the project folder
    pyproject = project / "pyproject.toml"
    if package.parent.name == "src" and pyproject.is_file() and 'name = "mlshift"' in pyproject.read_text():
        return str(project)
    dist = importlib.metadata.distribution("mlshift")
    direct = dist.read_text("direct_url.json")
    if direct:
        url = str(json.loads(direct).get("url", ""))
        if url.startswith("file://"):
            return url.removeprefix("file://")
    return f"mlshift=={dist.version}"


def build_context(
    dest: Path,
    *,
    frameworks: Sequence[str] = DEFAULT_FRAMEWORKS,
    wheels: Path | None = None,
    extra_packages: Sequence[str] = (),
    say: Say = _say,
) -> Path:
    """Write a build context: ``Dockerfile``, ``serve``, ``wheels/deps/``, ``wheels/extra/`` and
    ``wheels/mlshift/``.

    Args:
        dest: An empty or new folder.
        frameworks: Framework sets to install (see :data:`FRAMEWORKS`).
        wheels: A folder of wheels to use instead of building them (mlshift and every
            dependency, for the image's platform and Python).
        extra_packages: Requirement specifiers (see :func:`parse_extra_packages`) resolved on
            this machine against the dependencies' versions; not with ``wheels``.
        say: Where progress goes.

    Returns:
        ``dest``.

    Raises:
        ConfigError: ``wheels`` holds no mlshift wheel, or wheels would be built on a non-Linux host.
        ProviderError: ``pip wheel`` failed.
    """
    extra_packages = parse_extra_packages(extra_packages)
    if extra_packages and wheels is not None:
        raise ConfigError(
            "--extra-packages and --wheels do not go together: a wheels folder is installed as it is",
            field="--extra-packages",
            hint=f"add the wheels of {' '.join(extra_packages)} to {wheels} and leave --extra-packages out",
        )
    dest.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(_HERE / "Dockerfile", dest / "Dockerfile")
    shutil.copyfile(_HERE / "serve", dest / "serve")
    (dest / "serve").chmod(0o755)
    built = dest / "wheels" / "all"
    built.mkdir(parents=True, exist_ok=True)
    if wheels is not None:
        found = sorted(Path(wheels).glob("*.whl"))
        if not any(w.name.startswith("mlshift-") for w in found):
            raise ConfigError(
                f"no mlshift-*.whl in {str(wheels)!r}",
                field="--wheels",
                hint="fill it with `pip wheel --wheel-dir DIR 'mlshift[serve,sklearn]'` "
                "(or leave --wheels out)",
            )
        for wheel in found:
            shutil.copy2(wheel, built / wheel.name)
        say(f"copied {len(found)} wheels from {wheels}")
    else:
        if not sys.platform.startswith("linux"):
            raise ConfigError(
                f"wheels built on {sys.platform} do not install in a Linux image",
                field="--wheels",
                hint="build on Linux, or pass --wheels DIR filled with `pip download --only-binary=:all: "
                "--platform manylinux2014_x86_64 --python-version X.Y ...` plus `pip wheel` of mlshift",
            )
        extras = ",".join(["serve", *(e for f in frameworks for e in FRAMEWORKS[f])])
        _host_wheels(built, extras, say)
    # Dependencies in one layer, extra packages in the next, mlshift last: a new mlshift alone
    # reuses the first two, and extra packages do not reinstall the dependencies.
    for part in ("deps", "extra", "mlshift"):
        (dest / "wheels" / part).mkdir(exist_ok=True)
    for wheel in built.glob("*.whl"):
        part = "mlshift" if wheel.name.startswith("mlshift-") else "deps"
        wheel.replace(dest / "wheels" / part / wheel.name)
    built.rmdir()
    if extra_packages:
        _extra_wheels(dest / "wheels" / "extra", dest / "wheels" / "deps", extra_packages, say)
    return dest


def _wheel_name(wheel: Path) -> tuple[str, str]:
    """``(normalized name, version)`` from a wheel's file name."""
    name, version = wheel.name.split("-")[:2]
    return re.sub(r"[-_.]+", "-", name).lower(), version


def _extra_wheels(dest: Path, deps: Path, packages: Sequence[str], say: Say) -> None:
    """Wheels for ``packages`` and whatever they need beyond ``deps``, at the versions in ``deps``."""
    pinned = dict(_wheel_name(w) for w in deps.glob("*.whl"))
    constraints = dest.parent / "constraints.txt"
    constraints.write_text("".join(f"{name}=={version}\n" for name, version in sorted(pinned.items())))
    say(f"downloading wheels for the extra packages {' '.join(packages)}")
    try:
        _pip_wheel(["--wheel-dir", str(dest), "--constraint", str(constraints), *packages])
    finally:
        constraints.unlink()
    for wheel in dest.glob("*.whl"):
        if _wheel_name(wheel)[0] in pinned:
            wheel.unlink()  # already in the dependencies' layer, at the same version


def wheel_cache_dir() -> Path:
    """``$MLSHIFT_CACHE_DIR/wheels``, else ``$XDG_CACHE_HOME/mlshift/wheels`` (``~/.cache/...``)."""
    root = os.environ.get("MLSHIFT_CACHE_DIR")
    if root:
        return Path(root).expanduser() / "wheels"
    return Path(os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")) / "mlshift" / "wheels"


def _pip_wheel(args: Sequence[str]) -> None:
    command = [sys.executable, "-m", "pip", "wheel", "--quiet", *args]
    result = subprocess.run(command, check=False, stdin=subprocess.DEVNULL, capture_output=True, text=True)
    if result.returncode != 0:
        detail = (result.stderr or result.stdout).strip()[-800:]
        raise ProviderError(f"`{' '.join(command)}` failed: {detail}", provider="pip")


def _host_wheels(dest: Path, extras: str, say: Say) -> None:
    """mlshift's wheel from the running code, plus its dependencies' wheels for ``extras``.

    Resolving dependencies against an index takes most of a minute, so their wheels are kept
    in :func:`wheel_cache_dir`, keyed by what mlshift requires, the extras, this Python and
    platform: a rebuild after changing mlshift's code resolves nothing.
    """
    source = _mlshift_source()
    say(f"building the mlshift wheel from {source}")
    isolation = [] if importlib.util.find_spec("hatchling") is None else ["--no-build-isolation"]
    _pip_wheel(["--no-deps", *isolation, "--wheel-dir", str(dest), source])
    (wheel,) = dest.glob("mlshift-*.whl")
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        requires = sorted(
            line for line in archive.read(metadata).decode().splitlines() if line.startswith("Requires-Dist:")
        )
    key = hashlib.sha256(
        "\n".join([extras, sys.version, sys.platform, platform.machine(), *requires]).encode()
    ).hexdigest()[:16]
    cache = wheel_cache_dir() / key
    if not (cache / ".complete").is_file():
        say(f"downloading dependency wheels for mlshift[{extras}] (cached in {cache})")
        partial = cache.with_name(f"{key}.partial-{os.getpid()}")
        shutil.rmtree(partial, ignore_errors=True)
        _pip_wheel(["--wheel-dir", str(partial), f"mlshift[{extras}] @ {wheel.resolve().as_uri()}"])
        for own in partial.glob("mlshift-*.whl"):
            own.unlink()
        (partial / ".complete").touch()
        shutil.rmtree(cache, ignore_errors=True)
        partial.replace(cache)
    else:
        say(f"dependency wheels for mlshift[{extras}] from {cache}")
    for dep in cache.glob("*.whl"):
        shutil.copy2(dep, dest / dep.name)


def build_image(
    tag: str | None = None,
    *,
    frameworks: str | Iterable[str] | None = None,
    base_image: str | None = None,
    wheels: Path | None = None,
    context: Path | None = None,
    no_cache: bool = False,
    extra_packages: str | Iterable[str] | None = None,
    say: Say = _say,
    client: Any = None,
) -> str:
    """Build the serving image; returns its name.

    Everything that can be checked is checked before anything is built: the daemon answers,
    the frameworks are known and the base image is there.

    Args:
        tag: The image name (default :func:`default_image` for ``frameworks``).
        frameworks: Framework sets to install (default: scikit-learn only).
        base_image: The ``BASE_IMAGE`` build argument (default :data:`DEFAULT_BASE_IMAGE`).
        wheels: See :func:`build_context`.
        context: Where to write the build context (default: a temporary folder, removed after).
        no_cache: Rebuild every layer instead of reusing Docker's build cache.
        extra_packages: Packages to add beyond the frameworks (``"xgboost==2.1.1 lightgbm>=4"``,
            see :func:`parse_extra_packages`); needs ``tag``, since the default names mean the
            frameworks alone.
        say: Where progress goes.
        client: A ``docker.DockerClient`` (default: one for ``DOCKER_HOST``).

    Raises:
        DockerUnavailable: no Docker daemon (or no Docker SDK).
        ImageNotFound: the base image is missing (the hint names ``mlshift image base``).
        ConfigError: unknown frameworks or unusable wheels.
        ProviderError: pip or the build failed (with the end of the build's output).
    """
    names = parse_frameworks(frameworks)
    extras = parse_extra_packages(extra_packages)
    if extras and tag is None:
        raise ConfigError(
            f"an image with extra packages ({' '.join(extras)}) needs a name of its own: "
            f"{default_image(names)} means mlshift's frameworks alone",
            field="--tag",
            hint="pass --tag, e.g. --tag mlshift-serving:xgboost",
        )
    tag = tag or default_image(names)
    base = base_image or DEFAULT_BASE_IMAGE
    client = client or docker_client()
    _require_base(client, base, say)
    with tempfile.TemporaryDirectory(prefix="mlshift-image-") as tmp:
        folder = build_context(
            context or Path(tmp) / "context", frameworks=names, wheels=wheels, extra_packages=extras, say=say
        )
        import mlshift

        say(f"building {tag} from {base} (frameworks: {', '.join(names) or 'none'})")
        args = {
            "BASE_IMAGE": base,
            "PYTHON_VERSION": _python_version(),
            "FRAMEWORKS": ",".join(names),
            "EXTRA_PACKAGES": " ".join(extras),
            "MLSHIFT_VERSION": mlshift.__version__,
        }
        tail: list[str] = []
        try:
            stream = client.api.build(
                path=str(folder),
                tag=tag,
                buildargs=args,
                rm=True,
                forcerm=True,
                decode=True,
                pull=False,
                nocache=no_cache,
            )
            for chunk in stream:
                if "error" in chunk:
                    raise ProviderError(
                        f"docker build of {tag} failed: {chunk['error'].strip()}"
                        + (f"; last output: {' | '.join(tail[-6:])}" if tail else ""),
                        provider="docker",
                    )
                for line in str(chunk.get("stream", "")).splitlines():
                    if line.strip():
                        tail.append(line.strip())
                        say(line.strip())
        except ProviderError:
            raise
        except Exception as exc:
            raise ProviderError(f"docker build of {tag} failed: {exc}", provider="docker", orig=exc) from exc
    say(f"built {tag}")
    return tag


def _require_base(client: Any, base: str, say: Say) -> None:
    if image_exists(client, base):
        return
    if base != DEFAULT_BASE_IMAGE:
        say(f"pulling base image {base}")
        try:
            client.images.pull(base)
            return
        except Exception as exc:
            raise ImageNotFound(
                f"base image {base!r} is not on this Docker engine and could not be pulled: "
                f"{str(exc).strip()[:200]}",
                image=base,
                hint="pull or load it first (`docker images` lists what you have), or make one offline "
                "from Debian packages with `mlshift image base` and leave --base-image out",
            ) from exc
    raise ImageNotFound(
        f"base image {base!r} is not on this Docker engine",
        image=base,
        hint="make it offline from Debian packages with `mlshift image base` (needs root and debootstrap; "
        "~1 minute, once), or pass --base-image NAME of an image with Python "
        f"{_python_version()} (e.g. python:{_python_version()}-slim where a registry is reachable)",
    )
