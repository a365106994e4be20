"""pg_restore_test, the monthly drill, on real services: the record, the alerts, the scratch database."""

from __future__ import annotations

import json

import pytest

from harness.stack import BUCKET, CONN_ID
from tests.support.dags import run_dag, task_states
from tests.support.s3 import json_records


@pytest.fixture()
def backed_up(stack, airflow_db, pgdr_env):
    dag_run = run_dag("pg_backup_daily")
    assert str(dag_run.state) == "success", task_states(dag_run)
    return pgdr_env["AIRFLOW_VAR_PGDR_S3_PREFIX"]


def _drill_records(stack, prefix: str) -> list[dict]:
    return json_records(stack.s3.client(), f"{prefix}/reports/drill/", suffix="")


def _scratch_databases(stack) -> list[str]:
    return [name for name in stack.cluster.database_names() if name.startswith("pgdr_drill_")]


def test_a_good_drill_records_its_rto_and_leaves_nothing_behind(stack, backed_up):
    dag_run = run_dag("pg_restore_test")
    assert str(dag_run.state) == "success", task_states(dag_run)
    (record,) = _drill_records(stack, backed_up)
    assert record["status"] == "ok" and record["problems"] == []
    assert record["database"] == CONN_ID
    assert record["tables"] == len(stack.row_counts) and record["rows"] == sum(stack.row_counts.values())
    assert 0 < record["rto_seconds"] < record["rto_budget_seconds"] == 3600
    assert record["projected_rto_seconds"] > 0 and record["source_size_bytes"] > 0
    assert {c["file"] for c in record["checks"]} >= {"foreign_keys_hold.sql", "evv_matches_visits.sql"}
    assert all(c["problems"] == 0 for c in record["checks"])
    assert _scratch_databases(stack) == []
    assert stack.slack.texts() == []


def test_a_count_mismatch_against_the_manifest_alerts_and_still_drops_the_scratch(stack, backed_up):
    client = stack.s3.client()
    key = next(o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix=f"{backed_up}/{CONN_ID}/logical/")
               ["Contents"] if o["Key"].endswith("/manifest.json"))
    manifest = json.loads(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    manifest["row_counts"]["public.visits"] += 1
    client.put_object(Bucket=BUCKET, Key=key, Body=json.dumps(manifest).encode(), ServerSideEncryption="AES256")

    dag_run = run_dag("pg_restore_test")
    states = task_states(dag_run)
    assert states["drill.restore_and_check[0]"] == "failed" and states["drill.drop_scratch[0]"] == "success"
    assert str(dag_run.state) == "failed"
    (record,) = _drill_records(stack, backed_up)
    assert record["status"] == "failed"
    assert "public.visits: row count differs" in record["problems"][0]["error"]
    (alert,) = stack.slack.wait_for(1)
    text = json.dumps(alert)
    assert "restore drill failed for care_commons_db" in text and "public.visits: row count differs" in text
    assert _scratch_databases(stack) == []


def test_an_rto_over_budget_alerts(stack, backed_up, monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_PGDR_RTO_BUDGET_MINUTES", "0.001")
    dag_run = run_dag("pg_restore_test")
    assert str(dag_run.state) == "failed"
    (record,) = _drill_records(stack, backed_up)
    problems = {p["problem"] for p in record["problems"]}
    assert problems == {"measured RTO over budget", "RTO projected for the current database size over budget"}
    assert record["rto_seconds"] > 0.06
    (alert,) = stack.slack.wait_for(1)
    assert "measured RTO over budget" in json.dumps(alert)
    assert _scratch_databases(stack) == []
