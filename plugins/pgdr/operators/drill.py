"""Drill stage: restore the newest good backup into a scratch database and prove it, monthly."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from pgdr.alerts.slack import AlreadyAlerted
from pgdr.core.redaction import safe_error
from pgdr.operators.base import DatabaseOperator
from pgdr.operators.restore import RestoreOperatorBase
from pgdr.store.staging import private_dir


def _when(context) -> str:
    from pgdr.restore.request import stamp

    dag_run = context.get("dag_run")
    return stamp(getattr(dag_run, "run_after", None))


class RestoreDrillOperator(DatabaseOperator, RestoreOperatorBase):
    """Restores the newest good backup of one protected database into a scratch database (on the
    ``pgdr_drill_conn_ids`` server when one is set), compares row counts with the manifest, runs the
    integrity queries, measures the RTO and projects it for the database's current size. The
    scratch database is always dropped. Writes ``<prefix>/reports/drill/<time>-<database>.json``;
    alerts and fails when anything differs or the RTO is over ``pgdr_rto_budget_minutes``.

    :param conn_id: the protected postgres connection id (templated)
    """

    def execute(self, context) -> dict[str, Any]:
        from pgdr.alerts.messages import drill_alert, short_error
        from pgdr.alerts.slack import send_alert
        from pgdr.drill.checks import drill_problems, run_integrity_checks, scratch_database
        from pgdr.drill.rto import projected_rto_seconds
        from pgdr.restore.names import RestoreNames
        from pgdr.restore.plan import check_target, refuse_damaged
        from pgdr.restore.run import journalled_restore
        from pgdr.store import layout
        from pgdr.store.catalog import newest_good
        from pgdr.store.manifest import new_backup_id, utc_now_iso

        settings = self.settings
        database = self.require_protected(self.conn_id)
        ti = context["ti"]
        when = _when(context)
        scratch = scratch_database(database, when)
        names = RestoreNames(scratch, scratch, None, None)
        drill_conn_id = settings.drill_conn_id(database)
        budget = settings.rto_budget_minutes * 60
        record: dict[str, Any] = {"kind": "drill", "database": database, "run_id": ti.run_id,
                                  "started_at": utc_now_iso(), "target_conn_id": drill_conn_id,
                                  "scratch_database": scratch, "rto_budget_seconds": budget}
        restore_error, failing, checks, outcome = None, [], [], None
        rto = projected = None
        lease = None
        target, connect = self.target(drill_conn_id)
        try:
            # a drill (or restore) of this database killed mid-way left its half-restored database and its
            # pg_restore behind: heal them first (each journal names its own server, the drill's included)
            self.heal_interrupted(database, context)
            entries = self.store.catalog(database, "logical")
            entry = newest_good(entries)
            if entry is None:
                raise RuntimeError(f"no complete, good backup of {database} to drill with")
            lease = self.hold_lease(database, "logical", entry.backup_id, context)
            manifest, prefix = self.manifest(database, entry.backup_id)
            record.update(backup_id=entry.backup_id, backup_finished_at=manifest.finished_at,
                          manifest_tables=len(manifest.row_counts), manifest_rows=sum(manifest.row_counts.values()))
            refuse_damaged(self.store, database, manifest, prefix, entries, mark=self.mark_bad(ti.run_id))
            check_target(connect, manifest, names, "new_database")
            workdir = private_dir(settings.staging_dir, database, "drill") / f"{when}.partial"
            started = time.monotonic()
            # journalled like a restore, on the drill's server: a worker killed mid-drill is healed by the next
            # drill's start, pg_restore's prepare or drop_expired_replaced (the run id is the drill's own, so a
            # pg_restore run of the same id never mistakes it for its own journal)
            outcome = journalled_restore(store=self.store, settings=settings, manifest=manifest, prefix=prefix,
                                         target=target, connect=connect, names=names, mode="new_database", tables=(),
                                         workdir=workdir, run_id=ti.run_id, journal_run_id=f"drill:{ti.run_id}",
                                         log=self.log, analyze=False)
            conn = connect(scratch)
            try:
                checks, failing = run_integrity_checks(conn)
            finally:
                conn.close()
            rto = time.monotonic() - started
            source_size = self._source_size(database)
            projected = projected_rto_seconds(rto, outcome["database_size_bytes"], source_size)
            record.update(source_size_bytes=source_size, restored_size_bytes=outcome["database_size_bytes"],
                          tables=outcome["tables"], rows=outcome["rows"], roles_created=outcome["roles_created"],
                          downloaded_bytes=outcome["downloaded_bytes"], stages=outcome["seconds"])
            self.log.info("integrity checks: %d run, %d failing", len(checks), len(failing))
        except Exception as err:  # noqa: BLE001 - a drill that breaks is itself the finding
            restore_error = f"{type(err).__name__}: {short_error(err)}"
            self.log.error("drill of %s failed: %s", database, restore_error)
        finally:
            dropped = self._drop_scratch(connect, scratch)
            self.release_lease(lease)

        problems = drill_problems(restore_error=restore_error, failing_checks=failing, rto_seconds=rto,
                                  projected_rto_seconds=projected, budget_seconds=budget)
        file_drills, file_problems = self._drill_files(database, when, context)
        record["file_restores"] = file_drills
        problems.extend(file_problems)
        if not dropped:
            problems.append({"problem": "scratch database not dropped", "database": scratch})
        record.update(finished_at=utc_now_iso(), status="failed" if problems else "ok", problems=problems,
                      checks=checks, rto_seconds=round(rto, 2) if rto is not None else None,
                      projected_rto_seconds=round(projected, 2) if projected is not None else None,
                      scratch_dropped=dropped)
        key = layout.report_key(settings.s3_prefix, "drill", new_backup_id(), database)
        self.store.put_json(key, record)
        self.log.info("drill record: s3://%s/%s: %s; RTO %s s (projected for the current size %s s, budget %.0f s)",
                      self.store.bucket, key, record["status"].upper(), record["rto_seconds"],
                      record["projected_rto_seconds"], budget)
        if problems:
            send_alert(drill_alert(record, log_url=ti.log_url), settings.slack_conn_id)
            raise AlreadyAlerted(f"restore drill of {database} failed: " +
                                 "; ".join(p["problem"] for p in problems) + f" (record s3://{self.store.bucket}/{key})")
        return {"database": database, "status": "ok", "record_key": key, "rto_seconds": record["rto_seconds"],
                "projected_rto_seconds": record["projected_rto_seconds"]}

    def _drill_files(self, database: str, when: str, context) -> tuple[list[dict], list[dict]]:
        """The newest good file and configuration backups restored into a scratch directory (always
        removed), every file's sha256 compared with the manifest; counts and seconds for the record."""
        import shutil

        from pgdr.alerts.messages import short_error
        from pgdr.core.envelope import wrapper_for
        from pgdr.restore.files import restore_tree
        from pgdr.store.catalog import newest_good

        settings = self.settings
        results, problems = [], []
        for kind, configured in (("files", settings.file_dirs.get(database)),
                                 ("config", settings.config_files.get(database))):
            good = newest_good(self.store.catalog(database, kind))
            if good is None:
                if configured:
                    results.append({"kind": kind, "status": "failed", "error": "no good backup"})
                    problems.append({"problem": f"no good {kind} backup to drill with"})
                continue
            scratch = private_dir(settings.staging_dir, database, "drill") / f"{when}-{kind}.partial"
            started = time.monotonic()
            lease = None
            try:
                lease = self.hold_lease(database, kind, good.backup_id, context)
                manifest, prefix = self.manifest(database, good.backup_id, kind=kind)
                client_side = (manifest.encryption or {}).get("client_side")
                wrapper = wrapper_for(client_side["data_key"], settings) if client_side else None
                outcome = restore_tree(self.store, manifest, prefix, scratch / "target", when, scratch / "work",
                                       self.log, wrapper=wrapper)
                results.append({"kind": kind, "backup_id": good.backup_id, "status": "ok", "files": outcome["files"],
                                "bytes": outcome["bytes"], "encrypted_files": outcome["encrypted_files"],
                                "downloaded_bytes": outcome["downloaded_bytes"], "hashes_match": True,
                                "rto_seconds": round(time.monotonic() - started, 2)})
            except Exception as err:  # noqa: BLE001 - a drill that breaks is itself the finding
                error = f"{type(err).__name__}: {short_error(err)}"
                results.append({"kind": kind, "backup_id": good.backup_id, "status": "failed", "error": error})
                problems.append({"problem": f"{kind} restore failed", "backup_id": good.backup_id, "error": error})
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
                self.release_lease(lease)
        for item in results:
            self.log.info("%s drill: %s", item["kind"], item)
        return results, problems

    def _source_size(self, database: str) -> int:
        from airflow.providers.postgres.hooks.postgres import PostgresHook

        conn = PostgresHook(postgres_conn_id=database).get_conn()
        try:
            with conn.cursor() as cur:
                cur.execute("SELECT pg_database_size(current_database())")
                return int(cur.fetchone()[0])
        finally:
            conn.close()

    def _drop_scratch(self, connect, scratch: str) -> bool:
        from pgdr.restore.swap import drop_database

        try:
            conn = connect("postgres")
            try:
                drop_database(conn, scratch, self.log)
            finally:
                conn.close()
        except Exception as err:  # noqa: BLE001 - the teardown task tries again
            self.log.error("could not drop the scratch database %s: %s", scratch, safe_error(err))
            return False
        return True


