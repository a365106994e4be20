"""Verify stage: one operator per check, so the Airflow grid shows which one failed, and a report.

Each check pushes its result (XCom key ``check_result``) and fails its task when the
check fails. The report task runs after all of them (``trigger_rule=all_done``), writes
the JSON report to S3, posts what changed to Slack, and ends failed when any check did.
"""

from __future__ import annotations

from datetime import datetime, timezone
from typing import Any

from pgdr.alerts.slack import AlreadyAlerted
from pgdr.operators.base import DatabaseOperator, PgdrBaseOperator

CHECKS = ("freshness", "integrity", "deep_check", "bucket_posture", "wal")


class CheckFailed(AlreadyAlerted):
    """A verification check failed; the report task posts the alert."""


class VerifyCheckOperator(DatabaseOperator):
    """Runs one verification check against the backups of one protected database.

    :param conn_id: the protected postgres connection id (templated)
    """

    def run_check(self, database: str, context) -> dict:
        raise NotImplementedError

    def execute(self, context) -> dict[str, Any]:
        database = self.require_protected(self.conn_id)
        outcome = {**self.run_check(database, context), "database": database}
        context["ti"].xcom_push(key="check_result", value=outcome)
        self.log.info("%s for %s: %s: %s", outcome["check"], database, outcome["status"].upper(), outcome["summary"])
        for item in outcome["evidence"][:20]:
            self.log.info("  evidence: %s", item)
        if outcome["status"] == "failed":
            raise CheckFailed(f"{outcome['check']} failed for {database}: {outcome['summary']}")
        return outcome


class FreshnessCheckOperator(VerifyCheckOperator):
    """The newest good backup of each kind is younger than ``pgdr_freshness_hours``."""


    def run_check(self, database: str, context) -> dict:
        from pgdr.verify.backups import check_freshness, freshness_kinds

        settings = self.settings
        return check_freshness(self.store, database, settings.freshness_hours,
                               kinds=freshness_kinds(settings.physical_backups,
                                                     files=bool(settings.file_dirs.get(database)),
                                                     config=bool(settings.config_files.get(database))))


class IntegrityCheckOperator(VerifyCheckOperator):
    """Streams every object of the newest backup of each kind and checks it against the manifest."""

    deep = False

    def run_check(self, database: str, context) -> dict:
        from pgdr.verify.backups import check_integrity

        return check_integrity(self.store, database, self.settings.tool_dirs, context["ti"].run_id, self.log,
                               deep=self.deep)


class DeepCheckOperator(IntegrityCheckOperator):
    """Re-verifies one older retained backup per run, the one verified longest ago."""

    deep = True


class BucketPostureOperator(VerifyCheckOperator):
    """Default encryption, versioning, Object Lock and public access block of the backup bucket."""


    def run_check(self, database: str, context) -> dict:
        from pgdr.verify.backups import check_bucket_posture

        return check_bucket_posture(self.store)


class WalCheckOperator(VerifyCheckOperator):
    """The WAL archive is continuous from the oldest base backup and current; the receiver is
    connected (synchronous when configured), its slot healthy, the archiver not failing."""

    def run_check(self, database: str, context) -> dict:
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        from pgdr.verify.wal import check_wal

        settings = self.settings
        return check_wal(self.store, database, PostgresHook(postgres_conn_id=database).get_conn,
                         settings.replication_slot, settings.wal_ship_seconds, settings.physical_backups)


