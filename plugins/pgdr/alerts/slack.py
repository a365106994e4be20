"""Slack alerts a team can act on: what failed, where, the evidence, the next step.

Messages are Block Kit payloads built by pure functions; they carry ids, counts,
sizes and error text only, never row data: every string passes :mod:`pgdr.core.redaction`
(in :func:`build_alert`, whatever the builder) and error text Airflow's secrets masker. Sending goes
through the slack provider's SlackWebhookHook; an alert that cannot be delivered is logged and never hides
the failure it was reporting.
"""

from __future__ import annotations

import logging
from typing import Any

from pgdr.errors import PgdrError

log = logging.getLogger(__name__)

RUNBOOK = "docs/RUNBOOK_DISASTER_RECOVERY.md"
MAX_ERROR_CHARS = 700
SEVERITY_EMOJI = {"critical": ":red_circle:", "warning": ":large_orange_circle:", "info": ":large_green_circle:"}


def redact(text: str) -> str:
    """Mask every secret Airflow knows of (connection passwords, sensitive variables)."""
    try:
        from airflow.sdk._shared.secrets_masker import redact as airflow_redact
    except ImportError:  # pragma: no cover - older layouts
        return text
    return str(airflow_redact(text))


def short_error(error: object) -> str:
    """Error text fit for Slack, XCom and reports: row data removed (:mod:`pgdr.core.redaction`),
    secrets masked, length bounded."""
    from pgdr.core.redaction import safe_error

    text = redact(safe_error(error)).strip()
    if len(text) > MAX_ERROR_CHARS:
        text = text[:MAX_ERROR_CHARS] + " …"
    return text


def _fields(pairs: list[tuple[str, Any]]) -> dict:
    return {"type": "section",
            "fields": [{"type": "mrkdwn", "text": f"*{name}*\n{value}"}
                       for name, value in pairs if value not in (None, "")]}


def build_alert(*, severity: str, title: str, facts: list[tuple[str, Any]], details: str | None = None,
                next_step: str | None = None, log_url: str | None = None) -> dict:
    """A Block Kit payload: header, facts, details as code, next step, log link."""
    from pgdr.core.redaction import redact_phi

    # whatever a builder passed in, nothing that leaves here quotes row data
    title = redact_phi(str(title))
    facts = [(name, redact_phi(str(value)) if value not in (None, "") else value) for name, value in facts]
    details = redact_phi(details) if details else details
    next_step = redact_phi(next_step) if next_step else next_step
    emoji = SEVERITY_EMOJI.get(severity, "")
    fallback = f"[{severity.upper()}] {title}"
    blocks: list[dict] = [
        {"type": "header", "text": {"type": "plain_text", "text": f"{title}"[:150]}},
        {"type": "context", "elements": [{"type": "mrkdwn", "text": f"{emoji} *{severity.upper()}*"}]},
        _fields(facts),
    ]
    if details:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"```{details}```"}})
    if next_step:
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": f"*Next step:* {next_step}"}})
    if log_url:
        blocks.append({"type": "actions", "elements": [
            {"type": "button", "text": {"type": "plain_text", "text": "Open task log"}, "url": log_url}]})
    return {"text": fallback, "blocks": blocks}


# where a task failure's alert sends the reader, per DAG
DEFAULT_FAILURE_SECTION = "#a-backup-failed"
FAILURE_SECTIONS = {
    "pg_restore": "#restore-refused-or-failed",
    "pg_restore_test": "#a-restore-drill-failed",
    "pg_data_retention": "#data-retention-failed",
    "pg_wal_archive": "#verification-wal-failed",
}


def task_failure_alert(*, dag_id: str, task_id: str, map_index: int | None, run_id: str, try_number: int | None,
                       database: str | None, error: object, log_url: str | None) -> dict:
    task_label = task_id if map_index is None or map_index < 0 else f"{task_id}[{map_index}]"
    return build_alert(
        severity="critical",
        title=f"pgdr: {dag_id} failed" + (f" for {database}" if database else ""),
        facts=[("DAG", dag_id), ("Task", task_label), ("Database", database or "n/a"),
               ("Run", run_id), ("Try", try_number)],
        details=short_error(error),
        next_step=f"read the task log, fix the cause and clear the task; see "
                  f"{RUNBOOK}{FAILURE_SECTIONS.get(dag_id, DEFAULT_FAILURE_SECTION)}",
        log_url=log_url,
    )


