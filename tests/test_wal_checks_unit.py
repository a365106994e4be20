"""pg_backup_verify's WAL check without services: how the primary's statistics views are read into
findings, and how findings become the check's verdict (pgdr.verify.wal).

The server side is a table of the rows PostgreSQL's views return (``pg_stat_replication``,
``pg_replication_slots``, ``pg_stat_archiver``); the archive side is a store with no usable base
backup. The archive's continuity along real WAL and timelines, and the findings from a real primary
and receiver, are checked end to end in tests/test_wal_archive.py and tests/test_wal_faults.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import pytest

from pgdr.store.catalog import BackupEntry
from pgdr.verify.wal import SLOT_LAG_WARNING_BYTES, check_wal, server_findings, shipping_limit_seconds

SLOT = "pgdr_wal_receiver"
NOW = datetime(2026, 12, 6, 5, 0, tzinfo=timezone.utc)


@dataclass
class Views:
    """What the primary's views hold; each query wal_checks sends is answered from one field."""

    sync_names: str = f"FIRST 1 ({SLOT})"
    replication: list[tuple] = field(default_factory=lambda: [("streaming", "sync")])
    slot: tuple | None = (True, "reserved", 16 << 20)      # active, wal_status, retained bytes
    archiver: tuple = ("off", 0, None, None, None)           # mode, failed, last_failed_wal, failed at, archived at
    queries: list[str] = field(default_factory=list)
    closed: bool = False

    def cursor(self):
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def close(self):
        self.closed = True

    def execute(self, query: str, params=None) -> None:
        self.queries.append(query)
        if "synchronous_standby_names" in query:
            self._rows = [(self.sync_names,)]
        elif "pg_stat_replication" in query:
            assert params == (SLOT,), "the receiver is looked up by its application_name"
            self._rows = self.replication
        elif "pg_replication_slots" in query:
            assert params == (SLOT,)
            self._rows = [self.slot] if self.slot else []
        elif "pg_stat_archiver" in query:
            self._rows = [self.archiver]
        else:
            raise AssertionError(f"unexpected query {query}")

    def fetchone(self):
        return self._rows[0] if self._rows else None

    def fetchall(self):
        return list(self._rows)


def problems(findings: list[dict]) -> list[str]:
    return [f["problem"] for f in findings]


def test_a_healthy_primary_has_no_findings():
    assert server_findings(Views(), SLOT) == []


def test_an_asynchronous_setup_is_fine_when_the_receiver_is_not_meant_to_be_synchronous():
    assert server_findings(Views(sync_names="", replication=[("streaming", "async")]), SLOT) == []


def test_quorum_commit_counts_as_synchronous():
    assert server_findings(Views(sync_names=f"ANY 1 ({SLOT}, other)", replication=[("streaming", "quorum")]),
                           SLOT) == []


def test_a_receiver_that_is_not_connected_is_named_with_the_sync_setting():
    findings = server_findings(Views(sync_names="", replication=[]), SLOT)
    assert findings == [{"problem": "WAL receiver not connected", "application_name": SLOT,
                         "synchronous_standby_names": "(none)"}]


def test_a_receiver_still_catching_up_is_not_streaming():
    assert problems(server_findings(Views(replication=[("catchup", "async")]), SLOT)) == ["WAL receiver not streaming"]


def test_a_receiver_meant_to_be_synchronous_but_async_loses_rpo_zero():
    findings = server_findings(Views(replication=[("streaming", "async")]), SLOT)
    assert findings == [{"problem": "WAL receiver not synchronous", "sync_state": "async",
                         "synchronous_standby_names": f"FIRST 1 ({SLOT})"}]


@pytest.mark.parametrize("slot, expected", [
    (None, "replication slot missing"),
    ((False, "lost", None), "replication slot lost its WAL"),
    ((False, "extended", SLOT_LAG_WARNING_BYTES + 1), "replication slot retains a lot of WAL"),
])
def test_slot_problems(slot, expected):
    assert problems(server_findings(Views(slot=slot), SLOT)) == [expected]


