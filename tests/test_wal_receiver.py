"""The WAL receiver healing and being watched: a lost slot, the set-up check on a fresh set-up, the
primary's view of the receiver, pruning and free space.

Real services: a PostgreSQL 15 cluster of this module's own with a small max_slot_wal_keep_size (its
synchronous_standby_names is changed here), pg_receivewal run as the postgres user, the session's S3
server and Slack receiver.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
import time
from contextlib import closing, contextmanager

import pytest
from test_wal_archive import (
    REPL_PASSWORD,
    REPL_ROLE,
    _cli,
    _status,
    commit_seconds,
    fake_segment,
    receiver,
    s3_bytes,
    sha,
    streaming,
    sync_names,
    system_id,
)

from harness.stack import BUCKET
from pgdr.alerts import wal as wal_alerts
from pgdr.alerts.slack import send_alert
from pgdr.verify.wal import server_findings
from pgdr.wal.gaps import GAPS_NAME, gaps_key, record_gaps
from pgdr.wal.local import load_state, prunable, prune_shipped, scan
from pgdr.wal.names import wal_key
from pgdr.wal.ship import ship_once, ship_window
from tests.support.s3 import plain_store
from tests.support.waiting import wait_for

log = logging.getLogger("test_wal_receiver")


@pytest.fixture(scope="module")
def cluster(cluster):
    cluster.execute("CREATE TABLE walgen (id bigserial PRIMARY KEY, payload text)")
    cluster.create_backup_role(REPL_ROLE, REPL_PASSWORD)
    return cluster


@contextmanager
def small_slot_limit(cluster):
    """A receiver that falls more than 48 MiB behind loses its slot (only inside this block)."""
    settings = (("max_slot_wal_keep_size", "48MB"), ("wal_keep_size", "0"), ("max_wal_size", "64MB"),
                ("min_wal_size", "32MB"))
    for setting, value in settings:
        cluster.execute(f"ALTER SYSTEM SET {setting} = '{value}'")
    cluster.execute("SELECT pg_reload_conf()")
    try:
        yield
    finally:
        for setting, _ in settings:
            cluster.execute(f"ALTER SYSTEM RESET {setting}")
        cluster.execute("SELECT pg_reload_conf()")


@pytest.fixture()
def store(stack):
    return plain_store(stack.s3.client(), f"t/walrcv-{os.urandom(4).hex()}", log=log)


def generate_wal(cluster, segments: int) -> None:
    """Write and switch ``segments`` WAL segments without waiting for any standby, then checkpoint
    (the checkpoint is what invalidates a slot that fell too far behind)."""
    conn = cluster.connect()
    try:
        with conn.cursor() as cur:
            cur.execute("SET synchronous_commit = local")
            for _ in range(segments):
                cur.execute(
                    "INSERT INTO walgen (payload) SELECT repeat(md5(g::text), 20) FROM generate_series(1, 200) g")
                cur.execute("SELECT pg_switch_wal()")
            cur.execute("CHECKPOINT")
    finally:
        conn.close()


def slot_status(cluster, slot: str = "pgdr_receiver"):
    rows = cluster.execute("SELECT wal_status, active FROM pg_replication_slots WHERE slot_name = %s", params=(slot,))
    return rows[0] if rows else None


def primary_probe(cluster, slot: str = "pgdr_receiver"):
    def probe():
        with closing(cluster.connect(user=REPL_ROLE, password=REPL_PASSWORD)) as conn:
            return server_findings(conn, slot)
    return probe


# ---------------------------------------------------------------- item 5: a lost slot heals

@pytest.mark.slow
def test_a_lost_slot_is_recreated_the_gap_recorded_and_synchronous_commits_work_again(
        stack, pgdr_env, cluster, wal_dir, store):
    database = "walgap_db"
    with small_slot_limit(cluster):
        state, before = _lose_the_slot(cluster, wal_dir, store, database)
        with sync_names(cluster, "pgdr_receiver"):
            status = _heal(cluster, wal_dir)
    _check_gap_and_ship(stack, cluster, wal_dir, store, database, state, before, status)


def _lose_the_slot(cluster, wal_dir, store, database):
    with receiver(cluster, wal_dir, synchronous=True), sync_names(cluster, "pgdr_receiver"):
        wait_for(lambda: streaming(cluster, "pgdr_receiver") == "sync", what="sync_state sync")
        assert commit_seconds(cluster)[0] < 2
        cluster.execute("SELECT pg_switch_wal()")
        commit_seconds(cluster, rows=20)
        wait_for(lambda: any(f.kind == "segment" for f in scan(wal_dir)), what="a completed segment")
        state = load_state(wal_dir, database)
        ship_once(store, database, wal_dir, state, log)
        before = {f.name for f in scan(wal_dir) if f.kind in ("segment", "partial")}

    # the receiver is down long enough for the server to drop the WAL its slot held
    generate_wal(cluster, 6)
    wait_for(lambda: slot_status(cluster) == ("lost", False), 30, "the slot to be invalidated")
    return state, before


def _heal(cluster, wal_dir):
    with receiver(cluster, wal_dir, synchronous=True):
        wait_for(lambda: streaming(cluster, "pgdr_receiver") == "sync", 60, "sync again after healing")
        seconds, notices = commit_seconds(cluster)
        assert seconds < 2 and not notices, (seconds, notices)
        assert slot_status(cluster) == ("reserved", True)
        return wait_for(lambda: _status(wal_dir, lambda s: s["gaps"] == 1 and s["state"] == "running"), 30,
                        "the gap in the status file")


def _check_gap_and_ship(stack, cluster, wal_dir, store, database, state, before, status):
    gap = status["last_gap"]
    assert gap["reason"] == "replication slot lost (wal_status lost)"
    assert gap["segments"] >= 3 and gap["first_segment"] <= gap["last_segment"]
    assert gap["from_lsn"] and gap["to_lsn"] and "base backup" in gap["next_step"]
    assert json.loads((wal_dir / GAPS_NAME).read_text())["gaps"] == [gap]
    # streaming resumed after the gap: the new files are past it, the old ones moved aside
    top = {f.name for f in scan(wal_dir, aside=False) if f.kind in ("segment", "partial")}
    assert top and all(name[8:24] > gap["last_segment"][8:] for name in top), (top, gap)
    assert {f.name for f in scan(wal_dir) if f.kind in ("segment", "partial")} >= before

    # the shipper ships what is on both sides, records the gap in S3 state and alerts once
    stack.slack.clear()
    sysid = system_id(cluster)
    ship_once(store, database, wal_dir, state, log)

    def alert_gap(gap: dict) -> bool:
        return send_alert(wal_alerts.gap_alert(database, gap))

    recorded = record_gaps(store, database, wal_dir, state, alert_gap, log)
    assert [g["id"] for g in recorded] == [gap["id"]]
    document = store.read_json(gaps_key(store.prefix, database))
    assert [g["to_lsn"] for g in document["gaps"]] == [gap["to_lsn"]]
    stack.slack.wait_for(1)
    [text] = stack.slack.texts()
    assert "WAL gap in the archive of walgap_db" in text
    assert record_gaps(store, database, wal_dir, state, alert_gap, log) == []   # once only
    time.sleep(0.5)
    assert len(stack.slack.texts()) == 1
    for item in scan(wal_dir):
        if item.kind == "segment":
            assert sha(s3_bytes(stack, wal_key(store.prefix, database, item.name, sysid))) == \
                sha(item.path.read_bytes())


# ---------------------------------------------------------------- item 9: --check on a fresh set-up

def test_check_passes_on_a_fresh_set_up_and_names_the_order_of_the_steps(cluster, wal_dir, caplog):
    slot = "fresh_receiver"
    env = dict(os.environ, PGDR_TEST_CONNINFO=f"host={cluster.host} port={cluster.port} user={REPL_ROLE} "
                                              f"password={REPL_PASSWORD} dbname=postgres")
    directory = wal_dir / "not-yet" / "care_commons_db"
    argv, env = _cli(["--check", "--conninfo-env", "PGDR_TEST_CONNINFO", "--slot", slot, "--directory",
                      str(directory)], env)

    # before the receiver ever ran: no slot, no directory, synchronous_standby_names still empty
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"OK    slot: replication slot {slot} does not exist yet; the receiver creates it" in result.stdout
    assert "does not exist yet; the receiver creates it when it starts" in result.stdout.split("directory:")[1]
    assert "WARN  synchronous_standby_names" in result.stdout and "set it only once the receiver streams" \
        in result.stdout
    assert not directory.exists() and slot_status(cluster, slot) is None, "the check changes nothing"

    # the wrong order: naming the receiver before it streams makes every commit wait; the check says so
    with sync_names(cluster, slot):
        result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 1
        assert "every commit on this server waits now" in result.stdout and "start the receiver first" \
            in result.stdout

    # the right order: receiver first (it tells the operator the next step), then the setting
    caplog.set_level(logging.WARNING, logger=f"receiver.{slot}")
    with receiver(cluster, directory, slot=slot, synchronous=True):
        wait_for(lambda: "synchronous_standby_names = 'fresh_receiver'" in caplog.text, 30,
                 "the receiver's advice to set synchronous_standby_names now")
        with sync_names(cluster, slot):
            wait_for(lambda: streaming(cluster, slot) == "sync", what="sync")
            result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
            assert result.returncode == 0, result.stdout
            assert "ready for the WAL receiver" in result.stdout and "WARN" not in result.stdout.replace(
                "WARN  max_slot_wal_keep_size", "")
    cluster.execute("SELECT pg_drop_replication_slot(%s)", params=(slot,))


# ---------------------------------------------------------------- item 19: the primary's view, every pass

def test_a_receiver_outage_reaches_slack_within_a_minute_once_and_its_end_too(stack, pgdr_env, cluster, wal_dir,
                                                                              store):
    database = "walwatch_db"
    results: dict = {}
    with receiver(cluster, wal_dir, synchronous=False) as supervisor:
        stack.slack.clear()

        def window():
            results["summary"] = ship_window(store, database, wal_dir, seconds=40, interval=1.0, log=log,
                                             notify=send_alert, messages=wal_alerts,
                                             probe=primary_probe(cluster),
                                             alert_after_seconds=5.0, keep_segments=4)

        thread = threading.Thread(target=window, daemon=True)
        thread.start()
        time.sleep(3)
        assert stack.slack.texts() == [], "no alert while the receiver streams"
        killed = time.monotonic()
        supervisor.stop()   # the whole receiver is gone: the primary sees no walsender, the slot inactive
        wait_for(lambda: not streaming(cluster, "pgdr_receiver"), 15, "the walsender to go")
        stack.slack.wait_for(1, timeout=60)
        took = time.monotonic() - killed
        assert took < 60, took
        [text] = stack.slack.texts()
        assert "WAL receiver problem seen from the primary" in text and "WAL receiver not connected" in text

    # it is still down on later passes: no second alert; back up: one "resolved"
    time.sleep(5)
    assert len(stack.slack.texts()) == 1, stack.slack.texts()
    with receiver(cluster, wal_dir, synchronous=False):
        wait_for(lambda: len(stack.slack.texts()) == 2, 30, "the recovery alert")
        thread.join(60)
    texts = stack.slack.texts()
    assert "Resolved: WAL receiver as the primary sees it (walwatch_db)" in texts[1], texts
    assert results["summary"]["alerting"] == []


# ---------------------------------------------------------------- item 6: the receiver's disk

def test_prunable_keeps_the_margin_and_never_anything_unshipped_partial_or_history(tmp_path):
    names = [f"0000000100000000000000{n:02X}" for n in range(1, 9)]
    for name in names + ["000000010000000000000009.partial", "00000002.history"]:
        (tmp_path / name).write_bytes(b"x")
    state = {"segments": {n: {"raw_sha256": "ab"} for n in names if n != names[2]}, "partials": {}, "history": {}}
    chosen = [f.name for f in prunable(scan(tmp_path), state, keep_segments=3)]
    assert chosen == [names[0], names[1], names[3], names[4]]   # names[2] unshipped; the newest 3 kept
    assert [f.name for f in prunable(scan(tmp_path), state, keep_segments=0)] == \
        [n for n in names[:-1] if n != names[2]], "at least one completed segment is always kept"


def test_shipped_segments_are_pruned_on_each_pass_and_low_free_space_alerts_once(stack, pgdr_env, cluster, wal_dir,
                                                                                 store):
    database = "walprune_db"
    with receiver(cluster, wal_dir, synchronous=False):
        generate_wal(cluster, 5)
        commit_seconds(cluster, rows=10)
        wait_for(lambda: sum(f.kind == "segment" for f in scan(wal_dir)) >= 5, 30, "five completed segments")
        received = sorted(f.name for f in scan(wal_dir) if f.kind == "segment")
        stack.slack.clear()
        summary = ship_window(store, database, wal_dir, seconds=2, interval=0.5, log=log, notify=send_alert,
                              messages=wal_alerts, keep_segments=2, min_free_bytes=1 << 60)
    local = sorted(f.name for f in scan(wal_dir) if f.kind == "segment")
    assert len(local) == 2 and local == sorted(set(local)) and summary["pruned"] >= len(received) - 2
    assert any(f.kind == "partial" for f in scan(wal_dir)), "the partial segment is never pruned"
    state = load_state(wal_dir, database)
    sysid = system_id(cluster)
    for name in received:
        head = stack.s3.client().head_object(Bucket=BUCKET, Key=wal_key(store.prefix, database, name, sysid))
        assert head["ContentLength"] > 0   # every pruned segment is in S3
    assert set(state["segments"]) == set(local)
    texts = stack.slack.texts()
    assert len(texts) == 1 and "Little free space for received WAL of walprune_db" in texts[0], texts

    # a segment S3 does not hold is never pruned, however old
    fake_segment(wal_dir, "000000010000000000000001", sysid)
    assert "000000010000000000000001" not in prune_shipped(wal_dir, state, 1, log)
    assert (wal_dir / "000000010000000000000001").exists()
