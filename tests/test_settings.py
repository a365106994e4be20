"""The settings module: defaults, validation naming the setting, env Variables, docs."""

import re
from pathlib import Path

import pytest

from pgdr.settings import SETTINGS, SettingsError, load_settings, parse_settings

REQUIRED = {"s3_bucket": "pgdr-backups"}


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
