"""The S3 store against moto's server: multipart uploads, and checks that catch what they should."""

import hashlib
import os

import pytest

from harness.s3_server import start_s3_server
from pgdr.core.checksums import file_digest
from pgdr.store.s3 import UploadQueue
from tests.support.s3 import plain_store

PART = 5 * 1024 * 1024


@pytest.fixture(scope="module")
def s3():
    server = start_s3_server()
    server.create_bucket("store-test", object_lock=False, hardened=False)
    yield server
    server.stop()


def _store(s3):
    return plain_store(s3.client(), "p", bucket="store-test", part_size=PART)


def _upload(store, tmp_path, name, size):
    path = tmp_path / name
    path.write_bytes(os.urandom(size))
    digest = file_digest(path, PART)
    uploads = UploadQueue(store, workers=2)
    uploads.submit(path, f"p/{name}", digest, {"pgdr-backup-id": "x"})
    uploads.finish()
    return path, digest


@pytest.mark.parametrize("size", [1000, 2 * PART + 123])
def test_upload_then_check_passes_for_single_and_multipart(s3, tmp_path, size):
    store = _store(s3)
    path, digest = _upload(store, tmp_path, f"obj{size}", size)
    check = store.check_object(f"p/obj{size}", digest.size, digest.sha256,
                               digest.s3_checksum(store.is_multipart(digest.size)))
    assert check.ok, check.problems
    body = s3.client().get_object(Bucket="store-test", Key=f"p/obj{size}")["Body"].read()
    assert hashlib.sha256(body).hexdigest() == digest.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()


def test_check_catches_changed_content_wrong_size_and_missing_encryption(s3, tmp_path):
    store = _store(s3)
    _, digest = _upload(store, tmp_path, "victim", 4096)
    expected = digest.s3_checksum(False)
    # same size, different bytes, written without server-side encryption or our metadata
    s3.client().put_object(Bucket="store-test", Key="p/victim", Body=os.urandom(4096), ChecksumAlgorithm="SHA256")
    problems = " | ".join(store.check_object("p/victim", digest.size, digest.sha256, expected).problems)
    assert "S3 SHA-256" in problems and "server-side encryption none" in problems and "metadata" in problems
    problems = " | ".join(store.check_object("p/victim", digest.size + 1, digest.sha256, expected).problems)
    assert "size 4096 != expected 4097" in problems


def test_only_backups_with_a_manifest_are_listed(s3):
    client = s3.client()
    for backup_id, with_manifest in (("20261101T020000Z", True), ("20261102T020000Z", False),
                                     ("20261103T020000Z", True)):
        base = f"p/db/logical/{backup_id}"
        client.put_object(Bucket="store-test", Key=f"{base}/dump/toc.dat", Body=b"x")
        if with_manifest:
            client.put_object(Bucket="store-test", Key=f"{base}/manifest.json", Body=b"{}")
    client.put_object(Bucket="store-test", Key="p/db/logical/not-an-id/manifest.json", Body=b"{}")
    entries = _store(s3).catalog("db", "logical")
    assert [e.backup_id for e in entries if e.complete] == ["20261101T020000Z", "20261103T020000Z"]
