"""
### pg_restore_test

Monthly restore drill of every protected database (setting `pgdr_databases`), one mapped
task group per database:

1. `drill`: the newest good backup restored into a scratch database (on the
   `pgdr_drill_conn_ids` server when one is set), every table's row count compared with the
   manifest, the integrity queries of `include/sql/drill_checks/` run, the RTO measured
   (download + restore + verify) and projected for the database's current size; the record
   goes to `<prefix>/reports/drill/`; an alert when anything differs or the RTO is over
   `pgdr_rto_budget_minutes`;
2. `drop_scratch`: makes sure the scratch database is gone, whatever happened;
3. `pitr_drill` (when physical backups are on): point-in-time recovery to a random moment inside
   the window the base backups and WAL cover, into a throwaway cluster, checked against the
   recovery markers `pg_backup_verify` commits (exactly those committed before the moment are
   there); the record goes to `<prefix>/reports/pitr-drill/`.

Each mapped task is labelled with its database. See
[DISASTER_RECOVERY.md](/pgdr-docs/DISASTER_RECOVERY.md) for the recovery times measured so far.
"""

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, task_group

from pgdr.alerts.slack import on_task_failure
from pgdr.operators.base import ProtectedDatabasesOperator
from pgdr.operators.drill import DropScratchOperator, PitrDrillOperator, RestoreDrillOperator

BY_DATABASE = "{{ task.conn_id }}"   # a mapped task's label in the grid and graph, instead of [0]

with DAG(
    dag_id="pg_restore_test",
    description="Monthly restore drill: restore the newest good backup, compare, check, measure the RTO",
    schedule="0 4 1 * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    max_active_tasks=1,  # one restore at a time on the workers: drills measure, they must not compete
    dagrun_timeout=timedelta(hours=6),
    default_args={"owner": "data-platform", "retries": 0, "on_failure_callback": on_task_failure},
    tags=["pgdr", "restore", "drill"],
    doc_md=__doc__,
) as dag:
    databases = ProtectedDatabasesOperator(task_id="protected_databases")

    @task_group(group_id="drill")
    def drill_database(conn_id: str):
        drill = RestoreDrillOperator(task_id="restore_and_check", task_display_name="restore drill",
                                     conn_id=conn_id, map_index_template=BY_DATABASE)
        # a teardown: it runs whatever happened, and the run's state is the drill's, not the cleanup's
        drill >> DropScratchOperator(task_id="drop_scratch", task_display_name="drop scratch database",
                                     conn_id=conn_id, map_index_template=BY_DATABASE).as_teardown()
        PitrDrillOperator(task_id="pitr_drill", task_display_name="point-in-time drill", conn_id=conn_id,
                          map_index_template=BY_DATABASE)

    drill_database.expand(conn_id=databases.output)
