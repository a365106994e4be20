"""Grandfather-father-son backup retention: which backups to keep, which to delete, and why.

Pure: given the backups of one database (every kind), their verification status, leases,
Object Lock dates and dependencies, and the moment ``now``, :func:`plan` decides keep or delete
for each backup with every reason that applies. The I/O that applies a plan is in
:mod:`pgdr.retain.backups`; the Object Lock date a backup gets when it is written is
:func:`lock_until_at_write`.

Rules (per kind: logical, base, files, config are independent):
- daily: every complete backup that finished within ``keep_daily_days`` is kept;
- monthly: the first *good* (verified, not bad) backup of each calendar month (UTC) is kept for
  ``keep_monthly_months`` months counted back from now (this month is month 0);
- yearly: the first good backup of each calendar year is kept for ``keep_yearly_years`` years
  (this year is year 0);
- the newest verified backup of a kind is never deleted (the newest complete one that is not
  bad stands in while none is verified yet);
- a backup leased by a running restore is kept, and so is one whose Object Lock date is still
  in the future (S3 would refuse the delete);
- a kept backup keeps every backup it depends on (incremental file backups), transitively; an
  incremental base backup (PostgreSQL 17+) depends on every earlier piece of its chain (the full and
  each incremental up to its parent), so a kept incremental keeps its whole chain and a full goes only
  together with every incremental after it, which :func:`deletion_order` deletes first;
- a backup hidden by a delete marker (its manifest or another object soft-deleted: a mistaken
  ``aws s3 rm``, a lifecycle rule) while a version of its manifest remains is not an orphan: it is
  kept in the run that finds it (which restores it, see :mod:`pgdr.retain.backups`) and alerted on;
- a directory that never had a manifest (incomplete) older than a day is an orphan and is deleted.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

ORPHAN_AGE = timedelta(days=1)
GOOD, BAD, UNVERIFIED = "good", "bad", "unverified"
HIDDEN_REASON = "hidden by a delete marker (soft-deleted): restored and kept this run"


@dataclass(frozen=True)
class Policy:
    keep_daily_days: int = 30
    keep_monthly_months: int = 12
    keep_yearly_years: int = 7

    @classmethod
    def from_settings(cls, settings) -> Policy:
        return cls(settings.keep_daily_days, settings.keep_monthly_months, settings.keep_yearly_years)


@dataclass(frozen=True)
class Backup:
    kind: str
    backup_id: str
    finished: datetime                 # manifest finished_at; the id's time for an incomplete directory
    status: str = UNVERIFIED           # good | bad | unverified
    complete: bool = True              # has its manifest
    depends_on: tuple[str, ...] = ()   # backup ids (same kind) holding content this one refers to
    leased_by: tuple[str, ...] = ()    # holders of unexpired leases (restore runs)
    locked_until: datetime | None = None
    hidden: bool = False               # soft-deleted (delete marker) while a manifest version remains

    @property
    def key(self) -> tuple[str, str]:
        return (self.kind, self.backup_id)


@dataclass
class Decision:
    backup: Backup
    keep: bool
    reasons: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"kind": self.backup.kind, "backup_id": self.backup.backup_id,
                "finished_at": self.backup.finished.isoformat(timespec="seconds"), "status": self.backup.status,
                "complete": self.backup.complete, "action": "keep" if self.keep else "delete",
                "reasons": list(self.reasons)}


def month_index(when: datetime, now: datetime) -> int:
    """Whole calendar months from ``when`` back to ``now`` (0: the same month)."""
    when, now = when.astimezone(timezone.utc), now.astimezone(timezone.utc)
    return (now.year * 12 + now.month) - (when.year * 12 + when.month)


def add_months(year: int, month: int, months: int) -> datetime:
    """The first moment of the month ``months`` after year-month (UTC)."""
    total = year * 12 + (month - 1) + months
    return datetime(total // 12, total % 12 + 1, 1, tzinfo=timezone.utc)


def slot_keepers(backups: list[Backup]) -> tuple[dict[str, Backup], dict[str, Backup]]:
    """The first good backup of each month ("YYYY-MM") and of each year ("YYYY") among ``backups``."""
    months: dict[str, Backup] = {}
    years: dict[str, Backup] = {}
    for backup in sorted(backups, key=lambda b: (b.finished, b.backup_id)):
        if not (backup.complete and backup.status == GOOD):
            continue
        when = backup.finished.astimezone(timezone.utc)
        months.setdefault(f"{when.year:04d}-{when.month:02d}", backup)
        years.setdefault(f"{when.year:04d}", backup)
    return months, years


def plan(backups: list[Backup], now: datetime, policy: Policy) -> list[Decision]:
    """Keep or delete, with reasons, for every backup; ordered by kind, then oldest first."""
    decisions: dict[tuple[str, str], Decision] = {
        b.key: Decision(b, False) for b in sorted(backups, key=lambda b: (b.kind, b.finished, b.backup_id))}
    daily_from = now - timedelta(days=policy.keep_daily_days)

    def keep(backup: Backup, reason: str) -> None:
        decision = decisions[backup.key]
        decision.keep = True
        if reason not in decision.reasons:
            decision.reasons.append(reason)

    for kind in sorted({b.kind for b in backups}):
        of_kind = [b for b in backups if b.kind == kind]
        complete = [b for b in of_kind if b.complete]
        for backup in complete:
            if backup.finished >= daily_from:
                keep(backup, f"daily: within {policy.keep_daily_days} days")
        months, years = slot_keepers(of_kind)
        for month, backup in months.items():
            if month_index(backup.finished, now) < policy.keep_monthly_months:
                keep(backup, f"monthly: first of {month}")
        for year, backup in years.items():
            if now.astimezone(timezone.utc).year - int(year) < policy.keep_yearly_years:
                keep(backup, f"yearly: first of {year}")
        order = lambda b: (b.finished, b.backup_id)  # noqa: E731
        verified = [b for b in complete if b.status == GOOD]
        if verified:
            keep(max(verified, key=order), "newest verified")
        else:
            usable = [b for b in complete if b.status != BAD]
            if usable:
                keep(max(usable, key=order), "newest complete (none verified yet)")
        for backup in of_kind:
            if backup.hidden:
                # a soft delete is an accident to undo, never a reason to delete for good
                keep(backup, HIDDEN_REASON)
            for holder in backup.leased_by:
                keep(backup, f"leased by restore run {holder}")
            if not backup.complete and now - backup.finished < ORPHAN_AGE:
                keep(backup, "incomplete, under a day old (may still be written)")

    def close_dependencies() -> None:
        pending = [d for d in decisions.values() if d.keep]
        while pending:
            decision = pending.pop()
            for dep in decision.backup.depends_on:
                needed = decisions.get((decision.backup.kind, dep))
                if needed is None:
                    continue
                was_kept = needed.keep
                keep(needed.backup, f"needed by kept backup {decision.backup.backup_id}")
                if not was_kept:
                    pending.append(needed)

    close_dependencies()
    # a backup S3 would refuse to delete stays, listed; what it depends on stays with it
    for decision in decisions.values():
        until = decision.backup.locked_until
        if not decision.keep and until is not None and until > now:
            keep(decision.backup, f"locked until {until.astimezone(timezone.utc).isoformat(timespec='seconds')}")
    close_dependencies()
    for decision in decisions.values():
        if not decision.keep:
            b = decision.backup
            if not b.complete:
                decision.reasons.append("orphan: no manifest, older than a day")
            elif b.status == BAD:
                decision.reasons.append("bad (failed verification), outside every retention window")
            else:
                decision.reasons.append("outside every retention window")
    return list(decisions.values())


def deletion_order(decisions: list[Decision]) -> list[Decision]:
    """The backups to delete, each before every backup it depends on (an incremental before the pieces of
    its chain, the full last), so a run stopped half way never leaves a backup whose chain is gone. A backup
    depends only on older ones of its kind, so this is newest first."""
    doomed = [d for d in decisions if not d.keep]
    return sorted(doomed, key=lambda d: (d.backup.kind, d.backup.finished, d.backup.backup_id), reverse=True)


def dependents(backups: list[Backup]) -> dict[tuple[str, str], list[tuple[str, str]]]:
    """For each backup, the backups (same kind) that depend on it: an incremental's full and middle pieces,
    a file backup's content holders."""
    found: dict[tuple[str, str], list[tuple[str, str]]] = {}
    for backup in backups:
        for dep in backup.depends_on:
            found.setdefault((backup.kind, dep), []).append(backup.key)
    return found


