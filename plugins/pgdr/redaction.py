"""The one place that strips patient data out of error text before it is logged, alerted or stored.

PostgreSQL quotes row values in its DETAIL and CONTEXT lines ("Failing row contains (...)",
"Key (ssn)=(123-45-6789) already exists") and sometimes in the primary message itself. Every
error path (task alerts, XCom, S3 reports, logs of tool stderr) goes through :func:`redact_phi`
or :func:`safe_error`; both keep the SQLSTATE-like facts (what failed, which constraint, which
table) and drop the values.
"""

from __future__ import annotations

import re

REDACTED = "[redacted]"

# whole lines PostgreSQL uses to quote data
_DATA_LINES = re.compile(r"^\s*(?:(?:[A-Za-z_]+:\s+)?(?:DETAIL|CONTEXT|HINT|QUERY|STATEMENT|WHERE)\b|LINE \d+:|\s*\^).*$",
                         re.MULTILINE)
# values quoted inline: Key (col)=(value), Failing row contains (...), COPY ... line N: "..."
_KEY_VALUE = re.compile(r"(Key \((?P<cols>[^)]*)\))=\((?:[^()]|\([^()]*\))*\)")
_FAILING_ROW = re.compile(r"Failing row contains \(.*?\)(?=\.?\s*$|\s*\n)", re.MULTILINE | re.DOTALL)
_COPY_LINE = re.compile(r'(COPY [^,\n]+, line \d+)(?:, column [^:\n]+)?: .*$', re.MULTILINE)
_QUOTED_INPUT = re.compile(r'(invalid input (?:syntax )?(?:value )?for (?:type )?[^:\n]*: )"[^"\n]*"')


def redact_phi(text: str) -> str:
    """``text`` without any row value PostgreSQL may have quoted in it."""
    if not text:
        return text
    text = _DATA_LINES.sub(lambda m: m.group(0).split(":", 1)[0].strip() + ": " + REDACTED
                           if ":" in m.group(0) else REDACTED, text)
    text = _KEY_VALUE.sub(lambda m: f"{m.group(1)}={REDACTED}", text)
    text = _FAILING_ROW.sub(f"Failing row contains {REDACTED}", text)
    text = _COPY_LINE.sub(lambda m: f"{m.group(1)}: {REDACTED}", text)
    text = _QUOTED_INPUT.sub(lambda m: f"{m.group(1)}{REDACTED}", text)
    return text


def safe_error(error: object) -> str:
    """An exception (or any error object) as text fit for a log line, an alert or a report."""
    text = str(error) or type(error).__name__
    return redact_phi(text)
