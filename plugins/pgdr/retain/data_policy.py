"""The data retention policy: a declarative YAML file, loaded and validated without touching a database.

A policy is a list of rules, each on one table::

    rules:
      - table: visits                  # or schema.table; default schema public
        phi: true                      # required: PHI tables may never go under the legal floor
        date_column: scheduled_date    # the row's own date (date or timestamptz)
        older_than: {years: 7}         # years, months and/or days
        action: purge_soft_deleted     # archive | soft_delete | purge_soft_deleted
        soft_delete_column: deleted_at # soft_delete and purge_soft_deleted
        soft_deleted_for: {days: 365}  # purge_soft_deleted: soft-deleted at least this long

Validation refuses, naming the rule (``table/action``), before any SQL runs: unknown keys or
actions, bad names, a table/action pair twice, and a PHI rule whose age is under the legal floor
(``pgdr_legal_floor_years``). A rule on a table listed in ``pgdr_phi_tables`` is a PHI rule whatever
its ``phi`` key says: the floor holds for every table holding health records. The one way under it
is ``phi_exemption: <written reason>`` (at least 20 characters) on a ``phi: false`` rule; the reason
is recorded in every report of the run. Whether the tables and columns exist is checked against the live
database by :mod:`pgdr.retain.data`, again before anything changes.
"""

from __future__ import annotations

import calendar
import hashlib
import re
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from pgdr.errors import Refused

ACTIONS = ("archive", "soft_delete", "purge_soft_deleted")
_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
_AGE_UNITS = ("years", "months", "days")
_RULE_KEYS = {
    "archive": {"table", "phi", "date_column", "older_than", "action"},
    "soft_delete": {"table", "phi", "date_column", "older_than", "action", "soft_delete_column"},
    "purge_soft_deleted": {"table", "phi", "date_column", "older_than", "action", "soft_delete_column",
                           "soft_deleted_for"},
}
_OPTIONAL_KEYS = {"phi_exemption"}
MIN_EXEMPTION_CHARS = 20
_TOP_KEYS = {"version", "rules"}


class PolicyError(Refused, ValueError):
    """The policy is invalid; the message names the file and the rule."""


@dataclass(frozen=True)
class Age:
    years: int = 0
    months: int = 0
    days: int = 0

    @property
    def total_months(self) -> int:
        return self.years * 12 + self.months

    def before(self, moment: datetime) -> datetime:
        """``moment`` minus this age, in calendar terms (29 February falls back to the 28th)."""
        month_index = moment.year * 12 + (moment.month - 1) - self.total_months
        year, month = divmod(month_index, 12)
        day = min(moment.day, calendar.monthrange(year, month + 1)[1])
        return moment.replace(year=year, month=month + 1, day=day) - timedelta(days=self.days)

    def at_least(self, years: int) -> bool:
        """True when this age is never shorter than ``years`` calendar years, whatever the date.

        Months are calendar months; when the months fall short, the days must cover the longest
        possible gap (31 days a month), so a rule is only accepted when it is surely at or above it.
        """
        gap_months = years * 12 - self.total_months
        return gap_months <= 0 or self.days >= gap_months * 31

    def describe(self) -> str:
        parts = [f"{value} {unit if value != 1 else unit[:-1]}" for unit, value in
                 (("years", self.years), ("months", self.months), ("days", self.days)) if value]
        return " ".join(parts) or "0 days"

    def as_dict(self) -> dict[str, int]:
        return {unit: getattr(self, unit) for unit in _AGE_UNITS if getattr(self, unit)}


@dataclass(frozen=True)
class Rule:
    schema: str
    table: str
    phi: bool
    date_column: str
    older_than: Age
    action: str
    soft_delete_column: str | None = None
    soft_deleted_for: Age | None = None
    phi_exemption: str | None = None   # the written reason a listed PHI table's rule may go under the floor

    @property
    def qualified(self) -> str:
        return f"{self.schema}.{self.table}"

    @property
    def label(self) -> str:
        return f"{self.qualified}/{self.action}"

    def describe(self) -> str:
        text = f"{self.action} {self.qualified} where {self.date_column} is older than {self.older_than.describe()}"
        if self.action == "soft_delete":
            text += f" and {self.soft_delete_column} is empty"
        if self.action == "purge_soft_deleted":
            text += f" and {self.soft_delete_column} is older than {self.soft_deleted_for.describe()}"
        return text


