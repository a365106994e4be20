"""The backup side's fault sweep: workers SIGKILLed mid-task, S3 taken away, a full staging disk,
hostile names. Each scenario asserts that nothing is lost (the next run, on its own, takes a
good backup with every row) and that nothing half-done is listed as a backup.

The task runs in a child process (harness/kill_task.py) that is SIGKILLed at the chosen moment,
alone, as the OOM killer would: whatever it started is left to fend for itself.
"""

from __future__ import annotations

import json
import os
import subprocess
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from harness.kill_task import KillableTask, TaskFailed, run_task
from harness.stack import BUCKET, CONN_ID, postgres_conn
from tests.support.s3 import object_keys
from tests.support.waiting import wait_for

LOGICAL = "pgdr.operators.backup.LogicalBackupOperator"
BASE = "pgdr.operators.backup.PhysicalBackupOperator"
FILES = "pgdr.operators.backup.FilesBackupOperator"
CONFIG = "pgdr.operators.backup.ConfigBackupOperator"
SEAL = "pgdr.operators.backup.SealBackupOperator"
DB = "faults"
CONN = "faults_db"


@pytest.fixture(scope="module")
def faults_db(stack):
    """A database of its own with one table big enough (about 9 MB compressed) to go up in parts."""
    stack.cluster.execute(f"CREATE DATABASE {DB}")
    stack.cluster.execute(
        "CREATE TABLE big AS SELECT g AS id, md5(g::text) || md5((g * 7)::text) AS payload "
        "FROM generate_series(1, 400000) g; CREATE TABLE small (id int PRIMARY KEY, note text); "
        "INSERT INTO small SELECT g, 'note ' || g FROM generate_series(1, 100) g", dbname=DB)
    return DB


@pytest.fixture()
def env(stack, faults_db, airflow_db, tmp_path):
    """Settings and connections of a worker backing up only the ``faults`` database."""
    stack.slack.clear()
    values = dict(os.environ, **stack.airflow_env())
    values.update({
        "AIRFLOW_CONN_FAULTS_DB": postgres_conn(stack.cluster, dbname=DB),
        "AIRFLOW_VAR_PGDR_DATABASES": json.dumps([CONN, CONN_ID]),
        "AIRFLOW_VAR_PGDR_STAGING_DIR": str(tmp_path / "staging"),
        "AIRFLOW_VAR_PGDR_S3_PREFIX": f"faults/{os.urandom(4).hex()}",
        "AIRFLOW_VAR_PGDR_MULTIPART_CHUNK_MB": "5",
        "AIRFLOW_VAR_PGDR_PHYSICAL_BACKUPS": "true",
    })
    return values


def _catalog(stack, env, kind: str):
    """(complete backup ids, incomplete backup ids) as pgdr's catalog lists them."""
    from pgdr.store.catalog import entries_from_keys

    base = f"{env['AIRFLOW_VAR_PGDR_S3_PREFIX']}/{CONN}/{kind}/"
    entries = entries_from_keys(object_keys(stack.s3.client(), base), base)
    return [e.backup_id for e in entries if e.complete], [e.backup_id for e in entries if not e.complete]


def _multipart_uploads(stack, env) -> list[str]:
    response = stack.s3.client().list_multipart_uploads(Bucket=BUCKET, Prefix=env["AIRFLOW_VAR_PGDR_S3_PREFIX"])
    return [upload["Key"] for upload in response.get("Uploads", [])]


def _partials(env, kind: str) -> list[str]:
    base = Path(env["AIRFLOW_VAR_PGDR_STAGING_DIR"]) / CONN / kind
    return sorted(p.name for p in base.glob("*.partial")) if base.is_dir() else []


