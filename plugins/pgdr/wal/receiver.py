"""The WAL receiver: ``pg_receivewal`` kept running, and the check of what the primary needs.

    python -m pgdr.wal_receiver --directory /var/lib/pgdr/wal/care_commons_db --slot pgdr_receiver \\
        --synchronous --status-interval 1
    python -m pgdr.wal_receiver --check [--slot pgdr_receiver] [--directory DIR]

The connection comes from libpq's environment (PGHOST, PGPORT, PGUSER, PGPASSFILE, PGSSLMODE, ...)
or from a conninfo string in an environment variable named by ``--conninfo-env``; a password
never appears in any process's arguments (one from ``--conninfo-env`` goes to a private passfile:
:mod:`pgdr.wal.conninfo`). ``--check`` is :mod:`pgdr.wal.primary_check`.

The supervisor creates the physical replication slot if it is missing, runs
``pg_receivewal -D DIR -S SLOT --no-loop --verbose [--synchronous]`` with application_name set to
the slot name (so ``synchronous_standby_names = 'pgdr_receiver'`` names it), restarts it when it
exits with capped exponential backoff, logs every state change, and keeps
``DIR/receiver.status.json`` (:data:`STATUS_NAME`) current (state, pid, restarts, last exit, stderr
tail, heartbeat), which pg_wal_archive reads. A lost slot is recreated and the gap recorded
(:mod:`pgdr.wal.gaps`). SIGTERM or SIGINT stop it cleanly: pg_receivewal gets SIGINT, flushes
and exits.

With ``--synchronous`` and the slot's name in ``synchronous_standby_names`` a commit returns only
once the receiver has flushed its WAL to disk here: losing the primary then loses no acknowledged
commit (RPO = 0). The price: while no synchronous standby is connected, commits wait; list a second
standby with ``ANY 1 (pgdr_receiver, <standby>)`` to keep committing through a receiver outage.
"""

from __future__ import annotations

import argparse
import collections
import json
import logging
import os
import pwd
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import closing
from pathlib import Path

import psycopg2

from pgdr.core.redaction import safe_error
from pgdr.wal.conninfo import ConnInfo, sql_connect
from pgdr.wal.gaps import read_gaps, set_aside
from pgdr.wal.local import now_iso
from pgdr.wal.primary_check import DEFAULT_SLOT, check_primary, format_findings, parse_synchronous_standby_names

DEFAULT_BINDIR = "/usr/lib/postgresql/{major}/bin"
STATUS_NAME = "receiver.status.json"     # written here, read by the shipper (pgdr.wal.status)

log = logging.getLogger("pgdr.wal_receiver")


