"""The pg_restore trigger form in a real browser, as the person starting a restore uses it.

Headless Chromium (Playwright) against the real api-server (SimpleAuthManager login) with the
scheduler, dag-processor and triggerer running (harness/airflow_services.py), on the session's
PostgreSQL, moto S3 and Slack receiver. Airflow's form treats a field whose type does not allow null
as required and "" as missing: with the optional fields typed "string" and defaulting to "" the
form opened red with its Trigger button disabled, and no restore could be started from the UI.

- the default form is valid, its Trigger button enabled, and the restore it starts succeeds (a real
  backup taken through the API first; every row back in a new database);
- every kind and mode can be filled and submitted: the run is created with exactly what was typed
  (the DAG is paused for these, so none of them touches the live database);
- a bad value is refused by the api-server with a message naming the field, shown in the form, and
  no run is created; three bad fields at once are all named in one message, in plain words, without
  the regex (pgdr's check, plugins/pgdr_forms.py, answers before Airflow's jsonschema); a user who may
  not trigger the DAG gets Airflow's 403, not pgdr's message;
- the documentation linked from the DAGs opens in the browser for a logged-in user (/pgdr-docs);
- pg_backup_daily's graph names each task's kind ("logical backup", "seal base backup") and its mapped
  tasks are listed by database name, not [0].

Screenshots of each step are kept under the module's temporary directory (``screens/``), or under
``PGDR_SCREENS_DIR`` when set. Other bad values (a relative target_dir, a table without its schema,
...) are refused by the same validation; tests/test_forms_readable.py checks them without a browser.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from harness.airflow_services import (
    USERNAME,
    AirflowServices,
    ApiClient,
    start_airflow_services,
    trigger,
    wait_for_dags,
    wait_for_run,
)
from harness.stack import CONN_ID, DBNAME, RESTORE_CONN_ID
from harness.synthetic import fingerprint

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]
SECTION = {"database": "What to restore", "backup": "What to restore", "point_in_time": "What to restore",
           "tables": "What to restore", "target_conn_id": "Where to restore it",
           "target_database": "Where to restore it", "target_dir": "Where to restore it", "confirm": "Safety"}
# the form as it opens: what a run started without touching anything gets
DEFAULT_CONF = {"database": CONN_ID, "backup": "latest", "point_in_time": None, "kind": "database",
                "mode": "new_database", "tables": None, "target_conn_id": None, "target_database": None,
                "target_dir": None, "confirm": None}
VIEWER = "vera_viewer"   # may read every DAG, may not trigger one
# what a person should never have to read: a jsonschema dump or a regex
NOT_PLAIN = re.compile(r"\^\(|\^\[|\)\?\$|\]\*|\]\{|does not match|Failed validating|On instance")
KIND_LABEL = {"files": "Uploaded files", "config": "Configuration files"}
MODE_LABEL = {"replace": "Replace the live database", "tables": "Single tables"}


@dataclass
class Deployment:
    services: AirflowServices
    api: ApiClient
    screens: Path
    source: dict  # the database's fingerprint when the backup was taken
    backup_run: str  # the pg_backup_daily run that took it


def _restored_databases(cluster) -> set[str]:
    return {name for name in cluster.database_names() if name.startswith(f"{DBNAME}_restored_")}


@pytest.fixture(scope="module")
def deployment(stack, tmp_path_factory):
    """Airflow's services with one real backup of the care_commons database in S3."""
    home = tmp_path_factory.mktemp("restore-form")
    env = stack.airflow_env()
    env.update({"AIRFLOW_VAR_PGDR_STAGING_DIR": str(home / "staging"),
                "AIRFLOW_VAR_PGDR_S3_PREFIX": f"form/{os.urandom(4).hex()}"})
    restored_before = _restored_databases(stack.cluster)
    services = start_airflow_services(home, env, users={VIEWER: "viewer"})
    try:
        api = services.api()
        wait_for_dags(services, api, {"pg_backup_daily", "pg_restore"})
        source = fingerprint(stack.cluster, DBNAME)
        backup_run = trigger(api, "pg_backup_daily", {})
        wait_for_run(services, api, "pg_backup_daily", backup_run)
        screens = Path(os.environ.get("PGDR_SCREENS_DIR") or home / "screens")
        screens.mkdir(parents=True, exist_ok=True)
        yield Deployment(services, api, screens, source, backup_run)
    finally:
        services.stop()
        for name in _restored_databases(stack.cluster) - restored_before:
            stack.cluster.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def browser():
    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture(scope="module")
def page(deployment, browser):
    """One browser session for the module, logged in through the SimpleAuthManager login page."""
    context = browser.new_context(viewport={"width": 1400, "height": 1100})
    context.set_default_timeout(60_000)
    page = context.new_page()
    page.goto(f"{deployment.services.base_url}/auth/login")
    page.get_by_label("Username").fill(USERNAME)
    page.get_by_label("Password").fill(deployment.services.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"{deployment.services.base_url}/")
    try:
        yield page
    finally:
        context.close()


