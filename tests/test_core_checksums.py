"""The one hash-while-copying helper: HashingReader, HashingWriter, copy_hashed. Pure, no services."""

import hashlib
import io
import os

import pytest

from pgdr.core.checksums import (
    Copied,
    HashingReader,
    HashingWriter,
    ObjectHashError,
    StreamDigest,
    check_copied,
    copy_hashed,
    file_digest,
    file_sha256,
)

DATA = os.urandom(3 * (1 << 20) + 12345)


class _Counter:
    def __init__(self) -> None:
        self.added = 0

    def add(self, count: int) -> None:
        self.added += count


def test_copy_hashed_copies_every_byte_and_reports_sha256_and_size():
    target, progress = io.BytesIO(), _Counter()
    copied = copy_hashed(io.BytesIO(DATA), target, chunk=1 << 16, progress=progress)
    assert target.getvalue() == DATA
    assert copied == Copied(hashlib.sha256(DATA).hexdigest(), len(DATA))
    assert progress.added == len(DATA)


def test_copy_hashed_without_a_target_only_hashes():
    assert copy_hashed(io.BytesIO(b"")) == Copied(hashlib.sha256(b"").hexdigest(), 0)
    assert copy_hashed(io.BytesIO(DATA)).sha256 == hashlib.sha256(DATA).hexdigest()


def test_copy_hashed_into_a_stream_digest_gives_the_multipart_form_too():
    digest = StreamDigest(1 << 20)
    copied = copy_hashed(io.BytesIO(DATA), digest=digest, chunk=300_001)
    finished = digest.finish()
    assert copied.sha256 == finished.sha256 == hashlib.sha256(DATA).hexdigest()
    assert finished.part_sha256[0] == hashlib.sha256(DATA[: 1 << 20]).digest() and len(finished.part_sha256) == 4


def test_reader_and_writer_hash_what_passes_through_them():
    reader = HashingReader(io.BytesIO(DATA))
    sink = io.BytesIO()
    writer = HashingWriter(sink)
    while block := reader.read(77_777):
        writer.write(block)
    writer.flush()
    expected = hashlib.sha256(DATA).hexdigest()
    assert reader.digest.hexdigest() == writer.digest.hexdigest() == expected
    assert reader.digest.size == writer.digest.size == len(DATA) and sink.getvalue() == DATA
    counting = HashingWriter()   # nothing behind it: counts and hashes only
    assert counting.write(b"abc") == 3 and counting.digest.size == 3


def test_file_helpers_read_the_file_once(tmp_path):
    path = tmp_path / "blob"
    path.write_bytes(DATA)
    assert file_sha256(path) == Copied(hashlib.sha256(DATA).hexdigest(), len(DATA))
    assert file_digest(path, 1 << 20).sha256 == hashlib.sha256(DATA).hexdigest()
    no_link = lambda p: os.fdopen(os.open(p, os.O_RDONLY | os.O_NOFOLLOW), "rb")  # noqa: E731
    assert file_sha256(path, opener=no_link).size == len(DATA)
    (tmp_path / "link").symlink_to(path)
    with pytest.raises(OSError):   # the opener decides: a link is not followed
        file_sha256(tmp_path / "link", opener=no_link)


def test_check_copied_names_the_object_and_what_differs():
    good = Copied(hashlib.sha256(b"abc").hexdigest(), 3)
    check_copied("p/db/logical/1/dump/toc.dat", good, 3, good.sha256)
    with pytest.raises(ObjectHashError, match="size 3 != manifest 4") as caught:
        check_copied("p/db/logical/1/dump/toc.dat", good, 4, good.sha256)
    assert caught.value.key == "p/db/logical/1/dump/toc.dat"
    with pytest.raises(ObjectHashError, match="sha256"):
        check_copied("k", good, 3, "0" * 64)
