"""Units people read: moments written the one way pgdr's records write them."""

from __future__ import annotations

from datetime import datetime, timezone


def iso_utc(when: datetime | None) -> str | None:
    """``2026-12-06T08:00:00+00:00``: UTC, to the second; None stays None."""
    return when.astimezone(timezone.utc).isoformat(timespec="seconds") if when else None
