"""A physical base backup: pg_basebackup (plain), proved by pg_verifybackup, shipped as one tar.zst.

Why this shape (measured on a 302 MB care-commons database, 342 MB cluster, 2 cores):
pg_basebackup in plain format writes a data directory that pg_verifybackup (PostgreSQL 15)
can check against the backup_manifest, file by file with SHA-256, and parse its WAL; the
tar formats cannot be checked by the 15 tools without unpacking them first. The plain copy
is then streamed into one tar through zstd -1: 94 MB in 3 s, after a 4 s copy and a 0.4 s
verification. pg_basebackup's own ``--compress=server-zstd:1`` takes 2.5 s but stores
111 MB (its WAL tar is not compressed) and cannot be verified before upload; the default
server-zstd (level 3) takes 10 s for 102 MB, client gzip 18 s for 100 MB, server-gzip 22 s
for 117 MB.

On PostgreSQL 17+ the copy may be an incremental one (``pg_basebackup --incremental=<the parent's
backup_manifest>``, from the server's WAL summaries): the caller chooses the parent from what the
server says (:class:`ServerState`); pg_verifybackup checks an incremental plain copy as it checks a full
one (measured with 18.6: exit 0, and 0 on the pg_combinebackup output). An incremental the server cannot
take (summaries missing for the range, a parent of another system) falls back to a full, with the reason.

Nothing leaves the host before pg_verifybackup has passed. The copy's own ``backup_manifest``
travels twice: inside the tar, where pg_verifybackup needs it after a restore, and alone, so
verification can read the backup's file list and WAL range without fetching the tar.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from pgdr.backup.chain import BackupChoice, ServerState, server_state
from pgdr.backup.stored_tar import FIRST_MAJOR as STORED_TAR_MAJOR
from pgdr.backup.stored_tar import verify_stored_tar
from pgdr.backup.upload import StagedFile, discard_dead_partials
from pgdr.core.checksums import Digest, file_digest
from pgdr.core.compression import ArchiveError, TarZstWriter, extract_tar_zst
from pgdr.core.pgtools import (
    LockedSession,
    PgTarget,
    PgToolError,
    die_with_worker,
    libpq_env,
    server_facts,
    stderr_tail,
    tool_path,
    tool_version,
    tools_for,
)
from pgdr.core.progress import Progress, human_bytes
from pgdr.store.manifest import utc_now_iso
from pgdr.wal.names import format_lsn, parse_lsn, segment_for_lsn

# pg_try_advisory_lock(key1, key2): 'pgdr' and the base-backup slot (the logical backup uses 1).
LOCK_KEYS = (0x70676472, 2)

DATA_TAR = "data.tar.zst"
BACKUP_MANIFEST = "backup_manifest"
FORMAT = "pg_basebackup plain -> tar.zst"

_START_WAL = re.compile(r"^START WAL LOCATION: ([0-9A-Fa-f]+/[0-9A-Fa-f]+) \(file ([0-9A-F]{24})\)$",
                        re.MULTILINE)
_START_TIMELINE = re.compile(r"^START TIMELINE: (\d+)$", re.MULTILINE)
_PROGRESS = re.compile(r"(\d+)/(\d+) kB")


class VerificationFailed(PgToolError):
    """pg_verifybackup rejected the copy; nothing was uploaded."""


# pg_basebackup's refusals of an incremental that a full backup does not have (the server's words)
_INCREMENTAL_REFUSED = re.compile(r"summar|incremental|manifest", re.IGNORECASE)


# --- pure helpers: backup_label and backup_manifest (LSNs and WAL names: pgdr.wal.names) ---------


def parse_backup_label(text: str) -> dict:
    start = _START_WAL.search(text)
    timeline = _START_TIMELINE.search(text)
    if not start or not timeline:
        raise PgToolError("the copy's backup_label lacks START WAL LOCATION or START TIMELINE")
    return {"start_lsn": start.group(1), "start_wal_file": start.group(2), "timeline": int(timeline.group(1))}


def manifest_wal_ranges(backup_manifest: dict) -> list[dict]:
    ranges = backup_manifest.get("WAL-Ranges") or []
    if not ranges:
        raise PgToolError("the backup_manifest lists no WAL-Ranges")
    return ranges


def wal_range(label: dict, backup_manifest: dict, segment_size: int, system_identifier: str | None) -> dict:
    """The manifest's ``wal`` entry: what a point-in-time recovery must replay from and through."""
    ranges = manifest_wal_ranges(backup_manifest)
    first, last = ranges[0], ranges[-1]
    start_lsn, end_lsn = parse_lsn(first["Start-LSN"]), parse_lsn(last["End-LSN"])
    if start_lsn != parse_lsn(label["start_lsn"]) or int(first["Timeline"]) != label["timeline"]:
        raise PgToolError(f"backup_label (start {label['start_lsn']} on timeline {label['timeline']}) and "
                          f"backup_manifest (start {first['Start-LSN']} on timeline {first['Timeline']}) disagree")
    if end_lsn < start_lsn:
        raise PgToolError(f"the backup's WAL range ends ({last['End-LSN']}) before it starts ({first['Start-LSN']})")
    end_timeline = int(last["Timeline"])
    wal = {
        "start_lsn": format_lsn(start_lsn),
        "end_lsn": format_lsn(end_lsn),
        "timeline": label["timeline"],
        "start_wal_file": label["start_wal_file"],
        "end_wal_file": segment_for_lsn(end_lsn, end_timeline, segment_size),
        "system_identifier": system_identifier,
        "wal_segment_size": segment_size,
    }
    if end_timeline != label["timeline"]:
        wal["end_timeline"] = end_timeline
    return wal


