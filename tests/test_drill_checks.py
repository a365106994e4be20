"""The restore drill's integrity checks (include/sql/drill_checks/*.sql) on a real PostgreSQL 15 cluster.

Contract of every check file: one plain SELECT returning (check_name text, problems bigint,
detail text); problems = 0 means passed, zero rows means nothing to check; detail names tables,
constraints and columns only, never row data (the database holds PHI).
"""

from __future__ import annotations

import re
import uuid
from pathlib import Path

import pytest
from psycopg2 import sql as _sql

from harness.synthetic import create_care_commons
from tests.support.paths import REPO_ROOT

CHECK_DIR = REPO_ROOT / "include" / "sql" / "drill_checks"
CHECK_FILES = sorted(CHECK_DIR.glob("*.sql"))
EXPECTED_FILES = {"foreign_keys_hold.sql", "no_orphan_rows.sql", "evv_matches_visits.sql"}
DB = "care_commons"
EMPTY_DB = "empty"
UUID_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", re.I)
TEXT_OID, BIGINT_OID = 25, 20


@pytest.fixture(scope="module")
def cluster(cluster):
    create_care_commons(cluster, dbname=DB, scale=0.02, seed=7)
    cluster.execute(f"CREATE DATABASE {EMPTY_DB}")
    return cluster


@pytest.fixture()
def tampered(cluster):
    """A throwaway copy of the synthetic database, to break on purpose."""
    name = f"tampered_{uuid.uuid4().hex[:8]}"
    cluster.execute(_sql.SQL("CREATE DATABASE {} TEMPLATE {}").format(_sql.Identifier(name), _sql.Identifier(DB)))
    try:
        yield name
    finally:
        cluster.execute(_sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(_sql.Identifier(name)))


def check_path(name: str) -> Path:
    return CHECK_DIR / name


def run_check(cluster, dbname: str, path: Path) -> list[tuple[str, int, str]]:
    """Run one check file as the drill does (SQL text as is, no parameters); checks the column contract."""
    conn = cluster.connect(dbname)
    try:
        with conn.cursor() as cur:
            cur.execute("SET row_security = off")
            cur.execute(path.read_text())
            assert [d.name for d in cur.description] == ["check_name", "problems", "detail"], path.name
            assert [d.type_code for d in cur.description] == [TEXT_OID, BIGINT_OID, TEXT_OID], path.name
            rows = cur.fetchall()
    finally:
        conn.close()
    return rows


def by_name(rows) -> dict[str, tuple[int, str]]:
    names = [r[0] for r in rows]
    assert len(names) == len(set(names)), f"duplicate check names: {names}"
    return {name: (problems, detail) for name, problems, detail in rows}


def execute(cluster, dbname: str, statements: list[str], replica: bool = False) -> list[list[tuple]]:
    """Run statements in one session (superuser); returns each statement's rows."""
    conn = cluster.connect(dbname)
    out = []
    try:
        with conn.cursor() as cur:
            if replica:
                # no triggers: neither the foreign keys' nor the updated_at ones
                cur.execute("SET session_replication_role = replica")
            for statement in statements:
                cur.execute(statement)
                out.append(cur.fetchall() if cur.description else [])
    finally:
        conn.close()
    return out


def all_results(cluster, dbname: str) -> list[tuple[str, int, str]]:
    return [row for path in CHECK_FILES for row in run_check(cluster, dbname, path)]


def assert_no_row_data(rows, values) -> None:
    """No check name or detail carries a value of the tampered rows (nor any uuid at all)."""
    values = {str(v) for v in values if v is not None and str(v) != ""}
    assert values
    for check_name, _, detail in rows:
        for text in (check_name, detail):
            assert text
            assert not UUID_RE.search(text), text
            for value in values:
                assert value not in text, (value, text)


def flat(result) -> list:
    return [value for row in result for value in row]


# --- the files themselves ----------------------------------------------------------------------

def test_the_check_files_exist():
    assert EXPECTED_FILES <= {p.name for p in CHECK_FILES}


@pytest.mark.parametrize("path", CHECK_FILES, ids=lambda p: p.name)
def test_each_file_is_one_plain_select(path):
    text = path.read_text()
    code = "\n".join(line for line in text.splitlines() if not line.lstrip().startswith("--")).strip()
    assert re.match(r"(?i)^select\b", code), "must start with SELECT"
    assert code.endswith(";") and code.count(";") == 1, "exactly one statement, nothing after it"
    assert not re.search(r"(?m)^\s*\\", code), "no psql meta-commands"
    assert not re.search(r"%\(\w+\)s|(?<![%\w'])\$\d", code), "no parameters"


# --- a healthy database --------------------------------------------------------------------------

