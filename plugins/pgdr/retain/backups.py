"""Backup retention applied: a GFS plan carried out on S3, the WAL archive, the receiver directory and staging.

:func:`run` reads every backup of one protected database (manifests, verification markers,
leases), plans with :mod:`pgdr.retain.gfs`, asks S3 for the Object Lock date of everything it would
delete (a backup with a version still locked is kept and reported, never attempted), deletes
every *version* of what goes (a plain delete in a versioned bucket only hides the data behind a
delete marker), manifest first so a half-deleted backup is never listed, extends the lock of
backups whose GFS role grew, prunes WAL older than the PITR window needs, prunes the receiver
directory and local staging, and returns the report. ``dry_run`` changes nothing and reports
the same plan.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from datetime import datetime, timezone

from pgdr.core.units import iso_utc
from pgdr.retain import gfs
from pgdr.retain import wal as wal_expire
from pgdr.store import leases, staging
from pgdr.store.catalog import BackupEntry, entries_from_keys
from pgdr.store.layout import backup_prefix, kind_prefix, manifest_key, marker_key
from pgdr.store.manifest import KINDS, backup_id_time, is_backup_id
from pgdr.store.object_lock import ObjectVersion


@dataclass
class Found:
    """What one backup directory holds, beyond what the plan needs."""

    backup: gfs.Backup
    prefix: str
    wal: dict | None = None
    versions: list[ObjectVersion] = field(default_factory=list)
    hidden_keys: list[str] = field(default_factory=list)   # data versions behind a delete marker


def _depends_on(document: dict) -> tuple[str, ...]:
    dump = document.get("dump") or {}
    parent = document.get("depends_on")
    if isinstance(parent, str):
        # an incremental base backup names its parent; it restores only with every earlier piece of its
        # chain (dump.chain: the full up to the parent), so it depends on each of them directly: a piece
        # already gone does not let the retention of the ones before it slip
        return tuple(str(x) for x in (dump.get("chain") or [parent]))
    # file backups name the backups holding their unchanged files' content
    found = parent or dump.get("depends_on") or []
    return tuple(str(x) for x in found)


def _newest_data(versions: list[ObjectVersion], key: str) -> ObjectVersion | None:
    """The newest version of ``key`` that holds data (not a delete marker), None when it has none."""
    data = [v for v in versions if v.key == key and not v.delete_marker]
    return max(data, key=lambda v: (v.last_modified or datetime.min.replace(tzinfo=timezone.utc)), default=None)


def _read_version(store, version: ObjectVersion) -> dict:
    return json.loads(store.get_bytes(version.key, version.version_id))


def collect(store, database: str, now: datetime) -> list[Found]:
    """Every backup directory of ``database`` (every kind), with status, dependencies and leases.

    A backup soft-deleted by a delete marker (on its manifest or on any other object) while a version
    of its manifest remains is found as *hidden*: read from that version, complete, and its hidden
    keys recorded so :func:`restore_hidden` can bring it back. Only a directory that never had a
    manifest is incomplete (an orphan once a day old).
    """
    holders = leases.holders_by_backup(leases.active(store, database, now))
    found = []
    for kind in KINDS:
        base = kind_prefix(store.prefix, database, kind)
        versions: dict[str, list[ObjectVersion]] = {}
        for version in store.list_versions(base):
            versions.setdefault(version.key[len(base):].split("/", 1)[0], []).append(version)
        current = store.list_keys(base)
        visible = set(current)
        entries = entries_from_keys(current, base)
        listed = {e.backup_id for e in entries}
        # a failed upload's cleanup on a locked bucket leaves versions behind delete markers: never
        # listed, yet billed; once their lock runs out they go as orphans
        entries += [BackupEntry(backup_id, False, False) for backup_id in sorted(versions)
                    if backup_id not in listed and is_backup_id(backup_id)]
        for entry in entries:
            prefix = backup_prefix(store.prefix, database, kind, entry.backup_id)
            mine = versions.get(entry.backup_id, [])
            hidden = sorted({v.key for v in mine if not v.delete_marker} - visible)
            manifest = _newest_data(mine, manifest_key(prefix))
            finished, wal, depends, status = backup_id_time(entry.backup_id), None, (), gfs.UNVERIFIED
            complete = entry.complete or manifest is not None
            if complete:
                document = (store.read_json(manifest_key(prefix)) if entry.complete
                            else _read_version(store, manifest))
                finished = datetime.fromisoformat(document["finished_at"])
                if finished.tzinfo is None:
                    finished = finished.replace(tzinfo=timezone.utc)
                wal, depends = document.get("wal"), _depends_on(document)
                marker = _newest_data(mine, marker_key(prefix))
                if marker is not None:
                    content = (store.read_json_or_none(marker_key(prefix)) if entry.has_marker
                               else _read_version(store, marker)) or {}
                    status = {"good": gfs.GOOD, "bad": gfs.BAD}.get(content.get("status"), gfs.UNVERIFIED)
            backup = gfs.Backup(kind, entry.backup_id, finished, status, complete, depends,
                                holders.get((kind, entry.backup_id), ()), hidden=bool(complete and hidden))
            found.append(Found(backup, prefix, wal, mine, hidden if complete else []))
    return found


def restore_hidden(store, item: Found) -> list[str]:
    """Undo a soft delete: remove every delete marker of the backup's hidden keys, so the newest data
    version of each is current again (nothing is copied or rewritten). Returns S3's errors."""
    hidden = set(item.hidden_keys)
    return store.delete_versions([v for v in item.versions if v.delete_marker and v.key in hidden])


