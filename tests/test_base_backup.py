"""Physical base backups in pg_backup_daily, end to end on real services.

Effects are checked independently of pgdr's code: the objects are fetched with a plain
boto3 client and hashed, the tar is unpacked with the system's tar into a fresh directory,
proved with pg_verifybackup and started as a cluster of its own, whose tables must be
identical to the source's.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import pwd
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from harness.pg_cluster import PgCluster, free_port, pg_bindir
from harness.stack import BACKUP_PASSWORD, BUCKET, CONN_ID, DBNAME
from harness.synthetic import fingerprint
from tests.support.clusters import argv_recording_bindir
from tests.support.dags import all_xcom_text, run_dag, run_dag_in_child, task_states, xcom_values
from tests.support.s3 import objects, plain_store

SERVER_USER = "postgres"


@pytest.fixture(autouse=True)
def _physical_backups_on(pgdr_env, monkeypatch):
    """The stack keeps physical backups off for the other tests; these turn them on (after pgdr_env)."""
    monkeypatch.setenv("AIRFLOW_VAR_PGDR_PHYSICAL_BACKUPS", "true")

# the stack configures no file directories or configuration files: those branches skip
NO_FILES_OR_CONFIG = {f"backup.{task}[0]": "skipped"
                      for task in ("files_backup", "seal_files", "config_backup", "seal_config")}


def _lsn(text: str) -> int:
    high, low = text.split("/")
    return (int(high, 16) << 32) | int(low, 16)


@pytest.fixture(scope="module")
def base_run(stack, airflow_db, tmp_path_factory):
    """One successful run of pg_backup_daily with physical backups on (the product default)."""
    work = tmp_path_factory.mktemp("base_run")
    argv_log = work / "argv.log"
    env = stack.airflow_env()
    env.update({
        "AIRFLOW_VAR_PGDR_STAGING_DIR": str(work / "staging"),
        "AIRFLOW_VAR_PGDR_S3_PREFIX": "base-e2e",
        "AIRFLOW_VAR_PGDR_PG_BINDIR": str(argv_recording_bindir(work / "bin", argv_log)),
        "AIRFLOW_VAR_PGDR_MULTIPART_CHUNK_MB": "5",  # the tar goes up in parts
        "AIRFLOW_VAR_PGDR_PHYSICAL_BACKUPS": "true",
    })
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        stack.slack.clear()
        dag_run, output = run_dag_in_child("pg_backup_daily")
        states = task_states(dag_run)
        (seal,) = xcom_values(dag_run, "backup.seal_base") or [None]
        xcom_text = all_xcom_text(dag_run)
    manifest = None
    if seal:
        body = stack.s3.client().get_object(Bucket=BUCKET, Key=seal["manifest_key"])["Body"].read()
        manifest = json.loads(body)
    return {"dag_run": dag_run, "states": states, "seal": seal, "manifest": manifest, "output": output,
            "argv": argv_log.read_text() if argv_log.exists() else "", "xcom": xcom_text,
            "staging": work / "staging", "alerts": stack.slack.texts()}


def test_both_branches_succeed(base_run):
    assert str(base_run["dag_run"].state) == "success", base_run["states"]
    assert base_run["states"] == {
        "protected_databases": "success",
        "backup.dump_and_upload[0]": "success",
        "backup.verify_and_seal[0]": "success",
        "backup.base_backup[0]": "success",
        "backup.seal_base[0]": "success",
        **NO_FILES_OR_CONFIG,
    }
    assert base_run["alerts"] == []


def test_the_manifest_describes_a_base_backup_of_the_source_cluster(stack, base_run):
    manifest = base_run["manifest"]
    assert manifest["kind"] == "base" and manifest["database"] == CONN_ID and manifest["dbname"] == DBNAME
    assert manifest["row_counts"] == {}
    assert manifest["server_version_num"] // 10000 == 15
    ((system_identifier,),) = stack.cluster.execute("SELECT system_identifier::text FROM pg_control_system()")
    assert manifest["system_identifier"] == system_identifier
    assert manifest["wal"]["system_identifier"] == system_identifier
    assert set(manifest["tool_versions"]) >= {"pg_basebackup", "pg_verifybackup", "pgdr", "zstandard"}
    assert manifest["dump"]["format"] == "pg_basebackup plain -> tar.zst" and manifest["dump"]["level"] == 1
    assert manifest["dump"]["label"] == f"pgdr-{manifest['backup_id']}"
    roles = {obj["role"]: obj for obj in manifest["objects"]}
    assert set(roles) == {"base_tar", "backup_manifest"}
    tar = roles["base_tar"]
    assert tar["name"] == "data.tar.zst" and tar["compression"] == "zstd"
    assert tar["raw_size"] == manifest["dump"]["raw_size"] > tar["size"]
    assert roles["backup_manifest"]["compression"] == "none"
    assert manifest["encryption"]["sse"] == "AES256"
    # PostgreSQL 15: always a full, saying why (the chain fields of docs/backup-format.md)
    assert manifest["depends_on"] is None and manifest["dump"]["backup_type"] == "full"
    assert manifest["dump"]["chain"] == [] and "PostgreSQL 15" in manifest["dump"]["backup_type_reason"]


def test_objects_are_encrypted_and_match_the_manifest_hashes(stack, base_run):
    manifest = base_run["manifest"]
    client = stack.s3.client()
    prefix = f"base-e2e/{CONN_ID}/base/{manifest['backup_id']}/"
    assert set(objects(stack.s3.client(), prefix)) == {prefix + "data.tar.zst", prefix + "backup_manifest",
                                               prefix + "manifest.json"}
    for obj in manifest["objects"]:
        assert obj["key"] == prefix + obj["name"]
        response = client.get_object(Bucket=BUCKET, Key=obj["key"])
        body = response["Body"].read()
        assert hashlib.sha256(body).hexdigest() == obj["sha256"], obj["key"]
        assert len(body) == obj["size"]
        assert response["ServerSideEncryption"] == "AES256", obj["key"]
        assert response["Metadata"]["sha256"] == obj["sha256"]
    assert client.head_object(Bucket=BUCKET, Key=prefix + "manifest.json")["ServerSideEncryption"] == "AES256"


def test_the_wal_range_is_sane_and_agrees_with_pg_basebackups_manifest(stack, base_run):
    manifest = base_run["manifest"]
    wal = manifest["wal"]
    assert _lsn(wal["start_lsn"]) <= _lsn(wal["end_lsn"])
    ((current,),) = stack.cluster.execute("SELECT pg_current_wal_lsn()::text")
    assert _lsn(wal["end_lsn"]) <= _lsn(current)
    ((timeline,),) = stack.cluster.execute("SELECT timeline_id FROM pg_control_checkpoint()")
    assert wal["timeline"] == timeline
    for name in ("start_wal_file", "end_wal_file"):
        assert re.fullmatch(r"[0-9A-F]{24}", wal[name]), wal
    assert wal["start_wal_file"] <= wal["end_wal_file"]
    ((start_file,),) = stack.cluster.execute("SELECT pg_walfile_name(%s::pg_lsn)", params=(wal["start_lsn"],))
    assert wal["start_wal_file"] == start_file
    key = next(o["key"] for o in manifest["objects"] if o["role"] == "backup_manifest")
    ranges = json.loads(stack.s3.client().get_object(Bucket=BUCKET, Key=key)["Body"].read())["WAL-Ranges"]
    assert (ranges[0]["Start-LSN"], ranges[-1]["End-LSN"]) == (wal["start_lsn"], wal["end_lsn"])


def test_the_stored_backup_passes_the_verification_format_check(stack, base_run):
    from pgdr.verify.backups import VERIFIED_KINDS, verify_backup
    from pgdr.verify.formats import FORMAT_CHECKS

    assert "base" in VERIFIED_KINDS
    manifest = base_run["manifest"]
    store = plain_store(stack.s3.client(), "base-e2e")
    problems, _ = verify_backup(store, CONN_ID, "base", manifest["backup_id"], pg_bindir(), logging.getLogger("t"))
    assert problems == []
    # a manifest whose WAL range is not the backup's is caught by the cheap check
    from pgdr.store.manifest import Manifest

    altered = Manifest.from_dict(manifest)
    altered.wal = {**altered.wal, "end_lsn": "FF/0"}
    prefix = manifest["objects"][0]["key"].rsplit("/", 1)[0]
    check = FORMAT_CHECKS["base"][0]  # the cheap one; pg_verifybackup on the unpacked tar follows it
    assert [c.__name__ for c in FORMAT_CHECKS["base"]] == ["base_manifest_check", "base_chain_check",
                                                          "base_verifybackup_check"]
    found = check(store, altered, prefix, pg_bindir(), logging.getLogger("t"))
    assert [p["problem"] for p in found] == ["backup_manifest WAL range differs from the manifest's"]


def _as_server_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", SERVER_USER, "--", *argv] if os.geteuid() == 0 else argv


def _chown_tree(path: Path) -> None:
    if os.geteuid() != 0:
        return
    entry = pwd.getpwnam(SERVER_USER)
    for root, dirs, files in os.walk(path):
        for name in [root, *(os.path.join(root, n) for n in dirs + files)]:
            os.lchown(name, entry.pw_uid, entry.pw_gid)


def test_the_tar_unpacks_verifies_starts_and_holds_the_same_tables(stack, base_run):
    import zstandard

    manifest = base_run["manifest"]
    tar_obj = next(o for o in manifest["objects"] if o["role"] == "base_tar")
    body = stack.s3.client().get_object(Bucket=BUCKET, Key=tar_obj["key"])["Body"].read()
    assert hashlib.sha256(body).hexdigest() == tar_obj["sha256"]

    base_dir = Path(tempfile.mkdtemp(prefix="pgdr-base-restore-"))
    restored = PgCluster(base_dir=base_dir, port=free_port())
    try:
        archive = base_dir / "data.tar"
        with open(archive, "wb") as handle:
            zstandard.ZstdDecompressor().copy_stream(__import__("io").BytesIO(body), handle)
        assert archive.stat().st_size == tar_obj["raw_size"]
        restored.data_dir.mkdir(mode=0o700)
        restored.socket_dir.mkdir()
        _chown_tree(base_dir)
        archive.chmod(0o644)
        subprocess.run(_as_server_user(["tar", "-x", "-f", str(archive), "-C", str(restored.data_dir)]),
                       check=True, capture_output=True)
        archive.unlink()
        verified = subprocess.run(_as_server_user([str(pg_bindir() / "pg_verifybackup"), str(restored.data_dir)]),
                                  capture_output=True, text=True, check=False)
        assert verified.returncode == 0, verified.stderr
        (restored.data_dir / "postmaster.pid").unlink(missing_ok=True)
        with open(restored.data_dir / "postgresql.auto.conf", "a") as conf:
            conf.write(f"\n# restored copy\nport = {restored.port}\nlisten_addresses = '127.0.0.1'\n"
                       f"unix_socket_directories = '{restored.socket_dir}'\n")
        restored.start()
        assert fingerprint(restored, DBNAME) == fingerprint(stack.cluster, DBNAME)
        ((system_identifier,),) = restored.execute("SELECT system_identifier::text FROM pg_control_system()")
        assert system_identifier == manifest["system_identifier"]
    finally:
        restored.destroy()


def test_progress_logged_no_password_anywhere_and_the_tar_kept_locally(base_run):
    output = base_run["output"]
    assert "pg_basebackup done:" in output and "tar + zstd -1 done:" in output
    assert "pg_verifybackup: backup successfully verified" in output
    assert "pg_basebackup --pgdata=" in base_run["argv"] and "--no-password" in base_run["argv"]
    assert "pg_verifybackup " in base_run["argv"]
    for where in ("argv", "output", "xcom"):
        assert BACKUP_PASSWORD not in base_run[where], f"password leaked into {where}"
    copy = base_run["staging"] / CONN_ID / "base" / base_run["seal"]["backup_id"]
    assert sorted(p.name for p in copy.iterdir()) == ["backup_manifest", "data.tar.zst"]
    assert not list(copy.parent.glob("*.partial"))


def test_the_base_backup_asset_event_names_the_backup(base_run):
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.settings import Session

    seal = base_run["seal"]
    events = (Session().query(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
              .filter(AssetModel.name == "pgdr_base_backup",
                      AssetEvent.source_run_id == base_run["dag_run"].run_id).all())
    assert [event.extra for event in events] == [{
        "database": CONN_ID, "kind": "base", "backup_id": seal["backup_id"],
        "manifest_key": seal["manifest_key"], "bucket": BUCKET, "size": seal["size"]}]


# --- failures and the switch ------------------------------------------------------------------


def _corrupting_bindir(directory: Path) -> Path:
    """A bindir whose pg_basebackup runs the real one, then flips a byte in the copy's largest data file."""
    directory.mkdir(parents=True, exist_ok=True)
    real = pg_bindir()
    for tool in real.iterdir():
        script = directory / tool.name
        script.write_text(f'#!/bin/sh\nexec "{tool}" "$@"\n')
        script.chmod(0o755)
    flip = directory / "flip_byte.py"
    flip.write_text(
        "import sys\nfrom pathlib import Path\n"
        "pgdata = next((a.split('=', 1)[1] for a in sys.argv[1:] if a.startswith('--pgdata=')), None)\n"
        "if pgdata is None:\n    sys.exit(0)\n"
        "victim = max((p for p in Path(pgdata, 'base').rglob('*') if p.is_file()), key=lambda p: p.stat().st_size)\n"
        "data = bytearray(victim.read_bytes())\n"
        "data[len(data) // 2] ^= 0xFF\n"
        "victim.write_bytes(bytes(data))\n")
    (directory / "pg_basebackup").write_text(
        f'#!/bin/sh\n"{real}/pg_basebackup" "$@" || exit $?\nexec "{sys.executable}" "{flip}" "$@"\n')
    return directory


