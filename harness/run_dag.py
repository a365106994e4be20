"""Run one DAG with dag.test() in this process and print its outcome as the last line (JSON).

Used where a test must see every byte a run writes (task logs included): run in a
child process, its stdout and stderr are captured whole. Retries are turned off
so that a failure ends the run at once instead of waiting for the retry delay.

    python -m harness.run_dag pg_backup_daily [--conf '{"k": "v"}']
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def load_dag_for_test(dag_id: str):
    """Parse dags/ and return the DAG ready for dag.test(): import errors raised, retries off."""
    from airflow.dag_processing.dagbag import DagBag

    bag = DagBag(str(REPO_ROOT / "dags"))
    if bag.import_errors:
        raise RuntimeError(f"DAG import errors: {bag.import_errors}")
    dag = bag.get_dag(dag_id)
    for task in dag.tasks:
        task.retries = 0
    return dag


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("dag_id")
    parser.add_argument("--conf", default=None)
    args = parser.parse_args()
    sys.path[:0] = [str(REPO_ROOT / "plugins"), str(REPO_ROOT)]
    dag = load_dag_for_test(args.dag_id)
    dag_run = dag.test(run_conf=json.loads(args.conf) if args.conf else None)
    sys.stdout.flush()
    print("\n" + json.dumps({"dag_id": dag_run.dag_id, "run_id": dag_run.run_id, "state": str(dag_run.state)}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
