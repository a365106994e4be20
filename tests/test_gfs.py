"""Grandfather-father-son selection over generated backup histories (property-based) and named cases."""

from __future__ import annotations

from datetime import datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from pgdr.retain.gfs import (
    BAD,
    GOOD,
    UNVERIFIED,
    Backup,
    Policy,
    add_months,
    deletion_order,
    lock_targets,
    lock_until_at_write,
    month_index,
    plan,
)

NOW = datetime(2026, 11, 27, 3, 0, tzinfo=timezone.utc)
POLICY = Policy(keep_daily_days=30, keep_monthly_months=12, keep_yearly_years=7)


def bid(when: datetime) -> str:
    return when.strftime("%Y%m%dT%H%M%SZ")


@st.composite
def histories(draw):
    """Backups of two kinds over nine years, some bad, unverified, incomplete, leased, locked, incremental."""
    policy = Policy(draw(st.integers(1, 40)), draw(st.integers(0, 14)), draw(st.integers(0, 8)))
    now = NOW + timedelta(hours=draw(st.integers(0, 24 * 400)))
    backups: list[Backup] = []
    for kind in ("logical", "files", "base"):
        ages = draw(st.lists(st.integers(0, 9 * 365 * 24), min_size=0, max_size=40, unique=True))
        ids: list[str] = []
        chain: list[str] = []   # base: the pieces so far of the newest chain (the full first)
        for age in sorted(ages, reverse=True):
            finished = now - timedelta(hours=age)
            status = draw(st.sampled_from([GOOD, GOOD, GOOD, BAD, UNVERIFIED]))
            complete = draw(st.integers(0, 9)) > 0
            depends = (tuple(draw(st.lists(st.sampled_from(ids), max_size=2, unique=True)))
                       if ids and kind == "files" else ())
            if kind == "base" and complete:
                # an incremental depends on every earlier piece of its chain (retain.backups._depends_on)
                incremental = bool(chain) and draw(st.integers(0, 3)) > 0
                depends = tuple(chain) if incremental else ()
                chain = [*chain, bid(finished)] if incremental else [bid(finished)]
            leased = ("manual__x",) if draw(st.integers(0, 19)) == 0 else ()
            locked = now + timedelta(days=3) if draw(st.integers(0, 19)) == 0 else None
            backup = Backup(kind, bid(finished), finished, status if complete else UNVERIFIED, complete, depends,
                            leased, locked)
            backups.append(backup)
            ids.append(backup.backup_id)
    return backups, now, policy


def _check(backups, now, policy):
    decisions = plan(backups, now, policy)
    by_key = {d.backup.key: d for d in decisions}
    assert len(decisions) == len(backups)
    for kind in {b.kind for b in backups}:
        verified = [b for b in backups if b.kind == kind and b.complete and b.status == GOOD]
        if verified:
            newest = max(verified, key=lambda b: (b.finished, b.backup_id))
            assert by_key[newest.key].keep and "newest verified" in by_key[newest.key].reasons
    for d in decisions:
        b = d.backup
        assert d.reasons, d
        if b.complete and b.finished >= now - timedelta(days=policy.keep_daily_days):
            assert d.keep, f"{b} is inside the daily window"
        if b.leased_by:
            assert d.keep
        if b.locked_until and b.locked_until > now:
            assert d.keep, "S3 would refuse it: never attempted"
        for reason in d.reasons:
            assert _valid(reason, b, d, by_key, backups, now, policy), (reason, b)
        if d.keep:
            for dep in b.depends_on:
                if (b.kind, dep) in by_key:
                    assert by_key[(b.kind, dep)].keep, "a kept backup keeps what it depends on (its whole chain)"
    # what is deleted goes after everything depending on it: an incremental before its full
    order = [d.backup.key for d in deletion_order(decisions)]
    assert sorted(order) == sorted(d.backup.key for d in decisions if not d.keep)
    for position, key in enumerate(order):
        for dep in by_key[key].backup.depends_on:
            if (key[0], dep) in order:
                assert order.index((key[0], dep)) > position, "a piece deleted before a backup depending on it"
    # the pieces of a chain stay locked at least as long as what is built on them
    targets = lock_targets(decisions, policy, now)
    for (kind, backup_id), until in targets.items():
        for dep in by_key[(kind, backup_id)].backup.depends_on:
            if (kind, dep) in targets:
                assert targets[(kind, dep)] >= until
    # exactly one keeper per month and year slot that has a good backup
    for kind in {b.kind for b in backups}:
        good = [b for b in backups if b.kind == kind and b.complete and b.status == GOOD]
        months = {(b.finished.year, b.finished.month) for b in good
                  if month_index(b.finished, now) < policy.keep_monthly_months}
        for year, month in months:
            keepers = [d for d in decisions
                       if d.backup.kind == kind and f"monthly: first of {year:04d}-{month:02d}" in d.reasons]
            assert len(keepers) == 1
        years = {b.finished.year for b in good if now.year - b.finished.year < policy.keep_yearly_years}
        for year in years:
            keepers = [d for d in decisions if d.backup.kind == kind and f"yearly: first of {year:04d}" in d.reasons]
            assert len(keepers) == 1
    return decisions


