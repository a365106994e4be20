"""Point-in-time recovery's reading of S3: the plan (which base backup, which WAL along which timelines)
and the fetching of both, every byte checked, before a server is started.

The base backup is downloaded (sha256 checked against its manifest), unpacked by its format's reader
(:func:`pgdr.backup.pg_basebackup.unpack_base_backup`) and checked with ``pg_verifybackup``. An
incremental one (PostgreSQL 17+) is a chain: the full and every incremental up to it are each
downloaded, checked and unpacked beside the data directory, then ``pg_combinebackup`` writes the data
directory from them; the free space for all of it is checked before the first byte is fetched. The WAL
(and the timeline histories it crosses) is fetched first, each object's sha256 and cluster checked
against what was planned, so the server's ``restore_command`` only copies local files. ``latest``
includes the newest partial segment the WAL receiver shipped: that is what brings back every
acknowledged commit.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import zstandard

from pgdr.backup.download import download_object
from pgdr.backup.pg_basebackup import unpack_base_backup
from pgdr.core.checksums import ObjectHashError, copy_hashed
from pgdr.core.compression import CHUNK, ArchiveError
from pgdr.core.pgtools import stderr_tail, tool_path
from pgdr.core.progress import human_bytes
from pgdr.restore.pitr_cluster import REFUSED, RecoveryFailed
from pgdr.restore.pitr_plan import (
    AbandonedBranch,
    Target,
    check_target_reachable,
    parse_target,
    plan_from_archive,
    usable_base_backups,
)
from pgdr.restore.request import RestoreRefused
from pgdr.store.layout import manifest_key, object_key
from pgdr.store.manifest import Manifest
from pgdr.wal.archive import ArchiveView, WalObject, WalPlan
from pgdr.wal.segment_header import read_segment_header

# ---------------------------------------------------------------- planning (reads S3, changes nothing)

class WalArchiveView(ArchiveView):
    """The WAL archive of one database (:class:`pgdr.wal.archive.ArchiveView`) as a restore reads it: the
    plan to a target, with the archive's gaps turned into refused restores."""

    def plan(self, manifest: Manifest, target: Target, timeline: str | int = "latest") -> WalPlan:
        """The WAL from this base backup to ``target`` along the timeline history, or a refusal."""
        return plan_from_archive(self, manifest, target, timeline)


def plan_point_in_time(store, database: str, point_in_time: str, load_manifest, timeline: str | int = "latest",
                       only: str | None = None):
    """(target, base manifest, its prefix, WAL plan, base entries), or a :class:`RestoreRefused`.

    ``load_manifest(backup_id)`` returns (manifest, prefix) of a base backup. The newest good base
    backup before the target is tried first; one that cannot reach the target without crossing an
    abandoned timeline branch gives way to an older one. The WAL is the base backup's cluster's only
    (legacy objects of another cluster, known from their stored system identifier, are left out).
    ``only``: the base backup an earlier plan chose and leased; exactly that one is used.
    """
    target = parse_target(point_in_time)
    entries = store.catalog(database, "base")
    candidates, manifests, broken = [], {}, []
    if only is not None and not any(e.backup_id == only and e.complete and not e.bad for e in entries):
        raise RestoreRefused(f"{REFUSED}base backup {only} of {database}, chosen and leased by prepare, is no "
                             "longer complete and good; trigger pg_restore again")
    good = {e.backup_id for e in entries if e.complete and not e.bad}
    for entry in entries:
        if entry.complete and not entry.bad and (only is None or entry.backup_id == only):
            manifest, prefix = load_manifest(entry.backup_id)
            problem = broken_chain(manifest, good)
            if problem:   # an incremental whose full or an incremental before it is gone or bad
                broken.append(problem)
                continue
            manifests[entry.backup_id] = (manifest, prefix)
            candidates.append((entry.backup_id, {"finished_at": manifest.finished_at, "wal": manifest.wal}))
    if broken and (only is not None or not candidates):
        raise RestoreRefused(f"{REFUSED}{broken[-1]}; nothing was restored")
    usable = usable_base_backups(candidates, target)
    view = WalArchiveView(store, database)
    first_refusal = None
    for backup_id, _ in usable:
        manifest, prefix = manifests[backup_id]
        try:
            plan = view.plan(manifest, target, timeline)
        except AbandonedBranch as refused:
            first_refusal = first_refusal or refused
            continue   # an older base backup may lie before the branch
        check_target_reachable(plan, target)
        return target, manifest, prefix, plan, entries
    raise first_refusal


