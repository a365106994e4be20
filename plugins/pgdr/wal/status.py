"""How the WAL receiver is doing, as the shipper sees it: its status file and heartbeat, and the
primary's view of it (:func:`pgdr.verify.wal.server_findings`, taken by a probe the caller passes in);
and what the shipper needs from whoever tells people about it (:class:`WalMessages`, provided by
:mod:`pgdr.alerts.wal`, a layer above this one).
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Protocol

from pgdr.wal.receiver import STATUS_NAME

# a finding of the primary's view that is not about the receiver (the server's own archive_command)
ARCHIVER_FAILING = "the server's archiver is failing"


def read_receiver_status(directory: Path) -> dict | None:
    """The receiver's status file (see :mod:`pgdr.wal.receiver`), or None when absent/unreadable."""
    try:
        return json.loads((Path(directory) / STATUS_NAME).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def receiver_health(directory: Path, now: float | None = None, stale_seconds: float = 60.0) -> tuple[bool, str]:
    """(healthy, description) from the receiver's status file and heartbeat."""
    status = read_receiver_status(directory)
    if status is None:
        return False, f"no receiver status file {STATUS_NAME} (is the WAL receiver running?)"
    now = time.time() if now is None else now
    age = now - float(status.get("heartbeat_at") or 0)
    text = (f"receiver {status.get('state')} (pid {status.get('pid')}, restarts {status.get('restarts')}, "
            f"heartbeat {age:.0f} s ago)")
    if status.get("state") != "running":
        last = status.get("last_error") or ""
        return False, text + (f"; last error: {last.splitlines()[-1]}" if last else "")
    if age > stale_seconds:
        return False, text + "; status is stale, the supervisor is not running"
    return True, text


def receiver_findings(findings: list[dict]) -> list[dict]:
    """Pure: the findings of the primary's view that say the receiver is not doing its work."""
    return [f for f in findings if f.get("problem") != ARCHIVER_FAILING]


# ---------------------------------------------------------------- who is told

class WalMessages(Protocol):
    """What :func:`pgdr.wal.ship.ship_window` needs to alert (:mod:`pgdr.alerts.wal` provides it)."""

    def watch(self, directory: Path, database: str, notify, reminder_hours: float, log: logging.Logger): ...
    def shipping_failed(self, database: str, failing_seconds: float, kind: str, error: BaseException) -> dict: ...
    def low_disk(self, database: str, free_bytes: int, min_free_bytes: int) -> dict: ...
    def receiver_problem(self, findings: list[dict], slot: str) -> dict | None: ...
    def gap_alert(self, database: str, gap: dict) -> dict: ...


class Quiet:
    """The alert state when nobody is told (no ``notify``): nothing is ever posted."""

    def __init__(self) -> None:
        self.posted: list[str] = []

    def active(self, check: str) -> bool:
        return False

    def alerting(self) -> list[str]:
        return []

    def update(self, *args, **kwargs) -> None:
        pass
