"""Fault sweep for retention: the worker SIGKILLed in the middle of data retention deletes (between
batches) and of backup expiry (between the manifest's versions and the rest), then the next run.

Each test asserts nothing that should be kept is lost, nothing half-deleted is listed as good, and
the next run completes on its own. The child is a real worker process running the retention code
(pgdr.retain.data / pgdr.retain.backups) with the settings and connections of its environment; only its
own pid is killed, as the OOM killer or ``kill -9`` would.
"""

from __future__ import annotations

import io
import json
import logging
import os
import signal
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
import zstandard

from harness.stack import BUCKET, CONN_ID
from tests.support.waiting import wait_for

REPO = Path(__file__).resolve().parents[1]
log = logging.getLogger("test_retention_faults")

_DATA_CHILD = r"""
import json, logging, os, sys
from pathlib import Path
sys.path[:0] = [os.environ["PGDR_REPO"] + "/plugins", os.environ["PGDR_REPO"]]
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
if os.environ.get("FAULT_PAUSE_AT"):   # stop (until killed) in the given call of that function, before it runs
    from harness.kill_task import _install_pause
    _install_pause(os.environ["FAULT_PAUSE_AT"], os.environ["FAULT_PAUSE_FILE"], int(os.environ["FAULT_PAUSE_AFTER"]),
                   "before")
import psycopg2
from pgdr.retain.data_policy import load_policy
from pgdr.retain.data import DataRetention
from pgdr.settings import load_settings
from pgdr.store.s3 import BackupStore

settings = load_settings()
log = logging.getLogger("worker")
policy = load_policy(Path(sys.argv[1]), floor_years=settings.legal_floor_years, phi_tables=settings.phi_tables)
job = DataRetention(connect=lambda: psycopg2.connect(os.environ["FAULT_DSN"]), policy=policy, database="fault_db",
                    store=BackupStore.from_settings(settings, log), staging_dir=settings.staging_dir,
                    batch_rows=int(sys.argv[3]), compression_level=1, run_stamp=sys.argv[2], log=log)
print(json.dumps(job.run(dry_run=False), default=str))
"""

_EXPIRE_CHILD = r"""
import json, logging, os, sys
sys.path[:0] = [os.environ["PGDR_REPO"] + "/plugins", os.environ["PGDR_REPO"]]
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
if os.environ.get("FAULT_PAUSE_AT"):   # stop (until killed) in the given call of that function, before it runs
    from harness.kill_task import _install_pause
    _install_pause(os.environ["FAULT_PAUSE_AT"], os.environ["FAULT_PAUSE_FILE"], int(os.environ["FAULT_PAUSE_AFTER"]),
                   "before")
from pgdr.retain import backups as expire
from pgdr.settings import load_settings
from pgdr.store.s3 import BackupStore

settings = load_settings()
log = logging.getLogger("worker")
report = expire.run(store=BackupStore.from_settings(settings, log), database=os.environ["FAULT_DATABASE"],
                    settings=settings, dry_run=False, log=log)
print(json.dumps(report["counts"]))
"""


def _child(code: str, *args: str, env: dict) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", code, *args], cwd=REPO, env={**os.environ, **env,
                            "PGDR_REPO": str(REPO)}, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)


def _pause(function: str, marker: Path, after_calls: int) -> dict:
    """Environment that makes a child stop in call ``after_calls + 1`` of ``function`` (before it runs)."""
    return {"FAULT_PAUSE_AT": function, "FAULT_PAUSE_FILE": str(marker), "FAULT_PAUSE_AFTER": str(after_calls)}


def _kill_when_paused(worker: subprocess.Popen, marker: Path, what: str) -> None:
    try:
        wait_for(marker.exists, timeout=120, what=what)
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.communicate()


def _finish(process: subprocess.Popen, timeout: float = 300) -> str:
    output, _ = process.communicate(timeout=timeout)
    assert process.returncode == 0, output[-4000:]
    return output


# ------------------------------------------------------------------ data retention deletes