def _processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes whose argv mentions ``text`` (a staging path)."""
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = next((line for line in (proc / "status").read_text().splitlines() if line.startswith("State:")), "")
        except OSError:
            continue
        if text in cmdline and "Z" not in state.split(":", 1)[1][:3]:
            found.append(cmdline.strip())
    return found


def _backends(stack, application: str) -> list[tuple]:
    return stack.cluster.execute(
        "SELECT pid, state, wait_event_type FROM pg_stat_activity WHERE application_name = %s",
        params=(application,))


def _take_and_seal(env, operator: str = LOGICAL, task_id: str = "dump_and_upload") -> dict:
    """The next run: the task, then its seal, each in a worker process of its own, to the end."""
    result = run_task(operator, {"task_id": task_id, "conn_id": CONN}, env=env)
    run_task(SEAL, {"task_id": "seal", "backup": result}, env=env)
    return result


def _assert_good_logical(stack, env, backup_id: str) -> None:
    """The backup is listed, its objects match their hashes, and its row counts are the database's."""
    import hashlib

    prefix = f"{env['AIRFLOW_VAR_PGDR_S3_PREFIX']}/{CONN}/logical/{backup_id}"
    client = stack.s3.client()
    manifest = json.loads(client.get_object(Bucket=BUCKET, Key=f"{prefix}/manifest.json")["Body"].read())
    for obj in manifest["objects"]:
        body = client.get_object(Bucket=BUCKET, Key=obj["key"])["Body"].read()
        assert hashlib.sha256(body).hexdigest() == obj["sha256"], obj["key"]
    assert manifest["row_counts"] == {"public.big": 400000, "public.small": 100}


# --- the logical backup, SIGKILLed ---------------------------------------------------------------


def test_sigkill_mid_pg_dump_kills_pg_dump_too_and_the_next_run_recovers(stack, env):
    """pg_dump waits on a table lock (so the kill lands mid-dump); the worker is SIGKILLed.

    Before: pg_dump was orphaned and kept its connection, snapshot and the staging copy of a
    dead run; now it dies with its worker, and the next run removes the dead run's staging dir.
    """
    holder = stack.cluster.connect(DB)
    staging = env["AIRFLOW_VAR_PGDR_STAGING_DIR"]
    try:
        with holder.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("LOCK TABLE small IN ACCESS EXCLUSIVE MODE")
        task = KillableTask.start(LOGICAL, {"task_id": "dump_and_upload", "conn_id": CONN}, env=env)
        task.wait_until(lambda: any(row[2] == "Lock" for row in _backends(stack, "pgdr")), what="pg_dump waiting")
        assert _partials(env, "logical"), "no staging dir while pg_dump runs"
        task.kill()
        wait_for(lambda: not _processes_mentioning(staging), timeout=10,
                 what="pg_dump to die with its worker: " + " | ".join(_processes_mentioning(staging)))
    finally:
        holder.rollback()
        holder.close()
    dead = _partials(env, "logical")
    complete, incomplete = _catalog(stack, env, "logical")
    assert complete == []  # nothing of the killed run is listed

    result = _take_and_seal(env)
    complete, incomplete = _catalog(stack, env, "logical")
    assert complete == [result["backup_id"]]
    _assert_good_logical(stack, env, result["backup_id"])
    assert dead and _partials(env, "logical") == [], "the dead run's staging dir was left behind"
    wait_for(lambda: not _backends(stack, "pgdr"), timeout=10, what="the dead pg_dump sessions to end")


def test_sigkill_mid_multipart_upload_next_run_recovers_and_aborts_the_dead_upload(stack, env):
    """Killed after the first part of the big table's file went up: a multipart upload is left open."""
    task = KillableTask.start(LOGICAL, {"task_id": "dump_and_upload", "conn_id": CONN}, env=env,
                              pause_at="pgdr.store.s3._FileSlice.__init__", pause_after_calls=1)
    task.wait_paused()
    task.kill()
    assert _multipart_uploads(stack, env), "the kill did not land inside a multipart upload"
    complete, killed = _catalog(stack, env, "logical")
    assert complete == []

    result = _take_and_seal(env)
    complete, incomplete = _catalog(stack, env, "logical")
    assert complete == [result["backup_id"]]
    _assert_good_logical(stack, env, result["backup_id"])
    # the dead run's open upload is aborted (unlisted, yet billed, forever otherwise)
    assert _multipart_uploads(stack, env) == []
    assert _partials(env, "logical") == []
    # whatever the dead run finished uploading is an orphan: never listed, and retention's to remove
    _assert_orphans_seen_by_retention(stack, env, "logical", incomplete)


