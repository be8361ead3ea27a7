"""``FILE:PIPELINE`` → a :class:`~mlshift.pipelines.Pipeline`, for the command line."""

from __future__ import annotations

import importlib
from pathlib import Path

from mlshift.errors import ConfigError
from mlshift.pipelines._pipeline import Pipeline

__all__ = ["load_pipeline"]


def load_pipeline(ref: str) -> Pipeline:
    """Load a pipeline from ``path/to/file.py:NAME``, ``package.module:NAME``, or a file alone
    when it defines exactly one pipeline.

    A file is executed fresh from its source (under its stem as module name, with its folder
    on ``sys.path``), so that step processes import it the same way.

    Raises:
        ConfigError: the file or module cannot be loaded, or holds no such pipeline.
    """
    from mlshift.pipelines._code import load_module_file

    source, sep, attr = ref.rpartition(":")
    if not sep or not attr.isidentifier():
        source, attr = ref, ""
    path = Path(source)
    try:
        if source.endswith(".py") or path.exists():
            if not path.is_file():
                raise ConfigError(f"pipeline file {source!r} does not exist", field="pipeline")
            module = load_module_file(path, path.stem)
        else:
            module = importlib.import_module(source)
    except ConfigError:
        raise
    except Exception as exc:
        raise ConfigError(
            f"cannot load {source!r}: {type(exc).__name__}: {exc}",
            field="pipeline",
            hint="run the file with python to see the full traceback",
        ) from None
    found = {k: v for k, v in vars(module).items() if isinstance(v, Pipeline)}
    if not attr:
        if len(found) != 1:
            names = ", ".join(sorted(found)) or "none"
            raise ConfigError(
                f"{source!r} defines {len(found)} pipelines ({names}); name one as FILE:PIPELINE",
                field="pipeline",
            )
        return next(iter(found.values()))
    value = getattr(module, attr, None)
    if not isinstance(value, Pipeline):
        by_name = [p for p in found.values() if p.name == attr]
        if len(by_name) == 1:
            return by_name[0]
        names = ", ".join(sorted(found)) or "none"
        what = "nothing" if value is None else f"a {type(value).__name__}"
        raise ConfigError(
            f"{source}:{attr} is {what}, not a pipeline (pipelines there: {names})", field="pipeline"
        )
    return value
