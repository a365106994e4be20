"""The backup history page: one static HTML file that shows how the backups have been doing.

Sizes and durations of every backup (per database and kind), the verification results of each
``pg_backup_verify`` run check by check, the RTO of each restore drill against the budget, and a
"latest" panel with the newest backup of each kind, the latest verification and the latest drill.

The page is self-contained (inline CSS and SVG, no script, nothing fetched), so it opens from S3,
a laptop or an e-mail attachment alike, and it carries counts, sizes, ids and times only: it is
built from manifests and reports, never from row data.

Reading is kept apart from rendering: :func:`collect` reads S3 through :class:`BackupStore` and
returns a :class:`History`; :func:`render_page` turns a History into HTML without any I/O;
:func:`publish` uploads it to ``<prefix>/reports/index.html``. ``pg_backup_verify`` runs all three
after its reports; so does the command line (``make report``)::

    PYTHONPATH=plugins python -m pgdr.history --out report.html [--upload] [--days 90]
"""

from __future__ import annotations

import argparse
import logging
import math
import re
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone
from html import escape

from pgdr.catalog import MARKER_NAME, entries_from_keys
from pgdr.manifest import KINDS, MANIFEST_NAME

PAGE_NAME = "index.html"
DEFAULT_DAYS = 90
MAX_DAYS = 3660
# the order checks appear in the verification grid; checks a later version adds follow, by name
CHECK_ORDER = ("freshness", "integrity", "deep_check", "bucket_posture", "wal")
_REPORT_TIME = re.compile(r"^(\d{8}T\d{6}Z)-")
MISSING = "—"


class HistoryError(ValueError):
    """The history cannot be built as asked; the message says why."""


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
    return BackupPoint(database=database, kind=kind, backup_id=backup_id, started_at=started,
                       finished_at=parse_time(manifest.get("finished_at")), size_bytes=int(sum(sizes)),
                       objects=len(sizes), status=status)


