"""Airflow on the CeleryExecutor, the way a team scales pgdr out: Redis, PostgreSQL metadata, N workers.

The api-server, scheduler, dag-processor and triggerer are harness/airflow_services.py's, started with
the CeleryExecutor, a PostgreSQL 15 metadata database (a throwaway cluster of harness/pg_cluster.py,
also Celery's result backend) and a Redis broker (Debian's ``redis-server`` on 127.0.0.1, no
persistence). Each Celery worker stands for a machine of its own: its own process group, AIRFLOW_HOME
(task logs), staging directory (``pgdr_staging_dir``) and host name (``PGDR_WORKER_NAME``, reported
by :func:`worker_hostname` as the task instance's hostname, so the API says where each try ran).

    stack = start_celery_stack(home, extra_env=stack.airflow_env(), workers=("worker-a", "worker-b"))
    stack.workers["worker-a"].kill()      # SIGKILL to everything the worker runs, as a machine dies
    stack.stop()                          # every process group and descendant, Redis, the metadata cluster

A worker's kill and :meth:`CeleryStack.stop` signal the whole process group and every descendant
found (a task's tools may leave the group), then wait until none runs: nothing keeps a port.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from harness.airflow_env import airflow_environ
from harness.airflow_services import AirflowServices, ApiClient, start_airflow_services
from harness.netns import IsolatedNetwork, netns_available
from harness.pg_cluster import PgCluster, free_port, start_cluster

METADATA_ROLE = "airflow"
# Scheduler settings that turn a dead worker into a retry within seconds rather than the 5 minutes
# of Airflow's default heartbeat timeout (the test budget is a few minutes).
HEARTBEAT_TIMEOUT_S = 20
RETRY_DELAY_S = 3

# The deployment's cluster policy (airflow_local_settings.py, picked up from PYTHONPATH): the DAGs
# keep their retry count, only the delay before a retry shrinks, so a retry is seen within the budget.
_LOCAL_SETTINGS = f'''
from datetime import timedelta


def task_policy(task):
    if task.retries:
        task.retry_delay = timedelta(seconds={RETRY_DELAY_S})
        task.retry_exponential_backoff = 0
'''


def redis_server() -> str | None:
    """The redis-server binary, or None when Debian's redis-server package is not installed."""
    return shutil.which("redis-server")


def worker_hostname() -> str:
    """``[core] hostname_callable`` of the stack: the worker's name, else the machine's."""
    return os.environ.get("PGDR_WORKER_NAME") or socket.getfqdn()


@dataclass
class Redis:
    port: int
    process: subprocess.Popen

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def stop(self) -> None:
        stop_process_tree(self.process)


def start_redis(workdir: Path, timeout: float = 20) -> Redis:
    binary = redis_server()
    if binary is None:
        raise RuntimeError("redis-server not found: apt-get install redis-server")
    workdir.mkdir(parents=True, exist_ok=True)
    port = free_port()
    argv = [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "", "--appendonly", "no",
            "--dir", str(workdir), "--protected-mode", "yes"]
    with open(workdir / "redis.log", "wb") as log:
        process = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    redis = Redis(port, process)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"redis-server exited:\n{(workdir / 'redis.log').read_text()[-2000:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1) as sock:
                sock.sendall(b"PING\r\n")
                if sock.recv(16).startswith(b"+PONG"):
                    return redis
        except OSError:
            time.sleep(0.1)
    redis.stop()
    raise RuntimeError(f"redis-server not answering on port {port} within {timeout:.0f} s")


