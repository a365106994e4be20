"""What a restore may touch, decided from the form before anything changes (issue 12: items 1, 10, 17, 20,
21 and the form's null values).

Pure checks of :mod:`pgdr.restore.request` with real settings parsed by :mod:`pgdr.settings` and real
directories and symlinks; the end-to-end restores of databases whose names pg_dump quotes run
against the test stack's PostgreSQL and S3.
"""

from __future__ import annotations

import json
import os

import pytest

from pgdr.restore.names import MAX_IDENTIFIER, restore_names, with_suffix
from pgdr.restore.request import RestoreRefused, parse_request
from pgdr.restore.sql_rewrite import database_statements
from pgdr.settings import parse_settings

PROTECTED = ["care_commons_db", "billing_db"]
OPTIONAL = ("backup", "point_in_time", "target_conn_id", "target_database", "target_dir", "confirm", "tables",
            "kind", "mode")


def _form(**fields):
    return {"database": "care_commons_db", **fields}


def _refused(form, settings=None, protected=PROTECTED) -> str:
    with pytest.raises(RestoreRefused) as refused:
        parse_request(form, protected, settings=settings)
    message = str(refused.value)
    assert message.startswith("restore refused, nothing was changed")
    return message


def _settings(tmp_path, **raw):
    values = {"s3_bucket": "pgdr-backups", "databases": json.dumps(PROTECTED),
              "restore_conn_ids": json.dumps({"care_commons_db": "care_commons_admin"}),
              "staging_dir": str(tmp_path / "staging"), "wal_receiver_dir": str(tmp_path / "wal"),
              "pitr_data_dir": str(tmp_path / "pitr"),
              "file_dirs": json.dumps({"care_commons_db": [str(tmp_path / "srv" / "uploads")]}),
              "config_files": json.dumps({"care_commons_db": [str(tmp_path / "srv" / "config" / ".env")]}),
              "restore_target_dirs": json.dumps([str(tmp_path / "restores")])}
    return parse_settings({**values, **raw})


# --- the form's null values ------------------------------------------------------------------

@pytest.mark.parametrize("kind, fields", [
    ("database", {}),
    ("database", {"mode": "replace", "confirm": "RESTORE care_commons_db"}),
    ("database", {"mode": "tables", "tables": ["public.visits"]}),
    ("database", {"point_in_time": "latest"}),
    ("database", {"target_conn_id": "care_commons_admin", "target_database": "cc_copy"}),
    ("files", {"target_dir": "/srv/restore/uploads"}),
    ("config", {"target_dir": "/srv/restore/config", "confirm": "RESTORE care_commons_db"}),
])
def test_a_null_field_counts_exactly_as_an_empty_one(kind, fields):
    """Airflow's form sends null for an optional field left alone: same request as "" (or [] for tables)."""
    given = {"kind": kind, **fields}
    empty = {name: ([] if name == "tables" else "") for name in OPTIONAL if name not in given}
    nulls = {name: None for name in OPTIONAL if name not in given}
    with_empty = parse_request(_form(**given, **empty), PROTECTED)
    assert parse_request(_form(**given, **nulls), PROTECTED) == with_empty
    assert parse_request(_form(**given), PROTECTED) == with_empty   # and as a field not sent at all


def test_null_defaults_and_null_list_items():
    request = parse_request(_form(**{name: None for name in OPTIONAL}), PROTECTED)
    assert (request.backup, request.mode, request.kind, request.tables, request.confirm, request.target_dir) == \
        ("latest", "new_database", "database", (), "", "")
    tables = parse_request(_form(mode="tables", tables=[None, "public.visits", None]), PROTECTED)
    assert tables.tables == ("public.visits",)


@pytest.mark.parametrize("fields, message", [
    ({"mode": "replace", "confirm": None}, "type exactly 'RESTORE care_commons_db' in confirm (got nothing)"),
    ({"mode": "tables", "tables": None}, "needs the tables to restore"),
    ({"kind": "files", "target_dir": None}, "kind 'files' restores into a directory: give target_dir"),
    ({"database": None}, "database '' is not a protected database"),
])
def test_a_null_required_value_is_refused_like_an_empty_one(fields, message):
    assert message in _refused(_form(**fields))


