"""An Airflow home on SQLite for tests and the demo, with connections from AIRFLOW_CONN_*.

Airflow reads its configuration when first imported, so :func:`airflow_environ`
must be applied to ``os.environ`` before anything imports ``airflow``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def airflow_environ(home: Path) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    plugins = REPO_ROOT / "plugins"
    pythonpath = os.pathsep.join(
        p for p in [str(plugins), str(REPO_ROOT), os.environ.get("PYTHONPATH", "")] if p
    )
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO_ROOT / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(plugins),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home}/airflow.db",
        "AIRFLOW__CORE__EXECUTOR": "LocalExecutor",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__API__BASE_URL": "http://localhost:8080",
        "PYTHONPATH": pythonpath,
    }


def apply(home: Path) -> dict[str, str]:
    env = airflow_environ(home)
    os.environ.update(env)
    for path in (str(REPO_ROOT / "plugins"), str(REPO_ROOT)):
        if path not in sys.path:
            sys.path.insert(0, path)
    return env


def migrate() -> None:
    """Create the metadata database (once per test session or demo)."""
    result = subprocess.run(
        [sys.executable, "-m", "airflow", "db", "migrate"],
        capture_output=True, text=True, env=dict(os.environ),
    )
    if result.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}")
