"""pg_backup_daily end to end on real services: PostgreSQL 15, moto's S3 server, a Slack receiver.

Effects are checked independently of pgdr's code: objects are fetched with a plain
boto3 client and hashed, and the dump is restored with the bare PostgreSQL tools
into a brand-new cluster.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest

from harness.pg_cluster import start_cluster
from harness.stack import BACKUP_PASSWORD, BUCKET, CONN_ID, DBNAME, postgres_conn
from harness.synthetic import fingerprint, owners_and_grants
from harness.tcp_proxy import TcpProxy
from tests.support.clusters import argv_recording_bindir, restore_by_hand
from tests.support.dags import all_xcom_text, run_dag, run_dag_in_child, task_states, xcom_values
from tests.support.s3 import download_backup, objects


def _manifests(s3, prefix: str) -> list[str]:
    return [key for key in objects(s3.client(), prefix) if key.endswith("/manifest.json")]


@pytest.fixture(scope="module")
def backup_run(stack, airflow_db, tmp_path_factory):
    """One successful run of pg_backup_daily, observed through a recording proxy in front of S3."""
    work = tmp_path_factory.mktemp("backup_run")
    argv_log = work / "argv.log"
    proxy = TcpProxy(stack.s3.port)
    env = stack.airflow_env(s3_endpoint=proxy.endpoint_url)
    env.update({
        "AIRFLOW_VAR_PGDR_STAGING_DIR": str(work / "staging"),
        "AIRFLOW_VAR_PGDR_S3_PREFIX": "e2e",
        "AIRFLOW_VAR_PGDR_PHYSICAL_BACKUPS": "true",
        "AIRFLOW_VAR_PGDR_PG_BINDIR": str(argv_recording_bindir(work / "bin", argv_log)),
    })
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        stack.slack.clear()
        dag_run, output = run_dag_in_child("pg_backup_daily")
        states = task_states(dag_run)
        seal = xcom_values(dag_run, "backup.verify_and_seal")
        dump = xcom_values(dag_run, "backup.dump_and_upload")
        xcom_text = all_xcom_text(dag_run)
    proxy.stop()
    yield {
        "dag_run": dag_run, "states": states, "seal": seal, "dump": dump, "output": output,
        "argv": argv_log.read_text() if argv_log.exists() else "", "requests": list(proxy.requests),
        "staging": work / "staging", "xcom": xcom_text, "alerts": stack.slack.texts(),
    }


def test_run_succeeds_for_every_protected_database(backup_run):
    assert str(backup_run["dag_run"].state) == "success", backup_run["states"]
    assert backup_run["states"] == {
        "protected_databases": "success",
        "backup.dump_and_upload[0]": "success",
        "backup.verify_and_seal[0]": "success",
        "backup.base_backup[0]": "success",
        "backup.seal_base[0]": "success",
        # nothing in pgdr_file_dirs / pgdr_config_files for it: skipped, with the reason in the log
        "backup.files_backup[0]": "skipped",
        "backup.seal_files[0]": "skipped",
        "backup.config_backup[0]": "skipped",
        "backup.seal_config[0]": "skipped",
    }
    assert backup_run["alerts"] == []
    assert "no files backup of care_commons_db: pgdr_file_dirs lists nothing for it" in backup_run["output"]
    assert "no config backup of care_commons_db: pgdr_config_files lists nothing for it" in backup_run["output"]


def _manifest(stack, backup_run) -> dict:
    (seal,) = backup_run["seal"]
    body = stack.s3.client().get_object(Bucket=BUCKET, Key=seal["manifest_key"])["Body"].read()
    return json.loads(body)


def test_manifest_describes_the_backup(stack, backup_run):
    manifest = _manifest(stack, backup_run)
    assert manifest["kind"] == "logical" and manifest["database"] == CONN_ID and manifest["dbname"] == DBNAME
    assert manifest["server_version_num"] // 10000 == 15
    assert manifest["system_identifier"].isdigit()
    assert manifest["started_at"] <= manifest["finished_at"]
    assert set(manifest["tool_versions"]) >= {"pg_dump", "pg_dumpall", "pg_restore", "pgdr"}
    # exact row counts, from the snapshot the dump used, for every table
    assert manifest["row_counts"] == {table: count for table, count in stack.row_counts.items()}
    roles = {obj["role"] for obj in manifest["objects"]}
    assert roles == {"toc", "table_data", "globals"}
    assert manifest["encryption"]["sse"] == "AES256"
    prefix = f"e2e/{CONN_ID}/logical/{manifest['backup_id']}/"
    assert all(obj["key"].startswith(prefix) for obj in manifest["objects"])


def test_every_object_matches_its_manifest_hash_and_is_encrypted(stack, backup_run):
    manifest = _manifest(stack, backup_run)
    client = stack.s3.client()
    prefix = f"e2e/{CONN_ID}/logical/{manifest['backup_id']}/"
    stored = objects(stack.s3.client(), prefix)
    assert set(stored) == {obj["key"] for obj in manifest["objects"]} | {prefix + "manifest.json"}
    for obj in manifest["objects"]:
        response = client.get_object(Bucket=BUCKET, Key=obj["key"])
        body = response["Body"].read()
        assert hashlib.sha256(body).hexdigest() == obj["sha256"], obj["key"]
        assert len(body) == obj["size"]
        assert response["ServerSideEncryption"] == "AES256", obj["key"]
        assert response["Metadata"]["sha256"] == obj["sha256"]
    head = client.head_object(Bucket=BUCKET, Key=prefix + "manifest.json")
    assert head["ServerSideEncryption"] == "AES256"


def test_manifest_is_the_last_object_written(stack, backup_run):
    manifest = _manifest(stack, backup_run)
    # the base backup is sealed by its own branch, under its own prefix
    logical_prefix = f"/{BUCKET}/e2e/{CONN_ID}/logical/{manifest['backup_id']}/"
    writes = [(t, method, path) for t, method, path in backup_run["requests"]
              if method in ("PUT", "POST") and path.startswith(logical_prefix)]
    assert writes, "the recording proxy saw no writes"
    manifest_writes = [i for i, (_, _, path) in enumerate(writes) if path.split("?")[0].endswith("/manifest.json")]
    assert manifest_writes == [len(writes) - 1], writes[-3:]
    object_paths = {f"/{BUCKET}/{obj['key']}" for obj in manifest["objects"]}
    written = {path.split("?")[0] for _, _, path in writes[:-1]}
    assert object_paths <= written


def test_restore_into_a_brand_new_cluster_gives_identical_tables_owners_and_grants(stack, backup_run, tmp_path):
    manifest = _manifest(stack, backup_run)
    files = download_backup(stack.s3.client(), BUCKET, manifest, tmp_path / "download")
    globals_sql = (files / "globals.sql").read_text()
    assert "CREATE ROLE care_commons_app" in globals_sql
    assert "SCRAM-SHA-256$" not in globals_sql and "PASSWORD 'md5" not in globals_sql, "password hashes dumped"
    with start_cluster() as fresh:
        existing = {row[0] for row in fresh.execute("SELECT rolname FROM pg_roles")}
        assert "care_commons_app" not in existing
        restore_by_hand(fresh, files)
        restored = fingerprint(fresh, DBNAME)
        assert restored == fingerprint(stack.cluster, DBNAME)
        assert owners_and_grants(fresh, DBNAME) == owners_and_grants(stack.cluster, DBNAME)
        assert {table: restored[table][0] for table in manifest["row_counts"]} == manifest["row_counts"]


def test_asset_event_names_the_backup(backup_run):
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.settings import Session

    (seal,) = backup_run["seal"]
    events = (Session().query(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
              .filter(AssetModel.name == "pgdr_logical_backup",
                      AssetEvent.source_run_id == backup_run["dag_run"].run_id).all())
    assert [event.extra for event in events] == [{
        "database": CONN_ID, "kind": "logical", "backup_id": seal["backup_id"],
        "manifest_key": seal["manifest_key"], "bucket": BUCKET, "size": seal["size"],
    }]


def test_progress_is_logged_and_the_staging_copy_kept(backup_run):
    output = backup_run["output"]
    assert "pg_dump + zstd done:" in output and "MB/s" in output
    assert "upload to s3://" in output
    (seal,) = backup_run["seal"]
    copy = backup_run["staging"] / CONN_ID / "logical" / seal["backup_id"]
    assert (copy / "dump" / "toc.dat").exists()
    assert not list(copy.parent.glob("*.partial"))


def test_no_password_in_argv_logs_or_xcom(backup_run):
    assert "pg_dump --format=directory" in backup_run["argv"], "the argv recorder saw no pg_dump"
    for where in ("argv", "output", "xcom"):
        assert BACKUP_PASSWORD not in backup_run[where], f"password leaked into {where}"
    assert "PGPASSWORD" not in backup_run["argv"]


# --- failures -------------------------------------------------------------------------------


def _phi_samples(stack) -> list[str]:
    rows = stack.cluster.execute(
        "SELECT last_name, ssn, date_of_birth::text FROM clients WHERE ssn IS NOT NULL LIMIT 20", dbname=DBNAME)
    return [value for row in rows for value in row if value and len(value) >= 6]


def _assert_failure_alert(stack, needle: str) -> str:
    posts = stack.slack.wait_for(1)
    assert posts, "no Slack alert was received"
    texts = [json.dumps(post["payload"]) for post in posts]
    for text in texts:  # the base backup branch may alert too: none may carry row data or the password
        leaked = [value for value in _phi_samples(stack) if value in text]
        assert not leaked, f"row data in the alert: {leaked}"
        assert BACKUP_PASSWORD not in text
    about_dump = [text for text in texts if "backup.dump_and_upload" in text]
    assert about_dump, texts
    text = about_dump[-1]
    assert "pg_backup_daily" in text and CONN_ID in text
    assert needle in text, text
    assert "/dags/pg_backup_daily/runs/" in text, "the alert carries no log link"
    return text


def test_s3_down_during_upload_fails_leaves_no_manifest_and_alerts(stack, airflow_db, pgdr_env, monkeypatch,
                                                                    tmp_path):
    proxy = TcpProxy(stack.s3.port, cut_after_bytes=300_000)
    s3_conn = json.loads(pgdr_env["AIRFLOW_CONN_BACKUP_S3"])
    s3_conn["extra"]["endpoint_url"] = proxy.endpoint_url
    monkeypatch.setenv("AIRFLOW_CONN_BACKUP_S3", json.dumps(s3_conn))
    monkeypatch.setenv("AIRFLOW_VAR_PGDR_MULTIPART_CHUNK_MB", "5")
    dag_run = run_dag("pg_backup_daily")
    proxy.stop()
    assert proxy.cut.is_set(), "the endpoint never went down: the dump was smaller than the cut"
    assert str(dag_run.state) == "failed"
    assert task_states(dag_run)["backup.dump_and_upload[0]"] == "failed"
    prefix = pgdr_env["AIRFLOW_VAR_PGDR_S3_PREFIX"]
    assert _manifests(stack.s3, prefix) == []
    _assert_failure_alert(stack, "endpoint")
    staging = Path(pgdr_env["AIRFLOW_VAR_PGDR_STAGING_DIR"]) / CONN_ID / "logical"
    assert not staging.exists() or list(staging.iterdir()) == []


def test_wrong_password_fails_clearly_without_leaking_it(stack, airflow_db, pgdr_env, monkeypatch):
    wrong = "Wrong-Pass-Zebra-4711"
    monkeypatch.setenv("AIRFLOW_CONN_CARE_COMMONS_DB", postgres_conn(stack.cluster, password=wrong))
    dag_run, output = run_dag_in_child("pg_backup_daily")
    assert str(dag_run.state) == "failed"
    alert = _assert_failure_alert(stack, "password authentication failed")
    assert wrong not in alert
    assert wrong not in output
    assert "password authentication failed" in output
    assert wrong not in all_xcom_text(dag_run)
    assert _manifests(stack.s3, pgdr_env["AIRFLOW_VAR_PGDR_S3_PREFIX"]) == []


def test_a_second_backup_of_the_same_database_is_refused_while_one_runs(stack, airflow_db, pgdr_env):
    from pgdr.backup.pg_dump import LOCK_KEYS

    holder = stack.cluster.connect(DBNAME)
    try:
        with holder.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(%s, %s)", LOCK_KEYS)
        dag_run = run_dag("pg_backup_daily")
    finally:
        holder.close()
    assert str(dag_run.state) == "failed"
    _assert_failure_alert(stack, "another pgdr backup")
    # the base backup takes its own lock and may run beside a logical one
    assert objects(stack.s3.client(), f"{pgdr_env['AIRFLOW_VAR_PGDR_S3_PREFIX']}/{CONN_ID}/logical/") == {}


def test_a_role_that_cannot_see_every_row_is_refused(stack, airflow_db, pgdr_env, monkeypatch):
    stack.cluster.execute(
        "DO $$ BEGIN IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'rls_bound') THEN "
        "CREATE ROLE rls_bound LOGIN PASSWORD 'rls-bound-pass' IN ROLE pg_read_all_data; END IF; END $$")
    monkeypatch.setenv("AIRFLOW_CONN_CARE_COMMONS_DB",
                       postgres_conn(stack.cluster, user="rls_bound", password="rls-bound-pass"))
    dag_run = run_dag("pg_backup_daily")
    assert str(dag_run.state) == "failed"
    _assert_failure_alert(stack, "BYPASSRLS")
    assert objects(stack.s3.client(), pgdr_env["AIRFLOW_VAR_PGDR_S3_PREFIX"]) == {}


def test_an_unprotected_connection_id_is_refused(stack, airflow_db, pgdr_env, monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_PGDR_DATABASES", '["care_commons_db", "not configured!"]')
    dag_run = run_dag("pg_backup_daily")
    assert str(dag_run.state) == "failed"
    assert task_states(dag_run)["protected_databases"] == "failed"
    posts = stack.slack.wait_for(1)
    assert posts and "pgdr_databases" in json.dumps(posts[-1]["payload"])
    assert objects(stack.s3.client(), pgdr_env["AIRFLOW_VAR_PGDR_S3_PREFIX"]) == {}
