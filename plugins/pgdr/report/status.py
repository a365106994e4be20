"""The recovery status of each protected database: from when to when it can be recovered right now,
how much would be lost, and what proves it (the newest good backup of each kind, the last
verification and the last drill).

:func:`collect_status` reads the store (the catalog, the verification markers, the WAL listing, the
reports through :func:`pgdr.report.history.collect`); :func:`database_status` decides the figures
from what was read, without I/O; :func:`render_status` renders them through Jinja2 with autoescaping
(``templates/status.html.j2``). The Airflow plugin (``plugins/pgdr_plugin.py``) serves the page live;
:mod:`pgdr.report.metrics` turns the same figures into gauges.

What counts. Only backups verification marked good count (a backup never verified is not a
backup); a newer backup not yet verified is shown beside. The recovery window opens at the oldest
point a restore reaches: the oldest good logical backup's snapshot, or the end of the oldest good
base backup from which the WAL archive is continuous to the newest WAL (a point-in-time recovery
reaches any moment after it). It closes at the newest WAL shipped along that path (the last commit
that left the site), or, without one, at the newest good logical backup. The worst-case loss if
the site were lost now is the age of the newest WAL shipped: the commits since then exist only on
the primary (and, with the synchronous receiver, in its directory).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timezone
from functools import lru_cache
from pathlib import Path

import jinja2

from pgdr.errors import WalGap
from pgdr.report.history import (
    DEFAULT_DAYS,
    MISSING,
    BackupPoint,
    DrillPoint,
    History,
    VerifyPoint,
    backup_point,
    collect,
    format_duration,
    format_size,
    format_time,
    parse_time,
)
from pgdr.store.catalog import entries_from_keys
from pgdr.store.layout import backup_prefix, kind_prefix, manifest_key, marker_key
from pgdr.store.manifest import KINDS
from pgdr.wal.archive import ArchiveView
from pgdr.wal.names import classify

TEMPLATES = Path(__file__).resolve().parent / "templates"
TEMPLATE_NAME = "status.html.j2"
TITLE = "pgdr recovery status"
GOOD = "good"


@dataclass(frozen=True)
class PitrSpan:
    """A point-in-time recovery reach: from the end of ``base_backup_id`` to the newest WAL along its path."""
    base_backup_id: str
    start: datetime
    end: datetime | None


@dataclass(frozen=True)
class DatabaseFacts:
    """What was read for one database; :func:`database_status` decides the figures from it."""
    database: str
    oldest_good: dict[str, BackupPoint]   # kind -> the oldest backup verification marked good
    pitr: PitrSpan | None                 # None: no good base backup with continuous WAL
    newest_wal_at: datetime | None        # the newest WAL object stored for the database, any path
    wal_gap: str | None = None            # the first missing segment found, when one cut a base backup off


@dataclass(frozen=True)
class KindStatus:
    kind: str
    newest_good: BackupPoint | None
    good_age_seconds: float | None
    newer_unverified: BackupPoint | None   # a newer complete backup verification has not seen yet


@dataclass(frozen=True)
class DatabaseStatus:
    database: str
    window_start: datetime | None
    window_end: datetime | None
    window_from: str            # what opens the window: "base <id> + WAL", "logical <id>" or MISSING
    continuous: bool            # True: a base backup and continuous WAL reach every moment from pitr_start on
    pitr_start: datetime | None   # where point-in-time recovery begins (before it: logical snapshots only)
    pitr_base: str | None         # the base backup it starts from
    newest_wal_at: datetime | None
    wal_lag_seconds: float | None
    wal_gap: str | None
    kinds: list[KindStatus]
    verification: VerifyPoint | None
    verification_failures: int  # failed checks in the last verification run
    drill: DrillPoint | None

    @property
    def window_seconds(self) -> float | None:
        if self.window_start is None or self.window_end is None:
            return None
        return max(0.0, (self.window_end - self.window_start).total_seconds())


@dataclass
class Status:
    generated_at: datetime
    bucket: str
    prefix: str
    databases: list[DatabaseStatus] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)


# --- deciding (pure) ---------------------------------------------------------------------------

def _newest(points: Iterable[BackupPoint]) -> BackupPoint | None:
    return max(points, key=lambda p: p.backup_id, default=None)


def kind_status(kind: str, points: list[BackupPoint], now: datetime) -> KindStatus:
    mine = [p for p in points if p.kind == kind]
    good = _newest(p for p in mine if p.status == GOOD)
    newest = _newest(p for p in mine if p.status != "bad")
    age = (now - (good.finished_at or good.started_at)).total_seconds() if good else None
    return KindStatus(kind, good, age, newest if newest is not None and newest is not good
                      and newest.status != GOOD else None)


def database_status(facts: DatabaseFacts, history: History) -> DatabaseStatus:
    now = history.generated_at
    backups = [p for p in history.backups if p.database == facts.database]
    verifications = [v for v in history.verifications if v.database == facts.database]
    drills = [d for d in history.drills if d.database == facts.database]
    kinds = sorted({p.kind for p in backups} | set(facts.oldest_good),
                   key=lambda k: (KINDS.index(k) if k in KINDS else len(KINDS), k))
    statuses = [kind_status(kind, backups, now) for kind in kinds]

    # the window: the earliest point either path reaches, to the latest
    starts: list[tuple[datetime, str]] = []
    ends: list[datetime] = []
    logical_oldest = facts.oldest_good.get("logical")
    if logical_oldest is not None:
        starts.append((logical_oldest.started_at, f"logical {logical_oldest.backup_id}"))
    logical_newest = next((s.newest_good for s in statuses if s.kind == "logical"), None)
    if logical_newest is not None:
        ends.append(logical_newest.started_at)
    if facts.pitr is not None:
        starts.append((facts.pitr.start, f"base {facts.pitr.base_backup_id} + WAL"))
        if facts.pitr.end is not None:
            ends.append(facts.pitr.end)
    start, opened_by = min(starts) if starts else (None, MISSING)
    end = max(ends) if ends else None
    if start is not None and end is not None and end < start:
        end = start
    verification = max(verifications, key=lambda v: v.at) if verifications else None
    return DatabaseStatus(
        database=facts.database, window_start=start, window_end=end, window_from=opened_by,
        continuous=facts.pitr is not None and facts.pitr.end is not None,
        pitr_start=facts.pitr.start if facts.pitr else None,
        pitr_base=facts.pitr.base_backup_id if facts.pitr else None,
        newest_wal_at=facts.newest_wal_at,
        wal_lag_seconds=max(0.0, (now - facts.newest_wal_at).total_seconds()) if facts.newest_wal_at else None,
        wal_gap=facts.wal_gap, kinds=statuses, verification=verification,
        verification_failures=sum(1 for _, s in verification.checks if s == "failed") if verification else 0,
        drill=max(drills, key=lambda d: d.at) if drills else None)


# --- reading the store -------------------------------------------------------------------------

def _oldest_good(store, database: str, kind: str, read) -> BackupPoint | None:
    """The oldest complete backup whose marker says good (markers read oldest first, until one is)."""
    base = kind_prefix(store.prefix, database, kind)
    for entry in entries_from_keys(store.list_keys(base), base):
        if not (entry.complete and entry.has_marker):
            continue
        prefix = backup_prefix(store.prefix, database, kind, entry.backup_id)
        marker = read(marker_key(prefix))
        if not isinstance(marker, dict) or marker.get("status") != GOOD:
            continue
        manifest = read(manifest_key(prefix))
        point = backup_point(database, kind, entry.backup_id, manifest, marker) if manifest else None
        if point is not None:
            return point
    return None


def _pitr(store, database: str, log: logging.Logger, read) -> tuple[PitrSpan | None, datetime | None, str | None]:
    """(the reach of the oldest good base backup whose WAL is continuous to the newest, the newest WAL
    object's time, the first gap met). Base backups are tried oldest first; one cut off by a gap or
    left on an abandoned timeline gives way to the next."""
    view = ArchiveView(store, database)
    newest_wal = max((modified for key, modified in view.listed if modified is not None
                      and classify(key.rsplit("/", 1)[-1].removesuffix(".zst")) in ("segment", "partial")),
                     default=None)
    base = kind_prefix(store.prefix, database, "base")
    gap = None
    for entry in entries_from_keys(store.list_keys(base), base):
        if not (entry.complete and entry.has_marker):
            continue
        prefix = backup_prefix(store.prefix, database, "base", entry.backup_id)
        marker = read(marker_key(prefix))
        if not isinstance(marker, dict) or marker.get("status") != GOOD:
            continue
        try:
            manifest = store.read_manifest(manifest_key(prefix))
            plan = view.continuity(manifest)
        except WalGap as err:
            gap = gap or err.segment
            continue
        except Exception as err:  # noqa: BLE001 - one unreadable backup must not hide the others
            log.warning("status: base backup %s of %s not usable: %s", entry.backup_id, database,
                        type(err).__name__)
            continue
        if plan is None:
            continue
        start = parse_time(manifest.finished_at) or parse_time(entry.backup_id)
        if start is not None:
            return PitrSpan(entry.backup_id, start, plan.newest_time), newest_wal, gap
    return None, newest_wal, gap


def collect_status(store, *, databases: Iterable[str], rto_budget_seconds: float, days: int = DEFAULT_DAYS,
                   physical: bool = True, now: datetime | None = None, log: logging.Logger | None = None,
                   history: History | None = None) -> tuple[Status, History]:
    """The status of every database, read from the backup bucket; also the :class:`History` it was
    built from (pass one in to reuse what the history page already read)."""
    log = log or logging.getLogger(__name__)
    now = now or datetime.now(timezone.utc)
    databases = tuple(databases)
    if history is None:
        history = collect(store, databases=databases, rto_budget_seconds=rto_budget_seconds, days=days,
                          now=now, log=log)
    status = Status(generated_at=history.generated_at, bucket=store.bucket, prefix=store.prefix,
                    unreadable=list(history.unreadable))

    def read(key: str):
        try:
            return store.read_json(key)
        except Exception as err:  # noqa: BLE001 - listed as unreadable, the rest still shown
            log.warning("status: cannot read s3://%s/%s: %s", store.bucket, key, type(err).__name__)
            status.unreadable.append(key)
            return None

    for database in databases:
        oldest = {kind: point for kind in KINDS
                  if (point := _oldest_good(store, database, kind, read)) is not None}
        pitr, newest_wal, gap = _pitr(store, database, log, read) if physical else (None, None, None)
        facts = DatabaseFacts(database, oldest, pitr, newest_wal, gap)
        status.databases.append(database_status(facts, history))
    return status, history


# --- the page ----------------------------------------------------------------------------------

@lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=True,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.filters.update(size=format_size, duration=format_duration, time=format_time)
    env.globals.update(MISSING=MISSING)
    return env


def render_status(status: Status, *, history_href: str = "history", unreadable_listed: int = 50) -> str:
    """The status page as one self-contained HTML document (no script; the template escapes every value)."""
    return environment().get_template(TEMPLATE_NAME).render(
        title=TITLE, status=status, generated=status.generated_at.isoformat(timespec="seconds"),
        history_href=history_href, unreadable=status.unreadable[:unreadable_listed],
        unreadable_count=len(status.unreadable))
