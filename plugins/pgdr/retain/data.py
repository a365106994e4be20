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
from dataclasses import dataclass
from datetime import date, datetime, timezone
from pathlib import Path
from typing import Any

from pgdr.core import sqlfiles
from pgdr.retain.data_policy import Policy, PolicyError, Rule

ARCHIVE_KIND = "archive"
ARCHIVE_OBJECT = "rows.csv.zst"
ARCHIVE_MANIFEST = "archive.json"
WORK_TABLE = "pgdr_retention_work"
_DATE_TYPES = {"date", "timestamp", "timestamptz"}
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


def sql_module(conn):
    """psycopg's or psycopg2's ``sql`` module, whichever made ``conn`` (the postgres hook may use either):
    identifiers are always composed by the driver, never pasted into the text."""
    if type(conn).__module__.split(".")[0] == "psycopg2":
        from psycopg2 import sql
    else:
        from psycopg import sql
    return sql


def copy_out(conn, cur, query, handle) -> None:
    """COPY ... TO STDOUT into a binary file handle, with either driver."""
    if hasattr(cur, "copy_expert"):
        cur.copy_expert(query.as_string(conn), handle)
    else:
        with cur.copy(query) as copy:
            for block in copy:
                handle.write(block)


def report_key(prefix: str, stamp: str, database: str) -> str:
    return f"{prefix}/reports/retention/data/{stamp}/{database}.json"


def run_failure_key(prefix: str, stamp: str) -> str:
    """The report of a run that could not start (invalid settings): no database is known for sure."""
    return f"{prefix}/reports/retention/data/{stamp}/_run.json"


def archive_prefix(prefix: str, database: str, rule: Rule, stamp: str, as_of: datetime) -> str:
    """One directory per rule and attempt: a retried run (same ``stamp``) never overwrites the archive of
    rows an earlier, interrupted attempt already deleted."""
    attempt = as_of.astimezone(timezone.utc).strftime("%Y%m%dT%H%M%SZ")
    return f"{prefix}/{database}/{ARCHIVE_KIND}/{rule.qualified}/{stamp}/{attempt}-{rule.action}"


class RetentionRefused(PolicyError):
    """The session or a table is unsafe to run retention DML in; nothing was changed."""


def check_session_role(conn) -> str:
    """The session's role, refused when it is a superuser or could make itself one (see the module doc)."""
    with conn.cursor() as cur:
        cur.execute(sqlfiles.load("retention/session_role"))
        name, is_super, create_role, server_roles = cur.fetchone()
    if is_super or create_role or server_roles:
        why = ("a superuser" if is_super else "allowed to CREATEROLE" if create_role
               else f"a member of {', '.join(server_roles)}")
        raise RetentionRefused(
            f"data retention refuses to run as role {name!r}: it is {why}, and a trigger another role created on a "
            "policy table would run with those rights. Set pgdr_retention_conn_ids to a connection of a "
            "non-superuser role (ideally the tables' owner) with SELECT and DELETE/UPDATE on the policy tables; "
            "nothing was changed", field="pgdr_retention_conn_ids")
    return name


@dataclass
class TablePlan:
    """What the checks found about one rule's table: enough to build its SQL safely."""

    rule: Rule
    pk: str
    column_types: dict[str, str]             # name -> type name (date, timestamptz, ...)
    columns: list[dict[str, str]]            # name and full type, in table order (for the archive manifest)
    referencing: list[dict[str, Any]]
    sql: Any                                 # the driver's sql module (see sql_module)

    def value(self, column: str, moment: datetime) -> datetime | date:
        """``moment`` in the form the column compares with exactly (date, naive UTC or aware)."""
        kind = self.column_types[column]
        if kind == "date":
            return moment.date()
        if kind == "timestamp":
            return moment.astimezone(timezone.utc).replace(tzinfo=None)
        return moment

    def fragments(self) -> dict[str, Any]:
        pgsql = self.sql
        rule = self.rule
        names = {"date_column": pgsql.Identifier(rule.date_column)}
        if rule.soft_delete_column:
            names["soft_delete_column"] = pgsql.Identifier(rule.soft_delete_column)
        matches = pgsql.SQL(sqlfiles.load(f"retention/matches_{rule.action}").strip()).format(**names)
        exists = []
        for key in self.referencing:
            join = pgsql.SQL(" AND ").join(
                pgsql.SQL("r.{} = t.{}").format(pgsql.Identifier(child), pgsql.Identifier(parent))
                for child, parent in zip(key["child_columns"], key["parent_columns"], strict=False))
            exists.append(pgsql.SQL(sqlfiles.load("retention/referenced_by").strip()).format(
                child_table=pgsql.Identifier(key["child_schema"], key["child_table"]), join=join))
        referenced = pgsql.SQL(" OR ").join(exists) if exists else pgsql.SQL("false")
        return {"table": pgsql.Identifier(rule.schema, rule.table), "pk": pgsql.Identifier(self.pk),
                "matches": matches, "referenced": pgsql.SQL("({})").format(referenced),
                "work": pgsql.Identifier(WORK_TABLE), **names}


