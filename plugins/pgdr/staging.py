"""Local staging: where a backup is written before upload and kept for a while after.

``<staging_dir>/<database>/<kind>/<backup_id>.partial`` while work is under way,
renamed to ``<backup_id>`` once every object is uploaded. Partial directories
are never mistaken for copies, and a failed run removes its own.
"""

from __future__ import annotations

import logging
import shutil
import time
from pathlib import Path

from pgdr.manifest import is_backup_id

PARTIAL = ".partial"
# A partial directory this old belongs to a worker that died mid-backup.
STALE_PARTIAL_SECONDS = 24 * 3600


def work_dir(staging_dir: Path, database: str, kind: str, backup_id: str) -> Path:
    return staging_dir / database / kind / f"{backup_id}{PARTIAL}"


def claim_work_dir(staging_dir: Path, database: str, kind: str, backup_id: str) -> Path:
    """The new backup's ``.partial`` path, its parent made; refused when another backup writes there."""
    work = work_dir(staging_dir, database, kind, backup_id)
    work.parent.mkdir(parents=True, exist_ok=True)
    if work.exists():
        raise RuntimeError(f"staging directory {work} already exists; another backup is writing there")
    return work


def keep(work: Path) -> Path:
    """Mark a finished backup's staging copy as complete."""
    final = work.with_name(work.name[: -len(PARTIAL)])
    work.rename(final)
    return final


def discard(work: Path) -> None:
    shutil.rmtree(work, ignore_errors=True)


def prune(staging_dir: Path, database: str, kind: str, retention_days: int, log: logging.Logger,
          now: float | None = None, dry_run: bool = False) -> list[str]:
    """Remove copies older than ``retention_days`` (and stale partial ones); returns what was (with
    ``dry_run``: would be) removed."""
    now = now or time.time()
    base = staging_dir / database / kind
    if not base.is_dir():
        return []
    removed = []
    for entry in sorted(base.iterdir()):
        if not entry.is_dir():
            continue
        age = now - entry.stat().st_mtime
        if entry.name.endswith(PARTIAL):
            expired = age > STALE_PARTIAL_SECONDS
        elif is_backup_id(entry.name):
            expired = age > retention_days * 86400
        else:
            continue
        if expired:
            if not dry_run:
                shutil.rmtree(entry, ignore_errors=True)
            removed.append(entry.name)
    if removed:
        log.info("%s %d local staging copies older than %d days: %s", "would prune" if dry_run else "pruned",
                 len(removed), retention_days,
                 ", ".join(removed))
    return removed
