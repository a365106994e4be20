"""Point-in-time recovery, decided before anything starts: the target, the base backup, the WAL.

Pure functions over manifests, WAL object names and timeline history files. A target before the
oldest base backup, after the newest WAL shipped, behind a gap in the WAL, or on a timeline branch
that a failover abandoned is refused here, with the missing segment or the branch point named,
before a byte is downloaded.

WAL of one database cluster lives under ``<prefix>/<database>/wal/<system_identifier>/`` (a cluster
rebuilt after a site loss has a new identifier and restarts the same segment names); WAL shipped
before that layout lies directly under ``wal/`` ("legacy") and is read for a base backup whose
identifier matches or is unknown. A failover (a promoted standby, a recovered cluster promoted)
starts a new timeline and ships ``<tli>.history``; recovery follows the histories from the base
backup's timeline to the newest timeline that descends from it (or the one asked for), taking each
segment from the timeline that owned it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

from pgdr import errors
from pgdr.restore.request import RestoreRefused
from pgdr.wal.names import (
    DEFAULT_SEGMENT_SIZE,
    format_lsn,
    history_timeline,
    is_history,
    is_lsn,
    is_segment,
    lsn_segment_number,
    parse_history,  # re-exported (see __all__): pitr and the tests read it here
    parse_lsn,
    segment_from_number,
    segment_number,
    timeline_of,
)

# the default size, for callers that estimate space (a plan carries its cluster's own: WalPlan.segment_size)
WAL_SEGMENT_SIZE = DEFAULT_SEGMENT_SIZE
REFUSED = "restore refused, nothing was changed: "


@dataclass(frozen=True)
class Target:
    kind: str                     # latest | time | lsn
    time: datetime | None = None
    lsn: int | None = None
    text: str = "latest"

    def describe(self) -> str:
        return {"latest": "the newest WAL shipped (latest)", "time": f"time {self.text}",
                "lsn": f"LSN {self.text}"}[self.kind]


def parse_target(text: str) -> Target:
    """``latest``, an ISO 8601 time with a zone (``Z`` or ``+01:00``), or an LSN like ``0/3000060``.

    A time without a zone is refused: the worker's zone, the user's and UTC differ by hours, and a
    guess recovers to the wrong moment without a word."""
    text = (text or "").strip()
    if text == "latest":
        return Target("latest")
    if is_lsn(text):
        return Target("lsn", lsn=parse_lsn(text), text=text.upper())
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise RestoreRefused(f"{REFUSED}point_in_time {text!r} is neither 'latest', an ISO time such as "
                             "2026-11-26T14:30:00Z, nor an LSN such as 0/3000060") from None
    if when.tzinfo is None:
        raise RestoreRefused(f"{REFUSED}point_in_time {text!r} has no time zone; write it with one, such as "
                             f"{text}Z for UTC or {text}+01:00")
    return Target("time", time=when.astimezone(timezone.utc), text=when.astimezone(timezone.utc).isoformat())


@dataclass(frozen=True)
class WalObject:
    name: str          # segment name (24 hex) or a history file name
    key: str
    partial: bool
    modified: datetime | None = None
    system_identifier: str | None = None   # the directory it was found in; None: the legacy layout


def _split_key(key: str, base: str) -> tuple[str | None, str] | None:
    """(system identifier or None for the legacy layout, file name without .zst) of a key under ``base``."""
    rest = key[len(base):]
    system_identifier, _, name = rest.rpartition("/")
    if system_identifier and (not system_identifier.isdigit() or "/" in system_identifier):
        return None
    if name.endswith(".zst"):
        name = name[:-4]
    return (system_identifier or None), name


def _layouts(system_identifier: str | int | None, legacy: bool) -> list[str | None]:
    """The directories to read, preferred first: the cluster's own, then (for old backups) the legacy one."""
    if system_identifier is None:
        return [None]
    return [str(system_identifier)] + ([None] if legacy else [])


def wal_objects(keys_and_times: list[tuple[str, datetime | None]], base: str,
                system_identifier: str | int | None = None, legacy: bool = True) -> dict[str, WalObject]:
    """Segment name -> object, from the keys under ``<prefix>/<database>/wal/``; a completed segment
    wins over a partial one of the same name, the cluster's own directory over the legacy layout.

    ``system_identifier`` None reads the legacy layout only (a base backup whose cluster is unknown);
    otherwise ``<system_identifier>/`` and, with ``legacy``, the legacy objects it does not have. The
    WAL of another cluster is never returned."""
    layouts = _layouts(system_identifier, legacy)
    found: dict[str, WalObject] = {}
    for key, modified in keys_and_times:
        split = _split_key(key, base)
        if split is None or split[0] not in layouts:
            continue
        layout, name = split
        partial = name.endswith(".partial")
        stem = name[: -len(".partial")] if partial else name
        if not is_segment(stem):
            continue
        new = WalObject(stem, key, partial, modified, layout)
        old = found.get(stem)
        if old is not None:
            rank_old = (layouts.index(old.system_identifier), old.partial)
            if rank_old <= (layouts.index(layout), partial):
                continue
        found[stem] = new
    return found


