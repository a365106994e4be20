"""WAL archive: the receiver supervisor, shipping to S3, synchronous commits, the setup check, the DAG.

Real services: a PostgreSQL 15 cluster of this module's own (its synchronous_standby_names is
changed here, which must not stall other tests), pg_receivewal run as the postgres user, and the
session's S3 server with a prefix per test.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pwd
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

import pytest
import zstandard

from harness.pg_cluster import pg_bindir, start_cluster
from harness.stack import BUCKET, postgres_conn
from pgdr.store.s3 import BackupStore
from pgdr.wal import segment_header
from pgdr.wal.local import STATE_NAME, load_state, new_state, pending, scan
from pgdr.wal.names import (
    DEFAULT_SEGMENT_SIZE,
    classify,
    next_segment,
    parse_lsn,
    parse_segment,
    segment_start_lsn,
    wal_key,
    wal_prefix,
)
from pgdr.wal.primary_check import parse_synchronous_standby_names
from pgdr.wal.receiver import Supervisor
from pgdr.wal.ship import segment_for_lsn, ship_once, ship_window
from tests.support.dags import run_dag, task_states, xcom_values
from tests.support.paths import REPO_ROOT
from tests.support.waiting import wait_for

log = logging.getLogger("test_wal_archive")
RUN_AS = "postgres" if os.geteuid() == 0 else None
REPL_ROLE = "pgdr_wal"
REPL_PASSWORD = "pgdr-Wal-Secret-5d1c0e"


# ---------------------------------------------------------------- pure helpers

def test_segment_names_lsns_and_what_needs_shipping(tmp_path):
    assert parse_segment("000000020000000A000000FF") == (2, 10, 255)
    assert next_segment("0000000100000000000000FE", 16 << 20) == "0000000100000000000000FF"
    assert next_segment("0000000100000000000000FF", 16 << 20) == "000000010000000100000000"
    assert next_segment("0000000100000000000003FF", segment_size=4 << 20) == "000000010000000100000000"
    assert parse_lsn("16/B374D848") == 0x16B374D848
    assert segment_for_lsn("16/B374D848", 1) == "0000000100000016000000B3"
    assert segment_for_lsn("0/3000000", 3) == "000000030000000000000003"   # the byte at a boundary
    assert segment_for_lsn(0x2FFFFFF, 1) == "000000010000000000000002"
    for bad in ("00000001000000000000000g", "0000000100000000000000", "x/y"):
        with pytest.raises(ValueError):
            parse_segment(bad) if "/" not in bad else parse_lsn(bad)
    assert [classify(n) for n in ("000000010000000000000003", "000000010000000000000004.partial",
                                  "00000002.history", "receiver.status.json", STATE_NAME, "x.partial")] == \
        ["segment", "partial", "history", None, None, None]
    assert wal_key("p/q", "care_commons_db", "000000010000000000000004.partial") == \
        "p/q/care_commons_db/wal/000000010000000000000004.partial.zst"   # the legacy layout, read only
    assert wal_key("p/q", "care_commons_db", "000000010000000000000004", "7312345678901234567") == \
        "p/q/care_commons_db/wal/7312345678901234567/000000010000000000000004.zst"
    assert wal_prefix("p", "db", 42) == "p/db/wal/42"
    for bad in ("", "12a", "-1", "../x", str(1 << 64)):
        with pytest.raises(ValueError, match="system identifier"):
            wal_prefix("p", "db", bad)

    for name in ("000000010000000000000004", "000000010000000000000003", "000000010000000000000005.partial",
                 "00000002.history", "receiver.status.json"):
        (tmp_path / name).write_bytes(b"x")
    files = scan(tmp_path)
    assert [f.name for f in files] == ["00000002.history", "000000010000000000000003", "000000010000000000000004",
                                       "000000010000000000000005.partial"]
    state = new_state("db")
    state["segments"]["000000010000000000000003"] = {}
    partial = files[-1]
    state["partials"][partial.name] = {"size": partial.size, "mtime_ns": partial.mtime_ns}
    assert [f.name for f in pending(files, state)] == ["00000002.history", "000000010000000000000004"]
    state["partials"][partial.name]["mtime_ns"] += 1
    assert pending(files, state)[-1].name == partial.name


def test_synchronous_standby_names_parsing():
    assert parse_synchronous_standby_names("") == ("", 0, [])
    assert parse_synchronous_standby_names("pgdr_receiver") == ("FIRST", 1, ["pgdr_receiver"])
    assert parse_synchronous_standby_names('ANY 1 (pgdr_receiver, "Standby")') == \
        ("ANY", 1, ["pgdr_receiver", "Standby"])
    assert parse_synchronous_standby_names("2 (A, b)") == ("FIRST", 2, ["a", "b"])


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module")
def cluster():
    cluster = start_cluster()
    cluster.execute("CREATE TABLE walgen (id bigserial PRIMARY KEY, payload text)")
    cluster.create_backup_role(REPL_ROLE, REPL_PASSWORD)
    yield cluster
    cluster.destroy()


def _receiver_dir() -> Path:
    """A directory pg_receivewal (run as postgres) can write and this test can read."""
    path = Path(tempfile.mkdtemp(prefix="pgdr-wal-test-"))
    path.chmod(0o755)
    if RUN_AS:
        entry = pwd.getpwnam(RUN_AS)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


@pytest.fixture()
def wal_dir():
    path = _receiver_dir()
    yield path
    subprocess.run(["rm", "-rf", str(path)], check=False)


@pytest.fixture()
def store(stack):
    return BackupStore(client=stack.s3.client(), bucket=BUCKET, prefix=f"t/wal-{os.urandom(4).hex()}",
                       sse_args={"ServerSideEncryption": "AES256"}, part_size=64 << 20, log=log)


@contextmanager
def receiver(cluster, directory: Path, slot: str = "pgdr_receiver", synchronous: bool = True):
    supervisor = Supervisor(directory, slot, synchronous=synchronous, status_interval=1, bindir=pg_bindir(),
                            env=cluster.tool_env(), run_as=RUN_AS, min_backoff=0.2, max_backoff=2.0,
                            heartbeat_seconds=1.0, logger=logging.getLogger(f"receiver.{slot}"))
    thread = threading.Thread(target=supervisor.run, name=f"supervisor-{slot}", daemon=True)
    thread.start()
    try:
        wait_for(lambda: streaming(cluster, slot), what=f"{slot} streaming")
        yield supervisor
    finally:
        supervisor.stop()
        thread.join(30)
        assert not thread.is_alive()


def streaming(cluster, name: str) -> str | None:
    rows = cluster.execute("SELECT sync_state FROM pg_stat_replication WHERE application_name = %s "
                           "AND state = 'streaming'", params=(name,))
    return rows[0][0] if rows else None


@contextmanager
def sync_names(cluster, value: str):
    cluster.execute("ALTER SYSTEM SET synchronous_standby_names = %s", params=(value,))
    cluster.execute("SELECT pg_reload_conf()")
    try:
        wait_for(lambda: cluster.execute("SHOW synchronous_standby_names")[0][0] == value, what="reload")
        yield
    finally:
        cluster.execute("ALTER SYSTEM RESET synchronous_standby_names")
        cluster.execute("SELECT pg_reload_conf()")
        wait_for(lambda: cluster.execute("SHOW synchronous_standby_names")[0][0] == "", what="reload")


def commit_seconds(cluster, rows: int = 10, timeout: float = 5.0) -> tuple[float, list[str]]:
    """Commit an INSERT; (seconds, notices). A commit still waiting for a synchronous standby after
    ``timeout`` is cancelled, and the server then warns 'canceling wait for synchronous replication'
    (statement_timeout cannot detect it: PostgreSQL disables it before the commit waits)."""
    conn = cluster.connect()
    done = threading.Event()
    errors = []

    def insert():
        try:
            with conn.cursor() as cur:
                cur.execute("INSERT INTO walgen (payload) SELECT repeat(md5(g::text), 20) "
                            "FROM generate_series(1, %s) g", (rows,))
        except Exception as err:  # noqa: BLE001 - re-raised below
            errors.append(err)
        finally:
            done.set()

    try:
        started = time.monotonic()
        threading.Thread(target=insert, daemon=True).start()
        if not done.wait(timeout):
            conn.cancel()
            assert done.wait(30), "the cancelled commit did not return"
        seconds = time.monotonic() - started
        if errors:
            raise errors[0]
        return seconds, list(conn.notices)
    finally:
        conn.close()


def caught_up(cluster, slot: str = "pgdr_receiver") -> None:
    """Wait until the receiver has flushed everything the server has written so far."""
    (target,) = cluster.execute("SELECT pg_current_wal_lsn()::text")[0]
    wait_for(lambda: cluster.execute("SELECT flush_lsn >= %s::pg_lsn FROM pg_stat_replication WHERE "
                                     "application_name = %s", params=(target, slot)) == [(True,)], 20,
             "the receiver to flush what the server wrote")


def current_segment(cluster) -> tuple[str, int]:
    """(segment holding the insert position, byte offset of that position in it)."""
    lsn, timeline = cluster.execute("SELECT pg_current_wal_lsn()::text, timeline_id FROM pg_control_checkpoint()")[0]
    return segment_for_lsn(lsn, timeline), parse_lsn(lsn) % DEFAULT_SEGMENT_SIZE


def s3_bytes(stack, key: str) -> bytes:
    body = stack.s3.client().get_object(Bucket=BUCKET, Key=key)["Body"].read()
    return zstandard.ZstdDecompressor().decompressobj().decompress(body)


def s3_exists(stack, key: str) -> bool:
    return stack.s3.client().list_objects_v2(Bucket=BUCKET, Prefix=key).get("KeyCount", 0) > 0


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def system_id(cluster) -> str:
    return cluster.execute("SELECT system_identifier::text FROM pg_control_system()")[0][0]


def fake_segment(directory: Path, name: str, system_identifier: str, fill: bytes = b"") -> Path:
    """A WAL segment file whose long page header says it belongs to ``system_identifier`` (the bytes
    after the header are ``fill``; shipping reads only the header)."""
    segment = name.removesuffix(".partial")
    timeline, _, _ = parse_segment(segment)
    size = DEFAULT_SEGMENT_SIZE
    header = segment_header._LONG_HEADER.pack(0xD113, 0x0002, timeline, segment_start_lsn(segment, size), 0,
                                           int(system_identifier), size, 8192)
    path = directory / name
    path.write_bytes(header + fill)
    return path


# ---------------------------------------------------------------- shipping

def test_segments_and_the_growing_partial_reach_s3_and_nothing_is_shipped_twice(stack, cluster, wal_dir, store):
    database = "walship_db"
    with receiver(cluster, wal_dir):
        commit_seconds(cluster, rows=2000)
        cluster.execute("SELECT pg_switch_wal()")
        commit_seconds(cluster, rows=50)
        first_segment, offset = current_segment(cluster)
        wait_for(lambda: (wal_dir / (first_segment + ".partial")).exists(), what="the partial segment")
        caught_up(cluster)

        state = load_state(wal_dir, database)
        result = ship_once(store, database, wal_dir, state, log)
        sysid = system_id(cluster)
        assert state["system_identifier"] == sysid
        completed = sorted(f.name for f in scan(wal_dir) if f.kind == "segment")
        assert completed, "pg_switch_wal() should have completed a segment"
        shipped = {u["name"] for u in result["uploaded"]}
        assert set(completed) | {first_segment + ".partial"} <= shipped
        for name in completed:
            key = wal_key(store.prefix, database, name, sysid)
            assert key.startswith(f"{store.prefix}/{database}/wal/{sysid}/")
            assert sha(s3_bytes(stack, key)) == sha((wal_dir / name).read_bytes())
            head = stack.s3.client().head_object(Bucket=BUCKET, Key=key)
            assert head["ServerSideEncryption"] == "AES256"
            assert head["Metadata"]["raw-sha256"] == sha((wal_dir / name).read_bytes())
            assert head["Metadata"]["end-lsn"]
        partial_key = wal_key(store.prefix, database, first_segment + ".partial", sysid)
        first_partial = s3_bytes(stack, partial_key)
        local = (wal_dir / (first_segment + ".partial")).read_bytes()
        assert first_partial[:offset] == local[:offset], "everything committed is in the partial object"

        # the partial grows: the next ship replaces its object, with the new commits in it
        commit_seconds(cluster, rows=500)
        segment, offset2 = current_segment(cluster)
        assert segment == first_segment and offset2 > offset
        caught_up(cluster)   # no synchronous_standby_names here: the commit did not wait for the receiver
        result = ship_once(store, database, wal_dir, state, log)
        assert [u["name"] for u in result["uploaded"]] == [first_segment + ".partial"]
        grown = s3_bytes(stack, partial_key)
        assert grown[:offset2] == (wal_dir / (first_segment + ".partial")).read_bytes()[:offset2]
        assert grown[offset:offset2] != first_partial[offset:offset2]

        # the segment completes: it is shipped and its partial object removed
        cluster.execute("SELECT pg_switch_wal()")
        commit_seconds(cluster, rows=10)
        wait_for(lambda: (wal_dir / first_segment).exists(), what="the segment to complete")
        result = ship_once(store, database, wal_dir, state, log)
        assert first_segment in {u["name"] for u in result["uploaded"]}
        assert partial_key in result["deleted"]
        assert not s3_exists(stack, partial_key)
        assert sha(s3_bytes(stack, wal_key(store.prefix, database, first_segment, sysid))) == \
            sha((wal_dir / first_segment).read_bytes())

        # a restart (state from the file) ships nothing again
        wait_for(lambda: not ship_once(store, database, wal_dir, state, log)["uploaded"], 20, "quiet WAL")
        again = ship_once(store, database, wal_dir, load_state(wal_dir, database), log)
        assert again["uploaded"] == [] and again["lag_seconds"] == 0.0

    # a fresh worker without the state file: HEAD requests decide, nothing is uploaded twice
    (wal_dir / STATE_NAME).unlink()
    fresh = ship_once(store, database, wal_dir, load_state(wal_dir, database), log)
    assert fresh["uploaded"] == []
    assert set(fresh["found_in_s3"]) == {f.name for f in scan(wal_dir)}
    versions = stack.s3.client().list_object_versions(Bucket=BUCKET, Prefix=f"{store.prefix}/{database}/wal/")
    segment_versions = [v["Key"] for v in versions.get("Versions", []) if not v["Key"].endswith(".partial.zst")]
    assert len(segment_versions) == len(set(segment_versions)), "a completed segment was uploaded twice"


def test_ship_window_ships_at_its_interval_and_once_more_at_the_end(stack, cluster, wal_dir, store):
    database = "walwindow_db"
    with receiver(cluster, wal_dir, synchronous=False):
        stop = threading.Event()
        writer_done = threading.Event()

        def write():
            for _ in range(6):
                commit_seconds(cluster, rows=100)
                time.sleep(0.4)
            cluster.execute("SELECT pg_switch_wal()")
            commit_seconds(cluster, rows=1)
            writer_done.set()

        threading.Thread(target=write, daemon=True).start()
        started = time.monotonic()
        summary = ship_window(store, database, wal_dir, seconds=3.0, interval=1.0, log=log, stop_event=stop)
        took = time.monotonic() - started
        writer_done.wait(10)
        assert 3.0 <= took < 10, took
        assert summary["ships"] >= 4 and summary["failed_ships"] == 0   # 0, 1, 2, 3 s, then the final ship
        assert summary["uploaded"] >= 2 and summary["receiver_healthy_checks"] >= 1
        # how long a ship took is recorded (its speed is measured in bench/, never asserted here)
        assert summary["max_ship_seconds"] > 0
        final = ship_window(store, database, wal_dir, seconds=0, interval=1.0, log=log)
    keys = stack.s3.client().list_objects_v2(Bucket=BUCKET, Prefix=f"{store.prefix}/{database}/wal/")
    names = {obj["Key"].rsplit("/", 1)[1] for obj in keys.get("Contents", [])}
    local = {f.name + ".zst" for f in scan(wal_dir)}
    assert local <= names, (local, names)
    assert final["ships"] == 1


def test_archived_wal_is_never_overwritten_and_a_lasting_s3_outage_fails_the_window(stack, tmp_path, store):
    import boto3
    from botocore.config import Config

    from harness.pg_cluster import free_port
    from harness.s3_server import ACCESS_KEY, REGION, SECRET_KEY
    from pgdr.wal.local import WalArchiveError

    ours, theirs = tmp_path / "ours", tmp_path / "theirs"
    for directory, text in ((ours, "1\t0/3000000\tno recovery target specified\n"), (theirs, "1\t0/5000000\tother\n")):
        directory.mkdir()
        (directory / "00000002.history").write_text(text)
        fake_segment(directory, "000000020000000000000003.partial", "7000000000000000001")
    shipped = ship_once(store, "db", ours, load_state(ours), log)["uploaded"]
    assert [u["name"] for u in shipped] == ["00000002.history", "000000020000000000000003.partial"]
    with pytest.raises(WalArchiveError, match="refusing to overwrite archived WAL"):
        ship_once(store, "db", theirs, load_state(theirs), log)
    assert s3_bytes(stack, wal_key(store.prefix, "db", "00000002.history", "7000000000000000001")) == \
        (ours / "00000002.history").read_bytes()

    dead = boto3.client("s3", endpoint_url=f"http://127.0.0.1:{free_port()}", region_name=REGION,
                        aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
                        config=Config(retries={"max_attempts": 1}, connect_timeout=1))
    (theirs / STATE_NAME).unlink(missing_ok=True)
    unreachable = BackupStore(client=dead, bucket=BUCKET, prefix=store.prefix, sse_args=store.sse_args,
                              part_size=store.part_size, log=log)
    started = time.monotonic()
    with pytest.raises(WalArchiveError, match="has failed for"):
        ship_window(unreachable, "db", theirs, seconds=5, interval=0.3, log=log, max_failure_seconds=1.0)
    assert time.monotonic() - started < 5


def test_two_clusters_with_the_same_segment_names_never_overwrite_each_other(stack, tmp_path, store):
    """A cluster rebuilt after a site loss (new system identifier) restarts the segment names of the
    lost one: its WAL goes under its own identifier and the lost cluster's WAL stays as it was."""
    lost, rebuilt = "7000000000000000001", "7000000000000000002"
    names = ["000000010000000000000001", "000000010000000000000002", "000000010000000000000003.partial"]
    directories = {}
    for sysid in (lost, rebuilt):
        directory = directories[sysid] = tmp_path / sysid
        directory.mkdir()
        for name in names:
            fake_segment(directory, name, sysid, fill=f"{sysid}:{name}".encode() * 100)
        result = ship_once(store, "db", directory, load_state(directory, "db"), log)
        assert {u["name"] for u in result["uploaded"]} == set(names), result
    client = stack.s3.client()
    for sysid, directory in directories.items():
        for name in names:
            key = wal_key(store.prefix, "db", name, sysid)
            assert s3_bytes(stack, key) == (directory / name).read_bytes()
            versions = client.list_object_versions(Bucket=BUCKET, Prefix=key).get("Versions", [])
            assert len(versions) == 1, f"{key} was written {len(versions)} times"
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=f"{store.prefix}/db/wal/").get("Contents", [])
    assert len(listed) == 2 * len(names)
    assert not any(obj["Key"].count("/") == f"{store.prefix}/db/wal/x".count("/") for obj in listed), \
        "nothing is written to the legacy layout"

    # a history file alone says nothing about whose WAL it is: it waits for a segment header
    waiting = tmp_path / "waiting"
    waiting.mkdir()
    (waiting / "00000002.history").write_text("1\t0/3000000\tno recovery target specified\n")
    state = load_state(waiting, "db")
    assert ship_once(store, "db", waiting, state, log)["uploaded"] == [] and state["synced_at"] is None
    fake_segment(waiting, "000000020000000000000003.partial", rebuilt)
    result = ship_once(store, "db", waiting, state, log)
    assert [u["name"] for u in result["uploaded"]] == ["00000002.history", "000000020000000000000003.partial"]
    assert s3_exists(stack, wal_key(store.prefix, "db", "00000002.history", rebuilt))


