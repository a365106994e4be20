"""The table of measured recovery times in docs/DISASTER_RECOVERY.md, generated from drill records.

Every run of ``pg_restore_test`` writes one record per database to
``<prefix>/reports/drill/<time>-<database>.json`` (see :mod:`pgdr.operators.drill`). This
module renders those records as a markdown table, newest first, and puts it between the
markers ``<!-- rto-table:start -->`` and ``<!-- rto-table:end -->`` of the document, so the
figures in the DR plan are the ones the drills measured, never typed by hand.

:func:`render_table` and :func:`update_document` are pure. The command line reads the records
from a directory of JSON files or from S3 through pgdr's own settings and store::

    PYTHONPATH=plugins python -m pgdr.rto_table --from-dir bench/results/drills
    PYTHONPATH=plugins python -m pgdr.rto_table --from-s3      # AIRFLOW_VAR_PGDR_*, AIRFLOW_CONN_BACKUP_S3

A record of a drill that failed early lacks most fields; its row shows a dash for each.
Records carry ids, sizes and times only (never row data), and so does the table.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Iterable
from datetime import datetime, timezone
from pathlib import Path

from pgdr.errors import PgdrError
from pgdr.report.history import MISSING, as_number
from pgdr.report.history import format_duration as _duration
from pgdr.report.history import format_size as _size

START_MARKER = "<!-- rto-table:start -->"
END_MARKER = "<!-- rto-table:end -->"
DEFAULT_DOC = Path("docs/DISASTER_RECOVERY.md")
NO_RECORDS = ("_No drill records yet. `pg_restore_test` writes one per protected database each month to "
              "`<prefix>/reports/drill/`; regenerate this table with `make rto-table`._")
COLUMNS = ("Date (UTC)", "Database", "Backup", "Restored size", "Download + restore", "Verify", "RTO",
           "Projected RTO (current size)", "Budget", "Status")


class RtoTableError(PgdrError, ValueError):
    """The document or the records cannot be used; the message says which and why."""


# --- formatting --------------------------------------------------------------------------------

def _seconds(value) -> str:
    number = as_number(value)
    return MISSING if number is None else f"{number:.1f} s"


def _when(record: dict) -> datetime | None:
    for field in ("started_at", "finished_at"):
        value = record.get(field)
        if isinstance(value, str) and value:
            try:
                parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                continue
            return parsed if parsed.tzinfo else parsed.replace(tzinfo=timezone.utc)
    return None


def _date(record: dict) -> str:
    when = _when(record)
    return when.astimezone(timezone.utc).strftime("%Y-%m-%d %H:%M") if when else MISSING


def _text(value) -> str:
    if value is None or value == "":
        return MISSING
    return _cell(str(value))


def _cell(text: str) -> str:
    """One markdown table cell: no line breaks, pipes escaped."""
    return " ".join(text.split()).replace("|", "\\|")


def _stage(record: dict, name: str):
    stages = record.get("stages")
    return stages.get(name) if isinstance(stages, dict) else None


def _status(record: dict) -> str:
    status = record.get("status")
    label = str(status) if status else "unknown"
    names = []
    problems = record.get("problems")
    if isinstance(problems, list):
        for problem in problems:
            name = problem.get("problem") if isinstance(problem, dict) else problem
            if name and str(name) not in names:
                names.append(str(name))
    if label == "ok" and not names:
        return "ok"
    return _cell(f"**{label}**" + (f": {'; '.join(names)}" if names else ""))


def _sort_key(record: dict) -> tuple:
    when = _when(record)
    # newest first; records without a time last; then by database for a stable order
    return (when is None, -(when.timestamp() if when else 0.0), str(record.get("database") or ""),
            str(record.get("backup_id") or ""))


# --- the pure API ------------------------------------------------------------------------------

def render_table(records: list[dict]) -> str:
    """Drill records as a markdown table, newest first; missing fields show as a dash."""
    rows = [record for record in records if isinstance(record, dict)]
    if not rows:
        return NO_RECORDS
    lines = ["| " + " | ".join(COLUMNS) + " |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for record in sorted(rows, key=_sort_key):
        cells = [
            _date(record),
            _text(record.get("database")),
            f"`{_cell(str(record['backup_id']))}`" if record.get("backup_id") else MISSING,
            _size(record.get("restored_size_bytes")),
            _seconds(_stage(record, "download_and_restore")),
            _seconds(_stage(record, "verify")),
            _duration(record.get("rto_seconds")),
            _duration(record.get("projected_rto_seconds")),
            _duration(record.get("rto_budget_seconds")),
            _status(record),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def update_document(text: str, table: str) -> str:
    """``text`` with everything between the two markers replaced by ``table``."""
    starts, ends = text.count(START_MARKER), text.count(END_MARKER)
    if starts != 1 or ends != 1:
        raise RtoTableError(
            f"the document must hold exactly one {START_MARKER} and one {END_MARKER} line "
            f"(found {starts} and {ends}); put them where the recovery time table goes")
    start = text.index(START_MARKER) + len(START_MARKER)
    end = text.index(END_MARKER)
    if end < start:
        raise RtoTableError(f"{END_MARKER} comes before {START_MARKER}; swap them")
    return text[:start] + "\n" + table.strip("\n") + "\n" + text[end:]


# --- reading records ---------------------------------------------------------------------------

def _is_drill(document) -> bool:
    return isinstance(document, dict) and document.get("kind", "drill") == "drill"


def records_from_dir(directory: Path) -> list[dict]:
    """Every ``*.json`` drill record in ``directory`` (none when it does not exist)."""
    directory = Path(directory)
    if not directory.is_dir():
        return []
    records = []
    for path in sorted(directory.glob("*.json")):
        try:
            document = json.loads(path.read_text())
        except (OSError, ValueError) as err:
            raise RtoTableError(f"{path}: not a readable JSON drill record ({err})") from None
        if _is_drill(document):
            records.append(document)
    return records


def records_from_s3(log: logging.Logger) -> list[dict]:
    """Every drill record under ``<prefix>/reports/drill/``, read with pgdr's settings and store."""
    from pgdr.retain.object_lock import lock_date_from_settings
    from pgdr.settings import load_settings
    from pgdr.store.layout import reports_prefix
    from pgdr.store.s3 import BackupStore

    settings = load_settings()
    store = BackupStore.from_settings(settings, log, backup_lock_date=lock_date_from_settings(settings))
    keys = [key for key in store.list_keys(reports_prefix(settings.s3_prefix, "drill")) if key.endswith(".json")]
    log.info("reading %d drill record(s) from s3://%s/%s/reports/drill/", len(keys), store.bucket,
             settings.s3_prefix)
    return [document for document in (store.read_json(key) for key in sorted(keys)) if _is_drill(document)]


