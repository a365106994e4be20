"""Recovery markers: rows committed at known times, the yardstick of the point-in-time drill.

``pg_backup_verify`` commits one marker per run into ``pgdr.recovery_markers`` of each
protected database (when physical backups are on), as the markers role that owns schema pgdr
(:func:`marker_conn_id`; never into objects another role created, see :func:`record_marker`) and
keeps the list, with the time each commit was acknowledged, in ``<prefix>/state/markers/<database>.json``.
The drill recovers to a random moment and checks that exactly the markers committed before it are there.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

from pgdr.core import sqlfiles as sql
from pgdr.errors import Refused

KEEP = 1000
# a marker whose commit straddles the target is neither required nor forbidden
MARGIN = timedelta(seconds=1)


class MarkerRefused(Refused, RuntimeError):
    """Schema ``pgdr`` or its marker table is not pgdr's own: nothing was written."""


# who owns schema pgdr and pgdr.recovery_markers, and what would run when a row is inserted
_OWNERSHIP = """
SELECT current_user::text,
       (SELECT nspowner::regrole::text FROM pg_catalog.pg_namespace WHERE nspname = 'pgdr'),
       (SELECT c.relowner::regrole::text FROM pg_catalog.pg_class c
         WHERE c.relnamespace = 'pgdr'::regnamespace AND c.relname = 'recovery_markers'),
       (SELECT c.relkind::text FROM pg_catalog.pg_class c
         WHERE c.relnamespace = 'pgdr'::regnamespace AND c.relname = 'recovery_markers'),
       (SELECT pg_catalog.array_agg(t.tgname::text ORDER BY t.tgname) FROM pg_catalog.pg_trigger t
         JOIN pg_catalog.pg_class c ON c.oid = t.tgrelid
         WHERE c.relnamespace = 'pgdr'::regnamespace AND c.relname = 'recovery_markers' AND NOT t.tgisinternal),
       (SELECT pg_catalog.array_agg(r.rulename::text ORDER BY r.rulename) FROM pg_catalog.pg_rewrite r
         JOIN pg_catalog.pg_class c ON c.oid = r.ev_class
         WHERE c.relnamespace = 'pgdr'::regnamespace AND c.relname = 'recovery_markers')
"""


def check_ownership(cur, *, table_expected: bool) -> None:
    """Refuse (MarkerRefused) unless schema pgdr, and its marker table once it exists, belong to
    the role writing and the table has no trigger or rule (pgdr creates none)."""
    cur.execute("SELECT to_regnamespace('pgdr') IS NOT NULL")
    if not cur.fetchone()[0]:
        return
    cur.execute(_OWNERSHIP)
    writer, schema_owner, table_owner, relkind, triggers, rules = cur.fetchone()
    fix = ("the markers are written by the role of pgdr_marker_conn_ids, which must own schema pgdr "
           "(docs/deployment.md#roles); drop or reassign the objects another role created")
    if schema_owner != writer:
        raise MarkerRefused(f"recovery marker refused, nothing was written: schema pgdr belongs to {schema_owner}, "
                            f"not to {writer}, the role writing markers; {fix}")
    if table_owner is None:
        if table_expected:
            raise MarkerRefused("recovery marker refused, nothing was written: pgdr.recovery_markers is missing")
        return
    if table_owner != writer or relkind != "r":
        raise MarkerRefused(f"recovery marker refused, nothing was written: pgdr.recovery_markers "
                            f"(kind {relkind}) belongs to {table_owner}, not to {writer}; {fix}")
    if triggers or rules:
        raise MarkerRefused(f"recovery marker refused, nothing was written: pgdr.recovery_markers has "
                            f"trigger(s) {triggers or []} / rule(s) {rules or []} that pgdr did not create; "
                            f"they would run as {writer}; drop them after checking who made them")


def record_marker(conn, run_id: str) -> dict:
    """Commit a marker; returns its id, the time it was written and the time its commit returned.

    Refused (:class:`MarkerRefused`, rolled back) when schema pgdr or the marker table belongs to a
    role other than the one writing, or the table has a trigger or rule: the statements run as
    the connection's role, and another role's trigger would run with its rights.
    """
    text = "\n".join(line for line in sql.load("recovery_marker").splitlines() if not line.startswith("--"))
    statements = [s.strip() for s in text.split(";") if s.strip()]
    try:
        with conn.cursor() as cur:
            for statement in statements[:-1]:
                if statement.startswith("CREATE SCHEMA"):
                    check_ownership(cur, table_expected=False)  # before anything is created in it
                    cur.execute("SELECT to_regnamespace('pgdr') IS NOT NULL")
                    if cur.fetchone()[0]:
                        continue  # ours already; CREATE SCHEMA would need CREATE on the database
                cur.execute(statement)
            check_ownership(cur, table_expected=True)
            cur.execute(statements[-1], {"run_id": run_id})
            marker_id, marked_at = cur.fetchone()
    except BaseException:
        conn.rollback()
        raise
    conn.commit()
    acknowledged = datetime.now(timezone.utc)
    return {"id": int(marker_id), "marked_at": marked_at.astimezone(timezone.utc).isoformat(),
            "acknowledged_at": acknowledged.isoformat(), "run_id": run_id}


def marker_conn_id(settings, database: str) -> str:
    """The connection markers are written through: the markers role's (pgdr_marker_conn_ids), else
    the restore connection (then the ownership checks of :func:`record_marker` still apply)."""
    return settings.marker_conn_ids.get(database) or settings.restore_conn_id(database)


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


def markers_found(conn) -> set[int]:
    """The ids of the markers in a recovered database (none before the first marker created the table)."""
    with conn.cursor() as cur:
        cur.execute("SELECT to_regclass('pgdr.recovery_markers') IS NOT NULL")
        (exists,) = cur.fetchone()
        if not exists:
            return set()
        cur.execute("SELECT id FROM pgdr.recovery_markers")
        return {row[0] for row in cur.fetchall()}


def marker_problems(present: set[int], absent: set[int], found: set[int], limit: int = 20) -> list[dict]:
    """What the recovered markers say is wrong: committed before the moment yet missing, or after it yet there."""
    problems = []
    missing, extra = sorted(present - found), sorted(absent & found)
    if missing:
        problems.append({"problem": "markers committed before the moment are missing", "ids": missing[:limit]})
    if extra:
        problems.append({"problem": "markers committed after the moment are present", "ids": extra[:limit]})
    return problems
