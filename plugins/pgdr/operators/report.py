"""Report stage: the backup history page, rendered from S3 and put back beside the reports."""

from __future__ import annotations

from typing import Any

from pgdr.operators.base import PgdrBaseOperator


class HistoryPageOperator(PgdrBaseOperator):
    """Renders the backup history page (sizes and durations of backups, verification results, drill
    RTOs over time, the latest of each) from the manifests and reports in S3 and uploads it to
    ``<prefix>/reports/index.html``, server-side encrypted. See :mod:`pgdr.report`.

    :param days: how far back the page looks (templated); the newest backup of each kind is always shown
    """

    template_fields = ("days",)
    ui_color = "#eef6e8"

    def __init__(self, *, days: int | str = 90, **kwargs) -> None:
        super().__init__(**kwargs)
        self.days = days

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
        return {"key": key, "bytes": len(html), "backups": len(history.backups),
                "verifications": len(history.verifications), "drills": len(history.drills),
                "unreadable": len(history.unreadable)}
