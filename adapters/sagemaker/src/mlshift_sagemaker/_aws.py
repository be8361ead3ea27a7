"""boto3 sessions and clients, created on first use with bounded, standard-mode retries.

boto3 is imported here and nowhere at module level, so ``import mlshift_sagemaker`` (which
``mlshift`` does to read the adapter's capabilities) stays light.
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING, Any

from mlshift_sagemaker.errors import aws_errors

if TYPE_CHECKING:
    from mlshift_sagemaker.options import SageMakerOptions

__all__ = ["AwsClients"]

#: botocore's loader of service models, shared by every adapter in the process: reading the
#: SageMaker service model takes ~0.3 s, and it is the same data for every session.
_LOADER: list[Any] = []

#: Seconds to wait for a TCP connection to an AWS endpoint.
CONNECT_TIMEOUT = 10
#: Seconds to wait for an answer; invocations of a slow model take longest.
READ_TIMEOUT = 70


class AwsClients:
    """The AWS clients of one adapter, sharing one session.

    Credentials come from the standard chain of that session (profile, environment, SSO,
    container or instance role); mlshift never reads or stores them itself. The standard
    ``AWS_ENDPOINT_URL`` / ``AWS_ENDPOINT_URL_<SERVICE>`` variables are honoured by botocore,
    which is how the adapter runs against ``moto_server`` or LocalStack.
    """

    def __init__(self, region: str, options: SageMakerOptions) -> None:
        self.region = region
        self._options = options
        self._session: Any = None
        self._clients: dict[str, Any] = {}
        self._account: str | None = None
        self._partition: str | None = None
        self._lock = threading.Lock()

    @property
    def session(self) -> Any:
        """The ``boto3.session.Session`` (made on first use)."""
        if self._session is None:
            try:
                import boto3
                import botocore.loaders
                import botocore.session
            except ImportError as exc:  # pragma: no cover - boto3 is a dependency
                raise ImportError("the sagemaker target needs boto3: pip install mlshift-sagemaker") from exc
            if not _LOADER:
                _LOADER.append(botocore.loaders.create_loader())
            core = botocore.session.get_session()
            core.register_component("data_loader", _LOADER[0])
            with aws_errors("start an AWS session"):
                self._session = boto3.session.Session(
                    botocore_session=core, region_name=self.region, profile_name=self._options.profile
                )
            # boto3 appends its data folder to the loader's search path for every session.
            paths = _LOADER[0].search_paths
            paths[:] = list(dict.fromkeys(paths))
        return self._session

    def client(self, service: str) -> Any:
        """A client for ``service`` (``sagemaker``, ``sagemaker-runtime``, ``s3``, ...), cached."""
        with self._lock:
            found = self._clients.get(service)
            if found is None:
                from botocore.config import Config

                config = Config(
                    region_name=self.region,
                    retries={"mode": "standard", "total_max_attempts": self._options.max_attempts},
                    connect_timeout=CONNECT_TIMEOUT,
                    read_timeout=READ_TIMEOUT,
                    user_agent_extra="mlshift",
                )
                with aws_errors(f"create the {service} client"):
                    found = self.session.client(service, config=config)
                self._clients[service] = found
            return found

    def _identity(self) -> None:
        with aws_errors("find the AWS account (sts get-caller-identity)"):
            arn: str = self.client("sts").get_caller_identity()["Arn"]
        parts = arn.split(":")
        self._partition, self._account = parts[1], parts[4]

    @property
    def account_id(self) -> str:
        """The account of the credentials in use (one ``sts:GetCallerIdentity`` call, cached)."""
        if self._account is None:
            self._identity()
        assert self._account is not None
        return self._account

    @property
    def partition(self) -> str:
        """``aws``, ``aws-cn`` or ``aws-us-gov``."""
        if self._partition is None:
            self._identity()
        assert self._partition is not None
        return self._partition

    def arn(self, service: str, resource: str) -> str:
        """An ARN in this account and region."""
        return f"arn:{self.partition}:{service}:{self.region}:{self.account_id}:{resource}"

    def close(self) -> None:
        """Close the HTTP connection pools of every client made so far."""
        with self._lock:
            for client in self._clients.values():
                close = getattr(client, "close", None)
                if close is not None:
                    close()
            self._clients.clear()
