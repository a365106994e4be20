"""`make demo`: a whole pg_backup_daily run against throwaway services, then what a user needs to know.

Starts a PostgreSQL 15 cluster with a synthetic care-commons database, an S3
endpoint (moto server) and a Slack webhook receiver; runs pg_backup_daily
through Airflow (dag.test on a SQLite metadata DB); checks every object again
with a plain S3 client; prints the backup id, objects, sizes, checksums, timing
and where the objects are; runs pg_backup_verify, then a restore drill
(pg_restore_test) and prints its measured RTO; removes everything, on Ctrl-C too.

PGDR_DEMO_SCALE sets the database size (default 0.3, about 30 MB).
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def _say(text: str = "") -> None:
    print(text, flush=True)


def _human(count: float) -> str:
    for unit in ("B", "KB", "MB", "GB"):
        if count < 1024 or unit == "GB":
            return f"{count:.1f} {unit}" if unit != "B" else f"{int(count)} B"
        count /= 1024
    return f"{count:.1f} GB"


def main() -> int:
    signal.signal(signal.SIGTERM, _interrupt)
    scale = float(os.environ.get("PGDR_DEMO_SCALE", "0.3"))
    workdir = Path(tempfile.mkdtemp(prefix="pgdr-demo-"))
    sys.path[:0] = [str(REPO_ROOT / "plugins"), str(REPO_ROOT)]
    from harness import airflow_env

    airflow_env.apply(workdir / "airflow")
    stack = None
    try:
        from harness.stack import BUCKET, CONN_ID, start_stack

        _say(f"pgdr demo: starting PostgreSQL 15, an S3 endpoint and a Slack receiver (scale {scale})")
        started = time.monotonic()
        stack = start_stack(scale=scale, staging_dir=workdir / "staging")
        db_size = stack.cluster.execute("SELECT pg_database_size('care_commons')")[0][0]
        _say(f"  care_commons: {len(stack.row_counts)} tables, {sum(stack.row_counts.values()):,} rows, "
             f"{_human(db_size)} on disk ({time.monotonic() - started:.0f} s to generate)")
        _say(f"  S3 endpoint {stack.s3.endpoint_url}, bucket {BUCKET}; Slack receiver {stack.slack.url}")
        os.environ.update(stack.airflow_env())
        _say("preparing Airflow (SQLite metadata database)")
        airflow_env.migrate()

        _say("running pg_backup_daily through Airflow (dag.test) ...")
        log_path = workdir / "airflow-run.log"
        run_started = time.monotonic()
        with open(log_path, "wb") as log_file:
            result = subprocess.run([sys.executable, "-m", "harness.run_dag", "pg_backup_daily"], cwd=REPO_ROOT,
                                    env=dict(os.environ), stdout=log_file, stderr=subprocess.STDOUT)
        run_seconds = time.monotonic() - run_started
        log_text = log_path.read_text(errors="replace")
        for line in log_text.splitlines():
            if "pgdr.operators" in line and "[info" in line:
                message = re.sub(r"^\S+ \[info\s*\] ", "", line)
                _say("  | " + re.sub(r"\s+\[airflow\.task\.operators\.pgdr.*$", "", message))
        outcome = json.loads(log_text.strip().splitlines()[-1]) if result.returncode == 0 else {}
        if outcome.get("state") != "success":
            _say(f"pg_backup_daily ended {outcome.get('state', 'with an error')}; the last log lines:")
            _say("\n".join(log_text.splitlines()[-40:]))
            for post in stack.slack.posts:
                _say("Slack alert: " + json.dumps(post["payload"].get("text")))
            return 1
        status = _report(stack, BUCKET, CONN_ID, run_seconds, db_size)
        if status != 0:
            return status
        status = _verify(stack, BUCKET, workdir)
        if status != 0:
            return status
        return _drill(stack, BUCKET, workdir)
    except KeyboardInterrupt:
        _say("\ninterrupted: cleaning up")
        return 130
    finally:
        if stack is not None:
            stack.stop()
        shutil.rmtree(workdir, ignore_errors=True)
        _say("cleaned up: cluster stopped and removed, S3 endpoint and receiver stopped, temp files deleted")


def _report(stack, bucket: str, conn_id: str, run_seconds: float, db_size: int) -> int:
    client = stack.s3.client()
    keys = [obj["Key"] for obj in client.list_objects_v2(Bucket=bucket)["Contents"]]
    manifest_key = next(key for key in keys if "/logical/" in key and key.endswith("/manifest.json"))
    manifest = json.loads(client.get_object(Bucket=bucket, Key=manifest_key)["Body"].read())
    _say("")
    _say(f"backup {manifest['backup_id']} of {conn_id} ({manifest['dbname']}, PostgreSQL {manifest['server_version']})")
    _say(f"  where:    s3://{bucket}/{manifest_key.rsplit('/', 1)[0]}/  at {stack.s3.endpoint_url}")
    _say(f"  {'object':<28} {'size':>10} {'sha256 (manifest)':<18} check")
    verified = 0
    for obj in manifest["objects"]:
        response = client.get_object(Bucket=bucket, Key=obj["key"])
        body = response["Body"].read()
        ok = hashlib.sha256(body).hexdigest() == obj["sha256"] and response.get("ServerSideEncryption")
        verified += bool(ok)
        status = f"sha256 ok, {response.get('ServerSideEncryption')}" if ok else "MISMATCH"
        _say(f"  {obj['name']:<28} {_human(obj['size']):>10} {obj['sha256'][:16]}… {status}")
    stored = sum(obj["size"] for obj in manifest["objects"])
    raw = manifest["dump"]["raw_size"]
    seconds = dict(manifest["dump"]["seconds"])
    work = seconds.pop("total")
    _say(f"  checksums verified: {verified}/{len(manifest['objects'])} objects, downloaded again and re-hashed")
    _say(f"  tables: {len(manifest['row_counts'])}, rows: {sum(manifest['row_counts'].values()):,}"
         " (exact, from the dump's snapshot)")
    _say(f"  size: {_human(stored)} stored from {_human(raw)} dumped ({_human(db_size)} database), zstd")
    stages = ", ".join(f"{name.replace('_', ' ')} {value:.1f} s" for name, value in seconds.items())
    _say(f"  duration: {work:.1f} s of backup work ({stages}), "
         f"{raw / max(work, 1e-9) / 1e6:.1f} MB/s; whole Airflow run {run_seconds:.1f} s")
    _say("  (the S3 endpoint is moto's server on this machine; its speed is part of the upload figure)")
    _say(f"  Slack alerts posted: {len(stack.slack.posts)}")
    return 0 if verified == len(manifest["objects"]) else 1


def _run_and_read(stack, bucket: str, workdir: Path, dag_id: str, reports: str, what: str):
    """Run a DAG through Airflow, then read the newest JSON it wrote under ``pgdr/reports/<reports>/``.

    Returns (the run's final state, the document, its key), or (state, None, None) after printing
    the log's tail when nothing was written.
    """
    log_path = workdir / f"airflow-{dag_id}.log"
    with open(log_path, "wb") as log_file:
        result = subprocess.run([sys.executable, "-m", "harness.run_dag", dag_id], cwd=REPO_ROOT,
                                env=dict(os.environ), stdout=log_file, stderr=subprocess.STDOUT)
    log_text = log_path.read_text(errors="replace")
    state = json.loads(log_text.strip().splitlines()[-1]).get("state", "failed") if result.returncode == 0 else "failed"
    client = stack.s3.client()
    keys = sorted(obj["Key"] for obj in client.list_objects_v2(
        Bucket=bucket, Prefix=f"pgdr/reports/{reports}/").get("Contents", []))
    if not keys:
        _say(f"no {what} was written; the last log lines:")
        _say("\n".join(log_text.splitlines()[-30:]))
        return state, None, None
    return state, json.loads(client.get_object(Bucket=bucket, Key=keys[-1])["Body"].read()), keys[-1]


def _verify(stack, bucket: str, workdir: Path) -> int:
    _say("")
    _say("running pg_backup_verify through Airflow (what runs every six hours) ...")
    state, report, key = _run_and_read(stack, bucket, workdir, "pg_backup_verify", "verify", "verification report")
    if report is None:
        return 1
    for check in report["results"]:
        _say(f"  {check['check']:<15} {check['status'].upper():<8} {check['summary']}")
    _say(f"  report: s3://{bucket}/{key}; verification run {state}")
    return 0 if state == "success" else 1


def _drill(stack, bucket: str, workdir: Path) -> int:
    _say("")
    _say("running pg_restore_test through Airflow (the monthly restore drill) ...")
    state, record, key = _run_and_read(stack, bucket, workdir, "pg_restore_test", "drill", "drill record")
    if record is None:
        return 1
    stages = record.get("stages") or {}
    _say(f"  restored backup {record.get('backup_id')} into scratch database {record['scratch_database']} "
         f"(dropped afterwards: {record['scratch_dropped']})")
    _say(f"  row counts: {record.get('tables', 0)} tables, {record.get('rows', 0):,} rows, equal to the manifest: "
         f"{not any(p['problem'] == 'restore failed' for p in record['problems'])}")
    failing = [c for c in record.get("checks", []) if c["problems"]]
    _say(f"  integrity checks: {len(record.get('checks', []))} run, {len(failing)} failing")
    for problem in record["problems"]:
        _say(f"  PROBLEM: {problem}")
    if record.get("rto_seconds") is not None:
        _say(f"  RTO: {record['rto_seconds']:.1f} s measured"
             f" (download + restore {stages.get('download_and_restore', 0):.1f} s, "
             f"verify and checks the rest); projected for the current size "
             f"{record['projected_rto_seconds']:.1f} s; budget {record['rto_budget_seconds'] / 60:.0f} min")
        _say("  (the backup is downloaded from moto's S3 server on this machine; its speed is part of the figure)")
    _say(f"  drill record: s3://{bucket}/{key}; drill run {state}")
    return 0 if state == "success" else 1


if __name__ == "__main__":
    sys.exit(main())
