"""Shipping the WAL that pg_receivewal writes to S3, completed segments and the growing partial one.

The receiver (:mod:`pgdr.wal.receiver`) streams WAL from the protected server into a local
directory: ``<24 hex>`` files are completed segments, ``<24 hex>.partial`` is the segment being
written, ``<8 hex>.history`` are timeline histories. :func:`ship_once` uploads what is new to
``<prefix>/<database>/wal/<system_identifier>/<name>.zst`` (zstd, server-side encrypted, SHA-256 checked by S3):
completed segments and histories once, the partial segment whenever its content changed, as
``<segment>.partial.zst``, which is deleted once the completed segment is stored. What was shipped
is remembered in ``<directory>/.pgdr-shipped.json`` so a restart uploads nothing twice; without that
file a HEAD request on each key decides. :func:`ship_window` ships every few seconds for a while.

WAL names, LSNs and their arithmetic are :mod:`pgdr.wal.names` (re-exported here for older importers);
the segment size of the WAL shipped is read from each segment's header.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import struct
import tempfile
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pgdr.wal import names
from pgdr.wal.names import (
    DEFAULT_SEGMENT_SIZE,
    classify,
    format_lsn,
    next_segment,
    parse_lsn,
    parse_segment,
    segment_name,
    segment_number,
    segment_of_partial,
    segment_start_lsn,
    segments_per_log,
)

WAL_SEGMENT_SIZE = DEFAULT_SEGMENT_SIZE   # the default; the WAL's own size is in each segment's header
STATE_NAME = ".pgdr-shipped.json"
STATUS_NAME = "receiver.status.json"
GAPS_NAME = "wal-gaps.json"              # gaps the receiver recorded when it had to recreate its slot
ALERTS_NAME = ".pgdr-alerts.json"        # what the shipper alerted on (local: usable while S3 is down)
ASIDE_PREFIX = "before-gap-"             # WAL moved out of pg_receivewal's sight when its slot was lost
STATE_VERSION = 1
COMPRESSION_LEVEL = 1

KIND_ORDER = {"history": 0, "segment": 1, "partial": 2}


class WalArchiveError(RuntimeError):
    """The local WAL cannot be shipped safely (it contradicts what the archive already holds)."""


class ShippingFailed(WalArchiveError):
    """Shipping kept failing (S3 unreachable, say); ``alerted``: an alert about it was delivered."""

    def __init__(self, message: str, alerted: bool = False) -> None:
        super().__init__(message)
        self.alerted = alerted


# ---------------------------------------------------------------- names (pure; the vocabulary is pgdr.wal.names)

def segment_for_lsn(lsn: str | int, timeline: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> str:
    """:func:`pgdr.wal.names.segment_for_lsn`, with the default size for callers of the old signature
    (bench/pitr_bench.py); pass the cluster's size."""
    return names.segment_for_lsn(lsn, timeline, segment_size)


_SYSTEM_IDENTIFIER = re.compile(r"^[0-9]{1,20}$")


def wal_prefix(prefix: str, database: str, system_identifier: str | int | None = None) -> str:
    """``<prefix>/<database>/wal/<system_identifier>``: WAL of one database cluster.

    Keyed by the cluster's system identifier (``pg_control_system().system_identifier``, decimal) so
    that a cluster rebuilt after a site loss, which restarts the same segment names, never
    overwrites or mixes with the WAL of the lost one. ``None`` is the legacy layout directly under
    ``<prefix>/<database>/wal`` (WAL shipped before the keyed layout; read only, never written).
    """
    if system_identifier is None:
        return f"{prefix}/{database}/wal"
    text = str(system_identifier)
    if not _SYSTEM_IDENTIFIER.match(text) or int(text) > 0xFFFFFFFFFFFFFFFF:
        raise ValueError(f"not a database system identifier (a decimal 64-bit number): {system_identifier!r}")
    return f"{prefix}/{database}/wal/{text}"


def wal_key(prefix: str, database: str, name: str, system_identifier: str | int | None = None) -> str:
    """``<prefix>/<database>/wal/<system_identifier>/<name>.zst`` for a segment, ``<segment>.partial``
    or ``<tli>.history`` (without the identifier part for the legacy layout, see :func:`wal_prefix`)."""
    if classify(name) is None:
        raise ValueError(f"not a WAL file name: {name!r}")
    return f"{wal_prefix(prefix, database, system_identifier)}/{name}.zst"


@dataclass(frozen=True)
class LocalWal:
    name: str
    kind: str        # segment | partial | history
    path: Path
    size: int
    mtime_ns: int

    @property
    def sort_key(self) -> tuple:
        # histories first (a restore needs them to follow a timeline), then segments in WAL order
        return (KIND_ORDER[self.kind], self.name[8:] if self.kind != "history" else "", self.name)


