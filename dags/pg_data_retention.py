"""
### pg_data_retention

Monthly (1st, 03:00 UTC) and on demand. Task group `data`, per protected database
(setting `pgdr_databases`, dynamically mapped):

1. `data.apply_policy`: the declarative policy (`include/data_retention_policy.yaml`, setting
   `pgdr_data_retention_policy`) validated against the legal floor (`pgdr_legal_floor_years`) and
   the live schema before anything changes, then each rule run in batches of
   `pgdr_retention_batch_rows`: `archive` (rows exported to S3, encrypted and checksummed, verified,
   then deleted), `soft_delete`, `purge_soft_deleted` (archived like `archive` before the delete, so
   whatever is deleted loads back); `VACUUM ANALYZE` of every touched table. The DML runs through
   `pgdr_retention_conn_ids` (a non-superuser role; a superuser session, or a trigger of a third
   role on a policy table, is refused before anything changes);
   the per-rule counts to `<prefix>/reports/retention/data/<run>/<database>.json`;
2. `data.report`: one Slack message with every database's counts (no row data), and the run
   fails when a database failed.

Task group `backups`: `backups.expire` per protected database: grandfather-father-son over every
backup kind (`pgdr_keep_daily_days`, `pgdr_keep_monthly_months`, `pgdr_keep_yearly_years`), never the
newest verified or a leased backup; WAL kept back to the start of the oldest base backup inside
`pgdr_pitr_window_days`; Object Lock dates extended, locked objects reported, never deleted early;
the WAL receiver directory and staging pruned; the report to `<prefix>/reports/retention/backups/`.

**Dry run**: only the scheduled monthly run acts for real. Every other run (manual, a backfill, a
run started by another DAG or by an asset) follows its `dry_run` field (default on: counts what
each rule would touch, changes nothing); to act from the CLI: `-c '{"dry_run": false}'`.
A run that acts outside the schedule first waits in `approve` for a second person (four-eyes;
the one who triggered it cannot approve it): [four-eyes approval](/pgdr-docs/operations.md#four-eyes-approval).
See [retention](/pgdr-docs/retention.md).
"""

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Param, TaskGroup

from pgdr.alerts.slack import on_task_failure
from pgdr.operators.approval import RetentionApprovalOperator
from pgdr.operators.base import ProtectedDatabasesOperator
from pgdr.operators.retain import ApplyDataPolicyOperator, BackupRetentionOperator, DataRetentionReportOperator

with DAG(
    dag_id="pg_data_retention",
    description="Monthly HIPAA-safe retention: archive, soft-delete and purge by policy, never under the legal floor",
    schedule="0 3 1 * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=12),
    default_args={"owner": "data-platform", "retries": 0, "on_failure_callback": on_task_failure},
    params={
        "dry_run": Param(
            True, type="boolean", title="Dry run",
            description="On or off. On (default): count what each rule would archive, soft-delete or purge and "
                        "report it, changing nothing. Off: act. Applies to every run but the scheduled one, which "
                        "always acts."),
    },
    tags=["pgdr", "retention"],
    doc_md=__doc__,
) as dag:
    databases = ProtectedDatabasesOperator(task_id="protected_databases")
    # four-eyes: a run that acts for real outside the schedule waits for a second person; a dry run or
    # the scheduled run skips it at once, hence none_failed below (a rejection or timeout fails approve)
    approve = RetentionApprovalOperator(task_id="approve")
    databases >> approve

    with TaskGroup("data"):
        # each mapped task labelled with its database in the grid and graph, not [0]
        applied = ApplyDataPolicyOperator.partial(task_id="apply_policy", trigger_rule="none_failed",
                                                  map_index_template="{{ task.conn_id }}"
                                                  ).expand(conn_id=databases.output)
        approve >> applied >> DataRetentionReportOperator(task_id="report", trigger_rule="all_done")

    # backup retention (GFS, WAL, Object Lock): task group "backups"
    with TaskGroup("backups"):
        approve >> BackupRetentionOperator.partial(task_id="expire", trigger_rule="none_failed",
                                                   map_index_template="{{ task.conn_id }}").expand(
            conn_id=databases.output)
