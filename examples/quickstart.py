"""mlshift quickstart: train, register, deploy, predict, canary a second version at 20%.

Runs on the local target by default (no cloud account, no Docker):

    python examples/quickstart.py                  # state in ./.mlshift
    python examples/quickstart.py --target memory://
    python examples/quickstart.py --target local+docker://   # replicas in containers (mlshift[docker])

The same code runs against any other target by changing only --target.
"""

from __future__ import annotations

import argparse
import tempfile
from collections import Counter
from pathlib import Path

import mlshift


def train(folder: Path) -> tuple[Path, float, Path, float, list[list[float]]]:
    """Two iris classifiers, saved with skops: a logistic regression and a small tree."""
    import skops.io
    from sklearn.datasets import load_iris
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import train_test_split
    from sklearn.tree import DecisionTreeClassifier

    x, y = load_iris(return_X_y=True)
    x_train, x_test, y_train, y_test = train_test_split(x, y, test_size=0.3, random_state=7)
    first = LogisticRegression(max_iter=500).fit(x_train, y_train)
    second = DecisionTreeClassifier(max_depth=3, random_state=7).fit(x_train, y_train)
    v1, v2 = folder / "iris-logreg.skops", folder / "iris-tree.skops"
    skops.io.dump(first, v1)
    skops.io.dump(second, v2)
    return v1, first.score(x_test, y_test), v2, second.score(x_test, y_test), x_test[:3].tolist()


def main(target: str | None = None, endpoint: str = "iris-quickstart", requests: int = 500) -> dict[str, int]:
    """Run the whole tour and return the observed traffic split (variant -> requests)."""
    client = mlshift.connect(target)
    print(f"target: {client.target}")
    if endpoint in {e.name for e in client.endpoints.list()}:
        client.endpoints.delete(endpoint)  # left over from an interrupted run

    with tempfile.TemporaryDirectory() as tmp:
        v1_path, v1_acc, v2_path, v2_acc, rows = train(Path(tmp))

        # 1. Register the first model; its signature (4 float inputs) is inferred.
        v1 = client.models.register("iris", v1_path, framework="sklearn", metrics={"accuracy": v1_acc})
        print(f"registered iris:{v1.version}  accuracy={v1_acc:.3f}  {v1.digest[:19]}…")
        try:
            # 2. Deploy it: a model server behind a router on 127.0.0.1.
            state = client.endpoints.deploy(endpoint, f"iris:{v1.version}")
            print(f"endpoint {endpoint} is {state.status} at {state.url}")

            # 3. Predict.
            result = client.endpoints.predict(endpoint, rows)
            print(f"predictions {result.predictions} (served by {result.variant})")

            # 4. Register a second version and send it 20% of the traffic.
            v2 = client.models.register("iris", v2_path, framework="sklearn", metrics={"accuracy": v2_acc})
            print(f"registered iris:{v2.version}  accuracy={v2_acc:.3f}")
            state = client.endpoints.deploy(endpoint, f"iris:{v2.version}", traffic=20)
            for v in state.variants:
                print(f"  variant {v.name:<10} {v.model:<8} weight {v.weight:>3}%  {v.status}")

            # 5. Watch the split: every response names the variant that served it.
            seen = Counter(
                client.endpoints.predict(endpoint, rows[:1]).variant or "?" for _ in range(requests)
            )
            print(f"split over {requests} requests:")
            for name, count in sorted(seen.items()):
                print(f"  {name:<10} {count:>4}  ({100 * count / requests:.1f}%)")
            return dict(seen)
        finally:
            # 6. Clean up: stops the router and model servers.
            if endpoint in {e.name for e in client.endpoints.list()}:
                client.endpoints.delete(endpoint)
                print(f"deleted endpoint {endpoint}")
            client.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--target", default=None, help="target URI or mlshift.yaml name (default: local://)")
    parser.add_argument("--requests", type=int, default=500, help="requests sent to show the split")
    args = parser.parse_args()
    main(args.target, requests=args.requests)