def scan(directory: Path, aside: bool = True) -> list[LocalWal]:
    """The WAL files in the receiver's directory, histories first, then segments and partials in order.

    With ``aside``, also the files in ``before-gap-*`` sub-directories: WAL received before a lost
    slot was recreated, moved there so pg_receivewal starts after the gap (it starts from the newest
    file it sees), still to be shipped and pruned like the rest.
    """
    found = []
    directories = [Path(directory)]
    if aside:
        with os.scandir(directory) as entries:
            directories += sorted(Path(e.path) for e in entries
                                  if e.name.startswith(ASIDE_PREFIX) and e.is_dir(follow_symlinks=False))
    for folder in directories:
        with os.scandir(folder) as entries:
            for entry in entries:
                kind = classify(entry.name)
                if kind is None or not entry.is_file(follow_symlinks=False):
                    continue
                try:
                    stat = entry.stat(follow_symlinks=False)
                except FileNotFoundError:   # renamed by pg_receivewal while we looked
                    continue
                found.append(LocalWal(entry.name, kind, Path(entry.path), stat.st_size, stat.st_mtime_ns))
    return sorted(found, key=lambda item: item.sort_key)


def new_state(database: str | None = None) -> dict:
    return {"version": STATE_VERSION, "database": database, "system_identifier": None,
            "segments": {}, "history": {}, "partials": {}, "synced_at": None, "gaps_recorded": []}


def needs_shipping(item: LocalWal, state: dict) -> bool:
    """Pure: whether ``item`` differs from what ``state`` says was shipped."""
    if item.kind == "segment":
        return item.name not in state["segments"]
    if item.kind == "history":
        return item.name not in state["history"]
    shipped = state["partials"].get(item.name)
    if segment_of_partial(item.name) in state["segments"]:
        return False  # a stale leftover: the completed segment is stored
    return shipped is None or (shipped.get("size"), shipped.get("mtime_ns")) != (item.size, item.mtime_ns)


def pending(files: list[LocalWal], state: dict) -> list[LocalWal]:
    """Which local files need shipping according to ``state`` (in shipping order)."""
    return [item for item in files if needs_shipping(item, state)]


def unshipped_age(files: list[LocalWal], state: dict, now: float) -> float:
    """Upper bound on the age (s) of the oldest WAL byte not yet shipped; 0 when everything is.

    Everything written before the last complete ship began (``synced_at``) is shipped, so
    unshipped bytes are at most ``now - synced_at`` old; before any complete ship, the oldest
    pending file's modification time stands in.
    """
    todo = pending(files, state)
    if not todo:
        return 0.0
    if state.get("synced_at"):
        return max(0.0, now - float(state["synced_at"]))
    return max(0.0, now - min(item.mtime_ns for item in todo) / 1e9)


# ---------------------------------------------------------------- state file

def load_state(directory: Path, database: str | None = None) -> dict:
    """What was shipped from ``directory`` (a fresh state when there is no state file)."""
    path = Path(directory) / STATE_NAME
    try:
        state = json.loads(path.read_text())
    except FileNotFoundError:
        return new_state(database)
    except (OSError, json.JSONDecodeError) as err:
        raise WalArchiveError(f"{path}: unreadable ship state ({err}); move it aside to re-check every "
                              f"file against S3") from None
    if state.get("version") != STATE_VERSION:
        raise WalArchiveError(f"{path}: ship state version {state.get('version')!r}, expected {STATE_VERSION}")
    if database and state.get("database") not in (None, database):
        raise WalArchiveError(f"{path}: ship state belongs to {state.get('database')!r}, not {database!r}; "
                              f"each protected database needs its own receiver directory")
    for name, empty in new_state(database).items():
        state.setdefault(name, empty)
    return state


def save_state(directory: Path, state: dict) -> None:
    """Atomic: written to a temporary file in the same directory, fsynced, then renamed."""
    path = Path(directory) / STATE_NAME
    fd, temp = tempfile.mkstemp(prefix=STATE_NAME + ".", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, "w") as handle:
            json.dump(state, handle, indent=1, sort_keys=True)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temp, path)
    except BaseException:
        try:
            os.unlink(temp)
        except FileNotFoundError:
            pass
        raise


def read_receiver_status(directory: Path) -> dict | None:
    """The receiver's status file (see :mod:`pgdr.wal.receiver`), or None when absent/unreadable."""
    try:
        return json.loads((Path(directory) / STATUS_NAME).read_text())
    except (OSError, json.JSONDecodeError):
        return None


def receiver_health(directory: Path, now: float | None = None, stale_seconds: float = 60.0) -> tuple[bool, str]:
    """(healthy, description) from the receiver's status file and heartbeat."""
    status = read_receiver_status(directory)
    if status is None:
        return False, f"no receiver status file {STATUS_NAME} (is the WAL receiver running?)"
    now = time.time() if now is None else now
    age = now - float(status.get("heartbeat_at") or 0)
    text = (f"receiver {status.get('state')} (pid {status.get('pid')}, restarts {status.get('restarts')}, "
            f"heartbeat {age:.0f} s ago)")
    if status.get("state") != "running":
        last = status.get("last_error") or ""
        return False, text + (f"; last error: {last.splitlines()[-1]}" if last else "")
    if age > stale_seconds:
        return False, text + "; status is stale, the supervisor is not running"
    return True, text


# ---------------------------------------------------------------- WAL page header

