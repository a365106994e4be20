"""The history page's parts on their own, without services: the charts' geometry as numbers
(pgdr.report.charts), the template's escaping, what of a record can reach the page, and the
template being found beside the package wherever plugins/ is.

The page as a whole, and in Chromium, is tests/test_history_page.py.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest

from pgdr.report.charts import (
    BOTTOM,
    HEIGHT,
    LEFT,
    RIGHT,
    TOP,
    WIDTH,
    Bar,
    Dot,
    Label,
    Line,
    Series,
    check_names,
    line_chart,
    rto_budget,
    rto_chart,
    verify_chart,
    x_scale,
    y_scale,
)
from pgdr.report.history import (
    BackupPoint,
    DrillPoint,
    History,
    VerifyPoint,
    drill_point,
    format_size,
    restore_point,
    verify_point,
    word,
)
from pgdr.report.history_page import TEMPLATES, environment, render_page

REPO_ROOT = Path(__file__).resolve().parents[1]
NOW = datetime(2026, 11, 27, 8, 0, tzinfo=timezone.utc)
PLOT_BOTTOM = HEIGHT - BOTTOM
HOSTILE = '<script>alert("x")</script>'


def _times(count: int, step=timedelta(days=1)) -> list[datetime]:
    return [NOW - step * (count - 1 - n) for n in range(count)]


# --- scales ------------------------------------------------------------------------------------

def test_time_runs_left_to_right_across_the_plot_and_a_single_time_sits_in_the_middle():
    times = _times(5)
    x = x_scale(times)
    assert (x(times[0]), x(times[-1])) == (LEFT, WIDTH - RIGHT)
    assert x(times[2]) == pytest.approx((LEFT + WIDTH - RIGHT) / 2)
    assert [x(t) for t in times] == sorted(x(t) for t in times)
    assert x_scale([NOW])(NOW) == x_scale([NOW, NOW])(NOW) == LEFT + (WIDTH - LEFT - RIGHT) / 2


def test_values_rise_from_the_axis_to_the_top_and_never_fall_below_it():
    y = y_scale(200.0)
    assert (y(0), y(200.0), y(100.0)) == (PLOT_BOTTOM, TOP, pytest.approx((TOP + PLOT_BOTTOM) / 2))
    assert y(-50.0) == PLOT_BOTTOM
    assert y_scale(0.0)(0.0) == PLOT_BOTTOM  # an all-zero series still has a scale


# --- time series -------------------------------------------------------------------------------

def test_a_series_is_a_dot_per_point_bigger_values_higher_with_headroom_and_a_line_through_them():
    times = _times(4)
    values = [10.0, 40.0, 20.0, 30.0]
    points = [(t, v, "good", f"tip {v}") for t, v in zip(times, values, strict=True)]
    chart = line_chart("size", "label", points, format_size, database="db", kind="logical")
    assert chart.data == (("points", "4"), ("database", "db"), ("kind", "logical"))
    dots = chart.of(Dot)
    assert [d.tip for d in dots] == ["tip 10.0", "tip 40.0", "tip 20.0", "tip 30.0"]
    assert [d.css for d in dots] == ["point good"] * 4
    by_height = sorted(dots, key=lambda d: d.cy)  # smaller y is higher
    assert [d.tip for d in by_height] == ["tip 40.0", "tip 30.0", "tip 20.0", "tip 10.0"]
    # the biggest value sits below the top (10 % headroom), all inside the plot
    assert TOP < by_height[0].cy < PLOT_BOTTOM and all(LEFT <= d.cx <= WIDTH - RIGHT for d in dots)
    assert by_height[0].cy == pytest.approx(TOP + (PLOT_BOTTOM - TOP) * (1 - 1 / 1.1))
    (series,) = chart.of(Series)
    assert series.points == tuple((d.cx, d.cy) for d in dots)
    # the value ticks are half and all of the scale's top, formatted like the values
    assert [label.text for label in chart.of(Label)][:3] == [format_size(44 / 2), format_size(44), "0"]


def test_one_point_draws_no_line_and_no_points_draw_a_note_instead_of_axes():
    (when,) = _times(1)
    single = line_chart("duration", "label", [(when, 5.0, "bad", "tip")], str)
    assert len(single.of(Dot)) == 1 and not single.of(Series)
    assert single.of(Dot)[0].cx == LEFT + (WIDTH - LEFT - RIGHT) / 2
    empty = line_chart("duration", "label", [], str, kind="base")
    assert empty.data == (("points", "0"), ("kind", "base"))
    assert [(s.text, s.anchor) for s in empty.shapes] == [("nothing measured", "middle")]


def test_points_given_out_of_order_are_drawn_in_time_order_and_dates_label_the_ends():
    times = _times(3)
    chart = line_chart("size", "l", [(times[2], 3.0, "", "c"), (times[0], 1.0, "", "a"), (times[1], 2.0, "", "b")], str)
    assert [d.tip for d in chart.of(Dot)] == ["a", "b", "c"]
    ends = [label for label in chart.of(Label) if label.y == HEIGHT - 10]
    assert [(e.text, e.anchor) for e in ends] == [("2026-11-25", "start"), ("2026-11-27", "end")]
    hours = line_chart("size", "l", [(t, 1.0, "", "") for t in _times(3, timedelta(hours=1))], str)
    assert [e.text for e in hours.of(Label) if e.y == HEIGHT - 10] == ["11-27 06:00", "11-27 08:00"]


# --- drill RTOs --------------------------------------------------------------------------------

def _drill(at, rto, status="ok", budget=3600.0):
    return DrillPoint("db", at, "20261126T020000Z", rto, budget, status)


def test_drill_bars_stand_on_the_axis_inside_the_plot_against_the_budget_line():
    times = _times(3, timedelta(days=30))
    chart = rto_chart("db", [_drill(times[0], 1200.0), _drill(times[1], 4000.0), _drill(times[2], None, "failed")],
                      3600.0)
    assert chart.data == (("database", "db"), ("bars", "3"), ("budget-seconds", "3600"))
    bars = chart.of(Bar)
    assert [b.css for b in bars] == ["bar ok", "bar over", "bar failed"]
    for bar in bars:
        assert bar.y + bar.height == pytest.approx(PLOT_BOTTOM)   # on the axis
        assert LEFT <= bar.x and bar.x + bar.width <= WIDTH - RIGHT  # the end bars are pulled in, not cut
    assert bars[0].x == LEFT and bars[-1].x + bars[-1].width == pytest.approx(WIDTH - RIGHT)
    budget = next(line for line in chart.of(Line) if line.css == "budget")
    assert budget.y1 == budget.y2 and bars[1].y < budget.y1 < bars[0].y  # 4000 s above, 1200 s below 3600 s
    assert bars[1].y == pytest.approx(TOP + (PLOT_BOTTOM - TOP) * (1 - 4000 / 4400))  # the top is 1.1 x the tallest
    # a drill that measured nothing is a stub: visible, a few percent of the scale
    assert 1.0 <= bars[2].height < 0.05 * (PLOT_BOTTOM - TOP)
    assert bars[2].tip.endswith("RTO — (failed)") and "20261126T020000Z" in bars[2].tip
    assert chart.of(Label)[-1].text == "budget 1 h 00 min"


def test_bars_are_narrower_when_there_are_many_drills_but_never_vanish():
    one = rto_chart("db", [_drill(NOW, 60.0)], 3600.0).of(Bar)
    many = rto_chart("db", [_drill(t, 60.0) for t in _times(400, timedelta(hours=1))], 3600.0).of(Bar)
    assert one[0].width == 24.0 and one[0].x == pytest.approx(LEFT + (WIDTH - LEFT - RIGHT) / 2 - 12)
    assert {b.width for b in many} == {2.0}


def test_the_budget_line_is_the_newest_drills_own_budget_else_the_configured_one():
    older, newer = _times(2)
    assert rto_budget([_drill(newer, 1.0, budget=1800.0), _drill(older, 1.0, budget=900.0)], 3600.0) == 1800.0
    assert rto_budget([_drill(newer, 1.0, budget=None), _drill(older, 1.0, budget=900.0)], 3600.0) == 900.0
    assert rto_budget([_drill(newer, 1.0, budget=None)], 3600.0) == 3600.0
    # a drill within the configured budget but over its own recorded one is over
    assert rto_chart("db", [_drill(newer, 1000.0, budget=900.0)], 3600.0).of(Bar)[0].css == "bar over"


# --- verification grid -------------------------------------------------------------------------

def test_the_verification_grid_is_a_cell_per_check_per_run_filling_the_width():
    runs = [VerifyPoint("db", NOW, "ok", (("wal", "ok"), ("freshness", "warning"), ("zz_new", "ok"))),
            VerifyPoint("db", NOW - timedelta(hours=6), "failed", (("freshness", "failed"), ("integrity", "ok")))]
    assert check_names(runs) == ["freshness", "integrity", "wal", "zz_new"]  # known order, then by name
    chart = verify_chart("db", runs)
    assert chart.data == (("database", "db"), ("runs", "2"), ("checks", "4"), ("cells", "8"))
    assert chart.height == TOP + 22.0 * 4 + BOTTOM and chart.viewbox == f"0 0 {WIDTH} {TOP + 88 + BOTTOM}"
    cells = chart.of(Bar)
    # column by column, oldest run on the left; a check a run did not report is "missing"
    assert [c.css.split()[1] for c in cells] == ["failed", "ok", "missing", "missing",
                                                 "warning", "missing", "ok", "ok"]
    assert cells[0].tip == "2026-11-27 02:00 UTC freshness: failed"
    assert cells[0].x == pytest.approx(104 + 0.5)
    assert cells[-1].x + cells[-1].width == pytest.approx(WIDTH - RIGHT - 0.5)
    assert len({c.y for c in cells}) == 4 and all(c.height == 20.0 for c in cells)
    # an unknown status is drawn grey but its tooltip says what was recorded
    odd = verify_chart("db", [VerifyPoint("db", NOW, "ok", (("wal", "skipped"),))]).of(Bar)[0]
    assert odd.css == "cell missing" and odd.tip.endswith("wal: skipped")


# --- what reaches the page, and how ------------------------------------------------------------

def _history(database: str, **overrides) -> History:
    history = History(generated_at=NOW, bucket="bucket", prefix="pgdr", days=90, databases=(database,),
                      rto_budget_seconds=3600.0)
    for name, value in overrides.items():
        setattr(history, name, value)
    return history


def test_the_template_escapes_a_hostile_database_name_in_text_attributes_titles_and_tooltips():
    backup = BackupPoint(HOSTILE, "logical", "20261126T020000Z", NOW - timedelta(hours=5), NOW, 10, 1, "good")
    history = _history(HOSTILE, backups=[backup], verifications=[VerifyPoint(HOSTILE, NOW, "ok", (("wal", "ok"),))],
                       drills=[DrillPoint(HOSTILE, NOW, None, 60.0, None, "ok")],
                       unreadable=[f"pgdr/reports/verify/{HOSTILE}.json"])
    assert environment().autoescape is True
    template = (TEMPLATES / "history.html.j2").read_text()
    assert "|safe" not in template.replace(" ", "") and "autoescape" not in template  # nothing opts out
    page = render_page(history)
    assert "<script" not in page
    # h2, data-database on the section and each chart, chart titles/aria-labels, the unreadable key
    assert page.count("&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt;") >= 12


def test_error_texts_and_sentences_in_records_never_reach_the_page():
    """A record's free text (summaries, evidence, errors, which could quote a row) is never read,
    and a status, check, mode or id that is not one word is replaced before it is shown."""
    phi = "Doe, Jane 123-45-6789"
    run = verify_point({"database": "db", "written_at": "2026-11-27T07:00:00Z", "status": "failed", "results": [
        {"check": "integrity", "status": "failed", "summary": f"{HOSTILE} {phi}", "evidence": [{"row": phi}]},
        {"check": f"{HOSTILE} {phi}", "status": f"failed: {phi}"}]})
    assert run.checks == (("integrity", "failed"), ("unnamed", "unknown")) and run.status == "failed"
    drill = drill_point({"kind": "drill", "database": "db", "started_at": "2026-11-27T06:00:00Z",
                         "backup_id": f"{HOSTILE} {phi}", "status": "failed", "rto_seconds": None,
                         "problems": [{"problem": "restore failed", "error": f"{HOSTILE} {phi}"}]})
    assert drill.backup_id is None
    restore = restore_point({"kind": "restore", "database": "db", "started_at": "2026-11-27T05:00:00Z",
                             "status": f"{HOSTILE} {phi}", "error": f"{HOSTILE} {phi}",
                             "requested": {"mode": f"tables; {phi}", "tables": [phi]}})
    assert (restore.status, restore.mode) == ("unknown", None)
    page = render_page(_history("db", verifications=[run], drills=[drill], restores=[restore]))
    assert "script" not in page and "Doe" not in page and "123-45-6789" not in page
    # and words as pgdr writes them pass unchanged
    assert [word(w) for w in ("ok", "new_database", "20261126T020000Z", "deep_check", "pg_15.4")] == [
        "ok", "new_database", "20261126T020000Z", "deep_check", "pg_15.4"]
    assert [word(w) for w in ("", " ok", "ok\n", "a" * 81, None, 3)] == ["unknown"] * 6


def test_the_template_is_found_beside_the_package_wherever_plugins_is(tmp_path):
    """Airflow's plugins folder, an installed package or a checkout: the template is looked up next
    to pgdr/report/history_page.py, not from the working directory or the repository."""
    assert TEMPLATES == Path(sys.modules["pgdr.report.history_page"].__file__).resolve().parent / "templates"
    plugins = tmp_path / "elsewhere" / "plugins"
    shutil.copytree(REPO_ROOT / "plugins" / "pgdr", plugins / "pgdr",
                    ignore=shutil.ignore_patterns("__pycache__"))
    script = ("from datetime import datetime, timezone\n"
              "from pgdr.report.history import History\n"
              "from pgdr.report import history_page\n"
              "h = History(datetime(2026, 11, 27, tzinfo=timezone.utc), 'b', 'p', 90, ('db',), 3600.0)\n"
              "print(history_page.TEMPLATES)\n"
              "print(history_page.render_page(h))\n")
    result = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True,
                            env={"PYTHONPATH": str(plugins), "PATH": "/usr/bin:/bin"}, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    where, page = result.stdout.split("\n", 1)
    assert where == str((plugins / "pgdr" / "report" / "templates").resolve())
    assert page.startswith("<!DOCTYPE html>") and 'data-database="db"' in page and "svg.chart{" in page
