"""The long page header that starts every WAL segment: whose WAL a file is, and where it belongs.

The header carries the timeline, the LSN of the page, the cluster's system identifier and its
segment size, so the shipper keys the archive by cluster and checks each file's name against its
content before anything is uploaded.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from pathlib import Path

from pgdr.wal.local import STATE_NAME, LocalWal, WalArchiveError
from pgdr.wal.names import format_lsn, parse_segment, segment_of_partial, segment_start_lsn

_LONG_HEADER = struct.Struct("<HHIQI4xQII")  # magic, info, tli, pageaddr, rem_len, pad, sysid, seg_size, blcksz
_XLP_LONG_HEADER = 0x0002


@dataclass(frozen=True)
class SegmentHeader:
    timeline: int
    pageaddr: int
    system_identifier: str
    segment_size: int


def read_segment_header(path: Path) -> SegmentHeader | None:
    """The long page header that starts every WAL segment, or None while it is still zeros."""
    with open(path, "rb") as handle:
        raw = handle.read(_LONG_HEADER.size)
    if len(raw) < _LONG_HEADER.size:
        return None
    magic, info, tli, pageaddr, _, sysid, seg_size, _ = _LONG_HEADER.unpack(raw)
    if magic == 0 or not info & _XLP_LONG_HEADER:
        return None
    return SegmentHeader(tli, pageaddr, str(sysid), seg_size)


def check_header(item: LocalWal, header: SegmentHeader | None, state: dict) -> dict[str, str]:
    """Metadata from the segment's header, after checking it belongs here; raises on a stranger."""
    if header is None:
        return {}
    segment = item.name if item.kind == "segment" else segment_of_partial(item.name)
    timeline, _, _ = parse_segment(segment)
    expected = segment_start_lsn(segment, header.segment_size) if header.segment_size else None
    # the first segment of a new timeline starts as a copy of its parent's, page headers included
    if header.timeline > timeline or header.pageaddr != expected:
        raise WalArchiveError(f"{item.path}: header says timeline {header.timeline} at "
                              f"{format_lsn(header.pageaddr)}, which does not match the file name")
    known = state.get("system_identifier")
    if known and known != header.system_identifier:
        raise WalArchiveError(
            f"{item.path} comes from database system {header.system_identifier}, but this directory has "
            f"shipped WAL of system {known}; a receiver directory serves one cluster (clear it and the "
            f"{STATE_NAME} file after checking, or point the receiver elsewhere)")
    state["system_identifier"] = header.system_identifier
    return {"system-identifier": header.system_identifier, "timeline": str(timeline),
            "start-lsn": format_lsn(header.pageaddr),
            "end-lsn": format_lsn(header.pageaddr + header.segment_size) if item.kind == "segment" else ""}


def discover_system_identifier(files: list[LocalWal], state: dict) -> str | None:
    """The system identifier of the WAL in the directory: from the state, else from the first
    segment (or partial) header; None while no WAL page has been written yet.

    History files carry no header, so they can be keyed only once a segment tells the identifier.
    """
    if state.get("system_identifier"):
        return state["system_identifier"]
    for item in files:
        if item.kind == "history":
            continue
        try:
            header = read_segment_header(item.path)
        except FileNotFoundError:
            continue
        if header is not None:
            check_header(item, header, state)
            return state["system_identifier"]
    return None
