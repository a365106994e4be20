"""`make demo`: the whole promise on throwaway services, in about three minutes.

Starts a PostgreSQL 15 primary with a synthetic care-commons database, an S3 endpoint (moto server) and a
Slack webhook receiver; starts the WAL receiver (``python -m pgdr.wal_receiver --synchronous``) and names
it in the primary's synchronous_standby_names; runs pg_wal_archive continuously in the background, and
pg_backup_daily (logical and base backups) and pg_backup_verify through Airflow (dag.test on SQLite);
puts a write load on the primary, kills every process of it with SIGKILL and deletes its data
directory; recovers to ``latest`` with the pg_restore DAG (point in time, into a new cluster) and
prints "acknowledged N, recovered N, lost 0" and the recovery time; renders the history page.
Removes everything at the end, on Ctrl-C too.

PGDR_DEMO_SCALE sets the database size (default 0.3, about 50 MB); PGDR_DEMO_LOAD_SECONDS how long the
load runs before the kill (default 10); PGDR_DEMO_REPORT=<file> keeps a copy of the history page.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
SHIP_SECONDS = 2          # pg_wal_archive ships every 2 s in the demo (default 15)
WINDOW_MINUTES = 30       # one run ships through the whole demo; stopped (SIGTERM) after the kill


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def say(text: str = "") -> None:
    print(text, flush=True)


class Demo:
    """The services, the receiver, the archive loop and the load of one demo; :meth:`close` removes them."""

    def __init__(self, workdir: Path, scale: float, load_seconds: float) -> None:
        self.workdir = workdir
        self.scale = scale
        self.load_seconds = load_seconds
        self.wal_root = workdir / "wal"
        self.pitr_root = workdir / "pitr"
        self.stack = self.receiver = self.archive = self.trickle = self.load = None
        self.ports: dict[str, int] = {}

    # -- the site

    def start_services(self) -> None:
        from harness.pg_cluster import free_port
        from harness.stack import BUCKET, start_stack

        say(f"pgdr demo: starting PostgreSQL 15, an S3 endpoint and a Slack receiver (scale {self.scale})")
        started = time.monotonic()
        self.stack = stack = start_stack(scale=self.scale, staging_dir=self.workdir / "staging")
        db_size = stack.cluster.execute("SELECT pg_database_size('care_commons')")[0][0]
        say(f"  care_commons: {len(stack.row_counts)} tables, {sum(stack.row_counts.values()):,} rows, "
            f"{_human(db_size)} on disk ({time.monotonic() - started:.0f} s to generate)")
        say(f"  S3 endpoint {stack.s3.endpoint_url}, bucket {BUCKET}; Slack receiver {stack.slack.url}")
        self.ports = {"PostgreSQL": stack.cluster.port, "S3": stack.s3.port, "Slack": stack.slack.port,
                      "recovery": free_port()}
        say("  ports: " + ", ".join(f"{name} {port}" for name, port in self.ports.items()))
        for path in (self.wal_root, self.pitr_root):
            path.mkdir(mode=0o755)
        os.environ.update(stack.airflow_env())
        os.environ.update({
            "AIRFLOW_VAR_PGDR_PHYSICAL_BACKUPS": "true",
            "AIRFLOW_VAR_PGDR_WAL_RECEIVER_DIR": str(self.wal_root),
            "AIRFLOW_VAR_PGDR_WAL_SHIP_SECONDS": str(SHIP_SECONDS),
            "AIRFLOW_VAR_PGDR_WAL_ARCHIVE_WINDOW_MINUTES": str(WINDOW_MINUTES),
            "AIRFLOW_VAR_PGDR_PITR_DATA_DIR": str(self.pitr_root),
            "AIRFLOW_VAR_PGDR_PITR_PORT": str(self.ports["recovery"]),
        })

    def start_receiver(self) -> None:
        from harness.demo_wal import SLOT, make_synchronous, start_receiver
        from harness.stack import BACKUP_PASSWORD, BACKUP_ROLE, CONN_ID

        say("")
        say("starting the WAL receiver: python -m pgdr.wal_receiver --synchronous "
            f"--directory {self.wal_root / CONN_ID} --slot {SLOT}")
        cluster = self.stack.cluster
        self.receiver = start_receiver(cluster, self.wal_root / CONN_ID, BACKUP_ROLE, BACKUP_PASSWORD,
                                       self.workdir / "wal-receiver.log")
        flushed = make_synchronous(cluster, self.receiver)
        say(f"  streaming (flushed up to {flushed}); on the primary: synchronous_standby_names = '{SLOT}', "
            "sync_state = sync")
        say("  from now on a COMMIT returns only after the receiver has flushed its WAL to its own disk")
        from harness.demo_load import WriteLoad

        # a live system always writes a little: one commit a second from the application, all along
        self.trickle = WriteLoad(self.app_params(), writers=1, rows_per_commit=1, pause=1.0)
        self.trickle.start()
        say("  the application commits one audit event a second from now on")

    def start_archive(self) -> None:
        from harness import airflow_env
        from harness.demo_wal import ArchiveLoop

        say("preparing Airflow (SQLite metadata database)")
        airflow_env.migrate()
        self.archive = ArchiveLoop(dict(os.environ), Path(os.environ["AIRFLOW_HOME"]) / "airflow.db", self.workdir)
        self.archive.start()
        say(f"pg_wal_archive runs continuously in the background (@continuous): ships the receiver's WAL to S3 "
            f"every {SHIP_SECONDS} s")

    def app_params(self) -> dict:
        from harness.stack import DBNAME
        from harness.synthetic import APP_ROLE

        cluster = self.stack.cluster
        return {"host": cluster.host, "port": cluster.port, "dbname": DBNAME, "user": APP_ROLE,
                "password": "app-secret"}

    # -- backups and verification

    def backup(self) -> int:
        from harness.demo_report import report_backups

        say("")
        say("running pg_backup_daily through Airflow (dag.test): a logical and a base backup ...")
        state, log_text, seconds = run_dag(self.workdir, "pg_backup_daily")
        for line in task_lines(log_text):
            say("  | " + line)
        if state != "success":
            return self._failed("pg_backup_daily", state, log_text)
        ships = self.archive.ships()
        status = report_backups(self.stack, seconds)
        # pg_backup_verify checks the WAL archive from the base backup on: let the archive catch up first
        if not self.archive.wait_for_ships(ships + 2, timeout=120):
            say("  pg_wal_archive has not shipped the WAL since the base backup (see its log)")
            return 1
        return status

    def verify(self) -> int:
        from harness.demo_report import newest_json
        from harness.stack import BUCKET

        say("")
        say("running pg_backup_verify through Airflow (what runs every six hours) ...")
        state, log_text, _ = run_dag(self.workdir, "pg_backup_verify")
        report, key = newest_json(self.stack, "verify")
        if report is None:
            return self._failed("pg_backup_verify", state, log_text)
        for check in report["results"]:
            say(f"  {check['check']:<15} {check['status'].upper():<8} {check['summary']}")
        say(f"  report: s3://{BUCKET}/{key}; verification run {state}")
        return 0 if state == "success" else 1

    # -- the disaster

    def crash(self, load) -> None:
        from harness.demo_load import kill_server

        say("")
        say(f"write load: 4 connections of the application's role committing audit events for {self.load_seconds:.0f} "
            "s; a row counts as acknowledged only once its COMMIT returned")
        load.start()
        started = time.monotonic()
        while time.monotonic() - started < self.load_seconds:
            time.sleep(2)
            elapsed = time.monotonic() - started
            say(f"  {elapsed:4.0f} s: {len(load.acknowledged):,} rows acknowledged "
                f"({load.commits / elapsed:,.0f} commits/s)")
        data_dir = self.stack.cluster.data_dir
        self.killed_at = time.monotonic()
        killed = kill_server(data_dir)
        say(f"KILLED the primary: SIGKILL to all {killed} of its processes while the writers were committing; "
            f"data directory {data_dir} deleted")
        load.stop()
        self.trickle.stop()
        say(f"  the application saw {len(self.acknowledged()):,} rows acknowledged since the receiver became "
            f"synchronous; {len(self.in_doubt())} rows had their COMMIT sent but never answered (in doubt: either "
            "outcome is correct)")

    def acknowledged(self) -> list[str]:
        return [row for load in (self.trickle, self.load) if load is not None for row in load.acknowledged]

    def in_doubt(self) -> list[str]:
        return [row for load in (self.trickle, self.load) if load is not None for row in load.in_doubt]

    def recover(self) -> int:
        from harness.demo_report import print_recovery
        from harness.demo_wal import receiver_status, stop_receiver
        from harness.stack import CONN_ID

        say("")
        say("pg_wal_archive is stopped as Airflow stops a task (SIGTERM, on_kill): its window ends with a last "
            "ship of what the receiver flushed (the partial segment) ...")
        runs = self.archive.finish(timeout=180)
        for run in runs:
            lines = [line for line in task_lines(run["log"].read_text(errors="replace"), "pgdr.") if "ship" in line]
            for line in lines[-2:]:
                say("  | " + line)
        if not runs:
            say("  pg_wal_archive did not finish in time")
            return 1
        say(f"  pg_wal_archive run {runs[-1]['state']}")
        shipped_at = time.monotonic()
        status = receiver_status(self.wal_root / CONN_ID)
        stop_receiver(self.receiver)
        say(f"  the receiver had lost its primary: {status.get('state')}, {status.get('restarts')} restarts tried; "
            "stopped")
        say("")
        conf = {"database": CONN_ID, "point_in_time": "latest"}
        say(f"running pg_restore through Airflow with {json.dumps(conf)} ...")
        say("  (point in time: the newest base backup and the WAL archive replayed into a NEW cluster; nothing live is "
            "touched, so no second person's approval is asked: pgdr_four_eyes guards replacing a live database)")
        state, log_text, seconds = run_dag(self.workdir, "pg_restore", conf)
        return print_recovery(self, state, log_text, seconds, shipped_at)

    def history_page(self) -> None:
        from harness.demo_report import history_page

        history_page(self)

    def _failed(self, dag_id: str, state: str, log_text: str) -> int:
        say(f"{dag_id} ended {state}; the last log lines:")
        say("\n".join(log_text.splitlines()[-40:]))
        for post in self.stack.slack.posts:
            say("Slack alert: " + json.dumps(post["payload"].get("text")))
        return 1

    # -- the end

    def close(self) -> None:
        from harness.demo_wal import stop_receiver

        steps = [lambda: self.load and self.load.stop(timeout=5), lambda: self.trickle and self.trickle.stop(timeout=5),
                 lambda: self.archive and self.archive.kill(),
                 lambda: stop_receiver(self.receiver), lambda: remove_recovered(self.pitr_root),
                 lambda: self.stack and self.stack.stop()]
        for step in steps:
            try:
                step()
            except Exception as err:  # noqa: BLE001 - tear down everything we can
                say(f"cleanup: {type(err).__name__}: {err}")


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    scale = float(os.environ.get("PGDR_DEMO_SCALE", "0.3"))
    load_seconds = float(os.environ.get("PGDR_DEMO_LOAD_SECONDS", "10"))
    workdir = Path(tempfile.mkdtemp(prefix="pgdr-demo-"))
    workdir.chmod(0o711)   # the server's user reaches the WAL and recovery directories below; lists nothing
    sys.path[:0] = [str(REPO_ROOT / "plugins"), str(REPO_ROOT)]
    from harness import airflow_env
    from harness.demo_load import WriteLoad

    airflow_env.apply(workdir / "airflow")
    demo = Demo(workdir, scale, load_seconds)
    began = time.monotonic()
    try:
        demo.start_services()
        demo.start_receiver()
        demo.start_archive()
        if demo.backup() != 0 or demo.verify() != 0:
            return 1
        demo.load = WriteLoad(demo.app_params(), writers=4)
        demo.crash(demo.load)
        status = demo.recover()
        if status == 0:
            demo.history_page()
            say(f"\nthe whole demo took {time.monotonic() - began:.0f} s")
        return status
    except KeyboardInterrupt:
        say("\ninterrupted: cleaning up")
        return 130
    finally:
        demo.close()
        shutil.rmtree(workdir, ignore_errors=True)
        say("cleaned up: clusters stopped and removed (the primary and any recovered one), WAL receiver, "
            "S3 endpoint and Slack receiver stopped, temp files deleted")


def remove_recovered(pitr_root: Path) -> None:
    """Stop every cluster a recovery started under ``pitr_root``, recorded or not (a restore interrupted
    before it recorded its cluster leaves one unrecorded), and remove them."""
    from harness.demo_load import server_pids
    from harness.pg_cluster import _as_server_user, pg_bindir

    if not pitr_root.is_dir():
        return
    for data_dir in pitr_root.iterdir():
        if (data_dir / "postmaster.pid").exists():
            subprocess.run(_as_server_user([str(pg_bindir() / "pg_ctl"), "-D", str(data_dir), "-m", "immediate",
                                            "-w", "stop"]), capture_output=True, timeout=60)
        for pid in server_pids(data_dir):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    shutil.rmtree(pitr_root, ignore_errors=True)


def task_lines(log_text: str, prefix: str = "pgdr.operators") -> list[str]:
    """pgdr's info lines out of a dag.test log, without the timestamp and the logger's name."""
    import re

    lines = []
    for line in log_text.splitlines():
        if prefix in line and "[info" in line:
            message = re.sub(r"^\S+ \[info\s*\] ", "", line)
            lines.append(re.sub(r"\s+\[airflow\.task\.operators\.pgdr.*$", "", message))
    return lines


def run_dag(workdir: Path, dag_id: str, conf: dict | None = None) -> tuple[str, str, float]:
    """One DAG run through Airflow (dag.test in a child process): (final state, log text, seconds)."""
    log_path = workdir / f"airflow-{dag_id}.log"
    argv = [sys.executable, "-m", "harness.run_dag", dag_id] + (["--conf", json.dumps(conf)] if conf else [])
    started = time.monotonic()
    with open(log_path, "wb") as log_file:
        result = subprocess.run(argv, cwd=REPO_ROOT, env=dict(os.environ), stdout=log_file, stderr=subprocess.STDOUT)
    seconds = time.monotonic() - started
    log_text = log_path.read_text(errors="replace")
    state = "failed"
    if result.returncode == 0:
        try:
            state = json.loads(log_text.strip().splitlines()[-1]).get("state", "failed")
        except (IndexError, ValueError):
            pass
    return state, log_text, seconds


def _human(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    return f"{count:.1f} GB"


if __name__ == "__main__":
    sys.exit(main())
