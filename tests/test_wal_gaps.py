"""A lost replication slot, in the receiver's directory: what is missing, what moves aside, what is recorded.

Pure and file-level (pgdr.wal.gaps); the whole heal, with a real slot lost on a real server, is
tests/test_wal_receiver.py.
"""

from __future__ import annotations

import json
from pathlib import Path

from pgdr.wal import segment_header
from pgdr.wal.gaps import GAPS_NAME, plan_gap, read_gaps, set_aside
from pgdr.wal.local import new_state, save_state, scan
from pgdr.wal.names import parse_segment, segment_start_lsn

SYSID = "7300000000000000001"


def _segment(directory: Path, name: str, size: int = 16 << 20) -> Path:
    """A file whose long page header says: this segment, of a cluster with ``size``-byte segments."""
    segment = name.removesuffix(".partial")
    header = segment_header._LONG_HEADER.pack(0xD113, 0x0002, parse_segment(segment)[0],
                                              segment_start_lsn(segment, size), 0, int(SYSID), size, 8192)
    path = directory / name
    path.write_bytes(header)
    return path


def test_the_files_before_the_slots_restart_move_aside_and_the_missing_segments_are_named(tmp_path):
    for name in ["000000010000000000000001", "000000010000000000000002", "000000010000000000000003.partial"]:
        _segment(tmp_path, name)
    plan = plan_gap(scan(tmp_path, aside=False), "0/6000028")
    assert sorted(f.name for f in plan["behind"]) == ["000000010000000000000001", "000000010000000000000002",
                                                      "000000010000000000000003.partial"]
    # the partial segment 3 was not fully received: 3, 4 and 5 are lost; streaming resumes in 6
    assert (plan["first_segment"], plan["last_segment"], plan["segments"]) == (
        "000000010000000000000003", "000000010000000000000005", 3)
    assert (plan["from_lsn"], plan["to_lsn"], plan["partial_kept"]) == ("0/3000000", "0/6000000", True)


def test_nothing_is_missing_when_the_directory_reaches_the_restart_point_or_is_empty(tmp_path):
    assert plan_gap([], "0/6000028") is None
    _segment(tmp_path, "000000010000000000000005")
    assert plan_gap(scan(tmp_path), "0/6000028") is None   # segment 5 complete: streaming goes on at 6
    _segment(tmp_path, "000000010000000000000006.partial")
    assert plan_gap(scan(tmp_path), "0/6000028") is None   # a file at the restart point: nothing moves


def test_the_segment_size_comes_from_the_headers(tmp_path):
    _segment(tmp_path, "000000010000000000000001", size=1 << 20)
    plan = plan_gap(scan(tmp_path), "0/400000")   # 1 MiB segments: restart in segment 4
    assert (plan["first_segment"], plan["last_segment"], plan["segments"]) == (
        "000000010000000000000002", "000000010000000000000003", 2)


def test_set_aside_moves_the_old_wal_records_the_gap_once_and_knows_what_was_unshipped(tmp_path):
    for name in ["000000010000000000000001", "000000010000000000000002"]:
        _segment(tmp_path, name)
    state = new_state("db")
    state["segments"]["000000010000000000000001"] = {"raw_sha256": "ab"}
    save_state(tmp_path, state)
    gap = set_aside(tmp_path, "0/5000000", slot="pgdr_receiver", lost=True)
    assert gap["moved_to"] == "before-gap-000000010000000000000003"
    assert sorted(p.name for p in (tmp_path / gap["moved_to"]).iterdir()) == ["000000010000000000000001",
                                                                              "000000010000000000000002"]
    assert not list(tmp_path.glob("0000000*")), "nothing left where pg_receivewal would resume from"
    assert gap["unshipped"] == ["000000010000000000000002"]
    assert gap["reason"] == "replication slot lost (wal_status lost)"
    assert "take a new base backup" in gap["next_step"]
    assert read_gaps(tmp_path) == [gap] == json.loads((tmp_path / GAPS_NAME).read_text())["gaps"]
    # the moved files are still seen (shipped and pruned from there), and a second look finds nothing to move
    assert {f.name for f in scan(tmp_path)} == {"000000010000000000000001", "000000010000000000000002"}
    assert set_aside(tmp_path, "0/5000000", slot="pgdr_receiver", lost=False) is None
    assert len(read_gaps(tmp_path)) == 1
