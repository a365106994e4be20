"""The point-in-time drill's yardstick without a database: which moment to recover to, and which
markers must then be present or absent (pgdr.drill.markers.choose_moment / expected_markers / remember).

The drill end to end (markers committed by pg_backup_verify, a real recovery) is in tests/test_drill.py.
"""

from __future__ import annotations

import random
from datetime import datetime, timedelta, timezone

import pytest

from pgdr.drill.markers import KEEP, MARGIN, choose_moment, expected_markers, remember

T0 = datetime(2026, 12, 1, 12, 0, tzinfo=timezone.utc)


def marker(marker_id: int, seconds: float, commit_seconds: float = 0.05) -> dict:
    """A marker written ``seconds`` after T0 whose commit returned ``commit_seconds`` later."""
    marked = T0 + timedelta(seconds=seconds)
    return {"id": marker_id, "marked_at": marked.isoformat(),
            "acknowledged_at": (marked + timedelta(seconds=commit_seconds)).isoformat(), "run_id": f"run{marker_id}"}


# one marker a minute for an hour, the way pg_backup_verify leaves them (more often than it runs)
HOURLY = [marker(i, 60 * i) for i in range(1, 61)]


@pytest.mark.parametrize("seed", range(50))
def test_the_chosen_moment_keeps_clear_of_every_commit_and_splits_the_markers_exactly(seed):
    earliest = T0 + timedelta(seconds=30)
    moment = choose_moment(HOURLY, earliest, random.Random(seed))
    assert moment is not None
    assert earliest < moment <= datetime.fromisoformat(HOURLY[-1]["acknowledged_at"])
    for m in HOURLY:
        marked, acked = datetime.fromisoformat(m["marked_at"]), datetime.fromisoformat(m["acknowledged_at"])
        assert not (marked - MARGIN <= moment <= acked + MARGIN), f"moment {moment} straddles marker {m['id']}"
    present, absent = expected_markers(HOURLY, moment)
    # every marker is decided one way or the other, none both
    assert present | absent == {m["id"] for m in HOURLY}
    assert not present & absent
    assert present == {m["id"] for m in HOURLY if datetime.fromisoformat(m["acknowledged_at"]) < moment}


def test_the_same_seed_chooses_the_same_moment():
    """A failed drill can be replayed: the moment depends only on the markers and the seed."""
    assert choose_moment(HOURLY, T0, random.Random(7)) == choose_moment(HOURLY, T0, random.Random(7))


def test_markers_before_the_oldest_base_backup_are_not_candidates():
    earliest = T0 + timedelta(seconds=60 * 50 + 30)   # only markers 51..60 are after the backup ended
    moments = [choose_moment(HOURLY, earliest, random.Random(seed)) for seed in range(30)]
    assert all(m is not None and m > earliest for m in moments)


def test_no_moment_when_no_marker_was_committed_after_the_base_backup():
    assert choose_moment(HOURLY, T0 + timedelta(hours=2), random.Random(1)) is None
    assert choose_moment([], T0, random.Random(1)) is None


def test_no_moment_when_every_instant_is_within_a_commit_margin():
    """Markers packed closer than twice the margin leave no certain answer: the drill says so (None)
    rather than recover to a moment whose expected markers are a guess."""
    packed = [marker(i, 1 + i * 0.5, commit_seconds=0.2) for i in range(20)]
    assert choose_moment(packed, T0 + timedelta(seconds=0.5), random.Random(3)) is None


def test_a_marker_whose_commit_straddles_the_moment_is_neither_required_nor_forbidden():
    slow = marker(1, 10, commit_seconds=5)   # written at +10 s, acknowledged at +15 s
    present, absent = expected_markers([slow], T0 + timedelta(seconds=12))
    assert present == set() and absent == set()
    assert expected_markers([slow], T0 + timedelta(seconds=16)) == ({1}, set())
    assert expected_markers([slow], T0 + timedelta(seconds=9)) == (set(), {1})


def test_offsets_other_than_utc_compare_by_instant():
    """acknowledged_at is written in UTC but marked_at comes from the server's timestamptz: an offset
    in either must not move a marker across the moment."""
    m = marker(1, 100)
    m["marked_at"] = datetime.fromisoformat(m["marked_at"]).astimezone(timezone(timedelta(hours=-5))).isoformat()
    assert expected_markers([m], T0 + timedelta(seconds=99)) == (set(), {1})
    assert expected_markers([m], T0 + timedelta(seconds=101)) == ({1}, set())


def test_the_state_file_keeps_the_newest_markers_only():
    markers: list[dict] = []
    for i in range(KEEP + 5):
        markers = remember(markers, {"id": i})
    assert len(markers) == KEEP
    assert markers[0]["id"] == 5 and markers[-1]["id"] == KEEP + 4


def test_a_missing_early_marker_and_a_present_late_one_are_each_named():
    from pgdr.drill.markers import marker_problems

    present, absent = expected_markers(HOURLY, T0 + timedelta(minutes=30, seconds=30))
    assert marker_problems(present, absent, set(present)) == []
    problems = marker_problems(present, absent, (present - {7}) | {31, 45})
    assert problems == [{"problem": "markers committed before the moment are missing", "ids": [7]},
                        {"problem": "markers committed after the moment are present", "ids": [31, 45]}]
    # a recovery that brought nothing back lists at most 20 ids: the record and the alert stay short
    assert len(marker_problems(present, absent, set())[0]["ids"]) == 20
