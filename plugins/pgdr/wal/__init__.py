"""Continuous WAL: one vocabulary for LSNs, segments and timelines (:mod:`pgdr.wal.names`)."""
