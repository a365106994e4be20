"""The WAL archive's continuity: which stored objects are a cluster's WAL, the timelines replay follows
through their history files, and whether every segment from a base backup's start onwards is there.

WAL of one database cluster lives under ``<prefix>/<database>/wal/<system_identifier>/`` (a cluster
rebuilt after a site loss has a new identifier and restarts the same segment names); WAL shipped
before that layout lies directly under ``wal/`` ("legacy") and is read for a base backup whose
identifier matches or is unknown. A failover starts a new timeline and ships ``<tli>.history``;
replay follows the histories from the base backup's timeline to the newest timeline that descends
from it, taking each segment from the timeline that owned it.

A missing segment raises :class:`pgdr.errors.WalGap` with the segment (and its timeline) as fields:
point-in-time recovery (:mod:`pgdr.restore.pitr_plan`) turns it into a refused restore, the WAL
check (:mod:`pgdr.verify.wal`) into a finding. The planning is pure; :class:`ArchiveView` reads
the archive through the store's door methods.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import datetime

import zstandard

from pgdr.errors import PgdrError, WalGap
from pgdr.store.layout import wal_root
from pgdr.wal.names import (
    DEFAULT_SEGMENT_SIZE,
    format_lsn,
    history_timeline,
    is_history,
    is_segment,
    lsn_segment_number,
    parse_history,
    parse_lsn,
    segment_from_number,
    segment_number,
    segment_size_of,
    timeline_of,
)

LATEST = "the newest WAL shipped (latest)"   # how the messages name a plan without a target


class PastNewestWal(PgdrError):
    """An LSN target lies after the newest WAL shipped; ``newest`` is that segment's name."""

    def __init__(self, message: str, *, newest: str) -> None:
        super().__init__(message)
        self.newest = newest


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


@dataclass(frozen=True)
class Branch:
    """A newer timeline that left the chosen path: WAL on the path after ``lsn`` was abandoned."""
    tli: int            # the newer timeline
    parent: int         # the path's timeline it left
    lsn: int            # where it left
    since: datetime | None   # when its history file was stored (the branch happened before)
    before_base: bool = False   # the base backup itself started after the branch: all of it is abandoned


def reachable_timelines(base_tli: int, base_lsn: int, histories: dict[int, list[tuple[int, int]]]) -> list[int]:
    """The timelines whose history passes through the base backup's start (its own included), in order."""
    known = sorted(set(histories) | {base_tli})
    return [t for t in known if _reaches(timeline_path(t, histories), base_tli, base_lsn)]


def timeline_route(tli: int, base_tli: int, base_lsn: int, histories: dict[int, list[tuple[int, int]]],
                   stored: dict[int, datetime | None] | None = None) -> tuple[list[TimelineEntry], list[Branch]]:
    """(the path replay takes from the base backup to timeline ``tli``, the branches that left that path
    after the base backup). ``stored``: when each history file was stored (a branch's ``since``)."""
    known = sorted(set(histories) | {base_tli})
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
    return path, branches


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


