"""Retention stage: what is kept and what goes.

Backups (grandfather-father-son over S3, WAL pruned to the PITR window, Object Lock respected and
extended, the receiver directory and local staging pruned) and data (the retention policy applied to
each protected database, and its report)."""

from __future__ import annotations

from typing import Any

from pgdr.operators.base import DatabaseOperator, PgdrBaseOperator, effective_dry_run


def run_stamp(context) -> str:
    """The same name for every task of one run (its run_after), so reports meet under one prefix."""
    from pgdr.restore.request import stamp

    dag_run = context.get("dag_run")
    return stamp(getattr(dag_run, "run_after", None))


# what a report needs when the full settings do not validate: where to write it and whom to tell
_REPORT_SETTINGS = ("s3_bucket", "s3_prefix", "aws_conn_id", "kms_key_id", "slack_conn_id")


def report_settings(log):
    """The settings a failure report needs, read on their own (every other setting at its default), so a
    run failing on an invalid setting still writes its report; None when even these do not validate."""
    from airflow.sdk import Variable

    from pgdr.settings import PREFIX, parse_settings

    try:
        return parse_settings({name: Variable.get(PREFIX + name, default=None) for name in _REPORT_SETTINGS})
    except Exception as err:  # noqa: BLE001 - nowhere to write: the task's own error says why
        log.error("no report can be written: the S3 settings themselves are invalid (%s)", type(err).__name__)
        return None


class ApplyDataPolicyOperator(DatabaseOperator):
    """Applies the data retention policy to one protected database.

    The policy is validated (legal floor, known actions and keys) and checked against the live
    schema before anything changes; each rule then runs in short batches. Works through the
    database's retention connection (``pgdr_retention_conn_ids``, else its own), which must not be a
    superuser (refused: a trigger another role created would run with superuser rights) and must
    see every row; row-level security that would hide rows makes it refuse. A dry run counts and
    changes nothing. Writes ``<prefix>/reports/retention/data/<run>/<database>.json`` (counts only),
    also on failure, an invalid setting included.

    :param conn_id: the protected postgres connection id (templated)
    """

    ui_color = "#fbeee8"

    def execute(self, context) -> dict[str, Any]:
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        from pgdr.alerts.messages import short_error
        from pgdr.retain.data import DataRetention
        from pgdr.retain.data_policy import load_policy, policy_path
        from pgdr.store.manifest import utc_now_iso

        ti = context["ti"]
        when = run_stamp(context)
        report: dict[str, Any] = {"kind": "data_retention", "database": self.conn_id, "run_id": ti.run_id,
                                  "dry_run": None, "started_at": utc_now_iso(), "rules": []}
        settings = store = None
        try:
            settings = self.settings
            store = self.store
            database = self.require_protected(self.conn_id)
            dry_run = effective_dry_run(context)
            conn_id = settings.retention_conn_ids.get(database, database)
            report.update(dry_run=dry_run, connection=conn_id, legal_floor_years=settings.legal_floor_years,
                          phi_tables=list(settings.phi_tables), approval=approval_decision(context))
            self.log.info("data retention of %s (%s) through %s", database,
                          "DRY RUN: nothing will change" if dry_run else "acting for real", conn_id)
            path = policy_path(settings.data_retention_policy)
            policy = load_policy(path, floor_years=settings.legal_floor_years, phi_tables=settings.phi_tables)
            report["policy"] = {"file": str(path), "sha256": policy.sha256, "rules": len(policy.rules),
                                "phi_exemptions": policy.exemptions}
            for exemption in policy.exemptions:
                self.log.warning("rule %s goes under the legal floor by written exemption: %s", exemption["rule"],
                                 exemption["reason"])
            dbname = PostgresHook(postgres_conn_id=database).connection.schema

            def connect():
                conn = PostgresHook(postgres_conn_id=conn_id, database=dbname).get_conn()
                conn.autocommit = True
                return conn

            job = DataRetention(connect=connect, policy=policy, database=database, store=store,
                                staging_dir=settings.staging_dir, batch_rows=settings.retention_batch_rows,
                                compression_level=settings.compression_level, run_stamp=when, log=self.log)
            report["rules"] = job.run(dry_run=dry_run, results=report["rules"])
            report["as_of"] = job.as_of.isoformat() if job.as_of else None
            report["status"] = "ok"
        except Exception as err:
            report["status"] = "failed"
            # row data never leaves through the error: PostgreSQL's DETAIL/CONTEXT quote the failing row
            report["error"] = f"{type(err).__name__}: {short_error(err)}"
            raise RuntimeError(f"data retention of {self.conn_id} failed: {report['error']}") from None
        finally:
            report["finished_at"] = utc_now_iso()
            key = self._write_report(store, settings, when, report)
        return {"database": self.conn_id, "status": report["status"], "dry_run": report["dry_run"],
                "report_key": key}

    def _write_report(self, store, settings, when: str, report: dict) -> str | None:
        from pgdr.store.layout import data_retention_report_key
        from pgdr.store.s3 import BackupStore

        try:
            if store is None:
                settings = report_settings(self.log)
                if settings is None:
                    return None
                store = BackupStore.from_settings(settings, self.log)
            key = store.put_json(data_retention_report_key(store.prefix, when, self.conn_id), report)
            self.log.info("retention report: s3://%s/%s", store.bucket, key)
            return key
        except Exception as err:  # noqa: BLE001 - the run's own error (if any) must not be masked
            self.log.error("could not write the retention report: %s", type(err).__name__)
            if report.get("status") == "ok":
                raise
            return None


