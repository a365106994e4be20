"""Four-eyes approval's rules, pure (pgdr.alerts.approval): which runs need a second person, who may
approve (never the requester, never nobody), what the approver reads, and the decision as the record
and Slack show it. The api-server's enforcement is tested in tests/test_approval.py."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from pgdr.alerts.approval import (
    ApprovalRefused,
    approval_facts,
    assigned_approvers,
    decide,
    outcome_text,
    restore_needs_approval,
    restore_summary,
    retention_needs_approval,
    role_members,
)
from pgdr.alerts.messages import data_retention_alert, restore_alert
from pgdr.settings import parse_settings

REPLACE = {"kind": "logical", "backup_id": "20261126T020000Z", "target_conn_id": "care_commons_admin",
           "request": {"database": "care_commons_db", "mode": "replace", "confirm": "RESTORE care_commons_db"},
           "names": {"target_database": "care_commons", "kept_database": "care_commons_replaced_20261206T100000Z"}}


@pytest.mark.parametrize(("plan", "needed"), [
    (REPLACE, "replaces the live database care_commons"),
    ({**REPLACE, "request": {**REPLACE["request"], "mode": "new_database", "confirm": ""}}, None),
    ({**REPLACE, "request": {**REPLACE["request"], "mode": "tables", "confirm": ""}}, None),
    ({**REPLACE, "kind": "pitr", "request": {**REPLACE["request"], "mode": "new_database", "confirm": ""}}, None),
    ({"kind": "files", "target_dir": "/r/x", "request": {"database": "d", "mode": "new_database", "confirm": ""}},
     None),
    ({"kind": "config", "target_dir": "/r/x", "request": {"database": "d", "mode": "new_database",
                                                          "confirm": "RESTORE d"}},
     "restores config over the non-empty directory /r/x"),
])
def test_only_a_replace_or_an_overwrite_needs_a_second_person(plan, needed):
    why = restore_needs_approval(plan)
    assert (why is None) if needed is None else (needed in why)


@pytest.mark.parametrize(("run_type", "dry_run", "needed"), [
    ("manual", False, True), ("backfill", False, True), ("asset_triggered", False, True),
    ("manual", True, False), ("scheduled", False, False)])
def test_retention_needs_approval_only_when_it_acts_outside_its_schedule(run_type, dry_run, needed):
    assert (retention_needs_approval(run_type=run_type, dry_run=dry_run) is not None) is needed


def test_the_requester_is_never_an_approver():
    assert assigned_approvers(["alice", "bob"], ["carol", "bob"], "alice") == ["bob", "carol"]
    assert assigned_approvers(["alice"], [], None) == ["alice"]   # nobody asked by name: any approver


@pytest.mark.parametrize(("approvers", "requester"), [([], "alice"), (["alice"], "alice"), ([], None)])
def test_no_approver_but_the_requester_is_refused_rather_than_left_open_to_anyone(approvers, requester):
    # an empty assigned_users would let anyone with edit rights answer, the requester included
    with pytest.raises(ApprovalRefused, match="pgdr_approvers") as refused:
        assigned_approvers(approvers, [], requester)
    assert refused.value.field == "pgdr_approvers" and "Nothing was changed" in str(refused.value)


def test_a_role_includes_the_roles_above_it():
    users = "admin1:admin,ops:op, viewer1:viewer,user1:user,team:op:team_a"
    assert role_members(users, "op") == ["admin1", "ops", "team"]
    assert role_members(users, "ADMIN") == ["admin1"]
    with pytest.raises(ApprovalRefused, match="not a SimpleAuthManager role"):
        role_members(users, "approvers")


def test_the_summary_says_what_will_happen():
    subject, body = restore_summary(REPLACE, why="it replaces the live database care_commons", requested_by="alice",
                                    approvers=["bob"], backup_time="2026-11-26T02:00:00+00:00", size_bytes=5 * 2**20,
                                    drill={"seconds": 754, "status": "ok", "when": "2026-12-01T03:12:00+00:00"},
                                    timeout_hours=24, keep_hours=168)
    assert subject == "Approve: replace the live database of care_commons_db?"
    for fact in ("**Asked by**: alice", "care_commons_db", "20261126T020000Z (taken 2026-11-26T02:00:00+00:00)",
                 "5.0 MB", "care_commons on care_commons_admin", "care_commons_replaced_20261206T100000Z for 168 hours",
                 "12 min 34 s (last drill 2026-12-01T03:12:00+00:00, ok)", "**Who may approve**: bob",
                 "nothing is done after 24 hours"):
        assert fact in body, fact
    _, no_drill = restore_summary(REPLACE, why="w", requested_by=None, approvers=["bob"], backup_time=None,
                                  size_bytes=None, drill=None, timeout_hours=1)
    assert "unknown (no drill of this database yet)" in no_drill and "**Size**: unknown" in no_drill


AT = datetime(2026, 12, 6, 10, 0, tzinfo=timezone.utc)


def test_decisions():
    approve = {"chosen_options": ["Approve"], "responded_by_user": {"id": "bob", "name": "bob"}, "responded_at": AT}
    assert decide(approve, requested_by="alice", approvers=["bob"]) == {
        "status": "approved", "requested_by": "alice", "approvers": ["bob"], "responded_by": "bob",
        "responded_at": "2026-12-06T10:00:00+00:00", "approved_by": "bob"}
    rejected = decide({**approve, "chosen_options": ["Reject"]}, requested_by="alice", approvers=["bob"])
    assert rejected["status"] == "rejected" and rejected["approved_by"] is None
    # the scheduler's timeout sweep resumes with an error event (no defaults are set)
    timed_out = decide({"error": "The Human-in-the-loop response timeout has passed without a response.",
                        "error_type": "timeout"}, requested_by="alice", approvers=["bob"])
    assert timed_out["status"] == "timed_out" and timed_out["approved_by"] is None
    # an auth manager whose user ids are not the names could let the requester through: refused here too
    self_approved = decide({**approve, "responded_by_user": {"id": "7", "name": "alice"}}, requested_by="alice",
                           approvers=["7"])
    assert self_approved["status"] == "refused" and self_approved["approved_by"] is None
    for decision, text in ((rejected, "bob rejected it: nothing was changed"),
                           (timed_out, "before the approval timeout"), (self_approved, "alice triggered the run")):
        assert text in outcome_text(decision)
    assert outcome_text(decide(approve, requested_by="alice", approvers=["bob"])) is None


def _alert_text(payload: dict) -> str:
    import json

    return json.dumps(payload)


def test_the_restore_alert_names_who_asked_and_who_approved_or_rejected():
    approval = decide({"chosen_options": ["Approve"], "responded_by_user": {"id": "bob", "name": "bob"},
                       "responded_at": AT}, requested_by="alice", approvers=["bob"])
    record = {"status": "succeeded", "database": "care_commons_db", "plan": REPLACE, "triggered_by": "alice",
              "approval": approval, "run_id": "manual__1", "result": {"tables": 3, "rows": 10, "seconds": {}}}
    text = _alert_text(restore_alert(record, log_url=None))
    assert "Triggered by*\\nalice" in text and "Approved by*\\nbob at 2026-12-06T10:00:00+00:00" in text
    rejected = {**approval, "status": "rejected", "approved_by": None}
    text = _alert_text(restore_alert({**record, "status": "rejected", "approval": rejected, "result": None},
                                     log_url=None))
    assert "restore of care_commons_db not approved" in text and "bob rejected it: nothing was changed" in text
    off = {"status": "off", "requested_by": "alice", "approved_by": None}
    assert "FOUR-EYES OFF" in _alert_text(restore_alert({**record, "approval": off}, log_url=None))


def test_the_retention_alert_says_when_it_was_not_approved():
    timed_out = {"status": "timed_out", "requested_by": "alice", "approved_by": None}
    text = _alert_text(data_retention_alert([], [], dry_run=False, log_url=None, approval=timed_out))
    assert "data retention not approved" in text and "alice" in text and "nothing was changed" in text
    assert approval_facts(None) == []


def test_settings_default_to_four_eyes_on_and_check_the_approvers():
    settings = parse_settings({"s3_bucket": "pgdr-backups"})
    assert settings.four_eyes is True and settings.approvers == () and settings.approval_timeout_hours == 24
    assert parse_settings({"s3_bucket": "pgdr-backups", "approvers": '["alice", "bob"]'}).approvers == ("alice", "bob")
    for bad in ('"alice"', '["alice", ""]', "[1]"):
        with pytest.raises(Exception, match="pgdr_approvers"):
            parse_settings({"s3_bucket": "pgdr-backups", "approvers": bad})