_LONG_HEADER = struct.Struct("<HHIQI4xQII")  # magic, info, tli, pageaddr, rem_len, pad, sysid, seg_size, blcksz
_XLP_LONG_HEADER = 0x0002


@dataclass(frozen=True)
class SegmentHeader:
    timeline: int
    pageaddr: int
    system_identifier: str
    segment_size: int


def read_segment_header(path: Path) -> SegmentHeader | None:
    """The long page header that starts every WAL segment, or None while it is still zeros."""
    with open(path, "rb") as handle:
        raw = handle.read(_LONG_HEADER.size)
    if len(raw) < _LONG_HEADER.size:
        return None
    magic, info, tli, pageaddr, _, sysid, seg_size, _ = _LONG_HEADER.unpack(raw)
    if magic == 0 or not info & _XLP_LONG_HEADER:
        return None
    return SegmentHeader(tli, pageaddr, str(sysid), seg_size)


def _check_header(item: LocalWal, header: SegmentHeader | None, state: dict) -> dict[str, str]:
    """Metadata from the segment's header, after checking it belongs here; raises on a stranger."""
    if header is None:
        return {}
    segment = item.name if item.kind == "segment" else segment_of_partial(item.name)
    timeline, _, _ = parse_segment(segment)
    expected = segment_start_lsn(segment, header.segment_size) if header.segment_size else None
    # the first segment of a new timeline starts as a copy of its parent's, page headers included
    if header.timeline > timeline or header.pageaddr != expected:
        raise WalArchiveError(f"{item.path}: header says timeline {header.timeline} at "
                              f"{format_lsn(header.pageaddr)}, which does not match the file name")
    known = state.get("system_identifier")
    if known and known != header.system_identifier:
        raise WalArchiveError(
            f"{item.path} comes from database system {header.system_identifier}, but this directory has "
            f"shipped WAL of system {known}; a receiver directory serves one cluster (clear it and the "
            f"{STATE_NAME} file after checking, or point the receiver elsewhere)")
    state["system_identifier"] = header.system_identifier
    return {"system-identifier": header.system_identifier, "timeline": str(timeline),
            "start-lsn": format_lsn(header.pageaddr),
            "end-lsn": format_lsn(header.pageaddr + header.segment_size) if item.kind == "segment" else ""}


# ---------------------------------------------------------------- shipping

def _now_iso() -> str:
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def _snapshot(source: Path, target: Path, chunk: int = 4 << 20) -> tuple[str, int]:
    """Copy a file that may be growing and hash exactly the bytes copied."""
    digest = hashlib.sha256()
    size = 0
    with open(source, "rb") as reader, open(target, "wb") as writer:
        while block := reader.read(chunk):
            digest.update(block)
            size += len(block)
            writer.write(block)
    return digest.hexdigest(), size


def _remote_raw_sha256(store, key: str) -> str | None:
    """The raw-sha256 metadata of a stored object, or None when there is no such object."""
    from botocore.exceptions import ClientError

    try:
        head = store.client.head_object(Bucket=store.bucket, Key=key)
    except ClientError as err:
        if err.response.get("Error", {}).get("Code") in ("404", "NoSuchKey", "NotFound"):
            return None
        raise
    return head.get("Metadata", {}).get("raw-sha256", "")


def _upload(store, item: LocalWal, source: Path, raw_sha256: str, raw_size: int, key: str, level: int,
            work: Path, metadata: dict[str, str], log: logging.Logger) -> dict:
    from pgdr.core.compression import compress_file
    from pgdr.core.progress import Progress

    compressed = compress_file(source, work / (item.name + ".zst"), level, store.part_size)
    if compressed.raw_size != raw_size:
        raise WalArchiveError(f"{item.path}: {compressed.raw_size} bytes compressed, {raw_size} hashed")
    meta = {"raw-sha256": raw_sha256, "raw-size": str(raw_size), "wal-name": item.name, "wal-kind": item.kind,
            "compression": "zstd", **{k: v for k, v in metadata.items() if v}}
    store.upload_file(compressed.path, key, compressed.digest, meta, Progress(f"upload {key}", log))
    check = store.check_object(key, compressed.digest.size, compressed.digest.sha256,
                               compressed.digest.s3_checksum(store.is_multipart(compressed.digest.size)))
    if not check.ok:
        raise WalArchiveError(f"{key}: stored object differs from what was sent: {'; '.join(check.problems)}")
    compressed.path.unlink()
    return {"raw_sha256": raw_sha256, "raw_size": raw_size, "stored_sha256": compressed.digest.sha256,
            "stored_size": compressed.digest.size, "key": key, "shipped_at": _now_iso()}


def _delete_key(store, key: str) -> None:
    store.client.delete_object(Bucket=store.bucket, Key=key)


