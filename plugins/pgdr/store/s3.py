"""The backup store in S3: uploads, post-upload checks, manifests, the catalog; the only door to S3.

Layout: ``<prefix>/<database>/<kind>/<backup_id>/...`` with ``manifest.json``
written last. Every object is written with server-side encryption and a
SHA-256 checksum that S3 computes itself, so a check after upload compares the
server's own figure with ours without downloading anything. Keys are built by
:mod:`pgdr.store.layout`; Object Lock dates and versions are :mod:`pgdr.store.object_lock`.
"""

from __future__ import annotations

import base64
import io
import json
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

from pgdr.core.checksums import Digest, copy_hashed
from pgdr.core.progress import Progress
from pgdr.errors import StoreError
from pgdr.store.catalog import BackupEntry, entries_from_keys
from pgdr.store.layout import kind_prefix, manifest_key, marker_key
from pgdr.store.manifest import MANIFEST_NAME, Manifest, ManifestError
from pgdr.store.object_lock import (
    BackupLockDate,
    LockPolicy,
    ObjectLock,
)

__all__ = ["BackupStore", "LockPolicy", "ObjectCheck", "UploadCheckError", "UploadQueue", "checksum_matches"]


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


class _FileSlice(io.RawIOBase):
    """A seekable window onto part of an open file, so a part streams without being held in memory."""

    def __init__(self, handle, offset: int, length: int) -> None:
        self._handle = handle
        self._offset = offset
        self._length = length
        self._position = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._position

    def seek(self, position: int, whence: int = io.SEEK_SET) -> int:
        base = {io.SEEK_SET: 0, io.SEEK_CUR: self._position, io.SEEK_END: self._length}[whence]
        self._position = max(0, min(self._length, base + position))
        return self._position

    def read(self, size: int = -1) -> bytes:
        remaining = self._length - self._position
        if size is None or size < 0 or size > remaining:
            size = remaining
        self._handle.seek(self._offset + self._position)
        data = self._handle.read(size)
        self._position += len(data)
        return data

    def readinto(self, buffer) -> int:
        data = self.read(len(buffer))
        buffer[: len(data)] = data
        return len(data)


class UploadCheckError(StoreError, RuntimeError):
    """An uploaded object does not match what was sent."""


@dataclass(frozen=True)
class ObjectCheck:
    key: str
    problems: tuple[str, ...]

    @property
    def ok(self) -> bool:
        return not self.problems


def checksum_matches(expected: str, reported: str | None) -> bool:
    """Compare S3 ChecksumSHA256 values; some stores omit the ``-<parts>`` suffix."""
    if not reported:
        return False
    return expected.split("-")[0] == reported.split("-")[0]


class UploadQueue:
    """Uploads that start as soon as each file is ready, while the backup is still being made."""

    def __init__(self, store: BackupStore, workers: int) -> None:
        self.store = store
        self.keys: list[str] = []
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="pgdr-upload")
        self._futures = []
        self.progress = Progress(f"upload to s3://{store.bucket}", store.log)

    def submit(self, path: Path, key: str, digest: Digest, metadata: dict[str, str]) -> None:
        self.keys.append(key)
        self._futures.append(self._pool.submit(self.store.upload_file, path, key, digest, metadata, self.progress))

    def finish(self) -> float:
        """Wait for every upload; the first failure is raised. Returns seconds since the first upload began."""
        for future in self._futures:
            future.result()
        self._pool.shutdown(wait=True)
        self.progress.finish()
        return self.progress.elapsed

    def cancel(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)


def failure_kind(err: BaseException) -> str:
    """What kind of S3 failure: the same kind is the same problem (one alert), whichever of the
    many connection errors a dead endpoint produces on a given attempt."""
    code = (getattr(err, "response", None) or {}).get("Error", {}).get("Code")
    if code is not None:   # S3 answered with an error (botocore's ClientError carries the response)
        return f"S3 refused: {code or 'error'}"
    # by class name: botocore's ConnectionError and HTTPClientError families, Python's ConnectionError
    # and TimeoutError (a dead endpoint produces any of them)
    if {cls.__name__ for cls in type(err).__mro__} & {"ConnectionError", "HTTPClientError", "TimeoutError"}:
        return "S3 endpoint unreachable"
    return type(err).__name__


