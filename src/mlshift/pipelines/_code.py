"""Where a step's code lives, what it digests to, and how a fresh process imports it again.

A ``@step`` function runs in a subprocess, so the runner records how to import it (the module
file, the module name, the qualified name) instead of pickling it. Its *code digest* covers its
own source and the source of the module-level functions it calls from the same module, so
editing a helper invalidates the cache of the steps that use it, and nothing else.

Only the standard library is imported here: the step worker imports this module.
"""

from __future__ import annotations

import hashlib
import importlib
import inspect
import sys
import textwrap
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from mlshift.errors import ConfigError

__all__ = ["CodeLocation", "code_digest", "load_callable", "load_module_file", "locate"]

#: The name a script run as ``__main__`` gets when a step process imports it again: its
#: ``if __name__ == "__main__":`` block must not run a second time.
MAIN_ALIAS = "__mlshift_main__"


class CodeLocation:
    """How to import a function in another process.

    Attributes:
        module: The module's ``__name__`` (``__main__`` for a script).
        file: The absolute path of the module's source file.
        qualname: The function's qualified name inside the module.
        root: The folder to put on ``sys.path`` so the module's own imports resolve.
    """

    __slots__ = ("file", "module", "qualname", "root")

    def __init__(self, module: str, file: str, qualname: str, root: str) -> None:
        self.module = module
        self.file = file
        self.qualname = qualname
        self.root = root

    def to_json(self) -> dict[str, str]:
        return {"module": self.module, "file": self.file, "qualname": self.qualname, "root": self.root}


def _module_root(module: str, file: Path) -> Path:
    """The ``sys.path`` entry from which ``module`` imports as ``file``."""
    depth = module.count(".") + (1 if file.name == "__init__.py" else 0)
    root = file.parent
    for _ in range(depth):
        root = root.parent
    return root


def locate(fn: Callable[..., Any], *, field: str) -> CodeLocation:
    """Record where ``fn`` is defined so a step process can import it.

    Raises:
        ConfigError: for a lambda, a nested function or a function typed into a REPL or
            notebook cell, none of which a fresh process can import.
    """
    qualname = getattr(fn, "__qualname__", "")
    name = getattr(fn, "__name__", repr(fn))
    if "<locals>" in qualname or "<lambda>" in qualname:
        raise ConfigError(
            f"step function {name!r} is defined inside another function; "
            "define it at module level so the step process can import it",
            field=field,
        )
    module = sys.modules.get(fn.__module__)
    file = getattr(module, "__file__", None)
    if not file or not str(file).endswith(".py"):
        raise ConfigError(
            f"step function {name!r} is not defined in a .py file (module {fn.__module__!r}); "
            "each step runs in its own process, which imports the function from its file",
            field=field,
            hint="move the step functions into a module, e.g. steps.py, and import them",
        )
    path = Path(file).resolve()
    return CodeLocation(fn.__module__, str(path), qualname, str(_module_root(fn.__module__, path)))


def _referenced_functions(fn: types.FunctionType) -> Iterator[types.FunctionType]:
    """Module-level functions of ``fn``'s own module that ``fn`` refers to by name."""
    codes = [fn.__code__]
    names: set[str] = set()
    while codes:
        code = codes.pop()
        names.update(code.co_names)
        codes.extend(c for c in code.co_consts if isinstance(c, types.CodeType))
    for name in sorted(names):
        obj = fn.__globals__.get(name)
        target = getattr(obj, "fn", obj)  # a @step used as a helper: follow to its function
        if isinstance(target, types.FunctionType) and target.__module__ == fn.__module__:
            yield target


def code_digest(fn: Callable[..., Any], *, field: str) -> str:
    """``sha256:<hex>`` of ``fn``'s source and of the same-module functions it calls.

    Raises:
        ConfigError: if the source cannot be read (a ``.pyc``-only install, a REPL).
    """
    if not isinstance(fn, types.FunctionType):
        raise ConfigError(f"{fn!r} is not a plain Python function", field=field)
    # Not the module's name: the same file is `__main__` when run as a script and `train` when
    # the CLI loads it, and both must share one cache.
    h = hashlib.sha256()
    seen: set[int] = set()
    todo = [fn]
    while todo:
        current = todo.pop()
        if id(current) in seen:
            continue
        seen.add(id(current))
        try:
            source = textwrap.dedent(inspect.getsource(current))
        except (OSError, TypeError) as exc:
            raise ConfigError(
                f"cannot read the source of {current.__qualname__!r} to digest step code: {exc}",
                field=field,
            ) from None
        h.update(current.__qualname__.encode() + b"\0" + source.encode() + b"\0")
        todo.extend(_referenced_functions(current))
    return "sha256:" + h.hexdigest()


def load_module_file(file: str | Path, module: str, root: str | Path | None = None) -> types.ModuleType:
    """Execute a module from its source file, freshly, under ``module`` (``__main__`` is renamed).

    Compiling from source rather than through the import system means a file edited a moment
    ago is never shadowed by a stale ``.pyc`` whose timestamp has one-second resolution.
    """
    path = Path(file).resolve()
    name = MAIN_ALIAS if module == "__main__" else module
    folder = str(Path(root) if root is not None else path.parent)
    if folder not in sys.path:
        sys.path.insert(0, folder)
    mod = types.ModuleType(name)
    mod.__file__ = str(path)
    if "." in name:
        mod.__package__ = name.rpartition(".")[0]
    previous = sys.modules.get(name)
    sys.modules[name] = mod  # visible during execution, as the import system does it
    try:
        code = compile(path.read_bytes(), str(path), "exec")
        exec(code, mod.__dict__)
    except BaseException:
        if previous is not None:
            sys.modules[name] = previous
        else:
            sys.modules.pop(name, None)
        raise
    return mod


def load_callable(location: dict[str, str]) -> Any:
    """Import the object a :class:`CodeLocation` describes (in a step process, or on resume).

    Dotted (package) modules are imported normally so their relative imports work; a top-level
    module or a script is executed from its file.
    """
    module, file, root = location["module"], location["file"], location["root"]
    if root not in sys.path:
        sys.path.insert(0, root)
    # Dotted names import normally (relative imports need their package); others from the file.
    mod = importlib.import_module(module) if "." in module else load_module_file(file, module, root)
    obj: Any = mod
    for part in location["qualname"].split("."):
        obj = getattr(obj, part)
    return obj
