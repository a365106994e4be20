"""What the text of each pgdr setting must look like: the validators :mod:`pgdr.settings` declares
its fields with.

A setting arrives as text (an Airflow Variable, or ``AIRFLOW_VAR_PGDR_<NAME>``): numbers as
strings, lists and maps as JSON, booleans as true/false/yes/no/on/off/1/0. Each check here turns
that text into the field's value or raises :class:`SettingsError` naming the setting, what is
wrong and the value found. :func:`checked` wraps a check as a pydantic ``BeforeValidator``; it
also accepts a value already parsed (``dataclasses.replace(settings, ...)``) by writing it back as
text first, so a replaced value is checked exactly like one read from a Variable.

The value found is shown in the message (an operator fixes a typo faster when they see it), but
never a credential: the usual slip is a webhook URL or a connection URI pasted into a ``*_conn_id``
Variable, and a task's error reaches its log and Slack.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from pydantic import BeforeValidator, ValidationInfo

from pgdr.errors import Refused

PREFIX = "pgdr_"

# Airflow connection ids: letters, digits, '_', '-', '.'; nothing that could
# escape a path or a shell.
_CONN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.\-]{0,249}$")
# S3 bucket names per AWS rules (lower case, 3-63, no leading/trailing dot or dash).
_BUCKET = re.compile(r"^[a-z0-9][a-z0-9.\-]{1,61}[a-z0-9]$")
_PREFIX_PART = re.compile(r"^[A-Za-z0-9_.\-]+$")
_TABLE = re.compile(r"^([a-z_][a-z0-9_]{0,62}\.)?[a-z_][a-z0-9_]{0,62}$")
# What a pasted credential looks like: a URL (a Slack webhook, postgres://user:pw@host), a
# user:password@host, a Slack token, or a long opaque run of mixed-case letters and digits (an
# AWS secret key, a base64 key). Paths, connection ids and KMS ARNs are lower case or short.
_SECRET = re.compile(r"[A-Za-z][A-Za-z0-9+.\-]*://\S*|[^\s:'\"]+:[^\s@'\"]*@\S+|\bxox[a-z]-\S+|"
                     r"(?=[A-Za-z0-9+/=_\-]*[a-z])(?=[A-Za-z0-9+/=_\-]*[A-Z])(?=[A-Za-z0-9+/=_\-]*[0-9])"
                     r"[A-Za-z0-9+/=_\-]{24,}")


class SettingsError(Refused, ValueError):
    """A setting is missing or invalid; the message names the Variable, ``field`` is its name."""

    __module__ = "pgdr.settings"   # its public home (errors.py, tests, pickles name it there)


def without_secrets(text: str) -> str:
    return _SECRET.sub("[redacted]", text)


def refuse(name: str, problem: str, value: Any) -> SettingsError:
    shown = value if len(str(value)) <= 200 else str(value)[:200] + "..."
    return SettingsError(without_secrets(f"setting {PREFIX}{name} (env AIRFLOW_VAR_{(PREFIX + name).upper()}): "
                                         f"{problem}; got {shown!r}"), field=PREFIX + name)


def as_text(value: Any) -> str:
    """A value as it would be written in its Variable (None: not set, which is empty)."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float, Path)):
        return str(value)
    return json.dumps(value, default=str)   # tuples and lists (of paths), dicts


def checked(check: Callable[[str, str], Any]) -> BeforeValidator:
    """``check(name, text)`` as the validator of a pydantic field."""
    def validate(value: Any, info: ValidationInfo) -> Any:
        return check(info.field_name, as_text(value))
    return BeforeValidator(validate)


def conn_id(name: str, value: str) -> str:
    value = value.strip()
    if not _CONN_ID.match(value):
        raise refuse(name, "must be an Airflow connection id (letters, digits, '_', '-', '.')", value)
    return value


