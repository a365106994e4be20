"""The demo's continuous WAL: the receiver streaming synchronously, and pg_wal_archive shipping it.

The receiver is started the way a deployment starts it (``python -m pgdr.wal_receiver --synchronous``,
the password handed over in an environment variable, never in argv); once it streams, the primary
names it in ``synchronous_standby_names`` (before then every commit would wait), so a commit returns
only after the receiver has flushed it.

pg_wal_archive is ``@continuous``: Airflow starts the next run as soon as one ends, each run shipping for
``pgdr_wal_archive_window_minutes``. :class:`ArchiveLoop` does the same with ``dag.test`` runs in the
background, and stops the run in progress as Airflow stops a task (SIGTERM, the operator's on_kill),
which ends its window with one last ship. dag.test keeps its state in SQLite, which takes one writer at
a time, so the always-on archive runs get their own copy of the metadata database (the other DAGs run
meanwhile).
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from harness.pg_cluster import PgCluster

REPO_ROOT = Path(__file__).resolve().parents[1]
SLOT = "pgdr_receiver"
CONNINFO_ENV = "PGDR_DEMO_RECEIVER_CONNINFO"
SHIP_LINE = "lag before ship"    # one line per ship in pg_wal_archive's task log (pgdr.wal.ship.ship_window)


def start_receiver(cluster: PgCluster, directory: Path, user: str, password: str, log_path: Path) -> subprocess.Popen:
    """``python -m pgdr.wal_receiver --synchronous`` into ``directory``, as the backup role (REPLICATION)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW_CONN_", "PG"))}
    env[CONNINFO_ENV] = f"host={cluster.host} port={cluster.port} user={user} password={password}"
    env["PGDR_PG_BINDIR"] = str(cluster.bindir)
    env["PYTHONPATH"] = os.pathsep.join([str(REPO_ROOT / "plugins"), str(REPO_ROOT)])
    argv = [sys.executable, "-m", "pgdr.wal_receiver", "--directory", str(directory), "--slot", SLOT,
            "--synchronous", "--status-interval", "1", "--conninfo-env", CONNINFO_ENV, "--max-backoff", "2"]
    if os.geteuid() == 0:
        argv += ["--run-as", "postgres"]   # pg_receivewal as the server's user, as the tests run it
    with open(log_path, "ab") as log:
        return subprocess.Popen(argv, cwd=REPO_ROOT, env=env, stdin=subprocess.DEVNULL, stdout=log,
                                stderr=subprocess.STDOUT)


def stop_receiver(process: subprocess.Popen | None) -> None:
    """SIGTERM (the supervisor stops pg_receivewal with SIGINT, which flushes), then SIGKILL if it hangs."""
    if process is None or process.poll() is not None:
        return
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


def make_synchronous(cluster: PgCluster, receiver: subprocess.Popen, timeout: float = 60) -> str:
    """Wait for the receiver to stream, then name it in synchronous_standby_names and wait until the
    primary reports it ``sync``; returns the receiver's flush position."""
    deadline = time.monotonic() + timeout
    named = False
    while time.monotonic() < deadline:
        if receiver.poll() is not None:
            raise RuntimeError(f"the WAL receiver exited with {receiver.returncode}")
        rows = cluster.execute("SELECT sync_state, flush_lsn::text FROM pg_stat_replication "
                               "WHERE application_name = %s", params=(SLOT,))
        if rows and not named:
            cluster.execute(f"ALTER SYSTEM SET synchronous_standby_names = '{SLOT}'")
            cluster.execute("SELECT pg_reload_conf()")
            named = True
        elif rows and rows[0][0] == "sync":
            return rows[0][1]
        time.sleep(0.2)
    raise RuntimeError("the WAL receiver did not become a synchronous standby in time")


def receiver_status(directory: Path) -> dict:
    path = directory / "receiver.status.json"
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


class ArchiveLoop:
    """pg_wal_archive run after run in the background, as its ``@continuous`` schedule does."""

    def __init__(self, env: dict[str, str], airflow_db: Path, log_dir: Path) -> None:
        copy = airflow_db.with_name("airflow-wal-archive.db")
        shutil.copyfile(airflow_db, copy)
        self.env = {**env, "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{copy}"}
        self.log_dir = log_dir
        self.runs: list[dict] = []          # {"log": path, "state": ...} per run, the newest last
        self._finishing = threading.Event()
        self._killed = False
        self._process: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self._thread = threading.Thread(target=self._loop, name="pg_wal_archive", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def _done(self) -> bool:
        # finish() stopped a run that was shipping, and that run has ended
        return self._killed or (self._finishing.is_set() and bool(self.runs) and self.runs[-1].get("stopped", False)
                                and self.runs[-1]["state"] != "running")

    def _loop(self) -> None:
        while not self._done():
            log_path = self.log_dir / f"airflow-pg_wal_archive-{len(self.runs) + 1}.log"
            run = {"log": log_path, "state": "running"}
            with open(log_path, "wb") as log, self._lock:
                if self._killed:
                    return
                self.runs.append(run)
                self._process = subprocess.Popen([sys.executable, "-m", "harness.run_dag", "pg_wal_archive"],
                                                 cwd=REPO_ROOT, env=self.env, stdout=log, stderr=subprocess.STDOUT)
            returncode = self._process.wait()
            run["state"] = _final_state(log_path) if returncode == 0 else "failed"

    def ships(self) -> int:
        """Ships logged so far, over every run."""
        return sum(_read(run["log"]).count(SHIP_LINE) for run in self.runs)

    def wait_for_ships(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.ships() >= count:
                return True
            time.sleep(0.5)
        return False

    def finish(self, timeout: float) -> list[dict]:
        """Stop shipping the way Airflow stops a task: SIGTERM, on which ShipWalOperator.on_kill ends the
        window and the final ship begins, after this call. Start no other run. Returns the runs since the
        call, or [] when they did not end within ``timeout`` (then they are killed)."""
        deadline = time.monotonic() + timeout
        first = max(len(self.runs) - 1, 0)
        self._finishing.set()
        while self._thread.is_alive() and time.monotonic() < deadline:
            with self._lock:
                process, run = self._process, (self.runs[-1] if self.runs else None)
            # only once the task ships: its SIGTERM handler (on_kill) is installed then; before, SIGTERM kills
            if (run and not run.get("stopped") and process is not None and process.poll() is None
                    and SHIP_LINE in _read(run["log"])):
                run["stopped"] = True
                process.send_signal(signal.SIGTERM)
            time.sleep(0.2)
        if self._thread.is_alive():
            self.kill()
            return []
        return self.runs[first:]

    def kill(self) -> None:
        with self._lock:
            self._killed = True
            process = self._process
        if process is not None and process.poll() is None:
            process.kill()
            process.wait()
        if self._thread.is_alive():
            self._thread.join(10)


def _read(path: Path) -> str:
    try:
        return path.read_text(errors="replace")
    except OSError:
        return ""


def _final_state(log_path: Path) -> str:
    lines = _read(log_path).strip().splitlines()
    try:
        return json.loads(lines[-1]).get("state", "failed")
    except (IndexError, ValueError):
        return "failed"