@pytest.mark.parametrize("path", CHECK_FILES, ids=lambda p: p.name)
def test_every_check_passes_on_the_synthetic_database(cluster, path):
    rows = run_check(cluster, DB, path)
    assert rows, f"{path.name} checked nothing on care-commons"
    failing = [r for r in rows if r[1] != 0]
    assert not failing, failing
    by_name(rows)  # unique names
    for check_name, problems, detail in rows:
        assert isinstance(problems, int)
        assert check_name and detail
        assert not UUID_RE.search(detail) and not UUID_RE.search(check_name)


def test_foreign_keys_hold_has_one_row_per_constraint(cluster):
    rows = run_check(cluster, DB, check_path("foreign_keys_hold.sql"))
    expected = cluster.execute(
        """
        SELECT format('foreign key %s.%s.%s', n.nspname, c.relname, k.conname)
        FROM pg_constraint k JOIN pg_class c ON c.oid = k.conrelid JOIN pg_namespace n ON n.oid = c.relnamespace
        WHERE k.contype = 'f' AND n.nspname NOT IN ('pg_catalog', 'information_schema')
          AND n.nspname NOT LIKE 'pg\\_toast%'
        """, DB)
    assert len(expected) >= 20  # the synthetic schema has its foreign keys
    assert sorted(r[0] for r in rows) == sorted(r[0] for r in expected)
    assert len(rows) == cluster.execute("SELECT count(*) FROM pg_constraint WHERE contype = 'f'", DB)[0][0]


def test_evv_and_orphan_checks_cover_the_care_commons_relations(cluster):
    orphans = by_name(run_check(cluster, DB, check_path("no_orphan_rows.sql")))
    # relations without a foreign key in the synthetic schema are checked ...
    for column in ("evv_records.organization_id", "evv_records.branch_id", "care_plans.organization_id",
                   "billing_invoices.branch_id", "billing_invoices.visit_ids", "users.branch_ids",
                   "caregivers.branch_ids", "audit_events.user_id", "audit_events.organization_id",
                   "visits.created_by"):
        assert f"orphan rows public.{column}" in orphans, sorted(orphans)
    # ... and those a foreign key enforces are left to foreign_keys_hold
    for column in ("visits.client_id", "evv_records.visit_id", "clients.created_by"):
        assert f"orphan rows public.{column}" not in orphans
    evv = by_name(run_check(cluster, DB, check_path("evv_matches_visits.sql")))
    assert set(evv) == {
        "evv record has its visit", "evv record matches its visit: client_id",
        "evv record matches its visit: caregiver_id", "evv record matches its visit: organization_id",
        "evv record matches its visit: branch_id", "evv record matches its visit: service_date",
        "evv revision hash chain unbroken",
    }


# --- a broken database -------------------------------------------------------------------------------

def test_foreign_key_violations_are_counted(cluster, tampered):
    broken = execute(cluster, tampered, [
        "UPDATE visits SET client_id = gen_random_uuid() WHERE id IN "
        "(SELECT id FROM visits ORDER BY id LIMIT 3) RETURNING id, client_id",
        "UPDATE certifications SET caregiver_id = gen_random_uuid() WHERE id IN "
        "(SELECT id FROM certifications ORDER BY id LIMIT 2) RETURNING id, caregiver_id",
    ], replica=True)
    assert [len(b) for b in broken] == [3, 2]
    rows = run_check(cluster, tampered, check_path("foreign_keys_hold.sql"))
    checks = by_name(rows)
    assert checks["foreign key public.visits.visits_client_id_foreign"][0] >= 3
    assert checks["foreign key public.certifications.certifications_caregiver_id_foreign"][0] >= 2
    assert checks["foreign key public.visits.visits_caregiver_id_foreign"][0] == 0
    assert_no_row_data(all_results(cluster, tampered), flat(broken[0]) + flat(broken[1]))


