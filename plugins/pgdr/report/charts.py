"""The history page's SVG charts as geometry: numbers and shapes, no markup (pure).

Each function returns a :class:`Chart`, a list of shapes in SVG user units (a 560 wide viewBox, y
growing downwards) with the text of their labels and tooltips as plain strings; the template
(``templates/history.html.j2``) writes them out, escaping every string. Keeping the arithmetic
here lets the tests check it as numbers (bigger values sit higher, bars stay inside the plot)
rather than by reading SVG back.

Coordinates that are constants of the layout are ints and the computed ones floats; the template
writes an int as is and a float with one decimal, which is all the precision a 560 unit wide
chart can show.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar

from pgdr.report.history import (
    CHECK_ORDER,
    MISSING,
    DrillPoint,
    VerifyPoint,
    format_duration,
    format_time,
)

WIDTH, HEIGHT = 560, 190
LEFT, RIGHT, TOP, BOTTOM = 70, 14, 14, 30
# the verification grid: room for the check names on the left, one row per check
GRID_LEFT, GRID_ROW = 104, 22.0
# the cell states the grid colours; any other (or no) result is drawn as "missing"
CELL_STATES = ("ok", "warning", "failed")

Number = int | float


@dataclass(frozen=True)
class Line:
    tag: ClassVar[str] = "line"
    css: str
    x1: Number
    y1: Number
    x2: Number
    y2: Number


@dataclass(frozen=True)
class Label:
    """A piece of text anchored at (x, y): ``start``, ``middle`` or ``end``."""
    tag: ClassVar[str] = "text"
    css: str
    x: Number
    y: Number
    anchor: str
    text: str


@dataclass(frozen=True)
class Series:
    """A polyline through the points of a time series."""
    tag: ClassVar[str] = "polyline"
    css: str
    points: tuple[tuple[float, float], ...]


@dataclass(frozen=True)
class Dot:
    tag: ClassVar[str] = "circle"
    css: str
    cx: float
    cy: float
    r: float
    tip: str


@dataclass(frozen=True)
class Bar:
    """A rectangle: a drill's RTO bar or a verification cell."""
    tag: ClassVar[str] = "rect"
    css: str
    x: float
    y: float
    width: float
    height: float
    tip: str


Shape = Line | Label | Series | Dot | Bar


@dataclass(frozen=True)
class Chart:
    """One SVG: ``name`` goes to ``data-chart``, ``data`` to further ``data-*`` attributes (in order)
    for tests and scripts that read the page, ``label`` to its title and aria-label."""
    name: str
    label: str
    width: int
    height: Number
    data: tuple[tuple[str, str], ...]
    shapes: tuple[Shape, ...]

    @property
    def viewbox(self) -> str:
        return f"0 0 {self.width} {self.height:.0f}"

    def of(self, kind: type) -> list:
        """The shapes of one type, in drawing order."""
        return [shape for shape in self.shapes if isinstance(shape, kind)]


def _data(**values) -> tuple[tuple[str, str], ...]:
    return tuple((name.replace("_", "-"), str(value)) for name, value in values.items())


def x_scale(times: Sequence[datetime]) -> Callable[[datetime], float]:
    """Time to x across the plot; a single time (or all equal) sits in the middle."""
    first, last = min(times), max(times)
    span = (last - first).total_seconds()
    inner = WIDTH - LEFT - RIGHT
    if span <= 0:
        return lambda when: LEFT + inner / 2
    return lambda when: LEFT + inner * (when - first).total_seconds() / span


def y_scale(top: float) -> Callable[[float], float]:
    """Value to y: 0 on the x axis, ``top`` at the top of the plot, negatives clamped to the axis."""
    inner = HEIGHT - TOP - BOTTOM
    top = top if top > 0 else 1.0
    return lambda value: TOP + inner * (1 - max(0.0, value) / top)


def axes(times: Sequence[datetime], top: float, fmt: Callable[[float], str]) -> list[Shape]:
    """Both axes, grid lines and value ticks at half and full ``top``, and the first and last dates."""
    y = y_scale(top)
    shapes: list[Shape] = [Line("axis", LEFT, TOP, LEFT, HEIGHT - BOTTOM),
                           Line("axis", LEFT, HEIGHT - BOTTOM, WIDTH - RIGHT, HEIGHT - BOTTOM)]
    for fraction in (0.5, 1.0):
        value = top * fraction
        shapes.append(Line("grid", LEFT, y(value), WIDTH - RIGHT, y(value)))
        shapes.append(Label("tick", LEFT - 6, y(value) + 4, "end", fmt(value)))
    shapes.append(Label("tick", LEFT - 6, HEIGHT - BOTTOM + 4, "end", "0"))
    first, last = min(times), max(times)
    span_days = (last - first).total_seconds() / 86400
    label = (lambda t: t.strftime("%Y-%m-%d")) if span_days >= 2 else (lambda t: t.strftime("%m-%d %H:%M"))
    shapes.append(Label("tick", LEFT, HEIGHT - 10, "start", label(first)))
    if last != first:
        shapes.append(Label("tick", WIDTH - RIGHT, HEIGHT - 10, "end", label(last)))
    return shapes


