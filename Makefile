# pgdr: `make demo` and `make test` work from a clean clone; both create the virtualenv they need.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-test.txt | sha1sum | cut -c1-12)
PYTEST := $(BIN)/python -m pytest
# two workers: one test process leaves a core idle while it waits on PostgreSQL, S3 and Airflow;
# each test file stays on one worker (its module fixtures are shared by its tests)
TEST_WORKERS ?= 2
PARALLEL := $(if $(filter-out 1,$(TEST_WORKERS)),-n $(TEST_WORKERS) --dist loadfile)

.PHONY: venv test test-fast test-unit demo bench rto-table report docs clean

# the stamp's name carries the hash of both requirements files, so only a change of its content rebuilds the venv
# (a fresh checkout or a touch gives the file a new time, never a new hash)
$(STAMP):
	rm -rf $(VENV)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --disable-pip-version-check --upgrade pip
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements.txt
	$(BIN)/pip install --quiet --disable-pip-version-check -r requirements-test.txt
	touch $(STAMP)

venv: $(STAMP)

## regenerate docs/configuration.md from the settings' declaration (plugins/pgdr/settings.py)
docs: venv
	PYTHONPATH=plugins $(BIN)/python -m pgdr.core.settings_doc > docs/configuration.md.tmp && mv docs/configuration.md.tmp docs/configuration.md

## every test, slow scale tests included (what CI runs)
test: venv
	$(PYTEST) tests $(PARALLEL)

## the fast set only: skips tests marked slow
test-fast: venv
	$(PYTEST) tests -m "not slow" $(PARALLEL)

## the pure tests only (no PostgreSQL, S3 server, Slack receiver or Airflow run), in seconds, one process;
## a test file belongs here when none of its tests needs a service
UNIT_TESTS := $(addprefix tests/test_,alert_policy.py data_policy.py errors.py fetch.py fswatch.py gfs.py history_charts.py layering.py \
	lint.py manifest.py markers.py pitr_plan.py restore_alert.py restore_plan.py rto_table.py settings.py wal_checks_unit.py \
	wal_names.py core_checksums.py core_compression.py restore_tables.py wal_continuity.py wal_gaps.py \
	wal_primary_check.py support_package.py support_tcp_proxy.py store_door.py pg_majors.py pitr_chain_space.py approval_unit.py)
test-unit: venv
	$(PYTEST) $(UNIT_TESTS)

## the whole promise on throwaway services: a synchronous WAL receiver, backups, verification, the primary killed
## under load, PITR to latest (lost 0, RTO); removes everything
demo: venv
	$(BIN)/python -m harness.demo

## backup benchmark against the bare PostgreSQL tools (builds a >= 1 GB database)
bench: venv
	$(BIN)/python bench/backup_bench.py
	$(BIN)/python bench/restore_bench.py
	$(BIN)/python bench/pitr_bench.py

## regenerate the recovery time table in docs/DISASTER_RECOVERY.md from the restore drill records:
## from S3 (<prefix>/reports/drill/) when AIRFLOW_VAR_PGDR_S3_BUCKET is set, else from bench/results/drills/
rto-table: venv
	PYTHONPATH=plugins $(BIN)/python -m pgdr.rto_table $(if $(AIRFLOW_VAR_PGDR_S3_BUCKET),--from-s3,--from-dir bench/results/drills) --doc docs/DISASTER_RECOVERY.md

## render the backup history page from S3 (AIRFLOW_VAR_PGDR_*, AIRFLOW_CONN_BACKUP_S3 as for Airflow) into
## $(REPORT); `make report UPLOAD=1` also puts it at <prefix>/reports/index.html, where pg_backup_verify does
REPORT ?= report.html
report: venv
	PYTHONPATH=plugins $(BIN)/python -m pgdr.history --out $(REPORT) $(if $(UPLOAD),--upload)

clean:
	rm -rf $(VENV) .pytest_cache
