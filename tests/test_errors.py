"""pgdr's exceptions (pgdr.errors): one root, refusals with fields, the builtin bases kept, and no code
that reads another module's message text. Pure: no services."""

from __future__ import annotations

import ast
import pickle
from pathlib import Path

import pytest

from pgdr import errors
from pgdr.errors import RESTORE_REFUSED, PgdrError, Refused, RestoreRefused, StoreError, ToolError, WalGap

PLUGINS = Path(__file__).resolve().parent.parent / "plugins" / "pgdr"


def _cls(path: str) -> type:
    module, name = path.rsplit(".", 1)
    return getattr(__import__(module, fromlist=[name]), name)


# every refusal: nothing was changed; (class, the builtin base it had before pgdr.errors existed)
REFUSALS = [
    ("pgdr.settings.SettingsError", ValueError),
    ("pgdr.retain.data_policy.PolicyError", ValueError),
    ("pgdr.retain.data_checks.RetentionRefused", ValueError),
    ("pgdr.restore.request.RestoreRefused", ValueError),
    ("pgdr.restore.pitr_plan.AbandonedBranch", ValueError),
    ("pgdr.errors.WalGap", ValueError),
    ("pgdr.store.staging.StagingRefused", RuntimeError),
    ("pgdr.drill.markers.MarkerRefused", RuntimeError),
    ("pgdr.core.envelope.KeyProblem", RuntimeError),
    ("pgdr.core.pgtools.BackupBusy", RuntimeError),
    ("pgdr.backup.pg_dump.RowVisibilityError", RuntimeError),
    ("pgdr.backup.config.ConfigBackupError", RuntimeError),
    ("pgdr.backup.files.FileBackupError", RuntimeError),
]
# every failure: work was attempted and did not finish
FAILURES = [
    ("pgdr.core.pgtools.PgToolError", RuntimeError, ToolError),
    ("pgdr.backup.pg_basebackup.VerificationFailed", RuntimeError, ToolError),
    ("pgdr.store.s3.UploadCheckError", RuntimeError, StoreError),
    ("pgdr.core.checksums.ObjectHashError", RuntimeError, StoreError),
    ("pgdr.store.manifest.ManifestError", ValueError, StoreError),
    ("pgdr.restore.tables.RestoreFailed", RuntimeError, PgdrError),
    ("pgdr.backup.files_reader.FileRestoreError", RuntimeError, PgdrError),
    ("pgdr.backup.logical.StagingFull", OSError, PgdrError),
    ("pgdr.alerts.slack.AlreadyAlerted", RuntimeError, PgdrError),
]


@pytest.mark.parametrize("path,builtin", REFUSALS)
def test_each_refusal_is_a_refused_that_keeps_its_builtin_base(path, builtin):
    cls = _cls(path)
    assert issubclass(cls, Refused) and issubclass(cls, PgdrError)
    # code written before (except ValueError / except RuntimeError) still catches it
    assert issubclass(cls, builtin)


@pytest.mark.parametrize("path,builtin,parent", FAILURES)
def test_each_failure_is_a_pgdr_error_not_a_refusal_and_keeps_its_builtin_base(path, builtin, parent):
    cls = _cls(path)
    assert issubclass(cls, parent) and issubclass(cls, PgdrError) and issubclass(cls, builtin)
    assert not issubclass(cls, Refused)


def test_old_import_paths_name_the_same_classes():
    from pgdr.restore import request as restore_plan

    assert restore_plan.RestoreRefused is errors.RestoreRefused


def test_a_refusal_carries_its_field_and_its_reason_without_the_standard_opening():
    refused = RestoreRefused(RESTORE_REFUSED + "mode 'x' is not one of new_database", field="mode")
    assert refused.field == "mode"
    assert refused.reason == "mode 'x' is not one of new_database"
    assert str(refused) == RESTORE_REFUSED + "mode 'x' is not one of new_database"   # the text users see
    built = RestoreRefused.because("backup 20260101T000000Z does not exist", field="backup")
    assert str(built) == RESTORE_REFUSED + built.reason and built.field == "backup"
    other = Refused("setting pgdr_x: must be a number", field="pgdr_x")
    assert other.reason == str(other) and other.field == "pgdr_x"
    assert Refused("no field").field is None


def test_a_wal_gap_is_a_restore_refusal_with_its_segment():
    gap = WalGap(RESTORE_REFUSED + "the WAL archive has a gap: segment 000000010000000000000007 is missing",
                 segment="000000010000000000000007", timeline=1)
    # every handler of restore refusals (the restore form, the report, the WAL check) catches it
    with pytest.raises(RestoreRefused):
        raise gap
    assert gap.segment == "000000010000000000000007" and gap.timeline == 1
    assert gap.reason.startswith("the WAL archive has a gap")


