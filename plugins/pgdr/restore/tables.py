"""Single tables out of a backup, and the row counts every restore is checked against.

``tables`` mode restores the schema and only the chosen tables' data into a scratch database:
the dump's table of contents (``pg_restore --list``) is filtered here (:func:`tables_list`,
:func:`data_objects_for_tables`), then :func:`move_tables` moves the tables into schema
``recovered_<time>`` of the target database, in one transaction, and checks their counts there.
The point-in-time path moves tables the same way out of a recovered cluster.

Every restore ends with each table's row count compared with the manifest
(:func:`count_rows`, :func:`compare_counts`); a difference fails the restore
(:class:`RestoreFailed`) and what it created is dropped.
"""

from __future__ import annotations

import dataclasses
import logging
import re
import subprocess
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pgdr.core import sqlfiles as sql
from pgdr.core.pgtools import PgTarget, libpq_env, stderr_tail, tool_path
from pgdr.errors import PgdrError
from pgdr.restore.sql_rewrite import quote_ident
from pgdr.restore.swap import one, rows, run

Connect = Callable[[str], object]   # database name -> an autocommit DB-API connection

# pg_restore --list entry types restored before the data in tables mode
_PRE_DATA_TYPES = {"SCHEMA", "EXTENSION", "TYPE", "DOMAIN", "FUNCTION", "PROCEDURE", "AGGREGATE", "SEQUENCE",
                   "TABLE", "DEFAULT", "COLLATION", "CONVERSION", "OPERATOR", "SHELL"}
_TABLE_DATA = re.compile(r"^(\d+); \d+ \d+ TABLE DATA (\S+) (\S+) ")
_ENTRY_TYPE = re.compile(r"^\d+; \d+ \d+ (\S+(?: \S+)?) ")


class RestoreFailed(PgdrError, RuntimeError):
    """The restore did not complete; what it created has been removed."""


# --- row counts ----------------------------------------------------------------------------------

def compare_counts(expected: Mapping[str, int], found: Mapping[str, int]) -> list[dict]:
    """Tables whose restored row count differs from the manifest (or that are missing)."""
    problems = []
    for table, count in sorted(expected.items()):
        if table not in found:
            problems.append({"problem": "table missing after restore", "table": table, "expected": count})
        elif found[table] != count:
            problems.append({"problem": "row count differs", "table": table, "expected": count,
                             "found": found[table]})
    return problems


def describe_counts(problems: list[dict], limit: int = 5) -> str:
    """The first count differences, by table name and numbers only (never a row's content)."""
    text = "; ".join(f"{p['table']}: {p['problem']} (manifest {p['expected']}, found {p.get('found', 'none')})"
                     for p in problems[:limit])
    return text + (f"; and {len(problems) - limit} more" if len(problems) > limit else "")


def count_rows(connect: Connect, dbname: str, tables: list[str] | None, jobs: int,
               schema_map: dict[str, str] | None = None) -> dict[str, int]:
    """Exact row counts of the user tables (or of ``tables``), read with row security off.

    ``schema_map`` counts a table found under another schema (the recovered_* copy).
    """
    conn = connect(dbname)
    try:
        listed = {name: quoted for name, quoted in rows(conn, sql.load("restore_user_tables"))}
    finally:
        conn.close()
    wanted = tables if tables is not None else sorted(listed)
    schema_map = schema_map or {}

    def located(table: str) -> str:
        schema, name = table.split(".", 1)
        return f"{schema_map.get(schema, schema)}.{name}"

    def count(batch: list[str]) -> dict[str, int]:
        conn = connect(dbname)
        try:
            run(conn, "SET row_security = off")
            found = {}
            for table in batch:
                quoted = listed.get(located(table))
                if quoted is not None:
                    found[table] = one(conn, f"SELECT count(*) FROM ONLY {quoted}")[0]
            return found
        finally:
            conn.close()

    batches = [wanted[i::jobs] for i in range(max(jobs, 1))]
    counts: dict[str, int] = {}
    with ThreadPoolExecutor(max_workers=max(jobs, 1), thread_name_prefix="pgdr-count") as pool:
        for found in pool.map(count, [b for b in batches if b]):
            counts.update(found)
    return counts


