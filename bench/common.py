"""What every benchmark in bench/ shares, so that each script holds only its variants.

- Output and units: :func:`say` (elapsed-time prefix), :func:`mb`, :func:`tree_size`.
- Child processes: every child runs in its own session and is listed in :data:`LIVE` while it
  runs, so Ctrl-C, SIGTERM and SIGHUP (:func:`install_signal_handlers`) stop it with everything
  it started (:func:`stop_all`). :func:`run_tracked` captures a tool's output; :func:`run_child`
  times a child into a log file with its CPU (wait4) and its peak RSS sampled by psutil;
  :func:`run_spec_child` runs this script again as ``--child-<mode> spec.json`` (the spec written
  privately: it holds passwords) and reads back the figures the child wrote, which the child side
  does with :func:`child_start`, :func:`child_store`, :func:`child_usage` and :func:`write_result`.
- The stack: :func:`start_cluster_and_s3` (a bare cluster and moto), :func:`start_harness_stack`
  (``harness.stack.start_stack``), :func:`generate_database` (the synthetic care-commons database,
  regenerated bigger until it reaches a size), :func:`freeze`, :func:`settle`, :func:`db_size`,
  :func:`row_counts`, :func:`bench_store` and :func:`delete_prefix`.
- Repeats and statistics: :func:`repeats` (the order of the variants alternates between
  repeats), :func:`median`, :func:`rnd`, :func:`children_cpu`.
- Results: :class:`Column` and :func:`print_table` (fixed-width text), :func:`print_targets`,
  :func:`machine_info`, :func:`tool_version`, :func:`document_header` and :func:`write_results`
  (``bench/results/<kind>-<UTC date>.json`` unless ``--output``).
- The command line and the run: :func:`add_run_arguments` (--seed, --keep, --workdir, --output),
  :func:`add_child_arguments` and :func:`run_child_mode` (the hidden --child-<mode> options),
  :func:`run_guarded` (cleanup on every exit) and :func:`remove_work`.

Why ``ru_maxrss`` is not used for children: on Linux a child's high-water mark starts from the
forking parent's RSS (it is kept across fork and exec), so even ``/bin/true`` would report the
bench's own RSS; the psutil sampler reads the child itself.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import logging
import os
import platform
import resource
import shutil
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "bench" / "results"
MiB = 1024 * 1024
SSE_ARGS = {"ServerSideEncryption": "AES256"}

_STARTED = time.monotonic()
LIVE: list[subprocess.Popen] = []


# --------------------------------------------------------------------------------------------
# Output and units
# --------------------------------------------------------------------------------------------

def say(message: str) -> None:
    elapsed = time.monotonic() - _STARTED
    print(f"[{int(elapsed // 60):02d}:{elapsed % 60:04.1f}] {message}", flush=True)


def mb(size: float) -> float:
    return size / 1e6


def tree_size(path: Path) -> int:
    """Bytes of a file, or of every file below a directory."""
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def tail(path: Path, lines: int = 30) -> str:
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


# --------------------------------------------------------------------------------------------
# Signals and child processes
# --------------------------------------------------------------------------------------------

def raise_interrupt(signum, frame):
    raise KeyboardInterrupt(f"signal {signum}")


def install_signal_handlers() -> None:
    """Ctrl-C, kill and a closed terminal all end in the same cleanup (even when the shell that
    started us ignores SIGINT, as non-interactive shells do for background jobs)."""
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, raise_interrupt)
    signal.signal(signal.SIGHUP, raise_interrupt)


def stop_group(process: subprocess.Popen) -> None:
    """Stop a child started in its own session, and everything it started (pg_dump, pg_restore, ...)."""
    for sig, wait in ((signal.SIGTERM, 10), (signal.SIGKILL, 10)):
        try:
            os.killpg(process.pid, sig)
        except ProcessLookupError:
            pass
        try:
            process.wait(wait)
            break
        except (subprocess.TimeoutExpired, ChildProcessError):
            continue


def stop_all() -> None:
    for process in list(LIVE):
        stop_group(process)


def run_tracked(argv: list[str], **kwargs) -> subprocess.CompletedProcess:
    """subprocess.run in its own session (text output captured), stopped with its children on Ctrl-C."""
    process = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                               start_new_session=True, **kwargs)
    LIVE.append(process)
    stdout, stderr = process.communicate()
    LIVE.remove(process)  # only once it has ended: when interrupted, stop_all() still stops it
    return subprocess.CompletedProcess(argv, process.returncode, stdout, stderr)


class TreeSampler:
    """Polls a process and its descendants with psutil: peak RSS of the process and of the tree,
    and the most threads the process had."""

    def __init__(self, pid: int, interval: float = 0.1) -> None:
        import psutil

        self._psutil = psutil
        self.process = psutil.Process(pid)
        self.interval = interval
        self.peak_self = 0
        self.peak_tree = 0
        self.peak_threads = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        psutil = self._psutil
        while not self._stop.is_set():
            try:
                own = self.process.memory_info().rss
                self.peak_threads = max(self.peak_threads, self.process.num_threads())
                tree = own
                for child in self.process.children(recursive=True):
                    try:
                        tree += child.memory_info().rss
                    except psutil.Error:
                        pass
                self.peak_self = max(self.peak_self, own)
                self.peak_tree = max(self.peak_tree, tree)
            except psutil.Error:
                break
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def child_env() -> dict[str, str]:
    """This environment with pgdr's plugins and the repository on the import path."""
    return dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO / "plugins"), str(REPO)]))


