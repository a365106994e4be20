"""What each backup kind's format must pass beyond its objects' sizes and hashes: one function per
check, run by :func:`pgdr.verify.backups.verify_backup` in the order :data:`FORMAT_CHECKS` lists them.

Each takes ``(store, manifest, prefix, bindir, log)`` and returns problems (dicts naming keys, never
row data); an empty list is a pass. The formats are read by the modules that write them
(:mod:`pgdr.backup.pg_basebackup`, :mod:`pgdr.backup.files_reader`), never by restore code.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

from pgdr.backup.download import download_object
from pgdr.backup.files import INDEX_NAME
from pgdr.backup.files_reader import load_entries, read_contents, unsealer
from pgdr.backup.pg_basebackup import manifest_checksum_ok, unpack_base_backup
from pgdr.backup.stored_tar import FIRST_MAJOR as STORED_TAR_MAJOR
from pgdr.backup.stored_tar import StoredTarInvalid, verify_stored_tar
from pgdr.core.pgtools import PgToolError, run_tool, server_major, tool_path
from pgdr.store.catalog import entries_from_keys
from pgdr.store.layout import kind_prefix, manifest_key, marker_key, object_key
from pgdr.store.manifest import Manifest
from pgdr.wal.names import parse_lsn


def logical_toc_check(store, manifest: Manifest, prefix: str, bindir: Path, log: logging.Logger) -> list[dict]:
    """pg_restore --list on the stored toc.dat: the dump's own structure check."""
    toc = next((o for o in manifest.objects if o.role == "toc"), None)
    if toc is None:
        return [{"problem": "the manifest lists no toc.dat"}]
    toc_key = object_key(prefix, toc.name)
    workdir = Path(tempfile.mkdtemp(prefix="pgdr-verify-"))
    try:
        (workdir / "dump").mkdir()
        store.download(toc_key, workdir / "dump" / "toc.dat")
        listing = run_tool([tool_path(bindir, "pg_restore"), "--list", str(workdir / "dump")],
                           {"PATH": os.environ.get("PATH", "")}, log).stdout
    except PgToolError as err:
        return [{"problem": "pg_restore --list failed on the stored toc.dat", "key": toc_key, "error": str(err)}]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    data_entries = sum(1 for line in listing.splitlines() if " TABLE DATA " in line)
    if data_entries < len(manifest.row_counts):
        return [{"problem": "the TOC lists fewer tables with data than the manifest counts", "key": toc_key,
                 "expected": len(manifest.row_counts), "found": data_entries}]
    return []


def base_manifest_check(store, manifest: Manifest, prefix: str, bindir: Path, log: logging.Logger) -> list[dict]:
    """The stored backup_manifest (pg_basebackup's own): intact, lists files, and its WAL range is the manifest's.

    Cheap, and it runs before :func:`base_verifybackup_check` unpacks the tar.
    """
    entry = next((o for o in manifest.objects if o.role == "backup_manifest"), None)
    if entry is None:
        return [{"problem": "the manifest lists no backup_manifest"}]
    key = object_key(prefix, entry.name)
    try:
        body = store.get_bytes(key)
    except Exception as err:
        if store.is_missing(err):
            return []  # already reported as missing
        raise
    try:
        document = json.loads(body)
    except ValueError as err:
        return [{"problem": "backup_manifest is not JSON", "key": key, "error": str(err)[:200]}]
    problems = []
    if not manifest_checksum_ok(body):
        problems.append({"problem": "backup_manifest fails its own Manifest-Checksum", "key": key})
    files = document.get("Files") if isinstance(document, dict) else None
    if not isinstance(files, list) or not files:
        problems.append({"problem": "backup_manifest lists no files", "key": key})
    ranges = document.get("WAL-Ranges") if isinstance(document, dict) else None
    wal = manifest.wal or {}
    if not isinstance(ranges, list) or not ranges:
        problems.append({"problem": "backup_manifest lists no WAL-Ranges", "key": key})
    else:
        try:
            found = {"start_lsn": parse_lsn(ranges[0]["Start-LSN"]), "end_lsn": parse_lsn(ranges[-1]["End-LSN"]),
                     "timeline": int(ranges[0]["Timeline"])}
            expected = {"start_lsn": parse_lsn(wal["start_lsn"]), "end_lsn": parse_lsn(wal["end_lsn"]),
                        "timeline": int(wal["timeline"])}
        except (KeyError, TypeError, ValueError) as err:
            problems.append({"problem": "WAL range unreadable", "key": key, "error": f"{type(err).__name__}: {err}"})
        else:
            if found != expected:
                problems.append({"problem": "backup_manifest WAL range differs from the manifest's", "key": key,
                                 "expected": {"start_lsn": wal.get("start_lsn"), "end_lsn": wal.get("end_lsn"),
                                              "timeline": wal.get("timeline")},
                                 "found": {"start_lsn": ranges[0].get("Start-LSN"),
                                           "end_lsn": ranges[-1].get("End-LSN"),
                                           "timeline": ranges[0].get("Timeline")}})
    return problems


