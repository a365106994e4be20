"""Alert delivery through slack_sdk's retry handlers, against the local Slack receiver over HTTP.

Slack answers a burst of alerts with 429 (and a Retry-After) and, now and then, 500. A webhook in
front of the receiver (harness/slack_receiver.py) answers the scripted failures first, then passes
the post on: the alert must arrive exactly once, and a webhook that keeps failing must be reported
as not delivered, never raised into the task it reports on.
"""

from __future__ import annotations

import json
import logging
import threading
import urllib.request
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from harness.pg_cluster import free_port
from harness.slack_receiver import WEBHOOK_PATH, SlackReceiver


class FlakyWebhook:
    """Answers each scripted (status, headers) in turn, then forwards posts to ``receiver``."""

    def __init__(self, receiver: SlackReceiver) -> None:
        self.script: list[tuple[int, dict[str, str]]] = []
        self.attempts = 0
        lock = threading.Lock()
        webhook = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 (http.server's naming)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                with lock:
                    webhook.attempts += 1
                    scripted = webhook.script.pop(0) if webhook.script else None
                if scripted is None:
                    request = urllib.request.Request(receiver.url, data=body,
                                                     headers={"Content-Type": "application/json"})
                    with urllib.request.urlopen(request, timeout=10) as response:
                        status, headers, reply = response.status, {}, response.read()
                else:
                    status, headers = scripted
                    reply = b"rate_limited" if status == 429 else b"internal_error"
                self.send_response(status)
                for name, value in {"Content-Type": "text/plain", **headers}.items():
                    self.send_header(name, value)
                self.end_headers()
                self.wfile.write(reply)

            def log_message(self, *args):
                pass

        self.port = free_port()
        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        threading.Thread(target=self._server.serve_forever, daemon=True).start()

    def airflow_conn(self) -> str:
        return json.dumps({"conn_type": "slackwebhook", "password": f"http://127.0.0.1:{self.port}{WEBHOOK_PATH}"})

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture(scope="module")
def receiver():
    slack = SlackReceiver()
    yield slack
    slack.stop()


@pytest.fixture()
def webhook(receiver, monkeypatch):
    receiver.clear()
    flaky = FlakyWebhook(receiver)
    monkeypatch.setenv("AIRFLOW_CONN_SLACK_FLAKY", flaky.airflow_conn())
    yield flaky
    flaky.stop()


def _alert(title: str) -> dict:
    from pgdr.alerts.messages import build_alert

    return build_alert(severity="critical", title=title, facts=[("Database", "care_commons_db")])


@pytest.mark.parametrize("failures", [
    [(429, {"Retry-After": "1"})],
    [(500, {})],
    [(429, {"Retry-After": "1"}), (500, {})],
], ids=["rate limited", "server error", "rate limited then server error"])
def test_an_alert_refused_first_is_retried_and_arrives_once(webhook, receiver, failures):
    from pgdr.alerts.slack import send_alert

    webhook.script = list(failures)
    assert send_alert(_alert("pgdr: pg_backup_daily failed for care_commons_db"), "slack_flaky") is True
    texts = [post["payload"]["text"] for post in receiver.wait_for(1, timeout=5)]
    assert texts == ["[CRITICAL] pgdr: pg_backup_daily failed for care_commons_db"]
    assert webhook.attempts == len(failures) + 1


def test_a_webhook_that_keeps_failing_is_reported_not_delivered_and_never_raises(webhook, receiver, caplog):
    from pgdr.alerts.slack import send_alert

    webhook.script = [(500, {})] * 10
    with caplog.at_level(logging.ERROR, logger="pgdr.alerts.slack"):
        assert send_alert(_alert("pgdr: restore of care_commons_db failed"), "slack_flaky") is False
    assert receiver.posts == []
    assert webhook.attempts == 3, "one try and two retries, then the task goes on"
    assert "ALERT NOT DELIVERED" in caplog.text and "restore of care_commons_db failed" in caplog.text
