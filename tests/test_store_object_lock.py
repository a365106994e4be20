"""The store's Object Lock dates against moto's server with a locked bucket, and the key layout.

The GFS date of a backup's objects is retention's knowledge, handed to the store where it is
assembled (pgdr.retain.object_lock): these tests hold the store to the dates it wrote before that
move, and to failing loudly, never writing a backup unlocked, when it was assembled without it.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta, timezone

import pytest

from harness.s3_server import start_s3_server
from pgdr.core.checksums import file_digest
from pgdr.core.progress import Progress
from pgdr.store import layout
from tests.support.s3 import plain_store

BUCKET = "lock-test"
log = logging.getLogger("test_store_object_lock")


@pytest.fixture(scope="module")
def s3():
    server = start_s3_server()
    server.create_bucket(BUCKET, object_lock=True, hardened=False)
    yield server
    server.stop()


def _store(s3, prefix: str, **kwargs):
    from pgdr.store.object_lock import LockPolicy

    return plain_store(s3.client(), prefix, bucket=BUCKET, part_size=5 << 20, log=log,
                       lock_policy=LockPolicy("GOVERNANCE", 7.0), **kwargs)


def _upload(store, tmp_path, key: str) -> dict:
    path = tmp_path / "object"
    path.write_bytes(b"x" * 100)
    store.upload_file(path, key, file_digest(path, store.part_size), {}, Progress("upload", log))
    return store.head(key)


def test_a_backup_written_in_a_month_with_a_good_backup_is_locked_for_the_daily_window_only(s3, tmp_path):
    from pgdr.retain.gfs import Policy
    from pgdr.retain.object_lock import gfs_lock_date

    store = _store(s3, "monthly", backup_lock_date=gfs_lock_date(Policy(30, 12, 7)))
    now = datetime.now(timezone.utc).replace(microsecond=0)
    first, second = (now - timedelta(days=2)).replace(hour=1), (now - timedelta(days=2)).replace(hour=2)
    first_prefix = layout.backup_prefix("monthly", "db", "logical", first.strftime("%Y%m%dT%H%M%SZ"))
    store.put_bytes(layout.manifest_key(first_prefix), b"{}", "application/json")
    store.put_json(layout.marker_key(first_prefix), {"status": "good"})
    second_prefix = layout.backup_prefix("monthly", "db", "logical", second.strftime("%Y%m%dT%H%M%SZ"))
    head = _upload(store, tmp_path, layout.object_key(second_prefix, "toc.dat"))
    # the month (and year) already has its good keeper: this one is a daily, kept 30 days from its start
    assert head["ObjectLockRetainUntilDate"] == second + timedelta(days=30)
    assert head["ObjectLockMode"] == "GOVERNANCE"


def test_reports_state_and_partial_wal_are_not_locked_whole_wal_is(s3, tmp_path):
    store = _store(s3, "misc", backup_lock_date=lambda *args: pytest.fail("only backups ask for a GFS date"))
    now = datetime.now(timezone.utc)
    wal = layout.wal_root("misc", "db")
    for key in (layout.report_key("misc", "verify", "20260101T000000Z", "db"),
                layout.lease_prefix("misc", "db") + "/logical/20260101T000000Z/x.json",
                wal + "/000000010000000000000001.partial.zst"):
        assert "ObjectLockRetainUntilDate" not in _upload(store, tmp_path, key), key
    until = _upload(store, tmp_path, wal + "/000000010000000000000001.zst")["ObjectLockRetainUntilDate"]
    assert timedelta(days=6.9) < until - now < timedelta(days=7.1)


def test_a_store_assembled_without_the_backup_date_refuses_to_write_a_backup_unlocked(s3, tmp_path):
    from pgdr.store.object_lock import NoBackupLockDate

    store = _store(s3, "unwired")
    key = layout.object_key(layout.backup_prefix("unwired", "db", "logical", "20260101T000000Z"), "toc.dat")
    with pytest.raises(NoBackupLockDate, match="backup_lock_date"):
        _upload(store, tmp_path, key)
    assert store.head(key) is None, "nothing written"


def test_the_door_methods_read_write_and_say_what_is_missing(s3):
    store = _store(s3, "door", backup_lock_date=None)
    key = layout.page_key("door")
    assert store.put_bytes(key, b"<html></html>", "text/html; charset=utf-8", cache_control="no-cache") == key
    head = store.head(key)
    assert head["CacheControl"] == "no-cache" and head["ServerSideEncryption"] == "AES256"
    assert store.get_bytes(key) == b"<html></html>"
    store.delete_key(key)
    assert store.head(key) is None
    with pytest.raises(Exception) as raised:
        store.get_bytes(key)
    assert store.is_missing(raised.value)


def test_every_key_follows_the_storage_contract():
    backup = layout.backup_prefix("pgdr", "care_commons_db", "base", "20261206T010203Z")
    assert backup == "pgdr/care_commons_db/base/20261206T010203Z"
    assert layout.kind_prefix("pgdr", "care_commons_db", "base") == "pgdr/care_commons_db/base/"
    assert layout.manifest_key(backup) == backup + "/manifest.json"
    assert layout.marker_key(backup) == backup + "/verification.json"
    assert layout.object_key(backup, "data.tar.zst") == backup + "/data.tar.zst"
    assert layout.wal_root("pgdr", "db") == "pgdr/db/wal"
    assert layout.lease_prefix("pgdr", "db") == "pgdr/state/leases/db"
    assert layout.restores_prefix("pgdr") == "pgdr/state/restores"
    assert layout.restores_prefix("pgdr", "db") == "pgdr/state/restores/db"
    assert layout.replaced_prefix("pgdr", "db") == "pgdr/state/replaced/db"
    assert layout.wal_gaps_key("pgdr", "db") == "pgdr/state/wal-gaps/db.json"
    assert layout.alert_state_key("pgdr", "db") == "pgdr/state/alerts/db.json"
    assert layout.markers_key("pgdr", "db") == "pgdr/state/markers/db.json"
    assert layout.report_key("pgdr", "drill", "20261206T010203Z", "db") == "pgdr/reports/drill/20261206T010203Z-db.json"
    assert (layout.report_key("pgdr", "restore", "20261206T010203Z", "db", "-healed")
            == "pgdr/reports/restore/20261206T010203Z-db-healed.json")
    now = datetime(2026, 12, 6, 1, 2, 3, tzinfo=timezone.utc)
    assert (layout.backup_retention_report_key("pgdr", "db", now, True)
            == "pgdr/reports/retention/backups/db/20261206T010203Z-dry-run.json")
    assert layout.data_retention_report_key("pgdr", "run1", "db") == "pgdr/reports/retention/data/run1/db.json"
    assert layout.data_retention_failure_key("pgdr", "run1") == "pgdr/reports/retention/data/run1/_run.json"
    assert layout.page_key("pgdr") == "pgdr/reports/index.html"
    assert (layout.archive_prefix("pgdr", "db", "public.visits", "run1", now, "archive")
            == "pgdr/db/archive/public.visits/run1/20261206T010203Z-archive")
