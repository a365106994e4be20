"""Four-eyes approval of destructive runs, on Airflow's human-in-the-loop ``ApprovalOperator``.

The task decides whether the run needs a second person (:mod:`pgdr.alerts.approval`); when it does
not, or ``pgdr_four_eyes`` is false, it pushes that decision and skips itself at once, and the work
after it runs (its trigger rule is ``none_failed``). Otherwise it waits in ``awaiting_input`` for
an approver: ``assigned_users`` are the approvers minus the user who triggered the run, so the
api-server answers that user's response with HTTP 403. After ``pgdr_approval_timeout_hours`` the
scheduler resumes it with a timeout. Approve: the work runs. Reject, timeout or a refused
self-approval: the decision is pushed and the task fails (nothing after it runs); the run's report
says what happened and who asked and answered. The decision is the XCom ``decision``.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from airflow.providers.standard.operators.hitl import ApprovalOperator

from pgdr.alerts.slack import AlreadyAlerted
from pgdr.operators.base import PgdrBaseOperator, effective_dry_run

DECISION_KEY = "decision"


class ApprovalNotGiven(AlreadyAlerted):
    """Rejected, timed out or refused: the run's report tells, so no generic failure alert."""


class FourEyesApprovalOperator(PgdrBaseOperator, ApprovalOperator):
    """Base: a subclass says why its run needs approval (:meth:`why`) and what the approver reads
    (:meth:`summary`)."""

    ui_color = "#fff4d6"

    def __init__(self, **kwargs) -> None:
        kwargs.setdefault("subject", "pgdr: approval of a destructive run")
        super().__init__(**kwargs)

    def why(self, context) -> str | None:
        raise NotImplementedError

    def summary(self, context, *, why: str, requested_by: str | None, approvers: list[str]) -> tuple[str, str]:
        raise NotImplementedError

    def execute(self, context):
        from airflow.sdk.exceptions import AirflowSkipException

        from pgdr.alerts.approval import assigned_approvers, not_needed, turned_off

        requested_by = getattr(context["dag_run"], "triggering_user_name", None)
        why = self.why(context)
        if why is None:
            context["ti"].xcom_push(key=DECISION_KEY, value=not_needed("nothing existing is changed", requested_by))
            raise AirflowSkipException("no approval needed: this run changes nothing that exists")
        settings = self.settings
        if not settings.four_eyes:
            self.log.warning("FOUR-EYES APPROVAL IS OFF (pgdr_four_eyes false): %s, and nobody else approves it", why)
            context["ti"].xcom_push(key=DECISION_KEY, value=turned_off(why, requested_by))
            raise AirflowSkipException("four-eyes approval is off (pgdr_four_eyes false)")
        try:
            approvers = assigned_approvers(settings.approvers, self.role_members(settings.approver_role), requested_by)
        except Exception as err:
            context["ti"].xcom_push(key=DECISION_KEY, value={"status": "refused", "requested_by": requested_by,
                                                             "approved_by": None, "why": str(err)})
            raise
        self.subject, self.body = self.summary(context, why=why, requested_by=requested_by, approvers=approvers)
        self.assigned_users = [{"id": name, "name": name} for name in approvers]
        self.response_timeout = timedelta(hours=settings.approval_timeout_hours)
        self.log.info("approval needed (%s); asked by %s; may approve: %s; waiting up to %g hours",
                      why, requested_by or "unknown", ", ".join(approvers), settings.approval_timeout_hours)
        context["ti"].xcom_push(key=DECISION_KEY, value={"status": "waiting", "requested_by": requested_by,
                                                         "approvers": approvers, "approved_by": None, "why": why})
        self.tell_approvers(context, approvers)
        return super().execute(context)

    def tell_approvers(self, context, approvers: list[str]) -> None:
        """Slack: what waits for whom, and the link to Airflow's required-actions page."""
        from pgdr.alerts.messages import build_alert
        from pgdr.alerts.slack import send_alert

        try:
            link = self.generate_link_to_ui_from_context(context=context)
        except ValueError:   # no [api] base_url configured: the message still names the run
            link = None
        try:
            send_alert(build_alert(severity="warning", title=f"pgdr: {self.subject}",
                                   facts=[("Run", context["ti"].run_id), ("Who may approve", ", ".join(approvers))],
                                   details=self.body.replace("**", ""),
                                   next_step=f"approve or reject it in Airflow: {link or 'Required actions'}"),
                       self.settings.slack_conn_id)
        except Exception as err:  # noqa: BLE001 - the request stands in Airflow's Required actions either way
            self.log.warning("could not tell the approvers on Slack: %s", type(err).__name__)

    def role_members(self, role: str) -> list[str]:
        """The members of ``pgdr_approver_role`` (SimpleAuthManager's configured users only)."""
        if not role:
            return []
        from airflow.configuration import conf

        from pgdr.alerts.approval import ApprovalRefused, role_members

        if "SimpleAuthManager" not in conf.get("core", "auth_manager", fallback=""):
            raise ApprovalRefused("pgdr_approver_role is read from SimpleAuthManager's users only; with this auth "
                                  "manager list the approvers' user names in pgdr_approvers",
                                  field="pgdr_approver_role")
        return role_members(conf.get("core", "simple_auth_manager_users", fallback=""), role)

    def execute_complete(self, context, event: dict[str, Any]) -> dict[str, Any]:
        from pgdr.alerts.approval import APPROVE, decide, outcome_text

        requested_by = getattr(context["dag_run"], "triggering_user_name", None)
        decision = decide(event, requested_by=requested_by, approvers=[u["id"] for u in self.assigned_users or []])
        context["ti"].xcom_push(key=DECISION_KEY, value=decision)
        if decision["status"] == "approved":
            super().execute_complete(context, {**event, "chosen_options": [APPROVE]})
            self.log.info("approved by %s (asked by %s)", decision["approved_by"], requested_by)
            return decision
        raise ApprovalNotGiven(f"not approved: {outcome_text(decision)}")