@dataclass(frozen=True)
class Policy:
    rules: tuple[Rule, ...]
    floor_years: int
    source: str
    sha256: str

    @property
    def exemptions(self) -> list[dict[str, str]]:
        """Rules on listed PHI tables that go under the floor, each with its written reason (for the report)."""
        return [{"rule": rule.label, "reason": rule.phi_exemption} for rule in self.rules if rule.phi_exemption]

    def cutoffs(self, as_of: datetime) -> dict[str, datetime]:
        """Each rule's date cutoff at ``as_of``; a PHI rule whose cutoff is after the floor's is refused.

        Validation already guarantees this for every date; checking the actual cutoffs again costs
        nothing and keeps the promise even if the validation had a gap.
        """
        floor = Age(years=self.floor_years).before(as_of)
        cutoffs = {}
        for rule in self.rules:
            cutoff = rule.older_than.before(as_of)
            if rule.phi and cutoff > floor:
                raise PolicyError(f"{self.source}: rule {rule.label}: its cutoff {cutoff.isoformat()} is younger "
                                  f"than the legal floor ({self.floor_years} years: {floor.isoformat()})",
                                  field=f"rule {rule.label}")
            cutoffs[rule.label] = cutoff
        return cutoffs


def _fail(source: str, where: str, problem: str) -> PolicyError:
    return PolicyError(f"{source}: {where}: {problem}", field=where)


def _age(value: Any, source: str, where: str, key: str) -> Age:
    if not isinstance(value, dict) or not value:
        raise _fail(source, where, f"{key} must be a mapping of years/months/days, e.g. {{years: 7}}; got {value!r}")
    unknown = sorted(set(value) - set(_AGE_UNITS))
    if unknown:
        raise _fail(source, where, f"{key} has unknown unit(s) {unknown}; use years, months, days")
    for unit, number in value.items():
        if isinstance(number, bool) or not isinstance(number, int) or number < 0:
            raise _fail(source, where, f"{key}.{unit} must be a whole number >= 0; got {number!r}")
    age = Age(**value)
    if age == Age():
        raise _fail(source, where, f"{key} must be longer than zero")
    return age


def _name(value: Any, source: str, where: str, key: str) -> str:
    if not isinstance(value, str) or not _NAME.match(value):
        raise _fail(source, where, f"{key} must be a lower-case SQL name (letters, digits, '_'); got {value!r}")
    return value


def default_phi_tables() -> tuple[str, ...]:
    """The ``pgdr_phi_tables`` setting's default (the care-commons tables holding health records)."""
    import json

    from pgdr.settings import setting_default

    return tuple(json.loads(setting_default("phi_tables")))


def _rule(raw: Any, index: int, source: str, floor_years: int, phi_tables: tuple[str, ...]) -> Rule:
    where = f"rule {index + 1}"
    if not isinstance(raw, dict):
        raise _fail(source, where, f"must be a mapping; got {raw!r}")
    table_text = raw.get("table")
    action = raw.get("action")
    if isinstance(table_text, str):
        where = f"rule {index + 1} ({table_text}/{action})"
    if action not in ACTIONS:
        raise _fail(source, where, f"unknown action {action!r}; use one of {', '.join(ACTIONS)}")
    unknown = sorted(set(raw) - _RULE_KEYS[action] - _OPTIONAL_KEYS)
    if unknown:
        raise _fail(source, where, f"unknown key(s) {unknown} for action {action}; allowed: "
                                   f"{', '.join(sorted(_RULE_KEYS[action]))}")
    missing = sorted(_RULE_KEYS[action] - set(raw))
    if missing:
        raise _fail(source, where, f"missing key(s) {missing}")
    if not isinstance(table_text, str) or table_text.count(".") > 1:
        raise _fail(source, where, f"table must be 'table' or 'schema.table'; got {table_text!r}")
    schema, _, table = table_text.rpartition(".")
    schema = _name(schema or "public", source, where, "table's schema")
    table = _name(table, source, where, "table")
    where = f"rule {index + 1} ({schema}.{table}/{action})"
    if not isinstance(raw["phi"], bool):
        raise _fail(source, where, f"phi must be true or false; got {raw['phi']!r}")
    listed = f"{schema}.{table}" in phi_tables
    exemption = raw.get("phi_exemption")
    if exemption is not None:
        if raw["phi"] or not listed:
            raise _fail(source, where, "phi_exemption applies only to a phi: false rule on a table listed in "
                                       "pgdr_phi_tables")
        if not isinstance(exemption, str) or len(exemption.strip()) < MIN_EXEMPTION_CHARS:
            raise _fail(source, where, f"phi_exemption must be a written reason of at least {MIN_EXEMPTION_CHARS} "
                                       f"characters; got {exemption!r}")
        exemption = " ".join(exemption.split())
    rule = Rule(
        # a listed table holds health records whatever the rule says; only a written exemption lifts the floor
        schema=schema, table=table, phi=raw["phi"] or (listed and exemption is None),
        phi_exemption=exemption,
        date_column=_name(raw["date_column"], source, where, "date_column"),
        older_than=_age(raw["older_than"], source, where, "older_than"),
        action=action,
        soft_delete_column=(_name(raw["soft_delete_column"], source, where, "soft_delete_column")
                            if "soft_delete_column" in raw else None),
        soft_deleted_for=(_age(raw["soft_deleted_for"], source, where, "soft_deleted_for")
                          if "soft_deleted_for" in raw else None),
    )
    if rule.soft_delete_column is not None and rule.soft_delete_column == rule.date_column:
        raise _fail(source, where, "soft_delete_column must differ from date_column: the floor is measured on "
                                   "the row's own date, not on when it was soft-deleted")
    if rule.phi and not rule.older_than.at_least(floor_years):
        why = (" (listed in pgdr_phi_tables, so phi: false does not lift the floor; only a written "
               "phi_exemption does)" if listed and not raw["phi"] else "")
        raise _fail(source, where, f"older_than {rule.older_than.describe()} is under the legal floor of "
                                   f"{floor_years} years for PHI table {rule.qualified} (pgdr_legal_floor_years)"
                                   f"{why}; no PHI row younger than the floor may be archived, soft-deleted or "
                                   "purged")
    return rule


