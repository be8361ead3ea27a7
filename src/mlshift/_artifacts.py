"""Artifact digests: one content address for a file or a directory tree."""

from __future__ import annotations

import hashlib
from pathlib import Path

from mlshift.errors import ConfigError, IntegrityError

__all__ = ["SKOPS_TRUST_TAG", "digest_path", "parse_skops_trust", "verify_digest"]

_CHUNK = 1 << 20

#: The model-version tag that records the types one registered ``.skops`` file may hold
#: beyond the trusted set (comma-separated, exact type names).
SKOPS_TRUST_TAG = "mlshift.skops-trust"


def parse_skops_trust(value: str | None) -> tuple[str, ...]:
    """Type names from a comma-separated list (``MLSHIFT_SKOPS_TRUST``, the model tag)."""
    if not value:
        return ()
    return tuple(sorted({t.strip() for t in value.split(",") if t.strip()}))


def _file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def digest_path(path: str | Path) -> str:
    """The ``sha256:<hex>`` digest of a file, or of a directory tree.

    A directory's digest covers each file's relative path and bytes, in sorted order, so the
    same tree gives the same digest wherever it lives (timestamps and modes are ignored).

    Raises:
        ConfigError: if the path does not exist or cannot be read.
    """
    p = Path(path)
    try:
        if p.is_file():
            return "sha256:" + _file_sha256(p)
        if p.is_dir():
            h = hashlib.sha256()
            files = sorted(f for f in p.rglob("*") if f.is_file() and "__pycache__" not in f.parts)
            if not files:
                raise ConfigError(f"artifact directory {str(p)!r} is empty", field="path")
            for f in files:
                rel = f.relative_to(p).as_posix()
                h.update(rel.encode() + b"\0" + _file_sha256(f).encode() + b"\n")
            return "sha256:" + h.hexdigest()
    except PermissionError as exc:
        raise ConfigError(
            f"artifact {str(p)!r} cannot be read: {exc.strerror}",
            field="path",
            hint="check the file's permissions",
        ) from None
    raise ConfigError(
        f"artifact path {str(p)!r} does not exist",
        field="path",
        hint="pass the path of a model file (.skops, .joblib, .onnx) or a predictor directory",
    )


def verify_digest(path: str | Path, expected: str) -> None:
    """Refuse an artifact whose bytes no longer match the digest it was registered with.

    Raises:
        IntegrityError: naming both digests.
    """
    actual = digest_path(path)
    if actual != expected:
        raise IntegrityError(
            f"artifact {str(path)!r} does not match its registered digest: "
            f"expected {expected}, found {actual}",
            hint="the stored file was changed or corrupted; register the model again",
        )
