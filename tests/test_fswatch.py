"""The directory follower pg_dump's output is uploaded through (pgdr.backup.fswatch.DirectoryWatch), on a
real directory: inotify on Linux, the polling fallback elsewhere.

A table's file may be uploaded only once pg_dump has closed it; a file announced twice would be
uploaded twice. End to end this is covered by the logical backups in tests/test_backup_daily.py.
"""

from __future__ import annotations

import os
import queue
import sys
import time
from pathlib import Path

import pytest

from pgdr.backup import fswatch
from pgdr.backup.fswatch import DirectoryWatch


def eventually(predicate, timeout: float = 5.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.01)
    return predicate()


def drain(created: queue.Queue, count: int, timeout: float = 5.0) -> list[str]:
    names = []
    deadline = time.monotonic() + timeout
    while len(names) < count and time.monotonic() < deadline:
        try:
            names.append(created.get(timeout=0.05))
        except queue.Empty:
            pass
    return names


@pytest.fixture(params=["inotify", "poll"])
def watch(request, tmp_path, monkeypatch):
    if request.param == "poll":
        monkeypatch.setattr(fswatch, "_inotify", lambda: None)   # what a platform without inotify gets
    elif not sys.platform.startswith("linux"):
        pytest.skip("inotify is Linux only")
    w = DirectoryWatch(tmp_path)
    assert w.uses_inotify == (request.param == "inotify")
    yield w
    w.close()


def test_a_file_being_written_is_announced_but_not_finished_until_closed(watch, tmp_path):
    handle = open(tmp_path / "3456.dat", "wb")
    try:
        handle.write(b"x" * 100_000)
        handle.flush()
        assert drain(watch.created, 1) == ["3456.dat"]
        time.sleep(0.3)   # several poll periods: still open, so still not finished
        assert not watch.is_finished("3456.dat")
    finally:
        handle.close()
    if watch.uses_inotify:
        assert eventually(lambda: watch.is_finished("3456.dat"))
    else:
        # without inotify a file counts as finished only once the writer (pg_dump) has exited
        time.sleep(0.3)
        assert not watch.is_finished("3456.dat")
        watch.writer_exited.set()
        assert watch.is_finished("3456.dat")


def test_each_file_is_announced_once_in_a_burst_of_many(watch, tmp_path):
    names = [f"{n}.dat" for n in range(3000, 3300)]
    for name in names:
        (tmp_path / name).write_bytes(b"row\n")   # IN_CREATE and IN_CLOSE_WRITE for each
        (tmp_path / name).write_bytes(b"again\n")   # a second open/close: no second announcement
    announced = drain(watch.created, len(names))
    assert sorted(announced) == names
    time.sleep(0.3)
    assert watch.created.empty(), "a file was announced twice"
    if watch.uses_inotify:
        assert eventually(lambda: all(watch.is_finished(n) for n in names))


def test_a_name_never_written_is_not_finished_until_the_writer_exits(watch):
    assert not watch.is_finished("toc.dat")
    watch.writer_exited.set()
    assert watch.is_finished("toc.dat")


def test_close_stops_following_and_releases_the_inotify_descriptor(tmp_path):
    w = DirectoryWatch(tmp_path)
    fd = w._fd
    w.close()
    assert not w._thread.is_alive()
    (tmp_path / "late.dat").write_bytes(b"x")
    time.sleep(0.3)
    assert w.created.empty()
    if fd >= 0:   # the number may be reused by then (other threads open files), but not as an inotify watch
        link = Path(f"/proc/self/fd/{fd}")
        assert w._fd == -1
        assert not link.exists() or os.readlink(link) != "anon_inode:inotify"
