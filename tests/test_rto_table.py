"""The recovery time table of docs/DISASTER_RECOVERY.md, and the runbook anchors the alerts link to.

Pure tests: no PostgreSQL, S3 or Airflow run. The table in the document must equal what
``python -m pgdr.rto_table --from-dir bench/results/drills`` renders, so it cannot drift from the
drill records; every ``RUNBOOK#anchor`` an alert links to must be a heading of the runbook.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from pgdr.report.rto_table import (
    END_MARKER,
    NO_RECORDS,
    START_MARKER,
    RtoTableError,
    main,
    records_from_dir,
    render_table,
    update_document,
)

REPO_ROOT = Path(__file__).resolve().parents[1]
DR_DOC = REPO_ROOT / "docs" / "DISASTER_RECOVERY.md"
DRILLS_DIR = REPO_ROOT / "bench" / "results" / "drills"


def _record(**overrides) -> dict:
    record = {
        "kind": "drill", "database": "care_commons_db", "backup_id": "20261126T020000Z",
        "run_id": "scheduled__2026-12-01T04:00:00+00:00", "started_at": "2026-12-01T04:00:05+00:00",
        "finished_at": "2026-12-01T04:21:40+00:00", "status": "ok", "problems": [], "checks": [],
        "rto_seconds": 1275.4, "projected_rto_seconds": 1402.94, "rto_budget_seconds": 3600.0,
        "restored_size_bytes": 5 * 1024 ** 3, "source_size_bytes": 5.5 * 1024 ** 3,
        "stages": {"download_and_restore": 1101.2, "verify": 98.73, "total": 1199.93},
    }
    record.update(overrides)
    return record


def _rows(table: str) -> list[list[str]]:
    lines = [line for line in table.splitlines() if line.startswith("|")]
    return [[cell.strip() for cell in line.strip("|").split(" | ")] for line in lines[2:]]


# --- render_table --------------------------------------------------------------------------------

def test_a_record_renders_every_column():
    table = render_table([_record()])
    header, rule, *rows = table.splitlines()
    assert header.count("|") == rule.count("|") == 11
    assert [c.strip() for c in header.strip("|").split("|")] == [
        "Date (UTC)", "Database", "Backup", "Restored size", "Download + restore", "Verify", "RTO",
        "Projected RTO (current size)", "Budget", "Status"]
    assert _rows(table) == [["2026-12-01 04:00", "care_commons_db", "`20261126T020000Z`", "5.0 GB", "1101.2 s",
                             "98.7 s", "21 min 15 s", "23 min 23 s", "1 h 00 min", "ok"]]


def test_records_are_newest_first_whatever_order_they_come_in():
    records = [_record(started_at="2026-10-01T04:00:00+00:00", backup_id="20260930T020000Z"),
               _record(started_at="2026-12-01T04:00:00Z", backup_id="20261130T020000Z"),
               _record(started_at="2026-11-01T04:00:00+00:00", backup_id="20261031T020000Z"),
               _record(started_at=None, finished_at=None, backup_id="20260101T020000Z")]
    backups = [row[2] for row in _rows(render_table(records))]
    assert backups == ["`20261130T020000Z`", "`20261031T020000Z`", "`20260930T020000Z`", "`20260101T020000Z`"]


def test_databases_of_the_same_drill_run_keep_a_stable_order():
    records = [_record(database="z_db"), _record(database="a_db")]
    assert [row[1] for row in _rows(render_table(records))] == ["a_db", "z_db"]
    assert render_table(records) == render_table(list(reversed(records)))


def test_a_drill_that_failed_early_renders_with_dashes():
    failed = {"kind": "drill", "database": "care_commons_db", "started_at": "2026-12-01T04:00:05+00:00",
              "rto_budget_seconds": 3600, "status": "failed", "rto_seconds": None, "projected_rto_seconds": None,
              "problems": [{"problem": "restore failed",
                            "error": "RuntimeError: no complete, good backup of care_commons_db to drill with"}]}
    (row,) = _rows(render_table([failed]))
    assert row[:2] == ["2026-12-01 04:00", "care_commons_db"]
    assert row[2:8] == ["—"] * 6
    assert row[8] == "1 h 00 min"
    assert row[9] == "**failed**: restore failed"
    assert "no complete, good backup" not in render_table([failed]), "the status names problems, not errors"


def test_a_record_with_almost_nothing_still_renders():
    (row,) = _rows(render_table([{}]))
    assert row == ["—"] * 9 + ["**unknown**"]
    (row,) = _rows(render_table([{"stages": "garbage", "rto_seconds": "n/a", "restored_size_bytes": True}]))
    assert row[3:8] == ["—"] * 5


def test_failed_status_lists_each_problem_once_and_escapes_pipes():
    record = _record(status="failed", problems=[
        {"problem": "integrity check failed", "check": "foreign key a|b"},
        {"problem": "integrity check failed", "check": "foreign key c"},
        {"problem": "RTO projected for the current database size over budget"}],
        database="odd|name\nhere")
    (row_line,) = [line for line in render_table([record]).splitlines()[2:]]
    assert "**failed**: integrity check failed; RTO projected for the current database size over budget" in row_line
    assert "odd\\|name here" in row_line
    assert row_line.count(" | ") == 9


def test_short_and_long_durations():
    rows = _rows(render_table([_record(rto_seconds=42.34, projected_rto_seconds=3725, rto_budget_seconds=2700)]))
    assert rows[0][6:9] == ["42.3 s", "1 h 02 min", "45 min 00 s"]


def test_no_records_renders_the_placeholder():
    assert render_table([]) == NO_RECORDS
    assert "No drill records yet" in NO_RECORDS


# --- update_document -----------------------------------------------------------------------------

DOC = f"# Plan\n\nintro\n\n{START_MARKER}\nold table\n| a |\n{END_MARKER}\n\nafter\n"


def test_update_replaces_only_between_the_markers():
    updated = update_document(DOC, "| new |\n")
    assert updated == f"# Plan\n\nintro\n\n{START_MARKER}\n| new |\n{END_MARKER}\n\nafter\n"
    assert update_document(updated, "| new |") == updated, "idempotent"


def test_update_without_markers_is_a_clear_error():
    with pytest.raises(RtoTableError, match=re.escape(START_MARKER)):
        update_document("# Plan\n\nno markers here\n", "| t |")
    with pytest.raises(RtoTableError, match="found 1 and 0"):
        update_document(f"{START_MARKER}\n", "| t |")
    with pytest.raises(RtoTableError, match="exactly one"):
        update_document(DOC + DOC, "| t |")
    with pytest.raises(RtoTableError, match="comes before"):
        update_document(f"{END_MARKER}\n{START_MARKER}\n", "| t |")


# --- reading records and the command line ---------------------------------------------------------

def test_records_from_dir_reads_drill_json_and_skips_other_kinds(tmp_path):
    (tmp_path / "b.json").write_text(json.dumps(_record(backup_id="20261130T020000Z")))
    (tmp_path / "a.json").write_text(json.dumps(_record()))
    (tmp_path / "restore.json").write_text(json.dumps({"kind": "restore", "status": "succeeded"}))
    (tmp_path / "notes.txt").write_text("not a record")
    assert [r["backup_id"] for r in records_from_dir(tmp_path)] == ["20261126T020000Z", "20261130T020000Z"]
    assert records_from_dir(tmp_path / "missing") == []
    (tmp_path / "broken.json").write_text("{")
    with pytest.raises(RtoTableError, match="broken.json"):
        records_from_dir(tmp_path)


def test_cli_updates_the_document_and_check_reports_drift(tmp_path, capsys):
    records = tmp_path / "drills"
    records.mkdir()
    (records / "one.json").write_text(json.dumps(_record()))
    doc = tmp_path / "DR.md"
    doc.write_text(DOC)
    assert main(["--from-dir", str(records), "--doc", str(doc), "--check"]) == 1
    assert doc.read_text() == DOC, "--check changes nothing"
    assert main(["--from-dir", str(records), "--doc", str(doc)]) == 0
    assert render_table([_record()]) in doc.read_text()
    assert main(["--from-dir", str(records), "--doc", str(doc), "--check"]) == 0
    doc.write_text("# no markers\n")
    assert main(["--from-dir", str(records), "--doc", str(doc)]) == 2
    assert START_MARKER in capsys.readouterr().err


def test_the_table_in_the_dr_plan_is_what_the_drill_records_render():
    """docs/DISASTER_RECOVERY.md must hold exactly what `make rto-table` renders from bench/results/drills/."""
    text = DR_DOC.read_text()
    expected = update_document(text, render_table(records_from_dir(DRILLS_DIR)))
    assert text == expected, "the recovery time table is stale: run `make rto-table`"


def test_the_cli_module_runs_as_make_rto_table_runs_it(tmp_path):
    doc = tmp_path / "DISASTER_RECOVERY.md"
    doc.write_text(DR_DOC.read_text())
    result = subprocess.run(
        [sys.executable, "-m", "pgdr.rto_table", "--from-dir", str(DRILLS_DIR), "--doc", str(doc), "--check"],
        cwd=REPO_ROOT, env={"PYTHONPATH": str(REPO_ROOT / "plugins"), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    makefile = (REPO_ROOT / "Makefile").read_text()
    assert re.search(r"^rto-table:", makefile, re.M) and "pgdr.rto_table" in makefile


# --- runbook anchors -----------------------------------------------------------------------------

ALERT_ANCHORS = {"a-backup-failed", "verification-freshness-failed", "verification-integrity-failed",
                 "bucket-posture", "a-deadline-was-missed", "restore-refused-or-failed", "accidental-deletion",
                 "a-restore-drill-failed", "data-retention-failed"}


def github_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives the headings of a markdown document (code blocks skipped)."""
    anchors: set[str] = set()
    seen: dict[str, int] = {}
    fenced = False
    for line in markdown.splitlines():
        if line.lstrip().startswith(("```", "~~~")):
            fenced = not fenced
            continue
        match = None if fenced else re.match(r"^#{1,6}\s+(.*?)\s*#*\s*$", line)
        if not match:
            continue
        slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        anchors.add(slug if count == 0 else f"{slug}-{count}")
    return anchors


