"""What a restore will do, decided before anything is changed.

Pure functions: the trigger form's values validated into a :class:`RestoreRequest`,
the backup chosen from the catalog, the names of the databases and schemas a
restore creates, the globals a target cluster lacks, the database-level
statements of a dump rewritten for a new name, the row count comparison and the
RTO projection. They test without PostgreSQL or S3.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone

from pgdr.catalog import BackupEntry, newest_good
from pgdr.manifest import is_backup_id

MODES = ("new_database", "replace", "tables")
RESTORE_KINDS = ("database", "files", "config")
MAX_IDENTIFIER = 63
# Names pgdr creates or is given: lower case, so they never need quoting and cannot inject.
_DATABASE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*\.[A-Za-z_][A-Za-z0-9_$]*$")
_CONN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,249}$")


class RestoreRefused(ValueError):
    """The restore was refused before anything was changed; the message says why and what to do."""


@dataclass(frozen=True)
class RestoreRequest:
    database: str            # the protected connection id the backup belongs to
    backup: str              # "latest" or a backup id
    target_conn_id: str      # "" = the source's server (its restore connection)
    target_database: str     # "" = a default chosen by mode
    mode: str
    tables: tuple[str, ...]
    confirm: str
    point_in_time: str = ""  # "" = the logical backup as it is; else latest | ISO time | LSN
    kind: str = "database"   # database | files | config
    target_dir: str = ""     # files, config: the absolute directory to restore into

    def to_dict(self) -> dict:
        return asdict(self)


def confirmation_text(database: str) -> str:
    return f"RESTORE {database}"


def parse_request(params: Mapping, protected: Iterable[str]) -> RestoreRequest:
    """Validate the trigger form. Every problem is reported at once, with the field named."""
    protected = list(protected)
    problems = []

    def text(name: str) -> str:
        value = params.get(name)
        if value is None:
            return ""
        if not isinstance(value, str):
            problems.append(f"{name} must be text, got {type(value).__name__}")
            return ""
        return value.strip()

    database = text("database")
    if database not in protected:
        problems.append(f"database {database!r} is not a protected database; choose one of {protected}")
    backup = text("backup") or "latest"
    if backup != "latest" and not is_backup_id(backup):
        problems.append(f"backup {backup!r} is neither 'latest' nor a backup id (YYYYMMDDTHHMMSSZ, "
                        "e.g. 20261126T020000Z)")
    target_conn_id = text("target_conn_id")
    if target_conn_id and not _CONN_ID.match(target_conn_id):
        problems.append(f"target_conn_id {target_conn_id!r} is not an Airflow connection id")
    target_database = text("target_database")
    if target_database and not _DATABASE_NAME.match(target_database):
        problems.append(f"target_database {target_database!r} is not allowed: use lower-case letters, digits "
                        "and '_', starting with a letter or '_', at most 63 characters")
    mode = text("mode") or "new_database"
    if mode not in MODES:
        problems.append(f"mode {mode!r} is not one of {', '.join(MODES)}")
    raw_tables = params.get("tables") or []
    if isinstance(raw_tables, str):
        raw_tables = [part for part in re.split(r"[\s,]+", raw_tables) if part]
    if not isinstance(raw_tables, list) or not all(isinstance(t, str) for t in raw_tables):
        problems.append("tables must be a list of schema.table names")
        raw_tables = []
    tables = tuple(dict.fromkeys(t.strip() for t in raw_tables if t.strip()))
    bad_tables = [t for t in tables if not _TABLE_NAME.match(t)]
    if bad_tables:
        problems.append(f"tables {bad_tables} are not schema.table names (letters, digits, '_', '$')")
    if mode == "tables" and not tables:
        problems.append("mode 'tables' needs the tables to restore, e.g. public.visits")
    if mode != "tables" and tables:
        problems.append(f"tables are only used with mode 'tables' (mode is {mode!r}); clear the field")
    confirm = text("confirm")
    if mode == "replace" and confirm != confirmation_text(database):
        shown = f"{confirm!r}" if confirm else "nothing"
        problems.append(f"mode 'replace' overwrites the live database: type exactly "
                        f"{confirmation_text(database)!r} in confirm (got {shown})")
    point_in_time = text("point_in_time")
    if point_in_time:
        if mode == "replace":
            problems.append("mode 'replace' cannot take a point in time: recover into a new cluster (mode "
                            "new_database), check it, then point the application at it")
        if mode == "new_database" and (target_conn_id or target_database):
            problems.append("with a point in time, mode 'new_database' recovers into a new cluster on this "
                            "worker (settings pgdr_pitr_data_dir, pgdr_pitr_port): leave target_conn_id and "
                            "target_database empty")
        if backup != "latest":
            problems.append("with a point in time, the base backup is chosen for you: leave backup at 'latest'")
    kind = text("kind") or "database"
    target_dir = text("target_dir")
    problems.extend(kind_problems(kind, target_dir, mode, tables, point_in_time, target_conn_id, target_database))
    if problems:
        raise RestoreRefused("restore refused, nothing was changed: " + "; ".join(problems))
    return RestoreRequest(database, backup, target_conn_id, target_database, mode, tables, confirm, point_in_time,
                          kind, target_dir)


def kind_problems(kind: str, target_dir: str, mode: str, tables: tuple, point_in_time: str, target_conn_id: str,
                  target_database: str) -> list[str]:
    """Fields that do not fit the kind: a file or configuration restore goes into target_dir, nothing else."""
    if kind not in RESTORE_KINDS:
        return [f"kind {kind!r} is not one of {', '.join(RESTORE_KINDS)}"]
    if kind == "database":
        return ["target_dir is only for kind files or config (kind is database); clear it"] if target_dir else []
    problems = []
    if not target_dir:
        problems.append(f"kind {kind!r} restores into a directory: give target_dir, an absolute path "
                        "(an empty or new directory; a non-empty one needs the confirmation)")
    elif not target_dir.startswith("/") or ".." in target_dir.split("/") or target_dir.rstrip("/") == "":
        problems.append(f"target_dir {target_dir!r} must be an absolute path without '..', not /")
    if mode != "new_database":
        problems.append(f"mode {mode!r} is for databases; leave it at new_database for kind {kind!r}")
    if point_in_time:
        problems.append(f"point_in_time is for databases; clear it for kind {kind!r}")
    if target_conn_id or target_database:
        problems.append(f"target_conn_id and target_database are for databases; kind {kind!r} uses target_dir")
    return problems


def choose_backup(entries: list[BackupEntry], requested: str, database: str) -> BackupEntry:
    """The backup to restore: the newest good one for 'latest', else the id asked for if it may be used."""
    good = newest_good(entries)
    hint = f"the newest good backup is {good.backup_id}" if good else "there is no good backup"
    refused = "restore refused, nothing was changed: "
    if requested == "latest":
        if good is None:
            raise RestoreRefused(f"{refused}no complete, good backup of {database} exists; nothing to restore")
        return good
    entry = next((e for e in entries if e.backup_id == requested), None)
    if entry is None:
        raise RestoreRefused(f"{refused}backup {requested} of {database} does not exist; {hint}")
    if not entry.complete:
        raise RestoreRefused(f"{refused}backup {requested} of {database} is incomplete (no manifest.json) and is "
                             f"never restored; {hint}")
    if entry.bad:
        problems = (entry.verification or {}).get("problems") or []
        first = problems[0].get("problem", "") if problems and isinstance(problems[0], dict) else ""
        raise RestoreRefused(f"{refused}backup {requested} of {database} was marked bad by verification at "
                             f"{entry.verified_at or '?'}" + (f" ({first})" if first else "") + f"; {hint}")
    return entry


def newest_good_except(entries: list[BackupEntry], backup_id: str) -> str | None:
    good = newest_good([e for e in entries if e.backup_id != backup_id])
    return good.backup_id if good else None


def stamp(now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return now.astimezone(timezone.utc).strftime("%Y%m%d_%H%M%S")


def with_suffix(base: str, suffix: str) -> str:
    """``base`` + ``suffix``, shortening ``base`` so the result fits PostgreSQL's 63-byte names."""
    return base[: MAX_IDENTIFIER - len(suffix)] + suffix


