"""The one tar.zst format: written by TarZstWriter, read by read_tar_zst / extract_tar_zst. Pure, no services."""

import hashlib
import io
import os
import tarfile

import pytest
import zstandard

from pgdr.core.compression import ArchiveError, TarZstWriter, extract_tar_zst, read_tar_zst


def _archive(members, level=3) -> bytes:
    buffer = io.BytesIO()
    with TarZstWriter(buffer, level, part_size=1 << 16) as writer:
        for name, content in members:
            writer.add_bytes(name, content, 0o640, 1_700_000_000)
    return buffer.getvalue()


MEMBERS = [("PG_VERSION", b"15\n"), ("base/1/1259", os.urandom(200_000) + b"\0" * 3_000_000),
           ("global/pg_control", b"x" * 8192)]


def test_round_trip_members_and_digest():
    buffer = io.BytesIO()
    with TarZstWriter(buffer, 1, part_size=1 << 16) as writer:
        for name, content in MEMBERS:
            writer.add_bytes(name, content, 0o600, 1_700_000_000)
    blob = buffer.getvalue()
    # the digest is of the compressed bytes, as uploaded; raw_size the tar's
    assert writer.digest.size == len(blob) and writer.digest.sha256 == hashlib.sha256(blob).hexdigest()
    assert writer.raw_size > sum(len(c) for _, c in MEMBERS) and writer.raw_size % tarfile.RECORDSIZE == 0
    with read_tar_zst(io.BytesIO(blob)) as tar:
        found = {m.name: tar.extractfile(m).read() for m in tar}
    assert found == dict(MEMBERS)


def test_round_trip_of_a_tree_with_a_link_through_a_file(tmp_path):
    source = tmp_path / "data"
    (source / "base" / "1").mkdir(parents=True)
    (source / "PG_VERSION").write_text("15\n")
    (source / "base" / "1" / "1259").write_bytes(os.urandom(70_000))
    (source / "current").symlink_to("base/1/1259")
    archive = tmp_path / "data.tar.zst"
    with open(archive, "wb") as handle, TarZstWriter(handle, 3) as writer:
        writer.add_tree(source)
    restored = tmp_path / "restored"
    assert extract_tar_zst(archive, restored) == 5   # base, base/1, base/1/1259, PG_VERSION, current
    assert (restored / "base" / "1" / "1259").read_bytes() == (source / "base" / "1" / "1259").read_bytes()
    assert (restored / "current").is_symlink() and os.readlink(restored / "current") == "base/1/1259"
    assert (restored / "PG_VERSION").read_text() == "15\n"


def test_an_archive_written_by_one_shot_zstd_reads_the_same():
    """Configuration backups taken before the one writer compressed the tar in one call."""
    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo("etc/app.conf")
        info.size = 4
        tar.addfile(info, io.BytesIO(b"a=1\n"))
    blob = zstandard.ZstdCompressor(level=3, write_checksum=True).compress(plain.getvalue())
    with read_tar_zst(io.BytesIO(blob)) as tar:
        assert {m.name: tar.extractfile(m).read() for m in tar} == {"etc/app.conf": b"a=1\n"}


@pytest.mark.parametrize("keep", [0.5, 0.999, "checksum", "between members"])
def test_an_archive_cut_short_is_refused(keep, tmp_path):
    blob = _archive(MEMBERS)
    if keep == "checksum":
        cut = len(blob) - 4   # every byte of data there, only zstd's frame checksum missing
    elif keep == "between members":
        # a second frame cut right after its start: zstd's own streaming reader would just stop there
        cut = len(blob) + 6
        blob += _archive([("extra", b"y" * 1000)])
    else:
        cut = int(len(blob) * keep)
    with pytest.raises(ArchiveError, match="cut short"):
        with read_tar_zst(io.BytesIO(blob[:cut])) as tar:
            for member in tar:
                tar.extractfile(member).read()
    target = tmp_path / "out"
    with pytest.raises(ArchiveError, match="cut short"):
        extract_tar_zst(io.BytesIO(blob[:cut]), target)