@dataclass
class CeleryWorker:
    name: str
    home: Path
    staging_dir: Path
    env: dict[str, str] = field(repr=False)
    # its own network namespace, reaching only the services its environment names; None: the host's
    network: IsolatedNetwork | None = None
    process: subprocess.Popen | None = None

    @property
    def log_file(self) -> Path:
        return self.home / "worker.log"

    def start(self, concurrency: int) -> None:
        argv = [sys.executable, "-m", "airflow", "celery", "worker", "--concurrency", str(concurrency),
                "--celery-hostname", f"{self.name}@%h", "--skip-serve-logs", "--without-mingle",
                "--without-gossip"]
        if self.network is not None:
            argv = self.network.argv(argv)
        with open(self.log_file, "ab") as log:
            self.process = subprocess.Popen(argv, env=self.env, cwd=self.home, stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True)

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def processes(self) -> list:
        """The worker's main process and every descendant running now (psutil.Process objects)."""
        import psutil

        if not self.alive():
            return []
        try:
            main = psutil.Process(self.process.pid)
            return [main, *main.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def kill(self) -> list[int]:
        """SIGKILL everything the worker runs at once (its group and every descendant), as a machine that
        dies; returns the pids killed, every one of them gone when this returns."""
        family = self.processes()
        if self.process is not None:
            _signal_group(self.process.pid, signal.SIGKILL)
        for proc in family:
            try:
                proc.kill()
            except Exception:  # noqa: BLE001 - already gone
                pass
        if self.process is not None:
            self.process.wait(30)
        leftover = _wait_gone(family, 30)
        if leftover:
            raise RuntimeError(f"{self.name}: processes survived SIGKILL: {[p.pid for p in leftover]}")
        return [proc.pid for proc in family]

    def stop(self) -> None:
        if self.process is not None:
            stop_process_tree(self.process)
        self.close_network()

    def close_network(self) -> None:
        if self.network is not None:
            self.network.close()

    def task_logs(self, tail: int = 6000) -> str:
        from harness.airflow_services import _readable

        files = sorted((self.home / "logs").rglob("*.log"))
        return "\n".join(f"----- {self.name}: {path.relative_to(self.home)} -----\n"
                         f"{_readable(path.read_text(errors='replace'))[-tail:]}" for path in files)


@dataclass
class CeleryStack:
    home: Path
    services: AirflowServices
    redis: Redis
    metadata: PgCluster
    workers: dict[str, CeleryWorker]
    # "netns": each worker in a network namespace of its own; else why not, and the workers share the host's
    isolation: str = "netns"

    def api(self) -> ApiClient:
        return self.services.api()

    def diagnostics(self, tail: int = 4000) -> str:
        parts = [self.services.component_logs(tail)]
        for worker in self.workers.values():
            text = worker.log_file.read_text(errors="replace") if worker.log_file.exists() else ""
            parts.append(f"----- {worker.name} (alive: {worker.alive()}) -----\n{text[-tail:]}")
            parts.append(worker.task_logs(tail))
        return "\n".join(parts)

    def stop(self) -> None:
        """Workers first (they hold broker and database connections), then Airflow, Redis, the cluster."""
        workers = [w.process for w in self.workers.values() if w.process is not None]
        timings = {}
        for name, step in [("workers", lambda: stop_process_trees(workers)),
                           *((f"network {w.name}", w.close_network) for w in self.workers.values()),
                           ("airflow", lambda: self.services.stop(timeout=5)), ("redis", self.redis.stop),
                           ("metadata", self.metadata.destroy)]:
            started = time.monotonic()
            try:
                step()
            except Exception:  # noqa: BLE001 - tear down everything we can
                pass
            timings[name] = round(time.monotonic() - started, 1)
        (self.home / "stop-seconds.json").write_text(json.dumps(timings))


def metadata_database(cluster: PgCluster, password: str) -> str:
    """A database and owner role for Airflow's metadata in ``cluster``; its SQLAlchemy URL."""
    cluster.execute(f"CREATE ROLE {METADATA_ROLE} LOGIN PASSWORD %s", params=(password,))
    cluster.execute(f"CREATE DATABASE airflow OWNER {METADATA_ROLE}")
    return f"postgresql+psycopg2://{METADATA_ROLE}:{password}@{cluster.host}:{cluster.port}/airflow"


def celery_environ(sql_alchemy_conn: str, broker_url: str, policy_dir: Path) -> dict[str, str]:
    """What turns harness/airflow_services.py's LocalExecutor deployment into a Celery one."""
    # the cluster policy first, then what every component gets (the repo's plugins/ and root)
    pythonpath = os.pathsep.join([str(policy_dir), airflow_environ(policy_dir.parent / "airflow")["PYTHONPATH"]])
    return {
        "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": sql_alchemy_conn,
        "AIRFLOW__CELERY__BROKER_URL": broker_url,
        "AIRFLOW__CELERY__RESULT_BACKEND": "db+" + sql_alchemy_conn,
        # a worker takes a task only when it has a free slot: nothing waits behind a long backup
        "AIRFLOW__CELERY__WORKER_PREFETCH_MULTIPLIER": "1",
        "AIRFLOW__CELERY__SYNC_PARALLELISM": "1",
        "AIRFLOW__CORE__HOSTNAME_CALLABLE": "harness.celery_stack.worker_hostname",
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": str(HEARTBEAT_TIMEOUT_S),
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT_DETECTION_INTERVAL": "3",
        "AIRFLOW__WORKERS__MIN_HEARTBEAT_INTERVAL": "3",
        "PYTHONPATH": pythonpath,
    }


def start_celery_stack(home: Path, extra_env: dict[str, str] | None = None, *,
                       workers: tuple[str, ...] = ("worker-a", "worker-b"), concurrency: int = 1,
                       isolate_network: bool | None = None, timeout: float = 180) -> CeleryStack:
    """Redis, a metadata cluster, Airflow's four services on Celery and ``workers`` Celery workers, each
    with its own home and staging directory under ``home`` and, when ``isolate_network`` (None: when the
    machine allows it), its own network namespace; stops whatever started on failure."""
    import importlib.util

    if importlib.util.find_spec("airflow.providers.celery") is None:
        raise RuntimeError("apache-airflow-providers-celery is not installed (requirements.txt pins it with celery "
                           "and redis): pip install -r requirements.txt")
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    policy_dir = home / "policy"
    policy_dir.mkdir(exist_ok=True)
    (policy_dir / "airflow_local_settings.py").write_text(_LOCAL_SETTINGS)
    redis = start_redis(home / "redis")
    metadata = services = stack = None
    try:
        metadata = start_cluster()
        conn = metadata_database(metadata, secrets.token_urlsafe(18))
        env = {**(extra_env or {}), **celery_environ(conn, redis.url, policy_dir)}
        services = start_airflow_services(home / "airflow", env, timeout=timeout)
        why_not = netns_available() if isolate_network is not False else "not asked for"
        if isolate_network and why_not:
            raise RuntimeError(f"network namespaces unavailable: {why_not}")
        stack = CeleryStack(home=home, services=services, redis=redis, metadata=metadata, workers={},
                            isolation=why_not or "netns")
        for name in workers:
            worker_home = home / name
            worker_home.mkdir()
            worker_env = {**services.env,
                          "AIRFLOW_HOME": str(worker_home),
                          "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(worker_home / "logs"),
                          "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                          "AIRFLOW_VAR_PGDR_STAGING_DIR": str(worker_home / "staging"),
                          "PGDR_WORKER_NAME": name}
            worker = CeleryWorker(name=name, home=worker_home, staging_dir=worker_home / "staging", env=worker_env)
            stack.workers[name] = worker
            if not why_not:
                worker.network = IsolatedNetwork.create(name)
                worker.env = worker.network.environ(worker_env)
            worker.start(concurrency)
        _wait_workers_ready(stack, timeout)
    except BaseException:
        steps = [stack.stop] if stack else [services and services.stop, redis.stop, metadata and metadata.destroy]
        for step in steps:
            if step:
                try:
                    step()
                except Exception:  # noqa: BLE001 - tear down everything we can
                    pass
        raise
    return stack


def _wait_workers_ready(stack: CeleryStack, timeout: float) -> None:
    """Until every worker's log says it is ready to consume (celery prints 'ready.')."""
    deadline = time.monotonic() + timeout
    pending = set(stack.workers)
    while pending and time.monotonic() < deadline:
        for name in list(pending):
            worker = stack.workers[name]
            if not worker.alive():
                raise RuntimeError(f"Celery worker {name} exited\n{stack.diagnostics()}")
            if worker.log_file.exists() and " ready." in worker.log_file.read_text(errors="replace"):
                pending.discard(name)
        time.sleep(0.5)
    if pending:
        raise RuntimeError(f"Celery workers {sorted(pending)} not ready within {timeout:.0f} s\n{stack.diagnostics()}")


def stop_process_tree(process: subprocess.Popen, timeout: float = 15) -> None:
    stop_process_trees([process], timeout)


def stop_process_trees(processes: list[subprocess.Popen], timeout: float = 15) -> None:
    """SIGTERM the process groups ``processes`` lead and every descendant, all at once; SIGKILL what is
    left after ``timeout``; reap."""
    import psutil

    family = []
    for process in processes:
        try:
            main = psutil.Process(process.pid)
            family += [main, *main.children(recursive=True)]
        except psutil.NoSuchProcess:
            pass
    for process in processes:
        _signal_group(process.pid, signal.SIGTERM)
    for proc in family:
        try:
            proc.terminate()
        except psutil.NoSuchProcess:
            pass
    alive = _wait_gone(family, timeout)
    for process in processes:
        _signal_group(process.pid, signal.SIGKILL)
    for proc in alive:
        try:
            proc.kill()
        except psutil.NoSuchProcess:
            pass
    _wait_gone(alive, 10)
    for process in processes:
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            pass


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)
    except (ProcessLookupError, PermissionError):
        pass


def _wait_gone(procs: list, timeout: float) -> list:
    """The processes still running after ``timeout``; a zombie counts as gone (its parent reaps it)."""
    import psutil

    def running(proc) -> bool:
        try:
            return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + timeout
    alive = [p for p in procs if running(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.1)
        alive = [p for p in alive if running(p)]
    return alive
