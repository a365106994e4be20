"""Airflow's own services as child processes on 127.0.0.1, for end-to-end tests through the REST API.

Starts ``airflow api-server``, ``scheduler`` (LocalExecutor), ``dag-processor`` and ``triggerer``
with an isolated AIRFLOW_HOME (SQLite metadata database, the repo's dags/ and plugins/), each in
its own process group with stdout and stderr captured to ``<home>/<component>.log``. Access goes
through SimpleAuthManager: one configured admin user (``USERNAME``) plus any ``users={name: role}``
the caller asks for (roles: viewer, user, op, admin), each with a password this harness generates
into the passwords file, exchanged for a JWT at ``/auth/token``; :class:`ApiClient` sends it as
``Authorization: Bearer``. ``services.api(user="alice")`` acts as another user;
``services.password_of("alice")`` is that user's password for a browser login.

    services = start_airflow_services(home, extra_env=stack.airflow_env())
    api = services.api()
    wait_for_dags(services, api, {"pg_restore"})
    run_id = trigger(api, "pg_restore", {...}); wait_for_run(services, api, "pg_restore", run_id)
    services.stop()     # every process group and every descendant, then the ports are free
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import requests

from harness.airflow_env import airflow_environ
from harness.pg_cluster import free_port

COMPONENTS = ("api-server", "scheduler", "dag-processor", "triggerer")
USERNAME = "pgdr_operator"


class ApiError(AssertionError):
    pass


@dataclass
class ApiClient:
    """The REST API as a user sees it: a JWT from /auth/token, then plain JSON requests."""

    base_url: str
    token: str = field(repr=False)
    session: requests.Session = field(default_factory=requests.Session, repr=False)

    def request(self, method: str, path: str, *, expect: int | tuple[int, ...] | None = (200,), **kwargs):
        headers = {"Authorization": f"Bearer {self.token}", **kwargs.pop("headers", {})}
        response = self.session.request(method, self.base_url + path, headers=headers, timeout=30, **kwargs)
        wanted = (expect,) if isinstance(expect, int) else expect
        if wanted and response.status_code not in wanted:
            raise ApiError(f"{method} {path} -> HTTP {response.status_code}: {response.text[:2000]}")
        return response

    def get(self, path: str, **kwargs) -> dict:
        return self.request("GET", path, **kwargs).json()

    def patch(self, path: str, body: dict, **kwargs) -> dict:
        return self.request("PATCH", path, json=body, **kwargs).json()

    def post(self, path: str, body: dict, **kwargs) -> requests.Response:
        return self.request("POST", path, json=body, **kwargs)


@dataclass
class AirflowServices:
    home: Path
    api_port: int
    # connection passwords and the users' passwords: kept out of reprs (pytest prints fixtures on failure)
    env: dict[str, str] = field(repr=False)
    password: str = field(repr=False)  # the default user's (USERNAME)
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)
    # every configured user's password, USERNAME included
    passwords: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def log_file(self, component: str) -> Path:
        return self.home / f"{component}.log"

    def password_of(self, user: str = USERNAME) -> str:
        if user == USERNAME:
            return self.password
        if user not in self.passwords:
            raise KeyError(f"no user {user!r} was configured (users: {sorted(self.passwords)})")
        return self.passwords[user]

    def token(self, user: str = USERNAME) -> str:
        response = requests.post(f"{self.base_url}/auth/token",
                                 json={"username": user, "password": self.password_of(user)}, timeout=30)
        if response.status_code != 201:
            raise ApiError(f"POST /auth/token as {user} -> HTTP {response.status_code}: {response.text[:500]}")
        return response.json()["access_token"]

    def api(self, user: str = USERNAME) -> ApiClient:
        """A REST client acting as ``user`` (the default admin unless named)."""
        return ApiClient(self.base_url, self.token(user))

    def dead_components(self) -> list[str]:
        return [name for name, proc in self.processes.items() if proc.poll() is not None]

    def component_logs(self, tail: int = 4000) -> str:
        parts = []
        for name in self.processes:
            path = self.log_file(name)
            text = path.read_text(errors="replace") if path.exists() else ""
            parts.append(f"----- {name} (last {tail} chars of {path}) -----\n{text[-tail:]}")
        return "\n".join(parts)

    def task_logs(self, dag_id: str, run_id: str, tail: int = 6000) -> str:
        """Every task log file of one run, as the workers wrote them under [logging] base_log_folder."""
        root = self.home / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
        files = sorted(root.rglob("*.log")) if root.exists() else []
        if not files:
            return f"(no task logs under {root})"
        return "\n".join(f"----- {path.relative_to(root)} -----\n{_readable(path.read_text(errors='replace'))[-tail:]}"
                         for path in files)

    def stop(self, timeout: float = 15) -> None:
        """SIGTERM every process group, then SIGKILL what is left, including descendants that left the group."""
        import psutil

        family: list[psutil.Process] = []
        for proc in self.processes.values():
            try:
                parent = psutil.Process(proc.pid)
                family += [parent, *parent.children(recursive=True)]
            except psutil.NoSuchProcess:
                pass
        for proc in self.processes.values():
            _signal_group(proc.pid, signal.SIGTERM)
        alive = _wait_gone(family, timeout)
        for proc in self.processes.values():
            _signal_group(proc.pid, signal.SIGKILL)
        for leftover in alive:
            try:
                leftover.kill()
            except psutil.NoSuchProcess:
                pass
        _wait_gone(alive, 10)
        for proc in self.processes.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                pass


def wait_for_dags(services: AirflowServices, api: ApiClient, dag_ids: set[str], timeout: float = 120) -> None:
    """Until every DAG in ``dag_ids`` is listed by the API; an import error of one of them fails at once."""
    deadline = time.monotonic() + timeout
    listed: set[str] = set()
    while time.monotonic() < deadline:
        listed = {dag["dag_id"] for dag in api.get("/api/v2/dags", params={"limit": 100})["dags"]}
        if dag_ids <= listed:
            return
        errors = [e for e in api.get("/api/v2/importErrors")["import_errors"]
                  if e["filename"].removesuffix(".py") in dag_ids - listed]
        if errors:
            raise AssertionError("import errors: "
                                 + "\n".join(f"{e['filename']}: {e['stack_trace']}" for e in errors))
        time.sleep(2)
    raise AssertionError(f"DAGs {sorted(dag_ids - listed)} not listed after {timeout:.0f} s\n"
                         f"{services.component_logs()}")


def trigger(api: ApiClient, dag_id: str, conf: dict) -> str:
    """Unpause ``dag_id`` and start a manual run with ``conf``; returns its run id."""
    api.patch(f"/api/v2/dags/{dag_id}", {"is_paused": False})
    response = api.post(f"/api/v2/dags/{dag_id}/dagRuns", {"logical_date": None, "conf": conf}, expect=200)
    return response.json()["dag_run_id"]


def wait_for_run(services: AirflowServices, api: ApiClient, dag_id: str, run_id: str, timeout: float = 240) -> dict:
    """Follow a run to success: {"run": ..., "states": {task[map_index]: state}}. Fails at the first failed
    or retrying task, or a dead component, with every task log."""
    run_path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}"
    deadline = time.monotonic() + timeout
    run: dict = {}
    states: dict = {}
    while time.monotonic() < deadline:
        run = api.get(run_path)
        tis = api.get(f"{run_path}/taskInstances")["task_instances"]
        states = {f"{ti['task_id']}[{ti['map_index']}]": ti["state"] for ti in tis}
        broken = {k: s for k, s in states.items() if s in ("failed", "up_for_retry", "upstream_failed")}
        if run["state"] == "success":
            return {"run": run, "states": states}
        if run["state"] == "failed" or broken or services.dead_components():
            break
        time.sleep(2)
    raise AssertionError(f"{dag_id} run {run_id} ended {run.get('state')!r} (tasks: {states}, dead components: "
                         f"{services.dead_components()})\n{services.task_logs(dag_id, run_id)}\n"
                         f"{services.component_logs()}")


_SCHEDULED_RUN = """
import sys
from airflow.models.dag import DagModel
from airflow.models.dagbag import DBDagBag
from airflow.utils.session import create_session
from airflow.utils.state import DagRunState
from airflow.utils.types import DagRunTriggeredByType, DagRunType