def test_orphans_are_counted_where_no_foreign_key_enforces_the_relation(cluster, tampered):
    broken = execute(cluster, tampered, [
        # a restore that lost this foreign key: the orphan check takes the relation over
        "ALTER TABLE visits DROP CONSTRAINT visits_client_id_foreign",
        "UPDATE visits SET client_id = gen_random_uuid() WHERE id IN "
        "(SELECT id FROM visits ORDER BY id LIMIT 3) RETURNING id, client_id",
        # relations the synthetic schema never enforces
        "UPDATE evv_records SET organization_id = gen_random_uuid() WHERE id IN "
        "(SELECT id FROM evv_records ORDER BY id LIMIT 2) RETURNING id, organization_id",
        "UPDATE users SET branch_ids = branch_ids || gen_random_uuid() WHERE id IN "
        "(SELECT id FROM users ORDER BY id LIMIT 2) RETURNING id, branch_ids[cardinality(branch_ids)]",
        "UPDATE billing_invoices SET visit_ids = visit_ids || gen_random_uuid() WHERE id IN "
        "(SELECT id FROM billing_invoices ORDER BY id LIMIT 2) RETURNING id, visit_ids[cardinality(visit_ids)]",
        "UPDATE audit_events SET user_id = gen_random_uuid() WHERE event_id IN "
        "(SELECT event_id FROM audit_events ORDER BY event_id LIMIT 4) RETURNING event_id, user_id",
        "UPDATE care_plans SET created_by = gen_random_uuid() WHERE id IN "
        "(SELECT id FROM care_plans ORDER BY id LIMIT 1) RETURNING id, created_by",
    ], replica=True)
    assert [len(b) for b in broken[1:]] == [3, 2, 2, 2, 4, 1]
    checks = by_name(run_check(cluster, tampered, check_path("no_orphan_rows.sql")))
    assert checks["orphan rows public.visits.client_id"][0] >= 3
    assert checks["orphan rows public.evv_records.organization_id"][0] >= 2
    assert checks["orphan rows public.users.branch_ids"][0] >= 2
    assert checks["orphan rows public.billing_invoices.visit_ids"][0] >= 2
    assert checks["orphan rows public.audit_events.user_id"][0] >= 4
    assert checks["orphan rows public.care_plans.created_by"][0] >= 1
    assert checks["orphan rows public.evv_records.branch_id"][0] == 0
    assert checks["orphan rows public.audit_events.organization_id"][0] == 0
    fks = by_name(run_check(cluster, tampered, check_path("foreign_keys_hold.sql")))
    assert "foreign key public.visits.visits_client_id_foreign" not in fks
    assert_no_row_data(all_results(cluster, tampered), [v for b in broken for v in flat(b)])


def test_evv_records_that_do_not_match_their_visits_are_counted(cluster, tampered):
    broken = execute(cluster, tampered, [
        "ALTER TABLE evv_records DROP CONSTRAINT evv_records_visit_id_foreign",
        "UPDATE evv_records SET visit_id = gen_random_uuid() WHERE id IN "
        "(SELECT id FROM evv_records ORDER BY id LIMIT 2) RETURNING id, visit_id",
        # another existing caregiver: every foreign key still holds, the visit disagrees
        "UPDATE evv_records e SET caregiver_id = (SELECT c.id FROM caregivers c WHERE c.id <> e.caregiver_id "
        "ORDER BY c.id LIMIT 1) WHERE e.id IN (SELECT id FROM evv_records ORDER BY id DESC LIMIT 3) "
        "RETURNING e.id, e.caregiver_id",
        "UPDATE evv_records SET service_date = service_date + 1 WHERE id IN "
        "(SELECT id FROM evv_records ORDER BY id DESC OFFSET 10 LIMIT 2) RETURNING id, service_date",
        # the hash chain: two forged links and one lost first revision
        "UPDATE evv_revisions SET previous_revision_hash = repeat('0', 64) WHERE id IN "
        "(SELECT id FROM evv_revisions WHERE revision_number = 2 ORDER BY id LIMIT 2) "
        "RETURNING id, evv_record_id",
        "DELETE FROM evv_revisions WHERE id IN (SELECT r.id FROM evv_revisions r WHERE r.revision_number = 1 "
        "AND EXISTS (SELECT 1 FROM evv_revisions s WHERE s.evv_record_id = r.evv_record_id "
        "AND s.revision_number = 2 AND s.previous_revision_hash <> repeat('0', 64)) ORDER BY r.id LIMIT 1) "
        "RETURNING id, evv_record_id, revision_hash",
    ], replica=True)
    assert [len(b) for b in broken[1:]] == [2, 3, 2, 2, 1]
    checks = by_name(run_check(cluster, tampered, check_path("evv_matches_visits.sql")))
    assert checks["evv record has its visit"][0] >= 2
    assert checks["evv record matches its visit: caregiver_id"][0] >= 3
    assert checks["evv record matches its visit: service_date"][0] >= 2
    assert checks["evv record matches its visit: client_id"][0] == 0
    assert checks["evv revision hash chain unbroken"][0] >= 3
    # with its foreign key gone, the orphan check reports the missing visits as well
    orphans = by_name(run_check(cluster, tampered, check_path("no_orphan_rows.sql")))
    assert orphans["orphan rows public.evv_records.visit_id"][0] >= 2
    values = [v for b in broken for v in flat(b)] + [str(v) for b in broken for row in b for v in row]
    assert_no_row_data(all_results(cluster, tampered), values)