# --- item 17: system databases and the destination allow-lists ---------------------------------

@pytest.mark.parametrize("fields", [
    {"target_database": "postgres"},
    {"target_database": "template1"},
    {"target_database": "template0", "target_conn_id": "care_commons_admin"},
    {"mode": "tables", "tables": ["public.visits"], "target_database": "postgres"},
    {"mode": "tables", "tables": ["public.visits"], "target_database": "template1"},
    {"mode": "replace", "confirm": "RESTORE care_commons_db", "target_database": "postgres"},
    {"mode": "tables", "tables": ["public.visits"], "point_in_time": "latest", "target_database": "postgres"},
])
def test_system_databases_are_refused_in_every_mode(fields):
    message = _refused(_form(**fields))
    assert f"target_database {fields['target_database']!r} is a system database" in message


def test_tables_mode_of_a_database_named_postgres_is_refused_by_name():
    request = parse_request(_form(mode="tables", tables=["public.visits"]), PROTECTED)
    with pytest.raises(RestoreRefused, match="target_database 'postgres' is a system database"):
        restore_names(request, "postgres", "20261126_020000")
    replace = parse_request(_form(mode="replace", confirm="RESTORE care_commons_db"), PROTECTED)
    with pytest.raises(RestoreRefused, match="never replaces the system database 'template1'"):
        restore_names(replace, "template1", "20261126_020000")


def test_target_conn_id_must_be_a_restore_connection_or_allowed(tmp_path):
    settings = _settings(tmp_path)
    # the protected databases' restore connections (care_commons_admin; billing_db has none, so its own)
    for allowed in ("care_commons_admin", "billing_db"):
        assert parse_request(_form(target_conn_id=allowed), PROTECTED, settings=settings).target_conn_id == allowed
    message = _refused(_form(target_conn_id="new_site"), settings)
    assert "target_conn_id 'new_site' is not an allowed restore target" in message
    assert "pgdr_restore_target_conn_ids" in message and "care_commons_admin" in message
    widened = _settings(tmp_path, restore_target_conn_ids='["new_site"]')
    assert parse_request(_form(target_conn_id="new_site"), PROTECTED, settings=widened).target_conn_id == "new_site"


def test_target_dir_must_lie_under_an_allowed_root(tmp_path):
    settings = _settings(tmp_path)
    inside = tmp_path / "restores" / "uploads-20261126"
    assert parse_request(_form(kind="files", target_dir=str(inside)), PROTECTED, settings=settings).target_dir == \
        str(inside)
    message = _refused(_form(kind="files", target_dir=str(tmp_path / "elsewhere")), settings)
    assert f"target_dir {str(tmp_path / 'elsewhere')!r} is not under an allowed restore directory" in message
    assert str(tmp_path / "restores") in message
    # a link inside the allowed root that leads out of it is followed, then refused
    (tmp_path / "restores").mkdir()
    (tmp_path / "outside").mkdir()
    os.symlink(tmp_path / "outside", tmp_path / "restores" / "escape")
    message = _refused(_form(kind="config", target_dir=str(tmp_path / "restores" / "escape" / "x")), settings)
    assert f"resolves to {str(tmp_path / 'outside' / 'x')!r}" in message and "not under an allowed" in message


def test_the_default_restore_root_is_pgdrs_own_not_tmp():
    settings = parse_settings({"s3_bucket": "pgdr-backups"})
    assert [str(d) for d in settings.restore_target_dirs] == ["/var/lib/pgdr/restores"]
    assert "target_dir '/tmp/restore' is not under an allowed restore directory" in \
        _refused(_form(kind="files", target_dir="/tmp/restore"), settings)
    assert settings.restore_target_conn_ids == ()
    for bad in ('["/"]', '[]', '["relative"]', '"/srv"'):
        with pytest.raises(ValueError, match="pgdr_restore_target_dirs"):
            parse_settings({"s3_bucket": "pgdr-backups", "restore_target_dirs": bad})
    with pytest.raises(ValueError, match="pgdr_restore_target_conn_ids"):
        parse_settings({"s3_bucket": "pgdr-backups", "restore_target_conn_ids": '["../etc"]'})


# --- item 10: a target_dir that is / or overlaps what pgdr reads and writes ---------------------

