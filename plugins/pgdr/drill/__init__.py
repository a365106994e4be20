"""Proving restores: the drill's checks and the recovery markers."""