class RestoreApprovalOperator(FourEyesApprovalOperator):
    """Approval of a ``pg_restore`` plan that replaces a live database or overwrites files.

    :param plan: the prepare task's XCom (templated)
    """

    template_fields = (*ApprovalOperator.template_fields, "plan")

    def __init__(self, *, plan: Any, **kwargs) -> None:
        super().__init__(**kwargs)
        self.plan = plan

    def why(self, context) -> str | None:
        from pgdr.alerts.approval import restore_needs_approval

        return restore_needs_approval(self.plan)

    def summary(self, context, *, why, requested_by, approvers):
        from pgdr.alerts.approval import restore_summary

        database, kind = self.plan["request"]["database"], self.plan.get("kind", "logical")
        backup_time = size = None
        try:
            from pgdr.restore.plan import load_manifest

            manifest, _ = load_manifest(self.store, database, self.plan["backup_id"],
                                        "base" if kind == "pitr" else kind)
            backup_time, size = manifest.started_at, manifest.total_size
        except Exception as err:  # noqa: BLE001 - prepare read it a moment ago; the summary says unknown
            self.log.warning("could not read the backup's manifest for the summary: %s", type(err).__name__)
        return restore_summary(self.plan, why=why, requested_by=requested_by, approvers=approvers,
                               backup_time=backup_time, size_bytes=size, drill=self.last_drill(database, kind),
                               timeout_hours=self.settings.approval_timeout_hours,
                               keep_hours=self.settings.replaced_keep_hours)

    def last_drill(self, database: str, kind: str) -> dict | None:
        """The newest drill record of ``database`` (its measured or projected time), or None."""
        if kind not in ("logical", "pitr"):
            return None
        from pgdr.store.layout import reports_prefix

        try:
            folder = reports_prefix(self.settings.s3_prefix, "drill" if kind == "logical" else "pitr-drill")
            keys = sorted(k for k in self.store.list_keys(folder) if k.endswith(f"-{database}.json"))
            if not keys:
                return None
            record = self.store.read_json(keys[-1])
        except Exception as err:  # noqa: BLE001 - an estimate only
            self.log.warning("could not read the last drill record: %s", type(err).__name__)
            return None
        seconds = record.get("projected_rto_seconds") or record.get("rto_seconds")
        return {"seconds": seconds, "status": record.get("status"),
                "when": record.get("finished_at") or record.get("started_at") or keys[-1].rsplit("/", 1)[-1][:16]}


class RetentionApprovalOperator(FourEyesApprovalOperator):
    """Approval of a ``pg_data_retention`` run that acts for real outside its schedule."""

    def why(self, context) -> str | None:
        from pgdr.alerts.approval import retention_needs_approval

        run_type = context["dag_run"].run_type
        return retention_needs_approval(run_type=getattr(run_type, "value", str(run_type)),
                                        dry_run=effective_dry_run(context))

    def summary(self, context, *, why, requested_by, approvers):
        from pgdr.alerts.approval import retention_summary

        return retention_summary(why=why, requested_by=requested_by, approvers=approvers,
                                 databases=list(self.settings.databases), policy=self.settings.data_retention_policy,
                                 timeout_hours=self.settings.approval_timeout_hours)
