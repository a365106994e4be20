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
