"""Building the serving image: a context of host-built wheels, then ``docker build`` through the SDK."""

from __future__ import annotations

import hashlib
import importlib
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
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from mlshift.errors import ConfigError, ImageNotFound, ProviderError
from mlshift.image._engine import Say, docker_client, image_exists

__all__ = [
    "BASE_LABEL",
    "DEFAULT_BASE_IMAGE",
    "DEFAULT_FRAMEWORKS",
    "FRAMEWORKS",
    "IMAGE_REPOSITORY",
    "INPUTS_LABEL",
    "build_context",
    "build_image",
    "default_image",
    "image_inputs",
    "outdated_because",
    "parse_extra_packages",
    "parse_frameworks",
    "project_wheel",
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
#: The label holding the digest of everything an image was built from (see :func:`image_inputs`);
#: ``mlshift.inputs.<part>`` labels hold each part's digest, so a rebuild can say what changed.
INPUTS_LABEL = "mlshift.inputs"
#: The label holding the name of the base image an image was built from.
BASE_LABEL = "mlshift.base-image"
#: The parts of an image's inputs, and how a message names each when it changed.
_INPUT_PARTS = {
    "code": "mlshift's code or its requirements",
    "files": "the Dockerfile or the serve script",
    "arguments": "the build arguments (frameworks, extra packages, Python, mlshift version)",
    "extra": "the extra wheels",
    "base": "the base image",
}


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


def _source(distribution: str = "mlshift") -> str:
    """What ``pip wheel`` builds ``distribution`` from: the running code's source tree when it
    is one (an editable install or a checkout on ``PYTHONPATH``), else the installed version."""
    module = importlib.import_module(distribution.replace("-", "_"))
    package = Path(str(module.__file__)).resolve().parent
    project = package.parent.parent  # src/<package> -> the project folder
    pyproject = project / "pyproject.toml"
    if (
        package.parent.name == "src"
        and pyproject.is_file()
        and f'name = "{distribution}"' in pyproject.read_text()
    ):
        return str(project)
    dist = importlib.metadata.distribution(distribution)
    direct = dist.read_text("direct_url.json")
    if direct:
        url = str(json.loads(direct).get("url", ""))
        if url.startswith("file://"):
            return url.removeprefix("file://")
    return f"{distribution}=={dist.version}"


def _mlshift_source() -> str:
    return _source("mlshift")


def project_wheel(distribution: str, dest: Path, *, say: Say = _say) -> Path:
    """Build the wheel of ``distribution`` (no dependencies) into ``dest``; returns its path.

    It is built from the code that runs: the source tree of an editable install or a
    checkout, else the installed version (from the package index). An adapter adds its own
    wheel to the image this way (``extra_wheels`` of :func:`build_image`).

    Raises:
        ProviderError: ``pip wheel`` failed.
    """
    source = _source(distribution)
    say(f"building the {distribution} wheel from {source}")
    dest.mkdir(parents=True, exist_ok=True)
    before = set(dest.glob("*.whl"))
    isolation = [] if importlib.util.find_spec("hatchling") is None else ["--no-build-isolation"]
    _pip_wheel(["--no-deps", *isolation, "--wheel-dir", str(dest), source])
    prefix = re.sub(r"[-_.]+", "_", distribution).lower() + "-"
    built = [w for w in dest.glob("*.whl") if w.name.lower().startswith(prefix)]
    new = [w for w in built if w not in before] or built
    if not new:
        raise ProviderError(f"`pip wheel {source}` made no {distribution} wheel in {dest}", provider="pip")
    return max(new, key=lambda w: w.stat().st_mtime)


# ---------------------------------------------------------------- what an image is built from


def _digest(parts: Iterable[bytes]) -> str:
    total = hashlib.sha256()
    for part in parts:
        total.update(hashlib.sha256(part).digest())
    return "sha256:" + total.hexdigest()


def _tree_parts(folder: Path) -> Iterator[bytes]:
    """Each file under ``folder``, as its relative name then its content (bytecode left out)."""
    for path in sorted(folder.rglob("*")):
        if path.is_file() and "__pycache__" not in path.parts and path.suffix not in (".pyc", ".pyo"):
            yield path.relative_to(folder).as_posix().encode()
            yield path.read_bytes()


def _wheel_parts(wheel: Path) -> Iterator[bytes]:
    """A wheel's name and what it installs (each file's name and content), not the zip's own
    timestamps: the same code built into a wheel again has the same digest."""
    yield wheel.name.encode()
    with zipfile.ZipFile(wheel) as archive:
        for info in sorted(archive.infolist(), key=lambda i: i.filename):
            yield info.filename.encode()
            yield archive.read(info)


def _code_parts(wheels: Path | None) -> Iterator[bytes]:
    """mlshift as the image gets it: a ``--wheels`` folder as it is, else the running code and
    what it requires (the dependency wheels are resolved from those requirements)."""
    if wheels is not None:
        for wheel in sorted(Path(wheels).glob("*.whl")):
            yield wheel.name.encode()
            yield wheel.read_bytes()
        return
    import mlshift

    yield from _tree_parts(Path(mlshift.__file__).resolve().parent)
    pyproject = Path(_mlshift_source()) / "pyproject.toml"
    if pyproject.is_file():
        yield pyproject.read_bytes()
    else:
        yield "\n".join(sorted(importlib.metadata.requires("mlshift") or [])).encode()


def _build_args(frameworks: Sequence[str], base: str, extra_packages: Sequence[str]) -> dict[str, str]:
    import mlshift

    return {
        "BASE_IMAGE": base,
        "PYTHON_VERSION": _python_version(),
        "FRAMEWORKS": ",".join(frameworks),
        "EXTRA_PACKAGES": " ".join(extra_packages),
        "MLSHIFT_VERSION": mlshift.__version__,
    }


def image_inputs(
    frameworks: str | Iterable[str] | None = None,
    *,
    base_image: str | None = None,
    extra_packages: str | Iterable[str] | None = None,
    wheels: Path | None = None,
    extra_wheels: Sequence[Path] = (),
    client: Any = None,
) -> dict[str, str]:
    """The labels that say what an image built with these arguments is built from.

    :data:`INPUTS_LABEL` holds one digest of everything; ``mlshift.inputs.<part>`` one per
    part: ``code`` (mlshift's code and requirements, or the ``wheels`` folder), ``files``
    (the Dockerfile and ``serve``), ``arguments`` (the build arguments and this Python),
    ``extra`` (``extra_wheels``, by content) and ``base`` (the base image's ID, when
    ``client`` has the base image). Computing them builds nothing: a few milliseconds.
    """
    names = parse_frameworks(frameworks)
    base = base_image or DEFAULT_BASE_IMAGE
    arguments = {
        **_build_args(names, base, parse_extra_packages(extra_packages)),
        "python": sys.version,
        "machine": platform.machine(),
    }
    parts = {
        "code": _digest(_code_parts(wheels)),
        "files": _digest((_HERE / name).read_bytes() for name in ("Dockerfile", "serve")),
        "arguments": _digest([json.dumps(arguments, sort_keys=True).encode()]),
        "extra": _digest(part for wheel in extra_wheels for part in _wheel_parts(Path(wheel))),
    }
    if client is not None:
        try:
            parts["base"] = str(client.images.get(base).id)
        except Exception:  # no base image (or no answer): this part is not known
            pass
    labels = {f"{INPUTS_LABEL}.{part}": value for part, value in parts.items()}
    labels[INPUTS_LABEL] = _digest(f"{part}={value}".encode() for part, value in sorted(parts.items()))
    return labels


def outdated_because(client: Any, image: str, inputs: Mapping[str, str]) -> str | None:
    """Why the engine's ``image`` was not built from ``inputs`` (see :func:`image_inputs`), or
    ``None`` when it was. A part missing from ``inputs`` (the base image, when it is gone) is
    not compared."""
    import docker.errors

    try:
        labels = client.images.get(image).labels or {}
    except docker.errors.ImageNotFound:
        return "it is not on this Docker engine"
    if INPUTS_LABEL not in labels:
        return "it carries no digest of its inputs (an older mlshift built it)"
    changed = [
        what
        for part, what in _INPUT_PARTS.items()
        if f"{INPUTS_LABEL}.{part}" in inputs
        and labels.get(f"{INPUTS_LABEL}.{part}") != inputs[f"{INPUTS_LABEL}.{part}"]
    ]
    if not changed:
        return None
    return f"{' and '.join(changed)} changed since it was built"


def build_context(
    dest: Path,
    *,
    frameworks: Sequence[str] = DEFAULT_FRAMEWORKS,
    wheels: Path | None = None,
    extra_packages: Sequence[str] = (),
    extra_wheels: Sequence[Path] = (),
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
        extra_wheels: Wheel files made on this machine (an mlshift adapter, a package of your
            own) for the extra layer; what they require beyond the image's packages is resolved
            like ``extra_packages`` (their requirement on mlshift is the image's own mlshift).
        say: Where progress goes.

    Returns:
        ``dest``.

    Raises:
        ConfigError: ``wheels`` holds no mlshift wheel, an extra wheel is not a ``.whl`` file,
            or wheels would be built on a non-Linux host.
        ProviderError: ``pip wheel`` failed.
    """
    extra_packages = parse_extra_packages(extra_packages)
    extra_wheels = [Path(w) for w in extra_wheels]
    if (extra_packages or extra_wheels) and wheels is not None:
        raise ConfigError(
            "--extra-packages and --wheels do not go together: a wheels folder is installed as it is",
            field="--extra-packages",
            hint=f"add the wheels of {' '.join([*extra_packages, *(w.name for w in extra_wheels)])} "
            f"to {wheels} and leave --extra-packages out",
        )
    for wheel in extra_wheels:
        if wheel.suffix != ".whl" or not wheel.is_file():
            raise ConfigError(
                f"extra wheel {str(wheel)!r} is not a wheel file",
                field="extra_wheels",
                hint="build it with `pip wheel --no-deps --wheel-dir DIR PROJECT` and pass DIR/NAME.whl",
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
    if extra_packages or extra_wheels:
        _extra_wheels(dest / "wheels", extra_packages, extra_wheels, say)
    return dest


def _wheel_name(wheel: Path) -> tuple[str, str]:
    """``(normalized name, version)`` from a wheel's file name."""
    name, version = wheel.name.split("-")[:2]
    return re.sub(r"[-_.]+", "-", name).lower(), version


def _extra_wheels(wheels: Path, packages: Sequence[str], local: Sequence[Path], say: Say) -> None:
    """Into ``wheels/extra``: wheels for ``packages`` and the ``local`` wheels, with whatever
    they need beyond ``wheels/deps`` and ``wheels/mlshift``, at the versions found there."""
    dest = wheels / "extra"
    pinned = dict(_wheel_name(w) for w in (wheels / "deps").glob("*.whl"))
    requirements = list(packages)
    if local:
        # Named by path, the image's own mlshift wheel is what a local wheel's requirement on
        # mlshift resolves to (never another mlshift from an index); it is dropped afterwards.
        requirements = [str(w) for w in (wheels / "mlshift").glob("mlshift-*.whl")]
        requirements += [str(w.resolve()) for w in local] + list(packages)
    constraints = wheels / "constraints.txt"
    constraints.write_text("".join(f"{name}=={version}\n" for name, version in sorted(pinned.items())))
    say(f"downloading wheels for the extra packages {' '.join([*packages, *(w.name for w in local)])}")
    try:
        _pip_wheel(["--wheel-dir", str(dest), "--constraint", str(constraints), *requirements])
    finally:
        constraints.unlink()
    for wheel in dest.glob("*.whl"):
        name = _wheel_name(wheel)[0]
        if name in pinned or name == "mlshift":
            wheel.unlink()  # already in the dependencies' or mlshift's layer, at the same version


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
    wheel = project_wheel("mlshift", dest, say=say)
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
    extra_wheels: Sequence[Path] = (),
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
        extra_wheels: Wheels made on this machine for the extra layer (see
            :func:`build_context`); needs ``tag`` too.
        say: Where progress goes.
        client: A ``docker.DockerClient`` (default: one for ``DOCKER_HOST``).

    The image is labelled with the digest of its inputs (:func:`image_inputs`), which
    ``local+docker://`` compares before it reuses an image.

    Raises:
        DockerUnavailable: no Docker daemon (or no Docker SDK).
        ImageNotFound: the base image is missing (the hint names ``mlshift image base``).
        ConfigError: unknown frameworks or unusable wheels.
        ProviderError: pip or the build failed (with the end of the build's output).
    """
    names = parse_frameworks(frameworks)
    extras = parse_extra_packages(extra_packages)
    if (extras or extra_wheels) and tag is None:
        extras_named = " ".join([*extras, *(Path(w).name for w in extra_wheels)])
        raise ConfigError(
            f"an image with extra packages ({extras_named}) needs a name of its own: "
            f"{default_image(names)} means mlshift's frameworks alone",
            field="--tag",
            hint="pass --tag, e.g. --tag mlshift-serving:xgboost",
        )
    tag = tag or default_image(names)
    base = base_image or DEFAULT_BASE_IMAGE
    client = client or docker_client()
    _require_base(client, base, say)
    # Before the context is made: the digest is of what the build is asked to use.
    labels = image_inputs(
        names, base_image=base, extra_packages=extras, wheels=wheels, extra_wheels=extra_wheels, client=client
    )
    labels[BASE_LABEL] = base
    with tempfile.TemporaryDirectory(prefix="mlshift-image-") as tmp:
        folder = build_context(
            context or Path(tmp) / "context",
            frameworks=names,
            wheels=wheels,
            extra_packages=extras,
            extra_wheels=extra_wheels,
            say=say,
        )
        say(f"building {tag} from {base} (frameworks: {', '.join(names) or 'none'})")
        args = _build_args(names, base, extras)
        tail: list[str] = []
        try:
            stream = client.api.build(
                path=str(folder),
                tag=tag,
                buildargs=args,
                labels=labels,
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
