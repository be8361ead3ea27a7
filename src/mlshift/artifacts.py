"""Model artifact digests (public): the content address every target stores artifacts under.

``sha256:<hex>`` of a file's bytes, or of a directory's sorted relative paths and file bytes;
an adapter stores an artifact under its digest and checks the bytes it reads back with
:func:`verify_digest`.
"""

from __future__ import annotations

from mlshift._artifacts import digest_path, verify_digest

__all__ = ["digest_path", "verify_digest"]
