"""A logical backup: pg_dump (directory format, parallel) plus the cluster's globals.

Why this shape (measured, see docs/backup-format.md): pg_dump's built-in gzip is
single-threaded and dominates the time of ``pg_dump -Fc``. The directory format
dumps tables in parallel (``-j``) and is the format pg_restore restores in
parallel; we dump it uncompressed and compress each file with zstd afterwards,
which is both faster and smaller than gzip. ``toc.dat`` stays uncompressed so
``pg_restore --list`` works on it directly.

Row counts come from the very snapshot pg_dump uses: we export a snapshot from a
REPEATABLE READ transaction, hand it to pg_dump with ``--snapshot`` and count
every table inside that transaction. The dump's own line counts must agree.
"""

from __future__ import annotations

import logging
import re
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pgdr.compression import SUFFIX, CompressedFile, compress_file, compress_stream
from pgdr.manifest import utc_now_iso
from pgdr.pgtools import PgTarget, PgToolError, libpq_env, run_tool, stderr_tail, tool_path, tool_version
from pgdr.progress import DirectoryWatcher, Progress

# pg_try_advisory_lock(key1, key2): 'pgdr' and the logical-backup slot.
LOCK_KEYS = (0x70676472, 1)

COPY_TRAILER_NEWLINES = 3
_TOC_DATA = re.compile(r"^(\d+); \d+ \d+ TABLE DATA (\S+) (\S+) ")


class BackupBusy(RuntimeError):
    """Another pgdr backup of the same database holds the lock."""


class RowVisibilityError(RuntimeError):
    """The backup role cannot see every row (row-level security)."""


@dataclass(frozen=True)
class DumpedFile:
    name: str            # relative to the backup directory, e.g. dump/3456.dat.zst
    path: Path
    role: str
    compression: str
    raw_size: int
    digest: object       # pgdr.digest.Digest


@dataclass
class LogicalDump:
    started_at: str
    finished_at: str
    server_version: str
    server_version_num: int
    system_identifier: str | None
    snapshot_id: str
    row_counts: dict[str, int]
    files: list[DumpedFile]
    tool_versions: dict[str, str]
    jobs: int
    level: int
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def raw_size(self) -> int:
        return sum(f.raw_size for f in self.files)

    @property
    def stored_size(self) -> int:
        return sum(f.digest.size for f in self.files)


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _server_facts(cur) -> tuple[str, int, str | None]:
    cur.execute("SELECT current_setting('server_version'), current_setting('server_version_num')::int")
    version, version_num = cur.fetchone()
    # Without EXECUTE on pg_control_system() the identifier is recorded as unknown.
    cur.execute(
        "SELECT CASE WHEN has_function_privilege('pg_control_system()', 'EXECUTE') "
        "THEN (SELECT system_identifier::text FROM pg_control_system()) END"
    )
    (system_identifier,) = cur.fetchone()
    return version, version_num, system_identifier


def _check_row_visibility(cur) -> None:
    """Refuse early when RLS would hide rows from this role (pg_dump would fail late)."""
    cur.execute("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user")
    (bypasses,) = cur.fetchone()
    if bypasses:
        return
    cur.execute(
        """
        SELECT n.nspname || '.' || c.relname
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind IN ('r', 'p') AND c.relrowsecurity
          AND NOT pg_has_role(current_user, c.relowner, 'USAGE')
        ORDER BY 1
        """
    )
    hidden = [row[0] for row in cur.fetchall()]
    if hidden:
        raise RowVisibilityError(
            "the backup role has neither BYPASSRLS nor ownership of tables with row-level security "
            f"({', '.join(hidden[:10])}); a dump would miss rows. Grant BYPASSRLS to the backup role."
        )


def _user_tables(cur) -> list[tuple[str, str]]:
    cur.execute(
        """
        SELECT n.nspname, c.relname
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'r'
          AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname NOT LIKE 'pg\\_toast%%' AND n.nspname NOT LIKE 'pg\\_temp%%'
          AND NOT EXISTS (SELECT 1 FROM pg_depend d
                          WHERE d.classid = 'pg_class'::regclass AND d.objid = c.oid AND d.deptype = 'e')
        ORDER BY 1, 2
        """
    )
    return [tuple(row) for row in cur.fetchall()]


