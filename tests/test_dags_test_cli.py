"""`airflow dags test <dag_id>`, the command a user runs to try a DAG, on real services.

The real CLI in a child process against the session's SQLite metadata database, the PostgreSQL
cluster, moto's S3 and the Slack receiver. Airflow 3.3.2's dag.test() hands DagRun.update_state a
DAG whose deadlines are still encoded dicts (it round-trips the DAG in memory instead of reading the
serialized DAG with its DeadlineAlert ids), so a successful run of a DAG with a deadline used to end
in "'dict' object has no attribute 'hex'" and exit 1. pgdr's DAGs with a deadline are now
``pgdr.alerts.deadlines.DeadlineDAG``, whose test() runs without that broken bookkeeping; the deadline
itself stays on the DAG the scheduler sees (tests/test_airflow_services.py fires it for real).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from harness.stack import BUCKET, CONN_ID
from tests.support.paths import REPO_ROOT
from tests.support.s3 import object_keys


@pytest.fixture(scope="module")
def cli_env(stack, airflow_db, tmp_path_factory):
    env = dict(os.environ)
    env.update(stack.airflow_env())
    env.update({"AIRFLOW_VAR_PGDR_S3_PREFIX": f"cli/{os.urandom(4).hex()}",
                "AIRFLOW_VAR_PGDR_STAGING_DIR": str(tmp_path_factory.mktemp("cli-staging"))})
    return env


def _dags_test(env: dict, dag_id: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "airflow", "dags", "test", dag_id], cwd=REPO_ROOT, env=env,
                          capture_output=True, text=True, timeout=600)


@pytest.fixture(scope="module")
def daily(stack, cli_env):
    return _dags_test(cli_env, "pg_backup_daily")


def test_airflow_dags_test_pg_backup_daily_exits_0_and_leaves_a_manifest(stack, cli_env, daily):
    output = daily.stdout + daily.stderr
    assert daily.returncode == 0, output[-4000:]
    assert "no attribute 'hex'" not in output
    prefix = cli_env["AIRFLOW_VAR_PGDR_S3_PREFIX"]
    logical = object_keys(stack.s3.client(), f"{prefix}/{CONN_ID}/logical/")
    manifests = [k for k in logical if k.endswith("/manifest.json")]
    assert len(manifests) == 1, manifests
    manifest = json.loads(stack.s3.client().get_object(Bucket=BUCKET, Key=manifests[0])["Body"].read())
    assert manifest["database"] == CONN_ID and manifest["row_counts"]


def test_airflow_dags_test_pg_backup_verify_exits_0_and_writes_its_report(stack, cli_env, daily):
    assert daily.returncode == 0
    result = _dags_test(cli_env, "pg_backup_verify")
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-4000:]
    prefix = cli_env["AIRFLOW_VAR_PGDR_S3_PREFIX"]
    (key,) = [k for k in object_keys(stack.s3.client(), f"{prefix}/reports/verify/") if k.endswith(f"-{CONN_ID}.json")]
    report = json.loads(stack.s3.client().get_object(Bucket=BUCKET, Key=key)["Body"].read())
    assert report["status"] == "ok", report


def test_the_test_harness_keeps_the_deadline(airflow_db):
    from harness.run_dag import load_dag_for_test

    for dag_id in ("pg_backup_daily", "pg_backup_verify"):
        dag = load_dag_for_test(dag_id)
        assert dag.deadline and dag.deadline[0].callback.path == "pgdr.alerts.deadlines.deadline_missed", dag_id
