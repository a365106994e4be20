"""The libpq environment the WAL receiver connects with, and SQL connections made from it.

The connection comes from libpq's environment (PGHOST, PGPORT, PGUSER, PGPASSFILE, PGSSLMODE, ...)
or from a conninfo string in an environment variable named by ``--conninfo-env``; a password
never appears in any process's arguments (one from ``--conninfo-env`` goes to a private passfile).
"""

from __future__ import annotations

import os
import pwd
import shutil
import tempfile
from pathlib import Path

import psycopg2
from psycopg2.extensions import parse_dsn

# conninfo keywords a --conninfo-env string may carry, and libpq's environment variable for each
_CONNINFO_ENV = {
    "host": "PGHOST", "hostaddr": "PGHOSTADDR", "port": "PGPORT", "user": "PGUSER", "dbname": "PGDATABASE",
    "passfile": "PGPASSFILE", "sslmode": "PGSSLMODE", "sslrootcert": "PGSSLROOTCERT", "sslcert": "PGSSLCERT",
    "sslkey": "PGSSLKEY", "sslcrl": "PGSSLCRL", "connect_timeout": "PGCONNECT_TIMEOUT",
    "target_session_attrs": "PGTARGETSESSIONATTRS", "gssencmode": "PGGSSENCMODE",
    "channel_binding": "PGCHANNELBINDING", "service": "PGSERVICE", "options": "PGOPTIONS",
    "keepalives": None, "application_name": None,
}
_ENV_KEYWORD = {variable: keyword for keyword, variable in _CONNINFO_ENV.items() if variable}


def connect_params(env: dict) -> dict:
    """psycopg2.connect keywords from a libpq environment dict (the database ``postgres`` unless set),
    so a connection never depends on this process's own environment."""
    params = {keyword: env[variable] for variable, keyword in _ENV_KEYWORD.items() if env.get(variable)}
    if env.get("PGPASSWORD"):
        params["password"] = env["PGPASSWORD"]
    params.setdefault("dbname", "postgres")
    params.setdefault("connect_timeout", "15")
    return params


def sql_connect(env: dict, application_name: str = "pgdr_receiver_setup"):
    """A normal (SQL) connection from a libpq environment dict, autocommit: for reading and fixing
    the slot. Its application_name differs from the slot's so it never counts as the standby."""
    conn = psycopg2.connect(**connect_params(env), application_name=application_name)
    conn.autocommit = True
    return conn


class ConnInfo:
    """libpq environment for the receiver: the process environment, and a conninfo string read from
    the environment variable ``conninfo_env`` when given.

    A password from the conninfo is written to a passfile in a private directory (mode 0600,
    owned by ``owner`` when given, so a child run as that user can read it); :meth:`close` removes it.
    """

    def __init__(self, conninfo_env: str | None = None, owner: str | None = None) -> None:
        # the variable holding the conninfo is not handed on: the password goes to the passfile only
        self.env = {k: v for k, v in os.environ.items() if k != conninfo_env}
        self._private: str | None = None
        if conninfo_env is None:
            return
        conninfo = os.environ.get(conninfo_env)
        if not conninfo:
            raise ValueError(f"environment variable {conninfo_env} is empty or unset")
        try:
            params = parse_dsn(conninfo)
        except Exception as err:  # noqa: BLE001 - psycopg2 quotes no secret, but say little anyway
            raise ValueError(f"the conninfo in the environment is not valid: {type(err).__name__}") from None
        password = params.pop("password", None)
        unknown = sorted(set(params) - set(_CONNINFO_ENV))
        if unknown:
            raise ValueError(f"conninfo keywords not supported here: {', '.join(unknown)}")
        for key, value in params.items():
            if _CONNINFO_ENV[key]:
                self.env[_CONNINFO_ENV[key]] = value
        if password is not None:
            self._private = tempfile.mkdtemp(prefix="pgdr-receiver-")
            passfile = Path(self._private) / "pgpass"
            escaped = password.replace("\\", "\\\\").replace(":", "\\:")
            fd = os.open(passfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "w") as handle:
                handle.write(f"*:*:*:*:{escaped}\n")
            if owner:
                entry = pwd.getpwnam(owner)
                for path in (self._private, passfile):
                    os.chown(path, entry.pw_uid, entry.pw_gid)
            self.env["PGPASSFILE"] = str(passfile)

    def close(self) -> None:
        if self._private:
            shutil.rmtree(self._private, ignore_errors=True)
            self._private = None
