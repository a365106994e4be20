"""The settings module: defaults, validation naming the setting, env Variables, docs."""

import dataclasses
import difflib
import re
from pathlib import Path, PosixPath

import pytest

from pgdr.core.settings_doc import COMMAND, render
from pgdr.errors import Refused
from pgdr.settings import SETTINGS, SettingsError, deadline_minutes, load_settings, parse_settings

REQUIRED = {"s3_bucket": "pgdr-backups"}
DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"

# Every setting's default as the hand-written declaration had it before settings were declared with
# pydantic (issue 13): the Variable's text, then the value it parses to. Written out here, not read
# from the module, so a default that moves is caught.
DEFAULT_TEXT = {
    "databases": '["care_commons_db"]', "s3_bucket": None, "s3_prefix": "pgdr",
    "staging_dir": "/var/lib/pgdr/staging", "kms_key_id": "", "aws_conn_id": "backup_s3",
    "slack_conn_id": "slack_alerts", "local_retention_days": "30", "dump_jobs": "2", "compression_level": "1",
    "include_role_passwords": "false", "freshness_hours": "25", "alert_reminder_hours": "24",
    "daily_digest": "false", "pg_bindir": "/usr/lib/postgresql/{major}/bin", "pg_bindirs": "{}",
    "multipart_chunk_mb": "64",
    "restore_conn_ids": "{}", "marker_conn_ids": "{}", "drill_conn_ids": "{}", "restore_target_conn_ids": "[]",
    "restore_target_dirs": '["/var/lib/pgdr/restores"]', "rto_budget_minutes": "60", "physical_backups": "true",
    "wal_receiver_dir": "/var/lib/pgdr/wal", "wal_ship_seconds": "15", "wal_archive_window_minutes": "10",
    "replication_slot": "pgdr_receiver", "wal_receiver_keep_segments": "64", "wal_receiver_min_free_mb": "2048",
    "wal_receiver_alert_seconds": "30", "pitr_data_dir": "/var/lib/pgdr/pitr", "pitr_port": "5433",
    "pitr_os_user": "postgres", "pitr_listen_addresses": "127.0.0.1", "pitr_keep_hours": "72",
    "replaced_keep_hours": "168", "legal_floor_years": "6", "data_retention_policy": "data_retention_policy.yaml",
    "retention_batch_rows": "5000", "retention_conn_ids": "{}",
    "phi_tables": '["public.clients", "public.care_plans", "public.visits", "public.evv_records", '
                  '"public.evv_revisions", "public.audit_events", "public.family_members", "public.billing_invoices"]',
    "keep_daily_days": "30", "keep_monthly_months": "12", "keep_yearly_years": "7", "pitr_window_days": "7",
    "object_lock_mode": "GOVERNANCE", "file_dirs": "{}", "config_files": "{}", "secret_files": "[]",
    "config_key_conn_id": "pgdr_config_key",
    "incremental_backups": "true", "full_backup_days": "7", "max_incremental_chain": "6",
    "four_eyes": "true", "approvers": "[]", "approver_role": "", "approval_timeout_hours": "24",
}
DEFAULT_VALUE = {
    "databases": ("care_commons_db",), "s3_bucket": "pgdr-backups", "s3_prefix": "pgdr",
    "staging_dir": PosixPath("/var/lib/pgdr/staging"), "kms_key_id": "", "aws_conn_id": "backup_s3",
    "slack_conn_id": "slack_alerts", "local_retention_days": 30, "dump_jobs": 2, "compression_level": 1,
    "include_role_passwords": False, "freshness_hours": 25.0, "alert_reminder_hours": 24.0, "daily_digest": False,
    "pg_bindir": PosixPath("/usr/lib/postgresql/{major}/bin"), "pg_bindirs": {},
    "multipart_chunk_mb": 64, "restore_conn_ids": {},
    "marker_conn_ids": {}, "drill_conn_ids": {}, "restore_target_conn_ids": (),
    "restore_target_dirs": (PosixPath("/var/lib/pgdr/restores"),), "rto_budget_minutes": 60.0,
    "physical_backups": True, "wal_receiver_dir": PosixPath("/var/lib/pgdr/wal"), "wal_ship_seconds": 15.0,
    "wal_archive_window_minutes": 10.0, "replication_slot": "pgdr_receiver", "wal_receiver_keep_segments": 64,
    "wal_receiver_min_free_mb": 2048, "wal_receiver_alert_seconds": 30.0,
    "pitr_data_dir": PosixPath("/var/lib/pgdr/pitr"), "pitr_port": 5433, "pitr_os_user": "postgres",
    "pitr_listen_addresses": "127.0.0.1", "pitr_keep_hours": 72.0,
    "replaced_keep_hours": 168.0, "legal_floor_years": 6, "data_retention_policy": "data_retention_policy.yaml",
    "retention_batch_rows": 5000, "retention_conn_ids": {},
    "phi_tables": ("public.clients", "public.care_plans", "public.visits", "public.evv_records", "public.evv_revisions",
                   "public.audit_events", "public.family_members", "public.billing_invoices"),
    "keep_daily_days": 30, "keep_monthly_months": 12, "keep_yearly_years": 7, "pitr_window_days": 7.0,
    "object_lock_mode": "GOVERNANCE", "file_dirs": {}, "config_files": {}, "secret_files": (),
    "config_key_conn_id": "pgdr_config_key",
    "incremental_backups": True, "full_backup_days": 7.0, "max_incremental_chain": 6,
    "four_eyes": True, "approvers": (), "approver_role": "", "approval_timeout_hours": 24.0,
}


