"""pg_restore_test when its worker dies: a drill SIGKILLed mid pg_restore is healed by the next drill.
Real services; the worker is a real child process killed with SIGKILL (the harness and helpers of
tests/test_restore_faults.py); what a user checks afterwards is asserted (processes, databases,
records, the next drill's outcome).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import pytest
from test_restore_faults import PREFIX, _alive, _journals, _records, _sigkill, backed_up, faults_env

from harness.stack import BUCKET, CONN_ID, RESTORE_PASSWORD, RESTORE_ROLE, postgres_conn
from tests.support.dags import run_dag, task_states
from tests.support.paths import REPO_ROOT
from tests.support.s3 import json_records
from tests.support.waiting import wait_for

DRILL_CONN_ID = "drill_scratch"
# the backed-up stack and the clean Slack receiver of tests/test_restore_faults.py, registered here by name
pytestmark = pytest.mark.usefixtures(backed_up.__name__, faults_env.__name__)


@pytest.fixture()
def drill_server(stack, monkeypatch):
    """The drill runs on its own connection (pgdr_drill_conn_ids), and the restore connection leads
    nowhere: the heal must find the drill's server from the journal, not from the restore settings."""
    monkeypatch.setenv(f"AIRFLOW_CONN_{DRILL_CONN_ID.upper()}",
                       postgres_conn(stack.cluster, dbname="postgres", user=RESTORE_ROLE, password=RESTORE_PASSWORD))
    monkeypatch.setenv("AIRFLOW_CONN_NOWHERE", json.dumps({"conn_type": "postgres", "host": "127.0.0.1", "port": 1,
                                                           "login": "nobody", "schema": "postgres"}))
    monkeypatch.setenv("AIRFLOW_VAR_PGDR_DRILL_CONN_IDS", json.dumps({CONN_ID: DRILL_CONN_ID}))
    monkeypatch.setenv("AIRFLOW_VAR_PGDR_RESTORE_CONN_IDS", json.dumps({CONN_ID: "nowhere"}))


def _start_drill_in_child() -> subprocess.Popen:
    """pg_restore_test run in a child process (its own process group, as a worker would be)."""
    return subprocess.Popen([sys.executable, "-m", "harness.run_dag", "pg_restore_test"], cwd=REPO_ROOT,
                            env=dict(os.environ), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)


def _pg_restores_under(root: int) -> list[int]:
    """pg_restore processes started (at any depth) by process ``root``."""
    parents, names = {}, {}
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        names[int(entry)] = stat[stat.find("(") + 1:stat.rfind(")")]
        parents[int(entry)] = int(stat[stat.rfind(")") + 2:].split()[1])
    found = []
    for pid, name in names.items():
        if name != "pg_restore":
            continue
        up = parents.get(pid)
        while up and up != root and up != 1:
            up = parents.get(up)
        if up == root:
            found.append(pid)
    return found


def _drill_databases(stack) -> set[str]:
    return {name for name in stack.cluster.database_names() if name.startswith("pgdr_drill_")}


def _drill_records(stack) -> list[dict]:
    return json_records(stack.s3.client(), f"{PREFIX}/reports/drill/", suffix="")


@pytest.mark.slow
def test_a_drill_killed_mid_pg_restore_is_healed_by_the_next_drill(stack, drill_server):
    before = set(stack.cluster.database_names())
    records_before = len(_drill_records(stack))
    child = _start_drill_in_child()
    try:
        (pid,) = wait_for(lambda: _pg_restores_under(child.pid), timeout=240, what="the drill's pg_restore")
        partial = wait_for(lambda: next((n for n in _drill_databases(stack) if "_partial_" in n), None),
                           timeout=30, what="the drill's half-restored database")
        # killed at once: the journal may not name this pg_restore yet (one S3 write after its start); the heal
        # finds it by the staging directory it reads
        _sigkill(child)
    finally:
        if child.poll() is None:
            _sigkill(child)
    try:
        time.sleep(2)
        # what the kill left: a half-restored scratch database, and usually pg_restore blocked opening a FIFO
        # nobody will write (one that was reading a FIFO when its writer died gets EOF and exits on its own)
        orphaned = _alive(pid)
        assert partial in stack.cluster.database_names()

        dag_run = run_dag("pg_restore_test")
        assert str(dag_run.state) == "success", task_states(dag_run)
        # only the heal stops a pg_restore blocked opening a FIFO: without it this times out
        wait_for(lambda: not _alive(pid), timeout=20,
                 what="the orphan pg_restore to stop" if orphaned else "pg_restore to have exited")
        assert not _drill_databases(stack), "no scratch or half-restored drill database is left"
        assert set(stack.cluster.database_names()) == before
        assert _journals(stack) == []
        (healed,) = [r for r in _records(stack, "-healed.json")
                     if r["interrupted"][0]["run_id"].startswith("drill:")]
        assert healed["status"] == "healed" and healed["interrupted"][0]["left"] == []
        done = "\n".join(healed["interrupted"][0]["done"])
        assert f"dropped the half-restored database {partial}" in done
        assert any(f"interrupted restore of {CONN_ID} was cleaned up" in t for t in stack.slack.texts())
        records = _drill_records(stack)[records_before:]
        assert [r["status"] for r in records] == ["ok"], "the next drill succeeds (the killed one wrote nothing)"
        assert records[0]["target_conn_id"] == DRILL_CONN_ID
    finally:
        if _alive(pid):
            os.kill(pid, 9)
        for name in set(stack.cluster.database_names()) - before:
            stack.cluster.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        client = stack.s3.client()
        for version in client.list_object_versions(Bucket=BUCKET, Prefix=f"{PREFIX}/").get("Versions", []):
            if "/reports/restore/" in version["Key"] or "/state/restores/" in version["Key"]:
                client.delete_object(Bucket=BUCKET, Key=version["Key"], VersionId=version["VersionId"])