def _delete_backup(store, item: Found) -> tuple[int, list[str]]:
    """Every version of a backup's objects, the manifest's first. Returns (bytes freed, errors)."""
    first_key = manifest_key(item.prefix)
    first = [v for v in item.versions if v.key == first_key]
    rest = [v for v in item.versions if v.key != first_key]
    errors = store.delete_versions(first)
    if errors:
        return 0, errors   # still listed as it was: nothing half-deleted
    errors = store.delete_versions(rest)
    return sum(v.size for v in item.versions), errors


def plan_backups(store, database: str, now: datetime, policy: gfs.Policy,
                 log: logging.Logger) -> tuple[list[Found], list[gfs.Decision]]:
    """The plan, with Object Lock dates read for everything the first pass would delete."""
    found = collect(store, database, now)
    decisions = gfs.plan([f.backup for f in found], now, policy)
    doomed = {d.backup.key for d in decisions if not d.keep}
    by_key = {f.backup.key: f for f in found}
    if doomed:
        if store.object_lock_enabled:
            for key in doomed:
                item = by_key[key]
                dates = store.lock_dates(item.versions)
                latest = max(dates.values(), default=None)
                if latest is not None and latest > now:
                    item.backup = gfs.Backup(**{**item.backup.__dict__, "locked_until": latest})
            decisions = gfs.plan([f.backup for f in found], now, policy)
    log.info("backup retention plan for %s: %s", database, gfs.summary(decisions))
    return found, decisions


def extend_locks(store, found: list[Found], decisions: list[gfs.Decision], policy: gfs.Policy, now: datetime,
                 dry_run: bool) -> list[dict]:
    """Lengthen the retain-until date of kept backups whose GFS role outlasts their lock."""
    if not store.object_lock_enabled:
        return []
    by_key = {f.backup.key: f for f in found}
    extended = []
    for key, until in sorted(gfs.lock_targets(decisions, policy, now).items()):
        item = by_key[key]
        versions = [v for v in item.versions if not v.delete_marker]
        short = [v for v in versions if (store.retention_of(v.key, v.version_id) or now) < until]
        if not short:
            continue
        if not dry_run:
            for version in short:
                store.set_retention(version.key, version.version_id, until)
        extended.append({"kind": key[0], "backup_id": key[1], "objects": len(short), "until": iso_utc(until)})
    return extended


