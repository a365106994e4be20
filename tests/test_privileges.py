"""One role per duty, each with the least it needs (issue 12, items 7 and 18).

The roles come from the compose init script (docker/care-commons/initdb/10-pgdr-roles.sh) run on a
real PostgreSQL 15 cluster. As exactly those roles: the daily DAG takes a logical and a base backup
(pgdr_backup), the WAL check sees the streaming receiver (pgdr_backup, with pg_monitor), recovery
markers are written by pgdr_markers; each role is refused what its duty does not need. The marker
step refuses a schema/table that the database owner created first with a trigger that would make
them a superuser.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
from pathlib import Path

import psycopg2
import pytest

from harness.stack import CONN_ID
from tests.support.dags import run_dag_in_child, task_states
from tests.support.waiting import wait_for

REPO_ROOT = Path(__file__).resolve().parents[1]
INIT_SCRIPT = REPO_ROOT / "docker" / "care-commons" / "initdb" / "10-pgdr-roles.sh"
PASSWORDS = {
    "PGDR_BACKUP_PASSWORD": "bkP1a2b3c4d5e6",
    "PGDR_REPLICATION_PASSWORD": "rpP1a2b3c4d5e6",
    "PGDR_ADMIN_PASSWORD": "adP1a2b3c4d5e6",
    "PGDR_MARKERS_PASSWORD": "mkP1a2b3c4d5e6",
    "PGDR_RETENTION_PASSWORD": "rtP1a2b3c4d5e6",
}
ROLE_PASSWORD = {"pgdr_backup": "PGDR_BACKUP_PASSWORD", "pgdr_replication": "PGDR_REPLICATION_PASSWORD",
                 "pgdr_admin": "PGDR_ADMIN_PASSWORD", "pgdr_markers": "PGDR_MARKERS_PASSWORD",
                 "pgdr_retention": "PGDR_RETENTION_PASSWORD"}
SLOT = "pgdr_receiver"
DB = "care_commons"


def _login(cluster, role: str, dbname: str = DB, password: str | None = None):
    conn = psycopg2.connect(host=cluster.host, port=cluster.port, dbname=dbname, user=role,
                            password=password or PASSWORDS[ROLE_PASSWORD[role]], connect_timeout=10)
    conn.autocommit = True
    return conn


def _conn_json(cluster, role: str) -> str:
    return json.dumps({"conn_type": "postgres", "host": cluster.host, "port": cluster.port, "schema": DB,
                       "login": role, "password": PASSWORDS[ROLE_PASSWORD[role]]})


@pytest.fixture(scope="module")
def roles_cluster():
    """A cluster set up as care-commons-db is: the init script's roles, an application table under
    row-level security (owned by the bootstrap superuser, as the application's migrations would)."""
    from harness.pg_cluster import start_cluster

    cluster = start_cluster()
    try:
        (cluster.data_dir / "pg_hba.conf").write_text(
            "local all all trust\nhost all postgres 127.0.0.1/32 trust\nhost all all 127.0.0.1/32 scram-sha-256\n")
        cluster.execute(f"CREATE DATABASE {DB}")
        env = {"PATH": f"{cluster.bindir}:{os.environ['PATH']}", "POSTGRES_USER": "postgres", "POSTGRES_DB": DB,
               "PGDATA": str(cluster.data_dir), "PGHOST": cluster.host, "PGPORT": str(cluster.port), **PASSWORDS}
        result = subprocess.run(["bash", str(INIT_SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
        assert result.returncode == 0, result.stdout + result.stderr
        cluster.execute("SELECT pg_reload_conf()")
        cluster.execute("""
            CREATE TABLE visit_notes (id int PRIMARY KEY, note text NOT NULL, written date NOT NULL);
            INSERT INTO visit_notes SELECT g, 'note ' || g, date '2010-01-01' + g FROM generate_series(1, 40) g;
            ALTER TABLE visit_notes ENABLE ROW LEVEL SECURITY;
        """, dbname=DB)
        from pgdr.drill.markers import record_marker

        markers = _login(cluster, "pgdr_markers")
        markers.autocommit = False
        record_marker(markers, "setup")  # the marker table exists from here on, pgdr_markers'
        markers.close()
        yield cluster
    finally:
        cluster.destroy()


# --- item 18: the DAGs as exactly these roles -------------------------------------------------------------


@pytest.mark.slow
def test_the_daily_backup_runs_as_the_backup_role_logical_and_base(roles_cluster, stack, airflow_db, tmp_path):
    cluster = roles_cluster
    env = stack.airflow_env()
    staging_dir = tmp_path / "staging"
    env.update({
        "AIRFLOW_CONN_CARE_COMMONS_DB": _conn_json(cluster, "pgdr_backup"),
        "AIRFLOW_CONN_CARE_COMMONS_ADMIN": _conn_json(cluster, "pgdr_admin"),
        "AIRFLOW_CONN_CARE_COMMONS_MARKERS": _conn_json(cluster, "pgdr_markers"),
        "AIRFLOW_VAR_PGDR_MARKER_CONN_IDS": json.dumps({CONN_ID: "care_commons_markers"}),
        "AIRFLOW_VAR_PGDR_STAGING_DIR": str(staging_dir),
        "AIRFLOW_VAR_PGDR_S3_PREFIX": f"roles/{os.urandom(4).hex()}",
        "AIRFLOW_VAR_PGDR_PHYSICAL_BACKUPS": "true",
    })
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        dag_run, output = run_dag_in_child("pg_backup_daily")
    states = task_states(dag_run)
    for task in ("backup.dump_and_upload[0]", "backup.verify_and_seal[0]", "backup.base_backup[0]",
                 "backup.seal_base[0]"):
        assert states.get(task) == "success", (states, output[-3000:])
    # the backups connected as pgdr_backup, and the staged copies are the worker's alone
    assert "pgdr_backup@" in output
    kept = [p for p in staging_dir.rglob("*")]
    assert kept
    for path in [staging_dir, *kept]:
        mode = stat.S_IMODE(path.lstat().st_mode)
        assert mode == (0o700 if path.is_dir() else 0o600), (path, oct(mode))


def test_the_wal_check_sees_the_receiver_as_the_backup_role(roles_cluster, tmp_path):
    """pg_monitor: as pgdr_backup the check sees the streaming receiver; as the role the docs used
    to give (no pg_monitor, no REPLICATION) it reports the receiver not streaming while it streams,
    and base backups fail."""
    from pgdr.verify.wal import server_findings

    cluster = roles_cluster
    cluster.execute("CREATE ROLE documented_backup LOGIN BYPASSRLS PASSWORD 'docP1a2b3' IN ROLE pg_read_all_data")
    env = {**cluster.tool_env(), "PGUSER": "pgdr_replication", "PGPASSWORD": PASSWORDS["PGDR_REPLICATION_PASSWORD"],
           "PGAPPNAME": SLOT}
    receivewal = str(cluster.bindir / "pg_receivewal")
    subprocess.run([receivewal, "--create-slot", "--if-not-exists", "--slot", SLOT], env=env, check=True,
                   capture_output=True)
    wal_dir = tmp_path / "wal"
    wal_dir.mkdir()
    receiver = subprocess.Popen([receivewal, "-D", str(wal_dir), "--slot", SLOT, "--no-loop"], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        with _login(cluster, "pgdr_backup") as conn:
            assert wait_for(lambda: server_findings(conn, SLOT) == [] or None, 30,
                            "the WAL check to see the receiver as pgdr_backup") is True
        with _login(cluster, "documented_backup", password="docP1a2b3") as conn:
            # without pg_monitor the receiver's row shows no state: a false alarm on every check
            problems = [f["problem"] for f in server_findings(conn, SLOT)]
            assert any(p in ("WAL receiver not connected", "WAL receiver not streaming") for p in problems), problems
    finally:
        receiver.terminate()
        receiver.wait(10)
        cluster.execute(f"SELECT pg_drop_replication_slot('{SLOT}')")
    base = subprocess.run([str(cluster.bindir / "pg_basebackup"), "-D", str(tmp_path / "b"), "-Ft", "-X", "none",
                           "-c", "fast"],
                          env={**cluster.tool_env(), "PGUSER": "documented_backup", "PGPASSWORD": "docP1a2b3"},
                          capture_output=True, text=True)
    assert base.returncode != 0 and "replication" in base.stderr
    ok = subprocess.run([str(cluster.bindir / "pg_basebackup"), "-D", str(tmp_path / "b2"), "-Ft", "-X", "none",
                         "-c", "fast", "--no-sync"],
                        env={**cluster.tool_env(), "PGUSER": "pgdr_backup",
                             "PGPASSWORD": PASSWORDS["PGDR_BACKUP_PASSWORD"]}, capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr


# what each duty's role is refused: (role, statement, SQLSTATE class of the refusal)
CANNOT = [
    ("pgdr_backup", "INSERT INTO visit_notes VALUES (1000, 'x', now())", "42501"),
    ("pgdr_backup", "DELETE FROM visit_notes", "42501"),
    ("pgdr_backup", "CREATE TABLE public.planted (id int)", "42501"),
    ("pgdr_backup", "CREATE DATABASE planted", "42501"),
    ("pgdr_backup", "INSERT INTO pgdr.recovery_markers (run_id) VALUES ('x')", "42501"),
    ("pgdr_replication", "SELECT count(*) FROM visit_notes", "42501"),
    ("pgdr_markers", "SELECT count(*) FROM visit_notes", "42501"),
    ("pgdr_markers", "DELETE FROM visit_notes", "42501"),
    ("pgdr_markers", "CREATE DATABASE planted", "42501"),
    ("pgdr_markers", "ALTER ROLE pgdr_markers SUPERUSER", "42501"),
    ("pgdr_retention", "CREATE TABLE public.planted (id int)", "42501"),
    ("pgdr_retention", "DROP TABLE visit_notes", "42501"),
    ("pgdr_retention", "CREATE DATABASE planted", "42501"),
    ("pgdr_retention", "CREATE ROLE planted", "42501"),
    ("pgdr_retention", "ALTER ROLE pgdr_retention SUPERUSER", "42501"),
    ("pgdr_retention", "CREATE SCHEMA planted", "42501"),
]


@pytest.mark.parametrize("role,statement,sqlstate", CANNOT, ids=[f"{r}: {s[:40]}" for r, s, _ in CANNOT])
def test_each_role_is_refused_what_its_duty_does_not_need(roles_cluster, role, statement, sqlstate):
    conn = _login(roles_cluster, role)  # autocommit, no `with`: CREATE DATABASE must be refused for its rights
    try:
        with conn.cursor() as cur, pytest.raises(psycopg2.Error) as caught:
            cur.execute(statement)
    finally:
        conn.close()
    assert caught.value.pgcode == sqlstate, caught.value.pgerror
    assert roles_cluster.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", params=(role,)) == [(False,)] \
        or role == "pgdr_admin"


def test_each_role_can_do_its_duty(roles_cluster):
    cluster = roles_cluster
    roles = {row[0]: row[1:] for row in cluster.execute(
        "SELECT rolname, rolsuper, rolreplication, rolbypassrls, rolcreatedb, rolcreaterole, "
        "pg_has_role(rolname, 'pg_monitor', 'member'), pg_has_role(rolname, 'pg_read_all_data', 'member'), "
        "pg_has_role(rolname, 'pg_write_all_data', 'member') FROM pg_roles WHERE rolname LIKE 'pgdr\\_%'")}
    assert roles == {
        "pgdr_backup": (False, True, True, False, False, True, True, False),
        "pgdr_replication": (False, True, False, False, False, False, False, False),
        "pgdr_markers": (False, False, False, False, False, False, False, False),
        "pgdr_retention": (False, False, True, False, False, False, True, True),
        "pgdr_admin": (True, False, False, False, False, True, True, True),
    }
    with _login(cluster, "pgdr_backup") as conn, conn.cursor() as cur:
        cur.execute("SELECT count(*) FROM visit_notes")  # row-level security hides nothing from a dump
        assert cur.fetchone() == (40,)
    with _login(cluster, "pgdr_retention") as conn, conn.cursor() as cur:
        cur.execute("DELETE FROM visit_notes WHERE id = 40 RETURNING id")
        assert cur.fetchall() == [(40,)]
    with _login(cluster, "pgdr_markers") as conn:
        from pgdr.drill.markers import record_marker

        conn.autocommit = False
        marker = record_marker(conn, "manual__roles")
    assert cluster.execute("SELECT run_id, pg_get_userbyid(relowner) FROM pgdr.recovery_markers, pg_class "
                           "WHERE pg_class.oid = 'pgdr.recovery_markers'::regclass AND id = %s",
                           dbname=DB, params=(marker["id"],)) == [("manual__roles", "pgdr_markers")]


# --- item 7: the marker step never runs another role's trigger ----------------------------------------------

ESCALATE = """
CREATE SCHEMA pgdr;
CREATE TABLE pgdr.recovery_markers (id bigserial PRIMARY KEY, marked_at timestamptz NOT NULL DEFAULT
                                    clock_timestamp(), run_id text NOT NULL);
CREATE FUNCTION pgdr.grab() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    EXECUTE 'ALTER ROLE app_owner SUPERUSER';
    RETURN NEW;
END $$;
CREATE TRIGGER grab BEFORE INSERT ON pgdr.recovery_markers FOR EACH ROW EXECUTE FUNCTION pgdr.grab();
"""


def _superuser(cluster, role: str) -> bool:
    return cluster.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", params=(role,)) == [(True,)]


@pytest.mark.parametrize("planted", ["schema, table and trigger", "schema only"])
def test_a_marker_table_the_database_owner_planted_is_refused_and_nobody_becomes_superuser(roles_cluster, planted):
    """The database owner creates pgdr.recovery_markers first, with a trigger that makes them a
    superuser; the marker step through the restore connection (a superuser, as pg_backup_verify
    uses when pgdr_marker_conn_ids does not list the database) refuses and writes nothing."""
    from pgdr.drill.markers import MarkerRefused, record_marker

    cluster = roles_cluster
    dbname = "app_" + planted.split()[0].strip(",")
    cluster.execute("DROP ROLE IF EXISTS app_owner")
    cluster.execute("CREATE ROLE app_owner LOGIN PASSWORD 'ownerP1a2b3'")
    cluster.execute(f"DROP DATABASE IF EXISTS {dbname}")
    cluster.execute(f"CREATE DATABASE {dbname} OWNER app_owner")
    owner = _login(cluster, "app_owner", dbname, password="ownerP1a2b3")
    with owner.cursor() as cur:
        cur.execute(ESCALATE if planted != "schema only" else "CREATE SCHEMA pgdr")
    owner.close()
    conn = _login(cluster, "pgdr_admin", dbname)
    conn.autocommit = False
    try:
        with pytest.raises(MarkerRefused, match="belongs to app_owner.*pgdr_marker_conn_ids"):
            record_marker(conn, "scheduled__probe")
    finally:
        conn.close()
    assert not _superuser(cluster, "app_owner")
    if planted != "schema only":
        assert cluster.execute("SELECT count(*) FROM pgdr.recovery_markers", dbname=dbname) == [(0,)]
    else:
        assert cluster.execute("SELECT to_regclass('pgdr.recovery_markers') IS NULL", dbname=dbname) == [(True,)]
    cluster.execute(f"DROP DATABASE {dbname}")
    cluster.execute("DROP ROLE app_owner")


def test_a_trigger_on_pgdrs_own_marker_table_is_refused(roles_cluster):
    from pgdr.drill.markers import MarkerRefused, record_marker

    cluster = roles_cluster
    conn = _login(cluster, "pgdr_markers")
    conn.autocommit = False
    try:
        record_marker(conn, "first")  # the table exists and is pgdr_markers'
        cluster.execute("CREATE FUNCTION public.noop() RETURNS trigger LANGUAGE plpgsql AS "
                        "$$ BEGIN RETURN NEW; END $$", dbname=DB)
        cluster.execute("CREATE TRIGGER planted BEFORE INSERT ON pgdr.recovery_markers FOR EACH ROW "
                        "EXECUTE FUNCTION public.noop()", dbname=DB)
        before = cluster.execute("SELECT count(*) FROM pgdr.recovery_markers", dbname=DB)
        with pytest.raises(MarkerRefused, match=r"trigger\(s\) \['planted'\]"):
            record_marker(conn, "second")
        assert cluster.execute("SELECT count(*) FROM pgdr.recovery_markers", dbname=DB) == before
    finally:
        cluster.execute("DROP TRIGGER IF EXISTS planted ON pgdr.recovery_markers", dbname=DB)
        cluster.execute("DROP FUNCTION IF EXISTS public.noop()", dbname=DB)
        conn.close()


def test_markers_go_through_the_markers_connection_when_one_is_set():
    from pgdr.drill.markers import marker_conn_id
    from pgdr.settings import parse_settings

    base = {"s3_bucket": "bucket-x", "databases": json.dumps([CONN_ID]),
            "restore_conn_ids": json.dumps({CONN_ID: "care_commons_admin"})}
    assert marker_conn_id(parse_settings(base), CONN_ID) == "care_commons_admin"
    with_markers = {**base, "marker_conn_ids": json.dumps({CONN_ID: "care_commons_markers"})}
    assert marker_conn_id(parse_settings(with_markers), CONN_ID) == "care_commons_markers"


def test_the_documented_init_script_output_names_the_schema_owner(roles_cluster):
    # re-running the script (a password change) keeps schema pgdr with pgdr_markers
    cluster = roles_cluster
    env = {"PATH": f"{cluster.bindir}:{os.environ['PATH']}", "POSTGRES_USER": "postgres", "POSTGRES_DB": DB,
           "PGDATA": str(cluster.data_dir), "PGHOST": cluster.host, "PGPORT": str(cluster.port), **PASSWORDS}
    result = subprocess.run(["bash", str(INIT_SCRIPT)], env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "schema pgdr belongs to pgdr_markers" in result.stdout
    assert cluster.execute("SELECT nspowner::regrole::text FROM pg_namespace WHERE nspname = 'pgdr'",
                           dbname=DB) == [("pgdr_markers",)]

