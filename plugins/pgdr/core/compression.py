"""Streaming zstd compression that hashes the output as it is written.

Memory stays bounded by the chunk size whatever the size of the input.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import zstandard

from pgdr.core.checksums import Digest, StreamDigest

CHUNK = 4 << 20
SUFFIX = ".zst"


@dataclass(frozen=True)
class CompressedFile:
    path: Path
    raw_size: int
    newlines: int        # COPY text format: one line per row, plus the "\." terminator
    digest: Digest


class HashingSink:
    """File-like sink for zstandard's stream writer: hashes, then writes."""

    def __init__(self, handle, digest: StreamDigest) -> None:
        self._handle = handle
        self._digest = digest

    def write(self, data) -> int:
        self._digest.update(data)
        return self._handle.write(data)

    def flush(self) -> None:
        self._handle.flush()


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
        sink = HashingSink(handle, digest)
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
        sink = HashingSink(handle, digest)
        with compressor.stream_writer(sink, closefd=False) as writer:
            while block := source.read(CHUNK):
                raw_size += len(block)
                newlines += block.count(b"\n")
                writer.write(block)
    return CompressedFile(target, raw_size, newlines, digest.finish())


def decompress_file(source: Path, target: Path) -> int:
    """Decompress ``source`` into ``target``; zstd's frame checksum is verified on the way."""
    decompressor = zstandard.ZstdDecompressor()
    with open(source, "rb") as reader, open(target, "wb") as writer:
        _, written = decompressor.copy_stream(reader, writer, read_size=CHUNK, write_size=CHUNK)
    return written


def zstandard_version() -> str:
    return zstandard.__version__
