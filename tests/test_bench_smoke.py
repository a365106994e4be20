"""The benchmarks still run end to end (tiny scale, one repeat): a benchmark that rots is no benchmark.
No timing is asserted; the figures are only checked to be there. The fast tests at the end check that
bench/common.py prints the benchmarks' tables in the format bench/README.md quotes."""

import json
import subprocess
import sys

import pytest

from tests.support.paths import REPO_ROOT


@pytest.mark.slow
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


@pytest.mark.slow
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


@pytest.mark.slow
@pytest.mark.parametrize("engine", ["tools", "pgdr"])
def test_incremental_bench_runs_and_writes_its_figures(tmp_path, engine):
    """bench/incremental_bench.py (PostgreSQL 18: full vs incremental base backups, PITR from a chain) at a
    tiny scale with a chain of 2; about 30 s per engine. ``pgdr``: pgdr's own backups to moto and its own
    PITR (PointInTimeRecovery from S3: the chain downloaded, combined, verified), with its stage times."""
    output = tmp_path / "incremental.json"
    result = subprocess.run(
        [sys.executable, "bench/incremental_bench.py", "--scale", "0.05", "--min-size-mb", "1", "--repeat", "1",
         "--chain", "2", "--engine", engine, "--output", str(output)],
        cwd=REPO_ROOT, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    figures = json.loads(output.read_text())
    assert figures["machine"]["postgresql_server"].startswith("18.")
    assert len(figures["runs"]["backup"]["full"]) == 1 and len(figures["runs"]["backup"]["incremental"]) == 2
    for run in figures["runs"]["backup"]["incremental"]:
        assert 0 < run["stored_bytes"] < figures["runs"]["backup"]["full"][0]["stored_bytes"]
    chains = ("chain", "chain-link") if engine == "tools" else ("chain",)
    assert set(figures["runs"]["pitr"]) == {"full", *chains}
    for name in chains:
        (chain,) = figures["runs"]["pitr"][name]
        assert chain["backups"] == 3 and chain["stages"]["combine"] > 0
    if engine == "pgdr":   # pgdr's own stages, as its recovery records them
        (full,) = figures["runs"]["pitr"]["full"]
        assert full["backups"] == 1 and "combine" not in full["stages"]
        for run in (full, chain):
            assert {"download_base", "unpack_base", "verify_base", "fetch_wal", "recover"} <= set(run["stages"])
        assert figures["runs"]["wal_shipped"][0]["objects"] > 0
    assert all(r["row_counts_match"] for runs in figures["runs"]["pitr"].values() for r in runs)
    assert set(figures["results"]["targets"]) == {"time", "size", "pitr", *(["pitr-link"] if engine == "tools" else [])}
    assert "PITR from" in result.stdout


def _printed(capsys, table, rows, rule=0) -> list[str]:
    from bench.common import print_table

    print_table(table, rows, rule)
    return capsys.readouterr().out.splitlines()


def test_bench_tables_keep_their_printed_format(capsys):
    """The columns the README's measured runs were copied from, character for character."""
    from bench import backup_bench, incremental_bench, pitr_bench, restore_bench

    assert _printed(capsys, backup_bench.TABLE, [["pgdr", 12.234, 0.3212, 0.88, 276699999, 276.7, "yes"]]) == [
        "variant           median s  vs seed  vs -Fc     size bytes       MB  parallel restore",
        "-------------------------------------------------------------------------------------",
        "pgdr                  12.2    0.32x   0.88x    276,699,999    276.7  yes"]
    assert _printed(capsys, restore_bench.TABLE, [["pgdr (DAG, from S3)", 44.81, 1.17, 1.06, [35.1, 44.8]]],
                    rule=20)[::2] == [
        "variant                       median s  vs bare  vs gzip  runs",
        "pgdr (DAG, from S3)               44.8    1.17x    1.06x  35.1, 44.8"]
    assert _printed(capsys, pitr_bench.RESTORE_TABLE, [["pgbackrest", 23.6, 1.0, True, [23.6]]])[::2] == [
        "PITR restore  median s  vs pgBackRest  rows match  runs",
        "pgbackrest        23.6          1.00x  True        [23.6]"]
    assert _printed(capsys, incremental_bench.BACKUP_TABLE,
                    [["incremental", 4.21, 0.2134, 12.3, 0.0452, [4.2, 4.3]]])[::2] == [
        "base backup       median s  vs full  stored MB  size vs full  runs",
        "incremental            4.2    0.21x       12.3        0.045x  [4.2, 4.3]"]
    assert _printed(capsys, incremental_bench.PITR_TABLE, [["chain (link)", 41.2, 1.112, True, [41.2]]])[::2] == [
        "PITR from         median s  vs full  rows match  runs",
        "chain (link)          41.2    1.11x  True        [41.2]"]


def test_bench_repeats_alternate_the_order_and_medians_skip_missing_figures():
    from bench.common import median, repeats

    assert list(repeats(("a", "b", "c"), 3, announce=False)) == [
        (1, ["a", "b", "c"]), (2, ["c", "b", "a"]), (3, ["a", "b", "c"])]
    assert median([3.0, None, 1.0, 2.0]) == 2.0 and median([None]) is None