def _ship_item(store, database: str, item: LocalWal, state: dict, work: Path, level: int,
               log: logging.Logger) -> tuple[dict, bool]:
    """Ship one file if needed: (state record, uploaded?); not uploaded when S3 already holds
    exactly these bytes, or a partial's content has not changed since its last ship.

    Raises FileNotFoundError when pg_receivewal renamed the file away meanwhile.
    """
    from pgdr.core.checksums import file_digest

    header_meta = {} if item.kind == "history" else _check_header(item, read_segment_header(item.path), state)
    if not state.get("system_identifier"):
        raise _NotYet(item.name)
    key = wal_key(store.prefix, database, item.name, state["system_identifier"])
    if item.kind == "partial":
        source = work / item.name
        raw_sha256, raw_size = _snapshot(item.path, source)   # the bytes hashed are the bytes shipped
        shipped = state["partials"].get(item.name)
        if shipped and shipped.get("raw_sha256") == raw_sha256:
            source.unlink()
            return {**shipped, "size": item.size, "mtime_ns": item.mtime_ns}, False
        if shipped is None and _remote_raw_sha256(store, key) == raw_sha256:   # shipped before the state was lost
            source.unlink()
            return {"raw_sha256": raw_sha256, "raw_size": raw_size, "key": key, "shipped_at": _now_iso(),
                    "size": item.size, "mtime_ns": item.mtime_ns, "found_in_s3": True}, False
    else:
        source = item.path   # completed segments and histories never change
        digest = file_digest(item.path, store.part_size)
        raw_sha256, raw_size = digest.sha256, digest.size
        remote = _remote_raw_sha256(store, key)
        if remote is not None:
            if remote != raw_sha256:
                raise WalArchiveError(
                    f"s3://{store.bucket}/{key} holds different content (raw sha256 {remote or 'not recorded'}) "
                    f"than {item.path} ({raw_sha256}); refusing to overwrite archived WAL: is this directory "
                    f"receiving from another cluster?")
            return {"raw_sha256": raw_sha256, "raw_size": raw_size, "key": key, "shipped_at": _now_iso(),
                    "found_in_s3": True}, False
    try:
        record = _upload(store, item, source, raw_sha256, raw_size, key, level, work, header_meta, log)
    finally:
        if item.kind == "partial":
            source.unlink(missing_ok=True)
    if item.kind == "partial":
        _drop_superseded_versions(store, key, log)
    record.update(size=item.size, mtime_ns=item.mtime_ns)
    return record, True


def _drop_superseded_versions(store, key: str, log: logging.Logger) -> int:
    """In a versioned bucket, delete the older versions of a partial object once a newer one is
    stored and checked: each version holds a prefix of the next (the segment only grows), so they
    are redundant, and a bucket's version retention would otherwise keep one per ship for a month."""
    current = store.client.head_object(Bucket=store.bucket, Key=key).get("VersionId")
    if not current or current == "null":
        return 0   # an unversioned bucket keeps one version only
    old = [v for v in store.list_versions(key) if v.key == key and v.version_id != current]
    if not old:
        return 0
    errors = store.delete_versions(old)
    if errors:   # left for the next ship (or retention); never fatal to shipping
        log.warning("could not delete %d superseded version(s) of %s: %s", len(errors), key, errors[0])
    return len(old) - len(errors)


_STATE_BUCKET = {"segment": "segments", "history": "history", "partial": "partials"}


class _NotYet(Exception):
    """The cluster's system identifier is not known yet (no segment header written): ship later."""


def discover_system_identifier(files: list[LocalWal], state: dict) -> str | None:
    """The system identifier of the WAL in the directory: from the state, else from the first
    segment (or partial) header; None while no WAL page has been written yet.

    History files carry no header, so they can be keyed only once a segment tells the identifier.
    """
    if state.get("system_identifier"):
        return state["system_identifier"]
    for item in files:
        if item.kind == "history":
            continue
        try:
            header = read_segment_header(item.path)
        except FileNotFoundError:
            continue
        if header is not None:
            _check_header(item, header, state)
            return state["system_identifier"]
    return None