@pytest.mark.parametrize("error", [
    WalGap("gap", segment="000000020000000000000003", timeline=2, field="point_in_time"),
    RestoreRefused(RESTORE_REFUSED + "tables must be a list", field="tables"),
])
def test_a_refusal_survives_pickling_with_its_fields(error):
    copy = pickle.loads(pickle.dumps(error))
    assert type(copy) is type(error) and str(copy) == str(error) and copy.__dict__ == error.__dict__


def test_field_carrying_refusals_name_what_they_refused(tmp_path):
    from pgdr.restore.request import parse_request
    from pgdr.store import staging

    with pytest.raises(RestoreRefused) as refused:
        parse_request({"database": "care_commons_db", "mode": "bogus"}, ["care_commons_db"])
    assert refused.value.field == "mode"
    with pytest.raises(RestoreRefused) as refused:
        parse_request({"database": "care_commons_db", "backup": "yesterday"}, ["care_commons_db"])
    assert refused.value.field == "backup"
    with pytest.raises(RestoreRefused) as refused:   # the first problem's field; every problem in the text
        parse_request({"database": "care_commons_db", "kind": "files", "point_in_time": "latest"}, ["care_commons_db"])
    assert refused.value.field == "target_dir" and "point_in_time is for databases" in str(refused.value)
    open_dir = tmp_path / "staging"
    open_dir.mkdir(mode=0o777)
    open_dir.chmod(0o777)
    with pytest.raises(staging.StagingRefused) as refused:
        staging.private_dir(str(open_dir), "care_commons_db", "restore")
    assert refused.value.field == "pgdr_staging_dir"


def test_policy_refusals_name_the_rule_or_setting(tmp_path):
    from pgdr.retain.data_policy import PolicyError, load_policy, parse_policy

    with pytest.raises(PolicyError) as refused:
        parse_policy({"version": 2, "rules": []}, floor_years=6)
    assert refused.value.field == "version"
    with pytest.raises(PolicyError) as refused:
        load_policy(tmp_path / "absent.yaml", floor_years=6)
    assert refused.value.field == "pgdr_data_retention_policy"
    with pytest.raises(PolicyError) as refused:
        parse_policy({"rules": [{"table": "public.visits"}]}, floor_years=0)
    assert refused.value.field == "pgdr_legal_floor_years"


def test_a_full_disk_is_read_from_the_tools_error_field_not_its_text(tmp_path):
    import errno

    from pgdr.backup.logical import StagingFull, staging_full
    from pgdr.core.pgtools import PgToolError

    workdir = tmp_path / "care_commons_db" / "logical" / "x.partial"
    tool = PgToolError("pg_dump: error: could not write to file \"3456.dat\": No space left on device")
    assert tool.disk_full
    full = staging_full(tool, workdir)
    assert isinstance(full, StagingFull) and full.errno == errno.ENOSPC and "pgdr_staging_dir" in str(full)
    assert isinstance(staging_full(OSError(errno.ENOSPC, "No space left on device"), workdir), StagingFull)
    assert staging_full(PgToolError("pg_dump: error: connection refused"), workdir) is None
    assert not PgToolError("pg_dump: error: connection refused").disk_full


# an exception's text read as data: str(err).split(...), "..." in str(err), error.startswith("SomeError")
_SUSPECT_NAMES = {"err", "error", "exc", "refused", "problem", "failure"}


def _reads_message_text(node: ast.AST) -> bool:
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
        target = node.func.value
        if (node.func.attr in ("split", "startswith", "endswith", "partition") and isinstance(target, ast.Call)
                and isinstance(target.func, ast.Name) and target.func.id == "str" and target.args
                and isinstance(target.args[0], ast.Name) and target.args[0].id in _SUSPECT_NAMES):
            return True
        if node.func.attr == "startswith" and node.args and isinstance(node.args[0], ast.Constant) \
                and isinstance(node.args[0].value, str) and node.args[0].value.endswith(("Refused", "Error", "Failed")):
            return True
    return False


def test_no_module_parses_a_pgdr_refusals_message():
    offenders = []
    for path in sorted(PLUGINS.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if _reads_message_text(node):
                offenders.append(f"{path.relative_to(PLUGINS)}:{node.lineno}")
    assert offenders == [], "catch the class and read its fields (pgdr.errors) instead of its text"
