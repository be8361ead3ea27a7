"""MLflow interop: model folders served natively, MLflow's signature kept, models:/ and runs:/ URIs.

The last tests run a real ``mlflow server`` (SQLite backend, local artifact store) on 127.0.0.1.
"""

from __future__ import annotations

import contextlib
import os
import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import yaml

import mlshift
from mlshift.errors import ConfigError, InvalidPayload, NotFound
from mlshift.serving import detect_framework, infer_signature, load_model
from mlshift.specs.model import ColumnSpec, Signature

if os.environ.get("CI", "").lower() != "true":
    # Off CI only: there, a missing mlflow fails the run instead of skipping the real-server test.
    pytest.importorskip("mlflow", reason="the MLflow tests need mlflow (pip install 'mlshift[mlflow]')")
import mlflow
import mlflow.pyfunc
import mlflow.sklearn
import pandas as pd

COLUMNS = ["sepal_length", "sepal_width", "petal_length", "petal_width"]

pytestmark = pytest.mark.filterwarnings(
    "ignore::UserWarning", "ignore::DeprecationWarning", "ignore::FutureWarning"
)


@pytest.fixture(scope="module")
def iris() -> dict[str, Any]:
    from sklearn.datasets import load_iris

    x, y = load_iris(return_X_y=True)
    frame = pd.DataFrame(x, columns=COLUMNS)
    rows = frame.sample(100, replace=True, random_state=0).reset_index(drop=True)
    return {"x": x, "y": y, "frame": frame, "rows": rows}


def _save(folder: Path, save: Any, model: Any, **kwargs: Any) -> Path:
    save(model, str(folder), **kwargs)
    return folder


@pytest.fixture(scope="module")
def folders(tmp_path_factory: pytest.TempPathFactory, iris: dict[str, Any]) -> dict[str, Path]:
    """One MLflow model folder per flavor, each written by mlflow's own save_model."""
    import lightgbm as lgb
    import mlflow.lightgbm
    import mlflow.onnx
    import mlflow.xgboost
    import xgboost as xgb
    from mlflow.models import infer_signature as mlflow_signature
    from skl2onnx import to_onnx
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression

    root = tmp_path_factory.mktemp("mlflow-models")
    frame, y = iris["frame"], iris["y"]
    signature = mlflow_signature(frame, y)
    example = frame.head(3)
    logistic = LogisticRegression(max_iter=500).fit(frame, y)
    forest = RandomForestClassifier(n_estimators=5, random_state=0).fit(frame, y)
    return {
        # mlflow 3 writes skops by default for scikit-learn.
        "sklearn": _save(
            root / "sklearn", mlflow.sklearn.save_model, logistic, signature=signature, input_example=example
        ),
        "forest": _save(
            root / "forest",
            mlflow.sklearn.save_model,
            forest,
            signature=signature,
            skops_trusted_types=["sklearn.tree._tree.Tree"],
        ),
        "proba": _save(
            root / "proba",
            mlflow.sklearn.save_model,
            logistic,
            signature=mlflow_signature(frame, logistic.predict_proba(frame)),
            pyfunc_predict_fn="predict_proba",
        ),
        "pickle": _save(
            root / "pickle", mlflow.sklearn.save_model, logistic, serialization_format="cloudpickle"
        ),
        "example-only": _save(
            root / "example-only", mlflow.sklearn.save_model, logistic, input_example=example
        ),
        "xgboost": _save(
            root / "xgboost",
            mlflow.xgboost.save_model,
            xgb.XGBClassifier(n_estimators=5).fit(frame, y),
            signature=signature,
        ),
        "lightgbm": _save(
            root / "lightgbm",
            mlflow.lightgbm.save_model,
            lgb.train(
                {"objective": "multiclass", "num_class": 3, "verbose": -1}, lgb.Dataset(frame, label=y), 5
            ),
            signature=signature,
        ),
        "lightgbm-sklearn": _save(
            root / "lightgbm-sklearn",
            mlflow.lightgbm.save_model,
            lgb.LGBMClassifier(n_estimators=5, verbose=-1).fit(frame, y),
            signature=signature,
        ),
        "onnx": _save(
            root / "onnx",
            mlflow.onnx.save_model,
            to_onnx(logistic, iris["x"][:1].astype(np.float32), options={"zipmap": False}),
        ),
    }


def _pyfunc_predictions(folder: Path, frame: Any) -> list[Any]:
    result = mlflow.pyfunc.load_model(str(folder)).predict(frame)
    return np.asarray(result).tolist()


