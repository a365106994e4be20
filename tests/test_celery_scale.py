"""pgdr scaled out on the CeleryExecutor: a worker dies in the middle of a pg_dump, another one finishes.

Airflow runs as a team scales it out (harness/celery_stack.py): the api-server, scheduler,
dag-processor and triggerer on a PostgreSQL 15 metadata database, a Redis broker, and two Celery
workers that share nothing local: each its own process group, home, task logs, staging directory
and host name. Three protected databases are mapped across them by pg_backup_daily. One database
has a table held under an ACCESS EXCLUSIVE lock, so its pg_dump waits on the server; the worker
running that pg_dump (found by the pg_dump process behind the waiting backend) is killed with
SIGKILL, everything it runs at once, as a machine dies. The scheduler notices the missing
heartbeats, the task is retried, necessarily on the other worker, and the run ends with every
backup sealed in S3; pg_backup_verify's integrity check passes on all three. The dead worker's
staging directory is left exactly as the kill left it: the retry takes a new backup from the
database, never a file of the dead worker. Where the machine allows it (root, ``ip netns``) each
worker also has a network namespace of its own and reaches only the services it is given.

The retry delay is cut to a few seconds by a cluster policy and the heartbeat timeout to 20 s
(harness/celery_stack.py), so the test fits its budget; the DAGs are the shipped ones.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
from dataclasses import dataclass

import pytest

from harness.airflow_services import ApiClient, trigger, wait_for_dags
from harness.celery_stack import CeleryStack, CeleryWorker, redis_server, start_celery_stack
from harness.stack import BUCKET, CONN_ID, DBNAME, postgres_conn
from harness.synthetic import create_care_commons, fingerprint

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(redis_server() is None,
                       reason="redis-server is not installed (Debian package redis-server): the Celery broker"),
]

# conn id -> database; the stack's care_commons plus two more in the same cluster
DATABASES = {CONN_ID: DBNAME, "clinic_north_db": "clinic_north", "clinic_south_db": "clinic_south"}
LOCKED_CONN, LOCKED_DB, LOCKED_TABLE = "clinic_north_db", "clinic_north", "public.visits"
WORKERS = ("worker-a", "worker-b")
RUN_TIMEOUT = 420  # a loaded 2-core machine; on an idle one the run ends in about a minute


@dataclass
class Deployment:
    celery: CeleryStack
    api: ApiClient
    prefix: str


@pytest.fixture(scope="module")
def deployment(stack, tmp_path_factory):
    for dbname in DATABASES.values():
        if dbname not in stack.cluster.database_names():
            create_care_commons(stack.cluster, dbname=dbname, scale=0.02, seed=len(dbname))
    home = tmp_path_factory.mktemp("celery-scale")
    prefix = f"celery/{os.urandom(4).hex()}"
    env = stack.airflow_env()
    env.update({f"AIRFLOW_CONN_{conn_id.upper()}": postgres_conn(stack.cluster, dbname=dbname)
                for conn_id, dbname in DATABASES.items()})
    env.update({"AIRFLOW_VAR_PGDR_DATABASES": json.dumps(list(DATABASES)),
                "AIRFLOW_VAR_PGDR_S3_PREFIX": prefix})
    env.pop("AIRFLOW_VAR_PGDR_STAGING_DIR")  # each worker has its own (start_celery_stack)
    celery = start_celery_stack(home, env, workers=WORKERS, concurrency=2)
    try:
        api = celery.api()
        wait_for_dags(celery.services, api, {"pg_backup_daily"})
        yield Deployment(celery, api, prefix)
    finally:
        family = _every_process(celery)
        celery.stop()
    # the teardown leaves nothing behind: no process, no listening port, no network namespace
    import psutil

    def running(proc) -> bool:
        try:
            return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    left = [p.pid for p in family if running(p)]
    assert not left, f"processes left after stop: {left}"
    for port in (celery.redis.port, celery.services.api_port):
        with socket.create_server(("127.0.0.1", port)):
            pass
    names = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=False).stdout
    assert not [w.network.name for w in celery.workers.values() if w.network and w.network.name in names]


def _every_process(celery: CeleryStack) -> list:
    import psutil

    family = []
    for proc in [celery.redis.process, *celery.services.processes.values(),
                 *(w.process for w in celery.workers.values() if w.alive())]:
        try:
            main = psutil.Process(proc.pid)
            family += [main, *main.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    return family


class TableLock:
    """An ACCESS EXCLUSIVE lock on ``table`` held from entry until :meth:`release` (or exit)."""

    def __init__(self, cluster, dbname: str, table: str) -> None:
        self.cluster, self.dbname, self.table = cluster, dbname, table
        self.locked, self.released, self.errors = threading.Event(), threading.Event(), []
        self.holder = threading.Thread(target=self._hold, daemon=True)

    def _hold(self) -> None:
        conn = self.cluster.connect(self.dbname, autocommit=False)
        try:
            with conn.cursor() as cur:
                cur.execute(f"LOCK TABLE {self.table} IN ACCESS EXCLUSIVE MODE")
                self.locked.set()
                self.released.wait(RUN_TIMEOUT)
            conn.rollback()
        except Exception as err:  # noqa: BLE001 - reported by __enter__
            self.errors.append(err)
            self.locked.set()
        finally:
            conn.close()

    def __enter__(self) -> TableLock:
        self.holder.start()
        self.locked.wait(30)
        assert not self.errors, self.errors
        return self

    def release(self) -> None:
        self.released.set()

    def __exit__(self, *exc) -> None:
        self.release()
        self.holder.join(30)


def _lock_waiters(cluster, dbname: str) -> int:
    """How many backends of ``dbname`` wait for a lock (the blocked pg_dump's)."""
    return cluster.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND wait_event_type = 'Lock'",
                           params=(dbname,))[0][0]