@pytest.fixture()
def paused(deployment):
    """pg_restore paused: runs submitted from the form are created but never start."""
    deployment.api.patch("/api/v2/dags/pg_restore", {"is_paused": True})


def _open_form(page, deployment):
    page.goto(f"{deployment.services.base_url}/dags/pg_restore")
    page.get_by_role("button", name="Trigger").first.click()
    dialog = page.get_by_role("dialog")
    dialog.get_by_role("button", name="What to restore").wait_for()
    return dialog


def _expand(dialog, section: str) -> None:
    button = dialog.get_by_role("button", name=section, exact=True)
    if button.get_attribute("aria-expanded") != "true":
        button.click()


def _fill(dialog, name: str, value: str) -> None:
    _expand(dialog, SECTION[name])
    dialog.locator(f"#element_{name}").fill(value)


def _choose(page, dialog, label: str, option: str) -> None:
    """Pick ``option`` (the start of its displayed text) in the select whose label starts with ``label``."""
    _expand(dialog, "What to restore")
    combobox = dialog.locator("label").filter(has_text=re.compile(f"^{label}")).first.get_attribute("for")
    dialog.locator(f'[id="{combobox}"]').click()
    page.get_by_role("option", name=re.compile(f"^{re.escape(option)}")).click()


def _keep_paused(dialog) -> None:
    dialog.get_by_text("Unpause pg_restore on trigger").click()
    assert not dialog.get_by_role("checkbox").is_checked()


def _submit(page, dialog):
    """Click the form's Trigger button; the api-server's answer to the POST it sends."""
    button = dialog.get_by_role("button", name="Trigger", exact=True)
    assert button.is_enabled()
    with page.expect_response(lambda r: r.url.endswith("/api/v2/dags/pg_restore/dagRuns")
                              and r.request.method == "POST") as response:
        button.click()
    return response.value


def _runs(api: ApiClient) -> list[dict]:
    return api.get("/api/v2/dags/pg_restore/dagRuns", params={"limit": 100})["dag_runs"]


def test_the_default_form_is_valid_submits_and_the_restore_brings_every_row_back(deployment, page, stack):
    dialog = _open_form(page, deployment)
    for section in ("What to restore", "Where to restore it", "Safety"):
        _expand(dialog, section)
    labels = [text.strip() for text in dialog.locator("label").all_text_contents()]
    assert sorted(text.rstrip("* ") for text in labels if text.endswith("*")) == ["Backup", "Database", "Kind", "Mode"]
    page.screenshot(path=deployment.screens / "default-form.png", full_page=True)
    for section in ("What to restore", "Where to restore it"):   # each section's fields as a person reads them
        _expand(dialog, section)
        dialog.get_by_role("button", name=section, exact=True).scroll_into_view_if_needed()
        page.screenshot(path=deployment.screens / f"form-{section.lower().replace(' ', '-')}.png", full_page=True)
    response = _submit(page, dialog)
    assert response.status == 200, response.text()
    run = response.json()
    assert run["conf"] == DEFAULT_CONF and run["triggered_by"] == "ui" and run["triggering_user_name"] == USERNAME
    outcome = wait_for_run(deployment.services, deployment.api, "pg_restore", run["dag_run_id"])
    states = dict(outcome["states"])
    assert states.pop("approve[-1]") == "skipped" and set(states.values()) == {"success"}, outcome["states"]
    restored = max(_restored_databases(stack.cluster))
    assert fingerprint(stack.cluster, restored) == deployment.source


CASES = {
    "new database from a backup id": {"backup": "20261126T020000Z", "target_conn_id": RESTORE_CONN_ID,
                                      "target_database": "cc_from_form"},
    "replace": {"mode": "replace", "confirm": f"RESTORE {CONN_ID}"},
    "tables as of a time with an offset": {"mode": "tables", "tables": ["public.visits", "public.clients"],
                                           "point_in_time": "2026-11-26T09:30:00-05:00"},
    # into a new cluster: a target database with a point in time is refused in the form (pgdr's check)
    "point in time latest": {"point_in_time": "latest"},
    "files": {"kind": "files", "target_dir": "/srv/restore/files"},
    "config into a non-empty directory": {"kind": "config", "target_dir": "/srv/restore/config",
                                          "confirm": f"RESTORE {CONN_ID}"},
}


@pytest.mark.parametrize("typed", CASES.values(), ids=CASES.keys())
def test_each_kind_and_mode_can_be_filled_and_submitted(deployment, page, paused, typed):
    dialog = _open_form(page, deployment)
    _keep_paused(dialog)
    if "kind" in typed:
        _choose(page, dialog, "Kind", KIND_LABEL[typed["kind"]])
    if "mode" in typed:
        _choose(page, dialog, "Mode", MODE_LABEL[typed["mode"]])
    for name, value in typed.items():
        if name not in ("kind", "mode"):
            _fill(dialog, name, "\n".join(value) if isinstance(value, list) else value)
    response = _submit(page, dialog)
    assert response.status == 200, response.text()
    run = deployment.api.get(f"/api/v2/dags/pg_restore/dagRuns/{response.json()['dag_run_id']}")
    assert run["conf"] == {**DEFAULT_CONF, **typed}
    assert run["state"] == "queued" and deployment.api.get("/api/v2/dags/pg_restore")["is_paused"] is True


