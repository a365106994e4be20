"""Streaming zstd compression that hashes the output as it is written, and the one tar.zst format.

Memory stays bounded by the chunk size whatever the size of the input.

Every archive pgdr writes (a base backup's ``data.tar.zst``, a file backup's ``dirs/<n>.tar.zst``, a
configuration backup's ``config.tar.zst``) is one tar (PAX) through one zstd frame with its checksum,
written by :class:`TarZstWriter`; every one is read back by :func:`read_tar_zst` (members in order) or
:func:`extract_tar_zst` (into an empty directory). The reader refuses an archive that is cut short
(zstd's streaming reader would otherwise end quietly at the cut) or corrupt (zstd's frame checksum,
tar's header checksums), and extraction refuses members that would land outside the target
(absolute names, ``..``, links pointing out, device files).
"""

from __future__ import annotations

import io
import struct
import tarfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import zstandard

from pgdr.core.checksums import Digest, HashingWriter, StreamDigest
from pgdr.errors import StoreError

CHUNK = 4 << 20
SUFFIX = ".zst"


@dataclass(frozen=True)
class CompressedFile:
    path: Path
    raw_size: int
    newlines: int        # COPY text format: one line per row, plus the "\." terminator
    digest: Digest


def compress_file(source: Path, target: Path, level: int, part_size: int, progress=None) -> CompressedFile:
    """Compress a finished file."""
    return compress_growing_file(source, target, level, part_size, is_finished=lambda: True, progress=progress)


def compress_growing_file(source: Path, target: Path, level: int, part_size: int,
                          is_finished: Callable[[], bool], progress=None, poll: float = 0.02) -> CompressedFile:
    """Compress a file while another process is still writing it.

    Reads what has been written so far; when nothing new is there, waits, until
    ``is_finished`` says the writer has closed the file, then drains the rest.
    The compression thus runs alongside the dump instead of after it.
    """
    compressor = zstandard.ZstdCompressor(level=level, write_checksum=True)
    digest = StreamDigest(part_size)
    raw_size = 0
    newlines = 0
    with open(source, "rb") as reader, open(target, "wb") as handle:
        sink = HashingWriter(handle, digest)
        with compressor.stream_writer(sink, closefd=False) as writer:
            while True:
                block = reader.read(CHUNK)
                if not block:
                    if not is_finished():
                        time.sleep(poll)
                        continue
                    block = reader.read(CHUNK)  # anything written just before the close
                    if not block:
                        break
                raw_size += len(block)
                newlines += block.count(b"\n")
                writer.write(block)
                if progress is not None:
                    progress.add(len(block))
    return CompressedFile(target, raw_size, newlines, digest.finish())


def compress_stream(source, target: Path, level: int, part_size: int) -> CompressedFile:
    """Compress a readable binary stream (a tool's stdout) into ``target``."""
    compressor = zstandard.ZstdCompressor(level=level, write_checksum=True)
    digest = StreamDigest(part_size)
    raw_size = 0
    newlines = 0
    with open(target, "wb") as handle:
        sink = HashingWriter(handle, digest)
        with compressor.stream_writer(sink, closefd=False) as writer:
            while block := source.read(CHUNK):
                raw_size += len(block)
                newlines += block.count(b"\n")
                writer.write(block)
    return CompressedFile(target, raw_size, newlines, digest.finish())


def decompress_to(source: Path, handle) -> int:
    """Stream-decompress the zstd file ``source`` into an open binary handle (a file, a pipe); zstd's frame
    checksum is verified on the way. Returns the bytes written."""
    with open(source, "rb") as reader:
        _, written = zstandard.ZstdDecompressor().copy_stream(reader, handle, read_size=CHUNK, write_size=CHUNK)
    return written


def decompress_file(source: Path, target: Path) -> int:
    """Decompress ``source`` into ``target``; zstd's frame checksum is verified on the way."""
    with open(target, "wb") as writer:
        return decompress_to(source, writer)


def zstandard_version() -> str:
    return zstandard.__version__


# --- tar through zstd --------------------------------------------------------------------------

class ArchiveError(StoreError, RuntimeError):
    """A tar.zst archive is cut short, corrupt, or holds a member that would land outside its target."""


