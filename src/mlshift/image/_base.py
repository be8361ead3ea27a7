"""A base image with no registry: a Debian root filesystem from debootstrap, imported into Docker.

Where Docker Hub is unreachable (air-gapped machines, CI behind a proxy) there is no
``python:3.11-slim`` to build from. Debian's package mirror is usually reachable, so
``debootstrap --variant=minbase`` makes a small root filesystem with Python, and
``docker import`` turns it into an image. The root filesystem is kept as a tarball in a cache
folder outside any checkout, so a wiped Docker data root re-imports it in seconds.
"""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from mlshift.errors import ConfigError, ProviderError
from mlshift.image._build import DEFAULT_BASE_IMAGE
from mlshift.image._engine import Say, docker_client, image_exists

__all__ = ["DEFAULT_MIRROR", "DEFAULT_SUITE", "base_cache_dir", "make_base_image"]

DEFAULT_SUITE = "bookworm"
DEFAULT_MIRROR = "http://deb.debian.org/debian"
#: Python with venv/ensurepip: what the serving image's Dockerfile needs from a base.
_PACKAGES = ("python3", "python3-venv", "ca-certificates")
# Not needed to run a model server; dropping them keeps the base small.
_PRUNE = (
    "var/cache/apt/archives",
    "var/lib/apt/lists",
    "usr/share/doc",
    "usr/share/man",
    "usr/share/info",
    "usr/share/locale",
)


def _say(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


def base_cache_dir() -> Path:
    """``$MLSHIFT_CACHE_DIR/base``, else ``$XDG_CACHE_HOME/mlshift/base`` (``~/.cache/mlshift/base``)."""
    root = os.environ.get("MLSHIFT_CACHE_DIR")
    if root:
        return Path(root).expanduser() / "base"
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "mlshift" / "base"


def _arch() -> str:
    machine = platform.machine().lower()
    return {"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64"}.get(machine, machine)


def make_base_image(
    name: str = DEFAULT_BASE_IMAGE,
    *,
    suite: str = DEFAULT_SUITE,
    mirror: str = DEFAULT_MIRROR,
    cache_dir: Path | None = None,
    force: bool = False,
    say: Say = _say,
    client: Any = None,
) -> str:
    """Make ``name`` from Debian packages unless the engine has it already; returns ``name``.

    Args:
        name: The image to create.
        suite: The Debian release (its Python must match the one the image's wheels are built
            with: bookworm has 3.11).
        mirror: The Debian mirror debootstrap downloads from.
        cache_dir: Where the root filesystem tarball is kept (default :func:`base_cache_dir`).
        force: Run debootstrap again even when the image or the tarball exists.
        say: Where progress goes.
        client: A ``docker.DockerClient`` (default: one for ``DOCKER_HOST``).

    Raises:
        DockerUnavailable: no Docker daemon.
        ConfigError: debootstrap is missing or this is not run as root (checked before any work).
        ProviderError: debootstrap or the import failed.
    """
    client = client or docker_client()
    if not force and image_exists(client, name):
        say(f"base image {name} is there already (--force makes it again)")
        return name
    cache = (cache_dir or base_cache_dir()).expanduser()
    tarball = cache / f"{suite}-{_arch()}.tar"
    if force or not tarball.is_file():
        _check_debootstrap()
        cache.mkdir(parents=True, exist_ok=True)
        _debootstrap(tarball, suite=suite, mirror=mirror, say=say)
    say(f"importing {tarball} as {name}")
    repository, _, tag = name.rpartition(":") if ":" in name.rsplit("/", 1)[-1] else (name, "", "latest")
    try:
        client.api.import_image_from_file(
            str(tarball), repository=repository, tag=tag, changes=['CMD ["/bin/bash"]']
        )
    except Exception as exc:
        raise ProviderError(f"docker import of {tarball} failed: {exc}", provider="docker", orig=exc) from exc
    if not image_exists(client, name):
        raise ProviderError(f"docker import of {tarball} did not create {name}", provider="docker")
    say(f"made base image {name}")
    return name


def _check_debootstrap() -> None:
    if shutil.which("debootstrap") is None:
        raise ConfigError(
            "debootstrap is not installed: it makes the base image from Debian packages",
            field="debootstrap",
            hint="install it (`sudo apt-get install debootstrap`), or build with --base-image NAME of an "
            "image with Python you already have",
        )
    if hasattr(os, "geteuid") and os.geteuid() != 0:
        raise ConfigError(
            "making the base image needs root (debootstrap creates device files and chroots)",
            field="debootstrap",
            hint="run it as root: `sudo mlshift image base`",
        )


def _debootstrap(tarball: Path, *, suite: str, mirror: str, say: Say) -> None:
    with tempfile.TemporaryDirectory(prefix="rootfs-", dir=tarball.parent) as tmp:
        rootfs = Path(tmp) / "rootfs"
        say(f"debootstrap --variant=minbase {suite} from {mirror} (one to a few minutes, once)")
        command = [
            "debootstrap",
            "--variant=minbase",
            f"--include={','.join(_PACKAGES)}",
            suite,
            str(rootfs),
            mirror,
        ]
        # Its progress (a line per package step) goes to the terminal: this is the slow part.
        code = subprocess.run(command, check=False, stdin=subprocess.DEVNULL, stdout=sys.stderr).returncode
        if code != 0:
            raise ProviderError(
                f"`{' '.join(command)}` failed (exit {code}; see its output above)",
                provider="debootstrap",
                hint=f"check that {mirror} is reachable, or pass --mirror URL of a Debian mirror that is",
            )
        for relative in _PRUNE:
            folder = rootfs / relative
            if folder.is_dir():
                for child in folder.iterdir():
                    if child.is_dir() and not child.is_symlink():
                        shutil.rmtree(child, ignore_errors=True)
                    else:
                        child.unlink(missing_ok=True)
        partial = tarball.with_suffix(".tar.partial")
        result = subprocess.run(
            ["tar", "-C", str(rootfs), "--numeric-owner", "-cf", str(partial), "."],
            check=False,
            capture_output=True,
            text=True,
        )
        if result.returncode != 0:
            partial.unlink(missing_ok=True)
            raise ProviderError(f"tar of {rootfs} failed: {result.stderr.strip()[-300:]}", provider="tar")
        # A tarball is either whole or absent: an interrupted run never leaves half of one.
        partial.replace(tarball)