@pytest.mark.parametrize("target_dir", ["/", "//", "//.", "/./", "/proc/self/root", "/proc/self/root/",
                                        "/proc/1/root/."])
def test_every_spelling_of_root_is_refused(target_dir):
    message = _refused(_form(kind="files", target_dir=target_dir))
    assert f"target_dir {target_dir!r}" in message
    assert "not /" in message or "cannot be resolved" in message   # /proc/1/root: unreadable unless root


@pytest.mark.parametrize("target_dir, relation", [
    ("/etc", "is the system directory /etc"),
    ("/etc/pgdr-restore", "is inside the system directory /etc"),
    ("/proc/self/root/etc/cron.d", "is inside the system directory /etc"),
    ("/usr/lib/x", "is inside the system directory /usr"),
    ("/var/lib", "contains the system directory /var/lib/postgresql"),
    ("/var/lib/postgresql/15/main", "is inside the system directory /var/lib/postgresql"),
    ("/dev/shm/x", "is inside the system directory /dev"),
    ("/sys/x", "is inside the system directory /sys"),
    ("/boot/x", "is inside the system directory /boot"),
    ("/root/.ssh", "is inside the system directory /root"),
])
def test_system_directories_are_refused_without_any_setting(target_dir, relation):
    message = _refused(_form(kind="files", target_dir=target_dir))
    assert f"target_dir {target_dir!r}" in message and relation in message


def test_a_link_to_a_system_directory_is_followed_and_refused(tmp_path):
    os.symlink("/etc", tmp_path / "innocent")
    message = _refused(_form(kind="config", target_dir=str(tmp_path / "innocent" / "restore")))
    assert "(resolves to '/etc/restore')" in message and "is inside the system directory /etc" in message


@pytest.mark.parametrize("where, relation", [
    ("srv/uploads", "is a backed-up directory (pgdr_file_dirs)"),
    ("srv/uploads/restored", "is inside a backed-up directory (pgdr_file_dirs)"),
    ("srv", "contains a backed-up directory (pgdr_file_dirs)"),
    ("srv/config", "is the directory of a backed-up configuration file (pgdr_config_files)"),
    ("staging/x", "is inside the staging directory (pgdr_staging_dir)"),
    ("wal", "is the WAL receiver directory (pgdr_wal_receiver_dir)"),
    ("pitr/a", "is inside the point-in-time recovery directory (pgdr_pitr_data_dir)"),
])
def test_directories_pgdr_reads_or_writes_are_refused(tmp_path, where, relation):
    settings = _settings(tmp_path, restore_target_dirs=json.dumps([str(tmp_path)]))
    message = _refused(_form(kind="files", target_dir=str(tmp_path / where)), settings)
    assert f"target_dir {str(tmp_path / where)!r} {relation}" in message


def test_airflows_own_directories_are_refused_but_a_restore_dir_in_its_home_is_not(tmp_path, monkeypatch):
    home = tmp_path / "airflow"
    monkeypatch.setenv("AIRFLOW_HOME", str(home))
    monkeypatch.setenv("AIRFLOW_CONFIG", str(home / "airflow.cfg"))   # the usual place: the home itself
    for sub, relation in (("", "is the Airflow home"), ("dags/x", "is inside Airflow's dags directory"),
                          ("plugins", "is Airflow's plugins directory"), ("config", "is Airflow's config"),
                          ("logs/dag_id=pg_restore", "is inside Airflow's logs directory")):
        assert relation in _refused(_form(kind="files", target_dir=str(home / sub) if sub else str(home)))
    assert "contains the Airflow home" in _refused(_form(kind="files", target_dir=str(tmp_path)))
    # a directory of its own inside the home, as docker-compose's /opt/airflow/restore, is fine
    assert parse_request(_form(kind="files", target_dir=str(home / "restore" / "r1")), PROTECTED).target_dir == \
        str(home / "restore" / "r1")
    settings = _settings(tmp_path, restore_target_dirs=json.dumps([str(home / "restore")]))
    assert parse_request(_form(kind="files", target_dir=str(home / "restore" / "r1")), PROTECTED,
                         settings=settings).target_dir == str(home / "restore" / "r1")
    monkeypatch.setenv("AIRFLOW_CONFIG", str(tmp_path / "etc-airflow" / "airflow.cfg"))
    assert "is inside the directory of Airflow's configuration (AIRFLOW_CONFIG)" in \
        _refused(_form(kind="files", target_dir=str(tmp_path / "etc-airflow" / "x")))


