"""Rows with known ages added to a synthetic care-commons database, for the retention tests.

The synthetic generator (harness/synthetic.py) already spreads eight years of history; these rows
sit on purpose either side of the cutoffs of the default policy (include/data_retention_policy.yaml)
so each case has a named row whose fate a test can check. Every visit has the visit number
``AGED-<case>`` and every other row points at such a visit or carries ``metadata.aged_case``.

    insert_aged_rows(conn, today) -> {case: {"visit": id, "evv": id, "revisions": [ids], ...}}
"""

from __future__ import annotations

import calendar
import uuid
from datetime import date, datetime, time, timedelta, timezone

# case -> (visit date: (years, days) before today, soft-deleted: (years, days) before today or None,
#          with an EVV record (and two revisions) dated like the visit)
VISIT_CASES = {
    # purged: soft-deleted three years ago, the visit past the six-year floor, nothing references it
    "old_deleted_free": ((6, 30), (3, 0), False),
    # purged: one day past the floor
    "floor_plus_day_deleted": ((6, 1), (3, 0), False),
    # kept: one day short of the floor, though soft-deleted three years ago
    "floor_minus_day_deleted": ((5, 364), (3, 0), False),
    # kept: the seed's bug. A recent visit soft-deleted long ago (18 months) is still a health record.
    "recent_deleted_long_ago": ((2, 0), (1, 180), False),
    # kept: past the floor and soft-deleted long ago, but its EVV record (six and a half years) refers to it
    "old_deleted_with_evv": ((6, 180), (3, 0), True),
    # kept: past the floor but soft-deleted only 100 days ago
    "old_deleted_recently": ((6, 180), (0, 100), False),
    # EVV revisions and record archived, then the visit soft-deleted (now)
    "very_old_with_evv": ((7, 180), None, True),
    # EVV revisions and record archived, then the visit, soft-deleted two years ago, purged in the same run
    "very_old_deleted_with_evv": ((7, 180), (2, 0), True),
    # not touched: six and a half years old and not soft-deleted
    "old_live": ((6, 180), None, False),
}

# case -> (years, days) before today of an audit event
AUDIT_CASES = {
    "audit_archived": (7, 30),
    "audit_just_archived": (7, 1),
    "audit_kept_under_seven": (6, 364),
    "audit_kept_recent": (1, 0),
}


def years_before(day: date, years: int, days: int = 0) -> date:
    """Calendar years before ``day`` (29 February falls back to the 28th), then ``days`` more."""
    year = day.year - years
    return day.replace(year=year, day=min(day.day, calendar.monthrange(year, day.month)[1])) - timedelta(days=days)


def _at(day: date, hour: int = 12) -> datetime:
    return datetime.combine(day, time(hour), tzinfo=timezone.utc)


def _id(case: str, kind: str) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"pgdr-aged/{case}/{kind}"))


def insert_aged_rows(conn, today: date) -> dict[str, dict]:
    """Insert the cases (as a superuser connection in autocommit) and return their ids by case."""
    out: dict[str, dict] = {}
    with conn.cursor() as cur:
        cur.execute("SET TimeZone = 'UTC'")
        cur.execute("SELECT c.id, c.organization_id, c.branch_id FROM clients c ORDER BY c.client_number LIMIT 1")
        client_id, org_id, branch_id = cur.fetchone()
        cur.execute("SELECT id FROM caregivers ORDER BY employee_number LIMIT 1")
        (caregiver_id,) = cur.fetchone()
        for case, (visit_age, deleted_age, with_evv) in VISIT_CASES.items():
            day = years_before(today, *visit_age)
            deleted_at = _at(years_before(today, *deleted_age), 9) if deleted_age else None
            visit_id = _id(case, "visit")
            cur.execute(
                """
                INSERT INTO visits (id, organization_id, branch_id, client_id, caregiver_id, visit_number, visit_type,
                    scheduled_date, scheduled_start_time, scheduled_end_time, scheduled_duration, status, address,
                    created_at, updated_at, deleted_at)
                VALUES (%s, %s, %s, %s, %s, %s, 'PERSONAL_CARE', %s, '09:00', '11:00', 120,
                        CASE WHEN %s THEN 'COMPLETED' ELSE 'CANCELLED' END, '{"city": "Aged"}'::jsonb, %s, %s, %s)
                """,
                (visit_id, org_id, branch_id, client_id, caregiver_id, f"AGED-{case}", day, with_evv,
                 _at(day - timedelta(days=10)), _at(day), deleted_at))
            entry: dict = {"visit": visit_id, "scheduled_date": day, "deleted_at": deleted_at}
            if with_evv:
                evv_id = _id(case, "evv")
                cur.execute(
                    """
                    INSERT INTO evv_records (id, visit_id, organization_id, branch_id, client_id, caregiver_id,
                        service_date, clock_in_time, clock_out_time, verification_method, integrity_hash, recorded_at)
                    VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s, 'GPS', md5(%s) || md5(%s), %s)
                    """,
                    (evv_id, visit_id, org_id, branch_id, client_id, caregiver_id, day, _at(day, 9), _at(day, 11),
                     case, evv_id, _at(day, 11)))
                revisions = []
                for number, kind in ((1, "CREATE"), (2, "CLOCK_OUT")):
                    revision_id = _id(case, f"revision-{number}")
                    cur.execute(
                        """
                        INSERT INTO evv_revisions (id, evv_record_id, revision_number, revision_type, new_values,
                            revised_at, revision_hash)
                        VALUES (%s, %s, %s, %s, '{"aged": true}'::jsonb, %s, md5(%s) || md5(%s))
                        """,
                        (revision_id, evv_id, number, kind, _at(day, 9 + 2 * (number - 1)), revision_id, case))
                    revisions.append(revision_id)
                entry.update(evv=evv_id, revisions=revisions)
            out[case] = entry
        for case, age in AUDIT_CASES.items():
            event_id = _id(case, "audit")
            moment = _at(years_before(today, *age))
            cur.execute(
                """
                INSERT INTO audit_events (event_id, "timestamp", organization_id, event_type, resource, action, result,
                    metadata)
                VALUES (%s, %s, %s, 'PHI_ACCESS', 'client', 'READ', 'SUCCESS',"""
                """ jsonb_build_object('aged_case', %s::text))
                """,
                (event_id, moment, org_id, case))
            out[case] = {"audit": event_id, "timestamp": moment}
    return out
