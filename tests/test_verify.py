"""pg_backup_verify end to end: a real backup in moto's S3, damaged in the ways that happen, and the
Slack alerts a team would act on.

Each test works on its own server-side copy of one real backup, under its own S3 prefix.
"""

from __future__ import annotations

import json

import pytest

from harness.pg_cluster import free_port
from harness.stack import BACKUP_PASSWORD, BUCKET, CONN_ID, DBNAME
from tests.support.dags import run_backup_daily, run_dag, run_dag_in_child, task_states, xcom_values

SSE = {"ServerSideEncryption": "AES256"}


@pytest.fixture(scope="module")
def source_backup(stack, airflow_db, tmp_path_factory):
    """One real backup made by pg_backup_daily, to copy from."""
    env = stack.airflow_env()
    env.update({"AIRFLOW_VAR_PGDR_S3_PREFIX": "verify-source",
                "AIRFLOW_VAR_PGDR_STAGING_DIR": str(tmp_path_factory.mktemp("verify-staging"))})
    (seal,) = run_backup_daily(env)
    return seal


@pytest.fixture()
def backup(stack, source_backup, pgdr_env):
    """A copy of the source backup under this test's prefix; returns its keys and manifest."""
    client = stack.s3.client()
    source_prefix = source_backup["manifest_key"].rsplit("/", 1)[0]
    prefix = f"{pgdr_env['AIRFLOW_VAR_PGDR_S3_PREFIX']}/{CONN_ID}/logical/{source_backup['backup_id']}"
    for obj in client.list_objects_v2(Bucket=BUCKET, Prefix=source_prefix + "/")["Contents"]:
        key = prefix + obj["Key"][len(source_prefix):]
        client.copy_object(Bucket=BUCKET, Key=key, CopySource={"Bucket": BUCKET, "Key": obj["Key"]},
                           MetadataDirective="COPY", ChecksumAlgorithm="SHA256", **SSE)
    manifest = json.loads(client.get_object(Bucket=BUCKET, Key=f"{prefix}/manifest.json")["Body"].read())
    return {"prefix": prefix, "manifest": manifest, "backup_id": source_backup["backup_id"]}


def _alerts(stack) -> list[str]:
    texts = stack.slack.texts()
    phi = [value for row in stack.cluster.execute(
        "SELECT last_name, ssn, date_of_birth::text FROM clients WHERE ssn IS NOT NULL LIMIT 20", dbname=DBNAME)
        for value in row if value and len(value) >= 6]
    for text in texts:
        assert not [value for value in phi if value in text], "row data in an alert"
        assert BACKUP_PASSWORD not in text and "pgdr-test-secret" not in text, "a secret in an alert"
    return texts


def _report(stack, pgdr_env) -> dict:
    client = stack.s3.client()
    keys = [o["Key"] for o in client.list_objects_v2(
        Bucket=BUCKET, Prefix=f"{pgdr_env['AIRFLOW_VAR_PGDR_S3_PREFIX']}/reports/verify/").get("Contents", [])]
    assert keys, "no verification report in S3"
    return json.loads(client.get_object(Bucket=BUCKET, Key=sorted(keys)[-1])["Body"].read())


def _marker(stack, backup) -> dict | None:
    client = stack.s3.client()
    try:
        return json.loads(client.get_object(Bucket=BUCKET, Key=f"{backup['prefix']}/verification.json")["Body"].read())
    except client.exceptions.NoSuchKey:
        return None


def test_a_good_backup_passes_every_check_and_the_report_is_written(stack, backup, pgdr_env):
    dag_run = run_dag("pg_backup_verify")
    assert str(dag_run.state) == "success", task_states(dag_run)
    report = _report(stack, pgdr_env)
    assert report["status"] == "ok" and report["database"] == CONN_ID
    assert {r["check"]: r["status"] for r in report["results"]} == {
        "freshness": "ok", "integrity": "ok", "deep_check": "ok", "bucket_posture": "ok",
        "wal": "ok"}  # physical backups are off in this module: nothing to check there
    (summary,) = xcom_values(dag_run, "verify.report")
    assert summary["status"] == "ok"
    assert _marker(stack, backup)["status"] == "good"
    assert _alerts(stack) == []


