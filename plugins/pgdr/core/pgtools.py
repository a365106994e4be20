"""Running the PostgreSQL client tools without leaking secrets.

Passwords reach libpq through a passfile in a private temporary directory
(PGPASSFILE), never through argv; connection parameters go through libpq's
environment (PGHOST, PGPORT, ...). Errors quote the tool's stderr, which libpq
keeps free of passwords, after :mod:`pgdr.core.redaction` has removed every row value from it.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import os
import re
import shutil
import signal
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from pgdr.errors import Refused, ToolError

DEFAULT_BINDIR = "/usr/lib/postgresql/15/bin"

# libpq options an Airflow connection's extra may carry, and their environment names.
_EXTRA_TO_ENV = {
    "sslmode": "PGSSLMODE",
    "sslrootcert": "PGSSLROOTCERT",
    "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY",
    "connect_timeout": "PGCONNECT_TIMEOUT",
    "target_session_attrs": "PGTARGETSESSIONATTRS",
}


_LIBC = ctypes.CDLL(None, use_errno=True)
_PR_SET_PDEATHSIG = 1


def die_with_worker() -> None:
    """``preexec_fn`` for the PostgreSQL tools pgdr starts: SIGKILL them when the thread that
    started them dies, so a worker killed mid-backup (OOM, ``kill -9``, a lost pod) leaves no
    pg_dump or pg_basebackup writing into a dead run's staging directory while holding a
    snapshot, a WAL sender and a connection. Linux only; elsewhere a no-op."""
    parent = os.getppid()
    try:
        _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)
    except AttributeError:
        return
    if os.getppid() != parent:  # the worker died before prctl took effect
        os._exit(1)


# what a tool or server says when waiting and trying again cannot help: the deployment must change
NOT_RETRYABLE = re.compile("|".join([
    r"server version mismatch",                  # pg_dump older than the server
    r"authentication failed",                    # password, SCRAM, cert, peer
    r"no pg_hba\.conf entry",
    r"(role|database) \"[^\"]*\" does not exist",
    r"permission denied",
    r"must be (a )?superuser",
    r"incompatible server version",
]))


class PgToolError(ToolError, RuntimeError):
    """A PostgreSQL tool failed; the message carries its stderr (no secrets) with every row value
    removed: whoever builds one, its text passes :func:`pgdr.core.redaction.redact_phi`."""

    def __init__(self, message: object = "", *args) -> None:
        from pgdr.core.redaction import redact_phi

        super().__init__(redact_phi(str(message)), *args)
        # a tool tells of a full disk (ENOSPC) only in its stderr: read once here, where that text
        # arrives, so callers test this field instead of the message
        self.disk_full = "No space left on device" in str(message)
        self.retryable = NOT_RETRYABLE.search(str(message)) is None


@dataclass(frozen=True)
class PgTarget:
    """Where a tool connects: taken from an Airflow postgres connection."""

    conn_id: str
    host: str
    port: int
    user: str
    dbname: str
    password: str | None = field(default=None, repr=False)
    options: tuple[tuple[str, str], ...] = ()

    @classmethod
    def from_connection(cls, conn_id: str, conn) -> PgTarget:
        extra = conn.extra_dejson if hasattr(conn, "extra_dejson") else {}
        missing = [name for name, value in (("host", conn.host), ("login", conn.login),
                                            ("schema (database name)", conn.schema)) if not value]
        if missing:
            raise ValueError(f"connection {conn_id!r} lacks {', '.join(missing)}")
        options = tuple((key, str(extra[key])) for key in _EXTRA_TO_ENV if key in extra)
        return cls(conn_id=conn_id, host=conn.host, port=int(conn.port or 5432), user=conn.login,
                   dbname=conn.schema, password=conn.password or None, options=options)

    def describe(self) -> str:
        return f"{self.conn_id} ({self.user}@{self.host}:{self.port}/{self.dbname})"


def _passfile_field(value: str) -> str:
    return value.replace("\\", "\\\\").replace(":", "\\:")


@contextmanager
def libpq_env(target: PgTarget) -> Iterator[dict[str, str]]:
    """Environment for a tool connecting to ``target``; the passfile is removed afterwards."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    env.update(PGHOST=target.host, PGPORT=str(target.port), PGUSER=target.user,
               PGDATABASE=target.dbname, PGAPPNAME="pgdr")
    env.setdefault("PGCONNECT_TIMEOUT", "15")
    for key, value in target.options:
        env[_EXTRA_TO_ENV[key]] = value
    private_dir = tempfile.mkdtemp(prefix="pgdr-pass-")
    try:
        passfile = Path(private_dir) / "pgpass"
        fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as handle:
            if target.password is not None:
                handle.write(":".join([_passfile_field(target.host), str(target.port), "*",
                                       _passfile_field(target.user), _passfile_field(target.password)]) + "\n")
        env["PGPASSFILE"] = str(passfile)
        yield env
    finally:
        shutil.rmtree(private_dir, ignore_errors=True)


