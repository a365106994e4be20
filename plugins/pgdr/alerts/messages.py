"""What pgdr tells people: Slack Block Kit payloads, built by pure functions.

Each says what happened, where, the evidence, and the next step (a section of the runbook). They
carry ids, counts, sizes and error text only, never row data: every string passes
:mod:`pgdr.core.redaction` (in :func:`build_alert`, whatever the builder) and error text Airflow's
secrets masker (:func:`short_error`). Delivery is :mod:`pgdr.alerts.slack`.
"""

from __future__ import annotations

from typing import Any

from pgdr.core.progress import human_bytes

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


def _seconds(value) -> str:
    if value is None:
        return ""
    minutes, seconds = divmod(float(value), 60)
    return f"{int(minutes)} min {seconds:.0f} s" if minutes else f"{seconds:.1f} s"


def restore_alert(record: dict, log_url: str | None) -> dict:
    """A manual restore's outcome: what was restored where, by whom (who asked, who approved), how long;
    or why it failed or was not approved."""
    from pgdr.alerts.approval import approval_facts, outcome_text

    plan = record.get("plan") or {}
    names = plan.get("names") or {}
    request = plan.get("request") or record.get("requested") or {}
    result = record.get("result") or {}
    facts = [("Database", record["database"]), ("Mode", request.get("mode")),
             ("Backup", plan.get("backup_id") or request.get("backup")),
             ("Target", f"{plan.get('target_conn_id', '?')} / {names.get('target_database', '?')}" if plan else None),
             ("Triggered by", record.get("triggered_by")), *approval_facts(record.get("approval")),
             ("Run", record.get("run_id"))]
    if record["status"] in ("rejected", "timed_out") or (record["status"] == "refused" and outcome_text(
            record.get("approval"))):
        return build_alert(severity="warning", title=f"pgdr: restore of {record['database']} not approved",
                           facts=facts, details=outcome_text(record.get("approval")),
                           next_step="trigger pg_restore again if the restore is still wanted; a second person "
                                     "approves it (docs/operations.md#four-eyes-approval)", log_url=log_url)
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


# --- retention --------------------------------------------------------------------------------

def backup_retention_alert(report: dict, log_url: str | None = None) -> dict:
    """A short Slack message: counts and sizes only."""
    counts = report["counts"]
    verb = "would delete" if report["dry_run"] else "deleted"
    facts = [("Database", report["database"]), ("Backups kept", counts["kept"]),
             (f"Backups {verb}", counts["deleted"]), ("Locked (kept, not attempted)", counts["locked"]),
             (f"WAL objects {verb}", counts["wal_deleted"]), ("Locks extended", counts["lock_extended"]),
             ("Space freed" if not report["dry_run"] else "Space to free",
              human_bytes(sum(report["bytes_freed"].values())))]
    if counts.get("restored"):
        facts.append(("Hidden by a delete marker, " + ("to restore" if report["dry_run"] else "restored"),
                      counts["restored"]))
    severity = "warning" if counts["errors"] or counts.get("restored") else "info"
    title = (f"pgdr: backup retention {'dry run ' if report['dry_run'] else ''}for {report['database']}"
             + (f": {counts['errors']} errors" if counts["errors"] else ""))
    step = ("a dry run changed nothing; trigger with dry_run off to apply" if report["dry_run"]
            else "see the report in S3 for the objects S3 refused" if counts["errors"]
            else "someone or something (aws s3 rm, a lifecycle rule) soft-deleted backups: they were restored; "
                 "find the cause" if counts.get("restored") else "nothing to do")
    return build_alert(severity=severity, title=title, facts=facts, next_step=step, log_url=log_url)


def rule_line(rule: dict) -> str:
    parts = [f"matched {rule['matched']}"]
    if rule.get("kept_referenced"):
        parts.append(f"kept (referenced) {rule['kept_referenced']}")
    if rule.get("dry_run"):
        parts.append(f"would {rule['action'].replace('_', ' ')} {rule.get('eligible', 0)}")
    for name in ("archived", "deleted", "soft_deleted", "kept_changed"):
        if rule.get(name):
            parts.append(f"{name.replace('_', ' ')} {rule[name]}")
    return f"{rule['rule']}: " + ", ".join(parts) + f" ({rule.get('seconds', 0):.1f} s)"


def data_retention_alert(reports: list[dict], missing: list[str], *, dry_run: bool, log_url: str | None,
                         approval: dict | None = None) -> dict:
    """The run's outcome as Block Kit: counts per rule and database, never a row; who asked and who approved."""
    from pgdr.alerts.approval import approval_facts, outcome_text

    asked = [("Triggered by", approval.get("requested_by"))] if approval else []
    if outcome_text(approval):
        return build_alert(severity="warning", title="pgdr: data retention not approved",
                           facts=[*asked, *approval_facts(approval)], details=outcome_text(approval),
                           next_step="trigger pg_data_retention again if it is still wanted; a second person "
                                     "approves it (docs/operations.md#four-eyes-approval)", log_url=log_url)
    failed = [r for r in reports if r.get("status") != "ok"]
    lines = []
    for report in reports:
        lines.append(f"{report['database']}: {report.get('status', '?').upper()}")
        lines += [f"  {rule_line(rule)}" for rule in report.get("rules", [])]
        if report.get("error"):
            lines.append(f"  error: {short_error(report['error'])}")
    lines += [f"{database}: no report (the task failed before writing one)" for database in missing]
    all_rules = [rule for r in reports for rule in r.get("rules", [])]
    totals = {name: sum(rule.get(name, 0) for rule in all_rules)
              for name in ("matched", "archived", "deleted", "soft_deleted")}
    if dry_run:  # what acting would do: every eligible row of each action
        totals["archived"] = sum(rule["eligible"] for rule in all_rules if rule["action"] == "archive")
        totals["deleted"] = sum(rule["eligible"] for rule in all_rules if rule["action"] != "soft_delete")
        totals["soft_deleted"] = sum(rule["eligible"] for rule in all_rules if rule["action"] == "soft_delete")
    mode = "dry run, nothing changed" if dry_run else "acted"
    if failed or missing:
        return build_alert(severity="critical", title="pgdr: data retention failed",
                           facts=[("Mode", mode), ("Failed", ", ".join([r["database"] for r in failed] + missing)),
                                  *asked, *approval_facts(approval)],
                           details="\n".join(lines),
                           next_step=f"read the task log and the report; a refused policy changed nothing. "
                                     f"See {RUNBOOK}#data-retention-failed", log_url=log_url)
    word = "Would be " if dry_run else ""
    return build_alert(severity="info", title=f"pgdr: data retention {'dry run ' if dry_run else ''}done",
                       facts=[("Mode", mode), ("Databases", len(reports)),
                              ("Rows matched", totals["matched"]),
                              (f"{word}archived".capitalize(), totals["archived"]),
                              (f"{word}deleted".capitalize(), totals["deleted"]),
                              (f"{word}soft-deleted".capitalize(), totals["soft_deleted"]), *asked,
                              *approval_facts(approval)],
                       details="\n".join(lines), log_url=log_url)
