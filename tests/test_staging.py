"""Local staging copies are kept for pgdr_local_retention_days, then removed."""

import logging
import os
import time

from pgdr.store import staging


def _copy(base, name, age_days):
    path = base / "db" / "logical" / name
    path.mkdir(parents=True)
    (path / "toc.dat").write_text("x")
    stamp = time.time() - age_days * 86400
    os.utime(path, (stamp, stamp))
    return path


def test_prune_removes_only_expired_copies_and_stale_partials(tmp_path):
    old = _copy(tmp_path, "20261001T020000Z", 40)
    recent = _copy(tmp_path, "20261120T020000Z", 5)
    stale_partial = _copy(tmp_path, "20261101T020000Z.partial", 3)
    live_partial = _copy(tmp_path, "20261126T020000Z.partial", 0)
    unrelated = _copy(tmp_path, "notes", 400)
    removed = staging.prune(tmp_path, "db", "logical", 30, logging.getLogger("t"))
    assert sorted(removed) == ["20261001T020000Z", "20261101T020000Z.partial"]
    assert not old.exists() and not stale_partial.exists()
    assert recent.exists() and live_partial.exists() and unrelated.exists()


def test_keep_turns_a_partial_directory_into_a_copy(tmp_path):
    work = staging.work_dir(tmp_path, "db", "logical", "20261126T020000Z")
    work.mkdir(parents=True)
    final = staging.keep(work)
    assert final.name == "20261126T020000Z" and final.is_dir() and not work.exists()


# --- staged health records are private (issue 12, item 13) ---------------------------------------------

import pwd  # noqa: E402
import stat  # noqa: E402
import subprocess  # noqa: E402

import pytest  # noqa: E402


def _modes(root):
    return {str(p.relative_to(root)): stat.S_IMODE(p.lstat().st_mode) for p in [root, *root.rglob("*")]}


@pytest.fixture(scope="module")
def cluster(cluster):
    cluster.execute("CREATE TABLE patients AS SELECT g AS id, 'note ' || g AS note FROM generate_series(1, 50) g")
    return cluster


def test_what_pg_dump_writes_into_a_claimed_work_dir_no_other_user_can_read(tmp_path, cluster):
    os.umask(old := os.umask(0o022))  # a worker's usual umask (files 0644, directories 0755) stays
    root = tmp_path / "staging"
    work = staging.claim_work_dir(root, "db", "logical", "20261206T040000Z")
    dump = work / "dump"
    dump.parent.mkdir()
    subprocess.run([str(cluster.bindir / "pg_dump"), "-Fd", "-f", str(dump), "-d", "postgres"],
                   env=cluster.tool_env(), check=True)
    toc = dump / "toc.dat"
    assert toc.is_file()
    if os.geteuid() == 0:
        # while the dump is being written: another user cannot read it, whatever its own mode
        attempt = subprocess.run(["runuser", "-u", "nobody", "--", "cat", str(toc)], capture_output=True, text=True)
        assert attempt.returncode != 0 and "Permission denied" in attempt.stderr
    for level in (root, root / "db", root / "db" / "logical"):
        assert stat.S_IMODE(level.stat().st_mode) == 0o700, level
    final = staging.keep(work)
    modes = _modes(final)
    files = {name: mode for name, mode in modes.items() if (final / name).is_file()}
    dirs = {name: mode for name, mode in modes.items() if not (final / name).is_file()}
    assert len(files) >= 2 and set(files.values()) == {0o600}, files
    assert set(dirs.values()) == {0o700}, dirs
    assert os.umask(old) == old, "the process umask is left alone"


def test_a_staging_directory_another_user_owns_is_refused(tmp_path):
    if os.geteuid() != 0:
        pytest.skip("needs root to give the directory away")
    root = tmp_path / "staging"
    root.mkdir(mode=0o700)
    other = pwd.getpwnam("postgres")
    os.chown(root, other.pw_uid, other.pw_gid)
    with pytest.raises(staging.StagingRefused, match=r"belongs to uid .*pgdr_staging_dir"):
        staging.claim_work_dir(root, "db", "logical", "20261206T040000Z")
    assert list(root.iterdir()) == []


@pytest.mark.parametrize("mode", [0o777, 0o1777, 0o770])
def test_a_staging_directory_others_may_write_is_refused(tmp_path, mode):
    root = tmp_path / "staging"
    root.mkdir()
    root.chmod(mode)
    with pytest.raises(staging.StagingRefused, match=r"writable by others.*pgdr_staging_dir.*chmod 700"):
        staging.claim_work_dir(root, "db", "logical", "20261206T040000Z")
    assert list(root.iterdir()) == []


def test_a_planted_symlink_inside_staging_is_refused(tmp_path):
    root = tmp_path / "staging"
    root.mkdir(mode=0o700)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (root / "db").symlink_to(elsewhere)
    with pytest.raises(staging.StagingRefused, match="symbolic link"):
        staging.claim_work_dir(root, "db", "logical", "20261206T040000Z")
    assert list(elsewhere.iterdir()) == []


def test_a_staging_directory_readable_by_others_is_made_private(tmp_path, caplog):
    root = tmp_path / "staging"
    (root / "db" / "logical").mkdir(parents=True)
    for path in (root, root / "db", root / "db" / "logical"):
        path.chmod(0o755)
    with caplog.at_level(logging.WARNING, logger="pgdr.store.staging"):
        staging.claim_work_dir(root, "db", "logical", "20261206T040000Z")
    assert {mode for mode in _modes(root).values()} == {0o700}
    assert "made private" in caplog.text


def test_the_default_staging_directory_is_not_under_tmp():
    from pgdr.settings import parse_settings

    settings = parse_settings({"s3_bucket": "bucket-x"})
    assert str(settings.staging_dir) == "/var/lib/pgdr/staging"
