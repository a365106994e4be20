"""WAL retention: the archive on S3 and the receiver's local directory, pruned to what the kept base backups
and the PITR window need. Called by :func:`pgdr.retain.backups.run` with the backups it found and decided on.

WAL is kept per database cluster (``<database>/wal/<system_identifier>/``): a cluster rebuilt after a site
loss restarts the same segment names, so each cluster's WAL is cut at its own kept base backups, never at
another's. WAL shipped before that layout (directly under ``wal/``) is cut at the earliest cut of any
cluster, since old base backups of any cluster may read it."""

from __future__ import annotations

import logging
from datetime import datetime, timedelta
from pathlib import Path

from pgdr.core.units import iso_utc
from pgdr.retain import gfs
from pgdr.store.object_lock import ObjectVersion
from pgdr.wal.local import load_state, scan
from pgdr.wal.names import classify, segment_of_partial, segment_position, wal_prefix


def wal_cutoff(found: list, decisions: list[gfs.Decision], now: datetime,
               window_days: float) -> tuple[str | None, str]:
    """The first WAL segment to keep, and why: the start of the newest usable base backup that finished
    before the PITR window opened (so its oldest moment stays recoverable), else of the oldest one.
    A base backup leased by a running restore keeps its WAL too. Segments are compared by their place in
    the WAL (:func:`segment_position`), which holds whatever the cluster's segment size."""

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
        f"opened ({iso_utc(opens)})" if before else
        f"start of base backup {anchor.backup.backup_id}, the oldest (none finished before the window opened)")
    for leased in (f for f in bases if f.backup.leased_by):
        start = leased.wal["start_wal_file"]
        if segment_position(start) < segment_position(cutoff):
            cutoff, why = start, f"start of base backup {leased.backup.backup_id}, leased by a running restore"
    return cutoff, why


def _wal_name(key: str) -> tuple[str, str] | None:
    """(segment, 'segment'|'partial') of a WAL object key; None for histories and anything else."""
    name = key.rsplit("/", 1)[-1]
    if name.endswith(".zst"):
        name = name[:-4]
    kind = classify(name)
    if kind == "segment":
        return name, kind
    if kind == "partial":
        return segment_of_partial(name), kind
    return None


def _system_identifier(found) -> str | None:
    value = (found.wal or {}).get("system_identifier")
    return str(value) if value not in (None, "") else None


def _layout_of(key: str, base: str) -> str | None | bool:
    """The system identifier directory of a WAL key under ``base``, None for the legacy layout, False otherwise."""
    rest = key[len(base):]
    if "/" not in rest:
        return None
    directory, _, name = rest.partition("/")
    return directory if directory.isdigit() and "/" not in name else False


