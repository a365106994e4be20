"""The recovery figures as gauges, for StatsD or OpenTelemetry through Airflow's metrics.

Pure: :func:`gauges` turns a :class:`pgdr.report.status.Status` into (name, value, tags);
``operators/report.py`` hands each to Airflow's ``stats.gauge``, which sends it where Airflow's
``[metrics]`` section says (StatsD, Datadog, OpenTelemetry) with Airflow's ``statsd_prefix``
(default ``airflow.``) in front. Plain StatsD carries no tags, so the database (and the kind) are
part of the name as well as tags, as Airflow's own ``dagrun.duration.success.<dag_id>`` does.

    pgdr.recovery_window_seconds.<database>          the length of the recovery window (0: none)
    pgdr.backup_age_seconds.<database>.<kind>        the age of the newest good backup of that kind
    pgdr.wal_lag_seconds.<database>                  the age of the newest WAL shipped (site-loss RPO now)
    pgdr.drill_rto_seconds.<database>                the RTO the last restore drill measured
    pgdr.verification_failures.<database>            failed checks in the last verification run

A figure that does not exist is not sent (no WAL shipped, no good backup of a kind, no drill), so a
"no data" alert catches it rather than a made-up value. docs/operations.md ("Metrics") gives
alert rules.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from pgdr.report.status import Status

PREFIX = "pgdr"
_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class Gauge:
    name: str
    value: float
    tags: dict[str, str]


def name_part(text: str) -> str:
    """A database or kind as one StatsD name segment: dots (the hierarchy) and anything else unsafe to _."""
    return _UNSAFE.sub("_", text) or "_"


def gauges(status: Status) -> list[Gauge]:
    out: list[Gauge] = []
    for d in status.databases:
        db = name_part(d.database)
        tags = {"database": d.database}
        out.append(Gauge(f"{PREFIX}.recovery_window_seconds.{db}", round(d.window_seconds or 0.0, 1), tags))
        for k in d.kinds:
            if k.good_age_seconds is not None:
                out.append(Gauge(f"{PREFIX}.backup_age_seconds.{db}.{name_part(k.kind)}",
                                 round(k.good_age_seconds, 1), {**tags, "kind": k.kind}))
        if d.wal_lag_seconds is not None:
            out.append(Gauge(f"{PREFIX}.wal_lag_seconds.{db}", round(d.wal_lag_seconds, 1), tags))
        if d.drill is not None and d.drill.rto_seconds is not None:
            out.append(Gauge(f"{PREFIX}.drill_rto_seconds.{db}", round(d.drill.rto_seconds, 1), tags))
        if d.verification is not None:
            out.append(Gauge(f"{PREFIX}.verification_failures.{db}", float(d.verification_failures), tags))
    return out
