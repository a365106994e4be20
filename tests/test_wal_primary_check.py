"""``python -m pgdr.wal_receiver --check`` without a server: the connection comes from the environment dict
it is given (never this process's, which it leaves alone), and an unreachable primary is one clear finding.
The checks against a real primary are in tests/test_wal_archive.py and tests/test_wal_receiver.py.
"""

from __future__ import annotations

import os
import socket

from pgdr.wal.conninfo import connect_params
from pgdr.wal.primary_check import check_directory, check_primary, format_findings


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_an_unreachable_primary_is_one_failed_finding_from_the_given_environment(monkeypatch):
    port = _closed_port()
    monkeypatch.setenv("PGPORT", "1")          # this process's own libpq settings must not be the ones used
    before = dict(os.environ)
    env = {"PGHOST": "127.0.0.1", "PGPORT": str(port), "PGUSER": "pgdr_wal", "PGCONNECT_TIMEOUT": "3"}
    findings = check_primary(env, "pgdr_receiver")
    assert [(f.status, f.topic) for f in findings] == [("fail", "connection")]
    assert str(port) in findings[0].message and "REPLICATION" in findings[0].fix
    assert dict(os.environ) == before, "the check changed this process's environment"
    assert format_findings(findings).endswith("1 problem(s) to fix before RPO = 0 holds")


def test_connection_parameters_come_only_from_libpq_variables():
    params = connect_params({"PGHOST": "db", "PGPORT": "5433", "PGPASSWORD": "s3cret-pw", "HOME": "/root",
                             "PGSSLMODE": "verify-full"})
    assert params == {"host": "db", "port": "5433", "password": "s3cret-pw", "sslmode": "verify-full",
                      "dbname": "postgres", "connect_timeout": "15"}


def test_the_receiver_directory_check(tmp_path):
    assert check_directory(tmp_path).status == "ok"
    assert check_directory(tmp_path / "new" / "dir").status == "ok"   # created when the receiver starts
    (tmp_path / "file").write_text("")
    assert check_directory(tmp_path / "file").status == "fail"
