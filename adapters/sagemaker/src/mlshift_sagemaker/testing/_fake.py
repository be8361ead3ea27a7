"""``FakeSageMaker``: moto in process, plus what moto lacks, plus faults at the HTTP layer.

The fake takes the place of moto's botocore ``before-send`` handler in every session created
after it started. Every request boto3 sends passes through it: it is recorded, may be answered
with an injected fault (so botocore's real retry and error parsing run), and is then either
answered by the fake itself (what moto lacks) or handed to moto, exactly once.

What it adds to moto:

- ``UpdateEndpoint`` (moto raises ``NotImplementedError``), with blue/green deployment configs:
  traffic routing is checked as SageMaker checks it, alarms listed for auto-rollback are
  watched during the bake, and a fired alarm rolls the endpoint back to its old configuration.
- Endpoint states: ``Creating`` / ``Updating`` for a few status checks before ``InService``;
  ``Failed`` or a rolled-back update for a model that never turns healthy; ``RollingBack``.
- ``Create*`` of something that exists fails, as on AWS (moto silently overwrites).
- ``InvokeEndpoint`` answered by the real mlshift model server, loaded from the artifact in
  moto's S3, routed by the live weights (or ``TargetVariant``); model errors come back as
  SageMaker's ``ModelError`` with the server's status and body. Each answer is published to
  moto's CloudWatch as SageMaker's per-variant ``Invocations``, ``Invocation4XXErrors``,
  ``Invocation5XXErrors`` and ``ModelLatency`` (with ``pNN`` statistics, which moto lacks).
- Shadow variants (moto ignores ``ShadowProductionVariants``): the fake keeps them per
  endpoint configuration and shows them in ``DescribeEndpointConfig``; ``InvokeEndpoint``
  mirrors the configured share of requests to the shadow variant after the production variant
  answered (synchronously here, so its records exist when the caller has its answer; SageMaker
  mirrors in the background), never answers the caller from it and never fails the caller
  because of it, and publishes its metrics under its own variant name.
- Data capture: with ``EnableCapture`` each answered request (sampled evenly by
  ``InitialSamplingPercentage``) is written to the capture destination in moto's S3 as SageMaker
  writes it (JSON Lines under ``{endpoint}/{variant}/YYYY/MM/DD/HH/``), a mirrored request
  under the shadow variant with the production record's ``eventId``; one file per request.
- ``DeleteModelPackage`` (moto lacks it).
- Pipeline executions that run their steps for real, in dependency order, as SageMaker wires
  them (inputs and outputs in moto's S3, property files, conditions, caching, logs in CloudWatch
  Logs; see :mod:`mlshift_sagemaker.testing._executions`) — a test can choose a condition's
  outcome or make a step fail — with ``ListPipelineExecutionSteps`` and
  ``StopPipelineExecution`` (moto lacks both); definitions that are not JSON are refused.
- Instance types: the adapter's list, not moto's older one.
- Application Auto Scaling comes from moto; the fake adds SageMaker's rule that a variant
  registered as a scalable target cannot be removed, or have its instance type changed, by
  ``UpdateEndpoint`` until it is deregistered.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from mlshift.adapter import MirrorShare
from mlshift_sagemaker._capture import capture_key, capture_record
from mlshift_sagemaker.testing._executions import Execution, ExecutionRunner
from mlshift_sagemaker.testing._metrics import moto_percentiles, publish_invocation
from mlshift_sagemaker.testing._serving import InProcessServer

__all__ = ["AwsCall", "FakeSageMaker", "Fault"]

DEFAULT_ACCOUNT = "123456789012"
_MUTATING = (
    "Create",
    "Update",
    "Delete",
    "Put",
    "Add",
    "Start",
    "Stop",
    "Upload",
    "Complete",
    "Abort",
    "Set",
    "Copy",
    "Register",
    "Deregister",
    "Enable",
    "Disable",
    "Tag",
    "Untag",
    "Attach",
    "Detach",
    "Modify",
    "Restore",
    "Send",
)
_REGION = re.compile(r"\.([a-z]{2}(?:-[a-z]+)+-\d)\.")
_active: list[FakeSageMaker] = []  # the fake the dispatcher forwards to (one at a time)
_installed = [False]


@dataclass(frozen=True)
class AwsCall:
    """One HTTP request boto3 sent (each retry attempt is its own call).

    Attributes:
        service: ``sagemaker``, ``sagemaker-runtime``, ``s3``, ``cloudwatch``, ``sts``.
        operation: ``CreateEndpoint``, ``PutObject``, ...
        attempt: 1 for the first try, 2 for the first retry, ...
        params: The request's parameters for JSON and query protocols (``None`` otherwise).
        bytes_sent: Body bytes of an upload (``PutObject``/``UploadPart``), else 0.
        fault: The error code the fake answered with, when it injected one.
        path: The URL path (an S3 call's ``/bucket/key``).
    """

    service: str
    operation: str
    attempt: int
    params: Mapping[str, Any] | None = None
    bytes_sent: int = 0
    fault: str | None = None
    path: str = ""

    @property
    def mutating(self) -> bool:
        """Whether the operation changes something (by its name, as AWS names them)."""
        return self.operation.startswith(_MUTATING)


@dataclass
class Fault:
    """An error the fake answers with instead of moto.

    Attributes:
        code: The AWS error code (``ThrottlingException``, ``ResourceLimitExceeded``, ...).
        message: The error message.
        status: The HTTP status.
        service: The service it applies to (``*`` for any).
        operations: Operation names it applies to (``*`` for any).
        attempts: Fail only the first N attempts of each call (retries then succeed).
        times: Stop after failing this many requests (``None``: never stop).
        endpoint: Only requests naming this endpoint (JSON ``EndpointName`` or the runtime path).
        hits: How many responses it has injected so far.
    """

    code: str
    message: str = ""
    status: int = 400
    service: str = "*"
    operations: tuple[str, ...] = ("*",)
    attempts: int | None = None
    times: int | None = None
    endpoint: str | None = None
    hits: int = 0

    def matches(self, call: AwsCall, endpoint: str | None) -> bool:
        if self.times is not None and self.hits >= self.times:
            return False
        if self.service not in ("*", call.service):
            return False
        if "*" not in self.operations and call.operation not in self.operations:
            return False
        if self.endpoint is not None and endpoint != self.endpoint:
            return False
        return self.attempts is None or call.attempt <= self.attempts


@dataclass
class _Change:
    """An endpoint creation or update in progress, advanced by ``DescribeEndpoint`` calls."""

    kind: str  # "create" | "update"
    polls_left: int
    old_config: str | None = None
    new_config: str | None = None
    alarms: tuple[str, ...] = ()
    stage: str = "provisioning"  # -> "baking" -> done, or "rolling_back"
    reason: str = ""


@dataclass
class _Unhealthy:
    endpoint: str | None
    hang: bool
    reason: str


class _Time:
    """``botocore.endpoint.time`` with a ``sleep`` that records instead of sleeping."""

    def __init__(self, real: Any, sleeps: list[float]) -> None:
        self._real = real
        self._sleeps = sleeps

    def sleep(self, seconds: float) -> None:
        self._sleeps.append(seconds)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


def _moto_stubber() -> Any:
    from moto.core.models import botocore_stubber

    return botocore_stubber


def _dispatch(event_name: str, request: Any, **kwargs: Any) -> Any:
    """The ``before-send`` handler that stands where moto's own stood.

    botocore calls *every* ``before-send`` handler and uses the first answer, so a fake
    registered in front of moto would still let moto act on each request it answers (a fault
    injected on ``CreateEndpoint`` would create the endpoint anyway). Taking moto's place and
    calling it only for requests the fake passes on keeps each request acted on exactly once.
    """
    if not _active:
        return _moto_stubber()(event_name=event_name, request=request, **kwargs)
    return _active[-1]._on_send(event_name, request)


def _install() -> None:
    from botocore.handlers import BUILTIN_HANDLERS

    if _installed[0]:
        return
    stubber = _moto_stubber()
    for index, spec in enumerate(BUILTIN_HANDLERS):
        if spec[0] == "before-send" and spec[1] is stubber:
            BUILTIN_HANDLERS[index] = ("before-send", _dispatch)
            _installed[0] = True
            return
    raise RuntimeError(
        "moto's botocore handler was not found in botocore.handlers.BUILTIN_HANDLERS; "
        "this moto version is not supported by the SageMaker testing kit"
    )


def _header(request: Any, name: str, default: str = "") -> str:
    """A request header as text (botocore keeps some as bytes)."""
    value = request.headers.get(name)
    if value is None:
        return default
    return value.decode() if isinstance(value, bytes) else str(value)


def _cbor_text(text: str) -> bytes:
    data = text.encode()
    n = len(data)
    if n < 24:
        return bytes([0x60 + n]) + data
    if n < 256:
        return bytes([0x78, n]) + data
    return bytes([0x79]) + n.to_bytes(2, "big") + data


class FakeSageMaker:
    """SageMaker, S3, CloudWatch and STS in this process, for tests and offline scripts.

    Use it as a context manager (or through the ``fake_sagemaker`` pytest fixture); every
    boto3 client created inside talks to it, including the ones ``mlshift.connect
    ("sagemaker://us-east-1")`` makes::

        from mlshift_sagemaker.testing import FakeSageMaker

        with FakeSageMaker() as aws:
            client = mlshift.connect("sagemaker://us-east-1")
            client.models.register("iris", "iris.skops", framework="sklearn")
            client.endpoints.deploy("iris", "iris:1")
            client.endpoints.predict("iris", [[5.1, 3.5, 1.4, 0.2]])   # a real prediction
            assert not aws.mutating_calls(since=mark)                    # ...

    While it is active it sets (unless already set) ``MLSHIFT_SAGEMAKER_ROLE_ARN`` to a fake
    role, ``MLSHIFT_SAGEMAKER_POLL_INTERVAL`` to 0 and ``MLSHIFT_SAGEMAKER_METRIC_LAG`` to 0
    (its metrics are published at once), removes ``AWS_ENDPOINT_URL*`` (moto
    answers in process), and botocore's retry back-off records its delays in
    :attr:`retry_sleeps` instead of sleeping. State lives on the instance and in moto, and is
    gone after the ``with`` block. One fake can be active at a time.

    Args:
        region: The default region (any region works).
        steps: Status checks a creation or update takes before it finishes (and each bake).
        serving_image: Start with the mlshift serving image pushed to ECR in ``region`` (as
            ``python -m mlshift_sagemaker.image push`` leaves an account); ``False`` starts
            without it, to test what happens when it is missing.
    """

    def __init__(self, region: str = "us-east-1", *, steps: int = 2, serving_image: bool = True) -> None:
        self.region = region
        self.steps = max(1, steps)
        self.serving_image = serving_image
        self.account_id = DEFAULT_ACCOUNT
        #: Every request sent while active, in order.
        self.calls: list[AwsCall] = []
        #: Back-off delays botocore asked for (it did not sleep).
        self.retry_sleeps: list[float] = []
        #: Requests answered per (endpoint, variant).
        self.invocations: Counter[tuple[str, str]] = Counter()
        #: Requests mirrored per (endpoint, shadow variant), answered or not; never in ``invocations``.
        self.mirrored: Counter[tuple[str, str]] = Counter()
        self.faults: list[Fault] = []
        self._unhealthy: list[_Unhealthy] = []
        self._armed_alarms: dict[str, str] = {}
        self._changes: dict[tuple[str, str], _Change] = {}
        self._routing: dict[tuple[str, str, str], dict[str, int]] = {}
        # (region, endpoint config) -> its ShadowProductionVariants, which moto drops.
        self._shadow_variants: dict[tuple[str, str], list[dict[str, Any]]] = {}
        # (region, endpoint, config, what) -> which requests get mirrored / captured.
        self._shares: dict[tuple[str, str, str, str], MirrorShare] = {}
        self._executions: dict[str, Execution] = {}
        self._runners: list[ExecutionRunner] = []
        self._step_cache: dict[str, Any] = {}
        self._failing_steps: dict[str, str] = {}
        self._outcomes: dict[str, bool] = {}
        self._server = InProcessServer()
        self._lock = threading.RLock()
        self._stack: contextlib.ExitStack | None = None

    @property
    def role_arn(self) -> str:
        """An IAM role ARN in the fake account (what ``role_arn`` defaults to while active)."""
        return f"arn:aws:iam::{self.account_id}:role/mlshift-fake"

    # ---------------------------------------------------------------- lifecycle

    def __enter__(self) -> FakeSageMaker:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start moto and route every new boto3 session through this fake."""
        if _active:
            raise RuntimeError("another FakeSageMaker is active; one at a time (moto's state is shared)")
        try:
            from moto import mock_aws
        except ImportError as exc:
            raise ImportError(
                'the SageMaker testing kit needs moto: pip install "mlshift-sagemaker[testing]"'
            ) from exc
        import botocore.endpoint
        from moto.sagemaker.models import FakeEndpointConfig

        from mlshift_sagemaker.options import INSTANCE_TYPES

        stack = contextlib.ExitStack()
        saved = {k: v for k, v in os.environ.items() if k.startswith("AWS_ENDPOINT_URL")}
        for key in saved:
            del os.environ[key]
        stack.callback(os.environ.update, saved)
        defaults = {
            "MLSHIFT_SAGEMAKER_ROLE_ARN": self.role_arn,
            "MLSHIFT_SAGEMAKER_POLL_INTERVAL": "0",
            # The fake publishes each invocation to CloudWatch at once: no lag to wait out.
            "MLSHIFT_SAGEMAKER_METRIC_LAG": "0",
            "AWS_DEFAULT_REGION": self.region,
        }
        for key, value in defaults.items():
            if key not in os.environ:
                os.environ[key] = value
                stack.callback(os.environ.pop, key, None)
        stack.enter_context(mock_aws())
        if self.serving_image:
            self.push_serving_image()
        real_time = botocore.endpoint.time
        botocore.endpoint.time = _Time(real_time, self.retry_sleeps)
        stack.callback(setattr, botocore.endpoint, "time", real_time)

        def validate_instance_type(config: Any, instance_type: str) -> None:
            if instance_type not in INSTANCE_TYPES:
                from moto.sagemaker.exceptions import ValidationError

                raise ValidationError(message=f"Invalid instance type {instance_type!r}")

        original = FakeEndpointConfig.validate_instance_type
        FakeEndpointConfig.validate_instance_type = validate_instance_type  # type: ignore[method-assign,assignment]
        stack.callback(setattr, FakeEndpointConfig, "validate_instance_type", original)
        stack.enter_context(moto_percentiles())  # endpoint metrics: see testing/_metrics.py
        _install()
        _active.append(self)
        stack.callback(_active.remove, self)
        stack.callback(self._server.close)
        stack.callback(self._stop_executions)
        self._stack = stack

    def stop(self) -> None:
        """Stop moto (its state is discarded) and restore the environment."""
        if self._stack is not None:
            stack, self._stack = self._stack, None
            stack.close()

    def push_serving_image(
        self, region: str | None = None, *, repository: str = "mlshift-serving", tag: str | None = None
    ) -> str:
        """Put an image in moto's ECR (repository created if needed), as a push would; returns its URI.

        Written to moto directly, so it adds nothing to :attr:`calls`. ``tag`` defaults to the
        mlshift version, which is what the adapter looks for.
        """
        import json

        import mlshift

        tag = tag or mlshift.__version__
        ecr = self.backend("ecr", region)
        if repository not in ecr.repositories:
            # Positional: moto spelled the mutability keyword differently across 5.x releases.
            ecr.create_repository(repository, None, None, None, "MUTABLE", [])
        manifest = {"schemaVersion": 2, "mediaType": "application/vnd.docker.distribution.manifest.v2+json"}
        ecr.put_image(repository, json.dumps({**manifest, "tag": tag}), tag)
        return f"{self.account_id}.dkr.ecr.{region or self.region}.amazonaws.com/{repository}:{tag}"

    def _stop_executions(self) -> None:
        """Stop pipeline executions still running (their steps are terminated) and wait for them."""
        for runner in self._runners:
            runner.join(timeout=30)
        self._runners.clear()

    def wait_for_executions(self, timeout: float = 120.0) -> None:
        """Block until every pipeline execution started so far has finished.

        Raises:
            TimeoutError: if one is still running after ``timeout`` seconds.
        """
        deadline = time.monotonic() + timeout
        for runner in list(self._runners):
            runner.thread.join(max(0.0, deadline - time.monotonic()))
            if runner.thread.is_alive():
                raise TimeoutError(
                    f"pipeline execution {runner.execution.arn} still runs after {timeout:g} s"
                )

    # ---------------------------------------------------------------- inspecting

    def mutating_calls(self, since: int = 0, service: str | None = None) -> list[AwsCall]:
        """Calls that change something, from index ``since`` of :attr:`calls` on."""
        return [c for c in self.calls[since:] if c.mutating and (service is None or c.service == service)]

    def bytes_uploaded(self, since: int = 0) -> int:
        """Body bytes sent to S3 in uploads, from index ``since`` of :attr:`calls` on."""
        return sum(c.bytes_sent for c in self.calls[since:])

    def operations(self, since: int = 0, service: str | None = None) -> list[str]:
        """Operation names sent, in order (retries included)."""
        return [c.operation for c in self.calls[since:] if service is None or c.service == service]

    def backend(self, service: str = "sagemaker", region: str | None = None) -> Any:
        """moto's backend for ``service`` in ``region`` (for assertions on raw state)."""
        from moto.backends import get_backend

        backends = get_backend(service)  # type: ignore[call-overload]
        if service == "s3":
            return backends[self.account_id]["global"]
        return backends[self.account_id][region or self.region]

    def resources(self, region: str | None = None) -> dict[str, list[str]]:
        """Names of the SageMaker models, endpoint configs and endpoints, and CloudWatch alarms."""
        sm = self.backend("sagemaker", region)
        cw = self.backend("cloudwatch", region)
        return {
            "models": sorted(sm._models),
            "endpoint_configs": sorted(sm.endpoint_configs),
            "endpoints": sorted(sm.endpoints),
            "alarms": sorted(cw.alarms),
        }

    def scalable_variants(self, endpoint: str, region: str | None = None) -> dict[str, tuple[int, int]]:
        """Variant → ``(min, max)`` of the variants of ``endpoint`` registered with Application Auto
        Scaling (in moto's backend)."""
        targets = self.backend("applicationautoscaling", region).targets
        prefix = f"endpoint/{endpoint}/variant/"
        return {
            rid[len(prefix) :]: (int(t.min_capacity), int(t.max_capacity))
            for rid, t in targets.get("sagemaker:variant:DesiredInstanceCount", {}).items()
            if rid.startswith(prefix)
        }

    # ---------------------------------------------------------------- faults

    def fail(
        self,
        operations: str | Sequence[str],
        code: str,
        message: str = "",
        *,
        status: int = 400,
        service: str = "*",
        attempts: int | None = None,
        times: int | None = 1,
        endpoint: str | None = None,
    ) -> Fault:
        """Answer matching requests with an AWS error instead of moto's answer.

        Args:
            operations: ``"CreateEndpoint"``, a list of names, or ``"*"``.
            code: The AWS error code, e.g. ``ResourceLimitExceeded``.
            attempts: Fail only the first N attempts of each call.
            times: How many requests to fail in total (``None``: all of them).
        """
        ops = (operations,) if isinstance(operations, str) else tuple(operations)
        fault = Fault(
            code=code,
            message=message or f"injected {code}",
            status=status,
            service=service,
            operations=ops,
            attempts=attempts,
            times=times,
            endpoint=endpoint,
        )
        with self._lock:
            self.faults.append(fault)
        return fault

    def throttle(self, attempts: int = 2, operations: str | Sequence[str] = "*", service: str = "*") -> Fault:
        """Throttle the first ``attempts`` attempts of every call (botocore retries, then succeeds)."""
        return self.fail(
            operations, "ThrottlingException", "Rate exceeded", service=service, attempts=attempts, times=None
        )

    def server_error(self, operations: str | Sequence[str] = "*", times: int | None = 1) -> Fault:
        """Answer with HTTP 500 ``InternalFailure`` (botocore retries these too)."""
        return self.fail(
            operations, "InternalFailure", "We encountered an internal error.", status=500, times=times
        )

    def clear_faults(self) -> None:
        """Forget every injected fault."""
        with self._lock:
            self.faults.clear()

    def never_healthy(self, endpoint: str | None = None, *, hang: bool = False, reason: str = "") -> None:
        """Make new fleets of ``endpoint`` (or of every endpoint) fail their health check.

        A new endpoint then goes ``Failed``; an update is rolled back to the old configuration
        with a ``FailureReason``. With ``hang=True`` it stays ``Creating``/``Updating`` instead,
        so only a timeout ends the wait.
        """
        text = reason or (
            "The primary container for production variant did not pass the ping health check. "
            "Please check CloudWatch logs for this endpoint."
        )
        with self._lock:
            self._unhealthy.append(_Unhealthy(endpoint, hang, text))

    def healthy_again(self) -> None:
        """Undo :meth:`never_healthy`."""
        with self._lock:
            self._unhealthy.clear()

    def fire_alarms(
        self, endpoint: str, reason: str = "Threshold Crossed: simulated by FakeSageMaker"
    ) -> None:
        """The next guarded update of ``endpoint`` trips its rollback alarms during its bake.

        The alarms (the ones the update's ``AutoRollbackConfiguration`` lists) are set to
        ``ALARM`` in moto's CloudWatch, and SageMaker's auto-rollback takes the endpoint back to
        its previous configuration.
        """
        with self._lock:
            self._armed_alarms[endpoint] = reason

    def fail_pipeline_step(
        self, step: str, reason: str = "AlgorithmError: simulated by FakeSageMaker"
    ) -> None:
        """Executions started from now on fail at ``step``; the steps after it do not run."""
        with self._lock:
            self._failing_steps[step] = reason

    def condition_outcome(self, condition: str, outcome: bool) -> None:
        """How condition step ``condition`` evaluates in executions started from now on, whatever
        the steps it compares measured (by default the fake evaluates it)."""
        with self._lock:
            self._outcomes[condition] = outcome

    # ---------------------------------------------------------------- the handler

    def _on_send(self, event_name: str, request: Any) -> Any:
        parts = event_name.split(".")
        service, operation = parts[1], parts[2] if len(parts) > 2 else ""
        attempt = 1
        match = re.search(r"attempt=(\d+)", _header(request, "amz-sdk-request"))
        if match:
            attempt = int(match[1])
        params = self._params(request)
        size = 0
        if service == "s3" and operation in ("PutObject", "UploadPart"):
            # Streamed uploads carry their size in X-Amz-Decoded-Content-Length (aws-chunked).
            size = int(
                _header(request, "X-Amz-Decoded-Content-Length") or _header(request, "Content-Length") or 0
            )
        region_match = _REGION.search(request.url)
        region = region_match[1] if region_match else self.region
        endpoint = self._endpoint_of(service, request, params)
        path = unquote(urlsplit(request.url).path)
        call = AwsCall(service, operation, attempt, params, size, None, path)
        with self._lock:
            fault = next((f for f in self.faults if f.matches(call, endpoint)), None)
            if fault is not None:
                fault.hits += 1
                call = AwsCall(service, operation, attempt, params, size, fault.code, path)
            self.calls.append(call)
        if fault is not None:
            return self._error(request, service, fault.status, fault.code, fault.message)
        if service == "sagemaker":
            return self._sagemaker(request, operation, params or {}, region)
        if service == "sagemaker-runtime" and operation == "InvokeEndpoint":
            return self._invoke(request, region, endpoint or "")
        return self._moto(request)

    @staticmethod
    def _params(request: Any) -> dict[str, Any] | None:
        body = request.body
        if isinstance(body, bytes | str) and body:
            content_type = _header(request, "Content-Type")
            if "json" not in content_type and "x-www-form-urlencoded" not in content_type:
                return None  # InvokeEndpoint bodies are the caller's bytes: .npy, images, ...
            try:
                text = body.decode() if isinstance(body, bytes) else body
            except UnicodeDecodeError:
                return None  # not an API call's parameters; the model server judges the body
            if "json" in content_type:
                with contextlib.suppress(ValueError):
                    parsed = json.loads(text)
                    return parsed if isinstance(parsed, dict) else None
            if "x-www-form-urlencoded" in content_type:
                return {k: v[0] for k, v in parse_qs(text).items()}
        return None

    @staticmethod
    def _endpoint_of(service: str, request: Any, params: Mapping[str, Any] | None) -> str | None:
        if service == "sagemaker-runtime":
            found = re.search(r"/endpoints/([^/]+)/", request.url)
            return unquote(found[1]) if found else None
        if params is not None and isinstance(params.get("EndpointName"), str):
            return str(params["EndpointName"])
        return None

    def _response(self, request: Any, status: int, headers: dict[str, str], body: bytes) -> Any:
        from botocore.awsrequest import AWSResponse
        from moto.core.botocore_stubber import MockRawResponse

        headers = {"x-amzn-RequestId": secrets.token_hex(16), **headers}
        return AWSResponse(request.url, status, headers, MockRawResponse(body))

    def _error(self, request: Any, service: str, status: int, code: str, message: str) -> Any:
        content_type = _header(request, "Content-Type")
        if "smithy-protocol" in request.headers:
            body = (
                b"\xa2"
                + _cbor_text("__type")
                + _cbor_text(code)
                + _cbor_text("message")
                + _cbor_text(message)
            )
            headers = {"smithy-protocol": "rpc-v2-cbor", "Content-Type": "application/cbor"}
        elif "x-amz-json" in content_type:
            body = json.dumps({"__type": code, "message": message}).encode()
            headers = {"Content-Type": "application/x-amz-json-1.1"}
        elif service == "s3":
            body = (
                f'<?xml version="1.0" encoding="UTF-8"?><Error><Code>{code}</Code>'
                f"<Message>{message}</Message><RequestId>fake</RequestId></Error>"
            ).encode()
            headers = {"Content-Type": "application/xml"}
        elif "x-www-form-urlencoded" in content_type:
            body = (
                f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message>"
                "</Error><RequestId>fake</RequestId></ErrorResponse>"
            ).encode()
            headers = {"Content-Type": "text/xml"}
        else:  # rest-json (sagemaker-runtime)
            body = json.dumps({"message": message}).encode()
            headers = {"Content-Type": "application/json", "x-amzn-ErrorType": code}
        return self._response(request, status, headers, body)

    def _validation(self, request: Any, message: str) -> Any:
        return self._error(request, "sagemaker", 400, "ValidationException", message)

    def _ok(self, request: Any, data: Mapping[str, Any]) -> Any:
        return self._response(
            request, 200, {"Content-Type": "application/x-amz-json-1.1"}, json.dumps(data).encode()
        )

    # ---------------------------------------------------------------- SageMaker control plane

    def _sagemaker(self, request: Any, operation: str, params: dict[str, Any], region: str) -> Any:
        backend = self.backend("sagemaker", region)
        name = params.get("EndpointName", "")
        with self._lock:
            if operation == "CreateEndpoint" and name in backend.endpoints:
                return self._validation(request, f'Cannot create already existing endpoint "{name}".')
            if operation == "CreateModel" and params.get("ModelName") in backend._models:
                return self._validation(
                    request, f'Cannot create already existing model "{params["ModelName"]}".'
                )
            if (
                operation == "CreateEndpointConfig"
                and params.get("EndpointConfigName") in backend.endpoint_configs
            ):
                config = params["EndpointConfigName"]
                return self._validation(
                    request, f'Cannot create already existing endpoint configuration "{config}".'
                )
            if operation == "UpdateEndpoint":
                return self._update_endpoint(request, params, backend, region)
            if operation == "CreateEndpointConfig" and params.get("ShadowProductionVariants"):
                problem = self._check_shadows(params, backend)
                if problem:
                    return self._validation(request, problem)
            if operation == "DeleteModelPackage":
                return self._delete_model_package(request, params, backend)
            if operation in ("CreatePipeline", "UpdatePipeline"):
                problem = self._check_pipeline_definition(params.get("PipelineDefinition"))
                if problem:
                    return self._validation(request, problem)
            arn = str(params.get("PipelineExecutionArn", ""))
            if arn in self._executions:
                execution = self._executions[arn]
                if operation == "DescribePipelineExecution":
                    return self._describe_execution(request, backend, execution)
                if operation == "ListPipelineExecutionSteps":
                    return self._ok(
                        request, {"PipelineExecutionSteps": self._listed_steps(execution, params)}
                    )
                if operation == "StopPipelineExecution":
                    if execution.status == "Executing":
                        execution.status = "Stopping"
                        for entry in execution.steps:
                            if entry["StepStatus"] == "Executing":
                                entry["StepStatus"] = "Stopping"
                        next(r for r in self._runners if r.execution is execution).stop()
                    return self._ok(request, {"PipelineExecutionArn": arn})
            if operation == "DescribeEndpoint":
                self._advance(backend, region, name)
            if operation == "DeleteEndpoint":
                self._changes.pop((region, name), None)
            if operation == "UpdateEndpointWeightsAndCapacities":
                endpoint = backend.endpoints.get(name)
                if endpoint is not None and endpoint.endpoint_status != "InService":
                    return self._validation(request, f'Cannot update in-progress endpoint "{name}".')
        response = self._moto(request)
        if operation in ("CreateEndpointConfig", "DescribeEndpointConfig", "DeleteEndpointConfig"):
            response = self._shadow_config(request, operation, params, region, response)
        if operation == "StartPipelineExecution" and response.status_code == 200:
            arn = json.loads(response.content)["PipelineExecutionArn"]
            self._start_execution(backend, params, arn, region)
        if operation == "CreateEndpoint" and response.status_code == 200:
            with self._lock:
                endpoint = backend.endpoints[name]
                endpoint.endpoint_status = "Creating"
                self._changes[(region, name)] = _Change("create", self.steps)
        return response

    def _moto(self, request: Any) -> Any:
        return _moto_stubber()(event_name="before-send", request=request)

    @staticmethod
    def _check_shadows(params: Mapping[str, Any], backend: Any) -> str | None:
        """What SageMaker refuses in ``ShadowProductionVariants`` (``None`` if fine)."""
        shadows = params["ShadowProductionVariants"]
        if len(params.get("ProductionVariants") or []) != 1 or len(shadows) != 1:
            return (
                "When ShadowProductionVariants is specified, exactly one variant is supported in "
                "ProductionVariants and exactly one in ShadowProductionVariants."
            )
        for variant in shadows:
            if variant.get("ModelName") not in backend._models:
                return f'Could not find model "{variant.get("ModelName")}".'
        return None

    def _shadow_config(
        self, request: Any, operation: str, params: Mapping[str, Any], region: str, response: Any
    ) -> Any:
        key = (region, str(params.get("EndpointConfigName", "")))
        if response.status_code != 200:
            return response
        with self._lock:
            if operation == "CreateEndpointConfig" and params.get("ShadowProductionVariants"):
                self._shadow_variants[key] = [dict(v) for v in params["ShadowProductionVariants"]]
            elif operation == "DeleteEndpointConfig":
                self._shadow_variants.pop(key, None)
            elif operation == "DescribeEndpointConfig" and key in self._shadow_variants:
                data = json.loads(response.content)
                data["ShadowProductionVariants"] = self._shadow_variants[key]
                return self._ok(request, data)
        return response

    def _delete_model_package(self, request: Any, params: dict[str, Any], backend: Any) -> Any:
        name = params.get("ModelPackageName", "")
        arn = backend.model_package_name_mapping.get(name, name)
        if arn not in backend.model_packages:
            return self._validation(request, f"Model package {name} does not exist.")
        del backend.model_packages[arn]
        for key in [k for k, v in backend.model_package_name_mapping.items() if v == arn]:
            del backend.model_package_name_mapping[key]
        return self._ok(request, {})

    # ---------------------------------------------------------------- pipelines

    @staticmethod
    def _check_pipeline_definition(text: Any) -> str | None:
        if not isinstance(text, str):
            return None  # a definition in S3: not checked here
        try:
            data = json.loads(text)
        except ValueError as exc:
            return f"Invalid pipeline definition: not JSON ({exc})"
        if not isinstance(data, dict) or "Version" not in data or not isinstance(data.get("Steps"), list):
            return "Invalid pipeline definition: expected an object with Version and Steps"
        return None

    def _start_execution(self, backend: Any, params: Mapping[str, Any], arn: str, region: str) -> None:
        from mlshift_sagemaker._pipelines import _typed

        pipeline = backend.pipelines[params["PipelineName"]]
        definition = json.loads(pipeline.pipeline_definition)
        kinds = {p["Name"]: p.get("Type") for p in definition.get("Parameters", [])}
        values = {p["Name"]: p.get("DefaultValue") for p in definition.get("Parameters", [])}
        values.update({p["Name"]: p["Value"] for p in params.get("PipelineParameters") or []})
        with self._lock:
            execution = Execution(
                arn=arn,
                pipeline=pipeline.pipeline_name,
                definition=definition,
                parameters={k: _typed(kinds.get(k), v) for k, v in values.items() if v is not None},
                failing=dict(self._failing_steps),
                outcomes=dict(self._outcomes),
            )
            self._executions[arn] = execution
            runner = ExecutionRunner(self, execution, region, self._step_cache)
            self._runners.append(runner)
        runner.start()

    def _listed_steps(self, execution: Execution, params: Mapping[str, Any]) -> list[dict[str, Any]]:
        listed = [dict(s) for s in execution.steps]
        return listed if params.get("SortOrder") == "Ascending" else list(reversed(listed))

    def _describe_execution(self, request: Any, backend: Any, execution: Execution) -> Any:
        name = execution.arn.split(":pipeline/")[-1].split("/")[0]
        pipeline = backend.pipelines[name]
        data = {
            "PipelineArn": pipeline.arn,
            "PipelineExecutionArn": execution.arn,
            "PipelineExecutionStatus": execution.status,
            "CreationTime": execution.created,
            "LastModifiedTime": execution.finished or time.time(),
        }
        if execution.failure_reason:
            data["FailureReason"] = execution.failure_reason
        return self._ok(request, data)

    def _unhealthy_for(self, endpoint: str) -> _Unhealthy | None:
        return next((u for u in self._unhealthy if u.endpoint in (None, endpoint)), None)

    def _update_endpoint(self, request: Any, params: dict[str, Any], backend: Any, region: str) -> Any:
        name, config = params["EndpointName"], params["EndpointConfigName"]
        endpoint = backend.endpoints.get(name)
        if endpoint is None:
            return self._validation(request, f'Could not find endpoint "{name}".')
        if config not in backend.endpoint_configs:
            return self._validation(request, f'Could not find endpoint configuration "{config}".')
        if endpoint.endpoint_status != "InService":
            return self._validation(request, f'Cannot update in-progress endpoint "{name}".')
        old = backend.endpoint_configs[endpoint.endpoint_config_name]
        new = backend.endpoint_configs[config]
        new_types = {v["VariantName"]: v.get("InstanceType") for v in new.production_variants}
        blocked = [
            v["VariantName"]
            for v in old.production_variants
            if v["VariantName"] in self.scalable_variants(name, region)
            and new_types.get(v["VariantName"], "-") != v.get("InstanceType")
        ]
        if blocked:
            return self._validation(
                request,
                f'The variant(s) "{blocked}" must be deregistered as scalable targets with AWS '
                "Auto Scaling before they can be removed or have their instance type updated.",
            )
        alarms: tuple[str, ...] = ()
        deployment = params.get("DeploymentConfig")
        if deployment:
            problem = self._check_deployment(deployment, old, new, region)
            if problem:
                return self._validation(request, problem)
            rollback = deployment.get("AutoRollbackConfiguration") or {}
            alarms = tuple(a["AlarmName"] for a in rollback.get("Alarms", []))
        endpoint.endpoint_status = "Updating"
        endpoint.failure_reason = None
        self._changes[(region, name)] = _Change(
            "update", self.steps, old_config=endpoint.endpoint_config_name, new_config=config, alarms=alarms
        )
        return self._ok(request, {"EndpointArn": endpoint.arn})

    def _check_deployment(self, deployment: Mapping[str, Any], old: Any, new: Any, region: str) -> str | None:
        """What SageMaker would refuse in a blue/green deployment config (``None`` if fine)."""
        old_names = sorted(v["VariantName"] for v in old.production_variants)
        new_names = sorted(v["VariantName"] for v in new.production_variants)
        if old_names != new_names:
            return (
                "The variant names of the new endpoint configuration must match the current one "
                f"for a blue/green deployment (current: {old_names}, new: {new_names})."
            )
        routing = deployment.get("BlueGreenUpdatePolicy", {}).get("TrafficRoutingConfiguration", {})
        canary = routing.get("CanarySize", {})
        if (
            routing.get("Type") == "CANARY"
            and canary.get("Type") == "CAPACITY_PERCENT"
            and canary["Value"] > 50
        ):
            return "CanarySize must be less than or equal to 50% of the variant's total instance count."
        step = routing.get("LinearStepSize", {})
        if (
            routing.get("Type") == "LINEAR"
            and step.get("Type") == "CAPACITY_PERCENT"
            and not 10 <= step["Value"] <= 50
        ):
            return "LinearStepSize must be 10-50% of the variant's total instance count."
        cloudwatch = self.backend("cloudwatch", region)
        for alarm in deployment.get("AutoRollbackConfiguration", {}).get("Alarms", []):
            if alarm["AlarmName"] not in cloudwatch.alarms:
                return f"CloudWatch alarm {alarm['AlarmName']!r} does not exist."
        return None

    def _advance(self, backend: Any, region: str, name: str) -> None:
        """One status check of ``name``: move its creation or update one step on."""
        change = self._changes.get((region, name))
        endpoint = backend.endpoints.get(name)
        if change is None or endpoint is None:
            return
        change.polls_left -= 1
        if change.polls_left > 0:
            return
        unhealthy = self._unhealthy_for(name)
        if change.kind == "create":
            if unhealthy is not None and unhealthy.hang:
                change.polls_left = 1
                return
            if unhealthy is not None:
                endpoint.endpoint_status, endpoint.failure_reason = "Failed", unhealthy.reason
            else:
                endpoint.endpoint_status = "InService"
            del self._changes[(region, name)]
            return
        if change.stage == "provisioning":
            if unhealthy is not None and unhealthy.hang:
                change.polls_left = 1
                return
            if unhealthy is not None:
                self._roll_back(endpoint, change, unhealthy.reason)
                return
            if change.alarms:
                change.stage, change.polls_left = "baking", self.steps
                return
            self._switch(backend, endpoint, change, region, name)
            return
        if change.stage == "baking":
            cloudwatch = self.backend("cloudwatch", region)
            reason = self._armed_alarms.pop(name, None)
            if reason is not None:
                for alarm in change.alarms:
                    cloudwatch.set_alarm_state(alarm, reason, json.dumps({"simulated": True}), "ALARM")
            fired = [
                a
                for a in change.alarms
                if a in cloudwatch.alarms and cloudwatch.alarms[a].state_value == "ALARM"
            ]
            if fired:
                self._roll_back(
                    endpoint,
                    change,
                    f"Alarm(s) in ALARM state during the baking period: {', '.join(fired)}. "
                    "Rolled back to the previous endpoint configuration.",
                )
                return
            self._switch(backend, endpoint, change, region, name)
            return
        if change.stage == "rolling_back":
            endpoint.endpoint_status, endpoint.failure_reason = "InService", change.reason
            del self._changes[(region, name)]

    def _roll_back(self, endpoint: Any, change: _Change, reason: str) -> None:
        endpoint.endpoint_status = "RollingBack"
        change.stage, change.polls_left, change.reason = "rolling_back", 1, reason

    def _switch(self, backend: Any, endpoint: Any, change: _Change, region: str, name: str) -> None:
        config = backend.endpoint_configs[change.new_config]
        endpoint.endpoint_config_name = change.new_config
        endpoint.production_variants = endpoint._process_production_variants(config.production_variants)
        endpoint.endpoint_status, endpoint.failure_reason = "InService", None
        del self._changes[(region, name)]

    # ---------------------------------------------------------------- invocations

    def _invoke(self, request: Any, region: str, name: str) -> Any:
        backend = self.backend("sagemaker", region)
        endpoint = backend.endpoints.get(name)
        if endpoint is None:
            return self._runtime_error(
                request, 400, "ValidationError", f"Endpoint {name} of account {self.account_id} not found."
            )
        if endpoint.endpoint_status not in ("InService", "Updating", "SystemUpdating", "RollingBack"):
            return self._runtime_error(
                request,
                400,
                "ValidationError",
                f"Endpoint {name} is not in service ({endpoint.endpoint_status}).",
            )
        config = backend.endpoint_configs[endpoint.endpoint_config_name]
        variants = {v["VariantName"]: v for v in config.production_variants}
        target = _header(request, "X-Amzn-SageMaker-Target-Variant") or None
        if target is not None:
            if target not in variants:
                return self._runtime_error(
                    request,
                    400,
                    "ValidationError",
                    f"The variant {target} is not present in endpoint {name}.",
                )
            chosen = target
        else:
            chosen = self._pick(region, endpoint, variants)
        model = backend._models.get(variants[chosen]["ModelName"])
        if model is None:
            return self._runtime_error(
                request, 400, "ValidationError", f"Model of variant {chosen} does not exist."
            )
        app = self._server.app(
            model.model_name, lambda folder: self._load(folder, model.primary_container, chosen)
        )
        body = request.body if isinstance(request.body, bytes) else (request.body or "").encode()
        content_type = _header(request, "Content-Type", "application/json")
        accept = _header(request, "Accept", "application/json")
        started = time.perf_counter()
        status, headers, content = self._server.call(app, body, content_type, accept)
        seconds = time.perf_counter() - started
        with self._lock:
            self.invocations[(name, chosen)] += 1
            publish_invocation(self.backend("cloudwatch", region), name, chosen, status, seconds)
        event_id = str(uuid.uuid4())
        capture = self._capture_destination(region, name, endpoint.endpoint_config_name, config)
        if capture is not None and status < 400:
            self._write_capture(
                capture,
                name,
                chosen,
                event_id,
                body,
                content_type,
                content,
                headers.get("content-type", accept),
                inference_id=_header(request, "X-Amzn-SageMaker-Inference-Id") or None,
            )
        self._mirror(
            region, name, endpoint.endpoint_config_name, capture, event_id, body, content_type, accept
        )
        if status >= 400:
            text = content.decode(errors="replace")
            kind = "client" if status < 500 else "server"
            data = {
                "Message": f'Received {kind} error ({status}) from primary with message "{text}". '
                "See CloudWatch logs for more information.",
                "OriginalStatusCode": status,
                "OriginalMessage": text,
                "LogStreamArn": f"arn:aws:logs:{region}:{self.account_id}:log-group:/aws/sagemaker/Endpoints/"
                + name,
            }
            return self._response(
                request,
                424,
                {"Content-Type": "application/json", "x-amzn-ErrorType": "ModelError"},
                json.dumps(data).encode(),
            )
        return self._response(
            request,
            200,
            {
                "Content-Type": headers.get("content-type", "application/json"),
                "x-Amzn-Invoked-Production-Variant": chosen,
            },
            content,
        )

    def _share(self, region: str, name: str, config: str, what: str, percent: int) -> bool:
        """Whether this request is in the ``percent`` share of ``what`` (evenly spread, not random)."""
        with self._lock:
            share = self._shares.setdefault((region, name, config, what), MirrorShare(percent))
            return share.pick()

    def _capture_destination(self, region: str, name: str, config_name: str, config: Any) -> str | None:
        """The capture destination if this request is captured, else ``None``."""
        capture = getattr(config, "data_capture_config", None) or {}
        if not capture.get("EnableCapture") or not capture.get("DestinationS3Uri"):
            return None
        percent = int(capture.get("InitialSamplingPercentage", 100))
        if not self._share(region, name, config_name, "capture", percent):
            return None
        modes = {str(o.get("CaptureMode", "")).lower() for o in capture.get("CaptureOptions") or []}
        header = capture.get("CaptureContentTypeHeader")
        text = json.dumps(
            {"JSON": header.get("JsonContentTypes") or [], "CSV": header.get("CsvContentTypes") or []}
            if isinstance(header, dict)
            else None
        )
        return f"{capture['DestinationS3Uri']}#{','.join(sorted(modes))}#{text}"

    def _write_capture(
        self,
        destination: str,
        endpoint: str,
        variant: str,
        event_id: str,
        request: bytes,
        request_type: str,
        response: bytes,
        response_type: str,
        inference_id: str | None = None,
    ) -> None:
        uri, modes, text = destination.split("#", 2)
        bucket, _, prefix = uri.removeprefix("s3://").partition("/")
        now = datetime.now(timezone.utc)
        line = capture_record(
            event_id=event_id,
            time=now,
            request=request if "input" in modes else None,
            request_type=request_type,
            response=response if "output" in modes else None,
            response_type=response_type,
            # Without a CaptureContentTypeHeader SageMaker would keep every body in base64; the
            # kit keeps JSON and CSV as text then, as the shadow comparison has always read them.
            text_types=json.loads(text),
            inference_id=inference_id,
        )
        # SageMaker cannot write to a bucket that does not exist either: nothing is captured.
        with contextlib.suppress(Exception):
            self.backend("s3").put_object(
                bucket, capture_key(prefix, endpoint, variant, now), (line + "\n").encode()
            )

    def _mirror(
        self,
        region: str,
        name: str,
        config_name: str,
        capture: str | None,
        event_id: str,
        body: bytes,
        content_type: str,
        accept: str,
    ) -> None:
        """Send a copy of the request to the shadow variant, if any and if it is in its share.

        The caller already has the production variant's answer: nothing here reaches it, and a
        shadow that fails (or cannot even be loaded) only shows in its own metrics.
        """
        backend = self.backend("sagemaker", region)
        shadows = self._shadow_variants.get((region, config_name))
        config = backend.endpoint_configs.get(config_name)
        if not shadows or config is None:
            return
        variant = shadows[0]
        production = sum(float(v.get("InitialVariantWeight", 1.0)) for v in config.production_variants)
        percent = round(float(variant.get("InitialVariantWeight", 1.0)) * 100 / (production or 1.0))
        if not self._share(region, name, config_name, "shadow", percent):
            return
        shadow = variant["VariantName"]
        with self._lock:
            self.mirrored[(name, shadow)] += 1
        started = time.perf_counter()
        try:
            model = backend._models[variant["ModelName"]]
            app = self._server.app(
                model.model_name, lambda folder: self._load(folder, model.primary_container, shadow)
            )
            status, headers, content = self._server.call(app, body, content_type, accept)
        except Exception:
            status, headers, content = 500, {}, b""
        seconds = time.perf_counter() - started
        with self._lock:
            publish_invocation(self.backend("cloudwatch", region), name, shadow, status, seconds)
        if capture is not None and status < 400:
            self._write_capture(
                capture,
                name,
                shadow,
                event_id,
                body,
                content_type,
                content,
                headers.get("content-type", accept),
            )

    def _runtime_error(self, request: Any, status: int, code: str, message: str) -> Any:
        return self._response(
            request,
            status,
            {"Content-Type": "application/json", "x-amzn-ErrorType": code},
            json.dumps({"message": message}).encode(),
        )

    def _pick(self, region: str, endpoint: Any, variants: Mapping[str, Any]) -> str:
        """Smooth weighted round-robin over the live weights: 80/20 is exactly 8 in 10."""
        weights = {}
        live = {v["VariantName"]: v for v in endpoint.production_variants}
        for vname, pv in variants.items():
            weight = live.get(vname, {}).get("CurrentWeight")
            weights[vname] = float(pv.get("InitialVariantWeight", 1.0) if weight is None else weight)
        key = (region, endpoint.endpoint_name, json.dumps(weights, sort_keys=True))
        with self._lock:
            current = self._routing.setdefault(key, dict.fromkeys(weights, 0))
            total = sum(weights.values())
            if total <= 0:
                return next(iter(variants))
            best = max(weights, key=lambda n: current[n] + weights[n])
            for n in weights:
                current[n] += weights[n]  # type: ignore[assignment]
            current[best] -= total  # type: ignore[assignment]
            return best

    def _load(self, folder: Path, container: Mapping[str, Any], variant: str) -> Any:
        """Fetch a model's artifact from moto's S3 and build the model server app for it."""
        from mlshift.serving import create_app, load_model
        from mlshift.specs.model import Signature

        env = dict(container.get("Environment") or {})
        source = (container.get("ModelDataSource") or {}).get("S3DataSource", {}).get(
            "S3Uri"
        ) or container.get("ModelDataUrl", "")
        bucket, _, prefix = str(source).removeprefix("s3://").partition("/")
        s3 = self.backend("s3")
        if prefix.endswith(".tar.gz"):
            # A packaged model (AWS's prebuilt images): SageMaker unpacks it into /opt/ml/model.
            import io
            import tarfile

            with tarfile.open(fileobj=io.BytesIO(s3.get_object(bucket, prefix).value), mode="r:gz") as tar:
                # The "data" filter (no links out, no device files) where this Python has it.
                safe: dict[str, Any] = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
                tar.extractall(folder, **safe)
            program = env.get("SAGEMAKER_PROGRAM")
            if program and (folder / "code" / program).is_file():
                return _ScriptApp(folder, folder / "code" / program)
        else:
            for key in list(s3.get_bucket(bucket).keys.keys()):
                if key.startswith(prefix):
                    dest = folder / key[len(prefix) :].lstrip("/")
                    dest.parent.mkdir(parents=True, exist_ok=True)
                    dest.write_bytes(s3.get_object(bucket, key).value)
        entry = env.get("MLSHIFT_ARTIFACT", "/opt/ml/model/").removeprefix("/opt/ml/model/")
        signature = env.get("MLSHIFT_SIGNATURE")
        model = load_model(
            folder / entry if entry else folder,
            env.get("MLSHIFT_FRAMEWORK", "sklearn"),
            digest=env.get("MLSHIFT_MODEL_DIGEST"),
            signature=Signature.model_validate_json(signature) if signature else None,
        )
        return create_app(
            model, variant=env.get("MLSHIFT_VARIANT", variant), model_ref=env.get("MLSHIFT_MODEL_REF")
        )


class _ScriptApp:
    """What AWS's prebuilt framework containers do with a packaged model, as an ASGI app.

    The package's inference script is imported and called the way the SageMaker inference
    toolkit calls it: ``model_fn(model_dir)`` once, then ``input_fn`` → ``predict_fn`` →
    ``output_fn`` per request; an exception answers 500, as the toolkit does.
    """

    def __init__(self, model_dir: Path, script: Path) -> None:
        import importlib.util

        spec = importlib.util.spec_from_file_location(
            f"mlshift_fake_inference_{secrets.token_hex(4)}", script
        )
        assert spec is not None and spec.loader is not None
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        self._script = module
        self._model = module.model_fn(str(model_dir))

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope.get("headers", [])}
        status, content_type = 200, "application/json"
        try:
            if scope["path"] == "/ping":
                payload = b""
            else:
                data = self._script.input_fn(body, headers.get("content-type", "application/json"))
                prediction = self._script.predict_fn(data, self._model)
                text, content_type = self._script.output_fn(
                    prediction, headers.get("accept", "application/json")
                )
                payload = text.encode() if isinstance(text, str) else bytes(text)
        except Exception as exc:
            status, payload = 500, json.dumps({"message": f"{type(exc).__name__}: {exc}"}).encode()
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [(b"content-type", content_type.encode())],
            }
        )
        await send({"type": "http.response.body", "body": payload})


@contextlib.contextmanager
def fake_sagemaker(
    region: str = "us-east-1", *, steps: int = 2, serving_image: bool = True
) -> Iterator[FakeSageMaker]:
    """``with fake_sagemaker() as aws:`` — the same as ``with FakeSageMaker() as aws:``."""
    with FakeSageMaker(region, steps=steps, serving_image=serving_image) as fake:
        yield fake
