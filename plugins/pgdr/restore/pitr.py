"""Point-in-time recovery: a base backup and the WAL after it, replayed into a new cluster.

The new cluster's data directory goes under ``pgdr_pitr_data_dir`` and it listens on
``pgdr_pitr_listen_addresses``, port ``pgdr_pitr_port`` (another free port when that one is busy,
say with the cluster of an earlier recovery); when the worker runs as root the cluster runs as
``pgdr_pitr_os_user``. The server starts with a minimal environment: none of the worker's secrets
(Airflow connections, the Fernet key, cloud credentials) reach it. Each running recovered cluster
is recorded beside its data directory with an expiry (``pgdr_pitr_keep_hours``);
:func:`expire_recovered` stops and removes the expired ones (the next recovery on the worker runs it
too). The base backup is unpacked and checked with ``pg_verifybackup`` before it is started; the
WAL (and the timeline histories it crosses) is fetched from S3 first, each object's sha256 and
cluster checked against what was planned, so the server's ``restore_command`` only copies local
files. ``latest`` includes the newest partial segment the WAL receiver shipped: that is what brings
back every acknowledged commit.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import pwd
import shutil
import socket
import subprocess
import tarfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta, timezone
from pathlib import Path

import zstandard

from pgdr.core.compression import CHUNK
from pgdr.core.pgtools import PgToolError, stderr_tail, tool_path
from pgdr.restore.fetch import download_object
from pgdr.restore.pitr_plan import (
    TARGET_NOT_REACHED,
    AbandonedBranch,
    Target,
    WalObject,
    WalPlan,
    check_not_abandoned,
    check_target_reachable,
    choose_timeline,
    history_objects,
    parse_history,
    parse_target,
    plan_wal,
    recovery_end,
    usable_base_backups,
    wal_objects,
)
from pgdr.restore.request import RestoreRefused
from pgdr.store.manifest import Manifest
from pgdr.wal.names import parse_lsn, segment_size_of, timeline_of

REFUSED = "restore refused, nothing was changed: "
REGISTRY_SUFFIX = ".pgdr-pitr.json"
DEFAULT_LISTEN_ADDRESSES = "127.0.0.1"
DEFAULT_KEEP_HOURS = 72.0
# what the recovered server inherits from the worker: a search path and the locale, nothing else
_KEPT_ENVIRONMENT = ("LANG", "LC_ALL", "LC_CTYPE", "LC_MESSAGES", "TZ")


# ---------------------------------------------------------------- planning (reads S3, changes nothing)

def manifest_system_identifier(manifest: Manifest) -> str | None:
    """The cluster a base backup came from (decimal text), from the manifest or its WAL facts."""
    value = manifest.system_identifier or (manifest.wal or {}).get("system_identifier")
    return str(value) if value not in (None, "") else None


def _read_text(store, key: str) -> str:
    body = store.client.get_object(Bucket=store.bucket, Key=key)["Body"].read()
    if key.endswith(".zst"):
        body = zstandard.ZstdDecompressor().stream_reader(io.BytesIO(body)).read()
    return body.decode()


def _object_system_identifier(store, key: str) -> str | None:
    head = store.client.head_object(Bucket=store.bucket, Key=key)
    return head.get("Metadata", {}).get("system-identifier") or None


class WalArchiveView:
    """The WAL objects of one database listed once, with the history files read on demand, per cluster."""

    def __init__(self, store, database: str) -> None:
        self.store = store
        self.base = f"{store.prefix}/{database}/wal/"
        self.listed = store.list_objects(self.base)
        self._histories: dict[str | None, tuple[dict, dict]] = {}
        self._owners: dict[str, str | None] = {}

    def histories(self, system_identifier: str | None) -> tuple[dict[int, WalObject], dict[int, list]]:
        if system_identifier not in self._histories:
            objects = history_objects(self.listed, self.base, system_identifier)
            self._histories[system_identifier] = (objects, {tli: parse_history(_read_text(self.store, obj.key))
                                                            for tli, obj in objects.items()})
        return self._histories[system_identifier]

    def owners(self, objects: list[WalObject]) -> list[str | None]:
        """The system identifier each object's metadata records (legacy objects carry it there)."""
        unknown = [o.key for o in objects if o.key not in self._owners]
        if unknown:
            with ThreadPoolExecutor(max_workers=8, thread_name_prefix="pgdr-head") as pool:
                for key, owner in zip(unknown, pool.map(lambda k: _object_system_identifier(self.store, k), unknown),
                                      strict=True):
                    self._owners[key] = owner
        return [self._owners[o.key] for o in objects]

    def plan(self, manifest: Manifest, target: Target, timeline: str | int = "latest") -> WalPlan:
        """The WAL from this base backup to ``target`` along the timeline history, or a refusal."""
        system_identifier = manifest_system_identifier(manifest)
        history_objs, histories = self.histories(system_identifier)
        wal = manifest.wal
        base_tli = int(wal.get("timeline") or timeline_of(wal["start_wal_file"]))
        # the cluster's segment size, as the base backup recorded it: names map to LSNs through it
        segment_size = segment_size_of(wal)
        tli, path, branches = choose_timeline(base_tli, parse_lsn(wal["start_lsn"]), histories, timeline,
                                              {t: o.modified for t, o in history_objs.items()})
        check_not_abandoned(target, tli, branches)
        found = wal_objects(self.listed, self.base, system_identifier)
        for _ in range(3):
            plan = plan_wal(found, wal["start_wal_file"], target, path, segment_size)
            if system_identifier is None:
                break
            legacy = [s for s in plan.segments if s.system_identifier is None]
            strangers = {o.name for o, owner in zip(legacy, self.owners(legacy), strict=True)
                         if owner not in (None, system_identifier)}
            if not strangers:
                break
            found = {name: obj for name, obj in found.items() if name not in strangers}
        histories_needed = tuple(history_objs[e.tli] for e in path if e.tli in history_objs)
        return WalPlan(plan.segments, plan.newest_time, tli, histories_needed, system_identifier, plan.path,
                       segment_size)


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
    candidates, manifests = [], {}
    if only is not None and not any(e.backup_id == only and e.complete and not e.bad for e in entries):
        raise RestoreRefused(f"{REFUSED}base backup {only} of {database}, chosen and leased by prepare, is no "
                             "longer complete and good; trigger pg_restore again")
    for entry in entries:
        if entry.complete and not entry.bad and (only is None or entry.backup_id == only):
            manifest, prefix = load_manifest(entry.backup_id)
            manifests[entry.backup_id] = (manifest, prefix)
            candidates.append((entry.backup_id, {"finished_at": manifest.finished_at, "wal": manifest.wal}))
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


