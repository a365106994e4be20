"""The swap of a ``replace`` restore, and the databases pgdr keeps and drops by OID.

A replace restores the backup into a new database first; once it is verified, :func:`swap_in`
renames the live database away and the restored copy into its place, inside a short window in
which connections to the live database are refused. The old database is kept, renamed, and
recorded in ``<prefix>/state/replaced/<database>/<name>.json`` by OID and name
(:func:`record_replaced`): that record is the only reason pgdr ever drops a database it did not
create in the same run (:func:`pgdr.restore.journal.drop_expired_replaced`). A database comment
decides nothing: a rename or a dump carries it to another database.

Every drop here goes by OID *and* name (:func:`drop_if_same`), so a database someone else made
under a name pgdr meant to use is never dropped. :func:`heal_swap` puts right a swap a killed
worker left part-way, from what its journal recorded.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable
from datetime import datetime, timezone

from pgdr.restore.sql_rewrite import quote_ident
from pgdr.store.layout import replaced_prefix

_UNSAFE = re.compile(r"[^A-Za-z0-9_.:+=@-]")


# --- statements on an autocommit connection (psycopg 2 or 3, whichever the postgres hook uses) ----

def one(conn, query: str, params=None):
    with conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchone()


def rows(conn, query: str, params=None) -> list[tuple]:
    with conn.cursor() as cur:
        cur.execute(query, params)
        return cur.fetchall()


def run(conn, query: str, params=None) -> None:
    with conn.cursor() as cur:
        cur.execute(query, params)


# --- databases by name and OID -------------------------------------------------------------------

def database_exists(conn, name: str) -> bool:
    return one(conn, "SELECT count(*) FROM pg_database WHERE datname = %s", (name,))[0] > 0


def databases(conn) -> dict[int, tuple[str, bool]]:
    """oid -> (name, allows connections) of every database of the server."""
    return {int(oid): (name, allow) for oid, name, allow in
            rows(conn, "SELECT oid::bigint, datname, datallowconn FROM pg_database")}


def drop_database(conn, name: str, log: logging.Logger) -> None:
    """Drop ``name`` whoever made it: only for a name only pgdr uses (a drill's scratch database)."""
    run(conn, f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
    log.info("dropped database %s", name)


def drop_if_same(conn, name: str, oid: int, log: logging.Logger) -> bool:
    """Drop ``name`` only while the database of that name is still the one with ``oid``."""
    current = databases(conn).get(int(oid))
    if current is None or current[0] != name:
        return False
    run(conn, f"DROP DATABASE IF EXISTS {quote_ident(name)} WITH (FORCE)")
    log.info("dropped database %s (oid %s)", name, oid)
    return True


def _allow_connections(conn, name: str, allowed: bool) -> None:
    run(conn, f"ALTER DATABASE {quote_ident(name)} WITH ALLOW_CONNECTIONS {str(bool(allowed)).lower()}")


def _rename(conn, old: str, new: str) -> None:
    run(conn, f"ALTER DATABASE {quote_ident(old)} RENAME TO {quote_ident(new)}")


# --- kept databases ------------------------------------------------------------------------------

def record_replaced(store, *, database: str, target_conn_id: str, server: str, kept: str, oid: int, live: str,
                    run_id: str, backup_id: str, keep_until: str) -> str:
    """The database a replace kept, by OID and name: the only kind of database pgdr drops later."""
    return store.put_json(f"{replaced_prefix(store.prefix, database)}/{_UNSAFE.sub('_', kept)}.json", {
        "database": database, "target_conn_id": target_conn_id, "server": server, "kept_database": kept,
        "oid": int(oid), "live_database": live, "run_id": run_id, "backup_id": backup_id,
        "kept_at": datetime.now(timezone.utc).isoformat(timespec="seconds"), "keep_until": keep_until})


def records_under(store, prefix: str) -> list[tuple[str, dict]]:
    """(key, document) of every JSON record under ``prefix``; one gone meanwhile is skipped."""
    found = []
    for key in store.list_keys(prefix):
        document = store.read_json_or_none(key)
        if document:
            found.append((key, document))
    return found


def replaced_records(store, database: str) -> list[tuple[str, dict]]:
    return records_under(store, replaced_prefix(store.prefix, database))


# --- the swap ------------------------------------------------------------------------------------

def swap_in(conn, *, live: str, incoming: str, kept: str, server: str, note: Callable[..., None],
            swapped: Callable[[int], None]) -> tuple[int, int, float]:
    """Rename ``live`` to ``kept`` and ``incoming`` to ``live``, inside a short window.

    Each step is journalled (``note``) before it is taken: the heal of a killed run reads where
    each database is by OID and rolls back, or finishes once the restored copy holds the live
    name. ``swapped(live_oid)`` runs as soon as the restored copy holds the live name (it records
    the kept database). A failure before that puts the live database back as it was. Returns
    (the kept database's OID, sessions ended, seconds the live name was unavailable).
    """
    live_oid, allowed = one(conn, "SELECT oid::bigint, datallowconn FROM pg_database WHERE datname = %s", (live,))
    live_oid, allowed = int(live_oid), bool(allowed)
    note(step="swap: refusing connections to the live database",
         swap={"live": live, "live_oid": live_oid, "kept": kept, "allowed": allowed, "server": server})
    window = time.monotonic()
    _allow_connections(conn, live, False)
    try:
        ended = one(conn, "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                          "WHERE datname = %s AND pid <> pg_backend_pid()", (live,))[0]
        for _ in range(100):
            if not one(conn, "SELECT count(*) FROM pg_stat_activity WHERE datname = %s", (live,))[0]:
                break
            time.sleep(0.05)
        note(step="swap: renaming the live database away")
        _rename(conn, live, kept)
    except BaseException:
        _allow_connections(conn, live, allowed)
        raise
    try:
        note(step="swap: renaming the restored copy into place")
        _rename(conn, incoming, live)
    except BaseException:
        # put the live database back as it was; the incoming copy is dropped as a failed restore
        _rename(conn, kept, live)
        _allow_connections(conn, live, allowed)
        raise
    seconds = time.monotonic() - window
    swapped(live_oid)
    note(step="swap: connections to the kept database")
    _allow_connections(conn, kept, allowed)
    note(step="done")
    return live_oid, ended, seconds


def heal_swap(store, journal: dict, swap: dict, work: dict, found: dict[int, tuple[str, bool]], conn,
              done: list[str], left: list[str], log: logging.Logger) -> None:
    """Finish or roll back a swap a dead restore left part-way, going by OID (``found``: :func:`databases`)."""
    live, kept, incoming = swap["live"], swap["kept"], work.get("name")
    live_oid, work_oid = int(swap["live_oid"]), int(work["oid"])
    old, new = found.get(live_oid), found.get(work_oid)
    names_now = {name for name, _ in found.values()}
    allowed = swap.get("allowed", True)
    if new is not None and new[0] == live:
        # the restored copy already carries the live name: the swap happened; finish it
        if old is not None and old[0] == kept:
            _allow_connections(conn, kept, allowed)
            record_replaced(store, database=journal["database"], target_conn_id=journal.get("target_conn_id", ""),
                            server=swap.get("server", ""), kept=kept, oid=live_oid, live=live,
                            run_id=journal.get("run_id", ""), backup_id=journal.get("backup_id", ""),
                            keep_until=journal.get("keep_until")
                            or datetime.now(timezone.utc).isoformat(timespec="seconds"))
        done.append(f"the swap had completed: {live} holds the restored backup; the old database is kept as {kept}")
        return
    if old is not None and old[0] == kept and live not in names_now:
        _rename(conn, kept, live)
        done.append(f"rolled the interrupted swap back: renamed {kept} to {live} again")
        old = (live, old[1])
    if old is not None and old[0] == live:
        if not old[1] and allowed:
            _allow_connections(conn, live, True)
            done.append(f"allowed connections to {live} again")
        if new is not None and new[0] == incoming:
            drop_if_same(conn, incoming, work_oid, log)
            done.append(f"dropped the restored copy {incoming} (the replace did not happen)")
        return
    left.append(f"the swap of {live} was interrupted and the databases are not as pgdr left them "
                f"(oid {live_oid}: {old[0] if old else 'gone'}, oid {work_oid}: {new[0] if new else 'gone'}); "
                "left as they are, check by hand")
