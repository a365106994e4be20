"""
### pg_backup_daily

Daily logical and physical backups of every protected database (setting `pgdr_databases`),
one mapped task group per database, with two branches that run side by side:

1. `dump_and_upload`: pg_dump (directory format, parallel, one snapshot) and the cluster's
   globals, checked with `pg_restore --list`, compressed with zstd, uploaded to S3 with
   server-side encryption and a SHA-256 checksum per object;
2. `verify_and_seal`: every object checked in S3 (size, SHA-256 computed by S3, encryption),
   then `manifest.json` written last and an Asset event emitted.

and, unless `pgdr_physical_backups` is false (then they are skipped):

1. `base_backup`: pg_basebackup of the database's cluster (plain, WAL streamed), proved by
   pg_verifybackup before anything is uploaded, then one `data.tar.zst` (zstd) and the
   `backup_manifest` uploaded encrypted and checksummed; the base point-in-time recovery starts from;
2. `seal_base`: the same check in S3, then `manifest.json` (with the WAL range) written last.

and, for a database with directories in `pgdr_file_dirs` / files in `pgdr_config_files` (else skipped):

1. `files_backup`: each directory archived as a stream (tar through zstd) with a per-file index
   (path, size, mtime, sha256); only new or changed files uploaded, unchanged ones point at the
   backup holding them (a full backup again once the chain's full one is 7 days old); `seal_files`;
2. `config_backup`: the listed files archived; `.env` files and `pgdr_secret_files` sealed
   client-side (AES-256-GCM, a per-backup data key wrapped by the `pgdr_config_key_conn_id`
   connection's key or KMS); `seal_config`.

A failed or partial run leaves no manifest behind; failures are posted to Slack.
See docs/operations.md and docs/configuration.md.
"""

from datetime import timedelta

import pendulum
from airflow.sdk import task_group

from pgdr.alerts.deadlines import DeadlineDAG, deadline_alert
from pgdr.alerts.slack import on_task_failure
from pgdr.assets import BASE_BACKUP, CONFIG_BACKUP, FILES_BACKUP, LOGICAL_BACKUP
from pgdr.operators.backup import (
    ConfigBackupOperator,
    FilesBackupOperator,
    LogicalBackupOperator,
    PhysicalBackupOperator,
    SealBackupOperator,
)
from pgdr.operators.base import ProtectedDatabasesOperator
from pgdr.settings import deadline_minutes

with DeadlineDAG(
    dag_id="pg_backup_daily",
    description="Daily encrypted, checksummed, verified logical, base, file and configuration backups to S3",
    schedule="0 2 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    max_active_tasks=8,
    dagrun_timeout=timedelta(hours=6),
    deadline=deadline_alert("pg_backup_daily", deadline_minutes("backup_deadline_minutes")),
    default_args={
        "owner": "data-platform",
        "retries": 2,
        "retry_delay": timedelta(minutes=5),
        "retry_exponential_backoff": True,
        "max_retry_delay": timedelta(minutes=30),
        "on_failure_callback": on_task_failure,
    },
    tags=["pgdr", "backup"],
    doc_md=__doc__,
) as dag:
    databases = ProtectedDatabasesOperator(task_id="protected_databases", retries=0)

    @task_group(group_id="backup")
    def backup_database(conn_id: str):
        dump = LogicalBackupOperator(task_id="dump_and_upload", conn_id=conn_id)
        SealBackupOperator(task_id="verify_and_seal", backup=dump.output, outlets=[LOGICAL_BACKUP])
        base = PhysicalBackupOperator(task_id="base_backup", conn_id=conn_id)
        SealBackupOperator(task_id="seal_base", backup=base.output, outlets=[BASE_BACKUP])
        files = FilesBackupOperator(task_id="files_backup", conn_id=conn_id)
        SealBackupOperator(task_id="seal_files", backup=files.output, outlets=[FILES_BACKUP])
        config = ConfigBackupOperator(task_id="config_backup", conn_id=conn_id)
        SealBackupOperator(task_id="seal_config", backup=config.output, outlets=[CONFIG_BACKUP])

    backup_database.expand(conn_id=databases.output)
