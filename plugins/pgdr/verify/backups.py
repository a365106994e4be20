"""Verification checks of the backups in S3: freshness, integrity, the rotating deep check, bucket posture.

Each check returns a result dict: ``check``, ``status`` (ok | warning | failed), ``summary``,
``evidence`` (object keys, expected and found hashes, ages: never row data), and a
``fingerprint`` that stays the same while the same problem persists, so alerts are
posted when something changes rather than on every run.

Format checks are pluggable per backup kind (:data:`FORMAT_CHECKS`); physical backups
add pg_verifybackup and WAL continuity there.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from datetime import datetime, timezone
from pathlib import Path

from pgdr.core.pgtools import PgToolError, run_tool, tool_path
from pgdr.store.catalog import MARKER_NAME, age_hours, newest_complete, newest_good, pick_deep_check
from pgdr.store.manifest import MANIFEST_NAME, Manifest, backup_prefix, utc_now_iso

# The kinds whose newest complete backup the integrity check (and, rotating, the deep check) verifies;
# a kind with no backup yet is skipped there.
VERIFIED_KINDS = ("logical", "base", "files", "config")


def freshness_kinds(physical_backups: bool, files: bool = False, config: bool = False) -> tuple[str, ...]:
    """The kinds freshness demands: a base backup only while pgdr_physical_backups is on, files and
    config only for a database that has directories / files configured."""
    kinds = ("logical", "base") if physical_backups else ("logical",)
    return kinds + (("files",) if files else ()) + (("config",) if config else ())


def result(check: str, status: str, summary: str, evidence: list[dict] | None = None, *,
           kind: str | None = None, backup_id: str | None = None, fingerprint: str | None = None) -> dict:
    evidence = evidence or []
    if fingerprint is None:
        fingerprint = hashlib.sha256(
            json.dumps([status, evidence], sort_keys=True, default=str).encode()).hexdigest()[:16]
    return {"check": check, "status": status, "summary": summary, "evidence": evidence, "kind": kind,
            "backup_id": backup_id, "fingerprint": fingerprint, "checked_at": utc_now_iso()}


def _logical_toc_check(store, manifest: Manifest, prefix: str, bindir: Path, log: logging.Logger) -> list[dict]:
    """pg_restore --list on the stored toc.dat: the dump's own structure check."""
    toc = next((o for o in manifest.objects if o.role == "toc"), None)
    if toc is None:
        return [{"problem": "the manifest lists no toc.dat"}]
    toc_key = f"{prefix}/{toc.name}"
    workdir = Path(tempfile.mkdtemp(prefix="pgdr-verify-"))
    try:
        (workdir / "dump").mkdir()
        store.client.download_file(store.bucket, toc_key, str(workdir / "dump" / "toc.dat"))
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


def _base_manifest_check(store, manifest: Manifest, prefix: str, bindir: Path, log: logging.Logger) -> list[dict]:
    """The stored backup_manifest (pg_basebackup's own): intact, lists files, and its WAL range is the manifest's.

    Cheap, and it runs before :func:`_base_verifybackup_check` unpacks the tar.
    """
    from pgdr.backup.pg_basebackup import manifest_checksum_ok, parse_lsn

    entry = next((o for o in manifest.objects if o.role == "backup_manifest"), None)
    if entry is None:
        return [{"problem": "the manifest lists no backup_manifest"}]
    key = f"{prefix}/{entry.name}"
    try:
        body = store.client.get_object(Bucket=store.bucket, Key=key)["Body"].read()
    except store.client.exceptions.NoSuchKey:
        return []  # already reported as missing
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


def _base_verifybackup_check(store, manifest: Manifest, prefix: str, bindir: Path,
                             log: logging.Logger) -> list[dict]:
    """pg_verifybackup on the base backup itself: the tar fetched and unpacked into a temporary
    directory, every file checked against the backup_manifest's SHA-256 and the WAL it needs
    parsed from its pg_wal."""
    from pgdr.restore.fetch import download_object
    from pgdr.restore.pitr import unpack_base_backup

    tar = next((o for o in manifest.objects if o.role == "base_tar"), None)
    if tar is None:
        return [{"problem": "the manifest lists no base_tar"}]
    key = f"{prefix}/{tar.name}"
    workdir = Path(tempfile.mkdtemp(prefix="pgdr-verify-base-"))
    try:
        archive = workdir / "data.tar.zst"
        download_object(store, key, tar, archive)
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


