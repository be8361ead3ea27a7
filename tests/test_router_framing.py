"""The local router frames its answers with Content-Length (never chunked), on the wire."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

import mlshift

ANSWER = json.dumps({"predictions": [0, 1, 2]}).encode()


class _Backend(BaseHTTPRequestHandler):
    """A model server stand-in: answers every POST with ANSWER."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(ANSWER)))
        self.end_headers()
        self.wfile.write(ANSWER)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def router(tmp_path: Path) -> Iterator[int]:
    """A router process in front of one backend; yields its port."""
    backend = ThreadingHTTPServer(("127.0.0.1", 0), _Backend)
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    routes = tmp_path / "routes.json"
    url = f"http://127.0.0.1:{backend.server_address[1]}"
    routes.write_text(
        json.dumps({"variants": [{"name": "a", "weight": 100, "backends": [url], "model": "m:1"}]})
    )
    port_file = tmp_path / "router.port"
    env = {**os.environ, "PYTHONPATH": str(Path(mlshift.__file__).parents[1])}
    command = [sys.executable, "-m", "mlshift.local._router", "--routes", str(routes), "--port", "0"]
    proc = subprocess.Popen([*command, "--port-file", str(port_file)], env=env)
    try:
        deadline = time.monotonic() + 300  # bounds a hang only: Python starts slowly on a loaded machine
        while not (port_file.exists() and port_file.read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, "the router did not start"
            time.sleep(0.02)
        yield int(port_file.read_text())
    finally:
        proc.terminate()
        proc.wait(30)
        backend.shutdown()
        backend.server_close()


def _exchange(port: int, request: bytes) -> tuple[dict[str, str], bytes]:
    """Send one HTTP/1.1 request; read the head, then exactly Content-Length bytes."""
    with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
        sock.sendall(request)
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, f"connection closed before the head: {data!r}"
            data += chunk
        head, _, rest = data.partition(b"\r\n\r\n")
        headers = {}
        for line in head.split(b"\r\n")[1:]:
            key, _, value = line.decode("latin-1").partition(":")
            headers[key.strip().lower()] = value.strip()
        assert "transfer-encoding" not in headers, headers
        length = int(headers["content-length"])
        while len(rest) < length:
            chunk = sock.recv(65536)
            assert chunk, "connection closed mid-body"
            rest += chunk
        return headers, rest[:length]


def test_predictions_and_router_answers_carry_content_length(router: int) -> None:
    body = b'{"instances": [[1, 2, 3, 4]]}'
    predict = (
        b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    headers, answer = _exchange(router, predict)
    assert answer == ANSWER and headers["x-mlshift-variant"] == "a"
    # The router's own answers (health, errors) too.
    headers, answer = _exchange(router, b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert json.loads(answer)["serving"] == ["a"]
    headers, answer = _exchange(router, b"GET /nowhere HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert json.loads(answer)["error"]["code"] == "not_found"


class _KeepAliveBackend(BaseHTTPRequestHandler):
    """An HTTP/1.1 model server stand-in that keeps connections open and records what it saw."""

    protocol_version = "HTTP/1.1"
    connections: ClassVar[list[int]] = []
    seen: ClassVar[list[tuple[str, str, str]]] = []
    closed: ClassVar[list[int]] = []
    #: Close each connection after answering, without saying so (as a keep-alive timeout does).
    close_silently = False

    def setup(self) -> None:
        super().setup()
        type(self).connections.append(1)

    def finish(self) -> None:
        super().finish()
        type(self).closed.append(1)

    def _answer(self, body: bytes, extra: dict[str, str] | None = None) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for key, value in (extra or {}).items():
            self.send_header(key, value)
        self.end_headers()
        self.wfile.write(body)
        if type(self).close_silently:
            self.close_connection = True

    def do_POST(self) -> None:
        data = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        framing = self.headers.get("Inference-Header-Content-Length", "")
        type(self).seen.append(("POST", self.path, framing))
        extra = {"Inference-Header-Content-Length": framing} if framing else None
        self._answer(data if self.path.startswith("/v2") else ANSWER, extra)

    def do_GET(self) -> None:
        type(self).seen.append(("GET", self.path, ""))
        self._answer(json.dumps({"path": self.path}).encode())

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def keepalive_router(tmp_path: Path) -> Iterator[int]:
    _KeepAliveBackend.connections = []
    _KeepAliveBackend.seen = []
    _KeepAliveBackend.close_silently = False
    _KeepAliveBackend.closed = []
    backend = ThreadingHTTPServer(("127.0.0.1", 0), _KeepAliveBackend)
    backend.daemon_threads = True
    threading.Thread(target=backend.serve_forever, daemon=True).start()
    routes = tmp_path / "routes.json"
    url = f"http://127.0.0.1:{backend.server_address[1]}"
    routes.write_text(
        json.dumps({"variants": [{"name": "a", "weight": 100, "backends": [url], "model": "m:1"}]})
    )
    port_file = tmp_path / "router.port"
    env = {**os.environ, "PYTHONPATH": str(Path(mlshift.__file__).parents[1])}
    command = [sys.executable, "-m", "mlshift.local._router", "--routes", str(routes), "--port", "0"]
    proc = subprocess.Popen([*command, "--port-file", str(port_file)], env=env)
    try:
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text()):
            assert proc.poll() is None and time.monotonic() < deadline, "the router did not start"
            time.sleep(0.02)
        yield int(port_file.read_text())
    finally:
        proc.terminate()
        proc.wait(30)
        backend.shutdown()
        backend.server_close()


def test_a_replica_taken_out_of_the_table_has_its_kept_connection_closed(
    keepalive_router: int, tmp_path: Path
) -> None:
    body = b'{"instances": [[1, 2, 3, 4]]}'
    predict = (
        b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    assert _exchange(keepalive_router, predict)[1] == ANSWER
    assert _KeepAliveBackend.closed == []  # kept open by the router for the next request
    routes = tmp_path / "routes.json"
    table = json.loads(routes.read_text())
    table["variants"][0]["backends"] = []
    tmp = routes.with_suffix(".new")
    tmp.write_text(json.dumps(table))
    os.replace(tmp, routes)  # as the local target replaces it
    _exchange(keepalive_router, b"GET /ping HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")  # the router reloads
    deadline = time.monotonic() + 30
    while not _KeepAliveBackend.closed:
        assert time.monotonic() < deadline, "the router kept its connection to a replica it no longer uses"
        time.sleep(0.02)


def test_the_router_reuses_its_connections_to_a_replica(keepalive_router: int) -> None:
    body = b'{"instances": [[1, 2, 3, 4]]}'
    predict = (
        b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    for _ in range(20):  # one after the other: one kept connection carries them all
        _, answer = _exchange(keepalive_router, predict)
        assert answer == ANSWER
    assert len(_KeepAliveBackend.seen) == 20
    assert len(_KeepAliveBackend.connections) == 1


def test_v2_and_version_routes_go_through_to_the_variant(keepalive_router: int) -> None:
    headers, answer = _exchange(keepalive_router, b"GET /version HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert json.loads(answer) == {"path": "/version"} and headers["x-mlshift-variant"] == "a"
    _, answer = _exchange(keepalive_router, b"GET /v2/models/m/ready?x=1 HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    assert json.loads(answer) == {"path": "/v2/models/m/ready?x=1"}
    # A binary infer request: its framing header goes to the variant and comes back.
    body = b'{"inputs":[]}' + b"\x00\x01\x02\x03"
    infer = (
        b"POST /v2/models/m/infer HTTP/1.1\r\nHost: 127.0.0.1\r\n"
        b"Content-Type: application/octet-stream\r\nInference-Header-Content-Length: 13\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    headers, answer = _exchange(keepalive_router, infer)
    assert answer == body and headers["inference-header-content-length"] == "13"
    assert ("POST", "/v2/models/m/infer", "13") in _KeepAliveBackend.seen


def test_a_kept_connection_the_replica_closed_is_replaced_without_an_error(keepalive_router: int) -> None:
    _KeepAliveBackend.close_silently = True
    body = b'{"instances": [[1, 2, 3, 4]]}'
    predict = (
        b"POST /invocations HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    for _ in range(5):
        headers, answer = _exchange(keepalive_router, predict)
        assert answer == ANSWER, (headers, answer)
    assert len(_KeepAliveBackend.seen) == 5  # each sent once to the model, never twice
    assert len(_KeepAliveBackend.connections) == 5
