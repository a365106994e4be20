"""Carrying out a :class:`~pgdr.restore.plan.RestorePlan`: the ``restore`` task of pg_restore, and the drill.

Each function re-checks what may have moved since the plan was made (the target server, the
target directory), does the work through :mod:`pgdr.restore.logical`, :mod:`pgdr.restore.files`
or :mod:`pgdr.restore.pitr`, and returns the outcome the restore record keeps (counts, sizes,
names and seconds; never a row's content).
"""

from __future__ import annotations

import dataclasses
import logging
import shutil
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from pgdr.core.pgtools import server_version_num, tools_for
from pgdr.restore.journal import Journal
from pgdr.restore.logical import LogicalRestore
from pgdr.restore.names import RestoreNames
from pgdr.restore.plan import (
    RestorePlan,
    check_target,
    config_wrapper,
    load_manifest,
    pitr_choice,
    refuse_unconfirmed_overwrite,
)
from pgdr.restore.tables import count_rows, move_tables
from pgdr.store.manifest import Manifest
from pgdr.store.staging import private_dir

TargetFor = Callable[[str], tuple[Any, Callable[[str], object]]]   # conn id -> (PgTarget, connect(dbname))
# XCom stays small: a recovered database with more tables than this records totals only
MAX_ROW_COUNTS = 200
# what a point-in-time recovery runs: the server of the backup's major, its checker, and for an incremental
# base backup's chain (17+) the tool that combines it
PITR_TOOLS = ("pg_ctl", "postgres", "pg_verifybackup", "pg_combinebackup")


def journalled_restore(*, store, settings, manifest: Manifest, prefix: str, target, connect, names: RestoreNames,
                       mode: str, tables: tuple[str, ...], workdir: Path, run_id: str, log: logging.Logger,
                       journal_run_id: str | None = None, keep_until: str = "", analyze: bool | None = None) -> dict:
    """A logical restore recorded in S3 before anything is created: a worker killed from here on is
    healed by the next run (:mod:`pgdr.restore.journal`). ``journal_run_id`` keeps a drill's journal
    apart from a pg_restore run of the same id."""
    journal = Journal.begin(store, database=manifest.database, run_id=journal_run_id or run_id,
                            target_conn_id=target.conn_id, mode=mode, names=dataclasses.asdict(names),
                            workdir=str(workdir), keep_until=keep_until, backup_id=manifest.backup_id)
    # the target server's major: its pg_restore reads dumps of that major and older
    bindir = tools_for(settings.tool_dirs, server_version_num(lambda: connect("postgres")), ("pg_restore", "vacuumdb"))
    return LogicalRestore(
        store=store, manifest=manifest, prefix=prefix, target=target, connect=connect, names=names, mode=mode,
        tables=tables, workdir=workdir, bindir=bindir, jobs=settings.dump_jobs, log=log, run_id=run_id,
        keep_until=keep_until, analyze=analyze, journal=journal).run()


def server_tools(settings, manifest: Manifest) -> Path:
    """The server binaries that run a recovered copy of ``manifest``'s cluster: exactly its major."""
    needed = PITR_TOOLS if manifest.depends_on else tuple(t for t in PITR_TOOLS if t != "pg_combinebackup")
    return tools_for(settings.tool_dirs, manifest.server_version_num, needed, exact=True)


def move_tools(settings, manifest: Manifest, target_connect) -> Path:
    """pg_dump and pg_restore for moving tables from a recovered cluster into the target server: the newer
    of the two majors (a dump is read by its own major or a newer pg_restore)."""
    version_num = max(manifest.server_version_num, server_version_num(lambda: target_connect("postgres")))
    return tools_for(settings.tool_dirs, version_num, ("pg_dump", "pg_restore"))


def run_logical(plan: RestorePlan, *, store, settings, target_for: TargetFor, run_id: str,
                log: logging.Logger) -> dict:
    request = plan.request
    manifest, prefix = load_manifest(store, request.database, plan.backup_id)
    target, connect = target_for(plan.target_conn_id)
    check_target(connect, manifest, plan.names, request.mode)   # the world may have moved since the plan
    keep_until = (datetime.now(timezone.utc) + timedelta(hours=settings.replaced_keep_hours)).isoformat(
        timespec="seconds")
    workdir = private_dir(settings.staging_dir, request.database, "restore") / f"{plan.stamp}.partial"
    outcome = journalled_restore(store=store, settings=settings, manifest=manifest, prefix=prefix, target=target,
                                 connect=connect, names=plan.names, mode=request.mode,
                                 tables=tuple(request.tables or ()), workdir=workdir, run_id=run_id, log=log,
                                 keep_until=keep_until)
    log.info("restore done in %.1f s (%s): %d tables, %d rows in %s", outcome["seconds"]["total"],
             ", ".join(f"{k} {v:.1f} s" for k, v in outcome["seconds"].items() if k != "total"),
             outcome["tables"], outcome["rows"], plan.names.target_database)
    return outcome