@pytest.mark.parametrize("kind", ["sklearn", "forest", "proba", "pickle", "xgboost", "lightgbm"])
def test_native_flavors_predict_as_mlflow_does(
    kind: str, folders: dict[str, Path], iris: dict[str, Any]
) -> None:
    folder, rows = folders[kind], iris["rows"]
    assert detect_framework(folder) == "mlflow"
    model = load_model(folder, "mlflow", signature=infer_signature(folder, "mlflow"))
    assert model.framework == "mlflow"
    assert model.path == folder
    answered = model.predict(rows.to_numpy().tolist())
    assert np.allclose(answered, _pyfunc_predictions(folder, rows))


def test_onnx_flavor_answers_the_first_output(folders: dict[str, Path], iris: dict[str, Any]) -> None:
    import onnxruntime as ort

    folder = folders["onnx"]
    model = load_model(folder, "mlflow")
    assert model.signature == Signature.numeric(4, dtype="float32")
    rows = iris["x"][:20].astype(np.float32)
    session = ort.InferenceSession(str(folder / "model.onnx"), providers=["CPUExecutionProvider"])
    labels = session.run(None, {session.get_inputs()[0].name: rows})[0]
    assert model.predict(rows.tolist()) == labels.tolist()


def test_loading_native_flavors_never_imports_mlflow(folders: dict[str, Path]) -> None:
    kinds = ["sklearn", "forest", "pickle", "xgboost", "lightgbm", "onnx"]
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from mlshift.serving import infer_signature, load_model\n"
        f"for folder in {[str(folders[k]) for k in kinds]!r}:\n"
        "    model = load_model(Path(folder), 'mlflow', signature=infer_signature(Path(folder), 'mlflow'))\n"
        "    model.predict([[5.1, 3.5, 1.4, 0.2]])\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] == 'mlflow'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=False)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_mlflow_signature_is_kept_in_the_models_column_order(
    folders: dict[str, Path], tmp_path: Path
) -> None:
    assert infer_signature(folders["sklearn"], "mlflow") == Signature.from_columns(COLUMNS)
    # An MLmodel listing the columns in another order, with types: names and types from MLflow,
    # the order the model was trained with.
    folder = tmp_path / "reordered"
    _copy(folders["sklearn"], folder)
    columns = [
        {"type": "float", "name": "petal_width"},
        {"type": "double", "name": "sepal_length"},
        {"type": "double", "name": "petal_length"},
        {"type": "double", "name": "sepal_width"},
    ]
    _edit_mlmodel(folder, signature={"inputs": columns})
    signature = infer_signature(folder, "mlflow")
    assert signature is not None
    assert signature.column_names == tuple(COLUMNS)
    assert signature.inputs[3] == ColumnSpec(name="petal_width", dtype="float32")


def test_input_example_gives_the_signature_when_mlflow_has_none(folders: dict[str, Path]) -> None:
    mlmodel = yaml.safe_load((folders["example-only"] / "MLmodel").read_text())
    # mlflow 3 infers a signature from the example itself; without one, mlshift reads the example.
    folder = folders["example-only"]
    if "signature" in mlmodel:
        _edit_mlmodel(folder, signature=None)
    assert infer_signature(folder, "mlflow") == Signature.from_columns(COLUMNS)


def test_unexpressible_signatures_are_refused_by_name(folders: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "dates"
    _copy(folders["sklearn"], folder)
    _edit_mlmodel(folder, signature={"inputs": [{"type": "datetime", "name": "when"}]})
    with pytest.raises(ConfigError, match="column 'when'.*'datetime'") as info:
        infer_signature(folder, "mlflow")
    assert info.value.hint is not None and "signature explicitly" in info.value.hint
    _edit_mlmodel(
        folder,
        signature={
            "inputs": [{"type": "tensor", "tensor-spec": {"dtype": "float32", "shape": [-1, 28, 28]}}]
        },
    )
    with pytest.raises(ConfigError, match=r"shape \[-1, 28, 28\]"):
        infer_signature(folder, "mlflow")


def test_a_flavor_file_outside_the_folder_is_refused(folders: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "escape"
    _copy(folders["xgboost"], folder)
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    mlmodel["flavors"]["xgboost"]["data"] = "../../etc/passwd"
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))
    with pytest.raises(ConfigError, match="points outside the folder"):
        load_model(folder, "mlflow")


