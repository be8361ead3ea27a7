"""The mlshift model server, run in-process, answering the fake's scoring requests.

Each deployment of the fake gets the real model server app (``mlshift.serving``) loaded from
the model's files in the fake datastore, so ``predict`` against the fake returns real
predictions and a bad payload gets the server's real 400 answer. The apps run on one event
loop in a daemon thread (:class:`mlshift.serving.InProcessCaller`), so invoking works the same
from scripts, tests and notebooks.
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlshift.serving import InProcessCaller

__all__ = ["InProcessServer"]


class InProcessServer:
    """Model server apps by key, and one event loop to call them on."""

    def __init__(self) -> None:
        self._apps: dict[str, Any] = {}
        self._caller = InProcessCaller(name="mlshift-fake-azureml", server=("azureml", 5001))
        self._lock = threading.Lock()
        self.folder = Path(tempfile.mkdtemp(prefix="mlshift-fake-azureml-"))
        weakref.finalize(self, shutil.rmtree, self.folder, True)

    def app(self, key: str, build: Callable[[Path], Any]) -> Any:
        """The app for ``key``, built by ``build(folder)`` on first use."""
        with self._lock:
            found = self._apps.get(key)
            if found is None:
                folder = self.folder / key
                shutil.rmtree(folder, ignore_errors=True)
                folder.mkdir(parents=True)
                found = build(folder)
                self._apps[key] = found
            return found

    def call(self, app: Any, body: bytes, content_type: str) -> tuple[int, dict[str, str], bytes]:
        """Score ``body`` on ``app``: status, headers, body."""
        return self._caller.call(app, body, content_type, "application/json")

    def close(self) -> None:
        """Stop the loop and forget the apps (and their temporary folder)."""
        with self._lock:
            self._apps.clear()
        self._caller.close()
        shutil.rmtree(self.folder, ignore_errors=True)