def ship_once(store, database: str, directory: Path, state: dict, log: logging.Logger,
              level: int = COMPRESSION_LEVEL) -> dict:
    """Upload every new history file and completed segment, and the partial segment if it changed.

    ``state`` is updated and saved to ``<directory>/.pgdr-shipped.json`` after each object, so an
    interruption repeats at most one upload. Returns what was uploaded, deleted, and how far behind
    the archive was when the ship began (``lag_seconds``, an upper bound).
    """
    directory = Path(directory)
    started = time.time()
    clock = time.monotonic()
    fresh = state.get("synced_at") is None   # nothing known: a partial object may exist for any segment
    files = scan(directory)
    lag = unshipped_age(files, state, started)
    discover_system_identifier(files, state)
    deferred: set[str] = set()
    uploaded: list[dict] = []
    deleted: list[str] = []
    found_remote: list[str] = []
    work = Path(tempfile.mkdtemp(prefix="pgdr-wal-"))
    try:
        for _ in range(3):
            vanished = False
            for item in pending(files, state):
                try:
                    outcome = _ship_item(store, database, item, state, work, level, log)
                except FileNotFoundError:
                    vanished = True   # a partial renamed to its completed segment as we read it
                    continue
                except _NotYet:
                    deferred.add(item.name)   # no WAL page yet tells whose WAL this is
                    continue
                deferred.discard(item.name)
                record, sent = outcome
                state[_STATE_BUCKET[item.kind]][item.name] = record
                save_state(directory, state)
                if sent:
                    uploaded.append({"name": item.name, "kind": item.kind, "raw_size": record["raw_size"],
                                     "stored_size": record["stored_size"]})
                elif record.get("found_in_s3"):
                    found_remote.append(item.name)
                if item.kind == "segment" and (fresh or item.name + ".partial" in state["partials"]):
                    deleted.append(_retire_partial(store, database, item.name, state, directory))
            # partial objects of segments stored earlier (a crash between upload and delete, say)
            for name in list(state["partials"]):
                if segment_of_partial(name) in state["segments"]:
                    deleted.append(_retire_partial(store, database, segment_of_partial(name), state, directory))
            files = scan(directory)
            if not vanished or not pending(files, state):
                break
        remaining = pending(files, state)
        _forget_missing(state, files)
        # every file that had unshipped bytes when the ship began was read after that and shipped;
        # what is pending now was written since (or was renamed away three times in a row)
        if not (vanished and remaining) and not deferred:
            state["synced_at"] = started
        save_state(directory, state)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return {"uploaded": uploaded, "deleted": deleted, "found_in_s3": found_remote,
            "raw_bytes": sum(u["raw_size"] for u in uploaded), "stored_bytes": sum(u["stored_size"] for u in uploaded),
            "lag_seconds": round(lag, 3), "seconds": round(time.monotonic() - clock, 3),
            "pending": [item.name for item in remaining]}


def _retire_partial(store, database: str, segment: str, state: dict, directory: Path) -> str:
    """Delete ``<segment>.partial.zst`` now that the completed segment is stored."""
    name = segment + ".partial"
    key = wal_key(store.prefix, database, name, state["system_identifier"])
    _delete_key(store, key)
    # a versioned bucket only hid it behind a delete marker: the completed segment supersedes every version
    store.delete_all_versions([key])
    if state["partials"].pop(name, None) is not None:
        save_state(directory, state)
    return key


def _forget_missing(state: dict, files: list[LocalWal]) -> None:
    """Drop state entries of files gone from the directory (pruned locally), keeping the state small.

    A partial entry is kept while its file exists; a stale partial whose segment is stored is
    retired by :func:`_retire_partial` instead.
    """
    present = {item.name for item in files}
    for bucket in ("segments", "history"):
        for name in [n for n in state[bucket] if n not in present]:
            del state[bucket][name]


# ---------------------------------------------------------------- pruning and free space

def prunable(files: list[LocalWal], state: dict, keep_segments: int) -> list[LocalWal]:
    """Pure: completed segments that may be deleted locally: shipped and checked (recorded in
    ``state`` with their stored hash), older than the newest ``keep_segments`` completed segments.

    Never a partial (pg_receivewal resumes from it, and a restore of the newest WAL needs it), a
    history file, or anything not yet in S3. At least one completed segment is always kept.
    """
    keep_segments = max(1, int(keep_segments))
    segments = sorted((f for f in files if f.kind == "segment"), key=lambda f: (f.name[8:], f.name))
    keep = {f.name for f in segments[-keep_segments:]}
    return [f for f in segments if f.name not in keep and (state["segments"].get(f.name) or {}).get("raw_sha256")]


def prune_shipped(directory: Path, state: dict, keep_segments: int, log: logging.Logger) -> list[str]:
    """Delete the :func:`prunable` segments (and emptied ``before-gap-*`` folders); returns names."""
    removed = []
    for item in prunable(scan(directory), state, keep_segments):
        try:
            item.path.unlink()
        except FileNotFoundError:
            pass
        except OSError as err:   # e.g. the worker may not delete the receiver's files: say so, go on
            log.warning("cannot prune %s: %s", item.path, err)
            continue
        removed.append(item.name)
        state["segments"].pop(item.name, None)
    if removed:
        save_state(directory, state)
    for folder in Path(directory).glob(ASIDE_PREFIX + "*"):
        if folder.is_dir() and not any(folder.iterdir()):
            folder.rmdir()
    if removed:
        log.info("pruned %d shipped segment(s) locally (%s .. %s), keeping the newest %d", len(removed),
                 removed[0], removed[-1], keep_segments)
    return removed


# ---------------------------------------------------------------- alerts: once per problem

