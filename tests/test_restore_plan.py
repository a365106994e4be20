"""The pure parts of a restore: the form validated, the backup chosen, names, globals, statements."""

from __future__ import annotations

import dataclasses

import pytest

from pgdr.drill.rto import projected_rto_seconds
from pgdr.restore.names import restore_names
from pgdr.restore.request import RestoreRefused, RestoreRequest, choose_backup, parse_request
from pgdr.restore.sql_rewrite import database_statements, missing_role_statements
from pgdr.restore.tables import compare_counts
from pgdr.store.catalog import BackupEntry

PROTECTED = ["care_commons_db", "billing_db"]


def _form(**fields):
    return {"database": "care_commons_db", "backup": "latest", "target_conn_id": "", "target_database": "",
            "mode": "new_database", "tables": [], "confirm": "", **fields}


def test_a_plain_form_is_accepted_with_defaults():
    request = parse_request(_form(), PROTECTED)
    assert request == RestoreRequest("care_commons_db", "latest", "", "", "new_database", (), "")
    assert request.kind == "database" and request.target_dir == ""


def test_a_files_form_names_its_directory():
    request = parse_request(_form(kind="files", target_dir="/srv/restore/uploads"), PROTECTED)
    assert (request.kind, request.target_dir) == ("files", "/srv/restore/uploads")


@pytest.mark.parametrize("fields, message", [
    ({"database": "other_db"}, "'other_db' is not a protected database"),
    ({"backup": "../20261126T020000Z"}, "neither 'latest' nor a backup id"),
    ({"backup": "20261126T020000Z/../../x"}, "neither 'latest' nor a backup id"),
    ({"target_database": 'cc"; DROP DATABASE care_commons; --'}, "target_database"),
    ({"target_database": "cc;drop"}, "is not allowed"),
    ({"target_database": "CamelCase"}, "is not allowed"),
    ({"target_database": "x" * 64}, "is not allowed"),
    ({"target_conn_id": "../etc/passwd"}, "is not an Airflow connection id"),
    ({"mode": "drop"}, "mode 'drop' is not one of"),
    ({"mode": "tables"}, "needs the tables to restore"),
    ({"mode": "tables", "tables": ["visits; DROP TABLE x"]}, "are not schema.table names"),
    ({"tables": ["public.visits"]}, "only used with mode 'tables'"),
    ({"mode": "replace"}, "type exactly 'RESTORE care_commons_db' in confirm (got nothing)"),
    ({"mode": "replace", "confirm": "yes"}, "(got 'yes')"),
    ({"mode": "replace", "confirm": "RESTORE billing_db"}, "type exactly 'RESTORE care_commons_db'"),
    ({"mode": "replace", "confirm": "restore care_commons_db"}, "type exactly"),
    ({"kind": "photos"}, "kind 'photos' is not one of database, files, config"),
    ({"kind": "files"}, "kind 'files' restores into a directory: give target_dir"),
    ({"kind": "config", "target_dir": "relative/dir"}, "must be an absolute path without '..'"),
    ({"kind": "files", "target_dir": "/srv/../etc"}, "must be an absolute path without '..'"),
    ({"kind": "files", "target_dir": "/"}, "not /"),
    ({"kind": "files", "target_dir": "/tmp/x", "mode": "replace", "confirm": "RESTORE care_commons_db"},
     "is for databases"),
    ({"kind": "config", "target_dir": "/tmp/x", "target_database": "cc"}, "kind 'config' uses target_dir"),
    ({"target_dir": "/tmp/x"}, "target_dir is only for kind files or config"),
])
def test_bad_fields_are_refused_naming_the_field(fields, message):
    with pytest.raises(RestoreRefused) as refused:
        parse_request(_form(**fields), PROTECTED)
    assert message in str(refused.value)
    assert str(refused.value).startswith("restore refused, nothing was changed")


def test_every_problem_is_reported_at_once():
    with pytest.raises(RestoreRefused) as refused:
        parse_request(_form(database="x", backup="y", mode="z"), PROTECTED)
    assert str(refused.value).count(";") >= 2


