"""The tests' own helpers, by concern: plain functions and classes that test files import by name
(``from tests.support.dags import run_dag``). Fixtures stay in tests/conftest.py, which imports from here.

``tests`` itself has no ``__init__.py``: test modules keep their plain names (``test_restore``,
``conftest``) under pytest's default import mode, and ``tests`` resolves as a namespace package from
the repository root, which tests/conftest.py puts on ``sys.path``. tests/test_support_package.py checks
that ``tests.support`` is this folder and not some installed ``tests`` package.

Nothing here imports Airflow at module level: tests/conftest.py sets Airflow's home up before any
Airflow import, and imports these modules.
"""
