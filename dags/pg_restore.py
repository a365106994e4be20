"""
### pg_restore

Restore a protected database from its backups in S3. Manual only: fill in the trigger form.

* **new_database** (default): the backup into a new database, next to everything else;
* **replace**: the live database replaced by the backup; type `RESTORE <database>` in *confirm*.
  The backup is restored and verified under another name first, then swapped in by renaming;
  the old database is kept as `<name>_replaced_<time>` for `pgdr_replaced_keep_hours`;
* **tables**: the listed tables into schema `recovered_<time>` of the live database, nothing else
  touched (the accidental-deletion path).

**kind** `files` or `config` restores the uploaded files or the configuration (secret files
unsealed with the `pgdr_config_key_conn_id` key or KMS) into **target_dir**, an absolute path on the
worker: an empty or new directory, or a non-empty one only with `RESTORE <database>` in *confirm*.
Every file's sha256 is checked against the manifest after the restore.

With a **point in time** (`latest`, an ISO time or an LSN) the newest good base backup before it is
restored into a new cluster and the WAL archive replayed up to it (`latest` includes the partial
segment the WAL receiver shipped last: every acknowledged commit).

`prepare` checks everything and changes nothing; `approve` (four-eyes) then waits for a second
person when the restore replaces the live database or overwrites a non-empty directory (the one who
triggered the run cannot approve it; skipped otherwise, see
[four-eyes approval](/pgdr-docs/operations.md#four-eyes-approval)); `restore` does the work and compares every
table's row count with the manifest; `report` writes the record to
`<prefix>/reports/restore/` and posts it to Slack. See
[the disaster recovery runbook](/pgdr-docs/RUNBOOK_DISASTER_RECOVERY.md) (all of pgdr's
documentation: [/pgdr-docs/](/pgdr-docs/)).
"""

from datetime import timedelta

import pendulum
from airflow.sdk import DAG, Param

from pgdr.alerts.slack import on_task_failure
from pgdr.operators.approval import RestoreApprovalOperator
from pgdr.operators.restore import PrepareRestoreOperator, RestoreBackupOperator, RestoreReportOperator
from pgdr.settings import protected_databases_at_parse

WHAT = "What to restore"
WHERE = "Where to restore it"
SAFETY = "Safety"

# Every optional field is typed ["null", ...] with default None: Airflow's trigger form treats a
# field whose type does not allow null as required (and "" as missing), which disabled the Trigger
# button. "" still passes the patterns, for REST callers that send an empty string.
# An ISO time must carry its zone (Z or an offset): a bare time would silently be read as UTC.
POINT_IN_TIME = (r"^(|latest"
                 r"|[0-9]{4}-[0-9]{2}-[0-9]{2}[T ][0-9]{2}:[0-9]{2}(:[0-9]{2}(\.[0-9]{1,6})?)?"
                 r"(Z|[+-][0-9]{2}(:?[0-9]{2})?)"
                 r"|[0-9A-Fa-f]{1,8}/[0-9A-Fa-f]{1,8})$")
TABLE = r"^[A-Za-z_][A-Za-z0-9_$]*\.[A-Za-z_][A-Za-z0-9_$]*$"

