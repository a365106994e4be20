"""``python -m pgdr.wal_receiver``: the WAL receiver's command, kept at the path services run it by.

The receiver is :mod:`pgdr.wal.receiver`; systemd units and the compose stack start this module.
"""

import sys

from pgdr.wal.receiver import main

if __name__ == "__main__":
    sys.exit(main())