def approval_decision(context) -> dict | None:
    """The four-eyes decision of this run (the ``approve`` task's XCom): who asked, who approved."""
    dag = getattr(context.get("ti"), "task", None)
    dag = getattr(dag, "dag", None)
    if dag is not None and "approve" not in dag.task_ids:
        return None
    return context["ti"].xcom_pull(task_ids="approve", key="decision")


class DataRetentionReportOperator(PgdrBaseOperator):
    """Collects every database's retention report of this run, posts one Slack message with the counts
    per rule, and fails the run when a database failed or wrote no report."""

    ui_color = "#fbeee8"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)

    def execute(self, context) -> dict[str, Any]:
        from pgdr.alerts.approval import outcome_text
        from pgdr.alerts.messages import data_retention_alert
        from pgdr.alerts.slack import AlreadyAlerted, send_alert
        from pgdr.retain.data import collect_reports
        from pgdr.store.layout import reports_prefix

        ti = context["ti"]
        when = run_stamp(context)
        try:
            settings = self.settings
        except Exception as err:
            self._settings_failed(err, ti, when)
            raise
        approval = approval_decision(context)
        if outcome_text(approval):
            return self._not_approved(approval, ti, when)
        reports, missing = collect_reports(self.store, settings.s3_prefix, when, ti.run_id, settings.databases)
        dry_run = effective_dry_run(context)
        payload = data_retention_alert(reports, missing, dry_run=dry_run, log_url=ti.log_url, approval=approval)
        send_alert(payload, settings.slack_conn_id)
        failed = [r["database"] for r in reports if r.get("status") != "ok"] + list(missing)
        if failed:
            folder = reports_prefix(settings.s3_prefix, "retention/data")
            raise AlreadyAlerted(f"data retention failed for {', '.join(failed)}; see the reports under "
                                 f"s3://{self.store.bucket}/{folder}/{when}/")
        return {"databases": [r["database"] for r in reports], "dry_run": dry_run,
                "rules": sum(len(r.get("rules", [])) for r in reports)}

    def _not_approved(self, approval: dict, ti, when: str):
        """Rejected or timed out: nothing ran; the run's record and one alert say so, and who asked."""
        from pgdr.alerts.approval import outcome_text
        from pgdr.alerts.messages import data_retention_alert
        from pgdr.alerts.slack import AlreadyAlerted, send_alert
        from pgdr.store.layout import data_retention_failure_key
        from pgdr.store.manifest import utc_now_iso

        key = self.store.put_json(data_retention_failure_key(self.store.prefix, when), {
            "kind": "data_retention", "run_id": ti.run_id, "status": approval["status"],
            "error": outcome_text(approval), "approval": approval, "finished_at": utc_now_iso(), "databases": None})
        send_alert(data_retention_alert([], [], dry_run=False, log_url=ti.log_url, approval=approval),
                   self.settings.slack_conn_id)
        raise AlreadyAlerted(f"data retention not approved: {outcome_text(approval)}; see s3://{self.store.bucket}/{key}")

    def _settings_failed(self, err: Exception, ti, when: str) -> None:
        """Invalid settings stop every task of the run: still write the run's report and alert, through
        the few settings that locate S3 and Slack (the documented promise: a report even when a run fails)."""
        from pgdr.alerts.messages import build_alert, short_error
        from pgdr.alerts.slack import AlreadyAlerted, send_alert
        from pgdr.store.layout import data_retention_failure_key
        from pgdr.store.manifest import utc_now_iso
        from pgdr.store.s3 import BackupStore

        error = f"{type(err).__name__}: {short_error(err)}"
        fallback = report_settings(self.log)
        if fallback is None:
            return
        store = BackupStore.from_settings(fallback, self.log)
        key = store.put_json(data_retention_failure_key(store.prefix, when), {
            "kind": "data_retention", "run_id": ti.run_id, "status": "failed", "error": error,
            "finished_at": utc_now_iso(), "databases": None})
        self.log.error("data retention could not start: %s; report s3://%s/%s", error, store.bucket, key)
        send_alert(build_alert(severity="critical", title="pgdr: data retention failed: invalid settings",
                               facts=[("Error", error)], next_step="fix the setting named above; nothing changed",
                               log_url=getattr(ti, "log_url", None)), fallback.slack_conn_id)
        raise AlreadyAlerted(f"data retention could not start: {error}; see s3://{store.bucket}/{key}") from None


