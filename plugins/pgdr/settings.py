"""Typed pgdr settings, read from Airflow Variables named ``pgdr_<name>``.

Every setting is therefore also settable as the environment variable
``AIRFLOW_VAR_PGDR_<NAME>``. :func:`parse_settings` is pure (a mapping of raw
strings in, a validated :class:`Settings` out) so it tests without Airflow;
:func:`load_settings` reads the Variables and is only ever called while a task
runs, never when a DAG file is parsed.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from pathlib import Path
from typing import Any

from pgdr.errors import Refused

PREFIX = "pgdr_"

# Airflow connection ids: letters, digits, '_', '-', '.'; nothing that could
# escape a path or a shell.
_CONN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,249}$")
# S3 bucket names per AWS rules (lower case, 3-63, no leading/trailing dot or dash).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_PREFIX_PART = re.compile(r"^[A-Za-z0-9_.\-]+$")


class SettingsError(Refused, ValueError):
    """A setting is missing or invalid; the message names the Variable."""


@dataclass(frozen=True)
class Setting:
    name: str
    default: str | None
    description: str
    example: str


# The single list of settings: docs/configuration.md documents exactly these.
SETTINGS: tuple[Setting, ...] = (
    Setting("databases", '["care_commons_db"]',
            "JSON list of the postgres connection ids to protect; each is backed up by its own mapped task.",
            '["care_commons_db", "billing_db"]'),
    Setting("s3_bucket", None,
            "Bucket that receives every backup (required).", "acme-pgdr-backups"),
    Setting("s3_prefix", "pgdr",
            "Key prefix inside the bucket: objects go to <prefix>/<database>/<kind>/<backup_id>/.", "prod/pgdr"),
    Setting("staging_dir", "/var/lib/pgdr/staging",
            "Local directory where a backup is written before upload, and where recent copies are kept. It holds "
            "health records in clear: it must belong to the worker's user and be writable by no one else (refused "
            "otherwise); pgdr makes what it creates there 0700/0600.",
            "/opt/airflow/staging"),
    Setting("kms_key_id", "",
            "KMS key id or ARN for SSE-KMS; empty means SSE-S3 (AES256). Objects are always encrypted.",
            "arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab"),
    Setting("aws_conn_id", "backup_s3",
            "Airflow connection (aws) used for S3; put endpoint_url in its extra for S3-compatible stores.",
            "backup_s3"),
    Setting("slack_conn_id", "slack_alerts",
            "Airflow connection (slackwebhook) that receives alerts.", "slack_alerts"),
    Setting("local_retention_days", "30",
            "Days a local staging copy is kept after a verified upload; older copies are removed. 0 keeps none.",
            "7"),
    Setting("dump_jobs", "2",
            "Parallel pg_dump jobs (directory format); also the parallelism a restore can use.", "4"),
    Setting("compression_level", "1",
            "zstd level (1-19) for dump files. 1 is smaller than pg_dump's gzip -6 at about 7x its speed "
            "(bench/README.md); 3 is 10% smaller again at twice the CPU.", "3"),
    Setting("include_role_passwords", "false",
            "Include role password hashes in the globals dump (pg_dumpall). Off by default: "
            "restored roles then need their passwords set again.", "false"),
    Setting("freshness_hours", "25",
            "pg_backup_verify fails freshness when the newest good backup of a kind is older than this "
            "(hours, decimals allowed).", "25"),
    Setting("alert_reminder_hours", "24",
            "A failing check is posted when it starts failing or its evidence changes, then again "
            "after this many hours while it keeps failing.", "12"),
    Setting("daily_digest", "false",
            "Post one all-clear message a day when every verification check passes.", "true"),
    Setting("pg_bindir", "/usr/lib/postgresql/15/bin",
            "Directory holding the PostgreSQL 15 tools (pg_dump, pg_dumpall, pg_restore, pg_basebackup, "
            "pg_verifybackup, pg_receivewal, pg_ctl).",
            "/usr/lib/postgresql/15/bin"),
    Setting("multipart_chunk_mb", "64",
            "Multipart upload part size in MiB (files larger than this are sent in parts).", "128"),
    Setting("restore_conn_ids", "{}",
            "JSON object: protected connection id -> the connection pg_restore uses on that server by default "
            "(a role that may create databases and roles, normally a superuser). A database not listed is "
            "restored through its own connection.", '{"care_commons_db": "care_commons_admin"}'),
    Setting("marker_conn_ids", "{}",
            "JSON object: protected connection id -> the connection pg_backup_verify writes recovery markers "
            "through: a role that is not a superuser and owns schema pgdr (pgdr_markers, docs/deployment.md). A "
            "database not listed uses its restore connection; either way a schema pgdr or marker table another "
            "role owns, or one with a trigger, is refused.", '{"care_commons_db": "care_commons_markers"}'),
    Setting("drill_conn_ids", "{}",
            "JSON object: protected connection id -> a scratch server for the monthly restore drill. A "
            "database not listed is drilled on its own server (through its restore connection), in a scratch "
            "database that is always dropped.", '{"care_commons_db": "drill_scratch"}'),
    Setting("restore_target_conn_ids", "[]",
            "JSON list of further connection ids pg_restore may write into as target_conn_id (a new site's "
            "server). Each protected database's restore connection is always allowed; any other is refused.",
            '["new_site_admin"]'),
    Setting("restore_target_dirs", '["/var/lib/pgdr/restores"]',
            "JSON list of absolute directories under which a files or config restore's target_dir must lie "
            "(symlinks resolved). A target_dir overlapping a backed-up directory, the staging, WAL or PITR "
            "directory, Airflow's home, dags, plugins, config or logs, or a system directory is refused "
            "whatever this says.",
            '["/var/lib/pgdr/restores", "/srv/restores"]'),
    Setting("rto_budget_minutes", "60",
            "Recovery time objective: pg_restore_test alerts when a drill's measured restore (download, "
            "restore, verify) or the time projected for the database's current size exceeds it.", "45"),
    Setting("physical_backups", "true",
            "pg_backup_daily also takes a physical base backup (pg_basebackup, checked with pg_verifybackup) of "
            "each protected database's cluster; point-in-time recovery needs it and the WAL archive.", "true"),
    Setting("wal_receiver_dir", "/var/lib/pgdr/wal",
            "Directory where the WAL receiver (pg_receivewal) writes; pg_wal_archive ships it to S3, so the "
            "Airflow worker running pg_wal_archive must see it (a shared volume).", "/var/lib/pgdr/wal"),
    Setting("wal_ship_seconds", "15",
            "pg_wal_archive ships new WAL (completed segments and the growing partial one) at least this "
            "often; with the scheduler's gaps this bounds the commits a site loss can take.", "10"),
    Setting("wal_archive_window_minutes", "10",
            "Each pg_wal_archive run ships WAL for this long, then the next run takes over.", "10"),
    Setting("replication_slot", "pgdr_receiver",
            "Replication slot (and application_name) of the WAL receiver on each protected server.",
            "pgdr_receiver"),
    Setting("wal_receiver_keep_segments", "64",
            "pg_wal_archive deletes received WAL segments from the receiver directory once they are shipped "
            "and checked in S3, keeping the newest this many completed segments (16 MiB each) as a margin; "
            "unshipped segments, the partial segment and history files are never deleted.", "128"),
    Setting("wal_receiver_min_free_mb", "2048",
            "pg_wal_archive alerts (once, until it clears) when the receiver directory's file system has "
            "less free space than this many MiB; 0 turns the check off.", "4096"),
    Setting("wal_receiver_alert_seconds", "30",
            "pg_wal_archive alerts when the primary has not seen the WAL receiver streaming (pg_stat_replication, "
            "the slot) for this long, checked on every shipping pass.", "30"),
    Setting("pitr_data_dir", "/var/lib/pgdr/pitr",
            "Parent directory of the clusters point-in-time recovery creates (one subdirectory per restore).",
            "/srv/pgdr/pitr"),
    Setting("pitr_port", "5433",
            "Port the cluster created by point-in-time recovery listens on (on the worker's host).", "5440"),
    Setting("pitr_os_user", "postgres",
            "Unprivileged OS user that runs a cluster created by point-in-time recovery when the worker "
            "runs as root (PostgreSQL refuses to run as root).", "postgres"),
    Setting("pitr_listen_addresses", "127.0.0.1",
            "Addresses the cluster created by point-in-time recovery listens on (PostgreSQL listen_addresses: "
            "comma-separated host names or IPs, or *); widen it to let the application reach a recovered "
            "cluster that becomes the new primary (its pg_hba.conf, from the backup, still applies).",
            "127.0.0.1,10.0.0.12"),
    Setting("pitr_keep_hours", "72",
            "A cluster created by point-in-time recovery (it holds a full copy of the data) is stopped and "
            "removed this many hours after it was started, by the next recovery on the worker or "
            "pgdr.restore.pitr.expire_recovered; promote it to the new primary (and move it out of "
            "pgdr_pitr_data_dir) before then.", "168"),
    Setting("replaced_keep_hours", "168",
            "After a restore with mode replace, the old database is kept (renamed *_replaced_<time>) this "
            "many hours, then pg_backup_verify drops it.", "72"),
    Setting("legal_floor_years", "6",
            "pg_data_retention never deletes, archives or purges a row of a PHI table younger than this many "
            "years; a policy rule under it is refused when the policy is validated.", "6"),
    Setting("data_retention_policy", "data_retention_policy.yaml",
            "The data retention policy: a YAML file name inside include/, or an absolute path. The bundled one "
            "fits care-commons.", "/opt/airflow/include/my_policy.yaml"),
    Setting("retention_batch_rows", "5000",
            "pg_data_retention deletes and archives in batches of this many rows, one short transaction each.",
            "10000"),
    Setting("retention_conn_ids", "{}",
            "JSON object: protected connection id -> the connection pg_data_retention acts through: a role that "
            "is NOT a superuser (refused otherwise), ideally the tables' owner, with SELECT and DELETE/UPDATE on "
            "the policy tables and BYPASSRLS where RLS is on. A database not listed uses its own connection.",
            '{"care_commons_db": "care_commons_retention"}'),
    Setting("phi_tables", '["public.clients", "public.care_plans", "public.visits", "public.evv_records", '
            '"public.evv_revisions", "public.audit_events", "public.family_members", "public.billing_invoices"]',
            "JSON list of schema.table names holding health records (or audit trails of access to them): every "
            "retention rule on them keeps the legal floor whatever its phi key says; a rule may go under it only "
            "with a written phi_exemption reason, recorded in the report.",
            '["public.clients", "public.visits"]'),
    Setting("keep_daily_days", "30",
            "Backup retention (grandfather-father-son): every backup of the last this many days is kept.", "35"),
    Setting("keep_monthly_months", "12",
            "Backup retention: the first backup of each month is kept for this many months.", "24"),
    Setting("keep_yearly_years", "7",
            "Backup retention: the first backup of each year is kept for this many years.", "7"),
    Setting("pitr_window_days", "7",
            "Point-in-time recovery window: WAL is kept back to the start of the oldest base backup inside "
            "these days, so any moment in the window stays recoverable; older WAL is pruned.", "14"),
    Setting("object_lock_mode", "GOVERNANCE",
            "Object Lock mode for the retention date written on each object when the bucket has Object Lock "
            "(GOVERNANCE or COMPLIANCE). pgdr never deletes a locked object early either way.", "COMPLIANCE"),
    Setting("file_dirs", "{}",
            "JSON object: protected connection id -> list of absolute directories whose files pg_backup_daily "
            "backs up under <prefix>/<database>/files/ (for care-commons, the uploads directory).",
            '{"care_commons_db": ["/srv/care-commons/uploads"]}'),
    Setting("config_files", "{}",
            "JSON object: protected connection id -> list of absolute configuration file paths pg_backup_daily "
            "backs up under <prefix>/<database>/config/.",
            '{"care_commons_db": ["/srv/care-commons/.env", "/srv/care-commons/config/production.json"]}'),
    Setting("secret_files", "[]",
            "JSON list of configuration file names or absolute paths that hold secrets; they are encrypted "
            "client-side before upload, like every .env file.", '["production.json"]'),
    Setting("config_key_conn_id", "pgdr_config_key",
            "Airflow connection whose password is the base64 256-bit key that wraps the per-backup data key of "
            "secret configuration files (envelope encryption); with pgdr_kms_key_id set, KMS wraps it instead.",
            "pgdr_config_key"),
)


@dataclass(frozen=True)
class Settings:
    databases: tuple[str, ...]
    s3_bucket: str
    s3_prefix: str
    staging_dir: Path
    kms_key_id: str
    aws_conn_id: str
    slack_conn_id: str
    local_retention_days: int
    dump_jobs: int
    compression_level: int
    include_role_passwords: bool
    freshness_hours: float
    alert_reminder_hours: float
    daily_digest: bool
    pg_bindir: Path
    multipart_chunk_mb: int
    restore_conn_ids: dict[str, str]
    marker_conn_ids: dict[str, str]
    drill_conn_ids: dict[str, str]
    restore_target_conn_ids: tuple[str, ...]
    restore_target_dirs: tuple[Path, ...]
    rto_budget_minutes: float
    physical_backups: bool
    wal_receiver_dir: Path
    wal_ship_seconds: float
    wal_archive_window_minutes: float
    replication_slot: str
    wal_receiver_keep_segments: int
    wal_receiver_min_free_mb: int
    wal_receiver_alert_seconds: float
    pitr_data_dir: Path
    pitr_port: int
    pitr_os_user: str
    pitr_listen_addresses: str
    pitr_keep_hours: float
    replaced_keep_hours: float
    legal_floor_years: int
    data_retention_policy: str
    retention_batch_rows: int
    retention_conn_ids: dict[str, str]
    phi_tables: tuple[str, ...]
    keep_daily_days: int
    keep_monthly_months: int
    keep_yearly_years: int
    pitr_window_days: float
    object_lock_mode: str
    file_dirs: dict[str, tuple[Path, ...]]
    config_files: dict[str, tuple[Path, ...]]
    secret_files: tuple[str, ...]
    config_key_conn_id: str

    def restore_conn_id(self, database: str) -> str:
        return self.restore_conn_ids.get(database, database)

    def drill_conn_id(self, database: str) -> str:
        return self.drill_conn_ids.get(database) or self.restore_conn_id(database)

    @property
    def part_size(self) -> int:
        return self.multipart_chunk_mb * 1024 * 1024

    @property
    def sse_args(self) -> dict[str, str]:
        """boto3 ExtraArgs for server-side encryption: SSE-KMS with a key, else SSE-S3."""
        if self.kms_key_id:
            return {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": self.kms_key_id}
        return {"ServerSideEncryption": "AES256"}

    @property
    def expected_sse(self) -> str:
        return "aws:kms" if self.kms_key_id else "AES256"


def _fail(name: str, problem: str, value: Any) -> SettingsError:
    shown = value if len(str(value)) <= 200 else str(value)[:200] + "..."
    return SettingsError(f"setting {PREFIX}{name} (env AIRFLOW_VAR_{(PREFIX + name).upper()}): {problem}; "
                         f"got {shown!r}", field=PREFIX + name)


def _conn_id(name: str, value: str) -> str:
    value = value.strip()
    if not _CONN_ID.match(value):
        raise _fail(name, "must be an Airflow connection id (letters, digits, '_', '-', '.')", value)
    return value


def _databases(name: str, value: str) -> tuple[str, ...]:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as err:
        raise _fail(name, f"must be a JSON list of connection ids ({err.msg})", value) from None
    if not isinstance(parsed, list) or not parsed or not all(isinstance(item, str) for item in parsed):
        raise _fail(name, "must be a non-empty JSON list of connection id strings", value)
    ids = tuple(_conn_id(name, item) for item in parsed)
    if len(set(ids)) != len(ids):
        raise _fail(name, "lists a connection id twice", value)
    return ids


def _conn_map(name: str, value: str) -> dict[str, str]:
    try:
        parsed = json.loads(value or "{}")
    except json.JSONDecodeError as err:
        raise _fail(name, f"must be a JSON object of connection ids ({err.msg})", value) from None
    if not isinstance(parsed, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in parsed.items()):
        raise _fail(name, "must be a JSON object mapping a protected connection id to a connection id", value)
    return {_conn_id(name, key): _conn_id(name, conn) for key, conn in parsed.items()}


def _identifier(name: str, value: str) -> str:
    value = value.strip()
    if not re.match(r"^[a-z_][a-z0-9_]{0,62}$", value):
        raise _fail(name, "must be a lower-case name of letters, digits and '_' (at most 63)", value)
    return value


def _bucket(name: str, value: str) -> str:
    value = value.strip()
    if not value:
        raise _fail(name, "is required: the S3 bucket that receives backups", value)
    if not _BUCKET.match(value) or ".." in value:
        raise _fail(name, "is not a valid S3 bucket name", value)
    return value


def _prefix(name: str, value: str) -> str:
    value = value.strip().strip("/")
    parts = value.split("/") if value else []
    if not parts or any(not _PREFIX_PART.match(p) or p in (".", "..") for p in parts):
        raise _fail(name, "must be a non-empty key prefix of letters, digits, '_', '-', '.' parts joined by '/'", value)
    return value


def _abs_path(name: str, value: str) -> Path:
    path = Path(value.strip())
    if not value.strip() or not path.is_absolute():
        raise _fail(name, "must be an absolute directory path", value)
    return path


def _int_in(low: int, high: int) -> Callable[[str, str], int]:
    def parse(name: str, value: str) -> int:
        try:
            number = int(value.strip())
        except ValueError:
            raise _fail(name, "must be a whole number", value) from None
        if not low <= number <= high:
            raise _fail(name, f"must be between {low} and {high}", value)
        return number
    return parse


def _float_in(low: float, high: float) -> Callable[[str, str], float]:
    def parse(name: str, value: str) -> float:
        try:
            number = float(value.strip())
        except ValueError:
            raise _fail(name, "must be a number", value) from None
        if not low < number <= high:
            raise _fail(name, f"must be above {low:g} and at most {high:g}", value)
        return number
    return parse


def _bool(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off", ""):
        return False
    raise _fail(name, "must be true or false", value)


def _kms(name: str, value: str) -> str:
    value = value.strip()
    if value and not re.match(r"^[A-Za-z0-9:/_\-]+$", value):
        raise _fail(name, "must be a KMS key id, alias or ARN (or empty for SSE-S3)", value)
    return value


def _policy_file(name: str, value: str) -> str:
    if not value:
        raise _fail(name, "is required (a YAML file name inside include/, or an absolute path)", value)
    if not value.startswith("/") and ("/" in value or value.startswith(".")):
        raise _fail(name, "must be a file name inside include/ or an absolute path", value)
    if not value.endswith((".yaml", ".yml")):
        raise _fail(name, "must be a .yaml file", value)
    return value


def _lock_mode(name: str, value: str) -> str:
    mode = value.strip().upper()
    if mode not in ("GOVERNANCE", "COMPLIANCE"):
        raise _fail(name, "must be GOVERNANCE or COMPLIANCE", value)
    return mode


def _json(name: str, value: str, kind: type, described: str) -> Any:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        raise _fail(name, f"must be a {described}", value) from None
    if not isinstance(parsed, kind):
        raise _fail(name, f"must be a {described}", value)
    return parsed


def _path_lists(name: str, value: str) -> dict[str, tuple[Path, ...]]:
    parsed = _json(name, value, dict, "JSON object of connection id -> list of absolute paths")
    result = {}
    for conn_id, paths in parsed.items():
        _conn_id(name, conn_id)
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise _fail(name, f"{conn_id!r} must map to a JSON list of paths", value)
        checked = tuple(_abs_path(name, p) for p in paths)
        if len(set(checked)) != len(checked):
            raise _fail(name, f"{conn_id!r} lists a path twice", value)
        result[conn_id] = checked
    return result


def _name_list(name: str, value: str) -> tuple[str, ...]:
    parsed = _json(name, value, list, "JSON list of file names or absolute paths")
    if not all(isinstance(item, str) and item and "\0" not in item for item in parsed):
        raise _fail(name, "must list non-empty strings", value)
    for item in parsed:
        if "/" in item and not item.startswith("/"):
            raise _fail(name, f"{item!r} must be a bare file name or an absolute path", value)
    return tuple(parsed)


def _listen_addresses(name: str, value: str) -> str:
    items = [item.strip() for item in value.split(",")]
    if not value.strip() or not all(item == "*" or re.fullmatch(r"[A-Za-z0-9.:\-]+", item) for item in items):
        raise _fail(name, "must be '*' or comma-separated host names or IP addresses", value)
    return ", ".join(items)


def _conn_id_list(name: str, value: str) -> tuple[str, ...]:
    parsed = _json(name, value or "[]", list, "JSON list of connection ids")
    if not all(isinstance(item, str) for item in parsed):
        raise _fail(name, "must list connection id strings", value)
    return tuple(_conn_id(name, item) for item in parsed)


def _restore_roots(name: str, value: str) -> tuple[Path, ...]:
    parsed = _json(name, value, list, "JSON list of absolute directories")
    if not parsed or not all(isinstance(item, str) for item in parsed):
        raise _fail(name, "must be a non-empty JSON list of absolute directories", value)
    roots = tuple(_abs_path(name, item) for item in parsed)
    if any(".." in root.parts or root == Path("/") for root in roots):
        raise _fail(name, "must list directories of their own (not /, no '..')", value)
    return roots


def _table_list(name: str, value: str) -> tuple[str, ...]:
    parsed = _json(name, value, list, "JSON list of table names (schema.table or table)")
    tables = []
    for item in parsed:
        if not isinstance(item, str) or not re.match(r"^([a-z_][a-z0-9_]{0,62}\.)?[a-z_][a-z0-9_]{0,62}$", item):
            raise _fail(name, f"{item!r} is not a lower-case table name (schema.table or table)", value)
        tables.append(item if "." in item else f"public.{item}")
    return tuple(tables)


_PARSERS: dict[str, Callable[[str, str], Any]] = {
    "databases": _databases,
    "s3_bucket": _bucket,
    "s3_prefix": _prefix,
    "staging_dir": _abs_path,
    "kms_key_id": _kms,
    "aws_conn_id": _conn_id,
    "slack_conn_id": _conn_id,
    "local_retention_days": _int_in(0, 3650),
    "dump_jobs": _int_in(1, 64),
    "compression_level": _int_in(1, 19),
    "include_role_passwords": _bool,
    "freshness_hours": _float_in(0.0, 24 * 366),
    "alert_reminder_hours": _float_in(0.0, 24 * 366),
    "daily_digest": _bool,
    "pg_bindir": _abs_path,
    "multipart_chunk_mb": _int_in(5, 5120),
    "restore_conn_ids": _conn_map,
    "marker_conn_ids": _conn_map,
    "drill_conn_ids": _conn_map,
    "restore_target_conn_ids": _conn_id_list,
    "restore_target_dirs": _restore_roots,
    "rto_budget_minutes": _float_in(0.0, 7 * 24 * 60),
    "physical_backups": _bool,
    "wal_receiver_dir": _abs_path,
    "wal_ship_seconds": _float_in(0.0, 3600),
    "wal_archive_window_minutes": _float_in(0.0, 24 * 60),
    "replication_slot": _identifier,
    "wal_receiver_keep_segments": _int_in(1, 1_000_000),
    "wal_receiver_min_free_mb": _int_in(0, 100_000_000),
    "wal_receiver_alert_seconds": _float_in(0.0, 3600),
    "pitr_data_dir": _abs_path,
    "pitr_port": _int_in(1024, 65535),
    "pitr_os_user": _identifier,
    "pitr_listen_addresses": _listen_addresses,
    "pitr_keep_hours": _float_in(0.0, 24 * 366),
    "replaced_keep_hours": _float_in(0.0, 24 * 366),
    "legal_floor_years": _int_in(6, 100),
    "data_retention_policy": _policy_file,
    "retention_batch_rows": _int_in(1, 1_000_000),
    "retention_conn_ids": _conn_map,
    "phi_tables": _table_list,
    "keep_daily_days": _int_in(1, 3650),
    "keep_monthly_months": _int_in(0, 1200),
    "keep_yearly_years": _int_in(0, 100),
    "pitr_window_days": _float_in(0.0, 3650),
    "object_lock_mode": _lock_mode,
    "file_dirs": _path_lists,
    "config_files": _path_lists,
    "secret_files": _name_list,
    "config_key_conn_id": _conn_id,
}


def parse_settings(raw: Mapping[str, str | None]) -> Settings:
    """Validate raw values keyed by short name (``databases``); missing keys take defaults."""
    values = {}
    for setting in SETTINGS:
        value = raw.get(setting.name)
        if value is None:
            value = setting.default if setting.default is not None else ""
        values[setting.name] = _PARSERS[setting.name](setting.name, str(value))
    assert set(values) == {f.name for f in fields(Settings)}
    settings = Settings(**values)
    for map_name in ("restore_conn_ids", "marker_conn_ids", "drill_conn_ids", "file_dirs", "config_files"):
        unknown = sorted(set(getattr(settings, map_name)) - set(settings.databases))
        if unknown:
            raise _fail(map_name, f"names {unknown}, which pgdr_databases does not list", raw.get(map_name))
    return settings


def load_settings() -> Settings:
    """Read every ``pgdr_*`` Variable (env ``AIRFLOW_VAR_PGDR_*`` included) and validate."""
    from airflow.sdk import Variable

    raw = {setting.name: Variable.get(PREFIX + setting.name, default=None) for setting in SETTINGS}
    return parse_settings(raw)


def setting_default(name: str) -> str | None:
    return next(s.default for s in SETTINGS if s.name == name)


# Deadlines are computed by the scheduler when a run is created, from the DAG as parsed, so
# these two are read from the environment at parse time (no database access), with defaults.
DEADLINE_SETTINGS = {
    "backup_deadline_minutes": ("120", "pg_backup_daily must finish within this many minutes of being queued."),
    "verify_deadline_minutes": ("60", "pg_backup_verify must finish within this many minutes of being queued."),
}


def deadline_minutes(name: str) -> float:
    """A deadline setting from AIRFLOW_VAR_PGDR_<NAME>, read when the DAG file is parsed (decimals allowed)."""
    import os

    default, _ = DEADLINE_SETTINGS[name]
    raw = os.environ.get(f"AIRFLOW_VAR_{(PREFIX + name).upper()}", default)
    return _float_in(0.1, 7 * 24 * 60)(name, raw)


def protected_databases_at_parse() -> list[str]:
    """The protected databases as the environment names them, for the trigger form's suggestions.

    Parse time has no database access, so a value set only in the Variables UI is not seen here;
    the form then suggests the default, and the task validates against the real setting.
    """
    import os

    raw = os.environ.get(f"AIRFLOW_VAR_{PREFIX.upper()}DATABASES") or setting_default("databases")
    try:
        return list(_databases("databases", raw))
    except SettingsError:
        return list(_databases("databases", setting_default("databases")))
