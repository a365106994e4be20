"""The restore plan: what the ``prepare`` task of pg_restore decided, typed, and how it decides.

``prepare`` changes nothing but the lease. From a validated :class:`~pgdr.restore.request.RestoreRequest`
a :class:`Planner` builds one of three plans: a logical restore (the backup chosen and leased, its
objects checked in S3, the target server and the staging space checked), a file or configuration
restore (every backup it depends on intact, the target directory usable, the key able to open
sealed files) or a point-in-time recovery (the base backup and WAL that reach the moment, the
recovery directory and port). The plan travels to the ``restore`` and ``report`` tasks through
XCom as :meth:`RestorePlan.to_dict` (keys, names and ids only: the record of every restore keeps
that shape) and is read back with :meth:`RestorePlan.from_dict`.

The Airflow side (connections, the lease holder named after the run, the verification verdict)
comes in as arguments, so the planning reads like the decision it is.
"""

from __future__ import annotations

import shutil
from collections.abc import Callable
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path
from typing import Any

from pgdr.core.progress import human_bytes
from pgdr.errors import RestoreRefused
from pgdr.restore.names import RestoreNames, restore_names, with_suffix
from pgdr.restore.request import RestoreRequest, choose_backup, confirmation_text, newest_good_except
from pgdr.restore.swap import database_exists, one
from pgdr.store import leases
from pgdr.store.catalog import BackupEntry, newest_good
from pgdr.store.layout import backup_prefix, manifest_key, object_key
from pgdr.store.manifest import Manifest

REFUSED = "restore refused, nothing was changed: "
KINDS = ("logical", "files", "config", "pitr")
# keys the XCom carries only for the kinds that use them (the records written so far have that shape)
_OPTIONAL = ("target_dir", "target", "data_dir", "port", "wal_first", "wal_last", "wal_segments")

Connect = Callable[[str], object]   # database name -> an autocommit DB-API connection


