"""Recovery markers: rows committed at known times, the yardstick of the point-in-time drill.

``pg_backup_verify`` commits one marker per run into ``pgdr.recovery_markers`` of each
protected database (when physical backups are on) and keeps the list, with the time each
commit was acknowledged, in ``<prefix>/state/markers/<database>.json``. The drill recovers to a
random moment and checks that exactly the markers committed before it are there.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

from pgdr import sql

KEEP = 1000
# a marker whose commit straddles the target is neither required nor forbidden
MARGIN = timedelta(seconds=1)


def record_marker(conn, run_id: str) -> dict:
    """Commit a marker; returns its id, the time it was written and the time its commit returned."""
    text = "\n".join(line for line in sql.load("recovery_marker").splitlines() if not line.startswith("--"))
    statements = [s.strip() for s in text.split(";") if s.strip()]
    with conn.cursor() as cur:
        for statement in statements[:-1]:
            cur.execute(statement)
        cur.execute(statements[-1], {"run_id": run_id})
        marker_id, marked_at = cur.fetchone()
    conn.commit()
    acknowledged = datetime.now(timezone.utc)
    return {"id": int(marker_id), "marked_at": marked_at.astimezone(timezone.utc).isoformat(),
            "acknowledged_at": acknowledged.isoformat(), "run_id": run_id}


def remember(markers: list[dict], marker: dict) -> list[dict]:
    return (markers + [marker])[-KEEP:]


def choose_moment(markers: list[dict], earliest: datetime, rng: random.Random) -> datetime | None:
    """A random moment after ``earliest`` (the oldest base backup's end) up to the newest marker,
    kept away from every marker's commit so the expected answer is certain."""
    usable = [m for m in markers if datetime.fromisoformat(m["marked_at"]) > earliest]
    if not usable:
        return None
    latest = max(datetime.fromisoformat(m["acknowledged_at"]) for m in usable)
    for _ in range(100):
        moment = earliest + (latest - earliest) * rng.random()
        if all(not (datetime.fromisoformat(m["marked_at"]) - MARGIN <= moment <=
                    datetime.fromisoformat(m["acknowledged_at"]) + MARGIN) for m in usable):
            return moment
    return None


def expected_markers(markers: list[dict], moment: datetime) -> tuple[set[int], set[int]]:
    """(ids that must be present, ids that must be absent) after recovering to ``moment``."""
    present = {m["id"] for m in markers if datetime.fromisoformat(m["acknowledged_at"]) < moment}
    absent = {m["id"] for m in markers if datetime.fromisoformat(m["marked_at"]) > moment}
    return present, absent