def test_untrusted_skops_types_are_refused_at_registration(
    memory: mlshift.Client, folders: dict[str, Path], iris: dict[str, Any]
) -> None:
    folder = folders["lightgbm-sklearn"]
    # MLmodel lists the types its author trusted; mlshift does not take a file's word for it.
    with pytest.raises(ConfigError, match="lightgbm.sklearn.LGBMClassifier") as info:
        memory.models.register("lgbm", folder)
    assert "--skops-trust" in str(info.value)
    assert memory.models.list() == []
    trusted = ["collections.OrderedDict", "lightgbm.basic.Booster", "lightgbm.sklearn.LGBMClassifier"]
    version = memory.models.register("lgbm", folder, skops_trust=trusted)
    assert version.tags["mlflow.flavor"] == "lightgbm"
    model = load_model(folder, "mlflow", skops_trust=trusted)
    rows = iris["rows"]
    assert model.predict(rows.to_numpy().tolist()) == _pyfunc_predictions(folder, rows)


def test_register_an_mlflow_folder(
    memory: mlshift.Client, folders: dict[str, Path], iris: dict[str, Any]
) -> None:
    version = memory.models.register("iris", folders["sklearn"])
    assert version.framework == "mlflow"
    assert version.signature == Signature.from_columns(COLUMNS)
    assert version.tags["mlflow.flavor"] == "sklearn"
    memory.endpoints.deploy("iris", "iris:1")
    rows = iris["rows"]
    expected = _pyfunc_predictions(folders["sklearn"], rows)
    assert memory.endpoints.predict("iris", rows).predictions == expected
    # The DataFrame's columns are matched by name: another order, the same answers.
    assert memory.endpoints.predict("iris", rows[list(reversed(COLUMNS))]).predictions == expected
    with pytest.raises(InvalidPayload, match="missing 'sepal_width'"):
        memory.endpoints.predict("iris", rows.drop(columns=["sepal_width"]))
    holes = rows.head(3).copy()
    holes.loc[1, "petal_length"] = float("nan")
    with pytest.raises(InvalidPayload, match=r"data\[1\]\[2\] \(petal_length\) is null"):
        memory.endpoints.predict("iris", holes)


def test_a_folder_that_is_no_model_names_both_kinds(memory: mlshift.Client, tmp_path: Path) -> None:
    (tmp_path / "notes.txt").write_text("hello")
    with pytest.raises(ConfigError, match="no predictor.py or no MLmodel") as info:
        memory.models.register("x", tmp_path)
    assert "MLflow" in str(info.value)
    with pytest.raises(ConfigError, match="no MLmodel"):
        memory.models.register("x", tmp_path, framework="mlflow")


def test_mlflow_folders_in_a_plan(
    memory: mlshift.Client, folders: dict[str, Path], iris: dict[str, Any]
) -> None:
    from mlshift.specs import EndpointSpec, ModelSpec

    endpoint = EndpointSpec.model_validate({"name": "iris", "variants": [{"name": "blue", "model": "iris"}]})
    model = ModelSpec(name="iris", path=str(folders["forest"]), framework="mlflow")
    memory.apply(memory.plan([model, endpoint]))
    rows = iris["rows"]
    assert memory.endpoints.predict("iris", rows).predictions == _pyfunc_predictions(folders["forest"], rows)
    # The .skops file inside an MLflow folder is checked at plan time like any other.
    untrusted = ModelSpec(name="lgbm", path=str(folders["lightgbm-sklearn"]), framework="mlflow")
    with pytest.raises(ConfigError, match="types mlshift does not trust"):
        memory.plan([untrusted])
    with pytest.raises(ConfigError, match="registered with `mlshift models register`") as info:
        memory.plan([ModelSpec(name="iris", path="models:/iris/1", framework="mlflow")])
    assert info.value.hint is not None and "mlshift models register iris models:/iris/1" in info.value.hint


class EchoSum(mlflow.pyfunc.PythonModel):  # type: ignore[misc]
    """A model only mlflow.pyfunc can load: it answers the sum of each row."""

    # No type hints: mlflow would read its input schema from them.
    def predict(self, context, model_input, params=None):
        return model_input.sum(axis=1)


@pytest.fixture(scope="module")
def pyfunc_folder(tmp_path_factory: pytest.TempPathFactory, iris: dict[str, Any]) -> Path:
    from mlflow.models import infer_signature as mlflow_signature

    folder = tmp_path_factory.mktemp("pyfunc") / "model"
    frame = iris["frame"]
    mlflow.pyfunc.save_model(
        str(folder), python_model=EchoSum(), signature=mlflow_signature(frame, frame.sum(axis=1))
    )
    return folder