def test_a_timeline_switch_ships_the_history_and_leaves_the_old_partial_in_place(stack, cluster, wal_dir, store):
    """A receiver on a standby that is promoted follows it to timeline 2: the history file and the new
    timeline's segments are shipped; the old timeline's last segment stays a .partial object."""
    from harness.pg_cluster import PgCluster, _as_server_user, _chown_to_server_user, free_port

    database = "waltli_db"
    standby = PgCluster(base_dir=Path(tempfile.mkdtemp(prefix="pgdr-standby-")), port=free_port())
    standby.socket_dir.mkdir(parents=True)
    for path in (standby.base_dir, standby.socket_dir):
        _chown_to_server_user(path)
    try:
        subprocess.run(_as_server_user([str(pg_bindir() / "pg_basebackup"), "-D", str(standby.data_dir), "-R",
                                        "-X", "stream", "-c", "fast", "-h", cluster.host, "-p", str(cluster.port),
                                        "-U", "postgres"]), check=True, capture_output=True)
        with open(standby.data_dir / "postgresql.auto.conf", "a") as conf:
            conf.write(f"port = {standby.port}\nunix_socket_directories = '{standby.socket_dir}'\n")
        standby.start()
        with receiver(standby, wal_dir, synchronous=False):
            commit_seconds(cluster, rows=100)
            cluster.execute("SELECT pg_switch_wal()")
            commit_seconds(cluster, rows=100)
            wait_for(lambda: any(f.kind == "segment" for f in scan(wal_dir)), what="a completed segment")
            state = load_state(wal_dir, database)
            ship_once(store, database, wal_dir, state, log)
            [old_partial] = [f.name for f in scan(wal_dir) if f.kind == "partial"]
            assert old_partial.startswith("00000001")

            subprocess.run(_as_server_user([str(pg_bindir() / "pg_ctl"), "-D", str(standby.data_dir), "-w",
                                            "promote"]), check=True, capture_output=True)
            commit_seconds(standby, rows=100)
            wait_for(lambda: (wal_dir / "00000002.history").exists()
                     and any(f.kind == "partial" and f.name.startswith("00000002") for f in scan(wal_dir)),
                     what="the receiver to follow timeline 2")
            result = ship_once(store, database, wal_dir, state, log)
        shipped = {u["name"] for u in result["uploaded"]}
        assert "00000002.history" in shipped
        assert any(name.startswith("00000002") and name.endswith(".partial") for name in shipped), shipped
        # the old timeline's last segment never completes: its partial stays, locally and in S3
        assert (wal_dir / old_partial).exists()
        sysid = system_id(cluster)
        old_key = wal_key(store.prefix, database, old_partial, sysid)
        assert s3_exists(stack, old_key)
        assert s3_bytes(stack, old_key) == (wal_dir / old_partial).read_bytes()
        assert b"1\t" in s3_bytes(stack, wal_key(store.prefix, database, "00000002.history", sysid))
    finally:
        standby.destroy()


