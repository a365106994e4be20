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

import pytest

from harness.airflow_services import USERNAME, ApiClient, AirflowServices, start_airflow_services
from harness.stack import BUCKET, CONN_ID, DBNAME
from harness.synthetic import fingerprint

pytestmark = pytest.mark.slow

RUN_TIMEOUT = 240
RESTORED_DB = "cc_restored_via_api"
LOCK_SECONDS = 20


@pytest.fixture(scope="module")
def airflow(stack, tmp_path_factory):
    home = tmp_path_factory.mktemp("airflow-services")
    env = stack.airflow_env()
    env.update({
        "AIRFLOW_VAR_PGDR_STAGING_DIR": str(home / "staging"),
        "AIRFLOW_VAR_PGDR_S3_PREFIX": f"api/{os.urandom(4).hex()}",
        # 9 seconds: every backup run outlives it, so the deadline is missed for real
        "AIRFLOW_VAR_PGDR_BACKUP_DEADLINE_MINUTES": "0.15",
    })
    services = start_airflow_services(home, env)
    try:
        api = services.api()
        _wait_for_dags(services, api, {"pg_backup_daily", "pg_restore"})
        yield services, api, env
    finally:
        services.stop()
        stack.cluster.execute(f"DROP DATABASE IF EXISTS {RESTORED_DB} WITH (FORCE)")


def _wait_for_dags(services: AirflowServices, api: ApiClient, dag_ids: set[str], timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    listed: set[str] = set()
    while time.monotonic() < deadline:
        listed = {dag["dag_id"] for dag in api.get("/api/v2/dags", params={"limit": 100})["dags"]}
        if dag_ids <= listed:
            return
        errors = [e for e in api.get("/api/v2/importErrors")["import_errors"]
                  if e["filename"].removesuffix(".py") in dag_ids - listed]
        if errors:
            pytest.fail("import errors: " + "\n".join(f"{e['filename']}: {e['stack_trace']}" for e in errors))
        time.sleep(2)
    pytest.fail(f"DAGs {sorted(dag_ids - listed)} not listed after {timeout:.0f} s\n{services.component_logs()}")


def _trigger(api: ApiClient, dag_id: str, conf: dict) -> str:
    api.patch(f"/api/v2/dags/{dag_id}", {"is_paused": False})
    response = api.post(f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf}, expect=200)
    return response.json()["dag_run_id"]


def _wait_for_run(services: AirflowServices, api: ApiClient, dag_id: str, run_id: str) -> dict:
    """Follow a run to success; fail at the first failed or retrying task, with every task log."""
    run_path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}"
    deadline = time.monotonic() + RUN_TIMEOUT
    run: dict = {}
    while time.monotonic() < deadline:
        run = api.get(run_path)
        tis = api.get(f"{run_path}/taskInstances")["task_instances"]
        states = {f"{ti['task_id']}[{ti['map_index']}]": ti["state"] for ti in tis}
        broken = {k: s for k, s in states.items() if s in ("failed", "up_for_retry", "upstream_failed")}
        if run["state"] == "success":
            return {"run": run, "states": states}
        if run["state"] == "failed" or broken or services.dead_components():
            break
        time.sleep(2)
    pytest.fail(f"{dag_id} run {run_id} ended {run.get('state')!r} (tasks: {states}, dead components: "
                f"{services.dead_components()})\n{services.task_logs(dag_id, run_id)}\n{services.component_logs()}")


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
    services, api, env = airflow
    stack.slack.clear()
    source = fingerprint(stack.cluster, DBNAME)
    with _table_locked(stack.cluster, "public.visits", LOCK_SECONDS):
        started = time.monotonic()
        run_id = _trigger(api, "pg_backup_daily", {})
        outcome = _wait_for_run(services, api, "pg_backup_daily", run_id)
    assert time.monotonic() - started >= LOCK_SECONDS - 1, "the backup did not wait for the lock"
    seal = api.get(f"/api/v2/dags/pg_backup_daily/dagRuns/{run_id}/taskInstances/backup.verify_and_seal"
                   f"/xcomEntries/return_value", params={"map_index": 0})["value"]
    return {"run_id": run_id, "source": source, "seal": seal, "prefix": env["AIRFLOW_VAR_PGDR_S3_PREFIX"], **outcome}


def test_backup_triggered_through_the_api_succeeds_and_leaves_a_manifest_in_s3(airflow, stack, backup_run):
    services, api, _ = airflow
    assert backup_run["run"]["run_type"] == "manual" and backup_run["run"]["triggered_by"] == "rest_api"
    assert backup_run["states"]["backup.verify_and_seal[0]"] == "success"
    dag = api.get("/api/v2/dags/pg_backup_daily")
    assert dag["is_paused"] is False
    seal = backup_run["seal"]
    seal = json.loads(seal) if isinstance(seal, str) else seal
    key = f"{backup_run['prefix']}/{CONN_ID}/logical/{seal['backup_id']}/manifest.json"
    manifest = json.loads(stack.s3.client().get_object(Bucket=BUCKET, Key=key)["Body"].read())
    assert manifest["backup_id"] == seal["backup_id"] and manifest["database"] == CONN_ID
    assert {name: counts[0] for name, counts in backup_run["source"].items()} == manifest["row_counts"]


def test_a_missed_deadline_posts_to_slack_from_the_triggerer(airflow, stack, backup_run):
    services, _, _ = airflow
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
    _, api, _ = airflow
    api.patch("/api/v2/dags/pg_restore", {"is_paused": False})
    response = api.post("/api/v2/dags/pg_restore/dagRuns", expect=400, body={
        "logical_date": None,
        "conf": {"database": CONN_ID, "kind": "database", "mode": "replace", "confirm": "restore care_commons_db"}})
    detail = response.json()["detail"]
    assert "param confirm" in detail and "restore care_commons_db" in detail, detail
    assert api.get("/api/v2/dags/pg_restore/dagRuns")["total_entries"] == 0


def test_restore_triggered_through_the_api_brings_every_row_back(airflow, stack, backup_run):
    services, api, _ = airflow
    run_id = _trigger(api, "pg_restore", {
        "database": CONN_ID, "kind": "database", "backup": "latest", "mode": "new_database",
        "target_database": RESTORED_DB, "confirm": f"RESTORE {CONN_ID}"})
    outcome = _wait_for_run(services, api, "pg_restore", run_id)
    assert set(outcome["states"].values()) == {"success"}, outcome["states"]
    assert fingerprint(stack.cluster, RESTORED_DB) == backup_run["source"]
    runs = api.get("/api/v2/dags/pg_restore/dagRuns")["dag_runs"]
    assert [(r["dag_run_id"], r["triggering_user_name"]) for r in runs] == [(run_id, USERNAME)]
