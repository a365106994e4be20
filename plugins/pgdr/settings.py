"""Typed pgdr settings, read from Airflow Variables named ``pgdr_<name>``, declared once.

Every setting is therefore also settable as the environment variable
``AIRFLOW_VAR_PGDR_<NAME>``. :class:`Settings` declares each one as a pydantic field: its type,
its default (written as the Variable's text, exactly what an operator would type), what it means
and the check its text must pass (:mod:`pgdr.core.settings_checks`). docs/configuration.md is
generated from this declaration (``python -m pgdr.core.settings_doc``) and a test keeps it in step.

:func:`parse_settings` is pure (a mapping of raw strings in, a validated :class:`Settings` out) so
it tests without Airflow; :func:`load_settings` reads the Variables and is only ever called while a
task runs, never when a DAG file is parsed. Both raise :class:`SettingsError` naming the setting.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any

from pydantic import ConfigDict, Field, ValidationError, model_validator
from pydantic.dataclasses import dataclass

from pgdr.core import settings_checks as check
from pgdr.core.settings_checks import PREFIX, SettingsError, checked, refuse

ConnId = Annotated[str, checked(check.conn_id)]
ConnMap = Annotated[dict[str, str], checked(check.conn_map)]
AbsPath = Annotated[Path, checked(check.abs_path)]
Flag = Annotated[bool, checked(check.boolean)]
Name = Annotated[str, checked(check.identifier)]
PathLists = Annotated[dict[str, tuple[Path, ...]], checked(check.path_lists)]


def _user_names(name: str, value: str) -> tuple[str, ...]:
    """A JSON list of Airflow user names (four-eyes approvers)."""
    parsed = check._json(name, value or "[]", list, "JSON list of Airflow user names")
    if not all(isinstance(item, str) and item.strip() and item == item.strip() for item in parsed):
        raise refuse(name, "must list non-empty user names without surrounding spaces", value)
    return tuple(dict.fromkeys(parsed))


def _role_name(name: str, value: str) -> str:
    value = value.strip()
    if value and not all(c.isalnum() or c in "_.- " for c in value):
        raise refuse(name, "must be an Airflow role name (letters, digits, '_', '.', '-', spaces) or empty", value)
    return value


def _setting(default: str | None, *, example: str, doc: str) -> Any:
    """A field whose default is the Variable's text (None: required, no default)."""
    return Field(default, description=doc, examples=[example])