# ---------------------------------------------------------------- the whole run

def run(*, store, database: str, settings, now: datetime | None = None, dry_run: bool,
        log: logging.Logger) -> dict:
    """Apply (or, with ``dry_run``, only plan) backup retention for one protected database; returns the report."""
    now = now or datetime.now(timezone.utc)
    policy = gfs.Policy.from_settings(settings)
    found, decisions = plan_backups(store, database, now, policy, log)
    by_key = {f.backup.key: f for f in found}
    deleted, errors, freed = [], [], 0
    needed_by = gfs.dependents([f.backup for f in found])
    undeleted: set[tuple[str, str]] = set()   # failed to delete, or held back: what they depend on stays
    restored = []
    for item in found:
        if item.backup.hidden:
            problems = [] if dry_run else restore_hidden(store, item)
            errors.extend(problems)
            restored.append({"kind": item.backup.kind, "backup_id": item.backup.backup_id,
                             "objects": len(item.hidden_keys), "restored": not dry_run and not problems})
            log.warning("backup %s/%s was hidden by a delete marker (%d objects): %s", item.backup.kind,
                        item.backup.backup_id, len(item.hidden_keys),
                        "would restore it" if dry_run else "restored" if not problems else "restore FAILED")
    for decision in gfs.deletion_order(decisions):   # an incremental before its chain, the full last
        key = decision.backup.key
        item = by_key[key]
        stuck = [dependent[1] for dependent in needed_by.get(key, ()) if dependent in undeleted]
        if stuck:
            # never a full gone while an incremental built on it stays: the next run tries again
            undeleted.add(key)
            errors.append(f"{key[0]}/{key[1]} not deleted: {', '.join(sorted(stuck))} depending on it could not "
                          "be deleted")
            continue
        if not dry_run:
            bytes_freed, problems = _delete_backup(store, item)
            freed += bytes_freed
            errors.extend(problems)
            if problems:
                undeleted.add(key)
        else:
            freed += sum(v.size for v in item.versions)
        deleted.append(key)
    extended = extend_locks(store, found, decisions, policy, now, dry_run)

    wal, receiver = wal_expire.expire_wal(store=store, database=database, found=found, decisions=decisions,
                                          deleted=deleted, settings=settings, now=now, dry_run=dry_run, log=log)
    errors.extend(wal["errors"])
    staged = {kind: staging.prune(settings.staging_dir, database, kind, settings.local_retention_days, log,
                                  dry_run=dry_run) for kind in KINDS}

    locked = [d.to_dict() for d in decisions if any(r.startswith("locked until") for r in d.reasons)]
    report = {
        "database": database, "dry_run": dry_run, "at": iso_utc(now),
        "policy": {"keep_daily_days": policy.keep_daily_days, "keep_monthly_months": policy.keep_monthly_months,
                   "keep_yearly_years": policy.keep_yearly_years, "pitr_window_days": settings.pitr_window_days,
                   "object_lock": store.object_lock_enabled,
                   "object_lock_mode": settings.object_lock_mode if store.object_lock_enabled else None},
        "backups": [d.to_dict() for d in decisions],
        "counts": {"kept": sum(1 for d in decisions if d.keep), "deleted": len(deleted), "locked": len(locked),
                   "lock_extended": len(extended), "wal_deleted": wal["deleted_objects"],
                   "wal_locked": len(wal["locked"]), "receiver_removed": len(receiver["removed"]),
                   "staging_removed": sum(len(v) for v in staged.values()), "restored": len(restored),
                   "errors": len(errors)},
        "bytes_freed": {"backups": freed, "wal": wal["bytes_freed"], "receiver": receiver["bytes_freed"]},
        "restored": restored, "locked": locked, "lock_extended": extended, "wal": wal, "receiver_dir": receiver,
        "staging_removed": staged, "errors": errors[:50],
    }
    return report

