"""What a restore will do, decided before anything is changed: the request.

Pure functions: the trigger form's values validated into a :class:`RestoreRequest` (every problem
at once, each naming its form field), the directories a file restore may write into, and the
backup chosen from the catalog. The names a restore creates are in :mod:`pgdr.restore.names`, the
dump's SQL rewritten for the target in :mod:`pgdr.restore.sql_rewrite`, the typed plan built from
a request in :mod:`pgdr.restore.plan`. They test without PostgreSQL or S3.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path

from pgdr.errors import RestoreRefused  # noqa: F401 - its home was here: importers keep this path
from pgdr.restore.names import SYSTEM_DATABASES, system_database_problem
from pgdr.store.catalog import BackupEntry, newest_good
from pgdr.store.manifest import is_backup_id

__all__ = ["MODES", "RESTORE_KINDS", "SYSTEM_DIRS", "RestoreRefused", "RestoreRequest", "allowed_target_conn_ids",
           "check_request", "choose_backup", "confirmation_text", "kind_problems", "listed", "newest_good_except",
           "parse_request", "protected_dirs", "resolve_dir", "stamp", "target_dir_problems", "trigger_refusal"]

MODES = ("new_database", "replace", "tables")
RESTORE_KINDS = ("database", "files", "config")
# Names pgdr creates or is given: lower case, so they never need quoting and cannot inject.
_DATABASE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_TABLE_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_$]*\.[A-Za-z_][A-Za-z0-9_$]*$")
_CONN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,249}$")
# Directories a file restore never writes into or over, whatever the settings say: the system, the
# PostgreSQL servers' data, root's home.
SYSTEM_DIRS = ("/proc", "/sys", "/dev", "/etc", "/bin", "/sbin", "/usr", "/boot", "/lib", "/lib32", "/lib64",
               "/libx32", "/run", "/var/run", "/var/lib/postgresql", "/root", "/snap")


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


def parse_request(params: Mapping, protected: Iterable[str], *, settings=None) -> RestoreRequest:
    """Validate the trigger form. Every problem is reported at once, with the field named: one
    RestoreRefused whose ``field`` is the first problem's (see :func:`check_request`)."""
    request, problems = check_request(params, protected, settings=settings)
    if problems:
        # the first problem's field: the form shows every problem, a caller reacts to the first
        raise RestoreRefused.because(listed([text for _, text in problems]), field=problems[0][0])
    return request


