"""Which pg_dump format and compression should pgdr use? Measured, in one run, on one database.

For each candidate: dump time, size, and `pg_restore` time into a fresh database, with the
parallelism each format allows (custom format from a seekable file and directory format restore
with -j; a piped or re-compressed custom file cannot). Medians of --repeat runs. Here the zstd
variants compress after the dump, one file after another in 2 threads; pgdr itself overlaps the
two (bench/backup_bench.py measures that). Restore times include decompressing the zstd files.

    python bench/format_choice.py [--scale 5] [--repeat 3]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO_ROOT / "plugins"), str(REPO_ROOT)]

from bench.common import RESULTS, Column, db_size, fixed, mb, median, print_table, repeats, tree_size  # noqa: E402
from harness.pg_cluster import pg_bindir, start_cluster  # noqa: E402
from harness.synthetic import create_care_commons  # noqa: E402
from pgdr.core.compression import compress_file, decompress_file  # noqa: E402

DB = "care_commons"
TABLE = (Column("candidate", 50, left=True), Column("dump s", 7, fixed(".1f")), Column("restore s", 9, fixed(".1f")),
         Column("size MB", 8, lambda size: f"{mb(size):.0f}"), Column("parallel restore", 16))


def _run(argv, env, shell=False):
    subprocess.run(argv, env=env, check=True, shell=shell, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def _zstd_dir(directory: Path, level: int) -> None:
    from concurrent.futures import ThreadPoolExecutor

    def one(path: Path):
        if path.name != "toc.dat":
            compress_file(path, path.with_name(path.name + ".zst"), level, 64 << 20)
            path.unlink()

    with ThreadPoolExecutor(2) as pool:
        list(pool.map(one, [p for p in directory.iterdir() if p.is_file()]))


def _unzstd_dir(directory: Path) -> None:
    for path in directory.glob("*.zst"):
        decompress_file(path, path.with_suffix(""))
        path.unlink()


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--scale", type=float, default=5.0)
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()
    bindir = pg_bindir()
    work = Path(tempfile.mkdtemp(prefix="pgdr-format-"))
    cluster = start_cluster()
    try:
        create_care_commons(cluster, dbname=DB, scale=args.scale)
        size_of_db = db_size(cluster, DB)
        env = cluster.tool_env()
        dump, restore = str(bindir / "pg_dump"), str(bindir / "pg_restore")
        candidates = {
            "custom -Fc (gzip 6)": dict(
                dump=lambda out: _run([dump, "-Fc", "-f", str(out), DB], env), ext=".dump", restore_jobs=2),
            "directory -Fd -j2 (gzip 6)": dict(
                dump=lambda out: _run([dump, "-Fd", "-j2", "-f", str(out), DB], env), ext="", restore_jobs=2),
            "directory -Fd -j2 -Z1 (gzip 1)": dict(
                dump=lambda out: _run([dump, "-Fd", "-j2", "-Z1", "-f", str(out), DB], env), ext="", restore_jobs=2),
            "directory -Fd -j2 -Z0 + zstd 1 per file (pgdr default)": dict(
                dump=lambda out: (_run([dump, "-Fd", "-j2", "-Z0", "-f", str(out), DB], env), _zstd_dir(out, 1)),
                ext="", restore_jobs=2, unpack=_unzstd_dir),
            "directory -Fd -j2 -Z0 + zstd 3 per file": dict(
                dump=lambda out: (_run([dump, "-Fd", "-j2", "-Z0", "-f", str(out), DB], env), _zstd_dir(out, 3)),
                ext="", restore_jobs=2, unpack=_unzstd_dir),
            "custom -Fc | gzip (seed)": dict(
                dump=lambda out: _run(f"{dump} -Fc {DB} | gzip > {out}", env, shell=True), ext=".dump.gz",
                restore_jobs=1, unpack_file=lambda out: f"gunzip -c {out} | {restore} -d {{db}}"),
        }
        results = {}
        for repeat, names in repeats(list(candidates), args.repeat, announce=False):
            rep = repeat - 1
            for name in names:
                spec = candidates[name]
                out = work / f"out{spec['ext']}"
                started = time.monotonic()
                spec["dump"](out)
                dump_seconds = time.monotonic() - started
                size = tree_size(out)
                target = f"restore_{rep}"
                cluster.execute(f"CREATE DATABASE {target}")
                started = time.monotonic()
                if "unpack_file" in spec:
                    _run(spec["unpack_file"](out).format(db=target), env, shell=True)
                else:
                    if "unpack" in spec:
                        spec["unpack"](out)
                    _run([restore, f"--jobs={spec['restore_jobs']}", "-d", target, str(out)], env)
                restore_seconds = time.monotonic() - started
                cluster.execute(f"DROP DATABASE {target}")
                (shutil.rmtree if out.is_dir() else os.unlink)(out)
                entry = results.setdefault(name, {"dump": [], "restore": [], "size": size})
                entry["dump"].append(dump_seconds)
                entry["restore"].append(restore_seconds)
                print(f"  rep {rep} {name}: dump {dump_seconds:.1f} s, restore {restore_seconds:.1f} s, "
                      f"{size / 1e6:.0f} MB", flush=True)
        print(f"\ndatabase {mb(size_of_db):.0f} MB (scale {args.scale}), medians of {args.repeat}:")
        summary, rows = {}, []
        for name, entry in results.items():
            dump_m, restore_m = median(entry["dump"]), median(entry["restore"])
            parallel = candidates[name]["restore_jobs"] > 1
            summary[name] = {"dump_s": round(dump_m, 2), "restore_s": round(restore_m, 2),
                             "size_bytes": entry["size"], "parallel_restore": parallel}
            rows.append([name, dump_m, restore_m, entry["size"], parallel])
        print_table(TABLE, rows, rule=None)
        out_file = RESULTS / f"format-choice-{time.strftime('%Y%m%d')}.json"
        out_file.parent.mkdir(exist_ok=True)
        out_file.write_text(json.dumps({"scale": args.scale, "db_size_bytes": size_of_db, "repeat": args.repeat,
                                        "nproc": os.cpu_count(), "results": summary}, indent=2))
        print(f"\nwritten to {out_file.relative_to(REPO_ROOT)}")
    finally:
        cluster.destroy()
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