def line_chart(name: str, label: str, points: Sequence[tuple[datetime, float, str, str]],
               fmt: Callable[[float], str], **data) -> Chart:
    """A time series: ``points`` are (time, value, css class, tooltip); one dot per point, a line
    through them when there are two or more. ``data`` become ``data-*`` attributes after the count."""
    points = sorted(points, key=lambda p: p[0])
    if not points:
        empty = Label("tick", WIDTH / 2, HEIGHT / 2, "middle", "nothing measured")
        return Chart(name, label, WIDTH, HEIGHT, _data(points=0, **data), (empty,))
    times = [p[0] for p in points]
    top = max(p[1] for p in points) * 1.1
    x, y = x_scale(times), y_scale(top)
    shapes = axes(times, top or 1.0, fmt)
    if len(points) > 1:
        shapes.append(Series("series", tuple((x(t), y(v)) for t, v, _, _ in points)))
    shapes.extend(Dot(f"point {css}", x(when), y(value), 3.5, tip) for when, value, css, tip in points)
    return Chart(name, label, WIDTH, HEIGHT, _data(points=len(points), **data), tuple(shapes))


def rto_budget(drills: Sequence[DrillPoint], default_budget: float) -> float:
    """The budget line: the newest drill's recorded budget, else the configured one."""
    ordered = sorted(drills, key=lambda d: d.at)
    return next((d.budget_seconds for d in reversed(ordered) if d.budget_seconds), None) or default_budget


def rto_class(drill: DrillPoint, budget: float) -> str:
    """``failed`` (failed or measured nothing), ``over`` (passed but slower than its budget) or ``ok``."""
    if drill.status != "ok" or drill.rto_seconds is None:
        return "failed"
    return "over" if drill.rto_seconds > (drill.budget_seconds or budget) else "ok"


def rto_chart(database: str, drills: Sequence[DrillPoint], default_budget: float) -> Chart:
    """One bar per drill; the budget as a dashed line. A drill that measured nothing gets a stub bar."""
    drills = sorted(drills, key=lambda d: d.at)
    budget = rto_budget(drills, default_budget)
    top = max([budget] + [d.rto_seconds or 0.0 for d in drills]) * 1.1
    x, y = x_scale([d.at for d in drills]), y_scale(top)
    inner = WIDTH - LEFT - RIGHT
    bar = max(2.0, min(24.0, inner / max(1, len(drills)) * 0.6))
    shapes = axes([d.at for d in drills], top, format_duration)
    for drill in drills:
        value = drill.rto_seconds if drill.rto_seconds is not None else top * 0.03
        height = (HEIGHT - BOTTOM) - y(value)
        left = min(max(LEFT, x(drill.at) - bar / 2), WIDTH - RIGHT - bar)
        tip = (f"{format_time(drill.at)} backup {drill.backup_id or MISSING}: RTO "
               f"{format_duration(drill.rto_seconds)} ({drill.status})")
        shapes.append(Bar(f"bar {rto_class(drill, budget)}", left, y(value), bar, max(1.0, height), tip))
    shapes.append(Line("budget", LEFT, y(budget), WIDTH - RIGHT, y(budget)))
    shapes.append(Label("budget-label", WIDTH - RIGHT - 4, y(budget) - 5, "end", f"budget {format_duration(budget)}"))
    return Chart("rto", f"Drill RTO of {database} against the budget", WIDTH, HEIGHT,
                 _data(database=database, bars=len(drills), budget_seconds=f"{budget:g}"), tuple(shapes))


def check_names(runs: Sequence[VerifyPoint]) -> list[str]:
    """The grid's rows: the known checks in their usual order, then any others by name."""
    seen = {name for run in runs for name, _ in run.checks}
    return [c for c in CHECK_ORDER if c in seen] + sorted(seen - set(CHECK_ORDER))


def verify_chart(database: str, runs: Sequence[VerifyPoint]) -> Chart:
    """A grid: one row per check, one column per verification run (oldest left), a cell per result."""
    runs = sorted(runs, key=lambda r: r.at)
    names = check_names(runs)
    row, left = GRID_ROW, GRID_LEFT
    height = TOP + row * max(1, len(names)) + BOTTOM
    column = (WIDTH - left - RIGHT) / max(1, len(runs))
    shapes: list[Shape] = [Label("tick", left - 6, TOP + row * index + row / 2 + 4, "end", name)
                           for index, name in enumerate(names)]
    cells = 0
    for position, run in enumerate(runs):
        results = dict(run.checks)
        for index, name in enumerate(names):
            status = results.get(name, "missing")
            css = status if status in CELL_STATES else "missing"
            shapes.append(Bar(f"cell {css}", left + column * position + 0.5, TOP + row * index + 1,
                              max(1.0, column - 1), row - 2, f"{format_time(run.at)} {name}: {status}"))
            cells += 1
    if runs:
        first, last = runs[0].at, runs[-1].at
        shapes.append(Label("tick", left, height - 10, "start", format_time(first)))
        if last != first:
            shapes.append(Label("tick", WIDTH - RIGHT, height - 10, "end", format_time(last)))
    return Chart("verify", f"Verification results of {database}, check by check", WIDTH, height,
                 _data(database=database, runs=len(runs), checks=len(names), cells=cells), tuple(shapes))