class _CountingWriter:
    """Counts the tar's bytes on their way into zstd; ``tell`` lets tarfile write to it directly,
    without its stream-mode buffer (which copies the whole buffer on every small write)."""

    def __init__(self, inner, progress) -> None:
        self._inner = inner
        self._progress = progress
        self.count = 0

    def tell(self) -> int:
        return self.count

    def write(self, data) -> int:
        self.count += len(data)
        if self._progress is not None:
            self._progress.add(len(data))
        return self._inner.write(data)


class TarZstWriter:
    """One tar (PAX) through zstd (level ``level``, frame checksum on) into the binary ``handle``, the
    compressed bytes hashed as they are written. Use as a context manager; members go in through
    :meth:`add_tree`, :meth:`add_bytes` or :meth:`add_stream`. Afterwards ``raw_size`` is the tar's
    size and ``digest`` the :class:`Digest` of the compressed bytes (``part_size``: S3's part size)."""

    def __init__(self, handle, level: int, part_size: int = CHUNK, progress=None) -> None:
        self._digest = StreamDigest(part_size)
        compressor = zstandard.ZstdCompressor(level=level, write_checksum=True)
        self._zstd = compressor.stream_writer(HashingWriter(handle, self._digest), closefd=False)
        self._counter = _CountingWriter(self._zstd, progress)
        self.tar = tarfile.open(fileobj=self._counter, mode="w", format=tarfile.PAX_FORMAT, copybufsize=CHUNK)
        self.raw_size = 0
        self.digest: Digest | None = None

    def add_tree(self, source: Path) -> None:
        """Everything under ``source``, named relative to it (``PG_VERSION``, ``base/1/...``); links are
        stored as links, never followed. Modification times are whole seconds: tarfile writes a pax
        extended header for every sub-second mtime, and PostgreSQL's tar reader (``pg_verifybackup
        --format=tar``, 18+) refuses pax headers, so a data directory's tar stays plain ustar (a pax
        header remains only for what ustar cannot hold: a name over 100 bytes, a member over 8 GiB)."""
        for child in sorted(Path(source).iterdir()):
            self.tar.add(str(child), arcname=child.name, recursive=True, filter=_whole_seconds)

    def add_bytes(self, name: str, content: bytes, mode: int, mtime: float) -> None:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = len(content), mode, mtime
        self.tar.addfile(info, io.BytesIO(content))

    def add_stream(self, info: tarfile.TarInfo, reader) -> None:
        """A member whose ``info.size`` bytes ``reader`` gives (``read(n)``), copied as they are read."""
        self.tar.addfile(info, reader)

    def __enter__(self) -> TarZstWriter:
        return self

    def __exit__(self, exc_type, *exc) -> None:
        try:
            if exc_type is None:
                self.tar.close()
        finally:
            self._zstd.close()   # ends the frame (its checksum); ``handle`` stays open
        self.raw_size = self._counter.count
        self.digest = self._digest.finish()


def _whole_seconds(info: tarfile.TarInfo) -> tarfile.TarInfo:
    info.mtime = int(info.mtime)
    return info


_ZSTD_MAGIC = 0xFD2FB528


