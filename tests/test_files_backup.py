"""File backups in pg_backup_daily on real services: what is stored, and that unchanged files are not sent again.

Checked from the outside: objects listed and fetched with a plain S3 client, the archive
unpacked with Python's tarfile and zstandard, hashes computed here.
"""

from __future__ import annotations

import hashlib
import io
import json
import tarfile
from datetime import datetime, timedelta, timezone

import pytest
import zstandard

from harness.stack import BUCKET, CONN_ID
from tests.support.file_backups import LARGE_BYTES, PREFIX, manifest_of, objects_under


def _index(stack, manifest: dict) -> dict:
    entry = next(o for o in manifest["objects"] if o["name"] == "index.json.zst")
    raw = stack.s3.client().get_object(Bucket=BUCKET, Key=entry["key"])["Body"].read()
    assert hashlib.sha256(raw).hexdigest() == entry["sha256"]
    return json.loads(zstandard.ZstdDecompressor().decompressobj().decompress(raw))


def test_the_daily_run_backs_up_files_and_config_beside_the_database(backups):
    states = backups["runs"][0]["states"]
    for task in ("dump_and_upload", "verify_and_seal", "files_backup", "seal_files", "config_backup", "seal_config"):
        assert states[f"backup.{task}[0]"] == "success", states


def test_each_seal_emits_an_asset_event_naming_its_backup(backups):
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.settings import Session

    first = backups["runs"][0]
    for kind in ("files", "config"):
        events = (Session().query(AssetEvent).join(AssetModel, AssetEvent.asset_id == AssetModel.id)
                  .filter(AssetModel.name == f"pgdr_{kind}_backup", AssetEvent.source_run_id == first["run_id"]).all())
        assert [(e.extra["kind"], e.extra["backup_id"]) for e in events] == [(kind, first[kind]["backup_id"])]


def test_first_backup_holds_every_file_with_path_size_mtime_and_sha256(stack, backups):
    first = backups["runs"][0]
    manifest = manifest_of(stack, first["files"])
    assert manifest["kind"] == "files" and manifest["dump"]["depends_on"] == []
    prefix = f"{PREFIX}/{CONN_ID}/files/{manifest['backup_id']}/"
    assert set(objects_under(stack, prefix)) == {prefix + "dirs/0.tar.zst", prefix + "index.json.zst",
                                                  prefix + "manifest.json"}
    index = _index(stack, manifest)
    files = {e["path"]: e for e in index["entries"] if e["type"] == "file"}
    expected = {path: state for path, state in first["tree"].items() if state[0] == "file"}
    assert {p: (e["sha256"], e["size"], e["mtime_ns"]) for p, e in files.items()} == \
        {p: state[1:] for p, state in expected.items()}
    assert len(files) == 301
    # the archive, unpacked independently, holds exactly those bytes
    archive = next(o for o in manifest["objects"] if o["name"] == "dirs/0.tar.zst")
    response = stack.s3.client().get_object(Bucket=BUCKET, Key=archive["key"], ChecksumMode="ENABLED")
    assert response["ServerSideEncryption"] == "AES256"
    assert response["ChecksumSHA256"].endswith("-2"), "the archive over the part size went up in parts"
    body = response["Body"].read()
    assert len(body) > LARGE_BYTES and hashlib.sha256(body).hexdigest() == archive["sha256"]
    with tarfile.open(fileobj=io.BytesIO(zstandard.ZstdDecompressor().decompressobj().decompress(body))) as tar:
        found = {m.name: hashlib.sha256(tar.extractfile(m).read()).hexdigest() for m in tar if m.isfile()}
    assert found == {p: e["sha256"] for p, e in files.items()}
    # the symlink is recorded as a link, the FIFO reported, not silently dropped
    links = [e for e in index["entries"] if e["type"] == "symlink"]
    assert links == [{"dir": str(backups["uploads"]), "path": "latest_scan", "type": "symlink",
                      "target": "client_00/visit_0/scan_000.txt", "mtime_ns": links[0]["mtime_ns"]}]
    assert [(s["path"], s["type"]) for s in index["skipped"]] == [("upload.pipe", "fifo")]
    assert manifest["dump"]["skipped"] == 1 and manifest["dump"]["changed_while_read"] == 0