def test_a_corrupt_archive_is_refused():
    blob = bytearray(_archive(MEMBERS))
    blob[len(blob) // 2] ^= 0x5A
    with pytest.raises(ArchiveError, match="corrupt"):
        with read_tar_zst(io.BytesIO(bytes(blob))) as tar:
            for member in tar:
                tar.extractfile(member).read()


def test_something_that_is_not_zstd_is_refused():
    with pytest.raises(ArchiveError, match="not zstd"):
        with read_tar_zst(io.BytesIO(b"PK\x03\x04" + b"\0" * 600)) as tar:
            list(tar)


def _hostile(member: tarfile.TarInfo, content: bytes = b"") -> bytes:
    plain = io.BytesIO()
    with tarfile.open(fileobj=plain, mode="w", format=tarfile.PAX_FORMAT) as tar:
        member.size = len(content)
        tar.addfile(member, io.BytesIO(content))
    return zstandard.ZstdCompressor(level=1, write_checksum=True).compress(plain.getvalue())


def _link(name: str, target: str, kind=tarfile.SYMTYPE) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, target
    return info


@pytest.mark.parametrize("member", [
    tarfile.TarInfo("../escaped"),
    tarfile.TarInfo("/tmp/pgdr-absolute"),
    _link("innocent", "/etc/passwd"),
    _link("up", "../../outside"),
    _link("hard", "/etc/shadow", tarfile.LNKTYPE),
], ids=["dotdot", "absolute", "absolute-symlink", "relative-symlink-out", "hardlink-out"])
def test_extraction_refuses_members_leaving_the_target(member, tmp_path):
    target = tmp_path / "deep" / "target"
    with pytest.raises(ArchiveError, match="outside"):
        extract_tar_zst(io.BytesIO(_hostile(member, b"owned" if member.isfile() else b"")), target)
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["deep", "target"]   # nothing landed anywhere


def test_extraction_refuses_a_device_file(tmp_path):
    device = tarfile.TarInfo("dev-null")
    device.type = tarfile.CHRTYPE
    with pytest.raises(ArchiveError):
        extract_tar_zst(io.BytesIO(_hostile(device)), tmp_path / "target")
    assert not (tmp_path / "target" / "dev-null").exists()


def test_a_tree_is_plain_ustar_and_copy_to_keeps_the_whole_tar(tmp_path):
    """PostgreSQL's tar reader (pg_verifybackup --format=tar, 18+) refuses pax extended headers: a data
    directory's tar has none (tarfile wrote one per member for sub-second mtimes), and ``copy_to``
    receives the tar byte for byte while the members are read."""
    source = tmp_path / "data"
    (source / "base" / "1").mkdir(parents=True)
    (source / "PG_VERSION").write_text("18\n")
    (source / "base" / "1" / "1259").write_bytes(os.urandom(70_000))
    os.utime(source / "PG_VERSION", (1_700_000_000.25, 1_700_000_000.75))
    archive = tmp_path / "data.tar.zst"
    with open(archive, "wb") as handle, TarZstWriter(handle, 3) as writer:
        writer.add_tree(source)
    copy = io.BytesIO()
    with read_tar_zst(archive, copy_to=copy) as tar:
        names = [m.name for m in tar]
    assert names == ["PG_VERSION", "base", "base/1", "base/1/1259"]
    plain = copy.getvalue()
    assert len(plain) == writer.raw_size
    assert plain == zstandard.ZstdDecompressor().stream_reader(io.BytesIO(archive.read_bytes())).read()
    with tarfile.open(fileobj=io.BytesIO(plain)) as tar:
        assert not tar.pax_headers and all(not m.pax_headers for m in tar)
        assert tar.getmember("PG_VERSION").mtime == 1_700_000_000
    # the typeflag of every 512-byte header: no 'x' (pax) or 'g' (global pax) anywhere
    headers, offset = [], 0
    while offset < len(plain) and plain[offset:offset + 512].strip(b"\0"):
        header = plain[offset:offset + 512]
        headers.append(header[156:157])
        size = int(header[124:136].strip(b"\0 ") or b"0", 8)
        offset += 512 + (size + 511) // 512 * 512
    assert headers and b"x" not in headers and b"g" not in headers