class BackupRetentionOperator(DatabaseOperator):
    """Apply backup retention to one protected database (a dry run plans and reports only).

    Never deletes the newest verified backup of a kind, a backup leased by a running restore, or
    an object whose Object Lock date is in the future (reported as locked instead). Writes the
    report to ``<prefix>/reports/retention/backups/<database>/<time>.json``, posts counts to Slack
    and returns (XCom) the counts and the report key.

    :param conn_id: the protected postgres connection id (templated)
    """

    def execute(self, context) -> dict[str, Any]:
        from datetime import datetime, timezone

        from pgdr.alerts.messages import backup_retention_alert
        from pgdr.alerts.slack import send_alert
        from pgdr.core.progress import human_bytes
        from pgdr.retain import backups as expire
        from pgdr.store.layout import backup_retention_report_key

        database = self.require_protected(self.conn_id)
        dry_run = effective_dry_run(context)
        now = datetime.now(timezone.utc)
        self.log.info("backup retention for %s%s", database, " (dry run: nothing is deleted)" if dry_run else "")
        report = expire.run(store=self.store, database=database, settings=self.settings, now=now,
                            dry_run=dry_run, log=self.log)
        report["run_id"] = context["ti"].run_id
        for decision in report["backups"]:
            self.log.info("%s %s/%s: %s", "would delete" if dry_run and decision["action"] == "delete"
                          else decision["action"], decision["kind"], decision["backup_id"],
                          "; ".join(decision["reasons"]))
        key = self.store.put_json(backup_retention_report_key(self.store.prefix, database, now, dry_run), report)
        counts = report["counts"]
        self.log.info("retention %s: %s; %s freed; report s3://%s/%s", database, counts,
                      human_bytes(sum(report["bytes_freed"].values())), self.store.bucket, key)
        send_alert(backup_retention_alert(report, context["ti"].log_url), self.settings.slack_conn_id)
        if report["errors"]:
            raise RuntimeError(f"backup retention of {database}: S3 refused {len(report['errors'])} deletions, "
                               f"first: {report['errors'][0]}; see s3://{self.store.bucket}/{key}")
        return {"database": database, "dry_run": dry_run, "counts": counts, "report_key": key}