def test_other_flavors_load_through_pyfunc(pyfunc_folder: Path, iris: dict[str, Any]) -> None:
    signature = infer_signature(pyfunc_folder, "mlflow")
    assert signature is not None
    assert signature.inputs == Signature.from_columns(COLUMNS).inputs
    assert signature.outputs == (ColumnSpec(dtype="float64"),)
    model = load_model(pyfunc_folder, "mlflow", signature=signature)
    rows = iris["rows"]
    assert np.allclose(model.predict(rows.to_numpy().tolist()), rows.sum(axis=1).tolist())


def test_pyfunc_without_mlflow_names_the_extra(pyfunc_folder: Path) -> None:
    code = (
        "import sys\n"
        "sys.modules['mlflow'] = None  # as if it were not installed\n"
        "from pathlib import Path\n"
        "from mlshift.serving import load_model\n"
        "try:\n"
        f"    load_model(Path({str(pyfunc_folder)!r}), 'mlflow')\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert "pip install 'mlshift[mlflow]'" in out.stdout


# ----------------------------------------------------------------------------- URIs


@pytest.mark.parametrize(
    "uri",
    [
        "models:/iris",
        "models:/iris/latest",
        "models:/iris@",
        "runs:/abc",
        "runs:/abc/../../etc",
        "models:iris/1",
    ],
)
def test_malformed_mlflow_uris_are_refused_before_any_call(memory: mlshift.Client, uri: str) -> None:
    with pytest.raises(ConfigError, match="not an MLflow model URI") as info:
        memory.models.register("iris", uri)
    assert info.value.hint is not None and "models:/NAME/VERSION" in info.value.hint


def test_mlflow_uris_need_a_tracking_uri(memory: mlshift.Client, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with pytest.raises(ConfigError, match="MLFLOW_TRACKING_URI is not set"):
        memory.models.register("iris", "models:/iris/1")


def test_mlflow_uris_without_mlflow_name_the_extra(tmp_path: Path) -> None:
    code = (
        "import sys\n"
        "sys.modules['mlflow'] = None\n"
        "import mlshift\n"
        "try:\n"
        "    mlshift.connect('memory://').models.register('iris', 'models:/iris/1')\n"
        "except ImportError as exc:\n"
        "    print(exc)\n"
    )
    env = {**os.environ, "MLFLOW_TRACKING_URI": "http://127.0.0.1:9"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env)
    assert "pip install 'mlshift[mlflow]'" in out.stdout


def _port_candidates() -> list[int]:
    """Ports below the kernel's ephemeral range: no port the OS hands out by itself."""
    ranges = Path("/proc/sys/net/ipv4/ip_local_port_range")
    low = int(ranges.read_text().split()[0]) if ranges.exists() else 32768
    return random.sample(range(max(1024, low - 10_000), low), 50)


@contextlib.contextmanager
def mlflow_server(root: Path, deadline_s: float = 420) -> Iterator[tuple[str, Path]]:
    """A real ``mlflow server`` on 127.0.0.1 (SQLite backend, artifacts under ``root``).

    Yields its URL and the file its log goes to.

    mlflow cannot bind port 0 nor take a bound socket (it execs uvicorn with closed fds), so a
    port is picked and the server started; if uvicorn reports the port taken (another process
    bound it between the pick and the start), it is tried again with another, until a deadline.
    Ready means uvicorn said it listens on that port, then ``/health`` answered.
    """
    import httpx

    command = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1", "--workers", "1"]
    command += ["--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}"]
    command += ["--artifacts-destination", str(root / "artifacts")]
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    deadline = time.monotonic() + deadline_s
    for port in _port_candidates():
        log_path = root / f"server-{port}.log"
        with log_path.open("wb") as log:
            proc = subprocess.Popen(
                [*command, "--port", str(port)],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=root,
                env=env,
                start_new_session=True,  # its workers share its process group: stopped together
            )
        try:
            url = f"http://127.0.0.1:{port}"
            while time.monotonic() < deadline:
                text = log_path.read_text(errors="replace")
                if f"Uvicorn running on {url}" in text:
                    response = httpx.get(f"{url}/health", timeout=30)
                    assert response.status_code == 200, response.text
                    yield url, log_path
                    return
                if proc.poll() is not None:
                    break
                time.sleep(0.2)  # polling the log for a condition, under a deadline
            else:
                raise AssertionError(f"mlflow server not up after {deadline_s:.0f} s:\n{text[-3000:]}")
            if "address already in use" not in text.lower():
                raise AssertionError(f"mlflow server exited with {proc.returncode}:\n{text[-3000:]}")
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    raise AssertionError("no free port for mlflow server after 50 tries")


@pytest.fixture(scope="module")
def tracking(tmp_path_factory: pytest.TempPathFactory, iris: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """A tracking server with a logged, registered scikit-learn model (version 1, alias champion)."""
    from mlflow.models import infer_signature as mlflow_signature
    from sklearn.linear_model import LogisticRegression

    root = tmp_path_factory.mktemp("mlflow-server")
    with mlflow_server(root) as (url, log_path), pytest.MonkeyPatch.context() as patch:
        patch.setenv("MLFLOW_TRACKING_URI", url)
        mlflow.set_tracking_uri(url)
        try:
            try:
                frame, y = iris["frame"], iris["y"]
                model = LogisticRegression(max_iter=500).fit(frame, y)
                mlflow.set_experiment("mlshift-interop")
                with mlflow.start_run() as run:
                    mlflow.sklearn.log_model(
                        model,
                        name="model",
                        registered_model_name="iris-classifier",
                        signature=mlflow_signature(frame, model.predict(frame)),
                        input_example=frame.head(3),
                    )
                client = mlflow.MlflowClient(tracking_uri=url)
                client.set_registered_model_alias("iris-classifier", "champion", "1")
            except Exception as exc:
                # What the server said is what explains a failed setup on a busy machine.
                log = log_path.read_text(errors="replace")[-4000:]
                raise AssertionError(f"logging a model to the mlflow server failed: {exc}\n{log}") from exc
            yield {"url": url, "run_id": run.info.run_id}
        finally:
            mlflow.set_tracking_uri("")


@pytest.mark.slow
def test_a_model_from_a_tracking_server_deploys_and_predicts_as_mlflow_does(
    tracking: dict[str, Any], local: mlshift.Client, iris: dict[str, Any]
) -> None:
    version = local.models.register("iris", "models:/iris-classifier/1")
    assert version.framework == "mlflow"
    assert version.signature == Signature.from_columns(COLUMNS)
    assert version.tags["mlflow.source"] == "models:/iris-classifier/1"
    assert version.tags["mlflow.version"] == "1"
    assert version.tags["mlflow.run_id"] == tracking["run_id"]
    local.endpoints.deploy("iris", "iris:1")
    rows = iris["rows"]
    expected = mlflow.pyfunc.load_model("models:/iris-classifier/1").predict(rows).tolist()
    assert len(rows) == 100
    assert local.endpoints.predict("iris", rows).predictions == expected
    assert local.endpoints.predict("iris", rows.to_numpy().tolist()).predictions == expected


@pytest.mark.slow
def test_aliases_and_run_uris_resolve_to_the_same_bytes(
    tracking: dict[str, Any], memory: mlshift.Client
) -> None:
    by_alias = memory.models.register("iris", "models:/iris-classifier@champion")
    assert by_alias.tags["mlflow.version"] == "1"
    assert by_alias.tags["mlflow.source"] == "models:/iris-classifier@champion"
    by_run = memory.models.register("iris", f"runs:/{tracking['run_id']}/model")
    assert by_run.framework == "mlflow"
    by_version = memory.models.register("iris", "models:/iris-classifier/1")
    assert by_alias.digest == by_version.digest


@pytest.mark.slow
def test_unknown_models_are_not_found_with_a_hint(tracking: dict[str, Any], memory: mlshift.Client) -> None:
    with pytest.raises(NotFound) as info:
        memory.models.register("iris", "models:/no-such-model/1")
    assert "models:/no-such-model/1" in str(info.value)
    assert info.value.provider == "mlflow"
    with pytest.raises(NotFound):
        memory.models.register("iris", "models:/iris-classifier/7")
    assert memory.models.list() == []


# ---------------------------------------------------------------------------- helpers


def _copy(source: Path, dest: Path) -> None:
    import shutil

    shutil.copytree(source, dest)


def _edit_mlmodel(folder: Path, **changes: Any) -> None:
    mlmodel = yaml.safe_load((folder / "MLmodel").read_text())
    for key, value in changes.items():
        if value is None:
            mlmodel.pop(key, None)
        else:
            mlmodel[key] = {
                k: (v if isinstance(v, str) else __import__("json").dumps(v)) for k, v in value.items()
            }
    (folder / "MLmodel").write_text(yaml.safe_dump(mlmodel))
