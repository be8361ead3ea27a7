"""Capture on local+docker://: the container writes into the state folder, as processes do.

Skipped like test_docker.py without an engine (never in CI).
"""

from __future__ import annotations

import json
import time
from typing import Any

import mlshift
from mlshift.serving._capture import capture_files, decode_record
from test_docker import docker_target, engine

__all__ = ["docker_target", "engine"]


def test_a_container_replica_captures_into_the_state_folder(
    docker_target: mlshift.Client,
    iris: dict[str, Any],
) -> None:
    client = docker_target
    client.models.register("iris", iris["v1"])
    client.endpoints.deploy("iris", "iris:1", capture={"sample_rate": 1.0})
    folder = client.adapter.endpoints.capture_dir("iris")
    for row in iris["rows"]:
        client.endpoints.predict("iris", [row])

    def records() -> list[dict[str, Any]]:
        return [json.loads(line) for p in capture_files(folder) for line in p.read_text().splitlines()]

    deadline = time.monotonic() + 60
    while len(records()) < len(iris["rows"]) and time.monotonic() < deadline:
        time.sleep(0.05)
    found = records()
    assert [decode_record(r)[0][0] for r in found] == iris["rows"]
    assert {r["model"] for r in found} == {"iris:1"} and {r["endpoint"] for r in found} == {"iris"}