# ---------------------------------------------------------------- the recovered cluster's environment and port

def clean_environment(bindir: Path | None = None) -> dict[str, str]:
    """The environment a recovered server runs with: PATH and the locale; no worker secret."""
    path = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"]
    if bindir:
        path.insert(0, str(bindir))
    env = {"PATH": ":".join(path)}
    env.update({name: os.environ[name] for name in _KEPT_ENVIRONMENT if name in os.environ})
    return env


def choose_port(preferred: int, host: str = "127.0.0.1") -> int:
    """``preferred`` when it is free, else a free port the system hands out."""
    if port_is_free(preferred, host):
        return preferred
    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def _first_address(listen_addresses: str) -> str:
    first = listen_addresses.split(",")[0].strip()
    return "127.0.0.1" if first in ("", "*", "0.0.0.0", "localhost") else first


# ---------------------------------------------------------------- the registry of running recovered clusters

def registry_path(data_dir: Path) -> Path:
    return data_dir.with_name(data_dir.name + REGISTRY_SUFFIX)


def running_recovered(data_root: Path) -> list[dict]:
    """The recovered clusters recorded under ``data_root`` (running or left behind), oldest first."""
    found = []
    for record in sorted(Path(data_root).glob("*" + REGISTRY_SUFFIX)):
        try:
            found.append({**json.loads(record.read_text()), "record": str(record)})
        except (OSError, ValueError):
            continue
    return sorted(found, key=lambda r: r.get("started_at", ""))


