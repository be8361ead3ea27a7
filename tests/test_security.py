"""Hardening, as an attacker or a careless user meets it: model files, folders, permissions."""

from __future__ import annotations

import builtins
import os
import stat
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sklearn.datasets import load_iris
from sklearn.dummy import DummyClassifier
from sklearn.ensemble import HistGradientBoostingClassifier, RandomForestClassifier
from sklearn.linear_model import LogisticRegression
from sklearn.neighbors import KNeighborsClassifier
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import FunctionTransformer, StandardScaler

import mlshift
from mlshift.errors import ConfigError
from mlshift.serving import load_model

ROWS = [[5.1, 3.5, 1.4, 0.2], [6.2, 2.9, 4.3, 1.3]]


@pytest.fixture(scope="module")
def xy() -> tuple[Any, Any]:
    return load_iris(return_X_y=True)


def _payload(marker: Path) -> str:
    # Harmless, but proof of execution: it creates a file.
    return f"__import__('pathlib').Path({str(marker)!r}).touch() or 0"


def _exploit(xy: tuple[Any, Any], marker: Path, first: Any, second: Any) -> Pipeline:
    """The pipeline from the report: fill every cell with code, then evaluate every cell."""
    X, y = xy
    pipe = Pipeline(
        [
            ("fill", FunctionTransformer(first, kw_args={"fill_value": "0", "dtype": object})),
            ("run", FunctionTransformer(second)),
            ("clf", DummyClassifier()),
        ]
    )
    pipe.fit(X, y)  # with a harmless "0"; the payload goes in after fitting
    pipe.set_params(fill__kw_args={"fill_value": _payload(marker), "dtype": object})
    return pipe


EXPLOITS: dict[str, tuple[Callable[..., Any], Callable[[], Any], list[str]]] = {
    "full_like+vectorize(eval)": (
        np.full_like,
        lambda: np.vectorize(builtins.eval),
        ["builtins.eval", "numpy.full_like", "numpy.vectorize"],
    ),
    "full_like+vectorize(exec)": (
        np.full_like,
        lambda: np.vectorize(builtins.exec),
        ["builtins.exec", "numpy.vectorize"],
    ),
    "full_like+frompyfunc(eval)": (
        np.full_like,
        lambda: np.frompyfunc(builtins.eval, 1, 1),
        ["builtins.eval"],
    ),
}


@pytest.fixture(autouse=True)
def _no_global_trust(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLSHIFT_SKOPS_TRUST", raising=False)


def _dump(model: Any, path: Path) -> Path:
    import skops.io as sio

    try:
        sio.dump(model, path)
    except Exception as exc:  # skops cannot save every callable: that variant is then moot
        pytest.skip(f"skops cannot save this variant: {exc}")
    return path


# --------------------------------------------------------------------------------- skops


@pytest.mark.parametrize("kind", list(EXPLOITS))
def test_skops_exploit_is_refused_at_load_and_at_register(
    kind: str, xy: tuple[Any, Any], tmp_path: Path
) -> None:
    first, second, names = EXPLOITS[kind]
    marker = tmp_path / "pwned"
    path = _dump(_exploit(xy, marker, first, second()), tmp_path / "model.skops")

    with pytest.raises(ConfigError) as info:
        load_model(path, "sklearn")
    message = str(info.value)
    for name in names:
        assert name in message
    assert "MLSHIFT_SKOPS_TRUST=" in message and "--skops-trust" in message

    client = mlshift.connect(f"local://{tmp_path / 'state'}")
    with pytest.raises(ConfigError, match="does not trust"):
        client.models.register("evil", path)
    assert client.models.list() == []
    assert not any((tmp_path / "state" / "artifacts").rglob("*.skops"))
    # ... also when a signature is given, so that nothing needs to load the model.
    with pytest.raises(ConfigError, match="does not trust"):
        client.models.register("evil", path, signature=mlshift.Signature.numeric(4))
    assert not marker.exists()


def test_the_exploit_is_real_once_trusted_deliberately(
    xy: tuple[Any, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Proof that the refusal above matters: trusted by name, the file runs its payload.
    marker = tmp_path / "pwned"
    first, second, _ = EXPLOITS["full_like+vectorize(eval)"]
    path = _dump(_exploit(xy, marker, first, second()), tmp_path / "model.skops")
    monkeypatch.setenv(
        "MLSHIFT_SKOPS_TRUST", "builtins.eval, numpy.full_like,numpy.vectorize,builtins.object"
    )
    model = load_model(path, "sklearn")
    assert not marker.exists()
    model.predict(ROWS)
    assert marker.exists()


def test_per_model_trust_is_recorded_with_the_version(
    artifacts_dir: Path, xy: tuple[Any, Any], tmp_path: Path
) -> None:
    from mlshift._artifacts import SKOPS_TRUST_TAG

    marker = tmp_path / "pwned"
    first, second, _ = EXPLOITS["full_like+vectorize(eval)"]
    path = _dump(_exploit(xy, marker, first, second()), tmp_path / "model.skops")
    client = mlshift.connect(f"local://{tmp_path / 'state'}")
    trusted = ["numpy.vectorize", "builtins.eval", "numpy.full_like", "builtins.object"]
    version = client.models.register("mine", path, skops_trust=trusted)
    assert version.tags[SKOPS_TRUST_TAG] == "builtins.eval,builtins.object,numpy.full_like,numpy.vectorize"
    stored = client.adapter.models.artifact_path(version)
    with pytest.raises(ConfigError):
        load_model(stored, "sklearn")
    load_model(stored, "sklearn", skops_trust=trusted)  # what the local target's server is given
    # Trusting only some of them is not enough, and the error names the rest.
    with pytest.raises(ConfigError, match=r"numpy\.vectorize") as info:
        client.models.register("mine", path, skops_trust=["builtins.eval"])
    assert "builtins.eval," not in str(info.value).split("hint")[0]


@pytest.fixture(scope="module")
def artifacts_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("models")


@pytest.mark.parametrize(
    "make",
    [
        lambda: LogisticRegression(max_iter=300),
        lambda: make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)),
        lambda: make_pipeline(FunctionTransformer(np.log1p), LogisticRegression(max_iter=300)),
        lambda: RandomForestClassifier(n_estimators=3, random_state=0),
        lambda: HistGradientBoostingClassifier(max_iter=3),
        lambda: KNeighborsClassifier(),
    ],
    ids=["logistic", "scaled-pipeline", "log1p-pipeline", "forest", "hist-gb", "knn"],
)
def test_plain_sklearn_models_load_with_no_setting(
    make: Callable[[], Any], xy: tuple[Any, Any], tmp_path: Path
) -> None:
    X, y = xy
    estimator = make().fit(X, y)
    path = _dump(estimator, tmp_path / "plain.skops")
    model = load_model(path, "sklearn")
    assert model.predict(ROWS) == estimator.predict(np.asarray(ROWS)).tolist()
    client = mlshift.connect(f"local://{tmp_path / 'state'}")
    assert client.models.register("plain", path).version == "1"


def test_registering_a_pickle_warns_that_it_runs_code(xy: tuple[Any, Any], tmp_path: Path) -> None:
    import joblib

    from mlshift._client import PickleWarning

    X, y = xy
    joblib.dump(LogisticRegression(max_iter=300).fit(X, y), tmp_path / "m.joblib")
    client = mlshift.connect(f"local://{tmp_path / 'state'}")
    with pytest.warns(PickleWarning, match="runs whatever code it contains"):
        client.models.register("pickled", tmp_path / "m.joblib")


def _mode(path: Path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)
