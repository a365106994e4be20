"""Configuration backups: the listed files archived under ``config/``, secrets sealed client-side first.

Every ``.env`` / ``.env.*`` file and every file named by ``pgdr_secret_files`` goes into
``secrets.tar.zst.enc``: a tar through zstd, sealed with AES-256-GCM under a data key drawn for
this backup alone and wrapped by the connection key or KMS (:mod:`pgdr.core.envelope`). Their sha256
travel inside the sealed archive (a hash of a short secret would help guess it). The other files
go into ``config.tar.zst`` in the clear (S3 still encrypts it at rest). The manifest lists every
file (``dump["files"]``) and records which were sealed and how the data key is wrapped, never the
key. A listed file that is missing fails the backup before anything is uploaded.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import stat
import sys
import time
from pathlib import Path

from pgdr import __version__
from pgdr.backup.upload import StagedFile, checked_objects, remove_partial_upload
from pgdr.core.checksums import StreamDigest
from pgdr.core.compression import TarZstWriter, zstandard_version
from pgdr.core.envelope import ALGORITHM, seal
from pgdr.errors import Refused
from pgdr.store.layout import object_key
from pgdr.store.manifest import Manifest, utc_now_iso

PLAIN_ARCHIVE = "config.tar.zst"
SECRET_ARCHIVE = "secrets.tar.zst.enc"
SECRET_INDEX = ".pgdr-secret-index.json"
MAX_FILE_BYTES = 64 << 20   # configuration, not data: anything bigger is a misconfiguration


class ConfigBackupError(Refused, RuntimeError):
    """The configured files cannot be backed up as they are; nothing was uploaded."""


def is_secret(path: Path, secret_files: tuple[str, ...]) -> bool:
    name = path.name
    return name == ".env" or name.startswith(".env.") or name in secret_files or str(path) in secret_files


def member_name(path: Path) -> str:
    return str(path).lstrip("/")


def object_aad(database: str, backup_id: str, name: str) -> str:
    """Associated data binding a sealed object to its backup (not its bucket or prefix, so copies open)."""
    return f"pgdr:{database}:config:{backup_id}:{name}"


def key_context(database: str, backup_id: str) -> str:
    return f"pgdr:{database}:config:{backup_id}"


def read_config_files(paths: tuple[Path, ...] | list[Path]) -> list[tuple[Path, bytes, os.stat_result]]:
    """Every listed file read whole, or one clear error naming all that are missing or unusable."""
    problems, found = [], []
    for path in paths:
        try:
            info = os.stat(path)
        except FileNotFoundError:
            problems.append(f"{path} does not exist")
            continue
        except OSError as err:
            problems.append(f"{path} cannot be read ({err.strerror})")
            continue
        if not stat.S_ISREG(info.st_mode):
            problems.append(f"{path} is not a regular file")
        elif info.st_size > MAX_FILE_BYTES:
            problems.append(f"{path} is {info.st_size} bytes, over {MAX_FILE_BYTES} for a configuration file")
        else:
            try:
                with open(path, "rb") as handle:
                    data = handle.read()
                    info = os.fstat(handle.fileno())
            except OSError as err:
                problems.append(f"{path} cannot be read ({err.strerror})")
                continue
            found.append((path, data, info))
    if problems:
        raise ConfigBackupError("configuration backup refused, nothing was uploaded: " + "; ".join(problems) +
                                " (setting pgdr_config_files)", field="pgdr_config_files")
    return found


def tar_zst(members: list[tuple[str, bytes, int, float]], level: int) -> bytes:
    """(name, content, mode, mtime) members as one tar through zstd, in memory (configuration is small)."""
    buffer = io.BytesIO()
    with TarZstWriter(buffer, level) as archive:
        for name, content, mode, mtime in members:
            archive.add_bytes(name, content, mode, mtime)
    return buffer.getvalue()


def run_config_backup(*, database: str, backup_id: str, prefix: str, paths: tuple[Path, ...],
                      secret_files: tuple[str, ...], wrapper, store, workdir: Path, level: int,
                      kms_key_id: str | None, airflow: dict, log: logging.Logger) -> Manifest:
    """Read, seal, upload and check one configuration backup; returns its manifest (not yet written).

    ``wrapper`` (:mod:`pgdr.core.envelope`) is needed only when a listed file is secret; a missing key
    then fails here, before anything is uploaded.
    """
    started_at, started = utc_now_iso(), time.monotonic()
    files = read_config_files(paths)
    secret = [(p, d, i) for p, d, i in files if is_secret(p, secret_files)]
    plain = [(p, d, i) for p, d, i in files if not is_secret(p, secret_files)]
    if secret and wrapper is None:
        raise ConfigBackupError("configuration backup refused, nothing was uploaded: secret files are listed but "
                                "no key to seal them is configured", field="pgdr_config_key_conn_id")
    entries, staged, wrapping = [], [], None
    workdir.mkdir(parents=True, exist_ok=True, mode=0o700)
    if plain:
        blob = tar_zst([(member_name(p), d, stat.S_IMODE(i.st_mode), i.st_mtime) for p, d, i in plain], level)
        staged.append((PLAIN_ARCHIVE, blob, "config_archive", sum(len(d) for _, d, _ in plain)))
        entries += [{"dir": "/", "path": member_name(p), "source": str(p), "type": "file", "size": len(d),
                     "mtime_ns": i.st_mtime_ns, "mode": stat.S_IMODE(i.st_mode),
                     "sha256": hashlib.sha256(d).hexdigest(), "encrypted": False, "object": PLAIN_ARCHIVE,
                     "backup_id": backup_id} for p, d, i in plain]
    if secret:
        data_key = wrapper.new_data_key(key_context(database, backup_id))
        wrapping = data_key.wrapping
        hashes = {member_name(p): hashlib.sha256(d).hexdigest() for p, d, _ in secret}
        members = [(SECRET_INDEX, json.dumps(hashes, sort_keys=True).encode(), 0o600, time.time())]
        members += [(member_name(p), d, stat.S_IMODE(i.st_mode), i.st_mtime) for p, d, i in secret]
        sealed = seal(data_key.plaintext, tar_zst(members, level), object_aad(database, backup_id, SECRET_ARCHIVE))
        del data_key
        staged.append((SECRET_ARCHIVE, sealed, "config_sealed", sum(len(d) for _, d, _ in secret)))
        entries += [{"dir": "/", "path": member_name(p), "source": str(p), "type": "file", "size": len(d),
                     "mtime_ns": i.st_mtime_ns, "mode": stat.S_IMODE(i.st_mode), "sha256": None,
                     "encrypted": True, "object": SECRET_ARCHIVE, "backup_id": backup_id} for p, d, i in secret]
    metadata = {"pgdr-backup-id": backup_id, "pgdr-database": database}
    objects_staged, keys = [], []
    try:
        for name, blob, role, raw in staged:
            path = workdir / name
            path.write_bytes(blob)
            digest = StreamDigest(store.part_size)
            digest.update(blob)
            obj = StagedFile(name, path, role, "zstd+aes-256-gcm" if role == "config_sealed" else "zstd", raw,
                             digest.finish())
            keys.append(object_key(prefix, name))
            store.upload_file(path, object_key(prefix, name), obj.digest, metadata, _quiet_progress(log))
            objects_staged.append(obj)
        objects = checked_objects(store, prefix, backup_id, objects_staged)
    except BaseException:
        remove_partial_upload(store, keys, log)
        raise
    client_side = None
    if secret:
        client_side = {"algorithm": ALGORITHM, "objects": [SECRET_ARCHIVE],
                       "encrypted_files": [str(p) for p, _, _ in secret], "data_key": wrapping}
    log.info("configuration backup %s: %d files (%d sealed client-side with a per-backup data key wrapped by %s), "
             "%d objects", backup_id, len(files), len(secret),
             (f"KMS key {wrapping['kms_key_id']}" if wrapping and wrapping["method"] == "kms"
              else f"connection {wrapping['conn_id']}" if wrapping else "nothing (no secret files)"), len(objects))
    return Manifest(
        backup_id=backup_id, kind="config", database=database, dbname="", started_at=started_at,
        finished_at=utc_now_iso(), server_version="", server_version_num=0, system_identifier=None,
        objects=objects, row_counts={},
        tool_versions={"pgdr": __version__, "zstandard": zstandard_version(), "python": sys.version.split()[0]},
        encryption={"sse": store.expected_sse, "kms_key_id": kms_key_id or None, "client_side": client_side},
        dump={"tool": "pgdr config", "format": "tar (PAX) through zstd; secrets sealed with AES-256-GCM",
              "files": entries, "file_count": len(entries), "encrypted_count": len(secret),
              "bytes": sum(e["size"] for e in entries), "seconds": {"total": round(time.monotonic() - started, 2)}},
        airflow=airflow,
    ).validate()


def _quiet_progress(log):
    from pgdr.core.progress import Progress

    return Progress("upload configuration", log)