def _table_data_entries(toc_listing: str) -> dict[str, str]:
    """dump id -> "schema.table" for every TABLE DATA entry of ``pg_restore --list``."""
    entries = {}
    for line in toc_listing.splitlines():
        match = _TOC_DATA.match(line)
        if match:
            entries[match.group(1)] = f"{match.group(2)}.{match.group(3)}"
    return entries


class LogicalBackup:
    """Takes one logical backup of ``target`` into ``workdir``.

    ``connect`` returns a DB-API connection to the same database as ``target``
    (the operator passes PostgresHook.get_conn). The advisory lock that keeps two
    backups of one database apart is held from :meth:`run` until :meth:`close`.
    """

    def __init__(self, *, target: PgTarget, connect: Callable[[], object], workdir: Path, bindir: Path,
                 jobs: int, level: int, part_size: int, include_role_passwords: bool,
                 log: logging.Logger) -> None:
        self.target = target
        self.connect = connect
        self.workdir = workdir
        self.bindir = bindir
        self.jobs = jobs
        self.level = level
        self.part_size = part_size
        self.include_role_passwords = include_role_passwords
        self.log = log
        self._conn = None

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def __enter__(self) -> "LogicalBackup":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _open_session(self):
        try:
            conn = self.connect()
        except Exception as err:  # the driver's message names host and user, never the password
            raise PgToolError(f"cannot connect to {self.target.describe()}: {stderr_tail(str(err), 3)}") from None
        conn.autocommit = True
        self._conn = conn
        cur = conn.cursor()
        cur.execute("SELECT pg_try_advisory_lock(%s, %s)", LOCK_KEYS)
        if not cur.fetchone()[0]:
            raise BackupBusy(f"another pgdr backup of {self.target.describe()} is running; refusing to start a second one")
        return cur

    def run(self) -> LogicalDump:
        started_at = utc_now_iso()
        seconds: dict[str, float] = {}
        cur = self._open_session()
        version, version_num, system_identifier = _server_facts(cur)
        _check_row_visibility(cur)
        tools = {name: tool_version(self.bindir, name) for name in ("pg_dump", "pg_dumpall", "pg_restore")}

        dump_dir = self.workdir / "dump"
        self.workdir.mkdir(parents=True, exist_ok=True)
        cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        cur.execute("SET LOCAL row_security = off")
        cur.execute("SELECT pg_export_snapshot()")
        (snapshot_id,) = cur.fetchone()
        self.log.info("exported snapshot %s; dumping %s with %d jobs", snapshot_id, self.target.describe(), self.jobs)

        with libpq_env(self.target) as env:
            argv = [tool_path(self.bindir, "pg_dump"), "--format=directory", f"--jobs={self.jobs}",
                    "--compress=0", f"--snapshot={snapshot_id}", "--no-sync",
                    f"--file={dump_dir}", self.target.dbname]
            progress = Progress("pg_dump", self.log)
            self.log.info("running %s", " ".join(["pg_dump", *argv[1:-1]]))
            process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
            stderr_holder: list[str] = []
            reader = threading.Thread(target=lambda: stderr_holder.append(process.stderr.read()), daemon=True)
            reader.start()
            try:
                with DirectoryWatcher(dump_dir, progress):
                    tables = _user_tables(cur)
                    row_counts = {}
                    for schema, table in tables:
                        cur.execute(f"SELECT count(*) FROM ONLY {_quote_ident(schema)}.{_quote_ident(table)}")
                        row_counts[f"{schema}.{table}"] = cur.fetchone()[0]
                    returncode = process.wait()
            except BaseException:
                process.kill()
                process.wait()
                raise
            reader.join()
            cur.execute("COMMIT")
            if returncode != 0:
                raise PgToolError(f"pg_dump failed (exit {returncode}): {stderr_tail(''.join(stderr_holder))}")
            seconds["dump"] = progress.elapsed
            progress.finish()

            listing = run_tool([tool_path(self.bindir, "pg_restore"), "--list", str(dump_dir)], env, self.log).stdout
            data_entries = _table_data_entries(listing)
            if not listing.strip():
                raise PgToolError("pg_restore --list found no entries in the dump")
            self.log.info("pg_restore --list: %d entries, %d with table data",
                          sum(1 for line in listing.splitlines() if line and not line.startswith(";")),
                          len(data_entries))

            globals_file = self._dump_globals(env)

        files = self._compress_dump(dump_dir, data_entries, row_counts, seconds)
        files.append(globals_file)
        finished_at = utc_now_iso()
        return LogicalDump(
            started_at=started_at, finished_at=finished_at, server_version=version,
            server_version_num=version_num, system_identifier=system_identifier, snapshot_id=snapshot_id,
            row_counts=row_counts, files=files, tool_versions=tools, jobs=self.jobs, level=self.level,
            seconds=seconds,
        )

    def _dump_globals(self, env: dict[str, str]) -> DumpedFile:
        argv = [tool_path(self.bindir, "pg_dumpall"), "--globals-only", f"--database={self.target.dbname}"]
        if not self.include_role_passwords:
            argv.append("--no-role-passwords")
        self.log.info("running %s", " ".join(["pg_dumpall", *argv[1:]]))
        target = self.workdir / f"globals.sql{SUFFIX}"
        process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        errors: list[bytes] = []
        reader = threading.Thread(target=lambda: errors.append(process.stderr.read()), daemon=True)
        reader.start()
        compressed = compress_stream(process.stdout, target, self.level, self.part_size)
        returncode = process.wait()
        reader.join()
        if returncode != 0:
            raise PgToolError(f"pg_dumpall failed (exit {returncode}): {stderr_tail(b''.join(errors).decode(errors='replace'))}")
        return DumpedFile("globals.sql" + SUFFIX, target, "globals", "zstd", compressed.raw_size, compressed.digest)

    def _compress_dump(self, dump_dir: Path, data_entries: dict[str, str], row_counts: dict[str, int],
                       seconds: dict[str, float]) -> list[DumpedFile]:
        sources = sorted((p for p in dump_dir.iterdir() if p.is_file()), key=lambda p: -p.stat().st_size)
        total = sum(p.stat().st_size for p in sources)
        progress = Progress("compress (zstd)", self.log, total=total)

        def one(source: Path) -> tuple[Path, CompressedFile | None]:
            if source.name == "toc.dat":
                return source, None
            target = source.with_name(source.name + SUFFIX)
            result = compress_file(source, target, self.level, self.part_size, progress=progress)
            source.unlink()
            return source, result

        with ThreadPoolExecutor(max_workers=self.jobs) as pool:
            results = list(pool.map(one, sources))
        seconds["compress"] = progress.elapsed
        progress.finish()

        from pgdr.digest import file_digest

        files = []
        mismatches = []
        for source, compressed in results:
            if compressed is None:
                digest = file_digest(source, self.part_size)
                files.append(DumpedFile(f"dump/{source.name}", source, "toc", "none", digest.size, digest))
                continue
            dump_id = source.name.split(".")[0]
            table = data_entries.get(dump_id)
            if table is not None and table in row_counts:
                # COPY text format, one line per row; pg_dump 15 ends each data file with "\\.\n\n\n"
                dumped_rows = max(compressed.newlines - COPY_TRAILER_NEWLINES, 0)
                if dumped_rows != row_counts[table]:
                    mismatches.append(f"{table}: dump holds {dumped_rows} rows, snapshot count {row_counts[table]}")
            files.append(DumpedFile(f"dump/{compressed.path.name}", compressed.path, "table_data", "zstd",
                                    compressed.raw_size, compressed.digest))
        if mismatches:
            raise PgToolError("the dump does not match the snapshot's row counts: " + "; ".join(mismatches[:5]))
        return files
