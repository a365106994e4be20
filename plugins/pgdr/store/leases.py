"""Leases: a running restore or drill marks the backup it reads, so retention never deletes it.

Airflow 3 tasks cannot query the metadata database, so the lease lives in S3 beside the state:
``<prefix>/state/leases/<database>/<kind>/<backup_id>/<holder>.json`` with an expiry. A lease
whose holder died simply runs out. Leases are never Object-Locked (they must be removable).

A backup is leased as soon as it is chosen and then looked up again (:func:`lease_chosen`):
retention deletes what it planned before the lease existed, so a backup that vanished in between
is let go and another one chosen, never restored half-deleted.

An incremental base backup is restored with every backup of its chain (its full and the incrementals
before it), so leasing it leases each of them too, for the same holder; the lease of the backup names
them, and releasing it releases them.
"""

from __future__ import annotations

import re
from datetime import datetime, timedelta, timezone

from pgdr.store import layout
from pgdr.store.manifest import KINDS, backup_prefix, is_backup_id

_HOLDER_UNSAFE = re.compile(r"[^A-Za-z0-9_.:+=@-]")


def _holder_name(holder: str) -> str:
    return _HOLDER_UNSAFE.sub("_", holder)[:200] or "unknown"


def lease_prefix(store, database: str) -> str:
    return layout.lease_prefix(store.prefix, database)


def lease_key(store, database: str, kind: str, backup_id: str, holder: str) -> str:
    if kind not in KINDS or not is_backup_id(backup_id):
        raise ValueError(f"cannot lease {kind}/{backup_id}: not a backup kind and id")
    return f"{lease_prefix(store, database)}/{kind}/{backup_id}/{_holder_name(holder)}.json"


def hold(store, database: str, kind: str, backup_id: str, holder: str, hours: float,
         now: datetime | None = None) -> str:
    """Lease a backup for ``hours`` (longer than the restore can take); returns the lease key. A base backup's
    chain (the backups an incremental is restored with) is leased with it, its pieces first."""
    now = now or datetime.now(timezone.utc)
    key = lease_key(store, database, kind, backup_id, holder)
    document = {"database": database, "kind": kind, "backup_id": backup_id, "holder": holder,
                "held_at": now.isoformat(timespec="seconds"),
                "expires_at": (now + timedelta(hours=hours)).isoformat(timespec="seconds")}
    chain = chain_of(store, database, kind, backup_id)
    for piece in chain:
        store.put_json(lease_key(store, database, kind, piece, holder), {**document, "backup_id": piece,
                                                                         "for": backup_id})
    store.put_json(key, {**document, "chain": chain} if chain else document)
    return key


def chain_of(store, database: str, kind: str, backup_id: str) -> list[str]:
    """The backups an incremental base backup is restored with (its ``dump.chain``); [] for any other."""
    if kind != "base":
        return []
    manifest = store.read_json_or_none(layout.manifest_key(backup_prefix(store.prefix, database, kind, backup_id)))
    if not manifest or not manifest.get("depends_on"):
        return []
    return [str(piece) for piece in (manifest.get("dump") or {}).get("chain") or [] if is_backup_id(str(piece))]


def lease_chosen(store, database: str, kind: str, choose, holder: str, hours: float, log=None, attempts: int = 3):
    """Choose a backup (``choose(entries) -> entry``), lease it, then check it is still complete and
    good; one that went away meanwhile is released and the choice made again.

    Returns (entries, entry, lease key); raises RuntimeError when backups keep disappearing.
    """
    for _ in range(attempts):
        entries = store.catalog(database, kind)
        entry = choose(entries)
        key = hold(store, database, kind, entry.backup_id, holder, hours)
        again = {e.backup_id: e for e in store.catalog(database, kind)}.get(entry.backup_id)
        if again is not None and again.complete and not again.bad:
            return entries, entry, key
        release(store, database, kind, entry.backup_id, holder)
        if log is not None:
            log.warning("%s backup %s of %s went away while it was being leased; choosing again", kind,
                        entry.backup_id, database)
    raise RuntimeError(f"{kind} backups of {database} keep disappearing while being leased "
                       "(is backup retention running?); try again")


def release(store, database: str, kind: str, backup_id: str, holder: str) -> None:
    """Remove the lease (every version of it, so nothing is left behind in a versioned bucket), and the
    leases it took on its chain's pieces."""
    key = lease_key(store, database, kind, backup_id, holder)
    lease = store.read_json_or_none(key) or {}
    pieces = [lease_key(store, database, kind, piece, holder) for piece in lease.get("chain") or []
              if is_backup_id(str(piece))]
    store.delete_all_versions([key, *pieces])


def active(store, database: str, now: datetime | None = None) -> list[dict]:
    """Unexpired leases of ``database``: dicts with kind, backup_id, holder, expires_at."""
    now = now or datetime.now(timezone.utc)
    found = []
    for key in store.list_keys(lease_prefix(store, database)):
        lease = store.read_json_or_none(key)
        if not lease:
            continue
        try:
            expires = datetime.fromisoformat(lease["expires_at"])
        except (KeyError, TypeError, ValueError):
            continue
        if expires > now:
            found.append(lease)
    return found


def holders_by_backup(leases: list[dict]) -> dict[tuple[str, str], tuple[str, ...]]:
    """(kind, backup_id) -> holders, from :func:`active`."""
    holders: dict[tuple[str, str], list[str]] = {}
    for lease in leases:
        holders.setdefault((lease["kind"], lease["backup_id"]), []).append(str(lease["holder"]))
    return {key: tuple(sorted(value)) for key, value in holders.items()}
