"""The SQL a dump carries, rewritten for the restore's target.

The globals (``pg_dumpall --globals-only``) cut down to the roles a target cluster lacks, and the
database-level statements of ``pg_restore --create --schema-only`` pointed at a new database name,
leaving out pgdr's own comments: pure, tested without PostgreSQL. :func:`apply_missing_globals`
runs the first on a connection it is given.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable

# Comments beginning like this are pgdr's own markers (a replaced database's "keep until"): never
# carried from a dump onto a restored database, so a restore never marks a database for dropping.
PGDR_COMMENT_PREFIX = "pgdr:"

# --- globals (pg_dumpall --globals-only) -------------------------------------------------------

_IDENT = r'(?:"(?:[^"]|"")+"|[A-Za-z_][A-Za-z0-9_$]*)'
_CREATE_ROLE = re.compile(rf"^CREATE ROLE ({_IDENT});$")
_ALTER_ROLE = re.compile(rf"^ALTER ROLE ({_IDENT}) ")
_GRANT_ROLE = re.compile(rf"^GRANT ({_IDENT}) TO ({_IDENT})(?: .*)?;$")


def unquote(identifier: str) -> str:
    if identifier.startswith('"'):
        return identifier[1:-1].replace('""', '"')
    return identifier.lower()


def roles_in_globals(globals_sql: str) -> list[str]:
    return [unquote(m.group(1)) for line in globals_sql.splitlines() if (m := _CREATE_ROLE.match(line))]


def missing_role_statements(globals_sql: str, existing_roles: Iterable[str]) -> tuple[list[str], list[str]]:
    """Statements creating the roles a cluster lacks, their settings and memberships.

    Roles that exist are left exactly as they are (their attributes and passwords are
    the target's business); tablespaces are skipped (their paths belong to the old host).
    Returns (statements, roles to be created).
    """
    existing = set(existing_roles)
    missing = [role for role in roles_in_globals(globals_sql) if role not in existing]
    wanted = set(missing)
    statements = []
    for line in globals_sql.splitlines():
        if (m := _CREATE_ROLE.match(line)) or (m := _ALTER_ROLE.match(line)):
            # per-database role settings need the database, which the restore has not created yet
            if unquote(m.group(1)) in wanted and " IN DATABASE " not in line:
                statements.append(line)
        elif (m := _GRANT_ROLE.match(line)):
            if unquote(m.group(1)) in wanted or unquote(m.group(2)) in wanted:
                # GRANTED BY names a grantor that may not exist on the new cluster
                statements.append(re.sub(rf" GRANTED BY {_IDENT}", "", line))
    return statements, missing


# --- database-level statements of a dump --------------------------------------------------------

def _open_quote(text: str) -> bool:
    """Does ``text`` end inside a quoted literal or identifier?"""
    quote = ""
    for char in text:
        if quote:
            if char == quote:
                quote = ""
        elif char in "'\"":
            quote = char
    return bool(quote)


def _statements(sql_text: str) -> Iterable[str]:
    """pg_restore's plain SQL, one database-level statement per item: each line, except that a
    COMMENT whose literal spans lines is joined whole (function bodies are never scanned for quotes)."""
    lines = iter(sql_text.splitlines())
    for line in lines:
        if line.startswith("COMMENT ON DATABASE "):
            while _open_quote(line) or not line.rstrip().endswith(";"):
                following = next(lines, None)
                if following is None:
                    break
                line += "\n" + following
        yield line


def is_pgdr_comment(text: str) -> bool:
    """A comment pgdr wrote itself (a replaced database's "keep until" marker), never to be copied."""
    return text.lstrip().startswith(PGDR_COMMENT_PREFIX)


_DATABASE_STATEMENTS = [
    re.compile(rf"^(CREATE DATABASE )({_IDENT})( .*;)$", re.DOTALL),
    re.compile(rf"^(ALTER DATABASE )({_IDENT})( .*;)$", re.DOTALL),
    re.compile(rf"^(COMMENT ON DATABASE )({_IDENT})( IS .*;)$", re.DOTALL),
    re.compile(rf"^((?:GRANT|REVOKE) .* ON DATABASE )({_IDENT})( (?:TO|FROM) .*;)$", re.DOTALL),
    re.compile(rf"^(ALTER ROLE {_IDENT} IN DATABASE )({_IDENT})( SET .*;)$", re.DOTALL),
]


def quote_ident(name: str) -> str:
    """``name`` as a quoted SQL identifier: any name (upper case, '$', keywords such as order) is safe."""
    return '"' + name.replace('"', '""') + '"'


def database_statements(create_sql: str, old_name: str, new_name: str) -> tuple[str | None, list[str]]:
    """The dump's CREATE DATABASE and its database-level statements (owner, settings, per-role
    settings, comment, privileges), taken from ``pg_restore --create --schema-only`` output and pointed at ``new_name``.

    The database's name is matched however pg_dump spelled it (quoted when it is a keyword such
    as ``order`` or holds upper case or '$'); a comment pgdr wrote itself is left out.
    Returns (create statement, statements to run after the restore).
    """
    create, after = None, []
    for statement in _statements(create_sql):
        for pattern in _DATABASE_STATEMENTS:
            match = pattern.match(statement)
            if not match or unquote(match.group(2)) != old_name:
                continue
            rewritten = f"{match.group(1)}{quote_ident(new_name)}{match.group(3)}"
            if rewritten.startswith("CREATE DATABASE"):
                create = rewritten
            elif rewritten.startswith("COMMENT ON DATABASE") and is_pgdr_comment(_comment_text(match.group(3))):
                pass
            else:
                after.append(rewritten)
            break
    return create, after


def _comment_text(tail: str) -> str:
    """The text of `` IS '...';`` (E'' strings included, escapes left as they are)."""
    literal = tail[len(" IS "):].rstrip(";").strip()
    if literal[:1] in ("E", "e"):
        literal = literal[1:]
    return literal[1:-1].replace("''", "'") if literal.startswith("'") else ""


def apply_missing_globals(conn, globals_sql: str, log: logging.Logger) -> list[str]:
    """Create the roles the target lacks (with their settings and memberships); existing roles stay as they are."""
    with conn.cursor() as cur:
        cur.execute("SELECT rolname FROM pg_roles")
        existing = [row[0] for row in cur.fetchall()]
    statements, missing = missing_role_statements(globals_sql, existing)
    if not missing:
        log.info("globals: every role of the backup exists on the target; none created")
        return []
    with conn.cursor() as cur:
        cur.execute("BEGIN")
        try:
            for statement in statements:
                cur.execute(statement)
            cur.execute("COMMIT")
        except BaseException:
            cur.execute("ROLLBACK")
            raise
    log.info("globals: created %d role(s) the target lacked: %s (created without passwords; set them "
             "before the application connects)", len(missing), ", ".join(missing))
    return missing
