"""Names of what a restore creates: databases and schemas, fitted to PostgreSQL's 63 bytes.

Pure: tested without PostgreSQL. A name pgdr makes is lower case, so it never needs quoting; a
long base is shortened at a character boundary and tagged with a short hash, so two long names
never collapse into one (PostgreSQL would truncate both silently).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pgdr.errors import RestoreRefused

if TYPE_CHECKING:
    from pgdr.restore.request import RestoreRequest

MAX_IDENTIFIER = 63
# Databases a restore never writes into, in any mode: the cluster's own.
SYSTEM_DATABASES = ("template0", "template1", "postgres")


def system_database_problem(name: str, field: str = "target_database") -> str:
    return (f"{field} {name!r} is a system database ({', '.join(SYSTEM_DATABASES)}); a restore never writes into "
            "one: choose another database")


def with_suffix(base: str, suffix: str) -> str:
    """``base`` + ``suffix``, shortening ``base`` so the result fits PostgreSQL's 63-byte names.

    The limit is in UTF-8 bytes (NAMEDATALEN), not characters: a shortened base is cut at a
    character boundary and followed by a short hash of the whole base, so two long names that
    share their first bytes still get different names (PostgreSQL would silently truncate both to
    the same one).
    """
    if len((base + suffix).encode()) <= MAX_IDENTIFIER:
        return base + suffix
    tag = "_" + hashlib.sha256(base.encode()).hexdigest()[:6]
    budget = MAX_IDENTIFIER - len(suffix.encode()) - len(tag)
    short = base.encode()[:max(budget, 0)].decode("utf-8", errors="ignore")
    return short + tag + suffix


@dataclass(frozen=True)
class RestoreNames:
    target_database: str      # where the backup ends up (new_database, replace: the live name)
    work_database: str        # the database pg_restore writes into
    kept_database: str | None  # replace: the old database, renamed and kept
    recovered_schema: str | None  # tables: the schema the tables land in


def restore_names(request: RestoreRequest, source_dbname: str, when: str) -> RestoreNames:
    """Names of everything a restore creates, from the form and the backup's database name."""
    if request.mode == "new_database":
        target = request.target_database or with_suffix(source_dbname, f"_restored_{when}")
        return RestoreNames(target, target, None, None)
    if request.mode == "replace":
        if request.target_database and request.target_database != source_dbname:
            raise RestoreRefused(f"mode 'replace' replaces {source_dbname!r}, the database the backup was taken "
                                 f"from; target_database {request.target_database!r} differs. Use mode "
                                 "'new_database' to restore under another name", field="target_database")
        if source_dbname in SYSTEM_DATABASES:
            raise RestoreRefused("restore refused, nothing was changed: mode 'replace' never replaces the system "
                                 f"database {source_dbname!r}; use mode 'new_database'", field="mode")
        return RestoreNames(source_dbname, with_suffix(source_dbname, f"_incoming_{when}"),
                            with_suffix(source_dbname, f"_replaced_{when}"), None)
    target = request.target_database or source_dbname
    if target in SYSTEM_DATABASES:
        raise RestoreRefused("restore refused, nothing was changed: " + system_database_problem(target) +
                             " (mode 'tables' with target_database empty recovers into the source database)",
                             field="target_database")
    return RestoreNames(target, with_suffix("pgdr_tables", f"_{when}"), None, f"recovered_{when}")
