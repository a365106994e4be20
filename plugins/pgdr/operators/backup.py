"""Backup stage: take a logical or a physical (base) backup and upload it, then verify it and seal it
with its manifest."""

from __future__ import annotations

from typing import Any

from pgdr.operators.base import DatabaseOperator, PgdrBaseOperator


class _ServerBackupOperator(DatabaseOperator):
    """Shared mechanics of the logical and the physical backup: one protected database read through its
    connection, a staging directory removed on failure and kept ``pgdr_local_retention_days`` on
    success, and the draft manifest handed on (XCom) for :class:`SealBackupOperator`."""

    kind = ""

    def skip_reason(self, database: str) -> str | None:
        return None

    def prepare(self, work) -> None:
        """Before the backup, outside its clean-up: a directory made here that already exists is not ours."""

    def take(self, *, database: str, backup_id: str, prefix: str, target, connect, work, airflow: dict):
        raise NotImplementedError

    def describe(self, backup_id: str, manifest) -> str:
        raise NotImplementedError

    def execute(self, context) -> dict[str, Any]:
        from airflow.providers.postgres.hooks.postgres import PostgresHook
        from airflow.sdk.exceptions import AirflowSkipException

        from pgdr.core.pgtools import PgTarget
        from pgdr.store import staging
        from pgdr.store.manifest import backup_prefix, new_backup_id

        settings = self.settings
        database = self.require_protected(self.conn_id)
        reason = self.skip_reason(database)
        if reason:
            self.log.info("skipped: %s", reason)
            raise AirflowSkipException(reason)
        hook = PostgresHook(postgres_conn_id=database)
        target = PgTarget.from_connection(database, hook.connection)
        backup_id = new_backup_id()
        prefix = backup_prefix(settings.s3_prefix, database, self.kind, backup_id)
        work = staging.claim_work_dir(settings.staging_dir, database, self.kind, backup_id)
        self.prepare(work)
        ti = context["ti"]
        try:
            manifest = self.take(database=database, backup_id=backup_id, prefix=prefix, target=target,
                                 connect=hook.get_conn, work=work,
                                 airflow={"dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": ti.task_id})
        except BaseException:
            staging.discard(work)
            raise

        final = staging.keep(work)
        if settings.local_retention_days == 0:
            staging.discard(final)
        staging.prune(settings.staging_dir, database, self.kind, settings.local_retention_days, self.log)
        self.log.info("%s", self.describe(backup_id, manifest))
        return {"database": database, "backup_id": backup_id, "prefix": prefix, "manifest": manifest.to_dict()}


class LogicalBackupOperator(_ServerBackupOperator):
    """Dump one protected database with pg_dump and its cluster's globals, check, compress, upload.

    Returns (XCom) the backup's id, key prefix and draft manifest; nothing local.
    On failure the staging copy and any uploaded objects are removed, and no
    manifest is ever written, so nothing half-done is listed as a backup.

    :param conn_id: the protected postgres connection id (templated)
    """

    kind = "logical"

    def take(self, *, database, backup_id, prefix, target, connect, work, airflow):
        from pgdr.backup.logical import run_logical_backup

        settings = self.settings
        self.log.info("logical backup %s of %s to s3://%s/%s/", backup_id, target.describe(), settings.s3_bucket,
                      prefix)
        return run_logical_backup(
            database=database, backup_id=backup_id, prefix=prefix, target=target, connect=connect, store=self.store,
            workdir=work, bindir=settings.tool_dirs, jobs=settings.dump_jobs, level=settings.compression_level,
            include_role_passwords=settings.include_role_passwords, kms_key_id=settings.kms_key_id, airflow=airflow,
            log=self.log)

    def describe(self, backup_id, manifest) -> str:
        from pgdr.core.progress import human_bytes

        return (f"backup {backup_id}: {len(manifest.objects)} objects, {human_bytes(manifest.total_size)} stored "
                f"from {human_bytes(manifest.dump['raw_size'])} dumped, {len(manifest.row_counts)} tables, "
                f"{sum(manifest.row_counts.values())} rows, {manifest.dump['seconds']['total']:.1f} s")


