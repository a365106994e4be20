"""Running the data retention policy against one database: check, count, archive, soft-delete, purge.

Order of work, per run:

1. every rule checked against the live database (table, single-column primary key, columns and their
   date types, privileges, row-level security) and its cutoff against the legal floor; any problem
   refuses the whole policy before a single row changes;
2. each rule in the policy's order: the rows it matches counted (and those other rows still reference,
   which are kept); then, unless a dry run, acted on in batches of ``batch_rows``, one short
   transaction each. Whatever is hard-deleted is archived first (``archive`` and
   ``purge_soft_deleted`` alike, so every deleted row can be loaded back): the rows to take are
   fixed and exported (one REPEATABLE READ snapshot) to
   ``<prefix>/<database>/archive/<schema.table>/<run>/<as_of>-<action>/rows.csv.zst``, server-side
   encrypted, size, S3's SHA-256 and encryption checked, ``archive.json`` written, and only then are
   they deleted, and only rows still exactly as archived;
3. ``VACUUM (ANALYZE)`` of every table changed, outside any transaction.

The session's role must not be a superuser (nor hold CREATEROLE or the server-program/file roles):
a trigger on a policy table runs with the rights of whoever fires it, so a superuser session would
let whoever can create a trigger become superuser. Triggers whose function belongs to a role other
than the table's owner, this role or a superuser are refused too. A dry run's session is read-only
(``default_transaction_read_only``): it cannot change a row.
Reports carry counts, keys and seconds, never row data.
"""

from __future__ import annotations

import logging
import shutil
import time
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from pgdr.retain.data_checks import (
    WORK_TABLE,
    TablePlan,
    check_policy_against_database,
    check_session_role,
)
from pgdr.retain.data_policy import Policy
from pgdr.store.layout import archive_prefix, data_retention_report_key, object_key

__all__ = ["ARCHIVE_KIND", "ARCHIVE_MANIFEST", "ARCHIVE_OBJECT", "DataRetention", "collect_reports", "copy_out"]

ARCHIVE_KIND = "archive"
ARCHIVE_OBJECT = "rows.csv.zst"
ARCHIVE_MANIFEST = "archive.json"
_SESSION = (
    "SET TimeZone = 'UTC'",
    "SET DateStyle = 'ISO, YMD'",
    "SET IntervalStyle = 'postgres'",
    "SET extra_float_digits = 1",
    "SET bytea_output = 'hex'",
    # With RLS hiding rows a query fails instead of silently seeing fewer: retention must see all.
    "SET row_security = off",
    # A batch waits at most this long for a row the application holds, then the run fails cleanly.
    "SET lock_timeout = '30s'",
)


def copy_out(conn, cur, query, handle) -> None:
    """COPY ... TO STDOUT into a binary file handle, with either driver."""
    if hasattr(cur, "copy_expert"):
        cur.copy_expert(query.as_string(conn), handle)
    else:
        with cur.copy(query) as copy:
            for block in copy:
                handle.write(block)