def test_replace_with_the_exact_confirmation_and_tables_as_text():
    assert parse_request(_form(mode="replace", confirm="RESTORE care_commons_db"), PROTECTED).mode == "replace"
    request = parse_request(_form(mode="tables", tables="public.visits, public.clients\npublic.visits"), PROTECTED)
    assert request.tables == ("public.visits", "public.clients")


def _entries():
    good = {"status": "good", "verified_at": "2026-11-25T08:00:00+00:00"}
    bad = {"status": "bad", "verified_at": "2026-11-26T08:00:00+00:00",
           "problems": [{"problem": "sha256 mismatch", "key": "k"}]}
    return [BackupEntry("20261123T020000Z", True, True, good),
            BackupEntry("20261124T020000Z", True, False),
            BackupEntry("20261125T020000Z", True, True, bad),
            BackupEntry("20261126T020000Z", False, False)]


def test_latest_is_the_newest_complete_backup_not_marked_bad():
    assert choose_backup(_entries(), "latest", "db").backup_id == "20261124T020000Z"


@pytest.mark.parametrize("requested, message", [
    ("20200101T000000Z", "does not exist; the newest good backup is 20261124T020000Z"),
    ("20261126T020000Z", "is incomplete (no manifest.json)"),
    ("20261125T020000Z", "was marked bad by verification at 2026-11-26T08:00:00+00:00 (sha256 mismatch); "
                         "the newest good backup is 20261124T020000Z"),
])
def test_unusable_backups_are_refused_naming_the_newest_good_one(requested, message):
    with pytest.raises(RestoreRefused) as refused:
        choose_backup(_entries(), requested, "db")
    assert message in str(refused.value)


def test_no_good_backup_at_all():
    with pytest.raises(RestoreRefused, match="no complete, good backup"):
        choose_backup([BackupEntry("20261126T020000Z", False, False)], "latest", "db")


def test_names_fit_postgres_and_replace_cannot_target_another_database():
    long = "a" * 60
    names = restore_names(parse_request(_form(), PROTECTED), long, "20261126_020000")
    assert len(names.target_database) == 63 and names.target_database.endswith("_restored_20261126_020000")
    replace = restore_names(parse_request(_form(mode="replace", confirm="RESTORE care_commons_db"), PROTECTED),
                            "care_commons", "20261126_020000")
    assert replace.target_database == "care_commons"
    assert replace.work_database == "care_commons_incoming_20261126_020000"
    assert replace.kept_database == "care_commons_replaced_20261126_020000"
    with pytest.raises(RestoreRefused, match="replaces 'care_commons'"):
        restore_names(parse_request(_form(mode="replace", confirm="RESTORE care_commons_db",
                                          target_database="other_db"), PROTECTED), "care_commons", "x")
    tables = restore_names(parse_request(_form(mode="tables", tables=["public.visits"]), PROTECTED),
                           "care_commons", "20261126_020000")
    assert (tables.target_database, tables.recovered_schema) == ("care_commons", "recovered_20261126_020000")


GLOBALS = '''\
SET default_transaction_read_only = off;
CREATE ROLE care_commons_app;
ALTER ROLE care_commons_app WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS;
CREATE ROLE "Odd ""Role""";
ALTER ROLE "Odd ""Role""" WITH NOLOGIN;
ALTER ROLE care_commons_app IN DATABASE care_commons SET work_mem TO '64MB';
CREATE ROLE postgres;
ALTER ROLE postgres WITH SUPERUSER INHERIT CREATEROLE CREATEDB LOGIN REPLICATION BYPASSRLS;
GRANT care_commons_readonly TO care_commons_app GRANTED BY postgres;
GRANT pg_read_all_data TO pgdr_backup GRANTED BY postgres;
CREATE TABLESPACE fast OWNER postgres LOCATION '/mnt/fast';
'''


