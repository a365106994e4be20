"""pg_restore end to end on real services: every mode, every refusal, checked from the outside.

The restored databases are compared with the source by per-table fingerprints (row count
and an order-independent hash of every row) and by owners and grants, read as the
superuser with the harness's own queries, not pgdr's.
"""

from __future__ import annotations

import json

import pytest

from harness.pg_cluster import start_cluster
from harness.stack import BUCKET, CONN_ID, DBNAME, RESTORE_PASSWORD, RESTORE_ROLE, postgres_conn
from harness.synthetic import APP_ROLE, READONLY_ROLE, fingerprint, owners_and_grants
from tests.support.dags import run_backup_daily, run_dag, task_states, xcom_values
from tests.support.s3 import json_records

PREFIX = "restore-e2e"


@pytest.fixture(scope="module")
def backed_up(stack, airflow_db, tmp_path_factory):
    """One backup of the stack's database under its own prefix, and the source as it was then."""
    # a per-database role setting travels in the globals, not in the dump
    stack.cluster.execute(f"ALTER ROLE {APP_ROLE} IN DATABASE {DBNAME} SET work_mem = '64MB'")
    env = stack.airflow_env()
    env["AIRFLOW_VAR_PGDR_STAGING_DIR"] = str(tmp_path_factory.mktemp("restore-staging"))
    env["AIRFLOW_VAR_PGDR_S3_PREFIX"] = PREFIX
    (seal,) = run_backup_daily(env)
    return {"env": env, "backup_id": seal["backup_id"], "fingerprint": fingerprint(stack.cluster, DBNAME),
            "grants": owners_and_grants(stack.cluster, DBNAME)}


@pytest.fixture()
def restore_env(stack, backed_up, monkeypatch):
    stack.slack.clear()
    for name, value in backed_up["env"].items():
        monkeypatch.setenv(name, value)
    return backed_up


def _restore(conf: dict):
    dag_run = run_dag("pg_restore", conf={"database": CONN_ID, **conf})
    return dag_run, task_states(dag_run)


def _role_settings(cluster, dbname: str) -> list:
    return cluster.execute("SELECT pg_get_userbyid(s.setrole), s.setconfig FROM pg_db_role_setting s "
                           "JOIN pg_database d ON d.oid = s.setdatabase WHERE d.datname = %s", params=(dbname,))


def _records(stack, prefix: str = PREFIX) -> list[dict]:
    return json_records(stack.s3.client(), f"{prefix}/reports/restore/", suffix="")


def test_new_database_is_identical_to_the_source_with_owners_and_grants(stack, restore_env):
    before = stack.cluster.database_names()
    dag_run, states = _restore({"target_database": "cc_restored_same_server"})
    try:
        assert str(dag_run.state) == "success", states
        assert fingerprint(stack.cluster, "cc_restored_same_server") == restore_env["fingerprint"]
        restored = owners_and_grants(stack.cluster, "cc_restored_same_server")
        assert restored == restore_env["grants"]
        assert _role_settings(stack.cluster, "cc_restored_same_server") == [(APP_ROLE, ["work_mem=64MB"])]
        assert set(stack.cluster.database_names()) - set(before) == {"cc_restored_same_server"}
        record = _records(stack)[-1]
        assert record["status"] == "succeeded" and record["triggered_by"]
        assert record["result"]["row_counts_match"] and record["result"]["tables"] == len(stack.row_counts)
        assert record["plan"]["backup_id"] == restore_env["backup_id"]
        assert "confirm" not in record["requested"]
        assert any("restore of care_commons_db succeeded" in text for text in stack.slack.texts())
        assert _leases(stack) == [], "the report releases the lease prepare took"
    finally:
        stack.cluster.execute("DROP DATABASE IF EXISTS cc_restored_same_server WITH (FORCE)")


def _leases(stack) -> list[dict]:
    return json_records(stack.s3.client(), f"{PREFIX}/state/leases/", suffix="")


