"""The backup history page: a :class:`History` rendered to one self-contained HTML file (pure),
and the command line that reads, renders and uploads it.

The markup lives in ``templates/history.html.j2`` (with ``history.css`` inlined), rendered by Jinja2
with autoescaping on, so every value from a record is escaped by the template engine rather than by
hand; nothing is marked safe except the stylesheet, a file of this package. This module only
decides what the page says (which backup is the latest of its kind, which charts a database gets);
the charts' geometry is :mod:`pgdr.report.charts`.

The page carries no script and fetches nothing (inline CSS and SVG), so it opens from S3, a laptop
or an e-mail attachment alike. Its inputs are the typed points of :mod:`pgdr.report.history`
(times, sizes, counts, ids, one-word statuses), never a document or row data.

    PYTHONPATH=plugins python -m pgdr.history --out report.html [--upload] [--days 90]
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path

import jinja2

from pgdr.report.charts import Chart, line_chart, rto_chart, verify_chart
from pgdr.report.history import (
    DEFAULT_DAYS,
    MAX_DAYS,
    MISSING,
    BackupPoint,
    DrillPoint,
    History,
    RestorePoint,
    VerifyPoint,
    collect,
    format_duration,
    format_size,
    format_time,
    publish,
)
from pgdr.store.layout import PAGE_NAME
from pgdr.store.manifest import KINDS

# beside this module, so the templates are found wherever plugins/ is (Airflow's plugins folder,
# an installed package, a checkout)
TEMPLATES = Path(__file__).resolve().parent / "templates"
TEMPLATE_NAME = "history.html.j2"
TITLE = "pgdr backup history"
UNREADABLE_LISTED = 50  # keys of unreadable documents listed on the page; the count says how many in all


@dataclass(frozen=True)
class LatestBackup:
    """A row of the "Latest" table: the newest complete backup of one kind."""
    point: BackupPoint
    age_seconds: float


@dataclass(frozen=True)
class KindCharts:
    kind: str
    size: Chart
    duration: Chart
    chain: Chart | None = None   # base backups with incrementals: what a restore of each downloads


@dataclass(frozen=True)
class Section:
    """What the page shows for one protected database."""
    database: str
    latest_backups: list[LatestBackup]
    verification: VerifyPoint | None  # the latest run
    drill: DrillPoint | None          # the latest drill
    drill_budget: float
    restore: RestorePoint | None      # the latest restore
    kinds: list[KindCharts]
    verify: Chart | None
    verify_runs: int
    verify_failed: int
    rto: Chart | None
    drills: int


def _kind_order(kind: str) -> tuple[int, str]:
    return (KINDS.index(kind) if kind in KINDS else len(KINDS), kind)


def latest_backups(points: list[BackupPoint], now: datetime) -> list[LatestBackup]:
    """The newest backup of each kind (by id, which is its start time), known kinds first."""
    newest: dict[str, BackupPoint] = {}
    for point in sorted(points, key=lambda p: p.backup_id):
        newest[point.kind] = point
    kinds = [k for k in KINDS if k in newest] + sorted(set(newest) - set(KINDS))
    return [LatestBackup(newest[kind], (now - (newest[kind].finished_at or newest[kind].started_at)).total_seconds())
            for kind in kinds]


def size_tip(point: BackupPoint) -> str:
    """A size chart point's tooltip; an incremental's says what it was taken against and its chain's size."""
    tip = f"{point.backup_id}: {format_size(point.size_bytes)} in {point.objects} objects"
    if point.incremental:
        tip += (f", incremental on {point.chain[-1] if point.chain else MISSING}; chain of {len(point.chain) + 1} "
                f"from full {point.chain[0] if point.chain else MISSING}: {format_size(point.chain_size_bytes)}")
    elif point.kind == "base":
        tip += ", full"
    return f"{tip} ({point.status})"


def kind_charts(database: str, kind: str, backups: list[BackupPoint]) -> KindCharts:
    series = sorted((p for p in backups if p.kind == kind), key=lambda p: p.started_at)
    sizes = [(p.started_at, float(p.size_bytes), f"{p.status} {p.backup_type}" if kind == "base" else p.status,
              size_tip(p)) for p in series]
    chain = None
    if any(p.incremental for p in series):
        restore = [(p.started_at, float(p.restore_size_bytes), f"{p.status} {p.backup_type}",
                    f"{p.backup_id}: a restore downloads {format_size(p.restore_size_bytes)} "
                    f"({'its chain of ' + str(len(p.chain) + 1) if p.incremental else 'the full alone'})")
                   for p in series if p.restore_size_bytes is not None]
        chain = line_chart("chain", f"{kind} backup chain size of {database} over time (what a restore downloads)",
                           restore, format_size, database=database, kind=kind)
    durations = [(p.started_at, p.duration_seconds, p.status,
                  f"{p.backup_id}: {format_duration(p.duration_seconds)} ({p.status})")
                 for p in series if p.duration_seconds is not None]
    return KindCharts(
        kind,
        line_chart("size", f"{kind} backup size of {database} over time", sizes, format_size,
                   database=database, kind=kind),
        line_chart("duration", f"{kind} backup duration of {database} over time", durations, format_duration,
                   database=database, kind=kind),
        chain)


