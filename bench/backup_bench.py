#!/usr/bin/env python3
"""Backup benchmark: pgdr's logical backup task against the bare PostgreSQL tools.

One run builds a throwaway PostgreSQL 15 cluster holding a synthetic
care-commons database of at least 1 GiB (``pg_database_size``) and a second,
about four times smaller one (for the memory comparison), the pgdr backup role
and a moto S3 server, then times, ``--repeat`` times each with the order of the
variants alternating between repeats:

``pgdr``
    The backup task's work: ``pgdr.backup.logical.run_logical_backup`` (pg_dump -Fd -Z0 -j2 on
    an exported snapshot, row counts, pg_restore --list, pg_dumpall globals,
    per-file zstd following the dump, with sha256), uploads to the moto server
    overlapping the dump, and the post-upload check of every object. It runs in a child
    Python process so that process's own peak RSS is the task's peak memory.
``seed``
    The seed project's backup: ``pg_dump -Fc db | gzip > f.gz && gunzip -t f.gz``.
``pg_dump -Fc``
    Bare, to a file.
``pg_dump -Fd -j2``
    Bare, to a directory (pg_dump's default gzip compression).

Every variant connects the same way: as the backup role over TCP to
127.0.0.1 with its password in a PGPASSFILE (pgdr.core.pgtools.libpq_env).

Run:  python bench/backup_bench.py [--scale S] [--repeat 3] [--keep]
(without --scale the scale is picked from the small database's size so that the
big one reaches --min-size-mb, default 1024 MiB)
Writes bench/results/backup-<UTC date>.json. Clusters, servers and temporary
directories are removed on exit, Ctrl-C included; --keep leaves the work
directory (the last output of each variant) in place and prints where it is.
This is a benchmark: nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import math
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugins"), str(REPO)]

from bench import common  # noqa: E402
from bench.common import Column, MiB, fixed, mb, say  # noqa: E402

VARIANTS = ("pgdr", "seed", "pg_dump -Fc", "pg_dump -Fd -j2")
PARALLEL_RESTORE = {
    "pgdr": ("yes", "directory format: pg_restore -j over the dump directory (toc.dat is stored uncompressed; "
                    "PostgreSQL 15's pg_restore reads gzip, not zstd, so each .dat.zst file is decompressed "
                    "first, file by file)"),
    "seed": ("no", "gzip-wrapped custom format: pg_restore cannot read it, let alone with -j, before it is "
                   "gunzipped to a seekable file, and a -Fc written to a pipe has no data offsets in its TOC"),
    "pg_dump -Fc": ("yes", "custom format written to a seekable file (data offsets in the TOC)"),
    "pg_dump -Fd -j2": ("yes", "directory format, gzip per table: pg_restore -j reads it directly"),
}
DEFAULT_JOBS = 2        # pgdr setting dump_jobs
DEFAULT_LEVEL = 1       # pgdr setting compression_level
DEFAULT_PART_MB = 64    # pgdr setting multipart_chunk_mb
MEMORY_BOUND_RATIO = 1.25
TIME_TARGET = 0.3


# --------------------------------------------------------------------------------------------
# The pgdr variant, in a child process
# --------------------------------------------------------------------------------------------

def pgdr_child(spec_path: str) -> int:
    """Run the backup task's work once and write its figures as JSON to spec['result']."""
    import resource

    spec, log = common.child_start(spec_path)
    from pgdr.backup.logical import run_logical_backup

    target, connect = common.pg_target("care_commons_db", spec["host"], spec["port"], spec["user"], spec["password"],
                                       spec["dbname"])
    store = common.child_store(spec, "pgdr", log)
    t0 = time.perf_counter()
    # exactly the backup task's work: pgdr.backup.logical.run_logical_backup (dump, zstd and upload overlapped,
    # then the post-upload check of every object in S3)
    manifest = run_logical_backup(
        database="care_commons_db", backup_id="20260101T000000Z", prefix=spec["prefix"], target=target,
        connect=connect, store=store, workdir=Path(spec["workdir"]), bindir=Path(spec["bindir"]), jobs=spec["jobs"],
        level=spec["level"], include_role_passwords=False, kms_key_id=None, airflow={}, log=log)
    t_check = time.perf_counter()
    objects = manifest.objects
    # ru_maxrss of this process (all its threads); the tools' peak separately
    own = resource.getrusage(resource.RUSAGE_SELF)
    tools = resource.getrusage(resource.RUSAGE_CHILDREN)
    result = {
        "seconds": t_check - t0,
        "stages": manifest.dump["seconds"],
        "objects": len(objects),
        "multipart_objects": sum(1 for o in objects if store.is_multipart(o.size)),
        "largest_object": max(o.size for o in objects),
        "stored_size": manifest.total_size,
        "raw_size": manifest.dump["raw_size"],
        "tables": len(manifest.row_counts),
        "rows": sum(manifest.row_counts.values()),
        "check_problems": [],
        "peak_rss_bytes": own.ru_maxrss * 1024,
        "tools_peak_rss_bytes": tools.ru_maxrss * 1024,
        "cpu_seconds": {"python": own.ru_utime + own.ru_stime, "tools": tools.ru_utime + tools.ru_stime},
    }
    common.write_result(spec, result)
    return 0


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------

