"""Deadline (SLA) alerts: declared on the DAGs, and the callback run the way Airflow's triggerer runs it."""

import asyncio
import json
from datetime import timedelta

import pytest

from tests.support.dags import load_dag


@pytest.mark.parametrize(("dag_id", "minutes"), [("pg_backup_daily", 120), ("pg_backup_verify", 60)])
def test_dags_declare_a_deadline_after_queued_with_the_pgdr_callback(airflow_db, dag_id, minutes):
    from airflow.sdk import AsyncCallback
    from airflow.sdk.definitions.deadline import DeadlineReference

    dag = load_dag(dag_id)
    (alert,) = dag.deadline if isinstance(dag.deadline, list) else [dag.deadline]
    assert alert.reference == DeadlineReference.DAGRUN_QUEUED_AT
    assert alert.interval == timedelta(minutes=minutes)
    assert isinstance(alert.callback, AsyncCallback)
    assert alert.callback.path == "pgdr.alerts.deadlines.deadline_missed"
    assert alert.callback.kwargs == {"dag_id": dag_id, "budget_minutes": minutes}


def test_the_deadline_is_configurable_from_the_environment(airflow_db, monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_PGDR_BACKUP_DEADLINE_MINUTES", "45")
    (alert,) = load_dag("pg_backup_daily").deadline
    assert alert.interval == timedelta(minutes=45)


def _run_trigger(trigger) -> list:
    async def collect():
        return [event async for event in trigger.run()]

    return asyncio.run(collect())


def test_the_callback_run_by_the_triggerer_posts_the_alert(stack, airflow_db, pgdr_env):
    """CallbackTrigger is what the triggerer runs for a missed deadline; the context is built as
    Deadline.handle_miss builds it: the DagRun as the REST API shows it, and the deadline."""
    from airflow.api_fastapi.core_api.datamodels.dag_run import DAGRunResponse
    from airflow.models import DagRun
    from airflow.triggers.callback import CallbackTrigger
    from airflow.utils.session import create_session

    from tests.support.dags import run_dag

    run_id = run_dag("pg_backup_daily").run_id
    with create_session() as session:
        dag_run = session.query(DagRun).filter(DagRun.run_id == run_id).one()
        dag_run_json = DAGRunResponse.model_validate(dag_run).model_dump(mode="json")
    (alert,) = load_dag("pg_backup_daily").deadline
    context = {"dag_run": dag_run_json,
               "deadline": {"id": "0193f1c8-0000-7000-8000-000000000001", "deadline_time": "2026-11-26T04:00:00+00:00"}}
    stack.slack.clear()
    trigger = CallbackTrigger(callback_path=alert.callback.path,
                              callback_kwargs={**alert.callback.kwargs, "context": context})
    events = _run_trigger(trigger)
    assert events[-1].payload["state"] == "success", events[-1].payload
    posts = stack.slack.wait_for(1)
    text = json.dumps(posts[-1]["payload"])
    assert "pg_backup_daily missed its deadline" in text
    assert run_id in text and "120 min after queued" in text
    assert "RUNBOOK_DISASTER_RECOVERY.md#a-deadline-was-missed" in text
    assert "pgdr-Backup-Secret" not in text


def test_an_undeliverable_deadline_alert_is_logged_not_raised(stack, airflow_db, pgdr_env, monkeypatch, caplog):
    from airflow.triggers.callback import CallbackTrigger

    from harness.pg_cluster import free_port

    monkeypatch.setenv("AIRFLOW_CONN_SLACK_ALERTS", json.dumps(
        {"conn_type": "slackwebhook", "password": f"http://127.0.0.1:{free_port()}/services/T/B/X"}))
    trigger = CallbackTrigger(callback_path="pgdr.alerts.deadlines.deadline_missed",
                              callback_kwargs={"dag_id": "pg_backup_verify", "budget_minutes": 60,
                                               "context": {"dag_run": {"dag_run_id": "r1"}, "deadline": {}}})
    events = _run_trigger(trigger)
    assert events[-1].payload == {"state": "success", "body": "not delivered"}
    assert "ALERT NOT DELIVERED" in caplog.text