class BackupStore(ObjectLock):
    """The bucket under ``prefix``: uploads and their checks, reads, listings, and (:class:`ObjectLock`)
    lock dates, versions and the bucket's posture.

    ``backup_lock_date`` dates a backup's objects where the bucket has Object Lock (see
    :mod:`pgdr.store.object_lock`); whoever assembles a store that writes backups passes
    ``pgdr.retain.object_lock.lock_date_from_settings(settings)``. Without it, writing a backup to a
    locked bucket fails (:class:`pgdr.store.object_lock.NoBackupLockDate`) rather than leave it unlocked.
    """

    def __init__(self, *, client, bucket: str, prefix: str, sse_args: dict[str, str], part_size: int,
                 log: logging.Logger, lock_policy: LockPolicy | None = None,
                 backup_lock_date: BackupLockDate | None = None) -> None:
        self.client = client
        self.bucket = bucket
        self.prefix = prefix
        self.sse_args = sse_args
        self.part_size = part_size
        self.log = log
        self.lock_policy = lock_policy
        self.backup_lock_date = backup_lock_date
        self._init_lock()

    @classmethod
    def from_settings(cls, settings, log: logging.Logger, *,
                      backup_lock_date: BackupLockDate | None = None) -> BackupStore:
        from airflow.providers.amazon.aws.hooks.s3 import S3Hook

        client = S3Hook(aws_conn_id=settings.aws_conn_id).get_conn()
        return cls(client=client, bucket=settings.s3_bucket, prefix=settings.s3_prefix,
                   sse_args=settings.sse_args, part_size=settings.part_size, log=log,
                   lock_policy=LockPolicy.from_settings(settings), backup_lock_date=backup_lock_date)

    @property
    def expected_sse(self) -> str:
        return self.sse_args["ServerSideEncryption"]

    def is_multipart(self, size: int) -> bool:
        return size >= self.part_size

    def upload_file(self, path: Path, key: str, digest: Digest, metadata: dict[str, str], progress: Progress) -> None:
        """Upload with server-side encryption and the SHA-256 we computed while writing the file.

        Sending our checksum (whole object, or per part) lets S3 refuse bytes that differ from
        what we hashed, and spares both sides a second pass over the data.
        """
        extra = dict(self.sse_args)
        extra["Metadata"] = {"sha256": digest.sha256, **metadata}
        lock = self.lock_args(key)
        extra.update(lock)
        if not self.is_multipart(digest.size):
            with open(path, "rb") as body:
                self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentLength=digest.size,
                                       ChecksumAlgorithm="SHA256", ChecksumSHA256=_b64(bytes.fromhex(digest.sha256)),
                                       **extra)
            progress.add(digest.size)
            return
        upload_id = self.client.create_multipart_upload(Bucket=self.bucket, Key=key, ChecksumAlgorithm="SHA256",
                                                        **extra)["UploadId"]
        try:
            parts = []
            with open(path, "rb") as handle:
                for number, part_digest in enumerate(digest.part_sha256, start=1):
                    offset = (number - 1) * self.part_size
                    length = min(self.part_size, digest.size - offset)
                    checksum = _b64(part_digest)
                    response = self.client.upload_part(
                        Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number,
                        Body=_FileSlice(handle, offset, length), ContentLength=length, ChecksumSHA256=checksum)
                    parts.append({"ETag": response["ETag"], "PartNumber": number, "ChecksumSHA256": checksum})
                    progress.add(length)
            completed = self.client.complete_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id,
                                                              MultipartUpload={"Parts": parts})
            if lock:
                # some S3-compatible stores ignore the lock given at create time; set it on the version
                self.set_retention(key, completed.get("VersionId"), lock["ObjectLockRetainUntilDate"])
        except BaseException:
            try:
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
            except Exception:  # noqa: BLE001 - the original failure is what matters
                pass
            raise

    def check_object(self, key: str, size: int, sha256: str, s3_checksum: str) -> ObjectCheck:
        """Size, server-computed SHA-256 and server-side encryption of one stored object."""
        head = self.client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        problems = []
        if head["ContentLength"] != size:
            problems.append(f"size {head['ContentLength']} != expected {size}")
        reported = head.get("ChecksumSHA256")
        if not checksum_matches(s3_checksum, reported):
            problems.append(f"S3 SHA-256 {reported or 'missing'} != expected {s3_checksum} (sha256 {sha256})")
        if head.get("Metadata", {}).get("sha256") != sha256:
            problems.append("sha256 metadata missing or different")
        encryption = head.get("ServerSideEncryption")
        if encryption != self.expected_sse:
            problems.append(f"server-side encryption {encryption or 'none'} != expected {self.expected_sse}")
        return ObjectCheck(key, tuple(problems))

    def check_backup(self, prefix: str, objects, sealed: bool = False) -> list[str]:
        """Problems with a backup's stored objects (empty when every one is intact and nothing else is there).

        ``sealed``: the caller found its own manifest there already (:meth:`holds_manifest`)."""
        problems = []
        for obj in objects:
            check = self.check_object(obj.key, obj.size, obj.sha256, obj.s3_checksum)
            if not check.ok:
                problems.append(f"{check.key}: {'; '.join(check.problems)}")
        own_manifest = manifest_key(prefix) if sealed else None
        listed = {obj.key for obj in objects}
        for key in self.list_keys(prefix):
            if key == own_manifest:
                continue
            if key.endswith("/" + MANIFEST_NAME):
                problems.append(f"{key} already exists")
            elif key not in listed:
                problems.append(f"{key}: not part of this backup")
        return problems

    def holds_manifest(self, backup_prefix: str, manifest: Manifest) -> bool:
        """Whether ``manifest.json`` under ``backup_prefix`` is already exactly ``manifest``: the seal of
        a worker killed after writing it, retried."""
        try:
            found = self.read_json_or_none(manifest_key(backup_prefix))
        except ValueError:  # not JSON: not ours
            return False
        return found == json.loads(manifest.to_json())

    def dead_runs(self, base: str, own_prefix: str) -> tuple[list[str], list[str]]:
        """What workers killed mid-backup left under ``base`` (``<prefix>/<database>/<kind>/``), outside
        this run's ``own_prefix``: (multipart uploads aborted, backup ids with objects but no manifest).

        Only for a caller that knows no other backup of this kind runs (it holds the backup's lock):
        an open multipart upload is then a dead run's, unlisted yet billed until aborted. The
        incomplete backups are never listed or restored; retention deletes them once a day old."""
        aborted = []
        for page in self.client.get_paginator("list_multipart_uploads").paginate(Bucket=self.bucket, Prefix=base):
            for upload in page.get("Uploads", []):
                if upload["Key"].startswith(own_prefix + "/"):
                    continue
                self.client.abort_multipart_upload(Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"])
                aborted.append(upload["Key"])
        own_id = own_prefix.rstrip("/").rsplit("/", 1)[-1]
        incomplete = [e.backup_id for e in entries_from_keys(self.list_keys(base), base)
                      if not e.complete and e.backup_id != own_id]
        return aborted, incomplete

    def put_manifest(self, backup_prefix: str, manifest: Manifest) -> str:
        manifest.validate()
        key = manifest_key(backup_prefix)
        body = manifest.to_json().encode()
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/json",
                               ChecksumAlgorithm="SHA256", **self.sse_args, **self.lock_args(key))
        return key

    # the door every other module uses instead of reaching for ``client``: boto3 stays inside the store
    def is_missing(self, err: BaseException) -> bool:
        """Whether ``err`` (from any method here) says the object or version does not exist."""
        code = str((getattr(err, "response", None) or {}).get("Error", {}).get("Code", ""))
        return isinstance(err, self.client.exceptions.NoSuchKey) or code in ("404", "NoSuchKey", "NoSuchVersion")

    def head(self, key: str, version_id: str | None = None) -> dict | None:
        """The object's head (size, VersionId, Metadata, ServerSideEncryption...), None when it is absent."""
        try:
            return self.client.head_object(Bucket=self.bucket, Key=key,
                                           **({"VersionId": version_id} if version_id else {}))
        except Exception as err:
            if self.is_missing(err):
                return None
            raise

    def open_object(self, key: str, version_id: str | None = None) -> dict:
        """The GetObject response: ``Body`` streams (``iter_chunks``), the rest is the head."""
        return self.client.get_object(Bucket=self.bucket, Key=key, **({"VersionId": version_id} if version_id else {}))

    def get_bytes(self, key: str, version_id: str | None = None) -> bytes:
        return self.open_object(key, version_id)["Body"].read()

    def download(self, key: str, path: Path) -> None:
        self.client.download_file(self.bucket, key, str(path))

    def put_bytes(self, key: str, body: bytes, content_type: str, cache_control: str | None = None) -> str:
        """A small object (a page, a record), encrypted, checksummed and locked like every other."""
        extra = {"CacheControl": cache_control} if cache_control else {}
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType=content_type,
                               ChecksumAlgorithm="SHA256", **extra, **self.sse_args, **self.lock_args(key))
        return key

    def delete_key(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)

    def delete_keys(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = [{"Key": key} for key in keys[start:start + 1000]]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})

    def list_keys(self, prefix: str) -> list[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        keys = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix.rstrip("/") + "/"):
            keys.extend(obj["Key"] for obj in page.get("Contents", []))
        return keys

    def list_objects(self, prefix: str) -> list[tuple[str, object]]:
        """(key, LastModified) of every object under ``prefix``."""
        paginator = self.client.get_paginator("list_objects_v2")
        found = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=prefix.rstrip("/") + "/"):
            found.extend((obj["Key"], obj["LastModified"]) for obj in page.get("Contents", []))
        return found

    def read_manifest(self, key: str) -> Manifest:
        body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        try:
            return Manifest.from_json(body)
        except ManifestError as err:
            raise ManifestError(f"{key}: {err}") from None

    def read_json(self, key: str) -> dict:
        return json.loads(self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read())

    def read_json_or_none(self, key: str) -> dict | None:
        try:
            return self.read_json(key)
        except self.client.exceptions.NoSuchKey:
            return None

    def put_json(self, key: str, document: dict) -> str:
        body = json.dumps(document, indent=2, sort_keys=True, default=str).encode()
        self.client.put_object(Bucket=self.bucket, Key=key, Body=body, ContentType="application/json",
                               ChecksumAlgorithm="SHA256", **self.sse_args, **self.lock_args(key))
        return key

    def catalog(self, database: str, kind: str):
        """Every backup of a database and kind, oldest first, with its verification marker."""
        base = kind_prefix(self.prefix, database, kind)
        entries = entries_from_keys(self.list_keys(base), base)
        return [BackupEntry(e.backup_id, e.complete, e.has_marker,
                            self.read_json_or_none(marker_key(base + e.backup_id)) if e.has_marker else None)
                for e in entries]

    def stream_digest(self, key: str, chunk: int = 4 << 20) -> dict:
        """Download an object in chunks and hash it; returns size, sha256, encryption, metadata."""
        response = self.client.get_object(Bucket=self.bucket, Key=key)
        copied = copy_hashed(response["Body"], chunk=chunk)
        return {"size": copied.size, "sha256": copied.sha256, "sse": response.get("ServerSideEncryption"),
                "metadata": response.get("Metadata", {})}
