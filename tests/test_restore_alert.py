"""The restore alert says what is true about what a failed restore left behind."""

import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "plugins"))

from pgdr.alerts.messages import restore_alert  # noqa: E402


def _text(record: dict) -> str:
    return json.dumps(restore_alert(record, None))


def _record(status: str, cleanup=None) -> dict:
    return {"database": "care_commons_db", "status": status, "error": "RuntimeError: boom", "plan": None,
            "requested": {"mode": "replace"}, "run_id": "manual__1", "interrupted_restore_cleanup": cleanup}


def test_a_restore_killed_part_way_names_what_was_cleaned_up():
    text = _text(_record("failed", [{"run_id": "r", "done": ["dropped care_commons_partial_ab12"], "left": []}]))
    assert "died part-way" in text and "care_commons_partial_ab12" in text and "half-restored" not in text


def test_what_could_not_be_cleaned_up_is_named_and_never_called_clean():
    text = _text(_record("failed", [{"run_id": "r", "done": ["stopped pg_restore 4242"],
                                     "left": ["care_commons refuses connections"]}]))
    assert "NOT everything" in text and "care_commons refuses connections" in text
    assert "nothing was" not in text


def test_a_refusal_says_nothing_changed_and_a_plain_failure_that_its_work_was_dropped():
    assert "nothing was changed" in _text(_record("refused"))
    assert "was dropped" in _text(_record("failed"))
