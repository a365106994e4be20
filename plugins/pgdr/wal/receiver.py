"""The WAL receiver: ``pg_receivewal`` kept running, and the check of what the primary needs.

    python -m pgdr.wal_receiver --directory /var/lib/pgdr/wal/care_commons_db --slot pgdr_receiver \\
        --synchronous --status-interval 1
    python -m pgdr.wal_receiver --check [--slot pgdr_receiver] [--directory DIR]

The connection comes from libpq's environment (PGHOST, PGPORT, PGUSER, PGPASSFILE, PGSSLMODE, ...)
or from a conninfo string in an environment variable named by ``--conninfo-env``; a password
never appears in any process's arguments (one from ``--conninfo-env`` goes to a private passfile).

The supervisor creates the physical replication slot if it is missing, runs
``pg_receivewal -D DIR -S SLOT --no-loop --verbose [--synchronous]`` with application_name set to
the slot name (so ``synchronous_standby_names = 'pgdr_receiver'`` names it), restarts it when it
exits with capped exponential backoff, logs every state change, and keeps
``DIR/receiver.status.json`` current (state, pid, restarts, last exit, stderr tail, heartbeat),
which pg_wal_archive reads. SIGTERM or SIGINT stop it cleanly: pg_receivewal gets SIGINT, flushes
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
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from contextlib import closing
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pgdr.wal.ship import ASIDE_PREFIX, GAPS_NAME, STATUS_NAME, read_gaps

DEFAULT_BINDIR = "/usr/lib/postgresql/15/bin"
DEFAULT_SLOT = "pgdr_receiver"

log = logging.getLogger("pgdr.wal_receiver")

# conninfo keywords a --conninfo-env string may carry, and libpq's environment variable for each
_CONNINFO_ENV = {
    "host": "PGHOST", "hostaddr": "PGHOSTADDR", "port": "PGPORT", "user": "PGUSER", "dbname": "PGDATABASE",
    "passfile": "PGPASSFILE", "sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT", "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY", "sslcrl": "PGSSLCRL", "connect_timeout": "PGCONNECT_TIMEOUT",
    "target_session_attrs": "PGTARGETSESSIONATTRS", "gssencmode": "PGGSSENCMODE",
    "channel_binding": "PGCHANNELBINDING", "service": "PGSERVICE", "options": "PGOPTIONS",
    "keepalives": None, "application_name": None,
}


def _now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


_ENV_KEYWORD = {variable: keyword for keyword, variable in _CONNINFO_ENV.items() if variable}


def sql_connect(env: dict, application_name: str = "pgdr_receiver_setup"):
    """A normal (SQL) connection from a libpq environment dict, autocommit: for reading and fixing
    the slot. Its application_name differs from the slot's so it never counts as the standby."""
    import psycopg2

    params = {keyword: env[variable] for variable, keyword in _ENV_KEYWORD.items() if env.get(variable)}
    if env.get("PGPASSWORD"):
        params["password"] = env["PGPASSWORD"]
    params.setdefault("dbname", "postgres")
    params.setdefault("connect_timeout", "15")
    params["application_name"] = application_name
    conn = psycopg2.connect(**params)
    conn.autocommit = True
    return conn


