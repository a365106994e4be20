"""Every DAG file parses cleanly and without I/O; ids, schedules, retries, tags and docs as documented."""

import copy
import socket
from datetime import timedelta

import pytest

from tests.support.paths import REPO_ROOT

EXPECTED = {
    "pg_backup_daily": {"schedule": "0 2 * * *", "tags": {"pgdr", "backup"}},
    "pg_backup_verify": {"schedule": "0 */6 * * *", "tags": {"pgdr", "verify"}},
    "pg_restore_test": {"schedule": "0 4 1 * *", "tags": {"pgdr", "restore", "drill"}},
    "pg_restore": {"schedule": None, "tags": {"pgdr", "restore"}},
    "pg_wal_archive": {"schedule": "@continuous", "tags": {"pgdr", "wal"}},
    "pg_data_retention": {"schedule": "0 3 1 * *", "tags": {"pgdr", "retention"}},
}


@pytest.fixture(scope="module")
def dagbag(airflow_db):
    """Parse dags/ with sockets closed and Variables/Connections unreachable: parsing must not need them."""
    from airflow.dag_processing.dagbag import DagBag
    from airflow.sdk import Connection, Variable

    def refuse(*args, **kwargs):
        raise AssertionError(f"I/O during DAG parsing: {args!r}")

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(socket.socket, "connect", refuse)
        patch.setattr(Variable, "get", refuse)
        patch.setattr(Connection, "get", refuse)
        bag = DagBag(str(REPO_ROOT / "dags"))
    return bag


def test_dag_files_import_without_errors_or_io(dagbag):
    assert dagbag.import_errors == {}
    assert set(EXPECTED) <= set(dagbag.dag_ids)


@pytest.mark.parametrize("dag_id", sorted(EXPECTED))
def test_schedule_tags_docs_and_concurrency(dagbag, dag_id):
    dag = dagbag.get_dag(dag_id)
    expected = EXPECTED[dag_id]
    if expected["schedule"] is None:
        assert type(dag.timetable).__name__ == "NullTimetable"
    elif expected["schedule"] == "@continuous":
        assert type(dag.timetable).__name__ == "ContinuousTimetable"
    else:
        assert dag.timetable.expression == expected["schedule"]
        assert str(dag.timetable.timezone) in ("UTC", "Timezone('UTC')")
    assert expected["tags"] <= set(dag.tags)
    assert dag.doc_md and dag_id in dag.doc_md
    assert dag.max_active_runs == 1, "two runs at once must not be possible"
    assert dag.catchup is False


def test_backup_tasks_retry_with_backoff_and_alert_on_failure(dagbag):
    dag = dagbag.get_dag("pg_backup_daily")
    by_id = {task.task_id: task for task in dag.tasks}
    assert set(by_id) == {"protected_databases", "backup.dump_and_upload", "backup.verify_and_seal",
                          "backup.base_backup", "backup.seal_base", "backup.files_backup", "backup.seal_files",
                          "backup.config_backup", "backup.seal_config"}
    for task_id in ("backup.dump_and_upload", "backup.verify_and_seal"):
        task = by_id[task_id]
        assert task.retries == 2
        assert task.retry_exponential_backoff
        assert task.retry_delay == timedelta(minutes=5)
    for task in dag.tasks:
        callbacks = (task.on_failure_callback if isinstance(task.on_failure_callback, list)
                     else [task.on_failure_callback])
        assert any(getattr(cb, "__name__", "") == "on_task_failure" for cb in callbacks), task.task_id


def test_per_database_work_is_a_mapped_task_group(dagbag):
    dag = dagbag.get_dag("pg_backup_daily")
    group = dag.task_group_dict["backup"]
    from airflow.sdk.definitions.taskgroup import MappedTaskGroup

    assert isinstance(group, MappedTaskGroup)
    seal = dag.get_task("backup.verify_and_seal")
    assert [asset.name for asset in seal.outlets] == ["pgdr_logical_backup"]


