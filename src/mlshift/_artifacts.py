"""Artifact digests: one content address for a file or a directory tree; safe scanning."""

from __future__ import annotations

import hashlib
import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path

from mlshift.errors import ConfigError, IntegrityError

__all__ = [
    "DEFAULT_MAX_ARTIFACT_BYTES",
    "SKOPS_TRUST_TAG",
    "check_artifact",
    "digest_path",
    "max_artifact_bytes",
    "parse_skops_trust",
    "scan_artifact",
    "verify_digest",
]

#: Artifacts larger than this are refused at registration (``MLSHIFT_MAX_ARTIFACT_MB``).
DEFAULT_MAX_ARTIFACT_BYTES = 10 * 1024 * 1024 * 1024

_CHUNK = 1 << 20

#: The model-version tag that records the types one registered ``.skops`` file may hold
#: beyond the trusted set (comma-separated, exact type names).
SKOPS_TRUST_TAG = "mlshift.skops-trust"


def parse_skops_trust(value: str | None) -> tuple[str, ...]:
    """Type names from a comma-separated list (``MLSHIFT_SKOPS_TRUST``, the model tag)."""
    if not value:
        return ()
    return tuple(sorted({t.strip() for t in value.split(",") if t.strip()}))


def max_artifact_bytes(environ: Mapping[str, str] | None = None) -> int:
    """The artifact size limit: ``MLSHIFT_MAX_ARTIFACT_MB`` megabytes, default 10 GB.

    Raises:
        ConfigError: for a value that is not a positive whole number.
    """
    text = (os.environ if environ is None else environ).get("MLSHIFT_MAX_ARTIFACT_MB", "").strip()
    if not text:
        return DEFAULT_MAX_ARTIFACT_BYTES
    if not text.isdigit() or int(text) <= 0:
        raise ConfigError(
            f"MLSHIFT_MAX_ARTIFACT_MB={text!r} is not a positive whole number",
            field="MLSHIFT_MAX_ARTIFACT_MB",
            hint="unset it for the default (10240)",
        )
    return int(text) * 1024 * 1024


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe (FIFO)"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISDIR(mode):
        return "a directory"
    return "not a regular file"


def scan_artifact(path: str | Path, max_bytes: int | None = None) -> int:
    """Check that an artifact is safe to hash and store, reading no file; return its size.

    Nothing is followed out of the artifact: the artifact itself must not be a symbolic link,
    and a link inside a folder must point to a regular file inside the same folder (it is
    stored as that file's bytes). Named pipes, devices and sockets are refused, as are links
    that dangle or loop, so that hashing and copying can neither hang nor read forever.

    Args:
        path: A model file or an artifact folder.
        max_bytes: Refuse artifacts larger than this (default: :func:`max_artifact_bytes`).

    Raises:
        ConfigError: naming the offending path.
    """
    p = Path(path)
    limit = max_artifact_bytes() if max_bytes is None else max_bytes
    try:
        st = os.lstat(p)
    except FileNotFoundError:
        raise ConfigError(
            f"artifact path {str(p)!r} does not exist",
            field="path",
            hint="pass the path of a model file (.skops, .joblib, .onnx, ...), an MLflow model "
            "folder or a predictor directory",
        ) from None
    except OSError as exc:
        raise ConfigError(f"artifact {str(p)!r} cannot be read: {exc.strerror}", field="path") from None
    if stat.S_ISLNK(st.st_mode):
        raise ConfigError(
            f"artifact path {str(p)!r} is a symbolic link (to {str(p.readlink())!r})",
            field="path",
            hint="pass the file or folder it points to, so that what is registered is what you see",
        )
    if stat.S_ISREG(st.st_mode):
        size = st.st_size
    elif stat.S_ISDIR(st.st_mode):
        size = _scan_folder(p, p.resolve(), limit)
    else:
        raise ConfigError(f"artifact path {str(p)!r} is {_kind(st.st_mode)}", field="path")
    if size > limit:
        raise _too_big(p, size, limit)
    return size


