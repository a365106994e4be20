"""Checksums computed while data streams past, never by re-reading it.

One mechanic, used wherever bytes move: :class:`HashingReader` and :class:`HashingWriter` wrap a
file object and feed every block that passes to a digest (a plain :class:`Sha256`, or a
:class:`StreamDigest` when the S3 multipart form is needed); :func:`copy_hashed` copies a stream
into another (or into nothing, to hash only) and returns the sha256 and size of what passed.

S3 reports a checksum it computed itself (``ChecksumSHA256``). For a single-part
upload that is the object's sha256; for a multipart upload it is the sha256 of
the parts' sha256 digests, suffixed with ``-<parts>``. :class:`StreamDigest`
keeps both forms so an upload can be checked against the server's own figure.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass

from pgdr.errors import StoreError

CHUNK = 1 << 20


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

    def hexdigest(self) -> str:
        """The whole stream's sha256 so far."""
        return self._whole.hexdigest()

    def finish(self) -> Digest:
        parts = list(self._parts)
        if self._part_fill or not parts:
            parts.append(self._part.digest())
        return Digest(self.size, self._whole.hexdigest(), tuple(parts), self.part_size)


class Sha256:
    """sha256 and byte count of what passes: the digest :class:`HashingReader`/:class:`HashingWriter`
    and :func:`copy_hashed` use unless given another (anything with ``update``)."""

    def __init__(self) -> None:
        self._hash = hashlib.sha256()
        self.size = 0

    def update(self, data: bytes | memoryview) -> None:
        self._hash.update(data)
        self.size += len(data)

    def hexdigest(self) -> str:
        return self._hash.hexdigest()


@dataclass(frozen=True)
class Copied:
    sha256: str   # hex, of every byte that passed
    size: int


class HashingWriter:
    """A writable file object: each block goes to ``digest``, then to ``handle`` (None: hashed only)."""

    def __init__(self, handle=None, digest=None) -> None:
        self._handle = handle
        self.digest = digest if digest is not None else Sha256()

    def write(self, data) -> int:
        self.digest.update(data)
        return self._handle.write(data) if self._handle is not None else len(data)

    def flush(self) -> None:
        if self._handle is not None:
            self._handle.flush()


class HashingReader:
    """A readable file object over ``handle``: each block read is fed to ``digest`` on its way out."""

    def __init__(self, handle, digest=None) -> None:
        self._handle = handle
        self.digest = digest if digest is not None else Sha256()

    def read(self, size: int = -1) -> bytes:
        data = self._handle.read(size)
        self.digest.update(data)
        return data


def copy_hashed(source, target=None, *, digest=None, chunk: int = CHUNK, progress=None) -> Copied:
    """Copy the readable ``source`` into the writable ``target`` (None: read and hash only), hashing every
    block as it passes into ``digest`` (a fresh :class:`Sha256` unless given, e.g. a :class:`StreamDigest`);
    ``progress`` (a :class:`pgdr.core.progress.Progress`) counts the bytes."""
    digest = digest if digest is not None else Sha256()
    while block := source.read(chunk):
        digest.update(block)
        if target is not None:
            target.write(block)
        if progress is not None:
            progress.add(len(block))
    return Copied(digest.hexdigest(), digest.size)


def file_sha256(path, *, opener=None, chunk: int = CHUNK) -> Copied:
    """sha256 and size of a file, read once (``opener``: how to open it, e.g. without following a link)."""
    with (opener(path) if opener is not None else open(path, "rb")) as handle:
        return copy_hashed(handle, chunk=chunk)


def file_digest(path, part_size: int, chunk: int = CHUNK) -> Digest:
    """The :class:`Digest` (whole and per part) of a file, read once."""
    digest = StreamDigest(part_size)
    with open(path, "rb") as handle:
        copy_hashed(handle, digest=digest, chunk=chunk)
    return digest.finish()


class ObjectHashError(StoreError, RuntimeError):
    """A downloaded object differs from what the manifest records."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key


def check_copied(key: str, copied: Copied, size: int, sha256: str) -> None:
    """Raise :class:`ObjectHashError` naming ``key`` when what was copied is not the recorded size and sha256."""
    if copied.size != size:
        raise ObjectHashError(key, f"size {copied.size} != manifest {size}")
    if copied.sha256 != sha256:
        raise ObjectHashError(key, f"sha256 {copied.sha256} != manifest {sha256}")
