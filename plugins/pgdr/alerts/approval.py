"""Four-eyes approval of destructive runs: which runs need it, who may approve, what the approver
reads, and the decision as the restore record and Slack show it. Pure (no Airflow, no I/O).

Airflow's human-in-the-loop API refuses a response (HTTP 403) from anyone not in the request's
``assigned_users``, so the person who triggered a run is kept out of that list: the API itself
refuses a self-approval. An empty list would let *anyone* with edit rights answer, so a run with
no approver left is refused before it waits (:class:`ApprovalRefused`), never sent out unassigned.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime
from typing import Any

from pgdr.errors import Refused

APPROVE = "Approve"
REJECT = "Reject"
# SimpleAuthManager's roles, lowest first: a role grants what every role below it grants
SIMPLE_ROLES = ("viewer", "user", "op", "admin")
DOC = "docs/operations.md#four-eyes-approval"


class ApprovalRefused(Refused, RuntimeError):
    """The approval cannot be asked for as configured (nobody but the requester could approve)."""


# --- which runs need a second person -------------------------------------------------------------

def restore_needs_approval(plan: dict) -> str | None:
    """Why this restore needs a second person (None: it touches nothing that exists)."""
    request = plan.get("request") or {}
    if request.get("mode") == "replace" and plan.get("kind") == "logical":
        names = plan.get("names") or {}
        return f"it replaces the live database {names.get('target_database') or request.get('database')}"
    if plan.get("kind") in ("files", "config") and request.get("confirm"):
        # prepare refuses a non-empty target_dir without the typed confirmation: a confirmed one is an overwrite
        return f"it restores {plan['kind']} over the non-empty directory {plan.get('target_dir')}"
    return None


def retention_needs_approval(*, run_type: str, dry_run: bool) -> str | None:
    """A run that archives and deletes for real outside its reviewed schedule needs a second person."""
    if dry_run or run_type == "scheduled":
        return None
    return f"this {run_type} run archives, deletes and purges for real (dry_run is off)"


# --- who may approve -----------------------------------------------------------------------------

def role_members(simple_auth_users: str, role: str) -> list[str]:
    """SimpleAuthManager's users (``[core] simple_auth_manager_users``: ``name:role[:teams],...``) holding
    ``role`` or a role above it."""
    wanted = role.strip().lower()
    if wanted not in SIMPLE_ROLES:
        raise ApprovalRefused(f"pgdr_approver_role {role!r} is not a SimpleAuthManager role "
                              f"({', '.join(SIMPLE_ROLES)})", field="pgdr_approver_role")
    members = []
    for entry in (item.strip() for item in simple_auth_users.split(",")):
        parts = entry.split(":")
        if len(parts) >= 2 and parts[1].strip().lower() in SIMPLE_ROLES[SIMPLE_ROLES.index(wanted):]:
            members.append(parts[0].strip())
    return members


def assigned_approvers(approvers: Iterable[str], role_members: Iterable[str], requester: str | None) -> list[str]:
    """Who may answer: the configured approvers and the role's members, never the requester."""
    everyone = list(dict.fromkeys([*approvers, *role_members]))
    allowed = [name for name in everyone if name != requester]
    if not allowed:
        named = ", ".join(everyone) if everyone else "nobody"
        raise ApprovalRefused(
            f"four-eyes approval needs someone other than {requester or 'the requester'} to approve, and "
            f"pgdr_approvers / pgdr_approver_role name {named}: add a second person to pgdr_approvers (or, for a "
            f"single-person team only, set pgdr_four_eyes to false; see {DOC}). Nothing was changed.",
            field="pgdr_approvers")
    return allowed


# --- what the approver reads ---------------------------------------------------------------------

