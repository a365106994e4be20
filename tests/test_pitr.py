"""Point-in-time recovery and the RPO promises, proven on real clusters.

Each test runs its own primary (it is killed), a synchronous WAL receiver (pg_receivewal under
pgdr's supervisor), base backups taken by pg_backup_daily, WAL shipped to S3 by pgdr's shipper,
and recovery through the pg_restore DAG into a new cluster.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import signal
import tempfile
import threading
import time
from pathlib import Path

import pytest

from harness.pg_cluster import free_port, start_cluster
from harness.stack import (
    BACKUP_PASSWORD,
    BACKUP_ROLE,
    BUCKET,
    CONN_ID,
    DBNAME,
    RESTORE_PASSWORD,
    RESTORE_ROLE,
    postgres_conn,
)
from tests.support.dags import run_dag, task_states, xcom_values

SLOT = "pgdr_receiver"
log = logging.getLogger("test_pitr")


def _shared_dir(prefix: str) -> Path:
    """A directory the unprivileged server user can use (pytest's tmp_path is private to root)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o777)
    return path


class Site:
    """A primary with a synchronous WAL receiver, wired into pgdr's settings."""

    def __init__(self, stack, monkeypatch, **cluster_options) -> None:
        """``cluster_options``: :func:`harness.pg_cluster.start_cluster`'s WAL options (segment size, first
        segment)."""
        from pgdr.wal.receiver import Supervisor

        self.stack = stack
        self.cluster = start_cluster(**cluster_options)
        self.cluster.execute(f"CREATE DATABASE {DBNAME}")
        self.cluster.execute("CREATE TABLE marks (n int PRIMARY KEY, "
                             "at timestamptz NOT NULL DEFAULT clock_timestamp())",
                             dbname=DBNAME)
        self.cluster.create_backup_role(BACKUP_ROLE, BACKUP_PASSWORD)
        self.cluster.create_restore_role(RESTORE_ROLE, RESTORE_PASSWORD)
        self.wal_root = _shared_dir("pgdr-wal-")
        self.pitr_root = _shared_dir("pgdr-pitr-")
        self.receiver_dir = self.wal_root / CONN_ID
        self.prefix = f"pitr/{os.urandom(4).hex()}"
        env = stack.airflow_env()
        env.update({
            "AIRFLOW_CONN_CARE_COMMONS_DB": postgres_conn(self.cluster),
            "AIRFLOW_CONN_CARE_COMMONS_ADMIN": postgres_conn(self.cluster, user=RESTORE_ROLE,
                                                             password=RESTORE_PASSWORD),
            "AIRFLOW_VAR_PGDR_S3_PREFIX": self.prefix,
            # staging holds patient data: private to the worker (pgdr refuses a directory others can write)
            "AIRFLOW_VAR_PGDR_STAGING_DIR": tempfile.mkdtemp(prefix="pgdr-staging-"),
            "AIRFLOW_VAR_PGDR_WAL_RECEIVER_DIR": str(self.wal_root),
            "AIRFLOW_VAR_PGDR_PITR_DATA_DIR": str(self.pitr_root),
            "AIRFLOW_VAR_PGDR_PITR_PORT": str(free_port()),
            "AIRFLOW_VAR_PGDR_PHYSICAL_BACKUPS": "true",
        })
        for name, value in env.items():
            monkeypatch.setenv(name, value)
        self.env = env
        self.cluster.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{SLOT}'")
        self.cluster.execute("SELECT pg_reload_conf()")
        receiver_env = {**os.environ, "PGHOST": self.cluster.host, "PGPORT": str(self.cluster.port),
                        "PGUSER": "postgres"}
        self.supervisor = Supervisor(self.receiver_dir, SLOT, synchronous=True, status_interval=1,
                                     bindir=self.cluster.bindir, env=receiver_env,
                                     run_as="postgres" if os.geteuid() == 0 else None, min_backoff=0.2,
                                     max_backoff=1.0)
        self.receiver_thread = threading.Thread(target=self.supervisor.run, daemon=True)
        self.receiver_thread.start()
        self.wait_for_sync()

    def wait_for_sync(self, timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            rows = self.cluster.execute("SELECT sync_state FROM pg_stat_replication WHERE application_name = %s",
                                        params=(SLOT,))
            if rows and rows[0][0] == "sync":
                return
            time.sleep(0.2)
        raise AssertionError(f"the receiver never became synchronous; status {self.receiver_status()}")

    def receiver_status(self) -> dict:
        path = self.receiver_dir / "receiver.status.json"
        return json.loads(path.read_text()) if path.exists() else {}

    def store(self):
        from pgdr.store.s3 import BackupStore

        return BackupStore(client=self.stack.s3.client(), bucket=BUCKET, prefix=self.prefix,
                           sse_args={"ServerSideEncryption": "AES256"}, part_size=64 << 20, log=log)

    def ship(self) -> dict:
        from pgdr.wal.local import load_state
        from pgdr.wal.ship import ship_once

        state = load_state(self.receiver_dir, CONN_ID)
        return ship_once(self.store(), CONN_ID, self.receiver_dir, state, log)

    def base_backup(self) -> str:
        dag_run = run_dag("pg_backup_daily")
        states = task_states(dag_run)
        assert str(dag_run.state) == "success", states
        sealed = [x for x in xcom_values(dag_run, "backup.seal_base")]
        assert sealed, states
        return sealed[0]["backup_id"]

    def insert(self, first: int, last: int) -> None:
        self.cluster.execute("INSERT INTO marks (n) SELECT generate_series(%s, %s)", dbname=DBNAME,
                             params=(first, last))

    def kill_primary(self) -> None:
        pid = int((self.cluster.data_dir / "postmaster.pid").read_text().split()[0])
        os.kill(pid, signal.SIGKILL)
        for _ in range(100):
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            time.sleep(0.05)
        time.sleep(0.5)  # backends notice the postmaster is gone and exit
        shutil.rmtree(self.cluster.data_dir, ignore_errors=True)

    def stop_receiver(self) -> None:
        self.supervisor.stop()
        self.receiver_thread.join(timeout=30)

    def recover(self, point_in_time: str, **extra):
        conf = {"database": CONN_ID, "point_in_time": point_in_time, **extra}
        dag_run = run_dag("pg_restore", conf=conf)
        return dag_run, task_states(dag_run)

    def recovered_rows(self, outcome: dict) -> set[int]:
        from pgdr.restore.pitr_cluster import connect_recovered

        conn = connect_recovered(outcome, RESTORE_ROLE, DBNAME)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT n FROM marks")
                return {row[0] for row in cur.fetchall()}
        finally:
            conn.close()

    def close(self) -> None:
        from pgdr.restore.pitr_cluster import stop_recovered

        self.stop_receiver()
        for data_dir in self.pitr_root.glob("*"):
            if data_dir.is_dir() and (data_dir / "PG_VERSION").exists():
                stop_recovered(str(data_dir), "postgres" if os.geteuid() == 0 else None, self.cluster.bindir)
        self.cluster.destroy()
        for path in (self.wal_root, self.pitr_root, Path(self.env["AIRFLOW_VAR_PGDR_STAGING_DIR"])):
            shutil.rmtree(path, ignore_errors=True)


@pytest.fixture()
def site(stack, airflow_db, monkeypatch):
    stack.slack.clear()
    site = Site(stack, monkeypatch)
    yield site
    site.close()


def test_recovery_to_a_time_between_two_transactions_gives_exactly_the_rows_before_it(site):
    site.base_backup()
    site.insert(1, 10)
    time.sleep(1.2)
    (between,) = site.cluster.execute("SELECT clock_timestamp()")[0]
    time.sleep(1.2)
    site.insert(11, 20)
    site.ship()
    dag_run, states = site.recover(between.isoformat())
    assert str(dag_run.state) == "success", states
    (outcome,) = xcom_values(dag_run, "restore")
    assert site.recovered_rows(outcome) == set(range(1, 11))
    assert outcome["last_transaction_time"] and outcome["redo_end_lsn"]
    record = json.loads(site.stack.s3.client().get_object(
        Bucket=BUCKET, Key=sorted(site.store().list_keys(f"{site.prefix}/reports/restore"))[-1])["Body"].read())
    assert record["status"] == "succeeded" and record["plan"]["kind"] == "pitr"


def test_crash_drill_loses_no_acknowledged_commit(site, capsys):
    site.base_backup()
    acknowledged: list[int] = []
    stop = threading.Event()

    def writer() -> None:
        conn = site.cluster.connect(DBNAME)
        n = 0
        try:
            while not stop.is_set():
                n += 1
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO marks (n) VALUES (%s)", (n,))  # autocommit: returns once committed
                acknowledged.append(n)
        except Exception:  # noqa: BLE001 - the primary was killed under us
            return

    thread = threading.Thread(target=writer, daemon=True)
    thread.start()
    time.sleep(3)
    site.kill_primary()
    thread.join(timeout=30)
    stop.set()
    assert len(acknowledged) > 50, "the writer must have committed under load"
    site.stop_receiver()
    site.ship()  # the shipper, on the receiver's host, sends what the receiver flushed last
    dag_run, states = site.recover("latest")
    assert str(dag_run.state) == "success", states
    (outcome,) = xcom_values(dag_run, "restore")
    recovered = site.recovered_rows(outcome)
    lost = sorted(set(acknowledged) - recovered)
    with capsys.disabled():
        print(f"\ncrash drill: acknowledged={len(acknowledged)} recovered={len(recovered)} lost = {len(lost)}")
    assert lost == []
    assert outcome["wal_last_partial"] is True


def test_site_loss_loses_at_most_a_minute_of_commits(site, capsys):
    site.base_backup()
    acknowledged: list[tuple[int, float]] = []
    stop = threading.Event()
    shipping = threading.Event()

    def writer() -> None:
        conn = site.cluster.connect(DBNAME)
        n = 0
        try:
            while not stop.is_set():
                n += 1
                with conn.cursor() as cur:
                    cur.execute("INSERT INTO marks (n) VALUES (%s)", (n,))
                acknowledged.append((n, time.time()))
                time.sleep(0.005)
        except Exception:  # noqa: BLE001
            return

    def shipper() -> None:  # pg_wal_archive's loop, every pgdr_wal_ship_seconds (5 s here)
        while not shipping.wait(5):
            site.ship()

    threads = [threading.Thread(target=writer, daemon=True), threading.Thread(target=shipper, daemon=True)]
    for thread in threads:
        thread.start()
    time.sleep(12)
    shipping.set()   # the whole site goes: no last ship
    site.kill_primary()
    site.stop_receiver()
    shutil.rmtree(site.receiver_dir, ignore_errors=True)
    stop.set()
    for thread in threads:
        thread.join(timeout=30)
    dag_run, states = site.recover("latest")
    assert str(dag_run.state) == "success", states
    (outcome,) = xcom_values(dag_run, "restore")
    recovered = site.recovered_rows(outcome)
    lost = [(n, at) for n, at in acknowledged if n not in recovered]
    span = (lost[-1][1] - lost[0][1]) if lost else 0.0
    with capsys.disabled():
        print(f"\nsite-loss drill: acknowledged={len(acknowledged)} recovered={len(recovered)} lost={len(lost)} "
              f"commits spanning {span:.1f} s")
    assert span <= 60
    assert recovered == {n for n, _ in acknowledged if n <= max(recovered)}, "recovery is a prefix of the commits"


def test_a_deleted_wal_segment_is_named_by_verification_and_refused_by_recovery(site):
    base_id = site.base_backup()
    for batch in range(3):
        site.insert(batch * 100 + 1, batch * 100 + 100)
        site.cluster.execute("SELECT pg_switch_wal()")
    time.sleep(1)
    site.ship()
    store = site.store()
    segments = sorted(k for k in store.list_keys(f"{site.prefix}/{CONN_ID}/wal")
                      if re.fullmatch(r"[0-9A-F]{24}\.zst", k.rsplit("/", 1)[1]))
    start = store.read_manifest(f"{site.prefix}/{CONN_ID}/base/{base_id}/manifest.json").wal["start_wal_file"]
    after_start = [k for k in segments if k.rsplit("/", 1)[1][:24] > start]
    assert len(after_start) >= 2, segments
    victim = after_start[0]  # a later segment exists, so this is a gap, not the end
    missing = victim.rsplit("/", 1)[1][: -len(".zst")]
    store.delete_keys([victim])

    dag_run = run_dag("pg_backup_verify")
    states = task_states(dag_run)
    assert states["verify.wal[0]"] == "failed", states
    alerts = "\n".join(site.stack.slack.texts())
    assert "WAL archive gap" in alerts and missing in alerts

    dag_run, states = site.recover("latest")
    assert states["prepare"] == "failed" and states["restore"] == "upstream_failed", states
    record = json.loads(site.stack.s3.client().get_object(
        Bucket=BUCKET, Key=sorted(store.list_keys(f"{site.prefix}/reports/restore"))[-1])["Body"].read())
    assert f"segment {missing} is missing" in record["error"]
    assert not any(site.pitr_root.iterdir()), "nothing was created"


def test_the_receiver_down_is_an_alert(site):
    site.base_backup()
    site.ship()
    dag_run = run_dag("pg_backup_verify")
    states = task_states(dag_run)
    assert states["verify.wal[0]"] == "success" and states["verify.integrity[0]"] == "success", states
    (integrity,) = [r for r in site.store().read_json(sorted(site.store().list_keys(
        f"{site.prefix}/reports/verify"))[-1])["results"] if r["check"] == "integrity"]
    assert any(c.startswith("base/") for c in integrity["evidence"][0]["checked"])  # pg_verifybackup ran on it
    site.stop_receiver()
    time.sleep(1)
    site.stack.slack.clear()
    dag_run = run_dag("pg_backup_verify")
    assert task_states(dag_run)["verify.wal[0]"] == "failed"
    alerts = "\n".join(site.stack.slack.texts())
    assert "WAL receiver not connected" in alerts and "verification-wal-failed" in alerts


def test_the_point_in_time_drill_checks_recovery_markers_and_alerts_on_a_difference(site):
    site.base_backup()
    for batch in range(3):  # each verification run commits a recovery marker
        site.insert(batch * 10 + 1, batch * 10 + 10)
        assert task_states(run_dag("pg_backup_verify"))["record_marker[0]"] == "success"
        time.sleep(2.5)
    site.ship()
    store = site.store()
    markers_key = f"{site.prefix}/state/markers/{CONN_ID}.json"
    assert len(store.read_json(markers_key)["markers"]) == 3

    dag_run = run_dag("pg_restore_test")
    assert task_states(dag_run)["drill.pitr_drill[0]"] == "success", task_states(dag_run)
    (record,) = [store.read_json(k) for k in store.list_keys(f"{site.prefix}/reports/pitr-drill")]
    assert record["status"] == "ok" and record["expected_present"] + record["expected_absent"] == 3
    assert not any(p.is_dir() for p in site.pitr_root.iterdir()), "the drill's cluster is removed"

    # a marker the database never saw, claimed committed right after the oldest base backup: whatever
    # moment the drill picks (never within a second of a marker), it must be there, and it is not
    from datetime import datetime, timedelta

    (base_id,) = [e.backup_id for e in store.catalog(CONN_ID, "base") if e.complete]
    finished = datetime.fromisoformat(store.read_manifest(
        f"{site.prefix}/{CONN_ID}/base/{base_id}/manifest.json").finished_at)
    state = store.read_json(markers_key)
    state["markers"].insert(0, {"id": 999999, "run_id": "fake",
                                "marked_at": (finished + timedelta(milliseconds=10)).isoformat(),
                                "acknowledged_at": (finished + timedelta(milliseconds=20)).isoformat()})
    store.put_json(markers_key, state)
    site.stack.slack.clear()
    dag_run = run_dag("pg_restore_test")
    assert task_states(dag_run)["drill.pitr_drill[0]"] == "failed"
    assert str(dag_run.state) == "failed"
    alerts = "\n".join(site.stack.slack.texts())
    assert "markers committed before the moment are missing" in alerts and "999999" in alerts


def test_tables_as_they_were_at_a_moment_come_back_into_the_live_database(site):
    site.base_backup()
    site.insert(1, 10)
    time.sleep(1.2)
    (moment,) = site.cluster.execute("SELECT clock_timestamp()")[0]
    time.sleep(1.2)
    site.insert(11, 20)
    site.cluster.execute("DELETE FROM marks WHERE n <= 5", dbname=DBNAME)  # the accident
    site.ship()
    dag_run, states = site.recover(moment.isoformat(), mode="tables", tables=["public.marks"])
    assert str(dag_run.state) == "success", states
    (outcome,) = xcom_values(dag_run, "restore")
    schema = outcome["recovered_schema"]
    recovered = {row[0] for row in site.cluster.execute(f"SELECT n FROM {schema}.marks", dbname=DBNAME)}
    assert recovered == set(range(1, 11))
    live = {row[0] for row in site.cluster.execute("SELECT n FROM public.marks", dbname=DBNAME)}
    assert live == set(range(6, 21)), "the live table is untouched"
    assert not any(p.is_dir() for p in site.pitr_root.iterdir()), "the recovery cluster is removed"
