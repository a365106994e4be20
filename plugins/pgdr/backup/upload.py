"""From staging to checked objects in S3: the one staged-file type every backup kind hands on, the
post-upload check, and what a failed or dead run leaves behind (its partial upload, its staging
directory, its open multipart uploads).

Every kind writes its files in a staging directory first, describes each as a :class:`StagedFile`
(name in the backup directory, local path, digest of the bytes to upload, role, compression, raw
size), uploads them, and turns them into manifest entries with :func:`checked_objects` only after S3
confirmed each one.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

from pgdr.core.checksums import Digest
from pgdr.store import staging
from pgdr.store.layout import object_key
from pgdr.store.manifest import ObjectEntry
from pgdr.store.s3 import BackupStore, UploadCheckError


@dataclass(frozen=True)
class StagedFile:
    """A file written in staging, ready for upload and :func:`checked_objects`."""

    name: str            # relative to the backup directory, e.g. dump/3456.dat.zst
    path: Path
    role: str
    compression: str
    raw_size: int
    digest: Digest


def checked_objects(store: BackupStore, prefix: str, backup_id: str, files) -> list[ObjectEntry]:
    """The manifest entries of uploaded files, after S3 confirmed each one (size, SHA-256, encryption)."""
    objects = [
        ObjectEntry(name=f.name, key=object_key(prefix, f.name), size=f.digest.size, sha256=f.digest.sha256,
                    role=f.role, compression=f.compression, raw_size=f.raw_size,
                    s3_checksum=f.digest.s3_checksum(store.is_multipart(f.digest.size)))
        for f in files
    ]
    problems = store.check_backup(prefix, objects)
    if problems:
        raise UploadCheckError(f"backup {backup_id} failed its post-upload check: " + " | ".join(problems[:10]))
    return objects


def remove_partial_upload(store: BackupStore, keys: list[str], log: logging.Logger) -> None:
    if not keys:
        return
    try:
        store.delete_keys(keys)
        log.warning("removed the partial upload (%d objects); no manifest was written", len(keys))
    except Exception as err:  # noqa: BLE001 - the store may be the thing that is down
        log.warning("could not remove the partial upload (%s); it has no manifest, so it is never listed, "
                    "restored or counted", type(err).__name__)


def report_dead_runs(store: BackupStore, prefix: str, log: logging.Logger) -> None:
    """Abort the open multipart uploads of workers killed mid-backup of this database and kind, and
    report their incomplete backups; best effort (S3 trouble shows in this run's own upload)."""
    base = prefix.rstrip("/").rsplit("/", 1)[0] + "/"
    try:
        aborted, incomplete = store.dead_runs(base, prefix)
    except Exception as err:  # noqa: BLE001 - the run's own upload reports S3 trouble
        log.warning("could not look for uploads left by a dead run (%s)", type(err).__name__)
        return
    if aborted:
        log.warning("aborted %d multipart upload(s) left open by a run that died mid-upload: %s", len(aborted),
                    ", ".join(aborted[:10]))
    if incomplete:
        log.warning("%d earlier backup(s) have objects but no manifest (a run failed or died): %s; never "
                    "listed, restored or counted; retention removes them once a day old", len(incomplete),
                    ", ".join(incomplete[:10]))


def discard_dead_partials(workdir: Path, what: str, log: logging.Logger) -> list[str]:
    """Remove every other ``.partial`` beside ``workdir``: the staging directories of workers that died
    mid-backup (health records, and disk the next backup needs), now rather than after a day.

    Only for a caller that knows no other backup of this kind of this database runs (it holds the
    backup's advisory lock, or the DAG runs one at a time). Returns the names removed."""
    removed = []
    if workdir.parent.is_dir():
        for dead in sorted(workdir.parent.glob(f"*{staging.PARTIAL}")):
            if dead.name != workdir.name and dead.is_dir() and not dead.is_symlink():
                staging.discard(dead)
                removed.append(dead.name)
                log.warning("removed %s, the staging directory of a %s that died mid-run", dead.name, what)
    return removed
