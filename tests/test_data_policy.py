"""The data retention policy: validation refuses bad rules (naming them) before any SQL runs."""

from datetime import datetime, timezone

import pytest

from pgdr.retain.data_policy import Age, PolicyError, load_policy, parse_policy, policy_path

FLOOR = 6


def _rule(**overrides):
    rule = {"table": "visits", "phi": True, "date_column": "scheduled_date", "older_than": {"years": 7},
            "action": "purge_soft_deleted", "soft_delete_column": "deleted_at", "soft_deleted_for": {"days": 365}}
    rule.update(overrides)
    return {key: value for key, value in rule.items() if value is not None}


def _refused(document, *fragments):
    with pytest.raises(PolicyError) as err:
        parse_policy(document, floor_years=FLOOR, source="p.yaml")
    for fragment in fragments:
        assert fragment in str(err.value), str(err.value)
    return str(err.value)


def test_the_bundled_policy_fits_care_commons_and_the_floor():
    policy = load_policy(policy_path("data_retention_policy.yaml"), floor_years=FLOOR)
    labels = [rule.label for rule in policy.rules]
    assert labels == ["public.evv_revisions/archive", "public.evv_records/archive", "public.audit_events/archive",
                      "public.visits/purge_soft_deleted", "public.visits/soft_delete"]
    assert all(rule.phi for rule in policy.rules)
    assert "audit_logs" not in str(policy.rules)
    audit = policy.rules[2]
    assert (audit.table, audit.date_column) == ("audit_events", "timestamp")
    assert len(policy.sha256) == 64


def test_a_phi_rule_under_the_floor_is_refused_and_named():
    message = _refused({"rules": [_rule(table="audit_events", action="archive", date_column="timestamp",
                                        older_than={"years": 1}, soft_delete_column=None, soft_deleted_for=None)]},
                       "public.audit_events/archive", "under the legal floor of 6 years", "1 year")
    assert message.startswith("p.yaml: rule 1")


def test_the_seeds_purge_is_refused_the_floor_counts_the_rows_own_date():
    # the seed purged visits soft-deleted a year ago whatever their date
    _refused({"rules": [_rule(older_than={"days": 365})]}, "public.visits/purge_soft_deleted", "legal floor")


@pytest.mark.parametrize("age", [{"years": 5, "months": 11}, {"days": 2190}, {"months": 71, "days": 30}])
def test_ages_just_short_of_the_floor_are_refused(age):
    _refused({"rules": [_rule(older_than=age)]}, "legal floor")


@pytest.mark.parametrize("age", [{"years": 6}, {"months": 72}, {"years": 5, "months": 11, "days": 31}])
def test_ages_at_the_floor_pass(age):
    policy = parse_policy({"rules": [_rule(older_than=age)]}, floor_years=FLOOR)
    assert policy.rules[0].older_than == Age(**age)


def test_a_higher_floor_setting_refuses_what_six_allows():
    document = {"rules": [_rule(older_than={"years": 7})]}
    parse_policy(document, floor_years=6)
    with pytest.raises(PolicyError, match="under the legal floor of 10 years"):
        parse_policy(document, floor_years=10)


def test_non_phi_tables_may_go_under_the_floor():
    policy = parse_policy({"rules": [_rule(table="knex_migrations", phi=False, action="archive",
                                           date_column="migration_time", older_than={"days": 30},
                                           soft_delete_column=None, soft_deleted_for=None)]}, floor_years=FLOOR)
    assert policy.rules[0].older_than.days == 30


@pytest.mark.parametrize("change, fragments", [
    ({"action": "shred"}, ["unknown action 'shred'", "archive, soft_delete, purge_soft_deleted"]),
    ({"archived": True}, ["unknown key(s) ['archived']", "visits/purge_soft_deleted"]),
    ({"soft_deleted_for": None}, ["missing key(s) ['soft_deleted_for']"]),
    ({"phi": None}, ["missing key(s) ['phi']"]),
    ({"phi": "yes"}, ["phi must be true or false"]),
    ({"table": "audit logs"}, ["table must be a lower-case SQL name"]),
    ({"date_column": "x; DROP TABLE visits"}, ["date_column must be a lower-case SQL name"]),
    ({"older_than": {"weeks": 400}}, ["unknown unit(s) ['weeks']"]),
    ({"older_than": {"years": -7}}, ["whole number >= 0"]),
    ({"soft_delete_column": "scheduled_date"}, ["must differ from date_column"]),
])
def test_bad_rules_are_refused_clearly(change, fragments):
    _refused({"rules": [_rule(**change)]}, *fragments)


