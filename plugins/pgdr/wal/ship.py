"""Shipping the WAL that pg_receivewal writes to S3, completed segments and the growing partial one.

The receiver (:mod:`pgdr.wal.receiver`) streams WAL from the protected server into a local
directory (:mod:`pgdr.wal.local`: what is in it, what was shipped from it). :func:`ship_once` uploads
what is new to ``<prefix>/<database>/wal/<system_identifier>/<name>.zst`` (zstd, server-side
encrypted, SHA-256 checked by S3): completed segments and histories once, the partial segment
whenever its content changed, as ``<segment>.partial.zst``, which is deleted once the completed
segment is stored. What was shipped is remembered in ``<directory>/.pgdr-shipped.json`` so a restart
uploads nothing twice; without that file a HEAD request on each key decides. :func:`ship_window`
ships every few seconds for a while, and on each pass records the receiver's gaps
(:mod:`pgdr.wal.gaps`), prunes, and watches the receiver (:mod:`pgdr.wal.status`).

This stage sends no alert itself: :func:`ship_window` takes ``notify`` and the ``messages`` to build
(:mod:`pgdr.alerts.wal`), so the layers stay in order. WAL names, LSNs and keys are
:mod:`pgdr.wal.names`; the segment size of the WAL shipped is read from each segment's header
(:mod:`pgdr.wal.segment_header`).
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from pgdr.core.checksums import copy_hashed, file_digest
from pgdr.core.compression import compress_file
from pgdr.core.progress import Progress, human_bytes
from pgdr.core.redaction import safe_error
from pgdr.store.s3 import failure_kind
from pgdr.wal import names
from pgdr.wal.gaps import record_gaps
from pgdr.wal.local import (
    LocalWal,
    WalArchiveError,
    forget_missing,
    load_state,
    now_iso,
    pending,
    prune_shipped,
    save_state,
    scan,
    unshipped_age,
)
from pgdr.wal.names import (
    DEFAULT_SEGMENT_SIZE,
    segment_of_partial,
    wal_key,
)
from pgdr.wal.segment_header import (
    check_header,
    discover_system_identifier,
    read_segment_header,
)
from pgdr.wal.status import Quiet, WalMessages, receiver_findings, receiver_health

WAL_SEGMENT_SIZE = DEFAULT_SEGMENT_SIZE   # the default; the WAL's own size is in each segment's header
COMPRESSION_LEVEL = 1


class ShippingFailed(WalArchiveError):
    """Shipping kept failing (S3 unreachable, say); ``alerted``: an alert about it was delivered."""

    def __init__(self, message: str, alerted: bool = False) -> None:
        super().__init__(message)
        self.alerted = alerted


def segment_for_lsn(lsn: str | int, timeline: int, segment_size: int = DEFAULT_SEGMENT_SIZE) -> str:
    """:func:`pgdr.wal.names.segment_for_lsn`, with the default size for callers of the old signature
    (bench/pitr_bench.py); pass the cluster's size."""
    return names.segment_for_lsn(lsn, timeline, segment_size)


# ---------------------------------------------------------------- shipping one file

def _snapshot(source: Path, target: Path) -> tuple[str, int]:
    """Copy a file that may be growing and hash exactly the bytes copied."""
    with open(source, "rb") as reader, open(target, "wb") as writer:
        copied = copy_hashed(reader, writer)
    return copied.sha256, copied.size


def _remote_raw_sha256(store, key: str) -> str | None:
    """The raw-sha256 metadata of a stored object, or None when there is no such object."""
    head = store.head(key)
    return None if head is None else head.get("Metadata", {}).get("raw-sha256", "")


def _upload(store, item: LocalWal, source: Path, raw_sha256: str, raw_size: int, key: str, level: int,
            work: Path, metadata: dict[str, str], log: logging.Logger) -> dict:
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
            "stored_size": compressed.digest.size, "key": key, "shipped_at": now_iso()}