def _valid(reason, b, d, by_key, backups, now, policy) -> bool:
    same_kind_good = sorted((x for x in backups if x.kind == b.kind and x.complete and x.status == GOOD),
                            key=lambda x: (x.finished, x.backup_id))
    if reason.startswith("daily:"):
        return b.complete and b.finished >= now - timedelta(days=policy.keep_daily_days)
    if reason.startswith("monthly: first of "):
        first = [x for x in same_kind_good
                 if (x.finished.year, x.finished.month) == (b.finished.year, b.finished.month)]
        return first[0] is b and month_index(b.finished, now) < policy.keep_monthly_months \
            and reason.endswith(f"{b.finished.year:04d}-{b.finished.month:02d}")
    if reason.startswith("yearly: first of "):
        first = [x for x in same_kind_good if x.finished.year == b.finished.year]
        return first[0] is b and now.year - b.finished.year < policy.keep_yearly_years
    if reason == "newest verified":
        return same_kind_good and same_kind_good[-1] is b
    if reason.startswith("newest complete"):
        return not same_kind_good and b.complete and b.status != BAD
    if reason.startswith("leased by restore run "):
        return reason.split()[-1] in b.leased_by
    if reason.startswith("needed by kept backup "):
        dependent = by_key[(b.kind, reason.split()[-1])]
        return dependent.keep and b.backup_id in dependent.backup.depends_on
    if reason.startswith("locked until "):
        return b.locked_until is not None and b.locked_until > now
    if reason.startswith("incomplete, under a day old"):
        return not b.complete and now - b.finished < timedelta(days=1)
    if reason.startswith("orphan"):
        return not d.keep and not b.complete
    if reason.startswith("bad ") or reason == "outside every retention window":
        return not d.keep and b.complete
    return False


@settings(max_examples=300, deadline=None)
@given(histories())
def test_every_generated_history_gets_a_valid_plan(history):
    _check(*history)


@settings(max_examples=200, deadline=None)
@given(histories())
def test_applying_a_plan_then_planning_again_deletes_nothing_more(history):
    backups, now, policy = history
    kept = [d.backup for d in plan(backups, now, policy) if d.keep]
    again = _check(kept, now, policy)
    assert all(d.keep for d in again)


