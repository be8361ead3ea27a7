"""MLflow model URIs (``models:/NAME/VERSION``, ``models:/NAME@ALIAS``, ``runs:/ID/PATH``).

They are resolved against the tracking server in ``MLFLOW_TRACKING_URI`` with mlflow's own
client (the ``mlflow`` extra), and their artifacts downloaded to a temporary folder that
registration reads like any local artifact.
"""

from __future__ import annotations

import os
import re
import shutil
import tempfile
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from mlshift.errors import AuthError, ConfigError, NotFound, ProviderError

__all__ = ["MlflowSource", "download_mlflow_model", "is_mlflow_uri", "parse_mlflow_uri"]

_MODELS = re.compile(r"^models:/(?P<name>[^/@]+)(?:/(?P<version>\d+)|@(?P<alias>[A-Za-z0-9_-]+))$")
_RUNS = re.compile(r"^runs:/(?P<run>[0-9A-Za-z_-]+)/(?P<path>[^?#]+)$")
_FORMS = "models:/NAME/VERSION, models:/NAME@ALIAS or runs:/RUN_ID/PATH"


@dataclass(frozen=True)
class MlflowSource:
    """A parsed MLflow model URI.

    Attributes:
        uri: The URI as given.
        name: The registered model's name (``models:/``).
        version: Its version, when the URI names one.
        alias: Its alias, when the URI names one.
        run_id: The run (``runs:/``).
        artifact_path: The artifact's path inside the run (``runs:/``).
    """

    uri: str
    name: str | None = None
    version: str | None = None
    alias: str | None = None
    run_id: str | None = None
    artifact_path: str | None = None
    #: Provenance to keep with the mlshift version (filled in once resolved).
    tags: dict[str, str] = field(default_factory=dict)


def is_mlflow_uri(text: object) -> bool:
    """Whether ``text`` is meant as an MLflow model URI (``models:`` or ``runs:``)."""
    return isinstance(text, str) and text.strip().lower().startswith(("models:", "runs:"))


def parse_mlflow_uri(text: str) -> MlflowSource:
    """Parse an MLflow model URI.

    Raises:
        ConfigError: naming the accepted forms, for anything else.
    """
    uri = text.strip()
    if (m := _MODELS.match(uri)) is not None:
        return MlflowSource(uri=uri, name=m["name"], version=m["version"], alias=m["alias"])
    if (m := _RUNS.match(uri)) is not None and ".." not in m["path"].split("/"):
        return MlflowSource(uri=uri, run_id=m["run"], artifact_path=m["path"].strip("/"))
    hint = f"write {_FORMS}"
    if uri.startswith("models:/") and uri.count("/") == 1 and "@" not in uri:
        hint += " (name the version or alias: mlshift does not guess the latest)"
    raise ConfigError(f"{text!r} is not an MLflow model URI", field="path", hint=hint)


def _redacted(uri: str) -> str:
    """The tracking URI without credentials, for messages."""
    parts = urlsplit(uri)
    if parts.username is None and parts.password is None:
        return uri
    host = parts.hostname or ""
    netloc = f"***@{host}" + (f":{parts.port}" if parts.port else "")
    return urlunsplit(parts._replace(netloc=netloc))


def _tracking_uri(environ: Mapping[str, str]) -> str:
    uri = environ.get("MLFLOW_TRACKING_URI", "").strip()
    if not uri:
        raise ConfigError(
            "MLflow model URIs are resolved on a tracking server, and MLFLOW_TRACKING_URI is not set",
            field="MLFLOW_TRACKING_URI",
            hint="export MLFLOW_TRACKING_URI=http://HOST:5000 (or sqlite:///mlflow.db), or "
            "download the model folder and register its path",
        )
    return uri


def _mlflow_client(tracking_uri: str) -> Any:
    try:
        from mlflow.tracking import MlflowClient
    except ImportError as exc:
        raise ImportError(
            f"resolving MLflow model URIs needs the 'mlflow' extra: pip install 'mlshift[mlflow]' ({exc})"
        ) from exc
    return MlflowClient(tracking_uri=tracking_uri, registry_uri=tracking_uri)


def _translate(exc: Exception, what: str, tracking: str) -> ProviderError:
    code = str(getattr(exc, "error_code", "") or "")
    first = (str(exc).strip().splitlines() or [type(exc).__name__])[0][:300]
    where = f"on the MLflow tracking server {_redacted(tracking)}"
    if code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND") or "not found" in first.lower():
        return NotFound(
            f"{what} does not exist {where}: {first}",
            provider="mlflow",
            provider_code=code or None,
            orig=exc,
            hint="check the name, version, alias or run id (`mlflow models` / the MLflow UI)",
        )
    if code in ("PERMISSION_DENIED", "UNAUTHENTICATED"):
        return AuthError(
            f"not allowed to read {what} {where}: {first}",
            provider="mlflow",
            provider_code=code,
            orig=exc,
            hint="set MLFLOW_TRACKING_USERNAME/MLFLOW_TRACKING_PASSWORD or MLFLOW_TRACKING_TOKEN",
        )
    return ProviderError(
        f"cannot read {what} {where}: {first}",
        provider="mlflow",
        provider_code=code or None,
        orig=exc,
        hint="check that the server is up and MLFLOW_TRACKING_URI points at it",
    )


@contextmanager
def download_mlflow_model(
    source: MlflowSource, environ: Mapping[str, str] | None = None
) -> Iterator[tuple[Path, MlflowSource]]:
    """Download a model's artifacts; yields the local folder (or file) and the resolved source.

    An alias is resolved to its version first, so what is downloaded and what is recorded
    (the ``mlflow.*`` tags) are the same version even if the alias moves meanwhile. The
    download is removed on exit.

    Raises:
        ConfigError: if ``MLFLOW_TRACKING_URI`` is not set.
        ImportError: naming the ``mlflow`` extra, when mlflow is not installed.
        NotFound: the model, version, alias or run does not exist.
        ProviderError: the tracking server failed or cannot be reached.
    """
    tracking = _tracking_uri(os.environ if environ is None else environ)
    client = _mlflow_client(tracking)
    tags = {"mlflow.source": source.uri}
    try:
        if source.name is not None:
            what = f"model version {source.uri}"
            mv = (
                client.get_model_version_by_alias(source.name, source.alias)
                if source.alias is not None
                else client.get_model_version(source.name, source.version)
            )
            uri = f"models:/{source.name}/{mv.version}"
            tags.update({"mlflow.model": source.name, "mlflow.version": str(mv.version)})
            if mv.run_id:
                tags["mlflow.run_id"] = mv.run_id
        else:
            what = f"artifact {source.uri}"
            uri = source.uri
            tags["mlflow.run_id"] = str(source.run_id)
    except Exception as exc:
        raise _translate(exc, f"{source.uri}", tracking) from exc
    folder = Path(tempfile.mkdtemp(prefix="mlshift-mlflow-"))
    try:
        try:
            from mlflow.artifacts import download_artifacts

            local = Path(download_artifacts(artifact_uri=uri, dst_path=str(folder), tracking_uri=tracking))
        except Exception as exc:
            raise _translate(exc, what, tracking) from exc
        resolved = MlflowSource(
            uri=source.uri,
            name=source.name,
            version=tags.get("mlflow.version", source.version),
            alias=source.alias,
            run_id=tags.get("mlflow.run_id"),
            artifact_path=source.artifact_path,
            tags=tags,
        )
        yield local, resolved
    finally:
        shutil.rmtree(folder, ignore_errors=True)
