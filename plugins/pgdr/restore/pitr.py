"""Point-in-time recovery: a base backup and the WAL after it, replayed into a new cluster.

The recovery runs in steps, each in its own module: the plan and the fetching of the base backup and
the WAL, every object checked before use (:mod:`pgdr.restore.pitr_fetch`); the new cluster's
environment, port, and the registry of running recovered clusters with their expiry
(:mod:`pgdr.restore.pitr_cluster`); and here the run itself: configure the recovery, start the
server with a minimal environment (none of the worker's secrets), wait for it to promote, record it.
A target after the last commit shipped recovers to the end of the WAL, and says so.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import shutil
import subprocess
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from pgdr.core.pgtools import stderr_tail, tool_path
from pgdr.restore.pitr_cluster import (
    RecoveryFailed,
    _as_user,
    _chown_tree,
    _first_address,
    choose_port,
    clean_environment,
    expire_recovered,
    registry_path,
)
from pgdr.restore.pitr_fetch import (
    WalFetch,
    fetch_base,
)
from pgdr.restore.pitr_plan import TARGET_NOT_REACHED, Target, recovery_end
from pgdr.store.manifest import Manifest
from pgdr.wal.archive import WalPlan
from pgdr.wal.names import timeline_of

DEFAULT_LISTEN_ADDRESSES = "127.0.0.1"
DEFAULT_KEEP_HOURS = 72.0


def _pitr_settings(listen_addresses: str | None, keep_hours: float | None,
                   log: logging.Logger) -> tuple[str, float]:
    """The settings a caller did not pass; their defaults where pgdr's settings cannot be read (a bench, a
    script outside Airflow)."""
    try:
        from pgdr.settings import load_settings

        settings = load_settings()
        configured = (settings.pitr_listen_addresses, settings.pitr_keep_hours)
    except Exception as err:  # noqa: BLE001 - outside Airflow: the documented defaults
        log.warning("pgdr settings unreadable (%s); the recovered cluster listens on %s and expires after %s h",
                    type(err).__name__, DEFAULT_LISTEN_ADDRESSES, DEFAULT_KEEP_HOURS)
        configured = (DEFAULT_LISTEN_ADDRESSES, DEFAULT_KEEP_HOURS)
    return (listen_addresses if listen_addresses is not None else configured[0],
            keep_hours if keep_hours is not None else configured[1])


class PointInTimeRecovery:
    """One recovery into a new cluster. ``port`` is the preferred port (another free one is taken when it is
    busy); ``listen_addresses`` and ``keep_hours`` default to the settings ``pgdr_pitr_listen_addresses`` and
    ``pgdr_pitr_keep_hours``."""

    def __init__(self, *, store, manifest: Manifest, prefix: str, wal: WalPlan, target: Target, data_dir: Path,
                 port: int, os_user: str | None, login: str, bindir: Path, jobs: int, log: logging.Logger,
                 listen_addresses: str | None = None, keep_hours: float | None = None) -> None:
        if listen_addresses is None or keep_hours is None:
            listen_addresses, keep_hours = _pitr_settings(listen_addresses, keep_hours, log)
        self.store = store
        self.manifest = manifest
        self.prefix = prefix
        self.wal = wal
        self.target = target
        self.data_dir = data_dir
        self.wal_dir = data_dir.with_name(data_dir.name + ".wal")
        self.socket_dir = data_dir.with_name(data_dir.name + ".sock")
        self.port = port
        self.listen_addresses = listen_addresses
        self.keep_hours = keep_hours
        self.os_user = os_user
        self.login = login
        self.bindir = Path(bindir)
        self.jobs = jobs
        self.log = log
        self.seconds: dict[str, float] = {}
        self.target_reached = True

    @property
    def log_file(self) -> Path:
        return self.data_dir.with_name(self.data_dir.name + ".log")

    def run(self) -> dict:
        started = time.monotonic()
        try:
            # recovered clusters of earlier runs on this worker whose time is up go first (PHI, ports)
            expire_recovered(self.data_dir.parent, self.log)
        except Exception as err:  # noqa: BLE001 - a stuck old cluster must not block this recovery
            self.log.warning("could not remove expired recovered clusters: %s", err)
        preferred = self.port
        self.port = choose_port(preferred, _first_address(self.listen_addresses))
        if self.port != preferred:
            self.log.warning("port %d (setting pgdr_pitr_port) is busy (the cluster of an earlier recovery?); "
                             "the recovered cluster listens on port %d instead", preferred, self.port)
        try:
            fetch_base(self.store, self.manifest, self.prefix, self.data_dir, self.bindir, self.seconds, self.log)
            mark = time.monotonic()
            WalFetch(store=self.store, wal=self.wal, wal_dir=self.wal_dir, backup_id=self.manifest.backup_id,
                     jobs=self.jobs, log=self.log).run()
            self.seconds["fetch_wal"] = round(time.monotonic() - mark, 3)
            mark = time.monotonic()
            self._configure()
            self._start_and_wait()
            self.seconds["recover"] = round(time.monotonic() - mark, 3)
            record = self._register()
        except BaseException:
            self.discard()
            raise
        shutil.rmtree(self.wal_dir, ignore_errors=True)
        ended = recovery_end(self.log_file.read_text(errors="replace"))
        self.seconds["total"] = round(time.monotonic() - started, 3)
        outcome = {"data_dir": str(self.data_dir), "port": self.port, "socket_dir": str(self.socket_dir),
                   "listen_addresses": self.listen_addresses, "expires_at": record["expires_at"],
                   "base_backup_id": self.manifest.backup_id, "base_backup_type": self.manifest.backup_type,
                   "chain": self.manifest.chain, "target": self.target.describe(),
                   "target_reached": self.target_reached, "timeline": self.wal.timeline or None,
                   "wal_first": self.wal.first, "wal_last": self.wal.last,
                   "wal_last_partial": self.wal.segments[-1].partial, **ended, "seconds": dict(self.seconds),
                   "server_log": str(self.log_file)}
        if not self.target_reached:
            outcome["note"] = (f"{self.target.describe()} is after the last transaction in the WAL shipped (last "
                               f"transaction at {ended.get('last_transaction_time') or 'unknown'}): nothing was "
                               "committed between them, so the cluster was recovered to the end of the WAL")
            self.log.warning("%s", outcome["note"])
        return outcome

    def discard(self) -> None:
        """Stop the new cluster if it runs and remove everything this recovery wrote."""
        if (self.data_dir / "postmaster.pid").exists():
            subprocess.run(_as_user(self.os_user, [tool_path(self.bindir, "pg_ctl"), "-D", str(self.data_dir),
                                                   "-m", "immediate", "-w", "stop"]), capture_output=True,
                           env=clean_environment(self.bindir))
        download = self.data_dir.with_name(self.data_dir.name + ".download")   # the chain's pieces, unpacked
        for path in (self.data_dir, self.wal_dir, self.socket_dir, download):
            shutil.rmtree(path, ignore_errors=True)
        self.log_file.unlink(missing_ok=True)
        registry_path(self.data_dir).unlink(missing_ok=True)

    def _register(self) -> dict:
        """Record the running cluster with its expiry, so :func:`expire_recovered` can remove it."""
        now = datetime.now(timezone.utc)
        record = {"data_dir": str(self.data_dir), "port": self.port, "listen_addresses": self.listen_addresses,
                  "os_user": self.os_user, "bindir": str(self.bindir), "base_backup_id": self.manifest.backup_id,
                  "chain": self.manifest.chain, "database": self.manifest.database, "target": self.target.describe(),
                  "started_at": now.isoformat(timespec="seconds"),
                  "expires_at": (now + timedelta(hours=self.keep_hours)).isoformat(timespec="seconds")}
        path = registry_path(self.data_dir)
        path.write_text(json.dumps(record, indent=1))
        path.chmod(0o600)
        return record

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
        # the timeline the plan followed (its history files are in the WAL directory); the base backup's own
        # when no newer one descends from it
        timeline = self.wal.timeline
        start_tli = timeline_of(self.wal.first)
        overrides = [
            "", "# pgdr point-in-time recovery: these settings win over the source's",
            f"port = {self.port}",
            f"listen_addresses = '{self.listen_addresses}'",
            f"unix_socket_directories = '{self.socket_dir}'",
            f"restore_command = 'cp \"{self.wal_dir}/%f\" \"%p\"'",
            *target,
            "recovery_target_action = 'promote'",
            f"recovery_target_timeline = '{timeline}'" if timeline and timeline != start_tli
            else "recovery_target_timeline = 'current'",
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
        try:
            self._start_and_wait_once()
        except RecoveryFailed:
            if self.target.kind == "latest" or TARGET_NOT_REACHED not in self._log_text():
                raise
            # the server replayed every record shipped without meeting the target: a time after the last
            # commit (a quiet database), or an LSN past the end of the WAL. The WAL holds nothing after the
            # last commit, so the end of the WAL is the state at the target: recover to it and say so.
            self.target_reached = False
            self.log.warning("%s is after the last transaction in the WAL shipped; recovering to the end of the "
                             "WAL", self.target.describe())
            conf = self.data_dir / "postgresql.auto.conf"
            lines = [line for line in conf.read_text().splitlines()
                     if not line.startswith(("recovery_target_time ", "recovery_target_lsn "))]
            conf.write_text("\n".join(lines) + "\n")
            self._start_and_wait_once()

    def _log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def _start_and_wait_once(self) -> None:
        argv = _as_user(self.os_user, [tool_path(self.bindir, "pg_ctl"), "-D", str(self.data_dir), "-l",
                                       str(self.log_file), "-w", "-t", "86400", "start"])
        self.log.info("starting the recovered cluster on port %d: %s", self.port, " ".join(argv))
        # a minimal environment: the server and everything it runs never see the worker's secrets
        result = subprocess.run(argv, capture_output=True, text=True, env=clean_environment(self.bindir))
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


__all__ = ["PointInTimeRecovery"]
