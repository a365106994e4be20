"""The backup catalog: which backups exist, which are complete and good, which to check next.

Pure functions over object keys and small marker documents, so they test without S3.
A backup is *complete* when its manifest exists, *bad* when verification wrote a
marker saying so; a restore takes the newest complete backup that is not bad.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timezone

from pgdr.store.manifest import MANIFEST_NAME, is_backup_id

MARKER_NAME = "verification.json"


@dataclass(frozen=True)
class BackupEntry:
    backup_id: str
    complete: bool                      # has manifest.json
    has_marker: bool
    verification: dict | None = None    # the marker's content once read

    @property
    def bad(self) -> bool:
        return bool(self.verification) and self.verification.get("status") == "bad"

    @property
    def verified_at(self) -> str:
        return (self.verification or {}).get("verified_at", "")


def entries_from_keys(keys: list[str], base: str) -> list[BackupEntry]:
    """Backups under ``base`` (``<prefix>/<database>/<kind>/``), oldest first."""
    found: dict[str, dict[str, bool]] = {}
    for key in keys:
        if not key.startswith(base):
            continue
        parts = key[len(base):].split("/")
        if len(parts) < 2 or not is_backup_id(parts[0]):
            continue
        flags = found.setdefault(parts[0], {"complete": False, "marker": False})
        if len(parts) == 2 and parts[1] == MANIFEST_NAME:
            flags["complete"] = True
        if len(parts) == 2 and parts[1] == MARKER_NAME:
            flags["marker"] = True
    return [BackupEntry(backup_id, flags["complete"], flags["marker"]) for backup_id, flags in sorted(found.items())]


def newest_complete(entries: list[BackupEntry]) -> BackupEntry | None:
    complete = [e for e in entries if e.complete]
    return complete[-1] if complete else None


def newest_good(entries: list[BackupEntry]) -> BackupEntry | None:
    """The newest backup a restore may use: complete and never found bad."""
    good = [e for e in entries if e.complete and not e.bad]
    return good[-1] if good else None


def pick_deep_check(entries: list[BackupEntry], newest_id: str | None) -> BackupEntry | None:
    """The retained complete backup (not the newest) verified longest ago, never-verified first.

    One per run, every six hours, re-verifies every retained backup well within the
    retention period: 30 dailies + 12 monthlies + 7 yearlies take 49 runs, about 12 days.
    """
    candidates = [e for e in entries if e.complete and e.backup_id != newest_id and not e.bad]
    if not candidates:
        return None
    return min(candidates, key=lambda e: (e.verified_at, e.backup_id))


def age_hours(finished_at: str, now: datetime | None = None) -> float:
    now = now or datetime.now(timezone.utc)
    finished = datetime.fromisoformat(finished_at)
    if finished.tzinfo is None:
        finished = finished.replace(tzinfo=timezone.utc)
    return (now - finished).total_seconds() / 3600