def test_a_year_of_daily_backups_keeps_thirty_days_twelve_months_and_the_years():
    start = datetime(2019, 1, 1, 2, 0, tzinfo=timezone.utc)
    backups = [Backup("logical", bid(start + timedelta(days=n)), start + timedelta(days=n, minutes=5), GOOD)
               for n in range((NOW - start).days + 1)]
    decisions = plan(backups, NOW, POLICY)
    kept = [d for d in decisions if d.keep]
    reasons = {r for d in kept for r in d.reasons}
    assert sum(1 for d in kept if any(r.startswith("daily") for r in d.reasons)) == 30
    assert {r for r in reasons if r.startswith("monthly")} == {
        f"monthly: first of {m.year:04d}-{m.month:02d}" for m in (add_months(2025, 12, k) for k in range(12))}
    assert {r for r in reasons if r.startswith("yearly")} == {f"yearly: first of {y}" for y in range(2020, 2027)}
    # 30 dailies + 12 monthly firsts (November's falls inside the daily window) + 7 years (2026's is January's)
    assert len(kept) == 30 + 11 + 6


def test_a_bad_first_of_month_hands_the_slot_to_the_next_good_one():
    march1 = datetime(2026, 3, 1, 2, 5, tzinfo=timezone.utc)
    backups = [Backup("logical", bid(march1), march1, BAD),
               Backup("logical", bid(march1 + timedelta(days=1)), march1 + timedelta(days=1), UNVERIFIED),
               Backup("logical", bid(march1 + timedelta(days=2)), march1 + timedelta(days=2), GOOD)]
    decisions = {d.backup.backup_id: d for d in plan(backups, NOW, POLICY)}
    assert decisions[bid(march1 + timedelta(days=2))].reasons == [
        "monthly: first of 2026-03", "yearly: first of 2026", "newest verified"]
    assert not decisions[bid(march1)].keep and not decisions[bid(march1 + timedelta(days=1))].keep


def test_an_incremental_files_backup_keeps_the_ones_it_depends_on():
    old = datetime(2024, 6, 3, tzinfo=timezone.utc)
    base = Backup("files", bid(old), old, GOOD)
    middle = Backup("files", bid(old + timedelta(days=1)), old + timedelta(days=1), GOOD, depends_on=(base.backup_id,))
    newest = Backup("files", bid(NOW - timedelta(days=1)), NOW - timedelta(days=1), GOOD,
                    depends_on=(middle.backup_id,))
    decisions = {d.backup.backup_id: d for d in plan([base, middle, newest], NOW, POLICY)}
    assert decisions[middle.backup_id].reasons == [f"needed by kept backup {newest.backup_id}"]
    assert decisions[base.backup_id].keep  # first of 2024 too, and needed by middle
    assert f"needed by kept backup {middle.backup_id}" in decisions[base.backup_id].reasons
    targets = lock_targets(list(decisions.values()), POLICY, NOW)
    assert targets[("files", middle.backup_id)] >= targets[("files", newest.backup_id)]


def test_the_lock_date_at_write_is_longer_for_the_first_good_backup_of_a_month_or_year():
    day = datetime(2026, 11, 27, 2, 0, tzinfo=timezone.utc)
    earlier_this_month = [Backup("logical", bid(day - timedelta(days=1)), day - timedelta(days=1), GOOD)]
    assert lock_until_at_write(day, earlier_this_month, POLICY) == day + timedelta(days=30)
    assert lock_until_at_write(day, [], POLICY) == datetime(2033, 1, 1, tzinfo=timezone.utc)
    last_month = [Backup("logical", bid(day - timedelta(days=40)), day - timedelta(days=40), GOOD)]
    assert lock_until_at_write(day, last_month, POLICY) == datetime(2027, 11, 1, tzinfo=timezone.utc)
    unverified = [Backup("logical", bid(day - timedelta(days=1)), day - timedelta(days=1), UNVERIFIED)]
    assert lock_until_at_write(day, unverified + last_month, POLICY) == datetime(2027, 11, 1, tzinfo=timezone.utc)


def test_a_hidden_backup_is_never_an_orphan_and_is_kept_whatever_its_age():
    from pgdr.retain.gfs import HIDDEN_REASON

    ancient = NOW - timedelta(days=9 * 365)
    hidden = Backup("logical", bid(ancient), ancient, GOOD, True, hidden=True)
    newest = Backup("logical", bid(NOW - timedelta(days=1)), NOW - timedelta(days=1), GOOD)
    decisions = {d.backup.backup_id: d for d in plan([hidden, newest], NOW, POLICY)}
    assert decisions[hidden.backup_id].keep and decisions[hidden.backup_id].reasons == [HIDDEN_REASON]
    assert decisions[newest.backup_id].keep


