"""The WAL archive's continuity (pgdr.wal.archive) and what the stages above make of it, without services.

A gap is a structured :class:`pgdr.errors.WalGap` (the missing segment and its timeline as fields), so
point-in-time recovery and the WAL check read fields, never a message; the restore's wording is
unchanged. Also the shipper's alert hand-over: the WAL stage builds no alert, the alerts layer does.
"""

from __future__ import annotations

import logging
from datetime import datetime, timezone

import pytest

from pgdr import errors
from pgdr.alerts import wal as wal_alerts
from pgdr.restore.pitr_plan import Target, WalGapRefused, parse_target
from pgdr.restore.pitr_plan import plan_wal as plan_restore_wal
from pgdr.store.s3 import failure_kind
from pgdr.wal import archive
from pgdr.wal.primary_check import check_standby_names
from pgdr.wal.ship import ship_window
from pgdr.wal.status import receiver_findings

BASE = "pgdr/db/wal/"
T0 = datetime(2026, 11, 26, 2, 0, tzinfo=timezone.utc)
REFUSED = "restore refused, nothing was changed: "


def _found(*names: str, partial: str | None = None) -> dict:
    keys = [(f"{BASE}{n}.zst", T0) for n in names]
    if partial:
        keys.append((f"{BASE}{partial}.partial.zst", T0))
    return archive.wal_objects(keys, BASE)


def test_a_gap_in_the_archive_is_a_wal_gap_with_segment_and_timeline_and_no_restore_wording():
    found = _found("000000020000000000000002", "000000020000000000000004")
    with pytest.raises(errors.WalGap) as gap:
        archive.plan_wal(found, "000000020000000000000002")
    assert (gap.value.segment, gap.value.timeline) == ("000000020000000000000003", 2)
    assert gap.value.reason == str(gap.value) and not str(gap.value).startswith("restore refused")
    assert "the WAL archive has a gap: segment 000000020000000000000003 is missing" in gap.value.reason
    assert "recovery to the newest WAL shipped (latest) would stop there" in gap.value.reason


def test_a_missing_start_segment_and_a_partial_inside_are_gaps_too():
    with pytest.raises(errors.WalGap) as gap:
        archive.plan_wal(_found("000000010000000000000003"), "000000010000000000000002")
    assert gap.value.segment == "000000010000000000000002" and gap.value.timeline == 1
    found = _found("000000010000000000000002", "000000010000000000000004", partial="000000010000000000000003")
    with pytest.raises(errors.WalGap) as gap:
        archive.plan_wal(found, "000000010000000000000002")
    assert gap.value.segment == "000000010000000000000003"
    assert "only shipped partially, yet later WAL exists" in gap.value.reason


def test_an_lsn_past_the_archive_names_the_newest_segment():
    with pytest.raises(archive.PastNewestWal) as past:
        archive.plan_wal(_found("000000010000000000000002"), "000000010000000000000002", until_lsn=0x5000000,
                         target_text="LSN 0/5000000")
    assert past.value.newest == "000000010000000000000002"
    assert str(past.value) == "LSN 0/5000000 is after the newest WAL shipped (000000010000000000000002)"


def test_a_restore_sees_the_gap_as_a_refusal_with_the_same_message_and_fields():
    found = _found("000000010000000000000002", "000000010000000000000004")
    with pytest.raises(WalGapRefused) as refused:
        plan_restore_wal(found, "000000010000000000000002", Target("latest"))
    assert str(refused.value) == (
        REFUSED + "the WAL archive has a gap: segment 000000010000000000000003 is missing; recovery to the "
        "newest WAL shipped (latest) would stop there. Choose a point in time before 000000010000000000000003 "
        "or a base backup taken after it")
    assert isinstance(refused.value, errors.RestoreRefused) and refused.value.segment == "000000010000000000000003"
    with pytest.raises(errors.RestoreRefused) as past:
        plan_restore_wal(_found("000000010000000000000002"), "000000010000000000000002", parse_target("0/5000000"))
    assert str(past.value) == (REFUSED + "LSN 0/5000000 is after the newest WAL shipped "
                               "(000000010000000000000002)")


def test_the_primary_view_ignores_the_servers_own_archiver_and_alerts_name_the_rest():
    findings = [{"problem": "the server's archiver is failing"}, {"problem": "WAL receiver not connected"},
                {"problem": "primary not reachable from the shipper", "error": "timeout"}]
    assert [f["problem"] for f in receiver_findings(findings)] == ["WAL receiver not connected",
                                                                   "primary not reachable from the shipper"]
    assert wal_alerts.receiver_problem(findings[:1], "pgdr_receiver") is None
    problem = wal_alerts.receiver_problem(findings, "pgdr_receiver")
    assert problem["title"] == ("WAL receiver problem seen from the primary: WAL receiver not connected, "
                                "primary not reachable from the shipper")
    assert '"error": "timeout"' in problem["details"]


def test_the_wal_alert_texts():
    problem = wal_alerts.shipping_failed("db1", 75.4, "S3 endpoint unreachable", ConnectionError("refused"))
    assert problem["title"] == "WAL of db1 cannot be shipped to S3"
    assert problem["fingerprint"] == "S3 endpoint unreachable"
    assert ("failing for", "75 s") in problem["facts"]
    assert wal_alerts.low_disk("db1", 1 << 20, 1 << 30)["title"] == "Little free space for received WAL of db1"
    payload = wal_alerts.gap_alert("db1", {"from_lsn": "0/1000000", "to_lsn": "0/3000000", "segments": 2})
    assert "WAL gap in the archive of db1: the replication slot was lost" in payload["text"]
    assert "0/1000000 .. 0/3000000" in str(payload["blocks"])


def test_s3_failures_are_kinds_without_botocore_in_the_wal_stage():
    class ClientError(Exception):
        response = {"Error": {"Code": "AccessDenied"}}

    class EndpointConnectionError(Exception):
        pass

    ConnectionError = type("ConnectionError", (EndpointConnectionError,), {})   # botocore's family name

    assert failure_kind(ClientError()) == "S3 refused: AccessDenied"
    assert failure_kind(ConnectionError()) == "S3 endpoint unreachable"
    assert failure_kind(TimeoutError()) == "S3 endpoint unreachable"
    assert failure_kind(ValueError()) == "ValueError"


def test_notify_without_messages_is_refused_before_anything_ships(tmp_path):
    with pytest.raises(ValueError, match="notify needs the messages to send"):
        ship_window(None, "db", tmp_path, seconds=0, interval=1, log=logging.getLogger("t"), notify=lambda p: True)


def test_standby_names_that_make_commits_wait_fail_and_name_the_fix():
    finding, waiting = check_standby_names("pgdr_receiver", "pgdr_receiver", {})
    assert waiting and finding.status == "fail" and "every commit on this server waits now" in finding.message
    finding, waiting = check_standby_names("", "pgdr_receiver", {})
    assert not waiting and finding.status == "warn"
    finding, _ = check_standby_names("ANY 1 (pgdr_receiver, standby)", "pgdr_receiver", {"pgdr_receiver": ("quorum",
                                                                                                            "streaming")})
    assert finding.status == "ok"