@pytest.fixture()
def fault_db(stack, pgdr_env, tmp_path):
    """A database with 120 rows past a seven-year archive rule and 5 recent ones; each delete sleeps a
    little (a trigger), so batches of 5 take long enough to be killed between."""
    tag = os.urandom(3).hex()
    dbname, role = f"fault_{tag}", f"fault_ret_{tag}"
    cluster = stack.cluster
    cluster.execute(f'CREATE DATABASE "{dbname}"')
    cluster.execute(f"CREATE ROLE \"{role}\" LOGIN PASSWORD '{role}'")
    old = datetime.now(timezone.utc) - timedelta(days=365 * 9)
    cluster.execute(f"""
        CREATE TABLE events (id int PRIMARY KEY, happened timestamptz NOT NULL, body text NOT NULL);
        CREATE FUNCTION slow_delete() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN PERFORM pg_sleep(0.03); RETURN OLD; END $$;
        CREATE TRIGGER slow_delete BEFORE DELETE ON events FOR EACH ROW EXECUTE FUNCTION slow_delete();
        GRANT SELECT, DELETE ON events TO "{role}";
    """, dbname=dbname)
    cluster.execute("INSERT INTO events SELECT i, %s + i * interval '1 hour', 'event ' || i "
                    "FROM generate_series(1, 120) i", dbname=dbname, params=(old,))
    cluster.execute("INSERT INTO events SELECT 1000 + i, now(), 'recent ' || i FROM generate_series(1, 5) i",
                    dbname=dbname)
    policy = tmp_path / "policy.yaml"
    policy.write_text("rules:\n  - {table: events, phi: false, date_column: happened, older_than: {years: 7}, "
                      "action: archive}\n")
    env = {"FAULT_DSN": cluster.dsn(dbname, user=role, password=role)}
    try:
        yield {"dbname": dbname, "policy": policy, "env": env, "prefix": pgdr_env["AIRFLOW_VAR_PGDR_S3_PREFIX"]}
    finally:
        cluster.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        cluster.execute(f'DROP ROLE IF EXISTS "{role}"')


def _rows(cluster, dbname: str) -> dict[int, str]:
    return dict(cluster.execute("SELECT id, md5(e::text) FROM events e", dbname=dbname))


def _archived(stack, prefix: str) -> list[dict[int, str]]:
    """Each archive of fault_db's events: id -> md5 of the row as archived (loaded into a scratch table)."""
    client = stack.s3.client()
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/fault_db/archive/")
                  .get("Contents", []) if o["Key"].endswith("/archive.json"))
    out = []
    conn = stack.cluster.connect("postgres")
    try:
        with conn.cursor() as cur:
            cur.execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'")
            for key in keys:
                manifest = json.loads(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
                body = client.get_object(Bucket=BUCKET, Key=manifest["object"]["key"])["Body"].read()
                cur.execute("CREATE TEMP TABLE events (id int PRIMARY KEY, happened timestamptz NOT NULL, "
                            "body text NOT NULL)")
                cur.copy_expert("COPY events FROM STDIN WITH (FORMAT csv, HEADER true)",
                                io.BytesIO(zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body)).read()))
                cur.execute("SELECT id, md5(e::text) FROM events e")
                out.append(dict(cur.fetchall()))
                assert len(out[-1]) == manifest["rows"]
                cur.execute("DROP TABLE events")
    finally:
        conn.close()
    return out