def check_request(params: Mapping, protected: Iterable[str], *, settings=None
                  ) -> tuple[RestoreRequest | None, list[tuple[str, str]]]:
    """The request the form's values make, or None and every (form field, problem) pair.

    A field that is null (the form's "not given") counts exactly as an empty one. With ``settings``
    the destination allow-lists apply too (pgdr_restore_target_conn_ids, pgdr_restore_target_dirs)
    and target_dir must not overlap a directory pgdr reads or writes; without them only the rules
    that need no configuration (system databases and directories, ``/``).
    """
    protected = list(protected)
    problems: list[str] = []
    fields: list[str] = []   # the form field each problem concerns, in step with problems

    def problem(field: str, text: str) -> None:
        problems.append(text)
        fields.append(field)

    def text(name: str) -> str:
        value = params.get(name)
        if value is None:
            return ""
        if not isinstance(value, str):
            problem(name, f"{name} must be text, got {type(value).__name__}")
            return ""
        return value.strip()

    database = text("database")
    if database not in protected:
        problem("database", f"database {database!r} is not a protected database; choose one of {protected}")
    backup = text("backup") or "latest"
    if backup != "latest" and not is_backup_id(backup):
        problem("backup", f"backup {backup!r} is neither 'latest' nor a backup id (YYYYMMDDTHHMMSSZ, "
                "e.g. 20261126T020000Z)")
    target_conn_id = text("target_conn_id")
    if target_conn_id and not _CONN_ID.match(target_conn_id):
        problem("target_conn_id", f"target_conn_id {target_conn_id!r} is not an Airflow connection id")
    elif target_conn_id and settings is not None:
        allowed = allowed_target_conn_ids(settings)
        if target_conn_id not in allowed:
            problem("target_conn_id", f"target_conn_id {target_conn_id!r} is not an allowed restore target; "
                    f"allowed: {sorted(allowed)} (the protected databases' restore connections and setting "
                    "pgdr_restore_target_conn_ids)")
    target_database = text("target_database")
    if target_database and not _DATABASE_NAME.match(target_database):
        problem("target_database", f"target_database {target_database!r} is not allowed: use lower-case letters, "
                "digits and '_', starting with a letter or '_', at most 63 characters")
    elif target_database in SYSTEM_DATABASES:
        problem("target_database", system_database_problem(target_database))
    mode = text("mode") or "new_database"
    if mode not in MODES:
        problem("mode", f"mode {mode!r} is not one of {', '.join(MODES)}")
    raw_tables = params.get("tables") or []
    if isinstance(raw_tables, str):
        raw_tables = [part for part in re.split(r"[\s,]+", raw_tables) if part]
    if isinstance(raw_tables, list):
        raw_tables = [t for t in raw_tables if t is not None]
    if not isinstance(raw_tables, list) or not all(isinstance(t, str) for t in raw_tables):
        problem("tables", "tables must be a list of schema.table names")
        raw_tables = []
    tables = tuple(dict.fromkeys(t.strip() for t in raw_tables if t.strip()))
    bad_tables = [t for t in tables if not _TABLE_NAME.match(t)]
    if bad_tables:
        problem("tables", f"tables {bad_tables} are not schema.table names (letters, digits, '_', '$')")
    if mode == "tables" and not tables:
        problem("tables", "mode 'tables' needs the tables to restore, e.g. public.visits")
    if mode != "tables" and tables:
        problem("tables", f"tables are only used with mode 'tables' (mode is {mode!r}); clear the field")
    confirm = text("confirm")
    if mode == "replace" and confirm != confirmation_text(database):
        shown = f"{confirm!r}" if confirm else "nothing"
        problem("confirm", f"mode 'replace' overwrites the live database: type exactly "
                f"{confirmation_text(database)!r} in confirm (got {shown})")
    elif confirm and confirm != confirmation_text(database):
        problem("confirm", f"confirm {confirm!r} is not the confirmation: type exactly "
                f"{confirmation_text(database)!r} (needed for mode replace or a non-empty target_dir), "
                "or leave it empty")
    point_in_time = text("point_in_time")
    if point_in_time:
        from pgdr.restore.pitr_plan import parse_target  # lazy: pitr_plan imports this module
        try:
            parse_target(point_in_time)
        except RestoreRefused as refused:
            problem("point_in_time", refused.reason or str(refused))
        if mode == "replace":
            problem("point_in_time", "mode 'replace' cannot take a point in time: recover into a new cluster "
                    "(mode new_database), check it, then point the application at it")
        if mode == "new_database" and (target_conn_id or target_database):
            problem("target_conn_id" if target_conn_id else "target_database",
                    "with a point in time, mode 'new_database' recovers into a new cluster on this worker "
                    "(settings pgdr_pitr_data_dir, pgdr_pitr_port): leave target_conn_id and target_database empty")
        if backup != "latest" and "backup" not in fields:   # a bad id is named once, above
            problem("backup", "with a point in time, the base backup is chosen for you: leave backup at 'latest'")
    kind = text("kind") or "database"
    target_dir = text("target_dir")
    for field, text_ in kind_problems(kind, target_dir, mode, tables, point_in_time, target_conn_id, target_database,
                                      settings=settings):
        problem(field, text_)
    if problems:
        return None, list(zip(fields, problems, strict=True))
    return RestoreRequest(database, backup, target_conn_id, target_database, mode, tables, confirm, point_in_time,
                          kind, target_dir), []


def listed(problems: list[str]) -> str:
    """Every problem in one sentence a person reads at once: "3 problems to fix: (1) ...; (2) ..."."""
    if len(problems) == 1:
        return problems[0]
    return f"{len(problems)} problems to fix: " + "; ".join(f"({n}) {p}" for n, p in enumerate(problems, 1))


def trigger_refusal(conf: Mapping, protected: Iterable[str], defaults: Mapping | None = None) -> str | None:
    """What the trigger form answers before a run is created: the fields to fix at a glance, then the
    refusal naming every problem in plain words; None when the request passes the checks that need
    no settings (the task checks again, with them). ``defaults``: the form's values for fields
    ``conf`` leaves out. "Check param confirm: restore refused, nothing was changed: ..."."""
    _, problems = check_request({**(defaults or {}), **conf}, protected)
    if not problems:
        return None
    fields = list(dict.fromkeys(field for field, _ in problems))
    named = f"param {fields[0]}" if len(fields) == 1 else f"params {', '.join(fields[:-1])} and {fields[-1]}"
    return f"Check {named}: " + str(RestoreRefused.because(listed([text for _, text in problems])))