def parse_policy(document: Any, *, floor_years: int, source: str = "policy", sha256: str = "",
                 phi_tables: tuple[str, ...] | None = None) -> Policy:
    """Validate a parsed YAML document; raises :class:`PolicyError` naming the rule at fault.

    ``phi_tables`` (``schema.table``): tables the floor always covers; None means the setting's default."""
    phi_tables = default_phi_tables() if phi_tables is None else tuple(phi_tables)
    if not isinstance(floor_years, int) or floor_years < 1:
        raise PolicyError(f"legal floor must be a whole number of years >= 1; got {floor_years!r}",
                          field="pgdr_legal_floor_years")
    if not isinstance(document, dict):
        raise PolicyError(f"{source}: must be a mapping with a 'rules' list", field="rules")
    unknown = sorted(set(document) - _TOP_KEYS)
    if unknown:
        raise PolicyError(f"{source}: unknown top-level key(s) {unknown}; allowed: {', '.join(sorted(_TOP_KEYS))}",
                          field=unknown[0])
    if document.get("version", 1) != 1:
        raise PolicyError(f"{source}: version must be 1; got {document.get('version')!r}", field="version")
    raw_rules = document.get("rules")
    if not isinstance(raw_rules, list) or not raw_rules:
        raise PolicyError(f"{source}: 'rules' must be a non-empty list", field="rules")
    rules = tuple(_rule(raw, index, source, floor_years, phi_tables) for index, raw in enumerate(raw_rules))
    seen: dict[str, int] = {}
    phi_of: dict[str, bool] = {}
    for index, rule in enumerate(rules):
        if rule.label in seen:
            raise PolicyError(f"{source}: rule {index + 1} ({rule.label}): the same table and action as "
                              f"rule {seen[rule.label] + 1}; one rule per table and action", field=f"rule {index + 1}")
        seen[rule.label] = index
        declared = bool(raw_rules[index]["phi"])
        if phi_of.setdefault(rule.qualified, declared) != declared:
            raise PolicyError(f"{source}: rule {index + 1} ({rule.label}): phi differs from another rule on "
                              f"{rule.qualified}; a table either holds PHI or it does not", field=f"rule {index + 1}")
    return Policy(rules=rules, floor_years=floor_years, source=source, sha256=sha256)


def load_policy(path: Path, *, floor_years: int, phi_tables: tuple[str, ...] | None = None) -> Policy:
    """Read and validate a policy file."""
    import yaml

    path = Path(path)
    if not path.is_file():
        raise PolicyError(f"policy file {path} not found (setting pgdr_data_retention_policy)",
                          field="pgdr_data_retention_policy")
    raw = path.read_bytes()
    try:
        document = yaml.safe_load(raw)
    except yaml.YAMLError as err:
        raise PolicyError(f"{path}: not valid YAML: {err}") from None
    return parse_policy(document, floor_years=floor_years, source=str(path), sha256=hashlib.sha256(raw).hexdigest(),
                        phi_tables=phi_tables)


def include_dir() -> Path:
    return Path(__file__).resolve().parents[3] / "include"


def policy_path(setting: str, include: Path | None = None) -> Path:
    """The file the ``pgdr_data_retention_policy`` setting names: a name inside include/, or an absolute path."""
    path = Path(setting)
    return path if path.is_absolute() else (include or include_dir()) / path