def _linked_anchors() -> set[str]:
    """Every ``{RUNBOOK}#anchor`` in pgdr's alert code, plus the verification checks' next steps."""
    from pgdr.alerts.messages import NEXT_STEPS

    found = {anchor.lstrip("#") for anchor in NEXT_STEPS.values() if anchor}
    for path in sorted((REPO_ROOT / "plugins" / "pgdr").rglob("*.py")):
        found |= set(re.findall(r"\{RUNBOOK\}#([a-z0-9-]+)", path.read_text()))
    from pgdr.alerts.messages import DEFAULT_FAILURE_SECTION, FAILURE_SECTIONS

    found |= {section.lstrip("#") for section in (DEFAULT_FAILURE_SECTION, *FAILURE_SECTIONS.values())}
    return found


def test_github_anchors_follow_githubs_rules():
    text = ("# Title\n## Verification: freshness failed\n```bash\n# not a heading\n```\n"
            "## A `pg_restore` run\n## Title\n")
    assert github_anchors(text) == {"title", "verification-freshness-failed", "a-pg_restore-run", "title-1"}


def test_every_runbook_anchor_the_alerts_link_to_is_a_heading():
    from pgdr.alerts.messages import RUNBOOK

    anchors = github_anchors((REPO_ROOT / RUNBOOK).read_text())
    linked = _linked_anchors()
    assert ALERT_ANCHORS <= linked, f"alerts no longer link to {ALERT_ANCHORS - linked}: update ALERT_ANCHORS"
    assert linked <= anchors, f"{RUNBOOK} lacks the sections {sorted(linked - anchors)}"


def test_links_between_the_dr_documents_resolve():
    docs = REPO_ROOT / "docs"
    for source in ("DISASTER_RECOVERY.md", "RUNBOOK_DISASTER_RECOVERY.md"):
        text = (docs / source).read_text()
        for target, anchor in re.findall(r"\]\(([A-Za-z_./-]*\.md)?#([a-z0-9_-]+)\)", text):
            doc = docs / target if target else docs / source
            assert doc.exists(), f"{source} links to missing {target}"
            assert anchor in github_anchors(doc.read_text()), f"{source}: no heading for {target}#{anchor}"
