"""Alerts about the continuous WAL: shipping to S3 failing, the receiver as the primary sees it, the
receiver's free space, a gap in the archive; posted once per problem, reminded, and resolved.

:func:`pgdr.wal.ship.ship_window` takes this module as its ``messages`` (with ``notify``, the
delivery: :func:`pgdr.alerts.slack.send_alert`), so the WAL stage itself never imports the alerts
layer. A *problem* is a dict (``fingerprint``: what makes it the same problem, ``severity``, ``title``,
``facts``, ``details``, ``next_step``); :class:`AlertWatch` decides when it is posted.
"""

from __future__ import annotations

import json
import logging
import os
from datetime import datetime, timezone
from pathlib import Path

from pgdr.alerts.messages import build_alert, short_error
from pgdr.alerts.policy import decide
from pgdr.core.progress import human_bytes
from pgdr.wal.status import receiver_findings

ALERTS_NAME = ".pgdr-alerts.json"        # what the shipper alerted on (local: usable while S3 is down)
RESOLVED_TITLES = {"s3": "WAL shipping to S3", "receiver": "WAL receiver as the primary sees it",
                   "disk": "free space for received WAL"}


class AlertWatch:
    """De-duplicated alerts about one receiver directory: a post when a problem starts (after
    ``grace_seconds``) or changes, a reminder every ``reminder_hours`` while it lasts, one when it
    clears (:func:`pgdr.alerts.policy.decide`). The state is kept in ``<directory>/.pgdr-alerts.json``,
    locally, because one of the problems watched is S3 itself being unreachable.

    ``notify(payload) -> bool`` posts (pgdr.alerts.slack.send_alert); a post that was not delivered is
    tried again at the next pass.
    """

    def __init__(self, directory: Path, database: str, notify, reminder_hours: float, log: logging.Logger) -> None:
        self.path = Path(directory) / ALERTS_NAME
        self.database = database
        self.notify = notify
        self.reminder_hours = reminder_hours
        self.log = log
        try:
            self.state = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            self.state = {}
        self.state.setdefault("checks", {})
        self.state.setdefault("pending", {})
        self.posted: list[str] = []

    def active(self, check: str) -> bool:
        """Whether an alert about ``check`` has been posted and not yet cleared."""
        return f"{check}:*" in self.state["checks"]

    def alerting(self) -> list[str]:
        """The checks with an alert posted and not yet cleared."""
        return sorted(key.split(":")[0] for key in self.state["checks"])

    def update(self, check: str, problem: dict | None, now: float, grace_seconds: float = 0.0) -> None:
        """``problem`` None: ``check`` is fine now. Else a dict with ``fingerprint`` (what makes it
        the same problem), ``title``, ``facts``, ``details``, ``next_step``, ``severity``."""
        key = f"{check}:*"
        if problem is not None and key not in self.state["checks"]:
            since = self.state["pending"].setdefault(check, now)
            if now - since < grace_seconds:
                self._save()
                return
        elif problem is None:
            self.state["pending"].pop(check, None)
        result = {"check": check, "kind": None, "status": "failed" if problem else "ok",
                  "fingerprint": (problem or {}).get("fingerprint", ""), "problem": problem}
        previous = {"checks": {key: self.state["checks"][key]} if key in self.state["checks"] else {}}
        posts, decided = decide(previous, [result], datetime.fromtimestamp(now, timezone.utc),
                                self.reminder_hours, digest=False)
        delivered = True
        for reason, _ in posts:
            payload = self._payload(check, reason, problem, previous["checks"].get(key))
            delivered = bool(self.notify(payload)) if self.notify else False
            if delivered:
                self.posted.append(f"{reason}: {payload['text']}")
        if not delivered:
            return   # nothing recorded: tried again at the next pass
        if key in decided["checks"]:
            self.state["checks"][key] = decided["checks"][key]
        else:
            self.state["checks"].pop(key, None)
        if problem is None:
            self.state["pending"].pop(check, None)
        self._save()

    def _payload(self, check: str, reason: str, problem: dict | None, seen: dict | None) -> dict:
        if reason == "resolved":
            since = (seen or {}).get("since", "")
            return build_alert(severity="info", title=f"Resolved: {RESOLVED_TITLES.get(check, check)} "
                                                      f"({self.database})",
                               facts=[("database", self.database), ("problem since", since)])
        prefix = {"reminder": "Still: ", "changed": ""}.get(reason, "")
        return build_alert(severity=problem.get("severity", "critical"), title=prefix + problem["title"],
                           facts=[("database", self.database), *problem.get("facts", [])],
                           details=problem.get("details"), next_step=problem.get("next_step"))

    def _save(self) -> None:
        try:
            temp = self.path.with_name(self.path.name + ".tmp")
            temp.write_text(json.dumps(self.state, indent=1, sort_keys=True, default=str))
            os.replace(temp, self.path)
        except OSError as err:
            self.log.warning("cannot save %s: %s", self.path, err)


