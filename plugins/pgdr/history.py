"""Where the backup history page used to live; it is now the :mod:`pgdr.report` package.

Kept so ``python -m pgdr.history`` (``make report``) and code importing ``pgdr.history`` keep
working: the history's points, ``collect`` and ``publish`` are :mod:`pgdr.report.history`, the
charts' geometry :mod:`pgdr.report.charts`, the page and its command line
:mod:`pgdr.report.history_page`. New code imports from those.

    PYTHONPATH=plugins python -m pgdr.history --out report.html [--upload] [--days 90]
"""

from __future__ import annotations

import sys

from pgdr.report.history import (
    CHECK_ORDER,
    DEFAULT_DAYS,
    MAX_DAYS,
    MISSING,
    BackupPoint,
    DrillPoint,
    History,
    HistoryError,
    RestorePoint,
    VerifyPoint,
    as_number,
    backup_point,
    collect,
    drill_point,
    format_duration,
    format_size,
    format_time,
    page_key,
    parse_time,
    publish,
    report_time,
    restore_point,
    verify_point,
)
from pgdr.report.history_page import PAGE_NAME, main, render_page

__all__ = [
    "CHECK_ORDER",
    "DEFAULT_DAYS",
    "MAX_DAYS",
    "MISSING",
    "PAGE_NAME",
    "BackupPoint",
    "DrillPoint",
    "History",
    "HistoryError",
    "RestorePoint",
    "VerifyPoint",
    "as_number",
    "backup_point",
    "collect",
    "drill_point",
    "format_duration",
    "format_size",
    "format_time",
    "page_key",
    "parse_time",
    "publish",
    "report_time",
    "restore_point",
    "verify_point",
    "main",
    "render_page",
]

if __name__ == "__main__":
    sys.exit(main())