def test_only_missing_roles_are_created_and_existing_ones_left_alone():
    statements, missing = missing_role_statements(GLOBALS, ["postgres", "pgdr_backup", "care_commons_readonly"])
    assert missing == ["care_commons_app", 'Odd "Role"']
    assert statements == [
        "CREATE ROLE care_commons_app;",
        "ALTER ROLE care_commons_app WITH NOSUPERUSER INHERIT NOCREATEROLE NOCREATEDB LOGIN NOREPLICATION NOBYPASSRLS;",
        'CREATE ROLE "Odd ""Role""";',
        'ALTER ROLE "Odd ""Role""" WITH NOLOGIN;',
        "GRANT care_commons_readonly TO care_commons_app;",
    ]
    assert missing_role_statements(GLOBALS, ["postgres", "care_commons_app", 'Odd "Role"']) == ([], [])


CREATE_SQL = """\
CREATE DATABASE care_commons WITH TEMPLATE = template0 ENCODING = 'UTF8' LOCALE_PROVIDER = libc LOCALE = 'C.UTF-8';
ALTER DATABASE care_commons OWNER TO care_commons_app;
\\connect care_commons
COMMENT ON DATABASE care_commons IS 'cc db';
ALTER DATABASE care_commons SET "TimeZone" TO 'UTC';
REVOKE CONNECT,TEMPORARY ON DATABASE care_commons FROM PUBLIC;
GRANT CONNECT ON DATABASE care_commons TO care_commons_readonly;
ALTER ROLE care_commons_app IN DATABASE care_commons SET work_mem TO '64MB';
GRANT SELECT ON TABLE public.care_commons TO care_commons_readonly;
ALTER DATABASE care_commons_other OWNER TO x;
"""


def test_database_level_statements_are_pointed_at_the_new_name():
    create, after = database_statements(CREATE_SQL, "care_commons", "cc_restored")
    assert create == ('CREATE DATABASE "cc_restored" WITH TEMPLATE = template0 ENCODING = \'UTF8\' '
                      "LOCALE_PROVIDER = libc LOCALE = 'C.UTF-8';")
    assert after == [
        'ALTER DATABASE "cc_restored" OWNER TO care_commons_app;',
        'COMMENT ON DATABASE "cc_restored" IS \'cc db\';',
        'ALTER DATABASE "cc_restored" SET "TimeZone" TO \'UTC\';',
        'REVOKE CONNECT,TEMPORARY ON DATABASE "cc_restored" FROM PUBLIC;',
        'GRANT CONNECT ON DATABASE "cc_restored" TO care_commons_readonly;',
        'ALTER ROLE care_commons_app IN DATABASE "cc_restored" SET work_mem TO \'64MB\';',
    ]


def test_counts_are_compared_table_by_table():
    assert compare_counts({"a.t": 1, "a.u": 2}, {"a.t": 1, "a.u": 2, "a.v": 9}) == []
    assert compare_counts({"a.t": 1, "a.u": 2}, {"a.t": 0}) == [
        {"problem": "row count differs", "table": "a.t", "expected": 1, "found": 0},
        {"problem": "table missing after restore", "table": "a.u", "expected": 2}]


def test_rto_projects_linearly_with_size():
    assert projected_rto_seconds(60, 1 << 30, 10 << 30) == 600
    assert projected_rto_seconds(60, 0, 10 << 30) == 60



# --- the typed plan (pgdr.restore.plan) -----------------------------------------------------------

def _manifest(**fields):
    from pgdr.store.manifest import Manifest, ObjectEntry

    objects = fields.pop("objects", [
        ObjectEntry(name="dump/toc.dat", key="k/dump/toc.dat", size=1000, sha256="0" * 64, s3_checksum="x",
                    role="toc"),
        ObjectEntry(name="dump/3001.dat.zst", key="k/dump/3001.dat.zst", size=100 << 20, sha256="1" * 64,
                    s3_checksum="y", role="table_data", compression="zstd", raw_size=400 << 20)])
    base = dict(backup_id="20261126T020000Z", kind="logical", database="care_commons_db", dbname="care_commons",
                started_at="2026-11-26T02:00:00+00:00", finished_at="2026-11-26T02:10:00+00:00",
                server_version="15.8", server_version_num=150008, system_identifier="7301", objects=objects,
                row_counts={"public.visits": 10, "public.clients": 3}, tool_versions={}, encryption={})
    return Manifest(**{**base, **fields})


