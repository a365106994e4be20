"""The receiver's directory as the shipper sees it: the WAL files in it, what was shipped from it, what
may be pruned from it.

pg_receivewal writes ``<24 hex>`` completed segments, ``<24 hex>.partial`` (the segment being written)
and ``<8 hex>.history`` timeline histories. What was shipped is remembered in
``<directory>/.pgdr-shipped.json`` (:func:`load_state`, :func:`save_state`) so a restart uploads
nothing twice; the shipping itself is :mod:`pgdr.wal.ship`.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

from pgdr.errors import PgdrError
from pgdr.wal.names import classify, segment_of_partial

STATE_NAME = ".pgdr-shipped.json"
STATE_VERSION = 1
ASIDE_PREFIX = "before-gap-"             # WAL moved out of pg_receivewal's sight when its slot was lost
KIND_ORDER = {"history": 0, "segment": 1, "partial": 2}


def now_iso() -> str:
    """The time stamps the receiver directory's records carry (UTC, to the second)."""
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


class WalArchiveError(PgdrError, RuntimeError):
    """The local WAL cannot be shipped safely (it contradicts what the archive already holds)."""


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


# ---------------------------------------------------------------- what was shipped (pure)

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


# ---------------------------------------------------------------- the state file

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


def forget_missing(state: dict, files: list[LocalWal]) -> None:
    """Drop state entries of files gone from the directory (pruned locally), keeping the state small.

    A partial entry is kept while its file exists; a stale partial whose segment is stored is
    retired by the shipper instead.
    """
    present = {item.name for item in files}
    for bucket in ("segments", "history"):
        for name in [n for n in state[bucket] if n not in present]:
            del state[bucket][name]


# ---------------------------------------------------------------- pruning

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
