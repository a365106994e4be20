"""The backup history: its points read from the records in S3, and the page's upload.

Sizes and durations of every backup (per database and kind), the verification results of each
``pg_backup_verify`` run check by check, the RTO of each restore drill against the budget, and the
manual restores. :func:`collect` reads S3 through :class:`BackupStore` and returns a
:class:`History`; :mod:`pgdr.report.history_page` turns it into HTML without any I/O; :func:`publish`
uploads the page to ``<prefix>/reports/index.html``.

Only typed fields are taken from the documents: times, sizes, counts, ids and one-word statuses.
A report's summaries, evidence and error texts are never read, and a status, check name, mode or
id that is not one short word is replaced (:func:`word`), so no free text from a record (where an
error could quote a row) reaches the page.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from pgdr.errors import Refused
from pgdr.store.catalog import entries_from_keys
from pgdr.store.layout import backup_prefix, kind_prefix, manifest_key, marker_key, page_key, reports_prefix
from pgdr.store.manifest import KINDS

DEFAULT_DAYS = 90
MAX_DAYS = 3660
# the order checks appear in the verification grid; checks a later version adds follow, by name
CHECK_ORDER = ("freshness", "integrity", "deep_check", "bucket_posture", "wal")
_REPORT_TIME = re.compile(r"^(\d{8}T\d{6}Z)-")
# a status, check name, mode or id as pgdr writes them: one short word. Anything else in a record
# (a sentence, markup, a value quoted from a row) is not shown.
_WORD = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.:+-]{0,79}")
MISSING = "—"


class HistoryError(Refused, ValueError):
    """The history cannot be built as asked (``field`` names the parameter); the message says why."""


# --- the history -------------------------------------------------------------------------------

@dataclass(frozen=True)
class BackupPoint:
    database: str
    kind: str
    backup_id: str
    started_at: datetime
    finished_at: datetime | None
    size_bytes: int
    objects: int
    status: str  # good | bad | unverified
    # base backups (PostgreSQL 17+): "incremental" holds only the blocks changed since ``chain[-1]``; a
    # restore needs every piece of ``chain`` (the full first) too. Other kinds and older manifests: full.
    backup_type: str = "full"
    chain: tuple[str, ...] = ()
    chain_size_bytes: int | None = None   # the chain's stored size with this backup; None: a piece is not found

    @property
    def incremental(self) -> bool:
        return self.backup_type == "incremental"

    @property
    def restore_size_bytes(self) -> int | None:
        """What a restore of this backup downloads: its own size, or its whole chain's."""
        return self.chain_size_bytes if self.incremental else self.size_bytes

    @property
    def duration_seconds(self) -> float | None:
        if self.finished_at is None:
            return None
        return max(0.0, (self.finished_at - self.started_at).total_seconds())


@dataclass(frozen=True)
class VerifyPoint:
    database: str
    at: datetime
    status: str                           # ok | failed
    checks: tuple[tuple[str, str], ...]   # (check, ok | warning | failed)


@dataclass(frozen=True)
class DrillPoint:
    database: str
    at: datetime
    backup_id: str | None
    rto_seconds: float | None
    budget_seconds: float | None
    status: str  # ok | failed


@dataclass(frozen=True)
class RestorePoint:
    database: str
    at: datetime
    status: str  # succeeded | failed | refused
    mode: str | None
    elapsed_seconds: float | None


@dataclass
class History:
    generated_at: datetime
    bucket: str
    prefix: str
    days: int
    databases: tuple[str, ...]
    rto_budget_seconds: float
    backups: list[BackupPoint] = field(default_factory=list)
    verifications: list[VerifyPoint] = field(default_factory=list)
    drills: list[DrillPoint] = field(default_factory=list)
    restores: list[RestorePoint] = field(default_factory=list)
    unreadable: list[str] = field(default_factory=list)  # keys of documents that could not be used


# --- reading documents (pure) ------------------------------------------------------------------

def parse_time(value) -> datetime | None:
    """An ISO time (``Z`` or an offset; naive means UTC) or a backup id, as an aware UTC datetime."""
    if not isinstance(value, str) or not value:
        return None
    try:
        if re.fullmatch(r"\d{8}T\d{6}Z", value):
            return datetime.strptime(value, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return (parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)).astimezone(timezone.utc)


def as_number(value) -> float | None:
    if isinstance(value, bool) or value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def word(value, default: str | None = "unknown") -> str | None:
    """``value`` if it is one short word (a status, check name, mode or id), else ``default``."""
    return value if isinstance(value, str) and _WORD.fullmatch(value) else default


