"""The recovery time a drill projects for the database as it is today.

A drill restores the newest backup and measures how long that took; the database may have grown
since the backup was taken, so the time is scaled linearly by size (restore time is dominated by
bytes written and indexes built, both roughly proportional to size). Pure.
"""

from __future__ import annotations


def projected_rto_seconds(measured_seconds: float, restored_bytes: int, size_bytes: int) -> float:
    """Recovery time for a database of ``size_bytes`` at the throughput the drill measured."""
    if restored_bytes <= 0:
        return measured_seconds
    return measured_seconds * size_bytes / restored_bytes
