"""A backup's object fetched back from S3, hashed as it arrives and checked against its manifest entry.

Restore, point-in-time recovery and verification all read objects through :func:`download_object`:
nothing is unpacked or replayed before its size and sha256 are the manifest's.
"""

from __future__ import annotations

from pathlib import Path

from pgdr.core.checksums import CHUNK, check_copied, copy_hashed
from pgdr.core.progress import Progress
from pgdr.store.manifest import ObjectEntry

__all__ = ["download_object"]


def download_object(store, key: str, obj: ObjectEntry, target: Path, progress: Progress | None = None) -> None:
    """Download one object to ``target``, hashing as it arrives; raise :class:`ObjectHashError` on a size
    or sha256 mismatch (``target`` then holds what arrived; the caller removes it)."""
    response = store.open_object(key)
    with open(target, "wb") as handle:
        copied = copy_hashed(response["Body"], handle, chunk=CHUNK * 4, progress=progress)
    check_copied(key, copied, obj.size, obj.sha256)
