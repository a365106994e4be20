"""PostgreSQL 18: the stored ``data.tar.zst`` verified as stored (pgdr.backup.stored_tar), on a real 18.6 cluster.

The base backups are taken by the bare pg_basebackup and packed by pgdr's one tar writer
(TarZstWriter.add_tree, as pg_basebackup.tar_zstd does; tests.support.pg18_backups); the bad archives
are made from a good one by hand: a flipped byte inside a data file (zstd's checksum still good), a WAL
segment left out, the archive cut short, the pax headers older pgdr tars carry.
"""

from __future__ import annotations

import io
import logging
import tarfile
from pathlib import Path

import pytest
import zstandard

from harness.pg_cluster import pg_bindir
from pgdr.backup.stored_tar import StoredTarInvalid, verify_stored_tar
from pgdr.core.compression import TarZstWriter
from pgdr.core.pgtools import ToolMissing
from tests.support.pg18_backups import bindir18, pg18_cluster, take_base_backup

LOG = logging.getLogger("test_stored_tar")


@pytest.fixture(scope="module")
def pg18():
    with pg18_cluster() as cluster:
        yield cluster


@pytest.fixture(scope="module")
def full(pg18, tmp_path_factory):
    return take_base_backup(pg18, tmp_path_factory.mktemp("full"))


def _plain(archive: Path) -> bytes:
    with open(archive, "rb") as handle:
        return zstandard.ZstdDecompressor().stream_reader(handle).read()


def _repack(plain: bytes, target: Path, keep=lambda member: True, pax: bool = False) -> Path:
    """The members of ``plain`` (kept by ``keep``) through pgdr's writer into ``target``; ``pax``: every member
    with a sub-second mtime, as tarfile wrote pgdr's tars before they were made plain ustar."""
    with tarfile.open(fileobj=io.BytesIO(plain)) as source, open(target, "wb") as handle, \
            TarZstWriter(handle, 1) as writer:
        for member in source:
            if not keep(member):
                continue
            if pax:
                member.mtime += 0.5
            writer.add_stream(member, source.extractfile(member) if member.isfile() else None)
    return target


def _verify(backup: Path, archive: Path | None = None, bindir: Path | None = None, workdir: Path | None = None):
    work = workdir or backup / "work"
    verify_stored_tar(archive or backup / "data.tar.zst", backup / "backup_manifest", bindir or bindir18(), work,
                      LOG)
    return work


def test_the_stored_tar_of_a_full_backup_verifies_and_leaves_no_scratch(full):
    work = _verify(full)
    assert list(work.iterdir()) == []   # the plain tar and the WAL copy are removed


def test_a_flipped_byte_in_a_data_file_is_refused_naming_the_file(full, tmp_path):
    """zstd's frame checksum is of the new bytes, so only the manifest's SHA-256 can tell."""
    plain = bytearray(_plain(full / "data.tar.zst"))
    with tarfile.open(fileobj=io.BytesIO(bytes(plain))) as tar:
        member = next(m for m in tar if m.isfile() and m.name.startswith("base/") and m.size > 8192)
    plain[member.offset_data + 100] ^= 0xFF
    bad = tmp_path / "data.tar.zst"
    bad.write_bytes(zstandard.ZstdCompressor(level=1, write_checksum=True).compress(bytes(plain)))
    with pytest.raises(StoredTarInvalid, match=rf"pg_verifybackup rejected the stored base backup[\s\S]*"
                                               rf"{member.name}"):
        _verify(full, archive=bad)


def test_a_missing_wal_segment_is_refused_by_pg_waldump(full, tmp_path):
    plain = _plain(full / "data.tar.zst")
    bad = _repack(plain, tmp_path / "data.tar.zst",
                  keep=lambda m: not (m.isfile() and m.name.startswith("pg_wal/0000")))
    with pytest.raises(StoredTarInvalid, match="pg_waldump rejected the stored base backup"):
        _verify(full, archive=bad)


def test_an_archive_cut_short_is_refused(full, tmp_path):
    blob = (full / "data.tar.zst").read_bytes()
    bad = tmp_path / "data.tar.zst"
    bad.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(StoredTarInvalid, match="cannot be read: the archive is cut short"):
        _verify(full, archive=bad)


def test_a_tar_with_pax_headers_is_refused_by_name(full, tmp_path):
    """What pgdr wrote before add_tree's whole seconds: PostgreSQL's tar reader refuses pax."""
    bad = _repack(_plain(full / "data.tar.zst"), tmp_path / "data.tar.zst", pax=True)
    with pytest.raises(StoredTarInvalid, match="pax extensions to tar format are not supported"):
        _verify(full, archive=bad)


def test_tools_older_than_18_are_refused_naming_the_tool(full):
    try:
        old = pg_bindir(15)
    except RuntimeError as err:
        pytest.skip(f"no PostgreSQL 15 tools: {err}")
    with pytest.raises(ToolMissing, match="pg_verifybackup in .* is PostgreSQL 15"):
        _verify(full, bindir=old)


def test_the_stored_tar_of_an_incremental_backup_verifies(pg18, full, tmp_path):
    """PG 17+ block-level incremental (INCREMENTAL.* members) against the full's manifest."""
    pg18.execute("UPDATE visits SET note = note || 'x' WHERE id % 100 = 0")
    incremental = take_base_backup(pg18, tmp_path, parent_manifest=full / "backup_manifest")
    with tarfile.open(fileobj=io.BytesIO(_plain(incremental / "data.tar.zst"))) as tar:
        assert any(Path(m.name).name.startswith("INCREMENTAL.") for m in tar)
    _verify(incremental)