def check_artifact(path: str | Path, framework: str | None, tags: Mapping[str, str]) -> int:
    """Everything registration checks before it reads a byte of a model; returns its size.

    :func:`scan_artifact`, then: a ``.skops`` file, alone or the one an MLflow model folder
    loads, holds no type nobody trusted (the ``mlshift.skops-trust`` tag lists the ones
    trusted for it).

    Raises:
        ConfigError: naming what is wrong.
    """
    size = scan_artifact(path)
    p = Path(path)
    skops: Path | None = None
    if p.suffix.lower() == ".skops" and framework in (None, "sklearn"):
        skops = p
    elif p.is_dir() and framework in (None, "mlflow") and (p / "MLmodel").is_file():
        from mlshift.serving._mlflow import skops_file

        skops = skops_file(p)
    if skops is not None:
        from mlshift.serving._loaders import check_skops_trust

        check_skops_trust(skops, parse_skops_trust(tags.get(SKOPS_TRUST_TAG)))
    return size


def _too_big(p: Path, size: int, limit: int) -> ConfigError:
    return ConfigError(
        f"artifact {str(p)!r} is larger than the {limit // (1024 * 1024)} MB limit "
        f"({'at least ' if size <= limit else ''}{size / (1024 * 1024):.0f} MB)",
        field="path",
        hint="register only the model's files, or raise MLSHIFT_MAX_ARTIFACT_MB",
    )


def _scan_folder(root: Path, real_root: Path, limit: int) -> int:
    size = 0
    pending = [root]
    while pending:
        folder = pending.pop()
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError as exc:
            raise ConfigError(
                f"artifact folder {str(folder)!r} cannot be read: {exc.strerror}", field="path"
            ) from None
        for entry in entries:
            shown = str(Path(entry.path).relative_to(root))
            st = entry.stat(follow_symlinks=False)
            if stat.S_ISLNK(st.st_mode):
                size += _scan_link(root, real_root, Path(entry.path), shown)
            elif stat.S_ISDIR(st.st_mode):
                if entry.name != "__pycache__":
                    pending.append(Path(entry.path))
            elif stat.S_ISREG(st.st_mode):
                size += st.st_size
            else:
                raise ConfigError(
                    f"{shown!r} in artifact folder {str(root)!r} is {_kind(st.st_mode)}",
                    field="path",
                    hint="an artifact holds regular files only; remove it from the folder",
                )
            if size > limit:
                raise _too_big(root, size, limit)
    return size


def _scan_link(root: Path, real_root: Path, link: Path, shown: str) -> int:
    try:
        target = link.resolve(strict=True)
    except (OSError, RuntimeError):
        raise ConfigError(
            f"{shown!r} in artifact folder {str(root)!r} is a broken symbolic link "
            f"(to {str(link.readlink())!r}: missing, or a loop)",
            field="path",
            hint="remove the link or put the file itself in the folder",
        ) from None
    if not target.is_relative_to(real_root):
        raise ConfigError(
            f"{shown!r} in artifact folder {str(root)!r} is a symbolic link out of the folder "
            f"(to {str(target)!r})",
            field="path",
            hint="copy the file into the folder instead of linking to it",
        )
    st = os.stat(target)
    if not stat.S_ISREG(st.st_mode):
        raise ConfigError(
            f"{shown!r} in artifact folder {str(root)!r} is a symbolic link to {_kind(st.st_mode)}",
            field="path",
            hint="links inside an artifact folder may only point to files in it",
        )
    return st.st_size


def _file_sha256(path: Path, progress: Callable[[int], None] | None = None) -> str:
    h = hashlib.sha256()
    with path.open("rb") as fh:
        while chunk := fh.read(_CHUNK):
            h.update(chunk)
            if progress is not None:
                progress(len(chunk))
    return h.hexdigest()


def digest_path(path: str | Path, progress: Callable[[int], None] | None = None) -> str:
    """The ``sha256:<hex>`` digest of a file, or of a directory tree.

    A directory's digest covers each file's relative path and bytes, in sorted order, so the
    same tree gives the same digest wherever it lives (timestamps and modes are ignored).
    Files are read a megabyte at a time.

    Args:
        path: The artifact.
        progress: Called with the number of bytes just hashed, after each megabyte.

    Raises:
        ConfigError: if the path does not exist or cannot be read.
    """
    p = Path(path)
    try:
        if p.is_file():
            return "sha256:" + _file_sha256(p, progress)
        if p.is_dir():
            h = hashlib.sha256()
            files = sorted(f for f in p.rglob("*") if f.is_file() and "__pycache__" not in f.parts)
            if not files:
                raise ConfigError(f"artifact directory {str(p)!r} is empty", field="path")
            for f in files:
                rel = f.relative_to(p).as_posix()
                h.update(rel.encode() + b"\0" + _file_sha256(f, progress).encode() + b"\n")
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
