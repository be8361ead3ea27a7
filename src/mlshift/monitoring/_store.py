"""Where monitoring keeps its documents on a target: baselines, monitors, their state and runs.

A target keeps them through :class:`~mlshift.adapter.MonitoringStorage`: an object store whose
keys are relative to monitoring's own folder or prefix, so every machine that connects to the
target sees the same baselines and monitors::

    baselines/<model>/<version>.json      a VersionBaseline (inputs and predictions)
    monitors/<name>.json                  a saved MonitorSpec
    state/<name>.json                     the last window judged, the open drift episode, the last tick
    runs/<name>/<run id>/report.json      a MonitorRun, with its drift report
    runs/<name>/<run id>/report.html      the same as a self-contained page
    runs/<name>/<run id>/window.json      the captured rows it judged (for retraining)
    labels/<endpoint>/<time>-<id>.jsonl   ground truth posted by request id, one file per post

On the local target that is ``<state>/monitoring/``; on SageMaker ``s3://BUCKET/PREFIX/monitoring/``.
Captured requests are read through the target's :class:`~mlshift.adapter.CaptureReader`.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict

from mlshift.errors import NotFound, UnsupportedOperation
from mlshift.monitoring._baseline import Baseline
from mlshift.specs.monitor import MonitorSpec

if TYPE_CHECKING:
    from mlshift.adapter import CaptureReader
    from mlshift.storage import ObjectStore

__all__ = ["MonitorStore", "VersionBaseline", "capture_reader", "store_for"]


class VersionBaseline(BaseModel):
    """What a model version was trained on, kept with the version.

    Attributes:
        inputs: Per-feature statistics of the training features.
        predictions: Statistics of the version's own predictions on them, under the feature
            name ``prediction`` (``None`` when they could not be computed).
        quality: The version's model quality metrics on them, when their labels were given
            (the references of ``model_quality.max_drop``).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    inputs: Baseline
    predictions: Baseline | None = None
    quality: dict[str, float] | None = None


