"""The logical backup of one database, from snapshot to checked objects in S3.

Dump, compression and upload overlap: each table's file is uploaded as soon as
it is compressed, while pg_dump is still writing the others. Every object is
then checked in S3 (size, S3's own SHA-256, encryption). The result is the
manifest that the seal step writes last. Airflow-free, so the operator and
bench/ run exactly the same work.
"""

from __future__ import annotations

import errno
import logging
import time
from collections.abc import Callable
from pathlib import Path

from pgdr import __version__
from pgdr.backup.pg_dump import LogicalBackup
from pgdr.backup.upload import checked_objects, remove_partial_upload, report_dead_runs
from pgdr.core.compression import zstandard_version
from pgdr.core.pgtools import PgTarget, PgToolError
from pgdr.errors import PgdrError
from pgdr.store.layout import object_key
from pgdr.store.manifest import Manifest, utc_now_iso
from pgdr.store.s3 import BackupStore, UploadQueue


def run_logical_backup(*, database: str, backup_id: str, prefix: str, target: PgTarget,
                       connect: Callable[[], object], store: BackupStore, workdir: Path, bindir: Path,
                       jobs: int, level: int, include_role_passwords: bool, kms_key_id: str | None,
                       airflow: dict, log: logging.Logger) -> Manifest:
    """Take, upload and check one logical backup; returns its manifest (not yet written).

    On failure the objects it uploaded are removed (best effort: when S3 itself is
    down they stay, without a manifest, and are never listed).
    """
    started = time.monotonic()
    uploads = UploadQueue(store, workers=jobs)
    metadata = {"pgdr-backup-id": backup_id, "pgdr-database": database}

    def upload(dumped) -> None:
        uploads.submit(dumped.path, object_key(prefix, dumped.name), dumped.digest, metadata)

    try:
        with LogicalBackup(target=target, connect=connect, workdir=workdir, bindir=bindir, jobs=jobs, level=level,
                           part_size=store.part_size, include_role_passwords=include_role_passwords, log=log,
                           on_file=upload) as backup:
            dump = backup.run()
            report_dead_runs(store, prefix, log)  # under the backup's lock: no other run of this kind
        upload_started = time.monotonic()
        uploads.finish()
        upload_tail = time.monotonic() - upload_started
        check_started = time.monotonic()
        objects = checked_objects(store, prefix, backup_id, dump.files)
        check_seconds = time.monotonic() - check_started
    except BaseException as err:
        uploads.cancel()
        remove_partial_upload(store, uploads.keys, log)
        full = staging_full(err, workdir)
        if full is not None:
            raise full from err
        raise
    log.info("post-upload check passed for all %d objects: size, SHA-256 computed by S3, encryption %s",
             len(objects), store.expected_sse)
    seconds = {**{k: round(v, 2) for k, v in dump.seconds.items()}, "upload_after_dump": round(upload_tail, 2),
               "check": round(check_seconds, 2), "total": round(time.monotonic() - started, 2)}
    return Manifest(
        backup_id=backup_id, kind="logical", database=database, dbname=target.dbname,
        started_at=dump.started_at, finished_at=utc_now_iso(), server_version=dump.server_version,
        server_version_num=dump.server_version_num, system_identifier=dump.system_identifier,
        objects=objects, row_counts=dump.row_counts,
        tool_versions={**dump.tool_versions, "pgdr": __version__, "zstandard": zstandard_version()},
        encryption={"sse": store.expected_sse, "kms_key_id": kms_key_id or None},
        dump={"tool": "pg_dump", "format": "directory", "jobs": dump.jobs,
              "compression": f"zstd:{dump.level} per file (toc.dat uncompressed)",
              "snapshot": dump.snapshot_id, "raw_size": dump.raw_size, "seconds": seconds},
        airflow=airflow,
    ).validate()


class StagingFull(PgdrError, OSError):
    """The staging disk filled up while a backup was written there."""


def staging_full(err: BaseException, workdir: Path) -> StagingFull | None:
    """A clear error naming the setting when ``err`` is the staging disk running full (our own write,
    or a PostgreSQL tool's: :attr:`PgToolError.disk_full`), else None."""
    tool_full = isinstance(err, PgToolError) and err.disk_full
    if not ((isinstance(err, OSError) and err.errno == errno.ENOSPC) or tool_full):
        return None
    return StagingFull(errno.ENOSPC, f"the staging disk is full (No space left on device) under {workdir.parent} "
                       "while the backup was written there (setting pgdr_staging_dir); the partial copy is removed "
                       "and nothing is listed. Point pgdr_staging_dir at a disk with room for the largest "
                       "compressed backup (see the sizes in earlier manifests), or free space there")