def section(history: History, database: str) -> Section:
    backups = [p for p in history.backups if p.database == database]
    verifications = [v for v in history.verifications if v.database == database]
    drills = [d for d in history.drills if d.database == database]
    restores = [r for r in history.restores if r.database == database]
    drill = max(drills, key=lambda d: d.at) if drills else None
    return Section(
        database=database,
        latest_backups=latest_backups(backups, history.generated_at),
        verification=max(verifications, key=lambda r: r.at) if verifications else None,
        drill=drill,
        # the latest line states the latest drill's own budget; the chart's line is rto_budget()'s
        drill_budget=(drill.budget_seconds if drill else None) or history.rto_budget_seconds,
        restore=max(restores, key=lambda r: r.at) if restores else None,
        kinds=[kind_charts(database, kind, backups) for kind in sorted({p.kind for p in backups}, key=_kind_order)],
        verify=verify_chart(database, verifications) if verifications else None,
        verify_runs=len(verifications),
        verify_failed=sum(1 for v in verifications if v.status == "failed"),
        rto=rto_chart(database, drills, history.rto_budget_seconds) if drills else None,
        drills=len(drills),
    )


def _number(value) -> str:
    """A coordinate: a layout constant (int) as is, a computed one to a tenth of a unit."""
    return str(value) if isinstance(value, int) else f"{value:.1f}"


@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.filters.update(size=format_size, duration=format_duration, time=format_time, n=_number)
    env.globals.update(MISSING=MISSING)
    return env


def render_page(history: History) -> str:
    """The whole page as one self-contained HTML document; the template escapes every value."""
    return environment().get_template(TEMPLATE_NAME).render(
        title=TITLE, history=history, generated=history.generated_at.isoformat(timespec="seconds"),
        sections=[section(history, database) for database in history.databases],
        unreadable=history.unreadable[:UNREADABLE_LISTED], unreadable_count=len(history.unreadable))


# --- command line ------------------------------------------------------------------------------

def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pgdr.history",
        description="Render the backup history page from the manifests and reports in S3 (needs "
                    "AIRFLOW_VAR_PGDR_* and the aws connection, e.g. AIRFLOW_CONN_BACKUP_S3).")
    parser.add_argument("--out", required=True, help="the HTML file to write, e.g. report.html")
    parser.add_argument("--upload", action="store_true",
                        help=f"also upload it to <prefix>/reports/{PAGE_NAME}, where pg_backup_verify puts it")
    parser.add_argument("--days", type=int, default=DEFAULT_DAYS,
                        help=f"how far back to show (default {DEFAULT_DAYS}, at most {MAX_DAYS})")
    args = parser.parse_args(list(argv) if argv is not None else None)
    if not 1 <= args.days <= MAX_DAYS:
        parser.error(f"--days must be from 1 to {MAX_DAYS}")

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    log = logging.getLogger("pgdr.history")
    try:
        from pgdr.retain.object_lock import lock_date_from_settings
        from pgdr.settings import load_settings
        from pgdr.store.s3 import BackupStore

        settings = load_settings()
        store = BackupStore.from_settings(settings, log, backup_lock_date=lock_date_from_settings(settings))
        history = collect(store, databases=settings.databases, rto_budget_seconds=settings.rto_budget_minutes * 60,
                          days=args.days, log=log)
    except Exception as err:  # noqa: BLE001 - a clear line, not a traceback (SettingsError, S3)
        print(f"history: cannot read the backup history: {err}", file=sys.stderr)
        return 2
    html = render_page(history)
    try:
        with open(args.out, "w", encoding="utf-8") as handle:
            handle.write(html)
    except OSError as err:
        print(f"history: cannot write {args.out}: {err.strerror}", file=sys.stderr)
        return 2
    print(f"{args.out}: {len(history.backups)} backups, {len(history.verifications)} verification runs, "
          f"{len(history.drills)} drills", file=sys.stderr)
    if args.upload:
        try:
            key = publish(store, html)
        except Exception as err:  # noqa: BLE001
            print(f"history: cannot upload the page: {err}", file=sys.stderr)
            return 2
        print(f"uploaded to s3://{store.bucket}/{key}", file=sys.stderr)
    return 0
