"""Talking to the Docker engine: the Docker SDK for Python, imported only when needed."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from mlshift.errors import DockerUnavailable

__all__ = ["Say", "docker_client", "image_exists"]

#: Where progress lines go (``print`` to stderr by default).
Say = Callable[[str], None]

_INSTALL = 'pip install "mlshift[docker]"'


def docker_client(timeout: float = 120.0) -> Any:
    """A ``docker.DockerClient`` for ``DOCKER_HOST`` (default: the local socket), after a ping.

    Raises:
        DockerUnavailable: the ``docker`` package is missing, or no daemon answers.
    """
    try:
        import docker
    except ImportError:
        raise DockerUnavailable(
            "the Docker SDK for Python (`docker`) is not installed",
            provider="docker",
            hint=f"install it with `{_INSTALL}`",
        ) from None
    where = os.environ.get("DOCKER_HOST") or "the default socket (unix:///var/run/docker.sock)"
    try:
        client = docker.from_env(timeout=int(timeout))
        client.ping()
    except Exception as exc:
        raise DockerUnavailable(
            f"no Docker daemon answers at {where}: {_reason(exc)}",
            provider="docker",
            orig=exc,
            hint="start Docker (`sudo systemctl start docker`, or Docker Desktop), or point DOCKER_HOST "
            "at a running daemon, e.g. DOCKER_HOST=unix:///run/docker.sock; on Debian/Ubuntu without "
            "Docker: `sudo apt-get install docker.io`",
        ) from exc
    return client


def image_exists(client: Any, name: str) -> bool:
    """True when the engine has the image ``name`` locally."""
    import docker.errors

    try:
        client.images.get(name)
    except docker.errors.ImageNotFound:
        return False
    return True


def _reason(exc: BaseException) -> str:
    # docker-py wraps requests' errors several levels deep; the innermost says what happened.
    while exc.__cause__ is not None or exc.__context__ is not None:
        exc = exc.__cause__ or exc.__context__  # type: ignore[assignment]
    text = str(exc).strip() or type(exc).__name__
    return text.splitlines()[0][:300]
