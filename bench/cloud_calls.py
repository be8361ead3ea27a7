"""Control-plane calls of a first deploy and of an unchanged re-apply, counted as HTTP requests.

The ``mlshift.yaml`` of bench/reapply.py (one model, one endpoint) is applied to each cloud's
testing kit, then applied again unchanged ``repeat`` times. Each kit records every HTTP request
the provider's own SDK sent (each retry is its own request):

- ``sagemaker://``: boto3 on moto, through the kit's botocore ``before-send`` handler
  (``FakeSageMaker.calls``);
- ``azureml://``: ``azure-ai-ml``, ``azure-storage-blob`` and ``azure-mgmt-monitor`` through the
  kit's transport (``FakeAzureML.calls``);
- ``vertex://``: the Google REST clients against the kit's loopback server (``FakeVertex.calls``).

Requests are split into control plane (the provider's management API and its metrics) and
storage (S3, Blob, GCS), and counted as mutating by each kit's own rule. The goal for an
unchanged re-apply is 0 mutating requests and 0 bytes uploaded. A cloud whose SDK or kit is not
installed is reported as not measured.
"""

from __future__ import annotations

import contextlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from reapply import PROJECT


def _sagemaker_kind(call: Any) -> str:
    return {"s3": "storage", "sagemaker-runtime": "data"}.get(call.service, "control")


def _azureml_kind(call: Any) -> str:
    return {"blob": "storage", "score": "data"}.get(call.service, "control")


def _vertex_kind(call: Any) -> str:
    if call.path.startswith(("/storage/", "/upload/storage/", "/download/storage/")):
        return "storage"
    return "data" if call.path.endswith((":predict", ":rawPredict")) else "control"


def _uploaded(call: Any) -> int:
    # SageMaker's and Vertex's kits count object bytes; Azure's, request bodies sent to blobs.
    if hasattr(call, "uploaded"):
        return int(call.uploaded)
    if getattr(call, "service", "") == "blob":
        return int(call.bytes_sent) if call.method == "PUT" else 0
    return int(getattr(call, "bytes_sent", 0))


#: label → (kit module, kit class, target URI, request classifier)
KITS: dict[str, tuple[str, str, str, Callable[[Any], str]]] = {
    "sagemaker://": ("mlshift_sagemaker.testing", "FakeSageMaker", "sagemaker://us-east-1", _sagemaker_kind),
    "azureml://": (
        "mlshift_azureml.testing",
        "FakeAzureML",
        "azureml://sub/bench-rg/bench-ws",
        _azureml_kind,
    ),
    "vertex://": ("mlshift_vertex.testing", "FakeVertex", "vertex://bench-project/us-central1", _vertex_kind),
}


def count(calls: list[Any], kind: Callable[[Any], str]) -> dict[str, Any]:
    """Requests, by plane, mutating ones and uploaded bytes, of one apply."""
    kinds = [kind(c) for c in calls]
    mutating = [c for c, k in zip(calls, kinds, strict=True) if k != "data" and c.mutating]
    return {
        "requests": len(calls),
        "control_plane": kinds.count("control"),
        "storage": kinds.count("storage"),
        "mutating": len(mutating),
        "mutating_control_plane": sum(1 for c in mutating if kind(c) == "control"),
        "bytes_uploaded": sum(_uploaded(c) for c in calls),
    }


def _one_cloud(module: str, cls: str, target: str, kind: Callable[[Any], str], repeat: int) -> dict[str, Any]:
    import importlib

    try:
        kit = getattr(importlib.import_module(module), cls)
    except ImportError as exc:
        return {"status": f"not measured: {exc}"}
    from serving import make_workload

    import mlshift
    from mlshift._config import load_project

    with tempfile.TemporaryDirectory(prefix="mlshift-bench-cloud-") as tmp, kit() as fake:
        folder = Path(tmp)
        make_workload(folder)  # model.skops next to mlshift.yaml
        project_file = folder / "mlshift.yaml"
        project_file.write_text(PROJECT)
        project = load_project(project_file)
        with mlshift.connect(target, project_file=project_file) as client:

            def apply() -> dict[str, Any]:
                mark = len(fake.calls)
                start = time.perf_counter()
                plan = client.plan(project)
                client.apply(plan)
                row = count(list(fake.calls[mark:]), kind)
                row["plan_changes"] = plan.changes
                row["seconds"] = round(time.perf_counter() - start, 3)
                return row

            first = apply()
            again = [apply() for _ in range(repeat)]
            with contextlib.suppress(Exception):
                client.endpoints.delete("bench")
    worst = {key: max(r[key] for r in again) for key in again[0] if key != "seconds"}
    worst["runs"] = len(again)
    return {"status": "measured", "target": target, "first_deploy": first, "reapply": worst}


def bench_cloud_calls(repeat: int) -> dict[str, Any]:
    """First deploy and unchanged re-apply on each cloud's testing kit, in HTTP requests."""
    out: dict[str, Any] = {}
    for label, (module, cls, target, kind) in KITS.items():
        print(f"  cloud calls: {label}", flush=True)
        out[label] = _one_cloud(module, cls, target, kind, repeat)
    return out