def base_verifybackup_check(store, manifest: Manifest, prefix: str, bindir: Path,
                             log: logging.Logger) -> list[dict]:
    """pg_verifybackup on the base backup itself: every file checked against the backup_manifest's
    SHA-256 and the WAL it needs parsed. A backup of PostgreSQL 18+ is verified as stored: the tar
    itself, by :func:`pgdr.backup.stored_tar.verify_stored_tar`; before 18 (whose pg_verifybackup reads
    only a plain directory), and for an 18 tar pgdr wrote with pax headers before its tars were plain
    ustar, the tar is unpacked into a temporary directory and that is verified."""
    tar = next((o for o in manifest.objects if o.role == "base_tar"), None)
    if tar is None:
        return [{"problem": "the manifest lists no base_tar"}]
    key = object_key(prefix, tar.name)
    workdir = Path(tempfile.mkdtemp(prefix="pgdr-verify-base-"))
    try:
        archive = workdir / "data.tar.zst"
        download_object(store, key, tar, archive)
        if server_major(manifest.server_version_num) >= STORED_TAR_MAJOR:
            found = _stored_tar_check(store, manifest, prefix, archive, bindir, workdir, log)
            if found is not None:
                return found
        unpack_base_backup(archive, workdir / "data")
        archive.unlink()
        run_tool([tool_path(bindir, "pg_verifybackup"), str(workdir / "data")],
                 {"PATH": os.environ.get("PATH", "")}, log)
    except PgToolError as err:
        return [{"problem": "pg_verifybackup failed on the base backup", "key": key, "error": str(err)[:500]}]
    except Exception as err:  # noqa: BLE001 - unreadable archive is the finding
        return [{"problem": "the base backup could not be unpacked", "key": key,
                 "error": f"{type(err).__name__}: {str(err)[:300]}"}]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    log.info("pg_verifybackup passed on base backup %s", manifest.backup_id)
    return []


def _stored_tar_check(store, manifest: Manifest, prefix: str, archive: Path, bindir: Path, workdir: Path,
                      log: logging.Logger) -> list[dict] | None:
    """The stored tar verified as stored (18+): problems, or None when only the unpacked way can verify it
    (no stored backup_manifest beside it, or a tar with pax headers)."""
    entry = next((o for o in manifest.objects if o.role == "backup_manifest"), None)
    if entry is None:
        return None
    manifest_path = workdir / "backup_manifest"
    try:
        download_object(store, object_key(prefix, entry.name), entry, manifest_path)
    except Exception as err:  # noqa: BLE001 - missing or damaged: the object checks report it
        log.warning("the stored backup_manifest of %s cannot be used (%s); verifying the unpacked copy",
                    manifest.backup_id, type(err).__name__)
        return None
    key = object_key(prefix, archive.name)
    try:
        verify_stored_tar(archive, manifest_path, bindir, workdir, log)
    except StoredTarInvalid as err:
        if "pax extensions to tar format are not supported" in str(err):
            log.info("base backup %s: its tar has pax headers (written before pgdr's tars were plain ustar); "
                     "verifying the unpacked copy", manifest.backup_id)
            return None
        return [{"problem": "pg_verifybackup failed on the stored tar", "key": key, "error": str(err)[:500]}]
    log.info("pg_verifybackup passed on the stored tar of base backup %s (%s)", manifest.backup_id,
             getattr(manifest, "backup_type", "full"))
    return []


