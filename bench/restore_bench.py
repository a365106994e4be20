#!/usr/bin/env python3
"""Restore benchmark: pgdr's restore from S3 against bare ``pg_restore -j2`` from a local copy.

One run builds the harness stack (``harness.stack.start_stack``: a throwaway PostgreSQL 15
cluster holding a synthetic care-commons database of about 1.14 GB at the default scale,
the backup and restore roles, a moto S3 server with a versioned, Object Lock bucket, a
Slack receiver) and an Airflow home on SQLite, runs the real ``pg_backup_daily`` DAG once
(child process, ``python -m harness.run_dag``) to put a backup in S3, then times,
``--repeat`` times each, the order of the variants alternating between repeats:

``pgdr``
    The real ``pg_restore`` DAG (mode ``new_database``, a new target database each
    repeat) in a child process, run with dag.test() as ``harness.run_dag`` does. The
    figure is the restore task's own result (XCom ``seconds.total``: toc and globals,
    CREATE DATABASE, download overlapped with pg_restore -j2 through FIFOs, the
    database-level settings, the row count check against the manifest). The DAG run's
    wall time (prepare + restore + report) and the child process's wall time are kept too.
``pgdr_local``
    pgdr's restore code (``pgdr.restore.logical.LogicalRestore``, the same pipes, hashing and
    checks) reading the objects from the local copy instead of S3, in a child process:
    what the restore costs when the download is free. Splits pgdr's figure into
    "restore path" and "download from moto".
``bare``
    ``pg_restore -j2 --exit-on-error --verbose -d <new db>`` as the superuser, from the same
    backup downloaded to a local directory and its ``.dat.zst`` files decompressed into a
    plain directory-format dump first (download and decompression outside the timing,
    measured separately).
``bare_gzip``
    ``pg_restore -j2 --exit-on-error --verbose -d <new db>`` of a plain ``pg_dump -Fd -j2`` (gzip)
    local dump of the same database, made once at the start: what an admin would have.
``bare_fifo`` (diagnostic)
    The ``bare`` restore again with the plain data files served through FIFOs by copy
    threads, as pgdr serves them, without zstd, hashing or download: what FIFOs alone
    change in pg_restore (its largest-first scheduling stats the data files; a FIFO's
    size is 0).

After the repeats it runs the real ``pg_restore_test`` drill DAG (``--drills`` times) and
copies each drill record (``<prefix>/reports/drill/*.json`` in S3) into
``bench/results/drills/`` (or ``--drills-dir``).

Run:  python bench/restore_bench.py [--scale 8.5] [--repeat 3] [--keep]
Writes bench/results/restore-<UTC date>.json (or --output). The cluster, the servers, the
children and the temporary work directory are removed on exit, Ctrl-C included.
This is a benchmark: nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugins"), str(REPO)]

from bench import common  # noqa: E402
from bench.common import Column, MiB, fixed, mb, median, rnd, say, tail  # noqa: E402

VARIANTS = ("pgdr", "pgdr_local", "bare", "bare_gzip", "bare_fifo")
LABELS = {
    "pgdr": "pgdr (DAG, from S3)",
    "pgdr_local": "pgdr (local copy)",
    "bare": "pg_restore -j2 plain",
    "bare_gzip": "pg_restore -j2 -Fd gz",
    "bare_fifo": "pg_restore -j2 via FIFOs",
}
DATABASE = "care_commons_db"        # the protected connection id (harness.stack.CONN_ID)
PREFIX = "bench"                    # pgdr_s3_prefix for the run
DEFAULT_SCALE = 8.5                 # about 1.14 GB of pg_database_size
RATIO_TARGET = 1.2
RTO_TARGETS = {"10 GB": (10e9, 5 * 60), "100 GB": (100e9, 45 * 60)}
DEFAULT_AWS_SPEEDS = "100,250"      # MB/s, for the download-included projections

# --------------------------------------------------------------------------------------------
# Timeline of pgdr.restore.fetch.PipedDataFiles (both pgdr children): when each object finished
# downloading, when pg_restore opened its FIFO and when feeding it ended. Timestamps only;
# the restore code itself is unchanged.
# --------------------------------------------------------------------------------------------

def install_timeline() -> dict:
    from pgdr.restore import fetch

    cls = fetch.PipedDataFiles
    events: dict = {"objects": {}, "runs": 0}
    lock = threading.Lock()
    orig_start, orig_download, orig_feed, orig_close = cls.start, cls._download, cls._feed, cls.close

    def record(obj, key: str, begin: float) -> None:
        with lock:
            entry = events["objects"].setdefault(obj.name, {"size": obj.size, "raw_size": obj.raw_size})
            entry[key] = [begin, time.monotonic()]

    def start(self):
        events.update(start=time.monotonic(), runs=events["runs"] + 1, objects={})
        return orig_start(self)

    def _download(self, obj):
        begin = time.monotonic()
        try:
            return orig_download(self, obj)
        finally:
            record(obj, "download", begin)

    def _feed(self, obj, fd):
        begin = time.monotonic()
        try:
            return orig_feed(self, obj, fd)
        finally:
            record(obj, "feed", begin)

    def close(self):
        events["close"] = time.monotonic()
        return orig_close(self)

    cls.start, cls._download, cls._feed, cls.close = start, _download, _feed, close
    return events


def timeline_summary(events: dict) -> dict | None:
    """Seconds after the downloads started: the last download done, the FIFO waits, the end of pg_restore."""
    if not events.get("start"):
        return None
    t0 = events["start"]
    objects = events["objects"]
    downloads = [o["download"] for o in objects.values() if "download" in o]
    feeds = [(o["feed"], o.get("download")) for o in objects.values() if "feed" in o]
    waits = []
    decompress = 0.0
    for (feed_begin, feed_end), download in feeds:
        ready = download[1] if download else feed_begin
        waits.append(max(0.0, min(ready, feed_end) - feed_begin))
        decompress += max(0.0, feed_end - max(feed_begin, ready))
    largest = max(objects.values(), key=lambda o: o["size"]) if objects else None
    return {
        "objects": len(objects),
        "download_all_done_s": rnd(max(d[1] for d in downloads) - t0) if downloads else None,
        "first_fifo_opened_s": rnd(min(f[0][0] for f in feeds) - t0) if feeds else None,
        "last_fifo_opened_s": rnd(max(f[0][0] for f in feeds) - t0) if feeds else None,
        "last_feed_done_s": rnd(max(f[0][1] for f in feeds) - t0) if feeds else None,
        "pg_restore_done_s": rnd(events["close"] - t0) if events.get("close") else None,
        "fifo_wait_total_s": rnd(sum(waits)),
        "fifo_wait_max_s": rnd(max(waits)) if waits else None,
        "feed_seconds_total": rnd(decompress),
        "largest_object": ({"bytes": largest["size"],
                            "download_done_s": rnd(largest["download"][1] - t0) if "download" in largest else None,
                            "fifo_opened_s": rnd(largest["feed"][0] - t0) if "feed" in largest else None}
                           if largest else None),
    }


# --------------------------------------------------------------------------------------------
# Children
# --------------------------------------------------------------------------------------------

def dag_child(spec_path: str) -> int:
    """Run the pg_restore DAG once with dag.test() (as harness.run_dag does) and write its figures."""
    signal.signal(signal.SIGTERM, common.raise_interrupt)
    spec = json.loads(Path(spec_path).read_text())
    events = install_timeline()
    import resource

    from harness.run_dag import load_dag_for_test

    t_load = time.perf_counter()
    dag = load_dag_for_test(spec["dag_id"])
    t0 = time.perf_counter()
    dag_run = dag.test(run_conf=spec["conf"])
    wall = time.perf_counter() - t0
    sys.stdout.flush()

    from airflow.models.xcom import XComModel as XCom
    from airflow.settings import Session

    session = Session()
    tasks = {}
    for ti in dag_run.get_task_instances(session=session):
        tasks[ti.task_id] = {"state": str(ti.state), "duration_seconds": ti.duration,
                             "start": ti.start_date.isoformat() if ti.start_date else None,
                             "end": ti.end_date.isoformat() if ti.end_date else None}
    rows = session.query(XCom).filter(XCom.dag_id == dag_run.dag_id, XCom.run_id == dag_run.run_id,
                                      XCom.task_id == "restore", XCom.key == "return_value").all()
    outcome = XCom.deserialize_value(rows[0]) if rows else None
    own = resource.getrusage(resource.RUSAGE_SELF)
    result = {
        "dag_id": dag_run.dag_id, "run_id": dag_run.run_id, "state": str(dag_run.state),
        "dag_test_seconds": wall, "dag_load_seconds": t0 - t_load,
        "dag_run_seconds": ((dag_run.end_date - dag_run.start_date).total_seconds()
                            if dag_run.end_date and dag_run.start_date else None),
        "tasks": tasks, "restore": outcome, "timeline": timeline_summary(events),
        "cpu_seconds_self": own.ru_utime + own.ru_stime,
    }
    common.write_result(spec, result)
    print("\n" + json.dumps({"dag_id": dag_run.dag_id, "run_id": dag_run.run_id, "state": str(dag_run.state)}))
    return 0 if result["state"] == "success" else 1


class _LocalBody:
    """A GetObject body (read, iter_chunks, close) over a local file."""

    def __init__(self, path: Path) -> None:
        self.handle = open(path, "rb")  # closed by the reader, as a botocore body is

    def read(self, size: int = -1) -> bytes:
        return self.handle.read(size)

    def iter_chunks(self, size: int):
        while block := self.handle.read(size):
            yield block
        self.handle.close()

    def close(self) -> None:
        self.handle.close()


class _LocalStore:
    """The one store call pgdr's restore makes (open_object), answered from a local copy of the backup."""

    bucket = "local-copy"

    def __init__(self, directory: Path, prefix: str) -> None:
        self.directory = directory
        self.prefix = prefix

    def open_object(self, key: str, version_id: str | None = None) -> dict:
        assert key.startswith(self.prefix + "/") and version_id is None, key
        return {"Body": _LocalBody(self.directory / key[len(self.prefix) + 1:])}


