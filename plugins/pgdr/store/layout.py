"""Every S3 key pgdr writes or reads, built in one place (the storage contract, docs/DISASTER_RECOVERY.md).

``prefix`` is the ``pgdr_s3_prefix`` setting (``store.prefix``). Prefixes are returned without a
trailing slash, except :func:`kind_prefix`, which is the ``base`` that
:func:`pgdr.store.catalog.entries_from_keys` takes::

    <prefix>/<database>/<kind>/<backup_id>/manifest.json       backups (manifest written last)
    <prefix>/<database>/<kind>/<backup_id>/verification.json   the verification verdict
    <prefix>/<database>/wal/[<system identifier>/]<name>.zst    WAL (pgdr.wal.ship.wal_key)
    <prefix>/<database>/archive/<schema.table>/<run>/<attempt>-<action>/   rows data retention deleted
    <prefix>/state/{leases,restores,replaced}/<database>/...   what running work holds and left
    <prefix>/state/{alerts,markers,wal-gaps}/<database>.json   what the checks remember between runs
    <prefix>/reports/<folder>/<time>-<database>.json           one record per run (verify, drill, restore...)
    <prefix>/reports/index.html                                the backup history page

Pure: no I/O, so it is imported by every stage and tested without S3.
"""

from __future__ import annotations

from datetime import datetime, timezone

from pgdr.store.catalog import MARKER_NAME
from pgdr.store.manifest import MANIFEST_NAME, backup_prefix

__all__ = ["backup_prefix", "kind_prefix", "object_key", "manifest_key", "marker_key", "wal_root", "lease_prefix",
           "restores_prefix", "replaced_prefix", "wal_gaps_key", "alert_state_key", "markers_key", "reports_prefix",
           "report_key", "backup_retention_report_key", "data_retention_report_key", "data_retention_failure_key",
           "page_key", "archive_prefix", "PAGE_NAME"]

PAGE_NAME = "index.html"


def _stamp(when: datetime) -> str:
    return when.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


# --- backups (backup_prefix, validated with the id and kind, is pgdr.store.manifest's) ------------

def kind_prefix(prefix: str, database: str, kind: str) -> str:
    """``<prefix>/<database>/<kind>/``: every backup of one kind, *with* the trailing slash."""
    return f"{prefix}/{database}/{kind}/"


def object_key(backup_prefix: str, name: str) -> str:
    """One object of a backup, ``name`` relative to its directory (as a manifest lists it)."""
    return f"{backup_prefix}/{name}"


def manifest_key(backup_prefix: str) -> str:
    return f"{backup_prefix}/{MANIFEST_NAME}"


def marker_key(backup_prefix: str) -> str:
    """The verification verdict of a backup (pgdr.store.catalog)."""
    return f"{backup_prefix}/{MARKER_NAME}"


def wal_root(prefix: str, database: str) -> str:
    """``<prefix>/<database>/wal``: every cluster's WAL of a database; one cluster's is
    :func:`pgdr.wal.ship.wal_prefix` below it."""
    return f"{prefix}/{database}/wal"


# --- state ---------------------------------------------------------------------------------------

def lease_prefix(prefix: str, database: str) -> str:
    return f"{prefix}/state/leases/{database}"


def restores_prefix(prefix: str, database: str | None = None) -> str:
    """Restore journals (pgdr.restore.journal), of one database or all."""
    return f"{prefix}/state/restores" + (f"/{database}" if database else "")


def replaced_prefix(prefix: str, database: str) -> str:
    """Databases a replace kept, recorded so they are dropped by id later."""
    return f"{prefix}/state/replaced/{database}"


def wal_gaps_key(prefix: str, database: str) -> str:
    return f"{prefix}/state/wal-gaps/{database}.json"


def alert_state_key(prefix: str, database: str) -> str:
    """What verification alerted on, so a failure posts once, reminds, then resolves."""
    return f"{prefix}/state/alerts/{database}.json"


def markers_key(prefix: str, database: str) -> str:
    """The commit markers the point-in-time drill checks (pgdr.drill.markers)."""
    return f"{prefix}/state/markers/{database}.json"


# --- reports -------------------------------------------------------------------------------------

def reports_prefix(prefix: str, folder: str) -> str:
    """``<prefix>/reports/<folder>``: verify, drill, pitr-drill, restore, retention/..."""
    return f"{prefix}/reports/{folder}"


def report_key(prefix: str, folder: str, stamp: str, database: str, suffix: str = "") -> str:
    """``<prefix>/reports/<folder>/<stamp>-<database><suffix>.json``; ``stamp`` a backup id (UTC time)."""
    return f"{reports_prefix(prefix, folder)}/{stamp}-{database}{suffix}.json"


def backup_retention_report_key(prefix: str, database: str, now: datetime, dry_run: bool) -> str:
    return f"{reports_prefix(prefix, 'retention/backups')}/{database}/{_stamp(now)}{'-dry-run' if dry_run else ''}.json"


def data_retention_report_key(prefix: str, stamp: str, database: str) -> str:
    return f"{reports_prefix(prefix, 'retention/data')}/{stamp}/{database}.json"


def data_retention_failure_key(prefix: str, stamp: str) -> str:
    """The report of a data retention run that could not start: no database is known for sure."""
    return f"{reports_prefix(prefix, 'retention/data')}/{stamp}/_run.json"


def page_key(prefix: str) -> str:
    """The backup history page, beside the reports."""
    return f"{prefix}/reports/{PAGE_NAME}"


# --- data retention's archive ---------------------------------------------------------------------

def archive_prefix(prefix: str, database: str, table: str, stamp: str, as_of: datetime, action: str) -> str:
    """One directory per rule and attempt: a retried run (same ``stamp``) never overwrites the archive
    of rows an earlier, interrupted attempt already deleted."""
    return f"{prefix}/{database}/archive/{table}/{stamp}/{_stamp(as_of)}-{action}"
