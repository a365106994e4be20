"""The Object Lock date a backup gets when it is written: its GFS expiry as known at that moment.

The store locks what it writes (:mod:`pgdr.store.object_lock`) but does not know retention's
rules, so it is handed :func:`gfs_lock_date`'s function where it is assembled (the operators'
``store`` property, the command lines): the store never imports retention.
"""

from __future__ import annotations

import functools
from datetime import datetime

from pgdr.core.units import iso_utc
from pgdr.retain.gfs import GOOD, Backup, Policy, lock_until_at_write
from pgdr.store.catalog import entries_from_keys
from pgdr.store.layout import backup_prefix, kind_prefix, manifest_key, marker_key
from pgdr.store.manifest import backup_id_time


def backup_lock_date(store, database: str, kind: str, backup_id: str, *, policy: Policy) -> datetime:
    """GFS expiry of a backup being written: the first good one of its month or year so far is kept longer.

    Earlier backups are placed by their id (start time); markers are read oldest first and
    only until the first good one, so a December backup costs a few requests, not hundreds.
    """
    started = backup_id_time(backup_id)
    base = kind_prefix(store.prefix, database, kind)
    earlier = [e for e in entries_from_keys(store.list_keys(base), base)
               if e.complete and e.has_marker and e.backup_id < backup_id
               and backup_id_time(e.backup_id).year == started.year]
    found = []
    for scope in ([e for e in earlier if backup_id_time(e.backup_id).month == started.month], earlier):
        for entry in scope:
            marker = store.read_json_or_none(marker_key(backup_prefix(store.prefix, database, kind,
                                                                      entry.backup_id))) or {}
            if marker.get("status") == GOOD:
                found.append(Backup(kind, entry.backup_id, backup_id_time(entry.backup_id), GOOD))
                break
        if found:
            break
    return lock_until_at_write(started, found, policy)


def gfs_lock_date(policy: Policy):
    """The store's ``backup_lock_date`` for ``policy``: ``(store, database, kind, backup_id) -> datetime``."""
    return functools.partial(backup_lock_date, policy=policy)


def lock_date_from_settings(settings):
    """:func:`gfs_lock_date` of the configured GFS policy (``pgdr_keep_*``)."""
    return gfs_lock_date(Policy.from_settings(settings))


def lock_chain_as_long(store, database: str, manifest) -> list[dict]:
    """Once an incremental base backup is sealed: every earlier piece of its chain (``dump["chain"]``, the full
    first) locked at least until the incremental's own date, read from its sealed ``manifest.json``. The
    full was locked when it was written, for its own GFS role; an incremental built on it later may be
    locked longer (a month's first), and a restore of it needs the full as long. Retention's run does the
    same for every kept chain (:func:`pgdr.retain.gfs.lock_targets`); this closes the gap until then.
    Returns what was extended (backup id, objects, date); nothing on a bucket without Object Lock or for a full."""
    if not getattr(manifest, "depends_on", None) or not store.object_lock_enabled:
        return []
    head = store.head(manifest_key(backup_prefix(store.prefix, database, "base", manifest.backup_id))) or {}
    until = head.get("ObjectLockRetainUntilDate")
    if until is None:
        return []
    extended = []
    for piece in manifest.dump.get("chain") or []:
        prefix = backup_prefix(store.prefix, database, "base", piece) + "/"
        versions = [v for v in store.list_versions(prefix) if not v.delete_marker]
        short = [v for v in versions if (store.retention_of(v.key, v.version_id) or datetime.min.replace(
            tzinfo=until.tzinfo)) < until]
        for version in short:
            store.set_retention(version.key, version.version_id, until)
        if short:
            extended.append({"backup_id": piece, "objects": len(short), "until": iso_utc(until)})
    return extended