def history_objects(keys_and_times: list[tuple[str, datetime | None]], base: str,
                    system_identifier: str | int | None = None, legacy: bool = True) -> dict[int, WalObject]:
    """Timeline -> its ``<tli>.history`` object (same layout rules as :func:`wal_objects`)."""
    layouts = _layouts(system_identifier, legacy)
    found: dict[int, WalObject] = {}
    for key, modified in keys_and_times:
        split = _split_key(key, base)
        if split is None or split[0] not in layouts:
            continue
        layout, name = split
        if not is_history(name):
            continue
        tli = history_timeline(name)
        old = found.get(tli)
        if old is not None and layouts.index(old.system_identifier) <= layouts.index(layout):
            continue
        found[tli] = WalObject(name, key, False, modified, layout)
    return found


# ---------------------------------------------------------------- timelines

@dataclass(frozen=True)
class TimelineEntry:
    """A stretch of one timeline on the way to the target timeline: WAL in [begin, end) belongs to it."""
    tli: int
    begin: int          # LSN where the timeline took over (0 for the first one)
    end: int | None     # LSN where the next timeline branched off; None: still open


def timeline_path(tli: int, histories: dict[int, list[tuple[int, int]]]) -> list[TimelineEntry]:
    """The timelines WAL replay passes through to reach ``tli``, oldest first (from its history file)."""
    if tli == 1 or tli not in histories:
        return [TimelineEntry(tli, 0, None)]
    path, begin = [], 0
    for parent, switch in histories[tli]:
        path.append(TimelineEntry(parent, begin, switch))
        begin = switch
    path.append(TimelineEntry(tli, begin, None))
    return path


def _reaches(path: list[TimelineEntry], base_tli: int, base_lsn: int) -> bool:
    """Whether replay from a base backup started at ``base_lsn`` on ``base_tli`` can follow ``path``."""
    return any(e.tli == base_tli and e.begin <= base_lsn and (e.end is None or base_lsn < e.end) for e in path)


class AbandonedBranch(RestoreRefused):
    """The target, or the base backup, lies on a stretch of timeline a failover left behind."""


@dataclass(frozen=True)
class Branch:
    """A newer timeline that left the chosen path: WAL on the path after ``lsn`` was abandoned."""
    tli: int            # the newer timeline
    parent: int         # the path's timeline it left
    lsn: int            # where it left
    since: datetime | None   # when its history file was stored (the branch happened before)
    before_base: bool = False   # the base backup itself started after the branch: all of it is abandoned


def choose_timeline(base_tli: int, base_lsn: int, histories: dict[int, list[tuple[int, int]]],
                    requested: str | int = "latest", stored: dict[int, datetime | None] | None = None
                    ) -> tuple[int, list[TimelineEntry], list[Branch]]:
    """(timeline to recover to, the path to it, the branches that left that path after the base backup).

    ``requested``: ``latest`` (the newest timeline that descends from the base backup's point), ``current``
    (the base backup's own) or a number. A timeline the base backup cannot reach is refused."""
    known = sorted(set(histories) | {base_tli})
    reachable = [t for t in known if _reaches(timeline_path(t, histories), base_tli, base_lsn)]
    if requested in ("latest", "", None):
        tli = max(reachable)
    elif requested == "current":
        tli = base_tli
    else:
        tli = int(requested)
        if tli not in reachable:
            raise_as = AbandonedBranch if tli in histories else RestoreRefused
            why = ("has no history file in the archive" if tli not in histories and tli != base_tli else
                   f"does not pass through timeline {base_tli} at {format_lsn(base_lsn)}, where the base backup "
                   "starts")
            raise raise_as(f"{REFUSED}recovery target timeline {tli} {why}; reachable from this base "
                                 f"backup: {', '.join(map(str, reachable))}")
    path = [e for e in timeline_path(tli, histories) if e.end is None or e.end > base_lsn]
    on_path = {e.tli: e for e in path}
    branches = []
    for other in known:
        if other == tli or other in on_path:
            continue
        for entry in timeline_path(other, histories):
            mine = on_path.get(entry.tli)
            # ``other`` left the path's timeline at entry.end, inside the stretch the path uses of it
            if (mine is not None and entry.end is not None
                    and (mine.end is None or entry.end < mine.end) and entry.end >= mine.begin):
                branches.append(Branch(other, entry.tli, entry.end, (stored or {}).get(other), entry.end <= base_lsn))
                break
    return tli, path, branches


