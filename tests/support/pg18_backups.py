"""PostgreSQL 18 base backups made by the bare tools, packed by pgdr's one tar writer, and put in S3 as pgdr
stores them (objects plus manifest.json), full or incremental, for the checks that read them back
(verification, retention). The backups are real; only their manifests are written here, so a test can
make chains, break them, and not wait for pg_backup_daily."""

from __future__ import annotations

import logging
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from harness.pg_cluster import PgCluster, free_port, pg_bindir
from tests.support.clusters import shared_dir


def bindir18() -> Path:
    """PostgreSQL 18's tools, or the test is skipped saying why."""
    try:
        return pg_bindir(18)
    except RuntimeError as err:
        pytest.skip(f"PostgreSQL 18 tools are not installed (pg_bindir(18): {err})")


@contextmanager
def pg18_cluster() -> Iterator[PgCluster]:
    """A running PostgreSQL 18 cluster (summarize_wal on) with one table of 20,000 rows; removed afterwards."""
    base = shared_dir("pgdr-pg18-")
    cluster = PgCluster(base_dir=base / "cluster", port=free_port(), bindir=bindir18())
    try:
        cluster.initdb()
        cluster.start()
        cluster.execute("CREATE TABLE visits (id int PRIMARY KEY, note text)")
        cluster.execute("INSERT INTO visits SELECT g, md5(g::text) FROM generate_series(1, 20000) g")
        yield cluster
    finally:
        cluster.destroy()
        shutil.rmtree(base, ignore_errors=True)


def take_base_backup(cluster: PgCluster, target: Path, parent_manifest: Path | None = None) -> Path:
    """A plain base backup by the bare pg_basebackup (as pgdr takes it; ``parent_manifest``: incremental against
    it), packed by pgdr's tar writer: ``target``/data.tar.zst and ``target``/backup_manifest. Returns ``target``."""
    from pgdr.core.compression import TarZstWriter

    target.mkdir(parents=True, exist_ok=True)
    data = target / "data"
    extra = []
    if parent_manifest is not None:
        readable = shared_dir("pgdr-parent-") / "backup_manifest"   # pg_basebackup reads it as the client (root)
        shutil.copyfile(parent_manifest, readable)
        extra.append(f"--incremental={readable}")
    subprocess.run([str(cluster.bindir / "pg_basebackup"), f"--pgdata={data}", "--format=plain",
                    "--wal-method=stream", "--checkpoint=fast", "--manifest-checksums=SHA256", "--no-sync", *extra],
                   env=cluster.tool_env(), check=True, capture_output=True)
    shutil.copyfile(data / "backup_manifest", target / "backup_manifest")
    with open(target / "data.tar.zst", "wb") as handle, TarZstWriter(handle, 1) as writer:
        writer.add_tree(data)
    shutil.rmtree(data)
    if parent_manifest is not None:
        shutil.rmtree(readable.parent, ignore_errors=True)
    return target


def publish(store, database: str, backup_id: str, local: Path, *, server_version_num: int = 180006,
            chain: list[str] | None = None) -> dict:
    """Upload ``local``'s data.tar.zst and backup_manifest as base backup ``backup_id`` of ``database`` and write
    its manifest (incremental when ``chain``, the ids from the full up to the parent, is given: the manifest
    contract's ``depends_on``, ``dump.chain`` and ``dump.backup_type``). Returns the manifest as a dict."""
    import json

    from pgdr.core.checksums import file_digest
    from pgdr.core.progress import Progress
    from pgdr.store.layout import backup_prefix, object_key
    from pgdr.store.manifest import Manifest, ObjectEntry

    prefix = backup_prefix(store.prefix, database, "base", backup_id)
    objects = []
    for name, role, compression in (("data.tar.zst", "base_tar", "zstd"), ("backup_manifest", "backup_manifest",
                                                                             "none")):
        path = local / name
        digest = file_digest(path, store.part_size)
        key = object_key(prefix, name)
        store.upload_file(path, key, digest, {}, Progress(name, logging.getLogger("publish")))
        objects.append(ObjectEntry(name=name, key=key, size=digest.size, sha256=digest.sha256, role=role,
                                   compression=compression))
    ranges = json.loads((local / "backup_manifest").read_bytes())["WAL-Ranges"]
    dump = {"format": "pg_basebackup plain -> tar.zst", "backup_type": "incremental" if chain else "full",
            "chain": list(chain or [])}
    manifest = Manifest(backup_id=backup_id, kind="base", database=database, dbname="postgres",
                        started_at="2026-12-06T10:00:00+00:00", finished_at="2026-12-06T10:00:05+00:00",
                        server_version="18.6", server_version_num=server_version_num, system_identifier=None,
                        objects=objects, row_counts={}, tool_versions={},
                        encryption={"sse": store.expected_sse, "kms_key_id": None}, dump=dump,
                        wal={"start_lsn": ranges[0]["Start-LSN"], "end_lsn": ranges[-1]["End-LSN"],
                             "timeline": int(ranges[0]["Timeline"])},
                        depends_on=chain[-1] if chain else None)
    store.put_manifest(prefix, manifest)
    return manifest.to_dict()