with create_session() as session:
    dag_model = session.get(DagModel, sys.argv[1])
    dag = DBDagBag().get_latest_version_of_dag(sys.argv[1], session=session)
    info = dag.timetable.next_run_info_from_dag_model(dag_model=dag_model)
    run = dag.create_dagrun(
        run_id=dag.timetable.generate_run_id(run_type=DagRunType.SCHEDULED, run_after=info.run_after,
                                             data_interval=info.data_interval, partition_key=info.partition_key),
        logical_date=info.logical_date, data_interval=info.data_interval, run_after=info.run_after,
        run_type=DagRunType.SCHEDULED, triggered_by=DagRunTriggeredByType.TIMETABLE, state=DagRunState.QUEUED,
        partition_key=info.partition_key, partition_date=info.partition_date, session=session)
    print(run.run_id)
"""


def create_scheduled_run(services: AirflowServices, dag_id: str) -> str:
    """Queue the DAG's next scheduled run exactly as the scheduler's own loop creates it; returns its run id.

    The services run with use_job_schedule off (every other run is driven through the API), so a
    test that needs a run of type "scheduled" asks for it here; the scheduler then runs it as usual.
    """
    result = subprocess.run([sys.executable, "-c", _SCHEDULED_RUN, dag_id], env=services.env, cwd=services.home,
                            capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise RuntimeError(f"creating a scheduled run of {dag_id} failed:\n{result.stderr[-3000:]}")
    return result.stdout.strip().splitlines()[-1]


def _wait_gone(procs: list, timeout: float) -> list:
    """The processes still running after ``timeout``; a zombie counts as gone (orphans may never be reaped here)."""
    import psutil

    def running(proc) -> bool:
        try:
            return proc.is_running() and proc.status() != psutil.STATUS_ZOMBIE
        except psutil.NoSuchProcess:
            return False

    deadline = time.monotonic() + timeout
    alive = [p for p in procs if running(p)]
    while alive and time.monotonic() < deadline:
        time.sleep(0.2)
        alive = [p for p in alive if running(p)]
    return alive


def _readable(log_text: str) -> str:
    """Task logs are JSON lines; one 'time level event' line each (error details kept whole) reads better."""
    lines = []
    for line in log_text.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            record = None
        if not isinstance(record, dict):
            lines.append(line)
            continue
        text = f"{record.get('timestamp', '')} {record.get('level', '')} {record.get('event', '')}"
        for error in record.get("error_detail") or []:
            frames = "".join(f"\n  {frame.get('filename')}:{frame.get('lineno')} {frame.get('name')}"
                             for frame in error.get("frames", []))
            text += f"{frames}\n{error.get('exc_type')}: {error.get('exc_value')}"
        lines.append(text)
    return "\n".join(lines)


def _signal_group(pid: int, sig: int) -> None:
    try:
        os.killpg(pid, sig)  # each component leads its own group (start_new_session)
    except (ProcessLookupError, PermissionError):
        pass


def services_environ(home: Path, api_port: int, extra_env: dict[str, str] | None = None, *,
                     users: dict[str, str] | None = None) -> dict[str, str]:
    """The environment every component gets: nothing Airflow-related inherited from the caller.

    ``users`` ({name: role}) are configured besides the default admin ``USERNAME``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("AIRFLOW")}
    env.update(airflow_environ(home))
    base_url = f"http://127.0.0.1:{api_port}"
    env.update({
        "AIRFLOW__API__HOST": "127.0.0.1",
        "AIRFLOW__API__PORT": str(api_port),
        "AIRFLOW__API__BASE_URL": base_url,
        "AIRFLOW__API__WORKERS": "1",
        "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{base_url}/execution/",
        # the scheduler signs the workers' execution tokens and the api-server checks them
        "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_urlsafe(64),
        "AIRFLOW__API__SECRET_KEY": secrets.token_urlsafe(32),
        "AIRFLOW__CORE__AUTH_MANAGER":
            "airflow.api_fastapi.auth.managers.simple.simple_auth_manager.SimpleAuthManager",
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS": ",".join(
            f"{name}:{role}" for name, role in {USERNAME: "admin", **(users or {})}.items()),
        "AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE": str(home / "passwords.json"),
        "AIRFLOW__CORE__FERNET_KEY": _fernet_key(),
        # LocalExecutor forks `parallelism` workers up front; a 2-core test machine needs few
        "AIRFLOW__CORE__PARALLELISM": "4",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "True",
        # DAGs appear within seconds; one parsing process is enough for five files
        "AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL": "5",
        "AIRFLOW__DAG_PROCESSOR__BUNDLE_REFRESH_CHECK_INTERVAL": "2",
        "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
        "AIRFLOW__DAG_PROCESSOR__PRINT_STATS_INTERVAL": "0",
        # Unpausing a cron DAG with catchup=False still creates a run for the latest cron point;
        # the tests drive every run through the REST API instead.
        "AIRFLOW__SCHEDULER__USE_JOB_SCHEDULE": "False",
        "AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC": "2",
        "AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC": "2",
        "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
        "AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT": str(free_port()),
        "PYTHONUNBUFFERED": "1",
        # four-eyes approval waits for a second person; a test that wants it (tests/test_approval.py)
        # turns it on in extra_env with its approvers
        "AIRFLOW_VAR_PGDR_FOUR_EYES": "false",
    })
    env.update(extra_env or {})
    return env


