"""File backups: each configured directory archived as a stream, with a per-file index, incremental.

Each directory is walked (symlinks are recorded, never followed), and every file that is new or
changed since the previous backup (size, mtime or mode differ) is read once, hashed as it is read,
and written straight into a tar that flows through zstd into the staging file that is uploaded:
no copy of the files is made first. Unchanged files are not uploaded again: the index
(``index.json.zst``, one entry per file: path, size, mtime, sha256, and the backup and object
holding its content) points at the earlier backup that holds them, and the manifest lists those
backups in ``dump["depends_on"]`` so retention keeps them. A chain ends when its full backup is
older than :data:`FULL_EVERY_DAYS` (or a backup it depends on was found bad): the next backup
is full again, so old ones can expire (bench/README.md, "File backups", has the measurements
behind this choice).

Symlinks are stored as links; sockets, FIFOs and devices are skipped and listed; a file that
changed while it was read is stored as read, flagged in the index and taken again next time.
Airflow-free: the operator and bench/ run the same code.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import stat
import sys
import tarfile
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import zstandard

from pgdr import __version__
from pgdr.backup.upload import StagedFile, checked_objects, remove_partial_upload
from pgdr.core.checksums import Digest, HashingReader, StreamDigest
from pgdr.core.compression import TarZstWriter
from pgdr.core.progress import Progress
from pgdr.errors import Refused
from pgdr.store.layout import object_key
from pgdr.store.manifest import Manifest, backup_id_time, utc_now_iso

FULL_EVERY_DAYS = 7
INDEX_NAME = "index.json.zst"
INDEX_FORMAT = 1
CHUNK = 1 << 20


class FileBackupError(Refused, RuntimeError):
    """A file backup cannot be taken as configured (a directory missing, nothing readable)."""


def archive_name(position: int) -> str:
    return f"dirs/{position}.tar.zst"


def dest_path(root: Path, directory: str, relative: str) -> Path:
    """Where an entry lands under ``root``: the source's absolute path re-rooted, nothing outside it."""
    parts = Path(relative).parts
    if Path(relative).is_absolute() or ".." in parts or not parts:
        raise FileBackupError(f"refusing an entry path that leaves its directory: {relative!r}")
    base = Path(directory.lstrip("/"))
    if ".." in base.parts:
        raise FileBackupError(f"refusing a directory path with '..': {directory!r}")
    return root / base / relative


# --- scanning ---------------------------------------------------------------------------------

def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "fifo"
    if stat.S_ISSOCK(mode):
        return "socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "device"
    return "other"


def scan_directory(root: Path) -> tuple[list[dict], list[dict]]:
    """(entries, skipped) for one directory tree, sorted by path; nothing is read but metadata."""
    entries: list[dict] = []
    skipped: list[dict] = []

    def walk(directory: Path, relative: str) -> None:
        try:
            children = sorted(os.scandir(directory), key=lambda e: e.name)
        except OSError as err:
            skipped.append({"path": relative or ".", "type": "dir", "reason": f"unreadable: {err.strerror}"})
            return
        for child in children:
            rel = f"{relative}/{child.name}" if relative else child.name
            try:
                info = child.stat(follow_symlinks=False)
            except OSError as err:
                skipped.append({"path": rel, "type": "unknown", "reason": f"vanished or unreadable: {err.strerror}"})
                continue
            if stat.S_ISLNK(info.st_mode):
                entries.append({"path": rel, "type": "symlink", "target": os.readlink(child.path),
                                "mtime_ns": info.st_mtime_ns})
            elif stat.S_ISDIR(info.st_mode):
                entries.append({"path": rel, "type": "dir", "mode": stat.S_IMODE(info.st_mode),
                                "mtime_ns": info.st_mtime_ns})
                walk(Path(child.path), rel)
            elif stat.S_ISREG(info.st_mode):
                # "_id" (device, inode) lets the read refuse another file swapped in; never stored
                entries.append({"path": rel, "type": "file", "size": info.st_size, "mtime_ns": info.st_mtime_ns,
                                "mode": stat.S_IMODE(info.st_mode), "_id": [info.st_dev, info.st_ino]})
            else:
                skipped.append({"path": rel, "type": _kind(info.st_mode), "reason": "not a regular file"})

    walk(root, "")
    return entries, skipped


