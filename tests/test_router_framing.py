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