def databases(name: str, value: str) -> tuple[str, ...]:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError as err:
        raise refuse(name, f"must be a JSON list of connection ids ({err.msg})", value) from None
    if not isinstance(parsed, list) or not parsed or not all(isinstance(item, str) for item in parsed):
        raise refuse(name, "must be a non-empty JSON list of connection id strings", value)
    ids = tuple(conn_id(name, item) for item in parsed)
    if len(set(ids)) != len(ids):
        raise refuse(name, "lists a connection id twice", value)
    return ids


def conn_map(name: str, value: str) -> dict[str, str]:
    try:
        parsed = json.loads(value or "{}")
    except json.JSONDecodeError as err:
        raise refuse(name, f"must be a JSON object of connection ids ({err.msg})", value) from None
    if not isinstance(parsed, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in parsed.items()):
        raise refuse(name, "must be a JSON object mapping a protected connection id to a connection id", value)
    return {conn_id(name, key): conn_id(name, conn) for key, conn in parsed.items()}


def identifier(name: str, value: str) -> str:
    value = value.strip()
    if not re.match(r"^[a-z_][a-z0-9_]{0,62}$", value):
        raise refuse(name, "must be a lower-case name of letters, digits and '_' (at most 63)", value)
    return value


def bucket(name: str, value: str) -> str:
    value = value.strip()
    if not value:
        raise refuse(name, "is required: the S3 bucket that receives backups", value)
    if not _BUCKET.match(value) or ".." in value:
        raise refuse(name, "is not a valid S3 bucket name", value)
    return value


def key_prefix(name: str, value: str) -> str:
    value = value.strip().strip("/")
    parts = value.split("/") if value else []
    if not parts or any(not _PREFIX_PART.match(p) or p in (".", "..") for p in parts):
        raise refuse(name, "must be a non-empty key prefix of letters, digits, '_', '-', '.' parts joined by '/'",
                     value)
    return value


def abs_path(name: str, value: str) -> Path:
    path = Path(value.strip())
    if not value.strip() or not path.is_absolute():
        raise refuse(name, "must be an absolute directory path", value)
    return path


def bindir_template(name: str, value: str) -> Path:
    path = abs_path(name, value)
    rest = value.replace("{major}", "")
    if "{" in rest or "}" in rest:
        raise refuse(name, "may hold only the placeholder {major} (the server's major version)", value)
    return path


def major_dirs(name: str, value: str) -> dict[int, str]:
    parsed = _json(name, value, dict, "JSON object of PostgreSQL major -> absolute directory")
    result = {}
    for major, directory in parsed.items():
        if not str(major).isdigit() or not 10 <= int(major) <= 99:
            raise refuse(name, f"{major!r} is not a PostgreSQL major version (15, 16, 17, 18)", value)
        if not isinstance(directory, str):
            raise refuse(name, f"{major!r} must map to a directory path", value)
        result[int(major)] = str(abs_path(name, directory))
    return result


def whole(low: int, high: int) -> BeforeValidator:
    """A whole number from ``low`` to ``high`` included."""
    def parse(name: str, value: str) -> int:
        try:
            number = int(value.strip())
        except ValueError:
            raise refuse(name, "must be a whole number", value) from None
        if not low <= number <= high:
            raise refuse(name, f"must be between {low} and {high}", value)
        return number
    return checked(parse)


def above(low: float, high: float) -> BeforeValidator:
    """A number (decimals allowed) above ``low`` and at most ``high``."""
    return checked(lambda name, value: number_above(low, high, name, value))


def number_above(low: float, high: float, name: str, value: str) -> float:
    try:
        number = float(value.strip())
    except ValueError:
        raise refuse(name, "must be a number", value) from None
    if not low < number <= high:
        raise refuse(name, f"must be above {low:g} and at most {high:g}", value)
    return number


def boolean(name: str, value: str) -> bool:
    lowered = value.strip().lower()
    if lowered in ("true", "1", "yes", "on"):
        return True
    if lowered in ("false", "0", "no", "off", ""):
        return False
    raise refuse(name, "must be true or false", value)


