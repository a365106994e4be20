"""Restoring a logical backup from S3 into a PostgreSQL server.

Three ways, chosen in the ``pg_restore`` form:

* ``new_database``: a new database, named like the form says, with the source's owner,
  settings and privileges; the roles the server lacks are created from the backup's globals;
* ``replace``: the same into a new database first, verified and analysed, then swapped with
  the live database by renaming inside a short window (connections to the live one are
  ended first); the old database is kept, renamed, until ``pgdr_replaced_keep_hours``;
* ``tables``: the listed tables into a scratch database, then moved into a schema
  ``recovered_<timestamp>`` of the target database, leaving everything else untouched.

Every restore ends with each table's row count compared with the manifest; a restore that
fails drops what it created, so nothing half-restored is left looking finished. A new database is
restored under a temporary name and gets its final name only once verified. Each database is
created with an OID chosen beforehand (``CREATE DATABASE ... OID``) and dropped only while that OID
and its name still match, so a failed ``CREATE`` never drops a database someone else made. With a
:class:`pgdr.restore.journal.Journal`, every step is recorded in S3 before it is taken, so a worker
killed mid-restore is healed by the next run. The download overlaps pg_restore (see :mod:`pgdr.restore.fetch`).
"""

from __future__ import annotations

import dataclasses
import logging
import os
import re
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pgdr.core import sqlfiles as sql
from pgdr.core.pgtools import PgTarget, PgToolError, libpq_env, run_tool, stderr_tail, tool_path
from pgdr.core.progress import human_bytes
from pgdr.core.redaction import safe_error
from pgdr.errors import PgdrError
from pgdr.restore.fetch import PipedDataFiles, fetch_whole
from pgdr.restore.journal import drop_if_same, new_oid, process_identity, record_replaced
from pgdr.restore.request import (
    RestoreNames,
    RestoreRefused,
    compare_counts,
    database_statements,
    missing_role_statements,
    with_suffix,
)
from pgdr.store.manifest import Manifest

Connect = Callable[[str], object]   # database name -> an autocommit DB-API connection


class RestoreFailed(PgdrError, RuntimeError):
    """The restore did not complete; what it created has been removed."""


def _quote(name: str) -> str:
    """An identifier quoted for SQL (works with psycopg 2 and 3, whichever the postgres hook uses)."""
    return '"' + name.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _one(conn, query, params=None):
    with conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchone()


def _all(conn, query, params=None) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchall()


def _run(conn, query, params=None) -> None:
    with conn.cursor() as cur:
        cur.execute(query, params)


def database_exists(conn, name: str) -> bool:
    return _one(conn, "SELECT count(*) FROM pg_database WHERE datname = %s", (name,))[0] > 0


def drop_database(conn, name: str, log: logging.Logger) -> None:
    _run(conn, f"DROP DATABASE IF EXISTS {_quote(name)} WITH (FORCE)")
    log.info("dropped database %s", name)


def server_facts(conn) -> dict:
    version_num, superuser, createdb, createrole = _one(conn, """
        SELECT current_setting('server_version_num')::int, rolsuper, rolcreatedb, rolcreaterole
        FROM pg_roles WHERE rolname = current_user""")
    return {"server_version_num": version_num, "superuser": superuser, "createdb": createdb,
            "createrole": createrole}


