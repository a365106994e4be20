"""The physical base backup of one protected database's cluster, from pg_basebackup to checked objects in S3.

pg_basebackup copies the cluster, pg_verifybackup proves the copy before anything is
uploaded, the copy goes up as one ``data.tar.zst`` beside its ``backup_manifest``, and
both objects are checked in S3 (size, S3's own SHA-256, encryption). The result is the
manifest (kind ``base``, with the WAL range) that the seal step writes last.
Airflow-free, like :mod:`pgdr.backup.logical`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path

from pgdr import __version__
from pgdr.backup.chain import ChainPolicy, store_chooser
from pgdr.backup.logical import staging_full
from pgdr.backup.pg_basebackup import FORMAT, PhysicalBackup
from pgdr.backup.upload import checked_objects, remove_partial_upload, report_dead_runs
from pgdr.core.compression import zstandard_version
from pgdr.core.pgtools import PgTarget
from pgdr.store.layout import object_key
from pgdr.store.manifest import Manifest, utc_now_iso
from pgdr.store.s3 import BackupStore, UploadQueue


def run_base_backup(*, database: str, backup_id: str, prefix: str, target: PgTarget, connect: Callable[[], object],
                    store: BackupStore, workdir: Path, bindir: Path, level: int, kms_key_id: str | None,
                    airflow: dict, log: logging.Logger, policy: ChainPolicy | None = None) -> Manifest:
    """Take, verify, upload and check one base backup; returns its manifest (not yet written).

    On PostgreSQL 17+ it is an incremental against the newest good base backup when ``policy`` (the
    pgdr_incremental_backups, pgdr_full_backup_days and pgdr_max_incremental_chain settings; their
    defaults when None) allows it (:mod:`pgdr.backup.chain`); the manifest says which, against what, and why.

    A copy that pg_verifybackup rejects is never uploaded. On a failure after the upload began,
    the objects it uploaded are removed (best effort; without a manifest they are never listed).
    """
    started = time.monotonic()
    try:
        with PhysicalBackup(target=target, connect=connect, workdir=workdir, bindir=bindir, level=level,
                            part_size=store.part_size, label=f"pgdr-{backup_id}", log=log,
                            choose=store_chooser(store, database, policy or ChainPolicy(), log)) as backup:
            copy = backup.run()
            report_dead_runs(store, prefix, log)  # under the backup's lock: no other base backup runs
    except Exception as err:  # our own write, or a tool's ("could not write ...: No space left on device")
        full = staging_full(err, workdir)
        if full is not None:
            raise full from err
        raise

    uploads = UploadQueue(store, workers=2)
    metadata = {"pgdr-backup-id": backup_id, "pgdr-database": database}
    try:
        upload_started = time.monotonic()
        for f in copy.files:
            uploads.submit(f.path, object_key(prefix, f.name), f.digest, metadata)
        uploads.finish()
        upload_seconds = time.monotonic() - upload_started
        check_started = time.monotonic()
        objects = checked_objects(store, prefix, backup_id, copy.files)
        check_seconds = time.monotonic() - check_started
    except BaseException:
        uploads.cancel()
        remove_partial_upload(store, uploads.keys, log)
        raise
    log.info("post-upload check passed for both objects: size, SHA-256 computed by S3, encryption %s",
             store.expected_sse)
    chain = copy.choice.describe()
    seconds = {**copy.seconds, "upload": round(upload_seconds, 2), "check": round(check_seconds, 2),
               "total": round(time.monotonic() - started, 2)}
    return Manifest(
        backup_id=backup_id, kind="base", database=database, dbname=target.dbname,
        started_at=copy.started_at, finished_at=utc_now_iso(), server_version=copy.server_version,
        server_version_num=copy.server_version_num, system_identifier=copy.system_identifier,
        objects=objects, row_counts={},
        tool_versions={**copy.tool_versions, "pgdr": __version__, "zstandard": zstandard_version()},
        encryption={"sse": store.expected_sse, "kms_key_id": kms_key_id or None},
        dump={"tool": "pg_basebackup", "format": FORMAT, "wal_method": "stream", "label": copy.label,
              "compression": f"zstd:{copy.level} (backup_manifest uncompressed)", "level": copy.level,
              "cluster_size": copy.cluster_size, "raw_size": copy.raw_size, "seconds": seconds,
              "backup_type": chain["backup_type"], "chain": chain["chain"],
              "backup_type_reason": chain["backup_type_reason"]},
        wal=copy.wal,
        airflow=airflow,
        depends_on=chain["depends_on"],
    ).validate()
