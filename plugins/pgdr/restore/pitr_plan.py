"""Point-in-time recovery, decided before anything starts: the target, the base backup, the WAL.

Pure functions over manifests, WAL object names and timeline history files. A target before the
oldest base backup, after the newest WAL shipped, behind a gap in the WAL, or on a timeline branch
that a failover abandoned is refused here, with the missing segment or the branch point named,
before a byte is downloaded.

The archive's continuity (which objects are the cluster's WAL, the timelines replay follows, the
segments from the base backup on) is :mod:`pgdr.wal.archive`; this module chooses the timeline and
the base backup for a restore's target and turns the archive's :class:`pgdr.errors.WalGap` into a
refused restore (:class:`WalGapRefused`), with the same message a restore has always shown.
"""

from __future__ import annotations

import re
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime, timezone

from pgdr import errors
from pgdr.restore.request import RestoreRefused
from pgdr.wal import archive
from pgdr.wal.archive import (
    Branch,
    PastNewestWal,
    TimelineEntry,
    WalObject,
    WalPlan,
    reachable_timelines,
    timeline_route,
)
from pgdr.wal.names import (
    DEFAULT_SEGMENT_SIZE,
    format_lsn,
    is_lsn,
    parse_lsn,
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


class AbandonedBranch(RestoreRefused):
    """The target, or the base backup, lies on a stretch of timeline a failover left behind."""


def choose_timeline(base_tli: int, base_lsn: int, histories: dict[int, list[tuple[int, int]]],
                    requested: str | int = "latest", stored: dict[int, datetime | None] | None = None
                    ) -> tuple[int, list[TimelineEntry], list[Branch]]:
    """(timeline to recover to, the path to it, the branches that left that path after the base backup).

    ``requested``: ``latest`` (the newest timeline that descends from the base backup's point), ``current``
    (the base backup's own) or a number. A timeline the base backup cannot reach is refused."""
    reachable = reachable_timelines(base_tli, base_lsn, histories)
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
    path, branches = timeline_route(tli, base_tli, base_lsn, histories, stored)
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

@contextmanager
def _refused_as_restore():
    """The archive's answers as restore refusals, with the wording a restore has always shown: a
    missing segment is a :class:`WalGapRefused` naming it, an LSN after the newest WAL a
    :class:`RestoreRefused`."""
    try:
        yield
    except errors.WalGap as gap:
        if str(gap).startswith(REFUSED):
            raise   # already a restore's refusal
        raise WalGapRefused.because(gap.reason, segment=gap.segment, timeline=gap.timeline) from None
    except PastNewestWal as past:
        raise RestoreRefused(f"{REFUSED}{past}") from None


def plan_wal(found: dict[str, WalObject], start_segment: str, target: Target,
             path: list[TimelineEntry] | None = None, segment_size: int = DEFAULT_SEGMENT_SIZE) -> WalPlan:
    """:func:`pgdr.wal.archive.plan_wal` for a restore's ``target``, its refusals as restore refusals."""
    with _refused_as_restore():
        return archive.plan_wal(found, start_segment, path, segment_size,
                                until_lsn=target.lsn if target.kind == "lsn" else None, target_text=target.describe())


def plan_from_archive(view: archive.ArchiveView, manifest, target: Target, timeline: str | int = "latest") -> WalPlan:
    """The WAL from the base backup whose ``manifest`` is given to ``target``, along the timeline history
    read from ``view`` (:class:`pgdr.wal.archive.ArchiveView`), or a refusal: a timeline the base backup
    cannot reach, a target on an abandoned branch, a gap, an LSN past the archive."""
    system_identifier = archive.manifest_system_identifier(manifest)
    history_objs, histories = view.histories(system_identifier)
    wal = manifest.wal
    base_tli = int(wal.get("timeline") or timeline_of(wal["start_wal_file"]))
    tli, path, branches = choose_timeline(base_tli, parse_lsn(wal["start_lsn"]), histories, timeline,
                                          {t: o.modified for t, o in history_objs.items()})
    check_not_abandoned(target, tli, branches)
    with _refused_as_restore():
        return view.segments(wal, system_identifier, tli, path, until_lsn=target.lsn if target.kind == "lsn" else None,
                             target_text=target.describe())


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


__all__ = ["REFUSED", "TARGET_NOT_REACHED", "WAL_SEGMENT_SIZE", "AbandonedBranch", "Target", "WalGapRefused",
           "check_not_abandoned", "check_target_reachable", "choose_base_backup", "choose_timeline",
           "parse_target", "plan_from_archive", "plan_wal", "recovery_end", "usable_base_backups"]
