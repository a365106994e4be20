"""What the primary (and this host) needs for the WAL receiver, checked: ``python -m pgdr.wal_receiver --check``.

One small function per setting, each returning a :class:`Finding` (ok, warn or fail, with the fix);
:func:`check_primary` connects once (from the libpq environment dict, :mod:`pgdr.wal.conninfo`) and
runs them all, then tries a replication connection as pg_receivewal would.
"""

from __future__ import annotations

import os
import re
from contextlib import closing
from dataclasses import dataclass
from pathlib import Path

import psycopg2
from psycopg2.extras import PhysicalReplicationConnection

from pgdr.wal.conninfo import connect_params

DEFAULT_SLOT = "pgdr_receiver"


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


def _setting(cur, name: str) -> str:
    cur.execute("SELECT current_setting(%s)", (name,))
    return cur.fetchone()[0]


def check_wal_level(cur) -> Finding:
    wal_level = _setting(cur, "wal_level")
    if wal_level in ("replica", "logical"):
        return Finding("ok", "wal_level", f"wal_level = {wal_level}")
    return Finding("fail", "wal_level", f"wal_level = {wal_level}; streaming needs replica or logical",
                   "ALTER SYSTEM SET wal_level = 'replica'; then restart the server")


def check_wal_senders(cur) -> Finding:
    senders = int(_setting(cur, "max_wal_senders"))
    cur.execute("SELECT count(*) FROM pg_stat_replication")
    used = cur.fetchone()[0]
    if senders < 1:
        return Finding("fail", "max_wal_senders", "max_wal_senders = 0: no replication connections",
                       "ALTER SYSTEM SET max_wal_senders = 10; then restart the server")
    if used >= senders:
        return Finding("fail", "max_wal_senders", f"all {senders} WAL senders are in use",
                       "raise max_wal_senders (restart needed)")
    return Finding("ok", "max_wal_senders", f"max_wal_senders = {senders} ({used} in use)")


def check_replication_slots(cur) -> Finding | None:
    if int(_setting(cur, "max_replication_slots")) < 1:
        return Finding("fail", "max_replication_slots", "max_replication_slots = 0",
                       "ALTER SYSTEM SET max_replication_slots = 10; then restart the server")
    return None


def check_role(cur, user: str) -> Finding:
    cur.execute("SELECT rolreplication OR rolsuper FROM pg_roles WHERE rolname = current_user")
    if cur.fetchone()[0]:
        return Finding("ok", "role", f"role {user} may open replication connections")
    return Finding("fail", "role", f"role {user} lacks the REPLICATION attribute",
                   f"ALTER ROLE {user} REPLICATION; (as a superuser)")


def check_slot(cur, slot: str) -> Finding:
    cur.execute("SELECT slot_type, active, wal_status, restart_lsn FROM pg_replication_slots "
                "WHERE slot_name = %s", (slot,))
    row = cur.fetchone()
    if row is None:
        # a fresh set-up: the receiver creates its slot when it starts (the role may, see check_role)
        return Finding("ok", "slot", f"replication slot {slot} does not exist yet; the receiver "
                       f"creates it when it starts")
    if row[0] != "physical":
        return Finding("fail", "slot", f"slot {slot} is a {row[0]} slot; the receiver needs a "
                       f"physical one", f"SELECT pg_drop_replication_slot('{slot}'); then recreate")
    if row[2] == "lost":
        return Finding("fail", "slot", f"slot {slot} has lost WAL (wal_status lost): the "
                       f"archive has a gap", "restart the receiver: it recreates the slot, records "
                       "the gap (receiver.status.json, S3 state) and streams on; then take a new "
                       "base backup (pg_backup_daily) for point-in-time recovery past the gap")
    return Finding("ok", "slot", f"slot {slot} exists ({'active' if row[1] else 'inactive'}, "
                   f"restart_lsn {row[3]}, wal_status {row[2]})")