class AlertWatch:
    """De-duplicated alerts about one receiver directory: a post when a problem starts (after
    ``grace_seconds``) or changes, a reminder every ``reminder_hours`` while it lasts, one when it
    clears (:func:`pgdr.alerts.policy.decide`). The state is kept in ``<directory>/.pgdr-alerts.json``,
    locally, because one of the problems watched is S3 itself being unreachable.

    ``notify(payload) -> bool`` posts (pgdr.alerts.slack.send_alert); a post that was not delivered is
    tried again at the next pass.
    """

    def __init__(self, directory: Path, database: str, notify, reminder_hours: float, log: logging.Logger) -> None:
        self.path = Path(directory) / ALERTS_NAME
        self.database = database
        self.notify = notify
        self.reminder_hours = reminder_hours
        self.log = log
        try:
            self.state = json.loads(self.path.read_text())
        except (OSError, json.JSONDecodeError):
            self.state = {}
        self.state.setdefault("checks", {})
        self.state.setdefault("pending", {})
        self.posted: list[str] = []

    def active(self, check: str) -> bool:
        """Whether an alert about ``check`` has been posted and not yet cleared."""
        return f"{check}:*" in self.state["checks"]

    def update(self, check: str, problem: dict | None, now: float, grace_seconds: float = 0.0) -> None:
        """``problem`` None: ``check`` is fine now. Else a dict with ``fingerprint`` (what makes it
        the same problem), ``title``, ``facts``, ``details``, ``next_step``, ``severity``."""
        from pgdr.alerts.policy import decide

        key = f"{check}:*"
        if problem is not None and key not in self.state["checks"]:
            since = self.state["pending"].setdefault(check, now)
            if now - since < grace_seconds:
                self._save()
                return
        elif problem is None:
            self.state["pending"].pop(check, None)
        result = {"check": check, "kind": None, "status": "failed" if problem else "ok",
                  "fingerprint": (problem or {}).get("fingerprint", ""), "problem": problem}
        previous = {"checks": {key: self.state["checks"][key]} if key in self.state["checks"] else {}}
        posts, decided = decide(previous, [result], datetime.fromtimestamp(now, timezone.utc),
                                self.reminder_hours, digest=False)
        delivered = True
        for reason, _ in posts:
            payload = self._payload(check, reason, problem, previous["checks"].get(key))
            delivered = bool(self.notify(payload)) if self.notify else False
            if delivered:
                self.posted.append(f"{reason}: {payload['text']}")
        if not delivered:
            return   # nothing recorded: tried again at the next pass
        if key in decided["checks"]:
            self.state["checks"][key] = decided["checks"][key]
        else:
            self.state["checks"].pop(key, None)
        if problem is None:
            self.state["pending"].pop(check, None)
        self._save()

    def _payload(self, check: str, reason: str, problem: dict | None, seen: dict | None) -> dict:
        from pgdr.alerts.slack import build_alert

        if reason == "resolved":
            since = (seen or {}).get("since", "")
            return build_alert(severity="info", title=f"Resolved: {RESOLVED_TITLES.get(check, check)} "
                                                      f"({self.database})",
                               facts=[("database", self.database), ("problem since", since)])
        prefix = {"reminder": "Still: ", "changed": ""}.get(reason, "")
        return build_alert(severity=problem.get("severity", "critical"), title=prefix + problem["title"],
                           facts=[("database", self.database), *problem.get("facts", [])],
                           details=problem.get("details"), next_step=problem.get("next_step"))

    def _save(self) -> None:
        try:
            temp = self.path.with_name(self.path.name + ".tmp")
            temp.write_text(json.dumps(self.state, indent=1, sort_keys=True, default=str))
            os.replace(temp, self.path)
        except OSError as err:
            self.log.warning("cannot save %s: %s", self.path, err)


RESOLVED_TITLES = {"s3": "WAL shipping to S3", "receiver": "WAL receiver as the primary sees it",
                   "disk": "free space for received WAL"}


def receiver_problem(findings: list[dict], slot: str) -> dict | None:
    """An alert from the primary's view of the receiver (:func:`pgdr.verify.wal.server_findings`)."""
    wanted = [f for f in findings if f.get("problem") != "the server's archiver is failing"]
    if not wanted:
        return None
    names = sorted({f["problem"] for f in wanted})
    lost = any("lost" in name for name in names)
    return {"fingerprint": "|".join(names), "severity": "critical",
            "title": f"WAL receiver problem seen from the primary: {', '.join(names)}",
            "facts": [("slot / application_name", slot)],
            "details": "\n".join(json.dumps(f, sort_keys=True, default=str) for f in wanted),
            "next_step": ("the receiver recreates a lost slot itself and records the gap; take a new base backup "
                          "(pg_backup_daily) so point-in-time recovery reaches past it" if lost else
                          "new commits are not being received off the primary (RPO = 0 and the one-minute site-loss "
                          "RPO do not hold; synchronous commits may be waiting): check the receiver's host, "
                          "`receiver.status.json` and `python -m pgdr.wal_receiver --check`")}


# ---------------------------------------------------------------- gaps the receiver recorded

def gaps_key(prefix: str, database: str) -> str:
    return f"{prefix}/state/wal-gaps/{database}.json"


def read_gaps(directory: Path) -> list[dict]:
    try:
        return list(json.loads((Path(directory) / GAPS_NAME).read_text()).get("gaps", []))
    except (OSError, json.JSONDecodeError, AttributeError):
        return []