def test_multi_column_match_full_and_partitioned_foreign_keys(cluster, tampered):
    execute(cluster, tampered, [
        'CREATE SCHEMA "Odd Schema"',
        'CREATE TABLE "Odd Schema"."Parent Tab" (a int, "B col" text, PRIMARY KEY (a, "B col"))',
        'CREATE TABLE "Odd Schema".child_simple (id int, pa int, pb text, CONSTRAINT "fk simple" '
        'FOREIGN KEY (pa, pb) REFERENCES "Odd Schema"."Parent Tab")',
        'CREATE TABLE "Odd Schema".child_full (id int, pa int, pb text, CONSTRAINT fk_full '
        'FOREIGN KEY (pb, pa) REFERENCES "Odd Schema"."Parent Tab" ("B col", a) MATCH FULL)',
        "CREATE TABLE pparent (id bigint PRIMARY KEY) PARTITION BY RANGE (id)",
        "CREATE TABLE pparent_1 PARTITION OF pparent FOR VALUES FROM (0) TO (100)",
        "CREATE TABLE pparent_2 PARTITION OF pparent FOR VALUES FROM (100) TO (200)",
        "CREATE TABLE pchild (id int, pid int CONSTRAINT pchild_pid_fk REFERENCES pparent) PARTITION BY LIST (id)",
        "CREATE TABLE pchild_1 PARTITION OF pchild FOR VALUES IN (1)",
        "CREATE TABLE pchild_2 PARTITION OF pchild FOR VALUES IN (2)",
        "INSERT INTO \"Odd Schema\".\"Parent Tab\" VALUES (1, 'x'), (2, 'y')",
        "INSERT INTO pparent VALUES (5), (150)",
        "SET session_replication_role = replica",
        # (1,'y') and (9,'q') have no parent; a NULL column exempts a MATCH SIMPLE row
        "INSERT INTO \"Odd Schema\".child_simple VALUES (1, 1, 'x'), (2, 1, 'y'), (3, NULL, 'zz'), (4, 9, 'q')",
        # MATCH FULL: partly NULL (2) and (2,'x') count, all NULL does not
        "INSERT INTO \"Odd Schema\".child_full VALUES (1, 1, 'x'), (2, NULL, 'x'), (3, NULL, NULL), (4, 2, 'x')",
        "INSERT INTO pchild VALUES (1, 5), (1, 6), (2, 150), (2, 151), (2, NULL)",
    ])
    checks = by_name(run_check(cluster, tampered, check_path("foreign_keys_hold.sql")))
    assert checks['foreign key Odd Schema.child_simple.fk simple'][0] == 2
    assert checks["foreign key Odd Schema.child_full.fk_full"][0] == 2
    # one row for the partitioned table's key, none for its partition clones
    assert checks["foreign key public.pchild.pchild_pid_fk"][0] == 2
    assert not [name for name in checks if "pchild_1" in name or "pchild_2" in name]
    assert "(pb, pa) references Odd Schema.Parent Tab (B col, a)" in \
        checks["foreign key Odd Schema.child_full.fk_full"][1]
    top_level = cluster.execute("SELECT count(*) FROM pg_constraint WHERE contype = 'f' AND conparentid = 0",
                                tampered)[0][0]
    assert len(checks) == top_level


# --- databases without care-commons ----------------------------------------------------------------

@pytest.mark.parametrize("path", CHECK_FILES, ids=lambda p: p.name)
def test_an_empty_database_returns_no_rows(cluster, path):
    assert run_check(cluster, EMPTY_DB, path) == []


@pytest.mark.parametrize("path", CHECK_FILES, ids=lambda p: p.name)
def test_a_different_schema_with_the_same_table_names_returns_no_rows(cluster, path):
    """Same table names, other columns or types: the care-commons checks skip what they cannot run."""
    name = f"other_{uuid.uuid4().hex[:8]}"
    cluster.execute(f"CREATE DATABASE {name}")
    try:
        execute(cluster, name, [
            "CREATE TABLE visits (id text PRIMARY KEY, client text)",
            "CREATE TABLE evv_records (id int, visit_id int, client_id text)",
            "CREATE TABLE evv_revisions (id int, evv_record_id text, revision_number int)",
            "CREATE TABLE users (id bigint)",
            "CREATE TABLE audit_events (user_id uuid, organization_id text)",
            "CREATE TABLE billing_invoices (visit_ids int[])",
            "INSERT INTO visits VALUES ('a', 'b')",
            "INSERT INTO evv_records VALUES (1, 2, 'c')",
        ])
        assert run_check(cluster, name, path) == []
    finally:
        cluster.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