def check_standby_names(names_value: str, slot: str, connected: dict) -> tuple[Finding, bool]:
    """(finding, whether commits wait now for standbys that are not connected)."""
    method, num, names = parse_synchronous_standby_names(names_value)
    example = f"ALTER SYSTEM SET synchronous_standby_names = '{slot}'; SELECT pg_reload_conf();"
    waiting = bool(names) and len(connected if "*" in names else set(names) & set(connected)) < num
    if waiting:
        return Finding("fail", "synchronous_standby_names",
                       f"synchronous_standby_names = '{names_value}' but fewer than {num} of "
                       f"those standbys are connected: every commit on this server waits now",
                       f"start the receiver first (python -m pgdr.wal_receiver --directory DIR "
                       f"--slot {slot} --synchronous), or ALTER SYSTEM RESET "
                       f"synchronous_standby_names; SELECT pg_reload_conf(); until it streams"), waiting
    if not names and slot not in connected:
        # the right order: the receiver streams first, then commits are made to wait for it
        return Finding("warn", "synchronous_standby_names",
                       "synchronous_standby_names is empty: RPO = 0 needs it, but set it only once "
                       "the receiver streams (before that every commit would wait)",
                       f"start the receiver, then {example}"), waiting
    if not names:
        return Finding("fail", "synchronous_standby_names",
                       "synchronous_standby_names is empty: commits do not wait for the receiver, "
                       "so losing the primary can lose acknowledged commits (RPO > 0)",
                       f"{example} (with a standby too: 'ANY 1 ({slot}, <standby>)')"), waiting
    if slot not in names and "*" not in names:
        return Finding("fail", "synchronous_standby_names",
                       f"synchronous_standby_names = '{names_value}' does not name {slot}",
                       f"add it, e.g. 'ANY 1 ({slot}, {', '.join(names)})'; SELECT pg_reload_conf();"), waiting
    if method == "FIRST" and slot in names and names.index(slot) >= num:
        return Finding("warn", "synchronous_standby_names",
                       f"'{names_value}': {slot} is only a potential synchronous standby "
                       f"(priority {names.index(slot) + 1}, FIRST {num})",
                       f"prefer 'ANY 1 ({', '.join(names)})' or list {slot} first"), waiting
    return Finding("ok", "synchronous_standby_names", f"synchronous_standby_names = "
                   f"'{names_value}'" + (" (matches every standby)" if "*" in names else "")), waiting


def check_synchronous_commit(cur) -> Finding:
    commit = _setting(cur, "synchronous_commit")
    if commit in ("off", "local"):
        return Finding("fail", "synchronous_commit", f"synchronous_commit = {commit}: commits do "
                       f"not wait for any standby", "ALTER SYSTEM SET synchronous_commit = 'on';")
    if commit == "remote_apply":
        return Finding("fail", "synchronous_commit", "synchronous_commit = remote_apply: "
                       "pg_receivewal never applies WAL, commits would wait forever",
                       "ALTER SYSTEM SET synchronous_commit = 'on';")
    return Finding("ok", "synchronous_commit", f"synchronous_commit = {commit}")


def check_slot_keep_size(cur) -> Finding | None:
    if _setting(cur, "max_slot_wal_keep_size") in ("-1", "-1MB"):
        return Finding("warn", "max_slot_wal_keep_size",
                       "max_slot_wal_keep_size = -1: while the receiver is down the primary keeps "
                       "all WAL for it, without limit", "watch pg_wal's disk, or set a limit "
                       "(a receiver that falls behind it loses its slot and needs a new base backup)")
    return None


def check_receiver_connected(slot: str, connected: dict, waiting: bool) -> Finding:
    row = connected.get(slot)
    if row is None:
        return Finding("warn", "receiver", f"no receiver named {slot} is connected now" +
                       ("; commits wait until one is" if waiting else ""))
    return Finding("ok", "receiver", f"{slot} is connected ({row[1]}, sync_state {row[0]})")


