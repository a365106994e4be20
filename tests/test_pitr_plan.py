"""Point-in-time recovery planning: targets, the base backup chosen, the WAL needed, every refusal."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from pgdr.restore.pitr_plan import (
    Target,
    check_target_reachable,
    choose_base_backup,
    parse_target,
    plan_wal,
    recovery_end,
)
from pgdr.restore.request import RestoreRefused, parse_request
from pgdr.wal.archive import wal_objects
from pgdr.wal.names import format_lsn, parse_history, parse_lsn, segment_for_lsn, segment_number

BASE = "pgdr/db/wal/"
T0 = datetime(2026, 11, 26, 2, 0, tzinfo=timezone.utc)


def test_targets_parse_and_bad_ones_are_refused():
    assert parse_target("latest") == Target("latest")
    lsn = parse_target("0/3000060")
    assert lsn.kind == "lsn" and lsn.lsn == 0x3000060 and format_lsn(lsn.lsn) == "0/3000060"
    when = parse_target("2026-11-26T14:30:00+01:00")
    assert when.kind == "time" and when.time == datetime(2026, 11, 26, 13, 30, tzinfo=timezone.utc)
    assert parse_target("2026-11-26 14:30:00Z").time == datetime(2026, 11, 26, 14, 30, tzinfo=timezone.utc)
    with pytest.raises(RestoreRefused, match="neither 'latest', an ISO time"):
        parse_target("yesterday")


def test_a_time_without_a_zone_is_refused_naming_the_fix():
    with pytest.raises(RestoreRefused, match="'2026-11-26 14:30:00' has no time zone.*2026-11-26 14:30:00Z"):
        parse_target("2026-11-26 14:30:00")


def test_segment_names_follow_postgres():
    assert segment_for_lsn(parse_lsn("0/3000060"), 1, 16 << 20) == "000000010000000000000003"
    assert segment_for_lsn(parse_lsn("1/FF000000"), 2, 16 << 20) == "0000000200000001000000FF"
    assert segment_number("000000010000000100000000", 16 << 20) == 256


def _found(*names, partial=None):
    keys = [(f"{BASE}{n}.zst", T0) for n in names]
    if partial:
        keys.append((f"{BASE}{partial}.partial.zst", T0))
    keys.append((f"{BASE}00000002.history.zst", T0))
    return wal_objects(keys, BASE)


def test_latest_takes_every_segment_and_the_partial_one_last():
    found = _found("000000010000000000000002", "000000010000000000000003", partial="000000010000000000000004")
    plan = plan_wal(found, "000000010000000000000002", Target("latest"))
    assert [s.name for s in plan.segments] == ["000000010000000000000002", "000000010000000000000003",
                                               "000000010000000000000004"]
    assert plan.segments[-1].partial and not plan.segments[0].partial


def test_a_completed_segment_wins_over_its_stale_partial():
    found = wal_objects([(f"{BASE}000000010000000000000003.partial.zst", T0),
                         (f"{BASE}000000010000000000000003.zst", T0)], BASE)
    assert not found["000000010000000000000003"].partial


def test_a_gap_is_refused_naming_the_missing_segment():
    found = _found("000000010000000000000002", "000000010000000000000004", partial="000000010000000000000005")
    with pytest.raises(RestoreRefused, match="segment 000000010000000000000003 is missing"):
        plan_wal(found, "000000010000000000000002", Target("latest"))
    # a target before the gap is fine
    plan = plan_wal(found, "000000010000000000000002", parse_target("0/2FFFFFF"))
    assert plan.last == "000000010000000000000002"


def test_missing_start_segment_and_targets_past_the_archive_are_refused():
    found = _found("000000010000000000000003")
    with pytest.raises(RestoreRefused, match="000000010000000000000002, where the base backup starts"):
        plan_wal(found, "000000010000000000000002", Target("latest"))
    with pytest.raises(RestoreRefused, match="after the newest WAL shipped"):
        plan_wal(_found("000000010000000000000002"), "000000010000000000000002", parse_target("0/5000000"))
    plan = plan_wal(_found("000000010000000000000002"), "000000010000000000000002", Target("latest"))
    with pytest.raises(RestoreRefused, match="after the newest WAL shipped"):
        check_target_reachable(plan, parse_target("2026-11-26T03:00:00Z"))


def test_a_gap_carries_the_missing_segment_and_timeline_as_fields():
    from pgdr import errors

    found = _found("000000010000000000000002", "000000010000000000000004")
    with pytest.raises(errors.WalGap) as gap:
        plan_wal(found, "000000010000000000000002", Target("latest"))
    assert (gap.value.segment, gap.value.timeline) == ("000000010000000000000003", 1)
    with pytest.raises(errors.WalGap) as gap:
        plan_wal(_found("000000010000000000000003"), "000000010000000000000002", Target("latest"))
    assert gap.value.segment == "000000010000000000000002"


@pytest.mark.parametrize("size, names", [
    # the last segments of the first 4 GiB of WAL and the first of the next, for each segment size
    (1 << 20, ["000000010000000000000FFE", "000000010000000000000FFF", "000000010000000100000000",
               "000000010000000100000001"]),
    (64 << 20, ["00000001000000000000003E", "00000001000000000000003F", "000000010000000100000000",
                "000000010000000100000001"]),
])
def test_wal_of_a_cluster_with_another_segment_size_is_planned_in_its_own_segments(size, names):
    plan = plan_wal(_found(*names[:-1], partial=names[-1]), names[0], Target("latest"), segment_size=size)
    assert [s.name for s in plan.segments] == names and plan.segment_size == size
    # an LSN target stops at the segment that holds it
    lsn = parse_target(format_lsn(segment_number(names[2], size) * size + 0x28))
    assert plan_wal(_found(*names), names[0], lsn, segment_size=size).last == names[2]
    with pytest.raises(RestoreRefused, match=f"segment {names[1]} is missing"):
        plan_wal(_found(names[0], *names[2:]), names[0], Target("latest"), segment_size=size)


def _base(backup_id, finished, start, end):
    return (backup_id, {"finished_at": finished, "wal": {"start_lsn": start, "end_lsn": end}})


def test_the_newest_base_backup_before_the_target_is_chosen():
    candidates = [_base("20261124T020000Z", "2026-11-24T02:01:00+00:00", "0/2000028", "0/2000100"),
                  _base("20261125T020000Z", "2026-11-25T02:01:00+00:00", "0/5000028", "0/5000100")]
    assert choose_base_backup(candidates, Target("latest"))[0] == "20261125T020000Z"
    assert choose_base_backup(candidates, parse_target("2026-11-24T12:00:00Z"))[0] == "20261124T020000Z"
    assert choose_base_backup(candidates, parse_target("0/4000000"))[0] == "20261124T020000Z"
    with pytest.raises(RestoreRefused, match="before the oldest base backup \\(20261124T020000Z"):
        choose_base_backup(candidates, parse_target("2026-11-23T00:00:00Z"))
    with pytest.raises(RestoreRefused, match="no complete, good base backup"):
        choose_base_backup([], Target("latest"))


def test_the_recovery_end_is_read_from_the_server_log():
    log = ("LOG:  redo done at 0/30001F0 system usage: CPU: user: 0.00 s\n"
           "LOG:  last completed transaction was at log time 2026-11-26 02:03:04.123+00\n")
    assert recovery_end(log) == {"last_transaction_time": "2026-11-26 02:03:04.123+00", "redo_end_lsn": "0/30001F0"}


def test_the_form_refuses_point_in_time_combinations_that_make_no_sense():
    form = {"database": "db", "backup": "latest", "mode": "new_database", "point_in_time": "latest"}
    assert parse_request(form, ["db"]).point_in_time == "latest"
    for extra, message in (({"mode": "replace", "confirm": "RESTORE db"}, "cannot take a point in time"),
                           ({"target_database": "x"}, "leave target_conn_id and target_database empty"),
                           ({"backup": "20261126T020000Z"}, "leave backup at 'latest'")):
        with pytest.raises(RestoreRefused, match=message):
            parse_request({**form, **extra}, ["db"])


# ---------------------------------------------------------------- timelines and clusters

def _history_case():
    """Base backup on timeline 1 in segment 2; a failover at 0/5000100 started timeline 2; the old
    primary wrote on into segment 6 of timeline 1 (an abandoned branch) and shipped it."""
    names = ["000000010000000000000002", "000000010000000000000003", "000000010000000000000004",
             "000000010000000000000005", "000000010000000000000006",
             "000000020000000000000005", "000000020000000000000006"]
    keys = [(f"{BASE}{n}.zst", T0) for n in names] + [(f"{BASE}000000020000000000000007.partial.zst", T0)]
    return wal_objects(keys, BASE), {2: parse_history("1\t0/5000100\tno recovery target specified\n")}


def test_latest_follows_the_history_to_the_newest_timeline_taking_each_segment_from_its_owner():
    from pgdr.restore.pitr_plan import choose_timeline

    found, histories = _history_case()
    tli, path, branches = choose_timeline(1, parse_lsn("0/2000028"), histories)
    assert tli == 2 and not branches
    plan = plan_wal(found, "000000010000000000000002", Target("latest"), path)
    assert [s.name for s in plan.segments] == [
        "000000010000000000000002", "000000010000000000000003", "000000010000000000000004",
        "000000020000000000000005", "000000020000000000000006", "000000020000000000000007"]
    assert plan.timeline == 2 and plan.segments[-1].partial
    # without the history (today's behaviour before the fix) replay would end on timeline 1's branch
    assert plan_wal(found, "000000010000000000000002", Target("latest")).last == "000000010000000000000006"


def test_a_gap_on_the_new_timeline_is_refused_naming_it():
    from pgdr.restore.pitr_plan import choose_timeline

    found, histories = _history_case()
    del found["000000020000000000000006"]
    _, path, _ = choose_timeline(1, parse_lsn("0/2000028"), histories)
    with pytest.raises(RestoreRefused, match="segment 000000020000000000000006 is missing"):
        plan_wal(found, "000000010000000000000002", Target("latest"), path)


def test_a_target_on_the_abandoned_branch_is_refused_and_one_before_it_is_not():
    from pgdr.restore.pitr_plan import AbandonedBranch, check_not_abandoned, choose_timeline

    found, histories = _history_case()
    tli, path, branches = choose_timeline(1, parse_lsn("0/2000028"), histories, requested=1,
                                          stored={2: datetime(2026, 11, 26, 3, 0, tzinfo=timezone.utc)})
    assert tli == 1 and [(b.tli, b.lsn) for b in branches] == [(2, 0x5000100)]
    for target in (parse_target("0/6000000"), Target("latest"), parse_target("2026-11-26T04:00:00Z")):
        with pytest.raises(AbandonedBranch, match="abandoned branch: timeline 2 left timeline 1 at LSN 0/5000100"):
            check_not_abandoned(target, tli, branches)
    check_not_abandoned(parse_target("0/4000000"), tli, branches)
    assert plan_wal(found, "000000010000000000000002", parse_target("0/4000000"), path).last == \
        "000000010000000000000004"
    # a base backup taken on timeline 1 after the branch cannot reach timeline 2
    tli, _, branches = choose_timeline(1, parse_lsn("0/6000028"), histories)
    assert tli == 1 and branches and branches[0].before_base
    with pytest.raises(AbandonedBranch, match="before the base backup started"):
        check_not_abandoned(parse_target("2026-11-26T02:30:00Z"), tli, branches)
    with pytest.raises(AbandonedBranch, match="recovery target timeline 2 does not pass through timeline 1"):
        choose_timeline(1, parse_lsn("0/6000028"), histories, requested=2)


def test_two_clusters_with_the_same_segment_names_never_mix():
    keys = [(f"{BASE}111/000000010000000000000002.zst", T0), (f"{BASE}111/000000010000000000000003.zst", T0),
            (f"{BASE}222/000000010000000000000002.zst", T0), (f"{BASE}222/000000010000000000000003.partial.zst", T0),
            (f"{BASE}000000010000000000000001.zst", T0), (f"{BASE}000000010000000000000002.zst", T0)]
    first = wal_objects(keys, BASE, "111")
    second = wal_objects(keys, BASE, "222")
    assert first["000000010000000000000002"].key == f"{BASE}111/000000010000000000000002.zst"
    assert second["000000010000000000000002"].key == f"{BASE}222/000000010000000000000002.zst"
    assert second["000000010000000000000003"].partial and not first["000000010000000000000003"].partial
    # legacy objects fill in only what the cluster's own directory lacks, and not at all when told so
    assert first["000000010000000000000001"].system_identifier is None
    assert "000000010000000000000001" not in wal_objects(keys, BASE, "111", legacy=False)
    # a base backup of unknown cluster reads the legacy layout only
    assert {o.key for o in wal_objects(keys, BASE).values()} == {f"{BASE}000000010000000000000001.zst",
                                                                  f"{BASE}000000010000000000000002.zst"}
