"""pg_restore with kind files and config, the drill of both, and verification catching a tampered archive.

Restored trees are compared with the source by sha256, size and mtime computed here; refusals
are checked by the record in S3 and by the target directory left exactly as it was.
"""

from __future__ import annotations

import json
import logging
import os

import pytest

from harness.stack import BUCKET, CONN_ID
from tests.support.dags import run_dag, task_states, xcom_values
from tests.support.file_backups import OTHER_KEY, PREFIX, SECRET, manifest_of, tree_state


@pytest.fixture()
def env(stack, backups, monkeypatch, tmp_path):
    stack.slack.clear()
    for name, value in backups["env"].items():
        monkeypatch.setenv(name, value)
    # restores go under this test's own directory (the default root, /var/lib/pgdr/restores, is the worker's)
    monkeypatch.setenv("AIRFLOW_VAR_PGDR_RESTORE_TARGET_DIRS", json.dumps([str(tmp_path)]))
    return backups


def _restore(conf: dict):
    dag_run = run_dag("pg_restore", conf={"database": CONN_ID, **conf})
    return dag_run, task_states(dag_run)


def _last_record(stack) -> dict:
    client = stack.s3.client()
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/reports/restore/")
                  .get("Contents", []))
    return json.loads(client.get_object(Bucket=BUCKET, Key=keys[-1])["Body"].read())


def test_files_restored_into_an_empty_dir_are_identical(stack, env, tmp_path):
    target = tmp_path / "restored"
    dag_run, states = _restore({"kind": "files", "target_dir": str(target)})
    assert str(dag_run.state) == "success", states
    restored = tree_state(target / str(env["uploads"]).lstrip("/"))
    assert restored == env["runs"][-1]["tree"]   # hashes, sizes, mtimes, the link, the empty dir
    assert "client_04/visit_4/scan_004.txt" not in restored and "upload.pipe" not in restored
    (outcome,) = xcom_values(dag_run, "restore")
    assert (outcome["files"], outcome["hash_mismatches"], outcome["symlinks"]) == (301, 0, 1)
    assert outcome["archives"] == 2   # the chain: the unchanged files come from the first backup
    record = _last_record(stack)
    assert record["status"] == "succeeded" and record["plan"]["kind"] == "files"
    assert "scan_" not in json.dumps(record)   # counts and bytes, no file names or contents
    (alert,) = [text for text in stack.slack.texts() if "restore of care_commons_db succeeded" in text]
    assert "301 / " in alert and str(target) in alert and "None" not in alert


def test_a_non_empty_dir_is_refused_without_the_confirmation_and_left_as_it_was(stack, env, tmp_path):
    target = tmp_path / "busy"
    existing = target / str(env["uploads"]).lstrip("/") / "archive" / "large.bin"
    existing.parent.mkdir(parents=True)
    existing.write_bytes(b"what is there now")
    (target / "notes.txt").write_text("keep me")
    before = tree_state(target)
    dag_run, states = _restore({"kind": "files", "target_dir": str(target)})
    assert str(dag_run.state) == "failed" and states["prepare"] == "failed" and states["restore"] == "upstream_failed"
    assert tree_state(target) == before
    record = _last_record(stack)
    assert record["status"] == "refused"
    assert f"target_dir {target} is not empty" in record["error"]
    assert "type exactly 'RESTORE care_commons_db' in confirm" in record["error"]

    dag_run, states = _restore({"kind": "files", "target_dir": str(target), "confirm": "RESTORE care_commons_db"})
    assert str(dag_run.state) == "success", states
    assert tree_state(target / str(env["uploads"]).lstrip("/")) == env["runs"][-1]["tree"]
    assert (target / "notes.txt").read_text() == "keep me"


def _dir_state(path) -> tuple:
    info = os.stat(path)
    return info.st_mode, info.st_mtime_ns


def test_links_already_in_a_non_empty_target_are_replaced_never_followed(stack, env, tmp_path):
    """A restore over a directory holding links that lead outside it (a directory of the backup, a file, a
    directory whose mode and mtime the restore sets) writes nothing outside: the links are replaced."""
    outside = tmp_path / "outside"
    (outside / "visit_1").mkdir(parents=True)
    (outside / "visit_1" / "scan_001.txt").write_text("not to be overwritten")
    (outside / "victim.txt").write_text("nor this")
    (outside / "empty").mkdir()
    os.chmod(outside / "empty", 0o751)
    os.utime(outside / "empty", ns=(1_000_000_000, 1_000_000_000))
    before = tree_state(outside)
    modes = {p: _dir_state(p) for p in (outside, outside / "visit_1", outside / "empty")}

    target = tmp_path / "busy"
    restored = target / str(env["uploads"]).lstrip("/")
    (restored / "archive").mkdir(parents=True)
    os.symlink(outside, restored / "client_01")                        # a directory of the backup
    os.symlink(outside / "victim.txt", restored / "archive" / "large.bin")   # a file of the backup
    os.symlink(outside / "empty", restored / "empty_dir")              # a directory whose mode is set
    dag_run, states = _restore({"kind": "files", "target_dir": str(target), "confirm": "RESTORE care_commons_db"})
    assert str(dag_run.state) == "success", states
    assert tree_state(outside) == before
    assert {p: _dir_state(p) for p in modes} == modes
    assert tree_state(restored) == env["runs"][-1]["tree"]
    assert not any(p.is_symlink() for p in (restored / "client_01", restored / "archive" / "large.bin",
                                             restored / "empty_dir"))


