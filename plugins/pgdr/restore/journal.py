"""Crash safety of database restores: what a restore does, recorded in S3 before it does it.

A restore writes its journal to ``<prefix>/state/restores/<database>/<run>.json`` before it
creates anything and before each step of a replace's swap: the database it will create (its
name and the OID it is created with: ``CREATE DATABASE ... OID``, so pgdr knows the id before the
database exists), the pg_restore it started (host, pid, process start time), the swap's step.
A worker killed mid-restore (SIGKILL, a lost host) leaves its journal behind; the next
``prepare`` of pg_restore, the ``report`` of the same run, and ``drop_expired_replaced`` find it
and heal: they end the dead run's sessions and its pg_restore, drop the half-restored database
(only while its OID *and* name still match), roll an interrupted swap back (or finish it when the
restored copy already carries the live name), allow connections to the live database again, and
say what they found and what they did.

A replace's kept database is recorded by OID and name when the swap keeps it
(:func:`pgdr.restore.swap.record_replaced`); :func:`drop_expired_replaced` drops only those, and
only while both still match, never a protected database, a restore's target, or a name an open
journal works on.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime, timedelta, timezone

from pgdr.restore.swap import databases, drop_if_same, heal_swap, one, records_under, replaced_records
from pgdr.store.layout import report_key, restores_prefix

Connect = Callable[[str], object]   # database name -> an autocommit DB-API connection
# another host's restore counts as alive while its journal's heartbeat is this fresh
HEARTBEAT_SECONDS = 60
STALE_AFTER = timedelta(minutes=10)
_UNSAFE = re.compile(r"[^A-Za-z0-9_.:+=@-]")
FIRST_OID = 1 << 24      # OIDs pgdr picks for the databases it creates: far above what a cluster hands out


def _now() -> datetime:
    return datetime.now(timezone.utc)


def _iso(when: datetime) -> str:
    return when.isoformat(timespec="seconds")


# --- which process, on which host ------------------------------------------------------------

def _boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id") as handle:
            return handle.read().strip()
    except OSError:
        return ""


def process_start(pid: int) -> str | None:
    """The kernel's start time of ``pid`` (clock ticks since boot), telling a reused pid apart."""
    try:
        with open(f"/proc/{pid}/stat") as handle:
            stat = handle.read()
    except OSError:
        return None
    fields = stat[stat.rfind(")") + 2:].split()
    return fields[19] if len(fields) > 19 else None


def process_identity(pid: int) -> dict:
    return {"host": socket.gethostname(), "boot_id": _boot_id(), "pid": pid, "start": process_start(pid)}


def same_host(identity: dict) -> bool:
    return identity.get("host") == socket.gethostname() and identity.get("boot_id") == _boot_id()


def still_running(identity: dict) -> bool | None:
    """True/False for a process on this host (same pid and start time), None for another host's."""
    if not same_host(identity):
        return None
    start = process_start(int(identity["pid"]))
    return start is not None and start == identity.get("start")


# --- the journal -----------------------------------------------------------------------------

def journal_key(store, database: str, run_id: str) -> str:
    return f"{restores_prefix(store.prefix, database)}/{_UNSAFE.sub('_', run_id)[:200] or 'unknown'}.json"


def new_oid() -> int:
    return FIRST_OID + secrets.randbelow((1 << 31) - FIRST_OID)


class Journal:
    """One restore's record of what it is doing, rewritten in S3 before each step."""

    def __init__(self, store, database: str, run_id: str, document: dict) -> None:
        self.store = store
        self.database = database
        self.run_id = run_id
        self.key = journal_key(store, database, run_id)
        self.document = document
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._beat: threading.Thread | None = None

    @classmethod
    def begin(cls, store, *, database: str, run_id: str, target_conn_id: str, mode: str, names: dict,
              workdir: str, keep_until: str = "", backup_id: str = "") -> Journal:
        """Record the restore before it starts; the heartbeat shows other hosts it is alive."""
        token = secrets.token_hex(6)
        journal = cls(store, database, run_id, {
            "database": database, "run_id": run_id, "target_conn_id": target_conn_id, "mode": mode,
            "names": names, "workdir": workdir, "keep_until": keep_until, "backup_id": backup_id,
            "appname": f"pgdr restore {token}", "owner": process_identity(os.getpid()),
            "started_at": _iso(_now()), "step": "starting", "processes": [], "work": None, "swap": None})
        journal.write()
        journal._beat = threading.Thread(target=journal._heartbeat, daemon=True, name="pgdr-journal")
        journal._beat.start()
        return journal

    @property
    def appname(self) -> str:
        return self.document["appname"]

    def write(self) -> None:
        with self._lock:
            self.document["heartbeat_at"] = _iso(_now())
            self.store.put_json(self.key, self.document)

    def update(self, **fields) -> None:
        with self._lock:
            self.document.update(fields)
        self.write()

    def _heartbeat(self) -> None:
        while not self._stop.wait(HEARTBEAT_SECONDS):
            try:
                self.write()
            except Exception:  # noqa: BLE001 - the next beat tries again
                pass

    def stop(self) -> None:
        self._stop.set()
        if self._beat is not None and self._beat is not threading.current_thread():
            self._beat.join(timeout=60)   # a beat in flight must not re-create a deleted journal

    def finish(self) -> None:
        """The restore is over and left nothing to heal: forget it."""
        self.stop()
        self.store.delete_all_versions([self.key])