def plan_gap(files: list, restart_lsn: str, segment_size: int | None = None) -> dict | None:
    """Pure: the WAL the receiver can no longer get, once the server streams only from ``restart_lsn``.

    ``files``: the receiver directory's segments and partials (:func:`pgdr.wal.ship.scan`).
    pg_receivewal resumes after the newest file it sees; the files before the segment holding
    ``restart_lsn`` must move aside (``behind``) and the segments from the first one not fully
    received up to that segment are missing. None when nothing is missing.
    """
    from pgdr.wal.ship import (
        WAL_SEGMENT_SIZE,
        format_lsn,
        parse_lsn,
        parse_segment,
        read_segment_header,
        segment_name,
        segment_number,
        segment_of_partial,
        segments_per_log,
    )

    def segment(item) -> str:
        return item.name if item.kind == "segment" else segment_of_partial(item.name)

    wal = [f for f in files if f.kind in ("segment", "partial")]
    if segment_size is None:
        segment_size = WAL_SEGMENT_SIZE
        for item in wal:
            header = read_segment_header(item.path)
            if header is not None and header.segment_size:
                segment_size = header.segment_size
                break
    resume = parse_lsn(restart_lsn) // segment_size
    behind = [f for f in wal if segment_number(segment(f), segment_size) < resume]
    if not wal or len(behind) < len(wal):
        return None   # an empty directory starts at the slot; files at or past it: nothing is missing
    newest = max(behind, key=lambda f: (segment_number(segment(f), segment_size), f.kind == "partial"))
    first = segment_number(segment(newest), segment_size) + (0 if newest.kind == "partial" else 1)
    if first >= resume:
        return None
    timeline = parse_segment(segment(newest))[0]
    per_log = segments_per_log(segment_size)
    return {"behind": behind, "from_lsn": format_lsn(first * segment_size), "to_lsn": format_lsn(resume * segment_size),
            "timeline": timeline, "first_segment": segment_name(timeline, first // per_log, first % per_log),
            "last_segment": segment_name(timeline, (resume - 1) // per_log, (resume - 1) % per_log),
            "segments": resume - first, "partial_kept": newest.kind == "partial"}


class ConnInfo:
    """libpq environment for the receiver: the process environment, and a conninfo string read from
    the environment variable ``conninfo_env`` when given.

    A password from the conninfo is written to a passfile in a private directory (mode 0600,
    owned by ``owner`` when given, so a child run as that user can read it); :meth:`close` removes it.
    """

    def __init__(self, conninfo_env: str | None = None, owner: str | None = None) -> None:
        # the variable holding the conninfo is not handed on: the password goes to the passfile only
        self.env = {k: v for k, v in os.environ.items() if k != conninfo_env}
        self._private: str | None = None
        if conninfo_env is None:
            return
        conninfo = os.environ.get(conninfo_env)
        if not conninfo:
            raise ValueError(f"environment variable {conninfo_env} is empty or unset")
        from psycopg2.extensions import parse_dsn

        try:
            params = parse_dsn(conninfo)
        except Exception as err:  # noqa: BLE001 - psycopg2 quotes no secret, but say little anyway
            raise ValueError(f"the conninfo in the environment is not valid: {type(err).__name__}") from None
        password = params.pop("password", None)
        unknown = sorted(set(params) - set(_CONNINFO_ENV))
        if unknown:
            raise ValueError(f"conninfo keywords not supported here: {', '.join(unknown)}")
        for key, value in params.items():
            if _CONNINFO_ENV[key]:
                self.env[_CONNINFO_ENV[key]] = value
        if password is not None:
            self._private = tempfile.mkdtemp(prefix="pgdr-receiver-")
            passfile = Path(self._private) / "pgpass"
            escaped = password.replace("\\", "\\\\").replace(":", "\\:")
            fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(f"*:*:*:*:{escaped}\n")
            if owner:
                entry = pwd.getpwnam(owner)
                for path in (self._private, passfile):
                    os.chown(path, entry.pw_uid, entry.pw_gid)
            self.env["PGPASSFILE"] = str(passfile)

    def close(self) -> None:
        if self._private:
            shutil.rmtree(self._private, ignore_errors=True)
            self._private = None


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
        self._started_at = _now_iso()
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
            self.last_exit = {"rc": rc, "at": _now_iso(), "ran_seconds": round(ran, 1)}
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
            from pgdr.core.redaction import safe_error

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
        import psycopg2

        from pgdr.core.redaction import safe_error
        from pgdr.wal.ship import scan

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
        plan = plan_gap(scan(self.directory, aside=False), restart) if restart else None
        if plan is None:
            self._stderr_tail.clear()
            return True
        aside = self.directory / f"{ASIDE_PREFIX}{plan['first_segment']}"
        aside.mkdir(exist_ok=True)
        if self.run_as and os.geteuid() == 0:
            entry = pwd.getpwnam(self.run_as)
            os.chown(aside, entry.pw_uid, entry.pw_gid)
        for item in plan["behind"]:
            os.replace(item.path, aside / item.name)
        gap = {key: value for key, value in plan.items() if key != "behind"}
        gap.update(id=f"{_now_iso()}-{gap['to_lsn']}", detected_at=_now_iso(), slot=self.slot,
                   reason="replication slot lost (wal_status lost)" if lost else
                   "the server had removed WAL the receiver still needed",
                   moved_to=aside.name, unshipped=_unshipped(self.directory, [i.name for i in plan["behind"]]),
                   next_step="point-in-time recovery cannot cross this gap: take a new base backup")
        self._record_gap(gap)
        self.log.error("WAL GAP: %s; WAL %s .. %s (segments %s .. %s, %d) is lost for the archive; streaming "
                       "resumes at %s. A NEW BASE BACKUP IS NEEDED for point-in-time recovery past the gap "
                       "(trigger pg_backup_daily); the WAL before it was moved to %s and is still shipped",
                       gap["reason"], gap["from_lsn"], gap["to_lsn"], gap["first_segment"], gap["last_segment"],
                       gap["segments"], gap["to_lsn"], aside)
        self._stderr_tail.clear()
        return True

    def _record_gap(self, gap: dict) -> None:
        gaps = read_gaps(self.directory) + [gap]
        path = self.directory / GAPS_NAME
        fd, temp = tempfile.mkstemp(prefix=GAPS_NAME + ".", suffix=".tmp", dir=self.directory)
        with os.fdopen(fd, "w") as handle:
            json.dump({"gaps": gaps}, handle, indent=1)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(temp, 0o644)
        os.replace(temp, path)
        self._write_status()

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
            self.last_exit = {"rc": result.returncode, "at": _now_iso(), "ran_seconds": 0, "step": "create-slot"}
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
        self.last_exit = {"rc": child.returncode, "at": _now_iso(), "step": "stopped"}

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
                "directory": str(self.directory), "started_at": self._started_at, "updated_at": _now_iso(),
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


def _unshipped(directory: Path, names: list[str]) -> list[str]:
    """Which of ``names`` pg_wal_archive's ship state does not list as shipped (all when unknown)."""
    from pgdr.wal.ship import WalArchiveError, load_state

    try:
        state = load_state(directory)
    except WalArchiveError:
        return list(names)
    return [n for n in names if n not in state["segments"] and n not in state["partials"]]


def _describe_rc(rc: int | None) -> str:
    if rc is None:
        return "no exit code"
    if rc < 0:
        try:
            return f"signal {signal.Signals(-rc).name}"
        except ValueError:
            return f"signal {-rc}"
    return f"exit code {rc}"


# ---------------------------------------------------------------- the setup check

@dataclass(frozen=True)
class Finding:
    status: str      # ok | warn | fail
    topic: str
    message: str
    fix: str = ""


def parse_synchronous_standby_names(value: str) -> tuple[str, int, list[str]]:
    """('FIRST'|'ANY'|'', num_sync, names) for synchronous_standby_names; names folded as the server does."""
    text = (value or "").strip()
    if not text:
        return "", 0, []
    match = re.match(r"^(?:(FIRST|ANY)\s+)?(\d+)\s*\((.*)\)\s*$", text, re.IGNORECASE | re.DOTALL)
    if match:
        method, num, body = (match.group(1) or "FIRST").upper(), int(match.group(2)), match.group(3)
    else:
        method, num, body = "FIRST", 1, text
    names = []
    for raw in re.findall(r'"(?:[^"]|"")*"|[^,\s][^,]*', body):
        raw = raw.strip()
        if raw.startswith('"'):
            names.append(raw[1:-1].replace('""', '"'))
        elif raw:
            names.append(raw.lower())
    return method, num, names


def check_primary(env: dict, slot: str = DEFAULT_SLOT, directory: Path | None = None) -> list[Finding]:
    """Everything the primary (and this host) needs for the receiver, as findings."""
    import psycopg2
    from psycopg2.extras import PhysicalReplicationConnection

    findings: list[Finding] = []
    user = env.get("PGUSER") or "the connecting role"
    saved = {k: v for k, v in os.environ.items() if k.startswith("PG")}
    for key in saved:
        del os.environ[key]
    os.environ.update({k: v for k, v in env.items() if k.startswith("PG")})
    try:
        try:
            conn = psycopg2.connect(dbname=env.get("PGDATABASE") or "postgres", connect_timeout=15)
        except psycopg2.Error as err:
            return [Finding("fail", "connection", f"cannot connect: {str(err).strip()}",
                            "set PGHOST/PGPORT/PGUSER/PGPASSFILE (or --conninfo-env) for a role with REPLICATION")]
        conn.autocommit = True
        with closing(conn), conn.cursor() as cur:
            def setting(name: str) -> str:
                cur.execute("SELECT current_setting(%s)", (name,))
                return cur.fetchone()[0]

            cur.execute("SELECT current_user, version()")
            user, version = cur.fetchone()
            findings.append(Finding("ok", "connection", f"connected as {user}: {version.split(',')[0]}"))

            wal_level = setting("wal_level")
            findings.append(Finding("ok", "wal_level", f"wal_level = {wal_level}")
                            if wal_level in ("replica", "logical")
                            else Finding("fail", "wal_level",
                                         f"wal_level = {wal_level}; streaming needs replica or logical",
                                         "ALTER SYSTEM SET wal_level = 'replica'; then restart the server"))

            senders = int(setting("max_wal_senders"))
            cur.execute("SELECT count(*) FROM pg_stat_replication")
            used = cur.fetchone()[0]
            if senders < 1:
                findings.append(Finding("fail", "max_wal_senders", "max_wal_senders = 0: no replication connections",
                                        "ALTER SYSTEM SET max_wal_senders = 10; then restart the server"))
            elif used >= senders:
                findings.append(Finding("fail", "max_wal_senders", f"all {senders} WAL senders are in use",
                                        "raise max_wal_senders (restart needed)"))
            else:
                findings.append(Finding("ok", "max_wal_senders", f"max_wal_senders = {senders} ({used} in use)"))

            slots = int(setting("max_replication_slots"))
            if slots < 1:
                findings.append(Finding("fail", "max_replication_slots", "max_replication_slots = 0",
                                        "ALTER SYSTEM SET max_replication_slots = 10; then restart the server"))

            cur.execute("SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user")
            findings.append(Finding("ok", "role", f"role {user} may open replication connections")
                            if cur.fetchone()[0] else
                            Finding("fail", "role", f"role {user} lacks the REPLICATION attribute",
                                    f"ALTER ROLE {user} REPLICATION; (as a superuser)"))

            cur.execute("SELECT slot_type, active, wal_status, restart_lsn FROM pg_replication_slots "
                        "WHERE slot_name = %s", (slot,))
            row = cur.fetchone()
            if row is None:
                # a fresh set-up: the receiver creates its slot when it starts (the role may, see above)
                findings.append(Finding("ok", "slot", f"replication slot {slot} does not exist yet; the receiver "
                                        f"creates it when it starts"))
            elif row[0] != "physical":
                findings.append(Finding("fail", "slot", f"slot {slot} is a {row[0]} slot; the receiver needs a "
                                        f"physical one", f"SELECT pg_drop_replication_slot('{slot}'); then recreate"))
            elif row[2] == "lost":
                findings.append(Finding("fail", "slot", f"slot {slot} has lost WAL (wal_status lost): the "
                                        f"archive has a gap", "restart the receiver: it recreates the slot, records "
                                        "the gap (receiver.status.json, S3 state) and streams on; then take a new "
                                        "base backup (pg_backup_daily) for point-in-time recovery past the gap"))
            else:
                findings.append(Finding("ok", "slot", f"slot {slot} exists ({'active' if row[1] else 'inactive'}, "
                                        f"restart_lsn {row[3]}, wal_status {row[2]})"))

            cur.execute("SELECT application_name, sync_state, state FROM pg_stat_replication")
            connected = {name: (sync_state, state) for name, sync_state, state in cur.fetchall()}
            names_value = setting("synchronous_standby_names")
            method, num, names = parse_synchronous_standby_names(names_value)
            example = f"ALTER SYSTEM SET synchronous_standby_names = '{slot}'; SELECT pg_reload_conf();"
            waiting = bool(names) and len(connected if "*" in names else set(names) & set(connected)) < num
            if waiting:
                findings.append(Finding("fail", "synchronous_standby_names",
                                        f"synchronous_standby_names = '{names_value}' but fewer than {num} of "
                                        f"those standbys are connected: every commit on this server waits now",
                                        f"start the receiver first (python -m pgdr.wal_receiver --directory DIR "
                                        f"--slot {slot} --synchronous), or ALTER SYSTEM RESET "
                                        f"synchronous_standby_names; SELECT pg_reload_conf(); until it streams"))
            elif not names and slot not in connected:
                # the right order: the receiver streams first, then commits are made to wait for it
                findings.append(Finding("warn", "synchronous_standby_names",
                                        "synchronous_standby_names is empty: RPO = 0 needs it, but set it only once "
                                        "the receiver streams (before that every commit would wait)",
                                        f"start the receiver, then {example}"))
            elif not names:
                findings.append(Finding("fail", "synchronous_standby_names",
                                        "synchronous_standby_names is empty: commits do not wait for the receiver, "
                                        "so losing the primary can lose acknowledged commits (RPO > 0)",
                                        f"{example} (with a standby too: 'ANY 1 ({slot}, <standby>)')"))
            elif slot not in names and "*" not in names:
                findings.append(Finding("fail", "synchronous_standby_names",
                                        f"synchronous_standby_names = '{names_value}' does not name {slot}",
                                        f"add it, e.g. 'ANY 1 ({slot}, {', '.join(names)})'; SELECT pg_reload_conf();"))
            elif method == "FIRST" and slot in names and names.index(slot) >= num:
                findings.append(Finding("warn", "synchronous_standby_names",
                                        f"'{names_value}': {slot} is only a potential synchronous standby "
                                        f"(priority {names.index(slot) + 1}, FIRST {num})",
                                        f"prefer 'ANY 1 ({', '.join(names)})' or list {slot} first"))
            else:
                findings.append(Finding("ok", "synchronous_standby_names", f"synchronous_standby_names = "
                                        f"'{names_value}'" + (" (matches every standby)" if "*" in names else "")))

            commit = setting("synchronous_commit")
            if commit in ("off", "local"):
                findings.append(Finding("fail", "synchronous_commit", f"synchronous_commit = {commit}: commits do "
                                        f"not wait for any standby", "ALTER SYSTEM SET synchronous_commit = 'on';"))
            elif commit == "remote_apply":
                findings.append(Finding("fail", "synchronous_commit", "synchronous_commit = remote_apply: "
                                        "pg_receivewal never applies WAL, commits would wait forever",
                                        "ALTER SYSTEM SET synchronous_commit = 'on';"))
            else:
                findings.append(Finding("ok", "synchronous_commit", f"synchronous_commit = {commit}"))

            keep = setting("max_slot_wal_keep_size")
            if keep in ("-1", "-1MB"):
                findings.append(Finding("warn", "max_slot_wal_keep_size",
                                        "max_slot_wal_keep_size = -1: while the receiver is down the primary keeps "
                                        "all WAL for it, without limit", "watch pg_wal's disk, or set a limit "
                                        "(a receiver that falls behind it loses its slot and needs a new base backup)"))

            row = connected.get(slot)
            if row is None:
                findings.append(Finding("warn", "receiver", f"no receiver named {slot} is connected now" +
                                        ("; commits wait until one is" if waiting else "")))
            else:
                findings.append(Finding("ok", "receiver", f"{slot} is connected ({row[1]}, sync_state {row[0]})"))

        try:
            repl = psycopg2.connect(dbname=env.get("PGDATABASE") or "postgres", connect_timeout=15,
                                    connection_factory=PhysicalReplicationConnection)
            with repl.cursor() as cur:
                cur.execute("IDENTIFY_SYSTEM")
                system_id, timeline, position = cur.fetchone()[:3]
            repl.close()
            findings.append(Finding("ok", "pg_hba.conf", f"replication connection accepted (system {system_id}, "
                                    f"timeline {timeline}, at {position})"))
        except psycopg2.Error as err:
            host = env.get("PGHOST") or "the server"
            findings.append(Finding("fail", "pg_hba.conf", f"replication connection to {host} refused: "
                                    f"{str(err).strip().splitlines()[0]}",
                                    f"add to pg_hba.conf: host replication {user} <receiver address>/32 "
                                    f"scram-sha-256; then SELECT pg_reload_conf();"))
    finally:
        for key in [k for k in os.environ if k.startswith("PG")]:
            del os.environ[key]
        os.environ.update(saved)

    if directory is not None:
        directory = Path(directory)
        parent = next((p for p in directory.parents if p.exists()), None) if not directory.exists() else None
        if not directory.exists() and parent is not None and parent.is_dir() and os.access(parent, os.W_OK | os.X_OK):
            findings.append(Finding("ok", "directory", f"{directory} does not exist yet; the receiver creates it "
                                    f"when it starts ({parent} is writable)"))
        elif not directory.is_dir():
            findings.append(Finding("fail", "directory", f"{directory} does not exist and cannot be created here",
                                    f"mkdir -p {directory} (owned by the user running pg_receivewal)"))
        elif not os.access(directory, os.W_OK):
            findings.append(Finding("fail", "directory", f"{directory} is not writable by this user"))
        else:
            findings.append(Finding("ok", "directory", f"{directory} is writable"))
    return findings


def format_findings(findings: list[Finding]) -> str:
    lines = []
    for finding in findings:
        lines.append(f"{finding.status.upper():4}  {finding.topic}: {finding.message}")
        if finding.fix and finding.status != "ok":
            lines.append(f"      fix: {finding.fix}")
    failed = sum(f.status == "fail" for f in findings)
    lines.append("ready for the WAL receiver" if not failed else f"{failed} problem(s) to fix before RPO = 0 holds")
    return "\n".join(lines)


# ---------------------------------------------------------------- command line

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
        supervisor = Supervisor(args.directory, args.slot, synchronous=args.synchronous,
                                status_interval=args.status_interval, bindir=args.bindir, env=connection.env,
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