def run_files(plan: RestorePlan, *, store, settings, log: logging.Logger) -> dict:
    from pgdr.restore.files import restore_tree

    request = plan.request
    refuse_unconfirmed_overwrite(request)  # the directory may have filled since the plan was made
    manifest, prefix = load_manifest(store, request.database, plan.backup_id, kind=plan.kind)
    wrapper = config_wrapper(manifest, settings)
    workdir = private_dir(settings.staging_dir, request.database, "restore") / f"{plan.stamp}-{plan.kind}.partial"
    try:
        outcome = restore_tree(store, manifest, prefix, Path(plan.target_dir), plan.stamp, workdir, log,
                               wrapper=wrapper, settings=settings)
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    outcome.update(database=request.database)
    return outcome


def run_pitr(plan: RestorePlan, *, store, settings, target_for: TargetFor, log: logging.Logger) -> dict:
    """A new cluster recovered to the moment; with mode ``tables``, the tables moved into
    ``recovered_<time>`` of the target database and the cluster removed."""
    from pgdr.restore.pitr import PointInTimeRecovery
    from pgdr.restore.pitr_cluster import connect_recovered

    request = plan.request
    # exactly the base backup prepare leased (a newer one may fit now, but retention could delete it)
    target, manifest, prefix, wal, _ = pitr_choice(store, request.database, request.point_in_time,
                                                   only=plan.backup_id)
    restore_target, _ = target_for(settings.restore_conn_id(request.database))
    recovery = PointInTimeRecovery(
        store=store, manifest=manifest, prefix=prefix, wal=wal, target=target, data_dir=Path(plan.data_dir),
        port=settings.pitr_port, os_user=settings.pitr_os_user, login=restore_target.user,
        bindir=server_tools(settings, manifest),
        jobs=settings.dump_jobs, log=log, listen_addresses=settings.pitr_listen_addresses,
        keep_hours=settings.pitr_keep_hours)
    outcome = recovery.run()
    try:
        def connect(dbname: str):
            return connect_recovered(outcome, restore_target.user, dbname)

        found = count_rows(connect, manifest.dbname, None, settings.dump_jobs)
        outcome.update(mode=request.mode, kind="pitr", database=request.database, source_dbname=manifest.dbname,
                       tables=len(found), rows=sum(found.values()), row_counts=found, backup_id=manifest.backup_id,
                       target_database=manifest.dbname)
        if request.mode == "tables":
            target_pg, target_connect = target_for(plan.target_conn_id)
            # the recovered cluster, over its socket, as the restore role (no password, none of its options)
            recovered_pg = type(restore_target)(conn_id="pitr", host=outcome["socket_dir"], port=outcome["port"],
                                                user=restore_target.user, dbname=manifest.dbname, password=None)
            moved = move_tables(source=recovered_pg, source_connect=connect, target=target_pg,
                                target_connect=target_connect, target_database=plan.names.target_database,
                                tables=tuple(request.tables), schema=plan.names.recovered_schema,
                                expected={t: found[t] for t in request.tables if t in found},
                                bindir=move_tools(settings, manifest, target_connect), jobs=settings.dump_jobs,
                                log=log)
            outcome.update(recovered_schema=plan.names.recovered_schema, tables=len(moved), rows=sum(moved.values()),
                           row_counts=moved, target_database=plan.names.target_database)
    except BaseException:
        recovery.discard()
        raise
    if request.mode == "tables":
        recovery.discard()
        outcome["cluster"] = "removed after the tables were moved"
    else:
        outcome["cluster"] = f"running on port {outcome['port']}, data directory {outcome['data_dir']}"
    log.info("recovered %s to %s: last transaction at %s, redo ended at %s; %d tables, %d rows; %s",
             request.database, target.describe(), outcome.get("last_transaction_time"),
             outcome.get("redo_end_lsn"), outcome["tables"], outcome["rows"], outcome["cluster"])
    if len(outcome.get("row_counts", {})) > MAX_ROW_COUNTS:
        outcome.pop("row_counts")
    return outcome


def run_plan(plan: RestorePlan, *, store, settings, target_for: TargetFor, run_id: str, log: logging.Logger) -> dict:
    """The ``restore`` task: the plan's kind decides the way."""
    if plan.kind == "pitr":
        return run_pitr(plan, store=store, settings=settings, target_for=target_for, log=log)
    if plan.kind in ("files", "config"):
        return run_files(plan, store=store, settings=settings, log=log)
    return run_logical(plan, store=store, settings=settings, target_for=target_for, run_id=run_id, log=log)


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (the kernel's choice)."""
    import socket

    with socket.socket() as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def scratch_recovery(*, store, settings, manifest: Manifest, prefix: str, wal, target, data_dir: Path,
                     login: str, log: logging.Logger):
    """A throwaway recovered cluster (the point-in-time drill's): read on this worker and removed by
    the caller, so it listens on loopback only, on a free port, and a worker killed before the
    removal leaves it to the next recovery's expiry sweep within the hour."""
    from pgdr.restore.pitr import PointInTimeRecovery

    return PointInTimeRecovery(
        store=store, manifest=manifest, prefix=prefix, wal=wal, target=target, data_dir=data_dir, port=free_port(),
        os_user=settings.pitr_os_user, login=login, bindir=server_tools(settings, manifest), jobs=settings.dump_jobs,
        log=log, listen_addresses="127.0.0.1", keep_hours=1.0)
