"""What `make demo` prints: the backups checked again with a plain S3 client, the recovery's result and
its time, and where the history page is. Everything is read from S3 and the recovered cluster, not from
pgdr's own return values."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import time

from harness.demo import REPO_ROOT, _human, say, task_lines
from harness.stack import BUCKET, CONN_ID, DBNAME, RESTORE_ROLE


def _manifest(client, kind: str) -> tuple[dict, str]:
    keys = [obj["Key"] for obj in client.list_objects_v2(Bucket=BUCKET, Prefix=f"pgdr/{CONN_ID}/{kind}/")["Contents"]]
    key = sorted(key for key in keys if key.endswith("/manifest.json"))[-1]
    return json.loads(client.get_object(Bucket=BUCKET, Key=key)["Body"].read()), key


def _check_objects(client, manifest: dict, listed: int) -> int:
    """Download every object again, re-hash it and compare with the manifest; print the first ``listed``."""
    verified = 0
    say(f"  {'object':<28} {'size':>10} {'sha256 (manifest)':<18} check")
    for n, obj in enumerate(manifest["objects"]):
        response = client.get_object(Bucket=BUCKET, Key=obj["key"])
        digest = hashlib.sha256()
        for chunk in iter(lambda body=response["Body"]: body.read(1 << 20), b""):
            digest.update(chunk)
        ok = digest.hexdigest() == obj["sha256"] and response.get("ServerSideEncryption")
        verified += bool(ok)
        if n < listed or not ok:
            status = f"sha256 ok, {response.get('ServerSideEncryption')}" if ok else "MISMATCH"
            say(f"  {obj['name']:<28} {_human(obj['size']):>10} {obj['sha256'][:16]}… {status}")
    if len(manifest["objects"]) > listed:
        say(f"  ... and {len(manifest['objects']) - listed} more")
    say(f"  checksums verified: {verified}/{len(manifest['objects'])} objects, downloaded again and re-hashed")
    return verified


def report_backups(stack, run_seconds: float) -> int:
    client = stack.s3.client()
    status = 0
    for kind, listed in (("logical", 6), ("base", 6)):
        manifest, key = _manifest(client, kind)
        say("")
        say(f"{kind} backup {manifest['backup_id']} of {CONN_ID} ({manifest['dbname']}, "
            f"PostgreSQL {manifest['server_version']})")
        say(f"  where:    s3://{BUCKET}/{key.rsplit('/', 1)[0]}/  at {stack.s3.endpoint_url}")
        verified = _check_objects(client, manifest, listed)
        status |= verified != len(manifest["objects"])
        dump = manifest.get("dump") or {}
        stored = sum(obj["size"] for obj in manifest["objects"])
        raw = dump.get("raw_size") or 0
        work = (dump.get("seconds") or {}).get("total")
        if kind == "logical":
            say(f"  tables: {len(manifest['row_counts'])}, rows: {sum(manifest['row_counts'].values()):,}"
                " (exact, from the dump's snapshot)")
        else:
            wal = manifest.get("wal") or {}
            say(f"  the whole cluster with pg_basebackup, checked by pg_verifybackup; WAL from {wal.get('start_lsn')} "
                f"to {wal.get('end_lsn')} (point-in-time recovery replays the WAL archive from there)")
        say(f"  size: {_human(stored)} stored from {_human(raw)}, zstd"
            + (f"; {work:.1f} s of backup work, {raw / max(work, 1e-9) / 1e6:.1f} MB/s" if work else ""))
    say(f"  whole Airflow run {run_seconds:.1f} s (the S3 endpoint is moto's server on this machine; its speed is "
        "part of the upload figures); Slack alerts posted: " + str(len(stack.slack.posts)))
    return status


def newest_json(stack, reports: str) -> tuple[dict | None, str | None]:
    """The newest JSON document under ``pgdr/reports/<reports>/``, and its key."""
    client = stack.s3.client()
    keys = sorted(obj["Key"] for obj in client.list_objects_v2(
        Bucket=BUCKET, Prefix=f"pgdr/reports/{reports}/").get("Contents", []))
    if not keys:
        return None, None
    return json.loads(client.get_object(Bucket=BUCKET, Key=keys[-1])["Body"].read()), keys[-1]


def print_recovery(demo, state: str, log_text: str, run_seconds: float, shipped_at: float) -> int:
    from harness.demo_load import found
    from pgdr.restore.pitr_cluster import connect_recovered

    for line in task_lines(log_text):
        if any(word in line for word in ("point-in-time", "recover", "WAL", "base backup", "restore record")):
            say("  | " + line)
    record, key = newest_json(demo.stack, "restore")
    if state != "success" or record is None or record.get("status") != "succeeded":
        return demo._failed("pg_restore", state, log_text)
    outcome = record["result"]
    acknowledged, in_doubt = demo.acknowledged(), demo.in_doubt()
    conn = connect_recovered(outcome, RESTORE_ROLE, DBNAME)
    try:
        recovered = found(conn, acknowledged)
        answered_at = time.monotonic()
        doubtful_back = found(conn, in_doubt) if in_doubt else set()
        with conn.cursor() as cur:
            cur.execute("SELECT count(*) FROM audit_events WHERE event_type = 'demo.check_in'")
            (demo_rows,) = cur.fetchone()
    finally:
        conn.close()
    lost = len(acknowledged) - len(recovered)
    seconds = outcome.get("seconds") or {}
    say(f"  recovered into a new cluster on port {outcome['port']} (data {outcome['data_dir']}), base backup "
        f"{outcome['base_backup_id']}, WAL {outcome['wal_first']} .. {outcome['wal_last']}"
        f"{' (partial)' if outcome.get('wal_last_partial') else ''}; last transaction "
        f"{outcome.get('last_transaction_time')}")
    say(f"  record: s3://{BUCKET}/{key}")
    say("")
    say(f"RESULT: acknowledged {len(acknowledged)}, recovered {len(recovered)}, lost {lost}")
    say(f"  (in doubt at the kill: {len(in_doubt)} rows, {len(doubtful_back)} came back; rows of the load in the "
        f"recovered database: {demo_rows}, none that was never written: "
        f"{demo_rows == len(recovered) + len(doubtful_back)})")
    rto = answered_at - demo.killed_at
    base = sum(seconds.get(step, 0) for step in ("download_base", "unpack_base", "verify_base"))
    say(f"RTO: {rto:.1f} s from the kill to the recovered database answering: pg_wal_archive's run had shipped the "
        f"last WAL and ended {shipped_at - demo.killed_at:.1f} s after the kill, then the pg_restore run "
        f"{run_seconds:.1f} s (base backup {base:.1f} s, WAL "
        f"{seconds.get('fetch_wal', 0):.1f} s, replay and start {seconds.get('recover', 0):.1f} s, the rest Airflow)")
    say("  (a person noticing and triggering the restore is not in this figure; the budget, pgdr_rto_budget_minutes, "
        "is 60 min)")
    return 0 if lost == 0 else 1


def history_page(demo) -> None:
    say("")
    say("rendering the backup history page (python -m pgdr.history --upload, what `make report` runs) ...")
    page = demo.workdir / "history.html"
    result = subprocess.run([sys.executable, "-m", "pgdr.history", "--out", str(page), "--upload"], cwd=REPO_ROOT,
                            env=dict(os.environ), capture_output=True, text=True)
    for line in result.stderr.strip().splitlines()[-2:]:
        say("  " + line.replace(str(page), "history.html"))
    keep = os.environ.get("PGDR_DEMO_REPORT")
    if keep and page.exists():
        shutil.copyfile(page, keep)
        say(f"  a copy is kept at {keep}")
    say("where to see it in your deployment:")
    say(f"  - s3://<pgdr_s3_bucket>/<pgdr_s3_prefix>/reports/index.html (here s3://{BUCKET}/pgdr/reports/index.html): "
        "pg_backup_verify uploads it every six hours; it stays readable when Airflow itself is gone")
    say("  - `make report` renders it to report.html from S3 (`make report UPLOAD=1` uploads it too)")
    say("  - in the Airflow UI: Recovery status in the navigation (/pgdr/: recovery window, worst-case loss, newest "
        "good backups; /pgdr/history: this page), read live from the bucket")
    if not keep:
        say("  (this demo's copy goes with the cleanup; set PGDR_DEMO_REPORT=history.html to keep it)")
