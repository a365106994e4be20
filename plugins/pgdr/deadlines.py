"""The deadline callback's old import path.

DAGs serialized before the move name ``pgdr.deadlines.deadline_missed``; the triggerer imports that
path when a deadline fires, so it stays. The code is :mod:`pgdr.alerts.deadlines`.
"""

from pgdr.alerts.deadlines import DeadlineDAG, deadline_alert, deadline_missed

__all__ = ["DeadlineDAG", "deadline_alert", "deadline_missed"]