def _assert_orphans_seen_by_retention(stack, env, kind: str, backup_ids: list[str]) -> None:
    from pgdr.retain import backups as expire
    from pgdr.store.s3 import BackupStore

    if not backup_ids:
        return
    import logging

    store = BackupStore(client=stack.s3.client(), bucket=BUCKET, prefix=env["AIRFLOW_VAR_PGDR_S3_PREFIX"],
                        sse_args={}, part_size=5 << 20, log=logging.getLogger("test"))
    found = {item.backup.backup_id: item.backup for item in
             expire.collect(store, CONN, datetime.now(timezone.utc) + timedelta(days=2))
             if item.backup.kind == kind}
    for backup_id in backup_ids:
        assert backup_id in found and not found[backup_id].complete, backup_id


def test_sigkill_in_seal_before_manifest_the_retry_seals_it(stack, env):
    """Killed between the last object's check and manifest.json: unlisted; the seal's retry lists it."""
    result = run_task(LOGICAL, {"task_id": "dump_and_upload", "conn_id": CONN}, env=env)
    task = KillableTask.start(SEAL, {"task_id": "seal", "backup": result}, env=env,
                              pause_at="pgdr.store.s3.BackupStore.put_manifest")
    task.wait_paused()
    task.kill()
    assert _catalog(stack, env, "logical")[0] == []
    run_task(SEAL, {"task_id": "seal", "backup": result}, env=env)  # Airflow's retry of the seal
    assert _catalog(stack, env, "logical")[0] == [result["backup_id"]]
    _assert_good_logical(stack, env, result["backup_id"])


def test_sigkill_in_seal_after_manifest_the_retry_succeeds(stack, env):
    """Killed after manifest.json was written (before the task could report success, so before any
    verification marker): the backup is complete; the seal's retry must not fail on its own manifest.

    Before: the retry failed with "manifest.json already exists" and alerted about a good backup."""
    result = run_task(LOGICAL, {"task_id": "dump_and_upload", "conn_id": CONN}, env=env)
    task = KillableTask.start(SEAL, {"task_id": "seal", "backup": result}, env=env,
                              pause_at="pgdr.store.s3.BackupStore.put_manifest", pause_when="after")
    task.wait_paused()
    task.kill()
    assert _catalog(stack, env, "logical")[0] == [result["backup_id"]]
    sealed = run_task(SEAL, {"task_id": "seal", "backup": result}, env=env)
    assert sealed["backup_id"] == result["backup_id"]
    _assert_good_logical(stack, env, result["backup_id"])


def test_a_different_manifest_already_there_is_still_refused(stack, env):
    """Idempotence has a limit: a manifest that is not this backup's is never overwritten."""
    result = run_task(LOGICAL, {"task_id": "dump_and_upload", "conn_id": CONN}, env=env)
    key = f"{result['prefix']}/manifest.json"
    stack.s3.client().put_object(Bucket=BUCKET, Key=key, Body=b'{"backup_id": "someone else"}')
    with pytest.raises(TaskFailed) as failed:
        run_task(SEAL, {"task_id": "seal", "backup": result}, env=env)
    assert "manifest.json already exists" in failed.value.output
    body = stack.s3.client().get_object(Bucket=BUCKET, Key=key)["Body"].read()
    assert body == b'{"backup_id": "someone else"}'


def test_staging_copy_is_private(stack, env):
    """Item 13: the staged dump holds health records: directories 0700, files 0600, whatever the umask."""
    result = _take_and_seal(env)
    copy = Path(env["AIRFLOW_VAR_PGDR_STAGING_DIR"]) / CONN / "logical" / result["backup_id"]
    assert copy.is_dir()
    loose = [f"{oct(p.stat().st_mode & 0o777)} {p.relative_to(copy.parent)}"
             for p in [copy, *copy.rglob("*")] if p.stat().st_mode & 0o077]
    assert loose == []


# --- the base backup, SIGKILLed mid pg_basebackup -------------------------------------------------


def _throttled_bindir(directory: Path) -> Path:
    """A bindir whose pg_basebackup copies at 64 kB/s (exec'd, so it is the tool itself that runs)."""
    from harness.pg_cluster import pg_bindir

    directory.mkdir(parents=True, exist_ok=True)
    for tool in pg_bindir().iterdir():
        (directory / tool.name).symlink_to(tool)
    (directory / "pg_basebackup").unlink()
    script = directory / "pg_basebackup"
    # appended, so that "pg_basebackup --version" still answers (it must be the first argument)
    script.write_text(f'#!/bin/sh\nexec "{pg_bindir()}/pg_basebackup" "$@" --max-rate=64k\n')
    script.chmod(0o755)
    return directory


