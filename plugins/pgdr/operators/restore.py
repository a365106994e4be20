"""Restore stage: the manual restore (prepare, restore, report) and the monthly drill.

The prepare task changes nothing but the lease: it heals what a dead earlier restore left
(:mod:`pgdr.restore.journal`), validates the form, picks the backup and leases it at once (then
checks it is still there: retention may have been deleting it), checks its objects in S3 and the
target server, and hands a plan to the restore task through XCom (keys, names and ids only). The
report task runs whatever happened (``all_done``), heals what a killed restore task left, writes
the JSON record to ``<prefix>/reports/restore/`` and posts it to Slack. Every error text passes
:func:`pgdr.core.redaction.safe_error` before it reaches XCom, a record or Slack.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from pgdr.alerts.slack import AlreadyAlerted
from pgdr.core.redaction import safe_error
from pgdr.operators.base import DatabaseOperator, PgdrBaseOperator
from pgdr.store.staging import private_dir

ERROR_KEY = "error"
# pushed with the error when it was a restore refusal (nothing was changed): {"field": the form field or None};
# the report reads it instead of the error's text
REFUSED_KEY = "refused"


class RestoreOperatorBase(PgdrBaseOperator):
    """Shared mechanics: the target server's connection, the backup's manifest, the catalog."""

    def target(self, conn_id: str):
        """(PgTarget, connect(dbname)) for an Airflow postgres connection; connections are autocommit."""
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        from pgdr.core.pgtools import PgTarget

        def connect(dbname: str):
            conn = PostgresHook(postgres_conn_id=conn_id, database=dbname).get_conn()
            conn.autocommit = True
            return conn

        hook = PostgresHook(postgres_conn_id=conn_id)
        return PgTarget.from_connection(conn_id, hook.connection), connect

    def manifest(self, database: str, backup_id: str, kind: str = "logical"):
        from pgdr.store.manifest import MANIFEST_NAME, backup_prefix

        prefix = backup_prefix(self.store.prefix, database, kind, backup_id)
        return self.store.read_manifest(f"{prefix}/{MANIFEST_NAME}"), prefix

    def refuse_damaged(self, database: str, manifest, prefix: str, entries, run_id: str, kind: str = "logical") -> None:
        """HEAD every object (size, S3's SHA-256, encryption); a damaged backup is marked bad and refused."""
        from pgdr.restore.request import RestoreRefused, newest_good_except
        from pgdr.verify.backups import mark

        problems = []
        for obj in manifest.objects:
            try:
                check = self.store.check_object(f"{prefix}/{obj.name}", obj.size, obj.sha256, obj.s3_checksum)
            except self.store.client.exceptions.ClientError as err:
                problems.append({"problem": "object missing or unreadable", "key": f"{prefix}/{obj.name}",
                                 "error": safe_error(err)[:200]})
                continue
            problems.extend({"problem": p, "key": check.key} for p in check.problems)
        if problems:
            mark(self.store, database, kind, manifest.backup_id, problems, "restore", run_id)
            other = newest_good_except(entries, manifest.backup_id)
            raise RestoreRefused(
                f"restore refused, nothing was changed: backup {manifest.backup_id} of {database} is damaged "
                f"({problems[0]['key']}: {problems[0]['problem']}) and is now marked bad; "
                + (f"the newest good backup is {other}" if other else "there is no other good backup"),
                field="backup")

    def refuse_unconfirmed_overwrite(self, request) -> None:
        """Files never go over a non-empty directory without the typed confirmation."""
        from pgdr.restore.files import is_empty_dir
        from pgdr.restore.request import RestoreRefused, confirmation_text

        target = Path(request.target_dir)
        expected = confirmation_text(request.database)
        if target.is_dir() and not is_empty_dir(target) and request.confirm != expected:
            shown = f"{request.confirm!r}" if request.confirm else "nothing"
            raise RestoreRefused(f"restore refused, nothing was changed: target_dir {target} is not empty; restoring "
                                 f"over it replaces files there: type exactly {expected!r} in confirm (got {shown}), "
                                 "or choose an empty or new directory", field="confirm")

    def config_wrapper(self, manifest):
        """The key wrapper that opens this backup's sealed files, refused clearly when it cannot."""
        from pgdr.core.envelope import KeyProblem, wrapper_for
        from pgdr.restore.files import unsealer
        from pgdr.restore.request import RestoreRefused

        try:
            wrapper = wrapper_for(manifest.encryption["client_side"]["data_key"], self.settings)
            unsealer(manifest, wrapper)
        except KeyProblem as err:
            raise RestoreRefused(f"restore refused, nothing was changed: backup {manifest.backup_id} holds files "
                                 f"sealed client-side and cannot be opened: {err}", field="backup") from None
        return wrapper

    def remember_error(self, context, err: BaseException) -> None:
        from pgdr.alerts.slack import short_error
        from pgdr.errors import RestoreRefused

        context["ti"].xcom_push(key=ERROR_KEY, value=f"{type(err).__name__}: {short_error(safe_error(err))}")
        if isinstance(err, RestoreRefused):
            context["ti"].xcom_push(key=REFUSED_KEY, value={"field": err.field})

    def heal_interrupted(self, database: str, context, run_id: str | None = None) -> list[dict]:
        """Undo what a dead restore of ``database`` left (its S3 journal says what), then tell the
        truth about it: a record in ``<prefix>/reports/restore/`` and a Slack alert."""
        from pgdr.alerts.slack import build_alert, send_alert
        from pgdr.restore.journal import describe_heal, heal
        from pgdr.store.manifest import new_backup_id, utc_now_iso

        reports = heal(self.store, database, connect_for=lambda conn_id: self.target(conn_id)[1],
                       default_conn_id=self.settings.restore_conn_id(database), log=self.log, run_id=run_id)
        if not reports:
            return []
        left = any(r["left"] for r in reports)
        key = f"{self.settings.s3_prefix}/reports/restore/{new_backup_id()}-{database}-healed.json"
        self.store.put_json(key, {"kind": "restore_heal", "database": database, "run_id": context["ti"].run_id,
                                  "written_at": utc_now_iso(), "interrupted": reports,
                                  "status": "left" if left else "healed"})
        send_alert(build_alert(
            severity="critical" if left else "warning",
            title=f"pgdr: an interrupted restore of {database} " + ("was NOT fully cleaned up" if left
                                                                    else "was cleaned up"),
            facts=[("Database", database), ("Interrupted run(s)", ", ".join(str(r["run_id"]) for r in reports)),
                   ("Healed by", context["ti"].run_id), ("Record", key)],
            details=describe_heal(reports),
            next_step=("check what is listed as LEFT by hand, see docs/RUNBOOK_DISASTER_RECOVERY.md"
                       "#restore-refused-or-failed" if left else "nothing is left half-restored; trigger "
                       "pg_restore again if the interrupted restore is still wanted"),
            log_url=context["ti"].log_url), self.settings.slack_conn_id)
        return reports

    def lease_chosen(self, database: str, kind: str, choose, context):
        """Choose a backup and lease it at once (:func:`pgdr.store.leases.lease_chosen`): (entries, entry, lease)."""
        from pgdr.restore.request import RestoreRefused
        from pgdr.store import leases

        holder, hours = self.lease_holder(context)
        try:
            entries, entry, _ = leases.lease_chosen(self.store, database, kind, choose, holder, hours, self.log)
        except RuntimeError as err:
            raise RestoreRefused(f"restore refused, nothing was changed: {err}", field="backup") from None
        self.log.info("leased %s backup %s of %s for this run", kind, entry.backup_id, database)
        return entries, entry, {"database": database, "kind": kind, "backup_id": entry.backup_id, "holder": holder}

    def lease_holder(self, context) -> tuple[str, float]:
        """Who holds the lease (this run) and for how long (longer than the run may take)."""
        holder = f"{context['ti'].dag_id}:{context['ti'].run_id}"
        timeout = getattr(getattr(self, "dag", None), "dagrun_timeout", None) or timedelta(hours=6)
        return holder, timeout.total_seconds() / 3600 + 1

    def hold_lease(self, database: str, kind: str, backup_id: str, context) -> dict[str, str]:
        """Lease the backup in S3 so backup retention keeps it while this run reads it."""
        from pgdr.store import leases

        holder, hours = self.lease_holder(context)
        leases.hold(self.store, database, kind, backup_id, holder, hours=hours)
        self.log.info("leased %s backup %s of %s for this run", kind, backup_id, database)
        return {"database": database, "kind": kind, "backup_id": backup_id, "holder": holder}

    def release_lease(self, lease: dict[str, str] | None) -> None:
        """Best effort: a lease left behind only runs out later."""
        from pgdr.store import leases

        if not lease:
            return
        try:
            leases.release(self.store, lease["database"], lease["kind"], lease["backup_id"], lease["holder"])
        except Exception as err:  # noqa: BLE001 - the lease expires on its own
            self.log.warning("could not release the lease on %s backup %s: %s", lease["kind"],
                             lease["backup_id"], safe_error(err))


def pitr_name(dbname: str, when: str) -> str:
    from pgdr.restore.request import with_suffix

    return with_suffix(f"{dbname}_pitr", f"_{when}")


class PitrMixin:
    """Point-in-time recovery: the base backup, the WAL plan, the new cluster."""

    def pitr_choice(self, database: str, point_in_time: str, only: str | None = None):
        """(target, base manifest, its prefix, WAL plan, base entries), or a refusal.

        ``only``: the base backup the plan chose and leased; the restore uses exactly that one
        (a newer base backup may fit by then, but it is not leased: retention could delete it).
        """
        from pgdr.restore.pitr import plan_point_in_time

        # the base backup's own cluster's WAL (its system identifier), followed along the timeline
        # history to the newest timeline
        return plan_point_in_time(self.store, database, point_in_time,
                                  lambda backup_id: self.manifest(database, backup_id, kind="base"), only=only)


class PrepareRestoreOperator(RestoreOperatorBase, PitrMixin):
    """Validates the trigger form (``params``), chooses the backup, checks its objects in S3,
    the target server and the staging space. Changes nothing; returns the plan (XCom)."""

    def execute(self, context) -> dict[str, Any]:
        self._lease = None   # taken as soon as the backup is chosen, so retention keeps it
        try:
            plan = self._prepare(context)
        except BaseException as err:
            self.release_lease(self._lease)
            self.remember_error(context, err)
            raise
        plan["lease"] = self._lease
        return plan

    def _prepare(self, context) -> dict[str, Any]:
        from pgdr.restore.logical import check_staging_space, check_target_server
        from pgdr.restore.request import RestoreRefused, choose_backup, parse_request, restore_names, stamp

        settings = self.settings
        request = parse_request(context["params"], settings.databases, settings=settings)
        self.conn_id = request.database
        # what a restore killed earlier left (a half-restored database, a stopped swap) goes first
        self.heal_interrupted(request.database, context)
        if request.kind in ("files", "config"):
            return self._prepare_files(request, context)
        if request.point_in_time:
            return self._prepare_pitr(request, context)
        entries, entry, self._lease = self.lease_chosen(
            request.database, "logical", lambda found: choose_backup(found, request.backup, request.database), context)
        manifest, prefix = self.manifest(request.database, entry.backup_id)
        unknown = [t for t in request.tables if t not in manifest.row_counts]
        if unknown:
            raise RestoreRefused(f"restore refused, nothing was changed: backup {entry.backup_id} holds no table "
                                 f"{', '.join(unknown)}; it has {', '.join(sorted(manifest.row_counts))}",
                                 field="tables")
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
        return {"request": request.to_dict(), "backup_id": entry.backup_id, "prefix": prefix, "kind": "logical",
                "target_conn_id": target_conn_id, "stamp": when,
                "names": {"target_database": names.target_database, "work_database": names.work_database,
                          "kept_database": names.kept_database, "recovered_schema": names.recovered_schema}}

    def _prepare_files(self, request, context) -> dict[str, Any]:
        """A file or configuration restore: the backup and every backup it depends on intact, the target
        directory usable (empty, new, or confirmed), the key able to open sealed files. Changes nothing."""
        from pgdr.restore.files import FileRestoreError, check_target_dir
        from pgdr.restore.request import RestoreRefused, choose_backup, stamp
        from pgdr.store.catalog import newest_good

        kind, database = request.kind, request.database
        refused = "restore refused, nothing was changed: "
        entries, entry, self._lease = self.lease_chosen(
            database, kind, lambda found: choose_backup(found, request.backup, database), context)
        manifest, prefix = self.manifest(database, entry.backup_id, kind=kind)
        self.refuse_damaged(database, manifest, prefix, entries, context["ti"].run_id, kind=kind)
        by_id = {e.backup_id: e for e in entries}
        for holder in manifest.dump.get("depends_on", []):
            held = by_id.get(holder)
            if held is None or not held.complete or held.bad:
                state = "missing" if held is None else "incomplete" if not held.complete else "marked bad"
                good = newest_good([e for e in entries if e.backup_id != entry.backup_id])
                raise RestoreRefused(f"{refused}{kind} backup {entry.backup_id} keeps unchanged files in backup "
                                     f"{holder}, which is {state}; " + (f"try backup {good.backup_id}" if good else
                                                                         "there is no other good backup"),
                                     field="backup")
            held_manifest, held_prefix = self.manifest(database, holder, kind=kind)
            self.refuse_damaged(database, held_manifest, held_prefix, entries, context["ti"].run_id, kind=kind)
        self.refuse_unconfirmed_overwrite(request)
        needed = int(manifest.dump.get("bytes", 0) * 1.1) + sum(o.size for o in manifest.objects) + (16 << 20)
        try:
            target_dir = check_target_dir(request.target_dir, needed, settings=self.settings)
        except FileRestoreError as err:
            raise RestoreRefused(f"{refused}{err}", field="target_dir") from None
        if (manifest.encryption or {}).get("client_side"):
            self.config_wrapper(manifest)  # a missing or wrong key is refused here, before anything is written
        when = stamp(context["dag_run"].run_after if context.get("dag_run") else None)
        self.log.info("plan: %s backup %s of %s (%d files, %d bytes%s) into %s%s", kind, entry.backup_id, database,
                      manifest.dump.get("files") if kind == "files" else manifest.dump.get("file_count"),
                      manifest.dump.get("bytes", 0),
                      f", depends on {', '.join(manifest.dump['depends_on'])}" if manifest.dump.get("depends_on")
                      else "", target_dir, " (not empty: confirmed)" if request.confirm else "")
        return {"request": request.to_dict(), "backup_id": entry.backup_id, "prefix": prefix, "kind": kind,
                "target_conn_id": "", "target_dir": str(target_dir), "stamp": when,
                "names": {"target_database": str(target_dir), "work_database": "", "kept_database": None,
                          "recovered_schema": None}}

    def _prepare_pitr(self, request, context) -> dict[str, Any]:
        from pgdr.restore.logical import check_target_server
        from pgdr.restore.pitr import check_pitr_target
        from pgdr.restore.request import RestoreRefused, restore_names, stamp

        settings = self.settings
        target, manifest, prefix, plan, entries = self.pitr_choice(request.database, request.point_in_time)
        self._lease = self.hold_lease(request.database, "base", manifest.backup_id, context)
        # leased; now make sure retention did not delete it before it saw the lease
        target, manifest, prefix, plan, entries = self.pitr_choice(request.database, request.point_in_time,
                                                                   only=manifest.backup_id)
        self.refuse_damaged(request.database, manifest, prefix, entries, context["ti"].run_id, kind="base")
        when = stamp(context["dag_run"].run_after if context.get("dag_run") else None)
        name = pitr_name(manifest.dbname, when)
        raw = sum(o.raw_size or o.size for o in manifest.objects)
        data_dir = check_pitr_target(settings.pitr_data_dir, name, settings.pitr_port,
                                     int(raw * 1.2) + len(plan.segments) * plan.segment_size * 2)
        plan_out = {"request": request.to_dict(), "backup_id": manifest.backup_id, "prefix": prefix, "kind": "pitr",
                    "stamp": when, "target": target.describe(), "data_dir": str(data_dir),
                    "port": settings.pitr_port, "wal_first": plan.first, "wal_last": plan.last,
                    "wal_segments": len(plan.segments), "target_conn_id": "", "names": {
                        "target_database": manifest.dbname, "work_database": manifest.dbname,
                        "kept_database": None, "recovered_schema": None}}
        if request.mode == "tables":
            unknown = [t for t in request.tables if "." not in t]
            if unknown:
                raise RestoreRefused(f"restore refused, nothing was changed: {unknown} are not schema.table names",
                                     field="tables")
            target_conn_id = request.target_conn_id or settings.restore_conn_id(request.database)
            names = restore_names(request, manifest.dbname, when)   # system databases refused here too
            _, connect = self.target(target_conn_id)
            conn = connect("postgres")
            try:
                check_target_server(conn, manifest, names, "tables")
            finally:
                conn.close()
            plan_out["target_conn_id"] = target_conn_id
            plan_out["names"] = {"target_database": names.target_database, "work_database": "",
                                 "kept_database": None, "recovered_schema": names.recovered_schema}
        self.log.info("plan: point-in-time recovery of %s to %s from base backup %s (WAL %s .. %s, %d segments%s) "
                      "into a new cluster at %s, preferred port %d", request.database, target.describe(),
                      manifest.backup_id, plan.first, plan.last, len(plan.segments),
                      ", the last partial" if plan.segments[-1].partial else "", data_dir, settings.pitr_port)
        return plan_out


class RestoreBackupOperator(RestoreOperatorBase, PitrMixin):
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
        from pgdr.restore.journal import Journal
        from pgdr.restore.logical import LogicalRestore, check_target_server
        from pgdr.restore.request import RestoreNames

        plan = self.plan
        request = plan["request"]
        self.conn_id = request["database"]
        settings = self.settings
        if plan.get("kind") == "pitr":
            return self._restore_pitr(plan, context)
        if plan.get("kind") in ("files", "config"):
            return self._restore_files(plan, context)
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
        workdir = private_dir(settings.staging_dir, request["database"], "restore") / f"{plan['stamp']}.partial"
        # recorded in S3 before anything is created: a worker killed from here on is healed by the next run
        journal = Journal.begin(self.store, database=request["database"], run_id=context["ti"].run_id,
                                target_conn_id=plan["target_conn_id"], mode=request["mode"], names=plan["names"],
                                workdir=str(workdir), keep_until=keep_until, backup_id=plan["backup_id"])
        restore = LogicalRestore(
            store=self.store, manifest=manifest, prefix=prefix, target=target, connect=connect, names=names,
            mode=request["mode"], tables=tuple(request["tables"] or ()), workdir=workdir, bindir=settings.pg_bindir,
            jobs=settings.dump_jobs, log=self.log, run_id=context["ti"].run_id, keep_until=keep_until,
            journal=journal)
        outcome = restore.run()
        self.log.info("restore done in %.1f s (%s): %d tables, %d rows in %s", outcome["seconds"]["total"],
                      ", ".join(f"{k} {v:.1f} s" for k, v in outcome["seconds"].items() if k != "total"),
                      outcome["tables"], outcome["rows"], names.target_database)
        return outcome

    def _restore_files(self, plan: dict, context) -> dict[str, Any]:
        from pgdr.restore.files import restore_tree
        from pgdr.restore.request import RestoreRequest

        request = RestoreRequest(**{**plan["request"], "tables": tuple(plan["request"]["tables"])})
        self.refuse_unconfirmed_overwrite(request)  # the directory may have filled since the plan was made
        manifest, prefix = self.manifest(request.database, plan["backup_id"], kind=plan["kind"])
        wrapper = self.config_wrapper(manifest) if (manifest.encryption or {}).get("client_side") else None
        workdir = (private_dir(self.settings.staging_dir, request.database, "restore")
                   / f"{plan['stamp']}-{plan['kind']}.partial")
        try:
            outcome = restore_tree(self.store, manifest, prefix, Path(plan["target_dir"]), plan["stamp"], workdir,
                                   self.log, wrapper=wrapper, settings=self.settings)
        finally:
            import shutil

            shutil.rmtree(workdir, ignore_errors=True)
        outcome.update(database=request.database)
        return outcome

    def _restore_pitr(self, plan: dict, context) -> dict[str, Any]:
        from pathlib import Path

        from pgdr.restore.logical import count_rows
        from pgdr.restore.pitr import PointInTimeRecovery, connect_recovered

        settings = self.settings
        request = plan["request"]
        # exactly the base backup prepare leased (a newer one may fit now, but retention could delete it)
        target, manifest, prefix, wal, _ = self.pitr_choice(request["database"], request["point_in_time"],
                                                            only=plan["backup_id"])
        restore_target, _ = self.target(settings.restore_conn_id(request["database"]))
        recovery = PointInTimeRecovery(
            store=self.store, manifest=manifest, prefix=prefix, wal=wal, target=target,
            data_dir=Path(plan["data_dir"]), port=settings.pitr_port, os_user=settings.pitr_os_user,
            login=restore_target.user, bindir=settings.pg_bindir, jobs=settings.dump_jobs, log=self.log,
            listen_addresses=settings.pitr_listen_addresses, keep_hours=settings.pitr_keep_hours)
        outcome = recovery.run()
        try:
            def connect(dbname: str):
                return connect_recovered(outcome, restore_target.user, dbname)

            found = count_rows(connect, manifest.dbname, None, settings.dump_jobs)
            outcome.update(mode=request["mode"], kind="pitr", database=request["database"],
                           source_dbname=manifest.dbname, tables=len(found), rows=sum(found.values()),
                           row_counts=found, backup_id=manifest.backup_id, target_database=manifest.dbname)
            if request["mode"] == "tables":
                from pgdr.restore.logical import move_tables

                target_pg, target_connect = self.target(plan["target_conn_id"])
                recovered_pg = restore_target.__class__(
                    conn_id="pitr", host=outcome["socket_dir"], port=outcome["port"], user=restore_target.user,
                    dbname=manifest.dbname, password=None)
                moved = move_tables(source=recovered_pg, source_connect=connect, target=target_pg,
                                    target_connect=target_connect, target_database=plan["names"]["target_database"],
                                    tables=tuple(request["tables"]), schema=plan["names"]["recovered_schema"],
                                    expected={t: found[t] for t in request["tables"] if t in found},
                                    bindir=settings.pg_bindir, jobs=settings.dump_jobs, log=self.log)
                outcome.update(recovered_schema=plan["names"]["recovered_schema"], tables=len(moved),
                               rows=sum(moved.values()), row_counts=moved,
                               target_database=plan["names"]["target_database"])
        except BaseException:
            recovery.discard()
            raise
        if request["mode"] == "tables":
            recovery.discard()
            outcome["cluster"] = "removed after the tables were moved"
        else:
            outcome["cluster"] = f"running on port {outcome['port']}, data directory {outcome['data_dir']}"
        self.log.info("recovered %s to %s: last transaction at %s, redo ended at %s; %d tables, %d rows; %s",
                      request["database"], target.describe(), outcome.get("last_transaction_time"),
                      outcome.get("redo_end_lsn"), outcome["tables"], outcome["rows"], outcome["cluster"])
        if len(outcome.get("row_counts", {})) > 200:  # XCom stays small
            outcome.pop("row_counts")
        return outcome


class RestoreReportOperator(RestoreOperatorBase):
    """Writes the restore record (who, what, how long, the outcome) to
    ``<prefix>/reports/restore/<time>-<database>.json`` and posts it to Slack; runs after
    success or failure, and fails when the restore did."""

    def execute(self, context) -> dict[str, Any]:
        from pgdr.alerts.slack import restore_alert, send_alert
        from pgdr.store.manifest import new_backup_id, utc_now_iso

        ti = context["ti"]
        dag_run = context["dag_run"]
        plan = ti.xcom_pull(task_ids="prepare")
        outcome = ti.xcom_pull(task_ids="restore")
        error = ti.xcom_pull(task_ids="restore", key=ERROR_KEY) or ti.xcom_pull(task_ids="prepare", key=ERROR_KEY)
        database = (plan or {}).get("request", {}).get("database") or context["params"].get("database") or "unknown"
        healed = []
        if plan is not None and outcome is None:
            # the restore task ended without its own cleanup (killed, its worker lost): heal what it left
            try:
                healed = self.heal_interrupted(database, context, run_id=ti.run_id)
            except Exception as err:  # noqa: BLE001 - the record and the alert still go out
                healed = [{"run_id": ti.run_id, "done": [], "left": [f"could not heal: {safe_error(err)}"]}]
            if healed and not error:
                error = "the restore task ended without finishing (its worker was killed or lost)"
        params = dict(context["params"])
        params.pop("confirm", None)
        if outcome and not error:
            status = "succeeded"
        else:
            refused = plan is None and ti.xcom_pull(task_ids="prepare", key=REFUSED_KEY) is not None
            status = "refused" if refused else "failed"
        started = dag_run.start_date or datetime.now(timezone.utc)
        record = {
            "kind": "restore", "status": status, "database": database, "dag_id": ti.dag_id, "run_id": ti.run_id,
            "triggered_by": getattr(dag_run, "triggering_user_name", None) or "unknown",
            "requested": params, "plan": plan, "result": outcome, "error": safe_error(error) if error else error,
            "interrupted_restore_cleanup": healed,
            "started_at": started.isoformat(timespec="seconds"), "written_at": utc_now_iso(),
            "elapsed_seconds": round((datetime.now(timezone.utc) - started).total_seconds(), 1),
        }
        key = f"{self.settings.s3_prefix}/reports/restore/{new_backup_id()}-{database}.json"
        self.release_lease((plan or {}).get("lease"))
        self.store.put_json(key, record)
        self.log.info("restore record: s3://%s/%s (%s)", self.store.bucket, key, status)
        send_alert(restore_alert(record, log_url=ti.log_url), self.settings.slack_conn_id)
        if status != "succeeded":
            raise AlreadyAlerted(f"restore {status}: {error or 'see the task logs'}")
        return {"status": status, "record_key": key}


class DropExpiredReplacedOperator(DatabaseOperator, RestoreOperatorBase):
    """Drops the databases a ``replace`` restore kept, once ``pgdr_replaced_keep_hours`` have passed.

    Only databases recorded in ``<prefix>/state/replaced/<database>/`` when the swap kept them are
    considered, and only while their OID and name both still match the record; a protected
    database or a restore's target is never dropped; comments decide nothing. Heals what a dead
    restore of the database left first (it runs every six hours).

    :param conn_id: the protected postgres connection id (templated)
    """

    def execute(self, context) -> list[str]:
        from datetime import datetime, timezone

        from pgdr.restore.journal import drop_expired_replaced
        from pgdr.restore.pitr import expire_recovered

        database = self.require_protected(self.conn_id)
        self.heal_interrupted(database, context)
        # recovered clusters hold PHI: stopped and removed once pgdr_pitr_keep_hours have passed
        for cluster in expire_recovered(Path(self.settings.pitr_data_dir), self.log):
            self.log.info("removed the expired recovered cluster %s", cluster.get("data_dir"))
        outcome = drop_expired_replaced(
            self.store, database, connect_for=lambda conn_id: self.target(conn_id)[1],
            default_conn_id=self.settings.restore_conn_id(database), protected=self.protected_names(),
            now=datetime.now(timezone.utc), log=self.log)
        self.log.info("kept databases of %s: dropped %s; still kept %s; forgotten (renamed or gone, not dropped) "
                      "%s; refused %s", database, outcome["dropped"] or "none", outcome["waiting"] or "none",
                      outcome["forgotten"] or "none", outcome["refused"] or "none")
        return outcome["dropped"]

    def protected_names(self) -> set[str]:
        """The database name of every protected connection (never dropped, whatever a record says)."""
        # a connection that cannot be read fails the task: nothing is dropped without the full list
        return {self.target(conn_id)[0].dbname for conn_id in self.settings.databases}
