"""WAL shipping under faults: the S3 endpoint going away and coming back, the shipper SIGKILLed in the
middle of an upload. Each asserts that no WAL is lost, nothing half-written is listed as good, and
the next pass heals on its own.

Real services: a PostgreSQL 15 cluster of this module's own with pg_receivewal (run as postgres),
the session's S3 server behind harness/tcp_proxy.py's TcpProxy, the session's Slack receiver.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from test_wal_archive import (
    REPL_PASSWORD,
    REPL_ROLE,
    commit_seconds,
    fake_segment,
    receiver,
    s3_bytes,
    sha,
    system_id,
)

from harness.stack import BUCKET
from harness.tcp_proxy import TcpProxy
from pgdr.alerts import wal as wal_alerts
from pgdr.alerts.messages import short_error
from pgdr.alerts.slack import send_alert
from pgdr.wal.local import STATE_NAME, load_state, scan
from pgdr.wal.names import wal_key
from pgdr.wal.ship import ship_once, ship_window
from tests.support.paths import REPO_ROOT
from tests.support.s3 import object_versions, plain_store
from tests.support.waiting import wait_for

log = logging.getLogger("test_wal_faults")


def proxied_store(stack, proxy: TcpProxy, prefix: str):
    import boto3
    from botocore.config import Config

    from harness.s3_server import ACCESS_KEY, REGION, SECRET_KEY

    client = boto3.client("s3", endpoint_url=proxy.endpoint_url, region_name=REGION, aws_access_key_id=ACCESS_KEY,
                          aws_secret_access_key=SECRET_KEY,
                          config=Config(retries={"max_attempts": 1}, connect_timeout=2, read_timeout=10))
    return plain_store(client, prefix, log=log)


@pytest.fixture(scope="module")
def cluster(cluster):
    """conftest's throwaway cluster, with a table to write WAL into and the replication role."""
    cluster.execute("CREATE TABLE walgen (id bigserial PRIMARY KEY, payload text)")
    cluster.create_backup_role(REPL_ROLE, REPL_PASSWORD)
    return cluster


def _versions(stack, prefix: str) -> list[dict]:
    return object_versions(stack.s3.client(), prefix)


# ---------------------------------------------------------------- item 24: an S3 outage

@pytest.mark.slow
def test_an_s3_outage_alerts_once_loses_no_wal_and_heals_and_old_partial_versions_go(stack, pgdr_env, cluster,
                                                                                      wal_dir):
    database = "waloutage_db"
    proxy = TcpProxy(stack.s3.port)
    store = proxied_store(stack, proxy, f"t/walout-{os.urandom(4).hex()}")
    results: dict = {}
    short_error("import Airflow's secrets masker now, not in the middle of the outage")
    try:
        with receiver(cluster, wal_dir, synchronous=False):
            stack.slack.clear()
            writing = threading.Event()
            writing.set()

            def write():
                while writing.is_set():
                    commit_seconds(cluster, rows=50)
                    time.sleep(0.2)

            def window():
                results["summary"] = ship_window(store, database, wal_dir, seconds=16, interval=0.5, log=log,
                                                 notify=send_alert, messages=wal_alerts, max_failure_seconds=1.5)

            writer = threading.Thread(target=write, daemon=True)
            writer.start()
            shipper = threading.Thread(target=window, daemon=True)
            shipper.start()
            time.sleep(2)
            proxy.go_down()
            cluster.execute("SELECT pg_switch_wal()")   # a segment completes while S3 is away
            time.sleep(6)
            outage_texts = stack.slack.texts()
            proxy.restore()
            shipper.join(60)
            writing.clear()
            writer.join(30)
            assert "summary" in results, "the window failed"
            # quiesce, then the archive must hold everything the receiver has
            wait_for(lambda: not ship_once(store, database, wal_dir, load_state(wal_dir, database), log)["uploaded"],
                     30, "nothing left to ship")
            local = {f.name: f.path.read_bytes() for f in scan(wal_dir)}
    finally:
        proxy.stop()

    summary = results["summary"]
    assert summary["failed_ships"] >= 5, summary
    assert len(outage_texts) == 1 and "WAL of waloutage_db cannot be shipped to S3" in outage_texts[0], outage_texts
    texts = stack.slack.texts()
    assert len(texts) == 2 and "Resolved: WAL shipping to S3 (waloutage_db)" in texts[1], texts

    sysid = system_id(cluster)
    completed = [name for name in local if not name.endswith(".partial")]
    assert len(completed) >= 1
    for name, data in local.items():
        assert sha(s3_bytes(stack, wal_key(store.prefix, database, name, sysid))) == sha(data), name
    # one version per partial object: each newer version superseded the older ones; none for completed segments
    partial_versions: dict[str, int] = {}
    for version in _versions(stack, f"{store.prefix}/{database}/wal/"):
        if version["Key"].endswith(".partial.zst"):
            partial_versions[version["Key"]] = partial_versions.get(version["Key"], 0) + 1
    assert all(count == 1 for count in partial_versions.values()), partial_versions
    for key in partial_versions:
        assert key.rsplit("/", 1)[1].removesuffix(".partial.zst") not in completed