def tool_path(bindir: str | Path, name: str) -> str:
    path = Path(bindir) / name
    if not path.exists():
        raise ToolMissing(f"{name} not found in {bindir} (settings pgdr_pg_bindir, pgdr_pg_bindirs)",
                          field="pgdr_pg_bindir")
    return str(path)


def tool_version(bindir: str | Path, name: str) -> str:
    out = subprocess.run([tool_path(bindir, name), "--version"], capture_output=True, text=True, check=True)
    return out.stdout.strip()


# --- the tools of each PostgreSQL major ------------------------------------------------------------

MAJOR_PLACEHOLDER = "{major}"
SUPPORTED_MAJORS = (15, 16, 17, 18)
_TOOL_MAJOR = re.compile(r"\(PostgreSQL\) (\d+)")


class ToolMissing(Refused, RuntimeError):
    """The PostgreSQL tools a server's major needs are not where the settings say; a retry cannot help."""


def server_major(version_num: int) -> int:
    """``server_version_num`` 180006 -> 18 (every supported major is 10 or later)."""
    return int(version_num) // 10000


@dataclass(frozen=True)
class ToolDirs:
    """Where the PostgreSQL tools of each major are: ``template`` with ``{major}`` in it
    (``/usr/lib/postgresql/{major}/bin``, the Debian/PGDG layout) or one fixed directory, and
    ``overrides`` for majors installed elsewhere. One Airflow protects servers of several majors, so
    the directory is chosen for each server when a task runs, from the server's own version."""

    template: str
    overrides: tuple[tuple[int, str], ...] = ()

    def directory(self, major: int) -> Path:
        for known, directory in self.overrides:
            if known == major:
                return Path(directory)
        return Path(self.template.replace(MAJOR_PLACEHOLDER, str(major)))

    def __str__(self) -> str:
        return self.template


@functools.lru_cache(maxsize=64)
def _tool_major(path: str, mtime: float) -> int | None:
    try:
        out = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=30, check=False)
    except OSError:
        return None
    found = _TOOL_MAJOR.search(out.stdout or "")
    return int(found.group(1)) if found else None


def tools_for(where: ToolDirs | str | Path, version_num: int, needed: tuple[str, ...], *,
              exact: bool = False) -> Path:
    """The directory holding ``needed`` for a server of ``version_num``, checked: every tool present and
    of the server's major (``exact``: the server binaries that run its data directory) or newer (client
    tools read older servers, never newer ones). Refused at once, naming the tool and the major:
    a missing or older tool is a deployment fact no retry changes."""
    major = server_major(version_num)
    if isinstance(where, ToolDirs):
        directory = where.directory(major)
    else:
        directory = Path(str(where).replace(MAJOR_PLACEHOLDER, str(major)))
    for name in needed:
        path = directory / name
        if not path.exists():
            raise ToolMissing(
                f"{name} for PostgreSQL {major} not found in {directory}: install the PostgreSQL {major} tools "
                f"(Debian/PGDG: postgresql-client-{major}) or map {major} to their directory in the setting "
                f"pgdr_pg_bindirs", field="pgdr_pg_bindir")
        found = _tool_major(str(path), path.stat().st_mtime)
        if found is None:
            continue   # a wrapper that does not answer --version: the tool itself will tell
        if found < major or (exact and found != major):
            wanted = f"PostgreSQL {major}" if exact else f"PostgreSQL {major} or newer"
            raise ToolMissing(
                f"{name} in {directory} is PostgreSQL {found}, the server is PostgreSQL {major}: {wanted} tools are "
                f"needed (settings pgdr_pg_bindir, pgdr_pg_bindirs)", field="pgdr_pg_bindir")
    return directory