def plan_wal(found: dict[str, WalObject], start_segment: str, path: list[TimelineEntry] | None = None,
             segment_size: int = DEFAULT_SEGMENT_SIZE, *, until_lsn: int | None = None,
             target_text: str = LATEST) -> WalPlan:
    """Every segment from the base backup's start to the newest shipped, refusing a gap.

    Along ``path`` (see :func:`timeline_route`; default: the start segment's timeline only) each
    segment number is taken from the newest timeline that had begun by that segment, as PostgreSQL's
    replay does: the first segment of a new timeline holds its parent's WAL up to the switch. For an
    LSN target the plan stops at the segment holding it; for a time target the segments after it are
    harmless (recovery stops at the target) but are still needed to exist up to the target, which the
    newest object's time bounds. ``segment_size`` is the cluster's (the base backup's manifest records
    it): names map to LSNs through it, so a cluster made with ``initdb --wal-segsize`` plans right.

    ``until_lsn``: an LSN target (None: as far as the archive goes); ``target_text`` names the target
    in the messages. A missing segment raises :class:`pgdr.errors.WalGap` naming it (``segment``,
    ``timeline``); an LSN past the newest WAL shipped raises :class:`PastNewestWal`.
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
        raise WalGap(f"WAL segment {first}, where the base backup starts, is not in "
                            "the archive; recovery from this base backup is impossible",
                     segment=first, timeline=owner(start))
    final = path[-1]
    final_from = max(start, lsn_segment_number(final.begin, segment_size))
    on_final = [n for (tli, n) in have if tli == final.tli and n >= final_from]
    if not on_final:
        missing_first = name_of(final.tli, final_from)
        raise WalGap(f"timeline {final.tli} began at LSN {format_lsn(final.begin)}, but its "
                     f"first segment {missing_first} is not in the archive; recovery to "
                     f"{target_text} would stop before it (is the new primary's WAL being shipped?)",
                     segment=missing_first, timeline=final.tli)
    last = max(on_final)
    if until_lsn is not None:
        wanted = lsn_segment_number(until_lsn, segment_size)
        if wanted > last:
            raise PastNewestWal(f"{target_text} is after the newest WAL shipped ({name_of(final.tli, last)})",
                                newest=name_of(final.tli, last))
        last = max(wanted, start)
    missing = [(owner(n), n) for n in range(start, last + 1) if (owner(n), n) not in have]
    if missing:
        gap = name_of(*missing[0])
        raise WalGap(f"the WAL archive has a gap: segment {gap} is missing"
                            + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                     + f"; recovery to {target_text} would stop there. Choose a point in time "
                     f"before {gap} or a base backup taken after it", segment=gap, timeline=missing[0][0])
    segments = [have[(owner(n), n)] for n in range(start, last + 1)]
    partial_inside = [s.name for s in segments[:-1] if s.partial]
    if partial_inside:
        # the rest of that segment is missing: a gap, though its name is in the archive
        raise WalGap(f"segment {partial_inside[0]} was only shipped partially, yet later WAL exists; the archive "
                     "is inconsistent", segment=partial_inside[0], timeline=timeline_of(partial_inside[0]))
    times = [s.modified for s in segments if s.modified is not None]
    return WalPlan(segments, max(times) if times else None, final.tli, (), None, tuple(path), segment_size)


# ---------------------------------------------------------------- the archive as stored

def manifest_system_identifier(manifest) -> str | None:
    """The cluster a base backup came from (decimal text), from the manifest or its WAL facts."""
    value = manifest.system_identifier or (manifest.wal or {}).get("system_identifier")
    return str(value) if value not in (None, "") else None


class ArchiveView:
    """The WAL objects of one database listed once, with the history files read on demand, per cluster.

    ``store`` is a :class:`pgdr.store.s3.BackupStore` (list_objects, get_bytes, head)."""

    def __init__(self, store, database: str) -> None:
        self.store = store
        self.base = wal_root(store.prefix, database) + "/"
        self.listed = store.list_objects(self.base)
        self._histories: dict[str | None, tuple[dict, dict]] = {}
        self._owners: dict[str, str | None] = {}

    def _read_text(self, key: str) -> str:
        body = self.store.get_bytes(key)
        if key.endswith(".zst"):
            body = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body)).read()
        return body.decode()

    def _owner(self, key: str) -> str | None:
        return ((self.store.head(key) or {}).get("Metadata", {}).get("system-identifier")) or None

    def histories(self, system_identifier: str | None) -> tuple[dict[int, WalObject], dict[int, list]]:
        if system_identifier not in self._histories:
            objects = history_objects(self.listed, self.base, system_identifier)
            self._histories[system_identifier] = (objects, {tli: parse_history(self._read_text(obj.key))
                                                            for tli, obj in objects.items()})
        return self._histories[system_identifier]

    def owners(self, objects: list[WalObject]) -> list[str | None]:
        """The system identifier each object's metadata records (legacy objects carry it there)."""
        unknown = [o.key for o in objects if o.key not in self._owners]
        if unknown:
            with ThreadPoolExecutor(max_workers=8, thread_name_prefix="pgdr-head") as pool:
                for key, owner in zip(unknown, pool.map(self._owner, unknown), strict=True):
                    self._owners[key] = owner
        return [self._owners[o.key] for o in objects]

    def segments(self, wal: dict, system_identifier: str | None, tli: int, path: list[TimelineEntry],
                 until_lsn: int | None = None, target_text: str = LATEST) -> WalPlan:
        """:func:`plan_wal` from the base backup whose manifest's ``wal`` facts are given, along ``path`` to
        ``tli``, leaving out legacy objects another cluster shipped (known from their stored identifier)."""
        segment_size = segment_size_of(wal)
        history_objs, _ = self.histories(system_identifier)
        found = wal_objects(self.listed, self.base, system_identifier)
        for _ in range(3):
            plan = plan_wal(found, wal["start_wal_file"], path, segment_size, until_lsn=until_lsn,
                            target_text=target_text)
            if system_identifier is None:
                break
            legacy = [s for s in plan.segments if s.system_identifier is None]
            strangers = {o.name for o, owner in zip(legacy, self.owners(legacy), strict=True)
                         if owner not in (None, system_identifier)}
            if not strangers:
                break
            found = {name: obj for name, obj in found.items() if name not in strangers}
        histories_needed = tuple(history_objs[e.tli] for e in path if e.tli in history_objs)
        return WalPlan(plan.segments, plan.newest_time, tli, histories_needed, system_identifier, plan.path,
                       segment_size)

    def continuity(self, manifest) -> WalPlan | None:
        """The WAL from this base backup to the newest timeline descending from it, raising
        :class:`pgdr.errors.WalGap` at the first missing segment; None when a failover left the base
        backup's timeline after it started (replay from it cannot reach the newest WAL: use a newer one)."""
        system_identifier = manifest_system_identifier(manifest)
        history_objs, histories = self.histories(system_identifier)
        wal = manifest.wal
        base_tli = int(wal.get("timeline") or timeline_of(wal["start_wal_file"]))
        base_lsn = parse_lsn(wal["start_lsn"])
        tli = max(reachable_timelines(base_tli, base_lsn, histories))
        path, branches = timeline_route(tli, base_tli, base_lsn, histories,
                                        {t: o.modified for t, o in history_objs.items()})
        if branches:
            return None
        return self.segments(wal, system_identifier, tli, path)


__all__ = ["LATEST", "ArchiveView", "Branch", "PastNewestWal", "TimelineEntry", "WalGap", "WalObject", "WalPlan",
           "history_objects", "manifest_system_identifier", "plan_wal", "reachable_timelines", "timeline_path",
           "timeline_route", "wal_objects"]
