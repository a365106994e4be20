"""pgdr's exceptions: one root, and refusals that carry what was refused as fields.

Code that reacts to another module's failure catches a class here and reads its fields; it never
parses a message. A *refusal* means nothing was changed (bad settings, a policy under the legal
floor, a restore request that cannot be met, a gap in the WAL archive); a *failure* means work was
attempted and did not finish.

Each class keeps the builtin base it had before this module existed (``ValueError`` for settings,
policies and restore requests; ``RuntimeError`` for most failures; ``OSError`` for a full staging
disk), so an ``except ValueError`` written earlier still catches what it caught. The classes
themselves stay in the module that raises them (``pgdr.settings.SettingsError``,
``pgdr.store.staging.StagingRefused`` ...); only those several modules share live here. This module
imports nothing from pgdr, so every layer may import it.

    PgdrError
    ├── Refused                 nothing was changed; ``field`` names what was refused, ``reason`` why
    │   ├── SettingsError       (core/settings_checks; pgdr.settings.SettingsError)  the Variable
    │   ├── PolicyError         (retain/data_policy)  the rule ("rule 2"), key, or setting
    │   │   └── RetentionRefused (retain/data_checks)  pgdr_retention_conn_ids
    │   ├── RestoreRefused      (here; re-exported by restore/request)  the form field: backup, mode, ...
    │   │   ├── AbandonedBranch (restore/pitr_plan)
    │   │   └── WalGap          (here, raised by wal/archive; restore/pitr_plan.WalGapRefused)  + segment, timeline
    │   ├── StagingRefused      (store/staging)    pgdr_staging_dir
    │   ├── ConfigBackupError, FileBackupError (backup/config, backup/files)  pgdr_config_files, pgdr_file_dirs
    │   ├── MarkerRefused (drill/markers), KeyProblem (core/envelope), BackupBusy (core/pgtools),
    │   │   RowVisibilityError (backup/pg_dump), HistoryError (report/history)
    ├── StoreError              an object is not what was written or recorded
    │   └── UploadCheckError (store/s3), NoBackupLockDate (store/object_lock), ManifestError (store/manifest),
    │       ObjectHashError (core/checksums, + key), ArchiveError (core/compression)
    ├── ToolError               a PostgreSQL tool or server did not do its work
    │   ├── PgToolError (core/pgtools, + disk_full)
    │   │   └── VerificationFailed (backup/pg_basebackup)
    │   └── RecoveryFailed (restore/pitr_cluster)
    └── RestoreFailed (restore/tables), FileRestoreError (backup/files_reader), StagingFull (backup/logical),
        AlreadyAlerted (alerts/slack; CheckFailed), WalArchiveError/ShippingFailed (wal/local, wal/ship),
        PastNewestWal (wal/archive), RtoTableError (report/rto_table), RedactedError (core/redaction)
"""

from __future__ import annotations

# the opening of every restore refusal's message: the restore form and the record show it as is
RESTORE_REFUSED = "restore refused, nothing was changed: "


class PgdrError(Exception):
    """Root of every error pgdr raises on purpose."""


class Refused(PgdrError):
    """Nothing was changed: the request, setting or policy cannot be carried out as given.

    ``field`` names what was refused when there is one: a restore form field (``point_in_time``),
    a setting as it is set in Airflow (``pgdr_staging_dir``), a policy file. ``reason`` is the
    message without a standard opening such as :data:`RESTORE_REFUSED`, for a caller that shows
    the refusal in another context (a WAL check reports the reason, not "restore refused").
    """

    def __init__(self, message: object = "", *args, field: str | None = None, reason: str | None = None) -> None:
        super().__init__(message, *args)
        self.field = field
        self.reason = str(message) if reason is None else reason

    def __reduce__(self):
        # pickled (a process pool, a result backend) with its fields; __init__'s keyword-only fields
        # would otherwise be lost, or WalGap's required segment make it impossible to rebuild
        return _rebuild, (type(self), self.args, dict(self.__dict__))


def _rebuild(cls: type, args: tuple, state: dict) -> BaseException:
    error = cls.__new__(cls, *args)
    error.args = args
    error.__dict__.update(state)
    return error


class RestoreRefused(Refused, ValueError):
    """The restore was refused before anything was changed; the message says why and what to do.

    Defined here (and re-exported by :mod:`pgdr.restore.request`, where it was) because the WAL plan's
    refusals, :class:`WalGap` among them, are restore refusals too.
    """

    def __init__(self, message: object = "", *args, field: str | None = None, reason: str | None = None) -> None:
        # the standard opening is this class's own wording, so the reason without it is known here
        if reason is None and isinstance(message, str) and message.startswith(RESTORE_REFUSED):
            reason = message[len(RESTORE_REFUSED):]
        super().__init__(message, *args, field=field, reason=reason)

    @classmethod
    def because(cls, reason: str, *, field: str | None = None, **fields) -> RestoreRefused:
        """A refusal whose message is the standard opening followed by ``reason``."""
        return cls(RESTORE_REFUSED + reason, field=field, reason=reason, **fields)


class WalGap(RestoreRefused):
    """The WAL archive lacks a segment a recovery or a continuity check needs.

    ``segment`` is the first missing segment's file name, ``timeline`` its timeline when known.
    """

    def __init__(self, message: object = "", *, segment: str, timeline: int | None = None,
                 field: str | None = None, reason: str | None = None) -> None:
        super().__init__(message, field=field, reason=reason)
        self.segment = segment
        self.timeline = timeline


class StoreError(PgdrError):
    """An object in the store is not what was written or what its record says."""


class ToolError(PgdrError):
    """A PostgreSQL tool or server did not do the work asked of it."""