def kms_key(name: str, value: str) -> str:
    value = value.strip()
    if value and not re.match(r"^[A-Za-z0-9:/_\-]+$", value):
        raise refuse(name, "must be a KMS key id, alias or ARN (or empty for SSE-S3)", value)
    return value


def policy_file(name: str, value: str) -> str:
    if not value:
        raise refuse(name, "is required (a YAML file name inside include/, or an absolute path)", value)
    if not value.startswith("/") and ("/" in value or value.startswith(".")):
        raise refuse(name, "must be a file name inside include/ or an absolute path", value)
    if not value.endswith((".yaml", ".yml")):
        raise refuse(name, "must be a .yaml file", value)
    return value


def lock_mode(name: str, value: str) -> str:
    mode = value.strip().upper()
    if mode not in ("GOVERNANCE", "COMPLIANCE"):
        raise refuse(name, "must be GOVERNANCE or COMPLIANCE", value)
    return mode


def _json(name: str, value: str, kind: type, described: str) -> Any:
    try:
        parsed = json.loads(value)
    except json.JSONDecodeError:
        raise refuse(name, f"must be a {described}", value) from None
    if not isinstance(parsed, kind):
        raise refuse(name, f"must be a {described}", value)
    return parsed


def path_lists(name: str, value: str) -> dict[str, tuple[Path, ...]]:
    parsed = _json(name, value, dict, "JSON object of connection id -> list of absolute paths")
    result = {}
    for conn, paths in parsed.items():
        conn_id(name, conn)
        if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
            raise refuse(name, f"{conn!r} must map to a JSON list of paths", value)
        found = tuple(abs_path(name, p) for p in paths)
        if len(set(found)) != len(found):
            raise refuse(name, f"{conn!r} lists a path twice", value)
        result[conn] = found
    return result


def name_list(name: str, value: str) -> tuple[str, ...]:
    parsed = _json(name, value, list, "JSON list of file names or absolute paths")
    if not all(isinstance(item, str) and item and "\0" not in item for item in parsed):
        raise refuse(name, "must list non-empty strings", value)
    for item in parsed:
        if "/" in item and not item.startswith("/"):
            raise refuse(name, f"{item!r} must be a bare file name or an absolute path", value)
    return tuple(parsed)


def listen_addresses(name: str, value: str) -> str:
    items = [item.strip() for item in value.split(",")]
    if not value.strip() or not all(item == "*" or re.fullmatch(r"[A-Za-z0-9.:\-]+", item) for item in items):
        raise refuse(name, "must be '*' or comma-separated host names or IP addresses", value)
    return ", ".join(items)


def conn_id_list(name: str, value: str) -> tuple[str, ...]:
    parsed = _json(name, value or "[]", list, "JSON list of connection ids")
    if not all(isinstance(item, str) for item in parsed):
        raise refuse(name, "must list connection id strings", value)
    return tuple(conn_id(name, item) for item in parsed)


def restore_roots(name: str, value: str) -> tuple[Path, ...]:
    parsed = _json(name, value, list, "JSON list of absolute directories")
    if not parsed or not all(isinstance(item, str) for item in parsed):
        raise refuse(name, "must be a non-empty JSON list of absolute directories", value)
    roots = tuple(abs_path(name, item) for item in parsed)
    if any(".." in root.parts or root == Path("/") for root in roots):
        raise refuse(name, "must list directories of their own (not /, no '..')", value)
    return roots


def table_list(name: str, value: str) -> tuple[str, ...]:
    parsed = _json(name, value, list, "JSON list of table names (schema.table or table)")
    tables = []
    for item in parsed:
        if not isinstance(item, str) or not _TABLE.match(item):
            raise refuse(name, f"{item!r} is not a lower-case table name (schema.table or table)", value)
        tables.append(item if "." in item else f"public.{item}")
    return tuple(tables)
