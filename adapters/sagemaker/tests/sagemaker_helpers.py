"""Helpers shared by the adapter's tests (imported by name: pytest puts this folder on sys.path)."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

import mlshift
from mlshift.errors import ConfigError
from mlshift_sagemaker import SageMakerAdapter
from mlshift_sagemaker.testing import FakeSageMaker

TARGET = "sagemaker://us-east-1"
ROOT = Path(__file__).resolve().parents[3]


def run_under_kit(cwd: Path, *args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """``python -m mlshift_sagemaker.testing run ARGS`` as a user runs it: a fresh process,
    no AWS or mlshift settings inherited from this one."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MLSHIFT_"))}
    return subprocess.run(
        [sys.executable, "-m", "mlshift_sagemaker.testing", "run", *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def sagemaker(client: mlshift.Client) -> SageMakerAdapter:
    """The SageMaker adapter behind ``client``, typed as one (its AWS clients, store, options)."""
    adapter = client.adapter
    assert isinstance(adapter, SageMakerAdapter), client.target
    return adapter


@contextmanager
def refused_before_any_change(aws: FakeSageMaker, field: str, match: str | None = None) -> Iterator[None]:
    """Expects the block to fail with a ``ConfigError`` naming ``field`` (its message matching
    ``match``) before any mutating AWS call."""
    mark = len(aws.calls)
    with pytest.raises(ConfigError, match=match) as caught:
        yield
    assert caught.value.field == field
    assert aws.mutating_calls(since=mark) == []
