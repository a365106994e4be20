"""The one place that strips patient data out of error text before it is logged, alerted or stored.

PostgreSQL quotes row values in its DETAIL, CONTEXT, QUERY/STATEMENT and ``LINE n:`` lines
("Failing row contains (...)", "Key (ssn)=(123-45-6789) already exists", "COPY t, line 3:
"..."") and sometimes in the primary message itself ('invalid input syntax for type date:
"..."'); pg_dump and pg_restore add the failing command ("Command was: INSERT ... VALUES ...").
A value may span several lines (a text column with a newline). Every error path (task alerts,
XCom, S3 reports, task logs, tool stderr) goes through :func:`redact_phi` or :func:`safe_error`;
both keep what an operator acts on (what failed, SQLSTATE, which constraint, table and column)
and drop the values.

How: the text is read line by line. A line that opens a data-bearing field is replaced by the
field's name and ``[redacted]``, and every following line is dropped until a line that opens a
new message (a severity such as ``ERROR:``, a field, a tool's ``pg_restore:`` prefix); so a
value's continuation lines go with it. Lines that are kept lose any value quoted inline. The one
case this cannot recognise is a value that itself contains a line starting like a new message;
psycopg2 errors avoid even that, since :func:`safe_error` builds their text from the error's
structured fields (``diag``) and never from the quoted row.
"""

from __future__ import annotations

import functools
import re

from pgdr.errors import PgdrError

REDACTED = "[redacted]"

_TOOLS = (r"pg_restore|pg_dump|pg_dumpall|pg_basebackup|pg_receivewal|pg_verifybackup|pg_combinebackup|"
          r"pg_ctl|pg_controldata|pg_isready|psql|initdb|postgres")
_SEVERITY = r"ERROR|FATAL|PANIC|WARNING|NOTICE|LOG|INFO|DEBUG[1-5]?|LOCATION"
_FIELDS = r"DETAIL|CONTEXT|HINT|QUERY|STATEMENT|WHERE"
# what may stand before a severity or field: a tool and its script position ("psql:f.sql:3: "),
# a server log line prefix ("2026-12-06 04:00:00 UTC [123] "), a Python exception name
_PREFIX = r"(?P<prefix>(?:[^\n]*?(?::\s|\]\s|\s))?)"
# a line that opens a field quoting data
_DATA_FIELD = re.compile(rf"^{_PREFIX}(?P<field>{_FIELDS}):(?:\s|$)")
# pg_dump / pg_restore echo the failing command; psql/the server echo the statement's text
_COMMAND = re.compile(rf"^(?P<prefix>(?:(?:{_TOOLS}):\s*(?:\w+:\s*)?)?)(?P<field>(?:The c|C)ommand was):")
_LINE_ECHO = re.compile(r"^(?P<prefix>\s*)(?P<field>LINE \d+):")
_CARET = re.compile(r"^\s*\^\s*$")
# a line that starts a new message: ends a data field's continuation lines
_HEADER = re.compile(rf"^(?:(?:{_TOOLS})(?::|\s)|{_PREFIX}(?:{_SEVERITY}|{_FIELDS}):\s|Traceback \(|"
                     rf"\s*File \"|The above exception|During handling of)")
# inline values in a kept line; each also drops the line's continuation
_INLINE = (
    # Key (ssn)=(123-45-6789) already exists / is not present / conflicts with existing key (...)=(...)
    re.compile(r"(?P<keep>\bKey \([^\n]*?\))=\(.*$"),
    re.compile(r"(?P<keep>\bFailing row contains)\b.*$"),
    # COPY t, line 3, column c: "..."; invalid input syntax for type x: "..."; malformed array literal: "..."
    # (not the identifier a message may open with: 'ERROR:  "t" is not a table')
    re.compile(r"(?<!ERROR)(?<!FATAL)(?<!PANIC)(?<!WARNING)(?<!NOTICE)(?<!error)(?<!warning)(?<!fatal)"
               r"(?P<keep>:\s*)\".*$"),
    # value "..." is out of range / invalid value "..." for "YYYY" / syntax error at or near "..."
    re.compile(r"(?P<keep>\b(?:value|at or near|[Tt]oken))\s+\".*$"),
    # a literal echoed in single quotes after a value-bearing phrase (e.g. "invalid input: 'x'")
    re.compile(r"(?P<keep>:\s*)'.*$"),
)


def _redact_line(line: str) -> tuple[str, bool]:
    """(the line without inline values, whether a value was cut at its end)."""
    # the earliest value wins: a value may itself contain what another pattern looks for
    matches = [m for m in (pattern.search(line) for pattern in _INLINE) if m]
    if not matches:
        return line, False
    match = min(matches, key=lambda m: m.start())
    return line[: match.start()] + match.group("keep").rstrip() + " " + REDACTED, True