def broken_chain(manifest: Manifest, good: set[str]) -> str:
    """Why the chain of an incremental base backup cannot be restored ('' when every piece is good)."""
    missing = [piece for piece in manifest.chain[:-1] if piece not in good]
    if not missing:
        return ""
    return (f"base backup {manifest.backup_id} is incremental and needs {', '.join(missing)} (its chain "
            f"{' -> '.join(manifest.chain)}), which {'is' if len(missing) == 1 else 'are'} missing, incomplete "
            "or marked bad")


# ---------------------------------------------------------------- fetching (writes only under the new cluster's paths)

def chain_manifests(store, manifest: Manifest, prefix: str) -> list[tuple[Manifest, str]]:
    """(manifest, prefix) of every piece of ``manifest``'s chain, the full first, ``manifest`` last; each
    piece checked to be the one the next names (same cluster, parent as recorded)."""
    parent_dir = prefix.rsplit("/", 1)[0]
    pieces = []
    for backup_id in manifest.chain[:-1]:
        piece_prefix = f"{parent_dir}/{backup_id}"
        try:
            pieces.append((store.read_manifest(manifest_key(piece_prefix)), piece_prefix))
        except Exception as err:
            if store.is_missing(err):
                raise RecoveryFailed(f"base backup {backup_id}, a piece of the chain of {manifest.backup_id}, is "
                                     "gone (no manifest); nothing was restored") from None
            raise
    pieces.append((manifest, prefix))
    for (earlier, _), (later, _) in zip(pieces, pieces[1:], strict=False):
        if later.depends_on != earlier.backup_id or later.system_identifier != earlier.system_identifier:
            raise RecoveryFailed(f"base backup {later.backup_id} does not follow {earlier.backup_id} in its chain "
                                 f"(depends on {later.depends_on}); nothing was restored")
    if pieces[0][0].depends_on:
        raise RecoveryFailed(f"the chain of {manifest.backup_id} does not start with a full backup")
    return pieces


def chain_space_needed(pieces: list[Manifest]) -> int:
    """Bytes a chain's recovery needs beside the WAL: every piece unpacked, the combined data directory (at
    most the pieces together), and the downloads held at once: the one being unpacked and the next one,
    which downloads meanwhile (the two largest, to be safe). A full alone: itself unpacked plus its download."""
    tars = [next((o for o in m.objects if o.role == "base_tar"), None) for m in pieces]
    unpacked = sum((t.raw_size or t.size) if t else 0 for t in tars)
    held = sum(sorted((t.size for t in tars if t), reverse=True)[:2])
    return unpacked * (2 if len(pieces) > 1 else 1) + held


def check_space(path: Path, needed: int, what: str) -> None:
    """Refuse before anything is fetched when the file system of ``path`` has less than ``needed`` free."""
    probe = path
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free < needed:
        raise RecoveryFailed(f"{what} needs {human_bytes(needed)} free in {probe}, which has {human_bytes(free)}; "
                             "nothing was restored (free space there or set pgdr_pitr_data_dir elsewhere)")


def _damaged(manifest: Manifest, piece: str, err: Exception) -> RecoveryFailed:
    """A damaged piece of a chain, named, so the verdict can be marked on the right backup."""
    return RecoveryFailed(f"base backup {manifest.backup_id}, {piece}, is damaged ({err}); nothing was restored")


_SECONDS_LOCK = threading.Lock()   # the download ahead and the unpack add their times at once


def _add_seconds(seconds: dict[str, float], key: str, since: float) -> None:
    with _SECONDS_LOCK:
        seconds[key] = round(seconds.get(key, 0) + time.monotonic() - since, 3)


def _download(store, manifest: Manifest, prefix: str, staging: Path, seconds: dict[str, float],
              piece: str | None = None) -> Path:
    """One piece's tar downloaded into ``staging`` (size and sha256 checked); its time added to
    ``seconds["download_base"]``. What arrived is removed when the check fails."""
    tar_obj = next((o for o in manifest.objects if o.role == "base_tar"), None)
    if tar_obj is None:
        raise RecoveryFailed(f"base backup {manifest.backup_id} lists no base_tar object")
    archive = staging / f"{manifest.backup_id}.tar.zst"
    mark = time.monotonic()
    try:
        download_object(store, object_key(prefix, tar_obj.name), tar_obj, archive)
    except ObjectHashError as err:
        archive.unlink(missing_ok=True)
        if piece is None:   # a lone base backup's error goes as it is
            raise
        raise _damaged(manifest, piece, err) from err
    except BaseException:
        archive.unlink(missing_ok=True)
        raise
    _add_seconds(seconds, "download_base", mark)
    return archive


