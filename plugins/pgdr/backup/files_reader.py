"""Reading a file or configuration backup back: its entries, its sealed archives opened, every file hashed.

The format is :mod:`pgdr.backup.files`' and :mod:`pgdr.backup.config`'s; restore (writing the files
into a directory) and verification (hashing them, writing nothing) both read it through here. A
file backup's index says, for every file, which backup and which archive hold its content
(unchanged files live in earlier backups of the chain). Each archive needed is downloaded once (its
sha256 checked against the manifest of the backup that holds it), unsealed when it is sealed, and
streamed through tar; each wanted file is hashed as it is read. Reports carry counts, keys and
paths, never contents.
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable
from pathlib import Path

from pgdr.backup.config import SECRET_INDEX, object_aad
from pgdr.backup.download import download_object
from pgdr.backup.files import INDEX_NAME, dest_path, read_index
from pgdr.core.checksums import Copied, ObjectHashError, copy_hashed
from pgdr.core.compression import read_tar_zst
from pgdr.errors import PgdrError
from pgdr.store.layout import backup_prefix, manifest_key, object_key
from pgdr.store.manifest import Manifest


class FileRestoreError(PgdrError, RuntimeError):
    """A file or configuration restore could not be completed; the message says what differed."""


def load_entries(store, manifest: Manifest, prefix: str, workdir: Path) -> list[dict]:
    """Every entry (files, dirs, symlinks) the backup restores, from its index or its manifest."""
    if manifest.kind == "config":
        return [dict(entry) for entry in manifest.dump.get("files", [])]
    obj = next((o for o in manifest.objects if o.name == INDEX_NAME), None)
    if obj is None:
        raise FileRestoreError(f"file backup {manifest.backup_id} lists no {INDEX_NAME}")
    workdir.mkdir(parents=True, exist_ok=True)
    local = workdir / f"{manifest.backup_id}-{INDEX_NAME}"
    download_object(store, object_key(prefix, INDEX_NAME), obj, local)
    try:
        return read_index(local.read_bytes())["entries"]
    finally:
        local.unlink(missing_ok=True)


def unsealer(manifest: Manifest, wrapper) -> Callable[[str, bytes], bytes] | None:
    """A function opening this backup's sealed objects, or None when it has none. Unwraps the data key
    once (a wrong or missing key fails here, before anything is written)."""
    from pgdr.core.envelope import open_sealed

    client_side = (manifest.encryption or {}).get("client_side")
    if not client_side:
        return None
    if wrapper is None:
        raise FileRestoreError(f"backup {manifest.backup_id} has files sealed client-side; a key is needed")
    data_key = wrapper.unwrap(client_side["data_key"])

    def unseal(name: str, blob: bytes) -> bytes:
        return open_sealed(data_key, blob, object_aad(manifest.database, manifest.backup_id, name))

    return unseal


def read_contents(store, manifest: Manifest, entries: list[dict], workdir: Path, log: logging.Logger, *,
                  write_root: Path | None = None, unseal=None) -> dict:
    """Fetch and unpack the archives holding ``entries``' files, hashing every file.

    With ``write_root`` the files are written under it (see :func:`pgdr.backup.files.dest_path`).
    Returns {"problems": [...], "files": n, "bytes": n, "archives": n, "downloaded_bytes": n}.
    """
    from pgdr.core.envelope import KeyProblem

    groups: dict[tuple[str, str], dict[str, dict]] = {}
    for entry in entries:
        if entry["type"] == "file":
            groups.setdefault((entry["backup_id"], entry["object"]), {})[entry["path"]] = entry
    manifests = {manifest.backup_id: manifest}
    problems: list[dict] = []
    files = size_total = downloaded = 0
    workdir.mkdir(parents=True, exist_ok=True)
    for (holder, name), wanted in sorted(groups.items()):
        holder_prefix = backup_prefix(store.prefix, manifest.database, manifest.kind, holder)
        key = object_key(holder_prefix, name)
        try:
            if holder not in manifests:
                manifests[holder] = store.read_manifest(manifest_key(holder_prefix))
            obj = next((o for o in manifests[holder].objects if o.name == name), None)
            if obj is None:
                raise FileRestoreError(f"backup {holder} lists no object {name}")
            local = workdir / f"{holder}-{name.replace('/', '_')}"
            download_object(store, key, obj, local)
            downloaded += obj.size
        except (ObjectHashError, FileRestoreError) as err:
            problems.append({"problem": "archive missing or damaged", "key": key, "error": str(err)[:300],
                             "files": len(wanted)})
            continue
        except Exception as err:  # noqa: BLE001 - a missing holder backup is the finding, named by key
            problems.append({"problem": "archive missing or unreadable", "key": key,
                             "error": f"{type(err).__name__}: {str(err)[:200]}", "files": len(wanted)})
            continue
        try:
            if obj.role == "config_sealed":
                if unseal is None:
                    raise FileRestoreError("a sealed archive needs the key")
                source = io.BytesIO(unseal(name, local.read_bytes()))
            else:
                source = local
            with read_tar_zst(source) as tar:
                for member in tar:
                    if member.name == SECRET_INDEX:
                        for path, sha256 in json.loads(tar.extractfile(member).read()).items():
                            if path in wanted:
                                wanted[path]["sha256"] = sha256
                        continue
                    entry = wanted.pop(member.name, None)
                    if entry is None:
                        continue
                    if not member.isfile():
                        problems.append({"problem": "archive member is not a file", "key": key,
                                         "path": entry["path"]})
                        continue
                    copied = _copy(tar.extractfile(member), entry, write_root)
                    if copied.size != entry["size"] or copied.sha256 != entry.get("sha256"):
                        problems.append({"problem": "file differs from the manifest", "key": key,
                                         "path": entry["path"], "expected_sha256": entry.get("sha256"),
                                         "found_sha256": copied.sha256, "expected_size": entry["size"],
                                         "found_size": copied.size})
                    else:
                        files += 1
                        size_total += copied.size
        except Exception as err:  # noqa: BLE001 - undecryptable or unreadable archive: name it, stop nothing else
            if isinstance(err, KeyProblem):
                raise
            problems.append({"problem": "archive cannot be unpacked", "key": key,
                             "error": f"{type(err).__name__}: {str(err)[:200]}"})
        finally:
            local.unlink(missing_ok=True)
        for path in sorted(wanted):
            problems.append({"problem": "file missing from its archive", "key": key, "path": path})
    log.info("read %d files (%d bytes) from %d archives (%d bytes downloaded); %d problems", files, size_total,
             len(groups), downloaded, len(problems))
    return {"problems": problems, "files": files, "bytes": size_total, "archives": len(groups),
            "downloaded_bytes": downloaded}


def _copy(source, entry: dict, write_root: Path | None) -> Copied:
    """Hash one member as it is read; with ``write_root``, write it there too (a fresh file, never
    through a link: ``x`` mode)."""
    if write_root is None:
        return copy_hashed(source)
    target = dest_path(write_root, entry["dir"], entry["path"])
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "xb") as out:
        return copy_hashed(source, out)
