"""Full or incremental: which base backup a new one is taken against (PostgreSQL 17+), and why.

An incremental (``pg_basebackup --incremental``) holds only the blocks changed since its parent, read
from the server's WAL summaries; a restore combines the full and every incremental after it with
``pg_combinebackup``. The parent is the newest *good* base backup of the database: sealed (its
manifest written after pg_verifybackup passed on the copy and every object was checked in S3) and
never marked bad by verification. A deep-check marker is not waited for: the rotating check reaches a
backup hours or days later, and an incremental must be possible the next day; a piece found bad later
makes its chain unusable, and the next backup is then a full.

A full is taken instead when the server cannot take an incremental (before 17, ``summarize_wal`` off),
when the parent is of another database system, major or timeline, when a piece of its chain is gone or
bad, when the chain's full is older than ``pgdr_full_backup_days``, or when the chain already holds
``pgdr_max_incremental_chain`` incrementals. Every choice carries its reason into the log and the manifest.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pgdr.store.manifest import Manifest, backup_id_time

INCREMENTAL_MAJOR = 17      # pg_basebackup --incremental and pg_combinebackup exist from 17
SUMMARIZE_WAL_STEP = ("turn it on (no restart needed): ALTER SYSTEM SET summarize_wal = on; SELECT pg_reload_conf(); "
                      "see docs/backup-format.md#physical-backups-on-each-major")


@dataclass(frozen=True)
class ServerState:
    """What the choice between a full and an incremental backup reads from the server."""

    version_num: int
    system_identifier: str | None
    timeline: int
    summarize_wal: bool | None          # None before 17 (no such setting)


@dataclass(frozen=True)
class Parent:
    """The backup an incremental is taken against: its id, the chain up to it (full first, itself last)
    and its backup_manifest as stored."""

    backup_id: str
    chain: list[str]
    backup_manifest: bytes


@dataclass(frozen=True)
class BackupChoice:
    """A full backup (``parent`` None) or an incremental against ``parent``, and why, in words."""

    parent: Parent | None
    reason: str

    def describe(self) -> dict:
        """The manifest's part of it (the MANIFEST CONTRACT in docs/backup-format.md)."""
        if self.parent is None:
            return {"backup_type": "full", "chain": [], "depends_on": None, "backup_type_reason": self.reason}
        return {"backup_type": "incremental", "chain": list(self.parent.chain), "depends_on": self.parent.backup_id,
                "backup_type_reason": self.reason}


def server_state(cur, version_num: int, system_identifier: str | None) -> ServerState:
    """The server's timeline (from its current WAL file name: needs no privilege) and, on 17+, summarize_wal."""
    cur.execute("SELECT substr(pg_walfile_name(pg_current_wal_lsn()), 1, 8)")
    timeline = int(cur.fetchone()[0], 16)
    summarize = None
    if version_num >= INCREMENTAL_MAJOR * 10000:
        cur.execute("SELECT current_setting('summarize_wal')")
        summarize = cur.fetchone()[0] == "on"
    return ServerState(version_num=version_num, system_identifier=system_identifier, timeline=timeline,
                       summarize_wal=summarize)


@dataclass(frozen=True)
class ChainPolicy:
    """The settings pgdr_incremental_backups, pgdr_full_backup_days and pgdr_max_incremental_chain."""

    enabled: bool = True
    full_days: float = 7.0
    max_chain: int = 6

    @classmethod
    def from_settings(cls, settings) -> ChainPolicy:
        return cls(enabled=settings.incremental_backups, full_days=settings.full_backup_days,
                   max_chain=settings.max_incremental_chain)


