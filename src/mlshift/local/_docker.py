"""Variant replicas as containers of the serving image: the runtime behind ``local+docker://``.

Each replica is one container of ``mlshift-serving`` (built on first use), started with the
model's artifact mounted read-only, its port published on 127.0.0.1 only and CPU/memory limits
from the variant's neutral size. Containers carry ``mlshift.*`` labels, so what runs is read
from Docker itself and containers left by a deployer that died are found and removed.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlshift.errors import ConfigError, ImageNotFound, ProviderError, ProviderTimeout
from mlshift.local._runtime import Replica, ReplicaRequest

__all__ = ["COMPUTE_LIMITS", "ContainerTask", "DockerRuntime"]

#: Neutral size -> (CPUs, memory in MiB) for a replica's container; CPUs are capped at what the
#: machine has. GPU sizes are refused: the Docker target attaches no GPU.
COMPUTE_LIMITS: Mapping[str, tuple[float, int]] = {
    "cpu-small": (1.0, 2048),
    "cpu-medium": (2.0, 4096),
    "cpu-large": (4.0, 8192),
}
#: The label every mlshift container carries (its value is the endpoint's name).
ENDPOINT_LABEL = "mlshift.endpoint"
_CONTAINER_PORT = "8080/tcp"
#: Seconds between readiness probes of a starting replica (a loopback request: cheap), and
#: between asking Docker whether it still runs (an API round trip: tens of ms on a busy engine).
_PROBE_INTERVAL = 0.02
_INSPECT_INTERVAL = 0.25
_MODEL_DIR = "/opt/ml/model"


@dataclass(frozen=True)
class ContainerTask:
    """One command to run to completion in a container (a pipeline's ``ContainerStep``).

    Attributes:
        name: The container's name (one at a time: a container left with it is removed first).
        image: The image to run; it must be on the engine (nothing is pulled).
        command: The command and its arguments.
        workdir: The working folder inside the container.
        mounts: ``(host path, mode)`` pairs, each mounted at the same path inside (``rw``/``ro``).
        environment: Variables for the command; sent through the Docker API, never a command line.
        labels: ``mlshift.*`` labels that say what the container is for.
        size: The neutral size whose CPU and memory limits apply (``cpu-small`` ...).
        log: The file the container's output is appended to as it runs.
    """

    name: str
    image: str
    command: Sequence[str]
    workdir: str
    mounts: Sequence[tuple[str, str]]
    log: Path
    environment: Mapping[str, str] = field(default_factory=dict)
    labels: Mapping[str, str] = field(default_factory=dict)
    size: str = "cpu-small"


def _say(message: str) -> None:
    print(f"==> {message}", file=sys.stderr, flush=True)


class DockerRuntime:
    """Each replica is a container of the mlshift serving image on the local Docker engine.

    Args:
        image: The serving image to run (default: ``mlshift-serving:VERSION`` for scikit-learn
            and predictor models, ``mlshift-serving:VERSION-onnx-sklearn`` for ONNX models),
            built on first use when it is missing and is a default name.
        client: A ``docker.DockerClient`` (default: one for ``DOCKER_HOST``, made on first use).
        say: Where build progress goes.
    """

    name = "docker"

    def __init__(self, image: str | None = None, *, client: Any = None, say: Any = _say) -> None:
        self.image = image
        self._client = client
        self._say = say
        self._ready: set[str] = set()
        self._user: str | bool | None = False  # False: not asked yet

    @property
    def client(self) -> Any:
        """The Docker client (checked with a ping when first made).

        Raises:
            DockerUnavailable: no daemon answers, or the Docker SDK is not installed.
        """
        if self._client is None:
            from mlshift.image import docker_client

            self._client = docker_client()
        return self._client

    # ------------------------------------------------------------------ image

    @staticmethod
    def _frameworks(framework: str) -> tuple[str, ...]:
        from mlshift.image import DEFAULT_FRAMEWORKS, FRAMEWORKS

        # Predictor models need no framework of their own: the default image serves them.
        return tuple(sorted(set(DEFAULT_FRAMEWORKS) | ({framework} if framework in FRAMEWORKS else set())))

    def image_for(self, framework: str) -> str:
        """The image that serves ``framework`` models."""
        if self.image is not None:
            return self.image
        from mlshift.image import default_image

        return default_image(self._frameworks(framework))

    def ensure_image(self, framework: str) -> str:
        """Return the image for ``framework``, building it first when it is a default one and
        missing or outdated.

        A default image is outdated when the digest of its inputs (mlshift's code and
        requirements, the Dockerfile, the build arguments, the base image) that it carries as a
        label differs from what this mlshift would build it from: an image left by an earlier
        mlshift or checkout is rebuilt (warm: Docker reuses the unchanged layers), with a line
        saying what changed. A user-chosen image is used as it is.

        Raises:
            ImageNotFound: a user-chosen image is missing, or the base image to build from is.
            DockerUnavailable: no daemon.
        """
        image = self.image_for(framework)
        if image in self._ready:
            return image
        if self.image is not None:
            from mlshift.image import image_exists

            if not image_exists(self.client, image):
                raise ImageNotFound(
                    f"serving image {image!r} is not on this Docker engine",
                    image=image,
                    hint=f"build it with `mlshift image build --tag {image}`",
                )
        else:
            from mlshift.image import build_image, image_inputs, outdated_because

            frameworks = self._frameworks(framework)
            # An image you built from another base (`--base-image`) is rebuilt from that base.
            base = self._base_of(image)
            why = outdated_because(
                self.client, image, image_inputs(frameworks, base_image=base, client=self.client)
            )
            if why is not None:
                self._say(f"building the serving image {image}: {why} (later starts reuse it)")
                build_image(image, frameworks=frameworks, base_image=base, client=self.client, say=self._say)
        self._ready.add(image)
        return image

    def _base_of(self, image: str) -> str | None:
        """The base image ``image`` was built from, when it says and the engine still has it."""
        import docker.errors

        from mlshift.image import BASE_LABEL, image_exists

        try:
            base = (self.client.images.get(image).labels or {}).get(BASE_LABEL)
        except docker.errors.ImageNotFound:
            return None
        return str(base) if base and image_exists(self.client, str(base)) else None

    def container_user(self) -> str | None:
        """``uid:gid`` that replicas run as: this process's (``None``: the image's own user).

        A replica writes capture files into the state folder through a mount, and files a
        container's root makes there are root's: the user could not delete or rotate them. As
        this user they are the user's, and the artifact (read-only, mode 0400, the user's) is
        still readable. A rootless engine maps its root to this user already, and any other uid
        to a subordinate one, so it keeps the image's user; so does a platform without uids.
        """
        if self._user is False:
            getuid = getattr(os, "getuid", None)
            getgid = getattr(os, "getgid", None)
            if getuid is None or getgid is None:
                self._user = None
            else:
                try:
                    options = self.client.info().get("SecurityOptions") or []
                except Exception:  # an engine that does not say: assume the usual rootful one
                    options = []
                rootless = any("name=rootless" in str(o) for o in options)
                self._user = None if rootless else f"{getuid()}:{getgid()}"
        return self._user if isinstance(self._user, str) else None

    # ------------------------------------------------------------------ the runtime contract

    def start(self, request: ReplicaRequest) -> Replica:
        cpus, memory = self._limits(request)
        image = self.ensure_image(request.framework)
        target = f"{_MODEL_DIR}/{request.artifact.name}"
        environment = {
            "MLSHIFT_ARTIFACT": target,
            "MLSHIFT_FRAMEWORK": request.framework,
            "MLSHIFT_MODEL_DIGEST": request.digest,
            "MLSHIFT_VARIANT": request.variant,
            "MLSHIFT_MODEL_REF": request.model_ref,
        }
        if request.signature_json is not None:
            environment["MLSHIFT_SIGNATURE"] = request.signature_json
        if request.skops_trust:
            # The version's own trust (its mlshift.skops-trust tag); the container serves only it.
            environment["MLSHIFT_SKOPS_TRUST"] = request.skops_trust
        environment.update(request.environment())
        volumes = {str(request.artifact): {"bind": target, "mode": "ro"}}
        if request.capture_dir is not None:
            from mlshift.serving._capture import CAPTURE_DIR_ENV, ENDPOINT_ENV

            # Mounted at the same path: the server writes capture files straight into the state
            # folder, and reads a changed capture.json there without a restart.
            request.capture_dir.mkdir(parents=True, exist_ok=True)
            volumes[str(request.capture_dir)] = {"bind": str(request.capture_dir), "mode": "rw"}
            environment[CAPTURE_DIR_ENV] = str(request.capture_dir)
            environment[ENDPOINT_ENV] = request.endpoint
        labels = {
            ENDPOINT_LABEL: request.endpoint,
            "mlshift.variant": request.variant,
            "mlshift.replica": str(request.index),
            "mlshift.folder": str(request.folder),
            "mlshift.model": request.model_ref,
        }
        name = f"mlshift-{request.endpoint}-{request.variant}-{request.index}-{time.time_ns() % 10**10:010d}"
        user = self.container_user()
        started = time.time()
        try:
            container = self.client.containers.run(
                image,
                name=name,
                detach=True,
                environment=environment,
                labels=labels,
                volumes=volumes,
                # Files it writes into the state folder (capture) are the user's, not root's.
                **({"user": user} if user is not None else {}),
                # Published on loopback only: nothing outside this machine reaches a replica.
                ports={_CONTAINER_PORT: ("127.0.0.1", None)},
                nano_cpus=int(cpus * 1e9),
                mem_limit=f"{memory}m",
                init=True,
            )
        except Exception as exc:
            raise ProviderError(
                f"docker could not start the {request.what}: {exc}", provider="docker", orig=exc
            ) from exc
        try:
            port = self._wait_ready(container, request)
        except BaseException:
            self._remove(container)
            raise
        return Replica(
            runtime=self.name,
            id=container.id,
            port=port,
            started=started,
            extra={"name": name, "image": image},
        )

    def running(self, replica: Replica) -> bool:
        container = self._get(replica.id)
        return container is not None and container.status == "running"

    def exit_reason(self, replica: Replica) -> str:
        container = self._get(replica.id)
        short = replica.id[:12]
        if container is None:
            return f"container {short} is gone"
        state = container.attrs.get("State", {})
        why = f"code {state.get('ExitCode')}"
        if state.get("OOMKilled"):
            why += ", out of memory"
        return f"container {short} {container.status} ({why})"

    def stop(self, replica: Replica, timeout: float = 10.0) -> None:
        container = self._get(replica.id)
        if container is not None:
            self._remove(container, timeout)

    def logs(self, replica: Replica, lines: int = 8) -> str:
        container = self._get(replica.id)
        return _tail(container, lines) if container is not None else ""

    def reap(self, folder: Path, keep: Collection[str] = ()) -> list[str]:
        prefix = str(folder).rstrip("/")
        reaped = []
        for container in self.client.containers.list(all=True, filters={"label": ENDPOINT_LABEL}):
            where = str(container.labels.get("mlshift.folder", ""))
            if (where == prefix or where.startswith(prefix + "/")) and container.id not in keep:
                self._remove(container, 5.0)
                reaped.append(container.id)
        return reaped

    # ------------------------------------------------------------------ tasks (pipeline steps)

    def run_task(
        self,
        task: ContainerTask,
        *,
        should_stop: Callable[[], str | None] = lambda: None,
        poll: float = 0.1,
    ) -> int:
        """Run ``task`` to completion and return its exit code; its output goes to ``task.log``.

        ``should_stop`` is asked while it runs: a reason (cancelled, timed out) stops the
        container (SIGTERM, then SIGKILL after 5 s) and raises :class:`ProviderError` with it.
        The container is removed in every case.

        Raises:
            ImageNotFound: the image is not on the engine.
            ConfigError: a ``gpu-*`` size (the Docker target attaches no GPU).
            ProviderError: Docker refused to start it, or ``should_stop`` gave a reason.
        """
        if task.size not in COMPUTE_LIMITS:
            raise ConfigError(
                f"the Docker target attaches no GPU, so container {task.name!r} "
                f"cannot have size {task.size!r}",
                field="resources.size",
                hint=f"use one of {', '.join(COMPUTE_LIMITS)} on local+docker://",
            )
        from mlshift.image import image_exists

        if not image_exists(self.client, task.image):
            raise ImageNotFound(
                f"image {task.image!r} is not on this Docker engine",
                image=task.image,
                hint=f"`docker pull {task.image}` where a registry is reachable, or build it "
                "(`docker build -t NAME .`)",
            )
        import docker.errors

        # A runner that died left its container under this name: it is ours to remove.
        try:
            self._remove(self.client.containers.get(task.name), 1.0)
        except docker.errors.NotFound:
            pass
        cpus, memory = COMPUTE_LIMITS[task.size]
        try:
            container = self.client.containers.run(
                task.image,
                list(task.command),
                name=task.name,
                detach=True,
                working_dir=task.workdir,
                environment=dict(task.environment),
                labels=dict(task.labels),
                volumes={path: {"bind": path, "mode": mode} for path, mode in task.mounts},
                nano_cpus=int(min(cpus, float(os.cpu_count() or 1)) * 1e9),
                mem_limit=f"{memory}m",
                init=True,
            )
        except Exception as exc:
            raise ProviderError(
                f"docker could not start container {task.name!r}: {exc}", provider="docker", orig=exc
            ) from exc
        copier = threading.Thread(target=_copy_logs, args=(container, task.log), daemon=True)
        copier.start()
        try:
            while True:
                container.reload()
                if container.status in ("exited", "dead"):
                    copier.join(10)
                    return int(container.attrs.get("State", {}).get("ExitCode", -1))
                reason = should_stop()
                if reason is not None:
                    container.stop(timeout=5)
                    copier.join(10)
                    raise ProviderError(f"container {task.name!r} was stopped: {reason}", provider="docker")
                time.sleep(poll)
        finally:
            self._remove(container, 1.0)

    # ------------------------------------------------------------------ helpers

    @staticmethod
    def _limits(request: ReplicaRequest) -> tuple[float, int]:
        size = request.compute.size
        if size not in COMPUTE_LIMITS:
            raise ConfigError(
                f"the Docker target attaches no GPU, so variant {request.variant!r} "
                f"cannot have size {size!r}",
                field="compute.size",
                hint=f"use one of {', '.join(COMPUTE_LIMITS)} on local+docker://",
            )
        cpus, memory = COMPUTE_LIMITS[size]
        return min(cpus, float(os.cpu_count() or 1)), memory

    def _get(self, container_id: str) -> Any:
        import docker.errors

        try:
            return self.client.containers.get(container_id)
        except docker.errors.NotFound:
            return None

    @staticmethod
    def _remove(container: Any, timeout: float = 10.0) -> None:
        import docker.errors

        try:
            container.stop(timeout=max(1, int(timeout)))
        except docker.errors.NotFound:
            return
        except docker.errors.APIError:
            pass  # already stopping or stopped: removing it is what matters
        try:
            container.remove(force=True)
        except docker.errors.NotFound:
            pass

    def _wait_ready(self, container: Any, request: ReplicaRequest) -> int:
        """Poll the container until ``/ping`` answers 200; fail early when it exits.

        The probe is a loopback HTTP request every :data:`_PROBE_INTERVAL`; asking Docker
        whether the container still runs costs more, so that happens every
        :data:`_INSPECT_INTERVAL` (and until the published port is known).
        """
        import httpx

        deadline = time.monotonic() + request.timeout
        port: int | None = None
        inspected = float("-inf")
        with httpx.Client(timeout=httpx.Timeout(2.0), trust_env=False) as http:
            while True:
                if port is None or time.monotonic() - inspected >= _INSPECT_INTERVAL:
                    container.reload()
                    inspected = time.monotonic()
                if container.status in ("exited", "dead"):
                    code = container.attrs.get("State", {}).get("ExitCode")
                    tail = _tail(container, 8)
                    raise ProviderError(
                        f"the {request.what} exited (code {code}) before it was ready"
                        + (f"; its last log lines:\n{tail}" if tail else ""),
                        provider="docker",
                        hint=f"see `docker logs {container.name}` while it exists; check the model with "
                        "`python -m mlshift.serving --artifact FILE`",
                    )
                if port is None:
                    bound = (container.attrs.get("NetworkSettings", {}).get("Ports") or {}).get(
                        _CONTAINER_PORT
                    )
                    port = int(bound[0]["HostPort"]) if bound else None
                if port is not None:
                    try:
                        if http.get(f"http://127.0.0.1:{port}/ping").status_code == 200:
                            return port
                    except httpx.HTTPError:
                        pass  # not listening yet
                if time.monotonic() >= deadline:
                    tail = _tail(container, 8)
                    raise ProviderTimeout(
                        f"the {request.what} was not ready within {request.timeout:g} s"
                        + (f"; its last log lines:\n{tail}" if tail else ""),
                        provider="docker",
                        hint="raise provider_options.local.startup_timeout, or check the model",
                    )
                time.sleep(_PROBE_INTERVAL)


def _copy_logs(container: Any, log: Path) -> None:
    """Append the container's output to ``log`` as it comes, until the container stops."""
    log.parent.mkdir(parents=True, exist_ok=True)
    try:
        with log.open("ab") as fh:
            for chunk in container.logs(stream=True, follow=True):
                fh.write(chunk)
                fh.flush()
    except Exception:  # the container was removed under us: what was copied is what there is
        return


def _tail(container: Any, lines: int) -> str:
    try:
        text = container.logs(tail=lines)
    except Exception:
        return ""
    return bytes(text).decode(errors="replace").strip()