def expiry(backup: Backup, role: list[str], policy: Policy) -> datetime:
    """The moment the kept roles (reasons) of a backup run out: the date its objects may be locked to."""
    when = backup.finished.astimezone(timezone.utc)
    until = when + timedelta(days=policy.keep_daily_days)
    if any(r.startswith("monthly:") for r in role):
        until = max(until, add_months(when.year, when.month, policy.keep_monthly_months))
    if any(r.startswith("yearly:") for r in role):
        until = max(until, datetime(when.year + policy.keep_yearly_years, 1, 1, tzinfo=timezone.utc))
    return until


def lock_until_at_write(started: datetime, earlier: list[Backup], policy: Policy) -> datetime:
    """The Object Lock date a new backup of a kind gets when written.

    At least ``keep_daily_days`` after it; longer when no earlier *good* backup of the kind
    exists in its month (it will be the month's keeper so far) or year. ``earlier`` are the
    backups of the same kind started before it.
    """
    when = started.astimezone(timezone.utc)
    roles = []
    good = [b for b in earlier if b.complete and b.status == GOOD]
    if not any(month_index(b.finished, when) == 0 and b.finished.year == when.year for b in good):
        roles.append("monthly:")
    if not any(b.finished.astimezone(timezone.utc).year == when.year for b in good):
        roles.append("yearly:")
    if policy.keep_monthly_months == 0:
        roles = [r for r in roles if r != "monthly:"]
    if policy.keep_yearly_years == 0:
        roles = [r for r in roles if r != "yearly:"]
    return expiry(Backup("", "", when, GOOD), roles, policy)


def summary(decisions: list[Decision]) -> dict[str, int]:
    kept = sum(1 for d in decisions if d.keep)
    return {"kept": kept, "deleted": len(decisions) - kept,
            "locked": sum(1 for d in decisions if any(r.startswith("locked until") for r in d.reasons)
                          and not any(not r.startswith("locked until") for r in d.reasons))}


def lock_targets(decisions: list[Decision], policy: Policy, now: datetime) -> dict[tuple[str, str], datetime]:
    """The Object Lock date each kept backup should have now: its own GFS expiry (or the lock it already
    has, when known and later), and at least that of every kept backup that depends on it, so the pieces
    of an incremental chain stay locked as long as the last of them. Only dates still in the future are
    returned."""
    by_key = {d.backup.key: d for d in decisions}
    targets = {d.backup.key: max(expiry(d.backup, d.reasons, policy), d.backup.locked_until or now)
               for d in decisions if d.keep and d.backup.complete}
    changed = True
    while changed:
        changed = False
        for key, until in list(targets.items()):
            for dep in by_key[key].backup.depends_on:
                dep_key = (key[0], dep)
                if dep_key in targets and targets[dep_key] < until:
                    targets[dep_key] = until
                    changed = True
    return {key: until for key, until in targets.items() if until > now}
