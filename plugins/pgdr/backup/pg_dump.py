"""A logical backup: pg_dump (directory format, parallel) plus the cluster's globals.

Why this shape (measured, see docs/backup-format.md): pg_dump's built-in gzip is
single-threaded and dominates the time of ``pg_dump -Fc``. The directory format
dumps tables in parallel (``-j``) and is the format pg_restore restores in
parallel. We let pg_dump write it uncompressed and compress each table's file
with zstd *while pg_dump is still writing it* (the file is followed as it grows;
inotify says when pg_dump has closed it), handing each finished file on at once
so its upload overlaps the rest of the dump. ``toc.dat`` stays uncompressed so
``pg_restore --list`` works on it directly.

Row counts are exact and from the very snapshot the dump used: every table's
data file is COPY text, one line per row, and the lines are counted while the
file is compressed. The snapshot is exported from our own REPEATABLE READ
transaction and handed to pg_dump with ``--snapshot``, so the set of tables we
expect and the data pg_dump writes come from the same moment.
"""

from __future__ import annotations

import logging
import queue
import re
import subprocess
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from pgdr.backup.fswatch import DirectoryWatch
from pgdr.backup.upload import StagedFile, discard_dead_partials
from pgdr.core import sqlfiles as sql
from pgdr.core.checksums import file_digest
from pgdr.core.compression import SUFFIX, compress_growing_file, compress_stream
from pgdr.core.pgtools import (
    LockedSession,
    PgTarget,
    PgToolError,
    die_with_worker,
    libpq_env,
    run_tool,
    server_facts,
    stderr_tail,
    tool_path,
    tool_version,
    tools_for,
)
from pgdr.core.progress import Progress, human_bytes
from pgdr.errors import Refused
from pgdr.store.manifest import utc_now_iso

__all__ = ["LOCK_KEYS", "LogicalBackup", "LogicalDump", "RowVisibilityError"]

# pg_try_advisory_lock(key1, key2): 'pgdr' and the logical-backup slot.
LOCK_KEYS = (0x70676472, 1)

COPY_TRAILER_NEWLINES = 3
_TOC_DATA = re.compile(r"^(\d+); \d+ (\d+) TABLE DATA ")


class RowVisibilityError(Refused, RuntimeError):
    """The backup role cannot see every row (row-level security)."""


@dataclass
class LogicalDump:
    started_at: str
    finished_at: str
    server_version: str
    server_version_num: int
    system_identifier: str | None
    snapshot_id: str
    row_counts: dict[str, int]
    files: list[StagedFile]
    tool_versions: dict[str, str]
    jobs: int
    level: int
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def raw_size(self) -> int:
        return sum(f.raw_size for f in self.files)