def test_worker_killed_between_retention_delete_batches_then_the_retry_completes(stack, fault_db):
    cluster, dbname = stack.cluster, fault_db["dbname"]
    before = _rows(cluster, dbname)
    recent = {i: md5 for i, md5 in before.items() if i > 1000}
    stamp = "20261201_030000"   # the retry is the same DAG run: same run stamp
    worker = _child(_DATA_CHILD, str(fault_db["policy"]), stamp, "5", env=fault_db["env"])
    try:
        wait_for(lambda: 0 < 120 - (len(_rows(cluster, dbname)) - 5) < 60, timeout=120,
                 what="some, not all, batches deleted")
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.communicate()
    middle = _rows(cluster, dbname)
    assert 5 < len(middle) < 125, "killed between batches"
    (first,) = _archived(stack, fault_db["prefix"])
    # every row the killed attempt deleted is in its archive, exactly as it was
    assert {i: before[i] for i in set(before) - set(middle)} == {i: first[i] for i in set(before) - set(middle)}
    # nothing younger was touched; the worker's session is gone with its locks
    assert all(middle[i] == md5 for i, md5 in recent.items())
    wait_for(lambda: not cluster.execute("SELECT 1 FROM pg_stat_activity WHERE datname = %s AND usename LIKE "
                                         "'fault_ret_%%'", params=(dbname,)), what="the dead worker's session")

    output = _finish(_child(_DATA_CHILD, str(fault_db["policy"]), stamp, "50", env=fault_db["env"]))
    after = _rows(cluster, dbname)
    assert after == recent, output[-2000:]
    archives = _archived(stack, fault_db["prefix"])
    assert len(archives) == 2, "the retry wrote its own archive, never over the interrupted one"
    union = {}
    for archive in archives:
        for i, md5 in archive.items():
            assert union.setdefault(i, md5) == md5   # a row in two archives is the same row
    assert {i: union[i] for i in set(before) - set(after)} == {i: before[i] for i in set(before) - set(after)}


def test_worker_killed_between_the_archive_upload_and_its_manifest_deletes_nothing(stack, fault_db, tmp_path):
    cluster, dbname = stack.cluster, fault_db["dbname"]
    before = _rows(cluster, dbname)
    stamp = "20261201_030000"
    marker = tmp_path / "paused"
    worker = _child(_DATA_CHILD, str(fault_db["policy"]), stamp, "50",
                    env={**fault_db["env"], **_pause("pgdr.store.s3.BackupStore.put_json", marker, 0)})
    _kill_when_paused(worker, marker, "the worker after rows.csv.zst, before archive.json")
    assert _rows(cluster, dbname) == before, "no row is deleted before its archive is described and checked"
    assert _archived(stack, fault_db["prefix"]) == [], "an archive without archive.json is never counted"

    _finish(_child(_DATA_CHILD, str(fault_db["policy"]), stamp, "50", env=fault_db["env"]))
    after = _rows(cluster, dbname)
    (archive,) = _archived(stack, fault_db["prefix"])
    assert set(after) == {i for i in before if i > 1000}
    assert archive == {i: md5 for i, md5 in before.items() if i not in after}


# ------------------------------------------------------------------ backup expiry

def _put_backup(s3, prefix: str, when: datetime, objects: int, status: str = "good") -> str:
    backup_id = when.strftime("%Y%m%dT%H%M%SZ")
    target = f"{prefix}/{CONN_ID}/logical/{backup_id}"
    sse = {"ServerSideEncryption": "AES256"}
    for n in range(objects):
        s3.put_object(Bucket=BUCKET, Key=f"{target}/part{n}.dat", Body=b"x" * 100, **sse)
    manifest = {"backup_id": backup_id, "kind": "logical", "database": CONN_ID, "started_at": when.isoformat(),
                "finished_at": (when + timedelta(minutes=3)).isoformat()}
    s3.put_object(Bucket=BUCKET, Key=f"{target}/manifest.json", Body=json.dumps(manifest).encode(), **sse)
    s3.put_object(Bucket=BUCKET, Key=f"{target}/verification.json", Body=json.dumps({"status": status}).encode(),
                  **sse)
    return backup_id


def _versions(s3, prefix: str) -> set[tuple[str, str]]:
    listed = s3.list_object_versions(Bucket=BUCKET, Prefix=prefix)
    return {(v["Key"], v["VersionId"]) for v in listed.get("Versions", []) + listed.get("DeleteMarkers", [])}


