"""Continuous WAL, from the primary to S3 and back to a recovery.

* :mod:`~pgdr.wal.names`: the one vocabulary: LSNs, segment and history file names, their keys in the store.
* :mod:`~pgdr.wal.receiver`: ``pg_receivewal`` kept running (``python -m pgdr.wal_receiver``); it connects
  through :mod:`~pgdr.wal.conninfo` and ``--check`` is :mod:`~pgdr.wal.primary_check`.
* :mod:`~pgdr.wal.local`: the receiver's directory: the files in it, what was shipped, what may be pruned.
* :mod:`~pgdr.wal.segment_header`: whose WAL a segment is (timeline, system identifier, segment size).
* :mod:`~pgdr.wal.gaps`: WAL the receiver could no longer get (a lost slot): set aside, recorded, copied to S3.
* :mod:`~pgdr.wal.ship`: shipping to S3, once or for a window; :mod:`~pgdr.wal.status`: the receiver's health.
* :mod:`~pgdr.wal.archive`: the archive's continuity: a gap is a :class:`pgdr.errors.WalGap`.

Alerts about all of this are built a layer up, in :mod:`pgdr.alerts.wal`.
"""
