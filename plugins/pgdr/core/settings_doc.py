"""docs/configuration.md, rendered from the settings' declaration (:mod:`pgdr.settings`).

The tables (every setting's name, default, meaning and example; the two parse-time deadlines)
come from the declaration; the prose around them is the template
``templates/configuration.md.j2``. Regenerate after changing either::

    PYTHONPATH=plugins .venv/bin/python -m pgdr.core.settings_doc > docs/configuration.md

tests/test_settings.py fails while the committed page differs from what this renders.
"""

from __future__ import annotations

import sys
from pathlib import Path

import jinja2

from pgdr.settings import DEADLINE_SETTINGS, PREFIX, SETTINGS

TEMPLATES = Path(__file__).resolve().parent / "templates"
COMMAND = "make docs"


def _cell(text: str) -> str:
    return text.replace("|", "\\|")   # a bare pipe would end the table cell


def _default_cell(default: str | None) -> str:
    if default is None:
        return "(required)"
    return f"`{_cell(default)}`" if default else "(empty)"


def render() -> str:
    # Markdown, not HTML: nothing to escape but the table's pipes (the cell filter)
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATES), autoescape=False,
                             undefined=jinja2.StrictUndefined, trim_blocks=True, lstrip_blocks=True,
                             keep_trailing_newline=True)
    env.filters.update(cell=_cell, default_cell=_default_cell)
    deadlines = [(f"AIRFLOW_VAR_{(PREFIX + name).upper()}", default, meaning)
                 for name, (default, meaning) in DEADLINE_SETTINGS.items()]
    return env.get_template("configuration.md.j2").render(settings=SETTINGS, deadlines=deadlines, prefix=PREFIX,
                                                         command=COMMAND)


if __name__ == "__main__":
    sys.stdout.write(render())