def expire_recovered(data_root: Path, log: logging.Logger, now: datetime | None = None,
                     dry_run: bool = False) -> list[dict]:
    """Stop and remove every recovered cluster under ``data_root`` whose expiry has passed; returns them.

    A recovered cluster holds a full copy of the patient data; it lives only as long as
    ``pgdr_pitr_keep_hours`` said when it was started. Only clusters pgdr recorded are touched."""
    now = now or datetime.now(timezone.utc)
    removed = []
    for record in running_recovered(data_root):
        try:
            expires = datetime.fromisoformat(record["expires_at"])
        except (KeyError, ValueError):
            continue
        if expires > now:
            continue
        data_dir = Path(record["data_dir"])
        if data_dir.parent != Path(data_root) or not data_dir.name:
            continue   # a record pointing elsewhere was not written by pgdr: leave it
        if not dry_run:
            _remove_cluster(data_dir, record.get("os_user"), Path(record.get("bindir") or "."))
        log.info("%s the recovered cluster %s (port %s), expired %s", "would remove" if dry_run else "removed",
                 data_dir, record.get("port"), record["expires_at"])
        removed.append({"data_dir": str(data_dir), "port": record.get("port"), "expires_at": record["expires_at"],
                        "base_backup_id": record.get("base_backup_id")})
    return removed


def _remove_cluster(data_dir: Path, os_user: str | None, bindir: Path) -> None:
    if (data_dir / "postmaster.pid").exists():
        for mode in ("fast", "immediate"):
            result = subprocess.run(_as_user(os_user, [tool_path(bindir, "pg_ctl"), "-D", str(data_dir), "-m", mode,
                                                       "-w", "-t", "60", "stop"]),
                                    capture_output=True, env=clean_environment(bindir))
            if result.returncode == 0:
                break
    for path in (data_dir, data_dir.with_name(data_dir.name + ".wal"), data_dir.with_name(data_dir.name + ".sock"),
                 data_dir.with_name(data_dir.name + ".download")):
        shutil.rmtree(path, ignore_errors=True)
    data_dir.with_name(data_dir.name + ".log").unlink(missing_ok=True)
    registry_path(data_dir).unlink(missing_ok=True)


class RecoveryFailed(RuntimeError):
    """The recovered cluster did not come up; the message quotes its log."""


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def check_pitr_target(data_root: Path, name: str, port: int, free_needed: int) -> Path:
    """The new cluster's data directory, after checking it is new and there is room. A busy ``port`` is no
    refusal: the recovery takes another free one (and reports it)."""
    data_dir = data_root / name
    problems = []
    if data_dir.exists():
        problems.append(f"{data_dir} already exists")
    data_root.mkdir(parents=True, exist_ok=True)
    free = shutil.disk_usage(data_root).free
    if free < free_needed:
        problems.append(f"{data_root} has {free >> 20} MiB free, the recovery needs about {free_needed >> 20} MiB "
                        "(setting pgdr_pitr_data_dir)")
    if problems:
        raise RestoreRefused(REFUSED + "; ".join(problems))
    return data_dir


def _as_user(os_user: str | None, argv: list[str]) -> list[str]:
    if os_user and os.geteuid() == 0:
        return ["runuser", "-u", os_user, "--", *argv]
    return argv


def _chown_tree(path: Path, os_user: str | None) -> None:
    if not os_user or os.geteuid() != 0:
        return
    entry = pwd.getpwnam(os_user)
    for root, dirs, files in os.walk(path):
        os.chown(root, entry.pw_uid, entry.pw_gid)
        for name in dirs + files:
            os.chown(os.path.join(root, name), entry.pw_uid, entry.pw_gid, follow_symlinks=False)


class _Reader(io.RawIOBase):
    """A zstd stream as a file object that tarfile can read in stream mode."""

    def __init__(self, stream) -> None:
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._stream.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


