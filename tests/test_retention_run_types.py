"""pg_data_retention acts for real only on its scheduled runs (issue 12 item 16).

Every other run type follows the form's ``dry_run`` (default true): a backfill started through the
REST API, a run started by another DAG's TriggerDagRunOperator, a manual run. Each is a real run
executed by Airflow's scheduler (harness/airflow_services.py) on a database of its own with rows
dated across eight years (harness/aged_rows.py); the dry runs must leave every row as it was and
report ``dry_run: true`` with nothing archived or deleted, then the scheduled run archives and
deletes for real. Before the fix only a manual run honoured ``dry_run``: a backfill or a triggered
run of the monthly retention deleted health records the person starting it meant to preview.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from test_data_retention import POLICY_TABLES, create_retention_role

from harness.aged_rows import insert_aged_rows
from harness.airflow_services import (
    create_scheduled_run,
    start_airflow_services,
    trigger,
    wait_for_dags,
    wait_for_run,
)
from harness.stack import BUCKET, RESTORE_CONN_ID, postgres_conn
from harness.synthetic import create_care_commons, fingerprint

pytestmark = pytest.mark.slow

CONN_ID = "retention_db"
DAG_ID = "pg_data_retention"
REPO_DAGS = Path(__file__).resolve().parents[1] / "dags"
TRIGGERING_DAG = '''
import pendulum
from airflow.providers.standard.operators.trigger_dagrun import TriggerDagRunOperator
from airflow.sdk import DAG

with DAG(dag_id="starts_retention", schedule=None, start_date=pendulum.datetime(2026, 1, 1, tz="UTC")):
    TriggerDagRunOperator(task_id="trigger", trigger_dag_id="pg_data_retention")
'''


def _dags_folder(root: Path) -> Path:
    """The repository's DAGs plus one that starts pg_data_retention the way a pipeline would."""
    folder = root / "dags"
    folder.mkdir()
    for path in REPO_DAGS.glob("*.py"):
        (folder / path.name).symlink_to(path)
    (folder / "starts_retention.py").write_text(TRIGGERING_DAG)
    return folder


def _report(stack, prefix: str, run_id: str) -> dict:
    client = stack.s3.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/reports/retention/data/")
            .get("Contents", [])]
    for key in keys:
        report = json.loads(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
        if report["run_id"] == run_id:
            return report
    raise AssertionError(f"no retention report for {run_id} among {keys}")


@pytest.fixture(scope="module")
def runs(stack, tmp_path_factory):
    """One run of each type, in this order: backfill, triggered by a DAG, manual, then scheduled.

    For each: its run record, its S3 report, and the database's fingerprint just after it."""
    from datetime import datetime, timezone

    home = tmp_path_factory.mktemp("retention-run-types")
    dbname = f"retention_{os.urandom(3).hex()}"
    create_care_commons(stack.cluster, dbname=dbname, scale=0.02, seed=11)
    conn = stack.cluster.connect(dbname)
    try:
        insert_aged_rows(conn, datetime.now(timezone.utc).date())
    finally:
        conn.close()
    role = create_retention_role(stack.cluster, dbname, POLICY_TABLES)
    prefix = f"runtypes/{os.urandom(4).hex()}"
    env = stack.airflow_env()
    env.update({
        "AIRFLOW__CORE__DAGS_FOLDER": str(_dags_folder(home)),
        "AIRFLOW_CONN_RETENTION_DB": postgres_conn(stack.cluster, dbname=dbname),
        "AIRFLOW_CONN_RETENTION_DB_ACT": postgres_conn(stack.cluster, dbname=dbname, user=role, password=role),
        "AIRFLOW_VAR_PGDR_DATABASES": json.dumps([CONN_ID]),
        "AIRFLOW_VAR_PGDR_RESTORE_CONN_IDS": json.dumps({CONN_ID: RESTORE_CONN_ID}),
        "AIRFLOW_VAR_PGDR_RETENTION_CONN_IDS": json.dumps({CONN_ID: "retention_db_act"}),
        "AIRFLOW_VAR_PGDR_S3_PREFIX": prefix,
        "AIRFLOW_VAR_PGDR_STAGING_DIR": str(home / "staging"),
    })
    services = start_airflow_services(home, env)
    out: dict = {"before": fingerprint(stack.cluster, dbname)}
    try:
        api = services.api()
        wait_for_dags(services, api, {DAG_ID, "starts_retention"})
        api.patch(f"/api/v2/dags/{DAG_ID}", {"is_paused": False})

        def finished(kind: str, run_id: str) -> None:
            outcome = wait_for_run(services, api, DAG_ID, run_id, timeout=600)
            out[kind] = {**outcome, "report": _report(stack, prefix, run_id),
                         "fingerprint": fingerprint(stack.cluster, dbname)}

        api.post("/api/v2/backfills", {"dag_id": DAG_ID, "from_date": "2026-10-31T00:00:00Z",
                                       "to_date": "2026-11-02T00:00:00Z", "max_active_runs": 1})
        (backfill,) = api.get(f"/api/v2/dags/{DAG_ID}/dagRuns", params={"run_type": "backfill"})["dag_runs"]
        finished("backfill", backfill["dag_run_id"])

        parent = trigger(api, "starts_retention", {})
        wait_for_run(services, api, "starts_retention", parent)
        (child,) = api.get(f"/api/v2/dags/{DAG_ID}/dagRuns", params={"run_type": "operator_triggered"})["dag_runs"]
        finished("operator_triggered", child["dag_run_id"])

        finished("manual", trigger(api, DAG_ID, {}))

        finished("scheduled", create_scheduled_run(services, DAG_ID))
        yield out
    finally:
        services.stop()
        stack.cluster.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        stack.cluster.execute(f'DROP ROLE IF EXISTS "{role}"')


@pytest.mark.parametrize("run_type", ["backfill", "operator_triggered", "manual"])
def test_a_run_that_is_not_scheduled_is_a_dry_run_by_default_and_changes_nothing(runs, run_type):
    outcome = runs[run_type]
    assert outcome["run"]["run_type"] == run_type
    report = outcome["report"]
    assert report["dry_run"] is True and report["status"] == "ok", report
    assert sum(rule["eligible"] for rule in report["rules"]) > 0, "nothing to preview: the test proves nothing"
    assert all(rule["archived"] == rule["deleted"] == rule["soft_deleted"] == 0 for rule in report["rules"])
    assert outcome["fingerprint"] == runs["before"]


def test_the_scheduled_run_acts_for_real(runs):
    outcome = runs["scheduled"]
    assert outcome["run"]["run_type"] == "scheduled"
    report = outcome["report"]
    assert report["dry_run"] is False and report["status"] == "ok", report
    assert sum(rule["deleted"] for rule in report["rules"]) > 0
    changed = {name for name, value in outcome["fingerprint"].items() if runs["before"][name] != value}
    assert changed and {name.split(".")[1] for name in changed} <= set(POLICY_TABLES)
