"""Restoring file and configuration backups into a directory, and proving every file's hash.

The backup is read by :mod:`pgdr.backup.files_reader` (each archive downloaded once and checked,
unsealed when sealed, streamed through tar) and each wanted file is hashed as it is written into a
partial directory inside the target. Only when every file matched its sha256 are the files moved
into place (a rename on the same filesystem), symlinks made, modes and mtimes set; then every file
is read back from its final place and hashed again. Reports carry counts and bytes, never contents.
"""

from __future__ import annotations

import logging
import os
import shutil
import stat
import time
from pathlib import Path

from pgdr.backup.files import dest_path
from pgdr.backup.files_reader import (
    FileRestoreError,
    load_entries,
    read_contents,
    unsealer,
)
from pgdr.core.checksums import file_sha256
from pgdr.restore.request import target_dir_problems
from pgdr.store.manifest import Manifest

__all__ = ["check_target_dir", "find_conflicts", "is_empty_dir", "place_entries", "restore_tree", "verify_tree"]
PARTIAL_PREFIX = ".pgdr-restore-"
# Directories are opened one component at a time, relative to their parent, never through a link:
# what a restore writes stays inside target_dir whatever links are already there.
_DIR_FLAGS = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


def is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not any(path.iterdir())


def check_target_dir(target_dir: str, needed_bytes: int, *, settings=None) -> Path:
    """The directory a restore may write to, resolved (symlinks followed): absolute, no '..', not /,
    not overlapping a system directory (with ``settings``: not overlapping a directory pgdr backs up
    or writes, and under a pgdr_restore_target_dirs root), not a file, space enough. Changes nothing."""
    if not target_dir:
        raise FileRestoreError("target_dir is empty; give an absolute directory")
    problems, resolved = target_dir_problems(target_dir, settings)
    if problems:
        raise FileRestoreError("; ".join(problems))
    path = resolved
    if path.exists() and not path.is_dir():
        raise FileRestoreError(f"target_dir {target_dir} exists and is not a directory")
    existing = path
    while not existing.exists():
        existing = existing.parent
    if not os.access(existing, os.W_OK | os.X_OK):
        raise FileRestoreError(f"{existing} is not writable by this worker; choose another target_dir")
    free = shutil.disk_usage(existing).free
    if free < needed_bytes:
        raise FileRestoreError(f"{existing} has {free} bytes free; the restore needs about {needed_bytes}")
    return path


def restore_tree(store, manifest: Manifest, prefix: str, target_dir: Path, stamp: str, workdir: Path,
                 log: logging.Logger, *, wrapper=None, entries: list[dict] | None = None, settings=None) -> dict:
    """Restore a file or configuration backup into ``target_dir`` and prove every file afterwards.

    Links already in ``target_dir`` are never followed: a link where the backup has a directory or
    a file is replaced; a file or directory of the wrong type in the way is refused before anything
    is written. With ``settings``, ``target_dir`` is checked against them again (see
    :func:`check_target_dir`)."""
    started = time.monotonic()
    # resolved again here: the directory the plan checked may have been swapped for a link since
    problems, target_dir = target_dir_problems(str(target_dir), settings)
    if problems:
        raise FileRestoreError("; ".join(problems) + "; nothing was written")
    entries = entries if entries is not None else load_entries(store, manifest, prefix, workdir)
    conflicts = find_conflicts(target_dir, entries)
    if conflicts:
        raise FileRestoreError(f"{len(conflicts)} path(s) in target_dir {target_dir} are in the way of the backup "
                               f"({conflicts[0]}); nothing was written")
    unseal = unsealer(manifest, wrapper)
    target_dir.mkdir(parents=True, exist_ok=True)
    partial = target_dir / f"{PARTIAL_PREFIX}{stamp}.partial"
    partial.mkdir(mode=0o700)
    try:
        read = read_contents(store, manifest, entries, workdir, log, write_root=partial, unseal=unseal)
        if read["problems"]:
            first = read["problems"][0]
            raise FileRestoreError(f"{len(read['problems'])} problem(s) reading backup {manifest.backup_id}: "
                                   f"{first['problem']} ({first.get('key', '')} {first.get('path', '')}); nothing "
                                   f"was moved into {target_dir}")
        download_seconds = time.monotonic() - started
        place_entries(partial, target_dir, entries)
    finally:
        shutil.rmtree(partial, ignore_errors=True)
    checked = verify_tree(target_dir, entries)
    outcome = {"kind": manifest.kind, "backup_id": manifest.backup_id, "target_dir": str(target_dir),
               "files": checked["files"], "bytes": checked["bytes"], "symlinks": checked["symlinks"],
               "directories": sum(1 for e in entries if e["type"] == "dir"),
               "archives": read["archives"], "downloaded_bytes": read["downloaded_bytes"],
               "encrypted_files": sum(1 for e in entries if e.get("encrypted")),
               "hash_mismatches": len(checked["problems"]),
               "seconds": {"download_and_unpack": round(download_seconds, 2),
                           "total": round(time.monotonic() - started, 2)}}
    if checked["problems"]:
        raise FileRestoreError(f"after the restore into {target_dir}, {len(checked['problems'])} file(s) differ from "
                               f"the manifest, e.g. {checked['problems'][0]}")
    log.info("restored %d files (%d bytes), %d symlinks of %s backup %s into %s; every sha256 matches the manifest",
             outcome["files"], outcome["bytes"], outcome["symlinks"], manifest.kind, manifest.backup_id, target_dir)
    return outcome