@dataclass(frozen=True)
class RestoreNames:
    target_database: str      # where the backup ends up (new_database, replace: the live name)
    work_database: str        # the database pg_restore writes into
    kept_database: str | None  # replace: the old database, renamed and kept
    recovered_schema: str | None  # tables: the schema the tables land in


def restore_names(request: RestoreRequest, source_dbname: str, when: str) -> RestoreNames:
    """Names of everything a restore creates, from the form and the backup's database name."""
    if request.mode == "new_database":
        target = request.target_database or with_suffix(source_dbname, f"_restored_{when}")
        return RestoreNames(target, target, None, None)
    if request.mode == "replace":
        if request.target_database and request.target_database != source_dbname:
            raise RestoreRefused(f"mode 'replace' replaces {source_dbname!r}, the database the backup was taken "
                                 f"from; target_database {request.target_database!r} differs. Use mode "
                                 "'new_database' to restore under another name")
        return RestoreNames(source_dbname, with_suffix(source_dbname, f"_incoming_{when}"),
                            with_suffix(source_dbname, f"_replaced_{when}"), None)
    target = request.target_database or source_dbname
    return RestoreNames(target, with_suffix("pgdr_tables", f"_{when}"), None, f"recovered_{when}")


def compare_counts(expected: Mapping[str, int], found: Mapping[str, int]) -> list[dict]:
    """Tables whose restored row count differs from the manifest (or that are missing)."""
    problems = []
    for table, count in sorted(expected.items()):
        if table not in found:
            problems.append({"problem": "table missing after restore", "table": table, "expected": count})
        elif found[table] != count:
            problems.append({"problem": "row count differs", "table": table, "expected": count,
                             "found": found[table]})
    return problems


