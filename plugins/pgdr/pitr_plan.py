"""Point-in-time recovery, decided before anything starts: the target, the base backup, the WAL.

Pure functions over manifests and WAL object names. A target before the oldest base backup,
after the newest WAL shipped, or behind a gap in the WAL is refused here, with the missing
segment named, before a byte is downloaded.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime, timezone

from pgdr.restore_plan import RestoreRefused

WAL_SEGMENT_SIZE = 16 * 1024 * 1024
_LSN = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")
_SEGMENT = re.compile(r"^([0-9A-F]{8})([0-9A-F]{8})([0-9A-F]{8})$")
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


def parse_lsn(text: str) -> int:
    match = _LSN.match(text.strip())
    if not match:
        raise ValueError(f"not an LSN: {text!r}")
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(value: int) -> str:
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


def parse_target(text: str) -> Target:
    """``latest``, an ISO 8601 time (with a zone; none means UTC), or an LSN like ``0/3000060``."""
    text = (text or "").strip()
    if text == "latest":
        return Target("latest")
    if _LSN.match(text):
        return Target("lsn", lsn=parse_lsn(text), text=text.upper())
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise RestoreRefused(f"{REFUSED}point_in_time {text!r} is neither 'latest', an ISO time such as "
                             "2026-11-26T14:30:00Z, nor an LSN such as 0/3000060") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=timezone.utc)
    return Target("time", time=when.astimezone(timezone.utc), text=when.astimezone(timezone.utc).isoformat())


def segment_name(timeline: int, lsn: int) -> str:
    return f"{timeline:08X}{lsn >> 32:08X}{(lsn & 0xFFFFFFFF) // WAL_SEGMENT_SIZE:08X}"


def segment_number(name: str) -> tuple[int, int]:
    """(timeline, absolute segment number) of a WAL file name."""
    match = _SEGMENT.match(name)
    if not match:
        raise ValueError(f"not a WAL segment name: {name!r}")
    per_log = 0x100000000 // WAL_SEGMENT_SIZE
    return int(match.group(1), 16), int(match.group(2), 16) * per_log + int(match.group(3), 16)


def name_of(timeline: int, number: int) -> str:
    per_log = 0x100000000 // WAL_SEGMENT_SIZE
    return f"{timeline:08X}{number // per_log:08X}{number % per_log:08X}"


@dataclass(frozen=True)
class WalObject:
    name: str          # segment name (24 hex) or a history file name
    key: str
    partial: bool
    modified: datetime | None = None


def wal_objects(keys_and_times: list[tuple[str, datetime | None]], base: str) -> dict[str, WalObject]:
    """Segment name -> object, from the keys under ``<prefix>/<database>/wal/``; a completed segment
    wins over a partial one of the same name."""
    found: dict[str, WalObject] = {}
    for key, modified in keys_and_times:
        name = key[len(base):]
        partial = name.endswith(".partial.zst")
        stem = name[: -len(".partial.zst")] if partial else (name[:-4] if name.endswith(".zst") else name)
        if not _SEGMENT.match(stem):
            continue
        if stem in found and not found[stem].partial:
            continue
        found[stem] = WalObject(stem, key, partial, modified)
    return found


@dataclass(frozen=True)
class WalPlan:
    segments: list[WalObject]     # in replay order, the last one possibly partial
    newest_time: datetime | None

    @property
    def first(self) -> str:
        return self.segments[0].name

    @property
    def last(self) -> str:
        return self.segments[-1].name


def plan_wal(found: dict[str, WalObject], start_segment: str, target: Target) -> WalPlan:
    """Every segment from the base backup's start to the newest shipped, refusing a gap.

    For an LSN target the plan stops at the segment holding it; for a time target the
    segments after it are harmless (recovery stops at the target) but are still needed to
    exist up to the target, which the newest object's time bounds.
    """
    timeline, start = segment_number(start_segment)
    numbers = sorted(number for name, obj in found.items() for tli, number in [segment_number(name)]
                     if tli == timeline and number >= start)
    if not numbers or numbers[0] != start:
        raise RestoreRefused(f"{REFUSED}WAL segment {start_segment}, where the base backup starts, is not in "
                             "the archive; recovery from this base backup is impossible")
    last = numbers[-1]
    if target.kind == "lsn":
        wanted = segment_number(segment_name(timeline, target.lsn))[1]
        if wanted > last:
            raise RestoreRefused(f"{REFUSED}{target.describe()} is after the newest WAL shipped "
                                 f"({name_of(timeline, last)})")
        last = wanted
    have = set(numbers)
    missing = [name_of(timeline, n) for n in range(start, last + 1) if n not in have]
    if missing:
        raise RestoreRefused(f"{REFUSED}the WAL archive has a gap: segment {missing[0]} is missing"
                             + (f" (and {len(missing) - 1} more)" if len(missing) > 1 else "")
                             + f"; recovery to {target.describe()} would stop there. Choose a point in time "
                             f"before {missing[0]} or a base backup taken after it")
    segments = [found[name_of(timeline, n)] for n in range(start, last + 1)]
    partial_inside = [s.name for s in segments[:-1] if s.partial]
    if partial_inside:
        raise RestoreRefused(f"{REFUSED}segment {partial_inside[0]} was only shipped partially, yet later WAL "
                             "exists; the archive is inconsistent")
    times = [s.modified for s in segments if s.modified is not None]
    return WalPlan(segments, max(times) if times else None)


def choose_base_backup(candidates: list[tuple[str, dict]], target: Target) -> tuple[str, dict]:
    """The newest good base backup that ends before the target: (backup id, its manifest's wal dict and times).

    ``candidates`` are (backup_id, {"finished_at": iso, "wal": {...}}) of complete, good base
    backups, oldest first.
    """
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
    return usable[-1]


def check_target_reachable(plan: WalPlan, target: Target) -> None:
    if target.kind == "time" and plan.newest_time is not None and target.time > plan.newest_time:
        raise RestoreRefused(f"{REFUSED}{target.describe()} is after the newest WAL shipped "
                             f"({plan.last}, stored {plan.newest_time.isoformat(timespec='seconds')}); use "
                             "'latest' to recover everything there is")


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
