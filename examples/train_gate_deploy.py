"""mlshift pipeline example: prepare → train → evaluate → gate on accuracy → register → deploy.

Runs on the local target (no cloud account, no Docker), twice: the second run finds every
step unchanged and serves it from the cache.

    python examples/train_gate_deploy.py                 # state in ./.mlshift
    python examples/train_gate_deploy.py --keep          # leave the endpoint running

The same pipeline from the command line, with a parameter changed (only the steps downstream
of it run again) and with the model made worse on purpose (the gate stops it before anything
is registered or deployed):

    mlshift pipelines run examples/train_gate_deploy.py:train_gate_deploy -p c=0.5
    mlshift pipelines run examples/train_gate_deploy.py:train_gate_deploy -p label_noise=0.9
"""

from __future__ import annotations

import argparse

import mlshift
from mlshift.pipelines import (
    Deploy,
    Fail,
    InputPath,
    Metrics,
    OutputPath,
    RegisterModel,
    Resources,
    pipeline,
    step,
    when,
)

ENDPOINT = "iris-pipeline"


@step
def prepare(dataset: OutputPath, test_size: float = 0.3, seed: int = 7, label_noise: float = 0.0) -> None:
    """Split the iris data bundled with scikit-learn into train.csv and test.csv.

    ``label_noise`` replaces that share of the training labels with random ones: a way to
    train a bad model on purpose and watch the gate stop it.
    """
    import numpy as np
    from sklearn.datasets import load_iris
    from sklearn.model_selection import train_test_split

    x, y = load_iris(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(
        x, y, test_size=test_size, random_state=seed, stratify=y
    )
    if label_noise:
        rng = np.random.default_rng(seed)
        noisy = rng.random(len(y_train)) < label_noise
        y_train = np.where(noisy, rng.integers(0, 3, len(y_train)), y_train)
    dataset.mkdir()
    for name, xs, ys in (("train", x_train, y_train), ("test", x_test, y_test)):
        np.savetxt(dataset / f"{name}.csv", np.column_stack([xs, ys]), delimiter=",", fmt="%.6g")


@step(retries=1, timeout=600, resources=Resources(size="cpu-small"))
def train(dataset: InputPath, model: OutputPath, c: float = 1.0) -> None:
    """Fit a logistic regression and save it with skops (the suffix tells mlshift its format)."""
    import numpy as np
    import skops.io
    from sklearn.linear_model import LogisticRegression

    data = np.loadtxt(dataset / "train.csv", delimiter=",")
    estimator = LogisticRegression(C=c, max_iter=1000).fit(data[:, :4], data[:, 4].astype(int))
    skops.io.dump(estimator, model.with_suffix(".skops"))


@step(metrics=["accuracy"])
def evaluate(dataset: InputPath, model: InputPath) -> Metrics:
    """Accuracy on the held-out rows."""
    import numpy as np
    import skops.io

    # The file was written by our own train step a moment ago, so its types are trusted.
    estimator = skops.io.load(model, trusted=skops.io.get_untrusted_types(file=model))
    data = np.loadtxt(dataset / "test.csv", delimiter=",")
    return {"accuracy": float(estimator.score(data[:, :4], data[:, 4].astype(int)))}


@pipeline(schedule="0 3 * * *")
def train_gate_deploy(
    c: float = 1.0, label_noise: float = 0.0, threshold: float = 0.9, endpoint: str = ENDPOINT
) -> None:
    """Train an iris classifier; register and deploy it only if it is accurate enough."""
    data = prepare(label_noise=label_noise)
    fit = train(dataset=data.outputs["dataset"], c=c)
    scores = evaluate(dataset=data.outputs["dataset"], model=fit.outputs["model"])
    with when(scores.metrics["accuracy"] >= threshold, name="quality-gate") as gate:
        version = RegisterModel(fit.outputs["model"], model="iris", metrics=scores.metrics, alias="champion")
        Deploy(version.outputs["version"], endpoint=endpoint)
    with gate.otherwise():
        Fail("the model is not accurate enough; nothing was registered or deployed")


def main(target: str | None = None, keep: bool = False) -> list[str]:
    """Run the pipeline twice and ask the endpoint for a prediction; return both summaries."""
    client = mlshift.connect(target)
    print(f"target: {client.target}")
    summaries = []
    try:
        for attempt in ("first", "second"):
            run = client.pipelines.run(train_gate_deploy).wait()
            print(f"{attempt} run {run.id}: {run.summary()}")
            for s in run.steps:
                detail = s.message or (f"from run {s.cached_from}" if s.cached_from else "")
                print(f"  {s.name:<9} {s.status:<9} {detail}")
            if run.status != "succeeded":
                raise SystemExit(f"run {run.id} {run.status}: {run.message}")
            summaries.append(run.summary())
        version = run.step("register").outputs["version"]
        prediction = client.endpoints.predict(ENDPOINT, [[5.1, 3.5, 1.4, 0.2], [6.7, 3.0, 5.2, 2.3]])
        print(f"{version} on endpoint {ENDPOINT} predicts {prediction.predictions}")
        return summaries
    finally:
        if not keep and ENDPOINT in {e.name for e in client.endpoints.list()}:
            client.endpoints.delete(ENDPOINT)
            print(f"deleted endpoint {ENDPOINT}")
        client.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", default=None, help="target URI or mlshift.yaml name (default: local://)")
    parser.add_argument("--keep", action="store_true", help="leave the endpoint running")
    args = parser.parse_args()
    main(args.target, keep=args.keep)