def local_child(spec_path: str) -> int:
    """pgdr's restore (LogicalRestore, mode new_database) with the objects read from a local copy."""
    spec, log = common.child_start(spec_path)
    events = install_timeline()

    from pgdr.restore.logical import LogicalRestore
    from pgdr.restore.names import RestoreNames
    from pgdr.store.manifest import Manifest

    manifest = Manifest.from_json(Path(spec["manifest"]).read_text())
    target, connect_to = common.pg_target("care_commons_admin", spec["host"], spec["port"], spec["user"],
                                          spec["password"], "postgres")

    def connect(dbname: str):
        conn = connect_to(dbname)
        conn.autocommit = True
        return conn

    name = spec["target_database"]
    restore = LogicalRestore(
        store=_LocalStore(Path(spec["local_dir"]), spec["prefix"]), manifest=manifest, prefix=spec["prefix"],
        target=target, connect=connect, names=RestoreNames(name, name, None, None), mode="new_database",
        tables=(), workdir=Path(spec["workdir"]), bindir=Path(spec["bindir"]), jobs=spec["jobs"], log=log)
    outcome = restore.run()
    outcome.update(timeline=timeline_summary(events), cpu_seconds=common.child_usage())
    common.write_result(spec, outcome)
    return 0


def _dag_outcome(path: Path) -> dict:
    """The outcome line harness.run_dag prints last on stdout (stderr may follow it in the log)."""
    for line in reversed(path.read_text(errors="replace").splitlines()):
        if line.startswith('{"dag_id"'):
            return json.loads(line)
    return {"state": None}


def dag_test_startup_seconds(log_path: Path) -> float | None:
    """dag.test() starts an in-process execution API before the first task: from the first
    "[DAG TEST] running task" to the first "Task started" (Airflow's cost, not pgdr's)."""
    import re

    stamp = re.compile(r"^(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+Z) ")
    running = started = None
    for line in log_path.read_text(errors="replace").splitlines():
        match = stamp.match(line)
        if not match:
            continue
        if running is None and "[DAG TEST] running task" in line:
            running = dt.datetime.fromisoformat(match.group(1))
        elif running is not None and "Task started" in line:
            started = dt.datetime.fromisoformat(match.group(1))
            break
    return (started - running).total_seconds() if running and started else None


def _cpu_busy() -> tuple[float, float]:
    """Machine-wide (busy, iowait) CPU seconds so far, all cores, every process of every session."""
    import psutil

    times = psutil.cpu_times()
    busy = times.user + times.nice + times.system + getattr(times, "irq", 0) + getattr(times, "softirq", 0) \
        + getattr(times, "steal", 0)
    return busy, getattr(times, "iowait", 0.0)


# --------------------------------------------------------------------------------------------
# The benchmark
# --------------------------------------------------------------------------------------------

