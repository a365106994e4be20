"""SQL kept in include/sql/, next to plugins/ in the repository and in the Airflow home."""

from __future__ import annotations

from functools import cache
from pathlib import Path

SQL_DIR = Path(__file__).resolve().parents[3] / "include" / "sql"


@cache
def load(name: str) -> str:
    path = SQL_DIR / f"{name}.sql"
    if not path.is_file():
        raise FileNotFoundError(f"{path} is missing: deploy include/sql/ next to plugins/")
    return path.read_text()