def check_replication_connection(params: dict, host: str, user: str) -> Finding:
    """pg_hba.conf lets this role open a replication connection from here, as pg_receivewal does."""
    try:
        with closing(psycopg2.connect(**params, connection_factory=PhysicalReplicationConnection)) as repl:
            with repl.cursor() as cur:
                cur.execute("IDENTIFY_SYSTEM")
                system_id, timeline, position = cur.fetchone()[:3]
    except psycopg2.Error as err:
        return Finding("fail", "pg_hba.conf", f"replication connection to {host} refused: "
                       f"{str(err).strip().splitlines()[0]}",
                       f"add to pg_hba.conf: host replication {user} <receiver address>/32 "
                       f"scram-sha-256; then SELECT pg_reload_conf();")
    return Finding("ok", "pg_hba.conf", f"replication connection accepted (system {system_id}, "
                   f"timeline {timeline}, at {position})")


def check_directory(directory: Path) -> Finding:
    directory = Path(directory)
    parent = next((p for p in directory.parents if p.exists()), None) if not directory.exists() else None
    if not directory.exists() and parent is not None and parent.is_dir() and os.access(parent, os.W_OK | os.X_OK):
        return Finding("ok", "directory", f"{directory} does not exist yet; the receiver creates it "
                       f"when it starts ({parent} is writable)")
    if not directory.is_dir():
        return Finding("fail", "directory", f"{directory} does not exist and cannot be created here",
                       f"mkdir -p {directory} (owned by the user running pg_receivewal)")
    if not os.access(directory, os.W_OK):
        return Finding("fail", "directory", f"{directory} is not writable by this user")
    return Finding("ok", "directory", f"{directory} is writable")


def check_primary(env: dict, slot: str = DEFAULT_SLOT, directory: Path | None = None) -> list[Finding]:
    """Everything the primary (and this host) needs for the receiver, as findings.

    ``env``: the libpq environment (:class:`pgdr.wal.conninfo.ConnInfo`); the connection takes its
    parameters from it, never from this process's environment."""
    params = connect_params(env)
    user = env.get("PGUSER") or "the connecting role"
    try:
        conn = psycopg2.connect(**params)
    except psycopg2.Error as err:
        return [Finding("fail", "connection", f"cannot connect: {str(err).strip()}",
                        "set PGHOST/PGPORT/PGUSER/PGPASSFILE (or --conninfo-env) for a role with REPLICATION")]
    conn.autocommit = True
    findings: list[Finding | None] = []
    with closing(conn), conn.cursor() as cur:
        cur.execute("SELECT current_user, version()")
        user, version = cur.fetchone()
        findings.append(Finding("ok", "connection", f"connected as {user}: {version.split(',')[0]}"))
        findings += [check_wal_level(cur), check_wal_senders(cur), check_replication_slots(cur), check_role(cur, user),
                     check_slot(cur, slot)]
        cur.execute("SELECT application_name, sync_state, state FROM pg_stat_replication")
        connected = {name: (sync_state, state) for name, sync_state, state in cur.fetchall()}
        names, waiting = check_standby_names(_setting(cur, "synchronous_standby_names"), slot, connected)
        findings += [names, check_synchronous_commit(cur), check_slot_keep_size(cur),
                     check_receiver_connected(slot, connected, waiting)]
    findings.append(check_replication_connection(params, env.get("PGHOST") or "the server", user))
    if directory is not None:
        findings.append(check_directory(directory))
    return [f for f in findings if f is not None]


def format_findings(findings: list[Finding]) -> str:
    lines = []
    for finding in findings:
        lines.append(f"{finding.status.upper():4}  {finding.topic}: {finding.message}")
        if finding.fix and finding.status != "ok":
            lines.append(f"      fix: {finding.fix}")
    failed = sum(f.status == "fail" for f in findings)
    lines.append("ready for the WAL receiver" if not failed else f"{failed} problem(s) to fix before RPO = 0 holds")
    return "\n".join(lines)
