"""Options of a ``kfp://HOST[:PORT][/PREFIX]`` target, and where its API is.

Options come from the URI query, ``mlshift.yaml`` (``targets.NAME.options``) or
``MLSHIFT_KFP_<FIELD>`` environment variables, in that order of precedence. The bearer token is
never an option: it is read from the environment variable ``token_env`` names, when a request is
sent, and is never stored, logged or shown.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping
from typing import Any

from pydantic import Field, field_validator

from mlshift.adapter import TargetURI
from mlshift.errors import ConfigError
from mlshift.specs import SpecModel

__all__ = ["KubeflowOptions", "api_base", "is_loopback"]

_HOST = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]*[A-Za-z0-9])?|\[[0-9A-Fa-f:.]+\]")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_CREDENTIAL_WORDS = ("secret", "token", "credential", "password", "private_key", "api_key")
_HINT = "write kfp://HOST[:PORT][/PREFIX], e.g. kfp://127.0.0.1:8888 or kfp://kubeflow.example.com/pipeline"


def is_loopback(host: str) -> bool:
    """Whether ``host`` is this machine (``localhost``, ``127.0.0.0/8``, ``::1``)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class KubeflowOptions(SpecModel):
    """Options of a ``kfp://`` target.

    Attributes:
        image: The mlshift image ``python``, ``register_model``, ``deploy`` and ``fail`` steps
            run in (a registry your cluster pulls from); container steps keep their own.
        step_target: The target URI ``RegisterModel`` and ``Deploy`` steps act on (Kubeflow has
            no model registry or endpoints of its own), unless a step names its own target.
        pipeline_root: Where KFP writes artifacts (``runtime_config.pipeline_root``,
            ``s3://``/``minio://``/``gs://``); default: the cluster's.
        experiment_id: The KFP experiment runs are created in (default: the cluster's default).
        namespace: The Kubernetes namespace pipelines are uploaded to (multi-user Kubeflow).
        service_account: The Kubernetes service account runs use.
        token_env: The environment variable holding a bearer token for the API (read per
            request; never stored or printed). Unset or empty: no ``Authorization`` header.
        tls: ``https`` to a loopback host too (hosts other than loopback always use https).
        poll_interval: Seconds between status checks while a client waits for a run.
        request_timeout: Seconds one API request may take.
    """

    image: str | None = None
    step_target: str | None = None
    pipeline_root: str | None = None
    experiment_id: str | None = None
    namespace: str | None = Field(default=None, pattern=r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")
    service_account: str | None = Field(default=None, pattern=r"^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$")
    token_env: str = "MLSHIFT_KFP_TOKEN"
    tls: bool = False
    poll_interval: float = Field(default=5.0, gt=0, le=300)
    request_timeout: float = Field(default=60.0, gt=0, le=600)

    @field_validator("image")
    @classmethod
    def _image(cls, value: str | None) -> str | None:
        if value is not None and (not value or any(c.isspace() for c in value)):
            raise ValueError(f"{value!r} is not an image name")
        return value

    @field_validator("step_target")
    @classmethod
    def _step_target(cls, value: str | None) -> str | None:
        if value is not None and "://" not in value:
            raise ValueError(f"{value!r} is not a target URI (e.g. vertex://PROJECT/LOCATION)")
        if value is not None and value.startswith("kfp://"):
            raise ValueError("kfp:// has no models or endpoints; name a target that does")
        return value

    @field_validator("token_env")
    @classmethod
    def _token_env(cls, value: str) -> str:
        if not _ENV_NAME.fullmatch(value):
            raise ValueError(f"{value!r} is not an environment variable name")
        return value

    def token(self) -> str | None:
        """The bearer token, read from the environment now (``None``: send no credentials)."""
        return os.environ.get(self.token_env) or None

    @classmethod
    def from_sources(
        cls,
        query: Mapping[str, str],
        options: Mapping[str, Any],
        environ: Mapping[str, str] | None = None,
    ) -> KubeflowOptions:
        """Merge the URI query over ``options`` over ``MLSHIFT_KFP_*`` variables.

        Raises:
            ConfigError: naming the option (``target.options.<field>``) and the known ones.
        """
        env = os.environ if environ is None else environ
        known = sorted(cls.model_fields)
        data: dict[str, Any] = {}
        for name in known:
            value = env.get(f"MLSHIFT_KFP_{name.upper()}")
            if value and name != "token_env":
                data[name] = value
        data.update(options)
        data.update(query)
        for key in data:
            if key not in cls.model_fields and any(w in key.lower() for w in _CREDENTIAL_WORDS):
                raise ConfigError(
                    f"target option {key!r} looks like a credential; mlshift never takes or stores them",
                    field=f"target.options.{key}",
                    hint="put the bearer token in the environment variable MLSHIFT_KFP_TOKEN "
                    "(or the one the token_env option names)",
                )
        try:
            return cls.model_validate(data)
        except ConfigError as exc:
            path = "target.options" + (f".{exc.field}" if exc.field else "")
            raise ConfigError(
                f"kfp target: {path}: {exc.detail}",
                field=path,
                hint=f"options the kfp target knows: {', '.join(known)}",
            ) from None


def api_base(uri: TargetURI, options: KubeflowOptions) -> str:
    """``http(s)://HOST[:PORT][/PREFIX]`` for ``kfp://HOST[:PORT][/PREFIX]``.

    Plain ``http`` only to a loopback host (a ``kubectl port-forward``), unless ``tls`` is set;
    every other host is reached over ``https``.

    Raises:
        ConfigError: no host, a malformed host or port, or a variant (``kfp+x://``).
    """
    if uri.variant is not None:
        raise ConfigError(f"the kfp target has no {uri.variant!r} variant (in {uri.raw!r})", field="target")
    host, _, port = uri.location.rpartition(":") if uri.location.count(":") == 1 else (uri.location, "", "")
    if not uri.location:
        raise ConfigError(f"no host in {uri.raw!r}", field="target", hint=_HINT)
    if "@" in uri.location:
        raise ConfigError(
            f"{uri.raw!r} carries credentials in the URI; mlshift never takes them there",
            field="target",
            hint="put a bearer token in MLSHIFT_KFP_TOKEN instead",
        )
    if not _HOST.fullmatch(host) or (port and not (port.isdigit() and 0 < int(port) < 65536)):
        raise ConfigError(f"{uri.location!r} is not HOST[:PORT] (in {uri.raw!r})", field="target", hint=_HINT)
    scheme = "http" if is_loopback(host) and not options.tls else "https"
    prefix = uri.path.rstrip("/")
    return f"{scheme}://{uri.location}{prefix}"