def _fernet_key() -> str:
    from cryptography.fernet import Fernet

    return Fernet.generate_key().decode()


def _argv(component: str, api_port: int) -> list[str]:
    airflow = [sys.executable, "-m", "airflow"]
    if component == "api-server":
        return [*airflow, "api-server", "--host", "127.0.0.1", "--port", str(api_port), "--workers", "1"]
    if component in ("scheduler", "triggerer"):
        # task logs are read from the shared log folder; no log-serving side processes
        return [*airflow, component, "--skip-serve-logs"]
    return [*airflow, component]


def _wait_healthy(services: AirflowServices, timeout: float) -> dict:
    """Until /api/v2/monitor/health reports every component healthy (or one died, or time ran out)."""
    deadline = time.monotonic() + timeout
    last: object = "no answer"
    while time.monotonic() < deadline:
        if dead := services.dead_components():
            raise RuntimeError(f"Airflow component(s) exited: {dead}\n{services.component_logs()}")
        try:
            response = requests.get(f"{services.base_url}/api/v2/monitor/health", timeout=5)
            last = response.json() if response.ok else f"HTTP {response.status_code}"
            if response.ok and all((last.get(part) or {}).get("status") == "healthy"
                                   for part in ("metadatabase", "scheduler", "triggerer", "dag_processor")):
                return last
        except (requests.RequestException, ValueError) as err:
            last = repr(err)
        time.sleep(1)
    raise RuntimeError(f"Airflow not healthy within {timeout:.0f} s (last: {last})\n{services.component_logs()}")