def _redact(text: str) -> str:
    out: list[str] = []
    dropping = False
    for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n"):
        field = _DATA_FIELD.match(line) or _COMMAND.match(line) or _LINE_ECHO.match(line)
        if field:
            out.append(f"{field.group('prefix')}{field.group('field')}: {REDACTED}")
            dropping = True
            continue
        if _CARET.match(line):
            continue
        if dropping and not _HEADER.match(line):
            continue  # a continuation line of a value already redacted
        kept, cut = _redact_line(line)
        out.append(kept)
        dropping = cut
    return "\n".join(out)


def redact_phi(text: str) -> str:
    """``text`` without any row value PostgreSQL or its tools may have quoted in it."""
    if not text:
        return text
    try:
        return _redact(str(text))
    except Exception:  # noqa: BLE001 - never let an error's text through unchecked
        return f"{REDACTED} (error text could not be checked)"


def _diag_text(error: object) -> str | None:
    """A psycopg2 error from its structured fields: SQLSTATE, primary message, object names."""
    diag = getattr(error, "diag", None)
    sqlstate = getattr(diag, "sqlstate", None) or getattr(error, "pgcode", None)
    primary = getattr(diag, "message_primary", None)
    if not sqlstate or not primary:
        return None
    facts = [f"{name} {value}" for name, value in (
        ("schema", getattr(diag, "schema_name", None)), ("table", getattr(diag, "table_name", None)),
        ("column", getattr(diag, "column_name", None)), ("constraint", getattr(diag, "constraint_name", None)))
        if value]
    text = f"{getattr(diag, 'severity', None) or 'ERROR'}:  {redact_phi(primary)} (SQLSTATE {sqlstate}"
    text += (", " + ", ".join(facts) if facts else "") + ")"
    if getattr(diag, "message_detail", None) or getattr(diag, "context", None):
        text += f"\nDETAIL: {REDACTED}"
    return text


def safe_error(error: object) -> str:
    """An exception (or any error object) as text fit for a log line, an alert or a report."""
    try:
        structured = _diag_text(error)
    except Exception:  # noqa: BLE001 - fall back to the redacted text
        structured = None
    if structured:
        return structured
    text = str(error) or type(error).__name__
    return redact_phi(text)


class RedactedError(PgdrError, RuntimeError):
    """Stands in for an exception whose text quoted row data: its class name and redacted text.

    Raised ``from None``, so neither a traceback nor a chained exception carries the original text.
    """

    def __init__(self, original: BaseException) -> None:
        self.original_type = f"{type(original).__module__}.{type(original).__qualname__}"
        self.sqlstate = getattr(original, "pgcode", None)
        super().__init__(f"{type(original).__name__}: {safe_error(original)}")


def _chain(exc: BaseException):
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or (None if exc.__suppress_context__ else exc.__context__)


def needs_redaction(exc: BaseException) -> bool:
    """Whether the text of ``exc`` or of an exception chained to it would show row data."""
    for item in _chain(exc):
        text = str(item)
        if getattr(item, "diag", None) is not None and getattr(item, "pgcode", None):
            return True  # a database error may quote a row in any field: always rebuilt from diag
        if redact_phi(text) != text:
            return True
    return False


def redacted_exception(exc: BaseException) -> BaseException | None:
    """An exception safe to raise in place of ``exc`` (``raise new from None``), or None when
    ``exc`` and its chain carry no row data and may propagate unchanged."""
    if not needs_redaction(exc):
        return None
    if getattr(exc, "diag", None) is None:
        # the same class (callers and Airflow still tell the kinds of failure apart), redacted text
        text = safe_error(exc)
        try:
            new = type(exc)(text)
        except Exception:  # noqa: BLE001 - a class that takes other arguments
            new = None
        if new is not None and str(new) == text:
            return new.with_traceback(exc.__traceback__)
    return RedactedError(exc).with_traceback(exc.__traceback__)


def redacting(execute):
    """Decorator for an operator's ``execute``: an exception quoting row data leaves as a
    :class:`RedactedError` (traceback kept, text redacted, chain cut) so that the task log Airflow
    writes, the failure callback and XCom never see the values. Control-flow exceptions (skip,
    deferral, already alerted) carry no data and pass unchanged."""

    @functools.wraps(execute)
    def wrapper(*args, **kwargs):
        try:
            return execute(*args, **kwargs)
        except Exception as exc:
            replacement = redacted_exception(exc)
            if replacement is None:
                raise
            raise replacement from None

    wrapper.__pgdr_redacting__ = True
    return wrapper