def open_journals(store, database: str | None = None) -> list[tuple[str, dict]]:
    return records_under(store, restores_prefix(store.prefix, database))


def journal_alive(document: dict, now: datetime | None = None) -> bool:
    """Is the restore that wrote this journal still running?"""
    owner = document.get("owner") or {}
    if same_host(owner) and int(owner.get("pid") or 0) == os.getpid():
        return False   # this very process ran it (dag.test runs every task in one) and is past it now
    running = still_running(owner)
    if running is not None:
        return running
    try:
        beat = datetime.fromisoformat(document.get("heartbeat_at") or "")
    except ValueError:
        return False
    return (now or _now()) - beat < STALE_AFTER


# --- kept databases --------------------------------------------------------------------------

def drop_expired_replaced(store, database: str, *, connect_for: Callable[[str], Connect], default_conn_id: str,
                          protected: Iterable[str], now: datetime, log: logging.Logger) -> dict:
    """Drop the kept databases recorded for ``database`` whose keep-until time has passed.

    A record whose database was renamed (a rollback), dropped by hand, or whose name now belongs
    to another database is forgotten, and nothing is dropped for it. Names in ``protected`` and
    the names any open restore journal works on are never dropped.
    """
    protected = set(protected)
    busy = set()
    for _, journal in open_journals(store):
        busy.update(v for v in (journal.get("names") or {}).values() if v)
        busy.update(v for v in ((journal.get("swap") or {}).get("live"), (journal.get("work") or {}).get("name")) if v)
    outcome = {"dropped": [], "waiting": [], "forgotten": [], "refused": []}
    for key, record in replaced_records(store, database):
        name, oid = record.get("kept_database"), record.get("oid")
        try:
            expired = datetime.fromisoformat(record["keep_until"]) <= now
        except (KeyError, TypeError, ValueError):
            expired = False
        if not expired:
            outcome["waiting"].append({"database": name, "keep_until": record.get("keep_until")})
            continue
        if name in protected or name in busy or name == record.get("live_database"):
            log.warning("not dropping %s: it is a protected database or a restore's target", name)
            outcome["refused"].append({"database": name, "why": "protected database or a restore target"})
            continue
        conn = connect_for(record.get("target_conn_id") or default_conn_id)("postgres")
        try:
            found = databases(conn)
            current = found.get(int(oid)) if oid is not None else None
            if current is not None and current[0] == name:
                if drop_if_same(conn, name, oid, log):
                    outcome["dropped"].append(name)
            else:
                if current is not None:
                    why = f"renamed to {current[0]!r} since (a rollback?)"
                elif name in {n for n, _ in found.values()}:
                    why = "the name now belongs to another database"
                else:
                    why = "no longer exists"
                log.info("forgetting kept database %s (oid %s): %s; nothing dropped", name, oid, why)
                outcome["forgotten"].append({"database": name, "oid": oid, "why": why})
        finally:
            conn.close()
        store.delete_all_versions([key])
    return outcome


# --- healing after a dead restore ----------------------------------------------------------

def _kill_group(identity: dict, log: logging.Logger) -> str:
    """Stop a pg_restore (and its parallel workers, one process group) a dead restore left running."""
    running = still_running(identity)
    if running is None:
        return (f"pg_restore pid {identity.get('pid')} ran on host {identity.get('host')}: not reachable from "
                "here; its sessions were ended")
    if not running:
        return ""
    pid = int(identity["pid"])
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pid, sig)
        except ProcessLookupError:
            break
        for _ in range(50):
            if not still_running(identity):
                break
            time.sleep(0.1)
        if not still_running(identity):
            break
    log.warning("stopped pg_restore pid %s left running by a dead restore", pid)
    return f"stopped pg_restore (pid {pid}) left running"


def pg_restores_reading(workdir: str) -> list[int]:
    """pg_restore processes on this host whose arguments name a path under ``workdir``: what a restore
    killed before its journal could name its pg_restore (one S3 write after the start) left running."""
    inside = os.path.join(workdir, "")
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/comm") as handle:
                if handle.read().strip() != "pg_restore":
                    continue
            with open(f"/proc/{entry}/cmdline", "rb") as handle:
                args = handle.read().split(b"\0")[1:]
        except OSError:
            continue
        if any(arg.decode(errors="replace").startswith(inside) for arg in args):
            found.append(int(entry))
    return found