def report_time(key: str) -> datetime | None:
    """The time a report was written, from its name ``<YYYYMMDDTHHMMSSZ>-<database>.json``."""
    match = _REPORT_TIME.match(key.rsplit("/", 1)[-1])
    return parse_time(match.group(1)) if match else None


def backup_point(database: str, kind: str, backup_id: str, manifest: dict, marker: dict | None) -> BackupPoint | None:
    """A backup from its manifest (read as plain JSON, so kinds that add fields still show)."""
    if not isinstance(manifest, dict):
        return None
    started = parse_time(manifest.get("started_at")) or parse_time(backup_id)
    objects = manifest.get("objects")
    if started is None or not isinstance(objects, list):
        return None
    sizes = [as_number(obj.get("size")) for obj in objects if isinstance(obj, dict)]
    if any(size is None for size in sizes):
        return None
    status = "unverified"
    if isinstance(marker, dict) and marker.get("status") in ("good", "bad"):
        status = marker["status"]
    backup_type, chain = "full", ()
    parent = word(manifest.get("depends_on"), None)
    dump = manifest.get("dump") if isinstance(manifest.get("dump"), dict) else {}
    if parent is not None:
        pieces = dump.get("chain") if isinstance(dump.get("chain"), list) else [parent]
        chain = tuple(word(piece, MISSING) for piece in pieces)
        backup_type = "incremental"
    return BackupPoint(database=database, kind=kind, backup_id=backup_id, started_at=started,
                       finished_at=parse_time(manifest.get("finished_at")), size_bytes=int(sum(sizes)),
                       objects=len(sizes), status=status, backup_type=backup_type, chain=chain)


def manifest_size(manifest) -> int | None:
    """The stored size a manifest lists (the sum of its objects'), None when it cannot be read as one."""
    objects = manifest.get("objects") if isinstance(manifest, dict) else None
    if not isinstance(objects, list):
        return None
    sizes = [as_number(obj.get("size")) if isinstance(obj, dict) else None for obj in objects]
    return None if any(size is None for size in sizes) else int(sum(sizes))


def with_chain_sizes(points: list[BackupPoint], sizes: dict[str, int | None]) -> list[BackupPoint]:
    """Each incremental with its chain's stored size: its own and every earlier piece's, from ``points``
    (the same database and kind) or ``sizes`` (pieces read only for this); None when a piece is not found."""
    known = {**sizes, **{p.backup_id: p.size_bytes for p in points}}
    result = []
    for point in points:
        if point.incremental:
            pieces = [known.get(piece) for piece in point.chain]
            total = None if any(size is None for size in pieces) else sum(pieces) + point.size_bytes
            point = dataclasses.replace(point, chain_size_bytes=total)
        result.append(point)
    return result


def verify_point(document: dict, at: datetime | None = None) -> VerifyPoint | None:
    if not isinstance(document, dict) or not isinstance(document.get("results"), list):
        return None
    when = parse_time(document.get("written_at")) or at
    database = document.get("database")
    if when is None or not isinstance(database, str):
        return None
    checks = tuple((word(r.get("check"), "unnamed"), word(r.get("status"))) for r in document["results"]
                   if isinstance(r, dict) and r.get("check"))
    status = "failed" if document.get("status") == "failed" or any(s == "failed" for _, s in checks) else "ok"
    return VerifyPoint(database=database, at=when, status=status, checks=checks)


def drill_point(document: dict, at: datetime | None = None) -> DrillPoint | None:
    if not isinstance(document, dict) or document.get("kind", "drill") != "drill":
        return None
    when = parse_time(document.get("started_at")) or parse_time(document.get("finished_at")) or at
    database = document.get("database")
    if when is None or not isinstance(database, str):
        return None
    return DrillPoint(database=database, at=when, backup_id=word(document.get("backup_id"), None),
                      rto_seconds=as_number(document.get("rto_seconds")),
                      budget_seconds=as_number(document.get("rto_budget_seconds")),
                      status="ok" if document.get("status") == "ok" else "failed")


def restore_point(document: dict, at: datetime | None = None) -> RestorePoint | None:
    if not isinstance(document, dict) or document.get("kind", "restore") != "restore":
        return None
    when = parse_time(document.get("started_at")) or parse_time(document.get("written_at")) or at
    database = document.get("database")
    if when is None or not isinstance(database, str):
        return None
    requested = document.get("requested") if isinstance(document.get("requested"), dict) else {}
    return RestorePoint(database=database, at=when, status=word(document.get("status")),
                        mode=word(requested.get("mode"), None),
                        elapsed_seconds=as_number(document.get("elapsed_seconds")))


# --- collecting from S3 ------------------------------------------------------------------------

