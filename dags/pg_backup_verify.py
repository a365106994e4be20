"""
### pg_backup_verify

Every six hours, per protected database (mapped task group `verify`), each check its own task:

- `freshness`: the newest good backup of each kind is younger than `pgdr_freshness_hours`;
- `integrity`: every object of the newest backup of each kind streamed from S3, sha256, size and
  encryption compared with the manifest, and the format's own check (`pg_restore --list`,
  `pg_verifybackup`; for file and configuration backups every file's sha256, decrypting secret files);
- `deep_check`: one older retained backup re-verified per run, the one verified longest ago;
- `bucket_posture`: default encryption, versioning, Object Lock, public access block;
- `report`: the JSON report to `<prefix>/reports/verify/`, Slack alerts on change (with reminders),
  and the run ends failed when a check failed. A backup that fails is marked bad and never
  offered for restore. See [operations](/pgdr-docs/operations.md).

Then `history_page` renders the backup history page (sizes, durations, verification results and
drill RTOs over time) to `<prefix>/reports/index.html`, whatever the checks found, and sends the
recovery gauges (recovery window, newest good backup's age per kind, WAL lag, the last drill's RTO,
verification failures) through Airflow's metrics (StatsD or OpenTelemetry, as `[metrics]` says).
See [history page](/pgdr-docs/history-page.md) and [operations](/pgdr-docs/operations.md) ("Metrics");
the same figures are live in the UI under "Recovery status".
"""

from datetime import timedelta

import pendulum
from airflow.sdk import task_group

from pgdr.alerts.deadlines import DeadlineDAG, deadline_alert
from pgdr.alerts.slack import on_task_failure
from pgdr.operators.base import ProtectedDatabasesOperator
from pgdr.operators.report import HistoryPageOperator
from pgdr.operators.restore import DropExpiredReplacedOperator
from pgdr.operators.verify import (
    BucketPostureOperator,
    DeepCheckOperator,
    FreshnessCheckOperator,
    IntegrityCheckOperator,
    RecordMarkerOperator,
    VerificationReportOperator,
    WalCheckOperator,
)
from pgdr.settings import deadline_minutes

BY_DATABASE = "{{ task.conn_id }}"

with DeadlineDAG(
    dag_id="pg_backup_verify",
    description="Prove every six hours that the off-site backups are complete, intact, encrypted and fresh",
    schedule="0 */6 * * *",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=3),
    deadline=deadline_alert("pg_backup_verify", deadline_minutes("verify_deadline_minutes")),
    default_args={
        "owner": "data-platform",
        "retries": 1,
        "retry_delay": timedelta(minutes=2),
        "retry_exponential_backoff": True,
        "on_failure_callback": on_task_failure,
    },
    tags=["pgdr", "verify"],
    doc_md=__doc__,
) as dag:
    databases = ProtectedDatabasesOperator(task_id="protected_databases", retries=0)

    # each mapped task is labelled with its database (connection id), not [0]
    @task_group(group_id="verify")
    def verify_database(conn_id: str):
        labelled = {"conn_id": conn_id, "map_index_template": BY_DATABASE}
        checks = [
            FreshnessCheckOperator(task_id="freshness", retries=0, **labelled),
            IntegrityCheckOperator(task_id="integrity", **labelled),
            DeepCheckOperator(task_id="deep_check", **labelled),
            BucketPostureOperator(task_id="bucket_posture", retries=0, **labelled),
            WalCheckOperator(task_id="wal", retries=0, **labelled),
        ]
        checks >> VerificationReportOperator(task_id="report", trigger_rule="all_done", retries=0, **labelled)

    verified = verify_database.expand(conn_id=databases.output)
    # a teardown: it runs after the reports whatever they found (all done), and the run's state stays
    # the reports', so a failed check still fails the run while the page shows it
    verified >> HistoryPageOperator(task_id="history_page", retries=0).as_teardown()
    DropExpiredReplacedOperator.partial(task_id="drop_expired_replaced", map_index_template=BY_DATABASE).expand(
        conn_id=databases.output)
    RecordMarkerOperator.partial(task_id="record_marker", retries=0, map_index_template=BY_DATABASE).expand(
        conn_id=databases.output)