# ---------------------------------------------------------------- synchronous commits and the supervisor

def test_synchronous_commit_waits_for_the_receiver_and_a_killed_receiver_is_restarted(stack, cluster, wal_dir):
    with receiver(cluster, wal_dir, synchronous=True) as supervisor, sync_names(cluster, "pgdr_receiver"):
        wait_for(lambda: streaming(cluster, "pgdr_receiver") == "sync", what="sync_state sync")
        seconds, notices = commit_seconds(cluster)
        assert seconds < 2 and not notices, (seconds, notices)

        first_pid = supervisor.pid
        os.kill(first_pid, signal.SIGKILL)
        status = wait_for(lambda: _status(wal_dir, lambda s: s["restarts"] >= 1 and s["state"] == "running"
                                          and s["pid"] not in (None, first_pid)), 60, "a restarted receiver")
        assert status["last_exit"]["rc"] == -signal.SIGKILL
        wait_for(lambda: streaming(cluster, "pgdr_receiver") == "sync", 60, "sync again")
        seconds, notices = commit_seconds(cluster)
        assert seconds < 2 and not notices

    # with the receiver stopped and named alone, a commit waits: the stall the next test avoids
    with sync_names(cluster, "pgdr_receiver"):
        seconds, notices = commit_seconds(cluster, timeout=1.5)
        assert any("canceling wait for synchronous replication" in n for n in notices), notices
    status = json.loads((wal_dir / "receiver.status.json").read_text())
    assert status["state"] == "stopped" and status["pid"] is None


