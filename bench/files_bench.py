"""File backups: incremental manifest (pgdr) against a content-addressed layout, measured on moto's S3 server.

A tree of a few thousand files (care-commons style uploads: small scans, some larger PDFs), a full
backup, then 1 % of the files changed and a second backup. For each layout: bytes uploaded, S3
write requests (objects), seconds. The incremental layout is pgdr's own code
(:func:`pgdr.backup.files.run_files_backup`); the content-addressed one stores each distinct
file's zstd content under ``blobs/<sha256>`` (skipping those already there) plus an index.

    python bench/files_bench.py [--files 3000] [--changed 0.01] [--json out.json]
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import logging
import random
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugins"), str(REPO)]

import zstandard  # noqa: E402

from bench.common import Column, bench_store, create_bench_bucket, fixed, print_table  # noqa: E402
from harness.s3_server import start_s3_server  # noqa: E402
from pgdr.core.checksums import StreamDigest  # noqa: E402

BUCKET = "pgdr-bench-files"
TABLE = (Column("layout", 20, left=True, sep=""), Column("backup", 8, left=True, sep=""),
         Column("objects", 9, sep=""), Column("MB sent", 10, lambda sent: f"{sent / 1e6:.2f}", sep=""),
         Column("seconds", 9, fixed(".2f"), sep=""))


class CountingClient:
    """The boto3 client, counting write requests and bytes sent."""

    def __init__(self, client) -> None:
        self._client = client
        self.writes = 0
        self.bytes = 0

    def __getattr__(self, name):
        attr = getattr(self._client, name)
        if name in ("put_object", "upload_part"):
            def counted(**kwargs):
                self.writes += 1
                body = kwargs.get("Body")
                self.bytes += kwargs.get("ContentLength") or (len(body) if isinstance(body, bytes) else 0)
                return attr(**kwargs)
            return counted
        return attr

    def reset(self) -> None:
        self.writes = self.bytes = 0


def make_tree(root: Path, count: int, rng: random.Random) -> None:
    for n in range(count):
        folder = root / f"client_{n % 97:03d}" / f"{2020 + n % 6}"
        folder.mkdir(parents=True, exist_ok=True)
        size = rng.randrange(20_000, 400_000) if n % 50 == 0 else rng.randrange(500, 12_000)
        (folder / f"upload_{n:05d}.bin").write_bytes(rng.randbytes(size // 2) + b"\0" * (size - size // 2))


def change_files(root: Path, fraction: float, rng: random.Random) -> int:
    files = sorted(p for p in root.rglob("*") if p.is_file())
    chosen = rng.sample(files, max(1, int(len(files) * fraction)))
    for path in chosen:
        path.write_bytes(rng.randbytes(path.stat().st_size // 2 + 1) + b"changed")
    return len(chosen)


def incremental(store, counting, root: Path, work: Path, previous):
    from pgdr.backup.files import run_files_backup
    from pgdr.backup.files_reader import load_entries
    from pgdr.store.manifest import backup_prefix, new_backup_id

    backup_id = new_backup_id()
    prefix = backup_prefix(store.prefix, "bench", "files", backup_id)
    index = None
    if previous is not None:
        index = {"entries": load_entries(store, previous[0], previous[1], work / "prev")}
    counting.reset()
    started = time.monotonic()
    manifest = run_files_backup(database="bench", backup_id=backup_id, prefix=prefix, directories=[root],
                                store=store, workdir=work / backup_id, level=1,
                                previous=previous[0] if previous else None, previous_index=index,
                                base_reason="bench", kms_key_id=None, airflow={}, log=logging.getLogger("bench"))
    store.put_manifest(prefix, manifest)
    seconds = time.monotonic() - started
    return (manifest, prefix), {"seconds": round(seconds, 2), "objects": counting.writes, "bytes": counting.bytes}


def content_addressed(store, counting, root: Path, known: set[str]):
    counting.reset()
    started = time.monotonic()
    compressor = zstandard.ZstdCompressor(level=1, write_checksum=True)
    index = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        index.append({"path": str(path.relative_to(root)), "size": len(data), "sha256": sha,
                      "mtime_ns": path.stat().st_mtime_ns})
        if sha in known:
            continue
        body = compressor.compress(data)
        digest = StreamDigest(store.part_size)
        digest.update(body)
        checksum = base64.b64encode(bytes.fromhex(digest.finish().sha256)).decode()
        store.client.put_object(Bucket=store.bucket, Key=f"{store.prefix}/bench/blobs/{sha}", Body=body,
                                ContentLength=len(body), ChecksumAlgorithm="SHA256",
                                ChecksumSHA256=checksum, **store.sse_args)
        known.add(sha)
    body = compressor.compress(json.dumps(index).encode())
    store.client.put_object(Bucket=store.bucket, Key=f"{store.prefix}/bench/ca-index-{time.time_ns()}.json.zst",
                            Body=body, ContentLength=len(body), **store.sse_args)
    return {"seconds": round(time.monotonic() - started, 2), "objects": counting.writes, "bytes": counting.bytes}


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=3000)
    parser.add_argument("--changed", type=float, default=0.01)
    parser.add_argument("--json", default=None)
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING)
    rng = random.Random(11)
    work = Path(tempfile.mkdtemp(prefix="pgdr-files-bench-"))
    s3 = start_s3_server()
    try:
        create_bench_bucket(s3, BUCKET)
        counting = CountingClient(s3.client())
        store = bench_store(counting, BUCKET, "bench", 64 << 20, logging.getLogger("bench"))
        root = work / "uploads"
        make_tree(root, args.files, rng)
        total = sum(p.stat().st_size for p in root.rglob("*") if p.is_file())
        print(f"tree: {args.files} files, {total / 1e6:.1f} MB")
        results = {"files": args.files, "tree_bytes": total}
        previous, first = incremental(store, counting, root, work, None)
        ca_first = content_addressed(store, counting, root, known := set())
        changed = change_files(root, args.changed, rng)
        _, second = incremental(store, counting, root, work, previous)
        ca_second = content_addressed(store, counting, root, known)
        results.update(changed=changed, incremental={"first": first, "second": second},
                       content_addressed={"first": ca_first, "second": ca_second})
        print(f"{changed} files changed ({args.changed:.0%})")
        print_table(TABLE, ([name, label, run["objects"], run["bytes"], run["seconds"]]
                            for name, runs in (("incremental (pgdr)", (first, second)),
                                               ("content-addressed", (ca_first, ca_second)))
                            for label, run in zip(("full", "second"), runs, strict=True)), rule=None)
        if args.json:
            Path(args.json).write_text(json.dumps(results, indent=2))
    finally:
        s3.stop()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