def _chain(start: datetime, days: int, status=GOOD) -> list[Backup]:
    """A full at ``start`` and a daily incremental after it for ``days - 1`` days, each depending on the
    whole chain before it."""
    backups: list[Backup] = []
    for n in range(days):
        when = start + timedelta(days=n)
        backups.append(Backup("base", bid(when), when, status, depends_on=tuple(b.backup_id for b in backups)))
    return backups


def test_a_monthly_incremental_keeps_its_whole_chain_and_the_chain_stays_locked_as_long():
    """GFS picks the first good base backup of March, an incremental: its full and the incremental between
    are kept with it, and locked at least until the month's keeper expires."""
    february = _chain(datetime(2026, 2, 27, 1, tzinfo=timezone.utc), 5)   # Feb 27 full, 28, Mar 1, 2, 3
    newer = _chain(NOW - timedelta(days=2), 3)
    decisions = {d.backup.backup_id: d for d in plan(february + newer, NOW, POLICY)}
    march1 = february[2]
    assert "monthly: first of 2026-03" in decisions[march1.backup_id].reasons
    for piece in february[:2]:
        assert decisions[piece.backup_id].keep
        assert f"needed by kept backup {march1.backup_id}" in decisions[piece.backup_id].reasons
    assert [decisions[b.backup_id].keep for b in february[3:]] == [False, False]   # built on March 1, unneeded
    targets = lock_targets(list(decisions.values()), POLICY, NOW)
    month_end = targets[("base", march1.backup_id)]
    assert month_end == datetime(2027, 3, 1, tzinfo=timezone.utc)
    assert all(targets[("base", b.backup_id)] >= month_end for b in february[:2])


def test_an_old_chain_goes_as_a_whole_incrementals_first_and_never_while_one_is_kept():
    old = _chain(datetime(2026, 8, 10, 1, tzinfo=timezone.utc), 4)     # outside the windows (not a month's first)
    first_of_august = _chain(datetime(2026, 8, 1, 1, tzinfo=timezone.utc), 1)
    newest = _chain(NOW - timedelta(days=1), 2)
    decisions = plan(first_of_august + old + newest, NOW, POLICY)
    assert [d.backup.backup_id for d in deletion_order(decisions)] == [b.backup_id for b in reversed(old)]
    # the same chain with its last incremental leased by a restore: nothing of it goes
    leased = [*old[:-1], Backup(**{**old[-1].__dict__, "leased_by": ("manual__restore",)})]
    decisions = {d.backup.backup_id: d for d in plan(first_of_august + leased + newest, NOW, POLICY)}
    assert all(decisions[b.backup_id].keep for b in old)
    reasons = decisions[old[0].backup_id].reasons
    assert f"needed by kept backup {old[-1].backup_id}" in reasons and all(r.startswith("needed by") for r in reasons)


def test_a_locked_incremental_keeps_its_full_locked_as_long():
    """S3 refuses to delete the incremental until its lock runs out: its full stays, locked at least as long."""
    chain = _chain(datetime(2026, 8, 10, 1, tzinfo=timezone.utc), 2)
    locked_until = NOW + timedelta(days=40)
    locked = Backup(**{**chain[1].__dict__, "locked_until": locked_until})
    newest = _chain(NOW - timedelta(days=1), 1)
    decisions = plan([chain[0], locked, *newest], NOW, POLICY)
    by_id = {d.backup.backup_id: d for d in decisions}
    assert by_id[chain[0].backup_id].keep and by_id[locked.backup_id].keep
    assert lock_targets(decisions, POLICY, NOW)[("base", chain[0].backup_id)] >= locked_until
