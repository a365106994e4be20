"""Shared mechanics of pgdr operators: settings read at run time, hooks made lazily."""

from __future__ import annotations

import functools
from functools import cached_property
from typing import TYPE_CHECKING

from airflow.sdk import BaseOperator

if TYPE_CHECKING:
    from pgdr.settings import Settings
    from pgdr.store.s3 import BackupStore


def not_retryable(exc: BaseException) -> bool:
    """A failure no retry can fix: a refusal (bad settings, a request that cannot be met, a tool missing
    for the server's major), or a tool's answer that names the deployment (version mismatch,
    authentication, a missing role). Another backup holding the lock is the one refusal that passes."""
    from pgdr.core.pgtools import BackupBusy, PgToolError
    from pgdr.errors import Refused

    if isinstance(exc, BackupBusy):
        return False
    if isinstance(exc, Refused):
        return True
    return isinstance(exc, PgToolError) and not exc.retryable


_FINAL_CLASSES: dict[type, type] = {}


def as_final(exc: BaseException) -> BaseException:
    """``exc`` as an instance of its own class and of AirflowFailException: Airflow fails the task at once
    (the failure callback and its alert still run) instead of retrying with backoff; code and alerts
    that tell failures apart by class still see the class they knew."""
    from airflow.sdk.exceptions import AirflowFailException

    cls = type(exc)
    try:
        final = _FINAL_CLASSES.get(cls) or _FINAL_CLASSES.setdefault(
            cls, type(cls.__name__, (cls, AirflowFailException), {"__module__": cls.__module__,
                                                                  "__qualname__": cls.__qualname__}))
        new = final.__new__(final, *exc.args)
        new.args = exc.args
        new.__dict__.update(exc.__dict__)
    except TypeError:   # a class Python cannot combine with Airflow's: the text is what the alert needs
        new = AirflowFailException(str(exc))
    return new.with_traceback(exc.__traceback__)


def failing_fast(execute):
    """Decorator for ``execute``: a failure :func:`not_retryable` fails the task at once, with its alert."""

    @functools.wraps(execute)
    def wrapper(*args, **kwargs):
        try:
            return execute(*args, **kwargs)
        except Exception as exc:
            if not not_retryable(exc):
                raise
            raise as_final(exc) from None

    wrapper.__pgdr_redacting__ = True
    return wrapper


class PgdrBaseOperator(BaseOperator):
    """Base for pgdr operators. Settings are loaded when the task runs, never at parse time."""

    ui_color = "#e8f1fb"

    def __init_subclass__(cls, **kwargs) -> None:
        # Airflow logs a failed task's traceback and hands the exception to the failure callback: an
        # exception quoting row data (PostgreSQL's DETAIL lines) leaves every pgdr task redacted
        super().__init_subclass__(**kwargs)
        from pgdr.core.redaction import redacting

        execute = cls.__dict__.get("execute")
        if execute is not None and not getattr(execute, "__pgdr_redacting__", False):
            cls.execute = failing_fast(redacting(execute))

    @cached_property
    def settings(self) -> Settings:
        from pgdr.settings import load_settings

        return load_settings()

    @cached_property
    def store(self) -> BackupStore:
        """The store, with retention's GFS date for the backups it writes to a bucket with Object Lock
        (assembled here, not in the store: the store does not know retention's rules)."""
        from pgdr.retain.object_lock import lock_date_from_settings
        from pgdr.store.s3 import BackupStore

        return BackupStore.from_settings(self.settings, self.log,
                                         backup_lock_date=lock_date_from_settings(self.settings))

    def require_protected(self, conn_id: str) -> str:
        if conn_id not in self.settings.databases:
            raise ValueError(
                f"{conn_id!r} is not a protected database; pgdr_databases lists {list(self.settings.databases)}"
            )
        return conn_id


class DatabaseOperator(PgdrBaseOperator):
    """Base for work on one protected database (mapped over ``pgdr_databases``).

    :param conn_id: the protected postgres connection id (templated)
    """

    template_fields = ("conn_id",)

    def __init__(self, *, conn_id: str, **kwargs) -> None:
        super().__init__(**kwargs)
        self.conn_id = conn_id


class ProtectedDatabasesOperator(PgdrBaseOperator):
    """Returns the validated list of protected connection ids (the ``pgdr_databases`` setting)."""

    def __init__(self, **kwargs) -> None:
        super().__init__(**kwargs)

    def execute(self, context) -> list[str]:
        databases = list(self.settings.databases)
        self.log.info("protected databases: %s", ", ".join(databases))
        return databases


def effective_dry_run(context) -> bool:
    """Only a scheduled run acts for real; every other run follows its ``dry_run`` field (default true).

    A scheduled run is the job the policy was written and reviewed for. A manual run, a backfill,
    a run started by another DAG (TriggerDagRunOperator) or by an asset is started by a person or a
    pipeline with the form's ``dry_run`` in hand: acting for real there needs ``dry_run`` false.
    """
    run_type = context["dag_run"].run_type
    if getattr(run_type, "value", run_type) == "scheduled":
        return False
    return bool(context["params"].get("dry_run", True))
