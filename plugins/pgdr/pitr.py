"""Point-in-time recovery: a base backup and the WAL after it, replayed into a new cluster.

The new cluster's data directory goes under ``pgdr_pitr_data_dir`` and it listens on
``pgdr_pitr_port``; when the worker runs as root the cluster runs as ``pgdr_pitr_os_user``.
The base backup is unpacked and checked with ``pg_verifybackup`` before it is started; the
WAL is fetched from S3 first (each object's sha256 checked), so the server's
``restore_command`` only copies local files. ``latest`` includes the newest partial segment
the WAL receiver shipped: that is what brings back every acknowledged commit.
"""

from __future__ import annotations

import io
import logging
import os
import pwd
import shutil
import socket
import subprocess
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import zstandard

from pgdr.compression import CHUNK
from pgdr.fetch import download_object
from pgdr.manifest import Manifest
from pgdr.pgtools import PgToolError, stderr_tail, tool_path
from pgdr.pitr_plan import Target, WalPlan, recovery_end
from pgdr.restore_plan import RestoreRefused

REFUSED = "restore refused, nothing was changed: "


class RecoveryFailed(RuntimeError):
    """The recovered cluster did not come up; the message quotes its log."""


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def check_pitr_target(data_root: Path, name: str, port: int, free_needed: int) -> Path:
    data_dir = data_root / name
    problems = []
    if data_dir.exists():
        problems.append(f"{data_dir} already exists")
    if not port_is_free(port):
        problems.append(f"port {port} (setting pgdr_pitr_port) is in use: stop the cluster of an earlier "
                        "point-in-time restore or choose another port")
    data_root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(data_root).free
    if free < free_needed:
        problems.append(f"{data_root} has {free >> 20} MiB free, the recovery needs about {free_needed >> 20} MiB "
                        "(setting pgdr_pitr_data_dir)")
    if problems:
        raise RestoreRefused(REFUSED + "; ".join(problems))
    return data_dir


def _as_user(os_user: str | None, argv: list[str]) -> list[str]:
    if os_user and os.geteuid() == 0:
        return ["runuser", "-u", os_user, "--", *argv]
    return argv


def _chown_tree(path: Path, os_user: str | None) -> None:
    if not os_user or os.geteuid() != 0:
        return
    entry = pwd.getpwnam(os_user)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)