# --- the dump's table of contents ----------------------------------------------------------------

def data_objects_for_tables(listing: Iterable[str], data_objects: list, tables: Iterable[str]) -> list:
    """The table-data objects of ``tables`` (named ``<dump id>.dat...`` in the dump directory)."""
    tables = set(tables)
    wanted_ids = {m.group(1) for line in listing
                  if (m := _TABLE_DATA.match(line)) and f"{m.group(2)}.{m.group(3)}" in tables}
    return [o for o in data_objects if o.name.split("/")[-1].split(".")[0] in wanted_ids]


def tables_list(listing: Iterable[str], tables: Iterable[str]) -> list[str]:
    """The ``--use-list`` lines: everything pre-data (types, sequences, tables) plus the data of ``tables``."""
    tables = set(tables)
    kept = []
    for line in listing:
        if not line or line.startswith(";"):
            continue
        data = _TABLE_DATA.match(line)
        if data:
            if f"{data.group(2)}.{data.group(3)}" in tables:
                kept.append(line)
            continue
        entry_type = _ENTRY_TYPE.match(line)
        if entry_type and entry_type.group(1).split(" ")[0] in _PRE_DATA_TYPES:
            kept.append(line)
    return kept


# --- moving recovered tables ---------------------------------------------------------------------

def move_tables(*, source: PgTarget, source_connect: Connect, target: PgTarget, target_connect: Connect,
                target_database: str, tables: tuple[str, ...], schema: str, expected: dict[str, int], bindir: Path,
                jobs: int, log: logging.Logger, before_check: Callable[[], None] | None = None) -> dict[str, int]:
    """Move ``tables`` of a disposable database (``source``) into schema ``schema`` of the target database.

    They arrive without owners or grants, in one transaction: only the restoring role (and
    superusers) can read the recovered rows until someone decides otherwise. The counts in
    the target are compared with ``expected``; a difference drops the schema again.
    """
    conn = source_connect(source.dbname)
    try:
        run(conn, f"CREATE SCHEMA {quote_ident(schema)}")
        for table in tables:
            table_schema, name = table.split(".", 1)
            run(conn, f"ALTER TABLE {quote_ident(table_schema)}.{quote_ident(name)} SET SCHEMA {quote_ident(schema)}")
    finally:
        conn.close()
    target_db = dataclasses.replace(target, dbname=target_database)
    with libpq_env(source) as dump_env, libpq_env(target_db) as restore_env:
        dump = subprocess.Popen([tool_path(bindir, "pg_dump"), "--format=custom", "--compress=0", "--no-password",
                                 f"--schema={schema}", source.dbname], env=dump_env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE)
        try:
            restore = subprocess.run([tool_path(bindir, "pg_restore"), "--exit-on-error", "--no-owner", "--no-acl",
                                      "--single-transaction", "--no-password", f"--dbname={target_database}"],
                                     stdin=dump.stdout, env=restore_env, capture_output=True, text=True)
        finally:
            dump.stdout.close()
            dump_errors = dump.stderr.read().decode(errors="replace")
            dump.wait()
    if dump.returncode != 0:
        raise RestoreFailed(f"pg_dump of the recovered tables failed: {stderr_tail(dump_errors)}")
    if restore.returncode != 0:
        raise RestoreFailed(f"moving the recovered tables into {target_database} failed (nothing was changed "
                            f"there): {stderr_tail(restore.stderr)}")
    if before_check is not None:
        before_check()
    moved = count_rows(target_connect, target_database, list(tables), jobs,
                       schema_map={t.split(".", 1)[0]: schema for t in tables})
    problems = compare_counts(expected, moved)
    if problems:
        conn = target_connect(target_database)
        try:
            run(conn, f"DROP SCHEMA {quote_ident(schema)} CASCADE")
        finally:
            conn.close()
        raise RestoreFailed(f"recovered tables in {schema} differed from what was restored, so the schema was "
                            f"dropped again: {describe_counts(problems)}")
    log.info("recovered %d table(s) into %s.%s: %s", len(moved), target_database, schema,
             ", ".join(f"{t} ({n} rows)" for t, n in moved.items()))
    return moved
