"""Retention stage: the data retention policy applied to each protected database, and its report."""

from __future__ import annotations

from typing import Any

from pgdr.operators.base import DatabaseOperator, PgdrBaseOperator, effective_dry_run


def run_stamp(context) -> str:
    """The same name for every task of one run (its run_after), so reports meet under one prefix."""
    from pgdr.restore_plan import stamp

    dag_run = context.get("dag_run")
    return stamp(getattr(dag_run, "run_after", None))


class ApplyDataPolicyOperator(DatabaseOperator):
    """Applies the data retention policy to one protected database.

    The policy is validated (legal floor, known actions and keys) and checked against the live
    schema before anything changes; each rule then runs in short batches. Works through the
    database's restore connection (``pgdr_restore_conn_ids``), which may delete and sees every row;
    row-level security that would hide rows makes it refuse. A dry run counts and changes nothing.
    Writes ``<prefix>/reports/retention/data/<run>/<database>.json`` (counts only), also on failure.

    :param conn_id: the protected postgres connection id (templated)
    """

    ui_color = "#fbeee8"

    def execute(self, context) -> dict[str, Any]:
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        from pgdr.alerts import short_error
        from pgdr.data_policy import load_policy, policy_path
        from pgdr.data_retention import DataRetention, report_key
        from pgdr.manifest import utc_now_iso

        settings = self.settings
        database = self.require_protected(self.conn_id)
        dry_run = effective_dry_run(context)
        ti = context["ti"]
        when = run_stamp(context)
        admin_conn_id = settings.restore_conn_id(database)
        report: dict[str, Any] = {"kind": "data_retention", "database": database, "run_id": ti.run_id,
                                  "dry_run": dry_run, "started_at": utc_now_iso(), "connection": admin_conn_id,
                                  "legal_floor_years": settings.legal_floor_years, "rules": []}
        key = report_key(settings.s3_prefix, when, database)
        self.log.info("data retention of %s (%s) through %s", database,
                      "DRY RUN: nothing will change" if dry_run else "acting for real", admin_conn_id)
        try:
            path = policy_path(settings.data_retention_policy)
            policy = load_policy(path, floor_years=settings.legal_floor_years)
            report["policy"] = {"file": str(path), "sha256": policy.sha256, "rules": len(policy.rules)}
            dbname = PostgresHook(postgres_conn_id=database).connection.schema

            def connect():
                conn = PostgresHook(postgres_conn_id=admin_conn_id, database=dbname).get_conn()
                conn.autocommit = True
                return conn

            job = DataRetention(connect=connect, policy=policy, database=database, store=self.store,
                                staging_dir=settings.staging_dir, batch_rows=settings.retention_batch_rows,
                                compression_level=settings.compression_level, run_stamp=when, log=self.log)
            report["rules"] = job.run(dry_run=dry_run, results=report["rules"])
            report["as_of"] = job.as_of.isoformat() if job.as_of else None
            report["status"] = "ok"
        except Exception as err:
            report["status"] = "failed"
            report["error"] = f"{type(err).__name__}: {short_error(err)}"
            raise
        finally:
            report["finished_at"] = utc_now_iso()
            self.store.put_json(key, report)
            self.log.info("retention report: s3://%s/%s", self.store.bucket, key)
        return {"database": database, "status": report["status"], "dry_run": dry_run, "report_key": key}


class DataRetentionReportOperator(PgdrBaseOperator):
    """Collects every database's retention report of this run, posts one Slack message with the counts
    per rule, and fails the run when a database failed or wrote no report."""

    ui_color = "#fbeee8"

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)

    def execute(self, context) -> dict[str, Any]:
        from pgdr.alerts import AlreadyAlerted, send_alert
        from pgdr.data_retention import collect_reports, retention_alert

        settings = self.settings
        ti = context["ti"]
        when = run_stamp(context)
        reports, missing = collect_reports(self.store, settings.s3_prefix, when, ti.run_id, settings.databases)
        dry_run = effective_dry_run(context)
        payload = retention_alert(reports, missing, dry_run=dry_run, log_url=ti.log_url)
        send_alert(payload, settings.slack_conn_id)
        failed = [r["database"] for r in reports if r.get("status") != "ok"] + list(missing)
        if failed:
            raise AlreadyAlerted(f"data retention failed for {', '.join(failed)}; see the reports under "
                                 f"s3://{self.store.bucket}/{settings.s3_prefix}/reports/retention/data/{when}/")
        return {"databases": [r["database"] for r in reports], "dry_run": dry_run,
                "rules": sum(len(r.get("rules", [])) for r in reports)}
