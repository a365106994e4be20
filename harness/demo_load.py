"""The demo's application and its disaster: writers committing audit events, then the primary's server
killed with SIGKILL (every process of it, as when its machine dies) and its data directory deleted.

A row counts as acknowledged only once the writer's COMMIT has returned: that is what the application
was told, and what RPO = 0 promises to keep. Rows whose COMMIT was sent but never answered (the kill
came first) are in doubt: they may or may not come back, and either is correct.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
import uuid
from pathlib import Path

import psycopg2

INSERT = ("INSERT INTO audit_events (event_id, event_type, resource, action, result, metadata) "
          "SELECT id, 'demo.check_in', 'visits', 'CHECK_IN', 'SUCCESS', jsonb_build_object('writer', %s) "
          "FROM unnest(%s::uuid[]) AS id")


class WriteLoad:
    """``writers`` connections each committing ``rows_per_commit`` audit events per transaction (then
    waiting ``pause`` seconds) until :meth:`stop` or until the server goes away under them."""

    def __init__(self, connect_params: dict, writers: int = 4, rows_per_commit: int = 5, pause: float = 0.0) -> None:
        self.connect_params = connect_params
        self.writers = writers
        self.rows_per_commit = rows_per_commit
        self.pause = pause   # seconds between a writer's commits (0: as fast as the server answers)
        self.acknowledged: list[str] = []   # event ids, appended only after COMMIT returned
        self.in_doubt: list[str] = []       # COMMIT sent, no answer: the server died first
        self.commits = 0
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._write, args=(n,), daemon=True, name=f"writer-{n}")
                         for n in range(writers)]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def stop(self, timeout: float = 30) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout)

    def _write(self, writer: int) -> None:
        try:
            conn = psycopg2.connect(**self.connect_params, connect_timeout=10,
                                    application_name=f"care_commons_app_writer_{writer}")
        except psycopg2.Error as err:
            with self._lock:
                self.errors.append(type(err).__name__)
            return
        try:
            while not self._stop.is_set():
                ids = [str(uuid.uuid4()) for _ in range(self.rows_per_commit)]
                try:
                    with conn.cursor() as cur:
                        cur.execute(INSERT, (writer, ids))
                except psycopg2.Error as err:
                    with self._lock:
                        self.errors.append(type(err).__name__)
                    return
                try:
                    conn.commit()
                except psycopg2.Error as err:   # sent, never answered: in doubt, not acknowledged
                    with self._lock:
                        self.in_doubt.extend(ids)
                        self.errors.append(type(err).__name__)
                    return
                with self._lock:
                    self.acknowledged.extend(ids)
                    self.commits += 1
                if self.pause:
                    self._stop.wait(self.pause)
        finally:
            conn.close()


def found(conn, ids: list[str]) -> set[str]:
    """Which of ``ids`` are in audit_events on ``conn``."""
    with conn.cursor() as cur:
        cur.execute("SELECT event_id::text FROM audit_events WHERE event_id = ANY(%s::uuid[])", (ids,))
        return {row[0] for row in cur.fetchall()}


def server_pids(data_dir: Path) -> list[int]:
    """Every process of the server whose data directory is ``data_dir`` (they all work in it)."""
    target = os.path.realpath(data_dir)
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                if os.readlink(f"/proc/{entry}/cwd") == target:
                    pids.append(int(entry))
            except OSError:
                continue
    return pids


def kill_server(data_dir: Path) -> int:
    """SIGKILL the postmaster, then every process of the server left, then delete the data directory;
    returns how many processes were killed."""
    killed = set()
    postmaster = int((data_dir / "postmaster.pid").read_text().split()[0])
    os.kill(postmaster, signal.SIGKILL)
    killed.add(postmaster)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = [pid for pid in server_pids(data_dir) if pid not in killed or _alive(pid)]
        if not left:
            break
        for pid in left:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            killed.add(pid)
        time.sleep(0.05)
    shutil.rmtree(data_dir)
    return len(killed)


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().split(")")[-1].split()[0] != "Z"
    except OSError:
        return False