def unpack_base_backup(archive: Path, data_dir: Path) -> None:
    """Unpack ``data.tar.zst`` into ``data_dir`` (members are checked to stay inside it)."""
    data_dir.mkdir(parents=True, mode=0o700)
    with open(archive, "rb") as raw:
        reader = zstandard.ZstdDecompressor().stream_reader(raw, read_size=CHUNK)
        with tarfile.open(fileobj=io.BufferedReader(_Reader(reader), CHUNK), mode="r|") as tar:
            tar.extractall(data_dir, filter="data")
    # the tar may hold the data directory itself rather than its contents
    if not (data_dir / "PG_VERSION").exists():
        inner = [p for p in data_dir.iterdir() if (p / "PG_VERSION").exists()]
        if len(inner) != 1:
            raise RecoveryFailed(f"the base backup archive holds no data directory (no PG_VERSION) in {data_dir}")
        for child in inner[0].iterdir():
            child.rename(data_dir / child.name)
        inner[0].rmdir()
    data_dir.chmod(0o700)


def _pitr_settings(listen_addresses: str | None, keep_hours: float | None,
                   log: logging.Logger) -> tuple[str, float]:
    """The settings a caller did not pass; their defaults where pgdr's settings cannot be read (a bench, a
    script outside Airflow)."""
    try:
        from pgdr.settings import load_settings

        settings = load_settings()
        configured = (settings.pitr_listen_addresses, settings.pitr_keep_hours)
    except Exception as err:  # noqa: BLE001 - outside Airflow: the documented defaults
        log.warning("pgdr settings unreadable (%s); the recovered cluster listens on %s and expires after %s h",
                    type(err).__name__, DEFAULT_LISTEN_ADDRESSES, DEFAULT_KEEP_HOURS)
        configured = (DEFAULT_LISTEN_ADDRESSES, DEFAULT_KEEP_HOURS)
    return (listen_addresses if listen_addresses is not None else configured[0],
            keep_hours if keep_hours is not None else configured[1])