def _quote_ident(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _check_row_visibility(cur) -> None:
    """Refuse early when RLS would hide rows from this role (pg_dump would fail late)."""
    cur.execute("SELECT rolsuper OR rolbypassrls FROM pg_roles WHERE rolname = current_user")
    (bypasses,) = cur.fetchone()
    if bypasses:
        return
    cur.execute(sql.load("backup_rls_hidden_tables"))
    hidden = [row[0] for row in cur.fetchall()]
    if hidden:
        raise RowVisibilityError(
            "the backup role has neither BYPASSRLS nor ownership of tables with row-level security "
            f"({', '.join(hidden[:10])}); a dump would miss rows. Grant BYPASSRLS to the backup role."
        )


def _user_tables(cur) -> dict[int, str]:
    """oid -> "schema.table" for every ordinary table outside the system schemas and extensions."""
    cur.execute(sql.load("backup_user_tables"))
    return {int(oid): name for oid, name in cur.fetchall()}


def _table_data_entries(toc_listing: str) -> dict[str, int]:
    """dump id -> table oid for every TABLE DATA entry of ``pg_restore --list``.

    Lines read ``<dump id>; <catalog tableoid> <oid> TABLE DATA <schema> <name> <owner>``;
    the oid is used rather than the names, which are printed unquoted.
    """
    entries = {}
    for line in toc_listing.splitlines():
        match = _TOC_DATA.match(line)
        if match:
            entries[match.group(1)] = int(match.group(2))
    return entries


class LogicalBackup(LockedSession):
    """Takes one logical backup of ``target`` into ``workdir``.

    ``connect`` returns a DB-API connection to the same database as ``target``
    (the operator passes PostgresHook.get_conn). The advisory lock that keeps two
    backups of one database apart is held from :meth:`run` until :meth:`close`.
    """

    def __init__(self, *, target: PgTarget, connect: Callable[[], object], workdir: Path, bindir: Path,
                 jobs: int, level: int, part_size: int, include_role_passwords: bool, log: logging.Logger,
                 on_file: Callable[[StagedFile], None] | None = None) -> None:
        self.target = target
        self.connect = connect
        self.workdir = workdir
        self.bindir = bindir
        self.jobs = jobs
        self.level = level
        self.part_size = part_size
        self.include_role_passwords = include_role_passwords
        self.log = log
        self.on_file = on_file  # called with each finished file, from worker threads, as soon as it is ready
        self._conn = None

    def _open_session(self):
        # with the lock held no other logical backup of this database runs: what is left is a dead run's
        return self.open_locked_session(LOCK_KEYS, "backup",
                                        on_locked=lambda: discard_dead_partials(self.workdir, "backup", self.log))

    def run(self) -> LogicalDump:
        started_at = utc_now_iso()
        seconds: dict[str, float] = {}
        cur = self._open_session()
        version, version_num, system_identifier = server_facts(cur)
        _check_row_visibility(cur)
        # the tools of this server's major (or newer), chosen now that its version is known
        self.bindir = tools_for(self.bindir, version_num, ("pg_dump", "pg_dumpall", "pg_restore"))
        tools = {name: tool_version(self.bindir, name) for name in ("pg_dump", "pg_dumpall", "pg_restore")}

        dump_dir = self.workdir / "dump"
        self.workdir.mkdir(mode=0o700, exist_ok=True)  # the dump holds health records: this user only
        dump_dir.mkdir(mode=0o700)
        cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        cur.execute("SET LOCAL row_security = off")
        cur.execute("SELECT pg_export_snapshot()")
        (snapshot_id,) = cur.fetchone()
        tables = _user_tables(cur)
        self.log.info("exported snapshot %s; dumping %s (%d tables) with %d jobs", snapshot_id,
                      self.target.describe(), len(tables), self.jobs)

        with libpq_env(self.target) as env:
            argv = [tool_path(self.bindir, "pg_dump"), "--format=directory", f"--jobs={self.jobs}",
                    "--compress=0", f"--snapshot={snapshot_id}", "--no-sync",
                    f"--file={dump_dir}", self.target.dbname]
            # the globals are small and independent of the snapshot: dump them alongside
            globals_pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="pgdr-globals")
            globals_future = globals_pool.submit(self._dump_globals, env)
            try:
                compressed = self._dump_and_compress(argv, env, dump_dir, seconds)
            finally:
                globals_pool.shutdown(wait=True)
            cur.execute("COMMIT")

            listing = run_tool([tool_path(self.bindir, "pg_restore"), "--list", str(dump_dir)], env, self.log).stdout
            if not listing.strip():
                raise PgToolError("pg_restore --list found no entries in the dump")
            data_entries = _table_data_entries(listing)
            self.log.info("pg_restore --list: %d entries, %d with table data",
                          sum(1 for line in listing.splitlines() if line and not line.startswith(";")),
                          len(data_entries))
            # toc.dat, and anything else pg_dump wrote (blobs.toc for large objects), travel as they are
            handled = {f.path.name for f, _ in compressed.values()}
            tail_files = [self._as_is(path, "toc" if path.name == "toc.dat" else "other")
                          for path in sorted(dump_dir.iterdir()) if path.is_file() and path.name not in handled]
            tail_files.append(globals_future.result())
            for dumped in tail_files:
                self._hand_on(dumped)

        row_counts = _row_counts(compressed, data_entries, tables)
        files = [f for f, _ in compressed.values()] + tail_files
        return LogicalDump(
            started_at=started_at, finished_at=utc_now_iso(), server_version=version,
            server_version_num=version_num, system_identifier=system_identifier, snapshot_id=snapshot_id,
            row_counts=row_counts, files=files, tool_versions=tools, jobs=self.jobs, level=self.level,
            seconds=seconds,
        )

    def _as_is(self, path: Path, role: str) -> StagedFile:
        digest = file_digest(path, self.part_size)
        return StagedFile(f"dump/{path.name}", path, role, "none", digest.size, digest)

    def _hand_on(self, dumped: StagedFile) -> None:
        if self.on_file is not None:
            self.on_file(dumped)

    def _dump_and_compress(self, argv: list[str], env: dict[str, str], dump_dir: Path,
                           seconds: dict[str, float]) -> dict[str, tuple[StagedFile, int]]:
        """Run pg_dump and compress each table file as it is written; returns dump id -> (file, rows)."""
        watch = DirectoryWatch(dump_dir)
        dumped = Progress("pg_dump + zstd", self.log)
        results: dict[str, tuple[StagedFile, int]] = {}

        def follow(name: str) -> None:
            source = dump_dir / name
            target = source.with_name(name + SUFFIX)
            result = compress_growing_file(source, target, self.level, self.part_size,
                                           is_finished=lambda: watch.is_finished(name), progress=dumped)
            source.unlink()
            rows = max(result.newlines - COPY_TRAILER_NEWLINES, 0)
            dumped_file = StagedFile(f"dump/{target.name}", target, "table_data", "zstd", result.raw_size,
                                     result.digest)
            results[name.split(".")[0]] = (dumped_file, rows)
            self._hand_on(dumped_file)

        self.log.info("running %s", " ".join(["pg_dump", *argv[1:-1]]))
        process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                   preexec_fn=die_with_worker)
        stderr_holder: list[str] = []
        reader = threading.Thread(target=lambda: stderr_holder.append(process.stderr.read()), daemon=True)
        reader.start()
        # pg_dump -jN has at most N data files open at once; one more thread keeps up with the next
        pool = ThreadPoolExecutor(max_workers=self.jobs + 1, thread_name_prefix="pgdr-zstd")
        futures = []
        submitted: set[str] = set()

        def submit(name: str) -> None:
            if name.endswith(".dat") and name != "toc.dat" and name not in submitted:
                submitted.add(name)
                futures.append(pool.submit(follow, name))

        try:
            while True:
                exited = process.poll() is not None
                if exited:
                    watch.writer_exited.set()
                try:
                    while True:
                        submit(watch.created.get(timeout=0 if exited else 0.05))
                except queue.Empty:
                    pass
                for future in [f for f in futures if f.done()]:
                    future.result()  # a compression error stops the dump at once
                if exited:
                    break
            # files pg_dump created just before it exited may not have been reported yet
            for path in sorted(dump_dir.glob("*.dat")):
                submit(path.name)
            reader.join()
            if process.returncode != 0:
                raise PgToolError(f"pg_dump failed (exit {process.returncode}): {stderr_tail(''.join(stderr_holder))}")
            for future in futures:
                future.result()
        except BaseException:
            if process.poll() is None:
                process.kill()
                process.wait()
            watch.writer_exited.set()
            raise
        finally:
            pool.shutdown(wait=True, cancel_futures=True)
            watch.close()
        seconds["dump_and_compress"] = dumped.elapsed
        raw = sum(f.raw_size for f, _ in results.values())
        stored = sum(f.digest.size for f, _ in results.values())
        self.log.info("%s; zstd -%d: %s -> %s (%.1fx); followed writes with %s", dumped.finish(), self.level,
                      human_bytes(raw), human_bytes(stored), raw / max(stored, 1),
                      "inotify" if watch.uses_inotify else "polling")
        return results

    def _dump_globals(self, env: dict[str, str]) -> StagedFile:
        argv = [tool_path(self.bindir, "pg_dumpall"), "--globals-only", f"--database={self.target.dbname}"]
        if not self.include_role_passwords:
            argv.append("--no-role-passwords")
        self.log.info("running %s", " ".join(["pg_dumpall", *argv[1:]]))
        target = self.workdir / f"globals.sql{SUFFIX}"
        process = subprocess.Popen(argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   preexec_fn=die_with_worker)
        errors: list[bytes] = []
        reader = threading.Thread(target=lambda: errors.append(process.stderr.read()), daemon=True)
        reader.start()
        compressed = compress_stream(process.stdout, target, self.level, self.part_size)
        returncode = process.wait()
        reader.join()
        if returncode != 0:
            stderr = b"".join(errors).decode(errors="replace")
            raise PgToolError(f"pg_dumpall failed (exit {returncode}): {stderr_tail(stderr)}")
        return StagedFile("globals.sql" + SUFFIX, target, "globals", "zstd", compressed.raw_size, compressed.digest)


def _row_counts(compressed: dict[str, tuple[StagedFile, int]], data_entries: dict[str, int],
                tables: dict[int, str]) -> dict[str, int]:
    """Every user table's row count, from its data file; a table without data in the dump is an error."""
    counts = {}
    for dump_id, oid in data_entries.items():
        if oid in tables:
            if dump_id not in compressed:
                raise PgToolError(f"the TOC lists data for {tables[oid]} but pg_dump wrote no file {dump_id}.dat")
            counts[tables[oid]] = compressed[dump_id][1]
    missing = sorted(set(tables.values()) - set(counts))
    if missing:
        raise PgToolError(f"the dump holds no data entry for {len(missing)} table(s): {', '.join(missing[:10])}")
    return dict(sorted(counts.items()))
