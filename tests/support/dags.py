"""Running DAGs for real on the SQLite metadata database, and reading what a run left: task states
and XComs. Airflow is imported inside each function: tests/conftest.py sets Airflow's home up first."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from tests.support.paths import DAGS_DIR, REPO_ROOT


@contextmanager
def environment(values: dict[str, str]) -> Iterator[None]:
    """These variables (Airflow settings and connections) set for the block only; for module-scoped
    fixtures, which cannot take the function-scoped ``monkeypatch``."""
    with pytest.MonkeyPatch.context() as patch:
        for name, value in values.items():
            patch.setenv(name, value)
        yield


def load_dag(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(DAGS_DIR))
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag(dag_id)


def run_dag(dag_id: str, conf: dict | None = None):
    """Run a DAG for real with dag.test(); retries off so a failure ends the run at once."""
    from harness.run_dag import load_dag_for_test

    return load_dag_for_test(dag_id).test(run_conf=conf)


def run_dag_in_child(dag_id: str, conf: dict | None = None):
    """Run a DAG in a child process (output captured whole); returns (dag_run, output)."""
    from airflow.models.dagrun import DagRun
    from airflow.settings import Session

    argv = [sys.executable, "-m", "harness.run_dag", dag_id]
    if conf is not None:
        argv += ["--conf", json.dumps(conf)]
    result = subprocess.run(argv, cwd=REPO_ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=900)
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    outcome = json.loads(result.stdout.strip().splitlines()[-1])
    assert "run_id" in outcome, output[-3000:]
    dag_run = Session().query(DagRun).filter(DagRun.dag_id == dag_id, DagRun.run_id == outcome["run_id"]).one()
    return dag_run, output


def task_states(dag_run) -> dict[str, str]:
    """Each task instance's state, mapped instances as ``task_id[index]``."""
    from airflow.settings import Session

    session = Session()
    tis = dag_run.get_task_instances(session=session)
    return {(ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"): str(ti.state) for ti in tis}


def xcom_values(dag_run, task_id: str) -> list:
    """What a task returned, one value per (mapped) instance."""
    from airflow.models.xcom import XComModel as XCom
    from airflow.settings import Session

    session = Session()
    rows = session.query(XCom).filter(XCom.dag_id == dag_run.dag_id, XCom.run_id == dag_run.run_id,
                                      XCom.task_id == task_id, XCom.key == "return_value").all()
    return [XCom.deserialize_value(row) for row in rows]


def all_xcom_text(dag_run) -> str:
    """Every XCom of a run as text, for checking that no secret or row data reached XCom."""
    from airflow.models.xcom import XComModel as XCom
    from airflow.settings import Session

    rows = Session().query(XCom).filter(XCom.dag_id == dag_run.dag_id, XCom.run_id == dag_run.run_id).all()
    return "\n".join(str(row.value) for row in rows)


def run_backup_daily(env: dict[str, str]) -> list[dict]:
    """Run pg_backup_daily with ``env`` set for the run, assert that it succeeded, and return each
    database's sealed logical backup (the verify_and_seal results: backup_id, manifest_key, ...)."""
    with environment(env):
        dag_run = run_dag("pg_backup_daily")
        assert str(dag_run.state) == "success", task_states(dag_run)
        return xcom_values(dag_run, "backup.verify_and_seal")