class DropScratchOperator(DatabaseOperator, RestoreOperatorBase):
    """Drops the drill's scratch database if it is still there (the drill task died mid-way).

    :param conn_id: the protected postgres connection id (templated)
    """

    def execute(self, context) -> str:
        from pgdr.drill.checks import scratch_database
        from pgdr.restore.swap import database_exists, drop_database

        database = self.require_protected(self.conn_id)
        scratch = scratch_database(database, _when(context))
        _, connect = self.target(self.settings.drill_conn_id(database))
        conn = connect("postgres")
        try:
            if database_exists(conn, scratch):
                drop_database(conn, scratch, self.log)
                return f"dropped {scratch}"
        finally:
            conn.close()
        self.log.info("scratch database %s is gone, as it should be", scratch)
        return f"{scratch} already gone"


class PitrDrillOperator(DatabaseOperator, RestoreOperatorBase):
    """Recovers the database to a random moment inside the window the base backups and WAL cover,
    into a throwaway cluster, and checks that exactly the recovery markers committed before that
    moment are there (see :mod:`pgdr.drill.markers`). The cluster is always removed. Writes
    ``<prefix>/reports/pitr-drill/<time>-<database>.json``; alerts and fails on any difference.

    :param conn_id: the protected postgres connection id (templated)
    """

    def execute(self, context) -> dict[str, Any]:
        import random
        from datetime import datetime

        from airflow.sdk.exceptions import AirflowSkipException

        from pgdr.alerts.messages import drill_alert, short_error
        from pgdr.alerts.slack import send_alert
        from pgdr.drill.checks import scratch_database
        from pgdr.drill.markers import choose_moment, expected_markers, marker_problems, markers_found
        from pgdr.restore.pitr_cluster import connect_recovered
        from pgdr.restore.plan import pitr_choice
        from pgdr.restore.run import scratch_recovery
        from pgdr.store import layout
        from pgdr.store.manifest import new_backup_id, utc_now_iso

        settings = self.settings
        database = self.require_protected(self.conn_id)
        if not settings.physical_backups:
            raise AirflowSkipException("physical backups are off (pgdr_physical_backups)")
        ti = context["ti"]
        markers = (self.store.read_json_or_none(layout.markers_key(settings.s3_prefix, database)) or {}
                   ).get("markers", [])
        good = [e for e in self.store.catalog(database, "base") if e.complete and not e.bad]
        if not good:
            raise RuntimeError(f"no good base backup of {database}: point-in-time recovery is impossible")
        oldest, _ = self.manifest(database, good[0].backup_id, kind="base")
        moment = choose_moment(markers, datetime.fromisoformat(oldest.finished_at), random.Random(ti.run_id))
        if moment is None:
            raise AirflowSkipException("no recovery marker after the oldest base backup yet (pg_backup_verify "
                                       "commits one per run); the drill runs once there is one")
        present, absent = expected_markers(markers, moment)
        record: dict[str, Any] = {"kind": "pitr_drill", "database": database, "run_id": ti.run_id,
                                  "started_at": utc_now_iso(), "target_time": moment.isoformat(),
                                  "expected_present": len(present), "expected_absent": len(absent),
                                  "rto_budget_seconds": settings.rto_budget_minutes * 60}
        problems, recovery, lease = [], None, None
        started = time.monotonic()
        try:
            # the plan follows the timeline history and the base backup's own cluster (system identifier)
            target, manifest, prefix, wal, _ = pitr_choice(self.store, database, moment.isoformat())
            lease = self.hold_lease(database, "base", manifest.backup_id, context)
            restore_target, _ = self.target(settings.restore_conn_id(database))
            recovery = scratch_recovery(
                store=self.store, settings=settings, manifest=manifest, prefix=prefix, wal=wal, target=target,
                data_dir=Path(settings.pitr_data_dir) / scratch_database(database, _when(context)),
                login=restore_target.user, log=self.log)
            outcome = recovery.run()
            conn = connect_recovered(outcome, restore_target.user, manifest.dbname)
            try:
                found = markers_found(conn)
            finally:
                conn.close()
            problems.extend(marker_problems(present, absent, found))
            # an incremental is restored with its whole chain (pg_combinebackup): the record says which
            record.update(base_backup_id=manifest.backup_id, base_backup_type=manifest.backup_type,
                          chain=manifest.chain, restored_from=("full" if len(manifest.chain) == 1
                                                               else f"chain of {len(manifest.chain)}"),
                          wal_first=wal.first, wal_last=wal.last,
                          last_transaction_time=outcome.get("last_transaction_time"),
                          redo_end_lsn=outcome.get("redo_end_lsn"), stages=outcome["seconds"],
                          markers_found=len(found))
        except Exception as err:  # noqa: BLE001 - a drill that breaks is itself the finding
            problems.append({"problem": "point-in-time recovery failed", "error": f"{type(err).__name__}: "
                                                                                  f"{short_error(err)}"})
        finally:
            if recovery is not None:
                recovery.discard()
            self.release_lease(lease)
        record.update(finished_at=utc_now_iso(), rto_seconds=round(time.monotonic() - started, 2),
                      status="failed" if problems else "ok", problems=problems, cluster_removed=True)
        key = layout.report_key(settings.s3_prefix, "pitr-drill", new_backup_id(), database)
        self.store.put_json(key, record)
        self.log.info("point-in-time drill to %s: %s (%d markers expected, %d must be absent); record s3://%s/%s",
                      moment.isoformat(), record["status"].upper(), len(present), len(absent), self.store.bucket, key)
        if problems:
            send_alert(drill_alert(record, log_url=ti.log_url), settings.slack_conn_id)
            raise AlreadyAlerted(f"point-in-time drill of {database} failed: " +
                                 "; ".join(p["problem"] for p in problems))
        return {"database": database, "status": "ok", "record_key": key, "target_time": moment.isoformat()}