def test_a_copy_pg_verifybackup_rejects_fails_the_task_and_uploads_nothing(stack, airflow_db, pgdr_env,
                                                                          monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW_VAR_PGDR_PG_BINDIR", str(_corrupting_bindir(tmp_path / "bin")))
    dag_run = run_dag("pg_backup_daily")
    assert str(dag_run.state) == "failed"
    states = task_states(dag_run)
    assert states["backup.base_backup[0]"] == "failed"
    assert states["backup.seal_base[0]"] == "upstream_failed"
    assert states["backup.verify_and_seal[0]"] == "success", "the logical branch does not depend on the base one"
    prefix = pgdr_env["AIRFLOW_VAR_PGDR_S3_PREFIX"]
    assert objects(stack.s3.client(), f"{prefix}/{CONN_ID}/base/") == {}
    assert [k for k in objects(stack.s3.client(), f"{prefix}/{CONN_ID}/logical/") if k.endswith("/manifest.json")]
    posts = stack.slack.wait_for(1)
    text = json.dumps(posts[-1]["payload"]) if posts else ""
    assert "backup.base_backup" in text and "pg_verifybackup rejected the base backup copy" in text, text
    assert "nothing was uploaded" in text
    staging = Path(pgdr_env["AIRFLOW_VAR_PGDR_STAGING_DIR"]) / CONN_ID / "base"
    assert not staging.exists() or list(staging.iterdir()) == []


def test_physical_backups_off_skips_the_base_branch_and_still_seals_the_logical_one(stack, airflow_db, pgdr_env,
                                                                                     monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_PGDR_PHYSICAL_BACKUPS", "false")
    dag_run, output = run_dag_in_child("pg_backup_daily")
    assert str(dag_run.state) == "success"
    assert task_states(dag_run) == {
        "protected_databases": "success",
        "backup.dump_and_upload[0]": "success",
        "backup.verify_and_seal[0]": "success",
        "backup.base_backup[0]": "skipped",
        "backup.seal_base[0]": "skipped",
        **NO_FILES_OR_CONFIG,
    }
    assert "physical backups are off (pgdr_physical_backups=false)" in output
    prefix = pgdr_env["AIRFLOW_VAR_PGDR_S3_PREFIX"]
    assert objects(stack.s3.client(), f"{prefix}/{CONN_ID}/base/") == {}
    assert [k for k in objects(stack.s3.client(), f"{prefix}/{CONN_ID}/logical/") if k.endswith("/manifest.json")]
    assert stack.slack.texts() == []
    # freshness demands a base backup only while physical backups are on
    from pgdr.verify.backups import check_freshness, freshness_kinds

    store = plain_store(stack.s3.client(), prefix)
    assert check_freshness(store, CONN_ID, 25, kinds=freshness_kinds(False))["status"] == "ok"
    demanded = check_freshness(store, CONN_ID, 25, kinds=freshness_kinds(True))
    assert demanded["status"] == "failed" and "base: no complete, good backup" in demanded["summary"]