class MonitorStore:
    """Monitoring's documents in a target's object store.

    Args:
        objects: The store, keys relative to monitoring's folder or prefix.
        uri: Where a key is, for people and pipelines (a local path or an ``s3://`` URI).
    """

    def __init__(self, objects: ObjectStore, uri: Callable[[str], str]) -> None:
        self.objects = objects
        self._uri = uri

    def _read(self, key: str) -> str | None:
        found = self.objects.get(key)
        return None if found is None else found.data.decode()

    # -------------------------------------------------------------------- baselines

    def save_baseline(self, model: str, version: str, baseline: VersionBaseline) -> str:
        """Keep ``baseline`` with ``model:version``; returns where it is."""
        key = f"baselines/{model}/{version}.json"
        self.objects.put(key, baseline.model_dump_json().encode())
        return self._uri(key)

    def baseline(self, model: str, version: str) -> VersionBaseline | None:
        """The baseline of ``model:version`` (``None``: it was registered without one)."""
        text = self._read(f"baselines/{model}/{version}.json")
        return None if text is None else VersionBaseline.model_validate_json(text)

    # -------------------------------------------------------------------- monitors

    def save_monitor(self, spec: MonitorSpec) -> None:
        """Save (or replace) a monitor."""
        self.objects.put(f"monitors/{spec.name}.json", spec.model_dump_json().encode())

    def monitors(self) -> list[MonitorSpec]:
        """Every saved monitor, by name."""
        out = []
        for key in self.objects.list("monitors/"):
            text = self._read(key)
            if key.endswith(".json") and "/" not in key[len("monitors/") :] and text is not None:
                out.append(MonitorSpec.model_validate_json(text))
        return sorted(out, key=lambda m: m.name)

    def monitor(self, name: str) -> MonitorSpec:
        """A saved monitor.

        Raises:
            NotFound: naming the monitors there are.
        """
        text = self._read(f"monitors/{name}.json")
        if text is None:
            known = ", ".join(m.name for m in self.monitors()) or "none saved yet"
            raise NotFound(
                f"monitor {name!r} does not exist (monitors: {known})",
                hint="save one with `mlshift monitors apply` or client.monitors.apply(spec)",
            )
        return MonitorSpec.model_validate_json(text)

    def delete_monitor(self, name: str) -> None:
        """Forget a monitor, its state and its runs' files."""
        self.monitor(name)
        runs = self.objects.list(f"runs/{name}/")
        self.objects.delete([f"monitors/{name}.json", f"state/{name}.json", *runs])

    # -------------------------------------------------------------------- labels

    def save_labels(self, endpoint: str, labels: dict[str, Any]) -> str:
        """Keep ground-truth ``labels`` (by request id) posted for ``endpoint``; a later post
        of the same id replaces its label. Returns where they are."""
        import uuid
        from datetime import datetime, timezone

        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        key = f"labels/{endpoint}/{stamp}-{uuid.uuid4().hex[:6]}.jsonl"
        lines = (json.dumps({"request_id": k, "label": v}) for k, v in labels.items())
        self.objects.put(key, ("\n".join(lines) + "\n").encode())
        return self._uri(key)

    def labels(self, endpoint: str) -> dict[str, Any]:
        """Every label posted for ``endpoint``, by request id (the latest post wins)."""
        out: dict[str, Any] = {}
        for key in sorted(self.objects.list(f"labels/{endpoint}/")):
            text = self._read(key) if key.endswith(".jsonl") else None
            for line in (text or "").splitlines():
                try:
                    record = json.loads(line)
                    out[str(record["request_id"])] = record["label"]
                except (ValueError, KeyError, TypeError):
                    continue
        return out

    # -------------------------------------------------------------------- state and runs

    def state(self, name: str) -> dict[str, Any]:
        """A monitor's state (empty before its first run)."""
        text = self._read(f"state/{name}.json")
        return json.loads(text) if text is not None else {}

    def save_state(self, name: str, state: dict[str, Any]) -> None:
        """Replace a monitor's state (one object written whole: readers see old or new)."""
        self.objects.put(f"state/{name}.json", json.dumps(state, sort_keys=True).encode())

    def run_uri(self, name: str, run_id: str, filename: str) -> str:
        """Where one file of a run is (``report.json``, ``report.html``, ``window.json``)."""
        return self._uri(f"runs/{name}/{run_id}/{filename}")

    def put_run_file(self, name: str, run_id: str, filename: str, text: str) -> None:
        """Write one file of a run."""
        self.objects.put(f"runs/{name}/{run_id}/{filename}", text.encode())

    def run_file(self, name: str, run_id: str, filename: str) -> str | None:
        """One file of a run (``None``: it does not exist)."""
        return self._read(f"runs/{name}/{run_id}/{filename}")

    def run_ids(self, name: str) -> list[str]:
        """Run ids of a monitor, oldest first (ids sort by time)."""
        prefix = f"runs/{name}/"
        ids = {
            key[len(prefix) :].split("/", 1)[0]
            for key in self.objects.list(prefix)
            if key.endswith("/report.json")
        }
        return sorted(ids)


def store_for(adapter: Any) -> MonitorStore:
    """The monitoring store of a target.

    Raises:
        UnsupportedOperation: a target that keeps no monitoring documents (no
            :class:`~mlshift.adapter.MonitoringStorage`), naming the targets that do.
    """
    from mlshift._registry import targets_with
    from mlshift.adapter import Capability, MonitoringStorage

    if not isinstance(adapter, MonitoringStorage):
        others = ", ".join(targets_with(Capability.CAPTURE)) or "none installed"
        raise UnsupportedOperation(
            f"{adapter.uri.raw} keeps no baselines or monitors (its adapter offers no monitoring "
            f"storage); targets that capture traffic keep them: {others}",
            hint="register with a baseline and monitor on a target that keeps them",
        )
    return MonitorStore(adapter.monitoring_store(), adapter.monitoring_uri)


def capture_reader(adapter: Any) -> CaptureReader:
    """What reads back the traffic a target's endpoints captured.

    Raises:
        UnsupportedOperation: a target without ``CAPTURE``, or whose endpoints cannot read what
            they captured, naming the targets that can.
    """
    from mlshift._registry import targets_with
    from mlshift.adapter import Capability, CaptureReader

    endpoints = adapter.endpoints
    if Capability.CAPTURE not in adapter.capabilities or not isinstance(endpoints, CaptureReader):
        others = ", ".join(targets_with(Capability.CAPTURE)) or "none installed"
        raise UnsupportedOperation(
            f"{adapter.uri.raw} does not capture endpoint traffic (no CAPTURE), so there is nothing "
            f"to monitor there; targets that do: {others}",
            hint="monitor an endpoint on a target that captures",
        )
    return endpoints
