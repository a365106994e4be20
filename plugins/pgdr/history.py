"""``python -m pgdr.history`` (``make report``): the backup history page's command, kept at its old path.

The history is :mod:`pgdr.report.history` (points, ``collect``, ``publish``), the charts
:mod:`pgdr.report.charts`, the page and this command :mod:`pgdr.report.history_page`.

    PYTHONPATH=plugins python -m pgdr.history --out report.html [--upload] [--days 90]
"""

import sys

from pgdr.report.history_page import main

if __name__ == "__main__":
    sys.exit(main())