def test_prepare_leases_the_backup_so_retention_keeps_it_while_the_restore_runs(stack, restore_env):
    import logging
    from datetime import datetime, timedelta, timezone

    from harness.run_dag import load_dag_for_test
    from pgdr.settings import load_settings
    from pgdr.store.leases import active, holders_by_backup, release
    from pgdr.store.s3 import BackupStore

    dag = load_dag_for_test("pg_restore").partial_subset(task_ids=["prepare"], include_downstream=False,
                                                         include_upstream=False)
    dag_run = dag.test(run_conf={"database": CONN_ID, "target_database": "cc_leased"})
    assert str(dag_run.state) == "success", task_states(dag_run)
    (plan,) = xcom_values(dag_run, "prepare")
    (lease,) = _leases(stack)
    assert (lease["kind"], lease["backup_id"]) == ("logical", restore_env["backup_id"])
    assert lease["holder"] == f"pg_restore:{dag_run.run_id}" == plan["lease"]["holder"]
    expires = datetime.fromisoformat(lease["expires_at"]) - datetime.now(timezone.utc)
    assert timedelta(hours=6) < expires <= timedelta(hours=7, minutes=1), "outlasts pg_restore's dagrun_timeout"
    store = BackupStore.from_settings(load_settings(), logging.getLogger("test"))
    # what backup retention reads to keep the backup ("leased by restore run ...")
    assert holders_by_backup(active(store, CONN_ID)) == {("logical", restore_env["backup_id"]): (lease["holder"],)}
    release(store, CONN_ID, "logical", restore_env["backup_id"], lease["holder"])
    assert _leases(stack) == []


def test_site_loss_restore_into_a_brand_new_cluster_creates_the_missing_roles(stack, restore_env, monkeypatch):
    new_site = start_cluster()
    try:
        new_site.create_restore_role(RESTORE_ROLE, RESTORE_PASSWORD)
        assert not new_site.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", params=(APP_ROLE,))
        monkeypatch.setenv("AIRFLOW_CONN_NEW_SITE", postgres_conn(new_site, dbname="postgres", user=RESTORE_ROLE,
                                                                  password=RESTORE_PASSWORD))
        # a restore writes only into a protected database's restore server or a listed connection
        dag_run, states = _restore({"target_conn_id": "new_site", "target_database": DBNAME})
        assert str(dag_run.state) == "failed" and states["restore"] != "success", states
        assert not new_site.execute("SELECT 1 FROM pg_database WHERE datname = %s", params=(DBNAME,))
        monkeypatch.setenv("AIRFLOW_VAR_PGDR_RESTORE_TARGET_CONN_IDS", '["new_site"]')
        dag_run, states = _restore({"target_conn_id": "new_site", "target_database": DBNAME})
        assert str(dag_run.state) == "success", states
        assert fingerprint(new_site, DBNAME) == restore_env["fingerprint"]
        assert owners_and_grants(new_site, DBNAME) == restore_env["grants"]
        assert _role_settings(new_site, DBNAME) == [(APP_ROLE, ["work_mem=64MB"])]
        (outcome,) = xcom_values(dag_run, "restore")
        assert set(outcome["roles_created"]) >= {APP_ROLE, READONLY_ROLE}
        assert any("roles created without passwords" in text for text in stack.slack.texts())
    finally:
        new_site.destroy()


@pytest.mark.parametrize("confirm", ["", "RESTORE billing_db", "RESTORE care_commons"])
def test_replace_without_the_exact_confirmation_is_refused_and_changes_nothing(stack, restore_env, confirm):
    stack.cluster.execute("CREATE TABLE public.added_after_backup (id int)", dbname=DBNAME)
    try:
        before = stack.cluster.database_names()
        source = fingerprint(stack.cluster, DBNAME)
        dag_run, states = _restore({"mode": "replace", "confirm": confirm})
        assert str(dag_run.state) == "failed"
        assert states["prepare"] == "failed" and states["restore"] == "upstream_failed"
        assert states["report"] == "failed"  # the report ran, wrote the record, and marks the run failed
        assert stack.cluster.database_names() == before
        assert fingerprint(stack.cluster, DBNAME) == source
        record = _records(stack)[-1]
        assert record["status"] == "refused"
        assert "type exactly 'RESTORE care_commons_db' in confirm" in record["error"]
        assert any("restore of care_commons_db refused" in text for text in stack.slack.texts())
    finally:
        stack.cluster.execute("DROP TABLE public.added_after_backup", dbname=DBNAME)


