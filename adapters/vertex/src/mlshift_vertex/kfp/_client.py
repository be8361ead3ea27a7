"""The Kubeflow Pipelines v2beta1 REST API over httpx: the calls the ``kfp`` client makes, without it.

The paths, query parameters and (snake_case) JSON fields are those of KFP's API server
(``backend/api/v2beta1/*.proto`` and the ``kfp-server-api`` models the ``kfp`` client is built
on): pipelines are uploaded as multipart ``uploadfile`` to ``/pipelines/upload`` and
``/pipelines/upload_version`` (the JSON ``CreatePipelineVersion`` only takes a URL the server
downloads), runs are created with a ``pipeline_version_reference`` and a ``runtime_config``,
and lists are filtered with a JSON ``Filter`` (``predicates`` of ``key``/``operation``/
``string_value``).

httpx rather than ``kfp.Client``: httpx comes with mlshift already, while ``kfp`` pulls
``kfp-server-api``, ``google-cloud-storage``, ``protobuf`` and ``kubernetes`` and checks the
cluster's health when the client is made; mlshift needs eleven plain requests.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from typing import Any

import httpx

from mlshift.errors import AuthError, Conflict, NotFound, ProviderError, ProviderTimeout, QuotaExceeded

__all__ = ["PROVIDER", "KubeflowApiError", "KubeflowClient"]

PROVIDER = "kfp"
API = "/apis/v2beta1"


class KubeflowApiError(ProviderError):
    """The Kubeflow Pipelines API refused a request for a reason mlshift does not map, or failed."""

    code = "kfp_api_error"


def _message(response: httpx.Response) -> str:
    """The server's own words: grpc-gateway's ``message`` (or ``error``), else the body's start."""
    try:
        data = response.json()
    except ValueError:
        return response.text[:300].strip() or response.reason_phrase
    if isinstance(data, dict):
        for key in ("message", "error", "error_message"):
            if isinstance(data.get(key), str) and data[key]:
                return str(data[key])
    return response.text[:300]


def translate(response: httpx.Response, what: str) -> ProviderError:
    """The mlshift error for an error answer of the API to doing ``what``."""
    code = response.status_code
    text = f"Kubeflow Pipelines refused to {what}: HTTP {code}: {_message(response)}"
    if code in (401, 403):
        return AuthError(
            text,
            provider=PROVIDER,
            provider_code=str(code),
            hint="set MLSHIFT_KFP_TOKEN (or the variable the token_env option names) to a bearer token the "
            "cluster accepts, e.g. `kubectl create token default-editor -n NAMESPACE`; in multi-user "
            "Kubeflow also set the namespace option",
        )
    if code == 404:
        return NotFound(text, provider=PROVIDER, provider_code=str(code))
    if code == 409:
        return Conflict(text, provider=PROVIDER, provider_code=str(code))
    if code == 429:
        return QuotaExceeded(text, provider=PROVIDER, provider_code=str(code), hint="wait, then run again")
    if code in (408, 504):
        return ProviderTimeout(text, provider=PROVIDER, provider_code=str(code))
    return KubeflowApiError(text, provider=PROVIDER, provider_code=str(code))


def name_filter(key: str, value: str) -> str:
    """A list filter ``key == value``, as the ``kfp`` client writes it."""
    return json.dumps({"predicates": [{"key": key, "operation": "EQUALS", "string_value": value}]})


class KubeflowClient:
    """One HTTP connection pool to ``base`` (``https://HOST/PREFIX``), made on first use.

    Args:
        base: The API's base URL (``/apis/v2beta1`` is appended).
        token: Returns the bearer token to send (``None``: none); called per request so the
            token is never kept on this object.
        timeout: Seconds per request.
    """

    def __init__(self, base: str, token: Any, timeout: float = 60.0) -> None:
        self.base = base
        self._token = token
        self._timeout = timeout
        self._http: httpx.Client | None = None
        self._lock = threading.Lock()

    def _client(self) -> httpx.Client:
        with self._lock:
            if self._http is None:
                self._http = httpx.Client(base_url=self.base + API, timeout=self._timeout)
            return self._http

    def request(
        self,
        method: str,
        path: str,
        what: str,
        *,
        params: Mapping[str, Any] | None = None,
        body: Any = None,
        files: Mapping[str, Any] | None = None,
    ) -> Any:
        """Send one request; returns the JSON answer (``{}`` for an empty one).

        Raises:
            AuthError, NotFound, Conflict, QuotaExceeded, ProviderTimeout, KubeflowApiError: the
                API's error answer, translated.
            ProviderError: the API could not be reached.
        """
        headers = {"accept": "application/json"}
        token = self._token()
        if token:
            headers["authorization"] = f"Bearer {token}"
        clean = {k: v for k, v in (params or {}).items() if v is not None}
        try:
            response = self._client().request(
                method, path, params=clean, json=body, files=files, headers=headers
            )
        except httpx.TimeoutException as exc:
            raise ProviderTimeout(
                f"Kubeflow Pipelines at {self.base} did not answer in time to {what}",
                provider=PROVIDER,
                orig=exc,
                hint="raise the target's request_timeout, or check the ml-pipeline API server's health",
            ) from exc
        except httpx.HTTPError as exc:
            raise ProviderError(
                f"cannot reach Kubeflow Pipelines at {self.base} to {what}: {type(exc).__name__}: {exc}",
                provider=PROVIDER,
                orig=exc,
                hint="check the host and port; for a cluster without ingress, forward the API first: "
                "`kubectl port-forward -n kubeflow svc/ml-pipeline 8888:8888` and use kfp://127.0.0.1:8888",
            ) from exc
        if response.status_code >= 400:
            raise translate(response, what)
        if not response.content:
            return {}
        try:
            return response.json()
        except ValueError as exc:
            raise KubeflowApiError(
                f"Kubeflow Pipelines answered {what} with something not JSON: {response.text[:200]!r}",
                provider=PROVIDER,
                hint="is the URL the Kubeflow Pipelines API (ml-pipeline), and the path prefix right?",
            ) from exc

    def close(self) -> None:
        """Close the connection pool."""
        with self._lock:
            http, self._http = self._http, None
        if http is not None:
            http.close()