class _Reader(io.RawIOBase):
    """A zstd stream as a file object that tarfile can read in stream mode."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def unpack_base_backup(archive: Path, data_dir: Path) -> None:
    """Unpack ``data.tar.zst`` into ``data_dir`` (members are checked to stay inside it)."""
    data_dir.mkdir(parents=True, mode=0o700)
    with open(archive, "rb") as raw:
        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_size=CHUNK)
        with tarfile.open(fileobj=io.BufferedReader(_Reader(reader), CHUNK), mode="r|") as tar:
            tar.extractall(data_dir, filter="data")
    # the tar may hold the data directory itself rather than its contents
    if not (data_dir / "PG_VERSION").exists():
        inner = [p for p in data_dir.iterdir() if (p / "PG_VERSION").exists()]
        if len(inner) != 1:
            raise RecoveryFailed(f"the base backup archive holds no data directory (no PG_VERSION) in {data_dir}")
        for child in inner[0].iterdir():
            child.rename(data_dir / child.name)
        inner[0].rmdir()
    data_dir.chmod(0o700)


class PointInTimeRecovery:
    def __init__(self, *, store, manifest: Manifest, prefix: str, wal: WalPlan, target: Target, data_dir: Path,
                 port: int, os_user: str | None, login: str, bindir: Path, jobs: int, log: logging.Logger) -> None:
        self.store = store
        self.manifest = manifest
        self.prefix = prefix
        self.wal = wal
        self.target = target
        self.data_dir = data_dir
        self.wal_dir = data_dir.with_name(data_dir.name + ".wal")
        self.socket_dir = data_dir.with_name(data_dir.name + ".sock")
        self.port = port
        self.os_user = os_user
        self.login = login
        self.bindir = Path(bindir)
        self.jobs = jobs
        self.log = log
        self.seconds: dict[str, float] = {}

    @property
    def log_file(self) -> Path:
        return self.data_dir.with_name(self.data_dir.name + ".log")

    def run(self) -> dict:
        started = time.monotonic()
        try:
            self._fetch_base()
            mark = time.monotonic()
            self._fetch_wal()
            self.seconds["fetch_wal"] = round(time.monotonic() - mark, 3)
            mark = time.monotonic()
            self._configure()
            self._start_and_wait()
            self.seconds["recover"] = round(time.monotonic() - mark, 3)
        except BaseException:
            self.discard()
            raise
        shutil.rmtree(self.wal_dir, ignore_errors=True)
        ended = recovery_end(self.log_file.read_text(errors="replace"))
        self.seconds["total"] = round(time.monotonic() - started, 3)
        return {"data_dir": str(self.data_dir), "port": self.port, "socket_dir": str(self.socket_dir),
                "base_backup_id": self.manifest.backup_id, "target": self.target.describe(),
                "wal_first": self.wal.first, "wal_last": self.wal.last,
                "wal_last_partial": self.wal.segments[-1].partial, **ended, "seconds": dict(self.seconds),
                "server_log": str(self.log_file)}

    def discard(self) -> None:
        """Stop the new cluster if it runs and remove everything this recovery wrote."""
        if (self.data_dir / "postmaster.pid").exists():
            subprocess.run(_as_user(self.os_user, [tool_path(self.bindir, "pg_ctl"), "-D", str(self.data_dir),
                                                   "-m", "immediate", "-w", "stop"]), capture_output=True)
        for path in (self.data_dir, self.wal_dir, self.socket_dir):
            shutil.rmtree(path, ignore_errors=True)
        self.log_file.unlink(missing_ok=True)

    def _fetch_base(self) -> None:
        mark = time.monotonic()
        tar_obj = next((o for o in self.manifest.objects if o.role == "base_tar"), None)
        if tar_obj is None:
            raise RecoveryFailed(f"base backup {self.manifest.backup_id} lists no base_tar object")
        staging = self.data_dir.with_name(self.data_dir.name + ".download")
        staging.mkdir(parents=True)
        try:
            archive = staging / "data.tar.zst"
            download_object(self.store, f"{self.prefix}/{tar_obj.name}", tar_obj, archive)
            self.seconds["download_base"] = round(time.monotonic() - mark, 3)
            mark = time.monotonic()
            unpack_base_backup(archive, self.data_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self.seconds["unpack_base"] = round(time.monotonic() - mark, 3)
        mark = time.monotonic()
        result = subprocess.run([tool_path(self.bindir, "pg_verifybackup"), "--no-parse-wal", str(self.data_dir)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise RecoveryFailed(f"pg_verifybackup rejected base backup {self.manifest.backup_id}: "
                                 f"{stderr_tail(result.stderr or result.stdout)}")
        self.seconds["verify_base"] = round(time.monotonic() - mark, 3)
        self.log.info("base backup %s unpacked into %s and verified by pg_verifybackup", self.manifest.backup_id,
                      self.data_dir)

    def _fetch_wal(self) -> None:
        self.wal_dir.mkdir(mode=0o700)

        def fetch(obj) -> None:
            compressed = self.wal_dir / (obj.name + ".zst.download")
            head = self.store.client.head_object(Bucket=self.store.bucket, Key=obj.key)
            sha256 = head.get("Metadata", {}).get("sha256")
            response = self.store.client.get_object(Bucket=self.store.bucket, Key=obj.key)
            import hashlib

            digest = hashlib.sha256()
            with open(compressed, "wb") as handle:
                for block in response["Body"].iter_chunks(CHUNK):
                    digest.update(block)
                    handle.write(block)
            if sha256 and digest.hexdigest() != sha256:
                raise RecoveryFailed(f"WAL object {obj.key}: sha256 {digest.hexdigest()} != stored {sha256}")
            # a partial segment is replayed under its full name: recovery stops at its last valid record
            with open(compressed, "rb") as reader, open(self.wal_dir / obj.name, "wb") as writer:
                zstandard.ZstdDecompressor().copy_stream(reader, writer, read_size=CHUNK, write_size=CHUNK)
            compressed.unlink()

        with ThreadPoolExecutor(max_workers=max(self.jobs, 2) + 2, thread_name_prefix="pgdr-wal") as pool:
            list(pool.map(fetch, self.wal.segments))
        self.log.info("fetched %d WAL segment(s) %s .. %s%s", len(self.wal.segments), self.wal.first, self.wal.last,
                      " (the last one partial)" if self.wal.segments[-1].partial else "")

    def _configure(self) -> None:
        self.socket_dir.mkdir(mode=0o700)
        for stale in ("postmaster.pid", "postmaster.opts", "standby.signal"):
            (self.data_dir / stale).unlink(missing_ok=True)
        if self.target.kind == "time":
            target = [f"recovery_target_time = '{self.target.time.isoformat()}'"]
        elif self.target.kind == "lsn":
            target = [f"recovery_target_lsn = '{self.target.text}'"]
        else:
            target = []
        overrides = [
            "", "# pgdr point-in-time recovery: these settings win over the source's",
            f"port = {self.port}",
            "listen_addresses = '127.0.0.1'",
            f"unix_socket_directories = '{self.socket_dir}'",
            f"restore_command = 'cp \"{self.wal_dir}/%f\" \"%p\"'",
            *target,
            "recovery_target_action = 'promote'",
            "recovery_target_timeline = 'current'",
            # the source's synchronous standbys and archiving do not follow it here
            "synchronous_standby_names = ''",
            "archive_mode = 'off'",
            "primary_conninfo = ''",
            "primary_slot_name = ''",
        ]
        with open(self.data_dir / "postgresql.auto.conf", "a") as conf:
            conf.write("\n".join(overrides) + "\n")
        # pgdr reaches the new cluster over its private socket (a directory only its OS user and root
        # can enter); the source's own rules follow for everyone else
        hba = self.data_dir / "pg_hba.conf"
        original = hba.read_text() if hba.exists() else ""
        hba.write_text(f"local all {self.login} trust\n" + original)
        (self.data_dir / "recovery.signal").write_text("")
        _chown_tree(self.data_dir, self.os_user)
        _chown_tree(self.wal_dir, self.os_user)
        _chown_tree(self.socket_dir, self.os_user)
        if self.os_user and os.geteuid() == 0:
            entry = pwd.getpwnam(self.os_user)
            for parent in {self.data_dir.parent}:
                os.chmod(parent, 0o755)
            self.log_file.touch()
            os.chown(self.log_file, entry.pw_uid, entry.pw_gid)

    def _start_and_wait(self) -> None:
        argv = _as_user(self.os_user, [tool_path(self.bindir, "pg_ctl"), "-D", str(self.data_dir), "-l",
                                       str(self.log_file), "-w", "-t", "86400", "start"])
        self.log.info("starting the recovered cluster on port %d: %s", self.port, " ".join(argv))
        result = subprocess.run(argv, capture_output=True, text=True)
        if result.returncode != 0:
            raise RecoveryFailed(f"the recovered cluster did not start: {self._log_tail()}")
        import psycopg2

        deadline = time.monotonic() + 86400
        while time.monotonic() < deadline:
            try:
                conn = psycopg2.connect(host=str(self.socket_dir), port=self.port, user=self.login,
                                        dbname="postgres")
            except psycopg2.OperationalError:
                if not (self.data_dir / "postmaster.pid").exists():
                    raise RecoveryFailed(f"the recovered cluster stopped: {self._log_tail()}") from None
                time.sleep(0.2)
                continue
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT pg_is_in_recovery()")
                    (in_recovery,) = cur.fetchone()
            finally:
                conn.close()
            if not in_recovery:
                self.log.info("recovery finished and the cluster was promoted")
                return
            time.sleep(0.2)
        raise RecoveryFailed("recovery did not finish within a day")

    def _log_tail(self, lines: int = 12) -> str:
        try:
            return stderr_tail(self.log_file.read_text(errors="replace"), lines)
        except OSError:
            return "(no server log)"


def connect_recovered(result: dict, login: str, dbname: str):
    import psycopg2

    conn = psycopg2.connect(host=result["socket_dir"], port=result["port"], user=login, dbname=dbname)
    conn.autocommit = True
    return conn


def stop_recovered(data_dir: str, os_user: str | None, bindir: Path) -> None:
    subprocess.run(_as_user(os_user, [tool_path(bindir, "pg_ctl"), "-D", data_dir, "-m", "fast", "-w", "stop"]),
                   capture_output=True)


__all__ = ["PointInTimeRecovery", "PgToolError", "check_pitr_target", "connect_recovered", "stop_recovered"]