def _template(name: str, plan: TablePlan):
    return plan.sql.SQL(sqlfiles.load(f"retention/{name}")).format(**plan.fragments())


def check_policy_against_database(conn, policy: Policy) -> dict[str, TablePlan]:
    """Every rule's table and columns as the database has them; raises PolicyError listing each problem."""
    problems: list[str] = []
    plans: dict[str, TablePlan] = {}
    with conn.cursor() as cur:
        for rule in policy.rules:
            cur.execute(sqlfiles.load("retention/table_facts"), {"schema": rule.schema, "table": rule.table})
            facts = cur.fetchone()
            if facts is None:
                problems.append(f"rule {rule.label}: table {rule.qualified} does not exist")
                continue
            oid, pk, rls_hides, can_select, can_update, can_delete = facts
            cur.execute(sqlfiles.load("retention/table_columns"), {"oid": oid})
            described = cur.fetchall()
            columns = {name: type_name for name, type_name, _ in described}
            for role, column in (("date_column", rule.date_column), ("soft_delete_column", rule.soft_delete_column)):
                if column is None:
                    continue
                if column not in columns:
                    problems.append(f"rule {rule.label}: {role} {column!r} is not a column of {rule.qualified}")
                elif columns[column] not in _DATE_TYPES:
                    problems.append(f"rule {rule.label}: {role} {column!r} is {columns[column]}, not a date or "
                                    "timestamp")
            if len(pk) != 1:
                problems.append(f"rule {rule.label}: {rule.qualified} needs a single-column primary key "
                                f"(has {pk or 'none'}) so batches are exact")
            if rls_hides:
                problems.append(f"rule {rule.label}: row-level security on {rule.qualified} would hide rows from "
                                "this role; use a connection with BYPASSRLS (pgdr_retention_conn_ids)")
            needed = {"archive": ("DELETE", can_delete), "purge_soft_deleted": ("DELETE", can_delete),
                      "soft_delete": ("UPDATE", can_update)}[rule.action]
            for privilege, granted in (("SELECT", can_select), needed):
                if not granted:
                    problems.append(f"rule {rule.label}: this role lacks {privilege} on {rule.qualified} "
                                    "(grant it, or set pgdr_retention_conn_ids)")
            cur.execute(sqlfiles.load("retention/foreign_triggers"), {"oid": oid})
            for trigger, function, owner in cur.fetchall():
                problems.append(f"rule {rule.label}: trigger {trigger} on {rule.qualified} runs {function}(), owned "
                                f"by role {owner!r}, neither the table's owner nor a superuser: it would run with "
                                "this connection's rights")
            cur.execute(sqlfiles.load("retention/referencing_keys"), {"oid": oid})
            referencing = [dict(zip(("name", "child_schema", "child_table", "child_columns", "parent_columns"), row,
                                    strict=False))
                           for row in cur.fetchall()]
            if len(pk) == 1:
                plans[rule.label] = TablePlan(rule=rule, pk=pk[0], column_types=columns, referencing=referencing,
                                              columns=[{"name": n, "type": t} for n, _, t in described],
                                              sql=sql_module(conn))
    if problems:
        raise PolicyError(f"{policy.source}: refused before any change:\n  " + "\n  ".join(problems))
    return plans


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
                    cur.execute(_template("vacuum", plan))
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
            cur.execute(_template("count", plan), params)
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
                result["soft_deleted"] = self._batches(conn, _template("soft_delete_batch", plan), params,
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
        from pgdr.backup.logical import remove_partial_upload
        from pgdr.core.compression import compress_file
        from pgdr.core.progress import Progress
        from pgdr.store.manifest import utc_now_iso
        from pgdr.store.s3 import UploadCheckError

        rule = plan.rule
        prefix = archive_prefix(self.store.prefix, self.database, rule, self.run_stamp, self.as_of)
        key = f"{prefix}/{ARCHIVE_OBJECT}"
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
                    cur.execute(_template("archive_work_table", plan))
                    cur.execute(_template("archive_snapshot", plan), params)
                    rows = cur.rowcount
                    with open(raw, "wb") as handle:
                        copy_out(conn, cur, _template("archive_export", plan), handle)
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
            uploaded.append(f"{prefix}/{ARCHIVE_MANIFEST}")
            self.store.put_json(f"{prefix}/{ARCHIVE_MANIFEST}", manifest)
            uploaded.clear()  # verified and described: from here on the archive stands, whatever follows
            result["archived"] = rows
            result["archive"] = {"key": key, "manifest_key": f"{prefix}/{ARCHIVE_MANIFEST}", "size": digest.size,
                                 "sha256": digest.sha256}
            self.log.info("%s: %d rows archived to s3://%s/%s (%d bytes, sha256 %s, checked)", rule.label, rows,
                          self.store.bucket, key, digest.size, digest.sha256)
            deleted = taken = 0
            statement = _template("archive_delete_batch", plan)
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
        report = store.read_json_or_none(report_key(prefix, stamp, database))
        if report is None or report.get("run_id") != run_id:
            missing.append(database)
        else:
            reports.append(report)
    return reports, missing


def rule_line(rule: dict) -> str:
    parts = [f"matched {rule['matched']}"]
    if rule.get("kept_referenced"):
        parts.append(f"kept (referenced) {rule['kept_referenced']}")
    if rule.get("dry_run"):
        parts.append(f"would {rule['action'].replace('_', ' ')} {rule.get('eligible', 0)}")
    for name in ("archived", "deleted", "soft_deleted", "kept_changed"):
        if rule.get(name):
            parts.append(f"{name.replace('_', ' ')} {rule[name]}")
    return f"{rule['rule']}: " + ", ".join(parts) + f" ({rule.get('seconds', 0):.1f} s)"


def retention_alert(reports: list[dict], missing: list[str], *, dry_run: bool, log_url: str | None) -> dict:
    """The run's outcome as Block Kit: counts per rule and database, never a row."""
    from pgdr.alerts.slack import RUNBOOK, build_alert, short_error

    failed = [r for r in reports if r.get("status") != "ok"]
    lines = []
    for report in reports:
        lines.append(f"{report['database']}: {report.get('status', '?').upper()}")
        lines += [f"  {rule_line(rule)}" for rule in report.get("rules", [])]
        if report.get("error"):
            lines.append(f"  error: {short_error(report['error'])}")
    lines += [f"{database}: no report (the task failed before writing one)" for database in missing]
    all_rules = [rule for r in reports for rule in r.get("rules", [])]
    totals = {name: sum(rule.get(name, 0) for rule in all_rules)
              for name in ("matched", "archived", "deleted", "soft_deleted")}
    if dry_run:  # what acting would do: every eligible row of each action
        totals["archived"] = sum(rule["eligible"] for rule in all_rules if rule["action"] == "archive")
        totals["deleted"] = sum(rule["eligible"] for rule in all_rules if rule["action"] != "soft_delete")
        totals["soft_deleted"] = sum(rule["eligible"] for rule in all_rules if rule["action"] == "soft_delete")
    mode = "dry run, nothing changed" if dry_run else "acted"
    if failed or missing:
        return build_alert(severity="critical", title="pgdr: data retention failed",
                           facts=[("Mode", mode), ("Failed", ", ".join([r["database"] for r in failed] + missing))],
                           details="\n".join(lines),
                           next_step=f"read the task log and the report; a refused policy changed nothing. "
                                     f"See {RUNBOOK}#data-retention-failed", log_url=log_url)
    word = "Would be " if dry_run else ""
    return build_alert(severity="info", title=f"pgdr: data retention {'dry run ' if dry_run else ''}done",
                       facts=[("Mode", mode), ("Databases", len(reports)),
                              ("Rows matched", totals["matched"]),
                              (f"{word}archived".capitalize(), totals["archived"]),
                              (f"{word}deleted".capitalize(), totals["deleted"]),
                              (f"{word}soft-deleted".capitalize(), totals["soft_deleted"])],
                       details="\n".join(lines), log_url=log_url)
