"""The recovery status figures (pgdr.report.status) decided from what was read, without services:
the window from logical backups and from a base backup with continuous WAL, the worst-case loss,
the newest good backup of each kind beside a newer one not yet verified, the last verification and
drill, and the page's escaping. The same figures as gauges (pgdr.report.metrics)."""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

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