class Supervisor:
    """Keeps one ``pg_receivewal`` running into ``directory``; :meth:`run` blocks until :meth:`stop`.

    :param env: libpq environment (PGHOST, ...); PGAPPNAME is set to the slot name
    :param run_as: OS user to run pg_receivewal as (when the supervisor runs as root)
    """

    def __init__(self, directory: str | Path, slot: str = DEFAULT_SLOT, *, synchronous: bool = False,
                 status_interval: int = 10, bindir: str | Path = DEFAULT_BINDIR, env: dict | None = None,
                 run_as: str | None = None, create_slot: bool = True, min_backoff: float = 1.0,
                 max_backoff: float = 60.0, stable_seconds: float = 30.0, heartbeat_seconds: float = 10.0,
                 stop_timeout: float = 15.0, logger: logging.Logger | None = None) -> None:
        if not re.match(r"^[a-z0-9_]{1,63}$", slot):
            raise ValueError(f"replication slot name must be lower-case letters, digits and '_': {slot!r}")
        self.directory = Path(directory)
        self.slot = slot
        self.synchronous = synchronous
        self.status_interval = int(status_interval)
        self.bindir = Path(bindir)
        self.env = dict(os.environ if env is None else env)
        self.env["PGAPPNAME"] = slot   # synchronous_standby_names matches application_name
        self.run_as = run_as
        self.create_slot = create_slot
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.stable_seconds = stable_seconds
        self.heartbeat_seconds = heartbeat_seconds
        self.stop_timeout = stop_timeout
        self.log = logger or log
        self.restarts = 0
        self.state = "new"
        self.last_exit: dict | None = None
        self.last_error = ""
        self._stop = threading.Event()
        self._child: subprocess.Popen | None = None
        self._stderr_tail: collections.deque[str] = collections.deque(maxlen=12)
        self._started_at: str | None = None
        self._advised = False

    # -- public

    @property
    def pid(self) -> int | None:
        child = self._child
        return child.pid if child is not None and child.poll() is None else None

    def stop(self) -> None:
        """Ask :meth:`run` to stop the receiver and return (safe from a signal handler or thread)."""
        self._stop.set()

    def receive_command(self) -> list[str]:
        argv = [str(self.bindir / "pg_receivewal"), "--directory", str(self.directory), "--slot", self.slot,
                "--no-loop", "--no-password", "--verbose", f"--status-interval={self.status_interval}"]
        if self.synchronous:
            argv.append("--synchronous")
        return argv

    def create_slot_command(self) -> list[str]:
        return [str(self.bindir / "pg_receivewal"), "--create-slot", "--if-not-exists", "--slot", self.slot,
                "--no-password"]

    def run(self) -> int:
        """Run until :meth:`stop`; returns 0."""
        self._prepare_directory()
        self._started_at = now_iso()
        backoff = self.min_backoff
        self.log.info("WAL receiver for slot %s into %s (%s)", self.slot, self.directory,
                      "synchronous" if self.synchronous else "asynchronous")
        while not self._stop.is_set():
            if self.create_slot and not self._ensure_slot():
                backoff = self._back_off(backoff)
                continue
            began = time.monotonic()
            if not self._start_child():
                backoff = self._back_off(backoff)
                continue
            self._watch_child()
            if self._stop.is_set():
                break
            ran = time.monotonic() - began
            rc = self._child.returncode
            self.last_exit = {"rc": rc, "at": now_iso(), "ran_seconds": round(ran, 1)}
            self.last_error = "\n".join(self._stderr_tail)
            self.log.warning("pg_receivewal exited with %s after %.1f s%s", _describe_rc(rc), ran,
                             f": {self._stderr_tail[-1]}" if self._stderr_tail else "")
            if ran >= self.stable_seconds:
                backoff = self.min_backoff
            self.restarts += 1
            backoff = self._back_off(backoff)
        self._stop_child()
        self._set_state("stopped")
        self.log.info("WAL receiver stopped (%d restarts)", self.restarts)
        return 0

    # -- internals

    def _prepare_directory(self) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        if self.run_as and os.geteuid() == 0:
            entry = pwd.getpwnam(self.run_as)
            stat = self.directory.stat()
            if stat.st_uid != entry.pw_uid:
                os.chown(self.directory, entry.pw_uid, entry.pw_gid)

    def _popen_user(self) -> dict:
        if not self.run_as:
            return {}
        entry = pwd.getpwnam(self.run_as)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    def _ensure_slot(self) -> bool:
        """The slot exists and can serve the directory's position: created when missing; when lost
        (``wal_status = 'lost'``: the server removed WAL the slot needed) or behind what the server
        still has, healed by :meth:`_heal` (recreated, the gap recorded and announced)."""
        self._set_state("creating_slot")
        try:
            row = self._read_slot()
        except Exception as err:  # noqa: BLE001 - e.g. pg_hba allows replication connections only
            self.log.warning("cannot read pg_replication_slots (%s); creating the slot with pg_receivewal only",
                             safe_error(err).splitlines()[0] if safe_error(err) else type(err).__name__)
            row = None
        else:
            behind = any("has already been removed" in line for line in self._stderr_tail)
            if row is not None and (row["wal_status"] == "lost" or behind):
                return self._heal(row, lost=row["wal_status"] == "lost")
            if row is not None:
                return True
        return self._create_slot_with_tool()

    def _read_slot(self) -> dict | None:
        with closing(sql_connect(self.env)) as conn, conn.cursor() as cur:
            cur.execute("SELECT slot_type, wal_status, restart_lsn::text, active_pid FROM pg_replication_slots "
                        "WHERE slot_name = %s", (self.slot,))
            row = cur.fetchone()
        if row is None:
            return None
        return {"slot_type": row[0], "wal_status": row[1], "restart_lsn": row[2], "active_pid": row[3]}

    def _heal(self, row: dict, lost: bool) -> bool:
        """Recreate a lost slot and move the WAL before the gap aside, so pg_receivewal streams from
        what the server still has; record the gap in ``wal-gaps.json`` (pg_wal_archive copies it to
        S3 state and alerts) and in the status file. Point-in-time recovery cannot cross the gap:
        a new base backup is needed for recovery to any time after it."""
        self._set_state("healing_slot")
        try:
            with closing(sql_connect(self.env)) as conn, conn.cursor() as cur:
                if lost:
                    if row.get("active_pid"):   # a walsender still holding the dead slot
                        cur.execute("SELECT pg_terminate_backend(%s)", (row["active_pid"],))
                        time.sleep(0.5)
                    cur.execute("SELECT pg_drop_replication_slot(%s)", (self.slot,))
                    cur.execute("SELECT lsn::text FROM pg_create_physical_replication_slot(%s, true)", (self.slot,))
                    restart = cur.fetchone()[0]
                else:
                    restart = row["restart_lsn"]
        except psycopg2.Error as err:
            self.last_error = safe_error(err)
            self.log.error("cannot recreate the lost replication slot %s: %s", self.slot,
                           (self.last_error.splitlines() or [""])[0])
            return False
        if lost:
            self.log.warning("replication slot %s had lost its WAL (wal_status lost); dropped and recreated at %s",
                             self.slot, restart)
        gap = set_aside(self.directory, restart, slot=self.slot, lost=lost, chown=self._chown) if restart else None
        if gap is None:
            self._stderr_tail.clear()
            return True
        self._write_status()
        self.log.error("WAL GAP: %s; WAL %s .. %s (segments %s .. %s, %d) is lost for the archive; streaming "
                       "resumes at %s. A NEW BASE BACKUP IS NEEDED for point-in-time recovery past the gap "
                       "(trigger pg_backup_daily); the WAL before it was moved to %s and is still shipped",
                       gap["reason"], gap["from_lsn"], gap["to_lsn"], gap["first_segment"], gap["last_segment"],
                       gap["segments"], gap["to_lsn"], self.directory / gap["moved_to"])
        self._stderr_tail.clear()
        return True

    def _chown(self, path: Path) -> None:
        """Give ``path`` to the user pg_receivewal runs as (when the supervisor runs as root)."""
        if self.run_as and os.geteuid() == 0:
            entry = pwd.getpwnam(self.run_as)
            os.chown(path, entry.pw_uid, entry.pw_gid)

    def _create_slot_with_tool(self) -> bool:
        try:
            result = subprocess.run(self.create_slot_command(), env=self.env, capture_output=True, text=True,
                                    timeout=60, **self._popen_user())
        except (OSError, subprocess.TimeoutExpired) as err:
            self.last_error = str(err)
            self.log.error("cannot create the replication slot %s: %s", self.slot, err)
            return False
        if result.returncode != 0:
            self.last_error = result.stderr.strip()[-2000:]
            self.last_exit = {"rc": result.returncode, "at": now_iso(), "ran_seconds": 0, "step": "create-slot"}
            self.log.error("pg_receivewal --create-slot failed (%s): %s", _describe_rc(result.returncode),
                           self.last_error.splitlines()[-1] if self.last_error else "")
            return False
        return True

    def _advise(self) -> None:
        """Once streaming, tell the operator the one set-up step that must come after it: naming the
        receiver in synchronous_standby_names (set before it streams, every commit waits)."""
        try:
            with closing(sql_connect(self.env)) as conn, conn.cursor() as cur:
                cur.execute("SELECT current_setting('synchronous_standby_names'), "
                            "(SELECT sync_state FROM pg_stat_replication WHERE application_name = %s)", (self.slot,))
                names_value, sync_state = cur.fetchone()
        except Exception:  # noqa: BLE001 - advice only
            return
        _, _, names = parse_synchronous_standby_names(names_value)
        if sync_state is not None and self.synchronous and self.slot not in names and "*" not in names:
            self.log.warning("%s is streaming (sync_state %s); for RPO = 0 now run on the primary: ALTER SYSTEM SET "
                             "synchronous_standby_names = '%s'; SELECT pg_reload_conf();  (only now: set before the "
                             "receiver streams, every commit waits for it)", self.slot, sync_state, self.slot)

    def _start_child(self) -> bool:
        self._stderr_tail.clear()
        try:
            child = subprocess.Popen(self.receive_command(), env=self.env, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                     errors="replace", **self._popen_user())
        except OSError as err:
            self.last_error = str(err)
            self.log.error("cannot start pg_receivewal: %s", err)
            return False
        self._child = child
        threading.Thread(target=self._read_stderr, args=(child,), daemon=True,
                         name=f"pg_receivewal-{child.pid}").start()
        self._set_state("running")
        self.log.info("pg_receivewal started (pid %d)%s", child.pid,
                      f", restart {self.restarts}" if self.restarts else "")
        return True

    def _read_stderr(self, child: subprocess.Popen) -> None:
        for line in child.stderr:
            line = line.rstrip()
            if line:
                self._stderr_tail.append(line)
                self.log.info("%s", line)

    def _watch_child(self) -> None:
        last_beat = time.monotonic()
        while self._child.poll() is None:
            if self._stop.wait(0.2):
                return
            if time.monotonic() - last_beat >= self.heartbeat_seconds:
                last_beat = time.monotonic()
                self._write_status()
                if not self._advised:
                    self._advised = True
                    self._advise()
        self._child.wait()

    def _stop_child(self) -> None:
        child = self._child
        if child is None or child.poll() is not None:
            return
        self._set_state("stopping")
        child.send_signal(signal.SIGINT)   # pg_receivewal flushes and exits 0 on SIGINT
        try:
            child.wait(self.stop_timeout)
        except subprocess.TimeoutExpired:
            self.log.warning("pg_receivewal (pid %d) ignored SIGINT for %.0f s; killing it", child.pid,
                             self.stop_timeout)
            child.kill()
            child.wait()
        self.last_exit = {"rc": child.returncode, "at": now_iso(), "step": "stopped"}

    def _back_off(self, backoff: float) -> float:
        if self._stop.is_set():
            return backoff
        self._set_state("backoff", next_attempt_in=backoff)
        self.log.info("restarting in %.0f s", backoff)
        self._stop.wait(backoff)
        return min(backoff * 2, self.max_backoff)

    def _set_state(self, state: str, **extra) -> None:
        if state != self.state:
            self.log.debug("state %s -> %s", self.state, state)
        self.state = state
        self._write_status(**extra)

    def status(self, **extra) -> dict:
        gaps = read_gaps(self.directory)
        return {"state": self.state, "pid": self.pid, "restarts": self.restarts, "last_exit": self.last_exit,
                "last_error": self.last_error, "slot": self.slot, "synchronous": self.synchronous,
                "directory": str(self.directory), "started_at": self._started_at, "updated_at": now_iso(),
                "heartbeat_at": time.time(), "gaps": len(gaps), "last_gap": gaps[-1] if gaps else None, **extra}

    def _write_status(self, **extra) -> None:
        path = self.directory / STATUS_NAME
        try:
            fd, temp = tempfile.mkstemp(prefix=STATUS_NAME + ".", suffix=".tmp", dir=self.directory)
            with os.fdopen(fd, "w") as handle:
                json.dump(self.status(**extra), handle, indent=1)
            os.chmod(temp, 0o644)
            os.replace(temp, path)
        except OSError as err:
            self.log.warning("cannot write %s: %s", path, err)


