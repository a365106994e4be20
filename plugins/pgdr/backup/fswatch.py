"""Which files in a directory a tool has created, and which it has finished writing.

On Linux this is inotify (IN_CREATE, IN_CLOSE_WRITE), read through ctypes so no
extra package is needed. Elsewhere the directory is polled and a file counts as
finished only when the tool has exited.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import queue
import select
import struct
import threading
from collections import defaultdict
from pathlib import Path

IN_CLOSE_WRITE = 0x00000008
IN_CREATE = 0x00000100
IN_NONBLOCK = 0o4000
IN_CLOEXEC = 0o2000000
_EVENT = struct.Struct("iIII")


def _inotify():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        return libc if hasattr(libc, "inotify_init1") else None
    except OSError:
        return None


class DirectoryWatch:
    """Reports new files (``created`` queue) and finished ones (:meth:`is_finished`)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.created: queue.Queue[str] = queue.Queue()
        self._finished: dict[str, threading.Event] = defaultdict(threading.Event)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self.writer_exited = threading.Event()
        self._seen: set[str] = set()
        self._fd = -1
        libc = _inotify()
        if libc is not None:
            fd = libc.inotify_init1(IN_NONBLOCK | IN_CLOEXEC)
            if fd >= 0 and libc.inotify_add_watch(fd, str(directory).encode(), IN_CREATE | IN_CLOSE_WRITE) >= 0:
                self._fd = fd
            elif fd >= 0:
                os.close(fd)
        self.uses_inotify = self._fd >= 0
        self._thread = threading.Thread(target=self._read_events if self.uses_inotify else self._poll, daemon=True)
        self._thread.start()

    def _event(self, name: str) -> threading.Event:
        with self._lock:
            return self._finished[name]

    def _announce(self, name: str) -> None:
        if name not in self._seen:
            self._seen.add(name)
            self.created.put(name)

    def _read_events(self) -> None:
        while not self._stop.is_set():
            ready, _, _ = select.select([self._fd], [], [], 0.1)
            if not ready:
                continue
            try:
                data = os.read(self._fd, 65536)
            except BlockingIOError:
                continue
            offset = 0
            while offset < len(data):
                _, mask, _, length = _EVENT.unpack_from(data, offset)
                name = data[offset + _EVENT.size: offset + _EVENT.size + length].rstrip(b"\0").decode()
                offset += _EVENT.size + length
                if mask & IN_CREATE:
                    self._announce(name)
                if mask & IN_CLOSE_WRITE:
                    self._announce(name)
                    self._event(name).set()

    def _poll(self) -> None:
        while not self._stop.wait(0.1):
            for entry in sorted(os.listdir(self.directory)):
                self._announce(entry)

    def is_finished(self, name: str) -> bool:
        return self.writer_exited.is_set() or self._event(name).is_set()

    def close(self) -> None:
        self._stop.set()
        self._thread.join()
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1