def _walsenders(stack) -> list[tuple]:
    return stack.cluster.execute("SELECT pid FROM pg_stat_activity WHERE backend_type = 'walsender'")


def _slots(stack) -> list[tuple]:
    return stack.cluster.execute("SELECT slot_name, temporary FROM pg_replication_slots")


def test_sigkill_mid_pg_basebackup_leaves_no_tool_no_walsender_and_the_next_run_recovers(stack, env, tmp_path):
    """Before: pg_basebackup was orphaned, kept its WAL sender (and temporary slot, which holds WAL
    on the primary) and went on writing a dead run's staging copy; now it dies with its worker."""
    slots_before = _slots(stack)
    staging = env["AIRFLOW_VAR_PGDR_STAGING_DIR"]
    slow = dict(env, AIRFLOW_VAR_PGDR_PG_BINDIR=str(_throttled_bindir(tmp_path / "bin")))
    task = KillableTask.start(BASE, {"task_id": "base_backup", "conn_id": CONN}, env=slow)
    task.wait_until(lambda: _walsenders(stack) and _processes_mentioning(staging), what="pg_basebackup copying")
    task.kill()
    wait_for(lambda: not _processes_mentioning(staging), timeout=10,
             what="pg_basebackup to die with its worker: " + " | ".join(_processes_mentioning(staging)))
    wait_for(lambda: not _walsenders(stack), timeout=20, what="the dead copy's WAL senders to end")
    assert _slots(stack) == slots_before, "a replication slot outlived the killed base backup"
    assert _catalog(stack, env, "base")[0] == []

    result = _take_and_seal(env, BASE, "base_backup")
    assert _catalog(stack, env, "base")[0] == [result["backup_id"]]
    assert _partials(env, "base") == []
    assert not _walsenders(stack)


# --- file and configuration backups, SIGKILLed mid-upload -----------------------------------------


@pytest.fixture()
def file_env(env, tmp_path):
    """Two directories to back up (one file big and random enough to go up in parts) and config files."""
    uploads = tmp_path / "uploads"
    (uploads / "docs").mkdir(parents=True)
    (uploads / "scan.bin").write_bytes(os.urandom(12 << 20))
    for i in range(20):
        (uploads / "docs" / f"note-{i}.txt").write_text(f"note {i}\n" * 50)
    config = tmp_path / "config"
    config.mkdir()
    (config / "app.yaml").write_text("port: 8080\n")
    (config / ".env").write_text("API_KEY=kill-test-secret-31f\n")
    return dict(env, **{
        "AIRFLOW_VAR_PGDR_FILE_DIRS": json.dumps({CONN: [str(uploads)]}),
        "AIRFLOW_VAR_PGDR_CONFIG_FILES": json.dumps({CONN: [str(config / "app.yaml"), str(config / ".env")]}),
    })


@pytest.mark.parametrize("operator, kind, pause, after, when", [
    (FILES, "files", "pgdr.store.s3._FileSlice.__init__", 1, "before"),     # inside the archive's multipart upload
    (CONFIG, "config", "pgdr.store.s3.BackupStore.upload_file", 0, "after"),  # first object up, no manifest
], ids=["files", "config"])
def test_sigkill_mid_upload_of_files_and_config_next_run_recovers(stack, file_env, operator, kind, pause, after,
                                                                   when):
    task_id = f"{kind}_backup"
    task = KillableTask.start(operator, {"task_id": task_id, "conn_id": CONN}, env=file_env, pause_at=pause,
                              pause_after_calls=after, pause_when=when)
    task.wait_paused()
    task.kill()
    assert _partials(file_env, kind), "no staging dir left by the killed run"
    complete, killed = _catalog(stack, file_env, kind)
    assert complete == []
    assert killed or _multipart_uploads(stack, file_env), "the kill did not land mid-upload"

    result = _take_and_seal(file_env, operator, task_id)
    complete, incomplete = _catalog(stack, file_env, kind)
    assert complete == [result["backup_id"]]
    assert _partials(file_env, kind) == []
    assert _multipart_uploads(stack, file_env) == []
    _assert_orphans_seen_by_retention(stack, file_env, kind, incomplete)


# --- S3 taken away, the staging disk full ----------------------------------------------------------


