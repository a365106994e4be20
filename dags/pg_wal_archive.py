"""
### pg_wal_archive

Ships each protected database's WAL off-site: the WAL receiver (`python -m pgdr.wal_receiver`, a
supervised `pg_receivewal` on its own host or container) streams WAL from the primary into
`<pgdr_wal_receiver_dir>/<database>/`; this DAG uploads what it wrote to
`<prefix>/<database>/wal/<system identifier>/` (zstd, server-side encrypted, SHA-256 checked by S3;
each cluster's WAL apart, so a cluster rebuilt after a site loss never collides with the lost one).

- `protected_databases` → `ship_wal` (mapped, one per database): for `pgdr_wal_archive_window_minutes`
  it ships every `pgdr_wal_ship_seconds`: new completed segments (`<segment>.zst`), timeline history
  files, and the segment being written whenever it changed (`<segment>.partial.zst`, deleted once
  the completed segment is stored); then it ships once more and ends. `@continuous` starts the
  next run at once (one run at a time), so a database is always being shipped.
- What was shipped is remembered in the receiver directory (`.pgdr-shipped.json`), so a retry or
  the next run uploads nothing twice; each log line gives what was shipped and the lag.
- Every pass also asks the primary whether it sees the receiver (`pg_stat_replication`, the slot's
  `wal_status`) and alerts after `pgdr_wal_receiver_alert_seconds`; prunes shipped and checked
  segments from the receiver directory, keeping `pgdr_wal_receiver_keep_segments`; alerts when its
  free space is under `pgdr_wal_receiver_min_free_mb`; copies a gap the receiver recorded after a
  lost slot to `<prefix>/state/wal-gaps/<database>.json` and alerts; deletes older versions of the
  partial object once a newer checked one is stored.
- Alerts are posted once when a problem starts (S3 unreachable, S3 refusing, receiver not seen),
  again when it changes or after `pgdr_alert_reminder_hours`, and once when it is over; a window that
  fails on a problem already posted fails without a second message. The receiver's own state is in
  `receiver.status.json`.

**RPO.** Primary lost: 0, when the receiver runs with `--synchronous` and the primary has
`synchronous_standby_names = 'pgdr_receiver'` (or `ANY 1 (pgdr_receiver, <standby>)`), because a
commit then returns only after the receiver has flushed it. Check the primary with
`python -m pgdr.wal_receiver --check`. Whole site lost: the WAL written since the last ship,
at most `pgdr_wal_ship_seconds` plus a ship's duration, plus the gap between two runs.

**Why a long-running task that ships every 15 s** (measured on the development machine, see the
numbers below):

- (a) the server's `archive_command`
  - site-loss RPO: until a 16 MiB segment fills: hours on a quiet database; `archive_timeout = 60`
    bounds it at 60 s + upload
  - cost: a forced switch archives a whole segment: 16 MiB per minute raw, ~22.5 GiB a day on a
    lightly loaded server; a command on the database host with S3 credentials; no RPO = 0
- (b) a DAG run every minute
  - site-loss RPO: one minute + scheduling delay
  - cost: each run pays the scheduler, the task's process start and imports: 2-3 s per run in
    `dag.test` even warm and in-process, 2.4-6 s to start a task process (imports), twice per run,
    and a run late by a minute breaks the promise
- (c) one task per window, shipping every 15 s (chosen)
  - site-loss RPO: 15 s + ship time (0.1-0.3 s; 0.4-1.2 s with a completed segment) + the gap
    between runs
  - cost: holds one worker slot per protected database; run overhead paid once per window

Measured (2 shared CPUs, PostgreSQL 15, moto S3 on localhost, one small commit a second for 200 s):
`archive_timeout = 60` archived 3 segments, 48 MiB (84 KiB after zstd -1) for ~200 commits, i.e.
~1,440 forced segments and 22.5 GiB a day through `archive_command` per database (PostgreSQL
zero-fills a switched segment's rest, so ~40 MB a day compressed); a server with no writes at all
switches nothing. Shipping every 15 s over the same 200 s: 15 ships, each reading and compressing
the 16 MiB partial in 0.10-0.26 s (0.4-1.2 s when a completed segment goes too), largest lag 15.0 s,
1.0 MB stored (every version of the growing partial). `dag.test` of this DAG: 18.7 s for the first
run (cold imports), then 2.1-3.1 s for a run whose shipping window was 0.06 s; a task process needs
2.4-6 s just for its imports.
"""

from datetime import timedelta

import pendulum
from airflow.sdk import DAG

from pgdr.alerts.slack import on_task_failure
from pgdr.operators.base import ProtectedDatabasesOperator
from pgdr.operators.wal import ShipWalOperator

with DAG(
    dag_id="pg_wal_archive",
    description="Ship the WAL received from each protected database to S3 every few seconds",
    schedule="@continuous",
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    default_args={
        "owner": "data-platform",
        "retries": 2,
        "retry_delay": timedelta(seconds=15),
        "on_failure_callback": on_task_failure,
    },
    tags=["pgdr", "wal"],
    doc_md=__doc__,
) as dag:
    databases = ProtectedDatabasesOperator(task_id="protected_databases", retries=1)
    # each mapped task labelled with its database in the grid and graph, not [0]
    ShipWalOperator.partial(task_id="ship_wal", task_display_name="ship WAL",
                            map_index_template="{{ task.conn_id }}").expand(conn_id=databases.output)