# A pydantic *dataclass*, not a BaseModel: the settings stay a frozen dataclass, so code and tests
# that use dataclasses.replace/fields keep working, and a replaced value is validated like a read one.
# validate_default: the defaults are text and go through the same checks as a Variable's value.
@dataclass(frozen=True, config=ConfigDict(validate_default=True))
class Settings:
    databases: Annotated[tuple[str, ...], checked(check.databases)] = _setting(
        '["care_commons_db"]', example='["care_commons_db", "billing_db"]',
        doc="JSON list of the postgres connection ids to protect; each is backed up by its own mapped task.")
    s3_bucket: Annotated[str, checked(check.bucket)] = _setting(None, example="acme-pgdr-backups",
        doc="Bucket that receives every backup (required).")
    s3_prefix: Annotated[str, checked(check.key_prefix)] = _setting("pgdr", example="prod/pgdr",
        doc="Key prefix inside the bucket: objects go to <prefix>/<database>/<kind>/<backup_id>/.")
    staging_dir: AbsPath = _setting("/var/lib/pgdr/staging", example="/opt/airflow/staging",
        doc="Local directory where a backup is written before upload, and where recent copies are kept. It holds "
            "health records in clear: it must belong to the worker's user and be writable by no one else (refused "
            "otherwise); pgdr makes what it creates there 0700/0600.")
    kms_key_id: Annotated[str, checked(check.kms_key)] = _setting(
        "", example="arn:aws:kms:us-east-1:111122223333:key/1234abcd-12ab-34cd-56ef-1234567890ab",
        doc="KMS key id or ARN for SSE-KMS; empty means SSE-S3 (AES256). Objects are always encrypted.")
    aws_conn_id: ConnId = _setting("backup_s3", example="backup_s3",
        doc="Airflow connection (aws) used for S3; put endpoint_url in its extra for S3-compatible stores.")
    slack_conn_id: ConnId = _setting("slack_alerts", example="slack_alerts",
        doc="Airflow connection (slackwebhook) that receives alerts.")
    local_retention_days: Annotated[int, check.whole(0, 3650)] = _setting("30", example="7",
        doc="Days a local staging copy is kept after a verified upload; older copies are removed. 0 keeps none.")
    dump_jobs: Annotated[int, check.whole(1, 64)] = _setting("2", example="4",
        doc="Parallel pg_dump jobs (directory format); also the parallelism a restore can use.")
    compression_level: Annotated[int, check.whole(1, 19)] = _setting("1", example="3",
        doc="zstd level (1-19) for dump files. 1 is smaller than pg_dump's gzip -6 at about 7x its speed "
            "(bench/README.md); 3 is 10% smaller again at twice the CPU.")
    include_role_passwords: Flag = _setting("false", example="false",
        doc="Include role password hashes in the globals dump (pg_dumpall). Off by default: restored roles then need "
            "their passwords set again.")
    freshness_hours: Annotated[float, check.above(0, 24 * 366)] = _setting("25", example="25",
        doc="pg_backup_verify fails freshness when the newest good backup of a kind is older than this (hours, "
            "decimals allowed).")
    alert_reminder_hours: Annotated[float, check.above(0, 24 * 366)] = _setting("24", example="12",
        doc="A failing check is posted when it starts failing or its evidence changes, then again after this many "
            "hours while it keeps failing.")
    daily_digest: Flag = _setting("false", example="true",
        doc="Post one all-clear message a day when every verification check passes.")
    pg_bindir: Annotated[Path, checked(check.bindir_template)] = _setting(
        "/usr/lib/postgresql/{major}/bin", example="/usr/lib/postgresql/{major}/bin",
        doc="Directory of the PostgreSQL tools (pg_dump, pg_dumpall, pg_restore, pg_basebackup, pg_verifybackup, "
            "pg_combinebackup, pg_receivewal, pg_ctl): {major} is replaced by each server's major version, read when "
            "the task runs (15, 16, 17, 18), so one Airflow protects servers of several majors. A path without "
            "{major} is used for every server and must hold tools of the newest major protected.")
    pg_bindirs: Annotated[dict[int, str], checked(check.major_dirs)] = _setting(
        "{}", example='{"18": "/opt/postgresql-18/bin"}',
        doc="JSON object: PostgreSQL major -> directory of that major's tools, for majors installed outside "
            "pgdr_pg_bindir's pattern.")
    multipart_chunk_mb: Annotated[int, check.whole(5, 5120)] = _setting("64", example="128",
        doc="Multipart upload part size in MiB (files larger than this are sent in parts).")
    restore_conn_ids: ConnMap = _setting("{}", example='{"care_commons_db": "care_commons_admin"}',
        doc="JSON object: protected connection id -> the connection pg_restore uses on that server by default (a role "
            "that may create databases and roles, normally a superuser). A database not listed is restored through "
            "its own connection.")
    marker_conn_ids: ConnMap = _setting("{}", example='{"care_commons_db": "care_commons_markers"}',
        doc="JSON object: protected connection id -> the connection pg_backup_verify writes recovery markers through: "
            "a role that is not a superuser and owns schema pgdr (pgdr_markers, docs/deployment.md). A database not "
            "listed uses its restore connection; either way a schema pgdr or marker table another role owns, or one "
            "with a trigger, is refused.")
    drill_conn_ids: ConnMap = _setting("{}", example='{"care_commons_db": "drill_scratch"}',
        doc="JSON object: protected connection id -> a scratch server for the monthly restore drill. A database not "
            "listed is drilled on its own server (through its restore connection), in a scratch database that is "
            "always dropped.")
    restore_target_conn_ids: Annotated[tuple[str, ...], checked(check.conn_id_list)] = _setting(
        "[]", example='["new_site_admin"]',
        doc="JSON list of further connection ids pg_restore may write into as target_conn_id (a new site's server). "
            "Each protected database's restore connection is always allowed; any other is refused.")
    restore_target_dirs: Annotated[tuple[Path, ...], checked(check.restore_roots)] = _setting(
        '["/var/lib/pgdr/restores"]', example='["/var/lib/pgdr/restores", "/srv/restores"]',
        doc="JSON list of absolute directories under which a files or config restore's target_dir must lie (symlinks "
            "resolved). A target_dir overlapping a backed-up directory, the staging, WAL or PITR directory, Airflow's "
            "home, dags, plugins, config or logs, or a system directory is refused whatever this says.")
    rto_budget_minutes: Annotated[float, check.above(0, 7 * 24 * 60)] = _setting("60", example="45",
        doc="Recovery time objective: pg_restore_test alerts when a drill's measured restore (download, restore, "
            "verify) or the time projected for the database's current size exceeds it.")
    physical_backups: Flag = _setting("true", example="true",
        doc="pg_backup_daily also takes a physical base backup (pg_basebackup, checked with pg_verifybackup) of each "
            "protected database's cluster; point-in-time recovery needs it and the WAL archive.")
    incremental_backups: Flag = _setting("true", example="true",
        doc="On PostgreSQL 17+ servers with summarize_wal on, each base backup is an incremental one "
            "(pg_basebackup --incremental) against the newest good base backup of the same cluster and timeline, "
            "until the chain's full is older than pgdr_full_backup_days or the chain holds "
            "pgdr_max_incremental_chain incrementals; false: every base backup is full. 15/16: always full.")
    full_backup_days: Annotated[float, check.above(0, 3650)] = _setting("7", example="7",
        doc="A new full base backup is taken once the chain's full is this many days old (incrementals are "
            "restored by combining the full and every incremental after it).")
    max_incremental_chain: Annotated[int, check.whole(1, 100)] = _setting("6", example="6",
        doc="The most incremental base backups after one full; the next base backup is a full.")
    wal_receiver_dir: AbsPath = _setting("/var/lib/pgdr/wal", example="/var/lib/pgdr/wal",
        doc="Directory where the WAL receiver (pg_receivewal) writes; pg_wal_archive ships it to S3, so the Airflow "
            "worker running pg_wal_archive must see it (a shared volume).")
    wal_ship_seconds: Annotated[float, check.above(0, 3600)] = _setting("15", example="10",
        doc="pg_wal_archive ships new WAL (completed segments and the growing partial one) at least this often; with "
            "the scheduler's gaps this bounds the commits a site loss can take.")
    wal_archive_window_minutes: Annotated[float, check.above(0, 24 * 60)] = _setting("10", example="10",
        doc="Each pg_wal_archive run ships WAL for this long, then the next run takes over.")
    replication_slot: Name = _setting("pgdr_receiver", example="pgdr_receiver",
        doc="Replication slot (and application_name) of the WAL receiver on each protected server.")
    wal_receiver_keep_segments: Annotated[int, check.whole(1, 1_000_000)] = _setting("64", example="128",
        doc="pg_wal_archive deletes received WAL segments from the receiver directory once they are shipped and "
            "checked in S3, keeping the newest this many completed segments (16 MiB each) as a margin; unshipped "
            "segments, the partial segment and history files are never deleted.")
    wal_receiver_min_free_mb: Annotated[int, check.whole(0, 100_000_000)] = _setting("2048", example="4096",
        doc="pg_wal_archive alerts (once, until it clears) when the receiver directory's file system has less free "
            "space than this many MiB; 0 turns the check off.")
    wal_receiver_alert_seconds: Annotated[float, check.above(0, 3600)] = _setting("30", example="30",
        doc="pg_wal_archive alerts when the primary has not seen the WAL receiver streaming (pg_stat_replication, the "
            "slot) for this long, checked on every shipping pass.")
    pitr_data_dir: AbsPath = _setting("/var/lib/pgdr/pitr", example="/srv/pgdr/pitr",
        doc="Parent directory of the clusters point-in-time recovery creates (one subdirectory per restore).")
    pitr_port: Annotated[int, check.whole(1024, 65535)] = _setting("5433", example="5440",
        doc="Port the cluster created by point-in-time recovery listens on (on the worker's host).")
    pitr_os_user: Name = _setting("postgres", example="postgres",
        doc="Unprivileged OS user that runs a cluster created by point-in-time recovery when the worker runs as root "
            "(PostgreSQL refuses to run as root).")
    pitr_listen_addresses: Annotated[str, checked(check.listen_addresses)] = _setting(
        "127.0.0.1", example="127.0.0.1,10.0.0.12",
        doc="Addresses the cluster created by point-in-time recovery listens on (PostgreSQL listen_addresses: "
            "comma-separated host names or IPs, or *); widen it to let the application reach a recovered cluster that "
            "becomes the new primary (its pg_hba.conf, from the backup, still applies).")
    pitr_keep_hours: Annotated[float, check.above(0, 24 * 366)] = _setting("72", example="168",
        doc="A cluster created by point-in-time recovery (it holds a full copy of the data) is stopped and removed "
            "this many hours after it was started, by the next recovery on the worker or "
            "pgdr.restore.pitr.expire_recovered; promote it to the new primary (and move it out of "
            "pgdr_pitr_data_dir) before then.")
    replaced_keep_hours: Annotated[float, check.above(0, 24 * 366)] = _setting("168", example="72",
        doc="After a restore with mode replace, the old database is kept (renamed *_replaced_<time>) this many hours, "
            "then pg_backup_verify drops it.")
    four_eyes: Flag = _setting("true", example="false",
        doc="Four-eyes approval: a restore that replaces a live database, a files or config restore over a non-empty "
            "directory, and a pg_data_retention run that acts for real outside its schedule wait until a second person "
            "(pgdr_approvers, pgdr_approver_role; never the one who triggered the run) approves them in Airflow. "
            "false turns it OFF: one person alone can then replace the live database (for single-person teams only; "
            "see docs/operations.md#four-eyes-approval).")
    approvers: Annotated[tuple[str, ...], checked(_user_names)] = _setting("[]", example='["alice", "bob"]',
        doc="JSON list of the Airflow user names who may approve a destructive run (with pgdr_approver_role's "
            "members); the user who triggered the run is never one of them. They need permission to edit the DAG's "
            "required actions (SimpleAuthManager role user or above).")
    approver_role: Annotated[str, checked(_role_name)] = _setting("", example="admin",
        doc="An Airflow role whose members may approve, besides pgdr_approvers; with SimpleAuthManager a role and "
            "every role above it (viewer < user < op < admin), read from [core] simple_auth_manager_users. Other auth "
            "managers: list the approvers in pgdr_approvers (the approval refuses to start otherwise).")
    approval_timeout_hours: Annotated[float, check.above(0, 24 * 30)] = _setting("24", example="4",
        doc="A destructive run waits this many hours for approval; then nothing is done and the run ends saying so.")
    legal_floor_years: Annotated[int, check.whole(6, 100)] = _setting("6", example="6",
        doc="pg_data_retention never deletes, archives or purges a row of a PHI table younger than this many years; a "
            "policy rule under it is refused when the policy is validated.")
    data_retention_policy: Annotated[str, checked(check.policy_file)] = _setting(
        "data_retention_policy.yaml", example="/opt/airflow/include/my_policy.yaml",
        doc="The data retention policy: a YAML file name inside include/, or an absolute path. The bundled one fits "
            "care-commons.")
    retention_batch_rows: Annotated[int, check.whole(1, 1_000_000)] = _setting("5000", example="10000",
        doc="pg_data_retention deletes and archives in batches of this many rows, one short transaction each.")
    retention_conn_ids: ConnMap = _setting("{}", example='{"care_commons_db": "care_commons_retention"}',
        doc="JSON object: protected connection id -> the connection pg_data_retention acts through: a role that is "
            "NOT a superuser (refused otherwise), ideally the tables' owner, with SELECT and DELETE/UPDATE on the "
            "policy tables and BYPASSRLS where RLS is on. A database not listed uses its own connection.")
    phi_tables: Annotated[tuple[str, ...], checked(check.table_list)] = _setting(
        '["public.clients", "public.care_plans", "public.visits", "public.evv_records", "public.evv_revisions", '
        '"public.audit_events", "public.family_members", "public.billing_invoices"]',
        example='["public.clients", "public.visits"]',
        doc="JSON list of schema.table names holding health records (or audit trails of access to them): every "
            "retention rule on them keeps the legal floor whatever its phi key says; a rule may go under it only with "
            "a written phi_exemption reason, recorded in the report.")
    keep_daily_days: Annotated[int, check.whole(1, 3650)] = _setting("30", example="35",
        doc="Backup retention (grandfather-father-son): every backup of the last this many days is kept.")
    keep_monthly_months: Annotated[int, check.whole(0, 1200)] = _setting("12", example="24",
        doc="Backup retention: the first backup of each month is kept for this many months.")
    keep_yearly_years: Annotated[int, check.whole(0, 100)] = _setting("7", example="7",
        doc="Backup retention: the first backup of each year is kept for this many years.")
    pitr_window_days: Annotated[float, check.above(0, 3650)] = _setting("7", example="14",
        doc="Point-in-time recovery window: WAL is kept back to the start of the oldest base backup inside these "
            "days, so any moment in the window stays recoverable; older WAL is pruned.")
    object_lock_mode: Annotated[str, checked(check.lock_mode)] = _setting("GOVERNANCE", example="COMPLIANCE",
        doc="Object Lock mode for the retention date written on each object when the bucket has Object Lock "
            "(GOVERNANCE or COMPLIANCE). pgdr never deletes a locked object early either way.")
    file_dirs: PathLists = _setting("{}", example='{"care_commons_db": ["/srv/care-commons/uploads"]}',
        doc="JSON object: protected connection id -> list of absolute directories whose files pg_backup_daily backs "
            "up under <prefix>/<database>/files/ (for care-commons, the uploads directory).")
    config_files: PathLists = _setting(
        "{}", example='{"care_commons_db": ["/srv/care-commons/.env", "/srv/care-commons/config/production.json"]}',
        doc="JSON object: protected connection id -> list of absolute configuration file paths pg_backup_daily backs "
            "up under <prefix>/<database>/config/.")
    secret_files: Annotated[tuple[str, ...], checked(check.name_list)] = _setting("[]", example='["production.json"]',
        doc="JSON list of configuration file names or absolute paths that hold secrets; they are encrypted "
            "client-side before upload, like every .env file.")
    config_key_conn_id: ConnId = _setting("pgdr_config_key", example="pgdr_config_key",
        doc="Airflow connection whose password is the base64 256-bit key that wraps the per-backup data key of secret "
            "configuration files (envelope encryption); with pgdr_kms_key_id set, KMS wraps it instead.")

    @model_validator(mode="after")
    def _maps_name_protected_databases(self) -> Settings:
        for map_name in ("restore_conn_ids", "marker_conn_ids", "drill_conn_ids", "file_dirs", "config_files"):
            unknown = sorted(set(getattr(self, map_name)) - set(self.databases))
            if unknown:
                raise refuse(map_name, f"names {unknown}, which pgdr_databases does not list",
                             check.as_text(getattr(self, map_name)))
        return self

    @property
    def tool_dirs(self):
        """Where each major's tools are (:class:`pgdr.core.pgtools.ToolDirs`), chosen per server at run time."""
        from pgdr.core.pgtools import ToolDirs

        return ToolDirs(template=str(self.pg_bindir), overrides=tuple(sorted(self.pg_bindirs.items())))

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


