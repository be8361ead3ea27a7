"""Running the app: one uvicorn worker on a socket bound before the server starts."""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import logging
import os
import socket
from collections.abc import Sequence
from pathlib import Path

import uvicorn

from mlshift.errors import ConfigError
from mlshift.serving._app import create_app
from mlshift.serving._loaders import detect_framework, load_model
from mlshift.specs.model import Signature

__all__ = ["DEFAULT_PORT", "serve"]

#: SageMaker's contract port, and the default everywhere.
DEFAULT_PORT = 8080

logger = logging.getLogger("uvicorn.error")


def serve(
    path: Path,
    *,
    framework: str | None = None,
    host: str = "127.0.0.1",
    port: int = DEFAULT_PORT,
    digest: str | None = None,
    signature: Signature | None = None,
    variant: str | None = None,
    model_ref: str | None = None,
    port_file: Path | None = None,
    skops_trust: Sequence[str] = (),
) -> None:
    """Load a model and serve it over HTTP until SIGTERM or Ctrl-C.

    The model is loaded (and its digest checked) before the port is bound, so a bad artifact
    fails fast. One uvicorn worker on uvloop and httptools when installed, with no access log.

    Args:
        path: The artifact (see :func:`mlshift.serving.load_model`).
        framework: One of :data:`~mlshift.specs.model.FRAMEWORKS`; detected from ``path`` if omitted.
        host: The address to bind.
        port: The port to bind; ``0`` picks a free one. When it is the default (8080) and
            ``AIP_HTTP_PORT`` is set, as on Vertex AI, that port is used instead.
        digest: ``sha256:<hex>`` the artifact must match.
        signature: What the model takes; inferred from the artifact when omitted.
        variant: Sent back in an ``X-Mlshift-Variant`` header.
        model_ref: ``name:version``, sent back in an ``X-Mlshift-Model`` header.
        port_file: Once the server accepts connections, the bound port number is written
            here (atomically); the file is removed again on shutdown.
        skops_trust: Type names a ``.skops`` file may hold beyond the trusted set.

    Raises:
        ConfigError: for a bad artifact, framework, signature or port.
        IntegrityError: if the artifact does not match ``digest``.
        OSError: if the address cannot be bound.
    """
    path = Path(path)
    if framework is None:
        framework = detect_framework(path)
    model = load_model(path, framework, digest=digest, signature=signature, skops_trust=skops_trust)
    app = create_app(model, variant=variant, model_ref=model_ref)
    # Everything loaded so far (libraries, the model) lives as long as the process: out of the
    # collector's sight, a full collection triggered while a large body is parsed takes
    # milliseconds instead of hundreds, which the event loop (health checks) would wait for.
    gc.collect()
    gc.freeze()
    port = _resolve_port(port)
    sock = _bind(host, port)
    config = uvicorn.Config(
        app,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "auto",
        http="httptools" if importlib.util.find_spec("httptools") else "auto",
        # One worker: more, on the default asyncio loop, add ~40 ms per request
        # (TCP_NODELAY is lost on the inherited socket); scale with replicas instead.
        workers=1,
        access_log=False,
        lifespan="off",
        server_header=False,
        log_level="info",
    )
    server = _Server(config, port_file=Path(port_file) if port_file is not None else None)
    logger.info(
        "mlshift: serving %s model %s%s",
        framework,
        model_ref or str(path),
        f" as variant {variant}" if variant else "",
    )
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


def _resolve_port(port: int) -> int:
    aip = os.environ.get("AIP_HTTP_PORT")
    if port == DEFAULT_PORT and aip:
        if not aip.isdigit() or not 0 < int(aip) < 65536:
            raise ConfigError(f"AIP_HTTP_PORT={aip!r} is not a port number", field="AIP_HTTP_PORT")
        return int(aip)
    if not 0 <= port < 65536:
        raise ConfigError(f"port {port} is not a port number (0-65535)", field="port")
    return port


def _bind(host: str, port: int) -> socket.socket:
    # Bound here rather than by uvicorn so that port 0 works: we learn the real port from
    # the socket, and uvicorn serves the very socket we report.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError:
        sock.close()
        raise
    return sock


def _write_atomically(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    # Readers see either no file or the whole port number, never a half-written one.
    tmp.replace(path)


class _Server(uvicorn.Server):
    """uvicorn's server, reporting its port once it accepts connections."""

    def __init__(self, config: uvicorn.Config, *, port_file: Path | None) -> None:
        super().__init__(config)
        self.port_file = port_file
        self.port_written: str | None = None

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.should_exit or not sockets:
            return
        host, port = sockets[0].getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        logger.info("mlshift: listening on http://%s:%d (press Ctrl-C to stop)", shown, port)
        if self.port_file is not None:
            _write_atomically(self.port_file, str(port))
            self.port_written = str(port)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Remove the port file first: once we start closing, nobody should connect anew.
        if self.port_file is not None and self.port_written is not None:
            with contextlib.suppress(OSError):
                if self.port_file.read_text().strip() == self.port_written:
                    self.port_file.unlink()
        await super().shutdown(sockets=sockets)
