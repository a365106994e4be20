"""When alerts are posted, and which backup a restore or the deep check takes: pure functions."""

from datetime import datetime, timedelta, timezone

from pgdr.alerts.policy import decide
from pgdr.store.catalog import BackupEntry, entries_from_keys, newest_good, pick_deep_check

NOW = datetime(2026, 11, 26, 12, 0, tzinfo=timezone.utc)


def _result(check, status, fingerprint="f1"):
    return {"check": check, "status": status, "summary": f"{check} {status}", "evidence": [], "kind": None,
            "backup_id": None, "fingerprint": fingerprint}


def test_new_failure_posts_once_then_reminds_then_resolves():
    posts, state = decide(None, [_result("integrity", "failed")], NOW, 24, False)
    assert [reason for reason, _ in posts] == ["new"]
    posts, state = decide(state, [_result("integrity", "failed")], NOW + timedelta(hours=6), 24, False)
    assert posts == []
    posts, state = decide(state, [_result("integrity", "failed", "f2")], NOW + timedelta(hours=7), 24, False)
    assert [reason for reason, _ in posts] == ["changed"]
    posts, state = decide(state, [_result("integrity", "failed", "f2")], NOW + timedelta(hours=32), 24, False)
    assert [reason for reason, _ in posts] == ["reminder"]
    assert posts[0][1]["since"] == NOW.isoformat()
    posts, state = decide(state, [_result("integrity", "ok")], NOW + timedelta(hours=33), 24, False)
    assert [reason for reason, _ in posts] == ["resolved"]
    assert state["checks"] == {}


def test_daily_digest_only_when_all_clear_and_once_a_day():
    ok = [_result("freshness", "ok"), _result("integrity", "ok")]
    posts, state = decide(None, ok, NOW, 24, True)
    assert [reason for reason, _ in posts] == ["digest"]
    assert decide(state, ok, NOW + timedelta(hours=6), 24, True)[0] == []
    assert [r for r, _ in decide(state, ok, NOW + timedelta(days=1), 24, True)[0]] == ["digest"]
    assert decide(None, [_result("freshness", "failed")], NOW, 24, True)[0][0][0] == "new"
    assert decide(None, ok, NOW, 24, False)[0] == []


def test_catalog_skips_incomplete_and_bad_backups():
    base = "p/db/logical/"
    keys = [base + "20261101T020000Z/manifest.json", base + "20261102T020000Z/manifest.json",
            base + "20261102T020000Z/verification.json", base + "20261103T020000Z/dump/toc.dat",
            base + "junk/manifest.json", "p/db/logical-other/x"]
    entries = entries_from_keys(keys, base)
    assert [(e.backup_id, e.complete, e.has_marker) for e in entries] == [
        ("20261101T020000Z", True, False), ("20261102T020000Z", True, True), ("20261103T020000Z", False, False)]
    marked = [entries[0], BackupEntry("20261102T020000Z", True, True, {"status": "bad"}), entries[2]]
    assert newest_good(marked).backup_id == "20261101T020000Z"


def test_deep_check_rotates_to_the_backup_verified_longest_ago():
    entries = [BackupEntry("20261101T020000Z", True, True, {"status": "good", "verified_at": "2026-11-20"}),
               BackupEntry("20261102T020000Z", True, False),
               BackupEntry("20261103T020000Z", True, True, {"status": "good", "verified_at": "2026-11-10"}),
               BackupEntry("20261104T020000Z", True, False)]
    assert pick_deep_check(entries, "20261104T020000Z").backup_id == "20261102T020000Z"  # never verified
    entries[1] = BackupEntry("20261102T020000Z", True, True, {"status": "good", "verified_at": "2026-11-25"})
    assert pick_deep_check(entries, "20261104T020000Z").backup_id == "20261103T020000Z"
    assert pick_deep_check(entries[-1:], "20261104T020000Z") is None


def test_every_runbook_link_in_alerts_points_at_a_section():
    import re
    from pathlib import Path

    from pgdr.alerts.messages import FAILURE_SECTIONS, NEXT_STEPS, RUNBOOK

    text = (Path(__file__).resolve().parents[1] / RUNBOOK).read_text()
    anchors = {re.sub(r"[^a-z0-9 -]", "", line[3:].strip().lower()).replace(" ", "-")
               for line in text.splitlines() if line.startswith("## ")}
    wanted = {anchor.lstrip("#") for anchor in NEXT_STEPS.values() if anchor}
    wanted |= {"a-backup-failed", "a-deadline-was-missed"}
    wanted |= {anchor.lstrip("#") for anchor in FAILURE_SECTIONS.values()}
    assert wanted <= anchors, wanted - anchors


def test_a_failed_task_links_the_runbook_section_of_its_dag():
    from pgdr.alerts.messages import task_failure_alert

    def next_step(dag_id: str) -> str:
        alert = task_failure_alert(dag_id=dag_id, task_id="t", map_index=None, run_id="r", try_number=1,
                                   database="care_commons_db", error="boom", log_url=None)
        return str(alert)

    assert "#data-retention-failed" in next_step("pg_data_retention")
    assert "#a-backup-failed" in next_step("pg_backup_daily")