class PhysicalBackupOperator(_ServerBackupOperator):
    """Copy the cluster of one protected database with pg_basebackup, prove the copy with
    pg_verifybackup, then upload it as one ``data.tar.zst`` beside its ``backup_manifest``.

    Returns (XCom) the backup's id, key prefix and draft manifest (kind ``base``, with its WAL
    range); nothing local. A copy pg_verifybackup rejects is never uploaded; on any failure the
    staging copy and any uploaded objects are removed and no manifest is written. Skipped when
    ``pgdr_physical_backups`` is false. On PostgreSQL 17+ it is an incremental against the newest good
    base backup while the chain policy allows (pgdr_incremental_backups, pgdr_full_backup_days,
    pgdr_max_incremental_chain; :mod:`pgdr.backup.chain`), else a full, the reason logged and in the manifest.

    :param conn_id: the protected postgres connection id (templated)
    """

    kind = "base"

    def skip_reason(self, database):
        if self.settings.physical_backups:
            return None
        return (f"physical backups are off (pgdr_physical_backups=false): no base backup of {database}; "
                "point-in-time recovery needs one")

    def prepare(self, work):
        work.mkdir(mode=0o700)  # the copy holds health records: readable by this user only

    def take(self, *, database, backup_id, prefix, target, connect, work, airflow):
        from pgdr.backup.base import run_base_backup
        from pgdr.backup.chain import ChainPolicy

        settings = self.settings
        self.log.info("base backup %s of the cluster of %s to s3://%s/%s/", backup_id, target.describe(),
                      settings.s3_bucket, prefix)
        return run_base_backup(
            database=database, backup_id=backup_id, prefix=prefix, target=target, connect=connect, store=self.store,
            workdir=work, bindir=settings.tool_dirs, level=settings.compression_level,
            kms_key_id=settings.kms_key_id, airflow=airflow, log=self.log, policy=ChainPolicy.from_settings(settings))

    def describe(self, backup_id, manifest) -> str:
        from pgdr.core.progress import human_bytes

        kind = (f"incremental against {manifest.depends_on} (chain of {len(manifest.chain)})" if manifest.depends_on
                else "full")
        return (f"base backup {backup_id} ({kind}): {human_bytes(manifest.total_size)} stored from a "
                f"{human_bytes(manifest.dump['cluster_size'])} cluster (tar {human_bytes(manifest.dump['raw_size'])}), "
                f"WAL {manifest.wal['start_lsn']} .. {manifest.wal['end_lsn']}, "
                f"{manifest.dump['seconds']['total']:.1f} s")


class SealBackupOperator(PgdrBaseOperator):
    """Check every uploaded object in S3 (size, server-computed SHA-256, encryption), then write
    ``manifest.json`` last and emit an event naming the backup on each of its Asset outlets.

    :param backup: the XCom result of :class:`LogicalBackupOperator` or :class:`PhysicalBackupOperator`
        (templated)
    """

    template_fields = ("backup",)

    def __init__(self, *, backup: Any, **kwargs) -> None:
        super().__init__(**kwargs)
        self.backup = backup

    def execute(self, context) -> dict[str, Any]:
        from pgdr.core.progress import human_bytes
        from pgdr.store.layout import manifest_key as manifest_key_of
        from pgdr.store.manifest import Manifest
        from pgdr.store.s3 import UploadCheckError

        manifest = Manifest.from_dict(self.backup["manifest"])
        self.conn_id = manifest.database
        prefix = self.backup["prefix"]
        # a retry after a worker died just after writing the manifest finds its own manifest there
        sealed = self.store.holds_manifest(prefix, manifest)
        problems = self.store.check_backup(prefix, manifest.objects, sealed=sealed)
        if problems:
            raise UploadCheckError(f"backup {manifest.backup_id} failed its check before sealing; no manifest "
                                   f"written: " + " | ".join(problems[:10]))
        self.log.info("all %d objects verified in S3: sizes, SHA-256 computed by S3, encryption %s",
                      len(manifest.objects), self.store.expected_sse)
        if sealed:
            manifest_key = manifest_key_of(prefix)
            self.log.info("manifest.json was already written by an earlier try of this task; not written again")
        else:
            manifest_key = self.store.put_manifest(prefix, manifest)
        self.log.info("sealed backup %s of %s: s3://%s/%s (%d objects, %s)", manifest.backup_id,
                      manifest.database, self.store.bucket, manifest_key, len(manifest.objects),
                      human_bytes(manifest.total_size))
        if manifest.depends_on:
            from pgdr.retain.object_lock import lock_chain_as_long

            # a restore of this incremental needs every earlier piece as long as this one is kept
            for extended in lock_chain_as_long(self.store, manifest.database, manifest):
                self.log.info("chain piece %s: %d objects locked until %s, as long as this incremental",
                              extended["backup_id"], extended["objects"], extended["until"])
        from airflow.sdk import Asset

        extra = {"database": manifest.database, "kind": manifest.kind, "backup_id": manifest.backup_id,
                 "manifest_key": manifest_key, "bucket": self.store.bucket, "size": manifest.total_size}
        for outlet in self.outlets:
            if isinstance(outlet, Asset):
                context["outlet_events"][outlet].extra = extra
        return {**extra, "objects": len(manifest.objects), "tables": len(manifest.row_counts),
                "rows": sum(manifest.row_counts.values())}


