"""Mechanics with no backup meaning: PostgreSQL tools, compression, checksums, envelopes, units.

Nothing here imports another pgdr sub-package."""