def test_defaults_match_the_documented_interface():
    settings = parse_settings(REQUIRED)
    assert settings.databases == ("care_commons_db",)
    assert settings.aws_conn_id == "backup_s3"
    assert settings.slack_conn_id == "slack_alerts"
    assert settings.local_retention_days == 30
    assert settings.kms_key_id == ""
    assert settings.sse_args == {"ServerSideEncryption": "AES256"}


def test_kms_key_switches_to_sse_kms():
    settings = parse_settings({**REQUIRED, "kms_key_id": "alias/pgdr"})
    assert settings.sse_args == {"ServerSideEncryption": "aws:kms", "SSEKMSKeyId": "alias/pgdr"}


@pytest.mark.parametrize(
    ("name", "value", "needle"),
    [
        ("databases", "care_commons_db", "JSON list"),
        ("databases", "[]", "non-empty"),
        ("databases", '["ok", "bad id; rm -rf /"]', "connection id"),
        ("databases", '["a", "a"]', "twice"),
        ("s3_bucket", "", "required"),
        ("s3_bucket", "Bad_Bucket", "bucket name"),
        ("s3_prefix", "a/../b", "prefix"),
        ("staging_dir", "relative/dir", "absolute"),
        ("local_retention_days", "-1", "between"),
        ("local_retention_days", "thirty", "whole number"),
        ("aws_conn_id", "../etc", "connection id"),
        ("include_role_passwords", "maybe", "true or false"),
        ("kms_key_id", "key with spaces", "KMS"),
        # one of each other kind of check
        ("compression_level", "20", "between 1 and 19"),
        ("pitr_port", "80", "between 1024 and 65535"),
        ("dump_jobs", "2.5", "whole number"),
        ("freshness_hours", "a day", "must be a number"),
        ("freshness_hours", "0", "above 0 and at most 8784"),
        ("wal_ship_seconds", "nan", "above 0"),
        ("rto_budget_minutes", "inf", "at most 10080"),
        ("daily_digest", "sometimes", "true or false"),
        ("pg_bindir", "", "absolute"),
        ("restore_conn_ids", '["care_commons_db"]', "JSON object mapping"),
        ("restore_conn_ids", "{not json", "JSON object of connection ids"),
        ("drill_conn_ids", '{"care_commons_db": "bad id"}', "connection id"),
        ("marker_conn_ids", '{"billing_db": "markers"}', "pgdr_databases does not list"),
        ("restore_target_conn_ids", '[1]', "connection id strings"),
        ("restore_target_dirs", "[]", "non-empty JSON list of absolute directories"),
        ("restore_target_dirs", '["/"]', "not /"),
        ("restore_target_dirs", '["restores"]', "absolute"),
        ("replication_slot", "PgDr", "lower-case name"),
        ("pitr_os_user", "post gres", "lower-case name"),
        ("pitr_listen_addresses", "127.0.0.1; rm", "comma-separated host names"),
        ("legal_floor_years", "5", "between 6 and 100"),
        ("data_retention_policy", "policy.txt", ".yaml"),
        ("data_retention_policy", "../policy.yaml", "inside include/"),
        ("phi_tables", '["public.Clients"]', "lower-case table name"),
        ("phi_tables", '{"t": 1}', "JSON list of table names"),
        ("object_lock_mode", "strict", "GOVERNANCE or COMPLIANCE"),
        ("file_dirs", '{"care_commons_db": "/srv/uploads"}', "JSON list of paths"),
        ("file_dirs", '{"care_commons_db": ["uploads"]}', "absolute"),
        ("config_files", '{"care_commons_db": ["/a.env", "/a.env"]}', "twice"),
        ("config_files", '{"billing_db": ["/a.env"]}', "pgdr_databases does not list"),
        ("secret_files", '["config/production.json"]', "bare file name or an absolute path"),
        ("secret_files", '[""]', "non-empty strings"),
        ("config_key_conn_id", "", "connection id"),
    ],
)
def test_invalid_values_fail_with_a_message_naming_the_setting(name, value, needle):
    raw = {**REQUIRED, name: value}
    with pytest.raises(SettingsError) as err:
        parse_settings(raw)
    message = str(err.value)
    assert f"pgdr_{name}" in message
    assert f"AIRFLOW_VAR_PGDR_{name.upper()}" in message
    assert needle in message
    assert err.value.field == f"pgdr_{name}"   # code reads the field, never the message
    assert isinstance(err.value, Refused)   # nothing was changed


