"""Retention stage, backups: grandfather-father-son over S3, WAL pruned to the PITR window, Object Lock
respected and extended, the receiver directory and local staging pruned."""

from __future__ import annotations

from typing import Any

from pgdr.operators.base import DatabaseOperator


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
        from pgdr.operators.base import effective_dry_run
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
