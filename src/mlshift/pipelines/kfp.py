"""Compile a pipeline to a Kubeflow Pipelines ``PipelineSpec`` (schema 2.1.0), without ``kfp``.

The spec runs on Vertex AI Pipelines and on a self-hosted Kubeflow Pipelines::

    from mlshift.pipelines import load_pipeline
    from mlshift.pipelines.kfp import compile_kfp

    spec = compile_kfp(load_pipeline("train.py:train_gate_deploy").ir,
                       image="europe-docker.pkg.dev/acme/ml/mlshift-serving:0.1.0",
                       target="vertex://acme/europe-west4")

``python``, ``register_model``, ``deploy`` and ``fail`` steps run ``python -m
mlshift.pipelines.kfp_step`` in ``image``; see ``docs/pipelines.md`` for the mapping.
"""

from __future__ import annotations

from mlshift.pipelines._kfp import (
    DEFAULT_IMAGE,
    SCHEMA_VERSION,
    SIZE_RESOURCES,
    STEP_MODULE,
    code_files,
    compile_kfp,
    to_yaml,
)

__all__ = [
    "DEFAULT_IMAGE",
    "SCHEMA_VERSION",
    "SIZE_RESOURCES",
    "STEP_MODULE",
    "code_files",
    "compile_kfp",
    "to_yaml",
]
