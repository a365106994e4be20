"""WAL stage: ship what the WAL receiver wrote to S3, every few seconds, one window per task."""

from __future__ import annotations

import threading
from typing import Any

from pgdr.operators.base import DatabaseOperator


class ShipWalOperator(DatabaseOperator):
    """Ship one protected database's WAL from ``<pgdr_wal_receiver_dir>/<conn_id>`` to
    ``<prefix>/<conn_id>/wal/`` every ``pgdr_wal_ship_seconds`` for ``pgdr_wal_archive_window_minutes``,
    then once more (:func:`pgdr.wal_archive.ship_window`).

    Returns (XCom) counts, bytes, the largest lag seen and the receiver's state. Fails without
    retrying when the receiver was not running at any moment of the window (then the primary's
    commits are not being received, so RPO = 0 does not hold), after shipping what is there.

    :param conn_id: the protected postgres connection id (templated)
    """

    ui_color = "#e3f4ea"

    def __init__(self, *, conn_id: str, **kwargs) -> None:
        super().__init__(conn_id=conn_id, **kwargs)
        self._stop: threading.Event | None = None   # made in execute: operators get deep-copied

    def execute(self, context) -> dict[str, Any]:
        from airflow.sdk.exceptions import AirflowFailException

        from pgdr.wal_archive import ship_window

        settings = self.settings
        database = self.require_protected(self.conn_id)
        directory = settings.wal_receiver_dir / database
        seconds = settings.wal_archive_window_minutes * 60
        self._stop = threading.Event()
        self.log.info("shipping WAL of %s to s3://%s/%s/%s/wal/ every %.0f s for %.0f s", database,
                      settings.s3_bucket, settings.s3_prefix, database, settings.wal_ship_seconds, seconds)
        summary = ship_window(self.store, database, directory, seconds=seconds, interval=settings.wal_ship_seconds,
                              log=self.log, stop_event=self._stop)
        self.log.info("window done: %d ships (%d failed), %d objects uploaded, %d stale partial objects "
                      "removed, largest lag %.1f s, slowest ship %.2f s", summary["ships"], summary["failed_ships"],
                      summary["uploaded"], summary["deleted"], summary["max_lag_seconds"],
                      summary["max_ship_seconds"])
        if summary["receiver_healthy_checks"] == 0:
            raise AirflowFailException(
                f"the WAL receiver of {database} was not running during this window ({summary['receiver']}); "
                f"WAL already received was shipped, but new commits are not being received: RPO = 0 does not "
                f"hold. Start it: python -m pgdr.wal_receiver --directory <pgdr_wal_receiver_dir>/{database} "
                f"--slot {settings.replication_slot} --synchronous (see the pg_wal_archive DAG docs)")
        return summary

    def on_kill(self) -> None:
        if self._stop is not None:
            self._stop.set()
