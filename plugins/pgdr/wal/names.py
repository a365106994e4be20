"""WAL names and positions, written once (cf. barman's ``xlog.py``): LSNs, segment file names, timeline
history files, and the arithmetic between them.

A segment's name is ``<timeline><log><seg>`` (8 hex digits each): ``log`` counts 4 GiB of WAL and
``seg`` the segments within it, so how a name maps to an LSN depends on the cluster's segment size
(``initdb --wal-segsize``: a power of two from 1 MiB to 1 GiB, 16 MiB by default). Every function that
converts between names, segment numbers and LSNs therefore takes ``segment_size``, and has no default:
the size comes from the cluster (a base backup's manifest records it as ``wal.wal_segment_size``, each
segment's long page header carries it); :data:`DEFAULT_SEGMENT_SIZE` is only for records written before
it was kept. Comparing two names needs no size: :func:`segment_position` orders them.

All pure.
"""

from __future__ import annotations

import re

from pgdr.store.layout import wal_root

DEFAULT_SEGMENT_SIZE = 16 * 1024 * 1024   # PostgreSQL's default wal_segment_size
MIN_SEGMENT_SIZE = 1 << 20
MAX_SEGMENT_SIZE = 1 << 30
_LOG_SIZE = 0x100000000                   # one "log" (the middle 8 hex digits) is 4 GiB of WAL

_LSN = re.compile(r"^([0-9A-Fa-f]{1,8})/([0-9A-Fa-f]{1,8})$")
_SEGMENT = re.compile(r"^[0-9A-F]{24}$")
_PARTIAL = re.compile(r"^([0-9A-F]{24})\.partial$")
_HISTORY = re.compile(r"^([0-9A-F]{8})\.history$")


# ---------------------------------------------------------------- LSNs

def is_lsn(text: str) -> bool:
    """Whether ``text`` is an LSN as PostgreSQL prints it (``16/B374D848``)."""
    return bool(_LSN.match(str(text).strip()))


def parse_lsn(lsn: str | int) -> int:
    """``'16/B374D848'`` (pg_lsn text) -> int; ints (0 .. 2**64-1) pass through."""
    if isinstance(lsn, int):
        if lsn < 0 or lsn > 0xFFFFFFFFFFFFFFFF:
            raise ValueError(f"LSN out of range: {lsn}")
        return lsn
    match = _LSN.match(str(lsn).strip())
    if not match:
        raise ValueError(f"not an LSN (expected like '16/B374D848'): {lsn!r}")
    return (int(match.group(1), 16) << 32) | int(match.group(2), 16)


def format_lsn(value: int) -> str:
    """int -> ``'16/B374D848'``, the form PostgreSQL prints and reads."""
    return f"{value >> 32:X}/{value & 0xFFFFFFFF:X}"


# ---------------------------------------------------------------- segment size

def check_segment_size(segment_size: int) -> int:
    """``segment_size`` when PostgreSQL could have it (a power of two, 1 MiB .. 1 GiB), else ValueError."""
    if (not isinstance(segment_size, int) or segment_size < MIN_SEGMENT_SIZE or segment_size > MAX_SEGMENT_SIZE
            or segment_size & (segment_size - 1)):
        raise ValueError(f"WAL segment size must be a power of two between 1 MiB and 1 GiB, got {segment_size!r}")
    return segment_size


def segment_size_of(wal: dict | None) -> int:
    """The segment size a base backup's ``wal`` facts record; the default for records older than that field."""
    size = (wal or {}).get("wal_segment_size")
    return check_segment_size(int(size)) if size else DEFAULT_SEGMENT_SIZE


def segments_per_log(segment_size: int) -> int:
    """Segments per 4 GiB "log" (the middle 8 hex digits of a segment name)."""
    return _LOG_SIZE // check_segment_size(segment_size)


# ---------------------------------------------------------------- segment names

def parse_segment(name: str) -> tuple[int, int, int]:
    """``000000010000000A000000FF`` -> (timeline, log, seg) = (1, 10, 255)."""
    if not _SEGMENT.match(name):
        raise ValueError(f"not a WAL segment name (24 upper-case hex digits): {name!r}")
    return int(name[0:8], 16), int(name[8:16], 16), int(name[16:24], 16)


def segment_name(timeline: int, log: int, seg: int) -> str:
    """(timeline, log, seg) -> the 24-hex-digit file name (PostgreSQL's XLogFileName)."""
    if not 1 <= timeline <= 0xFFFFFFFF or not 0 <= log <= 0xFFFFFFFF or not 0 <= seg <= 0xFFFFFFFF:
        raise ValueError(f"timeline/log/seg out of range: {timeline}, {log}, {seg}")
    return f"{timeline:08X}{log:08X}{seg:08X}"


def timeline_of(name: str) -> int:
    """The timeline of a segment name (or of ``<segment>.partial``)."""
    return parse_segment(segment_of_partial(name) if name.endswith(".partial") else name)[0]


def segment_position(name: str) -> tuple[int, int]:
    """(log, seg): orders segment names in WAL order, whatever the segment size and timeline."""
    _, log, seg = parse_segment(name)
    return log, seg


def segment_number(name: str, segment_size: int) -> int:
    """The segment's number on its timeline: its start LSN divided by the segment size (XLogFromFileName)."""
    _, log, seg = parse_segment(name)
    per_log = segments_per_log(segment_size)
    if seg >= per_log:
        raise ValueError(f"{name}: segment part {seg:#x} is beyond {per_log - 1:#x} for {segment_size}-byte segments")
    return log * per_log + seg