def run_child(argv: list[str], log_path: Path, env: dict | None = None, sample: bool = True,
              interval: float = 0.1) -> dict:
    """Run a child in its own session, its output to log_path: wall time, CPU of the child and the
    descendants it waited for (wait4), and peak RSS of the child and of its process tree (psutil)."""
    with open(log_path, "w") as log_handle:
        t0 = time.perf_counter()
        process = subprocess.Popen(argv, stdout=log_handle, stderr=subprocess.STDOUT, cwd=REPO,
                                   env=env if env is not None else dict(os.environ), start_new_session=True)
        LIVE.append(process)
        sampler = TreeSampler(process.pid, interval) if sample else None
        try:
            if sampler:
                sampler.__enter__()
            _, status, usage = os.wait4(process.pid, 0)
        finally:
            if sampler:
                sampler.__exit__()
        LIVE.remove(process)  # only once it has ended: when interrupted, stop_all() still stops it
        process.returncode = os.waitstatus_to_exitcode(status)
        wall = time.perf_counter() - t0
    return {"returncode": process.returncode, "wall_seconds": wall, "cpu_seconds": usage.ru_utime + usage.ru_stime,
            "peak_rss_bytes": sampler.peak_self if sampler else None,
            "peak_tree_rss_bytes": sampler.peak_tree if sampler else None,
            "peak_threads": sampler.peak_threads if sampler else None}


