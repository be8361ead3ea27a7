"""Save the benchmark's model as an MLflow model (runs in the mlflow venv, not mlshift's).

    python bench/servers/mlflow_model.py MODEL.skops OUT_DIR

Loads the very estimator the mlshift server serves (the same .skops file) and writes it with
``mlflow.sklearn.save_model``, with a signature inferred from the feature names, so that
``mlflow models serve`` enforces the same schema mlshift checks.
"""

from __future__ import annotations

import sys


def main(skops_path: str, out_dir: str) -> int:
    import mlflow.sklearn
    import numpy as np
    import pandas as pd
    import skops.io as sio
    from mlflow.models import infer_signature

    model = sio.load(skops_path, trusted=sio.get_untrusted_types(file=skops_path))
    names = getattr(model, "feature_names_in_", None)
    columns = [str(n) for n in names] if names is not None else [f"f{i}" for i in range(model.n_features_in_)]
    example = pd.DataFrame(np.zeros((2, len(columns))), columns=columns)
    signature = infer_signature(example, model.predict(example))
    mlflow.sklearn.save_model(model, out_dir, signature=signature)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