def _describe_rc(rc: int | None) -> str:
    if rc is None:
        return "no exit code"
    if rc < 0:
        try:
            return f"signal {signal.Signals(-rc).name}"
        except ValueError:
            return f"signal {-rc}"
    return f"exit code {rc}"


# ---------------------------------------------------------------- command line

def receiver_bindir(bindir: str, env: dict) -> Path:
    """pg_receivewal of the primary's major (``{major}`` in ``bindir`` replaced), or newer; refused at once,
    naming the tool and the major, when it is not there."""
    from pgdr.core.pgtools import tools_for

    with closing(sql_connect(env)) as conn, conn.cursor() as cur:
        cur.execute("SELECT current_setting('server_version_num')::int")
        version_num = cur.fetchone()[0]
    return tools_for(bindir, version_num, ("pg_receivewal",))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pgdr.wal_receiver", description=__doc__.split("\n\n")[0])
    parser.add_argument("--directory", "-D", type=Path, help="where pg_receivewal writes (one per protected database)")
    parser.add_argument("--slot", "-S", default=DEFAULT_SLOT, help="replication slot and application_name")
    parser.add_argument("--synchronous", action="store_true", help="flush at once and report it (RPO = 0)")
    parser.add_argument("--status-interval", type=int, default=10, help="seconds between status packets")
    parser.add_argument("--conninfo-env", metavar="VAR",
                        help="environment variable holding a libpq conninfo (never pass one in argv)")
    parser.add_argument("--bindir", default=os.environ.get("PGDR_PG_BINDIR", DEFAULT_BINDIR))
    parser.add_argument("--run-as", help="OS user for pg_receivewal when started as root")
    parser.add_argument("--max-backoff", type=float, default=60.0, help="longest wait between restarts (s)")
    parser.add_argument("--check", action="store_true", help="check the primary's setup and exit (1 if not ready)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    if args.run_as and os.geteuid() != 0:
        parser.error("--run-as needs root")
    try:
        connection = ConnInfo(args.conninfo_env, owner=args.run_as)
    except ValueError as err:
        parser.error(str(err))
    try:
        if args.check:
            findings = check_primary(connection.env, args.slot, args.directory)
            print(format_findings(findings))
            return 1 if any(f.status == "fail" for f in findings) else 0
        if args.directory is None:
            parser.error("--directory is required (unless --check)")
        bindir = receiver_bindir(args.bindir, connection.env)
        supervisor = Supervisor(args.directory, args.slot, synchronous=args.synchronous,
                                status_interval=args.status_interval, bindir=bindir, env=connection.env,
                                run_as=args.run_as, max_backoff=args.max_backoff)

        def on_signal(signum, _frame):
            log.info("received %s, stopping", signal.Signals(signum).name)
            supervisor.stop()

        signal.signal(signal.SIGTERM, on_signal)
        signal.signal(signal.SIGINT, on_signal)
        return supervisor.run()
    finally:
        connection.close()


if __name__ == "__main__":
    sys.exit(main())
