"""WAL retention: the archive on S3 and the receiver's local directory, pruned to what the kept base backups
and the PITR window need. Called by :func:`pgdr.expire.run` with the backups it found and decided on."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path

from pgdr import gfs
from pgdr.storage import ObjectVersion


def _iso(when):
    from pgdr.expire import _iso as iso
    return iso(when)


def _lock_dates(store, versions):
    from pgdr.expire import _lock_dates as dates
    return dates(store, versions)


def wal_cutoff(found: list, decisions: list[gfs.Decision], now: datetime,
               window_days: float) -> tuple[str | None, str]:
    """The first WAL segment to keep, and why: the start of the newest usable base backup that finished
    before the PITR window opened (so its oldest moment stays recoverable), else of the oldest one.
    A base backup leased by a running restore keeps its WAL too."""
    from pgdr.wal_archive import segment_number

    kept = {d.backup.key for d in decisions if d.keep}
    bases = sorted((f for f in found if f.backup.kind == "base" and f.backup.complete and f.backup.status != gfs.BAD
                    and f.backup.key in kept and (f.wal or {}).get("start_wal_file")),
                   key=lambda f: f.backup.finished)
    if not bases:
        return None, "no usable base backup: all WAL kept"
    opens = now - timedelta(days=window_days)
    before = [f for f in bases if f.backup.finished <= opens]
    anchor = before[-1] if before else bases[0]
    cutoff, why = anchor.wal["start_wal_file"], (
        f"start of base backup {anchor.backup.backup_id}, the newest that finished before the PITR window "
        f"opened ({_iso(opens)})" if before else
        f"start of base backup {anchor.backup.backup_id}, the oldest (none finished before the window opened)")
    for leased in (f for f in bases if f.backup.leased_by):
        start = leased.wal["start_wal_file"]
        if segment_number(start) < segment_number(cutoff):
            cutoff, why = start, f"start of base backup {leased.backup.backup_id}, leased by a running restore"
    return cutoff, why


def _wal_name(key: str) -> tuple[str, str] | None:
    """(segment, 'segment'|'partial') of a WAL object key; None for histories and anything else."""
    from pgdr.wal_archive import classify

    name = key.rsplit("/", 1)[-1]
    if name.endswith(".zst"):
        name = name[:-4]
    kind = classify(name)
    if kind == "segment":
        return name, kind
    if kind == "partial":
        return name[:-len(".partial")], kind
    return None


def prune_wal(store, database: str, cutoff: str | None, now: datetime, dry_run: bool) -> dict:
    """Delete every version of WAL segments (any timeline) and partial objects before ``cutoff``, and
    of partial objects whose completed segment is stored; history files are always kept."""
    from pgdr.wal_archive import segment_number, wal_prefix

    result = {"cutoff": cutoff, "deleted_objects": 0, "bytes_freed": 0, "locked": [], "errors": []}
    if cutoff is None:
        return result
    limit = segment_number(cutoff)
    versions = store.list_versions(wal_prefix(store.prefix, database) + "/")
    completed = {parsed[0] for v in versions if not v.delete_marker and (parsed := _wal_name(v.key))
                 and parsed[1] == "segment"}
    doomed: dict[str, list[ObjectVersion]] = {}
    for version in versions:
        parsed = _wal_name(version.key)
        if parsed is None:
            continue
        segment, kind = parsed
        if segment_number(segment) < limit or (kind == "partial" and segment in completed):
            doomed.setdefault(version.key, []).append(version)
    go = []
    for key, key_versions in sorted(doomed.items()):
        dates = _lock_dates(store, key_versions) if store.object_lock_enabled else {}
        latest = max(dates.values(), default=None)
        if latest is not None and latest > now:
            result["locked"].append({"key": key, "locked_until": _iso(latest)})
            continue
        go.extend(key_versions)
    result["deleted_objects"] = len({v.key for v in go})
    result["bytes_freed"] = sum(v.size for v in go)
    if go and not dry_run:
        # newest segments first: an interruption leaves a shorter archive, never a gap inside it
        go.sort(key=lambda v: v.key, reverse=True)
        result["errors"] = store.delete_versions(go)
    return result


def prune_receiver_dir(directory: Path, newest_base_start: str | None, dry_run: bool,
                       log: logging.Logger) -> dict:
    """Remove local WAL segments already shipped (per the shipper's state) and older than the newest base
    backup's start. Never one that is unshipped, a partial or a history file."""
    from pgdr.wal_archive import load_state, scan, segment_number

    result = {"directory": str(directory), "removed": [], "bytes_freed": 0}
    if newest_base_start is None or not directory.is_dir():
        result["skipped"] = "no base backup" if newest_base_start is None else "directory not on this worker"
        return result
    shipped = load_state(directory)["segments"]
    limit = segment_number(newest_base_start)
    for item in scan(directory):
        if item.kind == "segment" and item.name in shipped and segment_number(item.name) < limit:
            if not dry_run:
                item.path.unlink(missing_ok=True)
            result["removed"].append(item.name)
            result["bytes_freed"] += item.size
    if result["removed"]:
        log.info("%s %d shipped WAL segments from %s", "would remove" if dry_run else "removed",
                 len(result["removed"]), directory)
    return result


def expire_wal(*, store, database: str, found: list, decisions: list[gfs.Decision], deleted: list[str], settings,
               now: datetime, dry_run: bool, log: logging.Logger) -> tuple[dict, dict]:
    """Prune the WAL archive and the receiver directory for one database; returns (wal report, receiver report)."""
    cutoff, why = wal_cutoff(found, decisions, now, settings.pitr_window_days)
    wal = {**prune_wal(store, database, cutoff, now, dry_run), "reason": why}
    kept_bases = sorted((f for f in found if f.backup.kind == "base" and f.backup.complete
                         and f.backup.status != gfs.BAD and (f.wal or {}).get("start_wal_file")
                         and f.backup.key not in deleted), key=lambda f: f.backup.finished)
    receiver = prune_receiver_dir(Path(settings.wal_receiver_dir) / database,
                                  kept_bases[-1].wal["start_wal_file"] if kept_bases else None, dry_run, log)
    return wal, receiver
