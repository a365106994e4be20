"""pgdr's exceptions: one root, and refusals that carry what was refused as fields.

Code that reacts to another module's failure catches a class here and reads its fields; it never
parses a message. A *refusal* means nothing was changed (bad settings, a policy under the legal
floor, a restore request that cannot be met, a gap in the WAL archive); a *failure* means work was
attempted and did not finish.
"""

from __future__ import annotations


class PgdrError(Exception):
    """Root of every error pgdr raises on purpose."""


class Refused(PgdrError, ValueError):
    """Nothing was changed: the request, setting or policy cannot be carried out as given.

    ``field`` names what was refused (a form field, a setting, a policy rule) when there is one.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(message)
        self.field = field


class WalGap(Refused):
    """The WAL archive lacks a segment a recovery or a continuity check needs."""

    def __init__(self, message: str, *, segment: str, timeline: int | None = None,
                 field: str | None = None) -> None:
        super().__init__(message, field=field)
        self.segment = segment
        self.timeline = timeline