# --- command line ------------------------------------------------------------------------------

def main(argv: Iterable[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m pgdr.rto_table",
        description="Regenerate the recovery time table of docs/DISASTER_RECOVERY.md from restore drill records.")
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--from-dir", type=Path, metavar="DIR", help="a directory of drill record JSON files")
    source.add_argument("--from-s3", action="store_true",
                        help="<prefix>/reports/drill/*.json in the backup bucket (needs AIRFLOW_VAR_PGDR_* and "
                             "the aws connection, e.g. AIRFLOW_CONN_BACKUP_S3)")
    parser.add_argument("--doc", type=Path, default=DEFAULT_DOC, help=f"the document to update ({DEFAULT_DOC})")
    parser.add_argument("--check", action="store_true",
                        help="change nothing; exit 1 when the document's table differs from the records")
    args = parser.parse_args(list(argv) if argv is not None else None)

    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stderr)
    log = logging.getLogger("pgdr.rto_table")
    try:
        records = records_from_s3(log) if args.from_s3 else records_from_dir(args.from_dir)
    except Exception as err:  # noqa: BLE001 - a clear line, not a traceback (SettingsError, S3, JSON)
        print(f"rto_table: cannot read the drill records: {err}", file=sys.stderr)
        return 2
    try:
        text = args.doc.read_text()
        updated = update_document(text, render_table(records))
    except (OSError, RtoTableError) as err:
        print(f"rto_table: {args.doc}: {getattr(err, 'strerror', None) or err}", file=sys.stderr)
        return 2
    if args.check:
        if updated != text:
            print(f"rto_table: the table in {args.doc} differs from the {len(records)} drill record(s); "
                  "run `make rto-table`", file=sys.stderr)
            return 1
        print(f"{args.doc}: table matches {len(records)} drill record(s)", file=sys.stderr)
        return 0
    if updated != text:
        args.doc.write_text(updated)
        print(f"{args.doc}: table updated from {len(records)} drill record(s)", file=sys.stderr)
    else:
        print(f"{args.doc}: table already matches {len(records)} drill record(s)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
