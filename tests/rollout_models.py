"""Predictor models that misbehave on purpose, for rollout tests."""

from __future__ import annotations

from pathlib import Path

_TEMPLATE = """
import time


class Predictor:
    signature = {{"inputs": [{{"dtype": "float64"}}] * 4}}

    def load(self, path):
        pass

    def predict(self, batch):
        {body}
"""

BODIES = {
    "good": "return [0 for _ in batch]",
    "failing": 'raise RuntimeError("this version is broken")',
    "slow": "time.sleep(0.06)\n        return [0 for _ in batch]",
}


def predictor(folder: Path, kind: str) -> Path:
    """A predictor directory whose model answers, fails, or is slow."""
    path = folder / f"predictor-{kind}"
    path.mkdir(parents=True, exist_ok=True)
    (path / "predictor.py").write_text(_TEMPLATE.format(body=BODIES[kind]))
    return path