def open_beneath(root: Path, relative: str) -> int:
    """A read-only descriptor of ``root/relative``, opened without following a symbolic link at any
    level below ``root``: a file or directory swapped for a link after the scan (to a secret outside
    the directory) fails with ELOOP/ENOTDIR instead of being read. O_NONBLOCK: a FIFO swapped in
    does not hang the backup (it is refused as not a regular file)."""
    parts = Path(relative).parts
    if not parts or Path(relative).is_absolute() or ".." in parts:
        raise FileBackupError(f"refusing an entry path that leaves its directory: {relative!r}")
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        for part in parts[:-1]:
            child = os.open(part, os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC, dir_fd=fd)
            os.close(fd)
            fd = child
        return os.open(parts[-1], os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC, dir_fd=fd)
    finally:
        os.close(fd)


_REPLACED = (errno.ELOOP, errno.ENOTDIR, errno.ENOENT, errno.ENXIO)


# --- the incremental plan ----------------------------------------------------------------------

def choose_previous(previous: Manifest | None, bad_ids: set[str], now: datetime,
                    full_every_days: float = FULL_EVERY_DAYS) -> tuple[bool, str]:
    """(build on the previous backup?, why). Pure."""
    if previous is None:
        return False, "full: no earlier good file backup"
    full_id = previous.dump.get("full_backup_id") or previous.backup_id
    age_days = (now - backup_id_time(full_id)).total_seconds() / 86400
    if age_days >= full_every_days:
        return False, f"full: the chain's full backup {full_id} is {age_days:.1f} days old (limit {full_every_days:g})"
    broken = sorted(set(previous.dump.get("depends_on", [])) & bad_ids)
    if broken:
        return False, f"full: backups the previous one depends on were found bad ({', '.join(broken)})"
    return True, f"incremental on {previous.backup_id} (chain started by full backup {full_id})"


def unchanged(entry: dict, before: dict | None) -> bool:
    """Same size, mtime and mode as in the previous index, whose copy was read cleanly."""
    return (before is not None and before.get("type") == "file" and entry["type"] == "file"
            and before.get("size") == entry["size"] and before.get("mtime_ns") == entry["mtime_ns"]
            and before.get("mode") == entry["mode"] and not before.get("changed_while_read")
            and before.get("backup_id") and before.get("object") and before.get("sha256"))


# --- archiving ---------------------------------------------------------------------------------

class _ExactReader:
    """Reads exactly ``size`` bytes of a file for tarfile; pads a file that shrank."""

    def __init__(self, handle, size: int, progress: Progress | None) -> None:
        self._handle = handle
        self._left = size
        self.short = False
        self._progress = progress

    def read(self, size: int = -1) -> bytes:
        if size is None or size < 0 or size > self._left:
            size = self._left
        data = self._handle.read(size) if size else b""
        if len(data) < size:  # the file shrank under us: keep the tar consistent, flag the entry
            self.short = True
            data += b"\0" * (size - len(data))
        self._left -= len(data)
        if self._progress is not None:
            self._progress.add(len(data))
        return data