class VerificationReportOperator(PgdrBaseOperator):
    """Collects the checks' results, writes ``<prefix>/reports/verify/<time>-<database>.json``,
    posts new, changed, reminded and resolved findings to Slack, and fails when a check failed.

    :param conn_id: the protected postgres connection id (templated)
    :param group_id: the task group holding the check tasks
    """

    template_fields = ("conn_id",)

    def __init__(self, *, conn_id: str, group_id: str = "verify", **kwargs) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id
        self.group_id = group_id

    def execute(self, context) -> dict[str, Any]:
        from pgdr.alerts.messages import verification_alert
        from pgdr.alerts.policy import decide, finding_key
        from pgdr.alerts.slack import send_alert
        from pgdr.store import layout
        from pgdr.store.manifest import new_backup_id, utc_now_iso
        from pgdr.verify.backups import result

        ti = context["ti"]
        database = self.require_protected(self.conn_id)
        map_index = ti.map_index if ti.map_index is not None and ti.map_index >= 0 else None
        results = []
        for check in CHECKS:
            task_id = f"{self.group_id}.{check}"
            found = ti.xcom_pull(task_ids=task_id, key="check_result", map_indexes=map_index)
            if isinstance(found, list):
                found = found[0] if found else None
            results.append(found or result(check, "failed", f"the {check} check did not complete; see its task log",
                                           [{"task": task_id}], fingerprint="did-not-complete"))
        failed = [r for r in results if r["status"] == "failed"]
        now = datetime.now(timezone.utc)
        report = {"database": database, "run_id": ti.run_id, "dag_id": ti.dag_id, "written_at": utc_now_iso(),
                  "status": "failed" if failed else "ok", "results": results}
        settings = self.settings
        report_key = layout.report_key(settings.s3_prefix, "verify", new_backup_id(now), database)
        self.store.put_json(report_key, report)
        self.log.info("verification report for %s: %s, s3://%s/%s", database, report["status"].upper(),
                      self.store.bucket, report_key)

        state_key = layout.alert_state_key(settings.s3_prefix, database)
        posts, state = decide(self.store.read_json_or_none(state_key), results, now,
                              settings.alert_reminder_hours, settings.daily_digest)
        for reason, finding in posts:
            check_task = f"{self.group_id}.{finding['check']}"
            log_url = ti.log_url.replace(f"/tasks/{ti.task_id}", f"/tasks/{check_task}") if finding["check"] in CHECKS \
                else ti.log_url
            delivered = send_alert(verification_alert(database=database, result=finding, reason=reason,
                                                      log_url=log_url), settings.slack_conn_id)
            if not delivered:
                # forget it, so the next run posts it again
                state["checks"].pop(finding_key(finding), None)
                self.log.error("the %s alert for %s was not delivered; the verification result stands: %s",
                               finding["check"], database, report["status"].upper())
        if not posts:
            self.log.info("nothing new to post to Slack (findings unchanged since they were last posted)")
        self.store.put_json(state_key, state)
        if failed:
            raise CheckFailed(f"verification of {database} failed: " + "; ".join(
                f"{r['check']}: {r['summary']}" for r in failed) + f" (report s3://{self.store.bucket}/{report_key})")
        return {"database": database, "status": report["status"], "report_key": report_key,
                "checks": {r["check"]: r["status"] for r in results}}


class RecordMarkerOperator(DatabaseOperator):
    """Commits a recovery marker into the protected database (through the markers connection,
    ``pgdr_marker_conn_ids``, else its restore connection; owner and trigger checks either way) and
    remembers it in ``<prefix>/state/markers/<database>.json``; the point-in-time drill checks
    recovered data against these. Skipped when physical backups are off.

    :param conn_id: the protected postgres connection id (templated)
    """

    def execute(self, context) -> dict[str, Any]:
        from airflow.providers.postgres.hooks.postgres import PostgresHook
        from airflow.sdk.exceptions import AirflowSkipException

        from pgdr.drill.markers import marker_conn_id, record_marker, remember
        from pgdr.store import layout

        database = self.require_protected(self.conn_id)
        settings = self.settings
        if not settings.physical_backups:
            raise AirflowSkipException("physical backups are off (pgdr_physical_backups): no point-in-time drill")
        source_dbname = PostgresHook(postgres_conn_id=database).connection.schema
        conn = PostgresHook(postgres_conn_id=marker_conn_id(settings, database), database=source_dbname).get_conn()
        try:
            marker = record_marker(conn, context["ti"].run_id)
        finally:
            conn.close()
        key = layout.markers_key(settings.s3_prefix, database)
        state = self.store.read_json_or_none(key) or {"database": database, "markers": []}
        state["markers"] = remember(state["markers"], marker)
        self.store.put_json(key, state)
        self.log.info("recovery marker %d committed at %s in %s", marker["id"], marker["acknowledged_at"], database)
        return marker