def _unpack(manifest: Manifest, archive: Path, into: Path, seconds: dict[str, float], piece: str | None = None,
            without_wal: bool = False) -> None:
    """A downloaded tar unpacked into ``into``, then removed; its time added to ``seconds["unpack_base"]``."""
    mark = time.monotonic()
    try:
        unpack_base_backup(archive, into, without_wal=without_wal)
    except ArchiveError as err:
        if piece is None:
            raise
        raise _damaged(manifest, piece, err) from err
    finally:
        archive.unlink(missing_ok=True)
    _add_seconds(seconds, "unpack_base", mark)


def _fetch_chain(store, pieces: list[tuple[Manifest, str]], staging: Path, seconds: dict[str, float],
                 newest: str) -> list[Path]:
    """Every piece of a chain downloaded (checked) and unpacked into its own directory under ``staging``, the
    full first; each next piece downloads while the one before it unpacks (one download ahead: at most two
    tars held at once). The unpacks stay one at a time: they are mostly per-file Python work, and two of
    them on threads were slower than one after the other (bench/README.md). ``seconds["download_base"]``
    sums the downloads, which overlap the unpacks after the first; ``seconds["download_wait"]`` is the
    time the unpacking waited for them. A failure waits for the download under way (its tar goes with
    ``staging``, which the caller removes) and is raised; a download not yet started never starts."""
    def label(number: int) -> str:
        return f"piece {number} of {len(pieces)} of the chain of {newest}"

    dirs: list[Path] = []
    waited = 0.0
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="pgdr-base-download") as pool:
        ahead = pool.submit(_download, store, *pieces[0], staging, seconds, label(1))
        try:
            for number, (piece, _) in enumerate(pieces, 1):
                mark = time.monotonic()
                archive = ahead.result()
                waited += time.monotonic() - mark
                if number < len(pieces):
                    ahead = pool.submit(_download, store, *pieces[number], staging, seconds, label(number + 1))
                dirs.append(staging / piece.backup_id)
                # the WAL each piece streamed is not combined: only the newest piece's is written
                _unpack(piece, archive, dirs[-1], seconds, label(number), without_wal=number < len(pieces))
        except BaseException:
            ahead.cancel()
            raise
        finally:
            seconds["download_wait"] = round(waited, 3)
    return dirs


def fetch_base(store, manifest: Manifest, prefix: str, data_dir: Path, bindir: Path, seconds: dict[str, float],
               log: logging.Logger) -> None:
    """Download the base backup's tar (checked), unpack it into ``data_dir`` and prove it with
    pg_verifybackup; the time of each step goes into ``seconds``. An incremental: every piece of its chain
    downloaded (checked) and unpacked beside ``data_dir`` (:func:`_fetch_chain`), combined into it by
    pg_combinebackup, the pieces removed. A piece missing or damaged fails before anything is combined;
    the caller removes ``data_dir``."""
    pieces = chain_manifests(store, manifest, prefix) if manifest.depends_on else [(manifest, prefix)]
    what = "point-in-time recovery from " + (
        f"the chain of {len(pieces)} base backups {pieces[0][0].backup_id} .. {manifest.backup_id}"
        if len(pieces) > 1 else f"base backup {manifest.backup_id}")
    check_space(data_dir.parent, chain_space_needed([m for m, _ in pieces]), what)
    staging = data_dir.with_name(data_dir.name + ".download")
    staging.mkdir(parents=True)
    try:
        mark = time.monotonic()
        if len(pieces) == 1:
            _unpack(manifest, _download(store, manifest, prefix, staging, seconds), data_dir, seconds)
        else:
            dirs = _fetch_chain(store, pieces, staging, seconds, manifest.backup_id)
        seconds["fetch_base"] = round(time.monotonic() - mark, 3)
        if len(pieces) > 1:
            mark = time.monotonic()
            combine(bindir, dirs, data_dir, log)
            seconds["combine"] = round(time.monotonic() - mark, 3)
    finally:
        mark = time.monotonic()
        shutil.rmtree(staging, ignore_errors=True)   # a chain's unpacked pieces: as many files as the full each
        seconds["remove_staging"] = round(time.monotonic() - mark, 3)
    mark = time.monotonic()
    result = subprocess.run([tool_path(bindir, "pg_verifybackup"), "--no-parse-wal", str(data_dir)],
                            capture_output=True, text=True)
    if result.returncode != 0:
        raise RecoveryFailed(f"pg_verifybackup rejected base backup {manifest.backup_id}: "
                             f"{stderr_tail(result.stderr or result.stdout)}")
    seconds["verify_base"] = round(time.monotonic() - mark, 3)
    log.info("base backup %s %s into %s and verified by pg_verifybackup", manifest.backup_id,
             f"combined from its chain of {len(pieces)}" if len(pieces) > 1 else "unpacked", data_dir)


