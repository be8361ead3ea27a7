"""The process one ``@step`` function runs in: ``python -m mlshift.pipelines._worker TASK.json``.

The runner writes the task (where the function lives, its arguments, where to put the
result) into the step's work folder and starts this module there, in a session of its own.
The function's return value goes to ``result.json``; an exception goes to ``error.json`` (type
and message, for the run's status) and its traceback to the step's log.

A step must never outlive its runner: the runner holds this process's stdin open, and when it
closes — the runner exited, or was killed with SIGKILL — this process kills its whole process
group, children included. So a resumed run never races a step left over from the dead one.

Only the standard library and mlshift's pydantic-free modules are imported before the step's
own module.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import threading
import traceback
from pathlib import Path
from typing import Any


def _die_with_parent() -> None:
    def watch() -> None:
        # The raw descriptor, not sys.stdin: a daemon thread blocked inside a buffered reader
        # makes the interpreter abort at exit ("could not acquire lock ... at shutdown").
        try:
            while os.read(0, 65536):
                pass
        except OSError:
            pass
        os.killpg(os.getpgrp(), signal.SIGKILL)

    threading.Thread(target=watch, name="mlshift-parent-watch", daemon=True).start()


def _plain(value: Any) -> Any:
    # numpy scalars (np.float32 from a metric, np.int64 from a count) carry .item().
    item = getattr(value, "item", None)
    if callable(item):
        return item()
    raise TypeError(
        f"a step returned {type(value).__name__}, which is not JSON (str, int, float, bool, dict)"
    )


def _write_json(path: Path, data: Any) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, default=_plain), encoding="utf-8")
    os.replace(tmp, path)


def main(argv: list[str]) -> int:
    """Run one step function described by the task file ``argv[0]``."""
    task_path = Path(argv[0])
    task = json.loads(task_path.read_text(encoding="utf-8"))
    if task.get("watch_parent", True):
        _die_with_parent()
    folder = task_path.parent
    try:
        from mlshift.pipelines._code import load_callable

        target = load_callable(task["code"])
        fn = getattr(target, "fn", target)  # a StepFunction wraps the plain function
        kwargs = dict(task["args"])
        for name in task["paths"]:
            kwargs[name] = Path(kwargs[name])
        result = fn(**kwargs)
        _write_json(folder / "result.json", {"value": result})
    except BaseException as exc:
        traceback.print_exc()
        sys.stderr.flush()
        message = str(exc) or repr(exc)
        _write_json(folder / "error.json", {"type": type(exc).__name__, "message": message[:2000]})
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
