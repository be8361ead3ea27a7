"""XGBoost and LightGBM model files: detected, registered with their signature, served natively."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest

import mlshift
from mlshift.errors import ConfigError, InvalidPayload
from mlshift.serving import detect_framework, infer_signature, load_model
from mlshift.specs.model import Signature

xgb = pytest.importorskip("xgboost")
lgb = pytest.importorskip("lightgbm")
pd = pytest.importorskip("pandas")

COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]


@pytest.fixture(scope="module")
def data() -> dict[str, Any]:
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    rng = np.random.default_rng(0)
    rows = x[rng.choice(len(x), 100)]
    return {"x": x, "y": y, "frame": pd.DataFrame(x, columns=COLUMNS), "rows": rows}


@pytest.fixture(scope="module")
def boosters(tmp_path_factory: pytest.TempPathFactory, data: dict[str, Any]) -> dict[str, Any]:
    """Models saved with each library's own save_model, and the models themselves."""
    folder = tmp_path_factory.mktemp("boosters")
    x, y, frame = data["x"], data["y"], data["frame"]
    classifier = xgb.XGBClassifier(n_estimators=8, max_depth=3).fit(frame, y)
    classifier.save_model(folder / "classifier.json")
    classifier.save_model(folder / "classifier.ubj")
    booster = xgb.train({"objective": "reg:squarederror"}, xgb.DMatrix(x, label=y), num_boost_round=5)
    booster.save_model(folder / "booster.json")
    lgbm = lgb.LGBMClassifier(n_estimators=8, verbose=-1).fit(frame, y)
    lgbm.booster_.save_model(folder / "lgbm.txt")
    unnamed = lgb.train(
        {"objective": "regression", "verbose": -1}, lgb.Dataset(x, label=y), num_boost_round=5
    )
    unnamed.save_model(folder / "unnamed.txt")
    return {
        "folder": folder,
        "classifier": classifier,
        "booster": booster,
        "lgbm": lgbm,
        "unnamed": unnamed,
    }


def test_frameworks_are_detected_from_the_files(boosters: dict[str, Any], tmp_path: Path) -> None:
    folder = boosters["folder"]
    assert detect_framework(folder / "classifier.json") == "xgboost"
    assert detect_framework(folder / "classifier.ubj") == "xgboost"
    assert detect_framework(folder / "booster.json") == "xgboost"
    assert detect_framework(folder / "lgbm.txt") == "lightgbm"
    other = tmp_path / "settings.json"
    other.write_text('{"threshold": 0.5}')
    with pytest.raises(ConfigError, match="cannot tell the framework") as info:
        detect_framework(other)
    assert "xgboost" in str(info.value) and "lightgbm" in str(info.value)


def test_signatures_come_from_the_boosters(boosters: dict[str, Any]) -> None:
    folder = boosters["folder"]
    assert infer_signature(folder / "classifier.ubj", "xgboost") == Signature.from_columns(COLUMNS)
    assert infer_signature(folder / "booster.json", "xgboost") == Signature.numeric(4)
    assert infer_signature(folder / "lgbm.txt", "lightgbm") == Signature.from_columns(COLUMNS)
    # LightGBM's own Column_0.. names mean "unnamed": requests need not name them.
    assert infer_signature(folder / "unnamed.txt", "lightgbm") == Signature.numeric(4)


def test_predictions_are_the_frameworks_own(boosters: dict[str, Any], data: dict[str, Any]) -> None:
    folder, rows = boosters["folder"], data["rows"]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    classifier = load_model(folder / "classifier.json", "xgboost")
    # Saved from XGBClassifier, loaded back into it: labels, as its predict gives.
    assert classifier.predict(rows.tolist()) == boosters["classifier"].predict(frame).tolist()
    booster = load_model(folder / "booster.json", "xgboost")
    assert booster.predict(rows.tolist()) == boosters["booster"].predict(xgb.DMatrix(rows)).tolist()
    lgbm = load_model(folder / "lgbm.txt", "lightgbm")
    assert np.allclose(lgbm.predict(rows.tolist()), boosters["lgbm"].booster_.predict(rows))
    with pytest.raises(InvalidPayload, match="4"):
        lgbm.predict([[1.0, 2.0]])


def test_a_signature_of_another_width_is_refused(boosters: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="3 inputs but the model"):
        load_model(boosters["folder"] / "lgbm.txt", "lightgbm", signature=Signature.numeric(3))
    with pytest.raises(ConfigError, match="3 inputs but the model"):
        load_model(boosters["folder"] / "classifier.ubj", "xgboost", signature=Signature.numeric(3))


def test_a_corrupt_model_file_is_a_config_error(tmp_path: Path) -> None:
    broken = tmp_path / "model.ubj"
    broken.write_bytes(b"{not a model")
    with pytest.raises(ConfigError, match="cannot load XGBoost model"):
        load_model(broken, "xgboost")
    text = tmp_path / "model.txt"
    text.write_text("tree\nversion=v4\nnonsense\n")
    with pytest.raises(ConfigError, match="cannot load LightGBM model"):
        load_model(text, "lightgbm")


@pytest.mark.slow
def test_register_deploy_predict_on_local(
    local: mlshift.Client, boosters: dict[str, Any], data: dict[str, Any]
) -> None:
    folder, rows = boosters["folder"], data["rows"]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    xv = local.models.register("iris-xgb", folder / "classifier.ubj")
    lv = local.models.register("iris-lgbm", folder / "lgbm.txt")
    assert (xv.framework, lv.framework) == ("xgboost", "lightgbm")
    assert xv.signature == lv.signature == Signature.from_columns(COLUMNS)
    local.endpoints.deploy("xgb", "iris-xgb:1")
    local.endpoints.deploy("lgbm", "iris-lgbm:1")
    expected = boosters["classifier"].predict(frame).tolist()
    assert local.endpoints.predict("xgb", rows.tolist()).predictions == expected
    answered = local.endpoints.predict("lgbm", rows.tolist()).predictions
    assert np.allclose(answered, boosters["lgbm"].booster_.predict(rows))
    # A DataFrame with its columns in another order: matched by name.
    shuffled = frame[list(reversed(COLUMNS))]
    assert local.endpoints.predict("xgb", shuffled).predictions == expected
    with pytest.raises(InvalidPayload, match="missing 'petal_width'"):
        local.endpoints.predict("xgb", frame.drop(columns=["petal_width"]))


def test_importing_mlshift_imports_neither_library() -> None:
    code = (
        "import sys, mlshift, mlshift.serving, mlshift.serving._loaders\n"
        "print(sorted(m for m in ('xgboost', 'lightgbm', 'mlflow', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