def test_every_default_is_the_one_declared_before_pydantic():
    assert {s.name: s.default for s in SETTINGS} == DEFAULT_TEXT
    settings = parse_settings(REQUIRED)
    parsed = {f.name: getattr(settings, f.name) for f in dataclasses.fields(settings)}
    assert parsed == DEFAULT_VALUE
    assert {name: type(value) for name, value in parsed.items()} == {n: type(v) for n, v in DEFAULT_VALUE.items()}


@pytest.mark.parametrize(("name", "text", "value"), [
    ("local_retention_days", " 7 ", 7),        # Variables are text; surrounding blanks are forgiven
    ("freshness_hours", "1.5", 1.5),
    ("daily_digest", "Yes", True),
    ("physical_backups", "off", False),
    ("include_role_passwords", "", False),
    ("object_lock_mode", "compliance", "COMPLIANCE"),
    ("s3_prefix", "/prod/pgdr/", "prod/pgdr"),
    ("pitr_listen_addresses", "127.0.0.1,10.0.0.12", "127.0.0.1, 10.0.0.12"),
    ("phi_tables", '["clients", "audit.events"]', ("public.clients", "audit.events")),
    ("restore_conn_ids", "", {}),
    ("file_dirs", '{"care_commons_db": ["/srv/uploads"]}', {"care_commons_db": (Path("/srv/uploads"),)}),
])
def test_accepted_text_formats(name, text, value):
    assert getattr(parse_settings({**REQUIRED, name: text}), name) == value


def test_unset_and_unknown_keys_are_ignored():
    settings = parse_settings({**REQUIRED, "dump_jobs": None, "not_a_setting": "x"})
    assert settings.dump_jobs == 2