def test_a_flipped_byte_fails_integrity_marks_the_backup_bad_and_alerts_once(stack, backup, pgdr_env, monkeypatch):
    from pgdr.store.catalog import newest_good
    from pgdr.store.s3 import BackupStore

    client = stack.s3.client()
    victim = max((o for o in backup["manifest"]["objects"] if o["role"] == "table_data"), key=lambda o: o["size"])
    victim_key = f"{backup['prefix']}/{victim['name']}"
    body = bytearray(client.get_object(Bucket=BUCKET, Key=victim_key)["Body"].read())
    body[len(body) // 2] ^= 0x01
    client.put_object(Bucket=BUCKET, Key=victim_key, Body=bytes(body), Metadata={"sha256": victim["sha256"]}, **SSE)
    import hashlib

    found = hashlib.sha256(bytes(body)).hexdigest()

    dag_run = run_dag("pg_backup_verify")
    assert str(dag_run.state) == "failed"
    states = task_states(dag_run)
    assert states["verify.integrity[0]"] == "failed"
    assert states["verify.report[0]"] == "failed"
    (alert,) = [text for text in _alerts(stack) if "integrity" in text]
    assert victim_key in alert and victim["sha256"] in alert and found in alert
    assert "RUNBOOK_DISASTER_RECOVERY.md#verification-integrity-failed" in alert
    assert "/tasks/verify.integrity/" in alert, "the alert should link to the failing check's log"
    assert _marker(stack, backup)["status"] == "bad"
    assert _report(stack, pgdr_env)["status"] == "failed"

    # a restore would skip it: the catalog offers no good backup now
    store = BackupStore(client=client, bucket=BUCKET, prefix=pgdr_env["AIRFLOW_VAR_PGDR_S3_PREFIX"],
                        sse_args=SSE, part_size=64 << 20, log=__import__("logging").getLogger("t"))
    assert newest_good(store.catalog(CONN_ID, "logical")) is None

    # the same failure again: not re-posted; with the reminder interval passed: a reminder
    stack.slack.clear()
    assert str(run_dag("pg_backup_verify").state) == "failed"
    assert [t for t in _alerts(stack) if "integrity" in t] == []
    monkeypatch.setenv("AIRFLOW_VAR_PGDR_ALERT_REMINDER_HOURS", "0.0001")
    run_dag("pg_backup_verify")
    assert any("still failing" in t and "integrity" in t for t in _alerts(stack))


def test_a_deleted_manifest_makes_the_backup_incomplete_and_fails_freshness(stack, backup, pgdr_env):
    stack.s3.client().delete_object(Bucket=BUCKET, Key=f"{backup['prefix']}/manifest.json")
    dag_run = run_dag("pg_backup_verify")
    assert str(dag_run.state) == "failed"
    assert task_states(dag_run)["verify.freshness[0]"] == "failed"
    (alert,) = [text for text in _alerts(stack) if "freshness" in text]
    assert "no complete, good backup" in alert and backup["backup_id"] in alert


def test_a_stale_backup_raises_a_freshness_alert_with_its_age(stack, backup, pgdr_env, monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_PGDR_FRESHNESS_HOURS", "0.0001")
    dag_run = run_dag("pg_backup_verify")
    assert str(dag_run.state) == "failed"
    (alert,) = [text for text in _alerts(stack) if "freshness" in text]
    assert backup["backup_id"] in alert and " h old (limit 0.0001 h)" in alert


def test_an_unencrypted_object_slipped_into_the_backup_is_flagged(stack, backup, pgdr_env):
    client = stack.s3.client()
    client.delete_bucket_encryption(Bucket=BUCKET)
    try:
        client.put_object(Bucket=BUCKET, Key=f"{backup['prefix']}/dump/9999.dat.zst", Body=b"not ours")
    finally:
        client.put_bucket_encryption(Bucket=BUCKET, ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
    dag_run = run_dag("pg_backup_verify")
    assert str(dag_run.state) == "failed"
    (alert,) = [text for text in _alerts(stack) if "integrity" in text]
    assert "dump/9999.dat.zst" in alert and "unencrypted" in alert


def test_with_the_webhook_down_the_result_stays_failed_and_the_log_says_so(stack, backup, pgdr_env, monkeypatch):
    stack.s3.client().delete_object(Bucket=BUCKET, Key=f"{backup['prefix']}/manifest.json")
    dead = f"http://127.0.0.1:{free_port()}/services/T/B/X"
    monkeypatch.setenv("AIRFLOW_CONN_SLACK_ALERTS", json.dumps({"conn_type": "slackwebhook", "password": dead}))
    dag_run, output = run_dag_in_child("pg_backup_verify")
    assert str(dag_run.state) == "failed"
    assert "ALERT NOT DELIVERED" in output
    assert "the freshness alert for care_commons_db was not delivered; the verification result stands: FAILED" in output
    assert _report(stack, pgdr_env)["status"] == "failed"
    assert stack.slack.texts() == []


def test_a_missing_bucket_safeguard_is_reported(stack, backup, pgdr_env):
    client = stack.s3.client()
    client.delete_public_access_block(Bucket=BUCKET)
    try:
        dag_run = run_dag("pg_backup_verify")
    finally:
        client.put_public_access_block(Bucket=BUCKET, PublicAccessBlockConfiguration={
            "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True})
    assert str(dag_run.state) == "failed"
    assert task_states(dag_run)["verify.bucket_posture[0]"] == "failed"
    (alert,) = [text for text in _alerts(stack) if "bucket_posture" in text]
    assert "public_access_blocked not set" in alert


# --- PostgreSQL 18: the stored tar verified as stored, and incremental chains ----------------------------------

PG18_DB = "pg18_db"
FULL, INC1, INC2 = "20261201T010000Z", "20261202T010000Z", "20261203T010000Z"


@pytest.fixture(scope="module")
def pg18_chain(tmp_path_factory):
    """A full base backup of a PostgreSQL 18 cluster and two incrementals after it (each against the one before),
    on local disk, to publish under each test's own prefix."""
    from tests.support.pg18_backups import pg18_cluster, take_base_backup

    work = tmp_path_factory.mktemp("pg18_chain")
    with pg18_cluster() as cluster:
        full = take_base_backup(cluster, work / FULL)
        cluster.execute("UPDATE visits SET note = note || 'a' WHERE id % 50 = 0")
        inc1 = take_base_backup(cluster, work / INC1, parent_manifest=full / "backup_manifest")
        cluster.execute("UPDATE visits SET note = note || 'b' WHERE id % 70 = 0")
        inc2 = take_base_backup(cluster, work / INC2, parent_manifest=inc1 / "backup_manifest")
    return {FULL: full, INC1: inc1, INC2: inc2}


def _pg18_store(stack, pg18_chain, pieces=(FULL, INC1, INC2), replace: dict | None = None):
    """pgdr's store under a fresh prefix holding the chain (``replace``: a piece's local directory swapped)."""
    import os

    from tests.support.pg18_backups import publish
    from tests.support.s3 import plain_store

    store = plain_store(stack.s3.client(), f"t/{os.urandom(4).hex()}")
    order = [FULL, INC1, INC2]
    for backup_id in pieces:
        local = (replace or {}).get(backup_id, pg18_chain[backup_id])
        publish(store, PG18_DB, backup_id, local, chain=order[:order.index(backup_id)])
    return store


def _markers(store) -> dict:
    from pgdr.store.layout import backup_prefix, marker_key

    def status(backup_id: str) -> str | None:
        marker = store.read_json_or_none(marker_key(backup_prefix(store.prefix, PG18_DB, "base", backup_id)))
        return (marker or {}).get("status")

    return {i: status(i) for i in (FULL, INC1, INC2)}


def test_on_pg18_the_deep_check_verifies_every_piece_of_a_chain_as_stored(stack, pg18_chain, caplog):
    import logging

    from pgdr.verify.backups import check_integrity
    from tests.support.pg18_backups import bindir18

    store = _pg18_store(stack, pg18_chain)
    log = logging.getLogger("test_verify.pg18")
    with caplog.at_level(logging.INFO, logger="test_verify.pg18"):
        results = [check_integrity(store, PG18_DB, bindir18(), "run-1", log),                 # the newest: INC2
                   check_integrity(store, PG18_DB, bindir18(), "run-1", log, deep=True),      # the oldest unverified
                   check_integrity(store, PG18_DB, bindir18(), "run-1", log, deep=True)]      # the next
    assert [r["status"] for r in results] == ["ok", "ok", "ok"], [r["summary"] for r in results]
    assert [r["evidence"][0]["checked"] for r in results] == [[f"base/{INC2}"], [f"base/{FULL}"], [f"base/{INC1}"]]
    assert _markers(store) == {FULL: "good", INC1: "good", INC2: "good"}
    passed = [r.getMessage() for r in caplog.records if "pg_verifybackup passed on the stored tar" in r.getMessage()]
    assert len(passed) == 3 and sum("incremental" in m for m in passed) == 2
    chains = [r.getMessage() for r in caplog.records if "every piece of its chain" in r.getMessage()]
    assert any(f"{FULL}, {INC1}, {INC2}" in m for m in chains)


def test_on_pg18_a_stored_tar_whose_bytes_differ_from_the_verified_copy_is_marked_bad(stack, pg18_chain, tmp_path):
    """The object's hash is the manifest's (the bytes went up as packed), but a data file inside differs: only
    pg_verifybackup on the stored tar can tell, and it names the file."""
    import io
    import shutil
    import tarfile

    import zstandard

    from pgdr.verify.backups import check_integrity
    from tests.support.pg18_backups import bindir18

    plain = bytearray(zstandard.ZstdDecompressor().stream_reader(
        io.BytesIO((pg18_chain[FULL] / "data.tar.zst").read_bytes())).read())
    with tarfile.open(fileobj=io.BytesIO(bytes(plain))) as tar:
        member = next(m for m in tar if m.isfile() and m.name.startswith("base/") and m.size > 8192)
    plain[member.offset_data + 4096] ^= 0x10
    bad = tmp_path / FULL
    bad.mkdir()
    shutil.copyfile(pg18_chain[FULL] / "backup_manifest", bad / "backup_manifest")
    (bad / "data.tar.zst").write_bytes(zstandard.ZstdCompressor(level=1, write_checksum=True).compress(bytes(plain)))
    store = _pg18_store(stack, pg18_chain, pieces=(FULL, INC1), replace={FULL: bad})
    import logging

    found = check_integrity(store, PG18_DB, bindir18(), "run-2", logging.getLogger("t"), deep=True)
    assert found["status"] == "failed" and found["backup_id"] == FULL
    (problem,) = found["evidence"]
    assert problem["problem"] == "pg_verifybackup failed on the stored tar"
    assert problem["key"].endswith(f"/base/{FULL}/data.tar.zst") and member.name in problem["error"]
    assert _markers(store)[FULL] == "bad"


def test_on_pg18_an_incremental_whose_chain_lost_or_spoiled_a_piece_is_reported_with_the_ids(stack, pg18_chain):
    import logging

    from pgdr.store.layout import backup_prefix, marker_key
    from pgdr.verify.backups import check_integrity, verify_backup
    from tests.support.pg18_backups import bindir18

    store = _pg18_store(stack, pg18_chain)
    log = logging.getLogger("t")
    # the full's objects and manifest gone (a lifecycle rule, a hand deletion), the first incremental marked bad
    full_prefix = backup_prefix(store.prefix, PG18_DB, "base", FULL)
    store.delete_keys(store.list_keys(full_prefix + "/"))
    store.put_json(marker_key(backup_prefix(store.prefix, PG18_DB, "base", INC1)),
                   {"status": "bad", "verified_at": "2026-12-06T00:00:00+00:00", "check": "deep_check",
                    "problems": [{"problem": "sha256 mismatch"}], "run_id": "earlier"})
    problems, _ = verify_backup(store, PG18_DB, "base", INC2, bindir18(), log)
    assert [p["problem"] for p in problems] == [f"chain piece {FULL} is missing or incomplete (no manifest)",
                                                f"chain piece {INC1} is marked bad"]
    assert all(p["chain"] == [FULL, INC1, INC2] for p in problems)
    # the integrity check of the newest backup fails naming the missing full, and marks the incremental bad
    result = check_integrity(store, PG18_DB, bindir18(), "run-3", log)
    assert result["status"] == "failed" and FULL in result["summary"] and result["backup_id"] == INC2
    assert _markers(store)[INC2] == "bad"


def test_on_pg18_a_tar_pgdr_wrote_with_pax_headers_is_verified_the_unpacked_way(stack, pg18_chain, tmp_path, caplog):
    """Base backups of 18 taken before pgdr's tars were plain ustar carry a pax header per member, which
    PostgreSQL's tar reader refuses: they are still verified (unpacked, as on 15-17), not reported bad."""
    import io
    import logging
    import shutil
    import tarfile

    import zstandard

    from pgdr.core.compression import TarZstWriter
    from pgdr.verify.backups import verify_backup
    from tests.support.pg18_backups import bindir18

    old = tmp_path / FULL
    old.mkdir()
    shutil.copyfile(pg18_chain[FULL] / "backup_manifest", old / "backup_manifest")
    plain = zstandard.ZstdDecompressor().stream_reader(io.BytesIO((pg18_chain[FULL] / "data.tar.zst").read_bytes()))
    with tarfile.open(fileobj=io.BytesIO(plain.read())) as source, open(old / "data.tar.zst", "wb") as handle, \
            TarZstWriter(handle, 1) as writer:
        for member in source:
            member.mtime += 0.5   # tarfile writes a pax header for a sub-second mtime
            writer.add_stream(member, source.extractfile(member) if member.isfile() else None)
    store = _pg18_store(stack, pg18_chain, pieces=(FULL,), replace={FULL: old})
    with caplog.at_level(logging.INFO, logger="test_verify.pax"):
        problems, _ = verify_backup(store, PG18_DB, "base", FULL, bindir18(), logging.getLogger("test_verify.pax"))
    assert problems == []
    assert any("its tar has pax headers" in r.getMessage() for r in caplog.records)
    assert any(f"pg_verifybackup passed on base backup {FULL}" in r.getMessage() for r in caplog.records)