def server_version_num(connect: Callable[[], object]) -> int:
    """The ``server_version_num`` of the server ``connect()`` reaches (the connection is closed)."""
    conn = connect()
    try:
        cur = conn.cursor()
        cur.execute("SELECT current_setting('server_version_num')::int")
        return int(cur.fetchone()[0])
    finally:
        conn.close()


def stderr_tail(text: str, lines: int = 8) -> str:
    """The last ``lines`` lines of a tool's stderr, row data removed. Redacted before it is cut, so
    a value's continuation lines never lose the DETAIL/CONTEXT line that marks them as data."""
    from pgdr.core.redaction import redact_phi

    kept = [line for line in redact_phi(text or "").strip().splitlines() if line.strip()][-lines:]
    return "\n".join(kept)


def run_tool(argv: list[str], env: dict[str, str], log: logging.Logger, **kwargs) -> subprocess.CompletedProcess:
    """Run a tool to completion; raise :class:`PgToolError` with its stderr on failure."""
    name = Path(argv[0]).name
    log.info("running %s", " ".join([name, *argv[1:]]))
    kwargs.setdefault("preexec_fn", die_with_worker)   # a killed worker leaves no tool running
    result = subprocess.run(argv, env=env, capture_output=True, text=True, **kwargs)
    if result.returncode != 0:
        raise PgToolError(f"{name} failed (exit {result.returncode}): {stderr_tail(result.stderr)}")
    return result


# --- a session to the backed-up server ---------------------------------------------------------

class BackupBusy(Refused, RuntimeError):
    """Another pgdr backup of the same database holds the lock."""


def server_facts(cur) -> tuple[str, int, str | None]:
    """(server_version, server_version_num, system identifier) of the server ``cur`` is connected to."""
    cur.execute("SELECT current_setting('server_version'), current_setting('server_version_num')::int")
    version, version_num = cur.fetchone()
    # Without EXECUTE on pg_control_system() the identifier is recorded as unknown.
    cur.execute(
        "SELECT CASE WHEN has_function_privilege('pg_control_system()', 'EXECUTE') "
        "THEN (SELECT system_identifier::text FROM pg_control_system()) END"
    )
    (system_identifier,) = cur.fetchone()
    return version, version_num, system_identifier


class LockedSession:
    """A session to the backed-up server holding pgdr's advisory lock for one kind of backup,
    so two backups of the same kind never run at once; released by :meth:`close`."""

    target: PgTarget
    connect: Callable[[], object]
    _conn = None

    def open_locked_session(self, lock_keys: tuple[int, int], what: str,
                            on_locked: Callable[[], None] | None = None):
        """A cursor (autocommit) holding the lock; ``on_locked`` runs once it is held, e.g. to clear what
        a dead run of the same kind left (no other run of it can be going on then)."""
        try:
            conn = self.connect()
        except Exception as err:  # the driver's message names host and user, never the password
            raise PgToolError(f"cannot connect to {self.target.describe()}: {stderr_tail(str(err), 3)}") from None
        conn.autocommit = True
        self._conn = conn
        cur = conn.cursor()
        cur.execute("SELECT pg_try_advisory_lock(%s, %s)", lock_keys)
        if not cur.fetchone()[0]:
            raise BackupBusy(f"another pgdr {what} of {self.target.describe()} is running; "
                             "refusing to start a second one")
        if on_locked is not None:
            on_locked()
        return cur

    def close(self) -> None:
        if self._conn is not None:
            try:
                self._conn.close()
            finally:
                self._conn = None

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()