NEXT_STEPS = {
    "freshness": "#verification-freshness-failed",
    "integrity": "#verification-integrity-failed",
    "deep_check": "#verification-integrity-failed",
    "bucket_posture": "#bucket-posture",
    "wal": "#verification-wal-failed",
    "all": "",
}


def _evidence_lines(evidence: list[dict], limit: int = 8) -> str:
    lines = []
    for item in evidence[:limit]:
        parts = [f"{name}={value}" for name, value in item.items() if value not in (None, "", [])]
        lines.append("; ".join(parts))
    if len(evidence) > limit:
        lines.append(f"... and {len(evidence) - limit} more")
    return short_error("\n".join(lines)) if lines else ""


def verification_alert(*, database: str, result: dict, reason: str, log_url: str | None) -> dict:
    """A verification finding (or its resolution, or the daily all-clear) as Block Kit."""
    check = result["check"]
    if reason == "digest":
        return build_alert(severity="info", title=f"pgdr: all clear for {database}",
                           facts=[("Database", database)], details=result["summary"], log_url=log_url)
    if reason == "resolved":
        return build_alert(severity="info", title=f"pgdr: {check} passes again for {database}",
                           facts=[("Database", database), ("Check", check)], details=short_error(result["summary"]),
                           log_url=log_url)
    severity = "critical" if result["status"] == "failed" else "warning"
    label = {"new": "", "changed": " (changed)", "reminder": " (still failing)"}.get(reason, "")
    return build_alert(
        severity=severity,
        title=f"pgdr: {check} {result['status']} for {database}{label}",
        facts=[("Database", database), ("Check", check), ("Kind", result.get("kind")),
               ("Backup", result.get("backup_id")), ("Failing since", result.get("since"))],
        details=short_error(result["summary"])
        + ("\n" + _evidence_lines(result["evidence"]) if result["evidence"] else ""),
        next_step=f"follow {RUNBOOK}{NEXT_STEPS.get(check, '')}",
        log_url=log_url,
    )


class AlreadyAlerted(PgdrError, RuntimeError):
    """A failure whose alert has been posted by the task itself (no second, generic alert)."""


def slack_conn_id_for_alerts() -> str:
    """The alert connection even when the other settings are the very thing that is broken."""
    from pgdr.settings import PREFIX, SettingsError, load_settings, setting_default

    try:
        return load_settings().slack_conn_id
    except SettingsError:
        from airflow.sdk import Variable

        return Variable.get(PREFIX + "slack_conn_id", default=None) or setting_default("slack_conn_id")


def send_alert(payload: dict, conn_id: str | None = None) -> bool:
    """Post to Slack; on failure log that the alert was not delivered and return False."""
    try:
        from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

        conn_id = conn_id or slack_conn_id_for_alerts()
        SlackWebhookHook(slack_webhook_conn_id=conn_id, timeout=15).send_dict(payload)
    except Exception as err:  # noqa: BLE001 - an alert must never mask the original failure
        log.error("ALERT NOT DELIVERED to Slack (connection %s): %s; alert was: %s",
                  conn_id, short_error(err), short_error(payload.get("text") or ""))
        return False
    log.info("alert delivered to Slack (connection %s): %s", conn_id, payload.get("text"))
    return True


def on_task_failure(context: dict) -> None:
    """on_failure_callback for every pgdr task."""
    if isinstance(context.get("exception"), AlreadyAlerted):
        return
    ti = context.get("ti") or context.get("task_instance")
    task = context.get("task")
    database = getattr(task, "conn_id", None) or getattr(task, "database", None)
    if database is not None and not isinstance(database, str):
        database = None
    payload = task_failure_alert(
        dag_id=getattr(ti, "dag_id", "?"), task_id=getattr(ti, "task_id", "?"),
        map_index=getattr(ti, "map_index", None), run_id=getattr(ti, "run_id", "?"),
        try_number=getattr(ti, "try_number", None), database=database,
        error=context.get("exception") or "unknown error", log_url=getattr(ti, "log_url", None),
    )
    send_alert(payload)


def _seconds(value) -> str:
    if value is None:
        return ""
    minutes, seconds = divmod(float(value), 60)
    return f"{int(minutes)} min {seconds:.0f} s" if minutes else f"{seconds:.1f} s"


