"""`make demo` runs the main job end to end and cleans up after itself."""

import os
import shutil
import subprocess
import sys
import tempfile

from tests.support.paths import REPO_ROOT


def test_demo_runs_the_daily_backup_verification_and_a_drill_and_cleans_up():
    # the demo's own temporary space, readable by the unprivileged server user, empty at the end
    scratch = tempfile.mkdtemp(prefix="pgdr-demo-test-")
    os.chmod(scratch, 0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PGDR_"))}
    env.update(PGDR_DEMO_SCALE="0.05", TMPDIR=scratch)
    try:
        result = subprocess.run([sys.executable, "-m", "harness.demo"], cwd=REPO_ROOT, env=env,
                                capture_output=True, text=True, timeout=600)
        out = result.stdout
        assert result.returncode == 0, out[-3000:] + result.stderr[-3000:]
        assert "backup 20" in out and "of care_commons_db" in out
        verified = next(line for line in out.splitlines() if "checksums verified:" in line)
        done, total = verified.split("checksums verified:")[1].split()[0].split("/")
        assert done == total and int(total) >= 3
        assert "s3://pgdr-backups/pgdr/care_commons_db/logical/" in out
        assert "MB/s" in out and "duration:" in out
        assert "running pg_backup_verify" in out
        for check in ("freshness", "integrity", "deep_check", "bucket_posture"):
            assert any(line.split()[:2] == [check, "OK"] for line in out.splitlines()), check
        assert "verification run success" in out
        assert "running pg_restore_test" in out
        rto = next(line for line in out.splitlines() if line.strip().startswith("RTO:"))
        assert float(rto.split("RTO:")[1].split()[0]) > 0 and "projected for the current size" in rto
        assert ", 0 failing" in out and "dropped afterwards: True" in out
        assert "drill run success" in out
        assert "cleaned up" in out
        assert os.listdir(scratch) == [], f"the demo left {os.listdir(scratch)} behind"
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def test_ctrl_c_during_the_demo_still_cleans_up():
    import signal
    import time

    scratch = tempfile.mkdtemp(prefix="pgdr-demo-test-")
    os.chmod(scratch, 0o755)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PGDR_"))}
    env.update(PGDR_DEMO_SCALE="0.05", TMPDIR=scratch, PYTHONUNBUFFERED="1")
    process = subprocess.Popen([sys.executable, "-m", "harness.demo"], cwd=REPO_ROOT, env=env,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        lines = []
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "running pg_backup_daily" in line:
                time.sleep(2)  # the cluster, S3 endpoint and Airflow run are all up now
                process.send_signal(signal.SIGINT)
                break
        rest, _ = process.communicate(timeout=120)
        out = "".join(lines) + rest
        assert process.returncode == 130, out[-2000:]
        assert "interrupted: cleaning up" in out and "cleaned up" in out
        assert os.listdir(scratch) == [], f"Ctrl-C left {os.listdir(scratch)} behind"
    finally:
        if process.poll() is None:
            process.kill()
        shutil.rmtree(scratch, ignore_errors=True)