def check_not_abandoned(target: Target, tli: int, branches: list[Branch]) -> None:
    """Refuse a target on a stretch of timeline that a failover left behind (a newer timeline branched off
    before it): the rows there were never seen by the promoted server and are not what anyone has now."""
    for branch in sorted(branches, key=lambda b: b.lsn):
        after = (branch.before_base or target.kind == "latest"
                 or (target.kind == "lsn" and target.lsn > branch.lsn)
                 or (target.kind == "time" and branch.since is not None and target.time > branch.since))
        if after:
            raise AbandonedBranch(
                f"{REFUSED}{target.describe()} on timeline {tli} lies on an abandoned branch: timeline "
                f"{branch.tli} left timeline {branch.parent} at LSN {format_lsn(branch.lsn)}"
                + (", before the base backup started" if branch.before_base else "")
                + (f" (its history was shipped {branch.since.isoformat(timespec='seconds')})" if branch.since
                   else "") + "; recover on the newest timeline (recovery target timeline latest) or choose a "
                f"target before LSN {format_lsn(branch.lsn)}")


class WalGapRefused(errors.WalGap, RestoreRefused):
    """A segment the recovery needs is not in the archive: a :class:`pgdr.errors.WalGap` (``segment``,
    ``timeline``) that callers catching :class:`RestoreRefused` still see as a refused restore."""


@dataclass(frozen=True)
class WalPlan:
    segments: list[WalObject]     # in replay order, the last one possibly partial
    newest_time: datetime | None
    timeline: int = 0             # the timeline recovery ends on (0: the base backup's, not looked up)
    histories: tuple[WalObject, ...] = ()   # the history files replay reads (timelines after the first)
    system_identifier: str | None = None    # the cluster whose WAL this is (None: unknown, legacy)
    path: tuple[TimelineEntry, ...] = ()
    segment_size: int = DEFAULT_SEGMENT_SIZE   # the cluster's wal_segment_size (bytes per segment)

    @property
    def first(self) -> str:
        return self.segments[0].name

    @property
    def last(self) -> str:
        return self.segments[-1].name


def plan_wal(found: dict[str, WalObject], start_segment: str, target: Target,
             path: list[TimelineEntry] | None = None, segment_size: int = DEFAULT_SEGMENT_SIZE) -> WalPlan:
    """Every segment from the base backup's start to the newest shipped, refusing a gap.

    Along ``path`` (see :func:`choose_timeline`; default: the start segment's timeline only) each
    segment number is taken from the newest timeline that had begun by that segment, as PostgreSQL's
    replay does: the first segment of a new timeline holds its parent's WAL up to the switch. For an
    LSN target the plan stops at the segment holding it; for a time target the segments after it are
    harmless (recovery stops at the target) but are still needed to exist up to the target, which the
    newest object's time bounds. ``segment_size`` is the cluster's (the base backup's manifest records
    it): names map to LSNs through it, so a cluster made with ``initdb --wal-segsize`` plans right.
    A missing segment is refused with :class:`WalGapRefused`, naming it.
    """
    start_tli, start = timeline_of(start_segment), segment_number(start_segment, segment_size)
    path = list(path or [TimelineEntry(start_tli, 0, None)])
    begins = [(lsn_segment_number(e.begin, segment_size), e.tli) for e in path]

    def owner(number: int) -> int:
        tli = begins[0][1]
        for begin, candidate in begins:
            if begin <= number:
                tli = candidate
        return tli

    def name_of(tli: int, number: int) -> str:
        return segment_from_number(tli, number, segment_size)

    have: dict[tuple[int, int], WalObject] = {}
    for obj in found.values():
        try:
            have[(timeline_of(obj.name), segment_number(obj.name, segment_size))] = obj
        except ValueError:
            continue   # a name no segment of this size can have (another cluster's, under the legacy layout)
    first = name_of(owner(start), start)
    if (owner(start), start) not in have:
        raise WalGapRefused(f"{REFUSED}WAL segment {first}, where the base backup starts, is not in "
                            "the archive; recovery from this base backup is impossible",
                            segment=first, timeline=owner(start))
    final = path[-1]
    final_from = max(start, lsn_segment_number(final.begin, segment_size))
    on_final = [n for (tli, n) in have if tli == final.tli and n >= final_from]
    if not on_final:
        missing_first = name_of(final.tli, final_from)
        raise WalGapRefused(f"{REFUSED}timeline {final.tli} began at LSN {format_lsn(final.begin)}, but its "
                            f"first segment {missing_first} is not in the archive; recovery to "
                            f"{target.describe()} would stop before it (is the new primary's WAL being shipped?)",
                            segment=missing_first, timeline=final.tli)
    last = max(on_final)
    if target.kind == "lsn":
        wanted = lsn_segment_number(target.lsn, segment_size)
        if wanted > last:
            raise RestoreRefused(f"{REFUSED}{target.describe()} is after the newest WAL shipped "
                                 f"({name_of(final.tli, last)})")
        last = max(wanted, start)
    missing = [(owner(n), n) for n in range(start, last + 1) if (owner(n), n) not in have]
    if missing:
        gap = name_of(*missing[0])
        raise WalGapRefused(f"{REFUSED}the WAL archive has a gap: segment {gap} is missing"
                            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                            + f"; recovery to {target.describe()} would stop there. Choose a point in time "
                            f"before {gap} or a base backup taken after it", segment=gap, timeline=missing[0][0])
    segments = [have[(owner(n), n)] for n in range(start, last + 1)]
    partial_inside = [s.name for s in segments[:-1] if s.partial]
    if partial_inside:
        raise RestoreRefused(f"{REFUSED}segment {partial_inside[0]} was only shipped partially, yet later WAL "
                             "exists; the archive is inconsistent")
    times = [s.modified for s in segments if s.modified is not None]
    return WalPlan(segments, max(times) if times else None, final.tli, (), None, tuple(path), segment_size)


