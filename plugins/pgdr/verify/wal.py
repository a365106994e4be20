"""Verification of the continuous WAL: the archive has no gap (per database cluster, along the timeline
history), shipping keeps up, the receiver
is connected (and synchronous when it should be), its slot is healthy, the archiver is not failing.

Read from S3 (the WAL objects, the base backups' start segments) and from the primary's
statistics views, which the backup role reads through ``pg_monitor``.
"""

from __future__ import annotations

from datetime import datetime, timezone

from pgdr.core.redaction import safe_error
from pgdr.errors import WalGap
from pgdr.store.layout import backup_prefix, manifest_key
from pgdr.verify.backups import result
from pgdr.wal.archive import ArchiveView, manifest_system_identifier

# retained WAL beyond this on the receiver's slot means the receiver has fallen far behind
SLOT_LAG_WARNING_BYTES = 1 << 30


def shipping_limit_seconds(ship_seconds: float) -> float:
    """How old the newest shipped WAL may be before shipping counts as stalled."""
    return max(3 * ship_seconds, 60) + 60


def archive_findings(store, database: str, ship_seconds: float, now: datetime | None = None) -> list[dict]:
    """Gaps between the oldest good base backup of each database cluster (system identifier) and the
    newest WAL, followed along the timeline history to the newest timeline; and a stalled shipper."""
    now = now or datetime.now(timezone.utc)
    entries = [e for e in store.catalog(database, "base") if e.complete and not e.bad]
    if not entries:
        return [{"problem": "no complete, good base backup: point-in-time recovery is impossible"}]
    clusters: dict[str | None, list] = {}
    for entry in entries:   # oldest first
        manifest = store.read_manifest(manifest_key(backup_prefix(store.prefix, database, "base", entry.backup_id)))
        clusters.setdefault(manifest_system_identifier(manifest), []).append((entry.backup_id, manifest))
    view = ArchiveView(store, database)
    findings = []
    plans = []
    for system_identifier, bases in clusters.items():
        for backup_id, manifest in bases:
            try:
                plan = view.continuity(manifest)
            except WalGap as gap:
                # the gap's reason, without a restore's "restore refused" opening: no restore was asked for
                findings.append({"problem": "WAL archive gap", "base_backup": backup_id, "detail": gap.reason[:300],
                                 "segment": gap.segment,
                                 **({"system_identifier": system_identifier} if len(clusters) > 1 else {})})
                break
            if plan is None:
                continue   # this base backup lies on a branch a failover left; a newer one is checked
            plans.append(plan)
            break
    if findings:
        return findings
    listed = view.listed
    newest = max((modified for _, modified in listed if modified is not None), default=None)
    if newest is not None and plans:
        age = (now - newest).total_seconds()
        if age > shipping_limit_seconds(ship_seconds):
            findings.append({"problem": "WAL shipping stalled", "newest_wal": plans[-1].last,
                             "age_seconds": round(age), "limit_seconds": shipping_limit_seconds(ship_seconds)})
    return findings


def server_findings(conn, slot: str) -> list[dict]:
    """The receiver's connection and sync state, its slot, the archiver."""
    findings = []
    with conn.cursor() as cur:
        cur.execute("SELECT current_setting('synchronous_standby_names')")
        (sync_names,) = cur.fetchone()
        cur.execute("SELECT state, sync_state FROM pg_stat_replication WHERE application_name = %s", (slot,))
        rows = cur.fetchall()
        if not rows:
            findings.append({"problem": "WAL receiver not connected", "application_name": slot,
                             "synchronous_standby_names": sync_names or "(none)"})
        else:
            state, sync_state = rows[0]
            wanted_sync = slot in (sync_names or "")
            if state != "streaming":
                findings.append({"problem": "WAL receiver not streaming", "state": state})
            elif wanted_sync and sync_state not in ("sync", "quorum"):
                findings.append({"problem": "WAL receiver not synchronous", "sync_state": sync_state,
                                 "synchronous_standby_names": sync_names})
        cur.execute("SELECT active, wal_status, pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn)::bigint "
                    "FROM pg_replication_slots WHERE slot_name = %s", (slot,))
        slot_row = cur.fetchone()
        if slot_row is None:
            findings.append({"problem": "replication slot missing", "slot": slot})
        else:
            active, wal_status, retained = slot_row
            if wal_status == "lost":
                findings.append({"problem": "replication slot lost its WAL", "slot": slot})
            elif retained is not None and retained > SLOT_LAG_WARNING_BYTES:
                findings.append({"problem": "replication slot retains a lot of WAL", "slot": slot,
                                 "retained_bytes": int(retained), "active": active})
        cur.execute("SELECT current_setting('archive_mode'), failed_count, last_failed_wal, last_failed_time, "
                    "last_archived_time FROM pg_stat_archiver")
        mode, failed, failed_wal, failed_at, archived_at = cur.fetchone()
        if mode != "off" and failed and failed_at and (archived_at is None or failed_at > archived_at):
            findings.append({"problem": "the server's archiver is failing", "last_failed_wal": failed_wal,
                             "failed_count": int(failed)})
    return findings


def check_wal(store, database: str, connect, slot: str, ship_seconds: float, enabled: bool) -> dict:
    if not enabled:
        return result("wal", "ok", "physical backups and WAL archiving are off (pgdr_physical_backups)",
                      fingerprint="off")
    findings = archive_findings(store, database, ship_seconds)
    try:
        conn = connect()
    except Exception as err:  # noqa: BLE001 - an unreachable primary is a finding, not a crash
        findings.append({"problem": "primary unreachable", "error": safe_error(err)[:200]})
    else:
        try:
            findings.extend(server_findings(conn, slot))
        finally:
            conn.close()
    if not findings:
        return result("wal", "ok", "WAL archive continuous from the oldest base backup, shipping current, "
                                   "receiver connected, slot healthy", fingerprint="ok")
    blocking = [f for f in findings if f["problem"] != "replication slot retains a lot of WAL"]
    summary = "; ".join(f["problem"] + (f" ({f['detail']})" if "detail" in f else "") for f in findings)
    return result("wal", "failed" if blocking else "warning", summary, findings,
                  fingerprint="wal:" + ",".join(sorted(f["problem"] for f in findings)))


__all__ = ["check_wal", "archive_findings", "server_findings"]
