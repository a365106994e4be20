"""Gaps in the WAL: what the receiver can no longer get once its slot was lost, set aside and recorded.

When the server removed WAL the receiver's slot still needed (``wal_status = 'lost'``, or "has already
been removed"), the receiver recreates the slot and streams from what the server still has. The WAL
it had received before is moved to ``before-gap-<segment>/`` (pg_receivewal resumes after the newest
file it sees) and still shipped; the gap is recorded in ``<directory>/wal-gaps.json``. The shipper copies
that record to ``<prefix>/state/wal-gaps/<database>.json`` (read by point-in-time recovery) and alerts
once per gap: recovery cannot cross a gap, a new base backup is needed.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from pgdr.store import layout
from pgdr.wal.local import ASIDE_PREFIX, WalArchiveError, load_state, now_iso, save_state, scan
from pgdr.wal.names import (
    DEFAULT_SEGMENT_SIZE,
    format_lsn,
    parse_lsn,
    parse_segment,
    segment_name,
    segment_number,
    segment_of_partial,
    segments_per_log,
)
from pgdr.wal.segment_header import read_segment_header

GAPS_NAME = "wal-gaps.json"              # gaps the receiver recorded when it had to recreate its slot


def read_gaps(directory: Path) -> list[dict]:
    try:
        return list(json.loads((Path(directory) / GAPS_NAME).read_text()).get("gaps", []))
    except (OSError, json.JSONDecodeError, AttributeError):
        return []


def plan_gap(files: list, restart_lsn: str, segment_size: int | None = None) -> dict | None:
    """Pure: the WAL the receiver can no longer get, once the server streams only from ``restart_lsn``.

    ``files``: the receiver directory's segments and partials (:func:`pgdr.wal.local.scan`).
    pg_receivewal resumes after the newest file it sees; the files before the segment holding
    ``restart_lsn`` must move aside (``behind``) and the segments from the first one not fully
    received up to that segment are missing. None when nothing is missing.
    """
    def segment(item) -> str:
        return item.name if item.kind == "segment" else segment_of_partial(item.name)

    wal = [f for f in files if f.kind in ("segment", "partial")]
    if segment_size is None:
        segment_size = DEFAULT_SEGMENT_SIZE
        for item in wal:
            header = read_segment_header(item.path)
            if header is not None and header.segment_size:
                segment_size = header.segment_size
                break
    resume = parse_lsn(restart_lsn) // segment_size
    behind = [f for f in wal if segment_number(segment(f), segment_size) < resume]
    if not wal or len(behind) < len(wal):
        return None   # an empty directory starts at the slot; files at or past it: nothing is missing
    newest = max(behind, key=lambda f: (segment_number(segment(f), segment_size), f.kind == "partial"))
    first = segment_number(segment(newest), segment_size) + (0 if newest.kind == "partial" else 1)
    if first >= resume:
        return None
    timeline = parse_segment(segment(newest))[0]
    per_log = segments_per_log(segment_size)
    return {"behind": behind, "from_lsn": format_lsn(first * segment_size), "to_lsn": format_lsn(resume * segment_size),
            "timeline": timeline, "first_segment": segment_name(timeline, first // per_log, first % per_log),
            "last_segment": segment_name(timeline, (resume - 1) // per_log, (resume - 1) % per_log),
            "segments": resume - first, "partial_kept": newest.kind == "partial"}


def set_aside(directory: Path, restart_lsn: str, *, slot: str, lost: bool,
              chown: Callable[[Path], None] | None = None) -> dict | None:
    """Move the WAL before the gap (:func:`plan_gap`) to ``before-gap-<first missing segment>/`` and
    record the gap in ``wal-gaps.json``; returns the gap, or None when nothing is missing.

    ``chown(path)`` gives the new folder to the user pg_receivewal runs as."""
    directory = Path(directory)
    plan = plan_gap(scan(directory, aside=False), restart_lsn)
    if plan is None:
        return None
    aside = directory / f"{ASIDE_PREFIX}{plan['first_segment']}"
    aside.mkdir(exist_ok=True)
    if chown is not None:
        chown(aside)
    for item in plan["behind"]:
        os.replace(item.path, aside / item.name)
    gap = {key: value for key, value in plan.items() if key != "behind"}
    gap.update(id=f"{now_iso()}-{gap['to_lsn']}", detected_at=now_iso(), slot=slot,
               reason="replication slot lost (wal_status lost)" if lost else
               "the server had removed WAL the receiver still needed",
               moved_to=aside.name, unshipped=_unshipped(directory, [i.name for i in plan["behind"]]),
               next_step="point-in-time recovery cannot cross this gap: take a new base backup")
    _append_gap(directory, gap)
    return gap


def _append_gap(directory: Path, gap: dict) -> None:
    gaps = read_gaps(directory) + [gap]
    path = directory / GAPS_NAME
    fd, temp = tempfile.mkstemp(prefix=GAPS_NAME + ".", suffix=".tmp", dir=directory)
    with os.fdopen(fd, "w") as handle:
        json.dump({"gaps": gaps}, handle, indent=1)
        handle.flush()
        os.fsync(handle.fileno())
    os.chmod(temp, 0o644)   # the shipper (another user, often) reads it
    os.replace(temp, path)


def _unshipped(directory: Path, names: list[str]) -> list[str]:
    """Which of ``names`` pg_wal_archive's ship state does not list as shipped (all when unknown)."""
    try:
        state = load_state(directory)
    except WalArchiveError:
        return list(names)
    return [n for n in names if n not in state["segments"] and n not in state["partials"]]


# ---------------------------------------------------------------- the shipper's side: into S3 state

gaps_key = layout.wal_gaps_key   # <prefix>/state/wal-gaps/<database>.json


def record_gaps(store, database: str, directory: Path, state: dict, alert: Callable[[dict], bool] | None,
                log: logging.Logger) -> list[dict]:
    """Copy gaps the receiver recorded into S3 state (``<prefix>/state/wal-gaps/<database>.json``),
    read by point-in-time recovery, and alert once per gap (``alert(gap) -> delivered``; a gap whose
    alert was not delivered is tried again at the next pass). Returns the newly recorded gaps."""
    new = [g for g in read_gaps(directory) if g.get("id") not in state["gaps_recorded"]]
    if not new:
        return []
    key = gaps_key(store.prefix, database)
    document = store.read_json_or_none(key) or {"database": database, "gaps": []}
    known = {g.get("id") for g in document["gaps"]}
    document["gaps"] += [g for g in new if g.get("id") not in known]
    store.put_json(key, document)
    for gap in new:
        log.error("WAL gap recorded for %s: %s .. %s (%s segments); a new base backup is needed for "
                  "point-in-time recovery past it", database, gap.get("from_lsn"), gap.get("to_lsn"),
                  gap.get("segments"))
        if alert is None or alert(gap):
            state["gaps_recorded"].append(gap.get("id"))
    save_state(directory, state)
    return new