def _unnamed_pg_restores(journal: dict, log: logging.Logger) -> list[str]:
    """Stop the pg_restore groups reading the dead restore's staging directory that its journal does not name."""
    workdir = journal.get("workdir")
    if not workdir or not same_host(journal.get("owner") or {}):
        return []
    named = {int(p["pid"]) for p in journal.get("processes") or [] if p.get("pid") is not None}
    said = []
    for pid in pg_restores_reading(workdir):
        try:
            group = os.getpgid(pid)
        except ProcessLookupError:
            continue
        if group in named:
            continue
        named.add(group)
        stopped = _kill_group(process_identity(group), log)
        if stopped:
            said.append(stopped.replace("left running", "left running before the journal named it"))
    return said


def heal_journal(store, key: str, journal: dict, connect: Connect, log: logging.Logger) -> dict:
    """Undo (or finish) what a dead restore left; returns what was found, done and left."""
    done: list[str] = []
    left: list[str] = []
    names = journal.get("names") or {}
    conn = connect("postgres")
    try:
        (ended,) = one(conn, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE "
                           "application_name = %s AND pid <> pg_backend_pid()", (journal.get("appname"),))
        if ended:
            done.append(f"ended {ended} session(s) of the dead restore")
        for identity in journal.get("processes") or []:
            said = _kill_group(identity, log)
            if said:
                done.append(said)
        done.extend(_unnamed_pg_restores(journal, log))
        time.sleep(0.2)
        found = databases(conn)
        work = journal.get("work") or {}
        swap = journal.get("swap") or {}
        work_oid = work.get("oid")
        work_now = found.get(int(work_oid)) if work_oid is not None else None
        if swap:
            heal_swap(store, journal, swap, work, found, conn, done, left, log)
        elif work_now is not None:
            if work_now[0] == work.get("name"):
                drop_if_same(conn, work["name"], work_oid, log)
                done.append(f"dropped the half-restored database {work['name']}")
            elif work_now[0] == names.get("target_database") and journal.get("step") in ("renaming to the final name",
                                                                                         "done"):
                done.append(f"database {work_now[0]} had been restored and verified before the worker died; kept")
            else:
                left.append(f"database {work_now[0]} (oid {work_oid}, created by the dead restore as "
                            f"{work.get('name')}) was renamed since; left as it is")
        schema = names.get("recovered_schema")
        if schema and journal.get("step") == "moving the tables":
            left.append(f"schema {schema} of {names.get('target_database')} may hold unverified recovered tables; "
                        "check it or drop it")
    finally:
        conn.close()
    workdir = journal.get("workdir")
    if workdir and same_host(journal.get("owner") or {}) and os.path.isdir(workdir):
        import shutil

        shutil.rmtree(workdir, ignore_errors=True)
        done.append(f"removed the staging directory {workdir}")
    if not left:
        store.delete_all_versions([key])
    return {"run_id": journal.get("run_id"), "mode": journal.get("mode"), "step": journal.get("step"),
            "started_at": journal.get("started_at"), "done": done, "left": left}


def heal(store, database: str, *, connect_for: Callable[[str], Connect], default_conn_id: str,
         log: logging.Logger, run_id: str | None = None, now: datetime | None = None) -> list[dict]:
    """Heal every journal of ``database`` left by a dead restore (or only ``run_id``'s)."""
    reports = []
    for key, journal in open_journals(store, database):
        if run_id is not None and journal.get("run_id") != run_id:
            continue
        if journal_alive(journal, now):
            log.info("restore run %s still runs (%s); not touched", journal.get("run_id"),
                     (journal.get("owner") or {}).get("host"))
            continue
        log.warning("restore run %s died during '%s'; healing what it left", journal.get("run_id"),
                    journal.get("step"))
        try:
            report = heal_journal(store, key, journal,
                                  connect_for(journal.get("target_conn_id") or default_conn_id), log)
        except Exception as err:  # noqa: BLE001 - the journal stays; the next run tries again
            from pgdr.core.redaction import safe_error

            report = {"run_id": journal.get("run_id"), "mode": journal.get("mode"), "step": journal.get("step"),
                      "started_at": journal.get("started_at"), "done": [],
                      "left": [f"could not heal (tried again by the next run): {safe_error(err)}"]}
        for line in report["done"]:
            log.warning("healed: %s", line)
        for line in report["left"]:
            log.error("NOT healed: %s", line)
        reports.append(report)
    return reports


def record_heal(store, database: str, reports: list[dict], healed_by: str) -> str:
    """The record of a heal, beside the restore records (``<prefix>/reports/restore/``); returns its key."""
    from pgdr.store.manifest import new_backup_id

    left = any(r["left"] for r in reports)
    return store.put_json(report_key(store.prefix, "restore", new_backup_id(), database, suffix="-healed"), {
        "kind": "restore_heal", "database": database, "run_id": healed_by, "written_at": _iso(_now()),
        "interrupted": reports, "status": "left" if left else "healed"})


def describe_heal(reports: list[dict]) -> str:
    lines = []
    for report in reports:
        lines.append(f"restore run {report['run_id']} ({report.get('mode')}) died during '{report.get('step')}'")
        lines += [f"  cleaned: {line}" for line in report["done"]]
        lines += [f"  LEFT: {line}" for line in report["left"]]
    return "\n".join(lines)
