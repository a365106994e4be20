"""The import layering of pgdr, read from the source (no module is imported).

* Airflow is imported at module level only by the Airflow surface: operators/, and the modules
  DAG files import at parse time (assets, deadlines). Everything else imports it inside functions,
  so the WAL receiver, the CLI and the pure modules load without Airflow.
* DAG files import only the Airflow surface of pgdr: operators, settings, alerts (failure callback),
  deadlines, assets, errors. Business logic stays out of dags/.
* Pure modules (planning, policy, formats) pull in no I/O library at module level, directly or
  through another pgdr module they import: they are unit-tested without services.
* The library never imports its operators, and neither the library nor dags/ imports the test harness.
* Sub-packages by lifecycle stage (docs/architecture.md, issue 13) import only from lower layers, lazy
  imports included: core <- store <- wal <- backup <- {verify, restore, retain} <- drill <- {alerts, report}
  <- operators, with settings and errors importable from anywhere. Every module lives in a sub-package
  except those few (TOP_LEVEL), and the shims that keep old paths working import nothing else.

ruff's TID253 (pyproject.toml) reports the first rule in an editor; this test also follows imports
through other modules.
"""

from __future__ import annotations

import ast
import functools
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT / "plugins" / "pgdr"
DAGS = ROOT / "dags"

# Airflow surface outside operators/: DAG files import these while the scheduler parses them
AIRFLOW_AT_MODULE_LEVEL = {"assets.py", "deadlines.py", "alerts/deadlines.py"}
DAG_MAY_IMPORT = ("pgdr.operators", "pgdr.settings", "pgdr.alerts", "pgdr.deadlines", "pgdr.assets",
                  "pgdr.errors")
IO_LIBRARIES = {"airflow", "boto3", "botocore", "psycopg2", "psycopg", "slack_sdk", "requests", "subprocess",
                "socket"}
# lower layers first; a module may import its own sub-package and any sub-package of a lower layer
LAYERS = [{"core"}, {"store"}, {"wal"}, {"backup"}, {"verify", "restore", "retain"}, {"drill"}, {"alerts", "report"},
          {"operators"}]
# modules of today that hold logic only: what to keep, what to refuse, what a record says
PURE = ["retain.gfs", "retain.data_policy", "store.manifest", "store.catalog", "alerts.policy", "core.redaction",
        "errors", "restore.pitr_plan", "restore.request", "core.checksums", "core.progress", "drill.markers",
        "core.sqlfiles", "core.settings_checks", "drill.checks", "report.rto_table", "report.history", "report.charts",
        "wal.names", "wal.archive", "store.layout", "alerts.messages", "retain.object_lock", "retain.data_checks",
        "restore.names", "restore.sql_rewrite", "restore.plan", "drill.rto"]
# the only modules outside a sub-package: what every stage reads, and the old paths kept as shims
TOP_LEVEL = {"__init__.py", "settings.py", "errors.py", "assets.py", "deadlines.py", "wal_receiver.py",
             "rto_table.py", "history.py"}


@functools.cache
def _imports(path: Path, module_level_only: bool) -> list[tuple[str, int]]:
    """(absolute module name, line) of each import; ``from pgdr import x`` counts as ``pgdr.x``."""
    tree = ast.parse(path.read_text(), filename=str(path))
    if module_level_only:
        nodes, todo = [], list(tree.body)
        while todo:   # module level includes the bodies of if/try at module level, not of def/class
            node = todo.pop()
            nodes.append(node)
            if isinstance(node, (ast.If, ast.Try)):
                todo += node.body + node.orelse + getattr(node, "finalbody", [])
                todo += [s for h in getattr(node, "handlers", []) for s in h.body]
    else:
        nodes = list(ast.walk(tree))
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:   # relative: resolve against the file's package
                base = path.relative_to(PKG.parent).with_suffix("").parts[:-node.level]
                module = ".".join(base + ((node.module,) if node.module else ()))
            else:
                module = node.module
            found.append((module, node.lineno))
            found += [(f"{module}.{alias.name}", node.lineno) for alias in node.names
                      if _source(f"{module}.{alias.name}") is not None]
    return found