def restore_alert(record: dict, log_url: str | None) -> dict:
    """A manual restore's outcome: what was restored where, by whom, how long; or why it failed."""
    plan = record.get("plan") or {}
    names = plan.get("names") or {}
    request = plan.get("request") or record.get("requested") or {}
    result = record.get("result") or {}
    facts = [("Database", record["database"]), ("Mode", request.get("mode")),
             ("Backup", plan.get("backup_id") or request.get("backup")),
             ("Target", f"{plan.get('target_conn_id', '?')} / {names.get('target_database', '?')}" if plan else None),
             ("Triggered by", record.get("triggered_by")), ("Run", record.get("run_id"))]
    if record["status"] != "succeeded":
        # say what is true: a restore task killed part-way is cleaned up by the report (or the next run),
        # and what could not be undone is named
        cleanup = record.get("interrupted_restore_cleanup") or []
        left = [item for run in cleanup for item in run.get("left", [])]
        done = [item for run in cleanup for item in run.get("done", [])]
        see = f"see {RUNBOOK}#restore-refused-or-failed"
        if left:
            step = f"NOT everything the restore left could be cleaned up: {'; '.join(left)}; check by hand, {see}"
        elif done:
            step = (f"the restore task died part-way; cleaned up after it: {'; '.join(done)}; trigger pg_restore "
                    f"again, {see}")
        elif record["status"] == "refused":
            step = f"nothing was changed; fix the cause and trigger pg_restore again, {see}"
        else:
            step = f"what the restore created was dropped; fix the cause and trigger pg_restore again, {see}"
        return build_alert(severity="critical", title=f"pgdr: restore of {record['database']} {record['status']}",
                           facts=facts, details=short_error(record.get("error") or "see the task log"),
                           next_step=step, log_url=log_url)
    seconds = result.get("seconds", {})
    if plan.get("kind") in ("files", "config"):
        facts = [f for f in facts if f[0] not in ("Target", "Mode")] + [
            ("Kind", plan["kind"]), ("Target", plan.get("target_dir")),
            ("Files / bytes", f"{result.get('files')} / {result.get('bytes')}"),
            ("Took", _seconds(seconds.get("total")))]
        return build_alert(severity="info", title=f"pgdr: restore of {record['database']} succeeded", facts=facts,
                           details="every file's sha256, size and mtime equal the manifest",
                           next_step=f"the restored {plan['kind']} are under {plan.get('target_dir')}", log_url=log_url)
    facts += [("Tables / rows", f"{result.get('tables')} / {result.get('rows')}"),
              ("Took", _seconds(seconds.get("total")))]
    if request.get("mode") == "replace":
        step = (f"{names.get('target_database')} now holds backup {plan.get('backup_id')}; the old database is kept "
                f"as {names.get('kept_database')} until pgdr_replaced_keep_hours have passed")
    elif request.get("mode") == "tables":
        step = (f"the rows are in schema {names.get('recovered_schema')} of {names.get('target_database')}; copy "
                f"back what is needed, then drop the schema ({RUNBOOK}#accidental-deletion)")
    else:
        step = f"point the application or your checks at {names.get('target_database')}"
    details = "row counts equal the manifest for every table restored"
    if result.get("roles_created"):
        details += f"\nroles created without passwords (set them): {', '.join(result['roles_created'])}"
    return build_alert(severity="info", title=f"pgdr: restore of {record['database']} succeeded", facts=facts,
                       details=details, next_step=step, log_url=log_url)


def drill_alert(record: dict, log_url: str | None) -> dict:
    """A restore drill that found a difference, failed, or ran over the RTO budget."""
    facts = [("Database", record["database"]), ("Backup", record.get("backup_id")),
             ("Measured RTO", _seconds(record.get("rto_seconds"))),
             ("Projected RTO", _seconds(record.get("projected_rto_seconds"))),
             ("Budget", _seconds(record.get("rto_budget_seconds"))), ("Run", record.get("run_id"))]
    return build_alert(severity="critical", title=f"pgdr: restore drill failed for {record['database']}",
                       facts=facts, details=_evidence_lines(record.get("problems") or []),
                       next_step=f"follow {RUNBOOK}#a-restore-drill-failed", log_url=log_url)
