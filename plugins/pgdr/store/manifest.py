"""The backup manifest: what a backup holds and how to prove it intact.

``manifest.json`` is the last object written into a backup's directory; a backup
without one is incomplete and is never listed, restored or counted. This module
is pure: it builds, serialises and validates manifests without any I/O.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone

from pgdr.errors import StoreError

FORMAT_VERSION = 1
KINDS = ("logical", "base", "files", "config")
MANIFEST_NAME = "manifest.json"
_BACKUP_ID = re.compile(r"^\d{8}T\d{6}Z$")
_SHA256 = re.compile(r"^[0-9a-f]{64}$")


class ManifestError(StoreError, ValueError):
    """A manifest is malformed or inconsistent."""


def new_backup_id(now: datetime | None = None) -> str:
    """Backup ids are the UTC start time: sortable, readable, safe in a key."""
    now = now or datetime.now(timezone.utc)
    return now.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")


def is_backup_id(value: str) -> bool:
    return bool(_BACKUP_ID.match(value))


def backup_id_time(backup_id: str) -> datetime:
    if not is_backup_id(backup_id):
        raise ManifestError(f"not a backup id: {backup_id!r} (expected YYYYMMDDTHHMMSSZ)")
    return datetime.strptime(backup_id, "%Y%m%dT%H%M%SZ").replace(tzinfo=timezone.utc)


def backup_prefix(prefix: str, database: str, kind: str, backup_id: str) -> str:
    if kind not in KINDS:
        raise ManifestError(f"unknown backup kind {kind!r}; expected one of {', '.join(KINDS)}")
    if not is_backup_id(backup_id):
        raise ManifestError(f"not a backup id: {backup_id!r}")
    return f"{prefix}/{database}/{kind}/{backup_id}"


@dataclass(frozen=True)
class ObjectEntry:
    """One stored object: ``name`` is relative to the backup directory."""

    name: str
    key: str
    size: int
    sha256: str
    role: str                 # toc | table_data | globals | ...
    compression: str = "none"  # none | zstd
    raw_size: int | None = None
    s3_checksum: str | None = None  # ChecksumSHA256 as S3 computes it (composite for multipart)


@dataclass
class Manifest:
    backup_id: str
    kind: str
    database: str                     # the protected connection id
    dbname: str                       # the database name on the server
    started_at: str
    finished_at: str
    server_version: str
    server_version_num: int
    system_identifier: str | None
    objects: list[ObjectEntry]
    row_counts: dict[str, int]
    tool_versions: dict[str, str]
    encryption: dict[str, str | None]
    dump: dict = field(default_factory=dict)       # format, jobs, compression, snapshot
    wal: dict | None = None                        # physical backups: start/end LSN, timeline
    airflow: dict = field(default_factory=dict)    # dag_id, run_id, task_id that made it
    format_version: int = FORMAT_VERSION
    # an incremental base backup (PostgreSQL 17+): the id of the backup it was taken against (its parent);
    # None for a full backup and every other kind. ``dump["chain"]`` lists the ids from the full up to and
    # including the parent, so the whole chain is ``dump["chain"] + [backup_id]``. Optional and defaulted,
    # so manifests written before it (format_version 1 all along) still load and read as full.
    depends_on: str | None = None

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, sort_keys=True)

    @property
    def total_size(self) -> int:
        return sum(obj.size for obj in self.objects)

    @property
    def backup_type(self) -> str:
        """``full`` or ``incremental`` (a manifest written before incrementals existed is full)."""
        return "incremental" if self.depends_on else "full"

    @property
    def chain(self) -> list[str]:
        """The ids a restore of this backup needs, oldest (the full) first, this backup last."""
        return [*(self.dump.get("chain") or []), self.backup_id] if self.depends_on else [self.backup_id]

    def validate(self) -> Manifest:
        problems = []
        if not is_backup_id(self.backup_id):
            problems.append(f"backup_id {self.backup_id!r} is not YYYYMMDDTHHMMSSZ")
        if self.kind not in KINDS:
            problems.append(f"kind {self.kind!r} is not one of {KINDS}")
        if not self.objects:
            problems.append("no objects")
        names = [obj.name for obj in self.objects]
        if len(set(names)) != len(names):
            problems.append("an object is listed twice")
        for obj in self.objects:
            if not _SHA256.match(obj.sha256):
                problems.append(f"object {obj.name}: sha256 is not 64 hex digits")
            if obj.size < 0:
                problems.append(f"object {obj.name}: negative size")
            if obj.name == MANIFEST_NAME or ".." in obj.name.split("/") or obj.name.startswith("/"):
                problems.append(f"object name {obj.name!r} is not allowed")
        if self.depends_on is not None:
            chain = self.dump.get("chain")
            if self.kind != "base":
                problems.append(f"depends_on is set on a {self.kind} backup (only base backups are incremental)")
            if not isinstance(chain, list) or not chain or chain[-1] != self.depends_on:
                problems.append("dump.chain must list the ids from the full up to depends_on")
            elif not all(isinstance(i, str) and is_backup_id(i) and i < self.backup_id for i in chain) \
                    or chain != sorted(set(chain)):
                problems.append("dump.chain must hold older backup ids, oldest first, each once")
        for table, count in self.row_counts.items():
            if not isinstance(count, int) or count < 0:
                problems.append(f"row count of {table} is not a non-negative integer")
        if problems:
            raise ManifestError("invalid manifest: " + "; ".join(problems))
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_json(cls, text: str | bytes) -> Manifest:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise ManifestError(f"manifest is not JSON: {err.msg}") from None
        return cls.from_dict(data)

    @classmethod
    def from_dict(cls, data: dict) -> Manifest:
        data = dict(data)
        if not isinstance(data, dict) or data.get("format_version") != FORMAT_VERSION:
            raise ManifestError(f"unsupported manifest format_version {data.get('format_version')!r}")
        try:
            data["objects"] = [ObjectEntry(**obj) for obj in data["objects"]]
            return cls(**data).validate()
        except TypeError as err:
            raise ManifestError(f"manifest fields do not match: {err}") from None


def utc_now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")
