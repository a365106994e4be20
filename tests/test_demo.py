"""`make demo` runs the main job end to end and cleans up after itself."""

import glob
import os
import subprocess
import sys

from conftest import REPO_ROOT


def _pgdr_temp_dirs() -> set[str]:
    return set(glob.glob("/tmp/pgdr-demo-*")) | set(glob.glob("/tmp/pgdr-pg-*"))


def test_demo_runs_the_daily_backup_and_cleans_up():
    before = _pgdr_temp_dirs()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PGDR_"))}
    env["PGDR_DEMO_SCALE"] = "0.05"
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
    assert "cleaned up" in out
    assert _pgdr_temp_dirs() <= before, "the demo left temporary directories behind"
