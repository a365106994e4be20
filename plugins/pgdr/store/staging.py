"""Local staging: where a backup is written before upload and kept for a while after.

``<staging_dir>/<database>/<kind>/<backup_id>.partial`` while work is under way,
renamed to ``<backup_id>`` once every object is uploaded. Partial directories
are never mistaken for copies, and a failed run removes its own.

Staged copies are health records in clear. Every level pgdr makes here (the staging directory,
``<database>``, ``<kind>``) is 0700, so whatever pg_dump, pg_restore or a download writes below
it, with whatever mode, is out of other users' reach from the moment it is written; a kept copy
is then made 0700/0600 throughout. (Not a process-wide umask: it would leak into everything else
the worker process does.) A staging directory that belongs to another user, or that others may
write to (who could plant a symlink or read what pgdr writes), is refused with a message naming
``pgdr_staging_dir``; one that is merely readable by others is made private.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import time
from pathlib import Path

from pgdr.errors import Refused
from pgdr.store.manifest import is_backup_id

PARTIAL = ".partial"
# A partial directory this old belongs to a worker that died mid-backup.
STALE_PARTIAL_SECONDS = 24 * 3600
DIR_MODE = 0o700
FILE_MODE = 0o600

log = logging.getLogger(__name__)


class StagingRefused(Refused, RuntimeError):
    """The staging directory is not safe for health records; nothing was written."""


def _refuse(path: Path, problem: str, fix: str) -> StagingRefused:
    return StagingRefused(f"staging directory {path} {problem} (setting pgdr_staging_dir); nothing was written: "
                          f"{fix}", field="pgdr_staging_dir")


def _make_private(path: Path, what: str) -> None:
    """``path`` exists as a directory of this user that no one else may write; made 0700."""
    try:
        path.mkdir(mode=DIR_MODE)
    except FileExistsError:
        pass
    except OSError as err:
        raise _refuse(path, f"cannot be created ({err.strerror})",
                      "create it, owned by the worker's user, mode 0700") from None
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode) and what != "root":
        raise _refuse(path, "is a symbolic link", "remove it; pgdr makes its own directories")
    if what == "root":
        info = path.stat()  # an administrator may point pgdr_staging_dir at a link to a bigger disk
    if not stat.S_ISDIR(info.st_mode):
        raise _refuse(path, "is not a directory", "point pgdr_staging_dir at a directory")
    if info.st_uid != os.geteuid():
        raise _refuse(path, f"belongs to uid {info.st_uid}, not to the worker's user (uid {os.geteuid()})",
                      "chown it to the worker's user and chmod 700 it")
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise _refuse(path, f"is writable by others (mode {stat.S_IMODE(info.st_mode):04o})",
                      "check that nothing was planted in it, then chmod 700 it")
    if stat.S_IMODE(info.st_mode) & 0o077:
        log.warning("staging directory %s was readable by others (mode %04o); made private (0700)",
                    path, stat.S_IMODE(info.st_mode))
        os.chmod(path, DIR_MODE)


def private_dir(staging_dir: Path, *parts: str) -> Path:
    """``<staging_dir>/<parts...>``, each level made (0700) or checked (ours, no one else can write,
    not a link), so that whatever is written below is out of other users' reach. Returns the path."""
    root = Path(staging_dir)
    if not root.is_absolute():
        raise _refuse(root, "is not an absolute path", "use an absolute path")
    if not root.exists():
        try:
            root.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise _refuse(root, f"cannot be created ({err.strerror})",
                          "create it, owned by the worker's user, mode 0700") from None
    _make_private(root, "root")
    path = root
    for part in parts:
        if not part or part in (".", "..") or "/" in part:
            raise _refuse(root / part, "would leave the staging directory", "use a plain name")
        path = path / part
        _make_private(path, "sub")
    return path


def work_dir(staging_dir: Path, database: str, kind: str, backup_id: str) -> Path:
    return staging_dir / database / kind / f"{backup_id}{PARTIAL}"


def claim_work_dir(staging_dir: Path, database: str, kind: str, backup_id: str) -> Path:
    """The new backup's ``.partial`` path, its parents made private (0700, checked); refused when
    another backup writes there."""
    private_dir(staging_dir, database, kind)
    work = work_dir(staging_dir, database, kind, backup_id)
    if work.exists():
        raise RuntimeError(f"staging directory {work} already exists; another backup is writing there")
    return work


def keep(work: Path) -> Path:
    """Mark a finished backup's staging copy as complete."""
    final = work.with_name(work.name[: -len(PARTIAL)])
    work.rename(final)
    make_private_tree(final)
    return final


def make_private_tree(path: Path) -> None:
    """Directories 0700, files 0600 under ``path`` (links are left alone, never followed)."""
    for root, _dirs, files in os.walk(path):
        os.chmod(root, DIR_MODE)
        for name in files:
            entry = os.path.join(root, name)
            if not os.path.islink(entry):
                os.chmod(entry, FILE_MODE)


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
