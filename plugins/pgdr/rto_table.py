"""``python -m pgdr.rto_table`` (``make rto-table``), kept at its old path.

The table is built by :mod:`pgdr.report.rto_table`.
"""

import sys

from pgdr.report.rto_table import main

if __name__ == "__main__":
    sys.exit(main())
