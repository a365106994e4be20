"""The synthetic care-commons database, on a real throwaway PostgreSQL 15 cluster."""

import datetime
import re
import subprocess
import sys

import psycopg2
import psycopg2.errors
import pytest

from harness import synthetic
from harness.synthetic import (
    APP_ROLE,
    READONLY_ROLE,
    create_care_commons,
    fingerprint,
    owners_and_grants,
)
from tests.support.paths import REPO_ROOT

DB = "care_commons"
DB_DOUBLE = "care_commons_double"
RLS_TABLES = {"public.clients", "public.caregivers", "public.visits", "public.care_plans"}
EXPECTED_TABLES = {f"public.{name}" for name in synthetic.TABLES}


@pytest.fixture(scope="module")
def counts(cluster):
    return create_care_commons(cluster, DB, scale=0.02, seed=42)


@pytest.fixture(scope="module")
def counts_double(cluster, counts):
    return create_care_commons(cluster, DB_DOUBLE, scale=0.04, seed=42)


def rows(cluster, sql, dbname=DB, params=None):
    return cluster.execute(sql, dbname, params)


def test_counts_cover_every_table(cluster, counts):
    assert set(counts) == EXPECTED_TABLES
    assert 12 <= len(counts) <= 16
    assert all(n > 0 for n in counts.values()), counts
    for name, n in counts.items():
        assert rows(cluster, f"SELECT count(*) FROM {name}")[0][0] == n
    # EVV follows the visits; audit events dominate
    assert 0.7 * counts["public.visits"] < counts["public.evv_records"] < counts["public.visits"]
    assert counts["public.evv_revisions"] > counts["public.evv_records"]
    assert counts["public.audit_events"] > counts["public.visits"]


def test_extensions(cluster, counts):
    names = {r[0] for r in rows(cluster, "SELECT extname FROM pg_extension")}
    assert {"uuid-ossp", "pgcrypto"} <= names


def test_uuid_primary_keys_except_knex(cluster, counts):
    pks = rows(cluster, """
        SELECT c.relname, array_agg(format_type(a.atttypid, a.atttypmod)), array_agg(pg_get_expr(d.adbin, d.adrelid))
        FROM pg_constraint k
        JOIN pg_class c ON c.oid = k.conrelid
        JOIN pg_attribute a ON a.attrelid = k.conrelid AND a.attnum = ANY (k.conkey)
        LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum
        WHERE k.contype = 'p' AND c.relnamespace = 'public'::regnamespace
        GROUP BY c.relname""")
    by_table = {name: (types, defaults) for name, types, defaults in pks}
    assert {f"public.{t}" for t in by_table} == EXPECTED_TABLES
    defaults_seen = set()
    for table, (types, defaults) in by_table.items():
        if table == "knex_migrations":
            assert types == ["integer"] and defaults[0].startswith("nextval(")
        else:
            assert types == ["uuid"], table
            defaults_seen.add(defaults[0])
    assert defaults_seen == {"uuid_generate_v4()", "gen_random_uuid()"}
    serials = rows(cluster,
                   "SELECT count(*) FROM pg_class WHERE relkind = 'S' AND relnamespace = 'public'::regnamespace")
    assert serials[0][0] == 1