class Bench:
    def __init__(self, args) -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="pgdr-restore-bench-", dir=args.workdir))
        self.stack = None
        self.s3_client = None
        self.env: dict[str, str] = {}
        self.manifest = None
        self.manifest_path = self.work / "manifest.json"
        self.backup: dict = {}
        self.source: dict = {}
        self.gzip_dump: dict = {}
        self.runs: dict[str, list[dict]] = {name: [] for name in VARIANTS}
        self.downloads: list[dict] = []
        self.drills: list[dict] = []

    # -- services --------------------------------------------------------------------------

    def start_services(self) -> None:
        from harness import airflow_env

        say("Airflow home on SQLite: airflow db migrate")
        airflow_env.apply(self.work / "airflow")
        for name in list(os.environ):  # a setting left in the shell must not leak into the run
            if name.startswith(("AIRFLOW_VAR_PGDR_", "AIRFLOW_CONN_")):
                del os.environ[name]
        t0 = time.perf_counter()
        airflow_env.migrate()
        say(f"  migrated in {time.perf_counter() - t0:.1f} s")
        self.stack, seconds = common.start_harness_stack(self.work, self.args.scale, self.args.seed,
                                                         "moto S3, Slack receiver")
        self.s3_client = self.stack.s3.client()
        cluster = self.stack.cluster
        size = self._db_size("care_commons")
        self.source = {"dbname": "care_commons", "scale": self.args.scale, "size_bytes": size,
                       "size_mb": round(mb(size), 1), "tables": len(self.stack.row_counts),
                       "rows": sum(self.stack.row_counts.values()), "stack_start_seconds": round(seconds, 1)}
        say(f"  care_commons: pg_database_size {size:,} bytes ({mb(size):,.1f} MB), "
            f"{self.source['rows']:,} rows in {self.source['tables']} tables; stack up in {seconds:.1f} s")
        self.env = self.stack.airflow_env()
        self.env.update({
            "AIRFLOW_VAR_PGDR_STAGING_DIR": str(self.work / "staging"),
            "AIRFLOW_VAR_PGDR_S3_PREFIX": PREFIX,
            "AIRFLOW_VAR_PGDR_DUMP_JOBS": str(self.args.jobs),
            "AIRFLOW_VAR_PGDR_PG_BINDIR": str(cluster.bindir),
        })
        os.environ.update(self.env)

    def stop_services(self) -> None:
        common.stop_all()
        if self.stack is not None:
            self.stack.stop()
        common.remove_work(self.work, self.args.keep, "the work directory (logs, local copies) is")

    def _db_size(self, dbname: str) -> int:
        return common.db_size(self.stack.cluster, dbname)

    def _settle(self) -> None:
        common.settle(self.stack.cluster)

    def _drop(self, dbname: str) -> None:
        self.stack.cluster.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')

    # -- setup: one backup, one pg_dump -Fd --------------------------------------------------

    def make_backup(self) -> None:
        from pgdr.store.manifest import Manifest

        say("pg_backup_daily (python -m harness.run_dag, child process)")
        log_path = self.work / "pg_backup_daily.log"
        child = common.run_child([sys.executable, "-m", "harness.run_dag", "pg_backup_daily"], log_path, sample=False)
        if child["returncode"] != 0 or _dag_outcome(log_path)["state"] != "success":
            raise RuntimeError(f"pg_backup_daily failed:\n{tail(log_path)}")
        keys = []
        for page in self.s3_client.get_paginator("list_objects_v2").paginate(
                Bucket=self._bucket, Prefix=f"{PREFIX}/{DATABASE}/logical/"):
            keys.extend(o["Key"] for o in page.get("Contents", []) if o["Key"].endswith("/manifest.json"))
        if len(keys) != 1:
            raise RuntimeError(f"expected one backup in S3, found {keys}")
        text = self.s3_client.get_object(Bucket=self._bucket, Key=keys[0])["Body"].read()
        self.manifest_path.write_bytes(text)
        self.manifest = Manifest.from_json(text)
        m = self.manifest
        data = [o for o in m.objects if o.role == "table_data"]
        self.backup = {
            "backup_id": m.backup_id, "prefix": keys[0].rsplit("/", 1)[0], "objects": len(m.objects),
            "table_data_objects": len(data), "stored_bytes": m.total_size,
            "raw_bytes": sum((o.raw_size or o.size) for o in m.objects),
            "largest_object_bytes": max(o.size for o in m.objects), "tables": len(m.row_counts),
            "rows": sum(m.row_counts.values()), "dump": {k: v for k, v in m.dump.items() if k != "seconds"},
            "dag_process_wall_seconds": round(child["wall_seconds"], 1),
        }
        say(f"  backup {m.backup_id}: {len(m.objects)} objects, {m.total_size:,} bytes stored "
            f"({mb(m.total_size):.1f} MB; largest {mb(self.backup['largest_object_bytes']):.1f} MB), "
            f"in {child['wall_seconds']:.1f} s (child process wall)")

    @property
    def _bucket(self) -> str:
        from harness.stack import BUCKET

        return BUCKET

    def make_gzip_dump(self) -> None:
        cluster = self.stack.cluster
        out = self.work / "pg_dump_Fd"
        argv = [str(cluster.bindir / "pg_dump"), "-Fd", f"--jobs={self.args.jobs}", f"--file={out}", "care_commons"]
        say(f"local dump for bare_gzip: pg_dump -Fd --jobs={self.args.jobs} (gzip default level), as the superuser")
        t0 = time.perf_counter()
        subprocess.run(argv, env=cluster.tool_env(), check=True, capture_output=True)
        seconds = time.perf_counter() - t0
        self.gzip_dump = {"path": str(out), "size_bytes": common.tree_size(out), "dump_seconds": round(seconds, 2),
                          "argv": f"pg_dump -Fd --jobs={self.args.jobs} --file=pg_dump_Fd care_commons"}
        say(f"  {mb(self.gzip_dump['size_bytes']):.1f} MB in {seconds:.1f} s")

    # -- the local copy of the backup (outside every timing) ---------------------------------

    def download_backup(self, repeat: int) -> dict:
        """Every object of the backup from moto to a local directory, sha256 checked, 4 threads
        (pgdr's fetch uses max(jobs, 2) + 2 = 4); then the .zst files unpacked into a plain
        directory-format dump. Timed, but outside every variant's figure."""
        from pgdr.core.compression import decompress_to
        from pgdr.restore.fetch import plain_name

        raw = self.work / "local" / "raw"
        plain = self.work / "local" / "plain"
        shutil.rmtree(self.work / "local", ignore_errors=True)
        prefix = self.backup["prefix"]
        objects = sorted(self.manifest.objects, key=lambda o: o.size, reverse=True)
        workers = max(self.args.jobs, 2) + 2

        def fetch(obj) -> int:
            target = raw / obj.name
            target.parent.mkdir(parents=True, exist_ok=True)
            body = self.s3_client.get_object(Bucket=self._bucket, Key=f"{prefix}/{obj.name}")["Body"]
            digest = hashlib.sha256()
            with open(target, "wb") as handle:
                for block in body.iter_chunks(4 * MiB):
                    digest.update(block)
                    handle.write(block)
            if digest.hexdigest() != obj.sha256:
                raise RuntimeError(f"{obj.name}: sha256 differs from the manifest")
            return obj.size

        self._settle()
        t0 = time.perf_counter()
        with ThreadPoolExecutor(workers) as pool:
            downloaded = sum(pool.map(fetch, objects))
        download_seconds = time.perf_counter() - t0

        def unpack(obj) -> int:
            source = raw / obj.name
            target = plain / obj.name
            target.parent.mkdir(parents=True, exist_ok=True)
            if obj.compression == "zstd":
                target = target.with_name(plain_name(obj))
                with open(target, "wb") as handle:
                    return decompress_to(source, handle)
            shutil.copyfile(source, target)
            return obj.size

        t0 = time.perf_counter()
        with ThreadPoolExecutor(self.args.jobs) as pool:
            unpacked = sum(pool.map(unpack, objects))
        decompress_seconds = time.perf_counter() - t0
        result = {"repeat": repeat, "download_seconds": download_seconds, "downloaded_bytes": downloaded,
                  "download_mb_per_s": mb(downloaded) / download_seconds, "threads": workers,
                  "decompress_seconds": decompress_seconds, "plain_bytes": unpacked,
                  "decompress_threads": self.args.jobs}
        say(f"  local copy: downloaded {mb(downloaded):.1f} MB from moto in {download_seconds:.1f} s "
            f"({result['download_mb_per_s']:.1f} MB/s, {workers} threads), unzstd to {mb(unpacked):.1f} MB "
            f"in {decompress_seconds:.1f} s ({self.args.jobs} threads)")
        return result

    # -- variants ----------------------------------------------------------------------------

    def run_pgdr(self, repeat: int) -> dict:
        target = f"bench_pgdr_{repeat}"
        run_dir = self.work / f"pgdr_{repeat}"
        run_dir.mkdir(parents=True)
        spec = {"dag_id": "pg_restore",
                "conf": {"database": DATABASE, "backup": self.backup["backup_id"], "mode": "new_database",
                         "target_database": target}}
        self._settle()
        result, child = common.run_spec_child(__file__, "--child-dag", spec, run_dir, log_name="dag.log",
                                              what="pg_restore DAG")
        outcome = result.pop("restore")
        restored_size = self._db_size(target)
        self._drop(target)
        seconds = outcome["seconds"]
        return {
            "seconds": seconds["total"], "stages": seconds, "target_database": target,
            "dag_run_seconds": result["dag_run_seconds"], "dag_test_seconds": result["dag_test_seconds"],
            "dag_test_api_startup_seconds": dag_test_startup_seconds(run_dir / "dag.log"),
            "process_wall_seconds": child["wall_seconds"], "dag_load_seconds": result["dag_load_seconds"],
            "tasks": result["tasks"], "database_size_bytes": outcome["database_size_bytes"],
            "restored_size_bytes_superuser_view": restored_size, "downloaded_bytes": outcome["downloaded_bytes"],
            "restored_raw_bytes": outcome["restored_raw_bytes"], "tables": outcome["tables"],
            "rows": outcome["rows"], "row_counts_match": outcome["row_counts_match"],
            "timeline": result["timeline"], "peak_rss_bytes": child["peak_rss_bytes"],
            "peak_tree_rss_bytes": child["peak_tree_rss_bytes"], "cpu_seconds_self": result["cpu_seconds_self"],
            "cpu_seconds_process_tree": child["cpu_seconds"],
        }

    def run_pgdr_local(self, repeat: int) -> dict:
        from harness.stack import RESTORE_PASSWORD, RESTORE_ROLE

        cluster = self.stack.cluster
        target = f"bench_pgdr_local_{repeat}"
        run_dir = self.work / f"pgdr_local_{repeat}"
        run_dir.mkdir(parents=True)
        spec = {"host": cluster.host, "port": cluster.port, "user": RESTORE_ROLE, "password": RESTORE_PASSWORD,
                "manifest": str(self.manifest_path), "local_dir": str(self.work / "local" / "raw"),
                "prefix": self.backup["prefix"], "target_database": target, "workdir": str(run_dir / "work"),
                "bindir": str(cluster.bindir), "jobs": self.args.jobs}
        self._settle()
        outcome, child = common.run_spec_child(__file__, "--child-local", spec, run_dir, log_name="restore.log",
                                               what="pgdr_local")
        self._drop(target)
        return {"seconds": outcome["seconds"]["total"], "stages": outcome["seconds"], "target_database": target,
                "process_wall_seconds": child["wall_seconds"], "database_size_bytes": outcome["database_size_bytes"],
                "tables": outcome["tables"], "rows": outcome["rows"], "row_counts_match": outcome["row_counts_match"],
                "timeline": outcome["timeline"], "peak_rss_bytes": child["peak_rss_bytes"],
                "peak_tree_rss_bytes": child["peak_tree_rss_bytes"], "cpu_seconds": outcome["cpu_seconds"]}

    def _fifo_dump(self, repeat: int) -> tuple[Path, list[threading.Thread]]:
        """The plain dump again, its data files served through FIFOs by copy threads, as pgdr serves them
        (without zstd, hashing or downloads): isolates what FIFOs change in pg_restore itself."""
        plain = self.work / "local" / "plain" / "dump"
        fifo_dir = self.work / "local" / f"fifo_{repeat}"
        fifo_dir.mkdir(parents=True)
        feeders = []

        def feed(source: Path, fifo: Path) -> None:
            try:
                with open(fifo, "wb") as pipe, open(source, "rb") as handle:
                    shutil.copyfileobj(handle, pipe, 4 * MiB)
            except BrokenPipeError:
                pass

        for path in plain.iterdir():
            if path.name == "toc.dat":
                shutil.copyfile(path, fifo_dir / path.name)
                continue
            os.mkfifo(fifo_dir / path.name, 0o600)
            thread = threading.Thread(target=feed, args=(path, fifo_dir / path.name), daemon=True)
            thread.start()
            feeders.append(thread)
        return fifo_dir, feeders

    def run_bare(self, name: str, repeat: int) -> dict:
        cluster = self.stack.cluster
        target = f"bench_{name}_{repeat}"
        feeders: list[threading.Thread] = []
        if name == "bare":
            source, shown = self.work / "local" / "plain" / "dump", "plain/dump"
        elif name == "bare_fifo":
            source, feeders = self._fifo_dump(repeat)
            shown = "fifo/ (the plain files through FIFOs)"
        else:
            source, shown = Path(self.gzip_dump["path"]), "pg_dump_Fd"
        self.stack.cluster.execute(f'CREATE DATABASE "{target}" TEMPLATE template0')
        argv = [str(cluster.bindir / "pg_restore"), f"--jobs={self.args.jobs}", "--exit-on-error", "--verbose",
                f"--dbname={target}", str(source)]
        log_path = self.work / f"{name}_{repeat}.log"
        self._settle()
        child = common.run_child(argv, log_path, env=cluster.tool_env())
        for thread in feeders:
            thread.join(5)
        if child["returncode"] != 0:
            raise RuntimeError(f"{name} failed (exit {child['returncode']}):\n{tail(log_path)}")
        # the order pg_restore loaded the tables in (--verbose), and where the largest one came
        order = [line.split("processing data for table ", 1)[1].strip('"') for line in
                 log_path.read_text(errors="replace").splitlines() if "processing data for table " in line]
        largest = self._largest_table()
        # outside the timing: the restored rows checked against the manifest (pgdr checks them inside its figure)
        counts = self._row_counts(target)
        match = counts == dict(self.manifest.row_counts)
        size = self._db_size(target)
        self._drop(target)
        if name == "bare_fifo":
            shutil.rmtree(source, ignore_errors=True)
        if not match:
            raise RuntimeError(f"{name}: restored row counts differ from the manifest")
        return {"seconds": child["wall_seconds"], "target_database": target, "database_size_bytes": size,
                "rows": sum(counts.values()), "row_counts_match": match,
                "peak_tree_rss_bytes": child["peak_tree_rss_bytes"],
                "cpu_seconds_pg_restore": child["cpu_seconds"], "data_order": order, "largest_table": largest,
                "largest_table_position": order.index(largest) + 1 if largest in order else None,
                "argv": f"pg_restore --jobs={self.args.jobs} --exit-on-error --verbose --dbname={target} {shown}"}

    def _largest_table(self) -> str:
        """schema.table of the biggest table_data object (pg_restore --list maps dump ids to tables)."""
        if not getattr(self, "_largest", None):
            data = [o for o in self.manifest.objects if o.role == "table_data"]
            biggest = max(data, key=lambda o: o.raw_size or o.size).name.split("/")[-1].split(".")[0]
            listing = subprocess.run([str(self.stack.cluster.bindir / "pg_restore"), "--list",
                                      str(self.work / "local" / "plain" / "dump")],
                                     capture_output=True, text=True, check=True).stdout
            for line in listing.splitlines():
                parts = line.split()
                if line.startswith(f"{biggest};") and "TABLE DATA" in line:
                    self._largest = f"{parts[5]}.{parts[6]}"
        return self._largest

    def _row_counts(self, dbname: str) -> dict[str, int]:
        return common.row_counts(self.stack.cluster.connect(dbname), self.manifest.row_counts, only=True)

    def run_variant(self, name: str, repeat: int) -> dict:
        load_before = os.getloadavg()[0]
        busy0, iowait0 = _cpu_busy()
        if name == "pgdr":
            result = self.run_pgdr(repeat)
        elif name == "pgdr_local":
            result = self.run_pgdr_local(repeat)
        else:
            result = self.run_bare(name, repeat)
        busy1, iowait1 = _cpu_busy()
        result.update(repeat=repeat, loadavg_1m_before=round(load_before, 2),
                      machine_cpu_busy_seconds=round(busy1 - busy0, 1),
                      machine_iowait_seconds=round(iowait1 - iowait0, 1))
        return result

    def measure(self) -> None:
        for repeat, sequence in common.repeats(VARIANTS, self.args.repeat):
            self.downloads.append(self.download_backup(repeat))
            for name in sequence:
                result = self.run_variant(name, repeat)
                result["position"] = sequence.index(name) + 1
                self.runs[name].append(result)
                extra = ""
                if name in ("pgdr", "pgdr_local"):
                    st, tl = result["stages"], result["timeline"] or {}
                    extra = (f"  [download_and_restore {st['download_and_restore']:.1f} / verify {st['verify']:.1f} s; "
                             f"downloads done at {tl.get('download_all_done_s')} s, pg_restore done at "
                             f"{tl.get('pg_restore_done_s')} s, FIFO waits {tl.get('fifo_wait_total_s')} s; "
                             f"peak RSS {mb(result['peak_rss_bytes']):.0f} MB]")
                    if name == "pgdr":
                        extra = (f"  (DAG run {result['dag_run_seconds']:.1f} s, process "
                                 f"{result['process_wall_seconds']:.1f} s)"
                                 + extra)
                if name.startswith("bare"):
                    extra = (f"  [largest table {result['largest_table']} loaded "
                             f"{result['largest_table_position']}/{len(result['data_order'])}]")
                say(f"  {LABELS[name]:<24} {result['seconds']:7.1f} s  load {result['loadavg_1m_before']:.2f}{extra}")
        shutil.rmtree(self.work / "local", ignore_errors=True)

    # -- the drill ---------------------------------------------------------------------------

    def run_drills(self) -> None:
        drills_dir = Path(self.args.drills_dir)
        drills_dir.mkdir(parents=True, exist_ok=True)
        for number in range(1, self.args.drills + 1):
            say(f"pg_restore_test drill {number}/{self.args.drills} (python -m harness.run_dag, child process)")
            before = set(self._drill_keys())
            log_path = self.work / f"drill_{number}.log"
            self._settle()
            child = common.run_child([sys.executable, "-m", "harness.run_dag", "pg_restore_test"], log_path)
            new = sorted(set(self._drill_keys()) - before)
            if child["returncode"] != 0 or len(new) != 1:
                raise RuntimeError(f"pg_restore_test failed or wrote {len(new)} records:\n{tail(log_path)}")
            record = json.loads(self.s3_client.get_object(Bucket=self._bucket, Key=new[0])["Body"].read())
            copy = drills_dir / new[0].rsplit("/", 1)[1]
            copy.write_text(json.dumps(record, indent=2) + "\n")
            state = _dag_outcome(log_path)["state"]
            summary = {"key": new[0], "copied_to": str(copy.relative_to(REPO) if copy.is_relative_to(REPO) else copy),
                       "dag_state": state, "status": record.get("status"), "rto_seconds": record.get("rto_seconds"),
                       "projected_rto_seconds": record.get("projected_rto_seconds"), "stages": record.get("stages"),
                       "source_size_bytes": record.get("source_size_bytes"),
                       "restored_size_bytes": record.get("restored_size_bytes"),
                       "checks": len(record.get("checks") or []), "problems": record.get("problems"),
                       "process_wall_seconds": round(child["wall_seconds"], 1),
                       "peak_rss_bytes": child["peak_rss_bytes"]}
            self.drills.append(summary)
            say(f"  drill {record.get('status')}: RTO {record.get('rto_seconds')} s (projected "
                f"{record.get('projected_rto_seconds')} s; stages {record.get('stages')}), "
                f"{summary['checks']} integrity checks; record copied to {summary['copied_to']}")

    def _drill_keys(self) -> list[str]:
        response = self.s3_client.list_objects_v2(Bucket=self._bucket, Prefix=f"{PREFIX}/reports/drill/")
        return [o["Key"] for o in response.get("Contents", [])]


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

