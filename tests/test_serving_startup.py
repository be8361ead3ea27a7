"""A model server's start: skops imported without its scan of all of scikit-learn, with the
same estimators trusted and the same files refused."""

from __future__ import annotations

import builtins
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import skops.io as sio
from sklearn.datasets import load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import mlshift
from mlshift.serving import _loaders

SRC = Path(mlshift.__file__).resolve().parents[1]


def _all_estimator_names() -> set[str]:
    from sklearn.utils import all_estimators
    from skops.io._utils import get_type_name

    return {n for _, c in all_estimators() if (n := get_type_name(c)).startswith("sklearn.")}


def test_estimators_found_by_their_package_are_exactly_those_skops_trusts() -> None:
    from skops.io._utils import get_type_name

    listed = _all_estimator_names()
    found = {name for name in listed if _loaders._exported_estimator(name)}
    # Nearly all are found without the full list (the rest still are, through it).
    assert len(found) >= 0.9 * len(listed), sorted(listed - found)
    # Never a class the list does not hold: every class of every scikit-learn module loaded now.
    others = {
        get_type_name(value)
        for module_name, module in list(sys.modules.items())
        if module_name.startswith("sklearn") and module is not None
        for value in vars(module).values()
        if isinstance(value, type)
    }
    others |= {"sklearn.tree._tree.Tree", "sklearn.base.BaseEstimator", "builtins.eval", "sklearn.nope.X"}
    wrongly = sorted(n for n in others - listed if _loaders._exported_estimator(n))
    assert wrongly == []
    assert all(_loaders._is_sklearn_estimator(n) for n in listed)
    assert not any(_loaders._is_sklearn_estimator(n) for n in others - listed)


QUICK = """
import json, sys
from pathlib import Path
from mlshift.errors import ConfigError
from mlshift.serving import _loaders, load_model

_loaders.quick_skops_import()
model = load_model(Path(sys.argv[1]), "sklearn")
out = {"predictions": model.predict(json.loads(sys.argv[3])),
       "scanned": "sklearn.utils._testing" in sys.modules}
try:
    load_model(Path(sys.argv[2]), "sklearn")
    out["evil"] = "loaded"
except ConfigError as exc:
    out["evil"] = str(exc)
print(json.dumps(out))
"""


def _evil(marker: Path) -> Any:
    # A numpy.vectorize(builtins.eval) stored in a fitted estimator: building it from the file
    # is what untrusted-type refusal is for (tests/test_security.py has the full set).
    x, y = load_iris(return_X_y=True)
    model = LogisticRegression(max_iter=500).fit(x, y)
    model.payload = np.vectorize(builtins.eval)  # type: ignore[attr-defined]
    model.marker = str(marker)  # type: ignore[attr-defined]
    return model


def test_a_quick_skops_import_loads_the_same_model_and_refuses_the_same_types(tmp_path: Path) -> None:
    x, y = load_iris(return_X_y=True)
    good = make_pipeline(StandardScaler(), LogisticRegression(max_iter=500)).fit(x, y)
    sio.dump(good, tmp_path / "good.skops")
    try:
        sio.dump(_evil(tmp_path / "pwned"), tmp_path / "evil.skops")
    except Exception as exc:  # pragma: no cover - depends on what this skops can save
        pytest.skip(f"skops cannot save the refused type here: {exc}")
    rows = x[:5].tolist()
    env = {k: v for k, v in os.environ.items() if k != "MLSHIFT_SKOPS_TRUST"}
    env["PYTHONPATH"] = str(SRC)
    proc = subprocess.run(
        [
            sys.executable,
            "-c",
            QUICK,
            str(tmp_path / "good.skops"),
            str(tmp_path / "evil.skops"),
            json.dumps(rows),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["predictions"] == good.predict(x[:5]).tolist()
    assert out["scanned"] is False  # skops did not import every scikit-learn module
    assert "does not trust" in out["evil"] and "numpy.vectorize" in out["evil"]
    assert not (tmp_path / "pwned").exists()


def test_the_model_server_refuses_an_untrusted_skops_file(tmp_path: Path) -> None:
    # The server process takes the quick import: the refusal is the same, before listening.
    try:
        sio.dump(_evil(tmp_path / "pwned"), tmp_path / "evil.skops")
    except Exception as exc:  # pragma: no cover - depends on what this skops can save
        pytest.skip(f"skops cannot save the refused type here: {exc}")
    env = {k: v for k, v in os.environ.items() if k != "MLSHIFT_SKOPS_TRUST"}
    env["PYTHONPATH"] = str(SRC)
    proc = subprocess.run(
        [sys.executable, "-m", "mlshift.serving", "--artifact", str(tmp_path / "evil.skops"), "--port", "0"],
        capture_output=True,
        text=True,
        env=env,
        timeout=300,
        check=False,
    )
    assert proc.returncode == 2, proc.stderr
    assert "does not trust" in proc.stderr and "numpy.vectorize" in proc.stderr
    assert not (tmp_path / "pwned").exists()