def test_schema_conventions(cluster, counts):
    assert rows(cluster, "SELECT count(*) FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
                         "WHERE t.typtype = 'e' AND n.nspname = 'public'")[0][0] == 0
    check = rows(cluster, "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                          "WHERE conrelid = 'visits'::regclass AND contype = 'c' AND conname LIKE '%status%'")[0][0]
    assert len(set(re.findall(r"'([A-Z_]+)'", check))) == 15
    types = {r[0] for r in rows(cluster, """
        SELECT DISTINCT format_type(a.atttypid, a.atttypmod) FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' AND a.attnum > 0 AND NOT a.attisdropped""")}
    assert {"timestamp with time zone", "jsonb", "jsonb[]", "uuid[]", "character varying(50)[]", "text[]", "inet",
            "date", "time without time zone", "numeric(5,2)"} <= types
    assert "timestamp without time zone" not in types
    columns = {(t, c) for t, c in rows(cluster, """
        SELECT c.relname, a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' AND a.attnum > 0""")}
    assert sum(1 for t, c in columns if c == "is_demo_data") >= 5
    assert sum(1 for t, c in columns if c == "deleted_at") >= 8
    for table in ("visits", "clients", "care_plans", "evv_records"):
        for col in ("created_at", "created_by", "updated_at", "updated_by", "version"):
            assert (table, col) in columns
    assert ("audit_events", "timestamp") in columns and ("evv_records", "deleted_at") not in columns
    gin_jsonb = rows(cluster, """
        SELECT count(*) FROM pg_index i JOIN pg_class ix ON ix.oid = i.indexrelid JOIN pg_am am ON am.oid = ix.relam
        JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = i.indkey[0]
        WHERE am.amname = 'gin' AND a.atttypid = 'jsonb'::regtype""")[0][0]
    assert gin_jsonb >= 1
    triggered = {r[0] for r in rows(cluster,
                                    "SELECT DISTINCT tgrelid::regclass::text FROM pg_trigger WHERE NOT tgisinternal")}
    assert triggered == {t.split(".")[1] for t in EXPECTED_TABLES} - {"knex_migrations", "audit_events"}
    fks = rows(cluster, "SELECT pg_get_constraintdef(oid) FROM pg_constraint "
                        "WHERE conrelid = 'evv_revisions'::regclass AND contype = 'f'")
    assert any("REFERENCES evv_records(id) ON DELETE CASCADE" in fk for (fk,) in fks)
    assert rows(cluster, "SELECT count(*) FROM pg_constraint WHERE contype = 'u'"
                         " AND conrelid = 'evv_records'::regclass")[0][0] == 1


def test_row_level_security(cluster, counts):
    got = dict((t, (rls, force)) for t, rls, force in rows(cluster, """
        SELECT relname, relrowsecurity, relforcerowsecurity FROM pg_class
        WHERE relnamespace = 'public'::regnamespace AND relkind = 'r'"""))
    assert got["clients"] == (True, False) and got["visits"] == (True, False)
    policies = rows(cluster, "SELECT tablename, qual FROM pg_policies WHERE schemaname = 'public'")
    assert {t for t, _ in policies} >= {"clients", "visits"}
    assert all("app.current_organization_id" in qual for _, qual in policies)


def test_owners_roles_and_grants(cluster, counts):
    info = owners_and_grants(cluster, DB)
    assert info["database_owner"] == APP_ROLE
    assert set(info["tables"]) == EXPECTED_TABLES
    for table, entry in info["tables"].items():
        assert entry["owner"] == APP_ROLE, table
        assert f"{READONLY_ROLE}=r/{APP_ROLE}" in entry["acl"], table
        assert entry["rls_enabled"] == (table in RLS_TABLES)
    role = dict((name, (login, members)) for name, login, members in rows(cluster, """
        SELECT r.rolname, r.rolcanlogin, (SELECT count(*) FROM pg_auth_members m WHERE m.roleid = r.oid)
        FROM pg_roles r WHERE r.rolname IN (%s, %s)""", params=(APP_ROLE, READONLY_ROLE)))
    assert role[APP_ROLE][0] is True
    assert role[READONLY_ROLE] == (False, 0)
    conn = cluster.connect(DB, user=APP_ROLE, password="app-secret")
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT current_user, count(*) FROM visits")  # owner: not subject to RLS
            assert cur.fetchone() == (APP_ROLE, counts["public.visits"])
    finally:
        conn.close()


def test_readonly_role_can_select(cluster, counts):
    conn = cluster.connect(DB, autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute(f"SET ROLE {READONLY_ROLE}")
            for table, n in counts.items():
                cur.execute(f"SELECT count(*) FROM {table}")
                assert cur.fetchone()[0] == (0 if table in RLS_TABLES else n), table
            cur.execute("SELECT id FROM organizations ORDER BY id LIMIT 1")
            org = cur.fetchone()[0]
            cur.execute("SELECT set_config('app.current_organization_id', %s, false)", (org,))
            cur.execute("SELECT count(*), count(*) FILTER (WHERE organization_id = %s) FROM visits", (org,))
            visible, own = cur.fetchone()
            assert 0 < visible == own < counts["public.visits"]
            with pytest.raises(psycopg2.errors.InsufficientPrivilege):
                cur.execute("DELETE FROM audit_events")
    finally:
        conn.rollback()
        conn.close()


def test_check_constraint_refuses_bad_status(cluster, counts):
    conn = cluster.connect(DB, autocommit=False)
    try:
        with conn.cursor() as cur, pytest.raises(psycopg2.errors.CheckViolation):
            cur.execute("UPDATE visits SET status = 'TELEPORTED' WHERE id = (SELECT id FROM visits LIMIT 1)")
    finally:
        conn.rollback()
        conn.close()


def test_update_trigger_bumps_updated_at_and_evv_version(cluster, counts):
    conn = cluster.connect(DB, autocommit=False)
    try:
        with conn.cursor() as cur:
            cur.execute("SELECT id, updated_at, version FROM visits ORDER BY visit_number LIMIT 1")
            vid, updated, version = cur.fetchone()
            cur.execute("UPDATE visits SET notes = 'Updated by test' WHERE id = %s"
                        " RETURNING updated_at, version, now()", (vid,))
            new_updated, new_version, now = cur.fetchone()
            assert new_updated == now and new_updated > updated and new_version == version
            for table in ("evv_records", "evv_revisions"):
                cur.execute(f"SELECT id, updated_at, version FROM {table} ORDER BY id LIMIT 1")
                rid, updated, version = cur.fetchone()
                cur.execute(f"UPDATE {table} SET updated_by = NULL WHERE id = %s RETURNING updated_at, version", (rid,))
                new_updated, new_version = cur.fetchone()
                assert new_updated == now and new_updated > updated and new_version == version + 1, table
    finally:
        conn.rollback()
        conn.close()


def test_counts_scale_linearly(cluster, counts, counts_double):
    for table in ("public.clients", "public.visits", "public.evv_records", "public.evv_revisions",
                  "public.audit_events", "public.care_plans"):
        ratio = counts_double[table] / counts[table]
        assert 1.7 <= ratio <= 2.3, (table, counts[table], counts_double[table])


def test_history_spread_and_soft_deletes(cluster, counts):
    (oldest, newest, deleted, deleted_old, deleted_recent), = rows(cluster, """
        SELECT min(scheduled_date), max(scheduled_date), count(deleted_at),
               count(*) FILTER (WHERE deleted_at < now() - interval '1 year'),
               count(*) FILTER (WHERE deleted_at > now() - interval '1 year') FROM visits""")
    today = datetime.datetime.now(datetime.timezone.utc).date()
    assert (today - oldest).days > 6 * 365 and newest >= today - datetime.timedelta(days=1)
    assert deleted > 0 and deleted_old > 0 and deleted_recent > 0
    (audit_oldest,), = rows(cluster, "SELECT min(\"timestamp\") FROM audit_events")
    assert (datetime.datetime.now(datetime.timezone.utc) - audit_oldest).days > 6 * 365
    # nothing is recorded in the future
    columns = rows(cluster, """
        SELECT c.relname, a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' AND a.attnum > 0
          AND a.atttypid = 'timestamptz'::regtype""")
    future = " + ".join(f'(SELECT count(*) FROM {t} WHERE "{c}" > now())' for t, c in columns)
    assert rows(cluster, f"SELECT {future}")[0][0] == 0


# the 6th is the day the generator once dated invoices in the future (they are submitted a few days
# into the next month); month starts and ends, a leap day and a year end cover the calendar's edges
CALENDAR_EDGES = ["2026-12-06", "2026-12-01", "2026-12-02", "2026-11-30", "2027-01-01", "2026-12-31",
                  "2028-02-29", "2027-03-01", "2026-07-15"]


@pytest.mark.parametrize("anchor", CALENDAR_EDGES)
def test_nothing_dated_after_the_anchor_on_any_day(cluster, anchor):
    """The generated history ends at the anchor's midnight (UTC), whatever the day and the time of day it runs."""
    dbname = "cal_" + anchor.replace("-", "")
    synthetic.generate(cluster, dbname, scale=0.02, seed=42, anchor=datetime.date.fromisoformat(anchor))
    columns = rows(cluster, """
        SELECT c.relname, a.attname FROM pg_attribute a JOIN pg_class c ON c.oid = a.attrelid
        WHERE c.relnamespace = 'public'::regnamespace AND c.relkind = 'r' AND a.attnum > 0
          AND a.atttypid = 'timestamptz'::regtype""", dbname=dbname)
    late = {f"{t}.{c}": n for t, c in columns
            if (n := rows(cluster, f'SELECT count(*) FROM {t} WHERE "{c}" > %s::date::timestamptz',
                          dbname=dbname, params=(anchor,))[0][0])}
    assert late == {}
    cluster.execute(f'DROP DATABASE "{dbname}"')


def test_evv_revision_hash_chain_verifies(cluster, counts):
    (total, ok, linked), = rows(cluster, """
        SELECT count(*),
               count(*) FILTER (WHERE revision_hash = encode(sha256(convert_to(
                   coalesce(previous_revision_hash, '') || new_values::text, 'UTF8')), 'hex')),
               count(*) FILTER (WHERE revision_number = 1 OR previous_revision_hash = (
                   SELECT p.revision_hash FROM evv_revisions p
                   WHERE p.evv_record_id = r.evv_record_id AND p.revision_number = r.revision_number - 1))
        FROM evv_revisions r""")
    assert total == ok == linked == counts["public.evv_revisions"]


def test_fingerprint_stable_and_sensitive(cluster, counts):
    before = fingerprint(cluster, DB)
    assert set(before) == EXPECTED_TABLES
    assert {t: n for t, (n, _) in before.items()} == counts
    assert fingerprint(cluster, DB) == before
    (cid, name, updated), = rows(cluster, "SELECT id, preferred_name, updated_at FROM clients ORDER BY id LIMIT 1")
    rows(cluster, "UPDATE clients SET preferred_name = 'Changed' WHERE id = %s", params=(cid,))
    changed = fingerprint(cluster, DB)
    assert changed["public.clients"][0] == before["public.clients"][0]
    assert changed["public.clients"][1] != before["public.clients"][1]
    assert {t: v for t, v in changed.items() if t != "public.clients"} == \
           {t: v for t, v in before.items() if t != "public.clients"}
    # put the row back exactly (bypassing the updated_at trigger): same content, same fingerprint
    conn = cluster.connect(DB)
    try:
        with conn.cursor() as cur:
            cur.execute("SET session_replication_role = replica")
            cur.execute("UPDATE clients SET preferred_name = %s, updated_at = %s WHERE id = %s", (name, updated, cid))
    finally:
        conn.close()
    assert fingerprint(cluster, DB) == before


def test_generation_is_deterministic(cluster):
    anchor = datetime.date(2025, 6, 30)
    synthetic.generate(cluster, "det_a", scale=0.01, seed=7, anchor=anchor)
    synthetic.generate(cluster, "det_b", scale=0.01, seed=7, anchor=anchor)
    synthetic.generate(cluster, "det_c", scale=0.01, seed=8, anchor=anchor)
    a, b, c = (fingerprint(cluster, db) for db in ("det_a", "det_b", "det_c"))
    assert a == b
    assert a["public.visits"] != c["public.visits"]
    with pytest.raises(ValueError):
        create_care_commons(cluster, "det_a", scale=0.01)


def test_pg_dump_restore_gives_identical_fingerprint(cluster, counts, tmp_path):
    dump = tmp_path / "cc.dump"
    env = cluster.tool_env()
    subprocess.run([str(cluster.bindir / "pg_dump"), "-Fc", "-f", str(dump), DB], env=env, check=True)
    cluster.execute(f"CREATE DATABASE restored OWNER {APP_ROLE}")
    subprocess.run([str(cluster.bindir / "pg_restore"), "-d", "restored", "--exit-on-error", str(dump)],
                   env=env, check=True)
    assert fingerprint(cluster, "restored") == fingerprint(cluster, DB)
    assert owners_and_grants(cluster, "restored") == owners_and_grants(cluster, DB)


def test_cli_generates_into_running_cluster(cluster):
    out = subprocess.run([sys.executable, "-m", "harness.synthetic", "--port", str(cluster.port),
                          "--dbname", "from_cli", "--scale", "0.01"],
                         cwd=REPO_ROOT, capture_output=True, text=True, check=True).stdout
    assert "public.visits" in out and "database from_cli" in out
    assert rows(cluster, "SELECT count(*) FROM visits", "from_cli")[0][0] == synthetic.scaled_counts(0.01)["n_visits"]