def _files_content_check(store, manifest: Manifest, prefix: str, bindir: Path, log: logging.Logger) -> list[dict]:
    """Every archive this file backup holds unpacked and every file in it hashed against the index; the
    backups it depends on for unchanged files are complete and not bad (each is verified in its turn)."""
    from pgdr.restore.files import load_entries, read_contents
    from pgdr.store.catalog import entries_from_keys

    workdir = Path(tempfile.mkdtemp(prefix="pgdr-verify-files-"))
    try:
        try:
            entries = load_entries(store, manifest, prefix, workdir)
        except Exception as err:  # noqa: BLE001 - an unreadable index is the finding
            return [{"problem": "file index unreadable", "key": f"{prefix}/index.json.zst",
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
        base = f"{store.prefix}/{manifest.database}/files/"
        catalog = {e.backup_id: e for e in entries_from_keys(store.list_keys(base), base)}
        for holder in sorted(depends_on):
            entry = catalog.get(holder)
            if entry is None or not entry.complete:
                problems.append({"problem": "a backup holding unchanged files is missing or incomplete",
                                 "key": f"{base}{holder}/{MANIFEST_NAME}"})
            elif entry.has_marker:
                marker = store.read_json_or_none(f"{base}{holder}/{MARKER_NAME}") or {}
                if marker.get("status") == "bad":
                    problems.append({"problem": "a backup holding unchanged files is marked bad",
                                     "key": f"{base}{holder}/{MARKER_NAME}"})
    if not problems:
        log.info("file backup %s: %d files it holds unpacked and hashed, all match the index", manifest.backup_id,
                 len(own))
    return problems


def _config_content_check(store, manifest: Manifest, prefix: str, bindir: Path, log: logging.Logger) -> list[dict]:
    """The configuration archives unsealed (with the key the manifest names) and every file hashed."""
    from pgdr.core.envelope import KeyProblem, wrapper_for
    from pgdr.restore.files import load_entries, read_contents, unsealer
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


FORMAT_CHECKS: dict[str, list[Callable]] = {"logical": [_logical_toc_check],
                                            "base": [_base_manifest_check, _base_verifybackup_check],
                                            "files": [_files_content_check],
                                            "config": [_config_content_check]}


def verify_backup(store, database: str, kind: str, backup_id: str, bindir: Path,
                  log: logging.Logger) -> tuple[list[dict], Manifest | None]:
    """Stream every object of one backup and compare it with the manifest; returns problems."""
    prefix = backup_prefix(store.prefix, database, kind, backup_id)
    try:
        manifest = store.read_manifest(f"{prefix}/{MANIFEST_NAME}")
    except Exception as err:  # noqa: BLE001 - an unreadable manifest is itself the finding
        return [{"problem": "manifest unreadable", "key": f"{prefix}/{MANIFEST_NAME}", "error": str(err)[:300]}], None
    problems: list[dict] = []
    # objects are found by their name inside the backup directory, so a backup copied or
    # replicated to another prefix or bucket verifies the same
    for obj in manifest.objects:
        key = f"{prefix}/{obj.name}"
        try:
            found = store.stream_digest(key)
        except store.client.exceptions.NoSuchKey:
            problems.append({"problem": "object missing", "key": key})
            continue
        if found["sha256"] != obj.sha256:
            problems.append({"problem": "sha256 mismatch", "key": key, "expected_sha256": obj.sha256,
                             "found_sha256": found["sha256"]})
        if found["size"] != obj.size:
            problems.append({"problem": "size mismatch", "key": key, "expected_size": obj.size,
                             "found_size": found["size"]})
        if found["sse"] != manifest.encryption.get("sse"):
            problems.append({"problem": "not encrypted as recorded", "key": key,
                             "expected_sse": manifest.encryption.get("sse"), "found_sse": found["sse"] or "none"})
    listed = {f"{prefix}/{obj.name}" for obj in manifest.objects} | {f"{prefix}/{MANIFEST_NAME}",
                                                                     f"{prefix}/{MARKER_NAME}"}
    for key in store.list_keys(prefix):
        if key not in listed:
            head = store.client.head_object(Bucket=store.bucket, Key=key)
            problems.append({"problem": "object not in the manifest", "key": key,
                             "found_sse": head.get("ServerSideEncryption") or "none (unencrypted)"})
    if not any(p["problem"] in ("object missing", "sha256 mismatch") and p["key"].endswith("toc.dat")
               for p in problems):
        for format_check in FORMAT_CHECKS.get(kind, []):
            problems.extend(format_check(store, manifest, prefix, bindir, log))
    return problems, manifest


def mark(store, database: str, kind: str, backup_id: str, problems: list[dict], check: str, run_id: str) -> None:
    """Record the verdict next to the manifest; a backup marked bad is never offered for restore."""
    prefix = backup_prefix(store.prefix, database, kind, backup_id)
    store.put_json(f"{prefix}/{MARKER_NAME}", {
        "status": "bad" if problems else "good", "verified_at": utc_now_iso(), "check": check,
        "problems": problems, "run_id": run_id})


def check_freshness(store, database: str, limit_hours: float, now: datetime | None = None,
                    kinds: tuple[str, ...] = ("logical",)) -> dict:
    """The newest good backup of each of ``kinds`` (see :func:`freshness_kinds`) is younger than the limit."""
    now = now or datetime.now(timezone.utc)
    evidence, failed = [], False
    for kind in kinds:
        entries = store.catalog(database, kind)
        newest = newest_good(entries)
        incomplete_newer = [e.backup_id for e in entries if not e.complete
                            and (newest is None or e.backup_id > newest.backup_id)]
        if newest is None:
            failed = True
            evidence.append({"kind": kind, "problem": "no complete, good backup", "incomplete": incomplete_newer})
            continue
        manifest = store.read_manifest(
            f"{backup_prefix(store.prefix, database, kind, newest.backup_id)}/{MANIFEST_NAME}")
        age = age_hours(manifest.finished_at, now)
        item = {"kind": kind, "backup_id": newest.backup_id, "finished_at": manifest.finished_at,
                "age_hours": round(age, 2), "limit_hours": limit_hours}
        if incomplete_newer:
            item["incomplete_newer"] = incomplete_newer
        if age > limit_hours:
            failed = True
            item["problem"] = "too old"
        evidence.append(item)
    stale = [e for e in evidence if "problem" in e]
    summary = ("; ".join(f"{e['kind']}: " + (f"newest good backup {e['backup_id']} is {e['age_hours']:.1f} h old "
                                            f"(limit {e['limit_hours']:g} h)" if "backup_id" in e else e["problem"])
                         for e in stale) if stale else "every kind has a backup within the limit")
    fingerprint = "stale:" + ",".join(f"{e['kind']}={e.get('backup_id')}" for e in stale) if stale else None
    return result("freshness", "failed" if failed else "ok", summary, evidence, fingerprint=fingerprint)


def check_integrity(store, database: str, bindir: Path, run_id: str, log: logging.Logger,
                    deep: bool = False) -> dict:
    """The newest complete backup of each kind (or, ``deep``, the retained one verified longest ago)."""
    check = "deep_check" if deep else "integrity"
    evidence, checked = [], []
    for kind in VERIFIED_KINDS:
        entries = store.catalog(database, kind)
        newest = newest_complete(entries)
        target = pick_deep_check(entries, newest.backup_id if newest else None) if deep else newest
        if target is None:
            continue
        problems, _ = verify_backup(store, database, kind, target.backup_id, bindir, log)
        mark(store, database, kind, target.backup_id, problems, check, run_id)
        checked.append(f"{kind}/{target.backup_id}")
        evidence.extend({"kind": kind, "backup_id": target.backup_id, **p} for p in problems)
    if not checked:
        return result(check, "ok", "nothing to check" if deep else "no complete backup to check")
    if evidence:
        first = evidence[0]
        summary = f"{len(evidence)} problem(s) in {', '.join(checked)}: {first['problem']} ({first.get('key', '')})"
        return result(check, "failed", summary, evidence, backup_id=first["backup_id"])
    return result(check, "ok", f"verified {', '.join(checked)}: every object's size, sha256 and encryption "
                               "match the manifest; format check passed", [{"checked": checked}],
                  fingerprint="ok")


def check_bucket_posture(store) -> dict:
    posture = store.bucket_posture()
    evidence = [{"setting": name, **value} for name, value in posture.items()]
    public_open = not posture["public_access_blocked"]["ok"]
    weak = [name for name, value in posture.items() if not value["ok"]]
    status = "failed" if public_open else ("warning" if weak else "ok")
    summary = ("bucket posture: " + ", ".join(f"{name} not set" for name in weak)) if weak else \
        "bucket posture: default encryption, versioning, Object Lock and public access block all set"
    return result("bucket_posture", status, summary, evidence, fingerprint="posture:" + ",".join(weak))
