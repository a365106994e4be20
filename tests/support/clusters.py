"""PostgreSQL around a test cluster: directories its server user can write, the tools' argv recorded,
a restore by hand with the bare tools."""

from __future__ import annotations

import os
import pwd
import subprocess
import tempfile
from pathlib import Path

from harness.pg_cluster import pg_bindir

# the user harness.pg_cluster runs servers and pg_receivewal as (the server refuses to run as root)
SERVER_USER = "postgres" if os.geteuid() == 0 else None


def shared_dir(prefix: str) -> Path:
    """A directory the server user can use too (pytest's tmp_path is private to root); the caller removes it."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o777)
    return path


def receiver_dir(prefix: str = "pgdr-wal-test-") -> Path:
    """A directory pg_receivewal (run as the server user) can write and the test can read; the caller removes
    it (as root: files the server user wrote)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    path.chmod(0o755)
    if SERVER_USER:
        entry = pwd.getpwnam(SERVER_USER)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


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