def _status(directory: Path, predicate):
    try:
        status = json.loads((directory / "receiver.status.json").read_text())
    except (FileNotFoundError, json.JSONDecodeError):
        return None
    return status if predicate(status) else None


def test_any_1_keeps_commits_flowing_while_pgdr_receiver_is_down(cluster, wal_dir):
    other = _receiver_dir()
    try:
        with receiver(cluster, other, slot="standby", synchronous=True), \
                sync_names(cluster, "ANY 1 (pgdr_receiver, standby)"):
            with receiver(cluster, wal_dir, synchronous=True):
                wait_for(lambda: streaming(cluster, "pgdr_receiver") == "quorum", what="quorum")
                seconds, notices = commit_seconds(cluster)
                assert not notices
            assert streaming(cluster, "pgdr_receiver") is None
            seconds, notices = commit_seconds(cluster, timeout=3.0)
            assert seconds < 2 and not notices, (seconds, notices)
    finally:
        subprocess.run(["rm", "-rf", str(other)], check=False)


# ---------------------------------------------------------------- command line: --check, conninfo, SIGTERM

def _cli(args: list[str], env: dict, **kwargs):
    return [sys.executable, "-m", "pgdr.wal_receiver", *args], dict(env, PYTHONPATH=str(REPO_ROOT / "plugins"))