def kind_problems(kind: str, target_dir: str, mode: str, tables: tuple, point_in_time: str, target_conn_id: str,
                  target_database: str, *, settings=None) -> list[tuple[str, str]]:
    """Fields that do not fit the kind: a file or configuration restore goes into target_dir, nothing else.
    (form field, problem) pairs."""
    problems: list[tuple[str, str]] = []
    if kind not in RESTORE_KINDS:
        problems.append(("kind", f"kind {kind!r} is not one of {', '.join(RESTORE_KINDS)}"))
    elif kind == "database":
        if target_dir:
            problems.append(("target_dir",
                             "target_dir is only for kind files or config (kind is database); clear it"))
    else:
        if not target_dir:
            problems.append(("target_dir", f"kind {kind!r} restores into a directory: give target_dir, an absolute "
                             "path (an empty or new directory; a non-empty one needs the confirmation)"))
        else:
            problems.extend(("target_dir", p) for p in target_dir_problems(target_dir, settings)[0])
        if mode != "new_database":
            problems.append(("mode", f"mode {mode!r} is for databases; leave it at new_database for kind {kind!r}"))
        if point_in_time:
            problems.append(("point_in_time", f"point_in_time is for databases; clear it for kind {kind!r}"))
        if target_conn_id or target_database:
            problems.append(("target_conn_id" if target_conn_id else "target_database",
                             f"target_conn_id and target_database are for databases; kind {kind!r} uses target_dir"))
    return problems


def allowed_target_conn_ids(settings) -> set[str]:
    """Connections a restore may write into: each protected database's restore connection (where an
    empty target_conn_id goes anyway) and those listed in pgdr_restore_target_conn_ids."""
    allowed = {settings.restore_conn_id(database) for database in settings.databases}
    return allowed | set(getattr(settings, "restore_target_conn_ids", ()) or ())


# --- where a file restore may write --------------------------------------------------------------

def resolve_dir(path: str | os.PathLike) -> Path:
    """The real path: '.', '//' and every symlink of the existing part followed (/proc/self/root is /)."""
    return Path(os.path.realpath(path))


def protected_dirs(settings=None) -> list[tuple[str, Path, bool]]:
    """(what, directory, whole) a restore must not write over: a target_dir equal to it or containing
    it is refused, and with ``whole`` one inside it too. The system, Airflow's home (a directory of
    its own inside it is allowed, as docker-compose's /opt/airflow/restore), its dags, plugins,
    config and logs, and with ``settings`` every directory pgdr backs up or writes itself."""
    named = [(f"the system directory {d}", Path(d), True) for d in SYSTEM_DIRS]
    home = Path(os.environ.get("AIRFLOW_HOME") or os.path.expanduser("~/airflow"))
    named.append(("the Airflow home (AIRFLOW_HOME)", home, False))
    for sub in ("dags", "plugins", "config", "logs", "include"):
        named.append((f"Airflow's {sub} directory", home / sub, True))
    for variable in ("AIRFLOW__CORE__DAGS_FOLDER", "AIRFLOW__CORE__PLUGINS_FOLDER"):
        if os.environ.get(variable, "").startswith("/"):
            named.append((f"Airflow's {variable}", Path(os.environ[variable]), True))
    if os.environ.get("AIRFLOW_CONFIG", "").startswith("/"):
        config_dir = Path(os.environ["AIRFLOW_CONFIG"]).parent
        named.append(("the directory of Airflow's configuration (AIRFLOW_CONFIG)", config_dir, config_dir != home))
    named.append(("pgdr's plugins directory", Path(__file__).resolve().parents[2], True))
    if settings is not None:
        named.append(("the staging directory (pgdr_staging_dir)", Path(settings.staging_dir), True))
        named.append(("the WAL receiver directory (pgdr_wal_receiver_dir)", Path(settings.wal_receiver_dir), True))
        named.append(("the point-in-time recovery directory (pgdr_pitr_data_dir)", Path(settings.pitr_data_dir),
                      True))
        from pgdr.core.pgtools import SUPPORTED_MAJORS  # lazily: this module stays free of subprocess

        tool_dirs = settings.tool_dirs
        for major in sorted({*SUPPORTED_MAJORS, *settings.pg_bindirs}):
            named.append((f"the PostgreSQL {major} tools directory (pgdr_pg_bindir)", tool_dirs.directory(major), True))
        for dirs in (getattr(settings, "file_dirs", None) or {}).values():
            named.extend(("a backed-up directory (pgdr_file_dirs)", Path(d), True) for d in dirs)
        for files in (getattr(settings, "config_files", None) or {}).values():
            named.extend(("the directory of a backed-up configuration file (pgdr_config_files)", Path(f).parent,
                          True) for f in files)
    return named