def verify_point(document: dict, at: datetime | None = None) -> VerifyPoint | None:
    if not isinstance(document, dict) or not isinstance(document.get("results"), list):
        return None
    when = parse_time(document.get("written_at")) or at
    database = document.get("database")
    if when is None or not isinstance(database, str):
        return None
    checks = tuple((str(r.get("check")), str(r.get("status"))) for r in document["results"]
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
    backup_id = document.get("backup_id")
    return DrillPoint(database=database, at=when, backup_id=backup_id if isinstance(backup_id, str) else None,
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
    mode = requested.get("mode")
    return RestorePoint(database=database, at=when, status=str(document.get("status") or "unknown"),
                        mode=mode if isinstance(mode, str) else None,
                        elapsed_seconds=as_number(document.get("elapsed_seconds")))


# --- collecting from S3 ------------------------------------------------------------------------

def collect(store, *, databases: Iterable[str], rto_budget_seconds: float, days: int = DEFAULT_DAYS,
            now: datetime | None = None, log: logging.Logger | None = None) -> History:
    """Everything the page shows, read from the backup bucket.

    Backups and reports older than ``days`` are left out (the newest backup of each kind is always
    shown, however old), so the page's cost stays flat as the bucket grows.
    """
    if not isinstance(days, int) or isinstance(days, bool) or not 1 <= days <= MAX_DAYS:
        raise HistoryError(f"days must be a whole number from 1 to {MAX_DAYS}, got {days!r}")
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
            base = f"{store.prefix}/{database}/{kind}/"
            complete = [e for e in entries_from_keys(store.list_keys(base), base) if e.complete]
            for position, entry in enumerate(complete):
                newest = position == len(complete) - 1
                started = parse_time(entry.backup_id)
                if not newest and started is not None and started < since:
                    continue
                manifest = read(f"{base}{entry.backup_id}/{MANIFEST_NAME}")
                if manifest is None:
                    continue
                marker = read(f"{base}{entry.backup_id}/{MARKER_NAME}") if entry.has_marker else None
                point = backup_point(database, kind, entry.backup_id, manifest, marker)
                if point is None:
                    history.unreadable.append(f"{base}{entry.backup_id}/{MANIFEST_NAME}")
                else:
                    history.backups.append(point)

    wanted = set(history.databases)
    # each folder's documents of its own kind (a missing "kind" means that one); other kinds there,
    # such as the point-in-time drill's records, are left out rather than reported unreadable
    for folder, parse, target in (("verify", verify_point, history.verifications),
                                  ("drill", drill_point, history.drills),
                                  ("restore", restore_point, history.restores)):
        for key in sorted(store.list_keys(f"{store.prefix}/reports/{folder}")):
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


def page_key(prefix: str) -> str:
    return f"{prefix}/reports/{PAGE_NAME}"


def publish(store, html: str) -> str:
    """Upload the page beside the reports, server-side encrypted like every pgdr object (and, like
    the reports, not Object-Locked: each run supersedes it)."""
    key = page_key(store.prefix)
    store.client.put_object(Bucket=store.bucket, Key=key, Body=html.encode("utf-8"),
                            ContentType="text/html; charset=utf-8", CacheControl="no-cache",
                            ChecksumAlgorithm="SHA256", **store.sse_args, **store.lock_args(key))
    return key


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


def _e(value) -> str:
    return escape(str(value), quote=True)


# --- SVG charts (pure) -------------------------------------------------------------------------

WIDTH, HEIGHT = 560, 190
LEFT, RIGHT, TOP, BOTTOM = 70, 14, 14, 30


def _x_scale(times: list[datetime]) -> Callable[[datetime], float]:
    first, last = min(times), max(times)
    span = (last - first).total_seconds()
    inner = WIDTH - LEFT - RIGHT
    if span <= 0:
        return lambda when: LEFT + inner / 2
    return lambda when: LEFT + inner * (when - first).total_seconds() / span


def _y_scale(top: float) -> Callable[[float], float]:
    inner = HEIGHT - TOP - BOTTOM
    top = top if top > 0 else 1.0
    return lambda value: TOP + inner * (1 - max(0.0, value) / top)


def _axes(times: list[datetime], top: float, fmt: Callable[[float], str]) -> list[str]:
    y = _y_scale(top)
    parts = [f'<line class="axis" x1="{LEFT}" y1="{TOP}" x2="{LEFT}" y2="{HEIGHT - BOTTOM}"/>',
             f'<line class="axis" x1="{LEFT}" y1="{HEIGHT - BOTTOM}" x2="{WIDTH - RIGHT}" y2="{HEIGHT - BOTTOM}"/>']
    for fraction in (0.5, 1.0):
        value = top * fraction
        parts.append(f'<line class="grid" x1="{LEFT}" y1="{y(value):.1f}" x2="{WIDTH - RIGHT}" y2="{y(value):.1f}"/>')
        parts.append(f'<text class="tick" x="{LEFT - 6}" y="{y(value) + 4:.1f}" text-anchor="end">'
                     f"{_e(fmt(value))}</text>")
    parts.append(f'<text class="tick" x="{LEFT - 6}" y="{HEIGHT - BOTTOM + 4}" text-anchor="end">0</text>')
    first, last = min(times), max(times)
    span_days = (last - first).total_seconds() / 86400
    label = (lambda t: t.strftime("%Y-%m-%d")) if span_days >= 2 else (lambda t: t.strftime("%m-%d %H:%M"))
    parts.append(f'<text class="tick" x="{LEFT}" y="{HEIGHT - 10}" text-anchor="start">{_e(label(first))}</text>')
    if last != first:
        parts.append(f'<text class="tick" x="{WIDTH - RIGHT}" y="{HEIGHT - 10}" text-anchor="end">'
                     f"{_e(label(last))}</text>")
    return parts


def _svg(chart: str, label: str, body: list[str], **data) -> str:
    attributes = "".join(f' data-{name.replace("_", "-")}="{_e(value)}"' for name, value in data.items())
    return (f'<svg class="chart" data-chart="{_e(chart)}"{attributes} viewBox="0 0 {WIDTH} {HEIGHT}" '
            f'role="img" aria-label="{_e(label)}"><title>{_e(label)}</title>' + "".join(body) + "</svg>")


def line_chart(chart: str, label: str, points: list[tuple[datetime, float, str, str]],
               fmt: Callable[[float], str], **data) -> str:
    """A time series: ``points`` are (time, value, css class, tooltip); one circle per point."""
    points = sorted(points, key=lambda p: p[0])
    if not points:
        empty = f'<text class="tick" x="{WIDTH / 2}" y="{HEIGHT / 2}" text-anchor="middle">nothing measured</text>'
        return _svg(chart, label, [empty], points=0, **data)
    times = [p[0] for p in points]
    top = max((p[1] for p in points), default=0.0) * 1.1
    x, y = _x_scale(times), _y_scale(top)
    body = _axes(times, top or 1.0, fmt)
    if len(points) > 1:
        coordinates = " ".join(f"{x(t):.1f},{y(v):.1f}" for t, v, _, _ in points)
        body.append(f'<polyline class="series" points="{coordinates}"/>')
    for when, value, css, tip in points:
        body.append(f'<circle class="point {_e(css)}" cx="{x(when):.1f}" cy="{y(value):.1f}" r="3.5">'
                    f'<title>{_e(tip)}</title></circle>')
    return _svg(chart, label, body, points=len(points), **data)


def rto_chart(database: str, drills: list[DrillPoint], default_budget: float) -> str:
    """One bar per drill; the budget as a dashed line. A drill that measured nothing gets a stub bar."""
    drills = sorted(drills, key=lambda d: d.at)
    budget = next((d.budget_seconds for d in reversed(drills) if d.budget_seconds), None) or default_budget
    top = max([budget] + [d.rto_seconds or 0.0 for d in drills]) * 1.1
    times = [d.at for d in drills]
    x, y = _x_scale(times), _y_scale(top)
    inner = WIDTH - LEFT - RIGHT
    bar = max(2.0, min(24.0, inner / max(1, len(drills)) * 0.6))
    body = _axes(times, top, format_duration)
    for drill in drills:
        over = drill.rto_seconds is not None and drill.rto_seconds > (drill.budget_seconds or budget)
        css = "failed" if drill.status != "ok" or drill.rto_seconds is None else ("over" if over else "ok")
        value = drill.rto_seconds if drill.rto_seconds is not None else top * 0.03
        height = (HEIGHT - BOTTOM) - y(value)
        left = min(max(LEFT, x(drill.at) - bar / 2), WIDTH - RIGHT - bar)
        tip = (f"{format_time(drill.at)} backup {drill.backup_id or MISSING}: RTO "
               f"{format_duration(drill.rto_seconds)} ({drill.status})")
        body.append(f'<rect class="bar {css}" x="{left:.1f}" y="{y(value):.1f}" width="{bar:.1f}" '
                    f'height="{max(1.0, height):.1f}"><title>{_e(tip)}</title></rect>')
    body.append(f'<line class="budget" x1="{LEFT}" y1="{y(budget):.1f}" x2="{WIDTH - RIGHT}" y2="{y(budget):.1f}"/>')
    body.append(f'<text class="budget-label" x="{WIDTH - RIGHT - 4}" y="{y(budget) - 5:.1f}" text-anchor="end">'
                f'budget {_e(format_duration(budget))}</text>')
    return _svg("rto", f"Drill RTO of {database} against the budget", body, database=database,
                bars=len(drills), budget_seconds=f"{budget:g}")


def _check_names(runs: list[VerifyPoint]) -> list[str]:
    seen = {name for run in runs for name, _ in run.checks}
    return [c for c in CHECK_ORDER if c in seen] + sorted(seen - set(CHECK_ORDER))


def verify_chart(database: str, runs: list[VerifyPoint]) -> str:
    """A grid: one row per check, one column per verification run (oldest left), a cell per result."""
    runs = sorted(runs, key=lambda r: r.at)
    names = _check_names(runs)
    row, left = 22.0, 104
    height = TOP + row * max(1, len(names)) + BOTTOM
    inner = WIDTH - left - RIGHT
    column = inner / max(1, len(runs))
    body = []
    for index, name in enumerate(names):
        body.append(f'<text class="tick" x="{left - 6}" y="{TOP + row * index + row / 2 + 4:.1f}" '
                    f'text-anchor="end">{_e(name)}</text>')
    cells = 0
    for position, run in enumerate(runs):
        results = dict(run.checks)
        for index, name in enumerate(names):
            status = results.get(name, "missing")
            css = status if status in ("ok", "warning", "failed") else "missing"
            body.append(f'<rect class="cell {css}" x="{left + column * position + 0.5:.1f}" '
                        f'y="{TOP + row * index + 1:.1f}" width="{max(1.0, column - 1):.1f}" height="{row - 2:.1f}">'
                        f'<title>{_e(format_time(run.at))} {_e(name)}: {_e(status)}</title></rect>')
            cells += 1
    if runs:
        first, last = runs[0].at, runs[-1].at
        body.append(f'<text class="tick" x="{left}" y="{height - 10:.1f}" text-anchor="start">'
                    f'{_e(format_time(first))}</text>')
        if last != first:
            body.append(f'<text class="tick" x="{WIDTH - RIGHT}" y="{height - 10:.1f}" text-anchor="end">'
                        f'{_e(format_time(last))}</text>')
    label = f"Verification results of {database}, check by check"
    return (f'<svg class="chart" data-chart="verify" data-database="{_e(database)}" data-runs="{len(runs)}" '
            f'data-checks="{len(names)}" data-cells="{cells}" viewBox="0 0 {WIDTH} {height:.0f}" role="img" '
            f'aria-label="{_e(label)}"><title>{_e(label)}</title>' + "".join(body) + "</svg>")


# --- the page (pure) ---------------------------------------------------------------------------

STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",sans-serif;margin:0;color:#1d2733;background:#f5f7fa}
header{background:#1d3557;color:#fff;padding:16px 24px}header h1{margin:0;font-size:20px}
header p{margin:4px 0 0;color:#c9d6e8;font-size:13px}
main{padding:16px 24px;max-width:1240px}
section.database{background:#fff;border:1px solid #dde3ea;border-radius:6px;padding:12px 16px;margin:0 0 18px}
h2{font-size:17px;margin:4px 0 10px}h3{font-size:14px;margin:14px 0 6px;color:#34495e}
table{border-collapse:collapse;margin:4px 0 8px}th,td{text-align:left;padding:4px 10px;border-bottom:1px solid #e8ecf1}
th{font-weight:600;color:#4a5a6a;font-size:12px;text-transform:uppercase;letter-spacing:.03em}
td.num{text-align:right;font-variant-numeric:tabular-nums}code{font-size:13px}
.badge{display:inline-block;padding:1px 7px;border-radius:9px;font-size:12px;font-weight:600;margin:0 3px 2px 0}
.badge.ok,.badge.good,.badge.succeeded{background:#d8f3dc;color:#1b5e20}
.badge.warning,.badge.unverified,.badge.refused{background:#fff3cd;color:#7a5a00}
.badge.failed,.badge.bad,.badge.over{background:#fde2e1;color:#9b1c1c}
.charts{display:flex;flex-wrap:wrap;gap:12px}.charts figure{margin:0;flex:1 1 460px;max-width:580px}
figcaption{font-size:12px;color:#4a5a6a;margin:0 0 2px}
svg.chart{width:100%;height:auto;background:#fbfcfd;border:1px solid #e8ecf1;border-radius:4px}
svg .axis{stroke:#8a99a8;stroke-width:1}svg .grid{stroke:#e3e8ee;stroke-width:1}
svg .tick,svg .budget-label{font-size:11px;fill:#4a5a6a}
svg .series{fill:none;stroke:#1f77b4;stroke-width:2}
svg .point{fill:#1f77b4;stroke:#fff;stroke-width:1}svg .point.bad{fill:#d62728}
svg .point.unverified{fill:#fff;stroke:#1f77b4;stroke-width:1.5}
svg .bar.ok{fill:#2ca02c}svg .bar.over{fill:#ff7f0e}svg .bar.failed{fill:#d62728}
svg .budget{stroke:#d62728;stroke-width:1.5;stroke-dasharray:6 4}
svg .cell.ok{fill:#2ca02c}svg .cell.warning{fill:#f2b705}svg .cell.failed{fill:#d62728}svg .cell.missing{fill:#d5dbe1}
.empty{color:#6b7a89;font-style:italic}.note{color:#6b7a89;font-size:12px}
"""


def _badge(status: str) -> str:
    return f'<span class="badge {_e(status)}">{_e(status)}</span>'


def _latest_backups(points: list[BackupPoint], now: datetime) -> str:
    newest: dict[str, BackupPoint] = {}
    for point in sorted(points, key=lambda p: p.backup_id):
        newest[point.kind] = point
    if not newest:
        return '<p class="empty">No complete backup yet.</p>'
    rows = []
    for kind in [k for k in KINDS if k in newest] + sorted(set(newest) - set(KINDS)):
        point = newest[kind]
        age = (now - (point.finished_at or point.started_at)).total_seconds()
        rows.append(
            f'<tr class="latest-backup" data-kind="{_e(kind)}"><td>{_e(kind)}</td>'
            f'<td class="backup-id"><code>{_e(point.backup_id)}</code></td>'
            f'<td class="num size" data-bytes="{point.size_bytes}">{_e(format_size(point.size_bytes))}</td>'
            f'<td class="num duration">{_e(format_duration(point.duration_seconds))}</td>'
            f'<td class="num age">{_e(format_duration(age))}</td><td>{_badge(point.status)}</td></tr>')
    return ("<table><thead><tr><th>Kind</th><th>Newest backup</th><th>Size</th><th>Duration</th><th>Age</th>"
            "<th>Verification</th></tr></thead><tbody>" + "".join(rows) + "</tbody></table>")


def _latest_line(database: str, verifications: list[VerifyPoint], drills: list[DrillPoint],
                 restores: list[RestorePoint], default_budget: float) -> str:
    parts = []
    if verifications:
        run = max(verifications, key=lambda r: r.at)
        checks = "".join(f'<span class="badge {_e(s)}" title="{_e(c)}">{_e(c)}: {_e(s)}</span>' for c, s in run.checks)
        parts.append(f'<p class="latest-verify">Latest verification <b>{_e(format_time(run.at))}</b>: '
                     f'{_badge(run.status)} {checks}</p>')
    else:
        parts.append('<p class="latest-verify empty">No verification report in this period.</p>')
    if drills:
        drill = max(drills, key=lambda d: d.at)
        budget = drill.budget_seconds or default_budget
        parts.append(f'<p class="latest-drill">Latest restore drill <b>{_e(format_time(drill.at))}</b> '
                     f'(backup <code>{_e(drill.backup_id or MISSING)}</code>): RTO '
                     f'<b class="rto">{_e(format_duration(drill.rto_seconds))}</b> of a '
                     f'{_e(format_duration(budget))} budget {_badge(drill.status)}</p>')
    else:
        parts.append('<p class="latest-drill empty">No restore drill in this period.</p>')
    if restores:
        restore = max(restores, key=lambda r: r.at)
        parts.append(f'<p class="latest-restore">Latest restore <b>{_e(format_time(restore.at))}</b>'
                     f'{" (" + _e(restore.mode) + ")" if restore.mode else ""}: {_badge(restore.status)} in '
                     f'{_e(format_duration(restore.elapsed_seconds))}</p>')
    return "".join(parts)


def _database_section(history: History, database: str) -> str:
    now = history.generated_at
    backups = [p for p in history.backups if p.database == database]
    verifications = [v for v in history.verifications if v.database == database]
    drills = [d for d in history.drills if d.database == database]
    restores = [r for r in history.restores if r.database == database]
    html = [f'<section class="database" data-database="{_e(database)}"><h2>{_e(database)}</h2>',
            '<div class="latest"><h3>Latest</h3>', _latest_backups(backups, now),
            _latest_line(database, verifications, drills, restores, history.rto_budget_seconds), "</div>"]

    html.append("<h3>Backups</h3>")
    kinds = sorted({p.kind for p in backups}, key=lambda k: (KINDS.index(k) if k in KINDS else len(KINDS), k))
    if not kinds:
        html.append('<p class="empty">No complete backup yet.</p>')
    for kind in kinds:
        series = sorted((p for p in backups if p.kind == kind), key=lambda p: p.started_at)
        sizes = [(p.started_at, float(p.size_bytes), p.status,
                  f"{p.backup_id}: {format_size(p.size_bytes)} in {p.objects} objects ({p.status})") for p in series]
        durations = [(p.started_at, p.duration_seconds, p.status,
                      f"{p.backup_id}: {format_duration(p.duration_seconds)} ({p.status})")
                     for p in series if p.duration_seconds is not None]
        html.append('<div class="charts">')
        html.append(f"<figure><figcaption>{_e(kind)} backup size (stored)</figcaption>"
                    + line_chart("size", f"{kind} backup size of {database} over time", sizes, format_size,
                                 database=database, kind=kind) + "</figure>")
        html.append(f"<figure><figcaption>{_e(kind)} backup duration</figcaption>"
                    + line_chart("duration", f"{kind} backup duration of {database} over time", durations,
                                 format_duration, database=database, kind=kind) + "</figure>")
        html.append("</div>")

    html.append('<h3>Verification and restore drills</h3><div class="charts">')
    if verifications:
        failed = sum(1 for v in verifications if v.status == "failed")
        html.append(f"<figure><figcaption>{len(verifications)} verification runs, {failed} failed: green ok, "
                    f"amber warning, red failed, grey not reported</figcaption>"
                    + verify_chart(database, verifications) + "</figure>")
    else:
        html.append('<p class="empty">No verification report in this period.</p>')
    if drills:
        html.append(f"<figure><figcaption>{len(drills)} restore drills, RTO: green within budget, orange over "
                    f"budget, red failed</figcaption>" + rto_chart(database, drills, history.rto_budget_seconds)
                    + "</figure>")
    else:
        html.append('<p class="empty">No restore drill in this period.</p>')
    html.append("</div>")
    html.append("</section>")
    return "".join(html)


def render_page(history: History) -> str:
    """The whole page as one self-contained HTML document; every interpolated value is escaped."""
    databases = list(history.databases)
    sections = "".join(_database_section(history, database) for database in databases) or \
        '<p class="empty">No protected database is configured (pgdr_databases).</p>'
    unreadable = ""
    if history.unreadable:
        listed = "".join(f"<li><code>{_e(key)}</code></li>" for key in history.unreadable[:50])
        unreadable = (f'<section class="database unreadable"><h2>Not shown</h2><p class="note">'
                      f'{len(history.unreadable)} document(s) could not be read or understood:</p>'
                      f"<ul>{listed}</ul></section>")
    title = "pgdr backup history"
    return (
        '<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f'<meta name="generated" content="{_e(history.generated_at.isoformat(timespec="seconds"))}">'
        f"<title>{_e(title)}</title><style>{STYLE}</style></head><body>"
        f"<header><h1>{_e(title)}</h1><p>Generated {_e(format_time(history.generated_at))} from "
        f"<code>s3://{_e(history.bucket)}/{_e(history.prefix)}/</code>, the last {history.days} days "
        f"(the newest backup of each kind however old). Sizes, times and ids only.</p></header>"
        f"<main>{sections}{unreadable}</main></body></html>\n")


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
        from pgdr.settings import load_settings
        from pgdr.storage import BackupStore

        settings = load_settings()
        store = BackupStore.from_settings(settings, log)
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


if __name__ == "__main__":
    sys.exit(main())