def test_replace_with_the_confirmation_swaps_in_the_backup_and_keeps_the_old_database(stack, restore_env):
    stack.cluster.execute("CREATE TABLE public.added_after_backup (id int)", dbname=DBNAME)
    stack.cluster.execute("INSERT INTO public.added_after_backup VALUES (1), (2)", dbname=DBNAME)
    before = set(stack.cluster.database_names())
    dag_run, states = _restore({"mode": "replace", "confirm": f"RESTORE {CONN_ID}"})
    kept = sorted(set(stack.cluster.database_names()) - before)
    try:
        assert str(dag_run.state) == "success", states
        assert fingerprint(stack.cluster, DBNAME) == restore_env["fingerprint"]
        assert owners_and_grants(stack.cluster, DBNAME) == restore_env["grants"]
        assert len(kept) == 1 and kept[0].startswith(f"{DBNAME}_replaced_")
        assert stack.cluster.execute("SELECT count(*) FROM public.added_after_backup", dbname=kept[0]) == [(2,)]
        # the kept database is recorded in S3 by OID and name: what drop_expired_replaced goes by
        (record,) = _replaced(stack)
        (oid,) = stack.cluster.execute("SELECT oid::bigint FROM pg_database WHERE datname = %s", params=(kept[0],))
        assert (record["kept_database"], record["oid"], record["live_database"]) == (kept[0], oid[0], DBNAME)
        assert record["keep_until"] > record["kept_at"]
        assert stack.cluster.execute("SELECT datallowconn FROM pg_database WHERE datname = ANY(%s)",
                                     params=([kept[0], DBNAME],)) == [(True,), (True,)]
        # the backup role (the application's view of the database) still reads it
        assert stack.cluster.execute("SELECT has_database_privilege('pgdr_backup', %s, 'CONNECT')",
                                     params=(DBNAME,)) == [(True,)]
    finally:
        for name in kept:
            stack.cluster.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        _forget_replaced(stack)


def _replaced(stack) -> list[dict]:
    return json_records(stack.s3.client(), f"{PREFIX}/state/replaced/", suffix="")


def _forget_replaced(stack) -> None:
    client = stack.s3.client()
    for version in client.list_object_versions(Bucket=BUCKET, Prefix=f"{PREFIX}/state/").get("Versions", []):
        client.delete_object(Bucket=BUCKET, Key=version["Key"], VersionId=version["VersionId"])


def test_tables_mode_recovers_deleted_rows_and_touches_nothing_else(stack, restore_env):
    deleted = [row[0] for row in stack.cluster.execute(
        "DELETE FROM public.visits v WHERE v.id IN (SELECT id FROM public.visits x WHERE NOT EXISTS "
        "(SELECT 1 FROM public.evv_records e WHERE e.visit_id = x.id) ORDER BY id LIMIT 25) RETURNING v.id::text",
        dbname=DBNAME)]
    assert len(deleted) == 25
    try:
        before = fingerprint(stack.cluster, DBNAME)
        databases = stack.cluster.database_names()
        dag_run, states = _restore({"mode": "tables", "tables": ["public.visits"]})
        assert str(dag_run.state) == "success", states
        (outcome,) = xcom_values(dag_run, "restore")
        schema = outcome["recovered_schema"]
        assert schema.startswith("recovered_")
        after = fingerprint(stack.cluster, DBNAME)
        recovered = after.pop(f"{schema}.visits")
        assert after == before, "the live tables must not change"
        assert recovered[0] == stack.row_counts["public.visits"]
        found = {row[0] for row in stack.cluster.execute(
            f"SELECT id::text FROM {schema}.visits WHERE id::text = ANY(%s)", dbname=DBNAME, params=(deleted,))}
        assert found == set(deleted)
        assert stack.cluster.database_names() == databases, "the scratch database is dropped"
        # only the restoring role can read the recovered copy: no grants came with it
        assert stack.cluster.execute(f"SELECT has_table_privilege('{APP_ROLE}', '{schema}.visits', 'SELECT')",
                                     dbname=DBNAME) == [(False,)]
        # the runbook's next step: copy the deleted rows back
        stack.cluster.execute(f"INSERT INTO public.visits SELECT * FROM {schema}.visits r WHERE NOT EXISTS "
                              f"(SELECT 1 FROM public.visits v WHERE v.id = r.id)", dbname=DBNAME)
        stack.cluster.execute(f"DROP SCHEMA {schema} CASCADE", dbname=DBNAME)
        assert fingerprint(stack.cluster, DBNAME) == restore_env["fingerprint"]
    finally:
        stack.cluster.execute("SELECT 1", dbname=DBNAME)


