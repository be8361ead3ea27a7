"""Finding and reading ``mlshift.yaml``, and turning a target name into a URI."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlshift.errors import ConfigError

if TYPE_CHECKING:
    from mlshift.specs.project import ProjectFile

__all__ = ["PROJECT_FILENAMES", "ResolvedTarget", "find_project_file", "load_project", "resolve_target"]

PROJECT_FILENAMES = ("mlshift.yaml", "mlshift.yml")
ENV_TARGET = "MLSHIFT_TARGET"
DEFAULT_TARGET = "local://"


@dataclass(frozen=True)
class ResolvedTarget:
    """A target ready for the registry: its URI, adapter options and where it came from."""

    uri: str
    options: dict[str, Any] = field(default_factory=dict, repr=False)  # may hold secrets
    label: str = ""
    base_dir: Path = field(default_factory=Path.cwd)


def find_project_file(start: Path | None = None) -> Path | None:
    """The nearest ``mlshift.yaml`` in ``start`` (default: the working directory) or above."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        for name in PROJECT_FILENAMES:
            candidate = folder / name
            if candidate.is_file():
                return candidate
    return None


def _line_of(node: Any, loc: Sequence[int | str]) -> int | None:
    """The 1-based line of the YAML node at a pydantic error location."""
    import yaml

    line: int | None = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode):
            match = next((v for k, v in node.value if k.value == part), None)
            if match is None:
                key = next((k for k, _ in node.value if k.value == part), None)
                return key.start_mark.line + 1 if key is not None else line
            node = match
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
        else:
            break
        line = node.start_mark.line + 1
    return line


def parse_project(text: str, source: str = "mlshift.yaml", base_dir: Path | None = None) -> ProjectFile:
    """Parse and validate the text of an ``mlshift.yaml``.

    Model paths are made absolute relative to ``base_dir``.

    Raises:
        ConfigError: naming the file, line and field path of the first problem.
    """
    import yaml

    from mlshift.specs.project import ProjectFile

    try:
        root = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError(
            f"{where}: not valid YAML: {problem}", hint="check indentation and quoting"
        ) from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: the top level must be a mapping (targets:, models:, endpoints:)")
    try:
        project = ProjectFile.model_validate(data)
    except ConfigError as exc:
        line = _line_of(root, exc.loc)
        where = f"{source}:{line}" if line else source
        detail = exc.detail
        raise ConfigError(f"{where}: {exc.field or 'top level'}: {detail}", field=exc.field) from None
    if base_dir is not None and project.models:
        models = tuple(
            m.model_copy(update={"path": str((base_dir / m.path).resolve())}) if "://" not in m.path else m
            for m in project.models
        )
        project = project.model_copy(update={"models": models})
    return project


def load_project(path: str | Path) -> ProjectFile:
    """Read and validate an ``mlshift.yaml``.

    Raises:
        ConfigError: if the file is missing, unreadable or invalid (with line and field path).
    """
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{p} does not exist", hint="pass -f PATH, or create mlshift.yaml") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{p} cannot be read: {exc}") from None
    return parse_project(text, source=str(p), base_dir=p.resolve().parent)


def resolve_target(
    target: str | None = None, *, project_file: Path | None = None, project: ProjectFile | None = None
) -> ResolvedTarget:
    """Turn a target argument into a URI and options.

    Order: ``target`` (a URI, or a name in ``mlshift.yaml``), then ``$MLSHIFT_TARGET``, then the
    file's ``default_target``, then ``local://``.

    Raises:
        ConfigError: for a name no ``mlshift.yaml`` defines (listing those that are defined).
    """
    path = project_file if project_file is not None else find_project_file()
    base_dir = path.resolve().parent if path is not None else Path.cwd()
    chosen, origin = target, "argument"
    if not chosen:
        chosen, origin = os.environ.get(ENV_TARGET) or None, f"${ENV_TARGET}"
    if chosen and "://" in chosen:
        # A URI needs no mlshift.yaml: a broken file elsewhere must not block it.
        return ResolvedTarget(uri=chosen, label=chosen, base_dir=base_dir)
    if project is None and path is not None:
        project = load_project(path)
    if not chosen and project is not None and project.default_target:
        chosen, origin = project.default_target, "default_target"
    if not chosen:
        return ResolvedTarget(uri=DEFAULT_TARGET, label="local (default)", base_dir=base_dir)
    if "://" in chosen:
        return ResolvedTarget(uri=chosen, label=chosen, base_dir=base_dir)
    targets = project.targets if project is not None else {}
    if chosen not in targets:
        known = ", ".join(sorted(targets)) if targets else "none (no mlshift.yaml with targets: found)"
        raise ConfigError(
            f"unknown target {chosen!r} (from {origin}); defined targets: {known}",
            field="target",
            hint="use a URI such as local:// or sagemaker://us-east-1, or define the name under targets:",
        )
    conf = targets[chosen]
    return ResolvedTarget(uri=conf.uri, options=dict(conf.options), label=chosen, base_dir=base_dir)
