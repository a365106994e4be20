"""The WAL vocabulary (pgdr.wal.names): LSNs, segment names and their arithmetic for every segment size
PostgreSQL allows (``initdb --wal-segsize`` 1 MiB .. 1 GiB), checked against PostgreSQL's own results."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pgdr.wal import names

SIZES = [1 << shift for shift in range(20, 31)]          # 1 MiB .. 1 GiB
sizes = st.sampled_from(SIZES)
timelines = st.integers(min_value=1, max_value=0xFFFFFFFF)
lsns = st.integers(min_value=0, max_value=(1 << 64) - 1)


@given(lsns)
def test_an_lsn_prints_and_parses_back(lsn):
    text = names.format_lsn(lsn)
    assert names.is_lsn(text) and names.parse_lsn(text) == lsn and names.parse_lsn(text.lower()) == lsn


@settings(max_examples=300)
@given(lsns, timelines, sizes)
def test_the_segment_holding_an_lsn_starts_at_or_before_it_and_ends_after_it(lsn, timeline, size):
    name = names.segment_for_lsn(lsn, timeline, size)
    start = names.segment_start_lsn(name, size)
    assert start <= lsn < start + size and start % size == 0
    assert names.timeline_of(name) == timeline
    assert names.segment_from_number(timeline, names.segment_number(name, size), size) == name
    assert names.lsn_segment_number(lsn, size) == names.segment_number(name, size)


@settings(max_examples=300)
@given(st.integers(min_value=0, max_value=(1 << 44) - 2), timelines, sizes)
def test_next_segment_is_the_one_after_in_wal_order(number, timeline, size):
    number %= ((1 << 64) // size) - 1
    name = names.segment_from_number(timeline, number, size)
    following = names.next_segment(name, size)
    assert names.segment_number(following, size) == number + 1
    assert names.segment_start_lsn(following, size) == names.segment_start_lsn(name, size) + size
    # names sort in WAL order by position, whatever the size
    assert names.segment_position(following) > names.segment_position(name)
    _, log, seg = names.parse_segment(name)
    assert seg < names.segments_per_log(size) and names.segment_name(timeline, log, seg) == name


@pytest.mark.parametrize("size, lsn, expected", [
    # what pg_walfile_name(lsn) gives on servers made with these --wal-segsize (not on a boundary)
    (16 << 20, "0/3000060", "000000010000000000000003"),
    (16 << 20, "16/B374D848", "0000000100000016000000B3"),
    (1 << 20, "0/10000028", "000000010000000000000100"),
    (1 << 20, "0/FFF00028", "000000010000000000000FFF"),
    (1 << 20, "1/100028", "000000010000000100000001"),
    (64 << 20, "0/F8000028", "00000001000000000000003E"),
    (64 << 20, "1/4000028", "000000010000000100000001"),
    (1 << 30, "2/40000028", "000000010000000200000001"),
])
def test_segment_names_match_postgres_for_each_size(size, lsn, expected):
    assert names.segment_for_lsn(lsn, 1, size) == expected
    assert names.segment_start_lsn(expected, size) == names.parse_lsn(lsn) // size * size


def test_the_same_name_is_a_different_place_for_another_size():
    # 0x100 is segment 256 of log 0 with 1 MiB segments, but no 16 MiB segment has that seg part
    assert names.segment_number("000000010000000000000100", 1 << 20) == 256
    with pytest.raises(ValueError, match="beyond 0xff"):
        names.segment_number("000000010000000000000100", 16 << 20)
    assert names.next_segment("000000010000000000000FFF", 1 << 20) == "000000010000000100000000"
    assert names.next_segment("00000001000000000000003F", 64 << 20) == "000000010000000100000000"
    assert names.next_segment("0000000100000000000000FF", 16 << 20) == "000000010000000100000000"


@pytest.mark.parametrize("bad", [0, 1 << 19, 3 << 20, 1 << 31, 16 * 1000 * 1000, "16MB"])
def test_a_segment_size_postgres_cannot_have_is_refused(bad):
    with pytest.raises(ValueError, match="power of two between 1 MiB and 1 GiB"):
        names.check_segment_size(bad)


def test_a_manifest_without_a_segment_size_means_the_default():
    assert names.segment_size_of({"wal_segment_size": 1 << 20}) == 1 << 20
    assert names.segment_size_of({"start_wal_file": "000000010000000000000002"}) == 16 << 20
    assert names.segment_size_of(None) == 16 << 20


def test_names_are_classified_and_bad_ones_refused():
    assert [names.classify(n) for n in ("000000010000000000000003", "000000010000000000000004.partial",
                                        "00000002.history", "00000002.history.zst", "0000000100000000000000a3",
                                        "x.partial")] == ["segment", "partial", "history", None, None, None]
    assert names.segment_of_partial(names.partial_name("000000010000000000000004")) == "000000010000000000000004"
    assert names.timeline_of("000000030000000000000004.partial") == 3
    assert names.history_timeline(names.history_name(0x1A)) == 0x1A and names.history_name(2) == "00000002.history"
    for bad in ("00000001000000000000000g", "0000000100000000000000", "000000000000000000000001"):
        with pytest.raises(ValueError):
            names.segment_name(*names.parse_segment(bad))
    for bad in ("x/y", "1/", "/1", "123456789/0", "0/3000060 extra"):
        with pytest.raises(ValueError, match="not an LSN"):
            names.parse_lsn(bad)
    with pytest.raises(ValueError):
        names.parse_lsn(-1)


def test_history_files_parse():
    text = "1\t0/3000158\tno recovery target specified\n\n# comment\n2\t0/5000000\tat restore point\n"
    assert names.parse_history(text) == [(1, 0x3000158), (2, 0x5000000)]
    with pytest.raises(ValueError, match="not a timeline history line"):
        names.parse_history("one 0/1 x")
