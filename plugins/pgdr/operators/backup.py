"""Backup stage: take a logical backup and upload it, then verify it and seal it with its manifest."""

from __future__ import annotations

from typing import Any

from pgdr.operators.base import PgdrBaseOperator


class LogicalBackupOperator(PgdrBaseOperator):
    """Dump one protected database with pg_dump and its cluster's globals, check, compress, upload.

    Returns (XCom) the backup's id, key prefix and draft manifest; nothing local.
    On failure the staging copy and any uploaded objects are removed, and no
    manifest is ever written, so nothing half-done is listed as a backup.

    :param conn_id: the protected postgres connection id (templated)
    """

    template_fields = ("conn_id",)

    def __init__(self, *, conn_id: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id

    def execute(self, context) -> dict[str, Any]:
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        from pgdr import __version__, staging
        from pgdr.compression import zstandard_version
        from pgdr.logical import LogicalBackup
        from pgdr.manifest import Manifest, ObjectEntry, backup_prefix, new_backup_id, utc_now_iso
        from pgdr.pgtools import PgTarget
        from pgdr.progress import human_bytes

        settings = self.settings
        database = self.require_protected(self.conn_id)
        hook = PostgresHook(postgres_conn_id=database)
        target = PgTarget.from_connection(database, hook.connection)
        backup_id = new_backup_id()
        prefix = backup_prefix(settings.s3_prefix, database, "logical", backup_id)
        work = staging.work_dir(settings.staging_dir, database, "logical", backup_id)
        work.parent.mkdir(parents=True, exist_ok=True)
        if work.exists():
            raise RuntimeError(f"staging directory {work} already exists; another backup is writing there")
        self.log.info("logical backup %s of %s to s3://%s/%s/", backup_id, target.describe(),
                      settings.s3_bucket, prefix)

        attempted_keys: list[str] = []
        try:
            with LogicalBackup(target=target, connect=hook.get_conn, workdir=work, bindir=settings.pg_bindir,
                               jobs=settings.dump_jobs, level=settings.compression_level,
                               part_size=settings.part_size,
                               include_role_passwords=settings.include_role_passwords, log=self.log) as backup:
                dump = backup.run()
                metadata = {"pgdr-backup-id": backup_id, "pgdr-database": database}
                items = [(f.path, f"{prefix}/{f.name}", f.digest.sha256, metadata) for f in dump.files]
                attempted_keys = [key for _, key, _, _ in items]
                upload_seconds = self.store.upload_files(items, workers=settings.dump_jobs)
        except BaseException:
            staging.discard(work)
            if attempted_keys:
                self._remove_partial_upload(attempted_keys)
            raise

        objects = [
            ObjectEntry(name=f.name, key=f"{prefix}/{f.name}", size=f.digest.size, sha256=f.digest.sha256,
                        role=f.role, compression=f.compression, raw_size=f.raw_size,
                        s3_checksum=f.digest.s3_checksum(self.store.is_multipart(f.digest.size)))
            for f in dump.files
        ]
        ti = context["ti"]
        manifest = Manifest(
            backup_id=backup_id, kind="logical", database=database, dbname=target.dbname,
            started_at=dump.started_at, finished_at=utc_now_iso(), server_version=dump.server_version,
            server_version_num=dump.server_version_num, system_identifier=dump.system_identifier,
            objects=objects, row_counts=dump.row_counts,
            tool_versions={**dump.tool_versions, "pgdr": __version__, "zstandard": zstandard_version()},
            encryption={"sse": self.store.expected_sse, "kms_key_id": settings.kms_key_id or None},
            dump={"tool": "pg_dump", "format": "directory", "jobs": dump.jobs,
                  "compression": f"zstd:{dump.level} per file (toc.dat uncompressed)",
                  "snapshot": dump.snapshot_id, "raw_size": dump.raw_size,
                  "seconds": {**{k: round(v, 2) for k, v in dump.seconds.items()}, "upload": round(upload_seconds, 2)}},
            airflow={"dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": ti.task_id},
        ).validate()

        final = staging.keep(work)
        if settings.local_retention_days == 0:
            staging.discard(final)
        staging.prune(settings.staging_dir, database, "logical", settings.local_retention_days, self.log)
        self.log.info("uploaded %d objects, %s (raw %s), %d tables, %d rows", len(objects),
                      human_bytes(manifest.total_size), human_bytes(dump.raw_size), len(dump.row_counts),
                      sum(dump.row_counts.values()))
        return {"database": database, "backup_id": backup_id, "prefix": prefix, "manifest": manifest.to_dict()}

    def _remove_partial_upload(self, keys: list[str]) -> None:
        try:
            self.store.delete_keys(keys)
            self.log.warning("removed the partial upload (%d objects); no manifest was written", len(keys))
        except Exception as err:  # noqa: BLE001 - the store may be the thing that is down
            self.log.warning("could not remove the partial upload (%s); it has no manifest, so it is "
                             "never listed, restored or counted", type(err).__name__)


class SealBackupOperator(PgdrBaseOperator):
    """Check every uploaded object in S3 (size, server-computed SHA-256, encryption), then write
    ``manifest.json`` last and emit an Asset event naming the backup.

    :param backup: the XCom result of :class:`LogicalBackupOperator` (templated)
    """

    template_fields = ("backup",)

    def __init__(self, *, backup: Any, **kwargs) -> None:
        super().__init__(**kwargs)
        self.backup = backup

    def execute(self, context) -> dict[str, Any]:
        from pgdr.manifest import MANIFEST_NAME, Manifest
        from pgdr.progress import human_bytes
        from pgdr.storage import UploadCheckError

        manifest = Manifest.from_dict(self.backup["manifest"])
        self.conn_id = manifest.database
        prefix = self.backup["prefix"]
        checks = [self.store.check_object(o.key, o.size, o.sha256, o.s3_checksum) for o in manifest.objects]
        problems = [f"{check.key}: {'; '.join(check.problems)}" for check in checks if not check.ok]
        listed = {o.key for o in manifest.objects}
        stray = [key for key in self.store.list_keys(prefix) if key not in listed]
        problems += [f"{key}: not part of this backup" for key in stray if not key.endswith("/" + MANIFEST_NAME)]
        if any(key.endswith("/" + MANIFEST_NAME) for key in stray):
            problems.append(f"{prefix}/{MANIFEST_NAME} already exists")
        if problems:
            raise UploadCheckError(f"backup {manifest.backup_id} failed its post-upload check; no manifest "
                                   f"written: " + " | ".join(problems[:10]))
        self.log.info("all %d objects verified in S3: sizes, SHA-256 computed by S3, encryption %s",
                      len(checks), self.store.expected_sse)
        manifest_key = self.store.put_manifest(prefix, manifest)
        self.log.info("sealed backup %s of %s: s3://%s/%s (%d objects, %s)", manifest.backup_id,
                      manifest.database, self.store.bucket, manifest_key, len(manifest.objects),
                      human_bytes(manifest.total_size))
        from pgdr.assets import LOGICAL_BACKUP

        extra = {"database": manifest.database, "kind": manifest.kind, "backup_id": manifest.backup_id,
                 "manifest_key": manifest_key, "bucket": self.store.bucket, "size": manifest.total_size}
        context["outlet_events"][LOGICAL_BACKUP].extra = extra
        return {**extra, "objects": len(manifest.objects), "tables": len(manifest.row_counts),
                "rows": sum(manifest.row_counts.values())}
