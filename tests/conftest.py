"""Shared fixtures: real PostgreSQL, S3 (moto server), Slack receiver, Airflow on SQLite.

Only fixtures and hooks live here; the plain helpers test files call are in tests/support/, by concern
(dags, clusters, s3, waiting, paths). Airflow reads its configuration at import, so the Airflow home is
set up here, at conftest import, before any test module imports airflow.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
from pathlib import Path

import pytest

# plugins/ for `import pgdr` (as Airflow does), the repository root for `harness` and `tests.support`
sys.path[:0] = [str(Path(__file__).resolve().parents[1] / "plugins"), str(Path(__file__).resolve().parents[1])]

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


@pytest.fixture(scope="session")
def backups(stack, airflow_db, tmp_path_factory):
    """Two runs of pg_backup_daily with file and configuration backups (tests/support/file_backups.py),
    taken once a session for test_files_backup.py, test_config_backup.py and test_restore_files.py."""
    from tests.support.file_backups import file_backups

    return file_backups(stack, tmp_path_factory)


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


@pytest.fixture(scope="module")
def cluster():
    """A throwaway PostgreSQL cluster of the test module's own, empty. A module that needs more in it
    overrides the fixture and takes this one: ``def cluster(cluster): cluster.execute(...); return cluster``."""
    from harness.pg_cluster import start_cluster

    pg = start_cluster()
    try:
        yield pg
    finally:
        pg.destroy()


@pytest.fixture()
def wal_dir():
    """An empty directory pg_receivewal (run as the server user) can write, removed afterwards."""
    from tests.support.clusters import receiver_dir

    path = receiver_dir()
    yield path
    shutil.rmtree(path, ignore_errors=True)