def segment_from_number(timeline: int, number: int, segment_size: int) -> str:
    """The name of segment ``number`` on ``timeline`` (XLogFileName from a segment number)."""
    if number < 0:
        raise ValueError(f"segment number out of range: {number}")
    per_log = segments_per_log(segment_size)
    return segment_name(timeline, number // per_log, number % per_log)


def next_segment(name: str, segment_size: int) -> str:
    """The segment after ``name`` on the same timeline."""
    return segment_from_number(timeline_of(name), segment_number(name, segment_size) + 1, segment_size)


def segment_for_lsn(lsn: str | int, timeline: int, segment_size: int) -> str:
    """The segment holding the byte at ``lsn`` (XLByteToSeg + XLogFileName). ``pg_walfile_name`` differs
    exactly on a boundary, where it names the previous segment, the one that ends there."""
    return segment_from_number(timeline, parse_lsn(lsn) // check_segment_size(segment_size), segment_size)


def segment_start_lsn(name: str, segment_size: int) -> int:
    """The LSN of a segment's first byte."""
    return segment_number(name, segment_size) * segment_size


def lsn_segment_number(lsn: str | int, segment_size: int) -> int:
    """The number of the segment holding the byte at ``lsn``."""
    return parse_lsn(lsn) // check_segment_size(segment_size)


# ---------------------------------------------------------------- partials and history files

def partial_name(segment: str) -> str:
    parse_segment(segment)
    return segment + ".partial"


def segment_of_partial(name: str) -> str:
    """``<segment>.partial`` -> ``<segment>``."""
    match = _PARTIAL.match(name)
    if not match:
        raise ValueError(f"not a partial WAL segment name: {name!r}")
    return match.group(1)


def history_name(timeline: int) -> str:
    """The history file a timeline starts with: ``00000002.history``."""
    if not 1 <= timeline <= 0xFFFFFFFF:
        raise ValueError(f"timeline out of range: {timeline}")
    return f"{timeline:08X}.history"


def history_timeline(name: str) -> int:
    """``00000002.history`` -> 2."""
    match = _HISTORY.match(name)
    if not match:
        raise ValueError(f"not a timeline history file name: {name!r}")
    return int(match.group(1), 16)


def classify(name: str) -> str | None:
    """'segment', 'partial', 'history' or None for any other file name."""
    if _SEGMENT.match(name):
        return "segment"
    if _PARTIAL.match(name):
        return "partial"
    if _HISTORY.match(name):
        return "history"
    return None


def is_segment(name: str) -> bool:
    return bool(_SEGMENT.match(name))


def is_history(name: str) -> bool:
    return bool(_HISTORY.match(name))


def parse_history(text: str) -> list[tuple[int, int]]:
    """``<parent tli> <switch LSN> <reason>`` lines of a timeline history file -> [(parent tli, switch LSN)]."""
    entries = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) < 2 or not fields[0].isdigit() or not _LSN.match(fields[1]):
            raise ValueError(f"not a timeline history line: {line[:80]!r}")
        entries.append((int(fields[0]), parse_lsn(fields[1])))
    return entries


# ---------------------------------------------------------------- where WAL lives in the store

_SYSTEM_IDENTIFIER = re.compile(r"^[0-9]{1,20}$")


def wal_prefix(prefix: str, database: str, system_identifier: str | int | None = None) -> str:
    """``<prefix>/<database>/wal/<system_identifier>``: WAL of one database cluster.

    Keyed by the cluster's system identifier (``pg_control_system().system_identifier``, decimal) so
    that a cluster rebuilt after a site loss, which restarts the same segment names, never
    overwrites or mixes with the WAL of the lost one. ``None`` is the legacy layout directly under
    ``<prefix>/<database>/wal`` (WAL shipped before the keyed layout; read only, never written).
    """
    if system_identifier is None:
        return wal_root(prefix, database)
    text = str(system_identifier)
    if not _SYSTEM_IDENTIFIER.match(text) or int(text) > 0xFFFFFFFFFFFFFFFF:
        raise ValueError(f"not a database system identifier (a decimal 64-bit number): {system_identifier!r}")
    return f"{wal_root(prefix, database)}/{text}"


def wal_key(prefix: str, database: str, name: str, system_identifier: str | int | None = None) -> str:
    """``<prefix>/<database>/wal/<system_identifier>/<name>.zst`` for a segment, ``<segment>.partial``
    or ``<tli>.history`` (without the identifier part for the legacy layout, see :func:`wal_prefix`)."""
    if classify(name) is None:
        raise ValueError(f"not a WAL file name: {name!r}")
    return f"{wal_prefix(prefix, database, system_identifier)}/{name}.zst"


__all__ = ["DEFAULT_SEGMENT_SIZE", "MAX_SEGMENT_SIZE", "MIN_SEGMENT_SIZE", "check_segment_size", "classify",
           "format_lsn", "history_name", "history_timeline", "is_history", "is_lsn", "is_segment",
           "lsn_segment_number", "next_segment", "parse_history", "parse_lsn", "parse_segment", "partial_name",
           "segment_for_lsn", "segment_from_number", "segment_name", "segment_number", "segment_of_partial",
           "segment_position", "segment_size_of", "segment_start_lsn", "segments_per_log", "timeline_of", "wal_key",
           "wal_prefix"]