def test_check_target_dir_resolves_and_refuses_the_same_way(tmp_path):
    from pgdr.backup.files_reader import FileRestoreError
    from pgdr.restore.files import check_target_dir

    for bad in ("//.", "/proc/self/root"):
        with pytest.raises(FileRestoreError, match="not /"):
            check_target_dir(bad, 0)
    os.symlink("/usr", tmp_path / "link")
    with pytest.raises(FileRestoreError, match="is inside the system directory /usr"):
        check_target_dir(str(tmp_path / "link" / "share"), 0)
    settings = _settings(tmp_path)
    with pytest.raises(FileRestoreError, match="is not under an allowed restore directory"):
        check_target_dir(str(tmp_path / "elsewhere"), 0, settings=settings)
    (tmp_path / "restores").mkdir()
    os.symlink(tmp_path / "restores", tmp_path / "via-link")
    assert check_target_dir(str(tmp_path / "via-link" / "r1"), 0, settings=settings) == tmp_path / "restores" / "r1"


# --- item 21: names are cut by UTF-8 bytes and stay unique -------------------------------------

@pytest.mark.parametrize("base", ["ä" * 40, "données_" + "é" * 30, "病院" * 15, "a" * 50 + "ß" * 10, "x" * 80,
                                  "日本語のデータベース" * 3])
def test_long_non_ascii_names_fit_63_bytes_whole_characters(base):
    name = with_suffix(base, "_restored_20261126_020000")
    encoded = name.encode()
    assert len(encoded) <= MAX_IDENTIFIER and name.endswith("_restored_20261126_020000")
    assert encoded.decode() == name   # no character split
    assert len(encoded) >= MAX_IDENTIFIER - 3   # uses the room there is (a character is at most 4 bytes)


def test_names_that_share_their_first_63_bytes_stay_different():
    one, two = "é" * 40 + "_north", "é" * 40 + "_south"
    assert with_suffix(one, "_replaced_20261126_020000") != with_suffix(two, "_replaced_20261126_020000")
    assert with_suffix(one, "_x") != with_suffix(two, "_x")
    # and a short name is left exactly as it was
    assert with_suffix("care_commons", "_restored_20261126_020000") == "care_commons_restored_20261126_020000"


def test_restore_names_of_a_long_non_ascii_database_fit():
    request = parse_request(_form(mode="replace", confirm="RESTORE care_commons_db"), PROTECTED)
    names = restore_names(request, "é" * 31, "20261126_020000")   # 62 bytes: the live name itself fits
    assert names.target_database == "é" * 31
    for name in (names.work_database, names.kept_database):
        assert len(name.encode()) <= MAX_IDENTIFIER
    assert names.work_database != names.kept_database


# --- items 1 and 20: database-level statements of a dump ------------------------------------

QUOTED = """\
CREATE DATABASE "order" WITH TEMPLATE = template0 ENCODING = 'UTF8' LOCALE_PROVIDER = libc LOCALE = 'C.UTF-8';
ALTER DATABASE "order" OWNER TO care_commons_app;
\\connect "order"
COMMENT ON DATABASE "order" IS 'orders
over two lines, it''s kept';
ALTER DATABASE "order" SET search_path TO 'public';
GRANT CONNECT ON DATABASE "order" TO care_commons_readonly;
ALTER ROLE care_commons_app IN DATABASE "order" SET work_mem TO '64MB';
ALTER DATABASE "orders" OWNER TO x;
ALTER DATABASE order_2 OWNER TO x;
"""


def test_a_name_pg_dump_quotes_is_found_and_requoted():
    create, after = database_statements(QUOTED, "order", "order_restored_1")
    assert create is not None and create.startswith('CREATE DATABASE "order_restored_1" WITH TEMPLATE')
    assert after == [
        'ALTER DATABASE "order_restored_1" OWNER TO care_commons_app;',
        "COMMENT ON DATABASE \"order_restored_1\" IS 'orders\nover two lines, it''s kept';",
        'ALTER DATABASE "order_restored_1" SET search_path TO \'public\';',
        'GRANT CONNECT ON DATABASE "order_restored_1" TO care_commons_readonly;',
        'ALTER ROLE care_commons_app IN DATABASE "order_restored_1" SET work_mem TO \'64MB\';',
    ]


