"""The universal model server: one process that answers every cloud's container contract.

>>> from pathlib import Path
>>> from mlshift.serving import load_model, create_app
>>> model = load_model(Path("iris.skops"), "sklearn")          # doctest: +SKIP
>>> model.predict([[5.1, 3.5, 1.4, 0.2]])                       # doctest: +SKIP
[0]
>>> app = create_app(model, model_ref="iris:3")                  # doctest: +SKIP

From a shell: ``python -m mlshift.serving --artifact iris.skops --port 8080`` (or
``mlshift serve iris.skops``). See ``docs/serving.md`` for routes and payloads.

Importing this package imports neither scikit-learn, onnxruntime nor numpy: each framework's
library is imported when a model of that framework is loaded.
"""

from __future__ import annotations

from mlshift.serving._app import Limits, create_app
from mlshift.serving._inprocess import InProcessCaller
from mlshift.serving._loaders import (
    LoadedModel,
    Predictor,
    detect_framework,
    infer_signature,
    load_model,
)
from mlshift.serving._server import serve

__all__ = [
    "InProcessCaller",
    "Limits",
    "LoadedModel",
    "Predictor",
    "create_app",
    "detect_framework",
    "infer_signature",
    "load_model",
    "serve",
]