class Bench:
    def __init__(self, args) -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="pgdr-bench-", dir=args.workdir))
        self.cluster = None
        self.s3 = None
        self.s3_client = None
        self.runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
        self.small_runs: list[dict] = []
        self.databases: dict[str, dict] = {}

    # -- services --------------------------------------------------------------------------

    def start_services(self) -> None:
        say("starting a throwaway PostgreSQL 15 cluster and a moto S3 server")
        self.cluster, self.s3 = common.start_cluster_and_s3()
        common.create_bench_bucket(self.s3, self.args.bucket)
        self.s3_client = self.s3.client()

    def stop_services(self) -> None:
        common.stop_all()
        for service, stop in ((self.s3, "stop"), (self.cluster, "destroy")):
            if service is not None:
                try:
                    getattr(service, stop)()
                except Exception:  # noqa: BLE001 - tear down what we can
                    pass
        common.remove_work(self.work, self.args.keep, "the last output of each variant is in")

    # -- data --------------------------------------------------------------------------------

    def generate(self, dbname: str, scale: float, min_bytes: int = 0) -> dict:
        info = common.generate_database(self.cluster, dbname, scale, self.args.seed, min_bytes)
        self.databases[dbname] = info
        return info

    def prepare(self) -> None:
        """Set hint bits and freeze (so no variant pays for the first read after the bulk load)."""
        seconds = common.freeze(self.cluster, self.databases)
        for dbname, info in self.databases.items():
            info["size_after_vacuum_bytes"] = int(self.cluster.execute("SELECT pg_database_size(%s)",
                                                                       params=(dbname,))[0][0])
        say(f"VACUUM (FREEZE, ANALYZE) and CHECKPOINT in {seconds:.1f} s")

    # -- variants ----------------------------------------------------------------------------

    def run_pgdr(self, dbname: str, label: str) -> dict:
        from harness.stack import BACKUP_PASSWORD, BACKUP_ROLE

        run_dir = self.work / label
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        prefix = f"bench/{label}"
        spec = {
            "host": self.cluster.host, "port": self.cluster.port, "user": BACKUP_ROLE,
            "password": BACKUP_PASSWORD, "dbname": dbname, "workdir": str(run_dir / "backup"),
            "bindir": str(self.cluster.bindir), "jobs": self.args.jobs, "level": self.args.level,
            "prefix": prefix, **common.s3_spec(self.s3, self.args.bucket, self.args.part_mb * MiB),
        }
        common.settle(self.cluster)
        result, child = common.run_spec_child(__file__, "--child-pgdr", spec, run_dir, interval=0.05,
                                              what="pgdr variant")
        result["process_wall_seconds"] = child["wall_seconds"]
        result["psutil_peak_rss_bytes"] = child["peak_rss_bytes"]
        result["psutil_peak_tree_rss_bytes"] = child["peak_tree_rss_bytes"]
        result["psutil_peak_threads"] = child["peak_threads"]
        result["size_bytes"] = result["stored_size"]
        # Remove this run's objects (outside the timing) so moto's memory does not grow.
        result["uploaded_objects_listed"] = common.delete_prefix(self.s3_client, self.args.bucket, prefix + "/")
        return result

    def run_shell(self, name: str, dbname: str, label: str) -> dict:
        from harness.stack import BACKUP_PASSWORD, BACKUP_ROLE
        from pgdr.core.pgtools import libpq_env

        run_dir = self.work / label
        shutil.rmtree(run_dir, ignore_errors=True)
        run_dir.mkdir(parents=True)
        pg_dump = str(self.cluster.bindir / "pg_dump")
        if name == "seed":
            output = run_dir / "backup.dump.gz"
            argv = ["bash", "-c", 'set -euo pipefail; "$1" -Fc "$2" | gzip > "$3"; gunzip -t "$3"',
                    "seed", pg_dump, dbname, str(output)]
            shown = (f"bash -c 'set -euo pipefail; pg_dump -Fc {dbname} | gzip > backup.dump.gz; "
                     "gunzip -t backup.dump.gz'")
        elif name == "pg_dump -Fc":
            output = run_dir / "backup.dump"
            argv = [pg_dump, "-Fc", f"--file={output}", dbname]
            shown = f"pg_dump -Fc --file=backup.dump {dbname}"
        elif name == "pg_dump -Fd -j2":
            output = run_dir / "backup.dir"
            argv = [pg_dump, "-Fd", f"--jobs={self.args.jobs}", f"--file={output}", dbname]
            shown = f"pg_dump -Fd --jobs={self.args.jobs} --file=backup.dir {dbname}"
        else:
            raise ValueError(name)
        target, _ = common.pg_target("care_commons_db", self.cluster.host, self.cluster.port, BACKUP_ROLE,
                                     BACKUP_PASSWORD, dbname)
        with libpq_env(target) as env:
            common.settle(self.cluster)
            before = common.children_cpu()
            t0 = time.perf_counter()
            process = subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                       start_new_session=True)
            common.LIVE.append(process)
            _, stderr = process.communicate()
            common.LIVE.remove(process)
            seconds = time.perf_counter() - t0
            cpu = common.children_cpu() - before
        if process.returncode != 0:
            raise RuntimeError(f"{name} failed (exit {process.returncode}): {stderr.strip()[-2000:]}")
        return {"seconds": seconds, "size_bytes": common.tree_size(output), "cpu_seconds": {"tools": cpu},
                "argv": shown}

    def run_variant(self, name: str, dbname: str, label: str) -> dict:
        load_before = os.getloadavg()[0]
        if name == "pgdr":
            result = self.run_pgdr(dbname, label)
        else:
            result = self.run_shell(name, dbname, label)
        result["loadavg_1m_before"] = round(load_before, 2)
        if not self.args.keep:
            shutil.rmtree(self.work / label, ignore_errors=True)
        return result

    def measure(self) -> None:
        dbname = self.args.dbname
        for repeat, sequence in common.repeats(VARIANTS, self.args.repeat):
            for name in sequence:
                result = self.run_variant(name, dbname, label=f"{name.replace(' ', '_')}")
                result["repeat"] = repeat
                result["position"] = sequence.index(name) + 1
                self.runs[name].append(result)
                extra = ""
                if name == "pgdr":
                    st = result["stages"]
                    extra = (f"  [dump+zstd {st['dump_and_compress']:.1f} / upload after dump "
                             f"{st['upload_after_dump']:.1f} / check {st['check']:.1f} s; peak RSS "
                             f"{mb(result['peak_rss_bytes']):.0f} MB]")
                say(f"  {name:<16} {result['seconds']:7.1f} s  {mb(result['size_bytes']):8.1f} MB{extra}")
        small = self.args.small_dbname
        for repeat in range(1, self.args.repeat + 1):
            result = self.run_variant("pgdr", small, label="pgdr_small")
            result["repeat"] = repeat
            self.small_runs.append(result)
            say(f"  pgdr @ scale {self.databases[small]['scale']:g} {result['seconds']:7.1f} s  "
                f"{mb(result['size_bytes']):8.1f} MB  peak RSS {mb(result['peak_rss_bytes']):.0f} MB")


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