def check_target_server(conn, manifest: Manifest, names: RestoreNames, mode: str, recovered_schema_conn=None) -> dict:
    """Can this server take the restore? Refuses before anything is changed."""
    facts = server_facts(conn)
    problems, fields = [], []   # fields: the form field each problem concerns
    if facts["server_version_num"] // 10000 < manifest.server_version_num // 10000:
        fields.append("target_conn_id")
        problems.append(f"the target runs PostgreSQL {facts['server_version_num'] // 10000}, older than the "
                        f"backup's {manifest.server_version_num // 10000}")
    if not (facts["superuser"] or facts["createdb"]):
        fields.append("target_conn_id")
        problems.append("the target connection's role can neither create databases nor is superuser")
    if mode in ("new_database",) and database_exists(conn, names.target_database):
        fields.append("target_database")
        problems.append(f"database {names.target_database!r} already exists on the target; choose another "
                        "target_database (a restore never writes into an existing database)")
    if mode in ("replace", "tables") and not database_exists(conn, names.target_database):
        hint = ("nothing to replace; use mode 'new_database' with target_database="
                f"{names.target_database}" if mode == "replace" else "the tables are recovered into it")
        fields.append("target_database")
        problems.append(f"database {names.target_database!r} does not exist on the target ({hint})")
    if database_exists(conn, names.work_database) and names.work_database != names.target_database:
        fields.append("target_database")
        problems.append(f"database {names.work_database!r} already exists (a restore of the same second?)")
    if names.kept_database and database_exists(conn, names.kept_database):
        fields.append("target_database")
        problems.append(f"database {names.kept_database!r} already exists")
    if problems:
        raise RestoreRefused("restore refused, nothing was changed: " + "; ".join(problems), field=fields[0])
    return facts


def check_staging_space(staging_dir: Path, needed: int) -> int:
    staging_dir.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(staging_dir).free
    if free < needed:
        raise RestoreRefused(f"restore refused, nothing was changed: staging directory {staging_dir} has "
                             f"{human_bytes(free)} free, the download needs {human_bytes(needed)} "
                             "(setting pgdr_staging_dir)", field="pgdr_staging_dir")
    return free


def apply_missing_globals(conn, globals_sql: str, log: logging.Logger) -> list[str]:
    """Create the roles the target lacks (with their settings and memberships); existing roles stay as they are."""
    existing = [row[0] for row in _all(conn, "SELECT rolname FROM pg_roles")]
    statements, missing = missing_role_statements(globals_sql, existing)
    if not missing:
        log.info("globals: every role of the backup exists on the target; none created")
        return []
    with conn.cursor() as cur:
        cur.execute("BEGIN")
        try:
            for statement in statements:
                cur.execute(statement)
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
    log.info("globals: created %d role(s) the target lacked: %s (created without passwords; set them "
             "before the application connects)", len(missing), ", ".join(missing))
    return missing


def count_rows(connect: Connect, dbname: str, tables: list[str] | None, jobs: int,
               schema_map: dict[str, str] | None = None) -> dict[str, int]:
    """Exact row counts of the user tables (or of ``tables``), read with row security off.

    ``schema_map`` counts a table found under another schema (the recovered_* copy).
    """
    conn = connect(dbname)
    try:
        listed = {name: quoted for name, quoted in _all(conn, sql.load("restore_user_tables"))}
    finally:
        conn.close()
    wanted = tables if tables is not None else sorted(listed)
    schema_map = schema_map or {}

    def located(table: str) -> str:
        schema, name = table.split(".", 1)
        return f"{schema_map.get(schema, schema)}.{name}"

    def count(batch: list[str]) -> dict[str, int]:
        conn = connect(dbname)
        try:
            _run(conn, "SET row_security = off")
            found = {}
            for table in batch:
                quoted = listed.get(located(table))
                if quoted is not None:
                    found[table] = _one(conn, f"SELECT count(*) FROM ONLY {quoted}")[0]
            return found
        finally:
            conn.close()

    batches = [wanted[i::jobs] for i in range(max(jobs, 1))]
    counts: dict[str, int] = {}
    with ThreadPoolExecutor(max_workers=max(jobs, 1), thread_name_prefix="pgdr-count") as pool:
        for found in pool.map(count, [b for b in batches if b]):
            counts.update(found)
    return counts


class _Stopwatch:
    def __init__(self) -> None:
        self.started = time.monotonic()
        self.marks: dict[str, float] = {}

    def mark(self, name: str, since: float) -> float:
        self.marks[name] = round(time.monotonic() - since, 3)
        return time.monotonic()

    @property
    def total(self) -> float:
        return round(time.monotonic() - self.started, 3)


