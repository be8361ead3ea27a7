"""Inside the serving image: which model, port and address each cloud's environment names.

=================  ==========================================  ==================================
platform           model                                       port
=================  ==========================================  ==================================
SageMaker          ``/opt/ml/model`` (the default)             8080 (``SAGEMAKER_BIND_TO_PORT``)
Vertex AI          ``AIP_STORAGE_URI`` when it is a local path  ``AIP_HTTP_PORT``
Azure ML           ``AZUREML_MODEL_DIR``                       ``MLSHIFT_PORT``, else 8080
local+docker://    ``MLSHIFT_ARTIFACT``                        8080
=================  ==========================================  ==================================

``MLSHIFT_ARTIFACT`` and ``MLSHIFT_PORT`` win over everything else. Routes come from the
server itself (``AIP_HEALTH_ROUTE``/``AIP_PREDICT_ROUTE`` for Vertex AI,
``MLSHIFT_AZURE_SCORE_ROUTE`` for Azure ML's scoring route).
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlshift.errors import ConfigError

__all__ = [
    "SAGEMAKER_MODEL_DIR",
    "SKLEARN_ESTIMATORS",
    "listed_estimators",
    "model_path",
    "serve",
    "serve_arguments",
]

#: Where SageMaker puts the model; the default everywhere.
SAGEMAKER_MODEL_DIR = "/opt/ml/model"
#: scikit-learn's estimators as ``sklearn.utils.all_estimators()`` listed them when the image
#: was built (see the Dockerfile): ``{"sklearn": VERSION, "estimators": [[name, module, class]]}``.
SKLEARN_ESTIMATORS = "/opt/mlshift/sklearn-estimators.json"
_MODEL_SUFFIXES = frozenset({".skops", ".joblib", ".pkl", ".onnx"})


def model_path(environ: Mapping[str, str] | None = None) -> str:
    """The artifact to serve, from the platform's environment (see the module's table).

    A folder without ``predictor.py`` that holds exactly one model file (``.skops``, ``.joblib``,
    ``.pkl``, ``.onnx``, up to two levels down) stands for that file: platforms mount folders.

    Raises:
        ConfigError: ``AIP_STORAGE_URI`` is a ``gs://`` URI (this image does not download models).
    """
    env = os.environ if environ is None else environ
    chosen = env.get("MLSHIFT_ARTIFACT") or env.get("AZUREML_MODEL_DIR")
    if not chosen and env.get("AIP_STORAGE_URI"):
        uri = env["AIP_STORAGE_URI"]
        if uri.startswith("gs://"):
            raise ConfigError(
                f"AIP_STORAGE_URI={uri!r}: the serving image does not download models from Cloud Storage",
                field="AIP_STORAGE_URI",
                hint="deploy through mlshift's Vertex AI target, or set MLSHIFT_ARTIFACT to a mounted path",
            )
        chosen = uri.removeprefix("file://")
    path = Path(chosen or SAGEMAKER_MODEL_DIR)
    if path.is_dir() and not (path / "predictor.py").is_file():
        found = [
            p
            for pattern in ("*", "*/*")
            for p in path.glob(pattern)
            if p.is_file() and p.suffix.lower() in _MODEL_SUFFIXES
        ]
        if len(found) == 1:
            return str(found[0])
    return str(path)


def serve_arguments(environ: Mapping[str, str] | None = None) -> list[str]:
    """``python -m mlshift.serving`` arguments for the platform this container runs on.

    The server listens on ``MLSHIFT_SERVE_HOST`` (the image sets ``0.0.0.0``: the platform
    reaches the container from outside; anywhere else it defaults to 127.0.0.1). The model is
    described by optional ``MLSHIFT_FRAMEWORK``, ``MLSHIFT_MODEL_DIGEST``, ``MLSHIFT_SIGNATURE``,
    ``MLSHIFT_VARIANT`` and ``MLSHIFT_MODEL_REF`` variables.

    Raises:
        ConfigError: see :func:`model_path`.
    """
    env = os.environ if environ is None else environ
    args = ["--artifact", model_path(env), "--host", env.get("MLSHIFT_SERVE_HOST") or "127.0.0.1"]
    # AIP_HTTP_PORT is read by the server itself when the port is left at its default.
    port = env.get("MLSHIFT_PORT") or env.get("SAGEMAKER_BIND_TO_PORT")
    if port:
        args += ["--port", port]
    for variable, option in (
        ("MLSHIFT_FRAMEWORK", "--framework"),
        ("MLSHIFT_MODEL_DIGEST", "--digest"),
        ("MLSHIFT_SIGNATURE", "--signature-json"),
        ("MLSHIFT_VARIANT", "--variant"),
        ("MLSHIFT_MODEL_REF", "--model-ref"),
    ):
        if env.get(variable):
            args += [option, env[variable]]
    return args


def listed_estimators(path: str | Path = SKLEARN_ESTIMATORS) -> bool:
    """Import ``skops.io`` with scikit-learn's estimators taken from the list made at build.

    skops builds its trusted-type list when it is imported, from
    ``sklearn.utils.all_estimators()``, which imports every scikit-learn module: about 10% of a
    container's cold start, measured end to end. Only the estimators' names are used
    (``module.Class``), so while ``skops.io`` is imported ``all_estimators()`` answers from the
    list with stand-ins carrying those names; the trusted set is the same. The real function
    is put back afterwards.

    Returns:
        ``True`` if the list was used; ``False`` (nothing done) when there is no list, it is
        unreadable, or it was made for another scikit-learn version.
    """
    try:
        listed = json.loads(Path(path).read_text(encoding="utf-8"))
        version, estimators = (
            listed["sklearn"],
            [(str(n), str(m), str(c)) for n, m, c in listed["estimators"]],
        )
    except (OSError, ValueError, KeyError, TypeError):
        return False
    import sklearn
    import sklearn.utils

    if sklearn.__version__ != version:
        return False
    real = sklearn.utils.all_estimators
    stand_ins = [(name, type(cls, (), {"__module__": module})) for name, module, cls in estimators]

    def all_estimators(type_filter: Any = None) -> list[tuple[str, type]]:
        return list(stand_ins) if type_filter is None else list(real(type_filter))

    sklearn.utils.all_estimators = all_estimators
    try:
        import skops.io  # noqa: F401  (its trusted types are computed now, from the list)
    finally:
        sklearn.utils.all_estimators = real
    return True


def serve(environ: Mapping[str, str] | None = None) -> int:
    """The image's ``serve`` command: the model server for the model and port the platform's
    environment names (:func:`serve_arguments`); returns its exit code.

    A container's cold start is mostly imports (scikit-learn and scipy alone are most of it),
    so they are done first, with the cyclic garbage collector off: importing allocates a
    great many objects and never frees them, and the collections that this would trigger
    (on a CPU-limited replica, ~15% of the import time) find nothing to free. The collector
    is on again before the model is loaded and served.

    Raises:
        ConfigError: see :func:`model_path`.
    """
    arguments = serve_arguments(environ)
    gc.disable()
    try:
        artifact = arguments[1].lower()
        # A framework missing from the image is the server's to report, as one clear line.
        with contextlib.suppress(ImportError):
            if artifact.endswith(".skops"):
                listed_estimators()  # also imports scikit-learn; see its docstring
            elif artifact.endswith((".joblib", ".pkl")):
                import sklearn  # noqa: F401
        import mlshift.serving._server  # noqa: F401  (uvicorn, starlette, the app)
        from mlshift.serving.__main__ import main
    finally:
        gc.enable()
    return main(arguments)