def watch(directory: Path, database: str, notify, reminder_hours: float, log: logging.Logger) -> AlertWatch:
    """The shipper's alert state for one receiver directory (what ``ship_window`` asks its messages for)."""
    return AlertWatch(directory, database, notify, reminder_hours, log)


# ---------------------------------------------------------------- the problems (pure)

def shipping_failed(database: str, failing_seconds: float, kind: str, error: BaseException) -> dict:
    """S3 refuses or cannot be reached; ``kind`` (:func:`pgdr.store.s3.failure_kind`) makes it one problem."""
    return {"fingerprint": kind, "severity": "critical",
            "title": f"WAL of {database} cannot be shipped to S3",
            "facts": [("failing for", f"{failing_seconds:.0f} s"), ("problem", kind)],
            "details": short_error(error),
            "next_step": "check the S3 endpoint and credentials; received WAL stays in the "
                         "receiver directory and is shipped when S3 is back (nothing "
                         "is pruned meanwhile)"}


def low_disk(database: str, free_bytes: int, min_free_bytes: int) -> dict:
    return {"fingerprint": "low", "severity": "warning",
            "title": f"Little free space for received WAL of {database}",
            "facts": [("free", human_bytes(free_bytes)), ("threshold", human_bytes(min_free_bytes))],
            "next_step": "grow the receiver's volume, or lower "
                         "pgdr_wal_receiver_keep_segments; a full disk stops the receiver "
                         "and then commits wait"}


def receiver_problem(findings: list[dict], slot: str) -> dict | None:
    """An alert from the primary's view of the receiver (:func:`pgdr.verify.wal.server_findings`)."""
    wanted = receiver_findings(findings)
    if not wanted:
        return None
    # an error in a finding (the primary not reachable) is told as every error in an alert is
    wanted = [{**f, "error": short_error(f["error"])} if f.get("error") else f for f in wanted]
    names = sorted({f["problem"] for f in wanted})
    lost = any("lost" in name for name in names)
    return {"fingerprint": "|".join(names), "severity": "critical",
            "title": f"WAL receiver problem seen from the primary: {', '.join(names)}",
            "facts": [("slot / application_name", slot)],
            "details": "\n".join(json.dumps(f, sort_keys=True, default=str) for f in wanted),
            "next_step": ("the receiver recreates a lost slot itself and records the gap; take a new base backup "
                          "(pg_backup_daily) so point-in-time recovery reaches past it" if lost else
                          "new commits are not being received off the primary (RPO = 0 and the one-minute site-loss "
                          "RPO do not hold; synchronous commits may be waiting): check the receiver's host, "
                          "`receiver.status.json` and `python -m pgdr.wal_receiver --check`")}


def gap_alert(database: str, gap: dict) -> dict:
    """The Slack payload for a gap the receiver recorded (:mod:`pgdr.wal.gaps`)."""
    return build_alert(
        severity="critical", title=f"WAL gap in the archive of {database}: the replication slot was lost",
        facts=[("database", database), ("missing WAL", f"{gap.get('from_lsn')} .. {gap.get('to_lsn')}"),
               ("segments", f"{gap.get('first_segment')} .. {gap.get('last_segment')} "
                            f"({gap.get('segments')})"),
               ("detected", gap.get("detected_at")), ("reason", gap.get("reason"))],
        details=(f"WAL received before the gap was moved to {gap.get('moved_to')} in the receiver directory "
                 f"and is shipped from there" + (f"; {len(gap['unshipped'])} file(s) of it were not yet shipped"
                                                 if gap.get("unshipped") else "")),
        next_step="point-in-time recovery cannot cross this gap: take a new base backup now "
                  "(trigger pg_backup_daily) so recovery to any time after it is possible again")