def machine(bench: Bench) -> dict:
    cluster = bench.stack.cluster
    info = common.machine_info(cluster, ("airflow", "zstandard", "boto3", "moto", "psycopg2", "psutil"))
    settings = ("shared_buffers", "maintenance_work_mem", "max_wal_size", "fsync", "synchronous_commit")
    info["server_settings"] = {name: cluster.execute(f"SHOW {name}")[0][0] for name in settings}
    out = subprocess.run([str(cluster.bindir / "pg_restore"), "--version"], capture_output=True, text=True).stdout
    info["pg_restore"] = out.strip()
    info["disk_free_bytes_at_end"] = shutil.disk_usage(bench.work).free
    return info


def summarize(bench: Bench, aws_speeds: list[float]) -> dict:
    runs = bench.runs
    med = {name: median(r["seconds"] for r in runs[name]) for name in VARIANTS}
    bare, bare_gzip = med["bare"], med["bare_gzip"]
    dag_run = median(r["dag_run_seconds"] for r in runs["pgdr"])
    dag_run_net = median(r["dag_run_seconds"] - (r["dag_test_api_startup_seconds"] or 0) for r in runs["pgdr"])
    api_startup = median(r["dag_test_api_startup_seconds"] for r in runs["pgdr"])
    process = median(r["process_wall_seconds"] for r in runs["pgdr"])
    download = median(d["download_seconds"] for d in bench.downloads)
    unzstd = median(d["decompress_seconds"] for d in bench.downloads)
    manual = median(d["download_seconds"] + d["decompress_seconds"] + r["seconds"]
                     for d, r in zip(bench.downloads, runs["bare"], strict=False))

    def row(key, label, seconds, values, what):
        return {"variant": key, "label": label, "median_seconds": rnd(seconds),
                "runs_seconds": [rnd(v) for v in values], "ratio_vs_bare": rnd(seconds / bare, 3),
                "ratio_vs_bare_gzip": rnd(seconds / bare_gzip, 3), "what": what}

    table = [
        row("pgdr", LABELS["pgdr"], med["pgdr"], [r["seconds"] for r in runs["pgdr"]],
            "the restore task's own figure (XCom seconds.total): toc/globals, CREATE DATABASE, download from moto "
            "overlapped with pg_restore -j2 through FIFOs, database settings, row counts vs the manifest"),
        row("pgdr_dag_run", "pgdr DAG run", dag_run, [r["dag_run_seconds"] for r in runs["pgdr"]],
            "the whole pg_restore DAG run (dag.test): prepare (catalog, HEAD of every object, target checks), "
            "restore, report (record to S3, Slack)"),
        row("pgdr_dag_run_net", "pgdr DAG run - dag.test API", dag_run_net,
            [r["dag_run_seconds"] - (r["dag_test_api_startup_seconds"] or 0) for r in runs["pgdr"]],
            "the DAG run minus the start of dag.test()'s in-process execution API before the first task "
            "(Airflow's cost under dag.test, not pgdr's; a scheduler's worker has its API server running)"),
        row("pgdr_process", "pgdr DAG process", process, [r["process_wall_seconds"] for r in runs["pgdr"]],
            "the child process: interpreter start, Airflow import, DagBag parse, dag.test"),
        row("pgdr_local", LABELS["pgdr_local"], med["pgdr_local"], [r["seconds"] for r in runs["pgdr_local"]],
            "pgdr.restore.logical.LogicalRestore with the objects read from a local copy: the restore path without S3"),
        row("bare", LABELS["bare"], bare, [r["seconds"] for r in runs["bare"]],
            "pg_restore -j2 --exit-on-error -d <new db> of the backup's dump, unzstd'ed to plain files beforehand"),
        row("bare_gzip", LABELS["bare_gzip"], bare_gzip, [r["seconds"] for r in runs["bare_gzip"]],
            "pg_restore -j2 --exit-on-error -d <new db> of a local pg_dump -Fd -j2 (gzip) dump"),
        row("bare_fifo", LABELS["bare_fifo"], med["bare_fifo"], [r["seconds"] for r in runs["bare_fifo"]],
            "diagnostic: the same plain files served to pg_restore -j2 through FIFOs by plain copy threads, as "
            "pgdr serves them (no zstd, hashing or download). A FIFO's size is 0, so pg_restore's largest-first "
            "scheduling of the data falls back to dump-id order"),
        row("manual", "download+unzstd+pg_restore", manual,
            [d["download_seconds"] + d["decompress_seconds"] + r["seconds"]
             for d, r in zip(bench.downloads, runs["bare"], strict=False)],
            "what restoring pgdr's backup by hand would take, one step after the other (download from moto, "
            "unzstd, bare pg_restore -j2), per repeat"),
    ]
    stage_keys = sorted({k for r in runs["pgdr"] for k in r["stages"]})
    stages = {name: {k: rnd(median(r["stages"].get(k) for r in runs[name])) for k in stage_keys}
              for name in ("pgdr", "pgdr_local")}
    tasks = {task: rnd(median(r["tasks"][task]["duration_seconds"] for r in runs["pgdr"]))
             for task in runs["pgdr"][0]["tasks"]}
    tasks["dag_test_api_startup (inside prepare)"] = rnd(api_startup)
    timeline = {name: {k: rnd(median((r["timeline"] or {}).get(k) for r in runs[name]))
                       for k in ("download_all_done_s", "first_fifo_opened_s", "last_fifo_opened_s",
                                 "last_feed_done_s", "pg_restore_done_s", "fifo_wait_total_s", "fifo_wait_max_s",
                                 "feed_seconds_total")}
                for name in ("pgdr", "pgdr_local")}

    size = median(r["database_size_bytes"] for r in runs["pgdr"])
    stored = bench.backup["stored_bytes"]
    stored_per_byte = stored / size
    pgdr_s_per_byte = med["pgdr"] / size
    local_s_per_byte = med["pgdr_local"] / size
    dag_overhead = dag_run_net - med["pgdr"]   # prepare, task start-up, report: per run, not per byte
    bare_s_per_byte = bare / size
    moto_rate = stored / download  # bytes/s
    projections = {}
    for label, (target_bytes, budget) in RTO_TARGETS.items():
        entry = {
            "database_bytes": target_bytes, "budget_seconds": budget,
            "stored_bytes": round(stored_per_byte * target_bytes),
            "as_measured_moto": round(pgdr_s_per_byte * target_bytes, 1),
            "with_dag_overhead": round(dag_overhead + pgdr_s_per_byte * target_bytes, 1),
            "download_excluded": round(local_s_per_byte * target_bytes, 1),
            "bare_pg_restore": round(bare_s_per_byte * target_bytes, 1),
            "download_alone_at_moto_speed": round(stored_per_byte * target_bytes / moto_rate, 1),
            "aws": {},
        }
        for speed in aws_speeds:
            fetch = stored_per_byte * target_bytes / (speed * 1e6)
            local = local_s_per_byte * target_bytes
            entry["aws"][f"{speed:g} MB/s"] = {"download_seconds": round(fetch, 1),
                                                "sequential_upper_bound": round(local + fetch, 1),
                                                "overlapped_lower_bound": round(max(local, fetch), 1)}
        entry["met"] = entry["as_measured_moto"] < budget
        projections[label] = entry

    ratio = med["pgdr"] / bare
    peak = max(r["peak_rss_bytes"] for r in runs["pgdr"])
    targets = {
        "ratio": {"target": f"pgdr restore <= {RATIO_TARGET}x bare pg_restore -j2 from a local copy",
                  "pgdr_seconds": rnd(med["pgdr"]), "bare_seconds": rnd(bare),
                  "bare_gzip_seconds": rnd(bare_gzip), "ratio": rnd(ratio, 3),
                  "ratio_vs_bare_gzip": rnd(med["pgdr"] / bare_gzip, 3),
                  "ratio_dag_run": rnd(dag_run / bare, 3), "ratio_dag_run_net": rnd(dag_run_net / bare, 3),
                  "ratio_local": rnd(med["pgdr_local"] / bare, 3),
                  "target_seconds": rnd(RATIO_TARGET * bare), "met": ratio <= RATIO_TARGET,
                  "met_vs_bare_gzip": med["pgdr"] / bare_gzip <= RATIO_TARGET},
    }
    for label, entry in projections.items():
        targets[f"rto_{label.replace(' ', '')}"] = {
            "target": f"projected RTO for {label} < {entry['budget_seconds'] / 60:g} min",
            "projected_seconds": entry["as_measured_moto"], "budget_seconds": entry["budget_seconds"],
            "met": entry["met"], "download_excluded_seconds": entry["download_excluded"],
            "with_dag_overhead_seconds": entry["with_dag_overhead"]}
    return {
        "table": table, "stage_median_seconds": stages, "task_duration_median_seconds": tasks,
        "timeline_median_seconds": timeline,
        "download": {"median_seconds": rnd(download), "bytes": stored,
                     "median_mb_per_s": rnd(mb(moto_rate), 1), "unzstd_median_seconds": rnd(unzstd),
                     "runs": bench.downloads},
        "throughput": {"database_bytes": size, "stored_bytes": stored,
                       "stored_per_database_byte": round(stored_per_byte, 4),
                       "pgdr_mb_per_s": rnd(mb(size) / med["pgdr"], 1),
                       "pgdr_local_mb_per_s": rnd(mb(size) / med["pgdr_local"], 1),
                       "bare_mb_per_s": rnd(mb(size) / bare, 1)},
        "projection_method": (
            "linear in the database size (pg_database_size of the restored database): seconds per byte measured "
            "at this size times 10e9 and 100e9 bytes (decimal GB; GiB would be 7.4 % more). as_measured_moto: the "
            "restore task's total with moto as the S3 endpoint; with_dag_overhead: that plus the rest of the DAG run "
            "(prepare, task start-up, report; without dag.test's API start) as a fixed cost per run; "
            "download_excluded: pgdr's restore code reading a local copy; aws: download_excluded plus the stored "
            "bytes (backup size per database byte as measured) at the given S3 speed, added (upper bound: no "
            "overlap) or overlapped perfectly (lower bound)"),
        "dag_overhead_seconds": rnd(dag_overhead),
        "projections": projections,
        "memory": {"measure": "peak RSS sampled with psutil every 0.1 s: of the child process (the Airflow worker "
                              "running dag.test with the tasks in process; pgdr_local's restore process) and of its "
                              "process tree (pg_restore and its workers included); not ru_maxrss, which a child "
                              "inherits from the forking parent",
                   "pgdr_worker_peak_rss_mb": round(mb(peak), 1),
                   "pgdr_worker_peak_tree_rss_mb": round(mb(max(r["peak_tree_rss_bytes"] or 0
                                                                for r in runs["pgdr"])), 1),
                   "pgdr_local_peak_rss_mb": round(mb(max(r["peak_rss_bytes"] for r in runs["pgdr_local"])), 1),
                   "bare_pg_restore_peak_tree_rss_mb": round(mb(max(r["peak_tree_rss_bytes"] or 0
                                                                    for r in runs["bare"])), 1)},
        "targets": targets,
    }


