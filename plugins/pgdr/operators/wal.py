"""WAL stage: ship what the WAL receiver wrote to S3, every few seconds, one window per task."""

from __future__ import annotations

import threading
from typing import Any

from pgdr.operators.base import DatabaseOperator


def _alerted_failure(message: str) -> Exception:
    """A task failure whose alert was already posted once (pgdr.alerts.wal.AlertWatch): the generic
    failure alert stays silent, so an outage lasting many windows is not announced every window."""
    from airflow.sdk.exceptions import AirflowFailException

    from pgdr.alerts.slack import AlreadyAlerted

    class WalProblemAlreadyAlerted(AlreadyAlerted, AirflowFailException):
        pass

    return WalProblemAlreadyAlerted(message)


class ShipWalOperator(DatabaseOperator):
    """Ship one protected database's WAL from ``<pgdr_wal_receiver_dir>/<conn_id>`` to
    ``<prefix>/<conn_id>/wal/`` every ``pgdr_wal_ship_seconds`` for ``pgdr_wal_archive_window_minutes``,
    then once more (:func:`pgdr.wal.ship.ship_window`).

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

        from pgdr.alerts import wal as wal_alerts
        from pgdr.alerts.slack import send_alert
        from pgdr.wal.ship import ShippingFailed, ship_window

        settings = self.settings
        database = self.require_protected(self.conn_id)
        directory = settings.wal_receiver_dir / database
        seconds = settings.wal_archive_window_minutes * 60
        self._stop = threading.Event()
        self.log.info("shipping WAL of %s to s3://%s/%s/%s/wal/<system identifier>/ every %.0f s for %.0f s",
                      database, settings.s3_bucket, settings.s3_prefix, database, settings.wal_ship_seconds, seconds)
        try:
            summary = ship_window(
                self.store, database, directory, seconds=seconds, interval=settings.wal_ship_seconds, log=self.log,
                stop_event=self._stop, notify=send_alert, messages=wal_alerts, probe=self._primary_probe(database),
                slot=settings.replication_slot, keep_segments=settings.wal_receiver_keep_segments,
                min_free_bytes=settings.wal_receiver_min_free_mb << 20,
                alert_after_seconds=settings.wal_receiver_alert_seconds,
                reminder_hours=settings.alert_reminder_hours)
        except ShippingFailed as err:
            if err.alerted:   # the outage alert went out once; no second, generic one per retry
                raise _alerted_failure(str(err)) from err
            raise
        self.log.info("window done: %d ships (%d failed), %d objects uploaded, %d stale partial objects "
                      "removed, %d shipped segments pruned locally, largest lag %.1f s, slowest ship %.2f s",
                      summary["ships"], summary["failed_ships"], summary["uploaded"], summary["deleted"],
                      summary["pruned"], summary["max_lag_seconds"], summary["max_ship_seconds"])
        if summary["receiver_healthy_checks"] == 0:
            message = (f"the WAL receiver of {database} was not running during this window ({summary['receiver']}); "
                       f"WAL already received was shipped, but new commits are not being received: RPO = 0 does "
                       f"not hold. Start it: python -m pgdr.wal_receiver --directory "
                       f"<pgdr_wal_receiver_dir>/{database} --slot {settings.replication_slot} --synchronous "
                       f"(see the pg_wal_archive DAG docs)")
            if "receiver" in summary["alerting"]:
                raise _alerted_failure(message)   # posted once when it started; reminders follow the policy
            raise AirflowFailException(message)
        return summary

    def _primary_probe(self, database: str):
        """How the primary sees the receiver, asked on every pass (pgdr.verify.wal.server_findings)."""
        from contextlib import closing

        from airflow.providers.postgres.hooks.postgres import PostgresHook

        from pgdr.verify.wal import server_findings

        slot = self.settings.replication_slot

        def probe() -> list[dict]:
            with closing(PostgresHook(postgres_conn_id=database).get_conn()) as conn:
                conn.autocommit = True
                return server_findings(conn, slot)
        return probe

    def on_kill(self) -> None:
        if self._stop is not None:
            self._stop.set()