def combine(bindir: Path, pieces: list[Path], data_dir: Path, log: logging.Logger) -> None:
    """pg_combinebackup the unpacked pieces (full first) into the new directory ``data_dir``. --no-sync: the
    server fsyncs the data directory when it starts recovery from a backup."""
    argv = [tool_path(bindir, "pg_combinebackup"), "--no-sync", "-o", str(data_dir), *map(str, pieces)]
    log.info("running pg_combinebackup of %d pieces into %s", len(pieces), data_dir)
    result = subprocess.run(argv, capture_output=True, text=True,
                            env={"PATH": os.environ.get("PATH", ""), "LC_ALL": "C"})
    if result.returncode != 0:
        raise RecoveryFailed(f"pg_combinebackup could not combine the chain (exit {result.returncode}): "
                             f"{stderr_tail(result.stderr or result.stdout)}; nothing was restored")


class WalFetch:
    """The planned WAL objects (histories, then segments) downloaded into ``wal_dir``, uncompressed,
    each checked: its stored sha256s, and the cluster its segment header names."""

    def __init__(self, *, store, wal: WalPlan, wal_dir: Path, backup_id: str, jobs: int, log: logging.Logger) -> None:
        self.store = store
        self.wal = wal
        self.wal_dir = wal_dir
        self.backup_id = backup_id
        self.jobs = jobs
        self.log = log

    def run(self) -> None:
        self.wal_dir.mkdir(mode=0o700)
        with ThreadPoolExecutor(max_workers=max(self.jobs, 2) + 2, thread_name_prefix="pgdr-wal") as pool:
            list(pool.map(self.fetch_one, [*self.wal.histories, *self.wal.segments]))
        self.log.info("fetched %d WAL segment(s) %s .. %s%s%s", len(self.wal.segments), self.wal.first, self.wal.last,
                      " (the last one partial)" if self.wal.segments[-1].partial else "",
                      f", following timelines to {self.wal.timeline}" if self.wal.histories else "")

    def fetch_one(self, obj: WalObject) -> None:
        """Download one WAL object with one GET (its stored hashes come with the same response, so a partial
        segment overwritten meanwhile cannot pair one version's hash with another's bytes), check it, and
        retry once; a partial segment completed and retired meanwhile is taken as the completed segment."""
        keys = [obj.key]
        if obj.partial:
            stem, dot_partial, suffix = obj.key.rpartition(".partial")
            keys.append(stem + suffix)
        problem = ""
        for attempt in range(2):
            for key in keys:
                try:
                    response = self.store.open_object(key)
                except Exception as err:
                    if self.store.is_missing(err):
                        problem = f"WAL object {key} is gone"
                        continue
                    raise
                problem = self._store_object(obj, key, response)
                if not problem:
                    return
                break
            if attempt == 0:
                self.log.warning("%s; fetching it again", problem)
        raise RecoveryFailed(problem)

    def _store_object(self, obj: WalObject, key: str, response) -> str:
        """Write one GET's body as ``<wal_dir>/<name>``; returns a problem, or '' when it checks out."""
        metadata = response.get("Metadata", {})
        compressed = self.wal_dir / (obj.name + f".{threading.get_ident()}.download")
        target = self.wal_dir / obj.name
        try:
            with open(compressed, "wb") as handle:
                stored_copy = copy_hashed(response["Body"], handle, chunk=CHUNK)
            stored = metadata.get("sha256")
            if stored and stored_copy.sha256 != stored:
                return f"WAL object {key}: sha256 {stored_copy.sha256} != stored {stored}"
            with open(compressed, "rb") as reader, open(target, "wb") as writer:
                source = (zstandard.ZstdDecompressor().stream_reader(reader, read_size=CHUNK)
                          if key.endswith(".zst") else reader)
                raw = copy_hashed(source, writer, chunk=CHUNK)
            raw_stored = metadata.get("raw-sha256")
            if raw_stored and raw.sha256 != raw_stored:
                return f"WAL object {key}: content sha256 {raw.sha256} != stored {raw_stored}"
            wanted = self.wal.system_identifier
            if wanted and not obj.name.endswith(".history"):
                header = read_segment_header(target)
                owner = header.system_identifier if header else metadata.get("system-identifier")
                if owner and owner != wanted:
                    target.unlink(missing_ok=True)
                    # not a transient problem: never replay another cluster's WAL
                    raise RecoveryFailed(f"WAL object {key} belongs to database system {owner}, the base backup "
                                         f"{self.backup_id} to {wanted}; refusing to mix clusters")
            return ""
        finally:
            compressed.unlink(missing_ok=True)
