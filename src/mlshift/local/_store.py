"""A content-addressed artifact store: ``artifacts/sha256/<hex>/{file/<name>|tree/...}``.

Stored artifacts are read-only for their owner only (files 0400, folders 0500): nothing can
change them between the digest check and the load, and nobody else can read them.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

from mlshift._artifacts import digest_path, verify_digest
from mlshift.errors import ConfigError

__all__ = ["ArtifactStore"]

FILE_MODE = 0o400
FOLDER_MODE = 0o500


def _copy_read_only(src: str, dst: str) -> str:
    # Not copy2: the source's mode (0666, say) must not come along, even for a moment.
    shutil.copyfile(src, dst)
    Path(dst).chmod(FILE_MODE)
    return dst


def _set_folder_modes(root: Path, mode: int) -> None:
    for folder, _, _ in os.walk(root):
        Path(folder).chmod(mode)


class ArtifactStore:
    """Artifacts stored once per digest; identical bytes registered twice share one copy."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def location(self, digest: str) -> Path:
        algo, _, hexdigest = digest.partition(":")
        return self.root / algo / hexdigest

    def put(self, source: Path, digest: str) -> Path:
        """Store ``source`` (a file or a directory) and return the stored path.

        The copy is written to a temporary folder, checked against ``digest`` and renamed into
        place, so a crash never leaves a partial artifact under its final name.

        Raises:
            ConfigError: if ``source`` changed and no longer has ``digest``.
        """
        final = self.location(digest)
        if final.exists():
            return self.resolve(digest)
        final.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".incoming-", dir=final.parent))
        try:
            staged = tmp / "staged"
            staged.mkdir()
            if source.is_dir():
                inner = staged / "tree"
                # Links were checked when the artifact was scanned: each points to a file inside
                # the folder, and is stored as that file's bytes.
                shutil.copytree(
                    source,
                    inner,
                    ignore=shutil.ignore_patterns("__pycache__"),
                    copy_function=_copy_read_only,
                )
                _set_folder_modes(inner, 0o700)  # copytree copied the source folders' modes
            else:
                (staged / "file").mkdir()
                inner = staged / "file" / source.name
                _copy_read_only(str(source), str(inner))
            if digest_path(inner) != digest:
                raise ConfigError(
                    f"artifact {str(source)!r} changed while it was being stored",
                    field="path",
                    hint="register it again once it is written completely",
                )
            try:
                os.rename(staged, final)
            except OSError:
                if not final.exists():  # someone else won the race with the same bytes: fine
                    raise
            else:
                _set_folder_modes(final, FOLDER_MODE)
        finally:
            if tmp.exists():
                _set_folder_modes(tmp, 0o700)
            shutil.rmtree(tmp, ignore_errors=True)
        return self.resolve(digest)

    def resolve(self, digest: str) -> Path:
        """The stored artifact: the single file of a file artifact, else the directory."""
        folder = self.location(digest)
        files = list((folder / "file").iterdir()) if (folder / "file").is_dir() else []
        return files[0] if files else folder / "tree"

    def verified(self, digest: str) -> Path:
        """The stored artifact, after checking its bytes still match ``digest``.

        Raises:
            IntegrityError: if they do not.
        """
        path = self.resolve(digest)
        verify_digest(path, digest)
        return path

    def remove(self, digest: str) -> None:
        folder = self.location(digest)
        if folder.exists():
            _set_folder_modes(folder, 0o700)  # entries of a read-only folder cannot be removed
        shutil.rmtree(folder, ignore_errors=True)
