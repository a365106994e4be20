"""`make demo` shows the whole promise end to end (backups, verification, the primary killed under load,
PITR to latest, no acknowledged commit lost) and leaves nothing behind, on Ctrl-C too."""

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time

import pytest

from tests.support.paths import REPO_ROOT

pytestmark = pytest.mark.slow


def _demo_env(scratch: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "PGDR_"))}
    env.update(PGDR_DEMO_SCALE="0.05", PGDR_DEMO_LOAD_SECONDS="5", TMPDIR=scratch, PYTHONUNBUFFERED="1")
    return env


def _scratch() -> str:
    # the demo's own temporary space (TMPDIR), readable by the unprivileged server user, empty at the end
    scratch = tempfile.mkdtemp(prefix="pgdr-demo-test-")
    os.chmod(scratch, 0o755)
    return scratch


def _processes_of(scratch: str) -> list[str]:
    """Processes the demo started and left: started with its TMPDIR, or working in or naming its space
    (a recovered cluster runs with a clean environment but works in its data directory)."""
    left = []
    for pid in os.listdir("/proc"):
        if not pid.isdigit() or int(pid) == os.getpid():
            continue
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                cmdline = handle.read().replace(b"\0", b" ").decode(errors="replace")
            with open(f"/proc/{pid}/environ", "rb") as handle:
                environ = handle.read().decode(errors="replace").split("\0")
            cwd = os.readlink(f"/proc/{pid}/cwd")
        except OSError:
            continue
        if f"TMPDIR={scratch}" in environ or scratch in cmdline or cwd.startswith(scratch):
            left.append(f"{pid}: {cmdline[:160]}")
    return left


def _assert_nothing_left(scratch: str, ports: list[int]) -> None:
    deadline = time.monotonic() + 15   # backends notice their postmaster is gone within moments
    while _processes_of(scratch) and time.monotonic() < deadline:
        time.sleep(0.5)
    assert _processes_of(scratch) == [], "the demo left processes running"
    assert os.listdir(scratch) == [], f"the demo left {os.listdir(scratch)} behind"
    listening = _listening_ports()
    assert not listening & set(ports), f"ports still listened on after the demo: {sorted(listening & set(ports))}"


def _listening_ports() -> set[int]:
    """Every TCP port something listens on (state 0A in /proc/net/tcp*): a port is free again for the
    demo's servers even while their closed connections linger in TIME_WAIT."""
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as handle:
            for row in handle.read().splitlines()[1:]:
                fields = row.split()
                if fields[3] == "0A":
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def _ports(out: str) -> list[int]:
    line = next(line for line in out.splitlines() if line.strip().startswith("ports:"))
    return [int(port) for port in re.findall(r"\b(\d{2,5})\b", line)]


def test_demo_loses_no_acknowledged_commit_when_the_primary_dies_and_cleans_up():
    scratch = _scratch()
    try:
        result = subprocess.run([sys.executable, "-m", "harness.demo"], cwd=REPO_ROOT, env=_demo_env(scratch),
                                capture_output=True, text=True, timeout=900)
        out = result.stdout
        assert result.returncode == 0, out[-4000:] + result.stderr[-3000:]
        lines = out.splitlines()
        # the receiver streams synchronously before anything else happens
        assert "synchronous_standby_names = 'pgdr_receiver', sync_state = sync" in out
        # both kinds of backup, every object downloaded again and re-hashed
        assert "logical backup 20" in out and "base backup 20" in out
        checked = [line.split("checksums verified:")[1].split()[0].split("/") for line in lines
                   if "checksums verified:" in line]
        assert len(checked) == 2 and all(done == total and int(total) >= 2 for done, total in checked), checked
        assert "s3://pgdr-backups/pgdr/care_commons_db/logical/" in out
        assert "s3://pgdr-backups/pgdr/care_commons_db/base/" in out
        # verification through Airflow, the WAL archive included
        for check in ("freshness", "integrity", "bucket_posture", "wal"):
            assert any(line.split()[:2] == [check, "OK"] for line in lines), check
        assert "verification run success" in out
        # the disaster and the recovery
        assert "KILLED the primary: SIGKILL" in out and "data directory" in out
        assert "pg_wal_archive run success" in out
        result_line = next(line for line in lines if line.startswith("RESULT:"))
        acknowledged, recovered, lost = (int(n) for n in re.fullmatch(
            r"RESULT: acknowledged (\d+), recovered (\d+), lost (\d+)", result_line).groups())
        assert acknowledged > 100, "the writers must have committed under load"
        assert recovered == acknowledged and lost == 0, result_line
        assert "none that was never written: True" in out
        rto = next(line for line in lines if line.startswith("RTO:"))
        assert 0 < float(rto.split()[1]) < 3600, rto
        # where the history page is
        assert "uploaded to s3://pgdr-backups/pgdr/reports/index.html" in out and "make report" in out
        assert "cleaned up" in out
        recovered_port = int(re.search(r"new cluster on port (\d+)", out).group(1))
        _assert_nothing_left(scratch, _ports(out) + [recovered_port])
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def test_ctrl_c_during_the_demo_still_cleans_up():
    """Ctrl-C at a terminal signals the whole foreground process group (the demo, its Airflow run, the WAL
    receiver, the S3 server): sent while the receiver streams, pg_wal_archive ships and pg_backup_daily runs."""
    scratch = _scratch()
    process = subprocess.Popen([sys.executable, "-m", "harness.demo"], cwd=REPO_ROOT, env=_demo_env(scratch),
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    try:
        lines = []
        deadline = time.monotonic() + 400
        while time.monotonic() < deadline:
            line = process.stdout.readline()
            if not line:
                break
            lines.append(line)
            if "running pg_backup_daily" in line:
                time.sleep(3)  # the cluster, receiver, S3 endpoint, archive run and backup run are all up now
                os.killpg(process.pid, signal.SIGINT)
                break
        rest, _ = process.communicate(timeout=180)
        out = "".join(lines) + rest
        assert process.returncode == 130, out[-3000:]
        assert "interrupted: cleaning up" in out and "cleaned up" in out
        _assert_nothing_left(scratch, _ports(out))
    finally:
        if process.poll() is None:
            process.kill()
        shutil.rmtree(scratch, ignore_errors=True)
