"""Reading what pgdr stored, with a plain S3 client (not pgdr's store), so a test checks the effect
independently of the code under test."""

from __future__ import annotations

import hashlib
import json
import logging
from pathlib import Path

import zstandard


def download_backup(client, bucket: str, manifest: dict, target: Path) -> Path:
    """Fetch a backup with a plain S3 client, check each object's sha256, unpack the zstd files."""
    prefix = manifest["objects"][0]["key"][: -len(manifest["objects"][0]["name"])]
    for obj in manifest["objects"]:
        assert obj["key"] == prefix + obj["name"]
        path = target / obj["name"]
        path.parent.mkdir(parents=True, exist_ok=True)
        body = client.get_object(Bucket=bucket, Key=obj["key"])["Body"].read()
        assert hashlib.sha256(body).hexdigest() == obj["sha256"], obj["key"]
        if path.suffix == ".zst":
            path.with_suffix("").write_bytes(zstandard.ZstdDecompressor().decompressobj().decompress(body))
        else:
            path.write_bytes(body)
    return target


def plain_store(client, prefix: str, *, bucket: str | None = None, log: logging.Logger | None = None, **options):
    """pgdr's BackupStore on the test S3 server under ``prefix``: SSE-S3, 64 MiB parts, no Object Lock
    unless ``options`` (lock_policy, backup_lock_date, sse_args, part_size) say otherwise."""
    from harness.stack import BUCKET
    from pgdr.store.s3 import BackupStore

    options = {"sse_args": {"ServerSideEncryption": "AES256"}, "part_size": 64 << 20} | options
    return BackupStore(client=client, bucket=bucket or BUCKET, prefix=prefix, log=log or logging.getLogger("test"),
                       **options)


def objects(client, prefix: str, bucket: str | None = None) -> dict[str, dict]:
    """Every object under ``prefix`` (all pages), by key."""
    from harness.stack import BUCKET

    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket or BUCKET, Prefix=prefix)
    return {obj["Key"]: obj for page in pages for obj in page.get("Contents", [])}


def object_keys(client, prefix: str, bucket: str | None = None) -> list[str]:
    """The keys under ``prefix`` (all pages), sorted."""
    return sorted(objects(client, prefix, bucket))


def object_versions(client, prefix: str, bucket: str | None = None, delete_markers: bool = False) -> list[dict]:
    """Every stored version under ``prefix`` (all pages), delete markers too if asked."""
    from harness.stack import BUCKET

    pages = client.get_paginator("list_object_versions").paginate(Bucket=bucket or BUCKET, Prefix=prefix)
    kinds = ("Versions", "DeleteMarkers") if delete_markers else ("Versions",)
    return [version for page in pages for kind in kinds for version in page.get(kind, [])]


def json_records(client, prefix: str, suffix: str = ".json", bucket: str | None = None) -> list[dict]:
    """The JSON objects under ``prefix`` whose keys end with ``suffix``, in key order (the restore and
    drill reports under ``<prefix>/reports/restore/``, for example)."""
    from harness.stack import BUCKET

    keys = [key for key in object_keys(client, prefix, bucket) if key.endswith(suffix)]
    return [json.loads(client.get_object(Bucket=bucket or BUCKET, Key=key)["Body"].read()) for key in keys]
