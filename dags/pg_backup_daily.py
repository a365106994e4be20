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

A failed or partial run leaves no manifest behind; failures are posted to Slack.
See docs/operations.md and docs/configuration.md.
"""

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, task_group

from pgdr.alerts import on_task_failure
from pgdr.assets import BASE_BACKUP, LOGICAL_BACKUP
from pgdr.deadlines import deadline_alert
from pgdr.operators.backup import LogicalBackupOperator, PhysicalBackupOperator, SealBackupOperator
from pgdr.operators.base import ProtectedDatabasesOperator
from pgdr.settings import deadline_minutes

with DAG(
    dag_id="pg_backup_daily",
    description="Daily encrypted, checksummed, verified logical and base backups of each protected database to S3",
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

    backup_database.expand(conn_id=databases.output)
