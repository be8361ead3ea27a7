"""mlshift monitoring example: capture → drift → retrain → canary, on the local target.

A churn-like model on four numeric features is deployed with capture on and a baseline of its
training data. Traffic like the training data shows no drift; then one feature moves by one
standard deviation, the monitor flags it, writes an HTML report and starts the ``retrain``
pipeline once; the pipeline retrains on the captured rows, passes its accuracy gate and rolls
the new version out by canary.

    python examples/monitor_retrain.py            # state in ./.mlshift
    python examples/monitor_retrain.py --keep     # leave the endpoint running

The same from the command line, once the endpoint exists:

    mlshift monitors apply -f mlshift.yaml        # a `monitors:` entry, see docs/mlshift-yaml.md
    mlshift monitors run churn-drift
    mlshift monitors report churn-drift --html report.html
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import mlshift
from mlshift.pipelines import InputPath, Metrics, OutputPath, pipeline, step, when

ENDPOINT = "churn"
MODEL = "churn"
FEATURES = 4
#: The feature that moves in the story (0-based): ``x2``.
SHIFTED = 2
HERE = Path(__file__).resolve()


def make_data(rows: int, seed: int, shift: float = 0.0) -> Any:
    """Rows like the training data; ``shift`` moves feature ``SHIFTED`` by that many standard deviations."""
    import numpy as np

    rng = np.random.default_rng(seed)
    x = rng.normal(loc=[0.0, 5.0, 10.0, -2.0], scale=[1.0, 2.0, 3.0, 0.5], size=(rows, FEATURES))
    x[:, SHIFTED] += shift * 3.0
    return x


def label(x: Any) -> Any:
    """The ground truth of this made-up world: who churns."""
    return ((x[:, 0] + 0.5 * (x[:, 1] - 5.0) - 0.3 * (x[:, 2] - 10.0)) > 0).astype(int)


def train_model(x: Any, path: Path) -> Path:
    """Fit a logistic regression on ``x`` (labelled by :func:`label`) and save it as skops."""
    import skops.io
    from sklearn.linear_model import LogisticRegression

    estimator = LogisticRegression(max_iter=1000).fit(x, label(x))
    skops.io.dump(estimator, path)
    return path


# ------------------------------------------------------------------------ the retraining pipeline


@step
def prepare(drift_report: str, dataset: OutputPath, seed: int = 0) -> None:
    """Label the rows the monitor captured (here by the known rule; in real life, join labels
    by request id) and split them into train and test sets."""
    import numpy as np

    report = json.loads(Path(drift_report).read_text())
    window = json.loads(Path(drift_report).with_name("window.json").read_text())
    x = np.asarray(window["rows"], dtype=float)
    print(f"retraining on {len(x)} rows captured for {report['model']}; drifted: {report['drifted']}")
    order = np.random.default_rng(seed).permutation(len(x))
    cut = int(len(x) * 0.7)
    dataset.mkdir()
    np.save(dataset / "train.npy", x[order[:cut]])
    np.save(dataset / "test.npy", x[order[cut:]])


@step
def train(dataset: InputPath, model: OutputPath) -> None:
    """Fit the model on the new data."""
    import numpy as np

    train_model(np.load(dataset / "train.npy"), model.with_suffix(".skops"))


@step(metrics=["accuracy"])
def evaluate(dataset: InputPath, model: InputPath) -> Metrics:
    """Accuracy on the held-out captured rows."""
    import numpy as np
    import skops.io

    estimator = skops.io.load(model, trusted=skops.io.get_untrusted_types(file=model))
    x = np.load(dataset / "test.npy")
    return {"accuracy": float(estimator.score(x, label(x)))}


@step
def release(dataset: InputPath, model: InputPath, target: str, endpoint: str) -> None:
    """Register the new version with its own baseline and roll it out by canary: 20 % of the
    traffic while probes check it for two seconds, then all of it."""
    import numpy as np

    client = mlshift.connect(target)
    x = np.load(dataset / "train.npy")
    version = client.models.register(MODEL, model, baseline=x, tags={"trigger": "drift"})
    client.endpoints.deploy(
        endpoint,
        f"{version.name}:{version.version}",
        rollout={
            "strategy": "canary",
            "percent": 20,
            "bake": "2s",
            "gate": {"min_requests": 10, "probe": {"payload": {"instances": x[:1].tolist()}, "rate": 20}},
        },
    )
    print(f"{version.name}:{version.version} rolled out to {endpoint}")
    client.close()


@pipeline
def retrain(
    drift_report: str = "", target: str = "local://", endpoint: str = ENDPOINT, threshold: float = 0.9
) -> None:
    """Retrain on the captured window; release only a model that passes the accuracy gate."""
    data = prepare(drift_report=drift_report)
    fit = train(dataset=data.outputs["dataset"])
    scores = evaluate(dataset=data.outputs["dataset"], model=fit.outputs["model"])
    with when(scores.metrics["accuracy"] >= threshold, name="quality-gate"):
        release(dataset=data.outputs["dataset"], model=fit.outputs["model"], target=target, endpoint=endpoint)


def monitor_spec(target: str) -> mlshift.MonitorSpec:
    """The monitor of this story: default statistics, retrain through the pipeline above."""
    return mlshift.MonitorSpec(
        name="churn-drift",
        endpoint=ENDPOINT,
        schedule="*/15 * * * *",
        min_rows=200,
        actions={
            "retrain": {
                "pipeline": f"{HERE}:retrain",
                "params": {"target": target, "endpoint": ENDPOINT},
            }
        },
    )


def send(client: mlshift.Client, rows: Any, batch: int = 1) -> None:
    """Send ``rows`` to the endpoint, ``batch`` rows per request."""
    for start in range(0, len(rows), batch):
        client.endpoints.predict(ENDPOINT, rows[start : start + batch].tolist())


def main(target: str | None = None, keep: bool = False, requests: int = 2000, batch: int = 1) -> list[str]:
    """Run the story; return one line per monitor run."""
    import tempfile
    import time
    from datetime import datetime, timezone

    from mlshift.monitoring import read_window

    client = mlshift.connect(target)
    lines = []
    try:
        with tempfile.TemporaryDirectory() as tmp:
            x_train = make_data(5000, seed=1)
            path = train_model(x_train, Path(tmp) / "churn.skops")
            version = client.models.register(MODEL, path, baseline=x_train)
            client.endpoints.deploy(
                ENDPOINT, f"{version.name}:{version.version}", capture={"sample_rate": 1.0}
            )
        spec = client.monitors.apply(monitor_spec(client.target))
        folder = client.adapter.endpoints.capture_dir(ENDPOINT)  # type: ignore[attr-defined]

        def captured() -> int:
            epoch = datetime(2000, 1, 1, tzinfo=timezone.utc)
            return len(read_window(folder, since=epoch, until=datetime.now(timezone.utc))[1])

        total = 0
        for phase, shift in (("like training", 0.0), ("x2 moved by 1 sd", 1.0)):
            send(client, make_data(requests, seed=10 + int(shift), shift=shift), batch)
            total += requests
            deadline = time.monotonic() + 60
            while captured() < total and time.monotonic() < deadline:
                time.sleep(0.05)
            run = client.monitors.run(spec)
            lines.append(f"{phase}: drifted={list(run.drifted)} retrain={run.retrain_run}")
            print(lines[-1])
            if run.retrain_run:
                finished = client.pipelines.get(run.retrain_run).wait()
                print(f"retraining {finished.id}: {finished.summary()}")
        print(f"report: {run.html_path}")
        print(f"endpoint {ENDPOINT} serves {client.endpoints.get(ENDPOINT).variants[0].model}")
        return lines
    finally:
        if not keep and ENDPOINT in {e.name for e in client.endpoints.list()}:
            client.endpoints.delete(ENDPOINT)
        client.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", default=None, help="target URI or mlshift.yaml name (default: local://)")
    parser.add_argument("--keep", action="store_true", help="leave the endpoint running")
    parser.add_argument("--requests", type=int, default=2000, help="requests per phase")
    args = parser.parse_args()
    main(args.target, keep=args.keep, requests=args.requests)
