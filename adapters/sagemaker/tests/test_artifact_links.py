"""The artifact upload refuses links out of the model folder, as registration does."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import mlshift
from mlshift.adapter import Artifact
from mlshift.artifacts import digest_path
from mlshift.errors import ConfigError
from mlshift.specs.model import ModelSpec
from mlshift_sagemaker.testing import FakeSageMaker

PREDICTOR = (
    "class Predictor:\n"
    "    def load(self, path):\n"
    "        pass\n"
    "    def predict(self, batch):\n"
    "        return [0] * len(batch)\n"
)


def model_folder(tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    folder.mkdir()
    (folder / "predictor.py").write_text(PREDICTOR)
    return folder


def uploaded(aws: FakeSageMaker) -> list[bytes]:
    """The artifact files in the target's bucket (none when the bucket was never made)."""
    bucket = aws.backend("s3").buckets.get(f"sagemaker-us-east-1-{aws.account_id}")
    keys = bucket.keys.values() if bucket is not None else []
    return [key.value for key in keys if "/artifacts/" in key.name]


def test_a_link_out_of_the_folder_is_refused_before_anything_is_uploaded(
    client: mlshift.Client, aws: FakeSageMaker, tmp_path: Path
) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    folder = model_folder(tmp_path)
    digest = digest_path(folder)  # as registration saw it, before the link appeared
    os.symlink(secret, folder / "data.txt")
    spec = ModelSpec(name="m", path=str(folder), framework="predictor")
    mark = len(aws.calls)
    with pytest.raises(
        ConfigError, match=r"'data.txt' in artifact folder .* symbolic link out of the folder"
    ):
        client.adapter.models.register(spec, Artifact(path=folder, digest=digest, size=len(PREDICTOR)))
    assert aws.bytes_uploaded(since=mark) == 0
    assert not any(b"TOPSECRET" in value for value in uploaded(aws))
    # Registration refuses it too, naming the same link.
    with pytest.raises(ConfigError, match="symbolic link out of the folder"):
        client.models.register("m", folder)


def test_a_link_inside_the_folder_is_uploaded_as_the_file_it_points_to(
    client: mlshift.Client, aws: FakeSageMaker, tmp_path: Path
) -> None:
    folder = model_folder(tmp_path)
    (folder / "weights.bin").write_bytes(b"WEIGHTS")
    os.symlink(folder / "weights.bin", folder / "alias.bin")
    version = client.models.register("m", folder)
    assert version.version == "1"
    assert sum(value == b"WEIGHTS" for value in uploaded(aws)) == 2
