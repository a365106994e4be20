"""PostgreSQL tools around a test cluster: recording the argv pgdr gives them, restoring by hand."""

from __future__ import annotations

import subprocess
from pathlib import Path

from harness.pg_cluster import pg_bindir


def argv_recording_bindir(directory: Path, record: Path) -> Path:
    """A bindir whose pg_* tools record their argv, then exec the real tool."""
    directory.mkdir(parents=True, exist_ok=True)
    for tool in ("pg_dump", "pg_dumpall", "pg_restore", "psql", "pg_basebackup", "pg_verifybackup"):
        script = directory / tool
        script.write_text(f'#!/bin/sh\necho "{tool} $*" >> "{record}"\nexec "{pg_bindir()}/{tool}" "$@"\n')
        script.chmod(0o755)
    return directory


def restore_by_hand(cluster, files: Path, jobs: int = 2) -> None:
    """The runbook's manual restore with the bare tools: globals first, then pg_restore --create."""
    env = cluster.tool_env()
    # "role postgres already exists" is expected and harmless, so no ON_ERROR_STOP here
    subprocess.run([str(pg_bindir() / "psql"), "-X", "-q", "-d", "postgres", "-f", str(files / "globals.sql")],
                   env=env, check=True, capture_output=True)
    subprocess.run([str(pg_bindir() / "pg_restore"), "--create", "--exit-on-error", f"--jobs={jobs}",
                    "-d", "postgres", str(files / "dump")], env=env, check=True, capture_output=True)
