"""Deadline (SLA) alerts: Airflow 3's DeadlineAlert calls :func:`deadline_missed` in the triggerer.

Airflow imports the callable by path in the triggerer and awaits it with the kwargs
declared on the DAG plus a small ``context`` (the DagRun as the REST API shows it, and
the deadline). The triggerer must be running for deadline alerts to fire.

A DAG with a deadline is a :class:`DeadlineDAG`, so that ``airflow dags test`` works on it.
"""

from __future__ import annotations

import asyncio
import logging
from datetime import timedelta
from urllib.parse import quote

from airflow.sdk import DAG

from pgdr.alerts.messages import RUNBOOK, build_alert

log = logging.getLogger(__name__)


class DeadlineDAG(DAG):
    """A DAG whose ``test()`` (what ``airflow dags test`` calls) runs without its deadline.

    Airflow 3.3.2's DAG.test() builds the scheduler's view of the DAG by serializing and
    deserializing it in memory, so that view's ``deadline`` holds encoded DeadlineAlert dicts
    where DagRun.update_state expects the ids the dag-processor stores with the serialized DAG.
    When a run succeeds, update_state looks those "ids" up to prune the run's deadlines and fails
    ("'dict' object has no attribute 'hex'"): the run worked and the command still exits 1.
    With the deadline off for the in-memory run no deadline row is created and none is looked up.
    The scheduler never calls test(): it reads the serialized DAG (written from a fresh parse of
    the file, deadline included), so production runs keep their deadline alerts. A try-out with
    ``airflow dags test`` gets no deadline alert, which is what a try-out wants.
    """

    def test(self, *args, **kwargs):
        deadline, self.deadline = self.deadline, None
        try:
            return super().test(*args, **kwargs)
        finally:
            self.deadline = deadline


def deadline_alert(dag_id: str, minutes: float):
    """The DeadlineAlert for a pgdr DAG: finish within ``minutes`` of being queued."""
    from airflow.sdk import AsyncCallback, DeadlineAlert, DeadlineReference

    return DeadlineAlert(
        reference=DeadlineReference.DAGRUN_QUEUED_AT,
        interval=timedelta(minutes=minutes),
        callback=AsyncCallback(deadline_missed, kwargs={"dag_id": dag_id, "budget_minutes": minutes}),
        name=f"{dag_id}_deadline",
    )


def deadline_payload(*, dag_id: str, budget_minutes: float, context: dict | None) -> dict:
    context = context or {}
    dag_run = context.get("dag_run") or {}
    deadline = context.get("deadline") or {}
    run_id = dag_run.get("dag_run_id") or dag_run.get("run_id") or "?"
    try:
        from airflow.configuration import conf

        base_url = conf.get("api", "base_url", fallback="http://localhost:8080").rstrip("/")
    except Exception:  # noqa: BLE001 - a link is a convenience
        base_url = "http://localhost:8080"
    return build_alert(
        severity="critical",
        title=f"pgdr: {dag_id} missed its deadline",
        facts=[("DAG", dag_id), ("Run", run_id), ("Queued at", dag_run.get("queued_at")),
               ("Deadline", deadline.get("deadline_time")), ("Budget", f"{budget_minutes:g} min after queued"),
               ("State", dag_run.get("state"))],
        details=f"{dag_id} run {run_id} had not finished {budget_minutes:g} minutes after it was queued.",
        next_step=f"open the run and see which task is slow or stuck; see {RUNBOOK}#a-deadline-was-missed",
        log_url=f"{base_url}/dags/{dag_id}/runs/{quote(str(run_id), safe='')}",
    )


async def deadline_missed(dag_id: str, budget_minutes: float, context: dict | None = None, **_: object) -> str:
    """Post the missed-deadline alert to Slack; never raises (an undelivered alert is logged)."""
    from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

    from pgdr.alerts.slack import slack_conn_id_for_alerts
    from pgdr.settings import setting_default

    payload = deadline_payload(dag_id=dag_id, budget_minutes=budget_minutes, context=context)
    try:
        conn_id = await asyncio.to_thread(slack_conn_id_for_alerts)
    except Exception:  # noqa: BLE001 - Variables may be out of reach from the triggerer
        conn_id = setting_default("slack_conn_id")
    try:
        await SlackWebhookHook(slack_webhook_conn_id=conn_id, timeout=15).async_send_dict(payload)
    except Exception as err:  # noqa: BLE001
        log.error("ALERT NOT DELIVERED to Slack (connection %s): %s; alert was: %s", conn_id,
                  type(err).__name__, payload["text"])
        return "not delivered"
    log.info("deadline alert delivered for %s", dag_id)
    return "delivered"