def start_airflow_services(home: Path, extra_env: dict[str, str] | None = None, *,
                           users: dict[str, str] | None = None, timeout: float = 180) -> AirflowServices:
    """Migrate a fresh metadata database in ``home`` and start the four components; stops them on failure.

    ``users`` ({name: role}, role one of viewer, user, op, admin) are extra SimpleAuthManager users
    beside the default admin ``USERNAME``; each gets a generated password (``services.password_of``)."""
    home = Path(home)
    home.mkdir(parents=True, exist_ok=True)
    users = dict(users or {})
    if USERNAME in users or any(":" in name or "," in name for name in users):
        raise ValueError(f"extra users must not be {USERNAME!r} nor contain ':' or ',': {sorted(users)}")
    api_port = free_port()
    env = services_environ(home, api_port, extra_env, users=users)
    passwords = {name: secrets.token_urlsafe(24) for name in (USERNAME, *users)}
    passwords_file = home / "passwords.json"
    passwords_file.write_text(json.dumps(passwords))
    passwords_file.chmod(0o600)
    services = AirflowServices(home=home, api_port=api_port, env=env, password=passwords[USERNAME],
                               passwords=passwords)

    migrate = subprocess.run([sys.executable, "-m", "airflow", "db", "migrate"], env=env, cwd=home,
                             check=False, capture_output=True, text=True, timeout=timeout)
    if migrate.returncode != 0:
        raise RuntimeError(f"airflow db migrate failed:\n{migrate.stdout[-3000:]}\n{migrate.stderr[-3000:]}")
    try:
        for component in COMPONENTS:
            with open(services.log_file(component), "wb") as log:
                services.processes[component] = subprocess.Popen(
                    _argv(component, api_port), env=env, cwd=home, stdin=subprocess.DEVNULL,
                    stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        _wait_healthy(services, timeout)
    except BaseException:
        services.stop()
        raise
    return services
