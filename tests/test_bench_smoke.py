"""bench/backup_bench.py still runs end to end (tiny scale, one repeat): a benchmark that rots is no benchmark.
No timing is asserted; the figures are only checked to be there."""

import json
import subprocess
import sys

import pytest

from conftest import REPO_ROOT

pytestmark = pytest.mark.slow


def test_backup_bench_runs_and_writes_its_figures(tmp_path):
    output = tmp_path / "bench.json"
    result = subprocess.run(
        [sys.executable, "bench/backup_bench.py", "--scale", "0.1", "--small-scale", "0.05", "--repeat", "1",
         "--min-size-mb", "1", "--output", str(output)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(output.read_text())
    assert set(figures["runs"]) == {"pgdr", "seed", "pg_dump -Fc", "pg_dump -Fd -j2"}
    (pgdr,) = figures["runs"]["pgdr"]
    assert pgdr["check_problems"] == [] and pgdr["rows"] > 0 and pgdr["peak_rss_bytes"] > 0
    assert "vs seed" in result.stdout


def test_restore_bench_runs_and_writes_its_figures(tmp_path):
    output = tmp_path / "restore.json"
    drills = tmp_path / "drills"
    result = subprocess.run(
        [sys.executable, "bench/restore_bench.py", "--scale", "0.05", "--repeat", "1", "--output", str(output),
         "--drills-dir", str(drills)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(output.read_text())
    assert set(figures["runs"]) == {"pgdr", "pgdr_local", "bare", "bare_gzip", "bare_fifo"}
    (pgdr,) = figures["runs"]["pgdr"]
    assert pgdr["row_counts_match"] and pgdr["rows"] > 0 and pgdr["database_size_bytes"] > 0
    assert pgdr["stages"]["total"] > 0 and pgdr["dag_run_seconds"] > 0 and pgdr["peak_rss_bytes"] > 0
    assert set(figures["results"]["projections"]) == {"10 GB", "100 GB"}
    (drill,) = figures["drills"]
    assert drill["status"] == "ok"
    (record,) = drills.glob("*.json")
    assert json.loads(record.read_text())["kind"] == "drill"
    assert "vs bare" in result.stdout


@pytest.mark.slow
def test_pitr_bench_runs_and_writes_its_figures(tmp_path):
    """bench/pitr_bench.py (pgdr base backup + PITR vs pgBackRest) at a tiny scale; about 30-90 s."""
    import shutil

    if shutil.which("pgbackrest") is None:
        pytest.skip("pgbackrest is not installed (apt-get install pgbackrest): bench/pitr_bench.py compares against it")
    output = tmp_path / "pitr.json"
    result = subprocess.run(
        [sys.executable, "bench/pitr_bench.py", "--scale", "0.05", "--repeat", "1", "--wal-mb", "16",
         "--output", str(output)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(output.read_text())
    for phase in ("backup", "restore"):
        assert set(figures["runs"][phase]) == {"pgdr", "pgbackrest"}
    (restore,) = figures["runs"]["restore"]["pgdr"]
    assert restore["row_counts_match"] and restore["stages"]["unpack_base"] >= 0
    assert all(r["row_counts_match"] for r in figures["runs"]["restore"]["pgbackrest"])
    assert figures["results"]["table"]["backup"][0]["stored_bytes"] > 0
    assert "vs pgBackRest" in result.stdout