def test_second_backup_uploads_only_the_changed_content(stack, backups):
    first, second = (manifest_of(stack, run["files"]) for run in backups["runs"])
    assert second["dump"]["depends_on"] == [first["backup_id"]]
    assert second["dump"]["full_backup_id"] == first["backup_id"]
    assert (second["dump"]["uploaded_files"], second["dump"]["files"]) == (2, 301)
    first_bytes = sum(objects_under(stack, f"{PREFIX}/{CONN_ID}/files/{first['backup_id']}/").values())
    second_objects = objects_under(stack, f"{PREFIX}/{CONN_ID}/files/{second['backup_id']}/")
    assert len(second_objects) == 3   # one small archive, the index, the manifest
    archive = next(o for o in second["objects"] if o["name"] == "dirs/0.tar.zst")
    assert archive["size"] < 2048 and sum(second_objects.values()) < first_bytes / 100
    files = {e["path"]: e for e in _index(stack, second)["entries"] if e["type"] == "file"}
    assert "client_04/visit_4/scan_004.txt" not in files
    assert files["client_03/visit_3/scan_003.txt"]["backup_id"] == second["backup_id"]
    assert files["client_05/new_scan.txt"]["backup_id"] == second["backup_id"]
    assert files["archive/large.bin"]["backup_id"] == first["backup_id"]


def test_a_chain_gets_a_new_full_backup_after_seven_days():
    from pgdr.backup.files import choose_previous
    from pgdr.store.manifest import Manifest, ObjectEntry

    def manifest(backup_id, dump):
        return Manifest(backup_id=backup_id, kind="files", database="db", dbname="", started_at="", finished_at="",
                        server_version="", server_version_num=0, system_identifier=None,
                        objects=[ObjectEntry("index.json.zst", "k", 1, "0" * 64, "file_index")], row_counts={},
                        tool_versions={}, encryption={}, dump=dump)

    now = datetime(2026, 3, 10, 2, tzinfo=timezone.utc)
    recent = manifest("20260309T020000Z", {"full_backup_id": "20260305T020000Z", "depends_on": ["20260305T020000Z"]})
    assert choose_previous(recent, set(), now)[0] is True
    assert choose_previous(recent, set(), now + timedelta(days=2))[0] is False
    use, reason = choose_previous(recent, {"20260305T020000Z"}, now)
    assert not use and "found bad" in reason
    assert choose_previous(None, set(), now) == (False, "full: no earlier good file backup")



def test_a_file_that_changes_while_read_is_stored_as_read_flagged_and_taken_again(tmp_path):
    from pathlib import Path

    from pgdr.backup.files import unchanged, write_archive

    # /proc/self/status says 0 bytes but has more to read: a file that grew while being read
    entry = {"path": "status", "type": "file", "size": 0, "mtime_ns": 0, "mode": 0o444}
    _, _, vanished = write_archive(Path("/proc/self"), [entry], tmp_path / "a.tar.zst", 1, 5 << 20)
    assert vanished == [] and entry["changed_while_read"] is True
    assert entry["sha256"] == hashlib.sha256(b"").hexdigest()  # exactly what was stored
    assert not unchanged(dict(entry), entry), "the next backup must read it again"
    gone = {"path": "no-such-file", "type": "file", "size": 1, "mtime_ns": 0, "mode": 0o644}
    _, _, vanished = write_archive(tmp_path, [gone], tmp_path / "b.tar.zst", 1, 5 << 20)
    assert vanished == [gone]


@pytest.mark.parametrize("path", ["../etc/passwd", "/etc/passwd", "a/../../b"])
def test_an_index_entry_cannot_escape_the_target(tmp_path, path):
    from pgdr.backup.files import FileBackupError, dest_path

    with pytest.raises(FileBackupError, match="leaves its directory"):
        dest_path(tmp_path, "/srv/uploads", path)


def test_a_file_or_directory_swapped_for_a_symlink_after_the_scan_is_not_followed(tmp_path):
    """Item 25: between the scan and the read, a file becomes a symlink to a secret outside the
    directory, a subdirectory a symlink to another directory, and a file a hard link to a secret:
    none of the secrets reaches the archive; the entries are skipped and listed."""
    import os
    import shutil

    import zstandard

    from pgdr.backup.files import scan_directory, write_archive

    sentinel = "SECRET-OUTSIDE-THE-DIR-5d1c"
    root = tmp_path / "uploads"
    (root / "sub").mkdir(parents=True)
    for name in ("a.txt", "sub/b.txt", "c.txt", "d.txt"):
        (root / name).write_text(f"public {name}")
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text(sentinel)
    (outside / "b.txt").write_text(sentinel)
    entries, _ = scan_directory(root)
    fresh = [e for e in entries if e["type"] == "file"]

    (root / "a.txt").unlink()
    (root / "a.txt").symlink_to(outside / "secret.txt")
    shutil.rmtree(root / "sub")
    (root / "sub").symlink_to(outside)
    (root / "c.txt").unlink()
    os.link(outside / "secret.txt", root / "c.txt")  # same name, another file

    _, _, vanished = write_archive(root, fresh, tmp_path / "out.tar.zst", 1, 5 << 20)
    stored = zstandard.ZstdDecompressor().decompressobj().decompress((tmp_path / "out.tar.zst").read_bytes())
    assert sentinel.encode() not in stored
    assert sorted(e["path"] for e in vanished) == ["a.txt", "c.txt", "sub/b.txt"]
    assert b"public d.txt" in stored