class _FrameCheck(io.RawIOBase):
    """The compressed bytes passed through unchanged while their zstd frame layout is followed (headers
    only, nothing decompressed), so the end of the input can be told apart from the end of the frame:
    zstandard's streaming reader ends quietly when its input stops in the middle of a frame."""

    def __init__(self, source) -> None:
        self._source = source
        self._pending = b""   # bytes of the structure being parsed (a frame or block header)
        self._skip = 0        # bytes of block content (or the checksum) still to pass over
        self._state = "magic"
        self._checksum = False

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        data = self._source.read(len(buffer))
        if not data:
            if self._state != "magic" or self._pending or self._skip:
                raise ArchiveError("the archive is cut short: its zstd frame does not end")
            return 0
        self._follow(data)
        buffer[: len(data)] = data
        return len(data)

    def _need(self, data: memoryview, size: int) -> tuple[bytes | None, memoryview]:
        take = size - len(self._pending)
        self._pending += bytes(data[:take])
        if len(self._pending) < size:
            return None, data[take:]
        header, self._pending = self._pending, b""
        return header, data[take:]

    def _follow(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._skip:
                step = min(self._skip, len(view))
                self._skip -= step
                view = view[step:]
                if not self._skip and self._state == "checksum":
                    self._state = "magic"
                continue
            if self._state == "magic":
                header, view = self._need(view, 5)
                if header is None:
                    return
                magic, descriptor = struct.unpack("<IB", header)
                if magic != _ZSTD_MAGIC:
                    raise ArchiveError("the archive is not zstd-compressed (or is corrupt): bad frame magic")
                single = bool(descriptor & 0x20)
                self._checksum = bool(descriptor & 0x04)
                size_flag = descriptor >> 6
                self._skip = ((0 if single else 1) + (0, 1, 2, 4)[descriptor & 0x03]
                              + ((1 if single else 0), 2, 4, 8)[size_flag])
                self._state = "block"
            elif self._state in ("block", "checksum"):
                header, view = self._need(view, 3)
                if header is None:
                    return
                value = int.from_bytes(header, "little")
                last, block_type, size = value & 1, (value >> 1) & 3, value >> 3
                if block_type == 3:
                    raise ArchiveError("the archive is corrupt: a reserved zstd block type")
                self._skip = 1 if block_type == 1 else size
                if last:
                    self._skip += 4 if self._checksum else 0
                    self._state = "checksum"
                    if not self._skip:
                        self._state = "magic"


class _Decompressed(io.RawIOBase):
    """zstandard's streaming reader as a raw file object tarfile reads in stream mode, with zstd's
    and the frame check's errors turned into :class:`ArchiveError`."""

    def __init__(self, stream, copy_to=None) -> None:
        self._stream = stream
        self._copy_to = copy_to

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            data = self._stream.read(len(buffer))
        except zstandard.ZstdError as err:
            raise ArchiveError(f"the archive is corrupt: {err}") from None
        if self._copy_to is not None and data:
            self._copy_to.write(data)
        buffer[: len(data)] = data
        return len(data)


@contextmanager
def read_tar_zst(source, copy_to=None) -> Iterator[tarfile.TarFile]:
    """The tar.zst at ``source`` (a path, or a binary file object left open) in tar's stream mode:
    iterate the members in order, read each with ``extractfile`` before the next. A cut or corrupt
    archive raises :class:`ArchiveError`, at the latest when the iteration reaches its end.
    ``copy_to`` (a binary handle): every decompressed byte, the whole tar to its end, is also written
    there as it is read, so one pass both reads members and keeps the plain tar."""
    handle = open(source, "rb") if isinstance(source, (str, Path)) else source  # noqa: SIM115 - closed below
    try:
        reader = zstandard.ZstdDecompressor().stream_reader(_FrameCheck(handle), read_size=CHUNK,
                                                            read_across_frames=True)
        raw = io.BufferedReader(_Decompressed(reader, copy_to), CHUNK)
        try:
            with tarfile.open(fileobj=raw, mode="r|") as tar:
                yield tar
                for _ in tar:   # to the end, so a cut after the last member read is seen too
                    pass
            while raw.read(CHUNK):   # the tar's end padding, to the end of the zstd frame
                pass
        except (tarfile.TarError, EOFError, zstandard.ZstdError) as err:
            raise ArchiveError(f"the archive is corrupt or cut short: {type(err).__name__}: {err}") from None
    finally:
        if handle is not source:
            handle.close()


def extract_tar_zst(source, target: Path, skip: Callable[[str], bool] | None = None) -> int:
    """Unpack the tar.zst at ``source`` into the directory ``target`` (made 0700 when missing); returns the
    number of members. A member that would land outside ``target`` (an absolute name, ``..``, a link
    pointing out of it, a device file) is refused with :class:`ArchiveError` (tarfile's ``data`` filter),
    as is a cut or corrupt archive; what was unpacked before the refusal stays for the caller to remove.
    ``skip(name)`` true: that member is read (and checked) but not written."""
    target = Path(target)
    target.mkdir(parents=True, mode=0o700, exist_ok=True)
    refusal = f"refusing an archive member that would land outside {target}"

    def inside(member: tarfile.TarInfo, path: str) -> tarfile.TarInfo:
        # tarfile's data filter would strip the slash off an absolute name; pgdr never writes one
        if member.name.startswith("/"):
            raise ArchiveError(f"{refusal}: an absolute name")
        checked = tarfile.data_filter(member, path)
        return None if skip is not None and skip(member.name) else checked

    with read_tar_zst(source) as tar:
        try:
            tar.extractall(target, filter=inside)
        except tarfile.FilterError as err:
            raise ArchiveError(f"{refusal}: {type(err).__name__}") from None
        return len(tar.getmembers())