LEASE = {"database": "care_commons_db", "kind": "logical", "backup_id": "20261126T020000Z",
         "holder": "pg_restore:manual__2026-11-26"}
# the XCom of each kind exactly as the prepare task pushed it before the plan was typed: the records
# written since (reports/restore/*.json) and the alert read these keys
LEGACY = {
    "logical": {"request": {"database": "care_commons_db", "backup": "latest", "target_conn_id": "",
                            "target_database": "", "mode": "tables", "tables": ["public.visits"], "confirm": "",
                            "point_in_time": "", "kind": "database", "target_dir": ""},
                "backup_id": "20261126T020000Z", "prefix": "pgdr/care_commons_db/logical/20261126T020000Z",
                "kind": "logical", "target_conn_id": "care_commons_restore", "stamp": "20261126_030000",
                "names": {"target_database": "care_commons", "work_database": "pgdr_tables_20261126_030000",
                          "kept_database": None, "recovered_schema": "recovered_20261126_030000"},
                "lease": LEASE},
    "files": {"request": {"database": "care_commons_db", "backup": "latest", "target_conn_id": "",
                          "target_database": "", "mode": "new_database", "tables": [], "confirm": "",
                          "point_in_time": "", "kind": "files", "target_dir": "/var/lib/pgdr/restores/u"},
              "backup_id": "20261126T020000Z", "prefix": "pgdr/care_commons_db/files/20261126T020000Z",
              "kind": "files", "target_conn_id": "", "target_dir": "/var/lib/pgdr/restores/u",
              "stamp": "20261126_030000",
              "names": {"target_database": "/var/lib/pgdr/restores/u", "work_database": "", "kept_database": None,
                        "recovered_schema": None}, "lease": {**LEASE, "kind": "files"}},
    "pitr": {"request": {"database": "care_commons_db", "backup": "latest", "target_conn_id": "",
                         "target_database": "", "mode": "new_database", "tables": [], "confirm": "",
                         "point_in_time": "latest", "kind": "database", "target_dir": ""},
             "backup_id": "20261126T020000Z", "prefix": "pgdr/care_commons_db/base/20261126T020000Z",
             "kind": "pitr", "stamp": "20261126_030000", "target": "latest (every WAL segment archived)",
             "data_dir": "/var/lib/pgdr/pitr/care_commons_pitr_20261126_030000", "port": 5499,
             "wal_first": "000000010000000000000003", "wal_last": "000000010000000000000007", "wal_segments": 5,
             "target_conn_id": "",
             "names": {"target_database": "care_commons", "work_database": "care_commons", "kept_database": None,
                       "recovered_schema": None}, "lease": {**LEASE, "kind": "base"}},
}


@pytest.mark.parametrize("kind", sorted(LEGACY))
def test_the_plan_reads_back_the_xcom_of_each_kind_and_writes_it_again_unchanged(kind):
    import json

    from pgdr.restore.plan import RestorePlan

    plan = RestorePlan.from_dict(LEGACY[kind])
    assert plan.kind == kind and plan.database == "care_commons_db" and plan.lease == LEGACY[kind]["lease"]
    assert isinstance(plan.request, RestoreRequest) and isinstance(plan.request.tables, tuple)
    assert plan.names.target_database == LEGACY[kind]["names"]["target_database"]
    pushed = json.loads(json.dumps(plan.to_dict()))   # XCom is JSON
    assert pushed == LEGACY[kind]
    assert RestorePlan.from_dict(pushed) == plan