def gap_alert(database: str, gap: dict) -> dict:
    from pgdr.alerts.slack import build_alert

    return build_alert(
        severity="critical", title=f"WAL gap in the archive of {database}: the replication slot was lost",
        facts=[("database", database), ("missing WAL", f"{gap.get('from_lsn')} .. {gap.get('to_lsn')}"),
               ("segments", f"{gap.get('first_segment')} .. {gap.get('last_segment')} "
                            f"({gap.get('segments')})"),
               ("detected", gap.get("detected_at")), ("reason", gap.get("reason"))],
        details=(f"WAL received before the gap was moved to {gap.get('moved_to')} in the receiver directory "
                 f"and is shipped from there" + (f"; {len(gap['unshipped'])} file(s) of it were not yet shipped"
                                                 if gap.get("unshipped") else "")),
        next_step="point-in-time recovery cannot cross this gap: take a new base backup now "
                  "(trigger pg_backup_daily) so recovery to any time after it is possible again")


def record_gaps(store, database: str, directory: Path, state: dict, notify, log: logging.Logger) -> list[dict]:
    """Copy gaps the receiver recorded into S3 state (``<prefix>/state/wal-gaps/<database>.json``),
    read by point-in-time recovery, and alert once per gap. Returns the newly recorded gaps."""
    new = [g for g in read_gaps(directory) if g.get("id") not in state["gaps_recorded"]]
    if not new:
        return []
    key = gaps_key(store.prefix, database)
    document = store.read_json_or_none(key) or {"database": database, "gaps": []}
    known = {g.get("id") for g in document["gaps"]}
    document["gaps"] += [g for g in new if g.get("id") not in known]
    store.put_json(key, document)
    for gap in new:
        log.error("WAL gap recorded for %s: %s .. %s (%s segments); a new base backup is needed for "
                  "point-in-time recovery past it", database, gap.get("from_lsn"), gap.get("to_lsn"),
                  gap.get("segments"))
        if notify is None or notify(gap_alert(database, gap)):
            state["gaps_recorded"].append(gap.get("id"))
    save_state(directory, state)
    return new


def failure_kind(err: BaseException) -> str:
    """What kind of S3 failure: the same kind is the same problem (one alert), whichever of the
    many connection errors a dead endpoint produces on a given attempt."""
    from botocore.exceptions import ClientError, HTTPClientError
    from botocore.exceptions import ConnectionError as BotoConnectionError

    if isinstance(err, ClientError):
        return f"S3 refused: {err.response.get('Error', {}).get('Code', 'error')}"
    if isinstance(err, (BotoConnectionError, HTTPClientError, ConnectionError, TimeoutError)):
        return "S3 endpoint unreachable"
    return type(err).__name__


