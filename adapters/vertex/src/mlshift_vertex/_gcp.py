"""Google clients, made on first use: aiplatform_v1's low-level clients and one HTTP session.

- Vertex AI: ``ModelServiceClient``, ``EndpointServiceClient``, ``PredictionServiceClient``,
  ``PipelineServiceClient`` and ``ScheduleServiceClient`` with the REST transport against
  ``LOCATION-aiplatform.googleapis.com`` (or ``api_endpoint``).
  The high-level ``aiplatform.*`` objects are not used: they add GCS and Resource Manager calls
  and about 2 s of import.
- GCS and Cloud Monitoring: their JSON APIs through google-auth's ``AuthorizedSession``, so no
  storage or monitoring client library is needed.
- BigQuery (reading what request-response logging wrote): ``google.cloud.bigquery.Client``,
  which comes with google-cloud-aiplatform, against ``bigquery.googleapis.com`` (or
  ``api_endpoint``); imported on first use only.

Credentials are Application Default Credentials, resolved when the first client is made and
never stored by mlshift; against a loopback emulator (``api_endpoint=http://127.0.0.1:PORT``)
they are anonymous.
"""

from __future__ import annotations

import threading
from typing import Any

from mlshift.errors import AuthError
from mlshift_vertex.errors import PROVIDER, google_errors
from mlshift_vertex.options import VertexOptions

__all__ = ["GoogleClients"]

_SCOPES = ("https://www.googleapis.com/auth/cloud-platform",)


class GoogleClients:
    """The clients of one target (project and location), made once each, thread-safe."""

    def __init__(self, project: str, location: str, options: VertexOptions) -> None:
        self.project = project
        self.location = location
        self.options = options
        self._clients: dict[str, Any] = {}
        self._credentials: Any = None
        self._lock = threading.Lock()

    @property
    def vertex_endpoint(self) -> str:
        """Where Vertex AI calls go."""
        return self.options.api_endpoint or f"https://{self.location}-aiplatform.googleapis.com"

    @property
    def storage_endpoint(self) -> str:
        """Where GCS JSON API calls go."""
        return self.options.api_endpoint or "https://storage.googleapis.com"

    @property
    def monitoring_endpoint(self) -> str:
        """Where Cloud Monitoring calls go."""
        return self.options.api_endpoint or "https://monitoring.googleapis.com"

    @property
    def bigquery_endpoint(self) -> str:
        """Where BigQuery calls go."""
        return self.options.api_endpoint or "https://bigquery.googleapis.com"

    def credentials(self) -> Any:
        """Application Default Credentials (anonymous against a loopback emulator).

        Raises:
            AuthError: no credentials are configured on this machine.
        """
        with self._lock:
            if self._credentials is None:
                if self.options.emulated:
                    from google.auth.credentials import AnonymousCredentials

                    self._credentials = AnonymousCredentials()  # type: ignore[no-untyped-call]
                else:
                    import google.auth
                    from google.auth.exceptions import DefaultCredentialsError

                    try:
                        self._credentials, _ = google.auth.default(scopes=_SCOPES)
                    except DefaultCredentialsError as exc:
                        raise AuthError(
                            "no Google Application Default Credentials on this machine",
                            provider=PROVIDER,
                            hint="run `gcloud auth application-default login`, set "
                            "GOOGLE_APPLICATION_CREDENTIALS, or run where a service account is attached",
                        ) from exc
            return self._credentials

    def _make(self, kind: str) -> Any:
        from google.api_core.client_options import ClientOptions

        credentials = self.credentials()
        options = ClientOptions(api_endpoint=self.vertex_endpoint)
        if kind == "model":
            from google.cloud.aiplatform_v1.services.model_service import ModelServiceClient

            return ModelServiceClient(credentials=credentials, transport="rest", client_options=options)
        if kind == "endpoint":
            from google.cloud.aiplatform_v1.services.endpoint_service import EndpointServiceClient

            return EndpointServiceClient(credentials=credentials, transport="rest", client_options=options)
        if kind == "prediction":
            from google.cloud.aiplatform_v1.services.prediction_service import PredictionServiceClient

            return PredictionServiceClient(credentials=credentials, transport="rest", client_options=options)
        if kind == "pipeline":
            from google.cloud.aiplatform_v1.services.pipeline_service import PipelineServiceClient

            return PipelineServiceClient(credentials=credentials, transport="rest", client_options=options)
        if kind == "schedule":
            from google.cloud.aiplatform_v1.services.schedule_service import ScheduleServiceClient

            return ScheduleServiceClient(credentials=credentials, transport="rest", client_options=options)
        if kind == "bigquery":
            from google.cloud import bigquery

            return bigquery.Client(
                project=self.project,
                credentials=credentials,
                client_options=ClientOptions(api_endpoint=self.bigquery_endpoint),
            )
        if kind == "session":
            from google.auth.transport.requests import AuthorizedSession

            return AuthorizedSession(credentials)  # type: ignore[no-untyped-call]
        raise KeyError(kind)

    def client(self, kind: str) -> Any:
        """One client, made on first use and then shared: ``model``, ``endpoint``, ``prediction``,
        ``pipeline``, ``schedule`` (aiplatform_v1's ``*ServiceClient``, REST transport),
        ``bigquery`` (``google.cloud.bigquery.Client``) or ``session`` (HTTP).

        Raises:
            KeyError: another kind.
            MlshiftError: the client could not be made (no credentials, a bad endpoint).
        """
        found = self._clients.get(kind)
        if found is None:
            with google_errors(f"create the {kind} client"):
                made = self._make(kind)
            with self._lock:
                found = self._clients.setdefault(kind, made)
        return found

    def types(self) -> Any:
        """The ``google.cloud.aiplatform_v1.types`` module."""
        from google.cloud.aiplatform_v1 import types

        return types

    def close(self) -> None:
        """Close the HTTP sessions of every client made."""
        with self._lock:
            clients, self._clients = self._clients, {}
        for client in clients.values():
            close = getattr(getattr(client, "transport", client), "close", None)
            if close is not None:
                try:
                    close()
                except Exception:  # closing is best effort
                    pass