def target_dir_problems(target_dir: str, settings=None) -> tuple[list[str], Path | None]:
    """Why a file restore may not write into ``target_dir``, and the directory it resolves to.

    The path is resolved first (symlinks of its existing part followed, so '//.' or
    '/proc/self/root' is '/'), then refused when it is '/', overlaps (is inside, equals or
    contains) a protected directory, or with ``settings`` lies outside every
    pgdr_restore_target_dirs root. Reads the filesystem, changes nothing.
    """
    if "\0" in target_dir or not target_dir.startswith("/") or ".." in target_dir.split("/"):
        return [f"target_dir {target_dir!r} must be an absolute path without '..', not /"], None
    try:
        resolved = resolve_dir(target_dir)
    except OSError as err:   # a link this worker may not read (/proc/1/root): it cannot be checked
        return [f"target_dir {target_dir!r} cannot be resolved ({err.strerror}); choose a directory of its own"], None
    shown = f"target_dir {target_dir!r}" + (f" (resolves to {str(resolved)!r})" if str(resolved) != target_dir else "")
    if resolved == Path("/"):
        return [f"{shown} must be a directory of its own, not /"], resolved
    problems = []
    for what, directory, whole in protected_dirs(settings):
        try:
            real = resolve_dir(directory)
        except OSError:
            real = directory
        for spelled in dict.fromkeys((directory, real)):
            relation = ("is" if resolved == spelled else "contains" if resolved in spelled.parents else
                        "is inside" if whole and spelled in resolved.parents else "")
            if relation:
                problems.append(f"{shown} {relation} {what}; a restore never writes there: choose a directory of "
                                "its own")
                break
        if problems:
            break
    if settings is not None:
        roots = [Path(r) for r in getattr(settings, "restore_target_dirs", ())]
        real_roots = [resolve_dir(r) for r in roots]
        if not any(resolved == r or r in resolved.parents for r in real_roots):
            problems.append(f"{shown} is not under an allowed restore directory (setting pgdr_restore_target_dirs: "
                            f"{[str(r) for r in roots]})")
    return problems, resolved


def choose_backup(entries: list[BackupEntry], requested: str, database: str) -> BackupEntry:
    """The backup to restore: the newest good one for 'latest', else the id asked for if it may be used."""
    good = newest_good(entries)
    hint = f"the newest good backup is {good.backup_id}" if good else "there is no good backup"
    if requested == "latest":
        if good is None:
            raise RestoreRefused.because(f"no complete, good backup of {database} exists; nothing to restore",
                                         field="backup")
        return good
    entry = next((e for e in entries if e.backup_id == requested), None)
    if entry is None:
        raise RestoreRefused.because(f"backup {requested} of {database} does not exist; {hint}", field="backup")
    if not entry.complete:
        raise RestoreRefused.because(f"backup {requested} of {database} is incomplete (no manifest.json) and is "
                                     f"never restored; {hint}", field="backup")
    if entry.bad:
        problems = (entry.verification or {}).get("problems") or []
        first = problems[0].get("problem", "") if problems and isinstance(problems[0], dict) else ""
        raise RestoreRefused.because(f"backup {requested} of {database} was marked bad by verification at "
                                     f"{entry.verified_at or '?'}" + (f" ({first})" if first else "") + f"; {hint}",
                                     field="backup")
    return entry


def newest_good_except(entries: list[BackupEntry], backup_id: str) -> str | None:
    good = newest_good([e for e in entries if e.backup_id != backup_id])
    return good.backup_id if good else None


def stamp(now: datetime | None = None) -> str:
    now = now or datetime.now(timezone.utc)
    return now.astimezone(timezone.utc).strftime("%Y%m%d_%H%M%S")