def _pg_restore(argv: list[str], env: dict[str, str], piped: PipedDataFiles | None, log: logging.Logger,
                on_start: Callable[[subprocess.Popen], None] | None = None) -> None:
    """Run pg_restore, feeding its FIFOs; stop it at once when a download or hash check fails.

    It runs in its own process group (its parallel workers too), so a later run can stop all of
    it when this worker dies; ``on_start`` records the process before anything else happens.
    """
    log.info("running %s", " ".join(["pg_restore", *argv[1:]]))
    process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                               start_new_session=True)
    errors: list[str] = []
    reader = threading.Thread(target=lambda: errors.append(process.stderr.read()), daemon=True)
    reader.start()
    try:
        if on_start is not None:
            on_start(process)
        while process.poll() is None:
            if piped is not None:
                if piped.failure is not None:
                    raise piped.failure
                piped.poll()
            time.sleep(0.02)
        reader.join()
        if piped is not None and piped.failure is not None:
            raise piped.failure
        if process.returncode != 0:
            raise PgToolError(f"pg_restore failed (exit {process.returncode}): {stderr_tail(''.join(errors))}")
        if piped is not None:
            piped.finish()
            if piped.failure is not None:
                raise piped.failure
    finally:
        if process.poll() is None:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(process.pid, sig)
                except ProcessLookupError:
                    break
                try:
                    process.wait(timeout=10)
                    break
                except subprocess.TimeoutExpired:
                    continue