class PointInTimeRecovery:
    """One recovery into a new cluster. ``port`` is the preferred port (another free one is taken when it is
    busy); ``listen_addresses`` and ``keep_hours`` default to the settings ``pgdr_pitr_listen_addresses`` and
    ``pgdr_pitr_keep_hours``."""

    def __init__(self, *, store, manifest: Manifest, prefix: str, wal: WalPlan, target: Target, data_dir: Path,
                 port: int, os_user: str | None, login: str, bindir: Path, jobs: int, log: logging.Logger,
                 listen_addresses: str | None = None, keep_hours: float | None = None) -> None:
        if listen_addresses is None or keep_hours is None:
            listen_addresses, keep_hours = _pitr_settings(listen_addresses, keep_hours, log)
        self.store = store
        self.manifest = manifest
        self.prefix = prefix
        self.wal = wal
        self.target = target
        self.data_dir = data_dir
        self.wal_dir = data_dir.with_name(data_dir.name + ".wal")
        self.socket_dir = data_dir.with_name(data_dir.name + ".sock")
        self.port = port
        self.listen_addresses = listen_addresses
        self.keep_hours = keep_hours
        self.os_user = os_user
        self.login = login
        self.bindir = Path(bindir)
        self.jobs = jobs
        self.log = log
        self.seconds: dict[str, float] = {}
        self.target_reached = True

    @property
    def log_file(self) -> Path:
        return self.data_dir.with_name(self.data_dir.name + ".log")

    def run(self) -> dict:
        started = time.monotonic()
        try:
            # recovered clusters of earlier runs on this worker whose time is up go first (PHI, ports)
            expire_recovered(self.data_dir.parent, self.log)
        except Exception as err:  # noqa: BLE001 - a stuck old cluster must not block this recovery
            self.log.warning("could not remove expired recovered clusters: %s", err)
        preferred = self.port
        self.port = choose_port(preferred, _first_address(self.listen_addresses))
        if self.port != preferred:
            self.log.warning("port %d (setting pgdr_pitr_port) is busy (the cluster of an earlier recovery?); "
                             "the recovered cluster listens on port %d instead", preferred, self.port)
        try:
            self._fetch_base()
            mark = time.monotonic()
            self._fetch_wal()
            self.seconds["fetch_wal"] = round(time.monotonic() - mark, 3)
            mark = time.monotonic()
            self._configure()
            self._start_and_wait()
            self.seconds["recover"] = round(time.monotonic() - mark, 3)
            record = self._register()
        except BaseException:
            self.discard()
            raise
        shutil.rmtree(self.wal_dir, ignore_errors=True)
        ended = recovery_end(self.log_file.read_text(errors="replace"))
        self.seconds["total"] = round(time.monotonic() - started, 3)
        outcome = {"data_dir": str(self.data_dir), "port": self.port, "socket_dir": str(self.socket_dir),
                   "listen_addresses": self.listen_addresses, "expires_at": record["expires_at"],
                   "base_backup_id": self.manifest.backup_id, "target": self.target.describe(),
                   "target_reached": self.target_reached, "timeline": self.wal.timeline or None,
                   "wal_first": self.wal.first, "wal_last": self.wal.last,
                   "wal_last_partial": self.wal.segments[-1].partial, **ended, "seconds": dict(self.seconds),
                   "server_log": str(self.log_file)}
        if not self.target_reached:
            outcome["note"] = (f"{self.target.describe()} is after the last transaction in the WAL shipped (last "
                               f"transaction at {ended.get('last_transaction_time') or 'unknown'}): nothing was "
                               "committed between them, so the cluster was recovered to the end of the WAL")
            self.log.warning("%s", outcome["note"])
        return outcome

    def discard(self) -> None:
        """Stop the new cluster if it runs and remove everything this recovery wrote."""
        if (self.data_dir / "postmaster.pid").exists():
            subprocess.run(_as_user(self.os_user, [tool_path(self.bindir, "pg_ctl"), "-D", str(self.data_dir),
                                                   "-m", "immediate", "-w", "stop"]), capture_output=True,
                           env=clean_environment(self.bindir))
        for path in (self.data_dir, self.wal_dir, self.socket_dir):
            shutil.rmtree(path, ignore_errors=True)
        self.log_file.unlink(missing_ok=True)
        registry_path(self.data_dir).unlink(missing_ok=True)

    def _register(self) -> dict:
        """Record the running cluster with its expiry, so :func:`expire_recovered` can remove it."""
        now = datetime.now(timezone.utc)
        record = {"data_dir": str(self.data_dir), "port": self.port, "listen_addresses": self.listen_addresses,
                  "os_user": self.os_user, "bindir": str(self.bindir), "base_backup_id": self.manifest.backup_id,
                  "database": self.manifest.database, "target": self.target.describe(),
                  "started_at": now.isoformat(timespec="seconds"),
                  "expires_at": (now + timedelta(hours=self.keep_hours)).isoformat(timespec="seconds")}
        path = registry_path(self.data_dir)
        path.write_text(json.dumps(record, indent=1))
        path.chmod(0o600)
        return record

    def _fetch_base(self) -> None:
        mark = time.monotonic()
        tar_obj = next((o for o in self.manifest.objects if o.role == "base_tar"), None)
        if tar_obj is None:
            raise RecoveryFailed(f"base backup {self.manifest.backup_id} lists no base_tar object")
        staging = self.data_dir.with_name(self.data_dir.name + ".download")
        staging.mkdir(parents=True)
        try:
            archive = staging / "data.tar.zst"
            download_object(self.store, f"{self.prefix}/{tar_obj.name}", tar_obj, archive)
            self.seconds["download_base"] = round(time.monotonic() - mark, 3)
            mark = time.monotonic()
            unpack_base_backup(archive, self.data_dir)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        self.seconds["unpack_base"] = round(time.monotonic() - mark, 3)
        mark = time.monotonic()
        result = subprocess.run([tool_path(self.bindir, "pg_verifybackup"), "--no-parse-wal", str(self.data_dir)],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise RecoveryFailed(f"pg_verifybackup rejected base backup {self.manifest.backup_id}: "
                                 f"{stderr_tail(result.stderr or result.stdout)}")
        self.seconds["verify_base"] = round(time.monotonic() - mark, 3)
        self.log.info("base backup %s unpacked into %s and verified by pg_verifybackup", self.manifest.backup_id,
                      self.data_dir)

    def _fetch_wal(self) -> None:
        self.wal_dir.mkdir(mode=0o700)
        with ThreadPoolExecutor(max_workers=max(self.jobs, 2) + 2, thread_name_prefix="pgdr-wal") as pool:
            list(pool.map(self._fetch_one, [*self.wal.histories, *self.wal.segments]))
        self.log.info("fetched %d WAL segment(s) %s .. %s%s%s", len(self.wal.segments), self.wal.first, self.wal.last,
                      " (the last one partial)" if self.wal.segments[-1].partial else "",
                      f", following timelines to {self.wal.timeline}" if self.wal.histories else "")

    def _fetch_one(self, obj: WalObject) -> None:
        """Download one WAL object with one GET (its stored hashes come with the same response, so a partial
        segment overwritten meanwhile cannot pair one version's hash with another's bytes), check it, and
        retry once; a partial segment completed and retired meanwhile is taken as the completed segment."""
        from botocore.exceptions import ClientError

        keys = [obj.key]
        if obj.partial:
            stem, dot_partial, suffix = obj.key.rpartition(".partial")
            keys.append(stem + suffix)
        problem = ""
        for attempt in range(2):
            for key in keys:
                try:
                    response = self.store.client.get_object(Bucket=self.store.bucket, Key=key)
                except ClientError as err:
                    if err.response.get("Error", {}).get("Code") in ("NoSuchKey", "404", "NotFound"):
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
        digest = hashlib.sha256()
        try:
            with open(compressed, "wb") as handle:
                for block in response["Body"].iter_chunks(CHUNK):
                    digest.update(block)
                    handle.write(block)
            stored = metadata.get("sha256")
            if stored and digest.hexdigest() != stored:
                return f"WAL object {key}: sha256 {digest.hexdigest()} != stored {stored}"
            raw = hashlib.sha256()
            with open(compressed, "rb") as reader, open(target, "wb") as writer:
                if key.endswith(".zst"):
                    source = zstandard.ZstdDecompressor().stream_reader(reader, read_size=CHUNK)
                else:
                    source = reader
                while block := source.read(CHUNK):
                    raw.update(block)
                    writer.write(block)
            raw_stored = metadata.get("raw-sha256")
            if raw_stored and raw.hexdigest() != raw_stored:
                return f"WAL object {key}: content sha256 {raw.hexdigest()} != stored {raw_stored}"
            wanted = self.wal.system_identifier
            if wanted and not obj.name.endswith(".history"):
                from pgdr.wal.ship import read_segment_header

                header = read_segment_header(target)
                owner = header.system_identifier if header else metadata.get("system-identifier")
                if owner and owner != wanted:
                    target.unlink(missing_ok=True)
                    # not a transient problem: never replay another cluster's WAL
                    raise RecoveryFailed(f"WAL object {key} belongs to database system {owner}, the base backup "
                                         f"{self.manifest.backup_id} to {wanted}; refusing to mix clusters")
            return ""
        finally:
            compressed.unlink(missing_ok=True)

    def _configure(self) -> None:
        self.socket_dir.mkdir(mode=0o700)
        for stale in ("postmaster.pid", "postmaster.opts", "standby.signal"):
            (self.data_dir / stale).unlink(missing_ok=True)
        if self.target.kind == "time":
            target = [f"recovery_target_time = '{self.target.time.isoformat()}'"]
        elif self.target.kind == "lsn":
            target = [f"recovery_target_lsn = '{self.target.text}'"]
        else:
            target = []
        # the timeline the plan followed (its history files are in the WAL directory); the base backup's own
        # when no newer one descends from it
        timeline = self.wal.timeline
        start_tli = timeline_of(self.wal.first)
        overrides = [
            "", "# pgdr point-in-time recovery: these settings win over the source's",
            f"port = {self.port}",
            f"listen_addresses = '{self.listen_addresses}'",
            f"unix_socket_directories = '{self.socket_dir}'",
            f"restore_command = 'cp \"{self.wal_dir}/%f\" \"%p\"'",
            *target,
            "recovery_target_action = 'promote'",
            f"recovery_target_timeline = '{timeline}'" if timeline and timeline != start_tli
            else "recovery_target_timeline = 'current'",
            # the source's synchronous standbys and archiving do not follow it here
            "synchronous_standby_names = ''",
            "archive_mode = 'off'",
            "primary_conninfo = ''",
            "primary_slot_name = ''",
        ]
        with open(self.data_dir / "postgresql.auto.conf", "a") as conf:
            conf.write("\n".join(overrides) + "\n")
        # pgdr reaches the new cluster over its private socket (a directory only its OS user and root
        # can enter); the source's own rules follow for everyone else
        hba = self.data_dir / "pg_hba.conf"
        original = hba.read_text() if hba.exists() else ""
        hba.write_text(f"local all {self.login} trust\n" + original)
        (self.data_dir / "recovery.signal").write_text("")
        _chown_tree(self.data_dir, self.os_user)
        _chown_tree(self.wal_dir, self.os_user)
        _chown_tree(self.socket_dir, self.os_user)
        if self.os_user and os.geteuid() == 0:
            entry = pwd.getpwnam(self.os_user)
            for parent in {self.data_dir.parent}:
                os.chmod(parent, 0o755)
            self.log_file.touch()
            os.chown(self.log_file, entry.pw_uid, entry.pw_gid)

    def _start_and_wait(self) -> None:
        try:
            self._start_and_wait_once()
        except RecoveryFailed:
            if self.target.kind == "latest" or TARGET_NOT_REACHED not in self._log_text():
                raise
            # the server replayed every record shipped without meeting the target: a time after the last
            # commit (a quiet database), or an LSN past the end of the WAL. The WAL holds nothing after the
            # last commit, so the end of the WAL is the state at the target: recover to it and say so.
            self.target_reached = False
            self.log.warning("%s is after the last transaction in the WAL shipped; recovering to the end of the "
                             "WAL", self.target.describe())
            conf = self.data_dir / "postgresql.auto.conf"
            lines = [line for line in conf.read_text().splitlines()
                     if not line.startswith(("recovery_target_time ", "recovery_target_lsn "))]
            conf.write_text("\n".join(lines) + "\n")
            self._start_and_wait_once()

    def _log_text(self) -> str:
        try:
            return self.log_file.read_text(errors="replace")
        except OSError:
            return ""

    def _start_and_wait_once(self) -> None:
        argv = _as_user(self.os_user, [tool_path(self.bindir, "pg_ctl"), "-D", str(self.data_dir), "-l",
                                       str(self.log_file), "-w", "-t", "86400", "start"])
        self.log.info("starting the recovered cluster on port %d: %s", self.port, " ".join(argv))
        # a minimal environment: the server and everything it runs never see the worker's secrets
        result = subprocess.run(argv, capture_output=True, text=True, env=clean_environment(self.bindir))
        if result.returncode != 0:
            raise RecoveryFailed(f"the recovered cluster did not start: {self._log_tail()}")
        import psycopg2

        deadline = time.monotonic() + 86400
        while time.monotonic() < deadline:
            try:
                conn = psycopg2.connect(host=str(self.socket_dir), port=self.port, user=self.login,
                                        dbname="postgres")
            except psycopg2.OperationalError:
                if not (self.data_dir / "postmaster.pid").exists():
                    raise RecoveryFailed(f"the recovered cluster stopped: {self._log_tail()}") from None
                time.sleep(0.2)
                continue
            try:
                with conn.cursor() as cur:
                    cur.execute("SELECT pg_is_in_recovery()")
                    (in_recovery,) = cur.fetchone()
            finally:
                conn.close()
            if not in_recovery:
                self.log.info("recovery finished and the cluster was promoted")
                return
            time.sleep(0.2)
        raise RecoveryFailed("recovery did not finish within a day")

    def _log_tail(self, lines: int = 12) -> str:
        try:
            return stderr_tail(self.log_file.read_text(errors="replace"), lines)
        except OSError:
            return "(no server log)"


def connect_recovered(result: dict, login: str, dbname: str):
    import psycopg2

    conn = psycopg2.connect(host=result["socket_dir"], port=result["port"], user=login, dbname=dbname)
    conn.autocommit = True
    return conn


def stop_recovered(data_dir: str, os_user: str | None, bindir: Path) -> None:
    subprocess.run(_as_user(os_user, [tool_path(bindir, "pg_ctl"), "-D", data_dir, "-m", "fast", "-w", "stop"]),
                   capture_output=True, env=clean_environment(bindir))


__all__ = ["PointInTimeRecovery", "PgToolError", "check_pitr_target", "clean_environment", "connect_recovered",
           "expire_recovered", "plan_point_in_time", "running_recovered", "stop_recovered"]
