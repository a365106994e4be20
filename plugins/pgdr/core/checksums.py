"""Checksums computed while data streams past, never by re-reading it.

S3 reports a checksum it computed itself (``ChecksumSHA256``). For a single-part
upload that is the object's sha256; for a multipart upload it is the sha256 of
the parts' sha256 digests, suffixed with ``-<parts>``. :class:`StreamDigest`
keeps both forms so an upload can be checked against the server's own figure.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass


@dataclass(frozen=True)
class Digest:
    size: int
    sha256: str                      # hex, whole object
    part_sha256: tuple[bytes, ...]   # raw digests of each part_size piece
    part_size: int

    def s3_checksum(self, multipart: bool) -> str:
        """The ChecksumSHA256 value S3 reports for this content."""
        if not multipart:
            return base64.b64encode(bytes.fromhex(self.sha256)).decode()
        combined = hashlib.sha256(b"".join(self.part_sha256)).digest()
        return f"{base64.b64encode(combined).decode()}-{len(self.part_sha256)}"


class StreamDigest:
    """sha256 of a whole stream and of each ``part_size`` piece of it."""

    def __init__(self, part_size: int) -> None:
        self.part_size = part_size
        self._whole = hashlib.sha256()
        self._part = hashlib.sha256()
        self._part_fill = 0
        self._parts: list[bytes] = []
        self.size = 0

    def update(self, data: bytes | memoryview) -> None:
        self._whole.update(data)
        self.size += len(data)
        view = memoryview(data)
        while view:
            room = self.part_size - self._part_fill
            piece, view = view[:room], view[room:]
            self._part.update(piece)
            self._part_fill += len(piece)
            if self._part_fill == self.part_size:
                self._parts.append(self._part.digest())
                self._part = hashlib.sha256()
                self._part_fill = 0

    def finish(self) -> Digest:
        parts = list(self._parts)
        if self._part_fill or not parts:
            parts.append(self._part.digest())
        return Digest(self.size, self._whole.hexdigest(), tuple(parts), self.part_size)


def file_digest(path, part_size: int, chunk: int = 1 << 20) -> Digest:
    digest = StreamDigest(part_size)
    with open(path, "rb") as handle:
        while block := handle.read(chunk):
            digest.update(block)
    return digest.finish()
