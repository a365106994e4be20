"""Fetching a backup from S3 for a restore, overlapped with the restore itself.

PostgreSQL 15's pg_restore cannot read zstd, and waiting for every object to be
downloaded and unpacked before pg_restore starts adds the whole download to the
recovery time. So each table's data file is a named pipe (FIFO) in the restore
directory: objects download in parallel, in the order pg_restore reads them, each hashed on the way
and checked against the manifest; when pg_restore opens a table's file, and that
object is complete and its sha256 matches, it is decompressed straight into the
pipe. Data whose hash does not match never reaches the database; the restore is
stopped and the failure names the object.

Everything else (``toc.dat``, the globals) is fetched whole and checked before
anything starts.
"""

from __future__ import annotations

import errno
import logging
import os
import threading
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

from pgdr.backup.download import download_object
from pgdr.core.compression import SUFFIX, decompress_to
from pgdr.core.progress import Progress
from pgdr.store.layout import object_key
from pgdr.store.manifest import ObjectEntry

__all__ = ["PipedDataFiles", "fetch_whole", "plain_name"]


def _dump_id(obj: ObjectEntry) -> tuple[int, str]:
    stem = obj.name.split("/")[-1].split(".")[0]
    return (int(stem), obj.name) if stem.isdigit() else (1 << 62, obj.name)


def plain_name(obj: ObjectEntry) -> str:
    """The file name pg_restore expects for a stored object (``3456.dat`` for ``dump/3456.dat.zst``)."""
    name = obj.name.split("/")[-1]
    return name[: -len(SUFFIX)] if obj.compression == "zstd" else name


def fetch_whole(store, prefix: str, objects: list[ObjectEntry], directory: Path,
                log: logging.Logger) -> dict[str, Path]:
    """Download small objects (toc, globals), check them, unpack zstd; returns name -> local path."""
    paths = {}
    for obj in objects:
        key = object_key(prefix, obj.name)
        target = directory / obj.name
        target.parent.mkdir(parents=True, exist_ok=True)
        download_object(store, key, obj, target)
        if obj.compression == "zstd":
            unpacked = target.with_name(plain_name(obj))
            with open(unpacked, "wb") as handle:
                decompress_to(target, handle)
            target.unlink()
            target = unpacked
        paths[obj.name] = target
    log.info("fetched and checked %d object(s): %s", len(objects), ", ".join(o.name for o in objects))
    return paths


class PipedDataFiles:
    """Table data files served to pg_restore through FIFOs while they download.

    ``start()`` creates the FIFOs and begins the downloads; ``poll()`` (called from
    the loop that waits on pg_restore) hands each FIFO a reader thread once
    pg_restore has opened it. ``failure`` holds the first error; the caller stops
    pg_restore when it is set.
    """

    def __init__(self, *, store, prefix: str, objects: list[ObjectEntry], dump_dir: Path, download_dir: Path,
                 workers: int, log: logging.Logger) -> None:
        self.store = store
        self.prefix = prefix
        # pg_restore 15 reads a FIFO's size as 0, so its jobs take the data in dump-id order:
        # download in that order, so the file it opens next is the one arriving first
        self.objects = sorted(objects, key=_dump_id)
        self.dump_dir = dump_dir
        self.download_dir = download_dir
        self.log = log
        self.progress = Progress(f"download from s3://{store.bucket}", log, total=sum(o.size for o in objects))
        self._downloads: dict[str, Future] = {}
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pgdr-fetch")
        self._feeders = ThreadPoolExecutor(max_workers=max(workers, 4), thread_name_prefix="pgdr-feed")
        self._waiting: dict[str, ObjectEntry] = {}
        self._feeding: list[Future] = []
        self._lock = threading.Lock()
        self.failure: BaseException | None = None
        self.fed_bytes = 0
        self.download_seconds: float | None = None

    def start(self) -> None:
        self.download_dir.mkdir(parents=True, exist_ok=True)
        for obj in self.objects:
            os.mkfifo(self.dump_dir / plain_name(obj), 0o600)
            self._waiting[plain_name(obj)] = obj
        for obj in self.objects:
            self._downloads[obj.name] = self._pool.submit(self._download, obj)

    def _download(self, obj: ObjectEntry) -> Path:
        target = self.download_dir / obj.name.replace("/", "_")
        try:
            download_object(self.store, object_key(self.prefix, obj.name), obj, target, self.progress)
        except BaseException as err:
            self._fail(err)
            raise
        with self._lock:
            if self.download_seconds is None and all(f.done() for name, f in self._downloads.items()
                                                     if name != obj.name):
                self.download_seconds = round(self.progress.elapsed, 3)
                self.progress.finish()
        return target

    def _fail(self, err: BaseException) -> None:
        with self._lock:
            if self.failure is None:
                self.failure = err

    def poll(self) -> None:
        """Give every FIFO that pg_restore has opened to a feeder."""
        for name, obj in list(self._waiting.items()):
            try:
                fd = os.open(self.dump_dir / name, os.O_WRONLY | os.O_NONBLOCK)
            except OSError as err:
                if err.errno == errno.ENXIO:  # no reader yet
                    continue
                raise
            del self._waiting[name]
            os.set_blocking(fd, True)
            self._feeding.append(self._feeders.submit(self._feed, obj, fd))

    def _feed(self, obj: ObjectEntry, fd: int) -> None:
        with os.fdopen(fd, "wb") as pipe:
            try:
                local = self._downloads[obj.name].result()  # waits for the download and its hash check
                written = decompress_to(local, pipe)
                local.unlink()
                with self._lock:
                    self.fed_bytes += written
            except BrokenPipeError:
                return  # pg_restore stopped reading: it is being stopped or has failed
            except BaseException as err:
                self._fail(err)

    @property
    def unopened(self) -> list[str]:
        return sorted(self._waiting)

    def finish(self) -> None:
        """Wait for the feeders still writing (pg_restore has exited)."""
        for future in self._feeding:
            future.result()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self._feeders.shutdown(wait=False, cancel_futures=True)

