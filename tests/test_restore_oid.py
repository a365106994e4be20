"""A restore creates its database with an OID it chose; a taken OID (asked of the catalog) is replaced."""

import logging
from types import SimpleNamespace

import pytest


def test_a_taken_oid_is_replaced_by_another_and_only_a_real_failure_is_raised(cluster, monkeypatch):
    from pgdr.restore import logical as restore

    (taken,) = cluster.execute("SELECT oid FROM pg_database WHERE datname = 'template1'")[0]
    chosen = iter([taken, 987654])
    monkeypatch.setattr(restore, "new_oid", lambda: next(chosen))
    notes = []
    fake = SimpleNamespace(created=[], log=logging.getLogger("t"), _note=lambda **kw: notes.append(kw))
    conn = cluster.connect("postgres")
    try:
        restore.LogicalRestore._create_database(fake, conn, "CREATE DATABASE oid_probe;", "oid_probe")
        assert fake.created == [("oid_probe", 987654)]
        assert cluster.execute("SELECT oid FROM pg_database WHERE datname = 'oid_probe'") == [(987654,)]
        assert [n["work"]["oid"] for n in notes] == [taken, 987654]   # each attempt journalled first
        # a failure that is not a taken OID (the name exists) is raised at once, nothing retried
        monkeypatch.setattr(restore, "new_oid", lambda: 987655)
        with pytest.raises(Exception, match="already exists"):
            restore.LogicalRestore._create_database(fake, conn, "CREATE DATABASE oid_probe;", "oid_probe")
        assert fake.created == [("oid_probe", 987654)]
    finally:
        conn.close()
