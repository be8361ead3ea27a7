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
    # Labels by the first feature: "threshold-2" disagrees with "threshold-5" on x in [2, 5),
    # "threshold-5.01" only on x = 5.0 (see shadow_rows).
    "threshold-5": "return [int(row[0] >= 5) for row in batch]",
    "threshold-2": "return [int(row[0] >= 2) for row in batch]",
    "threshold-5.01": "return [int(row[0] >= 5.01) for row in batch]",
    "failing": 'raise RuntimeError("this version is broken")',
    "slow": "time.sleep(0.06)\n        return [0 for _ in batch]",
    # Slower than a loaded machine makes the baseline: a ratio to the baseline's p99 must show.
    "very-slow": "time.sleep(0.5)\n        return [0 for _ in batch]",
}


def predictor(folder: Path, kind: str) -> Path:
    """A predictor directory whose model answers, fails, or is slow."""
    path = folder / f"predictor-{kind}"
    path.mkdir(parents=True, exist_ok=True)
    (path / "predictor.py").write_text(_TEMPLATE.format(body=BODIES[kind]))
    return path


def wide_models(folder: Path) -> dict[str, object]:
    """Two scikit-learn classifiers: ``v1`` takes 20 features, ``v2`` (a mistake) takes 5.

    Returns:
        ``{"v1": path, "v2": path, "rows": rows of 20 values v1 accepts}``
    """
    import numpy as np
    import skops.io as skops_io
    from sklearn.linear_model import LogisticRegression

    rng = np.random.default_rng(0)
    x = rng.normal(size=(200, 20))
    y = (x[:, 0] + x[:, 7] > 0).astype(int)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {}
    for key, width in (("v1", 20), ("v2", 5)):
        path = folder / f"wide-{key}.skops"
        skops_io.dump(LogisticRegression(max_iter=500).fit(x[:, :width], y), path)
        paths[key] = path
    return {**paths, "rows": x[:3].round(3).tolist()}


def shadow_rows() -> list[list[float]]:
    """200 rows whose first feature runs 0.0, 0.05, ..., 9.95: "threshold-2" disagrees with
    "threshold-5" on 30% of them, "threshold-5.01" on 0.5%."""
    return [[i / 20, 0.0, 0.0, 0.0] for i in range(200)]
