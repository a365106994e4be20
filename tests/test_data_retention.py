"""pg_data_retention end to end: the default policy on a synthetic care-commons database with rows
dated across eight years, run for real with dag.test() (a dry run, then for real), S3 on moto's
server, Slack on a local receiver.

The destructive work happens on a database of its own (created here, dropped after), never on the
stack's care_commons that other tests fingerprint.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
from datetime import datetime, timedelta

import pytest
import zstandard

from harness.aged_rows import insert_aged_rows
from harness.stack import BUCKET, RESTORE_CONN_ID, postgres_conn
from harness.synthetic import create_care_commons, fingerprint
from tests.support.dags import run_dag_in_child, task_states

CONN_ID = "retention_db"
POLICY_TABLES = ("evv_revisions", "evv_records", "audit_events", "visits")
DATE_COLUMN = {"evv_revisions": "revised_at", "evv_records": "service_date", "audit_events": "timestamp",
               "visits": "scheduled_date"}
PK = {"audit_events": "event_id"}


def _rows(cluster, dbname: str, table: str) -> dict[str, dict]:
    """Every row of a table: id -> its date columns, references and md5 of its text (no PHI kept)."""
    pk = PK.get(table, "id")
    extra = {"visits": ", t.deleted_at", "evv_records": ", t.visit_id::text",
             "evv_revisions": ", t.evv_record_id::text", "audit_events": ""}[table]
    conn = cluster.connect(dbname)
    try:
        with conn.cursor() as cur:
            cur.execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET extra_float_digits = 1; "
                        "SET IntervalStyle = 'postgres'; SET bytea_output = 'hex'")
            cur.execute(f'SELECT t.{pk}::text, md5(t::text), t."{DATE_COLUMN[table]}"{extra} FROM {table} t')
            out = {}
            for row in cur.fetchall():
                item = {"md5": row[1], "date": row[2]}
                if table == "visits":
                    item["deleted_at"] = row[3]
                elif table in ("evv_records", "evv_revisions"):
                    item["parent"] = row[3]
                out[row[0]] = item
            return out
    finally:
        conn.close()


def _snapshot(cluster, dbname):
    return {table: _rows(cluster, dbname, table) for table in POLICY_TABLES}


def _years_before(moment: datetime, years: int) -> datetime:
    from pgdr.retain.data_policy import Age

    return Age(years=years).before(moment)


def _expected(before: dict, as_of: datetime) -> dict[str, set]:
    """What the default policy must do, worked out independently from the rows as they were."""
    seven, six = _years_before(as_of, 7), _years_before(as_of, 6)
    revisions = {i for i, r in before["evv_revisions"].items() if r["date"] < seven}
    kept_revision_parents = {r["parent"] for i, r in before["evv_revisions"].items() if i not in revisions}
    evv = {i for i, r in before["evv_records"].items() if r["date"] < seven.date() and i not in kept_revision_parents}
    audit = {i for i, r in before["audit_events"].items() if r["date"] < seven}
    visits_referenced = {r["parent"] for i, r in before["evv_records"].items() if i not in evv}
    purged = {i for i, r in before["visits"].items()
              if r["deleted_at"] is not None and r["deleted_at"] < as_of - timedelta(days=365)
              and r["date"] < six.date() and i not in visits_referenced}
    soft = {i for i, r in before["visits"].items() if r["deleted_at"] is None and r["date"] < seven.date()}
    return {"evv_revisions": revisions, "evv_records": evv, "audit_events": audit, "visits_purged": purged,
            "visits_soft_deleted": soft}


@pytest.fixture(scope="module")
def retention(stack, airflow_db, tmp_path_factory):
    """A fresh synthetic database with aged rows, a dry run of pg_data_retention, then a real run."""
    from datetime import date, timezone

    dbname = f"retention_{os.urandom(3).hex()}"
    create_care_commons(stack.cluster, dbname=dbname, scale=0.02, seed=7)
    conn = stack.cluster.connect(dbname)
    try:
        aged = insert_aged_rows(conn, datetime.now(timezone.utc).date())
    finally:
        conn.close()
    role = create_retention_role(stack.cluster, dbname, POLICY_TABLES)
    env = stack.airflow_env()
    env.update({
        "AIRFLOW_CONN_RETENTION_DB": postgres_conn(stack.cluster, dbname=dbname),
        "AIRFLOW_CONN_RETENTION_DB_ACT": postgres_conn(stack.cluster, dbname=dbname, user=role, password=role),
        "AIRFLOW_VAR_PGDR_DATABASES": json.dumps([CONN_ID]),
        "AIRFLOW_VAR_PGDR_RESTORE_CONN_IDS": json.dumps({CONN_ID: RESTORE_CONN_ID}),
        # retention acts through a dedicated non-superuser role (a superuser connection is refused)
        "AIRFLOW_VAR_PGDR_RETENTION_CONN_IDS": json.dumps({CONN_ID: "retention_db_act"}),
        "AIRFLOW_VAR_PGDR_S3_PREFIX": f"t/{os.urandom(4).hex()}",
        "AIRFLOW_VAR_PGDR_STAGING_DIR": str(tmp_path_factory.mktemp("retention-staging")),
        # small batches, so the archive, purge and soft-delete each take several transactions
        "AIRFLOW_VAR_PGDR_RETENTION_BATCH_ROWS": "7",
    })
    state: dict = {"dbname": dbname, "aged": aged, "env": env, "today": date.today(), "role": role}
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            stack.slack.clear()
            state["fingerprint_before"] = fingerprint(stack.cluster, dbname)
            # the form's default: a dry run
            state["dry_run"], state["dry_run_output"] = run_dag_in_child("pg_data_retention")
            state["fingerprint_after_dry_run"] = fingerprint(stack.cluster, dbname)
            state["slack_dry_run"] = stack.slack.wait_for(1)
            state["before"] = _snapshot(stack.cluster, dbname)
            stack.slack.clear()
            state["real"], state["real_output"] = run_dag_in_child("pg_data_retention", {"dry_run": False})
            state["after"] = _snapshot(stack.cluster, dbname)
            state["fingerprint_after"] = fingerprint(stack.cluster, dbname)
            state["slack_real"] = stack.slack.wait_for(1)
        yield state
    finally:
        stack.cluster.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        stack.cluster.execute(f'DROP ROLE IF EXISTS "{role}"')


def create_retention_role(cluster, dbname: str, tables) -> str:
    """A login role for data retention, no superuser: reads every table (the reference checks), may delete
    and update the policy tables, sees every row (BYPASSRLS). Its password is its name (tests only)."""
    role = f"pgdr_retention_{os.urandom(3).hex()}"
    cluster.execute(f"CREATE ROLE \"{role}\" LOGIN BYPASSRLS PASSWORD '{role}'")
    cluster.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"', dbname=dbname)
    cluster.execute(f'GRANT UPDATE, DELETE ON {", ".join(tables)} TO "{role}"', dbname=dbname)
    return role


def _report(stack, state, run) -> dict:
    client = stack.s3.client()
    prefix = state["env"]["AIRFLOW_VAR_PGDR_S3_PREFIX"]
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/reports/retention/data/")
            .get("Contents", [])]
    for key in keys:
        report = json.loads(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
        if report["run_id"] == run.run_id:
            return report
    raise AssertionError(f"no report for {run.run_id} among {keys}")


def test_dry_run_changes_nothing_and_reports_what_it_would_do(stack, retention):
    run = retention["dry_run"]
    assert str(run.state) == "success", (task_states(run), retention["dry_run_output"][-6000:])
    assert retention["fingerprint_after_dry_run"] == retention["fingerprint_before"]
    report = _report(stack, retention, run)
    assert report["dry_run"] is True and report["status"] == "ok"
    expected = _expected(retention["before"], datetime.fromisoformat(report["as_of"]))
    rules = {rule["rule"]: rule for rule in report["rules"]}
    assert rules["public.audit_events/archive"]["eligible"] == len(expected["audit_events"]) > 0
    assert rules["public.evv_revisions/archive"]["eligible"] == len(expected["evv_revisions"]) > 0
    assert rules["public.visits/soft_delete"]["eligible"] == len(expected["visits_soft_deleted"]) > 0
    assert all(rule["archived"] == rule["deleted"] == rule["soft_deleted"] == 0 for rule in rules.values())
    text = json.dumps(retention["slack_dry_run"])
    assert "data retention dry run done" in text and "Would be archived" in text


def test_default_policy_archives_and_deletes_exactly_the_expected_rows(stack, retention):
    run = retention["real"]
    assert str(run.state) == "success", (task_states(run), retention["real_output"][-6000:])
    report = _report(stack, retention, run)
    as_of = datetime.fromisoformat(report["as_of"])
    before, after = retention["before"], retention["after"]
    expected = _expected(before, as_of)
    for table in ("evv_revisions", "evv_records", "audit_events"):
        gone = set(before[table]) - set(after[table])
        assert gone == expected[table], table
        assert expected[table], f"the synthetic data should give {table} rows to archive"
    assert set(before["visits"]) - set(after["visits"]) == expected["visits_purged"]
    newly_soft = {i for i, r in after["visits"].items()
                  if r["deleted_at"] is not None and before["visits"][i]["deleted_at"] is None}
    assert newly_soft == expected["visits_soft_deleted"]
    assert all(after["visits"][i]["deleted_at"] == as_of for i in newly_soft)
    rules = {rule["rule"]: rule for rule in report["rules"]}
    for table in ("evv_revisions", "evv_records", "audit_events"):
        rule = rules[f"public.{table}/archive"]
        assert rule["archived"] == rule["deleted"] == len(expected[table])
    assert rules["public.visits/purge_soft_deleted"]["deleted"] == len(expected["visits_purged"])
    assert rules["public.visits/soft_delete"]["soft_deleted"] == len(expected["visits_soft_deleted"])
    # every other table is untouched
    untouched = {name: value for name, value in retention["fingerprint_after"].items()
                 if name.split(".")[1] not in POLICY_TABLES}
    assert untouched == {name: value for name, value in retention["fingerprint_before"].items()
                         if name.split(".")[1] not in POLICY_TABLES}
    # the batches were small: several transactions per rule, logged with counts only
    assert "VACUUM (ANALYZE) public.visits" in retention["real_output"]
    text = json.dumps(retention["slack_real"])
    assert "data retention done" in text and "public.visits/purge_soft_deleted" in text


def test_nothing_younger_than_the_floor_is_touched_and_the_seeds_bug_is_gone(stack, retention):
    before, after = retention["before"], retention["after"]
    as_of = datetime.fromisoformat(_report(stack, retention, retention["real"])["as_of"])
    floor = _years_before(as_of, 6)
    for table in POLICY_TABLES:
        for row_id, row in before[table].items():
            young = row["date"] >= (floor.date() if table in ("visits", "evv_records") else floor)
            if young:
                assert after[table].get(row_id, {}).get("md5") == row["md5"], (table, row_id)
    aged = retention["aged"]
    visits = after["visits"]
    for case in ("recent_deleted_long_ago", "floor_minus_day_deleted", "old_deleted_with_evv",
                 "old_deleted_recently", "old_live"):
        assert aged[case]["visit"] in visits, case
        assert visits[aged[case]["visit"]]["md5"] == before["visits"][aged[case]["visit"]]["md5"], case
    for case in ("old_deleted_free", "floor_plus_day_deleted", "very_old_deleted_with_evv"):
        assert aged[case]["visit"] not in visits, case
    assert visits[aged["very_old_with_evv"]["visit"]]["deleted_at"] is not None
    for case in ("very_old_with_evv", "very_old_deleted_with_evv"):
        assert aged[case]["evv"] not in after["evv_records"]
        assert not set(aged[case]["revisions"]) & set(after["evv_revisions"])
    assert aged["old_deleted_with_evv"]["evv"] in after["evv_records"]
    assert aged["audit_archived"]["audit"] not in after["audit_events"]
    assert aged["audit_just_archived"]["audit"] not in after["audit_events"]
    assert aged["audit_kept_under_seven"]["audit"] in after["audit_events"]


def test_archive_is_encrypted_checked_and_restores_the_deleted_rows(stack, retention):
    report = _report(stack, retention, retention["real"])
    client = stack.s3.client()
    before = retention["before"]
    conn = stack.cluster.connect(retention["dbname"])
    try:
        for rule in report["rules"]:
            if rule["action"] == "soft_delete":   # archive and purge_soft_deleted both archive what they delete
                continue
            table = rule["table"].split(".")[1]
            archive = rule["archive"]
            manifest = json.loads(client.get_object(Bucket=BUCKET, Key=archive["manifest_key"])["Body"].read())
            assert manifest["rows"] == rule["archived"]
            head = client.head_object(Bucket=BUCKET, Key=archive["key"])
            assert head["ServerSideEncryption"] == "AES256"
            body = client.get_object(Bucket=BUCKET, Key=archive["key"])["Body"].read()
            assert hashlib.sha256(body).hexdigest() == manifest["object"]["sha256"] == archive["sha256"]
            csv = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body)).read()
            with conn.cursor() as cur:
                cur.execute("SET TimeZone = 'UTC'; SET DateStyle = 'ISO, YMD'; SET extra_float_digits = 1; "
                            "SET IntervalStyle = 'postgres'; SET bytea_output = 'hex'")
                cur.execute(f"CREATE TEMP TABLE restored_{table} (LIKE {table})")
                cur.copy_expert(f"COPY restored_{table} FROM STDIN WITH (FORMAT csv, HEADER true)", io.BytesIO(csv))
                pk = PK.get(table, "id")
                cur.execute(f"SELECT t.{pk}::text, md5(t::text) FROM restored_{table} t")
                restored = dict(cur.fetchall())
            deleted = set(before[table]) - set(retention["after"][table])
            assert set(restored) == deleted
            assert restored == {row_id: before[table][row_id]["md5"] for row_id in deleted}, table
    finally:
        conn.close()


def test_policy_refused_against_the_live_schema_changes_nothing(stack, retention, tmp_path):
    """A policy naming a missing table and a missing column is refused before any row changes."""
    from pgdr.retain.data import DataRetention
    from pgdr.retain.data_policy import PolicyError, load_policy

    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(
        "rules:\n"
        "  - {table: audit_events, phi: true, date_column: timestamp, older_than: {years: 7}, action: archive}\n"
        "  - {table: audit_logs, phi: true, date_column: created_at, older_than: {years: 7}, action: archive}\n"
        "  - {table: visits, phi: true, date_column: visit_date, older_than: {years: 7}, action: soft_delete,\n"
        "     soft_delete_column: deleted_at}\n")
    policy = load_policy(policy_file, floor_years=6)
    before = fingerprint(stack.cluster, retention["dbname"])

    def connect():
        return stack.cluster.connect(retention["dbname"], user=retention["role"], password=retention["role"])

    job = DataRetention(connect=connect, policy=policy, database=CONN_ID, store=None, staging_dir=tmp_path,
                        batch_rows=10, compression_level=1, run_stamp="x", log=logging.getLogger("test"))
    with pytest.raises(PolicyError) as err:
        job.run(dry_run=False)
    message = str(err.value)
    assert "refused before any change" in message
    assert "public.audit_logs/archive: table public.audit_logs does not exist" in message
    assert "public.visits/soft_delete: date_column 'visit_date' is not a column of public.visits" in message
    assert fingerprint(stack.cluster, retention["dbname"]) == before


# the order docs/retention.md gives for the bundled policy: a table after every table it references
LOAD_ORDER = ("public.visits", "public.evv_records", "public.evv_revisions", "public.audit_events")


def test_every_archive_loads_back_into_a_copy_of_the_schema_in_the_documented_order(stack, retention):
    """Item 26: the EVV archive referenced visits the purge deleted without archiving them, so loading it
    failed on its foreign key. Every deleted row is archived now, and every archive loads, none refused."""
    client = stack.s3.client()
    prefix = retention["env"]["AIRFLOW_VAR_PGDR_S3_PREFIX"]
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(
        Bucket=BUCKET, Prefix=f"{prefix}/{CONN_ID}/archive/") for o in page.get("Contents", [])]
    manifests = [json.loads(client.get_object(Bucket=BUCKET, Key=k)["Body"].read())
                 for k in keys if k.endswith("/archive.json")]
    assert {m["table"] for m in manifests} == set(LOAD_ORDER)
    manifests.sort(key=lambda m: (LOAD_ORDER.index(m["table"]), m["object"]["key"]))
    before, after = retention["before"], retention["after"]
    copy = f"{retention['dbname']}_reload"
    stack.cluster.execute(f'CREATE DATABASE "{copy}" TEMPLATE "{retention["dbname"]}"')
    conn = stack.cluster.connect(copy, autocommit=False)
    try:
        loaded: dict[str, set] = {}
        with conn.cursor() as cur:
            for manifest in manifests:
                body = client.get_object(Bucket=BUCKET, Key=manifest["object"]["key"])["Body"].read()
                csv = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body)).read()
                cur.copy_expert(f"COPY {manifest['table']} FROM STDIN WITH (FORMAT csv, HEADER true)", io.BytesIO(csv))
                assert cur.rowcount == manifest["rows"], manifest["table"]
                table = manifest["table"].split(".")[1]
                pk = PK.get(table, "id")
                cur.execute(f"SELECT count(*) FROM {table}")
                loaded.setdefault(table, set())
            for table in loaded:
                pk = PK.get(table, "id")
                cur.execute(f"SELECT {pk}::text FROM {table}")
                loaded[table] = {row[0] for row in cur.fetchall()} - set(after[table])
        conn.commit()   # every foreign key and constraint held: all or nothing, and it was all
        for table in loaded:
            assert loaded[table] == set(before[table]) - set(after[table]), table
        assert loaded["visits"], "the purge should have archived visits"
    finally:
        conn.close()
        stack.cluster.execute(f'DROP DATABASE IF EXISTS "{copy}" WITH (FORCE)')


# ------------------------------------------------------------- a database an application role owns

SENTINEL = "SENTINEL-PHI-7731-Doe"


@pytest.fixture(scope="module")
def guarded(stack, tmp_path_factory):
    """A small database owned by a non-superuser application role, with a trigger that tries to make that
    role superuser whenever a row is deleted (and logs the attempt), a table whose soft delete fails on a
    CHECK constraint quoting a row that holds a sentinel, a retention role, and policies for both."""
    from datetime import date, timezone

    tag = os.urandom(3).hex()
    dbname, app, ret = f"guarded_{tag}", f"app_{tag}", f"ret_{tag}"
    cluster = stack.cluster
    cluster.execute(f"CREATE ROLE \"{app}\" LOGIN PASSWORD '{app}'")
    cluster.execute(f"CREATE ROLE \"{ret}\" LOGIN PASSWORD '{ret}'")
    cluster.execute(f'CREATE DATABASE "{dbname}" OWNER "{app}"')
    old = date(datetime.now(timezone.utc).year - 10, 6, 1)
    conn = cluster.connect(dbname, user=app, password=app)
    try:
        with conn.cursor() as cur:
            cur.execute(f"""
                CREATE TABLE notes (id int PRIMARY KEY, written date NOT NULL, body text NOT NULL);
                CREATE TABLE escalation_attempts (at timestamptz DEFAULT now(), outcome text);
                GRANT INSERT ON escalation_attempts TO PUBLIC;
                CREATE FUNCTION escalate() RETURNS trigger LANGUAGE plpgsql AS $$
                BEGIN
                    BEGIN
                        EXECUTE 'ALTER ROLE {app} SUPERUSER';
                        INSERT INTO escalation_attempts (outcome) VALUES ('became superuser');
                    EXCEPTION WHEN insufficient_privilege THEN
                        INSERT INTO escalation_attempts (outcome) VALUES ('refused');
                    END;
                    RETURN OLD;
                END $$;
                CREATE TRIGGER escalate BEFORE DELETE ON notes FOR EACH ROW EXECUTE FUNCTION escalate();
                CREATE TABLE charts (id int PRIMARY KEY, written date NOT NULL, note text NOT NULL,
                                     deleted_at timestamptz,
                                     CONSTRAINT charts_sealed CHECK (deleted_at IS NULL OR note NOT LIKE 'SENTINEL%%'));
                GRANT SELECT, UPDATE, DELETE ON notes, charts TO "{ret}";
            """)
            cur.execute("INSERT INTO notes SELECT i, %s, 'old note ' || i FROM generate_series(1, 5) i", (old,))
            cur.execute("INSERT INTO notes VALUES (100, current_date, 'recent note')")
            cur.execute("INSERT INTO charts VALUES (1, %s, %s, NULL)", (old, f"{SENTINEL} diagnosis"))
    finally:
        conn.close()
    policies = tmp_path_factory.mktemp("guarded-policy")
    notes_rule = "  - {table: notes, phi: false, date_column: written, older_than: {years: 7}, action: archive}\n"
    charts_rule = ("  - {table: charts, phi: false, date_column: written, older_than: {years: 7}, action: soft_delete,"
                   " soft_delete_column: deleted_at}\n")
    (policies / "notes.yaml").write_text("rules:\n" + notes_rule)
    (policies / "both.yaml").write_text("rules:\n" + notes_rule + charts_rule)
    try:
        yield {"dbname": dbname, "app": app, "ret": ret, "policies": policies, "old": old}
    finally:
        cluster.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')
        cluster.execute(f'DROP ROLE IF EXISTS "{ret}"')
        cluster.execute(f'DROP ROLE IF EXISTS "{app}"')


def _is_superuser(cluster, role: str) -> bool:
    return cluster.execute("SELECT rolsuper FROM pg_roles WHERE rolname = %s", params=(role,))[0][0]


def _notes(cluster, dbname: str) -> list[int]:
    return [row[0] for row in cluster.execute("SELECT id FROM notes ORDER BY id", dbname=dbname)]


def test_a_trigger_on_a_retention_table_cannot_make_its_owner_superuser(stack, guarded, pgdr_env, tmp_path):
    """Item 7: retention DML ran as superuser, so an application role's trigger could ALTER ROLE ... SUPERUSER.
    A superuser session is refused now (nothing changes); the dedicated role runs the trigger powerless."""
    from pgdr.retain.data import DataRetention
    from pgdr.retain.data_policy import PolicyError, load_policy
    from pgdr.store.s3 import BackupStore

    cluster, dbname = stack.cluster, guarded["dbname"]
    policy = load_policy(guarded["policies"] / "notes.yaml", floor_years=6)
    store = BackupStore(client=stack.s3.client(), bucket=BUCKET, prefix=pgdr_env["AIRFLOW_VAR_PGDR_S3_PREFIX"],
                        sse_args={"ServerSideEncryption": "AES256"}, part_size=64 << 20, log=logging.getLogger("t"))

    def job(connect):
        return DataRetention(connect=connect, policy=policy, database="guarded", store=store, staging_dir=tmp_path,
                             batch_rows=2, compression_level=1, run_stamp="20261206T000000Z",
                             log=logging.getLogger("test"))

    refused = ""
    try:
        job(lambda: cluster.connect(dbname)).run(dry_run=False)   # the superuser
    except PolicyError as err:   # RetentionRefused
        refused = str(err)
    assert not _is_superuser(cluster, guarded["app"]), "the trigger made the application role superuser"
    assert "is a superuser" in refused and "pgdr_retention_conn_ids" in refused
    assert _notes(cluster, dbname) == [1, 2, 3, 4, 5, 100]

    results = job(lambda: cluster.connect(dbname, user=guarded["ret"], password=guarded["ret"])).run(dry_run=False)
    assert results[0]["archived"] == results[0]["deleted"] == 5
    assert _notes(cluster, dbname) == [100]
    assert not _is_superuser(cluster, guarded["app"])
    outcomes = {row[0] for row in cluster.execute("SELECT outcome FROM escalation_attempts", dbname=dbname)}
    assert outcomes == {"refused"}   # the trigger ran, and ALTER ROLE was refused

    # a trigger whose function another (non-owner) role wrote is refused before anything runs
    other = f"other_{guarded['app']}"
    cluster.execute(f"CREATE ROLE \"{other}\" LOGIN PASSWORD '{other}'")
    try:
        cluster.execute(f'GRANT CREATE ON SCHEMA public TO "{other}"', dbname=dbname)
        conn = cluster.connect(dbname, user=other, password=other)
        with conn.cursor() as cur:
            cur.execute("CREATE FUNCTION planted() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN OLD; END $$")
        conn.close()
        cluster.execute("CREATE TRIGGER planted BEFORE DELETE ON notes FOR EACH ROW EXECUTE FUNCTION planted()",
                        dbname=dbname)
        with pytest.raises(PolicyError) as planted:
            job(lambda: cluster.connect(dbname, user=guarded["ret"], password=guarded["ret"])).run(dry_run=True)
        assert f"trigger planted on public.notes runs planted(), owned by role '{other}'" in str(planted.value)
    finally:
        cluster.execute("DROP TRIGGER IF EXISTS planted ON notes", dbname=dbname)
        cluster.execute("DROP FUNCTION IF EXISTS planted()", dbname=dbname)
        cluster.execute(f'REVOKE CREATE ON SCHEMA public FROM "{other}"', dbname=dbname)
        cluster.execute(f'DROP ROLE IF EXISTS "{other}"')


def _guarded_env(stack, guarded, monkeypatch, **extra) -> dict:
    env = {
        "AIRFLOW_CONN_GUARDED_DB": postgres_conn(stack.cluster, dbname=guarded["dbname"], user=guarded["app"],
                                                 password=guarded["app"]),
        "AIRFLOW_CONN_GUARDED_RET": postgres_conn(stack.cluster, dbname=guarded["dbname"], user=guarded["ret"],
                                                  password=guarded["ret"]),
        "AIRFLOW_VAR_PGDR_DATABASES": json.dumps(["guarded_db"]),
        "AIRFLOW_VAR_PGDR_RESTORE_CONN_IDS": "{}",
        "AIRFLOW_VAR_PGDR_RETENTION_CONN_IDS": json.dumps({"guarded_db": "guarded_ret"}),
        "AIRFLOW_VAR_PGDR_DATA_RETENTION_POLICY": str(guarded["policies"] / "both.yaml"),
        **extra,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def _s3_reports(stack, prefix: str) -> list[dict]:
    client = stack.s3.client()
    keys = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/reports/retention/data/")
            .get("Contents", [])]
    return [json.loads(client.get_object(Bucket=BUCKET, Key=k)["Body"].read()) for k in keys]


def test_a_failing_row_never_reaches_the_report_slack_xcom_or_log(stack, airflow_db, guarded, pgdr_env, monkeypatch):
    """Item 8: a soft delete refused by a CHECK constraint quotes the row (DETAIL: Failing row contains ...);
    the report, Slack, XCom and the task log say which constraint failed, never the row."""
    from tests.support.dags import all_xcom_text

    _guarded_env(stack, guarded, monkeypatch)
    stack.slack.clear()
    run, output = run_dag_in_child("pg_data_retention", {"dry_run": False})
    assert task_states(run)["data.apply_policy[0]"] == "failed", task_states(run)
    (report,) = [r for r in _s3_reports(stack, pgdr_env["AIRFLOW_VAR_PGDR_S3_PREFIX"]) if r["run_id"] == run.run_id]
    assert report["status"] == "failed" and "charts_sealed" in report["error"]
    assert [r["status"] for r in report["rules"]] == ["done", "running"]   # the rule done before is reported
    texts = json.dumps(stack.slack.wait_for(1))
    assert "data retention failed" in texts
    for where, text in (("report", json.dumps(report)), ("slack", texts), ("xcom", all_xcom_text(run)),
                        ("log", output)):
        assert SENTINEL not in text, where
    # the row is still there, untouched
    assert stack.cluster.execute("SELECT deleted_at FROM charts", dbname=guarded["dbname"]) == [(None,)]


def test_an_invalid_setting_still_writes_the_report_and_alerts(stack, airflow_db, guarded, pgdr_env, monkeypatch):
    """Item 28: settings were read before the try, so an invalid one left no report in S3."""
    _guarded_env(stack, guarded, monkeypatch, AIRFLOW_VAR_PGDR_RETENTION_BATCH_ROWS="0")
    stack.slack.clear()
    before = _notes(stack.cluster, guarded["dbname"])
    run, _ = run_dag_in_child("pg_data_retention", {"dry_run": False})
    assert str(run.state) == "failed"
    (report,) = [r for r in _s3_reports(stack, pgdr_env["AIRFLOW_VAR_PGDR_S3_PREFIX"]) if r["run_id"] == run.run_id]
    assert report["status"] == "failed" and "pgdr_retention_batch_rows" in report["error"]
    assert "invalid settings" in json.dumps(stack.slack.wait_for(1))
    assert _notes(stack.cluster, guarded["dbname"]) == before