def _ship_item(store, database: str, item: LocalWal, state: dict, work: Path, level: int,
               log: logging.Logger) -> tuple[dict, bool]:
    """Ship one file if needed: (state record, uploaded?); not uploaded when S3 already holds
    exactly these bytes, or a partial's content has not changed since its last ship.

    Raises FileNotFoundError when pg_receivewal renamed the file away meanwhile.
    """
    header_meta = {} if item.kind == "history" else check_header(item, read_segment_header(item.path), state)
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
            return {"raw_sha256": raw_sha256, "raw_size": raw_size, "key": key, "shipped_at": now_iso(),
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
            return {"raw_sha256": raw_sha256, "raw_size": raw_size, "key": key, "shipped_at": now_iso(),
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
    current = (store.head(key) or {}).get("VersionId")
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


# ---------------------------------------------------------------- one pass, and a window of passes

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
        forget_missing(state, files)
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
    store.delete_key(key)
    # a versioned bucket only hid it behind a delete marker: the completed segment supersedes every version
    store.delete_all_versions([key])
    if state["partials"].pop(name, None) is not None:
        save_state(directory, state)
    return key


def ship_window(store, database: str, directory: Path, seconds: float, interval: float, log: logging.Logger,
                stop_event: threading.Event | None = None, level: int = COMPRESSION_LEVEL,
                max_failure_seconds: float = 60.0, *, notify: Callable[[dict], bool] | None = None,
                messages: WalMessages | None = None, probe=None, slot: str = "pgdr_receiver",
                keep_segments: int | None = None, min_free_bytes: int = 0, alert_after_seconds: float = 30.0,
                reminder_hours: float = 24.0) -> dict:
    """Ship every ``interval`` seconds for ``seconds``, then once more; returns a summary.

    Each pass also: records gaps the receiver reported (S3 state and an alert), deletes shipped
    segments beyond the newest ``keep_segments`` (None: no pruning), checks free space against
    ``min_free_bytes``, and asks the primary how it sees the receiver (``probe()`` returns
    :func:`pgdr.verify.wal.server_findings`), alerting through ``notify`` once per problem
    (``messages.watch``) when it has lasted ``alert_after_seconds``. ``messages`` (:class:`WalMessages`,
    in practice :mod:`pgdr.alerts.wal`) builds what is sent; it is needed with ``notify``.

    A ship that fails (S3 unreachable, say) is retried at the next tick. Without ``notify``,
    failures lasting longer than ``max_failure_seconds`` (the site-loss RPO) raise; with it they
    alert once and shipping goes on trying until the window ends. The final ship failing raises.
    A :class:`WalArchiveError` (local WAL contradicting the archive) raises at once.
    """
    directory = Path(directory)
    if not directory.is_dir():
        raise WalArchiveError(f"WAL receiver directory {directory} does not exist; start the receiver "
                              f"(python -m pgdr.wal_receiver --directory {directory} ...) first")
    state = load_state(directory, database)
    if notify is not None and messages is None:
        raise ValueError("ship_window: notify needs the messages to send (pgdr.alerts.wal)")
    watch = Quiet() if notify is None else messages.watch(directory, database, notify, reminder_hours, log)
    alert_gap = None if notify is None else (lambda gap: bool(notify(messages.gap_alert(database, gap))))
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
            summary["gaps"] += len(record_gaps(store, database, directory, state, alert_gap, log))
        except WalArchiveError:
            raise
        except Exception as err:  # noqa: BLE001 - retried at the next tick, bounded below
            summary["failed_ships"] += 1
            first_failure = first_failure if first_failure is not None else tick
            failing = time.monotonic() - first_failure
            message = f"shipping WAL of {database} has failed for {failing:.0f} s: {safe_error(err)}"
            if notify is not None:
                watch.update("s3", messages.shipping_failed(database, failing, failure_kind(err), err), time.time(),
                             grace_seconds=max_failure_seconds)
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
            watch.update("disk", messages.low_disk(database, summary["free_bytes"], min_free_bytes) if low else None,
                         time.time())
        healthy, receiver = receiver_health(directory)
        if probe is not None:
            try:
                findings = probe()
            except Exception as err:  # noqa: BLE001 - the primary may be the thing that is down
                # redacted of row data here; the alert (messages.receiver_problem) bounds it and masks secrets
                findings = [{"problem": "primary not reachable from the shipper", "error": safe_error(err)}]
            summary["primary_view"] = [f["problem"] for f in findings]
            if receiver_findings(findings):
                healthy = False
                receiver += f"; the primary sees: {', '.join(summary['primary_view'])}"
            if notify is not None:
                watch.update("receiver", messages.receiver_problem(findings, slot), time.time(),
                             grace_seconds=alert_after_seconds)
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
    summary["alerting"] = watch.alerting()
    return summary


__all__ = ["COMPRESSION_LEVEL", "WAL_SEGMENT_SIZE", "ShippingFailed", "WalArchiveError", "WalMessages",
           "segment_for_lsn", "ship_once", "ship_window"]