def choose_base_backup(candidates: list[tuple[str, dict]], target: Target) -> tuple[str, dict]:
    """The newest good base backup that ends before the target: (backup id, its manifest's wal dict and times).

    ``candidates`` are (backup_id, {"finished_at": iso, "wal": {...}}) of complete, good base
    backups, oldest first.
    """
    return usable_base_backups(candidates, target)[0]


def usable_base_backups(candidates: list[tuple[str, dict]], target: Target) -> list[tuple[str, dict]]:
    """Every good base backup that ends before the target, newest first; refused when there is none."""
    if not candidates:
        raise RestoreRefused(f"{REFUSED}there is no complete, good base backup: point-in-time recovery needs one "
                             "(setting pgdr_physical_backups, DAG pg_backup_daily)")
    usable = []
    for backup_id, facts in candidates:
        if target.kind == "time" and datetime.fromisoformat(facts["finished_at"]) > target.time:
            continue
        if target.kind == "lsn" and parse_lsn(facts["wal"]["end_lsn"]) > target.lsn:
            continue
        usable.append((backup_id, facts))
    if not usable:
        oldest_id, oldest = candidates[0]
        raise RestoreRefused(f"{REFUSED}{target.describe()} is before the oldest base backup ({oldest_id}, "
                             f"finished {oldest['finished_at']}, WAL from {oldest['wal']['start_lsn']}); "
                             "nothing can be recovered to it")
    return usable[::-1]


def check_target_reachable(plan: WalPlan, target: Target) -> None:
    if target.kind == "time" and plan.newest_time is not None and target.time > plan.newest_time:
        raise RestoreRefused(f"{REFUSED}{target.describe()} is after the newest WAL shipped "
                             f"({plan.last}, stored {plan.newest_time.isoformat(timespec='seconds')}); use "
                             "'latest' to recover everything there is")


TARGET_NOT_REACHED = "recovery ended before configured recovery target was reached"
_LAST_TXN = re.compile(r"last completed transaction was at log time (.+)$")
_REDO_DONE = re.compile(r"redo done at ([0-9A-F]+/[0-9A-F]+)")


def recovery_end(server_log: str) -> dict:
    """What the server says it recovered to: the last replayed commit's time and the redo end LSN."""
    last_time = redo = None
    for line in server_log.splitlines():
        if (m := _LAST_TXN.search(line)):
            last_time = m.group(1).strip()
        if (m := _REDO_DONE.search(line)):
            redo = m.group(1)
    return {"last_transaction_time": last_time, "redo_end_lsn": redo}


__all__ = ["REFUSED", "TARGET_NOT_REACHED", "WAL_SEGMENT_SIZE", "AbandonedBranch", "Branch", "Target", "TimelineEntry",
           "WalGapRefused", "WalObject", "WalPlan", "check_not_abandoned", "check_target_reachable",
           "choose_base_backup", "choose_timeline", "format_lsn", "history_objects", "parse_history", "parse_lsn",
           "parse_target", "plan_wal", "recovery_end", "timeline_path", "usable_base_backups", "wal_objects"]