def write_private_json(path: Path, data: dict) -> None:
    """A spec file readable only by us: it holds passwords and S3 keys."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(data, handle)


def run_spec_child(script: str | Path, mode: str, spec: dict, run_dir: Path, *, log_name: str = "pgdr.log",
                   sample: bool = True, interval: float = 0.1, what: str | None = None) -> tuple[dict, dict]:
    """Run ``script mode run_dir/spec.json`` (the script's own child side) and return the figures it
    wrote to ``spec["result"]`` (set here to run_dir/result.json) and what :func:`run_child` measured."""
    spec = {**spec, "result": str(run_dir / "result.json")}
    spec_path = run_dir / "spec.json"
    write_private_json(spec_path, spec)
    log_path = run_dir / log_name
    child = run_child([sys.executable, str(Path(script).resolve()), mode, str(spec_path)], log_path,
                      env=child_env(), sample=sample, interval=interval)
    if child["returncode"] != 0 or not (run_dir / "result.json").exists():
        raise RuntimeError(f"{what or 'pgdr child ' + mode} failed (exit {child['returncode']}):\n{tail(log_path)}")
    return json.loads((run_dir / "result.json").read_text()), child


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


# --------------------------------------------------------------------------------------------
# The child side
# --------------------------------------------------------------------------------------------

def child_start(spec_path: str) -> tuple[dict, logging.Logger]:
    """In a child: stop on SIGTERM like on Ctrl-C, read the spec, log to stderr (the log file)."""
    signal.signal(signal.SIGTERM, raise_interrupt)
    spec = json.loads(Path(spec_path).read_text())
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return spec, logging.getLogger("pgdr.bench")


def child_store(spec: dict, prefix: str, log: logging.Logger):
    """pgdr's BackupStore on the bench's moto server, as the spec describes it (see :func:`s3_spec`)."""
    import boto3
    from botocore.config import Config

    client = boto3.client("s3", endpoint_url=spec["endpoint"], region_name=spec["region"],
                          aws_access_key_id=spec["access_key"], aws_secret_access_key=spec["secret_key"],
                          config=Config(retries={"max_attempts": 2}))
    return bench_store(client, spec["bucket"], prefix, spec["part_size"], log)


def child_usage() -> dict:
    """CPU seconds of this process and of the tools it waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    tools = resource.getrusage(resource.RUSAGE_CHILDREN)
    return {"python": own.ru_utime + own.ru_stime, "tools": tools.ru_utime + tools.ru_stime}


def write_result(spec: dict, result: dict) -> None:
    Path(spec["result"]).write_text(json.dumps(result, default=str))


def pg_target(conn_id: str, host: str, port: int, user: str, password: str, dbname: str):
    """A pgdr.core.pgtools.PgTarget and a psycopg2 connect() for it."""
    import psycopg2

    from pgdr.core.pgtools import PgTarget

    target = PgTarget(conn_id=conn_id, host=host, port=port, user=user, dbname=dbname, password=password)

    def connect(database: str | None = None):
        return psycopg2.connect(host=host, port=port, user=user, password=password, dbname=database or dbname)

    return target, connect


# --------------------------------------------------------------------------------------------
# The stack
# --------------------------------------------------------------------------------------------

def s3_spec(s3, bucket: str, part_size: int) -> dict:
    """What a child needs to reach the bench bucket on the moto server (see :func:`child_store`)."""
    from harness.s3_server import ACCESS_KEY, REGION, SECRET_KEY

    return {"endpoint": s3.endpoint_url, "region": REGION, "access_key": ACCESS_KEY, "secret_key": SECRET_KEY,
            "bucket": bucket, "part_size": part_size}


def bench_store(client, bucket: str, prefix: str, part_size: int, log: logging.Logger | None = None):
    from pgdr.store.s3 import BackupStore

    return BackupStore(client=client, bucket=bucket, prefix=prefix, sse_args=dict(SSE_ARGS), part_size=part_size,
                       log=log or logging.getLogger("pgdr.bench"))


def create_bench_bucket(s3, bucket: str) -> None:
    # Unversioned, unlike production: every run's objects are deleted afterwards so moto's
    # in-memory store stays small across repeats; upload and head requests are the same.
    s3.create_bucket(bucket, object_lock=False, hardened=False)


def start_cluster_and_s3(bucket: str | None = None):
    """A throwaway PostgreSQL 15 cluster and a moto S3 server (with an unversioned bench bucket)."""
    from harness.pg_cluster import start_cluster
    from harness.s3_server import start_s3_server

    cluster = start_cluster()  # its own directory, readable by the server's user
    try:
        s3 = start_s3_server()
    except BaseException:
        cluster.destroy()
        raise
    if bucket:
        create_bench_bucket(s3, bucket)
    return cluster, s3


def start_harness_stack(work: Path, scale: float, seed: int, services: str, staging: Path | None = None):
    """harness.stack.start_stack (PostgreSQL 15 with care_commons, the roles, moto, ...), timed."""
    from harness.stack import start_stack

    say(f"starting the harness stack: PostgreSQL 15, care_commons at scale {scale:g} (seed {seed}), {services}")
    t0 = time.perf_counter()
    stack = start_stack(scale=scale, staging_dir=staging or work / "staging", seed=seed)
    return stack, time.perf_counter() - t0


def db_size(cluster, dbname: str) -> int:
    return int(cluster.execute("SELECT pg_database_size(%s)", params=(dbname,))[0][0])


def generate_database(cluster, dbname: str, scale: float, seed: int, min_bytes: int = 0) -> dict:
    """The synthetic care-commons database at `scale`; dropped and regenerated bigger (twice at most)
    while it comes out below min_bytes."""
    from harness.synthetic import create_care_commons

    attempts = []
    while True:
        say(f"generating {dbname} at scale {scale:g} (seed {seed})")
        t0 = time.perf_counter()
        row_counts = create_care_commons(cluster, dbname=dbname, scale=scale, seed=seed)
        seconds = time.perf_counter() - t0
        size = db_size(cluster, dbname)
        attempts.append({"scale": scale, "size_bytes": size, "generation_seconds": round(seconds, 2)})
        say(f"  {dbname}: pg_database_size {size:,} bytes ({mb(size):,.1f} MB) in {seconds:.1f} s, "
            f"{sum(row_counts.values()):,} rows in {len(row_counts)} tables")
        if size >= min_bytes or len(attempts) > 2:
            break
        new_scale = round(scale * min_bytes / size * 1.08, 2)
        say(f"  below {mb(min_bytes):,.0f} MB: dropping it and regenerating at scale {new_scale:g}")
        cluster.execute(f'DROP DATABASE "{dbname}"')
        scale = new_scale
    if size < min_bytes:
        raise RuntimeError(f"{dbname} is {size:,} bytes after {len(attempts)} attempts; raise --scale")
    return {"dbname": dbname, "scale": scale, "size_bytes": size, "size_mb": round(mb(size), 1),
            "generation_seconds": attempts[-1]["generation_seconds"], "attempts": attempts,
            "tables": len(row_counts), "rows": sum(row_counts.values())}


def freeze(cluster, dbnames: Iterable[str]) -> float:
    """VACUUM (FREEZE, ANALYZE) and CHECKPOINT, so that no variant pays for setting hint bits after
    the bulk load. Returns the seconds it took."""
    t0 = time.perf_counter()
    for dbname in dbnames:
        cluster.execute("VACUUM (FREEZE, ANALYZE)", dbname=dbname)
    cluster.execute("CHECKPOINT")
    return time.perf_counter() - t0


def settle(cluster) -> None:
    """Outside the timings: no pending writeback or checkpoint from the previous run."""
    cluster.execute("CHECKPOINT")
    os.sync()


def row_counts(conn, tables: Iterable[str] | None = None, only: bool = False) -> dict[str, int]:
    """count(*) of each "schema.table" (default: every user table); closes conn."""
    from psycopg2 import sql

    try:
        with conn.cursor() as cur:
            if tables is None:
                cur.execute("SELECT schemaname, tablename FROM pg_tables "
                            "WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1, 2")
                tables = [f"{schema}.{table}" for schema, table in cur.fetchall()]
            query = "SELECT count(*) FROM ONLY {}.{}" if only else "SELECT count(*) FROM {}.{}"
            counts = {}
            for table in tables:
                schema, name = table.split(".", 1)
                cur.execute(sql.SQL(query).format(sql.Identifier(schema), sql.Identifier(name)))
                counts[table] = cur.fetchone()[0]
            return counts
    finally:
        conn.close()


def delete_prefix(client, bucket: str, prefix: str) -> int:
    """Delete every object under prefix (outside the timings, so moto's memory does not grow)."""
    keys = []
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=prefix):
        keys.extend({"Key": obj["Key"]} for obj in page.get("Contents", []))
    for start in range(0, len(keys), 1000):
        client.delete_objects(Bucket=bucket, Delete={"Objects": keys[start:start + 1000]})
    return len(keys)


