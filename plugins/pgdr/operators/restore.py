"""Restore stage: the manual restore (prepare, restore, report) and the monthly drill.

The prepare task changes nothing: it validates the form, picks the backup, checks its
objects in S3 and the target server, and hands a plan to the restore task through XCom
(keys, names and ids only). The report task runs whatever happened (``all_done``),
writes the JSON record to ``<prefix>/reports/restore/`` and posts it to Slack.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from pgdr.alerts import AlreadyAlerted
from pgdr.operators.base import PgdrBaseOperator

ERROR_KEY = "error"


class RestoreOperatorBase(PgdrBaseOperator):
    """Shared mechanics: the target server's connection, the backup's manifest, the catalog."""

    def target(self, conn_id: str):
        """(PgTarget, connect(dbname)) for an Airflow postgres connection; connections are autocommit."""
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        from pgdr.pgtools import PgTarget

        def connect(dbname: str):
            conn = PostgresHook(postgres_conn_id=conn_id, database=dbname).get_conn()
            conn.autocommit = True
            return conn

        hook = PostgresHook(postgres_conn_id=conn_id)
        return PgTarget.from_connection(conn_id, hook.connection), connect

    def manifest(self, database: str, backup_id: str):
        from pgdr.manifest import MANIFEST_NAME, backup_prefix

        prefix = backup_prefix(self.store.prefix, database, "logical", backup_id)
        return self.store.read_manifest(f"{prefix}/{MANIFEST_NAME}"), prefix

    def refuse_damaged(self, database: str, manifest, prefix: str, entries, run_id: str) -> None:
        """HEAD every object (size, S3's SHA-256, encryption); a damaged backup is marked bad and refused."""
        from pgdr.restore_plan import RestoreRefused, newest_good_except
        from pgdr.verification import mark

        problems = []
        for obj in manifest.objects:
            try:
                check = self.store.check_object(f"{prefix}/{obj.name}", obj.size, obj.sha256, obj.s3_checksum)
            except self.store.client.exceptions.ClientError as err:
                problems.append({"problem": "object missing or unreadable", "key": f"{prefix}/{obj.name}",
                                 "error": str(err)[:200]})
                continue
            problems.extend({"problem": p, "key": check.key} for p in check.problems)
        if problems:
            mark(self.store, database, "logical", manifest.backup_id, problems, "restore", run_id)
            other = newest_good_except(entries, manifest.backup_id)
            raise RestoreRefused(
                f"restore refused, nothing was changed: backup {manifest.backup_id} of {database} is damaged "
                f"({problems[0]['key']}: {problems[0]['problem']}) and is now marked bad; "
                + (f"the newest good backup is {other}" if other else "there is no other good backup"))

    def remember_error(self, context, err: BaseException) -> None:
        from pgdr.alerts import short_error

        context["ti"].xcom_push(key=ERROR_KEY, value=f"{type(err).__name__}: {short_error(err)}")


class PrepareRestoreOperator(RestoreOperatorBase):
    """Validates the trigger form (``params``), chooses the backup, checks its objects in S3,
    the target server and the staging space. Changes nothing; returns the plan (XCom)."""

    def execute(self, context) -> dict[str, Any]:
        try:
            return self._prepare(context)
        except BaseException as err:
            self.remember_error(context, err)
            raise

    def _prepare(self, context) -> dict[str, Any]:
        from pgdr.restore import check_staging_space, check_target_server
        from pgdr.restore_plan import RestoreRefused, choose_backup, parse_request, restore_names, stamp

        settings = self.settings
        request = parse_request(context["params"], settings.databases)
        self.conn_id = request.database
        entries = self.store.catalog(request.database, "logical")
        entry = choose_backup(entries, request.backup, request.database)
        manifest, prefix = self.manifest(request.database, entry.backup_id)
        unknown = [t for t in request.tables if t not in manifest.row_counts]
        if unknown:
            raise RestoreRefused(f"restore refused, nothing was changed: backup {entry.backup_id} holds no table "
                                 f"{', '.join(unknown)}; it has {', '.join(sorted(manifest.row_counts))}")
        self.refuse_damaged(request.database, manifest, prefix, entries, context["ti"].run_id)
        when = stamp(context["dag_run"].run_after if context.get("dag_run") else None)
        names = restore_names(request, manifest.dbname, when)
        target_conn_id = request.target_conn_id or settings.restore_conn_id(request.database)
        target, connect = self.target(target_conn_id)
        conn = connect("postgres")
        try:
            facts = check_target_server(conn, manifest, names, request.mode)
        finally:
            conn.close()
        data = [o for o in manifest.objects if o.role == "table_data"]
        needed = int(sum(o.size for o in data) * 1.1) + (64 << 20)
        check_staging_space(settings.staging_dir, needed)
        self.log.info("plan: %s backup %s of %s (%d tables, %d rows) into %s on %s (%s); target role %s",
                      request.mode, entry.backup_id, request.database, len(manifest.row_counts),
                      sum(manifest.row_counts.values()), names.target_database, target.describe(),
                      "superuser" if facts["superuser"] else "not superuser", target.user)
        if not facts["superuser"]:
            self.log.warning("the target role is not a superuser: owners, row-level security and grants are "
                             "restored only where it is allowed to set them; pg_restore stops at the first error")
        return {"request": request.to_dict(), "backup_id": entry.backup_id, "prefix": prefix,
                "target_conn_id": target_conn_id, "stamp": when,
                "names": {"target_database": names.target_database, "work_database": names.work_database,
                          "kept_database": names.kept_database, "recovered_schema": names.recovered_schema}}


class RestoreBackupOperator(RestoreOperatorBase):
    """Carries out the plan of :class:`PrepareRestoreOperator`; returns the result (XCom).

    :param plan: the prepare task's XCom (templated)
    """

    template_fields = ("plan",)

    def __init__(self, *, plan: Any, **kwargs) -> None:
        super().__init__(**kwargs)
        self.plan = plan

    def execute(self, context) -> dict[str, Any]:
        try:
            return self._restore(context)
        except BaseException as err:
            self.remember_error(context, err)
            raise

    def _restore(self, context) -> dict[str, Any]:
        from pgdr.restore import LogicalRestore, check_target_server
        from pgdr.restore_plan import RestoreNames

        plan = self.plan
        request = plan["request"]
        self.conn_id = request["database"]
        settings = self.settings
        manifest, prefix = self.manifest(request["database"], plan["backup_id"])
        names = RestoreNames(**plan["names"])
        target, connect = self.target(plan["target_conn_id"])
        conn = connect("postgres")
        try:  # the world may have moved since the plan was made
            check_target_server(conn, manifest, names, request["mode"])
        finally:
            conn.close()
        keep_until = (datetime.now(timezone.utc) + timedelta(hours=settings.replaced_keep_hours)).isoformat(
            timespec="seconds")
        workdir = Path(settings.staging_dir) / request["database"] / "restore" / f"{plan['stamp']}.partial"
        restore = LogicalRestore(
            store=self.store, manifest=manifest, prefix=prefix, target=target, connect=connect, names=names,
            mode=request["mode"], tables=tuple(request["tables"]), workdir=workdir, bindir=settings.pg_bindir,
            jobs=settings.dump_jobs, log=self.log, run_id=context["ti"].run_id, keep_until=keep_until)
        outcome = restore.run()
        self.log.info("restore done in %.1f s (%s): %d tables, %d rows in %s", outcome["seconds"]["total"],
                      ", ".join(f"{k} {v:.1f} s" for k, v in outcome["seconds"].items() if k != "total"),
                      outcome["tables"], outcome["rows"], names.target_database)
        return outcome


class RestoreReportOperator(RestoreOperatorBase):
    """Writes the restore record (who, what, how long, the outcome) to
    ``<prefix>/reports/restore/<time>-<database>.json`` and posts it to Slack; runs after
    success or failure, and fails when the restore did."""

    def execute(self, context) -> dict[str, Any]:
        from pgdr.alerts import restore_alert, send_alert
        from pgdr.manifest import new_backup_id, utc_now_iso

        ti = context["ti"]
        dag_run = context["dag_run"]
        plan = ti.xcom_pull(task_ids="prepare")
        outcome = ti.xcom_pull(task_ids="restore")
        error = ti.xcom_pull(task_ids="restore", key=ERROR_KEY) or ti.xcom_pull(task_ids="prepare", key=ERROR_KEY)
        params = dict(context["params"])
        params.pop("confirm", None)
        database = (plan or {}).get("request", {}).get("database") or params.get("database") or "unknown"
        if outcome and not error:
            status = "succeeded"
        else:
            status = "refused" if plan is None and (error or "").startswith("RestoreRefused") else "failed"
        started = dag_run.start_date or datetime.now(timezone.utc)
        record = {
            "kind": "restore", "status": status, "database": database, "dag_id": ti.dag_id, "run_id": ti.run_id,
            "triggered_by": getattr(dag_run, "triggering_user_name", None) or "unknown",
            "requested": params, "plan": plan, "result": outcome, "error": error,
            "started_at": started.isoformat(timespec="seconds"), "written_at": utc_now_iso(),
            "elapsed_seconds": round((datetime.now(timezone.utc) - started).total_seconds(), 1),
        }
        key = f"{self.settings.s3_prefix}/reports/restore/{new_backup_id()}-{database}.json"
        self.store.put_json(key, record)
        self.log.info("restore record: s3://%s/%s (%s)", self.store.bucket, key, status)
        send_alert(restore_alert(record, log_url=ti.log_url), self.settings.slack_conn_id)
        if status != "succeeded":
            raise AlreadyAlerted(f"restore {status}: {error or 'see the task logs'}")
        return {"status": status, "record_key": key}


class DropExpiredReplacedOperator(RestoreOperatorBase):
    """Drops the databases a ``replace`` restore kept, once ``pgdr_replaced_keep_hours`` have passed
    (the time is recorded in the kept database's comment). Only databases carrying pgdr's comment
    are ever considered.

    :param conn_id: the protected postgres connection id (templated)
    """

    template_fields = ("conn_id",)

    def __init__(self, *, conn_id: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id

    def execute(self, context) -> list[str]:
        from pgdr.manifest import utc_now_iso
        from pgdr.restore import drop_database, expired_kept_databases

        database = self.require_protected(self.conn_id)
        _, connect = self.target(self.settings.restore_conn_id(database))
        conn = connect("postgres")
        try:
            expired = expired_kept_databases(conn, utc_now_iso())
            for name, until in expired:
                self.log.info("dropping %s, kept after a replace until %s", name, until)
                drop_database(conn, name, self.log)
        finally:
            conn.close()
        if not expired:
            self.log.info("no replaced database has passed its keep-until time")
        return [name for name, _ in expired]