def _dumping_worker(workers: dict[str, CeleryWorker], dbname: str) -> CeleryWorker | None:
    """The worker whose process tree runs pg_dump of ``dbname`` (its last argument), if one does."""
    import psutil

    for worker in workers.values():
        for proc in worker.processes():
            try:
                if proc.name() == "pg_dump" and proc.cmdline()[-1:] == [dbname]:
                    return worker
            except psutil.NoSuchProcess:
                continue
    return None


def _snapshot(directory) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(directory)): (p.stat().st_size, p.stat().st_mtime_ns)
            for p in sorted(directory.rglob("*")) if p.is_file()}


def _tries(api: ApiClient, dag_id: str, run_id: str) -> dict[str, list[dict]]:
    """task[map_index] -> every try (try_number, state, hostname), oldest first."""
    run_path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}"
    tries = {}
    for ti in api.get(f"{run_path}/taskInstances", params={"limit": 100})["task_instances"]:
        history = api.get(f"{run_path}/taskInstances/{ti['task_id']}/{ti['map_index']}/tries")["task_instances"]
        tries[f"{ti['task_id']}[{ti['map_index']}]"] = sorted(
            ({"try_number": t["try_number"], "state": t["state"], "hostname": t["hostname"]} for t in history),
            key=lambda t: t["try_number"])
    return tries


def _wait_for_end(deployment: Deployment, dag_id: str, run_id: str, timeout: float = RUN_TIMEOUT) -> dict:
    """Follow a run to its end, retries included (a retry is the point here); fails on a timeout."""
    api, run = deployment.api, {}
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        run = api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}")
        if run["state"] in ("success", "failed"):
            return run
        time.sleep(2)
    raise AssertionError(f"{dag_id} run {run_id} still {run.get('state')!r} after {timeout:.0f} s\n"
                         f"{deployment.celery.diagnostics()}")


def _map_index(api: ApiClient, dag_id: str, run_id: str, conn_id: str) -> int:
    """The map index of ``conn_id``: protected_databases' XCom lists the databases in map order."""
    databases = api.get(f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/protected_databases/xcomEntries/"
                        "return_value")["value"]
    databases = json.loads(databases) if isinstance(databases, str) else databases
    return databases.index(conn_id)


@pytest.fixture(scope="module")
def killed_run(deployment, stack):
    """pg_backup_daily with one pg_dump held by a lock; the worker running it killed with SIGKILL."""
    celery, api = deployment.celery, deployment.api
    started = time.monotonic()
    with TableLock(stack.cluster, LOCKED_DB, LOCKED_TABLE) as lock:
        run_id = trigger(api, "pg_backup_daily", {})
        deadline = time.monotonic() + 120
        victim = None
        while victim is None and time.monotonic() < deadline:
            if _lock_waiters(stack.cluster, LOCKED_DB):
                victim = _dumping_worker(celery.workers, LOCKED_DB)
            time.sleep(0.2)
        assert victim is not None, f"no pg_dump of {LOCKED_DB} waiting on its lock\n{celery.diagnostics()}"
        killed_pids = victim.kill()
        killed_at = time.monotonic() - started
        dead_staging = _snapshot(victim.staging_dir)
        lock.release()
    run = _wait_for_end(deployment, "pg_backup_daily", run_id)
    return {"run_id": run_id, "run": run, "victim": victim, "killed_pids": killed_pids,
            "killed_at": killed_at, "dead_staging": dead_staging, "seconds": time.monotonic() - started,
            "tries": _tries(api, "pg_backup_daily", run_id)}


def test_each_worker_reaches_only_the_services_it_is_given(deployment, stack):
    """Each worker has its own process group, home and staging directory; in a network namespace of its
    own (where the machine allows), it reaches the cluster through its forwarder, not 127.0.0.1."""
    celery = deployment.celery
    homes = {w.home for w in celery.workers.values()}
    stagings = {w.staging_dir for w in celery.workers.values()}
    groups = {os.getpgid(w.process.pid) for w in celery.workers.values()}
    assert len(homes) == len(stagings) == len(groups) == len(WORKERS)
    if celery.isolation != "netns":
        # no network namespaces on this machine: separate processes, homes and staging directories only
        return
    for worker in celery.workers.values():
        probe = ("import socket, sys\n"
                 "for host in sys.argv[2:]:\n"
                 "    try: socket.create_connection((host, int(sys.argv[1])), timeout=3).close(); print(host, 'open')\n"
                 "    except OSError: print(host, 'closed')\n")
        result = subprocess.run(worker.network.argv([sys.executable, "-c", probe, str(stack.cluster.port),
                                                     "127.0.0.1", worker.network.host_address]),
                                capture_output=True, text=True, timeout=60, check=True)
        assert result.stdout.split("\n")[:2] == ["127.0.0.1 closed", f"{worker.network.host_address} open"], \
            result.stdout
        assert json.loads(worker.env[f"AIRFLOW_CONN_{LOCKED_CONN.upper()}"])["host"] == worker.network.host_address