@pytest.mark.parametrize("name", ["pay$roll", "Care Commons", "User", 'we"ird', "user"])
def test_any_name_round_trips(name):
    quoted = '"' + name.replace('"', '""') + '"'
    sql = (f"CREATE DATABASE {quoted} WITH TEMPLATE = template0;\nALTER DATABASE {quoted} SET work_mem TO '8MB';\n"
           f"ALTER DATABASE other SET work_mem TO '1MB';\n")
    create, after = database_statements(sql, name, 'new"name')
    assert create == 'CREATE DATABASE "new""name" WITH TEMPLATE = template0;'
    assert after == ['ALTER DATABASE "new""name" SET work_mem TO \'8MB\';']


@pytest.mark.parametrize("comment", [
    "pgdr: replaced by restore manual__2026-11-26T02:00:00+00:00; keep until 2026-12-03T02:00:00+00:00",
    "pgdr: replaced by restore scheduled__x; keep until 2020-01-01T00:00:00+00:00",
    "pgdr: anything pgdr marks",
])
def test_pgdrs_own_comment_is_never_reapplied(comment):
    literal = comment.replace("'", "''")
    sql = (f"CREATE DATABASE care_commons WITH TEMPLATE = template0;\n"
           f"COMMENT ON DATABASE care_commons IS '{literal}';\n"
           f"ALTER DATABASE care_commons SET work_mem TO '8MB';\n")
    create, after = database_statements(sql, "care_commons", "care_commons_restored_1")
    assert create is not None
    assert after == ['ALTER DATABASE "care_commons_restored_1" SET work_mem TO \'8MB\';']
    assert not any("COMMENT" in statement for statement in after)


def test_a_users_comment_mentioning_pgdr_is_kept():
    sql = "CREATE DATABASE cc WITH TEMPLATE = template0;\nCOMMENT ON DATABASE cc IS 'backed up by pgdr: daily';\n"
    assert database_statements(sql, "cc", "cc2")[1] == ["COMMENT ON DATABASE \"cc2\" IS 'backed up by pgdr: daily';"]


# --- end to end: databases whose names pg_dump quotes, and pgdr's comment in a dump ------------

QUOTED_DATABASES = {"order_db": "order", "payroll_db": "pay$roll"}
KEEP_MARK = "pgdr: replaced by restore manual__2020-01-01; keep until 2020-01-08T00:00:00+00:00"


def _comment(cluster, dbname: str):
    rows = cluster.execute("SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = %s",
                           params=(dbname,))
    return rows[0][0] if rows else "no such database"


def _db_settings(cluster, dbname: str):
    return cluster.execute("SELECT s.setconfig FROM pg_db_role_setting s JOIN pg_database d ON d.oid = s.setdatabase "
                           "WHERE d.datname = %s AND s.setrole = 0", params=(dbname,))


