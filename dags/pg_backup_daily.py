"""
### pg_backup_daily

Daily logical and physical backups of every protected database (setting `pgdr_databases`),
one mapped task group per database, with two branches that run side by side:

1. `dump_and_upload` ("logical backup" in the graph): pg_dump (directory format, parallel, one
   snapshot) and the cluster's globals, checked with `pg_restore --list`, compressed with zstd,
   uploaded to S3 with server-side encryption and a SHA-256 checksum per object;
2. `verify_and_seal` ("seal logical backup"): every object checked in S3 (size, SHA-256 computed
   by S3, encryption), then `manifest.json` written last and an Asset event emitted.

and, unless `pgdr_physical_backups` is false (then they are skipped):

1. `base_backup` ("base backup"): pg_basebackup of the database's cluster (plain, WAL streamed),
   proved by pg_verifybackup before anything is uploaded, then one `data.tar.zst` (zstd) and the
   `backup_manifest` uploaded encrypted and checksummed; the base point-in-time recovery starts from;
2. `seal_base` ("seal base backup"): the same check in S3, then `manifest.json` (with the WAL range)
   written last.

and, for a database with directories in `pgdr_file_dirs` / files in `pgdr_config_files` (else skipped):

1. `files_backup`: each directory archived as a stream (tar through zstd) with a per-file index
   (path, size, mtime, sha256); only new or changed files uploaded, unchanged ones point at the
   backup holding them (a full backup again once the chain's full one is 7 days old); `seal_files`;
2. `config_backup`: the listed files archived; `.env` files and `pgdr_secret_files` sealed
   client-side (AES-256-GCM, a per-backup data key wrapped by the `pgdr_config_key_conn_id`
   connection's key or KMS); `seal_config`.

Each mapped task is labelled with its database. A failed or partial run leaves no manifest behind;
failures are posted to Slack. See [operations](/pgdr-docs/operations.md) and
[configuration](/pgdr-docs/configuration.md).
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

BY_DATABASE = "{{ task.conn_id }}"
SEALED_DATABASE = "{{ task.backup.manifest.database }}"   # the backup's XCom, rendered before the seal runs

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

    # The graph and grid read by kind ("logical backup", "seal logical backup") and by database (a
    # mapped task is labelled with its connection id, not [0]); the task ids stay what tests,
    # deadlines and docs name.
    @task_group(group_id="backup")
    def backup_database(conn_id: str):
        for kind, backup_operator, backup_id, seal_id, asset in (
                ("logical", LogicalBackupOperator, "dump_and_upload", "verify_and_seal", LOGICAL_BACKUP),
                ("base", PhysicalBackupOperator, "base_backup", "seal_base", BASE_BACKUP),
                ("files", FilesBackupOperator, "files_backup", "seal_files", FILES_BACKUP),
                ("config", ConfigBackupOperator, "config_backup", "seal_config", CONFIG_BACKUP)):
            made = backup_operator(task_id=backup_id, task_display_name=f"{kind} backup", conn_id=conn_id,
                                   map_index_template=BY_DATABASE)
            SealBackupOperator(task_id=seal_id, task_display_name=f"seal {kind} backup", backup=made.output,
                               outlets=[asset], map_index_template=SEALED_DATABASE)

    backup_database.expand(conn_id=databases.output)