def _source(module: str) -> Path | None:
    """The file of a pgdr module or package, or None (not pgdr, or a name inside a module)."""
    parts = module.split(".")
    if parts[0] != "pgdr":
        return None
    base = PKG.joinpath(*parts[1:])
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _loaded_with(module: str) -> list[str]:
    """pgdr modules executed by ``import module``: itself, its parent packages, and what they import at
    module level, transitively."""
    parts = module.split(".")
    todo = [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    seen: list[str] = []
    while todo:
        name = todo.pop()
        if name in seen or _source(name) is None:
            continue
        seen.append(name)
        for imported, _ in _imports(_source(name), module_level_only=True):
            parts = imported.split(".")
            todo += [".".join(parts[:i]) for i in range(1, len(parts) + 1)]
    return seen


def _rel(path: Path) -> str:
    return path.relative_to(PKG).as_posix()


LIBRARY = sorted(p for p in PKG.rglob("*.py") if "operators" not in p.relative_to(PKG).parts)


def test_airflow_is_imported_at_module_level_only_by_the_airflow_surface():
    offenders = [f"plugins/pgdr/{_rel(p)}:{line} imports {name}" for p in LIBRARY
                 if _rel(p) not in AIRFLOW_AT_MODULE_LEVEL
                 for name, line in _imports(p, module_level_only=True) if name.split(".")[0] == "airflow"]
    assert not offenders, ("import Airflow inside the function that needs it (only operators/ and "
                           f"{sorted(AIRFLOW_AT_MODULE_LEVEL)} import it at module level): {offenders}")


def test_dag_files_import_only_the_airflow_surface_of_pgdr():
    dag_files = sorted(DAGS.glob("*.py"))
    assert dag_files
    offenders = [f"dags/{p.name}:{line} imports {name}" for p in dag_files
                 for name, line in _imports(p, module_level_only=False)
                 if name.split(".")[0] == "pgdr" and name != "pgdr"
                 and not any(name == allowed or name.startswith(allowed + ".") for allowed in DAG_MAY_IMPORT)]
    assert not offenders, f"DAG files may import only {DAG_MAY_IMPORT} from pgdr: {offenders}"


@pytest.mark.parametrize("module", PURE)
def test_pure_modules_load_no_io_library(module):
    assert _source(f"pgdr.{module}") is not None, f"pgdr.{module} has moved; list its new home in PURE"
    offenders = [f"{name} ({_rel(_source(loaded))}:{line})" for loaded in _loaded_with(f"pgdr.{module}")
                 for name, line in _imports(_source(loaded), module_level_only=True)
                 if name.split(".")[0] in IO_LIBRARIES]
    assert not offenders, f"importing pgdr.{module} loads I/O libraries at module level: {offenders}"


def test_the_library_never_imports_its_operators_nor_the_test_harness():
    offenders = [f"plugins/pgdr/{_rel(p)}:{line} imports {name}" for p in LIBRARY
                 for name, line in _imports(p, module_level_only=False)
                 if name.startswith("pgdr.operators") or name.split(".")[0] in ("harness", "tests")]
    offenders += [f"dags/{p.name}:{line} imports {name}" for p in sorted(DAGS.glob("*.py"))
                  for name, line in _imports(p, module_level_only=False)
                  if name.split(".")[0] in ("harness", "tests")]
    assert not offenders, offenders


def _layer_violations() -> list[str]:
    layer_of = {package: rank for rank, packages in enumerate(LAYERS) for package in packages}
    found = []
    for path in sorted(PKG.rglob("*.py")):
        parts = path.relative_to(PKG).parts
        if len(parts) < 2 or parts[0] not in layer_of:
            continue
        for name, line in _imports(path, module_level_only=False):
            target = name.split(".")
            if target[0] != "pgdr" or len(target) < 2 or target[1] == parts[0] or target[1] not in layer_of:
                continue
            message = f"plugins/pgdr/{_rel(path)}:{line} ({parts[0]}) imports pgdr.{target[1]}"
            if layer_of[target[1]] >= layer_of[parts[0]] and message not in found:
                found.append(message)
    return found


def test_sub_packages_import_only_from_lower_layers():
    violations = _layer_violations()
    assert not violations, ("a sub-package may import only from a lower layer (" +
                            " <- ".join("/".join(sorted(layer)) for layer in LAYERS) + f"): {violations}")


def test_every_module_lives_in_a_sub_package_of_its_stage():
    flat = sorted(p.name for p in PKG.glob("*.py") if p.name not in TOP_LEVEL)
    assert not flat, f"put these modules in the sub-package of their lifecycle stage (docs/architecture.md): {flat}"


def test_the_shims_only_point_at_the_new_home():
    """Old paths kept for what outside code runs by name (python -m, the triggerer's callback path)."""
    for name, home in [("deadlines", "pgdr.alerts.deadlines"), ("wal_receiver", "pgdr.wal.receiver"),
                       ("rto_table", "pgdr.report.rto_table"), ("history", "pgdr.report.")]:
        imported = {n for n, _ in _imports(PKG / f"{name}.py", module_level_only=False) if n.startswith("pgdr")}
        assert imported and all(n.startswith(home) for n in imported), (name, imported)


def test_the_checks_see_a_module_level_import_through_another_module(tmp_path, monkeypatch):
    """The transitive check is not vacuous: a pure-looking module importing an I/O module is caught."""
    fake = tmp_path / "pgdr"
    fake.mkdir()
    (fake / "__init__.py").write_text("")
    (fake / "io_thing.py").write_text("import boto3\n")
    (fake / "looks_pure.py").write_text("from pgdr import io_thing\n\ndef f():\n    import psycopg2\n")
    monkeypatch.setattr(sys.modules[__name__], "PKG", fake)
    assert set(_loaded_with("pgdr.looks_pure")) == {"pgdr", "pgdr.looks_pure", "pgdr.io_thing"}
    names = {n for m in _loaded_with("pgdr.looks_pure") for n, _ in _imports(_source(m), module_level_only=True)}
    assert "boto3" in names and "psycopg2" not in names


def test_the_layer_check_sees_an_upward_or_sideways_import(tmp_path, monkeypatch):
    fake = tmp_path / "pgdr"
    for package in ("store", "verify", "restore"):
        (fake / package).mkdir(parents=True)
        (fake / package / "__init__.py").write_text("")
    (fake / "__init__.py").write_text("")
    (fake / "store" / "s3.py").write_text("from pgdr.settings import load\n\ndef f():\n    from pgdr.verify import x\n")
    (fake / "verify" / "wal.py").write_text("from pgdr.store import s3\nfrom pgdr.restore import plan\n")
    (fake / "restore" / "plan.py").write_text("from pgdr import errors\nfrom pgdr.store.s3 import f\n")
    monkeypatch.setattr(sys.modules[__name__], "PKG", fake)
    violations = _layer_violations()
    assert len(violations) == 2, violations
    assert violations[0].endswith("store/s3.py:4 (store) imports pgdr.verify")
    assert violations[1].endswith("verify/wal.py:2 (verify) imports pgdr.restore")


def test_the_architecture_doc_maps_every_module():
    doc = (ROOT / "docs" / "architecture.md").read_text()
    missing = [_rel(p) for p in sorted(PKG.rglob("*.py")) if p.name != "__init__.py" and f"`{_rel(p)}`" not in doc
               and f"`{p.name}`" not in doc]
    assert not missing, f"docs/architecture.md's module map does not list: {missing}"


def test_only_the_store_reaches_the_s3_client():
    """The store is the only door to S3: no module elsewhere calls the boto3 client or imports botocore
    (core/envelope.py holds its own KMS client, not S3's)."""
    offenders = []
    for path in LIBRARY:
        if _rel(path).startswith("store/") or _rel(path) == "core/envelope.py":
            continue
        text = path.read_text()
        offenders += [f"plugins/pgdr/{_rel(path)}:{n}" for n, line in enumerate(text.splitlines(), 1)
                      if ".client." in line or "store.client" in line or "botocore" in line]
    assert not offenders, f"use the store's door methods (store/s3.py) instead: {offenders}"
