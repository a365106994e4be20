"""The trigger forms as a person reads them, without a browser (issue 15, item 6).

pgdr's own validation of the pg_restore form (:func:`pgdr.restore.request.trigger_refusal`, what the
api-server plugin ``plugins/pgdr_forms.py`` answers before Airflow's jsonschema check) names every
bad field at once in plain words; each field Airflow's patterns refuse is refused by pgdr first, so
the regex dump never reaches the form; the descriptions open with the accepted format and say which
kind and mode a field is for; the DAGs' documentation links open from the UI. The browser half is
tests/test_restore_form_browser.py.
"""

from __future__ import annotations

import copy
import re

import pytest

from pgdr.restore.request import RestoreRefused, parse_request, trigger_refusal
from tests.support.dags import load_dag

PROTECTED = ["care_commons_db", "billing_db"]
# what the tests below mean by a message a person can read: no regex, no jsonschema wording
NOT_PLAIN = re.compile(r"\^\(|\^\[|\)\?\$|\]\*|\]\{|does not match|Failed validating|On instance")


def test_three_bad_fields_are_refused_at_once_each_named_in_plain_words():
    refusal = trigger_refusal({"backup": "2026-11-26", "confirm": "yes", "point_in_time": "2026-11-26T14:30:00"},
                              PROTECTED, defaults={"database": "care_commons_db"})
    assert refusal is not None and refusal.startswith(
        "Check params backup, confirm and point_in_time: restore refused, nothing was changed: 3 problems to fix: (1)")
    for field in ("backup '2026-11-26'", "confirm 'yes'", "point_in_time '2026-11-26T14:30:00' has no time zone"):
        assert field in refusal, refusal
    assert not NOT_PLAIN.search(refusal), refusal


def test_a_good_form_passes_and_the_defaults_fill_what_a_rest_caller_left_out():
    assert trigger_refusal({}, PROTECTED, defaults={"database": "care_commons_db"}) is None
    assert trigger_refusal({"mode": "replace", "confirm": "RESTORE billing_db", "database": "billing_db"},
                           PROTECTED, defaults={"database": "care_commons_db"}) is None


@pytest.fixture(scope="module")
def restore_params(airflow_db):
    return load_dag("pg_restore").params


# every value Airflow's Params refuse (tests/test_dag_integrity.py) and one per other pattern
PATTERN_REFUSED = [("point_in_time", "2026-11-26T14:30:00"), ("point_in_time", "yesterday"), ("confirm", "yes"),
                   ("backup", "2026-11-26"), ("tables", ["visits"]), ("target_dir", "relative/dir"),
                   ("target_database", "Bad-Name"), ("target_conn_id", "-bad id")]


@pytest.mark.parametrize(("field", "value"), PATTERN_REFUSED, ids=[f"{f}={v}" for f, v in PATTERN_REFUSED])
def test_every_value_the_params_refuse_pgdr_refuses_first_in_plain_words(restore_params, field, value):
    from airflow.sdk.exceptions import ParamValidationError

    params = copy.deepcopy(restore_params)
    with pytest.raises(ParamValidationError):
        params[field] = value
    refusal = trigger_refusal({field: value}, PROTECTED, defaults={"database": "care_commons_db"})
    assert refusal is not None and refusal.startswith(f"Check param {field}: restore refused, nothing was changed")
    assert not NOT_PLAIN.search(refusal), refusal


def test_a_confirmation_typed_when_none_is_needed_must_still_be_the_exact_one():
    with pytest.raises(RestoreRefused, match="confirm 'RESTORE billing_db' is not the confirmation") as refused:
        parse_request({"database": "care_commons_db", "confirm": "RESTORE billing_db"}, PROTECTED)
    assert refused.value.field == "confirm"
    assert parse_request({"database": "care_commons_db", "confirm": "RESTORE care_commons_db"}, PROTECTED).confirm


def test_each_restore_field_opens_with_its_format_and_says_what_it_is_for(restore_params):
    opening = {"database": "A protected database", "backup": "'latest' or a backup id",
               "point_in_time": "Empty, 'latest', an ISO time with its zone, or an LSN",
               "kind": "database, files or config", "mode": "new_database, replace or tables",
               "tables": "schema.table", "target_conn_id": "Empty or an Airflow connection id",
               "target_database": "Empty or a lower-case name", "target_dir": "Empty or an absolute path",
               "confirm": "Empty or exactly RESTORE <database>"}
    for name, start in opening.items():
        description = restore_params.get_param(name).description
        assert description.startswith(start), (name, description)
    applies = {"tables": "Mode tables only", "target_dir": "Kind files or config only",
               "target_database": "Kind database only", "target_conn_id": "Kind database only",
               "point_in_time": "Kind database only", "confirm": "Mode replace, or"}
    for name, words in applies.items():
        assert words in restore_params.get_param(name).description, name


def test_the_middleware_hands_every_other_request_on_untouched_body_and_all():
    """A request pgdr does not answer (another path, another DAG, a caller without a valid token) reaches
    Airflow with its body exactly as sent: the middleware reads it once and replays it."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route
    from starlette.testclient import TestClient

    from pgdr_forms import TriggerFormRefusals  # plugins/ is on sys.path (tests/conftest.py), as in Airflow

    async def echo(request):
        return JSONResponse({"path": request.url.path, "body": (await request.body()).decode()})

    app = TriggerFormRefusals(Starlette(routes=[Route("/{rest:path}", echo, methods=["GET", "POST"])]))
    body = '{"conf": {"backup": "2026-11-26", "confirm": "yes"}}'
    with TestClient(app) as client:
        for path in ("/api/v2/dags/pg_restore/dagRuns", "/api/v2/dags/pg_backup_daily/dagRuns", "/elsewhere"):
            response = client.post(path, content=body, headers={"Authorization": "Bearer not-a-token"})
            assert response.status_code == 200 and response.json() == {"path": path, "body": body}
