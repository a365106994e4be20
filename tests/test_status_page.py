"""The recovery status inside the Airflow UI, as a person reads it: headless Chromium against the real
api-server (harness/airflow_services.py, SimpleAuthManager, the plugin loaded from plugins/).

The care_commons database of the session's stack is protected with physical backups on: a WAL
receiver (pgdr's supervisor around pg_receivewal) streams from it, pg_backup_daily takes a logical
and a base backup, pg_restore_test drills a restore, pgdr's shipper ships the WAL, then
pg_backup_verify runs in a process of its own with Airflow's StatsD settings (it marks the backups
good and its history_page task sends the gauges, here to a UDP StatsD socket of the test). Then:

- the admin logs in, opens "Recovery status" from the navigation, and reads in the plugin's page the
  recovery window (from the first recoverable point to the newest shipped WAL), the worst-case loss,
  the newest good backup of each kind, the last verification and the last drill, each compared with
  what is in S3; the live history page opens from it;
- a viewer (read access to the DAGs) reads the page too; a signed-in user without access gets 403 and
  a request without a token 401, neither seeing a figure;
- the gauges the verify run sent carry the same figures (WAL lag included).

Screenshots go to /work/notes/screens/ when that directory's parent exists (a developer's machine),
else to the module's temporary directory.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import requests
from playwright.sync_api import sync_playwright

from harness.airflow_services import (
    USERNAME,
    AirflowServices,
    ApiClient,
    start_airflow_services,
)
from harness.stack import BUCKET, CONN_ID
from pgdr.report.history import format_duration, format_time, parse_time
from tests.support.clusters import SERVER_USER, shared_dir
from tests.support.dags import environment, run_dag, run_dag_in_child, task_states
from tests.support.s3 import json_records

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SLOT = "pgdr_status_test"
USERS = {"auditor": "viewer", "nobody": ""}   # a viewer reads every DAG; a user without a role reads none
NOTES_SCREENS = Path("/work/notes/screens")


class StatsdSocket:
    """A UDP StatsD server: a thread keeps every line (the scheduler sends many; a full buffer would drop ours)."""

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.5)
        self.lines: list[str] = []
        self._stop = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    @property
    def port(self) -> int:
        return self.sock.getsockname()[1]

    def _run(self) -> None:
        while not self._stop.is_set():
            try:
                self.lines += self.sock.recv(65535).decode(errors="replace").splitlines()
            except TimeoutError:
                continue
            except OSError:
                return

    def gauges(self, prefix: str) -> dict[str, float]:
        found = {}
        for line in list(self.lines):
            name, _, rest = line.partition(":")
            value, _, kind = rest.partition("|")
            if kind == "g" and name.startswith(prefix):
                found[name] = float(value)
        return found

    def close(self) -> None:
        self._stop.set()
        self.thread.join(5)
        self.sock.close()


@dataclass
class Deployment:
    services: AirflowServices
    api: ApiClient
    screens: Path
    prefix: str
    manifests: dict[str, dict]          # kind -> the manifest of its one backup
    drill: dict                          # the drill's record
    newest_wal: object                   # LastModified of the newest WAL object when verify started
    statsd: StatsdSocket
    verify_states: dict = field(default_factory=dict)


def _receiver(stack, directory: Path):
    from harness.pg_cluster import pg_bindir
    from pgdr.wal.receiver import Supervisor

    env = {**os.environ, "PGHOST": stack.cluster.host, "PGPORT": str(stack.cluster.port), "PGUSER": "postgres"}
    supervisor = Supervisor(directory, SLOT, synchronous=False, status_interval=1, bindir=pg_bindir(), env=env,
                            run_as=SERVER_USER, min_backoff=0.2, max_backoff=1.0)
    thread = threading.Thread(target=supervisor.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if stack.cluster.execute("SELECT 1 FROM pg_stat_replication WHERE application_name = %s", params=(SLOT,)):
            return supervisor, thread
        time.sleep(0.2)
    supervisor.stop()
    raise AssertionError("the WAL receiver never connected")


def _ship(stack, prefix: str, directory: Path) -> None:
    import logging

    from pgdr.store.s3 import BackupStore
    from pgdr.wal.local import load_state
    from pgdr.wal.ship import ship_once

    store = BackupStore(client=stack.s3.client(), bucket=BUCKET, prefix=prefix,
                        sse_args={"ServerSideEncryption": "AES256"}, part_size=64 << 20,
                        log=logging.getLogger("test_status_page"))
    ship_once(store, CONN_ID, directory, load_state(directory, CONN_ID), store.log)


def _keep_shipping(stack, prefix: str, directory: Path, stop: threading.Event) -> None:
    while True:
        _ship(stack, prefix, directory)
        if stop.wait(5):
            return


def _newest_wal(stack, prefix: str):
    listed = stack.s3.client().list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/{CONN_ID}/wal/")["Contents"]
    return max(o["LastModified"] for o in listed if not o["Key"].endswith(".history.zst"))


@pytest.fixture(scope="module")
def deployment(stack, airflow_db, tmp_path_factory):
    home = tmp_path_factory.mktemp("status-page")
    screens = NOTES_SCREENS if NOTES_SCREENS.parent.is_dir() else home / "screens"
    screens.mkdir(parents=True, exist_ok=True)
    prefix = f"status/{os.urandom(4).hex()}"
    wal_root = shared_dir("pgdr-status-wal-")
    staging = home / "staging"
    env = stack.airflow_env()
    env.update({"AIRFLOW_VAR_PGDR_S3_PREFIX": prefix, "AIRFLOW_VAR_PGDR_STAGING_DIR": str(staging),
                "AIRFLOW_VAR_PGDR_PHYSICAL_BACKUPS": "true", "AIRFLOW_VAR_PGDR_WAL_RECEIVER_DIR": str(wal_root),
                "AIRFLOW_VAR_PGDR_REPLICATION_SLOT": SLOT})
    statsd = StatsdSocket()
    statsd_env = {"AIRFLOW__METRICS__STATSD_ON": "True", "AIRFLOW__METRICS__STATSD_HOST": "127.0.0.1",
                  "AIRFLOW__METRICS__STATSD_PORT": str(statsd.port), "AIRFLOW__METRICS__STATSD_PREFIX": "airflow"}
    supervisor, thread = _receiver(stack, wal_root / CONN_ID)
    # Airflow's services start while the backups are taken (they read S3 only when the page is opened)
    starting: dict = {}

    def start() -> None:
        try:
            starting["services"] = start_airflow_services(home / "airflow", env, users=USERS)
        except BaseException as err:  # noqa: BLE001 - raised again in the fixture's thread
            starting["error"] = err

    starter = threading.Thread(target=start, daemon=True)
    try:
        with environment(env):
            starter.start()   # here, so no variable changes while it copies the environment
            for dag_id in ("pg_backup_daily", "pg_restore_test"):
                dag_run = run_dag(dag_id)
                assert str(dag_run.state) == "success", (dag_id, task_states(dag_run))
        stack.cluster.execute("SELECT pg_switch_wal()")
        # shipping goes on while verify runs, as pg_wal_archive does, so its WAL check finds it current
        shipping = threading.Event()
        shipper = threading.Thread(target=_keep_shipping, args=(stack, prefix, wal_root / CONN_ID, shipping),
                                   daemon=True)
        shipper.start()
        # the six-hourly verify, in a process of its own with Airflow's StatsD settings, as a worker runs it:
        # it marks the backups good and its history_page task sends the gauges
        try:
            with environment({**env, **statsd_env}):
                dag_run, output = run_dag_in_child("pg_backup_verify")
        finally:
            shipping.set()
            shipper.join(60)
        verify_states = task_states(dag_run)
        assert str(dag_run.state) == "success", ({k: v for k, v in verify_states.items() if v != "success"},
                                                 output[-3000:])
        newest_wal = _newest_wal(stack, prefix)
        client = stack.s3.client()
        manifests = {m["kind"]: m for m in json_records(client, f"{prefix}/{CONN_ID}/", suffix="/manifest.json")}
        (drill,) = json_records(client, f"{prefix}/reports/drill/")
        starter.join()
        if "error" in starting:
            raise starting["error"]
        services = starting["services"]
        api = services.api()
        yield Deployment(services, api, screens, prefix, manifests, drill, newest_wal, statsd, verify_states)
    finally:
        if starter.ident is not None:
            starter.join()
        if "services" in starting:
            starting["services"].stop()
        supervisor.stop()
        thread.join(30)
        statsd.close()
        stack.cluster.execute("SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots "
                              "WHERE slot_name = %s", params=(SLOT,))
        shutil.rmtree(wal_root, ignore_errors=True)


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


def _login(browser, deployment, user: str):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    context.set_default_timeout(60_000)
    page = context.new_page()
    page.goto(f"{deployment.services.base_url}/auth/login")
    page.get_by_label("Username").fill(user)
    page.get_by_label("Password").fill(deployment.services.password_of(user))
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{deployment.services.base_url}/")
    return context, page


def test_the_admin_opens_the_status_from_the_navigation_and_reads_the_figures(deployment, browser):
    context, page = _login(browser, deployment, USERNAME)
    try:
        page.get_by_role("link", name="Recovery status").click()
        page.wait_for_url("**/plugin/pgdr-recovery-status")
        frame = page.frame_locator("iframe")
        section = frame.locator(f'section.database[data-database="{CONN_ID}"]')
        section.wait_for()
        logical, base = deployment.manifests["logical"], deployment.manifests["base"]

        # the window opens at the first recoverable point: the logical snapshot or the end of the base
        # backup, whichever is earlier; it closes at the newest WAL shipped
        first = min(parse_time(logical["started_at"]), parse_time(base["finished_at"]))
        assert section.locator(".window-start").inner_text() == format_time(first)
        assert section.locator(".window-end").inner_text() == format_time(deployment.newest_wal)
        length = section.locator(".window-length").inner_text()
        assert f"Any moment from {format_time(parse_time(base['finished_at']))} on (base backup {base['backup_id']} " \
            "and continuous WAL)" in length
        window = float(section.locator(".figure.window").get_attribute("data-seconds"))
        assert window == pytest.approx((deployment.newest_wal - first).total_seconds(), abs=1)

        # the worst-case loss: the age of that newest WAL, minutes at most here
        lag = float(section.locator(".figure.loss").get_attribute("data-seconds"))
        assert 0 <= lag < 600
        assert section.locator(".newest-wal").inner_text() == format_time(deployment.newest_wal)

        for kind, manifest in (("logical", logical), ("base", base)):
            row = section.locator(f'tr.kind[data-kind="{kind}"]')
            assert row.locator(".backup-id").inner_text() == f"{manifest['backup_id']} good"
        verify = section.locator(".last-verify").inner_text()
        assert "ok" in verify and "0 failed checks" in verify and "wal: ok" in verify
        drill = section.locator(".last-drill").inner_text()
        assert deployment.drill["backup_id"] in drill
        assert f"RTO {format_duration(deployment.drill['rto_seconds'])}" in drill
        page.screenshot(path=deployment.screens / "status-page.png", full_page=True)

        # the live history page, linked from the status
        frame.locator("a.history-link").click()
        frame.locator("section.database").first.wait_for()
        assert frame.locator('tr.latest-backup[data-kind="base"] code').inner_text() == base["backup_id"]
        page.screenshot(path=deployment.screens / "history-page-live.png", full_page=True)
    finally:
        context.close()


def test_a_viewer_reads_it_and_a_user_without_access_or_a_token_is_refused(deployment, browser):
    base_url = deployment.services.base_url
    token = deployment.services.token("auditor")
    viewer = requests.get(f"{base_url}/pgdr/", headers={"Authorization": f"Bearer {token}"}, timeout=60)
    assert viewer.status_code == 200 and f'data-database="{CONN_ID}"' in viewer.text

    for path in ("/pgdr/", "/pgdr/history"):
        anonymous = requests.get(base_url + path, timeout=30)
        assert anonymous.status_code == 401 and CONN_ID not in anonymous.text
        assert "Sign in to Airflow first" in anonymous.text

    context, page = _login(browser, deployment, "nobody")
    try:
        for path in ("/pgdr/", "/pgdr/history"):
            response = page.goto(base_url + path)
            assert response.status == 403
            assert page.locator("h1.refused").inner_text() == "Not allowed"
            assert "needs read access to every pgdr DAG" in page.content() and CONN_ID not in page.content()
        page.screenshot(path=deployment.screens / "status-refused-403.png", full_page=True)
    finally:
        context.close()


def test_the_verify_run_sends_the_same_figures_as_gauges(deployment):
    assert deployment.verify_states["history_page"] == "success", deployment.verify_states
    prefix = "airflow.pgdr."
    gauges = deployment.statsd.gauges(prefix)
    names = {f"recovery_window_seconds.{CONN_ID}", f"backup_age_seconds.{CONN_ID}.logical",
             f"backup_age_seconds.{CONN_ID}.base", f"wal_lag_seconds.{CONN_ID}", f"drill_rto_seconds.{CONN_ID}",
             f"verification_failures.{CONN_ID}"}
    assert set(gauges) == {prefix + name for name in names}, json.dumps(gauges)
    assert gauges[f"{prefix}verification_failures.{CONN_ID}"] == 0
    assert gauges[f"{prefix}drill_rto_seconds.{CONN_ID}"] == pytest.approx(round(deployment.drill["rto_seconds"], 1))
    assert 0 <= gauges[f"{prefix}wal_lag_seconds.{CONN_ID}"] < 600
    assert gauges[f"{prefix}recovery_window_seconds.{CONN_ID}"] > 0