def base_chain_check(store, manifest: Manifest, prefix: str, bindir: Path, log: logging.Logger) -> list[dict]:
    """An incremental base backup restores only with every earlier piece of its chain (the full, then each
    incremental up to its parent): each must be there, complete (its manifest and every object it lists,
    at their sizes), not marked bad, and depend on the piece before it. Each piece's own bytes are
    verified in its own turn of the deep check. A full passes at once."""
    parent = getattr(manifest, "depends_on", None)
    if not parent:
        return []
    chain = [str(i) for i in (manifest.dump.get("chain") or [])]
    whole = [*chain, manifest.backup_id]
    base = prefix.rsplit("/", 1)[0] + "/"
    catalog = {e.backup_id: e for e in entries_from_keys(store.list_keys(base), base)}
    problems: list[dict] = []

    def problem(text: str, piece: str, **more) -> None:
        problems.append({"problem": f"chain piece {piece} {text}", "piece": piece, "chain": whole, **more})

    before = None
    for piece in chain:
        piece_prefix = base + piece
        entry = catalog.get(piece)
        expected, before = before, piece
        if entry is None or not entry.complete:
            problem("is missing or incomplete (no manifest)", piece, key=manifest_key(piece_prefix))
            continue
        marker = store.read_json_or_none(marker_key(piece_prefix)) if entry.has_marker else None
        if (marker or {}).get("status") == "bad":
            problem("is marked bad", piece, key=marker_key(piece_prefix))
        try:
            found = store.read_manifest(manifest_key(piece_prefix))
        except Exception as err:  # noqa: BLE001 - an unreadable piece is the finding
            problem("has an unreadable manifest", piece, key=manifest_key(piece_prefix), error=str(err)[:200])
            continue
        depends = getattr(found, "depends_on", None)
        if depends != expected:
            problem(f"depends on {depends or 'nothing (a full)'}, the chain says "
                    f"{expected or 'nothing (the full)'}", piece, key=manifest_key(piece_prefix))
        for obj in found.objects:
            key = object_key(piece_prefix, obj.name)
            head = store.head(key)
            if head is None:
                problem("lacks an object", piece, key=key)
            elif head.get("ContentLength") not in (None, obj.size):
                problem("has an object of the wrong size", piece, key=key, expected_size=obj.size,
                        found_size=head.get("ContentLength"))
    if not problems:
        log.info("base backup %s: every piece of its chain (%s) is there and not bad", manifest.backup_id,
                 ", ".join(whole))
    return problems


def files_content_check(store, manifest: Manifest, prefix: str, bindir: Path, log: logging.Logger) -> list[dict]:
    """Every archive this file backup holds unpacked and every file in it hashed against the index; the
    backups it depends on for unchanged files are complete and not bad (each is verified in its turn)."""
    workdir = Path(tempfile.mkdtemp(prefix="pgdr-verify-files-"))
    try:
        try:
            entries = load_entries(store, manifest, prefix, workdir)
        except Exception as err:  # noqa: BLE001 - an unreadable index is the finding
            return [{"problem": "file index unreadable", "key": object_key(prefix, INDEX_NAME),
                     "error": f"{type(err).__name__}: {str(err)[:300]}"}]
        own = [e for e in entries if e["type"] == "file" and e.get("backup_id") == manifest.backup_id]
        problems = read_contents(store, manifest, own, workdir, log)["problems"]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    depends_on = set(manifest.dump.get("depends_on", []))
    strays = {e.get("backup_id") for e in entries if e["type"] == "file"} - depends_on - {manifest.backup_id}
    if strays:
        problems.append({"problem": "index names backups the manifest does not depend on",
                         "backups": sorted(str(s) for s in strays)})
    if depends_on:
        base = kind_prefix(store.prefix, manifest.database, "files")
        catalog = {e.backup_id: e for e in entries_from_keys(store.list_keys(base), base)}
        for holder in sorted(depends_on):
            entry = catalog.get(holder)
            # backup_prefix without its id check: a damaged manifest's odd id is reported below, not raised
            holder_prefix = base + holder
            if entry is None or not entry.complete:
                problems.append({"problem": "a backup holding unchanged files is missing or incomplete",
                                 "key": manifest_key(holder_prefix)})
            elif entry.has_marker:
                marker = store.read_json_or_none(marker_key(holder_prefix)) or {}
                if marker.get("status") == "bad":
                    problems.append({"problem": "a backup holding unchanged files is marked bad",
                                     "key": marker_key(holder_prefix)})
    if not problems:
        log.info("file backup %s: %d files it holds unpacked and hashed, all match the index", manifest.backup_id,
                 len(own))
    return problems


def config_content_check(store, manifest: Manifest, prefix: str, bindir: Path, log: logging.Logger) -> list[dict]:
    """The configuration archives unsealed (with the key the manifest names) and every file hashed."""
    from pgdr.core.envelope import KeyProblem, wrapper_for
    from pgdr.settings import load_settings

    entries = load_entries(store, manifest, prefix, Path("."))
    unseal = None
    client_side = (manifest.encryption or {}).get("client_side")
    if client_side:
        try:
            unseal = unsealer(manifest, wrapper_for(client_side["data_key"], load_settings()))
        except KeyProblem as err:
            return [{"problem": "sealed configuration cannot be opened", "error": str(err)[:300]}]
    workdir = Path(tempfile.mkdtemp(prefix="pgdr-verify-config-"))
    try:
        read = read_contents(store, manifest, entries, workdir, log, unseal=unseal)
    except KeyProblem as err:
        return [{"problem": "sealed configuration cannot be opened", "error": str(err)[:300]}]
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    return read["problems"]


FORMAT_CHECKS: dict[str, list[Callable]] = {"logical": [logical_toc_check],
                                            "base": [base_manifest_check, base_chain_check, base_verifybackup_check],
                                            "files": [files_content_check],
                                            "config": [config_content_check]}