def test_s3_gone_mid_upload_fails_clearly_and_the_retry_succeeds(stack, env):
    """The endpoint dies for good part-way through the upload (connections reset, then refused)."""
    from harness.tcp_proxy import TcpProxy

    proxy = TcpProxy(stack.s3.port, cut_after_bytes=3_000_000)
    s3_conn = json.loads(env["AIRFLOW_CONN_BACKUP_S3"])
    s3_conn["extra"]["endpoint_url"] = proxy.endpoint_url
    cut_env = dict(env, AIRFLOW_CONN_BACKUP_S3=json.dumps(s3_conn))
    try:
        with pytest.raises(TaskFailed) as failed:
            run_task(LOGICAL, {"task_id": "dump_and_upload", "conn_id": CONN}, env=cut_env)
    finally:
        proxy.stop()
    assert proxy.cut.is_set()
    assert "endpoint" in failed.value.output  # botocore names the unreachable endpoint
    assert _catalog(stack, env, "logical")[0] == []
    assert _partials(env, "logical") == []  # the failed run removed its own staging dir

    result = _take_and_seal(env)  # the retry, S3 back
    assert _catalog(stack, env, "logical")[0] == [result["backup_id"]]
    _assert_good_logical(stack, env, result["backup_id"])


@pytest.fixture()
def small_staging(env, tmp_path):
    """A 2 MB tmpfs as the staging directory (root only; skipped with the reason otherwise)."""
    mount_point = tmp_path / "small"
    mount_point.mkdir(mode=0o700)
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m,mode=0700", "tmpfs", str(mount_point)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a small tmpfs for a full staging disk: {done.stderr.strip()}")
    try:
        yield dict(env, AIRFLOW_VAR_PGDR_STAGING_DIR=str(mount_point))
    finally:
        subprocess.run(["umount", "-l", str(mount_point)], check=False)


def test_a_full_staging_disk_fails_clearly_cleans_up_and_lists_nothing(stack, small_staging):
    env = small_staging
    with pytest.raises(TaskFailed) as failed:
        run_task(LOGICAL, {"task_id": "dump_and_upload", "conn_id": CONN}, env=env)
    output = failed.value.output
    assert "No space left on device" in output
    assert "pgdr_staging_dir" in output, "the message does not say which setting to change"
    assert _catalog(stack, env, "logical") == ([], [])  # nothing listed, and what went up was removed
    assert _partials(env, "logical") == []
    left = [p for p in Path(env["AIRFLOW_VAR_PGDR_STAGING_DIR"]).rglob("*") if p.is_file()]
    assert left == [], "the failed run left files on the staging disk"


# --- hostile names --------------------------------------------------------------------------------

HOSTILE_DATABASES = ['we"ird $name; DROP', "Łódź-" + "ü" * 27, "user"]  # the second is 62 bytes
HOSTILE_TABLES = ['Tab"le $1', "ünï cødé table", "order", "x" * 63, "semi;colon --dash"]


class _Superuser:
    """``cluster.connect`` for database names a conninfo string cannot carry (quotes, spaces)."""

    def __init__(self, cluster) -> None:
        self.cluster = cluster

    def connect(self, dbname: str = "postgres"):
        import psycopg2

        from harness.pg_cluster import SUPERUSER

        conn = psycopg2.connect(host=self.cluster.host, port=self.cluster.port, dbname=dbname, user=SUPERUSER)
        conn.autocommit = True
        return conn


def _create_hostile(cluster, dbname: str) -> None:
    from psycopg2 import sql

    admin = _Superuser(cluster).connect()
    with admin.cursor() as cur:
        cur.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    admin.close()
    conn = _Superuser(cluster).connect(dbname)
    with conn.cursor() as cur:
        cur.execute(sql.SQL("CREATE SCHEMA {}").format(sql.Identifier('sch"ema $x')))
        for position, table in enumerate(HOSTILE_TABLES):
            name = sql.Identifier('sch"ema $x' if position % 2 else "public", table)
            cur.execute(sql.SQL("CREATE TABLE {} ({} int, {} text)").format(
                name, sql.Identifier("i d"), sql.Identifier('va"l')))
            cur.execute(sql.SQL("INSERT INTO {} SELECT g, %s || g FROM generate_series(1, %s) g").format(name),
                        (f"{table} \u00e9 ' \" $$ \\ ", 10 + position))
    conn.close()


