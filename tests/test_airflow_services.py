"""pgdr through Airflow's own services and REST API v2, the way the team runs it.

api-server, scheduler (LocalExecutor), dag-processor and triggerer run as child processes on
127.0.0.1 (harness/airflow_services.py); everything below goes through HTTP with a JWT from
/auth/token: the DAGs are listed, unpaused and triggered, runs are followed to the end, and the
effects are checked from outside Airflow (the manifest in S3 with a plain boto3 client, the restored
rows with the harness's own queries, the Slack receiver's record). pg_backup_daily carries a
deadline of 9 seconds here and its run is held back by a table lock for 20 seconds (a long
migration, say), so on any machine it misses the deadline and the triggerer posts the alert for real.
"""

from __future__ import annotations

import json
import os
import threading
import time
from contextlib import contextmanager
from dataclasses import dataclass

import pytest

from harness.airflow_services import (
    USERNAME,
    AirflowServices,
    ApiClient,
    start_airflow_services,
    trigger,
    wait_for_dags,
    wait_for_run,
)
from harness.s3_server import SECRET_KEY
from harness.stack import BACKUP_PASSWORD, BUCKET, CONN_ID, DBNAME, RESTORE_PASSWORD
from harness.synthetic import fingerprint

pytestmark = pytest.mark.slow

RUN_TIMEOUT = 240
RESTORED_DB = "cc_restored_via_api"
LOCK_SECONDS = 20


@dataclass
class Deployment:
    services: AirflowServices
    api: ApiClient
    prefix: str


