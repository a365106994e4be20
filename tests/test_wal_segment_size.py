"""A cluster initialised with a non-default WAL segment size (``initdb --wal-segsize``) is backed up, its
WAL shipped, and recovered to the latest commit, every row back; WAL retention orders its segments right.

PostgreSQL names a segment ``<timeline><log><seg>``, where how many ``seg`` a 4 GiB ``log`` holds depends on
the segment size: with 1 MiB segments ``...00000FFF`` is followed by ``...0000000100000000``. pgdr once did
this arithmetic as if every cluster had 16 MiB segments. The cluster here starts its WAL just before the
end of the first 4 GiB (``pg_resetwal -l``, so the test need not write 4 GiB first) and crosses it.
"""

from __future__ import annotations

import logging

import pytest
from test_pitr import Site

from harness.stack import CONN_ID
from tests.support.dags import xcom_values

log = logging.getLogger("test_wal_segment_size")
MB = 1 << 20


@pytest.fixture()
def small_segments(stack, airflow_db, monkeypatch):
    stack.slack.clear()
    site = Site(stack, monkeypatch, wal_segsize_mb=1, first_wal_file="000000010000000000000FFA")
    yield site
    site.close()


def _insert_position(site) -> tuple[str, int, int]:
    """(segment of the insert position as PostgreSQL names it, its byte offset, its LSN)."""
    from pgdr.wal.names import parse_lsn

    name, offset, lsn = site.cluster.execute(
        "SELECT (f).file_name, (f).file_offset, l::text FROM "
        "(SELECT pg_walfile_name_offset(l) AS f, l FROM pg_current_wal_insert_lsn() AS l) AS x")[0]
    return name, offset, parse_lsn(lsn)


@pytest.mark.slow   # a primary, a receiver, a base backup and a recovery: about 70 s
def test_a_cluster_with_1_mib_segments_recovers_every_row_across_the_4_gib_boundary(small_segments):
    from pgdr.wal.names import segment_for_lsn, segment_position

    site = small_segments
    assert site.cluster.execute("SHOW wal_segment_size")[0][0] == "1MB"
    base_id = site.base_backup()
    manifest = site.store().read_manifest(f"{site.prefix}/{CONN_ID}/base/{base_id}/manifest.json")
    assert manifest.wal["wal_segment_size"] == MB and manifest.wal["start_wal_file"].startswith("0000000100000000")
    n = 0
    while True:
        site.insert(n + 1, n + 100)
        n += 100
        name, offset, lsn = _insert_position(site)
        if offset:   # off a boundary, PostgreSQL's name and pgdr's agree
            assert segment_for_lsn(lsn, 1, MB) == name
        if segment_position(name) >= (1, 1):
            break
        site.cluster.execute("SELECT pg_switch_wal()")
        assert n < 5000, "the WAL never crossed into the second 4 GiB"
    site.insert(n + 1, n + 50)   # left in the partial segment: synchronously received, then shipped
    n += 50
    site.wait_for_sync()
    site.ship()

    dag_run, states = site.recover("latest")
    assert str(dag_run.state) == "success", states
    (outcome,) = xcom_values(dag_run, "restore")
    assert site.recovered_rows(outcome) == set(range(1, n + 1))
    assert outcome["wal_first"] == manifest.wal["start_wal_file"]
    assert outcome["wal_last"].startswith("0000000100000001") and outcome["wal_last_partial"] is True


def test_receiver_pruning_orders_segments_of_any_size(tmp_path):
    """The receiver directory of a 1 MiB-segment cluster is pruned below the newest base backup's start,
    across the 4 GiB boundary, and only there."""
    from pgdr.retain.wal import prune_receiver_dir
    from pgdr.wal.local import new_state, save_state

    names = ["000000010000000000000FFE", "000000010000000000000FFF", "000000010000000100000000",
             "000000010000000100000001"]
    state = new_state(CONN_ID)
    for name in names:
        (tmp_path / name).write_bytes(b"\0" * 1024)
        state["segments"][name] = {"raw_sha256": "0" * 64}
    save_state(tmp_path, state)
    report = prune_receiver_dir(tmp_path, "000000010000000100000000", dry_run=False, log=log)
    assert report["removed"] == names[:2]
    assert sorted(p.name for p in tmp_path.iterdir() if not p.name.startswith(".")) == names[2:]