@pytest.mark.parametrize("target_dir", ["//.", "/proc/self/root"])
def test_a_target_dir_that_is_root_in_disguise_is_refused(stack, env, target_dir):
    dag_run, states = _restore({"kind": "files", "target_dir": target_dir, "confirm": "RESTORE care_commons_db"})
    assert str(dag_run.state) == "failed" and states["prepare"] == "failed" and states["restore"] == "upstream_failed"
    record = _last_record(stack)
    assert record["status"] == "refused"
    assert f"target_dir {target_dir!r} (resolves to '/') must be a directory of its own, not /" in record["error"]


def test_config_restore_gives_back_the_secrets_with_the_right_key_only(stack, env, tmp_path, monkeypatch):
    target = tmp_path / "config"
    dag_run, states = _restore({"kind": "config", "target_dir": str(target)})
    assert str(dag_run.state) == "success", states
    restored = target / str(env["config"]).lstrip("/")
    assert (restored / ".env").read_bytes() == (env["config"] / ".env").read_bytes()
    assert tree_state(restored) == tree_state(env["config"])
    (outcome,) = xcom_values(dag_run, "restore")
    assert (outcome["files"], outcome["encrypted_files"]) == (3, 2)
    assert SECRET not in json.dumps(_last_record(stack))

    monkeypatch.setenv("AIRFLOW_CONN_PGDR_CONFIG_KEY", json.dumps({"conn_type": "generic", "password": OTHER_KEY}))
    dag_run, states = _restore({"kind": "config", "target_dir": str(tmp_path / "wrong-key")})
    assert str(dag_run.state) == "failed" and states["prepare"] == "failed"
    assert not (tmp_path / "wrong-key").exists()
    record = _last_record(stack)
    assert record["status"] == "refused" and "is not the key this backup was sealed with" in record["error"]
    assert OTHER_KEY not in json.dumps(record)

    monkeypatch.delenv("AIRFLOW_CONN_PGDR_CONFIG_KEY")
    dag_run, states = _restore({"kind": "config", "target_dir": str(tmp_path / "no-key")})
    assert str(dag_run.state) == "failed" and not (tmp_path / "no-key").exists()
    assert "the config key connection 'pgdr_config_key' is missing" in _last_record(stack)["error"]


def test_the_drill_restores_files_and_config_into_a_scratch_dir_and_compares_hashes(stack, env):
    dag_run = run_dag("pg_restore_test")
    assert str(dag_run.state) == "success", task_states(dag_run)
    client = stack.s3.client()
    key = sorted(o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix=f"{PREFIX}/reports/drill/")
                 ["Contents"])[-1]
    record = json.loads(client.get_object(Bucket=BUCKET, Key=key)["Body"].read())
    drills = {d["kind"]: d for d in record["file_restores"]}
    assert drills["files"]["status"] == "ok" and drills["files"]["files"] == 301 and drills["files"]["hashes_match"]
    assert drills["config"]["status"] == "ok" and drills["config"]["encrypted_files"] == 2
    scratch = env["work"] / "staging" / CONN_ID / "drill"
    assert not scratch.exists() or not any(scratch.iterdir())


def test_a_tampered_archive_is_caught_by_the_deep_check_and_refused_for_restore(stack, env, tmp_path):
    from pgdr.store.s3 import BackupStore
    from pgdr.verify.backups import check_integrity

    first = manifest_of(stack, env["runs"][0]["files"])
    archive = next(o for o in first["objects"] if o["name"] == "dirs/0.tar.zst")
    client = stack.s3.client()
    original = client.get_object(Bucket=BUCKET, Key=archive["key"])["Body"].read()
    tampered = client.put_object(Bucket=BUCKET, Key=archive["key"], Body=original[:-10] + b"X" * 10,
                                 ServerSideEncryption="AES256", Metadata={"sha256": archive["sha256"]})
    markers = []
    try:
        store = BackupStore(client=client, bucket=BUCKET, prefix=PREFIX, sse_args={"ServerSideEncryption": "AES256"},
                            part_size=5 << 20, log=logging.getLogger("t"))
        outcome = check_integrity(store, CONN_ID, env["env"].get("AIRFLOW_VAR_PGDR_PG_BINDIR") or
                                  "/usr/lib/postgresql/15/bin", "test-run", logging.getLogger("t"), deep=True)
        markers = [o["Key"] for o in client.list_objects_v2(Bucket=BUCKET, Prefix=PREFIX)["Contents"]
                   if o["Key"].endswith("/verification.json")]
        assert outcome["status"] == "failed"
        found = [e for e in outcome["evidence"] if e["kind"] == "files"]
        assert found and found[0]["backup_id"] == first["backup_id"] and found[0]["key"] == archive["key"]
        assert {e["problem"] for e in found} >= {"sha256 mismatch", "archive missing or damaged"}
        # the newest files backup depends on the damaged one: a restore of it is refused, nothing written
        dag_run, states = _restore({"kind": "files", "target_dir": str(tmp_path / "after-tamper")})
        assert str(dag_run.state) == "failed" and not (tmp_path / "after-tamper").exists()
        assert f"keeps unchanged files in backup {first['backup_id']}, which is marked bad" in \
            _last_record(stack)["error"]
    finally:
        # the original version (with the checksums of its multipart upload) becomes current again, so the
        # file backup tests that share these backups see exactly what pgdr stored
        version = tampered.get("VersionId")
        if version and version != "null":
            client.delete_object(Bucket=BUCKET, Key=archive["key"], VersionId=version)
        else:
            client.put_object(Bucket=BUCKET, Key=archive["key"], Body=original, ServerSideEncryption="AES256",
                              Metadata={"sha256": archive["sha256"]})
        for key in markers:
            client.delete_object(Bucket=BUCKET, Key=key)