def test_hostile_database_and_table_names_back_up_and_restore_identical(stack, env, tmp_path):
    from harness.pg_cluster import start_cluster
    from harness.synthetic import fingerprint
    from tests.support.clusters import restore_by_hand
    from tests.support.s3 import download_backup

    conns = {f"hostile_{i}": name for i, name in enumerate(HOSTILE_DATABASES)}
    hostile_env = dict(env, AIRFLOW_VAR_PGDR_DATABASES=json.dumps([*conns, CONN_ID]))
    for conn_id, dbname in conns.items():
        _create_hostile(stack.cluster, dbname)
        hostile_env[f"AIRFLOW_CONN_{conn_id.upper()}"] = postgres_conn(stack.cluster, dbname=dbname)
    client = stack.s3.client()
    with start_cluster() as fresh:
        for conn_id, dbname in conns.items():
            result = run_task(LOGICAL, {"task_id": "dump_and_upload", "conn_id": conn_id}, env=hostile_env)
            sealed = run_task(SEAL, {"task_id": "seal", "backup": result}, env=hostile_env)
            manifest = json.loads(client.get_object(Bucket=BUCKET, Key=sealed["manifest_key"])["Body"].read())
            assert manifest["dbname"] == dbname
            files = download_backup(client, BUCKET, manifest, tmp_path / conn_id)
            restore_by_hand(fresh, files)
            source = fingerprint(_Superuser(stack.cluster), dbname)
            assert len(source) == len(HOSTILE_TABLES)
            assert fingerprint(_Superuser(fresh), dbname) == source, dbname
            assert sorted(manifest["row_counts"].values()) == sorted(rows for rows, _ in source.values())


# --- the database or the stored bytes failing under a backup ---------------------------------------


def test_the_dump_session_killed_by_the_server_fails_clearly_and_leaves_nothing(stack, env):
    """pg_dump's session is terminated mid-dump (an administrator, a failover): the task fails naming
    pg_dump, removes its staging dir and whatever it uploaded (the globals); the retry succeeds."""
    holder = stack.cluster.connect(DB)
    try:
        with holder.cursor() as cur:
            cur.execute("BEGIN")
            cur.execute("LOCK TABLE small IN ACCESS EXCLUSIVE MODE")
        task = KillableTask.start(LOGICAL, {"task_id": "dump_and_upload", "conn_id": CONN}, env=env)
        waiting = task.wait_until(lambda: [r for r in _backends(stack, "pgdr") if r[2] == "Lock"],
                                  what="pg_dump waiting")
        stack.cluster.execute("SELECT pg_terminate_backend(%s)", params=(waiting[0][0],))
        with pytest.raises(TaskFailed) as failed:
            task.run_to_end()
    finally:
        holder.rollback()
        holder.close()
    assert "pg_dump failed" in failed.value.output
    assert _catalog(stack, env, "logical") == ([], [])  # not even the globals' object is left
    assert _partials(env, "logical") == []

    result = _take_and_seal(env)
    assert _catalog(stack, env, "logical")[0] == [result["backup_id"]]


def test_an_object_changed_in_s3_before_the_seal_is_never_sealed(stack, env):
    """A byte flipped in S3 between upload and seal (same size): the seal's check refuses it and
    writes no manifest, naming the object; nothing is listed."""
    result = run_task(LOGICAL, {"task_id": "dump_and_upload", "conn_id": CONN}, env=env)
    obj = next(o for o in result["manifest"]["objects"] if o["role"] == "toc")
    client = stack.s3.client()
    body = bytearray(client.get_object(Bucket=BUCKET, Key=obj["key"])["Body"].read())
    body[len(body) // 2] ^= 0x01
    client.put_object(Bucket=BUCKET, Key=obj["key"], Body=bytes(body), ServerSideEncryption="AES256",
                      Metadata={"sha256": obj["sha256"]}, ChecksumAlgorithm="SHA256")
    with pytest.raises(TaskFailed) as failed:
        run_task(SEAL, {"task_id": "seal", "backup": result}, env=env)
    assert "failed its check before sealing; no manifest written" in failed.value.output
    assert obj["key"] in failed.value.output
    assert _catalog(stack, env, "logical")[0] == []