# --------------------------------------------------------------------------------------------
# Repeats and statistics
# --------------------------------------------------------------------------------------------

def repeats(variants: Sequence[str], count: int, announce: bool = True) -> Iterator[tuple[int, list[str]]]:
    """(repeat number from 1, the variants in this repeat's order): forward, reversed, forward, ..."""
    for repeat in range(1, count + 1):
        sequence = list(variants) if repeat % 2 == 1 else list(reversed(variants))
        if announce:
            say(f"repeat {repeat}/{count}: " + " -> ".join(sequence))
        yield repeat, sequence


def median(values: Iterable) -> Any:
    """The median of the values that are not None; None when there are none."""
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else None


def rnd(value, digits: int = 2):
    return None if value is None else round(value, digits)


def children_cpu() -> float:
    """CPU seconds of the children waited for so far (take the difference around a run)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


# --------------------------------------------------------------------------------------------
# Results: tables, targets, machine, JSON
# --------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Column:
    """One column of a fixed-width table: its title, width (0: no padding), how a value is shown,
    alignment, and what separates it from the column before."""
    title: str
    width: int = 0
    fmt: Callable[[Any], str] = str
    left: bool = False
    sep: str = " "

    def cell(self, text: str) -> str:
        return text.ljust(self.width) if self.left else text.rjust(self.width)


def fixed(spec: str, suffix: str = "") -> Callable[[Any], str]:
    """A cell formatter: format(value, spec) + suffix, e.g. fixed('.2f', 'x') for a ratio."""
    return lambda value: format(value, spec) + suffix


def table_lines(columns: Sequence[Column], rows: Iterable[Sequence], rule: int | None = 0) -> list[str]:
    """The header, a rule of dashes (len(header) + rule; None for no rule) and one line per row."""
    def line(cells: Sequence[str]) -> str:
        pairs = enumerate(zip(columns, cells, strict=True))
        return "".join((c.sep if i else "") + c.cell(text) for i, (c, text) in pairs)

    header = line([c.title for c in columns])
    lines = [header] + ([] if rule is None else ["-" * (len(header) + rule)])
    lines += [line([c.fmt(value) for c, value in zip(columns, row, strict=True)]) for row in rows]
    return lines


def print_table(columns: Sequence[Column], rows: Iterable[Sequence], rule: int | None = 0) -> None:
    for line in table_lines(columns, rows, rule):
        print(line)


def print_targets(targets: dict, detail: Callable[[str, dict], str]) -> None:
    print("targets:")
    for key, target in targets.items():
        verdict = "MET" if target["met"] else "MISSED"
        print(f"  [{verdict:^6}] {target['target']}: {detail(key, target)}")


def tool_version(argv: list[str]) -> str | None:
    """The first line a tool prints for its version."""
    out = subprocess.run([str(a) for a in argv], capture_output=True, text=True).stdout.strip()
    return out.splitlines()[0] if out else None


def machine_info(cluster, modules: Sequence[str]) -> dict:
    """The machine, the server's version and the Python packages' versions, for the JSON."""
    import psutil

    cpu_model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    versions = {"python": platform.python_version()}
    for module in modules:
        try:
            versions[module] = __import__(module).__version__
        except Exception:  # noqa: BLE001 - a missing version is recorded as None
            versions[module] = None
    return {
        "nproc": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)),
        "cpu_model": cpu_model,
        "memory_total_bytes": psutil.virtual_memory().total,
        "memory_total_gb": round(psutil.virtual_memory().total / 1e9, 1),
        "kernel": platform.release(),
        "postgresql_server": cluster.execute("SHOW server_version")[0][0] if cluster is not None else None,
        "versions": versions,
    }


def utc_now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def document_header(benchmark: str, script: str, argv: list[str] | None, started_at: dt.datetime,
                    finished_at: dt.datetime) -> dict:
    """The first fields of every results document: what ran, with which command line, when."""
    return {
        "benchmark": benchmark,
        "command": f"python bench/{script} " + " ".join(argv if argv is not None else sys.argv[1:]),
        "started_at": started_at.isoformat(timespec="seconds"),
        "finished_at": finished_at.isoformat(timespec="seconds"),
        "total_seconds": round((finished_at - started_at).total_seconds(), 1),
    }


def write_results(document: dict, output: str | None, kind: str, when: dt.datetime) -> Path:
    """The results JSON: `output`, or bench/results/<kind>-<UTC date>.json."""
    path = Path(output) if output else RESULTS / f"{kind}-{when:%Y-%m-%d}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(document, indent=2, default=str) + "\n")
    say(f"wrote {path}")
    return path


def add_run_arguments(parser, kind: str, keep_help: str) -> None:
    """--seed, --keep, --workdir and --output, the same in every benchmark."""
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--keep", action="store_true", help=keep_help)
    parser.add_argument("--workdir", default=None, help="parent of the temporary work directory (default $TMPDIR)")
    parser.add_argument("--output", default=None,
                        help=f"JSON results path (default bench/results/{kind}-<UTC date>.json)")


def add_child_arguments(parser, *modes: str) -> None:
    """Hidden --child-<mode> SPEC options: the script runs itself as a child (see :func:`run_spec_child`)."""
    for mode in modes:
        parser.add_argument(f"--child-{mode}", default=None, help=argparse.SUPPRESS)


def run_child_mode(args, children: dict[str, Callable[[str], int]]) -> int | None:
    """When this process is a child (--child-<mode> SPEC), run it and return its exit status."""
    for mode, run in children.items():
        spec = getattr(args, f"child_{mode}")
        if spec:
            return run(spec)
    return None


def run_guarded(body: Callable[[], int], cleanup: Callable[[], None]) -> int:
    """Run a benchmark's body with the signal handlers installed; clean up on every exit
    (Ctrl-C, SIGTERM and SIGHUP end with status 130)."""
    install_signal_handlers()
    try:
        return body()
    except KeyboardInterrupt:
        say("interrupted; cleaning up")
        return 130
    finally:
        cleanup()


def remove_work(work: Path, keep: bool, what: str) -> None:
    """The temporary work directory: removed, or kept with --keep (and said where)."""
    if keep:
        say(f"--keep: {what} {work}")
    else:
        shutil.rmtree(work, ignore_errors=True)