def collect(store, *, databases: Iterable[str], rto_budget_seconds: float, days: int = DEFAULT_DAYS,
            now: datetime | None = None, log: logging.Logger | None = None) -> History:
    """Everything the page shows, read from the backup bucket.

    Backups and reports older than ``days`` are left out (the newest backup of each kind is always
    shown, however old), so the page's cost stays flat as the bucket grows.
    """
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= MAX_DAYS:
        raise HistoryError(f"days must be a whole number from 1 to {MAX_DAYS}, got {days!r}", field="days")
    log = log or logging.getLogger(__name__)
    now = now or datetime.now(timezone.utc)
    since = now - timedelta(days=days)
    history = History(generated_at=now, bucket=store.bucket, prefix=store.prefix, days=days,
                      databases=tuple(databases), rto_budget_seconds=float(rto_budget_seconds))

    def read(key: str) -> dict | None:
        try:
            return store.read_json(key)
        except Exception as err:  # noqa: BLE001 - one broken document must not hide the rest
            log.warning("history: cannot read s3://%s/%s: %s", store.bucket, key, type(err).__name__)
            history.unreadable.append(key)
            return None

    for database in history.databases:
        for kind in KINDS:
            base = kind_prefix(store.prefix, database, kind)
            complete = [e for e in entries_from_keys(store.list_keys(base), base) if e.complete]
            points: list[BackupPoint] = []
            for position, entry in enumerate(complete):
                newest = position == len(complete) - 1
                started = parse_time(entry.backup_id)
                if not newest and started is not None and started < since:
                    continue
                prefix = backup_prefix(store.prefix, database, kind, entry.backup_id)
                manifest = read(manifest_key(prefix))
                if manifest is None:
                    continue
                marker = read(marker_key(prefix)) if entry.has_marker else None
                point = backup_point(database, kind, entry.backup_id, manifest, marker)
                if point is None:
                    history.unreadable.append(manifest_key(prefix))
                else:
                    points.append(point)
            # the pieces of a shown incremental's chain that fall before the window: read for their size only
            shown, listed = {p.backup_id for p in points}, {e.backup_id for e in complete}
            earlier: dict[str, int | None] = {}
            for piece in sorted({piece for p in points for piece in p.chain} - shown):
                document = read(manifest_key(backup_prefix(store.prefix, database, kind, piece))) \
                    if piece in listed else None
                earlier[piece] = manifest_size(document)
            history.backups.extend(with_chain_sizes(points, earlier))

    wanted = set(history.databases)
    # each folder's documents of its own kind (a missing "kind" means that one); other kinds there,
    # such as the point-in-time drill's records, are left out rather than reported unreadable
    for folder, parse, target in (("verify", verify_point, history.verifications),
                                  ("drill", drill_point, history.drills),
                                  ("restore", restore_point, history.restores)):
        for key in sorted(store.list_keys(reports_prefix(store.prefix, folder))):
            written = report_time(key)
            if not key.endswith(".json") or written is None or written < since:
                continue
            document = read(key)
            if document is None:
                continue
            if isinstance(document, dict) and document.get("kind", folder) != folder:
                continue
            point = parse(document, written)
            if point is None:
                history.unreadable.append(key)
            elif point.database in wanted:
                target.append(point)
    log.info("history: %d backups, %d verification runs, %d drills, %d restores over %d days (%d unreadable)",
             len(history.backups), len(history.verifications), len(history.drills), len(history.restores),
             days, len(history.unreadable))
    return history


def publish(store, html: str) -> str:
    """Upload the page beside the reports, server-side encrypted like every pgdr object (and, like
    the reports, not Object-Locked: each run supersedes it)."""
    return store.put_bytes(page_key(store.prefix), html.encode("utf-8"), "text/html; charset=utf-8",
                           cache_control="no-cache")


# --- formatting --------------------------------------------------------------------------------

def format_size(value) -> str:
    number = as_number(value)
    if number is None:
        return MISSING
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(number) < 1024 or unit == "TB":
            return f"{int(number)} B" if unit == "B" else f"{number:.1f} {unit}"
        number /= 1024
    return MISSING  # pragma: no cover - the loop always returns


def format_duration(value) -> str:
    """Seconds as ``4.2 s``, ``12 min 05 s``, ``1 h 02 min`` or ``3 d 04 h``."""
    number = as_number(value)
    if number is None:
        return MISSING
    if number < 60:
        return f"{number:.1f} s"
    whole = round(number)
    days, rest = divmod(whole, 86400)
    hours, rest = divmod(rest, 3600)
    minutes, seconds = divmod(rest, 60)
    if days:
        return f"{days} d {hours:02d} h"
    if hours:
        return f"{hours} h {minutes:02d} min"
    return f"{minutes} min {seconds:02d} s"


def format_time(when: datetime | None) -> str:
    return when.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M UTC") if when else MISSING