def manifest_checksum_ok(body: bytes) -> bool:
    """pg_basebackup's Manifest-Checksum: SHA-256 of every byte before that line."""
    import hashlib

    at = body.rfind(b'"Manifest-Checksum"')
    if at < 0:
        return False
    try:
        expected = json.loads(body)["Manifest-Checksum"]
    except (ValueError, KeyError, TypeError):
        return False
    return hashlib.sha256(body[:at]).hexdigest() == expected


# --- the backup ------------------------------------------------------------------------------


@dataclass
class BaseCopy:
    started_at: str
    finished_at: str
    server_version: str
    server_version_num: int
    system_identifier: str | None
    label: str
    wal: dict
    files: list[StagedFile]
    tool_versions: dict[str, str]
    level: int
    cluster_size: int                 # bytes pg_basebackup copied (the plain data directory)
    seconds: dict[str, float] = field(default_factory=dict)
    choice: BackupChoice = field(default_factory=lambda: BackupChoice(None, "incremental backups not asked for"))

    @property
    def raw_size(self) -> int:
        """Bytes of the tar before compression."""
        return next(f.raw_size for f in self.files if f.role == "base_tar")


def tar_zstd(source: Path, target: Path, level: int, part_size: int, log: logging.Logger) -> tuple[int, Digest]:
    """Stream the contents of ``source`` as one tar through zstd into ``target``, hashing the output.

    Members are named relative to ``source`` (``PG_VERSION``, ``base/...``), so
    ``zstd -dc data.tar.zst | tar -x -C <empty dir>`` restores the data directory as it was.
    Returns (tar bytes, digest of the compressed file).
    """
    total = sum(entry.stat().st_size for entry in source.rglob("*") if entry.is_file() and not entry.is_symlink())
    progress = Progress(f"tar + zstd -{level}", log, total=total)
    with open(target, "wb") as handle, TarZstWriter(handle, level, part_size, progress) as archive:
        archive.add_tree(source)
    progress.finish()
    log.info("tar %s -> %s with zstd -%d (%.1fx)", human_bytes(archive.raw_size), human_bytes(archive.digest.size),
             level, archive.raw_size / max(archive.digest.size, 1))
    return archive.raw_size, archive.digest


def _wal_segment(name: str) -> bool:
    """A file inside the copy's pg_wal/ (its streamed WAL), not the directory itself."""
    parts = name.split("/")
    return "pg_wal" in parts[:-1]


def unpack_base_backup(archive: Path, data_dir: Path, *, without_wal: bool = False) -> None:
    """Unpack ``data.tar.zst`` into the new directory ``data_dir`` (0700); a member that would land outside
    it, or an archive cut short or corrupt, is refused (:class:`pgdr.core.compression.ArchiveError`).
    ``without_wal``: the files in pg_wal/ are read and checked but not written (an earlier piece of an
    incremental chain: pg_combinebackup takes the WAL of the newest piece only)."""
    data_dir.mkdir(parents=True, mode=0o700)
    extract_tar_zst(archive, data_dir, skip=_wal_segment if without_wal else None)
    # the tar may hold the data directory itself rather than its contents
    if not (data_dir / "PG_VERSION").exists():
        inner = [p for p in data_dir.iterdir() if (p / "PG_VERSION").exists()]
        if len(inner) != 1:
            raise ArchiveError(f"the base backup archive holds no data directory (no PG_VERSION) in {data_dir}")
        for child in inner[0].iterdir():
            child.rename(data_dir / child.name)
        inner[0].rmdir()
    data_dir.chmod(0o700)