def machine(bench: Bench) -> dict:
    modules = ("zstandard", "boto3", "botocore", "s3transfer", "moto", "psycopg2", "psutil")
    info = common.machine_info(bench.cluster, modules)
    info["tools"] = {"pg_dump": common.tool_version([bench.cluster.bindir / "pg_dump", "--version"]),
                     "gzip": common.tool_version([shutil.which("gzip"), "--version"])}
    info["disk_free_bytes_at_end"] = shutil.disk_usage(bench.work).free
    return info


def summarize(bench: Bench) -> dict:
    medians = {name: statistics.median(r["seconds"] for r in runs) for name, runs in bench.runs.items()}
    sizes = {name: statistics.median(r["size_bytes"] for r in runs) for name, runs in bench.runs.items()}
    seed, fc = medians["seed"], medians["pg_dump -Fc"]
    table = []
    for name in VARIANTS:
        table.append({
            "variant": name,
            "median_seconds": round(medians[name], 2),
            "runs_seconds": [round(r["seconds"], 2) for r in bench.runs[name]],
            "ratio_vs_seed": round(medians[name] / seed, 3),
            "ratio_vs_pg_dump_fc": round(medians[name] / fc, 3),
            "size_bytes": int(sizes[name]),
            "size_mb": round(mb(sizes[name]), 1),
            "parallel_restore": PARALLEL_RESTORE[name][0],
            "parallel_restore_why": PARALLEL_RESTORE[name][1],
        })
    pgdr_runs = bench.runs["pgdr"]
    stages = {stage: round(statistics.median(r["stages"][stage] for r in pgdr_runs), 2)
              for stage in ("dump_and_compress", "upload_after_dump", "check", "total")}
    big_db = bench.databases[bench.args.dbname]
    small_db = bench.databases[bench.args.small_dbname]
    peak_big = max(r["peak_rss_bytes"] for r in pgdr_runs)
    peak_small = max(r["peak_rss_bytes"] for r in bench.small_runs)
    memory = {
        "measure": "ru_maxrss of the child Python process running the task's work (all its threads); "
                   "pg_dump/pg_dumpall/pg_restore are separate processes, reported as tools_peak",
        "full_scale": {"scale": big_db["scale"], "database_bytes": big_db["size_bytes"],
                       "peak_rss_bytes": peak_big, "peak_rss_mb": round(mb(peak_big), 1),
                       "tools_peak_rss_mb": round(mb(max(r["tools_peak_rss_bytes"] for r in pgdr_runs)), 1),
                       "psutil_peak_tree_rss_mb": round(mb(max(r["psutil_peak_tree_rss_bytes"]
                                                               for r in pgdr_runs)), 1)},
        "small_scale": {"scale": small_db["scale"], "database_bytes": small_db["size_bytes"],
                        "peak_rss_bytes": peak_small, "peak_rss_mb": round(mb(peak_small), 1),
                        "tools_peak_rss_mb": round(mb(max(r["tools_peak_rss_bytes"] for r in bench.small_runs)), 1),
                        "psutil_peak_tree_rss_mb": round(mb(max(r["psutil_peak_tree_rss_bytes"]
                                                                for r in bench.small_runs)), 1),
                        "median_seconds": round(statistics.median(r["seconds"] for r in bench.small_runs), 2),
                        "size_bytes": int(statistics.median(r["size_bytes"] for r in bench.small_runs))},
        "database_size_ratio": round(big_db["size_bytes"] / small_db["size_bytes"], 2),
        "peak_ratio": round(peak_big / peak_small, 3),
    }
    time_ratio = medians["pgdr"] / seed
    targets = {
        "time": {"target": f"pgdr <= {TIME_TARGET}x seed", "ratio": round(time_ratio, 3),
                 "target_seconds": round(TIME_TARGET * seed, 2), "pgdr_seconds": round(medians["pgdr"], 2),
                 "met": time_ratio <= TIME_TARGET,
                 "over_by_seconds": round(max(0.0, medians["pgdr"] - TIME_TARGET * seed), 2)},
        "size": {"target": "pgdr size <= seed size", "pgdr_bytes": int(sizes["pgdr"]), "seed_bytes": int(sizes["seed"]),
                 "ratio": round(sizes["pgdr"] / sizes["seed"], 3), "met": sizes["pgdr"] <= sizes["seed"]},
        "parallel_restore": {"target": "parallel restore possible", "met": True,
                             "why": PARALLEL_RESTORE["pgdr"][1]},
        "memory": {"target": "peak memory bounded (does not grow with database size)",
                   "full_mb": memory["full_scale"]["peak_rss_mb"], "small_mb": memory["small_scale"]["peak_rss_mb"],
                   "ratio": memory["peak_ratio"], "database_size_ratio": memory["database_size_ratio"],
                   "met": memory["peak_ratio"] <= MEMORY_BOUND_RATIO,
                   "rule": f"peak at full scale <= {MEMORY_BOUND_RATIO}x peak at the small scale"},
    }
    return {"table": table, "pgdr_stage_median_seconds": stages, "memory": memory, "targets": targets}


