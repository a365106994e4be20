"""Restore stage: the manual restore (prepare, restore, report) and the kept databases' expiry.

The operators only dispatch. ``prepare`` heals what a dead earlier restore left
(:mod:`pgdr.restore.journal`), validates the form (:mod:`pgdr.restore.request`) and has
:class:`pgdr.restore.plan.Planner` build the plan: the backup chosen and leased at once, its objects
checked in S3, the target checked; it changes nothing but the lease. The plan goes to ``restore``
through XCom (:meth:`~pgdr.restore.plan.RestorePlan.to_dict`: keys, names and ids only), which
carries it out (:func:`pgdr.restore.run.run_plan`). ``report`` runs whatever happened
(``all_done``), heals what a killed restore task left, writes the JSON record to
``<prefix>/reports/restore/`` and posts it to Slack. Every error text passes
:func:`pgdr.core.redaction.safe_error` before it reaches XCom, a record or Slack.
"""

from __future__ import annotations

from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from pgdr.alerts.slack import AlreadyAlerted
from pgdr.core.redaction import safe_error
from pgdr.operators.base import DatabaseOperator, PgdrBaseOperator

ERROR_KEY = "error"
# pushed with the error when it was a restore refusal (nothing was changed): {"field": the form field or None};
# the report reads it instead of the error's text
REFUSED_KEY = "refused"


class RestoreOperatorBase(PgdrBaseOperator):
    """Shared mechanics: the target server's connection, the backup's manifest, leases, healing."""

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
        from pgdr.restore.plan import load_manifest

        return load_manifest(self.store, database, backup_id, kind)

    def mark_bad(self, run_id: str):
        """``mark(database, kind, backup_id, problems)``: a damaged backup's verdict, for the restore plan."""
        from pgdr.verify.backups import mark

        return lambda database, kind, backup_id, problems: mark(self.store, database, kind, backup_id, problems,
                                                                "restore", run_id)

    def remember_error(self, context, err: BaseException) -> None:
        from pgdr.alerts.messages import short_error
        from pgdr.errors import RestoreRefused

        context["ti"].xcom_push(key=ERROR_KEY, value=f"{type(err).__name__}: {short_error(safe_error(err))}")
        if isinstance(err, RestoreRefused):
            context["ti"].xcom_push(key=REFUSED_KEY, value={"field": err.field})

    def heal_interrupted(self, database: str, context, run_id: str | None = None) -> list[dict]:
        """Undo what a dead restore of ``database`` left (its S3 journal says what), then tell the
        truth about it: a record in ``<prefix>/reports/restore/`` and a Slack alert."""
        from pgdr.alerts.messages import build_alert
        from pgdr.alerts.slack import send_alert
        from pgdr.restore.journal import describe_heal, heal, record_heal

        reports = heal(self.store, database, connect_for=lambda conn_id: self.target(conn_id)[1],
                       default_conn_id=self.settings.restore_conn_id(database), log=self.log, run_id=run_id)
        if not reports:
            return []
        left = any(r["left"] for r in reports)
        key = record_heal(self.store, database, reports, healed_by=context["ti"].run_id)
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

    def lease_holder(self, context) -> tuple[str, float]:
        """Who holds a lease (this run) and for how long (longer than the run may take)."""
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
        from pgdr.restore.plan import release_lease

        release_lease(self.store, lease, self.log)


class PrepareRestoreOperator(RestoreOperatorBase):
    """Validates the trigger form (``params``), has the restore plan built (the backup chosen and
    leased, its objects in S3, the target server and the staging space checked). Changes nothing
    but the lease; returns the plan (XCom)."""

    def execute(self, context) -> dict[str, Any]:
        from pgdr.restore.plan import Planner
        from pgdr.restore.request import parse_request, stamp

        try:
            request = parse_request(context["params"], self.settings.databases, settings=self.settings)
            self.conn_id = request.database
            # what a restore killed earlier left (a half-restored database, a stopped swap) goes first
            self.heal_interrupted(request.database, context)
            holder, hours = self.lease_holder(context)
            dag_run = context.get("dag_run")
            planner = Planner(store=self.store, settings=self.settings, log=self.log, target_for=self.target,
                              when=stamp(dag_run.run_after if dag_run else None), holder=holder, hours=hours,
                              mark=self.mark_bad(context["ti"].run_id))
            return planner.plan(request).to_dict()   # a refusal has let its lease go already
        except BaseException as err:
            self.remember_error(context, err)
            raise