class DataRetention:
    """One database, one run of the policy."""

    def __init__(self, *, connect: Callable[[], Any], policy: Policy, database: str, store, staging_dir: Path,
                 batch_rows: int, compression_level: int, run_stamp: str, log: logging.Logger,
                 as_of: datetime | None = None) -> None:
        self.connect = connect
        self.policy = policy
        self.database = database
        self.store = store
        self.staging_dir = Path(staging_dir)
        self.batch_rows = batch_rows
        self.compression_level = compression_level
        self.run_stamp = run_stamp
        self.log = log
        self.as_of = as_of
        self.role: str | None = None

    def run(self, *, dry_run: bool, results: list[dict] | None = None) -> list[dict]:
        """Apply every rule; ``results`` fills as rules finish, so a failure still reports the ones done."""
        results = [] if results is None else results
        self.as_of = (self.as_of or datetime.now(timezone.utc)).replace(microsecond=0)
        cutoffs = self.policy.cutoffs(self.as_of)
        conn = self.connect()
        try:
            conn.autocommit = True
            with conn.cursor() as cur:
                for statement in _SESSION:
                    cur.execute(statement)
                if dry_run:
                    cur.execute("SET default_transaction_read_only = on")
            self.role = check_session_role(conn)
            plans = check_policy_against_database(conn, self.policy)
            self.log.info("policy %s: %d rules checked against the database; as of %s, legal floor %d years",
                          self.policy.source, len(self.policy.rules), self.as_of.isoformat(), self.policy.floor_years)
            touched: list[TablePlan] = []
            for rule in self.policy.rules:
                plan = plans[rule.label]
                result = self._rule(conn, plan, cutoffs[rule.label], dry_run, results)
                if result["archived"] or result["deleted"] or result["soft_deleted"]:
                    if all(p.rule.qualified != rule.qualified for p in touched):
                        touched.append(plan)
            for plan in touched:
                started = time.monotonic()
                with conn.cursor() as cur:
                    cur.execute(plan.statement("vacuum"))
                self.log.info("VACUUM (ANALYZE) %s: %.1f s", plan.rule.qualified, time.monotonic() - started)
        finally:
            conn.close()
        return results

    def _params(self, plan: TablePlan, cutoff: datetime) -> dict[str, Any]:
        rule = plan.rule
        params = {"cutoff": plan.value(rule.date_column, cutoff), "batch_rows": self.batch_rows,
                  "as_of": self.as_of}
        if rule.soft_deleted_for is not None:
            params["soft_deleted_before"] = plan.value(rule.soft_delete_column,
                                                       rule.soft_deleted_for.before(self.as_of))
        return params

    def _rule(self, conn, plan: TablePlan, cutoff: datetime, dry_run: bool, results: list[dict]) -> dict[str, Any]:
        rule = plan.rule
        started = time.monotonic()
        params = self._params(plan, cutoff)
        result: dict[str, Any] = {
            "rule": rule.label, "table": rule.qualified, "action": rule.action, "phi": rule.phi,
            "description": rule.describe(), "cutoff": str(params["cutoff"]),
            "soft_deleted_before": str(params["soft_deleted_before"]) if "soft_deleted_before" in params else None,
            "matched": 0, "kept_referenced": 0, "archived": 0, "deleted": 0, "soft_deleted": 0,
            "eligible": 0, "kept_changed": 0, "dry_run": dry_run, "status": "running",
            "phi_exemption": rule.phi_exemption,
        }
        results.append(result)  # in the report even if this rule fails half-way
        with conn.cursor() as cur:
            cur.execute(plan.statement("count"), params)
            matched, referenced = cur.fetchone()
        if rule.action == "soft_delete":
            referenced = 0  # soft-deleting removes nothing: references do not matter
        result.update(matched=matched, kept_referenced=referenced, eligible=matched - referenced)
        self.log.info("%s: %d rows match (%s), %d of them still referenced and kept", rule.label, matched,
                      rule.describe(), referenced)
        if not dry_run and matched - referenced > 0:
            if rule.action in ("archive", "purge_soft_deleted"):
                # a purge is an archive too: whatever is deleted must be loadable again (parents before children)
                self._archive(conn, plan, params, result)
            else:
                result["soft_deleted"] = self._batches(conn, plan.statement("soft_delete_batch"), params,
                                                       rule.label, matched, "soft-deleted")
        result["seconds"] = round(time.monotonic() - started, 3)
        result["status"] = "done"
        self.log.info("%s: %s", rule.label, ", ".join(f"{k} {result[k]}" for k in (
            "matched", "kept_referenced", "archived", "deleted", "soft_deleted", "seconds")))
        return result

    def _batches(self, conn, statement, params: dict, label: str, expected: int, verb: str) -> int:
        """Run a one-batch statement until it touches nothing; each run is its own transaction."""
        done, last_log = 0, time.monotonic()
        # A batch that keeps touching rows forever would mean the statement does not narrow its
        # own match; bound it by the rows counted (plus slack for rows that began to match since).
        for _ in range(expected // self.batch_rows + 10):
            with conn.cursor() as cur:
                cur.execute(statement, params)
                count = cur.rowcount
            done += count
            if time.monotonic() - last_log >= 5:
                self.log.info("%s: %d of %d rows %s", label, done, expected, verb)
                last_log = time.monotonic()
            if count == 0:
                break
        return done

    def _archive(self, conn, plan: TablePlan, params: dict, result: dict) -> None:
        from pgdr.backup.upload import remove_partial_upload
        from pgdr.core.compression import compress_file
        from pgdr.core.progress import Progress
        from pgdr.store.manifest import utc_now_iso
        from pgdr.store.s3 import UploadCheckError

        rule = plan.rule
        prefix = archive_prefix(self.store.prefix, self.database, rule.qualified, self.run_stamp, self.as_of,
                                rule.action)
        key = object_key(prefix, ARCHIVE_OBJECT)
        manifest_key = object_key(prefix, ARCHIVE_MANIFEST)
        work = self.staging_dir / self.database / "retention" / f"{self.run_stamp}.partial"
        work.mkdir(parents=True, exist_ok=True)
        raw = work / f"{rule.qualified}-{rule.action}.csv"
        uploaded: list[str] = []
        drop_work = plan.sql.SQL("DROP TABLE IF EXISTS {}").format(plan.sql.Identifier(WORK_TABLE))
        try:
            with conn.cursor() as cur:
                cur.execute(drop_work)
                cur.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
                try:
                    cur.execute(plan.statement("archive_work_table"))
                    cur.execute(plan.statement("archive_snapshot"), params)
                    rows = cur.rowcount
                    with open(raw, "wb") as handle:
                        copy_out(conn, cur, plan.statement("archive_export"), handle)
                    exported = cur.rowcount if cur.rowcount is not None and cur.rowcount >= 0 else rows
                    cur.execute("COMMIT")
                except BaseException:
                    cur.execute("ROLLBACK")
                    raise
            if exported != rows:
                raise RuntimeError(f"{rule.label}: exported {exported} rows but fixed {rows} to archive")
            compressed = compress_file(raw, work / f"{rule.qualified}-{rule.action}.csv.zst", self.compression_level,
                                       self.store.part_size)
            raw.unlink()
            digest = compressed.digest
            uploaded.append(key)
            self.store.upload_file(compressed.path, key, digest, {"rows": str(rows), "rule": rule.label},
                                   Progress(f"archive upload to s3://{self.store.bucket}", self.log))
            check = self.store.check_object(key, digest.size, digest.sha256,
                                            digest.s3_checksum(self.store.is_multipart(digest.size)))
            if not check.ok:
                raise UploadCheckError(f"archive {key} failed its post-upload check: {'; '.join(check.problems)}")
            manifest = {
                "kind": ARCHIVE_KIND, "database": self.database, "table": rule.qualified, "rule": rule.label,
                "description": rule.describe(), "cutoff": result["cutoff"], "as_of": self.as_of.isoformat(),
                "policy_sha256": self.policy.sha256, "rows": rows, "columns": plan.columns,
                "format": "csv with header (COPY ... WITH (FORMAT csv, HEADER true)), zstd",
                "restore": f"COPY {rule.qualified} FROM STDIN WITH (FORMAT csv, HEADER true) from the decompressed "
                           "object, after the archives of every table it references (docs/retention.md, load order)",
                "object": {"key": key, "size": digest.size, "sha256": digest.sha256, "raw_size": compressed.raw_size,
                           "sse": self.store.expected_sse},
                "written_at": utc_now_iso(),
            }
            uploaded.append(manifest_key)
            self.store.put_json(manifest_key, manifest)
            uploaded.clear()  # verified and described: from here on the archive stands, whatever follows
            result["archived"] = rows
            result["archive"] = {"key": key, "manifest_key": manifest_key, "size": digest.size,
                                 "sha256": digest.sha256}
            self.log.info("%s: %d rows archived to s3://%s/%s (%d bytes, sha256 %s, checked)", rule.label, rows,
                          self.store.bucket, key, digest.size, digest.sha256)
            deleted = taken = 0
            statement = plan.statement("archive_delete_batch")
            last_log = time.monotonic()
            while taken < rows:
                with conn.cursor() as cur:
                    cur.execute(statement, params)
                    batch_taken, batch_deleted = cur.fetchone()
                if batch_taken == 0:
                    break
                taken += batch_taken
                deleted += batch_deleted
                if time.monotonic() - last_log >= 5:
                    self.log.info("%s: %d of %d archived rows deleted", rule.label, deleted, rows)
                    last_log = time.monotonic()
            result["deleted"] = deleted
            result["kept_changed"] = rows - deleted
            if rows - deleted:
                self.log.warning("%s: %d archived rows changed or became referenced since the export and were kept",
                                 rule.label, rows - deleted)
        finally:
            remove_partial_upload(self.store, uploaded, self.log)
            with conn.cursor() as cur:
                cur.execute(drop_work)
            shutil.rmtree(work, ignore_errors=True)


def collect_reports(store, prefix: str, stamp: str, run_id: str, databases) -> tuple[list[dict], list[str]]:
    """This run's report of each database, and the databases that wrote none."""
    reports, missing = [], []
    for database in databases:
        report = store.read_json_or_none(data_retention_report_key(prefix, stamp, database))
        if report is None or report.get("run_id") != run_id:
            missing.append(database)
        else:
            reports.append(report)
    return reports, missing

