"""An S3 endpoint over HTTP on 127.0.0.1: moto's server mode in a child process.

A child process (not a thread) keeps moto's CPU work off the caller's GIL, so
end-to-end figures measure the backup code rather than contention with the
fake store, and a test can stop the endpoint to simulate an outage.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass

import boto3
import requests
from botocore.config import Config

from harness.pg_cluster import free_port

REGION = "us-east-1"
ACCESS_KEY = "pgdr-test-access"
SECRET_KEY = "pgdr-test-secret"


@dataclass
class S3Server:
    port: int
    process: subprocess.Popen

    @property
    def endpoint_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def client(self):
        """A plain boto3 client, independent of pgdr and Airflow, for checking effects."""
        return boto3.client(
            "s3", endpoint_url=self.endpoint_url, region_name=REGION,
            aws_access_key_id=ACCESS_KEY, aws_secret_access_key=SECRET_KEY,
            config=Config(retries={"max_attempts": 2}),
        )

    def create_bucket(self, name: str, object_lock: bool = True, hardened: bool = True) -> None:
        """A bucket as pgdr's docs ask for: Object Lock (so versioning), default encryption, no public access."""
        client = self.client()
        client.create_bucket(Bucket=name, ObjectLockEnabledForBucket=object_lock)
        if not hardened:
            return
        client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
        client.put_bucket_encryption(Bucket=name, ServerSideEncryptionConfiguration={
            "Rules": [{"ApplyServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}]})
        client.put_public_access_block(Bucket=name, PublicAccessBlockConfiguration={
            "BlockPublicAcls": True, "IgnorePublicAcls": True, "BlockPublicPolicy": True,
            "RestrictPublicBuckets": True})

    def airflow_conn_uri(self) -> str:
        """An `aws` connection as Airflow reads it from AIRFLOW_CONN_* (JSON form)."""
        import json
        return json.dumps({
            "conn_type": "aws",
            "login": ACCESS_KEY,
            "password": SECRET_KEY,
            "extra": {"endpoint_url": self.endpoint_url, "region_name": REGION},
        })

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_s3_server(port: int | None = None) -> S3Server:
    port = port or free_port()
    # moto keeps every object under its key buffer size (about 5 MB by default) in memory, and a test session
    # stores thousands (WAL segments, partial versions, dumps): spooled to temporary files past 256 KiB, a
    # session's objects take disk, not the RAM the clusters and Airflow need (an OOM kill took a 14 GB server)
    env = dict(os.environ, AWS_ACCESS_KEY_ID=ACCESS_KEY, AWS_SECRET_ACCESS_KEY=SECRET_KEY,
               MOTO_S3_DEFAULT_KEY_BUFFER_SIZE=str(256 << 10))
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=env,
    )
    server = S3Server(port=port, process=process)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited with {process.returncode}")
        try:
            requests.get(server.endpoint_url + "/moto-api/", timeout=1)
            return server
        except requests.ConnectionError:
            time.sleep(0.1)
    server.stop()
    raise RuntimeError("moto server did not start within 30 s")
