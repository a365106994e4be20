"""Delivering alerts to Slack, through the slack provider's SlackWebhookHook.

What an alert says is built by :mod:`pgdr.alerts.messages` (pure). Here it is posted, with
slack_sdk's retry handlers for rate limits, server and connection errors; an alert that still
cannot be delivered is logged and never hides the failure it was reporting.
"""

from __future__ import annotations

import logging

from pgdr.alerts.messages import (
    short_error,
    task_failure_alert,
)
from pgdr.errors import PgdrError

__all__ = ["AlreadyAlerted", "on_task_failure", "retry_handlers", "send_alert",
           "slack_conn_id_for_alerts"]

log = logging.getLogger(__name__)


class AlreadyAlerted(PgdrError, RuntimeError):
    """A failure whose alert has been posted by the task itself (no second, generic alert)."""


def slack_conn_id_for_alerts() -> str:
    """The alert connection even when the other settings are the very thing that is broken."""
    from pgdr.settings import PREFIX, SettingsError, load_settings, setting_default

    try:
        return load_settings().slack_conn_id
    except SettingsError:
        from airflow.sdk import Variable

        return Variable.get(PREFIX + "slack_conn_id", default=None) or setting_default("slack_conn_id")


def retry_handlers() -> list:
    """slack_sdk's own retries, in the order it asks them: a rate limit (429) waits as long as Slack's
    Retry-After says; a server error (500, 503) and a connection error retry after a short backoff.
    Three tries at most, so an alert for a failing task is late by seconds, never by minutes."""
    from slack_sdk.http_retry.builtin_handlers import (
        ConnectionErrorRetryHandler,
        RateLimitErrorRetryHandler,
        ServerErrorRetryHandler,
    )

    return [RateLimitErrorRetryHandler(max_retry_count=2), ServerErrorRetryHandler(max_retry_count=2),
            ConnectionErrorRetryHandler(max_retry_count=2)]


def send_alert(payload: dict, conn_id: str | None = None) -> bool:
    """Post to Slack (retried by :func:`retry_handlers`); when it still fails, log that the alert was
    not delivered and return False."""
    try:
        from airflow.providers.slack.hooks.slack_webhook import SlackWebhookHook

        conn_id = conn_id or slack_conn_id_for_alerts()
        SlackWebhookHook(slack_webhook_conn_id=conn_id, timeout=15, retry_handlers=retry_handlers()).send_dict(payload)
    except Exception as err:  # noqa: BLE001 - an alert must never mask the original failure
        log.error("ALERT NOT DELIVERED to Slack (connection %s): %s; alert was: %s",
                  conn_id, short_error(err), short_error(payload.get("text") or ""))
        return False
    log.info("alert delivered to Slack (connection %s): %s", conn_id, payload.get("text"))
    return True


def on_task_failure(context: dict) -> None:
    """on_failure_callback for every pgdr task."""
    if isinstance(context.get("exception"), AlreadyAlerted):
        return
    ti = context.get("ti") or context.get("task_instance")
    task = context.get("task")
    database = getattr(task, "conn_id", None) or getattr(task, "database", None)
    if database is not None and not isinstance(database, str):
        database = None
    payload = task_failure_alert(
        dag_id=getattr(ti, "dag_id", "?"), task_id=getattr(ti, "task_id", "?"),
        map_index=getattr(ti, "map_index", None), run_id=getattr(ti, "run_id", "?"),
        try_number=getattr(ti, "try_number", None), database=database,
        error=context.get("exception") or "unknown error", log_url=getattr(ti, "log_url", None),
    )
    send_alert(payload)
