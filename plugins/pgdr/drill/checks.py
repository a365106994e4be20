"""The monthly restore drill: what it checks and how its result reads.

A drill restores the newest good backup into a scratch database, compares every
table's row count with the manifest (the restore itself does that), runs the
integrity queries in ``include/sql/drill_checks/`` and measures the recovery time
as download + restore + verify. The record it writes is what the recovery time
table in docs/DISASTER_RECOVERY.md is generated from.
"""

from __future__ import annotations

import re
from pathlib import Path

from pgdr.core.sqlfiles import SQL_DIR
from pgdr.restore.names import with_suffix

CHECKS_DIR = SQL_DIR / "drill_checks"


def scratch_database(database: str, when: str) -> str:
    safe = re.sub(r"[^a-z0-9_]", "_", database.lower())
    return with_suffix(f"pgdr_drill_{safe}", f"_{when}")


def check_files(directory: Path = CHECKS_DIR) -> list[Path]:
    return sorted(directory.glob("*.sql"))


def run_integrity_checks(conn, directory: Path = CHECKS_DIR) -> tuple[list[dict], list[dict]]:
    """Run every check query; returns (all results, the failing ones). Results carry names and counts only."""
    results = []
    with conn.cursor() as cur:
        cur.execute("SET row_security = off")
        for path in check_files(directory):
            cur.execute(path.read_text())
            for check_name, problems, detail in cur.fetchall():
                results.append({"file": path.name, "check": check_name, "problems": int(problems or 0),
                                "detail": detail})
    return results, [r for r in results if r["problems"]]


def drill_problems(*, restore_error: str | None, failing_checks: list[dict], rto_seconds: float | None,
                   projected_rto_seconds: float | None, budget_seconds: float) -> list[dict]:
    """Everything that makes a drill fail, as evidence lines."""
    problems = []
    if restore_error:
        problems.append({"problem": "restore failed", "error": restore_error})
    for check in failing_checks:
        problems.append({"problem": "integrity check failed", "check": check["check"],
                         "rows": check["problems"], "detail": check["detail"]})
    if rto_seconds is not None and rto_seconds > budget_seconds:
        problems.append({"problem": "measured RTO over budget", "rto_seconds": round(rto_seconds, 1),
                         "budget_seconds": budget_seconds})
    if projected_rto_seconds is not None and projected_rto_seconds > budget_seconds:
        problems.append({"problem": "RTO projected for the current database size over budget",
                         "projected_rto_seconds": round(projected_rto_seconds, 1), "budget_seconds": budget_seconds})
    return problems