def _parts(entry: dict) -> tuple[str, ...]:
    """The entry's path below the restore root, component by component, none of them leaving it."""
    parts = dest_path(Path("/"), entry["dir"], entry["path"]).parts[1:]
    if not parts or any(part in ("", ".", "..") or "/" in part for part in parts):
        raise FileRestoreError(f"refusing an entry path that leaves target_dir (backup directory {entry['dir']})")
    return parts


def _what(entry: dict) -> str:
    return {"dir": "a directory", "file": "a file", "symlink": "a symlink"}.get(entry["type"], entry["type"])


def find_conflicts(target_dir: Path, entries: list[dict]) -> list[str]:
    """What in ``target_dir`` is of the wrong type for the backup (a file where it has a directory, a
    directory where it has a file or link). Links are not conflicts (they are replaced, never followed);
    descriptions name the backed-up directory only, never a file's name. Reads, changes nothing."""
    problems = []
    for entry in entries:
        if entry["type"] not in ("dir", "file", "symlink"):
            continue
        parts = _parts(entry)
        current = target_dir
        for index, name in enumerate(parts):
            current = current / name
            try:
                mode = os.lstat(current).st_mode
            except FileNotFoundError:
                break
            if stat.S_ISLNK(mode):
                break
            wants_dir = index < len(parts) - 1 or entry["type"] == "dir"
            if wants_dir and not stat.S_ISDIR(mode):
                problems.append(f"a file where the backup has a directory, under {entry['dir']}")
                break
            if not wants_dir and stat.S_ISDIR(mode):
                problems.append(f"a directory where the backup has {_what(entry)}, under {entry['dir']}")
                break
    return problems


def _open_dir(parent_fd: int, name: str, create: bool) -> int:
    """Open ``name`` inside ``parent_fd`` as a directory without following a link; with ``create`` a
    missing directory is made (0700 until its mode is set) and a link in its place is replaced."""
    try:
        return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)
    except FileNotFoundError:
        if not create:
            raise FileRestoreError("a restored directory disappeared during the restore") from None
    except OSError:
        mode = os.stat(name, dir_fd=parent_fd, follow_symlinks=False).st_mode
        if not (create and stat.S_ISLNK(mode)):
            raise FileRestoreError("a path in target_dir changed type during the restore (not a directory)") from None
        os.unlink(name, dir_fd=parent_fd)   # the link goes; whatever it pointed at is untouched
    os.mkdir(name, 0o700, dir_fd=parent_fd)
    return os.open(name, _DIR_FLAGS, dir_fd=parent_fd)


def _open_path(root_fd: int, parts: tuple[str, ...], create: bool) -> int:
    fd = os.dup(root_fd)
    for name in parts:
        try:
            child = _open_dir(fd, name, create)
        finally:
            os.close(fd)
        fd = child
    return fd