def test_a_slot_retaining_less_than_the_warning_is_fine():
    assert server_findings(Views(slot=(True, "reserved", SLOT_LAG_WARNING_BYTES)), SLOT) == []


def test_the_archiver_is_failing_only_when_its_last_failure_is_newer_than_its_last_success():
    failed_at = NOW - timedelta(minutes=1)
    failing = Views(archiver=("on", 3, "000000010000000000000042", failed_at, failed_at - timedelta(hours=1)))
    assert server_findings(failing, SLOT) == [{"problem": "the server's archiver is failing",
                                               "last_failed_wal": "000000010000000000000042", "failed_count": 3}]
    never_archived = Views(archiver=("on", 1, "000000010000000000000001", failed_at, None))
    assert problems(server_findings(never_archived, SLOT)) == ["the server's archiver is failing"]
    recovered = Views(archiver=("on", 3, "000000010000000000000042", failed_at, failed_at + timedelta(seconds=5)))
    assert server_findings(recovered, SLOT) == []
    archiving_off = Views(archiver=("off", 3, "000000010000000000000042", failed_at, None))
    assert server_findings(archiving_off, SLOT) == []


def test_shipping_may_lag_three_passes_and_a_minute_never_less_than_two_minutes():
    assert shipping_limit_seconds(10) == 120
    assert shipping_limit_seconds(60) == 240
    assert shipping_limit_seconds(300) == 960


@dataclass
class NoBaseBackups:
    """A store whose base backups are all unusable: incomplete, or marked bad by verification."""

    entries: list[BackupEntry] = field(default_factory=list)
    prefix: str = "pgdr"

    def catalog(self, database: str, kind: str) -> list[BackupEntry]:
        assert kind == "base"
        return self.entries


def test_off_when_physical_backups_are_off_and_nothing_is_read():
    def connect():
        raise AssertionError("the primary must not be contacted")
    verdict = check_wal(None, "care", connect, SLOT, 30, enabled=False)
    assert verdict["status"] == "ok" and verdict["fingerprint"] == "off"
    assert "pgdr_physical_backups" in verdict["summary"]


def test_without_a_good_base_backup_pitr_is_impossible_and_the_check_fails():
    store = NoBaseBackups([BackupEntry("20261201T000000Z", False, False),
                           BackupEntry("20261202T000000Z", True, True, {"status": "bad"})])
    views = Views()
    verdict = check_wal(store, "care", lambda: views, SLOT, 30, enabled=True)
    assert verdict["status"] == "failed"
    assert problems(verdict["evidence"]) == ["no complete, good base backup: point-in-time recovery is impossible"]
    assert views.closed, "the connection to the primary is closed after the check"


def test_an_unreachable_primary_is_a_finding_not_a_crash_and_its_error_is_cut_short():
    def connect():
        raise ConnectionError("could not connect to server: " + "x" * 1000)
    verdict = check_wal(NoBaseBackups(), "care", connect, SLOT, 30, enabled=True)
    assert verdict["status"] == "failed"
    unreachable = [f for f in verdict["evidence"] if f["problem"] == "primary unreachable"]
    assert len(unreachable) == 1 and len(unreachable[0]["error"]) <= 200


def test_the_fingerprint_names_the_problems_so_a_repeat_is_not_alerted_twice():
    """The alert policy repeats an alert when the fingerprint changes: it must depend on which
    problems there are, not on their details (bytes retained, ages) that change every run."""
    store = NoBaseBackups()
    first = check_wal(store, "care", lambda: Views(slot=(True, "extended", SLOT_LAG_WARNING_BYTES + 1)), SLOT, 30,
                      enabled=True)
    second = check_wal(store, "care", lambda: Views(slot=(True, "extended", SLOT_LAG_WARNING_BYTES * 3)), SLOT, 30,
                       enabled=True)
    assert first["fingerprint"] == second["fingerprint"]
    assert first["fingerprint"].startswith("wal:") and "replication slot retains a lot of WAL" in first["fingerprint"]
    other = check_wal(store, "care", lambda: Views(slot=None), SLOT, 30, enabled=True)
    assert other["fingerprint"] != first["fingerprint"]
    assert "replication slot missing" in other["summary"]