@pytest.mark.parametrize("conf, message", [
    ({"backup": "20200101T000000Z"}, "backup 20200101T000000Z of care_commons_db does not exist; "
                                     "the newest good backup is"),
    ({"mode": "tables", "tables": ["public.no_such_table"]}, "holds no table public.no_such_table"),
    ({"target_database": DBNAME}, f"database '{DBNAME}' already exists on the target"),
    ({"mode": "replace", "confirm": f"RESTORE {CONN_ID}", "target_database": "cc_other"},
     "mode 'replace' replaces 'care_commons'"),
])
def test_bad_requests_are_refused_by_the_prepare_task_with_nothing_changed(stack, restore_env, conf, message):
    before = stack.cluster.database_names()
    dag_run, states = _restore(conf)
    assert states["prepare"] == "failed" and states["restore"] == "upstream_failed", states
    assert stack.cluster.database_names() == before
    assert message in _records(stack)[-1]["error"]


@pytest.mark.parametrize("conf", [
    {"backup": "../../other/care_commons_db/logical/20261126T020000Z"},
    {"backup": "20261126T020000Z/../x"},
    {"target_database": 'x"; DROP DATABASE care_commons; --'},
    {"target_database": "cc;drop"},
    {"mode": "everything"},
    {"tables": ["public.visits; DROP TABLE x"], "mode": "tables"},
    {"confirm": "yes"},
])
def test_malformed_fields_are_refused_by_the_form_before_a_run_exists(stack, restore_env, conf):
    from airflow.sdk.definitions.param import ParamValidationError

    before = stack.cluster.database_names()
    with pytest.raises(ParamValidationError):
        _restore(conf)
    assert stack.cluster.database_names() == before