@pytest.fixture(scope="module")
def airflow(stack, tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow-services")
    prefix = f"api/{os.urandom(4).hex()}"
    env = stack.airflow_env()
    env.update({
        "AIRFLOW_VAR_PGDR_STAGING_DIR": str(home / "staging"),
        "AIRFLOW_VAR_PGDR_S3_PREFIX": prefix,
        # 9 seconds: every backup run outlives it, so the deadline is missed for real
        "AIRFLOW_VAR_PGDR_BACKUP_DEADLINE_MINUTES": "0.15",
    })
    services = start_airflow_services(home, env)
    try:
        api = services.api()
        wait_for_dags(services, api, {"pg_backup_daily", "pg_restore"})
        yield Deployment(services, api, prefix)
    finally:
        services.stop()
        stack.cluster.execute(f"DROP DATABASE IF EXISTS {RESTORED_DB} WITH (FORCE)")


@contextmanager
def _table_locked(cluster, table: str, seconds: float):
    """An ACCESS EXCLUSIVE lock on ``table`` for ``seconds`` from entry: the backup waits for it."""
    locked, failed = threading.Event(), []

    def hold():
        conn = cluster.connect(DBNAME, autocommit=False)
        try:
            with conn.cursor() as cur:
                cur.execute(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
                locked.set()
                time.sleep(seconds)
            conn.rollback()
        except Exception as err:  # noqa: BLE001 - reported by the caller
            failed.append(err)
            locked.set()
        finally:
            conn.close()

    holder = threading.Thread(target=hold, daemon=True)
    holder.start()
    locked.wait(30)
    assert not failed, failed
    try:
        yield
    finally:
        holder.join(seconds + 30)


@pytest.fixture(scope="module")
def backup_run(airflow, stack):
    """pg_backup_daily unpaused and triggered through the API while a table is locked, followed to success."""
    services, api = airflow.services, airflow.api
    stack.slack.clear()
    source = fingerprint(stack.cluster, DBNAME)
    with _table_locked(stack.cluster, "public.visits", LOCK_SECONDS):
        started = time.monotonic()
        run_id = trigger(api, "pg_backup_daily", {})
        outcome = wait_for_run(services, api, "pg_backup_daily", run_id, timeout=RUN_TIMEOUT)
    assert time.monotonic() - started >= LOCK_SECONDS - 1, "the backup did not wait for the lock"
    seal = api.get(f"/api/v2/dags/pg_backup_daily/dagRuns/{run_id}/taskInstances/backup.verify_and_seal"
                   f"/xcomEntries/return_value", params={"map_index": 0})["value"]
    return {"run_id": run_id, "source": source, "seal": seal, **outcome}


def _seal(backup_run) -> dict:
    """verify_and_seal's XCom as the API returns it: the stored JSON, decoded when it comes as text."""
    seal = backup_run["seal"]
    return json.loads(seal) if isinstance(seal, str) else seal


def test_backup_triggered_through_the_api_succeeds_and_leaves_a_manifest_in_s3(airflow, stack, backup_run):
    assert backup_run["run"]["run_type"] == "manual" and backup_run["run"]["triggered_by"] == "rest_api"
    assert backup_run["states"]["backup.verify_and_seal[0]"] == "success"
    dag = airflow.api.get("/api/v2/dags/pg_backup_daily")
    assert dag["is_paused"] is False
    seal = _seal(backup_run)
    key = f"{airflow.prefix}/{CONN_ID}/logical/{seal['backup_id']}/manifest.json"
    manifest = json.loads(stack.s3.client().get_object(Bucket=BUCKET, Key=key)["Body"].read())
    assert manifest["backup_id"] == seal["backup_id"] and manifest["database"] == CONN_ID
    assert {name: counts[0] for name, counts in backup_run["source"].items()} == manifest["row_counts"]


def test_a_missed_deadline_posts_to_slack_from_the_triggerer(airflow, stack, backup_run):
    services = airflow.services
    wanted = "pg_backup_daily missed its deadline"
    deadline = time.monotonic() + 90
    while time.monotonic() < deadline and not any(wanted in text for text in stack.slack.texts()):
        time.sleep(1)
    alerts = [text for text in stack.slack.texts() if wanted in text]
    assert alerts, f"no deadline alert in {stack.slack.texts()}\n{services.component_logs()}"
    assert backup_run["run_id"] in alerts[0] and "0.15 min after queued" in alerts[0]
    assert "pgdr-Backup-Secret" not in alerts[0]
    assert "deadline alert delivered for pg_backup_daily" in services.log_file("triggerer").read_text()


def test_restore_with_a_bad_confirmation_is_refused_with_http_400_and_no_run(airflow, backup_run):
    api = airflow.api
    api.patch("/api/v2/dags/pg_restore", {"is_paused": False})
    runs_before = api.get("/api/v2/dags/pg_restore/dagRuns")["total_entries"]
    response = api.post("/api/v2/dags/pg_restore/dagRuns", expect=400, body={
        "logical_date": None,
        "conf": {"database": CONN_ID, "kind": "database", "mode": "replace", "confirm": "restore care_commons_db"}})
    detail = response.json()["detail"]
    assert "param confirm" in detail and "restore care_commons_db" in detail, detail
    assert api.get("/api/v2/dags/pg_restore/dagRuns")["total_entries"] == runs_before


@pytest.fixture(scope="module")
def restore_run(airflow, backup_run):
    """pg_restore into a new database, triggered through the API and followed to success."""
    run_id = trigger(airflow.api, "pg_restore", {
        "database": CONN_ID, "kind": "database", "backup": "latest", "mode": "new_database",
        "target_database": RESTORED_DB, "confirm": f"RESTORE {CONN_ID}"})
    outcome = wait_for_run(airflow.services, airflow.api, "pg_restore", run_id, timeout=RUN_TIMEOUT)
    return {"run_id": run_id, **outcome}


def test_restore_triggered_through_the_api_brings_every_row_back(airflow, stack, backup_run, restore_run):
    assert restore_run["states"] == {"prepare[-1]": "success", "approve[-1]": "skipped", "restore[-1]": "success",
                                     "report[-1]": "success"}, restore_run["states"]
    assert fingerprint(stack.cluster, RESTORED_DB) == backup_run["source"]
    assert restore_run["run"]["triggering_user_name"] == USERNAME
    client = stack.s3.client()
    (key,) = [o["Key"] for o in client.list_objects_v2(
        Bucket=BUCKET, Prefix=f"{airflow.prefix}/reports/restore/").get("Contents", [])]
    record = json.loads(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    assert record["status"] == "succeeded" and record["triggered_by"] == USERNAME
    assert record["plan"]["backup_id"] == _seal(backup_run)["backup_id"]


def test_no_password_appears_in_any_log_or_the_metadata_database(airflow, backup_run, restore_run):
    """Component and task logs, XCom, rendered fields and run records (airflow.db), staging: no password."""
    services = airflow.services
    secrets = {BACKUP_PASSWORD, RESTORE_PASSWORD, SECRET_KEY, services.password}
    leaks = [(str(path), secret[:6]) for path in services.home.rglob("*")
             if path.is_file() and path.name != "passwords.json"  # the auth manager's own store
             for secret in secrets if secret.encode() in path.read_bytes()]
    assert not leaks, leaks