@pytest.mark.parametrize(("name", "secret"), [
    ("slack_conn_id", "https://hooks.slack.com/services/T0001/B0002/XXXXyyyyZZZZ1234"),
    ("databases", '["postgresql://pgdr_backup:s3cret-pw@db.internal:5432/care_commons"]'),
    ("aws_conn_id", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"),
    ("restore_conn_ids", "xoxb-1234-5678-abcdEFGH"),
    ("pitr_os_user", "pgdr_backup:s3cret-pw@db.internal"),
])
def test_a_credential_pasted_into_a_setting_is_refused_without_showing_it(name, secret):
    with pytest.raises(SettingsError) as err:
        parse_settings({**REQUIRED, name: secret})
    message = str(err.value)
    assert err.value.field == f"pgdr_{name}" and f"pgdr_{name}" in message
    assert "[redacted]" in message
    for part in ("XXXXyyyyZZZZ1234", "s3cret-pw", "bPxRfiCYEXAMPLEKEY", "abcdEFGH"):
        assert part not in message


def test_a_settings_refusal_keeps_its_public_name_and_fields_through_pickling():
    import pickle

    with pytest.raises(SettingsError) as err:
        parse_settings({**REQUIRED, "dump_jobs": "many"})
    copy = pickle.loads(pickle.dumps(err.value))
    assert type(copy) is SettingsError and SettingsError.__module__ == "pgdr.settings"
    assert copy.field == "pgdr_dump_jobs" and str(copy) == str(err.value)


def test_a_replaced_value_is_checked_like_a_variable():
    settings = parse_settings(REQUIRED)
    replaced = dataclasses.replace(settings, pitr_window_days=0.5, file_dirs={"care_commons_db": ("/srv/up",)})
    assert replaced.pitr_window_days == 0.5 and replaced.file_dirs == {"care_commons_db": (Path("/srv/up"),)}
    assert replaced.databases == settings.databases and replaced.staging_dir == settings.staging_dir
    with pytest.raises(ValueError, match="pgdr_keep_daily_days.*between 1 and 3650"):
        dataclasses.replace(settings, keep_daily_days=0)
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.dump_jobs = 8


@pytest.mark.parametrize(("text", "refused"), [("90", None), ("0.5", None), ("0", "above 0.1"), ("soon", "a number")])
def test_a_deadline_is_read_from_the_environment_and_checked(monkeypatch, text, refused):
    monkeypatch.setenv("AIRFLOW_VAR_PGDR_BACKUP_DEADLINE_MINUTES", text)
    if refused is None:
        assert deadline_minutes("backup_deadline_minutes") == float(text)
    else:
        with pytest.raises(SettingsError, match=refused) as err:
            deadline_minutes("backup_deadline_minutes")
        assert err.value.field == "pgdr_backup_deadline_minutes"


def test_settings_are_read_from_airflow_variables_in_the_environment(monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_PGDR_S3_BUCKET", "from-env-bucket")
    monkeypatch.setenv("AIRFLOW_VAR_PGDR_DATABASES", '["db_one", "db_two"]')
    monkeypatch.setenv("AIRFLOW_VAR_PGDR_LOCAL_RETENTION_DAYS", "7")
    settings = load_settings()
    assert settings.s3_bucket == "from-env-bucket"
    assert settings.databases == ("db_one", "db_two")
    assert settings.local_retention_days == 7


def test_a_bad_variable_fails_load_with_its_name(monkeypatch):
    monkeypatch.setenv("AIRFLOW_VAR_PGDR_S3_BUCKET", "ok-bucket")
    monkeypatch.setenv("AIRFLOW_VAR_PGDR_DUMP_JOBS", "0")
    with pytest.raises(SettingsError, match="pgdr_dump_jobs"):
        load_settings()


def test_configuration_doc_lists_every_setting_with_its_default():
    doc = (Path(__file__).resolve().parents[1] / "docs" / "configuration.md").read_text()
    for setting in SETTINGS:
        row = next((line for line in doc.splitlines() if line.startswith(f"| `pgdr_{setting.name}`")), None)
        assert row is not None, f"docs/configuration.md has no row for pgdr_{setting.name}"
        default = "(required)" if setting.default is None else (setting.default or "(empty)")
        assert default in row, f"pgdr_{setting.name}: default {default!r} not in {row!r}"
    documented = set(re.findall(r"^\| `pgdr_([a-z0-9_]+)`", doc, flags=re.M))
    assert documented == {s.name for s in SETTINGS}


def test_configuration_doc_is_generated_from_the_declaration():
    committed, generated = DOC.read_text(), render()
    if committed != generated:
        diff = "".join(list(difflib.unified_diff(committed.splitlines(True), generated.splitlines(True),
                                                 "docs/configuration.md", "generated"))[:40])
        pytest.fail(f"docs/configuration.md is not what plugins/pgdr/settings.py generates; regenerate it with\n"
                    f"  {COMMAND}\n{diff}")


def test_every_setting_is_documented_with_a_meaning_and_an_example():
    for setting in SETTINGS:
        assert len(setting.description) > 20 and setting.example, setting.name
        parse_settings({**REQUIRED, setting.name: setting.example})   # the example is a valid value