def write_archive(root: Path, entries: list[dict], target: Path, level: int, part_size: int,
                  progress: Progress | None = None) -> tuple[Digest, int, list[dict]]:
    """Stream ``entries`` (regular files under ``root``) as tar through zstd into ``target``.

    Fills in each entry's sha256 (of the bytes stored) and its size/mtime as read. Returns
    (digest of the compressed file, raw tar bytes of content, entries that vanished).
    """
    vanished, content = [], 0
    with open(target, "wb") as handle, TarZstWriter(handle, level, part_size) as archive:
        for entry in entries:
            scanned = entry.pop("_id", None)
            try:
                fd = open_beneath(root, entry["path"])
            except OSError as err:
                if err.errno not in _REPLACED:
                    raise
                entry["_replaced"] = err.errno != errno.ENOENT
                vanished.append(entry)
                continue
            with os.fdopen(fd, "rb", buffering=CHUNK) as source:
                before = os.fstat(source.fileno())
                if not stat.S_ISREG(before.st_mode) or (scanned and [before.st_dev, before.st_ino] != list(scanned)):
                    # another file (a hard link to a secret, a FIFO) took its name after the scan
                    entry["_replaced"] = True
                    vanished.append(entry)
                    continue
                info = tarfile.TarInfo(entry["path"])
                info.size = before.st_size
                info.mtime = before.st_mtime
                info.mode = stat.S_IMODE(before.st_mode)
                exact = _ExactReader(source, before.st_size, progress)
                reader = HashingReader(exact)   # the sha256 of the bytes stored, as they go into the tar
                archive.add_stream(info, reader)
                grew = bool(source.read(1))
                after = os.fstat(source.fileno())
            entry.update(size=before.st_size, mtime_ns=before.st_mtime_ns, mode=stat.S_IMODE(before.st_mode),
                         sha256=reader.digest.hexdigest())
            changed = after.st_mtime_ns != before.st_mtime_ns or after.st_size != before.st_size
            if exact.short or grew or changed:
                # stored as read; the recorded mtime is the one before, so the next backup takes it again
                entry["changed_while_read"] = True
            content += before.st_size
    return archive.digest, content, vanished


def write_index(document: dict, target: Path, part_size: int) -> tuple[Digest, int]:
    raw = json.dumps(document, sort_keys=True, separators=(",", ":")).encode()
    compressed = zstandard.ZstdCompressor(level=3, write_checksum=True).compress(raw)
    target.write_bytes(compressed)
    digest = StreamDigest(part_size)
    digest.update(compressed)
    return digest.finish(), len(raw)


def read_index(raw: bytes) -> dict:
    document = json.loads(zstandard.ZstdDecompressor().decompressobj().decompress(raw))
    if document.get("format") != INDEX_FORMAT:
        raise FileBackupError(f"unsupported file index format {document.get('format')!r}")
    return document


# --- one backup --------------------------------------------------------------------------------

@dataclass
class FilesBackupResult:
    manifest: Manifest
    uploaded_objects: int
    uploaded_bytes: int