def test_a_damaged_or_bad_backup_is_refused_naming_the_newest_good_one(stack, pgdr_env):
    from pgdr.store.catalog import MARKER_NAME

    first = run_dag("pg_backup_daily")
    assert str(first.state) == "success"
    import time

    time.sleep(1.1)  # backup ids are per second
    second = run_dag("pg_backup_daily")
    assert str(second.state) == "success"
    (old,) = xcom_values(first, "backup.verify_and_seal")
    (new,) = xcom_values(second, "backup.verify_and_seal")
    client = stack.s3.client()
    prefix = pgdr_env["AIRFLOW_VAR_PGDR_S3_PREFIX"]
    backup_dir = f"{prefix}/{CONN_ID}/logical/{new['backup_id']}"
    table_key = next(o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix=backup_dir)["Contents"]
                     if o["Key"].endswith(".dat.zst"))
    body = bytearray(client.get_object(Bucket=BUCKET, Key=table_key)["Body"].read())
    body[len(body) // 2] ^= 0xFF
    client.put_object(Bucket=BUCKET, Key=table_key, Body=bytes(body), ServerSideEncryption="AES256")
    before = stack.cluster.database_names()

    dag_run, states = _restore({})  # latest = the damaged one
    assert states["prepare"] == "failed", states
    error = _records(stack, prefix)[-1]["error"]
    assert f"backup {new['backup_id']} of {CONN_ID} is damaged" in error and table_key in error
    assert f"the newest good backup is {old['backup_id']}" in error
    marker = json.loads(client.get_object(Bucket=BUCKET, Key=f"{backup_dir}/{MARKER_NAME}")["Body"].read())
    assert marker["status"] == "bad" and marker["check"] == "restore"

    dag_run, states = _restore({"backup": new["backup_id"]})  # now marked bad
    error = _records(stack, prefix)[-1]["error"]
    assert f"backup {new['backup_id']} of {CONN_ID} was marked bad" in error
    assert f"the newest good backup is {old['backup_id']}" in error
    assert stack.cluster.database_names() == before


def _record_kept(stack, name: str, keep_until: str, live: str = DBNAME) -> None:
    """A kept database as a replace records it (by OID and name)."""
    from pgdr.restore.swap import record_replaced

    (oid,) = stack.cluster.execute("SELECT oid::bigint FROM pg_database WHERE datname = %s", params=(name,))
    record_replaced(_store(), database=CONN_ID, target_conn_id="", server="", kept=name, oid=oid[0], live=live,
                    run_id="r1", backup_id="20260101T000000Z", keep_until=keep_until)


def _store():
    import logging

    from pgdr.settings import load_settings
    from pgdr.store.s3 import BackupStore

    return BackupStore.from_settings(load_settings(), logging.getLogger("test"))


def test_verification_drops_a_recorded_kept_database_only_after_its_keep_until_time(stack, restore_env):
    from harness.stack import DBNAME as source

    expired, current = f"{source}_replaced_20200101_000000", f"{source}_replaced_20990101_000000"
    unrecorded, impostor = f"{source}_replaced_20200102_000000", "not_ours"
    for name in (expired, current, unrecorded):
        stack.cluster.execute(f"CREATE DATABASE {name}")
    # the old comment-based marker decides nothing any more
    stack.cluster.execute(f"COMMENT ON DATABASE {unrecorded} IS "
                          "'pgdr: replaced by restore r0; keep until 2020-01-08T00:00:00+00:00'")
    _record_kept(stack, expired, "2020-01-08T00:00:00+00:00")
    _record_kept(stack, current, "2099-01-08T00:00:00+00:00")
    # a record whose name now belongs to another database (dropped and re-created): not ours any more
    stack.cluster.execute(f"CREATE DATABASE {impostor}")
    _record_kept(stack, impostor, "2020-01-08T00:00:00+00:00")
    stack.cluster.execute(f"DROP DATABASE {impostor}")
    stack.cluster.execute(f"CREATE DATABASE {impostor}")
    try:
        dag_run = run_dag("pg_backup_verify")
        assert task_states(dag_run)["drop_expired_replaced[0]"] == "success"
        assert xcom_values(dag_run, "drop_expired_replaced") == [[expired]]
        names = stack.cluster.database_names()
        assert expired not in names and current in names and unrecorded in names and impostor in names
        assert sorted(r["kept_database"] for r in _replaced(stack)) == [current]
    finally:
        for name in (expired, current, unrecorded, impostor):
            stack.cluster.execute(f"DROP DATABASE IF EXISTS {name}")
        _forget_replaced(stack)


def _rows(stack, dbname: str, table: str = "public.visits") -> int:
    return stack.cluster.execute(f"SELECT count(*) FROM {table}", dbname=dbname)[0][0]


def test_a_replace_rolled_back_by_renaming_is_never_dropped_with_its_rows(stack, restore_env):
    """The natural rollback of a replace: rename the kept database back. Its keep-until time passes
    (and it still carries whatever comment); drop_expired_replaced must leave it alone."""
    stack.cluster.execute("CREATE TABLE public.added_after_backup (id int)", dbname=DBNAME)
    stack.cluster.execute("INSERT INTO public.added_after_backup VALUES (1), (2), (3)", dbname=DBNAME)
    before = set(stack.cluster.database_names())
    dag_run, states = _restore({"mode": "replace", "confirm": f"RESTORE {CONN_ID}"})
    assert str(dag_run.state) == "success", states
    (kept,) = sorted(set(stack.cluster.database_names()) - before)
    restored = f"{DBNAME}_restored_copy"
    try:
        # roll back: the live database goes back to its name, the restored copy aside
        stack.cluster.execute(f'ALTER DATABASE "{DBNAME}" RENAME TO "{restored}"')
        stack.cluster.execute(f'ALTER DATABASE "{kept}" RENAME TO "{DBNAME}"')
        stack.cluster.execute(f"COMMENT ON DATABASE {DBNAME} IS "
                              "'pgdr: replaced by restore x; keep until 2000-01-01T00:00:00+00:00'")
        (record,) = _replaced(stack)
        client = stack.s3.client()
        key = f"{PREFIX}/state/replaced/{CONN_ID}/{kept}.json"
        client.put_object(Bucket=BUCKET, Key=key,
                          Body=json.dumps({**record, "keep_until": "2000-01-01T00:00:00+00:00"}),
                          ServerSideEncryption="AES256")
        dag_run = run_dag("pg_backup_verify")
        assert task_states(dag_run)["drop_expired_replaced[0]"] == "success"
        assert xcom_values(dag_run, "drop_expired_replaced") == [[]]
        assert DBNAME in stack.cluster.database_names()
        assert _rows(stack, DBNAME, "public.added_after_backup") == 3
        assert _replaced(stack) == [], "the record of a database renamed since is forgotten"
    finally:
        if restored in stack.cluster.database_names():
            stack.cluster.execute(f'DROP DATABASE IF EXISTS "{restored}" WITH (FORCE)')
        stack.cluster.execute("DROP TABLE IF EXISTS public.added_after_backup", dbname=DBNAME)
        _forget_replaced(stack)


def test_a_protected_database_is_never_dropped_whatever_a_record_says(stack, restore_env):
    """Even a record naming the live database itself (a restore of a dump carrying the old comment,
    a record written by hand) never drops a protected database."""
    _record_kept(stack, DBNAME, "2000-01-01T00:00:00+00:00", live="elsewhere")
    try:
        dag_run = run_dag("pg_backup_verify")
        assert xcom_values(dag_run, "drop_expired_replaced") == [[]]
        assert DBNAME in stack.cluster.database_names() and _rows(stack, DBNAME) == stack.row_counts["public.visits"]
    finally:
        _forget_replaced(stack)


def test_data_whose_hash_differs_during_download_never_lands_and_the_database_is_dropped(stack, restore_env,
                                                                                         tmp_path):
    """The S3-side check can be bypassed (a manifest edited by hand); the streaming hash still stops it."""
    import dataclasses
    import logging

    import psycopg2

    from pgdr.core.pgtools import PgTarget
    from pgdr.restore.logical import LogicalRestore
    from pgdr.restore.names import RestoreNames
    from pgdr.store.manifest import backup_prefix
    from pgdr.store.s3 import BackupStore

    store = BackupStore(client=stack.s3.client(), bucket=BUCKET, prefix=PREFIX,
                        sse_args={"ServerSideEncryption": "AES256"},
                        part_size=64 << 20, log=logging.getLogger("test"))
    prefix = backup_prefix(PREFIX, CONN_ID, "logical", restore_env["backup_id"])
    manifest = store.read_manifest(f"{prefix}/manifest.json")
    largest = max((o for o in manifest.objects if o.role == "table_data"), key=lambda o: o.size)
    manifest.objects = [dataclasses.replace(o, sha256="0" * 64) if o is largest else o for o in manifest.objects]
    target = PgTarget(conn_id="admin", host=stack.cluster.host, port=stack.cluster.port, user=RESTORE_ROLE,
                      dbname="postgres", password=RESTORE_PASSWORD)

    def connect(dbname):
        conn = psycopg2.connect(host=target.host, port=target.port, user=RESTORE_ROLE, password=RESTORE_PASSWORD,
                                dbname=dbname)
        conn.autocommit = True
        return conn

    before = stack.cluster.database_names()
    restore = LogicalRestore(store=store, manifest=manifest, prefix=prefix, target=target, connect=connect,
                             names=RestoreNames("cc_hash_check", "cc_hash_check", None, None), mode="new_database",
                             tables=(), workdir=tmp_path / "work", bindir=stack.cluster.bindir, jobs=2,
                             log=logging.getLogger("test"))
    with pytest.raises(Exception) as failed:
        restore.run()
    assert f"{prefix}/{largest.name}: sha256" in str(failed.value) and "!= manifest 000000" in str(failed.value)
    assert stack.cluster.database_names() == before
    assert not (tmp_path / "work").exists()


def test_a_backup_missing_an_object_is_refused_marked_bad_and_named(stack, restore_env):
    """The plan's S3 check (pgdr.restore.plan.refuse_damaged) on the real store: an object the
    manifest lists but S3 no longer holds is "missing", the verdict is recorded, nothing else read."""
    import dataclasses
    import logging

    from pgdr.errors import RestoreRefused
    from pgdr.restore.plan import load_manifest, refuse_damaged
    from pgdr.store.catalog import BackupEntry
    from pgdr.store.s3 import BackupStore

    store = BackupStore(client=stack.s3.client(), bucket=BUCKET, prefix=PREFIX,
                        sse_args={"ServerSideEncryption": "AES256"}, part_size=64 << 20, log=logging.getLogger("t"))
    manifest, prefix = load_manifest(store, CONN_ID, restore_env["backup_id"])
    gone = dataclasses.replace(manifest.objects[-1], name="dump/9999.dat.zst", key=f"{prefix}/dump/9999.dat.zst")
    manifest.objects = [*manifest.objects, gone]
    marked = []
    entries = [BackupEntry(restore_env["backup_id"], True, True),
               BackupEntry("20200101T000000Z", True, True, {"status": "good"})]
    with pytest.raises(RestoreRefused) as refused:
        refuse_damaged(store, CONN_ID, manifest, prefix, entries, mark=lambda *verdict: marked.append(verdict))
    assert refused.value.field == "backup"
    assert (f"{prefix}/dump/9999.dat.zst: object missing or unreadable" in str(refused.value)
            and "the newest good backup is 20200101T000000Z" in str(refused.value))
    ((database, kind, backup_id, problems),) = marked
    assert (database, kind, backup_id) == (CONN_ID, "logical", restore_env["backup_id"])
    assert [p["key"] for p in problems] == [f"{prefix}/dump/9999.dat.zst"]   # every real object is intact