def test_each_verification_check_is_its_own_task_and_the_report_runs_after_all(dagbag):
    dag = dagbag.get_dag("pg_backup_verify")
    checks = {f"verify.{name}" for name in ("freshness", "integrity", "deep_check", "bucket_posture", "wal")}
    assert {t.task_id for t in dag.tasks} == checks | {"protected_databases", "verify.report",
                                                        "drop_expired_replaced", "record_marker", "history_page"}
    report = dag.get_task("verify.report")
    assert checks <= report.upstream_task_ids
    assert report.trigger_rule == "all_done"
    page = dag.get_task("history_page")
    assert page.is_teardown and "verify.report" in page.upstream_task_ids


def test_restore_is_manual_only_with_a_sectioned_trigger_form(dagbag):
    dag = dagbag.get_dag("pg_restore")
    assert list(dag.allowed_run_types) == ["manual"]
    params = dag.params
    assert set(params) == {"database", "backup", "point_in_time", "kind", "mode", "tables", "target_conn_id",
                           "target_database", "target_dir", "confirm"}
    for name in params:
        schema = params.get_param(name).schema
        assert schema.get("title") and schema.get("section"), name
        assert params.get_param(name).description, name
    assert params.get_param("mode").schema["enum"] == ["new_database", "replace", "tables"]
    assert set(params.get_param("mode").schema["values_display"]) == {"new_database", "replace", "tables"}
    assert params["backup"] == "latest" and params["mode"] == "new_database"
    assert params.get_param("kind").schema["enum"] == ["database", "files", "config"] and params["kind"] == "database"
    # The UI treats a field whose type does not allow null as required: only these four are
    # (each with a default), every other field is optional and empty by default.
    required = {name for name in params if "null" not in params.get_param(name).schema["type"]}
    assert required == {"database", "backup", "kind", "mode"}
    assert all(params[name] is None for name in set(params) - required)
    assert [t.task_id for t in dag.tasks] == ["prepare", "approve", "restore", "report"]
    # the restore runs after an approval or after the approval task skipped itself (none needed)
    assert dag.get_task("restore").trigger_rule == "none_failed"
    assert dag.get_task("report").trigger_rule == "all_done"


@pytest.mark.parametrize(("field", "value", "accepted"), [
    ("point_in_time", "2026-11-26T14:30:00Z", True),
    ("point_in_time", "2026-11-26 09:30:00.5-05:00", True),
    ("point_in_time", "2026-11-26T14:30:00+0100", True),
    ("point_in_time", "latest", True),
    ("point_in_time", "0/3000060", True),
    ("point_in_time", None, True),
    ("point_in_time", "2026-11-26T14:30:00", False),  # no zone: would silently be UTC
    ("point_in_time", "yesterday", False),
    ("confirm", "RESTORE care_commons_db", True),
    ("confirm", "yes", False),
    ("backup", "20261126T020000Z", True),
    ("backup", "2026-11-26", False),
    ("tables", ["public.visits"], True),
    ("tables", ["visits"], False),
    ("target_dir", "relative/dir", False),
    ("target_database", "Bad-Name", False),
])
def test_restore_form_fields_validate_what_is_typed(dagbag, field, value, accepted):
    from airflow.sdk.exceptions import ParamValidationError

    params = copy.deepcopy(dagbag.get_dag("pg_restore").params)
    if accepted:
        params[field] = value
        params.validate()
    else:
        with pytest.raises(ParamValidationError, match=f"param {field}"):
            params[field] = value


def test_the_drill_cleans_up_in_a_teardown_so_the_run_fails_when_the_drill_does(dagbag):
    dag = dagbag.get_dag("pg_restore_test")
    drop = dag.get_task("drill.drop_scratch")
    assert drop.is_teardown
    assert "drill.restore_and_check" in drop.upstream_task_ids
