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

from conftest import run_dag_in_child, task_states
from harness.aged_rows import insert_aged_rows
from harness.stack import BUCKET, RESTORE_CONN_ID, postgres_conn
from harness.synthetic import create_care_commons, fingerprint

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
    from pgdr.data_policy import Age

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
    env = stack.airflow_env()
    env.update({
        "AIRFLOW_CONN_RETENTION_DB": postgres_conn(stack.cluster, dbname=dbname),
        "AIRFLOW_VAR_PGDR_DATABASES": json.dumps([CONN_ID]),
        "AIRFLOW_VAR_PGDR_RESTORE_CONN_IDS": json.dumps({CONN_ID: RESTORE_CONN_ID}),
        "AIRFLOW_VAR_PGDR_S3_PREFIX": f"t/{os.urandom(4).hex()}",
        "AIRFLOW_VAR_PGDR_STAGING_DIR": str(tmp_path_factory.mktemp("retention-staging")),
        # small batches, so the archive, purge and soft-delete each take several transactions
        "AIRFLOW_VAR_PGDR_RETENTION_BATCH_ROWS": "7",
    })
    state: dict = {"dbname": dbname, "aged": aged, "env": env, "today": date.today()}
    try:
        with pytest.MonkeyPatch.context() as patch:
            for name, value in env.items():
                patch.setenv(name, value)
            stack.slack.clear()
            state["fingerprint_before"] = fingerprint(stack.cluster, dbname)
            state["dry_run"], state["dry_run_output"] = run_dag_in_child("pg_data_retention")  # the form's default: a dry run
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
            if rule["action"] != "archive":
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
    from pgdr.data_policy import PolicyError, load_policy
    from pgdr.data_retention import DataRetention

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
        return stack.cluster.connect(retention["dbname"])

    job = DataRetention(connect=connect, policy=policy, database=CONN_ID, store=None, staging_dir=tmp_path,
                        batch_rows=10, compression_level=1, run_stamp="x", log=logging.getLogger("test"))
    with pytest.raises(PolicyError) as err:
        job.run(dry_run=False)
    message = str(err.value)
    assert "refused before any change" in message
    assert "public.audit_logs/archive: table public.audit_logs does not exist" in message
    assert "public.visits/soft_delete: date_column 'visit_date' is not a column of public.visits" in message
    assert fingerprint(stack.cluster, retention["dbname"]) == before