def test_worker_killed_mid_backup_expiry_lists_nothing_half_deleted_and_the_next_run_finishes(
        stack, pgdr_env, tmp_path):
    from pgdr.store.catalog import newest_good
    from pgdr.store.s3 import BackupStore

    s3 = stack.s3.client()
    prefix = pgdr_env["AIRFLOW_VAR_PGDR_S3_PREFIX"]
    now = datetime.now(timezone.utc)
    keep = [_put_backup(s3, prefix, now - timedelta(days=d), 3) for d in (2, 5)]
    doomed = [_put_backup(s3, prefix, datetime(now.year - 9, 1 + m, 3, 2, tzinfo=timezone.utc), 4)
              for m in range(3)]
    kept_versions = {v for b in keep for v in _versions(s3, f"{prefix}/{CONN_ID}/logical/{b}/")}
    store = BackupStore(client=s3, bucket=BUCKET, prefix=prefix, sse_args={"ServerSideEncryption": "AES256"},
                        part_size=64 << 20, log=log)
    env = {"FAULT_DATABASE": CONN_ID}
    pause = tmp_path / "paused"
    # delete_versions call 1: the first doomed backup's manifest; call 2 (paused, then killed): its other objects
    worker = _child(_EXPIRE_CHILD, env={**env, **_pause("pgdr.store.s3.BackupStore.delete_versions", pause, 1)})
    try:
        wait_for(pause.exists, timeout=120, what="the worker between a backup's manifest and its objects")
    finally:
        os.kill(worker.pid, signal.SIGKILL)
        worker.communicate()
    entries = store.catalog(CONN_ID, "logical")
    complete = {e.backup_id for e in entries if e.complete}
    half = set(doomed) - complete
    assert len(half) == 1 and {e.backup_id for e in entries} >= half, "one backup lost its manifest, objects remain"
    assert half.isdisjoint(complete) and newest_good(entries).backup_id == keep[0]

    output = _finish(_child(_EXPIRE_CHILD, env=env))
    assert json.loads(output.strip().splitlines()[-1])["deleted"] == len(doomed), output[-2000:]
    assert {e.backup_id for e in store.catalog(CONN_ID, "logical")} == set(keep)
    for backup_id in doomed:   # every version gone, the half-deleted one as an orphan
        assert not _versions(s3, f"{prefix}/{CONN_ID}/logical/{backup_id}/")
    assert {v for b in keep for v in _versions(s3, f"{prefix}/{CONN_ID}/logical/{b}/")} == kept_versions


def test_worker_killed_while_restoring_soft_deleted_backups_the_next_run_restores_the_rest(
        stack, pgdr_env, tmp_path):
    from pgdr.store.s3 import BackupStore

    s3 = stack.s3.client()
    prefix = pgdr_env["AIRFLOW_VAR_PGDR_S3_PREFIX"]
    now = datetime.now(timezone.utc)
    newest = _put_backup(s3, prefix, now - timedelta(days=2), 2)
    hidden = [_put_backup(s3, prefix, now - timedelta(days=d), 2) for d in (3, 4)]
    for backup_id in hidden:   # aws s3 rm of each manifest
        s3.delete_object(Bucket=BUCKET, Key=f"{prefix}/{CONN_ID}/logical/{backup_id}/manifest.json")
    data = {(v["Key"], v["VersionId"]) for v in s3.list_object_versions(
        Bucket=BUCKET, Prefix=f"{prefix}/{CONN_ID}/").get("Versions", [])}
    store = BackupStore(client=s3, bucket=BUCKET, prefix=prefix, sse_args={"ServerSideEncryption": "AES256"},
                        part_size=64 << 20, log=log)
    marker = tmp_path / "paused"
    # delete_versions call 1 removes the first hidden backup's delete marker; killed before the second
    worker = _child(_EXPIRE_CHILD, env={"FAULT_DATABASE": CONN_ID,
                                        **_pause("pgdr.store.s3.BackupStore.delete_versions", marker, 1)})
    _kill_when_paused(worker, marker, "the worker between two restores")
    assert {e.backup_id for e in store.catalog(CONN_ID, "logical") if e.complete} == {newest, hidden[1]}

    output = _finish(_child(_EXPIRE_CHILD, env={"FAULT_DATABASE": CONN_ID}))
    counts = json.loads(output.strip().splitlines()[-1])
    assert counts["restored"] == 1 and counts["deleted"] == 0, output[-2000:]
    assert {e.backup_id for e in store.catalog(CONN_ID, "logical") if e.complete} == {newest, *hidden}
    listed = s3.list_object_versions(Bucket=BUCKET, Prefix=f"{prefix}/{CONN_ID}/")
    assert {(v["Key"], v["VersionId"]) for v in listed.get("Versions", [])} == data and not listed.get("DeleteMarkers")