def test_the_worker_is_killed_while_its_pg_dump_runs(killed_run):
    victim = killed_run["victim"]
    assert not victim.alive()
    import psutil

    assert not [pid for pid in killed_run["killed_pids"] if psutil.pid_exists(pid)
                and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE], "a process of the dead worker survived"
    assert killed_run["dead_staging"], "the dead worker's staging directory was empty at the kill"


def test_the_dump_retries_on_the_other_worker_and_the_run_succeeds(deployment, killed_run):
    run, tries = killed_run["run"], killed_run["tries"]
    assert run["state"] == "success", f"{tries}\n{deployment.celery.diagnostics()}"
    index = _map_index(deployment.api, "pg_backup_daily", killed_run["run_id"], LOCKED_CONN)
    dump = tries[f"backup.dump_and_upload[{index}]"]
    victim = killed_run["victim"].name
    (survivor,) = set(WORKERS) - {victim}
    assert [(t["hostname"], t["state"]) for t in dump] == [(victim, "failed"), (survivor, "success")], dump
    # the mapped work went to both workers, not one
    # (a task the scheduler skipped without running it has no hostname)
    assert {t["hostname"] for ts in tries.values() for t in ts} - {""} == set(WORKERS), tries


def _seals(api: ApiClient, run_id: str) -> dict[str, dict]:
    """conn id -> what its verify_and_seal returned (backup_id, manifest_key, ...), read through the API."""
    seals = {}
    for conn_id in DATABASES:
        index = _map_index(api, "pg_backup_daily", run_id, conn_id)
        seal = api.get(f"/api/v2/dags/pg_backup_daily/dagRuns/{run_id}/taskInstances/backup.verify_and_seal/"
                       "xcomEntries/return_value", params={"map_index": index})["value"]
        seals[conn_id] = json.loads(seal) if isinstance(seal, str) else seal
    return seals


def test_every_database_has_a_sealed_backup_with_every_row(deployment, stack, killed_run):
    client = stack.s3.client()
    for conn_id, seal in _seals(deployment.api, killed_run["run_id"]).items():
        dbname = DATABASES[conn_id]
        manifest = json.loads(client.get_object(Bucket=BUCKET, Key=seal["manifest_key"])["Body"].read())
        assert manifest["database"] == conn_id
        assert manifest["row_counts"] == {table: rows for table, (rows, _) in fingerprint(stack.cluster,
                                                                                        dbname).items()}


def test_nothing_of_the_dead_worker_is_read_or_reused(deployment, stack, killed_run):
    victim = killed_run["victim"]
    (survivor,) = [w for w in deployment.celery.workers.values() if w is not victim]
    # the dead worker's files are exactly as the kill left them: nobody wrote, moved or cleaned them
    assert _snapshot(victim.staging_dir) == killed_run["dead_staging"]
    dead = {p.name.removesuffix(".partial") for p in victim.staging_dir.glob(f"{LOCKED_CONN}/logical/*.partial")}
    assert dead, "the kill left no half-written dump behind"
    # the retry took a new backup from the database on its own disk, not the dead one's files
    retried = {p.name.removesuffix(".partial") for p in survivor.staging_dir.glob(f"{LOCKED_CONN}/logical/*")}
    assert retried and not dead & retried, (dead, retried)
    client = stack.s3.client()
    manifests = [o["Key"] for o in client.list_objects_v2(
        Bucket=BUCKET, Prefix=f"{deployment.prefix}/{LOCKED_CONN}/logical/").get("Contents", [])
        if o["Key"].endswith("/manifest.json")]
    sealed = [json.loads(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())["backup_id"] for key in manifests]
    assert sealed == sorted(retried), (sealed, retried)


def test_every_sealed_backup_passes_the_integrity_check(deployment, stack, killed_run):
    """pg_backup_verify's integrity check on each database's sealed backup: every object streamed from S3
    against the manifest (sha256, size, encryption), nothing extra under the backup, pg_restore --list."""
    import logging

    from harness.pg_cluster import pg_bindir
    from pgdr.verify.backups import verify_backup
    from tests.support.s3 import plain_store

    store = plain_store(stack.s3.client(), deployment.prefix)
    for conn_id, seal in _seals(deployment.api, killed_run["run_id"]).items():
        problems, manifest = verify_backup(store, conn_id, "logical", seal["backup_id"], pg_bindir(),
                                           logging.getLogger("test_celery_scale"))
        assert problems == [] and manifest is not None, (conn_id, problems)
