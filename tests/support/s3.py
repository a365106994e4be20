"""Reading what pgdr stored, with a plain S3 client (not pgdr's store), so a test checks the effect
independently of the code under test."""

from __future__ import annotations

import hashlib
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