TABLE = (Column("variant", 28, left=True), Column("median s", 9, fixed(".1f")), Column("vs bare", 8, fixed(".2f", "x")),
         Column("vs gzip", 8, fixed(".2f", "x")),
         Column("runs", fmt=lambda runs: ", ".join(f"{v:.1f}" for v in runs), sep="  "))


def print_report(summary: dict, bench: Bench) -> None:
    print()
    common.print_table(TABLE, ([row["label"], row["median_seconds"], row["ratio_vs_bare"], row["ratio_vs_bare_gzip"],
                                row["runs_seconds"]] for row in summary["table"]), rule=20)
    print()
    for name in ("pgdr", "pgdr_local"):
        st = summary["stage_median_seconds"][name]
        tl = summary["timeline_median_seconds"][name]
        print(f"{LABELS[name]} stages (medians, s): " + ", ".join(f"{k} {v}" for k, v in st.items()))
        print(f"  timeline from the first download (medians, s): downloads done {tl['download_all_done_s']}, "
              f"first FIFO opened {tl['first_fifo_opened_s']}, pg_restore done {tl['pg_restore_done_s']}, "
              f"pg_restore blocked on FIFOs {tl['fifo_wait_total_s']} in total (longest {tl['fifo_wait_max_s']})")
    print("pgdr DAG task durations (medians, s): "
          + ", ".join(f"{k} {v}" for k, v in summary["task_duration_median_seconds"].items()))
    dl = summary["download"]
    print(f"download of the backup from moto ({mb(dl['bytes']):.0f} MB, 4 threads): {dl['median_seconds']} s "
          f"= {dl['median_mb_per_s']} MB/s; unzstd to plain files {dl['unzstd_median_seconds']} s")
    tp = summary["throughput"]
    print(f"throughput (database bytes / s): pgdr {tp['pgdr_mb_per_s']} MB/s, pgdr local {tp['pgdr_local_mb_per_s']} "
          f"MB/s, bare {tp['bare_mb_per_s']} MB/s; backup = {tp['stored_per_database_byte']:.3f} x database size")
    mem = summary["memory"]
    print(f"peak RSS (psutil): pgdr worker {mem['pgdr_worker_peak_rss_mb']:.0f} MB (process tree "
          f"{mem['pgdr_worker_peak_tree_rss_mb']:.0f} MB), pgdr restore process (local copy) "
          f"{mem['pgdr_local_peak_rss_mb']:.0f} MB, bare pg_restore and its workers "
          f"{mem['bare_pg_restore_peak_tree_rss_mb']:.0f} MB")
    print()
    print("projected RTO (linear; s):")
    for label, p in summary["projections"].items():
        aws = "; ".join(f"AWS {k}: {v['overlapped_lower_bound']:.0f}-{v['sequential_upper_bound']:.0f}"
                        for k, v in p["aws"].items())
        print(f"  {label:>6}: as measured (moto) {p['as_measured_moto']:.0f}, + DAG overhead "
              f"{p['with_dag_overhead']:.0f}, "
              f"download excluded {p['download_excluded']:.0f}, bare {p['bare_pg_restore']:.0f}; {aws} "
              f"(budget {p['budget_seconds']})")
    for drill in bench.drills:
        print(f"drill: {drill['status']}, RTO {drill['rto_seconds']} s, projected {drill['projected_rto_seconds']} s, "
              f"record {drill['copied_to']}")
    print()

    def detail(key: str, target: dict) -> str:
        if key == "ratio":
            return (f"pgdr {target['pgdr_seconds']:.1f} s = {target['ratio']:.2f}x bare {target['bare_seconds']:.1f} s "
                    f"({target['ratio_vs_bare_gzip']:.2f}x the -Fd gzip restore {target['bare_gzip_seconds']:.1f} s; "
                    f"whole DAG run {target['ratio_dag_run']:.2f}x, {target['ratio_dag_run_net']:.2f}x without "
                    f"dag.test's API start; pgdr from a local copy {target['ratio_local']:.2f}x)")
        return (f"{target['projected_seconds']:.0f} s (budget {target['budget_seconds']} s; download excluded "
                f"{target['download_excluded_seconds']:.0f} s, with the DAG's other tasks "
                f"{target['with_dag_overhead_seconds']:.0f} s)")

    common.print_targets(summary["targets"], detail)
    print("note: the pgdr figures include downloading from moto's S3 server, a local Python process on the same "
          f"2 cores (~{summary['download']['median_mb_per_s']} MB/s here).")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=DEFAULT_SCALE,
                        help=f"synthetic scale of care_commons (default {DEFAULT_SCALE}: about 1.14 GB)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--jobs", type=int, default=2, help="pgdr_dump_jobs (restore parallelism) and pg_restore -j")
    parser.add_argument("--drills", type=int, default=1, help="pg_restore_test runs after the repeats (default 1)")
    parser.add_argument("--drills-dir", default=str(REPO / "bench" / "results" / "drills"),
                        help="where the drill records are copied (default bench/results/drills)")
    parser.add_argument("--aws-speeds", default=DEFAULT_AWS_SPEEDS,
                        help="S3 download speeds (MB/s, comma separated) for the projections (default 100,250)")
    common.add_run_arguments(parser, "restore", "keep the work directory (logs); servers always stop")
    common.add_child_arguments(parser, "dag", "local")
    args = parser.parse_args(argv)
    child = common.run_child_mode(args, {"dag": dag_child, "local": local_child})
    if child is not None:
        return child
    if args.repeat < 1 or args.drills < 1:
        parser.error("--repeat and --drills must be >= 1")
    aws_speeds = [float(s) for s in args.aws_speeds.split(",") if s.strip()]

    started_at = common.utc_now()
    bench = Bench(args)

    def body() -> int:
        bench.start_services()
        bench.make_backup()
        bench.make_gzip_dump()
        bench.measure()
        bench.run_drills()
        summary = summarize(bench, aws_speeds)
        print_report(summary, bench)
        machine_figures = machine(bench)
        finished_at = common.utc_now()
        document = {
            **common.document_header("pgdr restore from S3 vs bare pg_restore -j2 from a local copy",
                                     "restore_bench.py", argv, started_at, finished_at),
            "settings": {"scale": args.scale, "repeat": args.repeat, "jobs": args.jobs, "drills": args.drills,
                         "seed": args.seed, "aws_speeds_mb_per_s": aws_speeds},
            "source_database": bench.source,
            "backup": bench.backup,
            "gzip_dump": {k: v for k, v in bench.gzip_dump.items() if k != "path"},
            "connection": "pgdr connects as pgdr_restore (superuser, password over TCP to 127.0.0.1, connection "
                          "care_commons_admin); the bare variants as the postgres superuser over TCP (trust)",
            "variants": {name: row["what"] for name, row in ((r["variant"], r) for r in summary["table"])},
            "method": [
                "one backup made by the real pg_backup_daily DAG; every variant restores that backup's data",
                "each repeat: the backup downloaded from moto to a local directory and unzstd'ed (timed, outside "
                "every variant), then the variants, the order alternating between repeats (forward, reversed, ...)",
                "before each timed run: CHECKPOINT and sync (outside the timing); each restored database is "
                "dropped after its run (outside the timing)",
                "bare variants: CREATE DATABASE ... TEMPLATE template0 before the timing; their row counts are "
                "checked against the manifest after it",
                "pgdr: the restore task's XCom result; the DAG run and the process wall are reported beside it",
                "pgdr_local: the same restore code with a store that reads the local copy (no network, same "
                "sha256 checks, same FIFOs and zstd feeders)",
                "timelines: timestamps recorded around pgdr.restore.fetch.PipedDataFiles methods in the child "
                "(no change to what they do)",
                "medians of --repeat runs",
            ],
            "notes": [
                "moto (S3 server mode, a local Python child process on the same 2 cores) serves the downloads; it "
                "is part of every pgdr-from-S3 figure (its measured speed: results.download)",
                "2-core, noisy virtual machine, shared with a developer running tests during the run",
                "the source data and the local copies sit in the OS page cache (no cache drop)",
            ],
            "machine": machine_figures,
            "results": summary,
            "runs": bench.runs,
            "drills": bench.drills,
        }
        common.write_results(document, args.output, "restore", finished_at)
        return 0

    return common.run_guarded(body, bench.stop_services)


if __name__ == "__main__":
    sys.exit(main())
