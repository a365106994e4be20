"""pg_restore when things go wrong: a worker SIGKILLed mid-restore or mid-swap, a name taken under a
running restore, row data in an error. Real services; the worker is a real child process killed
with SIGKILL; what a user checks afterwards is asserted (rows, databases, processes, records, alerts).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from harness.stack import BUCKET, CONN_ID, DBNAME, RESTORE_CONN_ID, RESTORE_PASSWORD, RESTORE_ROLE, postgres_conn
from tests.support.dags import all_xcom_text, run_backup_daily, run_dag, task_states
from tests.support.paths import REPO_ROOT
from tests.support.s3 import json_records
from tests.support.waiting import wait_for

PREFIX = "restore-faults"


@pytest.fixture(scope="module")
def backed_up(stack, airflow_db, tmp_path_factory):
    env = stack.airflow_env()
    env["AIRFLOW_VAR_PGDR_STAGING_DIR"] = str(tmp_path_factory.mktemp("restore-faults-staging"))
    env["AIRFLOW_VAR_PGDR_S3_PREFIX"] = PREFIX
    (seal,) = run_backup_daily(env)
    return {"env": env, "backup_id": seal["backup_id"]}


@pytest.fixture()
def faults_env(stack, backed_up, monkeypatch):
    stack.slack.clear()
    for name, value in backed_up["env"].items():
        monkeypatch.setenv(name, value)
    return backed_up


def _client(stack):
    return stack.s3.client()


def _journals(stack) -> list[dict]:
    client = _client(stack)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/state/restores/")
            .get("Contents", [])]
    found = []
    for key in keys:
        try:
            found.append(json.loads(client.get_object(Bucket=BUCKET, Key=key)["Body"].read()))
        except client.exceptions.NoSuchKey:
            pass
    return found


def _records(stack, suffix: str = ".json") -> list[dict]:
    return json_records(_client(stack), f"{PREFIX}/reports/restore/", suffix)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return False


def _rows(stack, dbname: str, table: str = "public.visits") -> int:
    return stack.cluster.execute(f"SELECT count(*) FROM {table}", dbname=dbname)[0][0]


def _allows_connections(stack, dbname: str) -> bool:
    return stack.cluster.execute("SELECT datallowconn FROM pg_database WHERE datname = %s",
                                 params=(dbname,)) == [(True,)]


def _start_restore_in_child(conf: dict) -> subprocess.Popen:
    """A pg_restore run in a child process (its own process group, as a worker would be)."""
    return subprocess.Popen([sys.executable, "-m", "harness.run_dag", "pg_restore", "--conf",
                             json.dumps({"database": CONN_ID, **conf})], cwd=REPO_ROOT, env=dict(os.environ),
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)


def _sigkill(child: subprocess.Popen) -> None:
    os.killpg(child.pid, signal.SIGKILL)
    child.wait(timeout=30)


def _pg_restore_pids(journal: dict) -> list[int]:
    return [int(p["pid"]) for p in journal.get("processes") or []]


# --- a worker killed mid pg_restore --------------------------------------------------------------

@pytest.mark.slow
def test_a_worker_killed_mid_pg_restore_is_healed_by_the_next_run(stack, faults_env):
    final = "cc_killed_mid_restore"
    before = set(stack.cluster.database_names())
    child = _start_restore_in_child({"target_database": final})
    try:
        journal = wait_for(lambda: next((j for j in _journals(stack) if j.get("processes")), None), timeout=240,
                           what="pg_restore to start")
        _sigkill(child)
    finally:
        if child.poll() is None:
            _sigkill(child)
    (pid,) = _pg_restore_pids(journal)
    time.sleep(2)
    # what the kill left: pg_restore waiting forever on a pipe nobody feeds, a half-restored database
    assert _alive(pid), "pg_restore outlives the worker that fed it"
    half = journal["work"]["name"]
    assert half in stack.cluster.database_names()
    assert final not in stack.cluster.database_names(), "a half-restored database never has its final name"
    workdir = journal["workdir"]
    assert os.path.isdir(workdir)

    dag_run = run_dag("pg_restore", conf={"database": CONN_ID, "target_database": "cc_after_the_kill"})
    try:
        assert str(dag_run.state) == "success", task_states(dag_run)
        wait_for(lambda: not _alive(pid), timeout=20, what="the orphan pg_restore to stop")
        names = set(stack.cluster.database_names())
        assert names - before == {"cc_after_the_kill"}, "the half-restored database is gone"
        assert not os.path.exists(workdir)
        assert _journals(stack) == []
        (healed,) = [r for r in _records(stack, "-healed.json") if r["interrupted"][0]["run_id"] == journal["run_id"]]
        assert healed["status"] == "healed" and healed["interrupted"][0]["left"] == []
        done = "\n".join(healed["interrupted"][0]["done"])
        assert f"stopped pg_restore (pid {pid})" in done and f"dropped the half-restored database {half}" in done
        texts = stack.slack.texts()
        assert any(f"interrupted restore of {CONN_ID} was cleaned up" in t for t in texts), texts
        assert any(half in t for t in texts), "the alert names what was dropped"
    finally:
        stack.cluster.execute("DROP DATABASE IF EXISTS cc_after_the_kill WITH (FORCE)")
        for name in set(stack.cluster.database_names()) - before:
            stack.cluster.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# --- a worker killed inside the replace swap --------------------------------------------------------

def _hold_database_lock(stack, dbname: str):
    """A transaction holding a lock on the database object: ALTER DATABASE ... RENAME waits for it
    (it stands for any slow moment inside the swap); ALLOW_CONNECTIONS does not."""
    conn = stack.cluster.connect("postgres")
    conn.autocommit = True
    with conn.cursor() as cur:
        cur.execute("BEGIN")
        cur.execute(f'COMMENT ON DATABASE "{dbname}" IS NULL')
    return conn


def _release(conn) -> None:
    with conn.cursor() as cur:
        cur.execute("ROLLBACK")
    conn.close()


def _waiting_rename(stack, appname: str) -> bool:
    return bool(stack.cluster.execute(
        "SELECT 1 FROM pg_stat_activity WHERE application_name = %s AND wait_event_type = 'Lock' "
        "AND query ILIKE 'ALTER DATABASE%%RENAME%%'", params=(appname,)))


@pytest.mark.slow
@pytest.mark.parametrize("stalled_rename", ["aborted by the heal", "completed after the worker died"])
def test_a_worker_killed_inside_the_swap_leaves_the_live_database_usable_after_the_next_run(
        stack, faults_env, stalled_rename):
    stack.cluster.execute("CREATE TABLE public.written_after_backup (id int)", dbname=DBNAME)
    stack.cluster.execute("INSERT INTO public.written_after_backup SELECT generate_series(1, 7)", dbname=DBNAME)
    rows_before = _rows(stack, DBNAME)
    before = set(stack.cluster.database_names())
    lock = _hold_database_lock(stack, DBNAME)
    child = _start_restore_in_child({"mode": "replace", "confirm": f"RESTORE {CONN_ID}"})
    try:
        journal = wait_for(lambda: next((j for j in _journals(stack)
                                         if j.get("step") == "swap: renaming the live database away"), None),
                           timeout=300, what="the swap to start")
        wait_for(lambda: _waiting_rename(stack, journal["appname"]), timeout=30, what="the rename to wait")
        _sigkill(child)
    finally:
        if child.poll() is None:
            _sigkill(child)
        if stalled_rename == "completed after the worker died":
            _release(lock)
    try:
        kept = journal["swap"]["kept"]
        if stalled_rename == "completed after the worker died":
            # the backend finished the dead worker's rename: no database carries the live name any more
            wait_for(lambda: kept in stack.cluster.database_names(), timeout=30, what="the stalled rename")
            assert DBNAME not in stack.cluster.database_names()
        else:
            assert not _allows_connections(stack, DBNAME), "the kill left the live database refusing connections"

        if stalled_rename == "aborted by the heal":
            dag_run = run_dag("pg_backup_verify")   # drop_expired_replaced heals first
            assert task_states(dag_run)["drop_expired_replaced[0]"] == "success", task_states(dag_run)
        else:
            dag_run = run_dag("pg_restore", conf={"database": CONN_ID, "backup": "20200101T000000Z"})
            assert task_states(dag_run)["prepare"] == "failed"   # refused (no such backup), after healing
        if stalled_rename == "aborted by the heal":
            _release(lock)
        assert _allows_connections(stack, DBNAME)
        assert _rows(stack, DBNAME) == rows_before
        assert _rows(stack, DBNAME, "public.written_after_backup") == 7, "the live database is the one it was"
        assert set(stack.cluster.database_names()) == before, "the restored copy is dropped, nothing is kept"
        assert _journals(stack) == []
        (healed,) = [r for r in _records(stack, "-healed.json") if r["interrupted"][0]["run_id"] == journal["run_id"]]
        done = "\n".join(healed["interrupted"][0]["done"])
        assert f"dropped the restored copy {journal['work']['name']}" in done
        if stalled_rename == "completed after the worker died":
            assert f"renamed {kept} to {DBNAME} again" in done
        else:
            assert f"allowed connections to {DBNAME} again" in done
        assert any(f"interrupted restore of {CONN_ID} was cleaned up" in t for t in stack.slack.texts())
    finally:
        if not lock.closed:
            _release(lock)
        if DBNAME not in stack.cluster.database_names() and journal["swap"]["kept"] in stack.cluster.database_names():
            stack.cluster.execute(f'ALTER DATABASE "{journal["swap"]["kept"]}" RENAME TO "{DBNAME}"')
        stack.cluster.execute(f'ALTER DATABASE "{DBNAME}" WITH ALLOW_CONNECTIONS true')
        stack.cluster.execute("DROP TABLE IF EXISTS public.written_after_backup", dbname=DBNAME)
        for name in set(stack.cluster.database_names()) - before:
            stack.cluster.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        for version in _client(stack).list_object_versions(Bucket=BUCKET, Prefix=f"{PREFIX}/").get("Versions", []):
            if "/reports/restore/" in version["Key"] or "/state/" in version["Key"]:
                _client(stack).delete_object(Bucket=BUCKET, Key=version["Key"], VersionId=version["VersionId"])


# --- a name taken while the restore runs -----------------------------------------------------------

def _logical_restore(stack, backup_id: str, names, mode: str, workdir):
    import logging

    import psycopg2

    from pgdr.core.pgtools import PgTarget
    from pgdr.restore.logical import LogicalRestore
    from pgdr.store.manifest import backup_prefix
    from pgdr.store.s3 import BackupStore

    store = BackupStore(client=stack.s3.client(), bucket=BUCKET, prefix=PREFIX,
                        sse_args={"ServerSideEncryption": "AES256"}, part_size=64 << 20, log=logging.getLogger("test"))
    prefix = backup_prefix(PREFIX, CONN_ID, "logical", backup_id)
    target = PgTarget(conn_id="admin", host=stack.cluster.host, port=stack.cluster.port, user=RESTORE_ROLE,
                      dbname="postgres", password=RESTORE_PASSWORD)

    def connect(dbname):
        conn = psycopg2.connect(host=target.host, port=target.port, user=RESTORE_ROLE, password=RESTORE_PASSWORD,
                                dbname=dbname)
        conn.autocommit = True
        return conn

    return LogicalRestore(store=store, manifest=store.read_manifest(f"{prefix}/manifest.json"), prefix=prefix,
                          target=target, connect=connect, names=names, mode=mode, tables=(), workdir=workdir,
                          bindir=stack.cluster.bindir, jobs=2, log=logging.getLogger("test"))


@pytest.mark.parametrize("which", ["work", "final"])
def test_a_database_that_takes_the_name_under_a_running_restore_survives_with_its_rows(stack, faults_env, tmp_path,
                                                                                      which):
    """The checks passed, then someone created a database of that name before CREATE DATABASE (or
    before the final rename): the restore fails, and their database keeps every row."""
    from pgdr.restore.names import RestoreNames

    theirs = "cc_someone_elses"
    stack.cluster.execute(f"CREATE DATABASE {theirs}")
    stack.cluster.execute("CREATE TABLE precious (id int); INSERT INTO precious SELECT generate_series(1, 42)",
                          dbname=theirs)
    before = set(stack.cluster.database_names())
    names = (RestoreNames(DBNAME, theirs, f"{DBNAME}_replaced_x", None) if which == "work"
             else RestoreNames(theirs, theirs, None, None))
    restore = _logical_restore(stack, faults_env["backup_id"], names, "replace" if which == "work" else
                               "new_database", tmp_path / "work")
    try:
        with pytest.raises(Exception, match="already exists"):
            restore.run()
        assert set(stack.cluster.database_names()) == before
        assert _rows(stack, theirs, "precious") == 42
        assert _allows_connections(stack, DBNAME) and _rows(stack, DBNAME) == stack.row_counts["public.visits"]
    finally:
        stack.cluster.execute(f"DROP DATABASE IF EXISTS {theirs} WITH (FORCE)")


# --- row data in an error ------------------------------------------------------------------------------

SENTINEL = "SENTINEL-PHI-5d1c7a"


def test_row_data_in_a_failing_restore_reaches_no_record_xcom_or_alert(stack, faults_env, monkeypatch):
    """A backup whose rows break a foreign key (written with triggers off): pg_restore fails on it and
    PostgreSQL quotes the row's key in DETAIL; the run's record, XCom and Slack say which constraint,
    never the value."""
    probe, conn_id = "phi_probe", "phi_probe_db"
    stack.cluster.execute(f"DROP DATABASE IF EXISTS {probe} WITH (FORCE)")
    stack.cluster.execute(f"CREATE DATABASE {probe}")
    stack.cluster.execute(
        "CREATE TABLE parent (id text PRIMARY KEY); "
        "CREATE TABLE child (id int PRIMARY KEY, parent_id text REFERENCES parent (id)); "
        "SET session_replication_role = replica; "
        f"INSERT INTO child VALUES (1, '{SENTINEL}')", dbname=probe)
    monkeypatch.setenv("AIRFLOW_CONN_PHI_PROBE_DB", postgres_conn(stack.cluster, dbname=probe))
    monkeypatch.setenv("AIRFLOW_VAR_PGDR_DATABASES", json.dumps([conn_id]))
    monkeypatch.setenv("AIRFLOW_VAR_PGDR_RESTORE_CONN_IDS", json.dumps({conn_id: RESTORE_CONN_ID}))
    before = set(stack.cluster.database_names())
    try:
        backup = run_dag("pg_backup_daily")
        assert str(backup.state) == "success", task_states(backup)
        dag_run = run_dag("pg_restore", conf={"database": conn_id, "target_database": "phi_probe_restored"})
        states = task_states(dag_run)
        assert states["restore"] == "failed" and states["report"] == "failed", states
        record = next(r for r in reversed(_records(stack)) if r["database"] == conn_id)
        assert record["status"] == "failed"
        assert "child_parent_id_fkey" in record["error"], "the error still says what failed"
        assert SENTINEL not in json.dumps(record)
        assert SENTINEL not in all_xcom_text(dag_run)
        texts = stack.slack.texts()
        assert any(f"restore of {conn_id} failed" in t for t in texts), texts
        assert not any(SENTINEL in t for t in texts)
        assert set(stack.cluster.database_names()) == before, "the failed restore dropped what it created"
    finally:
        stack.cluster.execute(f"DROP DATABASE IF EXISTS {probe} WITH (FORCE)")
        stack.cluster.execute("DROP DATABASE IF EXISTS phi_probe_restored WITH (FORCE)")


# --- retention racing the choice of a backup ----------------------------------------------------------

def test_a_backup_retention_deletes_while_it_is_chosen_is_let_go_and_the_next_good_one_leased(stack, faults_env):
    """Retention plans from the leases it read, then deletes. A restore that chose a backup just
    before its lease existed must notice the backup is gone (looked up again after leasing) and
    lease another, never go on with the deleted one."""
    import logging

    from pgdr.settings import load_settings
    from pgdr.store.catalog import newest_good
    from pgdr.store.leases import active, holders_by_backup, lease_chosen, release
    from pgdr.store.s3 import BackupStore

    client = _client(stack)
    old = faults_env["backup_id"]
    newer = "20991231T235959Z"
    base = f"{PREFIX}/{CONN_ID}/logical/"
    for obj in client.list_objects_v2(Bucket=BUCKET, Prefix=f"{base}{old}/")["Contents"]:
        client.copy_object(Bucket=BUCKET, Key=obj["Key"].replace(old, newer, 1), ServerSideEncryption="AES256",
                           CopySource={"Bucket": BUCKET, "Key": obj["Key"]})
    store = BackupStore.from_settings(load_settings(), logging.getLogger("test"))
    chosen = []

    def choose_while_retention_deletes(entries):
        entry = newest_good(entries)
        chosen.append(entry.backup_id)
        if entry.backup_id == newer:
            # retention, which read the leases before this one was written, deletes the backup now
            store.delete_all_versions(store.list_keys(f"{base}{newer}"))
        return entry

    try:
        _, entry, _ = lease_chosen(store, CONN_ID, "logical", choose_while_retention_deletes, "pg_restore:race", 2.0)
        assert chosen == [newer, old] and entry.backup_id == old
        assert holders_by_backup(active(store, CONN_ID)) == {("logical", old): ("pg_restore:race",)}
    finally:
        release(store, CONN_ID, "logical", old, "pg_restore:race")
        store.delete_all_versions(store.list_keys(f"{base}{newer}"))