class PhysicalBackup(LockedSession):
    """Takes one base backup of ``target``'s cluster into ``workdir``.

    ``connect`` returns a DB-API connection (the operator passes PostgresHook.get_conn); it
    holds the advisory lock that keeps two pgdr base backups of one database apart, and
    tells the server facts. The copy itself goes over a replication connection, so the
    role needs REPLICATION and pg_hba.conf a ``replication`` line for it.
    """

    def __init__(self, *, target: PgTarget, connect: Callable[[], object], workdir: Path, bindir: Path,
                 level: int, part_size: int, label: str, log: logging.Logger,
                 choose: Callable[[ServerState], BackupChoice] | None = None) -> None:
        """``choose``: full or incremental (and against which backup), asked once the server's state is known
        and this backup's lock is held; None: always full."""
        self.target = target
        self.connect = connect
        self.workdir = workdir
        self.bindir = bindir
        self.level = level
        self.part_size = part_size
        self.label = label
        self.log = log
        self.choose = choose
        self._conn = None

    def _open_session(self):
        # with the lock held no other base backup of this database runs: what is left is a dead run's
        return self.open_locked_session(LOCK_KEYS, "base backup",
                                        on_locked=lambda: discard_dead_partials(self.workdir, "base backup", self.log))

    def _preflight(self, cur) -> int:
        """Refuse clearly before copying anything; returns the WAL segment size."""
        cur.execute("SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user")
        row = cur.fetchone()
        if not row or not row[0]:
            raise PgToolError(f"the role {self.target.user!r} cannot take base backups: grant it REPLICATION "
                              f"(ALTER ROLE {self.target.user} REPLICATION) and allow it a replication "
                              "connection in pg_hba.conf")
        cur.execute("SELECT spcname FROM pg_tablespace WHERE spcname NOT IN ('pg_default', 'pg_global') "
                    "ORDER BY 1")
        tablespaces = [name for (name,) in cur.fetchall()]
        if tablespaces:
            raise PgToolError(f"{self.target.describe()} has tablespaces ({', '.join(tablespaces[:10])}); pgdr's "
                              "physical backups cover clusters without tablespaces only. Set "
                              "pgdr_physical_backups=false or move them to pg_default.")
        cur.execute("SELECT setting::bigint FROM pg_settings WHERE name = 'wal_segment_size'")
        return int(cur.fetchone()[0])

    def run(self) -> BaseCopy:
        started_at = utc_now_iso()
        seconds: dict[str, float] = {}
        cur = self._open_session()
        version, version_num, system_identifier = server_facts(cur)
        segment_size = self._preflight(cur)
        # the tools of this server's major (or newer), chosen now that its version is known
        self.bindir = tools_for(self.bindir, version_num, ("pg_basebackup", "pg_verifybackup"))
        tools = {name: tool_version(self.bindir, name) for name in ("pg_basebackup", "pg_verifybackup")}
        state = server_state(cur, version_num, system_identifier)
        choice = self.choose(state) if self.choose else BackupChoice(None, "incremental backups not asked for")
        self.log.info("%s base backup: %s", "incremental" if choice.parent else "full", choice.reason)

        data_dir = self.workdir / "data"
        mark = time.monotonic()
        with libpq_env(self.target) as env:
            choice = self._copy(data_dir, env, choice)
        seconds["pg_basebackup"] = round(time.monotonic() - mark, 2)
        cluster_size = sum(p.stat().st_size for p in data_dir.rglob("*") if p.is_file() and not p.is_symlink())

        mark = time.monotonic()
        self._verify(data_dir)
        seconds["pg_verifybackup"] = round(time.monotonic() - mark, 2)

        label = parse_backup_label((data_dir / "backup_label").read_text())
        manifest_path = self.workdir / BACKUP_MANIFEST
        shutil.copyfile(data_dir / BACKUP_MANIFEST, manifest_path)
        manifest_body = manifest_path.read_bytes()
        wal = wal_range(label, json.loads(manifest_body), segment_size, system_identifier)
        self.log.info("base backup WAL range %s .. %s on timeline %d (files %s .. %s)", wal["start_lsn"],
                      wal["end_lsn"], wal["timeline"], wal["start_wal_file"], wal["end_wal_file"])

        mark = time.monotonic()
        archive = self.workdir / DATA_TAR
        raw_size, digest = tar_zstd(data_dir, archive, self.level, self.part_size, self.log)
        seconds["tar_and_compress"] = round(time.monotonic() - mark, 2)
        shutil.rmtree(data_dir)  # the verified plain copy is not kept: the tar.zst is the local copy
        if version_num >= STORED_TAR_MAJOR * 10000:
            # 18+: the exact bytes that go up, verified as stored (full or incremental alike)
            mark = time.monotonic()
            verify_stored_tar(archive, manifest_path, self.bindir, self.workdir, self.log)
            seconds["verify_stored_tar"] = round(time.monotonic() - mark, 2)

        manifest_digest = file_digest(manifest_path, self.part_size)
        files = [
            StagedFile(DATA_TAR, archive, "base_tar", "zstd", raw_size, digest),
            StagedFile(BACKUP_MANIFEST, manifest_path, "backup_manifest", "none", manifest_digest.size,
                       manifest_digest),
        ]
        return BaseCopy(started_at=started_at, finished_at=utc_now_iso(), server_version=version,
                        server_version_num=version_num, system_identifier=system_identifier, label=self.label,
                        wal=wal, files=files, tool_versions=tools, level=self.level, cluster_size=cluster_size,
                        seconds=seconds, choice=choice)

    def _copy(self, data_dir: Path, env: dict[str, str], choice: BackupChoice) -> BackupChoice:
        """The copy as ``choice`` says; an incremental the server refuses is taken again as a full (returned,
        with the server's reason)."""
        if choice.parent is None:
            self._basebackup(data_dir, env)
            return choice
        self.workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
        parent_manifest = self.workdir / "parent.backup_manifest"
        parent_manifest.write_bytes(choice.parent.backup_manifest)
        try:
            self._basebackup(data_dir, env, incremental=parent_manifest)
            return choice
        except PgToolError as err:
            if not _INCREMENTAL_REFUSED.search(str(err)):
                raise
            reason = (f"the server could not take an incremental against {choice.parent.backup_id} "
                      f"({stderr_tail(str(err), 2)}); a full backup was taken instead")
            self.log.warning("%s", reason)
            shutil.rmtree(data_dir, ignore_errors=True)
            self._basebackup(data_dir, env)
            return BackupChoice(None, reason)
        finally:
            parent_manifest.unlink(missing_ok=True)

    def _basebackup(self, data_dir: Path, env: dict[str, str], incremental: Path | None = None) -> None:
        # --no-sync: this copy is transient (verified, tarred, then removed); the durable copy is
        # the uploaded object. --progress/--verbose feed the progress log and nothing else.
        argv = [tool_path(self.bindir, "pg_basebackup"), f"--pgdata={data_dir}", "--format=plain",
                "--wal-method=stream", "--checkpoint=fast", "--manifest-checksums=SHA256", "--no-password",
                f"--label={self.label}", "--no-sync", "--progress", "--verbose",
                *([f"--incremental={incremental}"] if incremental else [])]
        self.log.info("running %s", " ".join(["pg_basebackup", *argv[1:]]))
        progress = Progress("pg_basebackup", self.log)
        messages: list[str] = []
        process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                                   preexec_fn=die_with_worker)

        def read_stderr() -> None:
            done = 0
            pending = b""
            while chunk := process.stderr.read1(65536):
                pending += chunk
                *lines, pending = re.split(rb"[\r\n]", pending)
                for raw in lines:
                    line = raw.decode(errors="replace").strip()
                    if not line:
                        continue
                    match = _PROGRESS.search(line)
                    if match and line[0].isdigit():
                        now, total = int(match.group(1)) * 1024, int(match.group(2)) * 1024
                        progress.total = max(total, now)
                        if now > done:
                            progress.add(now - done)
                            done = now
                    else:
                        messages.append(line)
            if pending.strip():
                messages.append(pending.decode(errors="replace").strip())

        reader = threading.Thread(target=read_stderr, daemon=True)
        reader.start()
        try:
            returncode = process.wait()
        except BaseException:
            process.kill()
            process.wait()
            raise
        finally:
            reader.join()
        if returncode != 0:
            raise PgToolError(f"pg_basebackup failed (exit {returncode}): {stderr_tail(chr(10).join(messages))}")
        for line in messages:
            if "write-ahead log" in line or "checkpoint" in line:
                self.log.info("pg_basebackup: %s", line.removeprefix("pg_basebackup: "))
        progress.finish()

    def _verify(self, data_dir: Path) -> None:
        argv = [tool_path(self.bindir, "pg_verifybackup"), str(data_dir)]
        self.log.info("running %s", " ".join(["pg_verifybackup", *argv[1:]]))
        result = subprocess.run(argv, env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C"},
                                capture_output=True, text=True, check=False, preexec_fn=die_with_worker)
        if result.returncode != 0:
            raise VerificationFailed(
                f"pg_verifybackup rejected the base backup copy (exit {result.returncode}); nothing was uploaded: "
                f"{stderr_tail(result.stderr or result.stdout)}")
        self.log.info("pg_verifybackup: %s", (result.stdout.strip() or "backup successfully verified"))