# --- placing files: links already in the target are replaced, never followed (no services needed) ----

SRC = "/srv/care-commons/uploads"
MTIME = 1_700_000_000_000_000_000


def _entries(*specs) -> list[dict]:
    out = []
    for kind, path, *rest in specs:
        entry = {"type": kind, "dir": SRC, "path": path, "mtime_ns": MTIME, "mode": 0o750 if kind == "dir" else 0o640}
        if kind == "symlink":
            entry["target"] = rest[0]
        out.append(entry)
    return out


def _staged(partial, entries, body=b"restored"):
    for entry in entries:
        if entry["type"] == "file":
            path = partial / SRC.lstrip("/") / entry["path"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(body)


def _outside(tmp_path):
    outside = tmp_path / "outside"
    (outside / "sub").mkdir(parents=True)
    (outside / "sub" / "f.txt").write_text("outside")
    (outside / "victim").write_text("victim")
    os.utime(outside / "sub", ns=(10**18, 10**18))
    return outside, (tree_state(outside), _dir_state(outside / "sub"), _dir_state(outside))


@pytest.mark.parametrize("plant", ["top", "middle", "file", "dir_entry", "link_entry"])
def test_a_link_planted_anywhere_in_the_target_is_replaced_and_nothing_outside_changes(tmp_path, plant):
    from pgdr.restore.files import find_conflicts, place_entries

    outside, before = _outside(tmp_path)
    target, partial = tmp_path / "target", tmp_path / "partial"
    root = target / SRC.lstrip("/")
    entries = _entries(("dir", "sub"), ("dir", "empty"), ("file", "sub/f.txt"), ("file", "victim"),
                       ("symlink", "latest", "sub/f.txt"))
    _staged(partial, entries)
    (target if plant == "top" else root).mkdir(parents=True)
    link, to = {"top": (target / "srv", outside), "middle": (root / "sub", outside / "sub"),
                "file": (root / "victim", outside / "victim"), "dir_entry": (root / "empty", outside / "sub"),
                "link_entry": (root / "latest", outside / "victim")}[plant]
    os.symlink(to, link)
    assert find_conflicts(target, entries) == []
    place_entries(partial, target, entries)
    assert (tree_state(outside), _dir_state(outside / "sub"), _dir_state(outside)) == before
    assert (root / "sub" / "f.txt").read_bytes() == b"restored" and not (root / "sub").is_symlink()
    assert (root / "victim").read_bytes() == b"restored" and os.readlink(root / "latest") == "sub/f.txt"
    assert not (root / "empty").is_symlink() and not any((root / "empty").iterdir())
    assert oct(os.stat(root / "sub").st_mode & 0o777) == oct(0o750) == oct(os.stat(root / "empty").st_mode & 0o777)


def test_a_file_in_the_way_of_a_directory_is_refused_before_anything_is_written(tmp_path):
    from pgdr.restore.files import find_conflicts

    target = tmp_path / "target"
    root = target / SRC.lstrip("/")
    root.mkdir(parents=True)
    (root / "sub").write_text("a file where the backup has a directory")
    (root / "victim").mkdir()
    entries = _entries(("dir", "sub"), ("file", "sub/f.txt"), ("file", "victim"))
    conflicts = find_conflicts(target, entries)
    assert conflicts[0] == f"a file where the backup has a directory, under {SRC}"
    assert f"a directory where the backup has a file, under {SRC}" in conflicts
    assert all("f.txt" not in c and "victim" not in c for c in conflicts)   # file names can be patient data


@pytest.mark.parametrize("path", ["../escape.txt", "a/../../escape.txt"])
def test_an_entry_leaving_the_target_is_refused(tmp_path, path):
    from pgdr.restore.files import place_entries

    entries = _entries(("file", path))
    (tmp_path / "target").mkdir()
    with pytest.raises(Exception, match="leaves"):
        place_entries(tmp_path / "partial", tmp_path / "target", entries)
    assert not (tmp_path / "escape.txt").exists() and not (tmp_path / "target" / "srv" / "escape.txt").exists()