TABLE = (Column("variant", 16, left=True), Column("median s", 9, fixed(".1f")),
         Column("vs seed", 8, fixed(".2f", "x")), Column("vs -Fc", 7, fixed(".2f", "x")),
         Column("size bytes", 14, fixed(",")), Column("MB", 8, fixed(".1f")), Column("parallel restore", sep="  "))


def print_report(summary: dict, bench: Bench) -> None:
    print()
    common.print_table(TABLE, ([row["variant"], row["median_seconds"], row["ratio_vs_seed"], row["ratio_vs_pg_dump_fc"],
                                row["size_bytes"], row["size_mb"], row["parallel_restore"]]
                               for row in summary["table"]))
    print()
    st = summary["pgdr_stage_median_seconds"]
    print("pgdr stage split (medians, s): " + ", ".join(f"{k} {v:.1f}" for k, v in st.items()))
    mem = summary["memory"]
    print(f"pgdr peak memory (task process RSS): {mem['full_scale']['peak_rss_mb']:.0f} MB at scale "
          f"{mem['full_scale']['scale']:g} ({mb(mem['full_scale']['database_bytes']):,.0f} MB database) vs "
          f"{mem['small_scale']['peak_rss_mb']:.0f} MB at scale {mem['small_scale']['scale']:g} "
          f"({mb(mem['small_scale']['database_bytes']):,.0f} MB database); pg_dump tools peak "
          f"{mem['full_scale']['tools_peak_rss_mb']:.0f} MB")
    print()

    def detail(key: str, target: dict) -> str:
        if key == "time":
            return (f"pgdr {target['pgdr_seconds']:.1f} s = {target['ratio']:.2f}x seed "
                    f"(target {target['target_seconds']:.1f} s"
                    + (f", over by {target['over_by_seconds']:.1f} s)" if not target["met"] else ")"))
        if key == "size":
            return f"pgdr {target['pgdr_bytes']:,} B = {target['ratio']:.2f}x seed {target['seed_bytes']:,} B"
        if key == "parallel_restore":
            return target["why"]
        return (f"{target['full_mb']:.0f} MB vs {target['small_mb']:.0f} MB at a "
                f"{target['database_size_ratio']:.1f}x smaller database (ratio {target['ratio']:.2f}; "
                f"bounded by constant buffers: 1 MiB read chunks, zstd contexts, s3transfer parts)")

    common.print_targets(summary["targets"], detail)
    print("note: the pgdr figure is end to end and includes uploading to moto's S3 server (~90 MB/s here).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=None,
                        help="synthetic scale of the big database; default: picked from the size of the small "
                             "database so that the big one is >= --min-size-mb (+10%%). Either way it is raised "
                             "and the database regenerated if it comes out below --min-size-mb")
    parser.add_argument("--small-scale", type=float, default=None,
                        help="scale of the second database used for the memory comparison "
                             "(default scale/4, or 1.25 when the scale is picked automatically)")
    parser.add_argument("--min-size-mb", type=float, default=1024.0,
                        help="minimum pg_database_size of the big database in MiB (default 1024)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=DEFAULT_JOBS, help="pgdr dump_jobs and pg_dump -Fd -j (default 2)")
    parser.add_argument("--level", type=int, default=DEFAULT_LEVEL, help="pgdr compression_level (default 1)")
    parser.add_argument("--part-mb", type=int, default=DEFAULT_PART_MB, help="pgdr multipart_chunk_mb (default 64)")
    common.add_run_arguments(parser, "backup", "keep the work directory (the last output of each variant); servers are "
                                        "always stopped")
    common.add_child_arguments(parser, "pgdr")
    args = parser.parse_args(argv)
    child = common.run_child_mode(args, {"pgdr": pgdr_child})
    if child is not None:
        return child
    if args.repeat < 1:
        parser.error("--repeat must be >= 1")
    if args.small_scale is None:
        args.small_scale = round(args.scale / 4, 2) if args.scale is not None else 1.25
    args.dbname = "care_commons"
    args.small_dbname = "care_commons_small"
    args.bucket = "pgdr-bench"
    started_at = common.utc_now()
    bench = Bench(args)

    def body() -> int:
        bench.start_services()
        from harness.stack import BACKUP_PASSWORD, BACKUP_ROLE

        min_bytes = int(args.min_size_mb * MiB)
        if args.scale is None:
            # Pick the scale: generate the small database first, then scale its size per unit up
            # to the minimum plus 10 % (the generator's fixed overhead makes this err on the big side).
            small = bench.generate(args.small_dbname, args.small_scale)
            per_unit = small["size_bytes"] / args.small_scale
            args.scale = max(math.ceil(min_bytes * 1.1 / per_unit * 4) / 4, 4 * args.small_scale)
            say(f"{mb(per_unit):.0f} MB per unit of scale at scale {args.small_scale:g}: picking scale {args.scale:g}")
            bench.generate(args.dbname, args.scale, min_bytes=min_bytes)
            args.scale_choice = "auto: from the size of the small database"
        else:
            bench.generate(args.dbname, args.scale, min_bytes=min_bytes)
            bench.generate(args.small_dbname, args.small_scale)
            args.scale_choice = "given"
        bench.cluster.create_backup_role(BACKUP_ROLE, BACKUP_PASSWORD)
        bench.prepare()
        bench.measure()
        summary = summarize(bench)
        print_report(summary, bench)
        machine_figures = machine(bench)
        finished_at = common.utc_now()
        pgdr_args = (f"run_logical_backup(jobs={args.jobs}, level={args.level}, part_size={args.part_mb} MiB, "
                     "include_role_passwords=False): dump, zstd and upload overlapped, then the "
                     "post-upload check of every object; SSE AES256")
        document = {
            **common.document_header("pgdr logical backup vs bare PostgreSQL tools", "backup_bench.py", argv,
                                     started_at, finished_at),
            "settings": {"scale": args.scale, "scale_choice": args.scale_choice, "small_scale": args.small_scale,
                         "repeat": args.repeat,
                         "jobs": args.jobs, "level": args.level, "part_mb": args.part_mb, "seed": args.seed,
                         "min_size_mb": args.min_size_mb},
            "databases": bench.databases,
            "connection": "every variant connects as the backup role (pgdr_backup: BYPASSRLS, pg_read_all_data, "
                          "no superuser) over TCP to 127.0.0.1, password in a PGPASSFILE (pgdr.core.pgtools.libpq_env)",
            "variants": {
                "pgdr": pgdr_args,
                "seed": bench.runs["seed"][0]["argv"],
                "pg_dump -Fc": bench.runs["pg_dump -Fc"][0]["argv"],
                "pg_dump -Fd -j2": bench.runs["pg_dump -Fd -j2"][0]["argv"],
            },
            "method": [
                "order of the variants alternates between repeats (forward, reversed, forward, ...)",
                "before each timed run: CHECKPOINT and sync (outside the timing)",
                "after generation: VACUUM (FREEZE, ANALYZE) so no variant pays for setting hint bits",
                "the data is in the OS page cache for every variant (24 GB RAM, no cache drop)",
                "pgdr time is measured inside its child process from LogicalBackup.run() to the last "
                "check_object (process_wall_seconds adds interpreter start and imports)",
                "bare pg_dump -Fc / -Fd fsync their output (pg_dump's default); pgdr (--no-sync) and the "
                "seed pipeline (stdout) do not",
                "sizes: pgdr = every uploaded object (zstd table data, uncompressed toc.dat, zstd globals); "
                "others = the output file or directory",
            ],
            "notes": [
                "moto (S3 server mode, a local child process) is part of the pgdr end-to-end figure: its "
                "upload speed (~90 MB/s on this machine) and its SHA-256/AES work are inside upload and check",
                "2-core, noisy virtual machine: the PostgreSQL server, pg_dump, zstd threads and moto all share "
                "the 2 cores",
            ],
            "machine": machine_figures,
            "results": summary,
            "runs": bench.runs,
            "small_scale_pgdr_runs": bench.small_runs,
        }
        common.write_results(document, args.output, "backup", finished_at)
        return 0

    return common.run_guarded(body, bench.stop_services)


if __name__ == "__main__":
    sys.exit(main())
