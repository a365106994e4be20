"""The tests' helper package: ``tests.support`` is this checkout's folder (not an installed package
called ``tests``), it imports without Airflow (tests/conftest.py imports it before Airflow is set up),
and test files import their helpers from it, never from conftest."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest

import tests.support
from tests.support import clusters, dags, paths, waiting

HERE = Path(__file__).resolve().parent


def test_tests_support_is_this_checkouts_folder():
    assert Path(tests.support.__file__).resolve() == HERE / "support" / "__init__.py"
    assert paths.REPO_ROOT == HERE.parent
    assert (paths.DAGS_DIR / "pg_backup_daily.py").is_file()


def test_support_modules_import_without_airflow():
    # a fresh interpreter, from the repository root as `make test-unit` runs: nothing pulls Airflow in
    code = ("import sys; sys.path[:0] = ['plugins', '.']\n"
            "import tests.support.clusters, tests.support.dags, tests.support.file_backups, tests.support.paths, "
            "tests.support.s3, tests.support.waiting\n"
            "print(sorted(m for m in sys.modules if m == 'airflow' or m.startswith('airflow.')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=paths.REPO_ROOT, capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


def test_no_test_file_imports_from_conftest():
    # conftest holds fixtures and hooks only; a helper a test file imports lives in tests.support
    importers = []
    for path in sorted(HERE.rglob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            names = [node.module] if isinstance(node, ast.ImportFrom) else (
                [alias.name for alias in node.names] if isinstance(node, ast.Import) else [])
            if "conftest" in names:
                importers.append(f"{path.relative_to(HERE)}:{node.lineno}")
    assert importers == [], f"import these from tests.support instead: {importers}"


def test_wait_for_returns_the_first_true_value_and_names_what_it_waited_for():
    values = iter([0, None, "ready"])
    assert waiting.wait_for(lambda: next(values), timeout=5) == "ready"
    with pytest.raises(AssertionError, match="waiting for the moon"):
        waiting.wait_for(lambda: False, timeout=0.3, what="the moon")


def test_directories_for_the_server_user():
    shared = clusters.shared_dir("pgdr-support-test-")
    received = clusters.receiver_dir()
    try:
        assert shared.stat().st_mode & 0o777 == 0o777
        assert received.stat().st_mode & 0o777 == 0o755 and not any(received.iterdir())
        if clusters.SERVER_USER:
            import pwd

            assert received.stat().st_uid == pwd.getpwnam(clusters.SERVER_USER).pw_uid
    finally:
        shared.rmdir()
        received.rmdir()


def test_environment_sets_variables_for_the_block_only(monkeypatch):
    monkeypatch.setenv("PGDR_SUPPORT_TEST_KEPT", "before")
    monkeypatch.delenv("PGDR_SUPPORT_TEST_NEW", raising=False)
    with dags.environment({"PGDR_SUPPORT_TEST_KEPT": "during", "PGDR_SUPPORT_TEST_NEW": "x"}):
        assert os.environ["PGDR_SUPPORT_TEST_KEPT"] == "during" and os.environ["PGDR_SUPPORT_TEST_NEW"] == "x"
    assert os.environ["PGDR_SUPPORT_TEST_KEPT"] == "before" and "PGDR_SUPPORT_TEST_NEW" not in os.environ
