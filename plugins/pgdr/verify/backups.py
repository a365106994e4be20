"""Verification checks of the backups in S3: freshness, integrity, the rotating deep check, bucket posture.

Each check returns a result dict: ``check``, ``status`` (ok | warning | failed), ``summary``,
``evidence`` (object keys, expected and found hashes, ages: never row data), and a
``fingerprint`` that stays the same while the same problem persists, so alerts are
posted when something changes rather than on every run.

What each kind's format must pass beyond its objects' hashes is in :mod:`pgdr.verify.formats`
(:data:`FORMAT_CHECKS`, one function per check).
"""

from __future__ import annotations

import hashlib
import json
import logging
from datetime import datetime, timezone
from pathlib import Path

from pgdr.core.pgtools import tools_for
from pgdr.store.catalog import age_hours, newest_complete, newest_good, pick_deep_check
from pgdr.store.layout import backup_prefix, manifest_key, marker_key, object_key
from pgdr.store.manifest import Manifest, utc_now_iso
from pgdr.verify.formats import FORMAT_CHECKS

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


# the PostgreSQL tools each kind's format checks run (on 18+ the stored-tar check also needs pg_waldump, and
# checks for it itself: pg_verifybackup finds its own beside its real binary, even through a wrapper)
TOOLS_NEEDED = {"logical": ("pg_restore",), "base": ("pg_verifybackup",)}


def verify_backup(store, database: str, kind: str, backup_id: str, bindir: Path,
                  log: logging.Logger) -> tuple[list[dict], Manifest | None]:
    """Stream every object of one backup and compare it with the manifest; returns problems."""
    prefix = backup_prefix(store.prefix, database, kind, backup_id)
    try:
        manifest = store.read_manifest(manifest_key(prefix))
    except Exception as err:  # noqa: BLE001 - an unreadable manifest is itself the finding
        return [{"problem": "manifest unreadable", "key": manifest_key(prefix), "error": str(err)[:300]}], None
    problems: list[dict] = []
    # objects are found by their name inside the backup directory, so a backup copied or
    # replicated to another prefix or bucket verifies the same
    for obj in manifest.objects:
        key = object_key(prefix, obj.name)
        try:
            found = store.stream_digest(key)
        except Exception as err:
            if not store.is_missing(err):
                raise
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
    listed = {object_key(prefix, obj.name) for obj in manifest.objects} | {manifest_key(prefix), marker_key(prefix)}
    for key in store.list_keys(prefix):
        if key not in listed:
            head = store.head(key)
            if head is None:
                continue   # gone since it was listed
            problems.append({"problem": "object not in the manifest", "key": key,
                             "found_sse": head.get("ServerSideEncryption") or "none (unencrypted)"})
    if not any(p["problem"] in ("object missing", "sha256 mismatch") and p["key"].endswith("toc.dat")
               for p in problems):
        checks = FORMAT_CHECKS.get(kind, [])
        needed = TOOLS_NEEDED.get(kind, ())
        # the tools of the backup's major (or newer): a missing one is a deployment fault, raised, not a finding
        tools = tools_for(bindir, manifest.server_version_num, needed) if checks and needed else bindir
        for format_check in checks:
            problems.extend(format_check(store, manifest, prefix, tools, log))
    return problems, manifest


def mark(store, database: str, kind: str, backup_id: str, problems: list[dict], check: str, run_id: str) -> None:
    """Record the verdict next to the manifest; a backup marked bad is never offered for restore."""
    prefix = backup_prefix(store.prefix, database, kind, backup_id)
    store.put_json(marker_key(prefix), {
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
        manifest = store.read_manifest(manifest_key(backup_prefix(store.prefix, database, kind, newest.backup_id)))
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