def choose_parent(state: ServerState, newest: Manifest | None, good_ids: set[str], policy: ChainPolicy,
                  now: datetime | None = None) -> tuple[Manifest | None, str]:
    """(the parent, why) or (None, why a full). ``newest``: the newest good base backup of the database;
    ``good_ids``: the ids of every good (sealed, not bad) base backup. Pure."""
    major = state.version_num // 10000
    if major < INCREMENTAL_MAJOR:
        return None, (f"PostgreSQL {major} has no incremental base backups (pg_basebackup --incremental comes with "
                      f"{INCREMENTAL_MAJOR}): full")
    if not policy.enabled:
        return None, "pgdr_incremental_backups is false: full"
    if not state.summarize_wal:
        return None, ("summarize_wal is off on the server, so it cannot take incremental backups: full; "
                      + SUMMARIZE_WAL_STEP)
    if newest is None:
        return None, "no earlier good base backup to build on: full"
    if newest.server_version_num // 10000 != major:
        return None, (f"the newest base backup {newest.backup_id} was taken from PostgreSQL "
                      f"{newest.server_version_num // 10000}, the server is now {major}: full")
    if state.system_identifier and newest.system_identifier and state.system_identifier != newest.system_identifier:
        return None, (f"the newest base backup {newest.backup_id} is of database system {newest.system_identifier}, "
                      f"the server is {state.system_identifier} (rebuilt?): full")
    wal = newest.wal or {}
    parent_timeline = int(wal.get("end_timeline") or wal.get("timeline") or 0)
    if parent_timeline != state.timeline:
        return None, (f"the newest base backup {newest.backup_id} ends on timeline {parent_timeline}, the server is on "
                      f"{state.timeline} (a failover since): full")
    if not any(o.role == "backup_manifest" for o in newest.objects):
        return None, f"the newest base backup {newest.backup_id} has no stored backup_manifest: full"
    chain = newest.chain
    missing = [i for i in chain if i not in good_ids]
    if missing:
        return None, (f"the chain of the newest base backup {newest.backup_id} lacks good pieces "
                      f"({', '.join(missing)} gone or bad): full")
    now = now or datetime.now(timezone.utc)
    age_days = (now - backup_id_time(chain[0])).total_seconds() / 86400
    if age_days >= policy.full_days:
        return None, (f"the chain's full {chain[0]} is {age_days:.1f} days old (pgdr_full_backup_days = "
                      f"{policy.full_days:g}): full")
    if len(chain) > policy.max_chain:
        return None, (f"the chain of {chain[0]} already holds {len(chain) - 1} incrementals "
                      f"(pgdr_max_incremental_chain = {policy.max_chain}): full")
    return newest, (f"incremental against {newest.backup_id} (chain of {chain[0]}: this is incremental "
                    f"{len(chain)} of at most {policy.max_chain})")


def store_chooser(store, database: str, policy: ChainPolicy, log: logging.Logger):
    """``choose(ServerState) -> BackupChoice`` for :class:`pgdr.backup.pg_basebackup.PhysicalBackup`: reads the
    catalog and the newest good base backup's manifest, and downloads its backup_manifest (size and sha256
    checked against its manifest). A parent that cannot be read gives a full, with the reason."""
    from pgdr.backup.download import download_object
    from pgdr.core.redaction import safe_error
    from pgdr.store.layout import kind_prefix, manifest_key, object_key

    def choose(state: ServerState) -> BackupChoice:
        if state.version_num // 10000 < INCREMENTAL_MAJOR or not policy.enabled or not state.summarize_wal:
            return BackupChoice(None, choose_parent(state, None, set(), policy)[1])
        entries = store.catalog(database, "base")
        good = [e.backup_id for e in entries if e.complete and not e.bad]
        newest = None
        if good:
            prefix = kind_prefix(store.prefix, database, "base") + good[-1]
            try:
                newest = store.read_manifest(manifest_key(prefix))
            except Exception as err:  # noqa: BLE001 - an unreadable parent: a full, said why
                return BackupChoice(None, f"the newest base backup {good[-1]} cannot be read ({safe_error(err)}): full")
        parent, reason = choose_parent(state, newest, set(good), policy)
        if parent is None:
            return BackupChoice(None, reason)
        entry = next(o for o in parent.objects if o.role == "backup_manifest")
        with tempfile.TemporaryDirectory(prefix="pgdr-parent-") as tmp:
            local = Path(tmp) / "backup_manifest"
            try:
                download_object(store, object_key(kind_prefix(store.prefix, database, "base") + parent.backup_id,
                                                  entry.name), entry, local)
            except Exception as err:  # noqa: BLE001 - a parent whose manifest is damaged or gone: a full
                reason = (f"the backup_manifest of {parent.backup_id} could not be read intact ({safe_error(err)}): "
                          "full")
                log.warning("%s", reason)
                return BackupChoice(None, reason)
            body = local.read_bytes()
        return BackupChoice(Parent(parent.backup_id, parent.chain, body), reason)

    return choose
