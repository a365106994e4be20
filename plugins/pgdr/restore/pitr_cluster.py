"""The clusters a point-in-time recovery starts: their environment and port, where they go, and the
registry that lets an expired one be stopped and removed.

A recovered cluster's data directory goes under ``pgdr_pitr_data_dir`` and it listens on
``pgdr_pitr_listen_addresses``, port ``pgdr_pitr_port`` (another free port when that one is busy,
say with the cluster of an earlier recovery); when the worker runs as root the cluster runs as
``pgdr_pitr_os_user``. The server starts with a minimal environment: none of the worker's secrets
(Airflow connections, the Fernet key, cloud credentials) reach it. Each running recovered cluster
is recorded beside its data directory with an expiry (``pgdr_pitr_keep_hours``);
:func:`expire_recovered` stops and removes the expired ones.
"""

from __future__ import annotations

import json
import logging
import os
import pwd
import shutil
import socket
import subprocess
from datetime import datetime, timezone
from pathlib import Path

from pgdr.core.pgtools import tool_path
from pgdr.errors import RESTORE_REFUSED, ToolError
from pgdr.restore.request import RestoreRefused

REFUSED = RESTORE_REFUSED
REGISTRY_SUFFIX = ".pgdr-pitr.json"
# what the recovered server inherits from the worker: a search path and the locale, nothing else
_KEPT_ENVIRONMENT = ("LANG", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "TZ")


class RecoveryFailed(ToolError, RuntimeError):
    """The recovered cluster did not come up (or its base backup or WAL did not check out); the message
    says which, quoting the server's log where there is one."""


def clean_environment(bindir: Path | None = None) -> dict[str, str]:
    """The environment a recovered server runs with: PATH and the locale; no worker secret."""
    path = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
    if bindir:
        path.insert(0, str(bindir))
    env = {"PATH": ":".join(path)}
    env.update({name: os.environ[name] for name in _KEPT_ENVIRONMENT if name in os.environ})
    return env


def choose_port(preferred: int, host: str = "127.0.0.1") -> int:
    """``preferred`` when it is free, else a free port the system hands out."""
    if port_is_free(preferred, host):
        return preferred
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _first_address(listen_addresses: str) -> str:
    first = listen_addresses.split(",")[0].strip()
    return "127.0.0.1" if first in ("", "*", "0.0.0.0", "localhost") else first

# ---------------------------------------------------------------- the registry of running recovered clusters

def registry_path(data_dir: Path) -> Path:
    return data_dir.with_name(data_dir.name + REGISTRY_SUFFIX)


def running_recovered(data_root: Path) -> list[dict]:
    """The recovered clusters recorded under ``data_root`` (running or left behind), oldest first."""
    found = []
    for record in sorted(Path(data_root).glob("*" + REGISTRY_SUFFIX)):
        try:
            found.append({**json.loads(record.read_text()), "record": str(record)})
        except (OSError, ValueError):
            continue
    return sorted(found, key=lambda r: r.get("started_at", ""))


def expire_recovered(data_root: Path, log: logging.Logger, now: datetime | None = None,
                     dry_run: bool = False) -> list[dict]:
    """Stop and remove every recovered cluster under ``data_root`` whose expiry has passed; returns them.

    A recovered cluster holds a full copy of the patient data; it lives only as long as
    ``pgdr_pitr_keep_hours`` said when it was started. Only clusters pgdr recorded are touched."""
    now = now or datetime.now(timezone.utc)
    removed = []
    for record in running_recovered(data_root):
        try:
            expires = datetime.fromisoformat(record["expires_at"])
        except (KeyError, ValueError):
            continue
        if expires > now:
            continue
        data_dir = Path(record["data_dir"])
        if data_dir.parent != Path(data_root) or not data_dir.name:
            continue   # a record pointing elsewhere was not written by pgdr: leave it
        if not dry_run:
            _remove_cluster(data_dir, record.get("os_user"), Path(record.get("bindir") or "."))
        log.info("%s the recovered cluster %s (port %s), expired %s", "would remove" if dry_run else "removed",
                 data_dir, record.get("port"), record["expires_at"])
        removed.append({"data_dir": str(data_dir), "port": record.get("port"), "expires_at": record["expires_at"],
                        "base_backup_id": record.get("base_backup_id")})
    return removed


def _remove_cluster(data_dir: Path, os_user: str | None, bindir: Path) -> None:
    if (data_dir / "postmaster.pid").exists():
        for mode in ("fast", "immediate"):
            result = subprocess.run(_as_user(os_user, [tool_path(bindir, "pg_ctl"), "-D", str(data_dir), "-m", mode,
                                                       "-w", "-t", "60", "stop"]),
                                    capture_output=True, env=clean_environment(bindir))
            if result.returncode == 0:
                break
    for path in (data_dir, data_dir.with_name(data_dir.name + ".wal"), data_dir.with_name(data_dir.name + ".sock"),
                 data_dir.with_name(data_dir.name + ".download")):
        shutil.rmtree(path, ignore_errors=True)
    data_dir.with_name(data_dir.name + ".log").unlink(missing_ok=True)
    registry_path(data_dir).unlink(missing_ok=True)


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def check_pitr_target(data_root: Path, name: str, port: int, free_needed: int) -> Path:
    """The new cluster's data directory, after checking it is new and there is room. A busy ``port`` is no
    refusal: the recovery takes another free one (and reports it)."""
    data_dir = data_root / name
    problems = []
    if data_dir.exists():
        problems.append(f"{data_dir} already exists")
    data_root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(data_root).free
    if free < free_needed:
        problems.append(f"{data_root} has {free >> 20} MiB free, the recovery needs about {free_needed >> 20} MiB "
                        "(setting pgdr_pitr_data_dir)")
    if problems:
        raise RestoreRefused(REFUSED + "; ".join(problems))
    return data_dir


def _as_user(os_user: str | None, argv: list[str]) -> list[str]:
    if os_user and os.geteuid() == 0:
        return ["runuser", "-u", os_user, "--", *argv]
    return argv


def _chown_tree(path: Path, os_user: str | None) -> None:
    if not os_user or os.geteuid() != 0:
        return
    entry = pwd.getpwnam(os_user)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)


def connect_recovered(result: dict, login: str, dbname: str):
    import psycopg2

    conn = psycopg2.connect(host=result["socket_dir"], port=result["port"], user=login, dbname=dbname)
    conn.autocommit = True
    return conn


def stop_recovered(data_dir: str, os_user: str | None, bindir: Path) -> None:
    subprocess.run(_as_user(os_user, [tool_path(bindir, "pg_ctl"), "-D", data_dir, "-m", "fast", "-w", "stop"]),
                   capture_output=True, env=clean_environment(bindir))