def prune_wal(store, database: str, cutoff: str | None, now: datetime, dry_run: bool,
              system_identifier: str | None = None, versions: list[ObjectVersion] | None = None) -> dict:
    """Delete every version of WAL segments (any timeline) and partial objects before ``cutoff``, and
    of partial objects whose completed segment is stored; history files are always kept. Only the WAL of
    ``system_identifier``'s directory (None: the legacy layout) is looked at."""
    result = {"cutoff": cutoff, "deleted_objects": 0, "bytes_freed": 0, "locked": [], "errors": []}
    if cutoff is None:
        return result
    limit = segment_position(cutoff)
    base = wal_prefix(store.prefix, database) + "/"
    if versions is None:
        versions = store.list_versions(base)
    versions = [v for v in versions if _layout_of(v.key, base) == system_identifier]
    completed = {parsed[0] for v in versions if not v.delete_marker and (parsed := _wal_name(v.key))
                 and parsed[1] == "segment"}
    doomed: dict[str, list[ObjectVersion]] = {}
    for version in versions:
        parsed = _wal_name(version.key)
        if parsed is None:
            continue
        segment, kind = parsed
        if segment_position(segment) < limit or (kind == "partial" and segment in completed):
            doomed.setdefault(version.key, []).append(version)
    go = []
    for key, key_versions in sorted(doomed.items()):
        dates = store.lock_dates(key_versions) if store.object_lock_enabled else {}
        latest = max(dates.values(), default=None)
        if latest is not None and latest > now:
            result["locked"].append({"key": key, "locked_until": iso_utc(latest)})
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
    result = {"directory": str(directory), "removed": [], "bytes_freed": 0}
    if newest_base_start is None or not directory.is_dir():
        result["skipped"] = "no base backup" if newest_base_start is None else "directory not on this worker"
        return result
    shipped = load_state(directory)["segments"]
    limit = segment_position(newest_base_start)
    for item in scan(directory):
        if item.kind == "segment" and item.name in shipped and segment_position(item.name) < limit:
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
    """Prune the WAL archive (per database cluster) and the receiver directory for one database; returns
    (wal report, receiver report)."""
    bases = [f for f in found if f.backup.kind == "base"]
    clusters = sorted({_system_identifier(f) for f in bases}, key=lambda c: (c is None, c or ""))
    base = wal_prefix(store.prefix, database) + "/"
    versions = store.list_versions(base)
    stored = {layout for v in versions if (layout := _layout_of(v.key, base)) is not False}
    per_cluster: dict[str, dict] = {}
    cuts: list[str | None] = []
    for cluster in [c for c in clusters if c is not None] + sorted(c for c in stored if c and c not in clusters):
        mine = [f for f in bases if _system_identifier(f) == cluster]
        cutoff, why = wal_cutoff(mine, decisions, now, settings.pitr_window_days)
        if not mine:
            why = "no base backup of this cluster yet: all its WAL kept"
        cuts.append(cutoff)
        per_cluster[cluster] = {**prune_wal(store, database, cutoff, now, dry_run, cluster, versions), "reason": why}
    # legacy objects serve base backups of unknown cluster and old backups of every cluster: the earliest cut
    unknown = [f for f in bases if _system_identifier(f) is None]
    if None in stored or unknown:
        if unknown:
            cutoff, why = wal_cutoff(unknown, decisions, now, settings.pitr_window_days)
            cuts.append(cutoff)
        known = [c for c in cuts]
        legacy_cut = None if (not known or None in known) else min(known, key=segment_position)
        why = ("the earliest cut of any cluster (legacy WAL may serve old base backups of each)" if legacy_cut
               else "a cluster keeps all its WAL: all legacy WAL kept")
        per_cluster["legacy"] = {**prune_wal(store, database, legacy_cut, now, dry_run, None, versions),
                                 "reason": why}
    newest_cluster = max((f for f in bases if f.backup.complete), key=lambda f: f.backup.finished, default=None)
    headline = per_cluster.get(_system_identifier(newest_cluster) if newest_cluster else None) \
        or per_cluster.get("legacy") or {"cutoff": None, "reason": "no usable base backup: all WAL kept"}
    wal = {"cutoff": headline["cutoff"], "reason": headline["reason"],
           "deleted_objects": sum(r["deleted_objects"] for r in per_cluster.values()),
           "bytes_freed": sum(r["bytes_freed"] for r in per_cluster.values()),
           "locked": [x for r in per_cluster.values() for x in r["locked"]],
           "errors": [x for r in per_cluster.values() for x in r["errors"]],
           "clusters": {k: {"cutoff": r["cutoff"], "reason": r["reason"], "deleted_objects": r["deleted_objects"]}
                        for k, r in per_cluster.items()}}
    kept_bases = sorted((f for f in bases if f.backup.complete and f.backup.status != gfs.BAD
                         and (f.wal or {}).get("start_wal_file") and f.backup.key not in deleted),
                        key=lambda f: f.backup.finished)
    # the receiver directory holds one cluster's WAL: cut it at that cluster's newest base backup
    directory = Path(settings.wal_receiver_dir) / database
    try:
        receiving = load_state(directory).get("system_identifier") if directory.is_dir() else None
    except Exception:  # noqa: BLE001 - an unreadable state only means the cluster is unknown here
        receiving = None
    same = [f for f in kept_bases if receiving is None or _system_identifier(f) in (None, str(receiving))]
    receiver = prune_receiver_dir(directory, same[-1].wal["start_wal_file"] if same else None, dry_run, log)
    return wal, receiver
