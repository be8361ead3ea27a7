"""Which adapter serves which target URI scheme.

Adapters register through the entry-point group ``mlshift.adapters``; the core never imports
a cloud adapter by name. First-party adapters that are not installed are still known by name,
so a missing one says which package to install instead of "unknown scheme".
"""

from __future__ import annotations

import types
from collections.abc import Mapping
from importlib import import_module
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, urlsplit

from mlshift.errors import AdapterNotFound, ConfigError

if TYPE_CHECKING:
    from mlshift.adapter import Adapter, TargetURI

__all__ = [
    "KNOWN_ADAPTERS",
    "adapter_class",
    "available_adapters",
    "load_adapter",
    "parse_target_uri",
    "targets_with",
]

ENTRY_POINT_GROUP = "mlshift.adapters"

#: First-party adapters: scheme → (import path, the package that provides it).
KNOWN_ADAPTERS: Mapping[str, tuple[str, str]] = types.MappingProxyType(
    {
        "local": ("mlshift.local:LocalAdapter", "mlshift"),
        "memory": ("mlshift.testing.memory:MemoryAdapter", "mlshift"),
        "sagemaker": ("mlshift_sagemaker:SageMakerAdapter", "mlshift-sagemaker"),
        "azureml": ("mlshift_azureml:AzureMLAdapter", "mlshift-azureml"),
        "vertex": ("mlshift_vertex:VertexAdapter", "mlshift-vertex"),
        "kfp": ("mlshift_vertex.kfp:KubeflowAdapter", "mlshift-vertex"),
    }
)

_EXTRA = {"mlshift-sagemaker": "sagemaker", "mlshift-azureml": "azureml", "mlshift-vertex": "vertex"}


def _entry_points() -> dict[str, str]:
    from importlib.metadata import entry_points

    return {ep.name: ep.value for ep in entry_points(group=ENTRY_POINT_GROUP)}


def available_adapters() -> Mapping[str, str]:
    """Installed adapters: scheme → import path (read-only)."""
    found = {k: v[0] for k, v in KNOWN_ADAPTERS.items() if v[1] == "mlshift"}
    found.update(_entry_points())
    return types.MappingProxyType(dict(sorted(found.items())))


def parse_target_uri(raw: str) -> TargetURI:
    """Parse ``scheme[+variant]://[location][/path][?k=v...]``.

    Raises:
        ConfigError: if the text is not a target URI.
    """
    from mlshift.adapter import TargetURI

    text = raw.strip()
    if "://" not in text:
        raise ConfigError(
            f"{raw!r} is not a target URI",
            field="target",
            hint="write SCHEME://LOCATION, e.g. local://, memory://, sagemaker://us-east-1",
        )
    parts = urlsplit(text)
    scheme, _, variant = parts.scheme.lower().partition("+")
    if not scheme or not scheme.replace("-", "").isalnum():
        raise ConfigError(f"target URI {raw!r} has no valid scheme", field="target")
    query = dict(parse_qsl(parts.query, keep_blank_values=True))
    return TargetURI(
        raw=text,
        scheme=scheme,
        variant=variant or None,
        location=parts.netloc,
        path=parts.path,
        query=query,
    )


def adapter_class(target: TargetURI) -> Any:
    """The installed adapter factory (its class) for a target's scheme, not yet built.

    Raises:
        AdapterNotFound: with the known schemes and, for a first-party adapter that is not
            installed, the exact install command.
    """
    installed = available_adapters()
    spec = installed.get(target.scheme)
    if spec is None:
        known = sorted(set(installed) | set(KNOWN_ADAPTERS))
        if target.scheme in KNOWN_ADAPTERS:
            package = KNOWN_ADAPTERS[target.scheme][1]
            raise AdapterNotFound(
                f"the {target.scheme!r} adapter is not installed",
                field="target",
                hint=f'pip install "mlshift[{_EXTRA.get(package, target.scheme)}]"'
                f"  (or: pip install {package})",
            )
        raise AdapterNotFound(
            f"unknown target scheme {target.scheme!r} in {target.raw!r}; expected one of {', '.join(known)}",
            field="target",
        )
    module_name, _, attr = spec.partition(":")
    try:
        return getattr(import_module(module_name), attr)
    except ImportError as exc:
        raise AdapterNotFound(
            f"the {target.scheme!r} adapter failed to import: {exc}",
            field="target",
            hint="reinstall it; `pip check` may show a broken dependency",
        ) from exc


def load_adapter(
    uri: str | TargetURI, options: Mapping[str, Any] | None = None, *, base_dir: Path | None = None
) -> Adapter:
    """Build the adapter for a target URI.

    Args:
        uri: The target URI.
        options: The target's options (the adapter validates them).
        base_dir: What relative paths are relative to (default: the working directory).

    Raises:
        AdapterNotFound: with the known schemes and, for a first-party adapter that is not
            installed, the exact install command.
        ConfigError: if the adapter rejects the URI or options.
    """
    from mlshift.adapter import TargetURI

    target = uri if isinstance(uri, TargetURI) else parse_target_uri(uri)
    factory = adapter_class(target)
    adapter: Adapter = factory.from_uri(target, dict(options or {}), base_dir=base_dir or Path.cwd())
    return adapter


def targets_with(capability: object) -> list[str]:
    """Installed adapters that declare ``capability`` (for error messages)."""
    names = []
    for scheme, spec in available_adapters().items():
        module_name, _, attr = spec.partition(":")
        try:
            cls = getattr(import_module(module_name), attr)
        except Exception:  # an adapter that fails to import does not have it
            continue
        if capability in getattr(cls, "capabilities", frozenset()):
            names.append(scheme)
    return names