@dataclass(frozen=True)
class RestorePlan:
    """What one pg_restore run will do; the ``restore`` task carries it out."""

    request: RestoreRequest
    kind: str                     # logical | files | config | pitr
    backup_id: str                # the backup (pitr: the base backup) chosen and leased
    prefix: str                   # its directory in S3
    stamp: str                    # the run's time, in every name it creates
    names: RestoreNames           # files/config: target_database is the target directory
    target_conn_id: str = ""      # "" for files/config, and for pitr unless mode tables
    target_dir: str | None = None  # files/config: the resolved directory
    target: str | None = None     # pitr: the recovery target, described
    data_dir: str | None = None   # pitr: the new cluster's data directory
    port: int | None = None       # pitr: its preferred port
    wal_first: str | None = None  # pitr: the WAL segments replayed
    wal_last: str | None = None
    wal_segments: int | None = None
    lease: dict[str, str] | None = None   # {database, kind, backup_id, holder}: released by the report

    @property
    def database(self) -> str:
        return self.request.database

    def to_dict(self) -> dict[str, Any]:
        """The XCom (and the restore record's ``plan``): JSON types only; unused optional keys left out."""
        out = asdict(self)
        out["request"] = self.request.to_dict()
        return {k: v for k, v in out.items() if not (k in _OPTIONAL and v is None)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RestorePlan:
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        request = dict(data["request"])
        request["tables"] = tuple(request.get("tables") or ())
        values["request"] = RestoreRequest(**request)
        values["names"] = RestoreNames(**data["names"])
        return cls(**values)


# --- what prepare checks -------------------------------------------------------------------------

def load_manifest(store, database: str, backup_id: str, kind: str = "logical") -> tuple[Manifest, str]:
    """(manifest, the backup's prefix)."""
    prefix = backup_prefix(store.prefix, database, kind, backup_id)
    return store.read_manifest(manifest_key(prefix)), prefix


def damaged_objects(store, manifest: Manifest, prefix: str) -> list[dict]:
    """HEAD every object (size, S3's SHA-256, encryption): what is missing or differs."""
    from pgdr.core.redaction import safe_error

    problems = []
    for obj in manifest.objects:
        key = object_key(prefix, obj.name)
        try:
            check = store.check_object(key, obj.size, obj.sha256, obj.s3_checksum)
        except Exception as err:
            if not store.is_missing(err):
                raise   # S3 unreachable or refusing: no verdict on the backup
            problems.append({"problem": "object missing or unreadable", "key": key, "error": safe_error(err)[:200]})
            continue
        problems.extend({"problem": p, "key": check.key} for p in check.problems)
    return problems


def refuse_damaged(store, database: str, manifest: Manifest, prefix: str, entries: list[BackupEntry], *,
                   kind: str = "logical", mark: Callable[[str, str, str, list[dict]], None]) -> None:
    """A damaged backup is marked bad (``mark(database, kind, backup_id, problems)``) and refused."""
    problems = damaged_objects(store, manifest, prefix)
    if not problems:
        return
    mark(database, kind, manifest.backup_id, problems)
    other = newest_good_except(entries, manifest.backup_id)
    raise RestoreRefused(
        f"{REFUSED}backup {manifest.backup_id} of {database} is damaged ({problems[0]['key']}: "
        f"{problems[0]['problem']}) and is now marked bad; "
        + (f"the newest good backup is {other}" if other else "there is no other good backup"), field="backup")


def refuse_damaged_chain(store, database: str, manifest: Manifest, prefix: str, entries: list[BackupEntry], *,
                         mark: Callable[[str, str, str, list[dict]], None]) -> list[Manifest]:
    """Every earlier piece of an incremental base backup checked as the backup itself is (a damaged one
    marked bad and the restore refused, naming it); returns the chain's manifests, the full first."""
    from pgdr.restore.pitr_fetch import chain_manifests

    pieces = chain_manifests(store, manifest, prefix)
    for piece, piece_prefix in pieces[:-1]:
        refuse_damaged(store, database, piece, piece_prefix, entries, kind="base", mark=mark)
    return [piece for piece, _ in pieces]


def server_facts(conn) -> dict:
    version_num, superuser, createdb, createrole = one(conn, """
        SELECT current_setting('server_version_num')::int, rolsuper, rolcreatedb, rolcreaterole
        FROM pg_roles WHERE rolname = current_user""")
    return {"server_version_num": version_num, "superuser": superuser, "createdb": createdb,
            "createrole": createrole}


def check_target_server(conn, manifest: Manifest, names: RestoreNames, mode: str) -> dict:
    """Can this server take the restore? Refuses before anything is changed; returns its facts."""
    facts = server_facts(conn)
    problems, fields_ = [], []   # fields_: the form field each problem concerns
    if facts["server_version_num"] // 10000 < manifest.server_version_num // 10000:
        fields_.append("target_conn_id")
        problems.append(f"the target runs PostgreSQL {facts['server_version_num'] // 10000}, older than the "
                        f"backup's {manifest.server_version_num // 10000}")
    if not (facts["superuser"] or facts["createdb"]):
        fields_.append("target_conn_id")
        problems.append("the target connection's role can neither create databases nor is superuser")
    if mode in ("new_database",) and database_exists(conn, names.target_database):
        fields_.append("target_database")
        problems.append(f"database {names.target_database!r} already exists on the target; choose another "
                        "target_database (a restore never writes into an existing database)")
    if mode in ("replace", "tables") and not database_exists(conn, names.target_database):
        hint = ("nothing to replace; use mode 'new_database' with target_database="
                f"{names.target_database}" if mode == "replace" else "the tables are recovered into it")
        fields_.append("target_database")
        problems.append(f"database {names.target_database!r} does not exist on the target ({hint})")
    if database_exists(conn, names.work_database) and names.work_database != names.target_database:
        fields_.append("target_database")
        problems.append(f"database {names.work_database!r} already exists (a restore of the same second?)")
    if names.kept_database and database_exists(conn, names.kept_database):
        fields_.append("target_database")
        problems.append(f"database {names.kept_database!r} already exists")
    if problems:
        raise RestoreRefused(REFUSED + "; ".join(problems), field=fields_[0])
    return facts


def check_target(connect: Connect, manifest: Manifest, names: RestoreNames, mode: str) -> dict:
    """:func:`check_target_server` on a connection of its own to the maintenance database."""
    conn = connect("postgres")
    try:
        return check_target_server(conn, manifest, names, mode)
    finally:
        conn.close()


def check_staging_space(staging_dir: Path, needed: int) -> int:
    staging_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(staging_dir).free
    if free < needed:
        raise RestoreRefused(f"{REFUSED}staging directory {staging_dir} has {human_bytes(free)} free, the download "
                             f"needs {human_bytes(needed)} (setting pgdr_staging_dir)", field="pgdr_staging_dir")
    return free


def unknown_tables(request: RestoreRequest, manifest: Manifest) -> None:
    """Refuses tables the backup does not hold, naming those it does."""
    unknown = [t for t in request.tables if t not in manifest.row_counts]
    if unknown:
        raise RestoreRefused(f"{REFUSED}backup {manifest.backup_id} holds no table {', '.join(unknown)}; it has "
                             f"{', '.join(sorted(manifest.row_counts))}", field="tables")


def staging_needed(manifest: Manifest) -> int:
    """Bytes of staging a logical restore downloads into, with room to spare."""
    return int(sum(o.size for o in manifest.objects if o.role == "table_data") * 1.1) + (64 << 20)


def files_needed(manifest: Manifest) -> int:
    """Bytes a file or configuration restore writes (the files, the archives on the way), with room to spare."""
    return int(manifest.dump.get("bytes", 0) * 1.1) + sum(o.size for o in manifest.objects) + (16 << 20)


def pitr_needed(manifest: Manifest, segments: int, segment_size: int) -> int:
    """Bytes a point-in-time recovery's data directory needs: the base backup unpacked, the WAL twice."""
    raw = sum(o.raw_size or o.size for o in manifest.objects)
    return int(raw * 1.2) + segments * segment_size * 2


def broken_dependency(manifest: Manifest, holder: str, entries: list[BackupEntry]) -> str | None:
    """Why a files backup cannot be restored: ``holder``, a backup it keeps unchanged files in, is not usable."""
    held = next((e for e in entries if e.backup_id == holder), None)
    if held is not None and held.complete and not held.bad:
        return None
    state = "missing" if held is None else "incomplete" if not held.complete else "marked bad"
    good = newest_good([e for e in entries if e.backup_id != manifest.backup_id])
    return (f"{manifest.kind} backup {manifest.backup_id} keeps unchanged files in backup {holder}, which is "
            f"{state}; " + (f"try backup {good.backup_id}" if good else "there is no other good backup"))


def refuse_unconfirmed_overwrite(request: RestoreRequest) -> None:
    """Files never go over a non-empty directory without the typed confirmation."""
    from pgdr.restore.files import is_empty_dir

    target = Path(request.target_dir)
    expected = confirmation_text(request.database)
    if target.is_dir() and not is_empty_dir(target) and request.confirm != expected:
        shown = f"{request.confirm!r}" if request.confirm else "nothing"
        raise RestoreRefused(f"{REFUSED}target_dir {target} is not empty; restoring over it replaces files there: "
                             f"type exactly {expected!r} in confirm (got {shown}), or choose an empty or new "
                             "directory", field="confirm")


def config_wrapper(manifest: Manifest, settings):
    """The key wrapper that opens this backup's sealed files (None when nothing is sealed), refused
    clearly when it cannot."""
    from pgdr.backup.files_reader import unsealer
    from pgdr.core.envelope import KeyProblem, wrapper_for

    if not (manifest.encryption or {}).get("client_side"):
        return None
    try:
        wrapper = wrapper_for(manifest.encryption["client_side"]["data_key"], settings)
        unsealer(manifest, wrapper)
    except KeyProblem as err:
        raise RestoreRefused(f"{REFUSED}backup {manifest.backup_id} holds files sealed client-side and cannot be "
                             f"opened: {err}", field="backup") from None
    return wrapper


def pitr_name(dbname: str, when: str) -> str:
    return with_suffix(f"{dbname}_pitr", f"_{when}")


def pitr_choice(store, database: str, point_in_time: str, only: str | None = None):
    """(target, base manifest, its prefix, WAL plan, base entries), or a refusal.

    The base backup's own cluster's WAL (its system identifier), followed along the timeline
    history to the newest timeline. ``only``: the base backup the plan chose and leased; the
    restore uses exactly that one (a newer base backup may fit by then, but it is not leased:
    retention could delete it).
    """
    from pgdr.restore.pitr_fetch import plan_point_in_time

    return plan_point_in_time(store, database, point_in_time,
                              lambda backup_id: load_manifest(store, database, backup_id, kind="base"), only=only)


# --- the three plans -----------------------------------------------------------------------------

def release_lease(store, lease: dict[str, str] | None, log) -> None:
    """Best effort: a lease left behind only runs out later."""
    from pgdr.core.redaction import safe_error

    if not lease:
        return
    try:
        leases.release(store, lease["database"], lease["kind"], lease["backup_id"], lease["holder"])
    except Exception as err:  # noqa: BLE001 - the lease expires on its own
        log.warning("could not release the lease on %s backup %s: %s", lease["kind"], lease["backup_id"],
                    safe_error(err))


@dataclass
class Planner:
    """Builds the plan of one request. Reads S3 and the target server; changes nothing but the lease.

    The backup is leased for ``holder`` (``hours``) as soon as it is chosen, so retention keeps it
    while this run reads it; a refusal after that lets the lease go again.
    ``mark(database, kind, backup_id, problems)`` records a damaged backup's verdict;
    ``target_for(conn_id)`` gives ``(PgTarget, connect(dbname))`` for a postgres connection.
    """

    store: Any
    settings: Any
    log: Any
    when: str
    target_for: Callable[[str], tuple[Any, Connect]]
    holder: str
    hours: float
    mark: Callable[[str, str, str, list[dict]], None]
    lease: dict[str, str] | None = None

    def plan(self, request: RestoreRequest) -> RestorePlan:
        self.lease = None
        try:
            if request.kind in ("files", "config"):
                plan = self.files(request)
            elif request.point_in_time:
                plan = self.pitr(request)
            else:
                plan = self.logical(request)
        except BaseException:
            release_lease(self.store, self.lease, self.log)
            raise
        return replace(plan, lease=self.lease)

    def _lease(self, database: str, kind: str, backup_id: str) -> None:
        self.lease = {"database": database, "kind": kind, "backup_id": backup_id, "holder": self.holder}
        self.log.info("leased %s backup %s of %s for this run", kind, backup_id, database)

    def lease_chosen(self, database: str, kind: str, choose) -> tuple[list[BackupEntry], BackupEntry]:
        """Choose a backup and lease it at once (:func:`pgdr.store.leases.lease_chosen`): (entries, entry)."""
        try:
            entries, entry, _ = leases.lease_chosen(self.store, database, kind, choose, self.holder, self.hours,
                                                    self.log)
        except RuntimeError as err:
            raise RestoreRefused(f"{REFUSED}{err}", field="backup") from None
        self._lease(database, kind, entry.backup_id)
        return entries, entry

    def hold_lease(self, database: str, kind: str, backup_id: str) -> None:
        leases.hold(self.store, database, kind, backup_id, self.holder, hours=self.hours)
        self._lease(database, kind, backup_id)

    def logical(self, request: RestoreRequest) -> RestorePlan:
        settings, database = self.settings, request.database
        entries, entry = self.lease_chosen(database, "logical",
                                           lambda found: choose_backup(found, request.backup, database))
        manifest, prefix = load_manifest(self.store, database, entry.backup_id)
        unknown_tables(request, manifest)
        refuse_damaged(self.store, database, manifest, prefix, entries, mark=self.mark)
        names = restore_names(request, manifest.dbname, self.when)
        target_conn_id = request.target_conn_id or settings.restore_conn_id(database)
        target, connect = self.target_for(target_conn_id)
        facts = check_target(connect, manifest, names, request.mode)
        check_staging_space(settings.staging_dir, staging_needed(manifest))
        self.log.info("plan: %s backup %s of %s (%d tables, %d rows) into %s on %s (%s); target role %s",
                      request.mode, entry.backup_id, database, len(manifest.row_counts),
                      sum(manifest.row_counts.values()), names.target_database, target.describe(),
                      "superuser" if facts["superuser"] else "not superuser", target.user)
        if not facts["superuser"]:
            self.log.warning("the target role is not a superuser: owners, row-level security and grants are "
                             "restored only where it is allowed to set them; pg_restore stops at the first error")
        return RestorePlan(request=request, kind="logical", backup_id=entry.backup_id, prefix=prefix,
                           stamp=self.when, names=names, target_conn_id=target_conn_id)

    def files(self, request: RestoreRequest) -> RestorePlan:
        """The backup and every backup it depends on intact, the target directory usable (empty, new,
        or confirmed), the key able to open sealed files."""
        from pgdr.backup.files_reader import FileRestoreError
        from pgdr.restore.files import check_target_dir

        kind, database = request.kind, request.database
        entries, entry = self.lease_chosen(database, kind, lambda found: choose_backup(found, request.backup, database))
        manifest, prefix = load_manifest(self.store, database, entry.backup_id, kind=kind)
        refuse_damaged(self.store, database, manifest, prefix, entries, kind=kind, mark=self.mark)
        for holder in manifest.dump.get("depends_on", []):
            broken = broken_dependency(manifest, holder, entries)
            if broken:
                raise RestoreRefused(REFUSED + broken, field="backup")
            held_manifest, held_prefix = load_manifest(self.store, database, holder, kind=kind)
            refuse_damaged(self.store, database, held_manifest, held_prefix, entries, kind=kind, mark=self.mark)
        refuse_unconfirmed_overwrite(request)
        try:
            target_dir = check_target_dir(request.target_dir, files_needed(manifest), settings=self.settings)
        except FileRestoreError as err:
            raise RestoreRefused(f"{REFUSED}{err}", field="target_dir") from None
        config_wrapper(manifest, self.settings)   # a missing or wrong key is refused here, before anything is written
        depends = manifest.dump.get("depends_on")
        self.log.info("plan: %s backup %s of %s (%d files, %d bytes%s) into %s%s", kind, entry.backup_id, database,
                      manifest.dump.get("files") if kind == "files" else manifest.dump.get("file_count"),
                      manifest.dump.get("bytes", 0), f", depends on {', '.join(depends)}" if depends else "",
                      target_dir, " (not empty: confirmed)" if request.confirm else "")
        return RestorePlan(request=request, kind=kind, backup_id=entry.backup_id, prefix=prefix, stamp=self.when,
                           names=RestoreNames(str(target_dir), "", None, None), target_dir=str(target_dir))

    def pitr(self, request: RestoreRequest) -> RestorePlan:
        """The newest good base backup before the moment and the WAL reaching it, leased, then chosen
        again with only that one (retention may have deleted it before it saw the lease)."""
        from pgdr.restore.pitr_cluster import check_pitr_target

        settings, database = self.settings, request.database
        _, manifest, _, _, _ = pitr_choice(self.store, database, request.point_in_time)
        self.hold_lease(database, "base", manifest.backup_id)
        target, manifest, prefix, wal, entries = pitr_choice(self.store, database, request.point_in_time,
                                                             only=manifest.backup_id)
        refuse_damaged(self.store, database, manifest, prefix, entries, kind="base", mark=self.mark)
        needed = pitr_needed(manifest, len(wal.segments), wal.segment_size)
        if manifest.depends_on:
            from pgdr.restore.pitr_fetch import chain_space_needed

            # an incremental restores with every earlier piece: each checked now, the disk sized for them all
            pieces = refuse_damaged_chain(self.store, database, manifest, prefix, entries, mark=self.mark)
            needed = max(needed, chain_space_needed(pieces) + len(wal.segments) * wal.segment_size * 2)
        data_dir = check_pitr_target(settings.pitr_data_dir, pitr_name(manifest.dbname, self.when), settings.pitr_port,
                                     needed)
        names, target_conn_id = RestoreNames(manifest.dbname, manifest.dbname, None, None), ""
        if request.mode == "tables":
            unknown = [t for t in request.tables if "." not in t]
            if unknown:
                raise RestoreRefused(f"{REFUSED}{unknown} are not schema.table names", field="tables")
            target_conn_id = request.target_conn_id or settings.restore_conn_id(database)
            tables_names = restore_names(request, manifest.dbname, self.when)   # system databases refused here too
            check_target(self.target_for(target_conn_id)[1], manifest, tables_names, "tables")
            names = RestoreNames(tables_names.target_database, "", None, tables_names.recovered_schema)
        self.log.info("plan: point-in-time recovery of %s to %s from base backup %s (WAL %s .. %s, %d segments%s) "
                      "into a new cluster at %s, preferred port %d", database, target.describe(),
                      manifest.backup_id, wal.first, wal.last, len(wal.segments),
                      ", the last partial" if wal.segments[-1].partial else "", data_dir, settings.pitr_port)
        return RestorePlan(request=request, kind="pitr", backup_id=manifest.backup_id, prefix=prefix,
                           stamp=self.when, names=names, target_conn_id=target_conn_id, target=target.describe(),
                           data_dir=str(data_dir), port=settings.pitr_port, wal_first=wal.first,
                           wal_last=wal.last, wal_segments=len(wal.segments))