def test_check_names_what_is_missing_and_passes_once_set_up(cluster, wal_dir):
    env = dict(os.environ, PGHOST=cluster.host, PGPORT=str(cluster.port), PGUSER=REPL_ROLE,
               PGDR_TEST_CONNINFO=f"host={cluster.host} port={cluster.port} user={REPL_ROLE} "
                                  f"password={REPL_PASSWORD} dbname=postgres")
    argv, env = _cli(["--check", "--conninfo-env", "PGDR_TEST_CONNINFO", "--slot", "pgdr_receiver"], env)
    cluster.execute("SELECT pg_drop_replication_slot('pgdr_receiver') FROM pg_replication_slots "
                    "WHERE slot_name = 'pgdr_receiver' AND NOT active")
    result = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=60)
    # before the receiver first runs: its slot is still to be created, the setting still to be made
    assert result.returncode == 0, result.stdout + result.stderr
    assert "WARN  synchronous_standby_names: synchronous_standby_names is empty" in result.stdout
    assert "OK    slot: replication slot pgdr_receiver does not exist yet" in result.stdout
    assert "OK    wal_level = replica" in result.stdout.replace("wal_level: ", "")
    assert REPL_PASSWORD not in result.stdout + result.stderr

    # no password: pg_hba.conf asks for one, the replication check says so
    no_password = dict(env, PGUSER=REPL_ROLE, PGPASSFILE="/nonexistent")
    result = subprocess.run(_cli(["--check"], no_password)[0], env=no_password, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 1 and "FAIL  connection: cannot connect" in result.stdout

    with receiver(cluster, wal_dir), sync_names(cluster, "ANY 1 (pgdr_receiver, standby)"):
        result = subprocess.run(argv + ["--directory", str(wal_dir)], env=env, capture_output=True, text=True,
                                timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "ready for the WAL receiver" in result.stdout
        assert "OK    receiver: pgdr_receiver is connected (streaming, sync_state quorum)" in result.stdout


def test_cli_keeps_the_password_out_of_argv_and_stops_on_sigterm(cluster, wal_dir):
    env = dict(os.environ, PGDR_TEST_CONNINFO=f"host={cluster.host} port={cluster.port} user={REPL_ROLE} "
                                              f"password={REPL_PASSWORD}")
    for name in ("PGHOST", "PGPORT", "PGUSER", "PGPASSFILE", "PGPASSWORD"):
        env.pop(name, None)
    args = ["--directory", str(wal_dir), "--slot", "cli_receiver", "--synchronous", "--status-interval", "1",
            "--conninfo-env", "PGDR_TEST_CONNINFO"] + (["--run-as", RUN_AS] if RUN_AS else [])
    argv, env = _cli(args, env)
    process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        status = wait_for(lambda: _status(wal_dir, lambda s: s["state"] == "running" and s["pid"]), 30,
                          "the receiver to run")
        wait_for(lambda: streaming(cluster, "cli_receiver"), 30, "cli_receiver streaming")
        for pid in (process.pid, status["pid"]):
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
            assert REPL_PASSWORD not in cmdline and "password=" not in cmdline, cmdline
        assert REPL_PASSWORD not in Path(f"/proc/{status['pid']}/environ").read_bytes().decode(errors="replace")
        assert cluster.execute("SELECT usename FROM pg_stat_replication WHERE application_name = 'cli_receiver'") \
            == [(REPL_ROLE,)]
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, output
    assert "received SIGTERM, stopping" in output and "WAL receiver stopped" in output
    assert REPL_PASSWORD not in output
    assert not Path(f"/proc/{status['pid']}").exists()
    final = json.loads((wal_dir / "receiver.status.json").read_text())
    assert final["state"] == "stopped"
    wait_for(lambda: not streaming(cluster, "cli_receiver"), 10, "the walsender to go")
    cluster.execute("SELECT pg_drop_replication_slot('cli_receiver')")


# ---------------------------------------------------------------- the DAG

def test_pg_wal_archive_dag_ships_the_receiver_directory(stack, cluster, pgdr_env, airflow_db, monkeypatch):
    root = _receiver_dir()
    directory = root / "care_commons_db"
    monkeypatch.setenv("AIRFLOW_VAR_PGDR_WAL_RECEIVER_DIR", str(root))
    monkeypatch.setenv("AIRFLOW_VAR_PGDR_WAL_ARCHIVE_WINDOW_MINUTES", "0.05")
    monkeypatch.setenv("AIRFLOW_VAR_PGDR_WAL_SHIP_SECONDS", "1")
    # the shipper asks the primary how it sees the receiver: this module's cluster is that primary
    monkeypatch.setenv("AIRFLOW_CONN_CARE_COMMONS_DB", postgres_conn(cluster, dbname="postgres", user=REPL_ROLE,
                                                                     password=REPL_PASSWORD))
    prefix = pgdr_env["AIRFLOW_VAR_PGDR_S3_PREFIX"]
    try:
        with receiver(cluster, directory, synchronous=False):
            commit_seconds(cluster, rows=200)
            cluster.execute("SELECT pg_switch_wal()")
            commit_seconds(cluster, rows=5)
            wait_for(lambda: any(f.kind == "segment" for f in scan(directory)), what="a completed segment")
            dag_run = run_dag("pg_wal_archive")
            local = {f.name for f in scan(directory)}
        assert str(dag_run.state) == "success", task_states(dag_run)
        keys = stack.s3.client().list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/care_commons_db/wal/")
        stored = {obj["Key"].rsplit("/", 1)[1] for obj in keys.get("Contents", [])}
        completed = {name for name in local if classify(name) == "segment"}
        assert {name + ".zst" for name in completed} <= stored
        assert any(name.endswith(".partial.zst") for name in stored)
        [summary] = xcom_values(dag_run, "ship_wal")
        assert summary["ships"] >= 2 and summary["uploaded"] >= len(completed)
        assert summary["receiver_healthy_checks"] >= 1
        assert str(root) not in json.dumps(summary)

        # the receiver is gone: the run ships what is there, fails and alerts
        stack.slack.clear()
        dag_run = run_dag("pg_wal_archive")
        assert str(dag_run.state) == "failed"
        assert task_states(dag_run)["ship_wal[0]"] == "failed"
        stack.slack.wait_for(1)
        posted = "\n".join(stack.slack.texts())
        assert "pg_wal_archive failed" in posted and "was not running during this window" in posted

        # the primary's view, asked on every pass, alerts once the outage lasted the setting's seconds;
        # that alert stands for the failure (no generic one), and the next window stays quiet
        monkeypatch.setenv("AIRFLOW_VAR_PGDR_WAL_RECEIVER_ALERT_SECONDS", "0.5")
        for _ in range(2):
            stack.slack.clear()
            dag_run = run_dag("pg_wal_archive")
            assert task_states(dag_run)["ship_wal[0]"] == "failed"
            time.sleep(1)
            texts = stack.slack.texts()
            if _ == 0:
                assert len(texts) == 1, texts
                assert "WAL receiver problem seen from the primary" in texts[0] and "not connected" in texts[0]
            else:
                assert texts == [], "an outage lasting several windows is announced once"
    finally:
        subprocess.run(["rm", "-rf", str(root)], check=False)
