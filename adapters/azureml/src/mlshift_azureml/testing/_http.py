"""The fake's wire: an ``azure.core`` transport that answers in-process, and a JWT credential.

Every Azure SDK client accepts ``transport=``; this one hands each request to the fake instead
of the network, so the SDK's own serialization, long-running-operation polling, retries and
error parsing all run. Its ``sleep`` does nothing: the SDK waits between polls through the
transport (30 s per poll otherwise, even with ``Retry-After: 0``).
"""

from __future__ import annotations

import base64
import io
import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import requests
from azure.core.credentials import AccessToken
from azure.core.pipeline.transport import HttpTransport
from azure.core.rest._requests_basic import RestRequestsTransportResponse

__all__ = ["FakeCredential", "FakeTransport", "Reply", "fake_jwt"]


def _b64(data: Mapping[str, Any]) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()


def fake_jwt(audience: str = "https://ml.azure.com", lifetime: int = 3600) -> str:
    """An unsigned JWT the SDK can decode (pipeline submission checks ``aud``)."""
    now = int(time.time())
    claims = {
        "aud": audience,
        "iss": "https://sts.windows.net/00000000-0000-0000-0000-000000000000/",
        "oid": "00000000-0000-0000-0000-00000000f4ce",
        "tid": "00000000-0000-0000-0000-000000000000",
        "upn": "fake@mlshift.test",
        "iat": now,
        "nbf": now,
        "exp": now + lifetime,
    }
    # The signature is never checked, but it must be valid base64url: pipeline submission
    # decodes the whole token (PyJWT refuses a segment with invalid padding).
    signature = base64.urlsafe_b64encode(b"mlshift-fake-signature").rstrip(b"=").decode()
    return f"{_b64({'alg': 'none', 'typ': 'JWT'})}.{_b64(claims)}.{signature}"


class FakeCredential:
    """A ``TokenCredential`` handing out :func:`fake_jwt` tokens for any scope."""

    def __init__(self) -> None:
        self.requested_scopes: list[tuple[str, ...]] = []

    def get_token(self, *scopes: str, **kwargs: Any) -> AccessToken:
        self.requested_scopes.append(scopes)
        return AccessToken(fake_jwt(), int(time.time()) + 3600)

    def close(self) -> None:
        """Nothing to release."""


@dataclass
class Reply:
    """What the fake answers: status, JSON or bytes body, headers."""

    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)

    def content(self) -> bytes:
        if self.body is None:
            return b""
        if isinstance(self.body, bytes):
            return self.body
        return json.dumps(self.body).encode()


class _Response(RestRequestsTransportResponse):
    """A response both the new (``azure.core.rest``) and legacy pipeline interfaces can read."""

    def body(self) -> bytes:
        return bytes(self.content)

    def stream_download(self, pipeline: Any, **kwargs: Any) -> _Stream:
        return _Stream(self)


class _Stream:
    """A finished download as azure-storage-blob reads one (it sets attributes on it)."""

    def __init__(self, response: _Response) -> None:
        data = bytes(response.content)
        self._chunks: Iterator[bytes] = iter([data] if data else [])
        self.response = response
        self.content_length = len(data)
        self.properties: Any = None

    def __len__(self) -> int:
        return self.content_length

    def __iter__(self) -> _Stream:
        return self

    def __next__(self) -> bytes:
        return next(self._chunks)

    def close(self) -> None:
        return None


class FakeTransport(HttpTransport[Any, Any]):
    """Hands every request to ``handler`` (the fake) and never sleeps."""

    def __init__(self, handler: Callable[[str, str, Mapping[str, str], bytes], Reply]) -> None:
        self._handler = handler

    def __enter__(self) -> FakeTransport:
        return self

    def __exit__(self, *args: Any) -> None:
        return None

    def open(self) -> None:
        return None

    def close(self) -> None:
        return None

    def sleep(self, duration: float) -> None:
        """Long-running operations and retries wait here: not at all, in the fake."""
        return

    def send(self, request: Any, **kwargs: Any) -> Any:
        body = request.content if hasattr(request, "content") and request.content is not None else None
        if body is None:
            body = getattr(request, "body", None) or getattr(request, "data", None) or b""
        if isinstance(body, str):
            body = body.encode()
        elif hasattr(body, "read"):
            body = body.read()
        elif not isinstance(body, bytes):
            body = b"".join(bytes(chunk) for chunk in body) if body else b""
        headers = {k.lower(): v for k, v in request.headers.items()}
        reply = self._handler(request.method.upper(), request.url, headers, body)
        raw = requests.Response()
        raw.status_code = reply.status
        content = reply.content()
        raw.raw = io.BytesIO(content)
        raw.headers.update(reply.headers)
        raw.headers.setdefault("content-type", "application/json" if reply.body is not None else "text/plain")
        raw.headers.setdefault("content-length", str(len(content)))
        raw.headers.setdefault("x-ms-request-id", "fake")
        raw.url = request.url
        raw.reason = requests.status_codes._codes.get(reply.status, ("",))[0].upper()
        response = _Response(request=request, internal_response=raw)  # type: ignore[no-untyped-call]
        response.read()
        return response