class _StagedBackupOperator(DatabaseOperator):
    """Shared mechanics of the file and configuration backups: one protected database, a staging
    directory removed afterwards (the content already lives where it was read from), skipped with
    the reason when nothing is configured for the database."""

    kind = ""

    def configured(self, database: str):
        raise NotImplementedError

    def take(self, *, database: str, backup_id: str, prefix: str, configured, work, airflow: dict):
        raise NotImplementedError

    def execute(self, context) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowSkipException

        from pgdr.backup.upload import discard_dead_partials, report_dead_runs
        from pgdr.store import staging
        from pgdr.store.manifest import backup_prefix, new_backup_id

        settings = self.settings
        database = self.require_protected(self.conn_id)
        configured = self.configured(database)
        if not configured:
            setting = "pgdr_file_dirs" if self.kind == "files" else "pgdr_config_files"
            reason = f"no {self.kind} backup of {database}: {setting} lists nothing for it"
            self.log.info("skipped: %s", reason)
            raise AirflowSkipException(reason)
        backup_id = new_backup_id()
        prefix = backup_prefix(settings.s3_prefix, database, self.kind, backup_id)
        work = staging.claim_work_dir(settings.staging_dir, database, self.kind, backup_id)
        # pg_backup_daily runs one at a time (max_active_runs=1) and this task once per database and
        # kind, so a .partial here or an open upload is a dead worker's (there is no lock to hold)
        discard_dead_partials(work, f"{self.kind} backup", self.log)
        report_dead_runs(self.store, prefix, self.log)
        ti = context["ti"]
        self.log.info("%s backup %s of %s (%d paths) to s3://%s/%s/", self.kind, backup_id, database,
                      len(configured), settings.s3_bucket, prefix)
        try:
            manifest = self.take(database=database, backup_id=backup_id, prefix=prefix, configured=configured,
                                 work=work, airflow={"dag_id": ti.dag_id, "run_id": ti.run_id, "task_id": ti.task_id})
        finally:
            # archives of files that stay on disk, and sealed secrets: no reason to keep a copy here
            staging.discard(work)
        return {"database": database, "backup_id": backup_id, "prefix": prefix, "manifest": manifest.to_dict()}


class FilesBackupOperator(_StagedBackupOperator):
    """Archive the directories ``pgdr_file_dirs`` lists for one protected database (tar through zstd,
    streamed while the files are read, a per-file index), incremental on the newest good file backup;
    upload and check. Returns (XCom) the id, prefix and draft manifest for :class:`SealBackupOperator`.
    Skipped when no directory is configured for the database.

    :param conn_id: the protected postgres connection id (templated)
    """

    kind = "files"

    def configured(self, database: str):
        return self.settings.file_dirs.get(database, ())

    def take(self, *, database, backup_id, prefix, configured, work, airflow):
        from pgdr.backup.files import bad_backup_ids, choose_previous, run_files_backup, utc_now
        from pgdr.backup.files_reader import load_entries
        from pgdr.store.catalog import newest_good
        from pgdr.store.layout import backup_prefix, manifest_key

        entries = self.store.catalog(database, "files")
        newest = newest_good(entries)
        previous = index = None
        if newest is not None:
            previous_prefix = backup_prefix(self.store.prefix, database, "files", newest.backup_id)
            previous = self.store.read_manifest(manifest_key(previous_prefix))
        use, reason = choose_previous(previous, bad_backup_ids(entries), utc_now())
        if use:
            index = {"entries": load_entries(self.store, previous, previous_prefix, work / "previous")}
        else:
            previous = None
        self.log.info("%s", reason)
        return run_files_backup(database=database, backup_id=backup_id, prefix=prefix,
                                directories=list(configured), store=self.store, workdir=work,
                                level=self.settings.compression_level, previous=previous, previous_index=index,
                                base_reason=reason, kms_key_id=self.settings.kms_key_id, airflow=airflow,
                                log=self.log)


class ConfigBackupOperator(_StagedBackupOperator):
    """Archive the files ``pgdr_config_files`` lists for one protected database; ``.env`` files and
    those ``pgdr_secret_files`` names are sealed client-side (envelope encryption: a per-backup data
    key wrapped by the key in connection ``pgdr_config_key_conn_id``, or by KMS when
    ``pgdr_kms_key_id`` is set) before upload. A listed file that is missing fails the task before
    anything is uploaded. Skipped when nothing is configured for the database.

    :param conn_id: the protected postgres connection id (templated)
    """

    kind = "config"

    def configured(self, database: str):
        return self.settings.config_files.get(database, ())

    def take(self, *, database, backup_id, prefix, configured, work, airflow):
        from pgdr.backup.config import is_secret, read_config_files, run_config_backup
        from pgdr.core.envelope import wrapper_from_settings

        settings = self.settings
        read_config_files(configured)  # every listed file is there, before any key or upload
        wrapper = None
        if any(is_secret(path, settings.secret_files) for path in configured):
            wrapper = wrapper_from_settings(settings)
        return run_config_backup(database=database, backup_id=backup_id, prefix=prefix, paths=tuple(configured),
                                 secret_files=settings.secret_files, wrapper=wrapper, store=self.store,
                                 workdir=work, level=settings.compression_level, kms_key_id=settings.kms_key_id,
                                 airflow=airflow, log=self.log)
