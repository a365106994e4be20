"""The recovery status figures (pgdr.report.status) decided from what was read, without Airflow:
the window from logical backups and from a base backup with continuous WAL, the worst-case loss,
the newest good backup of each kind beside a newer one not yet verified, the last verification and
drill, and the page's escaping; the same figures as gauges (pgdr.report.metrics); and, read from a
real S3 server (moto), a WAL gap that cuts the oldest base backup off."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

import pytest

from pgdr.report.history import BackupPoint, DrillPoint, History, VerifyPoint
from pgdr.report.metrics import gauges, name_part
from pgdr.report.status import DatabaseFacts, PitrSpan, Status, database_status, render_status

NOW = datetime(2026, 12, 6, 12, 0, tzinfo=timezone.utc)
DB = "care_commons_db"


def _backup(kind: str, hours_ago: float, status: str = "good", minutes: float = 2, database: str = DB) -> BackupPoint:
    started = NOW - timedelta(hours=hours_ago)
    return BackupPoint(database=database, kind=kind, backup_id=started.strftime("%Y%m%dT%H%M%SZ"),
                       started_at=started, finished_at=started + timedelta(minutes=minutes), size_bytes=2048,
                       objects=3, status=status)


def _history(backups=(), verifications=(), drills=(), databases=(DB,)) -> History:
    return History(generated_at=NOW, bucket="b", prefix="p", days=90, databases=tuple(databases),
                   rto_budget_seconds=3600, backups=list(backups), verifications=list(verifications),
                   drills=list(drills))


def test_a_base_backup_with_continuous_wal_opens_a_continuous_window_to_the_newest_wal():
    oldest_base = _backup("base", 72)
    logical = [_backup("logical", 48), _backup("logical", 24)]
    newest_wal = NOW - timedelta(seconds=40)
    facts = DatabaseFacts(DB, {"logical": logical[0], "base": oldest_base},
                          PitrSpan(oldest_base.backup_id, oldest_base.finished_at, newest_wal), newest_wal)
    status = database_status(facts, _history([oldest_base, *logical]))
    assert status.window_start == oldest_base.finished_at and status.window_end == newest_wal
    assert status.continuous and status.window_from == f"base {oldest_base.backup_id} + WAL"
    assert status.window_seconds == (newest_wal - oldest_base.finished_at).total_seconds()
    assert status.wal_lag_seconds == 40
    # the logical snapshot before the base backup's end opens it; point-in-time recovery starts later
    earlier = _backup("logical", 80)
    status = database_status(DatabaseFacts(DB, {"logical": earlier, "base": oldest_base}, facts.pitr, newest_wal),
                             _history([earlier, oldest_base]))
    assert status.window_start == earlier.started_at and status.pitr_start == oldest_base.finished_at
    html = re.sub(r"<[^>]+>", "", render_status(Status(NOW, "b", "p", [status])))
    assert f"Any moment from {oldest_base.finished_at:%Y-%m-%d %H:%M} UTC on (base backup " in html
    assert "before that, the logical backups&#39; snapshots" in html


def test_logical_backups_alone_give_a_window_of_their_moments_and_no_wal_lag():
    logical = [_backup("logical", 48), _backup("logical", 24), _backup("logical", 1, status="unverified")]
    facts = DatabaseFacts(DB, {"logical": logical[0]}, None, None)
    status = database_status(facts, _history(logical))
    assert (status.window_start, status.window_end) == (logical[0].started_at, logical[1].started_at)
    assert not status.continuous and status.window_seconds == 24 * 3600
    assert status.wal_lag_seconds is None
    (kind,) = status.kinds
    # the newest good one counts; the newer one verification has not seen is shown beside it
    assert kind.newest_good == logical[1] and kind.newer_unverified == logical[2]
    assert kind.good_age_seconds == (NOW - logical[1].finished_at).total_seconds()


def test_nothing_verified_good_means_no_window_and_a_bad_backup_is_never_newest():
    bad = _backup("logical", 2, status="bad")
    unverified = _backup("logical", 30, status="unverified")
    status = database_status(DatabaseFacts(DB, {}, None, None), _history([unverified, bad]))
    assert status.window_start is None and status.window_seconds is None
    (kind,) = status.kinds
    assert kind.newest_good is None and kind.good_age_seconds is None and kind.newer_unverified == unverified


def test_the_last_verification_counts_its_failed_checks_and_the_last_drill_is_the_newest():
    runs = [VerifyPoint(DB, NOW - timedelta(hours=12), "failed", (("freshness", "failed"), ("wal", "failed"))),
            VerifyPoint(DB, NOW - timedelta(hours=6), "failed", (("freshness", "ok"), ("integrity", "failed"),
                                                                  ("wal", "warning")))]
    drills = [DrillPoint(DB, NOW - timedelta(days=40), "x", 900.0, 3600.0, "ok"),
              DrillPoint(DB, NOW - timedelta(days=10), "y", 1200.0, 3600.0, "ok")]
    status = database_status(DatabaseFacts(DB, {}, None, None), _history(verifications=runs, drills=drills))
    assert status.verification == runs[1] and status.verification_failures == 1
    assert status.drill == drills[1]


def test_gauges_name_each_database_and_kind_and_leave_out_what_does_not_exist():
    base = _backup("base", 30)
    newest_wal = NOW - timedelta(seconds=75)
    facts = DatabaseFacts(DB, {"base": base}, PitrSpan(base.backup_id, base.finished_at, newest_wal), newest_wal)
    runs = [VerifyPoint(DB, NOW - timedelta(hours=1), "ok", (("freshness", "ok"),))]
    drills = [DrillPoint(DB, NOW - timedelta(days=3), base.backup_id, 312.25, 3600.0, "ok")]
    one = database_status(facts, _history([base], runs, drills, databases=(DB, "other.db")))
    other = database_status(DatabaseFacts("other.db", {}, None, None), _history(databases=(DB, "other.db")))
    found = {g.name: (g.value, g.tags) for g in gauges(Status(NOW, "b", "p", [one, other]))}
    assert found == {
        f"pgdr.recovery_window_seconds.{DB}": ((newest_wal - base.finished_at).total_seconds(), {"database": DB}),
        f"pgdr.backup_age_seconds.{DB}.base": (30 * 3600 - 120.0, {"database": DB, "kind": "base"}),
        f"pgdr.wal_lag_seconds.{DB}": (75.0, {"database": DB}),
        f"pgdr.drill_rto_seconds.{DB}": (312.2, {"database": DB}),
        f"pgdr.verification_failures.{DB}": (0.0, {"database": DB}),
        # a database with nothing: a zero window (alerts fire), no made-up ages
        "pgdr.recovery_window_seconds.other_db": (0.0, {"database": "other.db"}),
    }
    assert name_part("a.b c/d") == "a_b_c_d"


def test_the_page_escapes_what_it_shows_and_links_the_history():
    hostile = "<script>x</script>"
    status = database_status(DatabaseFacts(hostile, {}, None, None), _history(databases=(hostile,)))
    html = render_status(Status(NOW, "bucket<b>", "p", [status], unreadable=[f"k/{hostile}"]),
                         history_href="history")
    assert "<script>" not in html and "&lt;script&gt;" in html and "bucket&lt;b&gt;" in html
    assert 'href="history"' in html and "No verified backup: nothing can be restored yet." in html


# --- read from a real S3 server: a WAL gap cuts the oldest base backup off -----------------------

SYSID = "7312345678901234567"


@pytest.fixture(scope="module")
def s3():
    from harness.s3_server import start_s3_server

    server = start_s3_server()
    try:
        server.create_bucket("status-unit")
        yield server
    finally:
        server.stop()


def _base(store, backup_id: str, start_segment: str, status: str = "good") -> None:
    from pgdr.store.manifest import Manifest, ObjectEntry
    from pgdr.store.manifest import backup_prefix as prefix_of

    started = datetime.strptime(backup_id, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
    prefix = prefix_of(store.prefix, DB, "base", backup_id)
    log_no, seg_no = int(start_segment[8:16], 16), int(start_segment[16:], 16)
    store.put_manifest(prefix, Manifest(
        backup_id=backup_id, kind="base", database=DB, dbname="care_commons", started_at=started.isoformat(),
        finished_at=(started + timedelta(minutes=1)).isoformat(), server_version="15.8", server_version_num=150008,
        system_identifier=SYSID,
        objects=[ObjectEntry("data.tar.zst", f"{prefix}/data.tar.zst", 10, "0" * 64, "base_tar")],
        row_counts={}, tool_versions={}, encryption={"sse": "AES256"},
        wal={"start_wal_file": start_segment, "start_lsn": f"{log_no:X}/{seg_no << 24 | 0x28:X}", "timeline": 1,
             "system_identifier": SYSID}))
    store.put_json(f"{prefix}/verification.json", {"status": status, "verified_at": started.isoformat()})


def test_a_wal_gap_moves_the_window_to_the_first_base_backup_past_it(s3):
    from pgdr.report.status import collect_status
    from pgdr.wal.names import wal_key
    from tests.support.s3 import plain_store

    store = plain_store(s3.client(), "gap", bucket="status-unit")
    _base(store, "20261201T000000Z", "000000010000000000000002")
    _base(store, "20261202T000000Z", "000000010000000000000005")
    for n in (2, 3, 5, 6):   # segment 4 never arrived
        store.put_bytes(wal_key(store.prefix, DB, f"00000001000000000000000{n}", SYSID), b"wal", "application/zstd")
    status, _ = collect_status(store, databases=[DB], rto_budget_seconds=3600)
    (d,) = status.databases
    newest = max(m for _, m in store.list_objects(f"{store.prefix}/{DB}/wal/"))
    assert d.wal_gap == "000000010000000000000004" and d.pitr_base == "20261202T000000Z"
    assert d.window_start == datetime(2026, 12, 2, 0, 1, tzinfo=timezone.utc) and d.window_end == newest
    assert d.continuous and d.newest_wal_at == newest
    html = render_status(status)
    assert "WAL gap at segment <code>000000010000000000000004</code>" in html


def test_the_plugin_page_says_plainly_when_the_store_cannot_be_read(monkeypatch):
    """An unreachable S3 endpoint: a 503 page with one redacted line, no traceback, no credentials."""
    import json

    import pgdr_plugin
    from harness.pg_cluster import free_port

    secret = "aws-Secret-Never-Shown-9d2"
    monkeypatch.setenv("AIRFLOW_VAR_PGDR_DATABASES", json.dumps([DB]))
    monkeypatch.setenv("AIRFLOW_VAR_PGDR_S3_BUCKET", "status-unit")
    monkeypatch.setenv("AIRFLOW_CONN_BACKUP_S3", json.dumps({
        "conn_type": "aws", "login": "AKIDEXAMPLE", "password": secret,
        "extra": {"endpoint_url": f"http://127.0.0.1:{free_port()}", "region_name": "us-east-1",
                  "config_kwargs": {"retries": {"max_attempts": 1}, "connect_timeout": 2}}}))
    response = pgdr_plugin._read(pgdr_plugin._status_page)
    body = response.body.decode()
    assert response.status_code == 503 and "The backup store cannot be read: Could not connect to the endpoint" in body
    assert secret not in body and "Traceback" not in body and f'data-database="{DB}"' not in body