with DAG(
    dag_id="pg_restore",
    description="Restore a protected database (new database, replace, single tables), its files or its configuration",
    schedule=None,
    allowed_run_types=["manual"],
    start_date=pendulum.datetime(2026, 1, 1, tz="UTC"),
    catchup=False,
    max_active_runs=1,
    dagrun_timeout=timedelta(hours=6),
    default_args={"owner": "data-platform", "retries": 0},
    params={
        "database": Param(
            protected_databases_at_parse()[0], type="string", title="Database",
            description="A protected database's Airflow connection id (setting pgdr_databases), e.g. care_commons_db: "
                        "the database whose backup to restore. Every kind and mode.",
            examples=protected_databases_at_parse(), section=WHAT),
        "backup": Param(
            "latest", type="string", title="Backup", pattern=r"^(latest|[0-9]{8}T[0-9]{6}Z)$",
            description="'latest' or a backup id (YYYYMMDDTHHMMSSZ, e.g. 20261126T020000Z). 'latest' = the newest "
                        "verified backup; an id from the verification reports or the history page. Every kind; "
                        "leave 'latest' with a point in time.", section=WHAT),
        "point_in_time": Param(
            None, type=["null", "string"], title="Point in time",
            pattern=POINT_IN_TIME,
            description="Empty, 'latest', an ISO time with its zone, or an LSN: e.g. 2026-11-26T14:30:00Z, "
                        "2026-11-26T09:30:00-05:00 (a time without a zone is refused), 0/3000060. Kind database only, "
                        "modes new_database and tables. Empty = the logical backup as it is. Otherwise point-in-time "
                        "recovery from a base backup and the WAL archive ('latest': every commit the WAL receiver "
                        "saw) into a new cluster on the worker (pgdr_pitr_data_dir, pgdr_pitr_port); with mode "
                        "tables, the tables as they were then go into recovered_<time> of the live database.",
            section=WHAT),
        "kind": Param(
            "database", type="string", title="Kind", enum=["database", "files", "config"],
            values_display={"database": "The database (logical backup, or point in time)",
                            "files": "Uploaded files (pgdr_file_dirs) into target_dir",
                            "config": "Configuration files (pgdr_config_files) into target_dir"},
            description="database, files or config: what to restore. files and config go into target_dir and use "
                        "no mode, point in time or target database.", section=WHAT),
        "mode": Param(
            "new_database", type="string", title="Mode", enum=["new_database", "replace", "tables"],
            values_display={"new_database": "New database (nothing existing is touched)",
                            "replace": "Replace the live database (needs the confirmation below)",
                            "tables": "Single tables into a recovered_<time> schema of the live database"},
            description="new_database, replace or tables: how to restore a database (kind database only; leave "
                        "new_database for files and config).", section=WHAT),
        "tables": Param(
            None, type=["null", "array"], items={"type": "string", "pattern": TABLE},
            title="Tables (mode tables)", description="schema.table, one per line, e.g. public.visits. "
                                                      "Mode tables only: leave empty otherwise.",
            section=WHAT),
        "target_conn_id": Param(
            None, type=["null", "string"], title="Target server (connection id)",
            pattern=r"^([A-Za-z0-9][A-Za-z0-9_.\-]*)?$",
            description="Empty or an Airflow connection id (letters, digits, '_', '.', '-'), e.g. new_site_db. "
                        "Kind database only, mode new_database without a point in time. The postgres server to "
                        "restore into; empty = the source's server (through pgdr_restore_conn_ids). For a site loss, "
                        "the new server's connection, which must be listed in pgdr_restore_target_conn_ids.",
            section=WHERE),
        "target_database": Param(
            None, type=["null", "string"], title="Target database name", pattern=r"^([a-z_][a-z0-9_]{0,62})?$",
            description="Empty or a lower-case name (letters, digits, '_'; at most 63), e.g. cc_copy. Kind "
                        "database only. new_database: the name to create (empty = <name>_restored_<time>; leave "
                        "empty with a point in time). tables: the database to recover into (empty = the source's). "
                        "replace: leave empty.", section=WHERE),
        "target_dir": Param(
            None, type=["null", "string"], title="Target directory (kind files, config)", pattern=r"^(/.*)?$",
            description="Empty or an absolute path, e.g. /var/lib/pgdr/restores/uploads. Kind files or config only. "
                        "The directory on the worker to restore into; files land under "
                        "their original absolute path inside it (e.g. <target_dir>/srv/care-commons/uploads/...). "
                        "It must lie under pgdr_restore_target_dirs (default /var/lib/pgdr/restores), away from system "
                        "and backed-up directories. A non-empty directory needs the confirmation below.",
            section=WHERE),
        "confirm": Param(
            None, type=["null", "string"], title="Confirmation (mode replace, or a non-empty target_dir)",
            pattern=r"^(RESTORE [A-Za-z0-9_.\-]+)?$",
            description="Empty or exactly RESTORE <database>, e.g. RESTORE care_commons_db. Mode replace, or kind "
                        "files/config into a non-empty target_dir: needed there. Leave empty otherwise.",
            section=SAFETY),
    },
    tags=["pgdr", "restore"],
    doc_md=__doc__,
) as dag:
    prepare = PrepareRestoreOperator(task_id="prepare")
    # four-eyes: a replace, or files over a non-empty directory, waits for a second person; any other
    # restore skips it at once, hence none_failed on restore (a rejection or timeout fails approve)
    approve = RestoreApprovalOperator(task_id="approve", plan=prepare.output)
    restore = RestoreBackupOperator(task_id="restore", plan=prepare.output, trigger_rule="none_failed")
    report = RestoreReportOperator(task_id="report", trigger_rule="all_done", on_failure_callback=on_task_failure)
    prepare >> approve >> restore >> report