def ship_window(store, database: str, directory: Path, seconds: float, interval: float, log: logging.Logger,
                stop_event: threading.Event | None = None, level: int = COMPRESSION_LEVEL,
                max_failure_seconds: float = 60.0, *, notify=None, probe=None, slot: str = "pgdr_receiver",
                keep_segments: int | None = None, min_free_bytes: int = 0, alert_after_seconds: float = 30.0,
                reminder_hours: float = 24.0) -> dict:
    """Ship every ``interval`` seconds for ``seconds``, then once more; returns a summary.

    Each pass also: records gaps the receiver reported (S3 state and an alert), deletes shipped
    segments beyond the newest ``keep_segments`` (None: no pruning), checks free space against
    ``min_free_bytes``, and asks the primary how it sees the receiver (``probe()`` returns
    :func:`pgdr.verify.wal.server_findings`), alerting through ``notify`` once per problem
    (:class:`AlertWatch`) when it has lasted ``alert_after_seconds``.

    A ship that fails (S3 unreachable, say) is retried at the next tick. Without ``notify``,
    failures lasting longer than ``max_failure_seconds`` (the site-loss RPO) raise; with it they
    alert once and shipping goes on trying until the window ends. The final ship failing raises.
    A :class:`WalArchiveError` (local WAL contradicting the archive) raises at once.
    """
    from pgdr.core.progress import human_bytes

    directory = Path(directory)
    if not directory.is_dir():
        raise WalArchiveError(f"WAL receiver directory {directory} does not exist; start the receiver "
                              f"(python -m pgdr.wal_receiver --directory {directory} ...) first")
    state = load_state(directory, database)
    watch = AlertWatch(directory, database, notify, reminder_hours, log)
    stop_event = stop_event or threading.Event()
    deadline = time.monotonic() + seconds
    summary = {"database": database, "ships": 0, "failed_ships": 0, "uploaded": 0, "raw_bytes": 0,
               "stored_bytes": 0, "deleted": 0, "max_lag_seconds": 0.0, "max_ship_seconds": 0.0,
               "receiver_healthy_checks": 0, "receiver": "", "pruned": 0, "free_bytes": None, "gaps": 0,
               "primary_view": None, "alerts": watch.posted}
    first_failure: float | None = None

    def one(final: bool) -> None:
        nonlocal first_failure
        tick = time.monotonic()
        try:
            result = ship_once(store, database, directory, state, log, level=level)
            summary["gaps"] += len(record_gaps(store, database, directory, state, notify, log))
        except WalArchiveError:
            raise
        except Exception as err:  # noqa: BLE001 - retried at the next tick, bounded below
            from pgdr.core.redaction import safe_error

            summary["failed_ships"] += 1
            first_failure = first_failure if first_failure is not None else tick
            failing = time.monotonic() - first_failure
            message = f"shipping WAL of {database} has failed for {failing:.0f} s: {safe_error(err)}"
            if notify is not None:
                from pgdr.alerts.slack import short_error

                kind = failure_kind(err)
                watch.update("s3", {"fingerprint": kind, "severity": "critical",
                                    "title": f"WAL of {database} cannot be shipped to S3",
                                    "facts": [("failing for", f"{failing:.0f} s"), ("problem", kind)],
                                    "details": short_error(err),
                                    "next_step": "check the S3 endpoint and credentials; received WAL stays in the "
                                                 "receiver directory and is shipped when S3 is back (nothing "
                                                 "is pruned meanwhile)"},
                             time.time(), grace_seconds=max_failure_seconds)
            if final or (notify is None and failing > max_failure_seconds):
                raise ShippingFailed(message, alerted=watch.active("s3")) from err
            log.warning("ship failed (%s); retrying in %.1f s", safe_error(err), interval)
            return
        if first_failure is not None or watch.active("s3"):
            watch.update("s3", None, time.time())
        first_failure = None
        if keep_segments is not None:
            summary["pruned"] += len(prune_shipped(directory, state, keep_segments, log))
        summary["free_bytes"] = shutil.disk_usage(directory).free
        if notify is not None and min_free_bytes:
            low = summary["free_bytes"] < min_free_bytes
            watch.update("disk", {"fingerprint": "low", "severity": "warning",
                                  "title": f"Little free space for received WAL of {database}",
                                  "facts": [("free", human_bytes(summary["free_bytes"])),
                                            ("threshold", human_bytes(min_free_bytes))],
                                  "next_step": "grow the receiver's volume, or lower "
                                               "pgdr_wal_receiver_keep_segments; a full disk stops the receiver "
                                               "and then commits wait"} if low else None, time.time())
        healthy, receiver = receiver_health(directory)
        if probe is not None:
            try:
                findings = probe()
            except Exception as err:  # noqa: BLE001 - the primary may be the thing that is down
                from pgdr.alerts.slack import short_error

                findings = [{"problem": "primary not reachable from the shipper", "error": short_error(err)}]
            summary["primary_view"] = [f["problem"] for f in findings]
            problem = receiver_problem(findings, slot)
            if problem is not None:
                healthy = False
                receiver += f"; the primary sees: {', '.join(summary['primary_view'])}"
            if notify is not None:
                watch.update("receiver", problem, time.time(), grace_seconds=alert_after_seconds)
        summary["receiver_healthy_checks"] += int(healthy)
        summary["receiver"] = receiver
        summary["ships"] += 1
        summary["uploaded"] += len(result["uploaded"])
        summary["deleted"] += len(result["deleted"])
        summary["raw_bytes"] += result["raw_bytes"]
        summary["stored_bytes"] += result["stored_bytes"]
        summary["max_lag_seconds"] = max(summary["max_lag_seconds"], result["lag_seconds"])
        summary["max_ship_seconds"] = max(summary["max_ship_seconds"], result["seconds"])
        names = ", ".join(f"{u['name']}" for u in result["uploaded"]) or "nothing new"
        log.info("%sshipped %s (%s -> %s) in %.2f s; lag before ship %.1f s%s; %s",
                 "final ship: " if final else "", names, human_bytes(result["raw_bytes"]),
                 human_bytes(result["stored_bytes"]), result["seconds"], result["lag_seconds"],
                 f"; removed {len(result['deleted'])} stale partial object(s)" if result["deleted"] else "",
                 receiver)
        if not healthy:
            log.warning("WAL receiver not healthy: %s", receiver)

    while not stop_event.is_set() and time.monotonic() < deadline:
        tick = time.monotonic()
        one(final=False)
        pause = min(interval - (time.monotonic() - tick), deadline - time.monotonic())
        if pause > 0 and stop_event.wait(pause):
            break
    one(final=True)
    summary["alerting"] = sorted(key.split(":")[0] for key in watch.state["checks"])
    return summary


# the WAL names are re-exported from pgdr.wal.names for the modules and tests that import them from here
__all__ = ["ALERTS_NAME", "ASIDE_PREFIX", "COMPRESSION_LEVEL", "GAPS_NAME", "KIND_ORDER", "RESOLVED_TITLES",
           "STATE_NAME", "STATE_VERSION", "STATUS_NAME", "WAL_SEGMENT_SIZE", "AlertWatch", "LocalWal",
           "SegmentHeader", "ShippingFailed", "WalArchiveError", "classify", "discover_system_identifier",
           "failure_kind", "format_lsn", "gap_alert", "gaps_key", "load_state", "needs_shipping", "new_state",
           "next_segment", "parse_lsn", "parse_segment", "pending", "prunable", "prune_shipped", "read_gaps",
           "read_receiver_status", "read_segment_header", "receiver_health", "receiver_problem", "record_gaps",
           "save_state", "scan", "segment_for_lsn", "segment_name", "segment_number", "segment_of_partial",
           "segment_start_lsn", "segments_per_log", "ship_once", "ship_window", "unshipped_age", "wal_key",
           "wal_prefix"]