@pytest.fixture(scope="module")
def quoted_backups(stack, airflow_db, tmp_path_factory):
    """"order" (carrying pgdr's keep-until comment, as a replaced database renamed back would) and
    "pay$roll" (a comment of its own), each with a table and a database setting, backed up once."""
    from psycopg2 import sql

    from harness.stack import RESTORE_CONN_ID, postgres_conn
    from harness.synthetic import fingerprint
    from tests.support.dags import run_dag, task_states

    for dbname in QUOTED_DATABASES.values():
        name = sql.Identifier(dbname)
        stack.cluster.execute(sql.SQL("CREATE DATABASE {}").format(name))
        stack.cluster.execute("CREATE TABLE public.items (id int PRIMARY KEY, label text); "
                              "INSERT INTO public.items SELECT g, 'item ' || g FROM generate_series(1, 250) g",
                              dbname=dbname)
        stack.cluster.execute(sql.SQL("ALTER DATABASE {} SET work_mem = '8MB'").format(name))
    stack.cluster.execute(sql.SQL("COMMENT ON DATABASE {} IS {}").format(sql.Identifier("order"),
                                                                        sql.Literal(KEEP_MARK)))
    stack.cluster.execute(sql.SQL("COMMENT ON DATABASE {} IS 'ledger'").format(sql.Identifier("pay$roll")))
    env = stack.airflow_env()
    env.update({f"AIRFLOW_CONN_{conn_id.upper()}": postgres_conn(stack.cluster, dbname=dbname)
                for conn_id, dbname in QUOTED_DATABASES.items()})
    env.update({"AIRFLOW_VAR_PGDR_DATABASES": json.dumps(sorted(QUOTED_DATABASES)),
                "AIRFLOW_VAR_PGDR_RESTORE_CONN_IDS": json.dumps({c: RESTORE_CONN_ID for c in QUOTED_DATABASES}),
                "AIRFLOW_VAR_PGDR_STAGING_DIR": str(tmp_path_factory.mktemp("quoted-staging")),
                "AIRFLOW_VAR_PGDR_S3_PREFIX": f"quoted-{os.urandom(3).hex()}"})
    with pytest.MonkeyPatch.context() as patch:
        for name, value in env.items():
            patch.setenv(name, value)
        dag_run = run_dag("pg_backup_daily")
        assert str(dag_run.state) == "success", task_states(dag_run)
    yield {"env": env, "fingerprints": {d: fingerprint(stack.cluster, d) for d in QUOTED_DATABASES.values()}}
    for dbname in stack.cluster.database_names():
        if dbname.startswith(("order", "pay$roll", "payroll")):
            stack.cluster.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(dbname)))


@pytest.fixture()
def quoted_env(stack, quoted_backups, monkeypatch):
    stack.slack.clear()
    for name, value in quoted_backups["env"].items():
        monkeypatch.setenv(name, value)
    return quoted_backups


def _restore_db(conf: dict):
    from tests.support.dags import run_dag, task_states, xcom_values

    dag_run = run_dag("pg_restore", conf=conf)
    states = task_states(dag_run)
    assert str(dag_run.state) == "success", states
    (outcome,) = xcom_values(dag_run, "restore")
    return outcome


@pytest.mark.slow
def test_databases_whose_names_pg_dump_quotes_restore_whole_without_pgdrs_comment(stack, quoted_env):
    from harness.synthetic import fingerprint

    before = set(stack.cluster.database_names())
    order = _restore_db({"database": "order_db"})   # new_database, default name order_restored_<time>
    restored = order["target_database"]
    assert restored.startswith("order_restored_") and set(stack.cluster.database_names()) - before == {restored}
    assert fingerprint(stack.cluster, restored) == quoted_env["fingerprints"]["order"]
    assert _db_settings(stack.cluster, restored) == [(["work_mem=8MB"],)]
    assert _comment(stack.cluster, restored) is None   # pgdr's keep-until mark is not carried over

    payroll = _restore_db({"database": "payroll_db", "target_database": "payroll_copy"})
    assert payroll["target_database"] == "payroll_copy"
    assert fingerprint(stack.cluster, "payroll_copy") == quoted_env["fingerprints"]["pay$roll"]
    assert _comment(stack.cluster, "payroll_copy") == "ledger"   # a user's comment is
    assert _db_settings(stack.cluster, "payroll_copy") == [(["work_mem=8MB"],)]


@pytest.mark.slow
def test_replacing_a_database_named_order_leaves_the_live_one_unmarked(stack, quoted_env):
    from harness.synthetic import fingerprint

    stack.cluster.execute("INSERT INTO public.items VALUES (9999, 'after the backup')", dbname="order")
    outcome = _restore_db({"database": "order_db", "mode": "replace", "confirm": "RESTORE order_db"})
    assert outcome["target_database"] == "order"
    assert fingerprint(stack.cluster, "order") == quoted_env["fingerprints"]["order"]
    assert _comment(stack.cluster, "order") is None   # the live database never carries a "keep until" mark
    kept = outcome["kept_database"]   # the old live database, renamed and kept as it was
    assert kept.startswith("order_replaced_")
    assert stack.cluster.execute("SELECT count(*) FROM public.items WHERE id = 9999", dbname=kept) == [(1,)]
