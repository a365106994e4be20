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
killed mid-restore is healed by the next run. The download overlaps pg_restore (see :mod:`pgdr.restore.fetch`);
the swap is :mod:`pgdr.restore.swap`, the table filtering and row counts :mod:`pgdr.restore.tables`.
"""

from __future__ import annotations

import dataclasses
import logging
import os
import secrets
import shutil
import signal
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pgdr.core.pgtools import PgTarget, PgToolError, libpq_env, run_tool, stderr_tail, tool_path
from pgdr.core.redaction import safe_error
from pgdr.restore.fetch import PipedDataFiles, fetch_whole
from pgdr.restore.journal import new_oid, process_identity
from pgdr.restore.names import RestoreNames, with_suffix
from pgdr.restore.sql_rewrite import apply_missing_globals, database_statements, quote_ident
from pgdr.restore.swap import drop_if_same, one, record_replaced, run, swap_in
from pgdr.restore.tables import (
    RestoreFailed,
    compare_counts,
    count_rows,
    data_objects_for_tables,
    describe_counts,
    move_tables,
    tables_list,
)
from pgdr.store.manifest import Manifest

Connect = Callable[[str], object]   # database name -> an autocommit DB-API connection


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
        run(conn, "SELECT set_config('application_name', %s, false)", (self.appname,))
        return conn

    def _admin(self):
        return self.connect("postgres")   # the maintenance database: CREATE, RENAME and DROP run from there

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
                run(conn, create.rstrip().rstrip(";") + f" OID = {oid};")
            except Exception:
                # that OID is taken (asked of the catalog, not read from the message): pick another
                if attempt < 4 and one(conn, "SELECT count(*) FROM pg_database WHERE oid = %s", (oid,))[0]:
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
            data_objects = data_objects_for_tables(self._listing(dump_dir), data_objects, self.tables)

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
            use_list = self.workdir / "tables.list"
            use_list.write_text("\n".join(tables_list(self._listing(dump_dir), self.tables)) + "\n")
            argv += [f"--use-list={use_list}"]
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
                run(conn, statement)
        finally:
            conn.close()

        if self.mode == "tables":
            return self._finish_tables(since, roles_created, piped)

        found = count_rows(self.connect, work, None, self.jobs)
        problems = compare_counts(manifest.row_counts, found)
        since = self.clock.mark("verify", since)
        if problems:
            raise RestoreFailed(f"restored row counts differ from the manifest: {describe_counts(problems)}")
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
            run(conn, f"ALTER DATABASE {quote_ident(work)} RENAME TO {quote_ident(final)}")
        finally:
            conn.close()
        self.created = [(name, oid) for name, oid in self.created if name != work]
        self._note(step="done")
        self.log.info("verified database %s renamed to its final name %s", work, final)

    def _database_size(self, name: str) -> int:
        conn = self._admin()
        try:
            return int(one(conn, "SELECT pg_database_size(%s)", (name,))[0])
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
        """The dump's table of contents (``pg_restore --list``), filtered by :mod:`pgdr.restore.tables`."""
        listing = run_tool([self._tool("pg_restore"), "--list", str(dump_dir)],
                           {"PATH": os.environ.get("PATH", "")}, self.log).stdout
        return listing.splitlines()

    def _finish_tables(self, since: float, roles_created: list[str], piped: PipedDataFiles) -> dict:
        expected = {t: self.manifest.row_counts[t] for t in self.tables}
        scratch = self.work_database
        found = count_rows(self.connect, scratch, list(self.tables), self.jobs)
        problems = compare_counts(expected, found)
        if problems:
            raise RestoreFailed(f"restored row counts differ from the manifest: {describe_counts(problems)}")
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
        """The restored copy takes the live name; the live database is kept (:func:`pgdr.restore.swap.swap_in`)."""
        live, incoming, kept = self.names.target_database, self.work_database, self.names.kept_database
        incoming_oid = next(oid for name, oid in self.created if name == incoming)
        server = f"{self.target.host}:{self.target.port}"

        def swapped(live_oid: int) -> None:
            self.created.remove((incoming, incoming_oid))   # it is the live database now: never dropped
            record_replaced(self.store, database=self.manifest.database, target_conn_id=self.target.conn_id,
                            server=server, kept=kept, oid=live_oid, live=live, run_id=self.run_id,
                            backup_id=self.manifest.backup_id, keep_until=self.keep_until)

        conn = self._admin()
        try:
            live_oid, ended, seconds = swap_in(conn, live=live, incoming=incoming, kept=kept, server=server,
                                               note=self._note, swapped=swapped)
        finally:
            conn.close()
        self.log.info("swapped in %.2f s: %s is now the restored backup %s; the old database is kept as %s "
                      "(oid %s, recorded in S3) until %s (%d connection(s) ended)", seconds, live,
                      self.manifest.backup_id, kept, live_oid, self.keep_until, ended)
