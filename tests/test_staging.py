"""Local staging copies are kept for pgdr_local_retention_days, then removed."""

import logging
import os
import time

from pgdr import staging


def _copy(base, name, age_days):
    path = base / "db" / "logical" / name
    path.mkdir(parents=True)
    (path / "toc.dat").write_text("x")
    stamp = time.time() - age_days * 86400
    os.utime(path, (stamp, stamp))
    return path


def test_prune_removes_only_expired_copies_and_stale_partials(tmp_path):
    old = _copy(tmp_path, "20261001T020000Z", 40)
    recent = _copy(tmp_path, "20261120T020000Z", 5)
    stale_partial = _copy(tmp_path, "20261101T020000Z.partial", 3)
    live_partial = _copy(tmp_path, "20261126T020000Z.partial", 0)
    unrelated = _copy(tmp_path, "notes", 400)
    removed = staging.prune(tmp_path, "db", "logical", 30, logging.getLogger("t"))
    assert sorted(removed) == ["20261001T020000Z", "20261101T020000Z.partial"]
    assert not old.exists() and not stale_partial.exists()
    assert recent.exists() and live_partial.exists() and unrelated.exists()


def test_keep_turns_a_partial_directory_into_a_copy(tmp_path):
    work = staging.work_dir(tmp_path, "db", "logical", "20261126T020000Z")
    work.mkdir(parents=True)
    final = staging.keep(work)
    assert final.name == "20261126T020000Z" and final.is_dir() and not work.exists()