class RestoreBackupOperator(RestoreOperatorBase):
    """Carries out the plan of :class:`PrepareRestoreOperator` (:func:`pgdr.restore.run.run_plan`);
    returns the result (XCom).

    :param plan: the prepare task's XCom (templated)
    """

    template_fields = ("plan",)

    def __init__(self, *, plan: Any, **kwargs) -> None:
        super().__init__(**kwargs)
        self.plan = plan

    def execute(self, context) -> dict[str, Any]:
        from pgdr.restore.plan import RestorePlan
        from pgdr.restore.run import run_plan

        try:
            plan = RestorePlan.from_dict(self.plan)
            self.conn_id = plan.database
            return run_plan(plan, store=self.store, settings=self.settings, target_for=self.target,
                            run_id=context["ti"].run_id, log=self.log)
        except BaseException as err:
            self.remember_error(context, err)
            raise


class RestoreReportOperator(RestoreOperatorBase):
    """Writes the restore record (who, what, how long, the outcome) to
    ``<prefix>/reports/restore/<time>-<database>.json`` and posts it to Slack; runs after
    success or failure, and fails when the restore did."""

    def execute(self, context) -> dict[str, Any]:
        from pgdr.alerts.approval import outcome_text
        from pgdr.alerts.messages import restore_alert
        from pgdr.alerts.slack import send_alert
        from pgdr.restore.plan import RestorePlan
        from pgdr.store.layout import report_key
        from pgdr.store.manifest import new_backup_id, utc_now_iso

        ti = context["ti"]
        dag_run = context["dag_run"]
        pulled = ti.xcom_pull(task_ids="prepare")
        plan = RestorePlan.from_dict(pulled) if pulled else None
        outcome = ti.xcom_pull(task_ids="restore")
        error = ti.xcom_pull(task_ids="restore", key=ERROR_KEY) or ti.xcom_pull(task_ids="prepare", key=ERROR_KEY)
        database = (plan.database if plan else None) or context["params"].get("database") or "unknown"
        # four-eyes (the approve task): who asked, who approved; a rejection or timeout means the restore never ran
        approval = ti.xcom_pull(task_ids="approve", key="decision") if "approve" in self.dag.task_ids else None
        not_approved = outcome_text(approval) if plan is not None and outcome is None else None
        healed = []
        if plan is not None and outcome is None and not not_approved:
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
        elif not_approved:
            status = {"rejected": "rejected", "timed_out": "timed_out"}.get(approval["status"], "refused")
            error = not_approved
        else:
            refused = plan is None and ti.xcom_pull(task_ids="prepare", key=REFUSED_KEY) is not None
            status = "refused" if refused else "failed"
        started = dag_run.start_date or datetime.now(timezone.utc)
        record = {
            "kind": "restore", "status": status, "database": database, "dag_id": ti.dag_id, "run_id": ti.run_id,
            "triggered_by": getattr(dag_run, "triggering_user_name", None) or "unknown",
            "approved_by": (approval or {}).get("approved_by"), "approval": approval,
            "requested": params, "plan": plan.to_dict() if plan else None, "result": outcome,
            "error": safe_error(error) if error else error,
            "interrupted_restore_cleanup": healed,
            "started_at": started.isoformat(timespec="seconds"), "written_at": utc_now_iso(),
            "elapsed_seconds": round((datetime.now(timezone.utc) - started).total_seconds(), 1),
        }
        key = report_key(self.settings.s3_prefix, "restore", new_backup_id(), database)
        self.release_lease(plan.lease if plan else None)
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
        from pgdr.restore.pitr_cluster import expire_recovered

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
