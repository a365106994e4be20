"""Object Lock and object versions: the dates S3 keeps what pgdr writes, and deleting versions for good.

Where the bucket has Object Lock, each object gets a retain-until date when it is written:

* the objects of a backup: the backup's GFS expiry at write time. That date is *retention*'s
  knowledge (:mod:`pgdr.retain.object_lock`), so the store does not compute it: it is handed a
  ``backup_lock_date(store, database, kind, backup_id) -> datetime | None`` function by whoever
  assembles it (the operators' ``store`` property, the command lines). The store stays below
  retention in the layering;
* completed WAL segments and timeline histories: the point-in-time window from now;
* nothing else: partial WAL, reports and state (leases, journals) are superseded or removed within
  minutes, and every locked version would be kept.

:class:`ObjectLock` is the part of :class:`pgdr.store.s3.BackupStore` that deals with locks,
versions and the bucket's protections (:meth:`ObjectLock.bucket_posture`); it uses the store's
``client``, ``bucket`` and ``prefix``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta, timezone

from pgdr.errors import StoreError
from pgdr.store.manifest import KINDS, is_backup_id

# (store, database, kind, backup_id) -> the retain-until date of that backup's objects, None: not locked
BackupLockDate = Callable[[object, str, str, str], "datetime | None"]

# a date closer than this is not worth a lock (and S3 may refuse one already past when it arrives)
MIN_LOCK = timedelta(seconds=60)


@dataclass(frozen=True)
class LockPolicy:
    """How the store locks what it writes where the bucket has Object Lock (the GFS part of a backup's
    date comes with the store's ``backup_lock_date``)."""

    mode: str                  # GOVERNANCE | COMPLIANCE
    pitr_window_days: float

    @classmethod
    def from_settings(cls, settings) -> LockPolicy:
        return cls(settings.object_lock_mode, settings.pitr_window_days)


@dataclass(frozen=True)
class ObjectVersion:
    key: str
    version_id: str
    size: int
    delete_marker: bool
    last_modified: datetime | None = None


class NoBackupLockDate(StoreError, RuntimeError):
    """A store with an Object Lock policy was assembled without the function that dates backups."""


def is_locked_wal(parts: list[str]) -> bool:
    """``<db>/wal/[<system identifier>/]<name>`` of a completed segment or history (not ``.partial``)."""
    return (parts[1:2] == ["wal"] and (len(parts) == 3 or (len(parts) == 4 and parts[2].isdigit()))
            and not parts[-1].endswith(".partial.zst"))


class ObjectLock:
    """Object Lock dates and object versions, mixed into :class:`pgdr.store.s3.BackupStore`."""

    client: object
    bucket: str
    prefix: str
    lock_policy: LockPolicy | None
    backup_lock_date: BackupLockDate | None

    def _init_lock(self) -> None:
        self._lock_enabled: bool | None = None
        self._backup_locks: dict[tuple[str, str, str], datetime | None] = {}
        self._lock_mutex = threading.Lock()

    @property
    def object_lock_enabled(self) -> bool:
        """Whether the bucket has Object Lock (asked once per store)."""
        if self._lock_enabled is None:
            from botocore.exceptions import ClientError

            try:
                config = self.client.get_object_lock_configuration(Bucket=self.bucket)
                enabled = config.get("ObjectLockConfiguration", {}).get("ObjectLockEnabled") == "Enabled"
            except ClientError:
                enabled = False
            self._lock_enabled = enabled
        return self._lock_enabled

    def lock_until(self, key: str, now: datetime | None = None) -> datetime | None:
        """The retain-until date an object written now at ``key`` gets (None: not locked)."""
        if self.lock_policy is None or not self.object_lock_enabled:
            return None
        now = now or datetime.now(timezone.utc)
        if not key.startswith(self.prefix + "/"):
            return None
        parts = key[len(self.prefix) + 1:].split("/")
        if len(parts) >= 4 and parts[1] in KINDS and is_backup_id(parts[2]):
            until = self._backup_lock(parts[0], parts[1], parts[2], key)
        elif is_locked_wal(parts):
            until = now + timedelta(days=self.lock_policy.pitr_window_days)
        else:
            return None
        return until if until and until > now + MIN_LOCK else None

    def _backup_lock(self, database: str, kind: str, backup_id: str, key: str) -> datetime | None:
        """A backup's date, asked once per store (every object of a backup gets the same)."""
        if self.backup_lock_date is None:
            # never silently unlocked: a backup written to a locked bucket without its date fails loudly
            raise NoBackupLockDate(f"cannot write {key}: the bucket has Object Lock but this store was assembled "
                                   "without backup_lock_date (pgdr.retain.object_lock.gfs_lock_date)")
        with self._lock_mutex:
            cache_key = (database, kind, backup_id)
            if cache_key not in self._backup_locks:
                self._backup_locks[cache_key] = self.backup_lock_date(self, database, kind, backup_id)
            return self._backup_locks[cache_key]

    def lock_args(self, key: str) -> dict:
        until = self.lock_until(key)
        if until is None:
            return {}
        return {"ObjectLockMode": self.lock_policy.mode, "ObjectLockRetainUntilDate": until}

    def bucket_posture(self) -> dict[str, dict]:
        """Default encryption, versioning, Object Lock and public access block of the bucket."""
        from botocore.exceptions import ClientError

        def ask(call, **kwargs):
            try:
                return call(Bucket=self.bucket, **kwargs)
            except ClientError as err:
                return {"_error": err.response.get("Error", {}).get("Code", "error")}

        encryption = ask(self.client.get_bucket_encryption)
        rules = encryption.get("ServerSideEncryptionConfiguration", {}).get("Rules", [])
        algorithms = [r.get("ApplyServerSideEncryptionByDefault", {}).get("SSEAlgorithm") for r in rules]
        versioning = ask(self.client.get_bucket_versioning).get("Status") or "Disabled"
        lock = ask(self.client.get_object_lock_configuration).get("ObjectLockConfiguration", {})
        public = ask(self.client.get_public_access_block).get("PublicAccessBlockConfiguration", {})
        blocked = all(public.get(flag) for flag in ("BlockPublicAcls", "IgnorePublicAcls", "BlockPublicPolicy",
                                                     "RestrictPublicBuckets"))
        return {
            "default_encryption": {"ok": bool(algorithms), "found": algorithms or "none"},
            "versioning": {"ok": versioning == "Enabled", "found": versioning},
            "object_lock": {"ok": lock.get("ObjectLockEnabled") == "Enabled",
                            "found": lock.get("ObjectLockEnabled", "Disabled")},
            "public_access_blocked": {"ok": blocked, "found": public or "no public access block"},
        }

    def set_retention(self, key: str, version_id: str | None, until: datetime) -> None:
        """Set (or extend) the retain-until date of one object version."""
        args = {"VersionId": version_id} if version_id else {}
        self.client.put_object_retention(Bucket=self.bucket, Key=key, **args,
                                         Retention={"Mode": self.lock_policy.mode if self.lock_policy else
                                                    "GOVERNANCE", "RetainUntilDate": until})

    def retention_of(self, key: str, version_id: str) -> datetime | None:
        """The retain-until date of one object version, None when it has none."""
        head = self.client.head_object(Bucket=self.bucket, Key=key, VersionId=version_id)
        return head.get("ObjectLockRetainUntilDate")

    def lock_dates(self, versions: list[ObjectVersion]) -> dict[tuple[str, str], datetime]:
        """The retain-until date of each version that has one, by (key, version id); delete markers have none."""
        dates = {}
        for version in versions:
            if version.delete_marker:
                continue
            until = self.retention_of(version.key, version.version_id)
            if until is not None:
                dates[(version.key, version.version_id)] = until
        return dates

    def list_versions(self, prefix: str) -> list[ObjectVersion]:
        """Every version and delete marker under ``prefix`` (a plain bucket lists one 'null' version per key)."""
        paginator = self.client.get_paginator("list_object_versions")
        found = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix):
            for version in page.get("Versions", []):
                found.append(ObjectVersion(version["Key"], version.get("VersionId") or "null", version.get("Size", 0),
                                           False, version.get("LastModified")))
            for marker in page.get("DeleteMarkers", []):
                found.append(ObjectVersion(marker["Key"], marker.get("VersionId") or "null", 0, True,
                                           marker.get("LastModified")))
        return found

    def delete_versions(self, versions: list[ObjectVersion]) -> list[str]:
        """Delete exactly these versions (data gone for good, unlike a plain delete in a versioned
        bucket, which only hides it behind a delete marker). Returns the errors S3 reported."""
        errors = []
        for start in range(0, len(versions), 1000):
            batch = [{"Key": v.key, "VersionId": v.version_id} for v in versions[start:start + 1000]]
            response = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            errors.extend(f"{e.get('Key')} ({e.get('VersionId')}): {e.get('Code')} {e.get('Message', '')}".strip()
                          for e in response.get("Errors", []))
        return errors

    def delete_all_versions(self, keys: list[str]) -> list[str]:
        """Every version of each of ``keys``; returns errors."""
        versions = [v for key in keys for v in self.list_versions(key) if v.key == key]
        return self.delete_versions(versions)