def _size(count: float | None) -> str:
    if count is None:
        return "unknown"
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(count) < 1024 or unit == "TB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    return ""  # unreachable


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "unknown (no drill of this database yet)"
    minutes, secs = divmod(int(round(seconds)), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {secs} s" if minutes else f"{secs} s"


def restore_summary(plan: dict, *, why: str, requested_by: str | None, approvers: list[str], backup_time: str | None,
                    size_bytes: int | None, drill: dict | None, timeout_hours: float,
                    keep_hours: float | None = None) -> tuple[str, str]:
    """(subject, Markdown body) of the approval request of a restore plan."""
    request = plan.get("request") or {}
    names = plan.get("names") or {}
    database = request.get("database", "?")
    kind = plan.get("kind")
    what = {"logical": "replace the live database", "files": "restore files", "config": "restore configuration"}
    subject = f"Approve: {what.get(kind, 'restore')} of {database}?"
    rows = [("Asked by", requested_by or "unknown"), ("Why approval is needed", why), ("Database", database),
            ("Backup", f"{plan.get('backup_id')} (taken {backup_time or 'at an unknown time'})"),
            ("Size", _size(size_bytes))]
    if plan.get("target"):
        rows.append(("Point in time", plan["target"]))
    if kind == "logical":
        kept = names.get("kept_database")
        rows += [("Target", f"{names.get('target_database')} on {plan.get('target_conn_id')}"),
                 ("Afterwards", f"the current database is kept as {kept}"
                                + (f" for {keep_hours:g} hours" if keep_hours else ""))]
    else:
        rows.append(("Target directory", f"{plan.get('target_dir')} (files there with the same names are replaced)"))
    if drill:
        rows.append(("Expected duration", f"{_duration(drill.get('seconds'))} (last drill {drill.get('when')}, "
                                          f"{drill.get('status')})"))
    else:
        rows.append(("Expected duration", _duration(None)))
    rows += [("Who may approve", ", ".join(approvers)),
             ("If nobody answers", f"nothing is done after {timeout_hours:g} hours")]
    body = "\n".join(f"* **{label}**: {value}" for label, value in rows)
    return subject, body + f"\n\nApprove to run it now; Reject to change nothing. See {DOC}."


def retention_summary(*, why: str, requested_by: str | None, approvers: list[str], databases: list[str],
                      policy: str, timeout_hours: float) -> tuple[str, str]:
    subject = f"Approve: data retention acting for real on {', '.join(databases)}?"
    rows = [("Asked by", requested_by or "unknown"), ("Why approval is needed", why),
            ("Databases", ", ".join(databases)),
            ("What happens", f"the policy {policy} archives, soft-deletes and purges rows, and backup retention "
                             "deletes expired backups (never under the legal floor)"),
            ("Who may approve", ", ".join(approvers)),
            ("If nobody answers", f"nothing is done after {timeout_hours:g} hours")]
    body = "\n".join(f"* **{label}**: {value}" for label, value in rows)
    return subject, body + f"\n\nApprove to act now; Reject to change nothing. See {DOC}."


# --- the decision ----------------------------------------------------------------------------------

def not_needed(why: str, requested_by: str | None) -> dict[str, Any]:
    return {"status": "not_needed", "requested_by": requested_by, "approved_by": None, "why": why}


def turned_off(why: str, requested_by: str | None) -> dict[str, Any]:
    return {"status": "off", "requested_by": requested_by, "approved_by": None, "why": why,
            "warning": "pgdr_four_eyes is false: nobody else approved this destructive run"}


def decide(event: dict, *, requested_by: str | None, approvers: list[str]) -> dict[str, Any]:
    """The response (Airflow's resume event) as the record keeps it: approved, rejected or timed out.

    A self-approval that reached here anyway (an auth manager whose user ids differ from names) is
    refused here as well."""
    responder = event.get("responded_by_user") or {}
    name = responder.get("name") or responder.get("id")
    at = event.get("responded_at")
    decision = {"requested_by": requested_by, "approvers": list(approvers), "responded_by": name,
                "responded_at": at.isoformat(timespec="seconds") if isinstance(at, datetime) else at,
                "approved_by": None}
    chosen = list(event.get("chosen_options") or [])
    if event.get("timedout") or event.get("error_type") == "timeout":
        return {**decision, "status": "timed_out", "responded_by": None}
    if "error" in event:
        return {**decision, "status": "refused", "responded_by": None, "why": str(event["error"])[:300]}
    if chosen == [APPROVE] and requested_by is not None and name == requested_by:
        return {**decision, "status": "refused", "why": f"{name} triggered the run and cannot approve it"}
    if chosen == [APPROVE]:
        return {**decision, "status": "approved", "approved_by": name}
    return {**decision, "status": "rejected"}


def approval_facts(decision: dict | None) -> list[tuple[str, Any]]:
    """The lines a restore or retention alert adds: who asked, who approved (or why nobody did)."""
    if not decision:
        return []
    status = decision.get("status")
    if status == "approved":
        return [("Approved by", f"{decision['approved_by']} at {decision.get('responded_at')}")]
    if status == "rejected":
        return [("Rejected by", f"{decision.get('responded_by')} at {decision.get('responded_at')}")]
    if status == "timed_out":
        return [("Approval", "nobody approved in time: nothing was done")]
    if status == "refused":
        return [("Approval", f"refused: {decision.get('why')}")]
    if status == "off":
        return [("Approval", "FOUR-EYES OFF (pgdr_four_eyes false): nobody else approved")]
    return []


def outcome_text(decision: dict | None) -> str | None:
    """Why nothing was done, when the approval is the reason (None: it is not)."""
    status = (decision or {}).get("status")
    if status == "rejected":
        return f"{decision.get('responded_by')} rejected it: nothing was changed"
    if status == "timed_out":
        return "nobody approved it before the approval timeout (pgdr_approval_timeout_hours): nothing was changed"
    if status == "refused":
        return f"the approval was refused ({decision.get('why')}): nothing was changed"
    return None