@dataclasses.dataclass(frozen=True)
class Setting:
    """One setting as documented: its short name, default text (None: required), meaning, example."""

    name: str
    default: str | None
    description: str
    example: str


# The settings in declaration order, read off the fields: docs/configuration.md documents exactly these.
SETTINGS: tuple[Setting, ...] = tuple(
    Setting(name, info.default, info.description or "", (info.examples or [""])[0])
    for name, info in Settings.__pydantic_fields__.items()
)


def parse_settings(raw: Mapping[str, Any]) -> Settings:
    """Validate raw values keyed by short name (``databases``); missing or None keys take defaults,
    keys that name no setting are ignored."""
    given = {name: raw[name] for name in Settings.__pydantic_fields__ if raw.get(name) is not None}
    try:
        return Settings(**given)
    except ValidationError as err:
        raise _refusal(err) from None


def _refusal(err: ValidationError) -> SettingsError:
    """The first problem as the SettingsError a check raised (pydantic wraps it as a ValueError)."""
    first = err.errors(include_url=False)[0]
    original = first.get("ctx", {}).get("error")
    if isinstance(original, SettingsError):
        return original
    # not raised by a check here (a wrong type a check let through): say so without the value
    name = str(first["loc"][0]) if first["loc"] else "?"
    return SettingsError(f"setting {PREFIX}{name}: {first['msg']}", field=PREFIX + name)


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
    return check.number_above(0.1, 7 * 24 * 60, name, raw)


def protected_databases_at_parse() -> list[str]:
    """The protected databases as the environment names them, for the trigger form's suggestions.

    Parse time has no database access, so a value set only in the Variables UI is not seen here;
    the form then suggests the default, and the task validates against the real setting.
    """
    import os

    raw = os.environ.get(f"AIRFLOW_VAR_{PREFIX.upper()}DATABASES") or setting_default("databases")
    try:
        return list(check.databases("databases", raw))
    except SettingsError:
        return list(check.databases("databases", setting_default("databases")))
