"""What data retention checks before a single row changes: the session's role and every rule's table.

A rule's table, single-column primary key, columns and their date types, privileges, row-level
security and triggers are read from the live database; any problem refuses the whole policy
(:func:`check_policy_against_database`). What the checks found is a :class:`TablePlan`, from which
the SQL of each step is composed with the driver's identifiers, never pasted into the text.
Used by :mod:`pgdr.retain.data`.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime, timezone
from typing import Any

from pgdr.core import sqlfiles
from pgdr.retain.data_policy import Policy, PolicyError, Rule

WORK_TABLE = "pgdr_retention_work"
_DATE_TYPES = {"date", "timestamp", "timestamptz"}


def sql_module(conn):
    """psycopg's or psycopg2's ``sql`` module, whichever made ``conn`` (the postgres hook may use either):
    identifiers are always composed by the driver, never pasted into the text."""
    if type(conn).__module__.split(".")[0] == "psycopg2":
        from psycopg2 import sql
    else:
        from psycopg import sql
    return sql



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

    def statement(self, name: str):
        """``include/sql/retention/<name>.sql`` composed for this table (identifiers by the driver)."""
        return self.sql.SQL(sqlfiles.load(f"retention/{name}")).format(**self.fragments())


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