def open_root(target_dir: Path) -> int:
    """A descriptor of ``target_dir`` (a resolved path), opened from / one component at a time
    without following a link: a link swapped in since it was resolved is refused."""
    fd = os.open("/", _DIR_FLAGS)
    for name in target_dir.parts[1:]:
        try:
            child = os.open(name, _DIR_FLAGS, dir_fd=fd)
        except OSError:
            raise FileRestoreError(f"target_dir {target_dir} changed during the restore ({name} is no longer a "
                                   "directory); nothing more was written") from None
        finally:
            os.close(fd)
        fd = child
    return fd


def place_entries(partial: Path, target_dir: Path, entries: list[dict]) -> None:
    """Move the verified files from ``partial`` into place; then symlinks, modes and mtimes.

    Every directory is opened relative to its parent without following links (O_NOFOLLOW): a link
    already in the target is replaced, never written through, so nothing outside ``target_dir``
    changes, not even a mode or an mtime."""
    root = open_root(target_dir)
    try:
        for entry in entries:
            if entry["type"] == "dir":
                os.close(_open_path(root, _parts(entry), create=True))
            elif entry["type"] == "file":
                parts = _parts(entry)
                parent = _open_path(root, parts[:-1], create=True)
                try:
                    # rename replaces a link at the final name; it never writes through it
                    os.replace(dest_path(partial, entry["dir"], entry["path"]), parts[-1], dst_dir_fd=parent)
                    fd = os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=parent)
                    try:
                        if "mode" in entry:
                            os.fchmod(fd, entry["mode"])
                        os.utime(fd, ns=(entry["mtime_ns"], entry["mtime_ns"]))
                    finally:
                        os.close(fd)
                finally:
                    os.close(parent)
        # links last, so no file is ever written through a link the backup brought
        for entry in entries:
            if entry["type"] == "symlink":
                parts = _parts(entry)
                parent = _open_path(root, parts[:-1], create=True)
                try:
                    try:
                        mode = os.stat(parts[-1], dir_fd=parent, follow_symlinks=False).st_mode
                    except FileNotFoundError:
                        mode = None
                    if mode is not None and stat.S_ISDIR(mode):
                        raise FileRestoreError(f"a directory is where the backup has a symlink, under {entry['dir']}")
                    if mode is not None:
                        os.unlink(parts[-1], dir_fd=parent)
                    os.symlink(entry["target"], parts[-1], dir_fd=parent)
                    os.utime(parts[-1], ns=(entry["mtime_ns"], entry["mtime_ns"]), dir_fd=parent,
                             follow_symlinks=False)
                finally:
                    os.close(parent)
        for entry in sorted((e for e in entries if e["type"] == "dir"), key=lambda e: len(_parts(e)), reverse=True):
            fd = _open_path(root, _parts(entry), create=False)
            try:
                os.fchmod(fd, entry["mode"])
                os.utime(fd, ns=(entry["mtime_ns"], entry["mtime_ns"]))
            finally:
                os.close(fd)
    finally:
        os.close(root)


def _open_no_link(path: Path):
    return os.fdopen(os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC), "rb")


def verify_tree(target_dir: Path, entries: list[dict]) -> dict:
    """Read every restored file back and compare size, sha256 and mtime with the manifest."""
    problems, files, size, links = [], 0, 0, 0
    for entry in entries:
        final = dest_path(target_dir, entry["dir"], entry["path"])
        if entry["type"] == "symlink":
            if not final.is_symlink() or os.readlink(final) != entry["target"]:
                problems.append({"problem": "symlink differs", "path": entry["path"]})
            else:
                links += 1
            continue
        if entry["type"] != "file":
            continue
        try:
            copied = file_sha256(final, opener=_open_no_link)
            mtime_ns = os.stat(final, follow_symlinks=False).st_mtime_ns
        except OSError as err:
            problems.append({"problem": "file unreadable after restore", "path": entry["path"],
                             "error": err.strerror})
            continue
        if copied.sha256 != entry.get("sha256") or copied.size != entry["size"] or mtime_ns != entry["mtime_ns"]:
            problems.append({"problem": "file differs after restore", "path": entry["path"]})
        else:
            files += 1
            size += copied.size
    return {"problems": problems, "files": files, "bytes": size, "symlinks": links}
