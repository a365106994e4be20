"""How a restore's download fails (pgdr.restore.fetch): a changed object, a short one, a stream cut off
mid-way. Data that does not match the manifest must never reach pg_restore, and the failure must
name the object.

No S3 server: the store hands out botocore's own StreamingBody over bytes held in memory, the
object boto3's get_object returns, so length checks and stream errors are botocore's. The restore
end to end (moto server, real pg_restore) is in tests/test_restore.py and test_restore_faults.py.
"""

from __future__ import annotations

import hashlib
import io
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import zstandard
from botocore.exceptions import IncompleteReadError, ResponseStreamingError
from botocore.response import StreamingBody
from urllib3.exceptions import ProtocolError

from pgdr.backup.download import download_object
from pgdr.core.checksums import ObjectHashError
from pgdr.core.progress import Progress
from pgdr.restore.fetch import PipedDataFiles, fetch_whole
from pgdr.store.manifest import ObjectEntry

LOG = logging.getLogger("test_fetch")
PREFIX = "pgdr/care/logical/20261201T000000Z"
# row text a patient record could hold: it must never appear in an error
ROW = b"42\tJane Roe\t1961-04-02\tdiabetes type 2\n"


class CutStream(io.RawIOBase):
    """A response stream whose connection drops after ``cut`` bytes, as urllib3 reports it."""

    def __init__(self, data: bytes, cut: int) -> None:
        self.data, self.cut, self.pos = data, cut, 0

    def read(self, size: int = -1) -> bytes:
        if self.pos >= self.cut:
            raise ProtocolError("Connection broken: IncompleteRead")
        size = len(self.data) if size is None or size < 0 else size
        block = self.data[self.pos:min(self.pos + size, self.cut)]
        self.pos += len(block)
        return block


@dataclass
class MemoryStore:
    """What download_object uses of a BackupStore: ``bucket`` and the door method ``open_object``."""

    objects: dict[str, bytes] = field(default_factory=dict)
    # key -> (bytes actually sent, Content-Length announced) for a response that ends early
    truncated: dict[str, tuple[bytes, int]] = field(default_factory=dict)
    cut: dict[str, int] = field(default_factory=dict)
    bucket: str = "pgdr-backups"

    def open_object(self, key: str, version_id: str | None = None) -> dict:
        if key in self.truncated:
            sent, announced = self.truncated[key]
            return {"Body": StreamingBody(io.BytesIO(sent), announced)}
        data = self.objects[key]
        raw = CutStream(data, self.cut[key]) if key in self.cut else io.BytesIO(data)
        return {"Body": StreamingBody(raw, len(data))}


def entry(name: str, data: bytes, *, role: str = "table_data", compression: str = "none") -> ObjectEntry:
    return ObjectEntry(name=name, key=f"{PREFIX}/{name}", size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                       role=role, compression=compression)


def zst(data: bytes) -> bytes:
    return zstandard.ZstdCompressor().compress(data)


def test_a_matching_object_is_written_whole_and_counted(tmp_path):
    data = ROW * 200_000   # several download chunks
    obj = entry("dump/3456.dat", data)
    store = MemoryStore({obj.key: data})
    progress = Progress("download", LOG, total=len(data))
    download_object(store, obj.key, obj, tmp_path / "3456.dat", progress)
    assert (tmp_path / "3456.dat").read_bytes() == data
    assert progress.done == len(data)


def test_an_object_changed_in_the_store_is_refused_by_its_sha256_and_named(tmp_path):
    recorded = ROW * 1000
    changed = recorded.replace(b"Jane", b"John", 1)   # same size, different content
    obj = entry("dump/3456.dat", recorded)
    with pytest.raises(ObjectHashError) as caught:
        download_object(MemoryStore({obj.key: changed}), obj.key, obj, tmp_path / "3456.dat")
    assert caught.value.key == obj.key
    assert obj.key in str(caught.value) and "sha256" in str(caught.value)
    assert b"Jane" not in str(caught.value).encode() and b"John" not in str(caught.value).encode()


def test_a_short_object_is_refused_by_its_size(tmp_path):
    recorded = ROW * 1000
    obj = entry("toc.dat", recorded, role="toc")
    with pytest.raises(ObjectHashError) as caught:
        download_object(MemoryStore({obj.key: recorded[:-7]}), obj.key, obj, tmp_path / "toc.dat")
    assert caught.value.key == obj.key
    assert f"size {len(recorded) - 7} != manifest {len(recorded)}" in str(caught.value)