# --- globals (pg_dumpall --globals-only) -------------------------------------------------------

_IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_CREATE_ROLE = re.compile(rf"^CREATE ROLE ({_IDENT});$")
_ALTER_ROLE = re.compile(rf"^ALTER ROLE ({_IDENT}) ")
_GRANT_ROLE = re.compile(rf"^GRANT ({_IDENT}) TO ({_IDENT})(?: .*)?;$")


def unquote(identifier: str) -> str:
    if identifier.startswith('"'):
        return identifier[1:-1].replace('""', '"')
    return identifier.lower()


def roles_in_globals(globals_sql: str) -> list[str]:
    return [unquote(m.group(1)) for line in globals_sql.splitlines() if (m := _CREATE_ROLE.match(line))]


def missing_role_statements(globals_sql: str, existing_roles: Iterable[str]) -> tuple[list[str], list[str]]:
    """Statements creating the roles a cluster lacks, their settings and memberships.

    Roles that exist are left exactly as they are (their attributes and passwords are
    the target's business); tablespaces are skipped (their paths belong to the old host).
    Returns (statements, roles to be created).
    """
    existing = set(existing_roles)
    missing = [role for role in roles_in_globals(globals_sql) if role not in existing]
    wanted = set(missing)
    statements = []
    for line in globals_sql.splitlines():
        if (m := _CREATE_ROLE.match(line)) or (m := _ALTER_ROLE.match(line)):
            # per-database role settings need the database, which the restore has not created yet
            if unquote(m.group(1)) in wanted and " IN DATABASE " not in line:
                statements.append(line)
        elif (m := _GRANT_ROLE.match(line)):
            if unquote(m.group(1)) in wanted or unquote(m.group(2)) in wanted:
                # GRANTED BY names a grantor that may not exist on the new cluster
                statements.append(re.sub(rf" GRANTED BY {_IDENT}", "", line))
    return statements, missing


# --- database-level statements of a dump --------------------------------------------------------

def database_statements(create_sql: str, old_name: str, new_name: str) -> tuple[str | None, list[str]]:
    """The dump's CREATE DATABASE and its database-level statements (owner, settings, per-role
    settings, comment, privileges), taken from ``pg_restore --create --schema-only`` output and pointed at ``new_name``.

    Returns (create statement, statements to run after the restore).
    """
    quoted_old = old_name if re.match(r"^[a-z_][a-z0-9_$]*$", old_name) else '"' + old_name.replace('"', '""') + '"'
    quoted_new = '"' + new_name.replace('"', '""') + '"'
    patterns = [
        re.compile(rf"^(CREATE DATABASE ){re.escape(quoted_old)}( .*;)$"),
        re.compile(rf"^(ALTER DATABASE ){re.escape(quoted_old)}( .*;)$"),
        re.compile(rf"^(COMMENT ON DATABASE ){re.escape(quoted_old)}( IS .*;)$"),
        re.compile(rf"^((?:GRANT|REVOKE) .* ON DATABASE ){re.escape(quoted_old)}( (?:TO|FROM) .*;)$"),
        re.compile(rf"^(ALTER ROLE {_IDENT} IN DATABASE ){re.escape(quoted_old)}( SET .*;)$"),
    ]
    create, after = None, []
    for line in create_sql.splitlines():
        for pattern in patterns:
            match = pattern.match(line)
            if match:
                statement = f"{match.group(1)}{quoted_new}{match.group(2)}"
                if statement.startswith("CREATE DATABASE"):
                    create = statement
                else:
                    after.append(statement)
                break
    return create, after


# --- recovery time ---------------------------------------------------------------------------

def projected_rto_seconds(measured_seconds: float, restored_bytes: int, size_bytes: int) -> float:
    """Recovery time for a database of ``size_bytes`` at the throughput the drill measured."""
    if restored_bytes <= 0:
        return measured_seconds
    return measured_seconds * size_bytes / restored_bytes