BAD = {
    "confirm": "yes",
    "backup": "2026-11-26",
    "point_in_time": "2026-11-26T14:30:00",  # no zone: it would silently be read as UTC
}


@pytest.mark.parametrize(("field", "value"), BAD.items(), ids=BAD.keys())
def test_a_bad_value_is_refused_with_a_message_naming_the_field_and_nothing_runs(deployment, page, paused,
                                                                                field, value):
    runs_before = _runs(deployment.api)
    dialog = _open_form(page, deployment)
    _keep_paused(dialog)
    _fill(dialog, field, value)
    response = _submit(page, dialog)
    assert response.status == 400, response.text()
    shown = dialog.get_by_text(f"Check param {field}: restore refused, nothing was changed")
    shown.wait_for()
    assert repr(value) in shown.inner_text() and not NOT_PLAIN.search(shown.inner_text()), shown.inner_text()
    shown.scroll_into_view_if_needed()
    page.screenshot(path=deployment.screens / f"refused-{field}.png")
    assert _runs(deployment.api) == runs_before


def test_three_bad_fields_are_all_named_at_once_in_plain_words_and_nothing_runs(deployment, page, paused):
    runs_before = _runs(deployment.api)
    dialog = _open_form(page, deployment)
    _keep_paused(dialog)
    for field, value in BAD.items():
        _fill(dialog, field, value)
    response = _submit(page, dialog)
    assert response.status == 400, response.text()
    shown = dialog.get_by_text("Check params backup, confirm and point_in_time: restore refused, nothing was "
                               "changed: 3 problems to fix:")
    shown.wait_for()
    text = shown.inner_text()
    for words in ("backup '2026-11-26' is neither 'latest' nor a backup id",
                  "confirm 'yes' is not the confirmation: type exactly 'RESTORE care_commons_db'",
                  "point_in_time '2026-11-26T14:30:00' has no time zone"):
        assert words in text, text
    assert not NOT_PLAIN.search(text) and "Invalid input" not in text, text
    shown.scroll_into_view_if_needed()
    page.screenshot(path=deployment.screens / "refused-three-fields.png")
    assert _runs(deployment.api) == runs_before


def test_a_user_who_may_not_trigger_gets_airflows_403_not_pgdrs_check(deployment):
    viewer = deployment.services.api(user=VIEWER)
    response = viewer.post("/api/v2/dags/pg_restore/dagRuns", expect=403,
                           body={"logical_date": None, "conf": {"backup": "2026-11-26", "confirm": "yes"}})
    assert "restore refused" not in response.text and CONN_ID not in response.text


def test_the_dag_documentation_links_open_for_a_logged_in_user(deployment, page, browser):
    page.goto(f"{deployment.services.base_url}/pgdr-docs/RUNBOOK_DISASTER_RECOVERY.md")
    page.get_by_role("heading").first.wait_for()
    assert page.title() == "RUNBOOK_DISASTER_RECOVERY.md"
    page.screenshot(path=deployment.screens / "docs-runbook.png")
    page.goto(f"{deployment.services.base_url}/pgdr-docs/")
    assert page.get_by_role("link", name="retention.md").count() == 1
    stranger = browser.new_context()
    try:
        assert stranger.request.get(f"{deployment.services.base_url}/pgdr-docs/retention.md").status == 401
    finally:
        stranger.close()


def test_the_backup_graph_names_each_kind_and_mapped_tasks_by_database(deployment, page):
    run = deployment.backup_run
    instances = deployment.api.get(f"/api/v2/dags/pg_backup_daily/dagRuns/{run}/taskInstances",
                                   params={"limit": 100})["task_instances"]
    shown = {(ti["task_id"], ti["task_display_name"], ti["rendered_map_index"]) for ti in instances
             if ti["map_index"] >= 0 and ti["state"] == "success"}
    assert ("backup.dump_and_upload", "logical backup", CONN_ID) in shown, shown
    assert ("backup.verify_and_seal", "seal logical backup", CONN_ID) in shown, shown
    page.goto(f"{deployment.services.base_url}/dags/pg_backup_daily/runs/{run}/tasks/backup.dump_and_upload/mapped")
    cell = page.get_by_role("cell", name=CONN_ID, exact=True)
    cell.first.wait_for()
    page.screenshot(path=deployment.screens / "mapped-by-database.png", full_page=True)
    page.goto(f"{deployment.services.base_url}/dags/pg_backup_daily/runs/{run}?mode=graph")
    page.get_by_text("seal logical backup").first.wait_for()
    page.screenshot(path=deployment.screens / "backup-run-task-instances.png", full_page=True)