def run_files_backup(*, database: str, backup_id: str, prefix: str, directories: list[Path], store,
                     workdir: Path, level: int, previous: Manifest | None, previous_index: dict | None,
                     base_reason: str, kms_key_id: str | None, airflow: dict, log: logging.Logger) -> Manifest:
    """Archive, upload and check one file backup; returns its manifest (not yet written).

    ``previous``/``previous_index`` are the backup to build on (None for a full one). On failure
    the objects uploaded are removed; no manifest is written.
    """
    missing = [str(d) for d in directories if not d.is_dir()]
    if missing:
        raise FileBackupError(f"configured file directories do not exist or are not directories: {missing} "
                              "(setting pgdr_file_dirs); nothing was uploaded", field="pgdr_file_dirs")
    started_at, started = utc_now_iso(), time.monotonic()
    before = {}
    if previous_index is not None:
        before = {(e["dir"], e["path"]): e for e in previous_index["entries"]}
    workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    progress = Progress("files read and archived", log)
    staged: list[StagedFile] = []
    all_entries: list[dict] = []
    skipped: list[dict] = []
    dirs_summary = []
    uploaded_keys: list[str] = []
    metadata = {"pgdr-backup-id": backup_id, "pgdr-database": database}
    try:
        for position, directory in enumerate(directories):
            entries, dir_skipped = scan_directory(directory)
            skipped.extend({"dir": str(directory), **s} for s in dir_skipped)
            fresh = []
            for entry in entries:
                entry["dir"] = str(directory)
                if entry["type"] != "file":
                    continue
                old = before.get((entry["dir"], entry["path"]))
                if unchanged(entry, old):
                    entry.update(sha256=old["sha256"], backup_id=old["backup_id"], object=old["object"])
                else:
                    fresh.append(entry)
            name = None
            if fresh:
                name = archive_name(position)
                path = workdir / name
                path.parent.mkdir(parents=True, exist_ok=True)
                digest, content, vanished = write_archive(directory, fresh, path, level, store.part_size, progress)
                for entry in vanished:
                    entries.remove(entry)
                    reason = ("replaced after the scan (by a symlink or another file); not followed"
                              if entry.pop("_replaced", False) else "vanished while the backup ran")
                    skipped.append({"dir": str(directory), "path": entry["path"], "type": "file", "reason": reason})
                for entry in fresh:
                    entry.update(backup_id=backup_id, object=name)
                staged.append(StagedFile(name, path, "files_archive", "zstd", content, digest))
                key = object_key(prefix, name)
                uploaded_keys.append(key)
                store.upload_file(path, key, digest, metadata, Progress(f"upload {name}", log))
            files = [e for e in entries if e["type"] == "file"]
            dirs_summary.append({"path": str(directory), "object": name, "files": len(files),
                                 "bytes": sum(e["size"] for e in files),
                                 "uploaded_files": sum(1 for e in files if e.get("backup_id") == backup_id),
                                 "uploaded_bytes": sum(e["size"] for e in files if e.get("backup_id") == backup_id)})
            for entry in entries:
                entry.pop("_id", None)  # the scan's inode: not part of the index
            all_entries.extend(entries)
        progress.finish()
        index = {"format": INDEX_FORMAT, "backup_id": backup_id, "database": database,
                 "dirs": dirs_summary, "entries": all_entries, "skipped": skipped}
        index_path = workdir / INDEX_NAME
        index_digest, index_raw = write_index(index, index_path, store.part_size)
        staged.append(StagedFile(INDEX_NAME, index_path, "file_index", "zstd", index_raw, index_digest))
        index_key = object_key(prefix, INDEX_NAME)
        uploaded_keys.append(index_key)
        store.upload_file(index_path, index_key, index_digest, metadata, Progress("upload index", log))
        objects = checked_objects(store, prefix, backup_id, staged)
    except BaseException:
        remove_partial_upload(store, uploaded_keys, log)
        raise
    files = [e for e in all_entries if e["type"] == "file"]
    holders = sorted({e["backup_id"] for e in files} - {backup_id})
    changed = [e for e in files if e.get("changed_while_read")]
    full_id = backup_id if previous is None else (previous.dump.get("full_backup_id") or previous.backup_id)
    uploaded = [e for e in files if e.get("backup_id") == backup_id]
    summary = {
        "tool": "pgdr files", "format": "tar (PAX) through zstd, one archive per directory, incremental",
        "full_backup_id": full_id, "incremental_of": previous.backup_id if previous else None,
        "depends_on": holders, "base_reason": base_reason, "directories": [str(d) for d in directories],
        "files": len(files), "bytes": sum(e["size"] for e in files),
        "symlinks": sum(1 for e in all_entries if e["type"] == "symlink"),
        "uploaded_files": len(uploaded), "uploaded_bytes": sum(e["size"] for e in uploaded),
        "skipped": len(skipped), "changed_while_read": len(changed),
        "seconds": {"total": round(time.monotonic() - started, 2)},
    }
    log.info("file backup %s: %d files (%d bytes) in %d directories; uploaded %d files (%d bytes) in %d objects; "
             "%d unchanged held by %s; %d symlinks; %d skipped (special files, listed in the index); "
             "%d changed while read (stored as read, taken again next time)", backup_id, summary["files"],
             summary["bytes"], len(directories), summary["uploaded_files"], summary["uploaded_bytes"],
             len(objects), len(files) - len(uploaded), holders or "none", summary["symlinks"], len(skipped),
             len(changed))
    return Manifest(
        backup_id=backup_id, kind="files", database=database, dbname="", started_at=started_at,
        finished_at=utc_now_iso(), server_version="", server_version_num=0, system_identifier=None,
        objects=objects, row_counts={},
        tool_versions={"pgdr": __version__, "zstandard": zstandard.__version__, "python": sys.version.split()[0]},
        encryption={"sse": store.expected_sse, "kms_key_id": kms_key_id or None},
        dump=summary, airflow=airflow,
    ).validate()


def bad_backup_ids(entries) -> set[str]:
    return {e.backup_id for e in entries if e.bad}


def utc_now() -> datetime:
    return datetime.now(timezone.utc)