# ---------------------------------------------------------------- fault sweep: SIGKILL mid-upload

_CHILD = """
import json, logging, sys
import boto3
from botocore.config import Config
from harness.s3_server import ACCESS_KEY, REGION, SECRET_KEY
from pgdr.store.s3 import BackupStore
from pgdr.wal.local import load_state
from pgdr.wal.ship import ship_once
endpoint, prefix, directory = sys.argv[1:4]
client = boto3.client("s3", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=ACCESS_KEY,
                      aws_secret_access_key=SECRET_KEY, config=Config(retries={"max_attempts": 1}))
log = logging.getLogger("child")
store = BackupStore(client=client, bucket=%(bucket)r, prefix=prefix, sse_args={"ServerSideEncryption": "AES256"},
                    part_size=64 << 20, log=log)
print("shipping", flush=True)
ship_once(store, "walkill_db", directory, load_state(directory, "walkill_db"), log)
print("done", flush=True)
"""


def test_sigkill_of_the_shipper_mid_upload_loses_nothing_and_the_next_run_ships_the_rest(stack, tmp_path):
    sysid = "7100000000000000001"
    directory = tmp_path / "wal"
    directory.mkdir()
    names = [f"0000000100000000000000{n:02X}" for n in range(1, 5)]
    for name in names:   # incompressible: each upload is a full 16 MiB through the slow proxy
        fake_segment(directory, name, sysid, fill=os.urandom((16 << 20) - 64))
    fake_segment(directory, "000000010000000000000005.partial", sysid, fill=os.urandom(1 << 20))
    (directory / "00000002.history").write_text("1\t0/5000000\tno recovery target specified\n")
    proxy = TcpProxy(stack.s3.port, delay=0.004)   # ~16 MiB/s: an upload takes about a second
    prefix = f"t/walkill-{os.urandom(4).hex()}"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO_ROOT / "plugins"), str(REPO_ROOT)]))
    child = subprocess.Popen([sys.executable, "-c", _CHILD % {"bucket": BUCKET}, proxy.endpoint_url, prefix,
                              str(directory)], env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        # kill it in the middle of the second segment's upload
        wait_for(lambda: proxy.bytes_forwarded > (16 << 20) + (6 << 20) or child.poll() is not None, 120,
                 "the second upload to be under way")
        assert child.poll() is None, child.communicate()[0]
        os.kill(child.pid, signal.SIGKILL)
        child.wait(30)
    finally:
        if child.poll() is None:
            child.kill()
        proxy.stop()

    client = stack.s3.client()
    listed = client.list_objects_v2(Bucket=BUCKET, Prefix=f"{prefix}/").get("Contents", [])
    assert 1 <= len(listed) < len(names) + 2, [o["Key"] for o in listed]
    # whatever is listed is whole and is what the local file holds
    for obj in listed:
        name = obj["Key"].rsplit("/", 1)[1].removesuffix(".zst")
        head = client.head_object(Bucket=BUCKET, Key=obj["Key"])
        assert head["Metadata"]["raw-sha256"] == sha((directory / name).read_bytes())
        assert sha(s3_bytes(stack, obj["Key"])) == head["Metadata"]["raw-sha256"]
    state = json.loads((directory / STATE_NAME).read_text())   # the state file is never half-written
    assert set(state["segments"]) <= set(names)

    # the next run ships the rest, and nothing that was stored is uploaded again
    store = plain_store(client, prefix, log=log)
    result = ship_once(store, "walkill_db", directory, load_state(directory, "walkill_db"), log)
    stored_before = {o["Key"] for o in listed}
    assert not {wal_key(prefix, "walkill_db", u["name"], sysid) for u in result["uploaded"]} & \
        {k for k in stored_before if not k.endswith(".partial.zst")}
    for path in sorted(Path(directory).iterdir()):
        if path.name.startswith("."):
            continue
        key = wal_key(prefix, "walkill_db", path.name, sysid)
        assert sha(s3_bytes(stack, key)) == hashlib.sha256(path.read_bytes()).hexdigest(), path.name
        versions = [v for v in _versions(stack, key) if v["Key"] == key]
        assert len(versions) == 1, (key, len(versions))
