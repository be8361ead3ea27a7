"""Capture on local+docker://: the container writes into the state folder, as processes do.

Skipped like test_docker.py without an engine (never in CI).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest

import mlshift
from mlshift.local._docker import DockerRuntime
from mlshift.serving._capture import capture_files, decode_record
from test_docker import docker_target, engine, ours

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


def test_capture_files_belong_to_the_user_who_deployed(
    docker_target: mlshift.Client,
    engine: Any,
    state_dir: Path,
    iris: dict[str, Any],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The container runs as this process's uid:gid, so the files it writes are the user's.

    Run as root (as this suite runs in CI), root's own files prove nothing: a user with uid
    4321 stands in for the one who deployed (the folders the container reads and writes are
    made theirs, as they would be), which also shows the image serves as a user with no name.
    """
    client = docker_target
    runtime = client.adapter.endpoints.runtime
    assert isinstance(runtime, DockerRuntime)
    client.models.register("iris", iris["v1"])
    folder = client.adapter.endpoints.capture_dir("iris")
    uid, gid = os.getuid(), os.getgid()
    rootless = "name=rootless" in str(engine.info().get("SecurityOptions"))
    assert runtime.container_user() == (None if rootless else f"{uid}:{gid}")
    if uid == 0:
        uid = gid = 4321
        monkeypatch.setattr(runtime, "container_user", lambda: f"{uid}:{gid}")
        for path in [state_dir, *state_dir.rglob("*")]:  # the artifact store: 0400/0500, the user's
            path.chmod(path.stat().st_mode | (0o055 if path.is_dir() else 0o044))
        folder.mkdir(parents=True)
        os.chown(folder, uid, gid)
    client.endpoints.deploy("iris", "iris:1", capture={"sample_rate": 1.0})
    (container,) = ours(engine, state_dir)
    if not rootless:
        assert container.attrs["Config"]["User"] == f"{uid}:{gid}"
    for row in iris["rows"]:
        client.endpoints.predict("iris", [row])
    deadline = time.monotonic() + 60
    while not list(capture_files(folder)) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert list(capture_files(folder)), "nothing was captured"
    # What the server made: data/<day>/<hour>/<file>.jsonl and stats/ (capture.json is mlshift's).
    made = [
        p
        for sub in ("data", "stats")
        if (folder / sub).exists()
        for p in [folder / sub, *(folder / sub).rglob("*")]
    ]
    owners = {(p.stat().st_uid, p.stat().st_gid) for p in made}
    assert owners == {(uid, gid)}, f"capture files owned by {owners}, not the user {uid}:{gid}"