def test_a_response_ending_before_its_content_length_fails_the_download(tmp_path):
    """The connection closes cleanly but early: botocore compares with Content-Length and raises."""
    data = ROW * 5000
    obj = entry("dump/3457.dat", data)
    store = MemoryStore(truncated={obj.key: (data[:4096], len(data))})
    with pytest.raises(IncompleteReadError):
        download_object(store, obj.key, obj, tmp_path / "3457.dat")


def test_a_stream_broken_mid_way_fails_the_download(tmp_path):
    data = ROW * 50_000
    obj = entry("dump/3458.dat", data)
    store = MemoryStore({obj.key: data}, cut={obj.key: len(data) // 3})
    with pytest.raises(ResponseStreamingError):
        download_object(store, obj.key, obj, tmp_path / "3458.dat")


def test_fetch_whole_unpacks_checked_objects_and_stops_at_the_first_bad_one(tmp_path):
    toc, globals_sql = b"PGDMP toc" * 100, b"CREATE ROLE care;\n"
    good = entry("toc.dat.zst", zst(toc), role="toc", compression="zstd")
    bad = entry("globals.sql", globals_sql, role="globals")
    store = MemoryStore({good.key: zst(toc), bad.key: globals_sql[:-1] + b"X"})
    paths = fetch_whole(store, PREFIX, [good], tmp_path, LOG)
    assert paths == {"toc.dat.zst": tmp_path / "toc.dat"} and (tmp_path / "toc.dat").read_bytes() == toc
    assert not (tmp_path / "toc.dat.zst").exists()   # the compressed copy is not left beside it
    with pytest.raises(ObjectHashError, match="globals.sql"):
        fetch_whole(store, PREFIX, [bad], tmp_path, LOG)


def read_fifo(path: Path, out: dict) -> threading.Thread:
    """pg_restore's side: open a table's data file and read it to the end."""
    def reader() -> None:
        with open(path, "rb") as handle:
            out[path.name] = handle.read()
    thread = threading.Thread(target=reader, daemon=True)
    thread.start()
    return thread


def serve(files: PipedDataFiles, threads: list[threading.Thread], timeout: float = 20.0) -> None:
    """The restore loop's part: poll until every FIFO is handed over and every reader is done."""
    for _ in range(int(timeout / 0.02)):
        files.poll()
        if not files.unopened and not any(t.is_alive() for t in threads):
            return
        threading.Event().wait(0.02)
    raise AssertionError(f"readers still waiting: {files.unopened}")


def test_table_data_whose_hash_does_not_match_never_reaches_pg_restore(tmp_path):
    good_rows, bad_rows = ROW * 30_000, ROW * 20_000
    good = entry("dump/3456.dat.zst", zst(good_rows), compression="zstd")
    bad = entry("dump/3457.dat.zst", zst(bad_rows), compression="zstd")
    tampered = zst(bad_rows.replace(b"Jane", b"Joan"))
    store = MemoryStore({good.key: zst(good_rows), bad.key: tampered})
    dump_dir, download_dir = tmp_path / "dump", tmp_path / "downloads"
    dump_dir.mkdir()
    files = PipedDataFiles(store=store, prefix=PREFIX, objects=[bad, good], dump_dir=dump_dir,
                           download_dir=download_dir, workers=2, log=LOG)
    received: dict[str, bytes] = {}
    try:
        files.start()
        assert sorted(os.listdir(dump_dir)) == ["3456.dat", "3457.dat"]   # FIFOs named as pg_restore expects
        threads = [read_fifo(dump_dir / name, received) for name in ("3456.dat", "3457.dat")]
        serve(files, threads)
        files.finish()
    finally:
        files.close()
    assert received["3456.dat"] == good_rows
    assert received["3457.dat"] == b"", "data that failed its hash check was fed to pg_restore"
    assert isinstance(files.failure, ObjectHashError) and files.failure.key == bad.key
    assert b"Jane" not in str(files.failure).encode()
    assert files.fed_bytes == len(good_rows)


def test_a_download_cut_off_mid_stream_stops_the_restore_with_nothing_fed(tmp_path):
    rows = b"".join(b"%d\t%s\n" % (i, hashlib.sha256(b"%d" % i).hexdigest().encode()) for i in range(40_000))
    stored = zst(rows)
    obj = entry("dump/4000.dat.zst", stored, compression="zstd")
    store = MemoryStore({obj.key: stored}, cut={obj.key: len(stored) // 2})
    dump_dir = tmp_path / "dump"
    dump_dir.mkdir()
    files = PipedDataFiles(store=store, prefix=PREFIX, objects=[obj], dump_dir=dump_dir,
                           download_dir=tmp_path / "downloads", workers=1, log=LOG)
    received: dict[str, bytes] = {}
    try:
        files.start()
        serve(files, [read_fifo(dump_dir / "4000.dat", received)])
        files.finish()
    finally:
        files.close()
    assert received["4000.dat"] == b""
    assert isinstance(files.failure, ResponseStreamingError)
    assert files.fed_bytes == 0


# ---------------------------------------------------------------- the WAL a point-in-time recovery fetches

SEGMENT = "000000010000000000000003"
WAL_KEY = f"pgdr/care/wal/{SEGMENT}.zst"


class WalStore(MemoryStore):
    """The door methods WalFetch uses: ``open_object`` (with the object's metadata) and ``is_missing``;
    ``replaced`` serves other bytes on the first GET of a key, as an overwrite racing the download."""

    def __init__(self, objects: dict[str, tuple[bytes, dict]], replaced: dict[str, bytes] | None = None) -> None:
        super().__init__({key: body for key, (body, _) in objects.items()})
        self.metadata = {key: meta for key, (_, meta) in objects.items()}
        self.replaced = dict(replaced or {})
        self.gets: list[str] = []

    def open_object(self, key: str, version_id: str | None = None) -> dict:
        self.gets.append(key)
        if key not in self.objects:
            raise KeyError(key)
        body = self.replaced.pop(key, self.objects[key])
        return {"Body": StreamingBody(io.BytesIO(body), len(body)), "Metadata": self.metadata[key]}

    def is_missing(self, err: BaseException) -> bool:
        return isinstance(err, KeyError)


def _wal_object(raw: bytes) -> tuple[bytes, dict]:
    stored = zst(raw)
    return stored, {"sha256": hashlib.sha256(stored).hexdigest(), "raw-sha256": hashlib.sha256(raw).hexdigest()}


def _fetch(store, tmp_path: Path, *, partial: bool = False, key: str = WAL_KEY):
    from pgdr.restore.pitr_fetch import WalFetch
    from pgdr.wal.archive import WalObject, WalPlan

    plan = WalPlan([WalObject(SEGMENT, key, partial)], None)
    WalFetch(store=store, wal=plan, wal_dir=tmp_path / "wal", backup_id="20261201T000000Z", jobs=1, log=LOG).run()
    return tmp_path / "wal" / SEGMENT


def test_a_wal_segment_is_fetched_uncompressed_and_checked(tmp_path):
    raw = os.urandom(1 << 16) + b"\0" * (1 << 20)
    store = WalStore({WAL_KEY: _wal_object(raw)})
    assert _fetch(store, tmp_path).read_bytes() == raw
    assert sorted(os.listdir(tmp_path / "wal")) == [SEGMENT]   # no download leftovers


def test_a_wal_segment_changed_under_the_download_is_fetched_again(tmp_path):
    raw = os.urandom(50_000)
    store = WalStore({WAL_KEY: _wal_object(raw)}, replaced={WAL_KEY: zst(os.urandom(50_000))})
    assert _fetch(store, tmp_path).read_bytes() == raw
    assert store.gets == [WAL_KEY, WAL_KEY]


def test_a_wal_segment_that_never_matches_its_hash_fails_the_recovery_naming_it(tmp_path):
    from pgdr.restore.pitr_cluster import RecoveryFailed

    stored, metadata = _wal_object(os.urandom(50_000))
    store = WalStore({WAL_KEY: (stored, {**metadata, "sha256": "0" * 64})})
    with pytest.raises(RecoveryFailed, match=f"WAL object {WAL_KEY}: sha256 .* != stored 0+$"):
        _fetch(store, tmp_path)
    assert store.gets == [WAL_KEY, WAL_KEY]


def test_a_partial_segment_retired_meanwhile_is_taken_as_the_completed_segment(tmp_path):
    raw = os.urandom(40_000)
    store = WalStore({WAL_KEY: _wal_object(raw)})   # only the completed segment is left
    partial_key = WAL_KEY.replace(".zst", ".partial.zst")
    assert _fetch(store, tmp_path, partial=True, key=partial_key).read_bytes() == raw
    assert store.gets == [partial_key, WAL_KEY]


def test_a_wal_segment_gone_from_the_store_fails_the_recovery_naming_it(tmp_path):
    from pgdr.restore.pitr_cluster import RecoveryFailed

    with pytest.raises(RecoveryFailed, match=f"WAL object {WAL_KEY} is gone"):
        _fetch(WalStore({}), tmp_path)
