"""The recovery gauges reach StatsD through Airflow's own metrics, as Airflow is configured.

A real UDP socket in the test is the StatsD server; Airflow's ``[metrics]`` settings
(AIRFLOW__METRICS__STATSD_ON, _HOST, _PORT, _PREFIX) point at it. Two logical backups and a restore
drill are taken for real, then pg_backup_verify runs in a child process (its own Airflow
configuration, as a worker has it): its ``history_page`` task sends the gauges, and their lines and
values are read off the socket and compared with the manifests and the drill's record in S3.
"""

from __future__ import annotations

import json
import os
import socket
import time
from datetime import datetime, timezone

import pytest

from harness.stack import CONN_ID
from pgdr.report.history import parse_time
from tests.support.dags import environment, run_dag, run_dag_in_child, task_states
from tests.support.s3 import json_records

pytestmark = pytest.mark.slow   # three DAG runs and a verify in a child: over a minute

PREFIX = "airflow"


class StatsdServer:
    """A StatsD server as far as the test needs one: every datagram kept, parsed into (name, value, type)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.5)
        self.lines: list[str] = []

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def drain(self, until: float = 2.0) -> list[str]:
        deadline = time.monotonic() + until
        while time.monotonic() < deadline:
            try:
                data = self.sock.recv(65535)
            except TimeoutError:
                continue
            self.lines += data.decode().splitlines()
        return self.lines

    def gauges(self, prefix: str) -> dict[str, float]:
        found = {}
        for line in self.lines:
            name, _, rest = line.partition(":")
            value, _, kind = rest.partition("|")
            if kind == "g" and name.startswith(prefix):
                found[name] = float(value)
        return found

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def statsd():
    server = StatsdServer()
    yield server
    server.close()


@pytest.fixture(scope="module")
def verified(stack, airflow_db, statsd, tmp_path_factory):
    """Two logical backups and a drill, then pg_backup_verify in a child with StatsD on."""
    work = tmp_path_factory.mktemp("metrics")
    prefix = f"metrics/{os.urandom(4).hex()}"
    env = stack.airflow_env()
    env.update({"AIRFLOW_VAR_PGDR_STAGING_DIR": str(work / "staging"), "AIRFLOW_VAR_PGDR_S3_PREFIX": prefix})
    with environment(env):
        for dag_id in ("pg_backup_daily", "pg_backup_daily", "pg_restore_test"):
            dag_run = run_dag(dag_id)
            assert str(dag_run.state) == "success", (dag_id, task_states(dag_run))
    statsd_env = {**env, "AIRFLOW__METRICS__STATSD_ON": "True", "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
                  "AIRFLOW__METRICS__STATSD_PORT": str(statsd.port), "AIRFLOW__METRICS__STATSD_PREFIX": PREFIX}
    with environment(statsd_env):
        started = datetime.now(timezone.utc)
        dag_run, output = run_dag_in_child("pg_backup_verify")
        finished = datetime.now(timezone.utc)
    states = task_states(dag_run)
    assert str(dag_run.state) == "success" and states["history_page"] == "success", (states, output[-3000:])
    statsd.drain()
    client = stack.s3.client()
    manifests = json_records(client, f"{prefix}/{CONN_ID}/logical/", suffix="manifest.json")
    drills = json_records(client, f"{prefix}/reports/drill/")
    return {"manifests": sorted(manifests, key=lambda m: m["backup_id"]), "drills": drills, "started": started,
            "finished": finished, "gauges": statsd.gauges(f"{PREFIX}.pgdr.")}


def test_every_recovery_gauge_arrives_with_its_value(verified):
    gauges = verified["gauges"]
    first, newest = verified["manifests"]
    (drill,) = verified["drills"]
    db = CONN_ID
    names = {f"recovery_window_seconds.{db}", f"backup_age_seconds.{db}.logical", f"drill_rto_seconds.{db}",
             f"verification_failures.{db}"}
    assert set(gauges) == {f"{PREFIX}.pgdr.{name}" for name in names}, gauges
    # two verified logical backups: the window runs from the first snapshot to the newest
    window = (parse_time(newest["started_at"]) - parse_time(first["started_at"])).total_seconds()
    assert window > 0 and gauges[f"{PREFIX}.pgdr.recovery_window_seconds.{db}"] == pytest.approx(window, abs=0.05)
    # the newest backup's age when the history_page task read it: within the verify run
    age = gauges[f"{PREFIX}.pgdr.backup_age_seconds.{db}.logical"]
    finished_at = parse_time(newest["finished_at"])
    assert (verified["started"] - finished_at).total_seconds() - 1 <= age <= \
        (verified["finished"] - finished_at).total_seconds() + 1
    assert gauges[f"{PREFIX}.pgdr.drill_rto_seconds.{db}"] == pytest.approx(round(drill["rto_seconds"], 1))
    assert gauges[f"{PREFIX}.pgdr.verification_failures.{db}"] == 0


def test_physical_backups_off_sends_no_wal_lag(verified):
    # no WAL is shipped with physical backups off: a made-up lag would hide that; "no data" alerts instead
    assert not any(".wal_lag_seconds." in name for name in verified["gauges"])
    assert json.dumps(verified["gauges"])  # the values are plain numbers