def test_a_plan_built_from_a_request_round_trips_through_json():
    import json

    from pgdr.restore.names import RestoreNames
    from pgdr.restore.plan import RestorePlan

    request = parse_request(_form(mode="tables", tables=["public.visits", "public.clients"]), PROTECTED)
    plan = RestorePlan(request=request, kind="logical", backup_id="20261126T020000Z", prefix="p", stamp="s",
                       names=RestoreNames("care_commons", "w", None, "recovered_s"), target_conn_id="c")
    assert set(plan.to_dict()) == {"request", "kind", "backup_id", "prefix", "stamp", "names", "target_conn_id",
                                   "lease"}   # no PITR or files keys on a logical plan
    assert RestorePlan.from_dict(json.loads(json.dumps(plan.to_dict()))) == plan
    with pytest.raises(dataclasses.FrozenInstanceError):   # a task never edits the plan it was handed
        plan.backup_id = "other"


def test_tables_the_backup_does_not_hold_are_refused_naming_those_it_has():
    from pgdr.restore.plan import unknown_tables

    request = parse_request(_form(mode="tables", tables=["public.visits", "public.nope"]), PROTECTED)
    with pytest.raises(RestoreRefused) as refused:
        unknown_tables(request, _manifest())
    assert refused.value.field == "tables"
    assert "holds no table public.nope; it has public.clients, public.visits" in str(refused.value)
    unknown_tables(parse_request(_form(mode="tables", tables=["public.visits"]), PROTECTED), _manifest())


def test_space_needed_counts_the_data_downloaded_and_what_recovery_unpacks():
    from pgdr.restore.plan import files_needed, pitr_needed, staging_needed

    manifest = _manifest()
    assert staging_needed(manifest) == int((100 << 20) * 1.1) + (64 << 20)   # only table data is staged
    assert files_needed(_manifest(dump={"bytes": 1000})) == int(1000 * 1.1) + 1000 + (100 << 20) + (16 << 20)
    # the base backup unpacked (raw sizes where known) and every WAL segment twice
    assert pitr_needed(manifest, 3, 16 << 20) == int((1000 + (400 << 20)) * 1.2) + 3 * (16 << 20) * 2


def test_a_files_backup_whose_unchanged_files_live_in_a_missing_or_bad_backup_is_refused():
    from pgdr.restore.plan import broken_dependency

    manifest = _manifest(kind="files", backup_id="20261126T020000Z", dump={"depends_on": ["20261124T020000Z"]})
    entries = _entries()   # 20261124 complete, not yet verified (usable); 20261125 bad; 20261126 incomplete
    assert broken_dependency(manifest, "20261124T020000Z", entries) is None
    assert "20261125T020000Z, which is marked bad; try backup 20261124T020000Z" in broken_dependency(
        manifest, "20261125T020000Z", entries)
    assert "which is missing" in broken_dependency(manifest, "20200101T000000Z", entries)
    assert "which is incomplete" in broken_dependency(manifest, "20261126T020000Z", entries)


def test_files_go_over_a_non_empty_directory_only_with_the_confirmation(tmp_path):
    from pgdr.restore.plan import refuse_unconfirmed_overwrite

    def request(confirm=""):
        return parse_request(_form(kind="files", target_dir=str(tmp_path), confirm=confirm), PROTECTED)

    refuse_unconfirmed_overwrite(request())            # empty: fine
    (tmp_path / "x").write_text("there")
    with pytest.raises(RestoreRefused) as refused:
        refuse_unconfirmed_overwrite(request())
    assert refused.value.field == "confirm" and "type exactly 'RESTORE care_commons_db'" in str(refused.value)
    refuse_unconfirmed_overwrite(request("RESTORE care_commons_db"))
    assert (tmp_path / "x").read_text() == "there"


def test_a_recovered_clusters_name_fits_postgres():
    from pgdr.restore.plan import pitr_name

    assert pitr_name("care_commons", "20261126_030000") == "care_commons_pitr_20261126_030000"
    assert len(pitr_name("d" * 80, "20261126_030000").encode()) <= 63