def test_unknown_top_level_keys_duplicates_and_mixed_phi_are_refused():
    _refused({"rules": [_rule()], "audit_table": "audit_logs"}, "unknown top-level key(s) ['audit_table']")
    _refused({"rules": [_rule(), _rule()]}, "rule 2 (public.visits/purge_soft_deleted)", "one rule per table")
    _refused({"rules": [_rule(), _rule(action="soft_delete", phi=False, soft_deleted_for=None)]},
             "rule 2 (public.visits/soft_delete)", "phi differs")
    _refused({"rules": []}, "non-empty list")
    _refused(["not", "a", "mapping"], "must be a mapping")


def test_a_policy_file_that_is_missing_or_not_yaml_is_refused(tmp_path):
    with pytest.raises(PolicyError, match="not found"):
        load_policy(tmp_path / "missing.yaml", floor_years=FLOOR)
    bad = tmp_path / "bad.yaml"
    bad.write_text("rules: [\n")
    with pytest.raises(PolicyError, match="not valid YAML"):
        load_policy(bad, floor_years=FLOOR)


def test_policy_path_is_inside_include_or_absolute(tmp_path):
    assert policy_path("data_retention_policy.yaml").parent.name == "include"
    assert policy_path(str(tmp_path / "mine.yaml")) == tmp_path / "mine.yaml"


def test_cutoffs_are_calendar_years_and_checked_against_the_floor_again():
    leap_day = datetime(2028, 2, 29, 3, 0, tzinfo=timezone.utc)
    assert Age(years=7).before(leap_day) == datetime(2021, 2, 28, 3, 0, tzinfo=timezone.utc)
    assert Age(years=1, months=1, days=1).before(datetime(2026, 3, 31, tzinfo=timezone.utc)) == \
        datetime(2025, 2, 27, tzinfo=timezone.utc)
    policy = parse_policy({"rules": [_rule(older_than={"years": 6})]}, floor_years=FLOOR)
    assert policy.cutoffs(leap_day) == {"public.visits/purge_soft_deleted": datetime(2022, 2, 28, 3, 0,
                                                                                       tzinfo=timezone.utc)}
    # the run-time check holds even for a Policy built around validation
    from dataclasses import replace

    sneaky = replace(policy, rules=(replace(policy.rules[0], older_than=Age(years=2)),))
    with pytest.raises(PolicyError, match="younger than the legal floor"):
        sneaky.cutoffs(leap_day)


@pytest.mark.parametrize("table,column", [("audit_events", "timestamp"), ("visits", "scheduled_date")])
def test_a_listed_phi_table_keeps_the_floor_whatever_the_rule_says(table, column):
    """Item 27: `phi: false` on a table holding health records no longer takes it under the floor."""
    message = _refused({"rules": [_rule(table=table, phi=False, action="archive", date_column=column,
                                        older_than={"years": 1}, soft_delete_column=None, soft_deleted_for=None)]},
                       f"public.{table}/archive", "under the legal floor of 6 years", "pgdr_phi_tables",
                       "phi_exemption")
    assert message.startswith("p.yaml: rule 1")


def test_the_phi_table_list_is_a_setting_and_unlisted_tables_follow_their_rule():
    from pgdr.settings import parse_settings

    assert {"public.visits", "public.audit_events", "public.evv_records", "public.clients"} <= set(
        parse_settings({"s3_bucket": "pgdr-backups"}).phi_tables)
    assert parse_settings({"s3_bucket": "pgdr-backups", "phi_tables": '["notes", "app.x"]'}).phi_tables == (
        "public.notes", "app.x")
    notes = _rule(table="scratch_notes", phi=False, action="archive", date_column="created_at",
                  older_than={"days": 30}, soft_delete_column=None, soft_deleted_for=None)
    assert parse_policy({"rules": [notes]}, floor_years=FLOOR).rules[0].phi is False
    # the same table listed by the setting: the floor holds
    with pytest.raises(PolicyError, match="pgdr_phi_tables"):
        parse_policy({"rules": [notes]}, floor_years=FLOOR, phi_tables=("public.scratch_notes",))


def test_an_exemption_needs_a_written_reason_and_is_recorded():
    rule = dict(table="audit_events", phi=False, action="archive", date_column="timestamp",
                older_than={"years": 2}, soft_delete_column=None, soft_deleted_for=None)
    _refused({"rules": [_rule(**rule, phi_exemption="ok")]}, "phi_exemption must be a written reason")
    _refused({"rules": [_rule(**{**rule, "phi": True}, phi_exemption="x" * 30)]},
             "phi_exemption applies only to a phi: false rule")
    reason = "Counsel memo 2026-11: login audit rows of the demo tenant only, no health data"
    policy = parse_policy({"rules": [_rule(**rule, phi_exemption=reason)]}, floor_years=FLOOR)
    assert policy.rules[0].phi is False
    assert policy.exemptions == [{"rule": "public.audit_events/archive", "reason": reason}]
    # its cutoff is not held to the floor, because a reason was written down
    assert policy.cutoffs(datetime(2026, 12, 1, tzinfo=timezone.utc))
