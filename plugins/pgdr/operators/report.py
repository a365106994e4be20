"""Report stage: the backup history page, rendered from S3 and put back beside the reports, and the
recovery gauges sent through Airflow's metrics."""

from __future__ import annotations

from typing import Any

from pgdr.operators.base import PgdrBaseOperator


def emit_gauges(gauges, log) -> int:
    """Each gauge through Airflow's stats (StatsD, Datadog or OpenTelemetry, as ``[metrics]`` says);
    returns how many were handed over. With metrics off Airflow's backend drops them."""
    from airflow.sdk.observability import stats

    for gauge in gauges:
        stats.gauge(gauge.name, gauge.value, tags=gauge.tags)
        log.info("gauge %s = %s", gauge.name, gauge.value)
    return len(gauges)


class HistoryPageOperator(PgdrBaseOperator):
    """Renders the backup history page (sizes and durations of backups, verification results, drill
    RTOs over time, the latest of each) from the manifests and reports in S3 and uploads it to
    ``<prefix>/reports/index.html``, server-side encrypted; then sends the recovery gauges
    (:mod:`pgdr.report.metrics`: recovery window, newest good backup's age per kind, WAL lag, the
    last drill's RTO, verification failures) from the same reading. See :mod:`pgdr.report`.

    :param days: how far back the page looks (templated); the newest backup of each kind is always shown
    :param metrics: also send the gauges (the page is uploaded first either way)
    """

    template_fields = ("days",)
    ui_color = "#eef6e8"

    def __init__(self, *, days: int | str = 90, metrics: bool = True, **kwargs) -> None:
        super().__init__(**kwargs)
        self.days = days
        self.metrics = metrics

    def execute(self, context) -> dict[str, Any]:
        from pgdr.report.history import HistoryError, collect, publish
        from pgdr.report.history_page import render_page

        try:
            days = int(self.days)
        except (TypeError, ValueError):
            raise HistoryError(f"days must be a whole number, got {self.days!r}", field="days") from None
        settings = self.settings
        history = collect(self.store, databases=settings.databases,
                          rto_budget_seconds=settings.rto_budget_minutes * 60, days=days, log=self.log)
        html = render_page(history)
        key = publish(self.store, html)
        self.log.info("backup history page: s3://%s/%s (%d bytes; %d backups, %d verification runs, %d drills)",
                      self.store.bucket, key, len(html), len(history.backups), len(history.verifications),
                      len(history.drills))
        if history.unreadable:
            self.log.warning("%d document(s) could not be read and are listed on the page as not shown",
                             len(history.unreadable))
        outcome = {"key": key, "bytes": len(html), "backups": len(history.backups),
                   "verifications": len(history.verifications), "drills": len(history.drills),
                   "unreadable": len(history.unreadable)}
        if self.metrics:
            from pgdr.report.metrics import gauges
            from pgdr.report.status import collect_status

            status, _ = collect_status(self.store, databases=settings.databases,
                                       rto_budget_seconds=settings.rto_budget_minutes * 60,
                                       physical=settings.physical_backups, log=self.log, history=history)
            outcome["gauges"] = emit_gauges(gauges(status), self.log)
        return outcome
