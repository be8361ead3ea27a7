"""Running the app: uvicorn on a socket bound before the server starts, in one process or
in several worker processes sharing that socket."""

from __future__ import annotations

import contextlib
import gc
import importlib.util
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import uvicorn
from starlette.applications import Starlette

from mlshift.errors import ConfigError, IntegrityError, MlshiftError
from mlshift.serving._app import create_app
from mlshift.serving._batching import Batching
from mlshift.serving._loaders import detect_framework, load_model, quick_skops_import
from mlshift.specs.model import Signature

__all__ = ["DEFAULT_PORT", "MAX_WORKERS", "WorkerFailed", "serve"]

#: SageMaker's contract port, and the default everywhere.
DEFAULT_PORT = 8080
#: The most worker processes one server starts.
MAX_WORKERS = 64
#: How long workers get to finish the requests they are answering once asked to stop.
_STOP_GRACE_SECONDS = 10.0


class WorkerFailed(Exception):
    """A worker process exited when it should not have (it logged why on stderr)."""


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
    on_ready: Callable[[str, int], None] | None = None,
    workers: int = 1,
    batching: Batching | None = None,
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
        on_ready: Called with the bound host and port once the server accepts connections
            (``mlshift serve --output json`` prints them).
        workers: Server processes sharing the port (1 to :data:`MAX_WORKERS`). With more
            than one, each worker loads the model itself and a supervisor process starts,
            watches and stops them; the port file is written once every worker is ready.
        batching: Adaptive micro-batching; from ``MLSHIFT_MAX_BATCH_SIZE`` and
            ``MLSHIFT_MAX_LATENCY_MS`` when omitted (off unless they are set).

    Raises:
        ConfigError: for a bad artifact, framework, signature, port, worker count or
            batching setting.
        IntegrityError: if the artifact does not match ``digest``.
        OSError: if the address cannot be bound.
        WorkerFailed: if a worker process exits on its own.
    """
    if isinstance(workers, bool) or not isinstance(workers, int) or not 1 <= workers <= MAX_WORKERS:
        raise ConfigError(
            f"workers {workers!r} is out of range",
            field="workers",
            hint=f"use 1 to {MAX_WORKERS}; about one per CPU core",
        )
    batching = Batching.from_env() if batching is None else batching
    options: dict[str, Any] = {
        "path": Path(path),
        "framework": framework,
        "digest": digest,
        "signature": signature,
        "variant": variant,
        "model_ref": model_ref,
        "skops_trust": tuple(skops_trust),
        "batching": batching,
    }
    port_path = Path(port_file) if port_file is not None else None
    if workers > 1:
        port = _resolve_port(port)
        _supervise(options, workers, host, port, port_path, on_ready)
        return
    app = _build_app(**options)
    port = _resolve_port(port)
    sock = _bind(host, port)
    server = _Server(_config(app), port_file=port_path, on_ready=on_ready)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


def _build_app(
    *,
    path: Path,
    framework: str | None,
    digest: str | None,
    signature: Signature | None,
    variant: str | None,
    model_ref: str | None,
    skops_trust: Sequence[str],
    batching: Batching,
) -> Starlette:
    # Loading is mostly importing (scikit-learn and scipy alone are most of a cold start),
    # which allocates a great many objects and frees none: the cyclic collections it would
    # trigger find nothing to free, so the collector is off meanwhile (as in the image's serve).
    collecting = gc.isenabled()
    gc.disable()
    try:
        if framework is None:
            framework = detect_framework(path)
        if framework == "sklearn":
            # This process serves one model that mlshift loads itself, and runs no user code
            # that could call skops: skops may skip its scan of scikit-learn.
            quick_skops_import()
        model = load_model(path, framework, digest=digest, signature=signature, skops_trust=skops_trust)
        app = create_app(model, variant=variant, model_ref=model_ref, batching=batching)
    finally:
        if collecting:
            gc.enable()
    # Everything loaded so far (libraries, the model) lives as long as the process: out of the
    # collector's sight, a full collection triggered while a large body is parsed takes
    # milliseconds instead of hundreds, which the event loop (health checks) would wait for.
    # No gc.collect() first: after loading, one found a few dozen objects to free and took a
    # tenth of a second or more of the start-up (a full pass over every library's objects).
    gc.freeze()
    app.state.description = _describe(framework, path, variant, model_ref, batching)
    return app


def _describe(
    framework: str, path: Path, variant: str | None, model_ref: str | None, batching: Batching
) -> str:
    return "mlshift: serving {} model {}{}{}".format(
        framework,
        model_ref or str(path),
        f" as variant {variant}" if variant else "",
        (
            f", batching up to {batching.max_batch_size} rows within {batching.max_latency_ms:g} ms"
            if batching.enabled
            else ""
        ),
    )


def _config(app: Starlette) -> uvicorn.Config:
    config = uvicorn.Config(
        app,
        loop="uvloop" if importlib.util.find_spec("uvloop") else "auto",
        http="httptools" if importlib.util.find_spec("httptools") else "auto",
        # Always one uvicorn worker per process: worker processes are mlshift's own
        # (_supervise), which load the model in each worker rather than pickling it.
        workers=1,
        access_log=False,
        lifespan="off",
        server_header=False,
        log_level="info",
    )
    # After the Config: creating it is what sets up uvicorn's loggers.
    logger.info("%s", app.state.description)
    return config


# ---------------------------------------------------------------------------- workers


def _supervise(
    options: dict[str, Any],
    workers: int,
    host: str,
    port: int,
    port_file: Path | None,
    on_ready: Callable[[str, int], None] | None = None,
) -> None:
    """Start ``workers`` processes serving one socket; stop them all on SIGTERM or Ctrl-C.

    Workers are spawned, not forked: onnxruntime sessions and user predictors may hold
    threads that a fork would not carry over, so each worker loads the model itself. A
    worker that fails to start makes the whole server fail with that worker's error; one
    that exits later stops the others too (whatever restarts the server restarts it whole).

    No worker answers before every worker has loaded the model: clients that open a few
    long-lived keep-alive connections as soon as the port answers (load balancers, load
    generators) would otherwise hand every one of them to the first worker up, and the
    others would idle for as long as those connections live.
    """
    import logging.config
    import multiprocessing

    # The supervisor's own lines (listening on, a worker failed) in uvicorn's format.
    logging.config.dictConfig(uvicorn.config.LOGGING_CONFIG)
    sock = _bind(host, port)
    context = multiprocessing.get_context("spawn")
    queue: Any = context.Queue()
    go: Any = context.Event()  # set once every worker has loaded the model
    stopping: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda signum, frame: stopping.append(signum))
        for sig in (signal.SIGTERM, signal.SIGINT)
    }
    processes = [
        context.Process(
            target=_worker,
            args=(sock, options, queue, go, os.getpid()),
            name=f"mlshift-worker-{i}",
        )
        for i in range(workers)
    ]
    port_written: str | None = None
    try:
        for process in processes:
            process.start()
        for stage in ("loaded", "ready"):
            count = 0
            while count < workers and not stopping:
                message = _next_message(queue, processes)
                if message is None:
                    continue
                if message[0] != stage:
                    _raise_failure(message)
                count += 1
            if stopping:
                return
            go.set()
        bound_host, bound_port = sock.getsockname()[:2]
        shown = f"[{bound_host}]" if ":" in bound_host else bound_host
        logger.info(
            "mlshift: %d workers listening on http://%s:%d (press Ctrl-C to stop)", workers, shown, bound_port
        )
        if port_file is not None:
            _write_atomically(port_file, str(bound_port))
            port_written = str(bound_port)
        if on_ready is not None:
            on_ready(bound_host, bound_port)
        while not stopping:
            gone = [p for p in processes if not p.is_alive()]
            if gone:
                raise WorkerFailed(f"worker {gone[0].name} exited with code {gone[0].exitcode}")
            _next_message(queue, processes)
    finally:
        if port_written is not None:
            with contextlib.suppress(OSError):
                if port_file is not None and port_file.read_text().strip() == port_written:
                    port_file.unlink()
        _stop(processes)
        sock.close()
        queue.close()
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _next_message(queue: Any, processes: Sequence[Any]) -> tuple[str, str, str | None] | None:
    """The next message from a worker, or None after a short wait; raises when one died."""
    import queue as queue_module

    try:
        message: tuple[str, str, str | None] = queue.get(timeout=0.2)
    except queue_module.Empty:
        dead = [p for p in processes if p.exitcode is not None]
        if dead:
            try:
                # It may have said why just before it exited.
                return queue.get(timeout=1.0)  # type: ignore[no-any-return]
            except queue_module.Empty:
                raise WorkerFailed(f"worker {dead[0].name} exited with code {dead[0].exitcode}") from None
        return None
    except InterruptedError:  # pragma: no cover - PEP 475 retries; kept for odd platforms
        return None
    return message


def _raise_failure(message: tuple[str, str, str | None]) -> None:
    kind, text, hint = message
    if kind == "IntegrityError":
        raise IntegrityError(text, hint=hint)
    if kind == "ImportError":
        raise ImportError(text)
    if kind == "MlshiftError":
        raise ConfigError(text, hint=hint)
    raise WorkerFailed(text)


def _stop(processes: Sequence[Any]) -> None:
    for process in processes:
        if process.is_alive() and process.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(process.pid, signal.SIGTERM)
    deadline = time.monotonic() + _STOP_GRACE_SECONDS
    for process in processes:
        process.join(max(0.0, deadline - time.monotonic()))
    for process in processes:
        if process.is_alive():
            process.kill()
            process.join(5.0)


def _worker(sock: socket.socket, options: dict[str, Any], queue: Any, go: Any, parent: int) -> None:
    """One worker process: load the model, serve the shared socket until told to stop."""
    try:
        _run_worker(sock, options, queue, go, parent)
    except KeyboardInterrupt:
        # Ctrl-C reaches every process of the terminal's group; the supervisor reports it.
        pass


def _run_worker(sock: socket.socket, options: dict[str, Any], queue: Any, go: Any, parent: int) -> None:
    _die_with_parent(parent)
    try:
        app = _build_app(**options)
    except IntegrityError as exc:
        queue.put(("IntegrityError", exc.message, exc.hint))
        return
    except MlshiftError as exc:
        queue.put(("MlshiftError", exc.message, exc.hint))
        return
    except ImportError as exc:
        queue.put(("ImportError", str(exc), None))
        return
    except Exception as exc:
        queue.put(("Exception", f"a worker failed to start: {type(exc).__name__}: {exc}", None))
        return
    queue.put(("loaded", str(os.getpid()), None))
    # Until every worker has loaded the model (see _supervise); the supervisor stops this
    # process if another one fails instead.
    go.wait()
    server = _Server(
        _config(app), port_file=None, worker_ready=lambda: queue.put(("ready", str(os.getpid()), None))
    )
    # uvicorn handles both signals while it runs, then raises the one it got again once it
    # has shut down; ignored by then, so that a stopped worker exits 0 without a traceback.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    try:
        server.run(sockets=[sock])
    finally:
        sock.close()


def _die_with_parent(parent: int) -> None:
    """Have Linux stop this worker if the supervisor is killed outright (no orphans)."""
    if not sys.platform.startswith("linux"):
        return
    import ctypes

    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, signal.SIGTERM)
    if os.getppid() != parent:
        # The supervisor died before the request took effect.
        os._exit(0)


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
    # IPPROTO_TCP named explicitly: asyncio sets TCP_NODELAY only on connections accepted
    # from sockets that say they are TCP; with proto 0 every small response waits ~40 ms
    # for the client's delayed ACK (uvloop sets it regardless).
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
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

    def __init__(
        self,
        config: uvicorn.Config,
        *,
        port_file: Path | None,
        on_ready: Callable[[str, int], None] | None = None,
        worker_ready: Callable[[], None] | None = None,
    ) -> None:
        super().__init__(config)
        self.port_file = port_file
        self.on_ready = on_ready
        self.port_written: str | None = None
        # A worker of a multi-process server tells its supervisor instead of announcing itself.
        self.worker_ready = worker_ready

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        if self.should_exit or not sockets:
            return
        if self.worker_ready is not None:
            self.worker_ready()
            return
        host, port = sockets[0].getsockname()[:2]
        shown = f"[{host}]" if ":" in host else host
        logger.info("mlshift: listening on http://%s:%d (press Ctrl-C to stop)", shown, port)
        if self.port_file is not None:
            _write_atomically(self.port_file, str(port))
            self.port_written = str(port)
        if self.on_ready is not None:
            self.on_ready(host, port)

    async def shutdown(self, sockets: list[socket.socket] | None = None) -> None:
        # Remove the port file first: once we start closing, nobody should connect anew.
        if self.port_file is not None and self.port_written is not None:
            with contextlib.suppress(OSError):
                if self.port_file.read_text().strip() == self.port_written:
                    self.port_file.unlink()
        await super().shutdown(sockets=sockets)
