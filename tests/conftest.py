"""Shared fixtures: real PostgreSQL, S3 (moto server), Slack receiver, Airflow on SQLite.

Airflow reads its configuration at import, so the Airflow home is set up here,
at conftest import, before any test module imports airflow.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT / "plugins"), str(REPO_ROOT)]

from harness import airflow_env  # noqa: E402

_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="pgdr-airflow-"))
airflow_env.apply(_AIRFLOW_HOME)
# A setting left in the developer's shell must not leak into a test.
for _name in list(os.environ):
    if _name.startswith(("AIRFLOW_VAR_PGDR_", "AIRFLOW_CONN_")):
        del os.environ[_name]

SCALE = float(os.environ.get("PGDR_TEST_SCALE", "0.05"))


def pytest_sessionfinish(session, exitstatus):
    shutil.rmtree(_AIRFLOW_HOME, ignore_errors=True)


@pytest.fixture(scope="session")
def airflow_db():
    """The SQLite metadata database, migrated once per session."""
    airflow_env.migrate()
    return _AIRFLOW_HOME


@pytest.fixture(scope="session")
def stack(tmp_path_factory):
    """PostgreSQL with a synthetic care-commons database, S3 and a Slack receiver."""
    from harness.stack import start_stack

    services = start_stack(scale=SCALE, staging_dir=tmp_path_factory.mktemp("staging"))
    yield services
    services.stop()


@pytest.fixture()
def pgdr_env(stack, monkeypatch, tmp_path):
    """Point pgdr at the stack for one test, with its own staging dir and S3 prefix."""
    stack.slack.clear()
    env = stack.airflow_env()
    env["AIRFLOW_VAR_PGDR_STAGING_DIR"] = str(tmp_path / "staging")
    env["AIRFLOW_VAR_PGDR_S3_PREFIX"] = f"t/{os.urandom(4).hex()}"
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    return env


def load_dag(dag_id: str):
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(REPO_ROOT / "dags"))
    assert not bag.import_errors, bag.import_errors
    return bag.get_dag(dag_id)


def wait_for(predicate, timeout: float = 30.0, what: str = "condition"):
    """Poll ``predicate`` every 0.1 s until it returns something true; that value is returned."""
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


def run_dag(dag_id: str, conf: dict | None = None):
    """Run a DAG for real with dag.test(); retries off so a failure ends the run at once."""
    from harness.run_dag import load_dag_for_test

    return load_dag_for_test(dag_id).test(run_conf=conf)


def run_dag_in_child(dag_id: str, conf: dict | None = None):
    """Run a DAG in a child process (output captured whole); returns (dag_run, output)."""
    import json
    import subprocess

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
    from airflow.settings import Session

    session = Session()
    tis = dag_run.get_task_instances(session=session)
    return {(ti.task_id if ti.map_index < 0 else f"{ti.task_id}[{ti.map_index}]"): str(ti.state) for ti in tis}


def xcom_values(dag_run, task_id: str) -> list:
    from airflow.models.xcom import XComModel as XCom
    from airflow.settings import Session

    session = Session()
    rows = session.query(XCom).filter(XCom.dag_id == dag_run.dag_id, XCom.run_id == dag_run.run_id,
                                      XCom.task_id == task_id, XCom.key == "return_value").all()
    return [XCom.deserialize_value(row) for row in rows]


def all_xcom_text(dag_run) -> str:
    from airflow.models.xcom import XComModel as XCom
    from airflow.settings import Session

    rows = Session().query(XCom).filter(XCom.dag_id == dag_run.dag_id, XCom.run_id == dag_run.run_id).all()
    return "\n".join(str(row.value) for row in rows)


def argv_recording_bindir(directory: Path, record: Path) -> Path:
    """A bindir whose pg_* tools record their argv, then exec the real tool."""
    from harness.pg_cluster import pg_bindir

    directory.mkdir(parents=True, exist_ok=True)
    for tool in ("pg_dump", "pg_dumpall", "pg_restore", "psql", "pg_basebackup", "pg_verifybackup"):
        script = directory / tool
        script.write_text(f'#!/bin/sh\necho "{tool} $*" >> "{record}"\nexec "{pg_bindir()}/{tool}" "$@"\n')
        script.chmod(0o755)
    return directory


def download_backup(client, bucket: str, manifest: dict, target: Path) -> Path:
    """Fetch a backup with a plain S3 client, check each object's sha256, unpack the zstd files."""
    import hashlib

    import zstandard

    prefix = manifest["objects"][0]["key"][: -len(manifest["objects"][0]["name"])]
    for obj in manifest["objects"]:
        assert obj["key"] == prefix + obj["name"]
        path = target / obj["name"]
        path.parent.mkdir(parents=True, exist_ok=True)
        body = client.get_object(Bucket=bucket, Key=obj["key"])["Body"].read()
        assert hashlib.sha256(body).hexdigest() == obj["sha256"], obj["key"]
        if path.suffix == ".zst":
            path.with_suffix("").write_bytes(zstandard.ZstdDecompressor().decompressobj().decompress(body))
        else:
            path.write_bytes(body)
    return target


def restore_by_hand(cluster, files: Path, jobs: int = 2) -> None:
    """The runbook's manual restore with the bare tools: globals first, then pg_restore --create."""
    import subprocess

    from harness.pg_cluster import pg_bindir

    env = cluster.tool_env()
    # "role postgres already exists" is expected and harmless, so no ON_ERROR_STOP here
    subprocess.run([str(pg_bindir() / "psql"), "-X", "-q", "-d", "postgres", "-f", str(files / "globals.sql")],
                   env=env, check=True, capture_output=True)
    subprocess.run([str(pg_bindir() / "pg_restore"), "--create", "--exit-on-error", f"--jobs={jobs}",
                    "-d", "postgres", str(files / "dump")], env=env, check=True, capture_output=True)