class LogicalRestore:
    """One restore of one logical backup. :meth:`run` does the work and returns a result dict.

    ``journal`` (optional): a :class:`pgdr.restore.journal.Journal`, written before each step so
    that a run killed mid-way is healed by the next (the benchmarks run without).
    """

    def __init__(self, *, store, manifest: Manifest, prefix: str, target: PgTarget, connect: Connect,
                 names: RestoreNames, mode: str, tables: tuple[str, ...], workdir: Path, bindir: Path, jobs: int,
                 log: logging.Logger, run_id: str = "", keep_until: str = "", analyze: bool | None = None,
                 journal=None) -> None:
        self.store = store
        self.manifest = manifest
        self.prefix = prefix
        self.target = target
        self.raw_connect = connect
        self.names = names
        self.mode = mode
        self.tables = tables
        self.workdir = workdir
        self.bindir = Path(bindir)
        self.jobs = jobs
        self.log = log
        self.run_id = run_id
        self.keep_until = keep_until
        self.analyze = (mode == "replace") if analyze is None else analyze
        self.journal = journal
        self.appname = journal.appname if journal is not None else f"pgdr restore {secrets.token_hex(6)}"
        self.clock = _Stopwatch()
        self.created: list[tuple[str, int]] = []     # (name, oid) of the databases this restore made
        # a new database is restored under a temporary name: a half-restored one never carries the final name
        self.work_database = (with_suffix(names.target_database, f"_partial_{secrets.token_hex(3)}")
                              if names.work_database == names.target_database else names.work_database)
        self.cleanup_incomplete = False

    # --- helpers ---------------------------------------------------------------------------
    def connect(self, dbname: str):
        """A connection named after this restore, so a later run can end the sessions of a dead one."""
        conn = self.raw_connect(dbname)
        _run(conn, "SELECT set_config('application_name', %s, false)", (self.appname,))
        return conn

    def _admin(self):
        return self.connect(self.maintenance_db)

    @property
    def maintenance_db(self) -> str:
        return "postgres"

    def _tool(self, name: str) -> str:
        return tool_path(self.bindir, name)

    def _env_for(self, dbname: str):
        return libpq_env(dataclasses.replace(self.target, dbname=dbname))

    def _note(self, **fields) -> None:
        if self.journal is not None:
            self.journal.update(**fields)

    # --- the work --------------------------------------------------------------------------
    def run(self) -> dict:
        self.workdir.mkdir(parents=True, exist_ok=False)
        failed = True
        try:
            result = self._run()
            failed = False
        except BaseException:
            self._drop_created()
            raise
        finally:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self._close_journal(failed)
        return result

    def _close_journal(self, failed: bool) -> None:
        if self.journal is None:
            return
        swapping = self.journal.document.get("swap") and self.journal.document.get("step") != "done"
        if failed and swapping:
            # a swap that failed part-way is checked by OID and put right by the heal (the report runs it)
            self.journal.update(step=f"failed during the swap (was: {self.journal.document.get('step')})")
            self.journal.stop()
        elif self.cleanup_incomplete:
            self.journal.update(step=f"failed; cleanup incomplete (was: {self.journal.document.get('step')})")
            self.journal.stop()   # left for the next run to heal
        else:
            self.journal.finish()

    def _drop_created(self) -> None:
        if not self.created:
            return
        try:
            conn = self._admin()
            try:
                for name, oid in list(self.created):
                    drop_if_same(conn, name, oid, self.log)
                    self.created.remove((name, oid))
            finally:
                conn.close()
        except Exception as err:  # noqa: BLE001 - report, but keep the original failure
            self.cleanup_incomplete = True
            self.log.error("could not drop %s after the failed restore: %s",
                           ", ".join(name for name, _ in self.created), safe_error(err))

    def _create_database(self, conn, create: str, name: str) -> None:
        """CREATE DATABASE with an OID chosen (and journalled) first: pgdr knows what it made, by id."""
        for attempt in range(5):
            oid = new_oid()
            self._note(step="creating the database", work={"name": name, "oid": oid})
            try:
                _run(conn, create.rstrip().rstrip(";") + f" OID = {oid};")
            except Exception:
                # that OID is taken (asked of the catalog, not read from the message): pick another
                if attempt < 4 and _one(conn, "SELECT count(*) FROM pg_database WHERE oid = %s", (oid,))[0]:
                    continue
                raise
            self.created.append((name, oid))
            self.log.info("created database %s (oid %d)", name, oid)
            return

    def _run(self) -> dict:
        manifest = self.manifest
        work = self.work_database
        dump_dir = self.workdir / "dump"
        dump_dir.mkdir()
        small = [o for o in manifest.objects if o.role != "table_data"]
        fetched = fetch_whole(self.store, self.prefix, small, self.workdir, self.log)
        # fetch_whole puts dump/* files in dump/, the globals beside it
        globals_path = next((p for name, p in fetched.items() if name.startswith("globals")), None)
        data_objects = [o for o in manifest.objects if o.role == "table_data"]
        if self.mode == "tables":
            data_objects = self._data_objects_for_tables(dump_dir, data_objects)

        conn = self._admin()
        try:
            roles_created = apply_missing_globals(conn, globals_path.read_text(), self.log) if globals_path else []
            create_sql = run_tool([self._tool("pg_restore"), "--create", "--schema-only", "--file=-", str(dump_dir)],
                                  {"PATH": os.environ.get("PATH", "")}, self.log).stdout
            create, after = database_statements(create_sql, manifest.dbname, work)
            if create is None:
                raise RestoreFailed("the dump holds no CREATE DATABASE statement")
            self._create_database(conn, create, work)
        finally:
            conn.close()

        since = self.clock.started
        piped = PipedDataFiles(store=self.store, prefix=self.prefix, objects=data_objects, dump_dir=dump_dir,
                               download_dir=self.workdir / "download", workers=max(self.jobs, 2) + 2, log=self.log)
        argv = [self._tool("pg_restore"), "--exit-on-error", f"--jobs={self.jobs}", "--no-password",
                f"--dbname={work}"]
        if self.mode == "tables":
            argv += [f"--use-list={self._tables_list(dump_dir)}"]
        argv.append(str(dump_dir))
        self._note(step="restoring")
        try:
            piped.start()
            with self._env_for(work) as env:
                env["PGAPPNAME"] = self.appname
                _pg_restore(argv, env, piped, self.log,
                            on_start=lambda p: self._note(processes=[process_identity(p.pid)]))
        finally:
            piped.close()
        self._note(step="verifying", processes=[])
        self.log.info("pg_restore done; the downloads had finished after %s s", piped.download_seconds)
        since = self.clock.mark("download_and_restore", since)

        conn = self.connect(work)
        try:
            for statement in after:
                _run(conn, statement)
        finally:
            conn.close()

        if self.mode == "tables":
            return self._finish_tables(since, roles_created, piped)

        found = count_rows(self.connect, work, None, self.jobs)
        problems = compare_counts(manifest.row_counts, found)
        since = self.clock.mark("verify", since)
        if problems:
            raise RestoreFailed(f"restored row counts differ from the manifest: {_describe(problems)}")
        self.log.info("verified: all %d tables have the manifest's row counts (%d rows)", len(found),
                      sum(found.values()))
        if self.analyze:
            with self._env_for(work) as env:
                env["PGAPPNAME"] = self.appname
                run_tool([self._tool("vacuumdb"), "--analyze-only", f"--jobs={self.jobs}", "--no-password",
                          f"--dbname={work}"], env, self.log)
            since = self.clock.mark("analyze", since)
        size = self._database_size(work)
        if self.mode == "replace":
            self._swap()
            self.clock.mark("swap", since)
        elif work != self.names.target_database:
            self._rename_to_final(work)
        return self._result(found, roles_created, piped, size)

    def _rename_to_final(self, work: str) -> None:
        """The verified database takes its final name (refused, and dropped, if the name was taken since)."""
        final = self.names.target_database
        self._note(step="renaming to the final name")
        conn = self._admin()
        try:
            _run(conn, f"ALTER DATABASE {_quote(work)} RENAME TO {_quote(final)}")
        finally:
            conn.close()
        self.created = [(name, oid) for name, oid in self.created if name != work]
        self._note(step="done")
        self.log.info("verified database %s renamed to its final name %s", work, final)

    def _database_size(self, name: str) -> int:
        conn = self._admin()
        try:
            return int(_one(conn, "SELECT pg_database_size(%s)", (name,))[0])
        finally:
            conn.close()

    def _result(self, found: dict[str, int], roles_created: list[str], piped: PipedDataFiles, size: int) -> dict:
        return {
            "mode": self.mode, "backup_id": self.manifest.backup_id, "database": self.manifest.database,
            "source_dbname": self.manifest.dbname, "target_conn_id": self.target.conn_id,
            "target_server": f"{self.target.host}:{self.target.port}",
            "target_database": self.names.target_database, "kept_database": self.names.kept_database,
            "recovered_schema": self.names.recovered_schema,
            "tables": len(found), "rows": sum(found.values()), "row_counts_match": True,
            "roles_created": roles_created, "downloaded_bytes": piped.progress.done,
            "restored_raw_bytes": piped.fed_bytes, "database_size_bytes": size,
            "seconds": {**self.clock.marks, "download": piped.download_seconds or 0.0, "total": self.clock.total},
        }

    # --- tables mode -----------------------------------------------------------------------
    def _listing(self, dump_dir: Path) -> list[str]:
        listing = run_tool([self._tool("pg_restore"), "--list", str(dump_dir)],
                           {"PATH": os.environ.get("PATH", "")}, self.log).stdout
        return listing.splitlines()

    def _data_objects_for_tables(self, dump_dir: Path, data_objects):
        wanted_ids = set()
        for line in self._listing(dump_dir):
            match = re.match(r"^(\d+); \d+ \d+ TABLE DATA (\S+) (\S+) ", line)
            if match and f"{match.group(2)}.{match.group(3)}" in self.tables:
                wanted_ids.add(match.group(1))
        return [o for o in data_objects if o.name.split("/")[-1].split(".")[0] in wanted_ids]

    def _tables_list(self, dump_dir: Path) -> Path:
        """Everything pre-data (types, sequences, tables) plus the data of the chosen tables."""
        kept = []
        for line in self._listing(dump_dir):
            if not line or line.startswith(";"):
                continue
            data = re.match(r"^\d+; \d+ \d+ TABLE DATA (\S+) (\S+) ", line)
            if data:
                if f"{data.group(1)}.{data.group(2)}" in self.tables:
                    kept.append(line)
                continue
            entry_type = re.match(r"^\d+; \d+ \d+ (\S+(?: \S+)?) ", line)
            if entry_type and entry_type.group(1).split(" ")[0] in _PRE_DATA_TYPES:
                kept.append(line)
        path = self.workdir / "tables.list"
        path.write_text("\n".join(kept) + "\n")
        return path

    def _finish_tables(self, since: float, roles_created: list[str], piped: PipedDataFiles) -> dict:
        expected = {t: self.manifest.row_counts[t] for t in self.tables}
        scratch = self.work_database
        found = count_rows(self.connect, scratch, list(self.tables), self.jobs)
        problems = compare_counts(expected, found)
        if problems:
            raise RestoreFailed(f"restored row counts differ from the manifest: {_describe(problems)}")
        schema = self.names.recovered_schema
        self._note(step="moving the tables")
        moved = move_tables(source=dataclasses.replace(self.target, dbname=scratch), source_connect=self.connect,
                            target=self.target, target_connect=self.connect,
                            target_database=self.names.target_database, tables=self.tables, schema=schema,
                            expected=expected, bindir=self.bindir, jobs=self.jobs, log=self.log,
                            before_check=lambda: self._drop_scratch_now(scratch))
        self._note(step="done")
        self.clock.mark("verify", since)
        return self._result(moved, roles_created, piped, 0)

    def _drop_scratch_now(self, scratch: str) -> None:
        conn = self._admin()
        try:
            for name, oid in [c for c in self.created if c[0] == scratch]:
                drop_if_same(conn, name, oid, self.log)
                self.created.remove((name, oid))
        finally:
            conn.close()

    # --- replace ---------------------------------------------------------------------------
    def _swap(self) -> None:
        """Rename the live database away and the restored one into its place, inside a short window.

        Each step is journalled before it is taken (the heal of a killed run reads where each
        database is by OID and rolls back, or finishes once the restored copy holds the live name);
        the kept database is recorded in S3 by OID and name, which is what lets it be dropped later.
        """
        live, incoming, kept = self.names.target_database, self.work_database, self.names.kept_database
        incoming_oid = next(oid for name, oid in self.created if name == incoming)
        conn = self._admin()
        try:
            live_oid, allowed = _one(conn, "SELECT oid::bigint, datallowconn FROM pg_database WHERE datname = %s",
                                     (live,))
            swap = {"live": live, "live_oid": int(live_oid), "kept": kept, "allowed": bool(allowed),
                    "server": f"{self.target.host}:{self.target.port}"}
            self._note(step="swap: refusing connections to the live database", swap=swap)
            window = time.monotonic()
            _run(conn, f"ALTER DATABASE {_quote(live)} WITH ALLOW_CONNECTIONS false")
            try:
                ended = _one(conn, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                                   "WHERE datname = %s AND pid <> pg_backend_pid()", (live,))[0]
                for _ in range(100):
                    if not _one(conn, "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (live,))[0]:
                        break
                    time.sleep(0.05)
                self._note(step="swap: renaming the live database away")
                _run(conn, f"ALTER DATABASE {_quote(live)} RENAME TO {_quote(kept)}")
            except BaseException:
                _run(conn, f"ALTER DATABASE {_quote(live)} WITH ALLOW_CONNECTIONS {str(bool(allowed)).lower()}")
                raise
            try:
                self._note(step="swap: renaming the restored copy into place")
                _run(conn, f"ALTER DATABASE {_quote(incoming)} RENAME TO {_quote(live)}")
            except BaseException:
                # put the live database back as it was; the incoming copy is dropped as a failed restore
                _run(conn, f"ALTER DATABASE {_quote(kept)} RENAME TO {_quote(live)}")
                _run(conn, f"ALTER DATABASE {_quote(live)} WITH ALLOW_CONNECTIONS {str(bool(allowed)).lower()}")
                raise
            self.created.remove((incoming, incoming_oid))
            seconds = time.monotonic() - window
            record_replaced(self.store, database=self.manifest.database, target_conn_id=self.target.conn_id,
                            server=swap["server"], kept=kept, oid=int(live_oid), live=live, run_id=self.run_id,
                            backup_id=self.manifest.backup_id, keep_until=self.keep_until)
            self._note(step="swap: connections to the kept database")
            _run(conn, f"ALTER DATABASE {_quote(kept)} WITH ALLOW_CONNECTIONS {str(bool(allowed)).lower()}")
            self._note(step="done")
        finally:
            conn.close()
        self.log.info("swapped in %.2f s: %s is now the restored backup %s; the old database is kept as %s "
                      "(oid %s, recorded in S3) until %s (%d connection(s) ended)", seconds, live,
                      self.manifest.backup_id, kept, live_oid, self.keep_until, ended)


def move_tables(*, source: PgTarget, source_connect: Connect, target: PgTarget, target_connect: Connect,
                target_database: str, tables: tuple[str, ...], schema: str, expected: dict[str, int], bindir: Path,
                jobs: int, log: logging.Logger, before_check: Callable[[], None] | None = None) -> dict[str, int]:
    """Move ``tables`` of a disposable database (``source``) into schema ``schema`` of the target database.

    They arrive without owners or grants, in one transaction: only the restoring role (and
    superusers) can read the recovered rows until someone decides otherwise. The counts in
    the target are compared with ``expected``; a difference drops the schema again.
    """
    conn = source_connect(source.dbname)
    try:
        _run(conn, f"CREATE SCHEMA {_quote(schema)}")
        for table in tables:
            table_schema, name = table.split(".", 1)
            _run(conn, f"ALTER TABLE {_quote(table_schema)}.{_quote(name)} SET SCHEMA {_quote(schema)}")
    finally:
        conn.close()
    target_db = dataclasses.replace(target, dbname=target_database)
    with libpq_env(source) as dump_env, libpq_env(target_db) as restore_env:
        dump = subprocess.Popen([tool_path(bindir, "pg_dump"), "--format=custom", "--compress=0", "--no-password",
                                 f"--schema={schema}", source.dbname], env=dump_env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        try:
            restore = subprocess.run([tool_path(bindir, "pg_restore"), "--exit-on-error", "--no-owner", "--no-acl",
                                      "--single-transaction", "--no-password", f"--dbname={target_database}"],
                                     stdin=dump.stdout, env=restore_env, capture_output=True, text=True)
        finally:
            dump.stdout.close()
            dump_errors = dump.stderr.read().decode(errors="replace")
            dump.wait()
    if dump.returncode != 0:
        raise RestoreFailed(f"pg_dump of the recovered tables failed: {stderr_tail(dump_errors)}")
    if restore.returncode != 0:
        raise RestoreFailed(f"moving the recovered tables into {target_database} failed (nothing was changed "
                            f"there): {stderr_tail(restore.stderr)}")
    if before_check is not None:
        before_check()
    moved = count_rows(target_connect, target_database, list(tables), jobs,
                       schema_map={t.split(".", 1)[0]: schema for t in tables})
    problems = compare_counts(expected, moved)
    if problems:
        conn = target_connect(target_database)
        try:
            _run(conn, f"DROP SCHEMA {_quote(schema)} CASCADE")
        finally:
            conn.close()
        raise RestoreFailed(f"recovered tables in {schema} differed from what was restored, so the schema was "
                            f"dropped again: {_describe(problems)}")
    log.info("recovered %d table(s) into %s.%s: %s", len(moved), target_database, schema,
             ", ".join(f"{t} ({n} rows)" for t, n in moved.items()))
    return moved


# pg_restore --list entry types restored before the data in tables mode
_PRE_DATA_TYPES = {"SCHEMA", "EXTENSION", "TYPE", "DOMAIN", "FUNCTION", "PROCEDURE", "AGGREGATE", "SEQUENCE",
                   "TABLE", "DEFAULT", "COLLATION", "CONVERSION", "OPERATOR", "SHELL"}


def _describe(problems: list[dict], limit: int = 5) -> str:
    text = "; ".join(f"{p['table']}: {p['problem']} (manifest {p['expected']}, found {p.get('found', 'none')})"
                     for p in problems[:limit])
    return text + (f"; and {len(problems) - limit} more" if len(problems) > limit else "")
