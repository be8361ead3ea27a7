"""Where monitoring keeps its files on a target: baselines, monitors, their state and runs.

On the local target everything is under ``<state>/monitoring/``::

    baselines/<model>/<version>.json      a VersionBaseline (inputs and predictions)
    monitors/<name>.json                  a saved MonitorSpec
    state/<name>.json                     the last window judged, the open drift episode, the last tick
    runs/<name>/<run id>/report.json      a MonitorRun, with its drift report
    runs/<name>/<run id>/report.html      the same as a self-contained page
    runs/<name>/<run id>/window.json      the captured rows it judged (for retraining)
    labels/<endpoint>/<time>-<id>.jsonl   ground truth posted by request id, one file per post

Captured requests are under ``<state>/capture/<endpoint>/`` (see ``mlshift.serving._capture``).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from mlshift.errors import NotFound, UnsupportedOperation
from mlshift.monitoring._baseline import Baseline
from mlshift.specs.monitor import MonitorSpec

__all__ = ["MonitorStore", "VersionBaseline", "store_for"]


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


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


class MonitorStore:
    """Monitoring files in one folder (``<state>/monitoring`` on the local target)."""

    def __init__(self, root: Path, capture_root: Path) -> None:
        self.root = root
        self.capture_root = capture_root

    def capture_dir(self, endpoint: str) -> Path:
        """The capture folder of ``endpoint``."""
        return self.capture_root / endpoint

    # -------------------------------------------------------------------- baselines

    def save_baseline(self, model: str, version: str, baseline: VersionBaseline) -> Path:
        """Keep ``baseline`` with ``model:version``."""
        path = self.root / "baselines" / model / f"{version}.json"
        _write(path, baseline.model_dump_json())
        return path

    def baseline(self, model: str, version: str) -> VersionBaseline | None:
        """The baseline of ``model:version`` (``None``: it was registered without one)."""
        path = self.root / "baselines" / model / f"{version}.json"
        if not path.is_file():
            return None
        return VersionBaseline.model_validate_json(path.read_text())

    # -------------------------------------------------------------------- monitors

    def save_monitor(self, spec: MonitorSpec) -> None:
        """Save (or replace) a monitor."""
        _write(self.root / "monitors" / f"{spec.name}.json", spec.model_dump_json())

    def monitors(self) -> list[MonitorSpec]:
        """Every saved monitor, by name."""
        folder = self.root / "monitors"
        if not folder.is_dir():
            return []
        return [MonitorSpec.model_validate_json(p.read_text()) for p in sorted(folder.glob("*.json"))]

    def monitor(self, name: str) -> MonitorSpec:
        """A saved monitor.

        Raises:
            NotFound: naming the monitors there are.
        """
        path = self.root / "monitors" / f"{name}.json"
        if not path.is_file():
            known = ", ".join(m.name for m in self.monitors()) or "none saved yet"
            raise NotFound(
                f"monitor {name!r} does not exist (monitors: {known})",
                hint="save one with `mlshift monitors apply` or client.monitors.apply(spec)",
            )
        return MonitorSpec.model_validate_json(path.read_text())

    def delete_monitor(self, name: str) -> None:
        """Forget a monitor, its state and its runs' files."""
        import shutil

        self.monitor(name)
        (self.root / "monitors" / f"{name}.json").unlink(missing_ok=True)
        (self.root / "state" / f"{name}.json").unlink(missing_ok=True)
        shutil.rmtree(self.root / "runs" / name, ignore_errors=True)

    # -------------------------------------------------------------------- labels

    def save_labels(self, endpoint: str, labels: dict[str, Any]) -> Path:
        """Keep ground-truth ``labels`` (by request id) posted for ``endpoint``; a later post
        of the same id replaces its label."""
        import uuid
        from datetime import datetime, timezone

        stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
        path = self.root / "labels" / endpoint / f"{stamp}-{uuid.uuid4().hex[:6]}.jsonl"
        lines = (json.dumps({"request_id": k, "label": v}) for k, v in labels.items())
        _write(path, "\n".join(lines) + "\n")
        return path

    def labels(self, endpoint: str) -> dict[str, Any]:
        """Every label posted for ``endpoint``, by request id (the latest post wins)."""
        folder = self.root / "labels" / endpoint
        out: dict[str, Any] = {}
        if not folder.is_dir():
            return out
        for path in sorted(folder.glob("*.jsonl")):
            for line in path.read_text().splitlines():
                try:
                    record = json.loads(line)
                    out[str(record["request_id"])] = record["label"]
                except (ValueError, KeyError, TypeError):
                    continue
        return out

    # -------------------------------------------------------------------- state and runs

    def state(self, name: str) -> dict[str, Any]:
        """A monitor's state (empty before its first run)."""
        path = self.root / "state" / f"{name}.json"
        return json.loads(path.read_text()) if path.is_file() else {}

    def save_state(self, name: str, state: dict[str, Any]) -> None:
        """Replace a monitor's state atomically."""
        _write(self.root / "state" / f"{name}.json", json.dumps(state, sort_keys=True))

    def run_dir(self, name: str, run_id: str) -> Path:
        """The folder of one run's files."""
        return self.root / "runs" / name / run_id

    def run_ids(self, name: str) -> list[str]:
        """Run ids of a monitor, oldest first (ids sort by time)."""
        folder = self.root / "runs" / name
        if not folder.is_dir():
            return []
        return sorted(p.name for p in folder.iterdir() if (p / "report.json").is_file())


def store_for(adapter: Any) -> MonitorStore:
    """The monitoring store of a target.

    Raises:
        UnsupportedOperation: a target that keeps no monitoring files yet (only the local
            target does so far).
    """
    root = getattr(adapter, "root", None)
    endpoints = getattr(adapter, "endpoints", None)
    if not isinstance(root, Path) or not hasattr(endpoints, "capture_dir"):
        raise UnsupportedOperation(
            f"baselines and monitors are kept on local targets so far; {adapter.uri.raw} has no "
            "monitoring store",
            hint="register and monitor on local:// (cloud capture readers come with their adapters)",
        )
    return MonitorStore(root / "monitoring", root / "capture")
